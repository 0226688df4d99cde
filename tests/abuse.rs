//! What a client can send must not crash, hang or exhaust the server: each case gets a clear
//! error on its own connection, and the server (and that connection) go on serving.

mod common;

use common::{TestServer, process};
use tokio_postgres::Client;

/// The SQLSTATE of a failed statement.
async fn sqlstate_of(client: &Client, sql: &str) -> String {
    let e = client
        .batch_execute(sql)
        .await
        .expect_err("the statement is refused");
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| panic!("{sql}: not a server error: {e}"))
}

/// The connection still answers.
async fn still_serves(client: &Client) {
    let one: i32 = client
        .query_one("SELECT 1::int4", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
}

/// Durations too large for `Duration` (or for the clock arithmetic they are used in) panicked
/// in `Duration::from_secs_f64`, killing the connection: now they are refused with `22023`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_durations_are_refused_not_panicked_on() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT, v INT);
             BEGIN;
             DECLARE c CURSOR FOR SUBSCRIBE TO t;",
        )
        .await
        .unwrap();
    for timeout in ["100000000000000000000", "10000000000000", "1e400"] {
        let sql = format!("FETCH ALL c WITH (timeout = '{timeout}')");
        assert_eq!(sqlstate_of(&client, &sql).await, "22023", "{sql}");
        client
            .batch_execute("ROLLBACK; BEGIN; DECLARE c CURSOR FOR SUBSCRIBE TO t")
            .await
            .unwrap();
    }
    client.batch_execute("ROLLBACK").await.unwrap();
    for timeout in ["100000000000000000000s", "10000000000000"] {
        let sql = format!(
            "CREATE SOURCE s (id BIGINT) WITH (connector = 'kafka', topic = 't',
               properties.bootstrap.server = '127.0.0.1:1', idle.timeout = '{timeout}')
             FORMAT PLAIN ENCODE JSON"
        );
        assert_eq!(sqlstate_of(&client, &sql).await, "22023", "{sql}");
    }
    still_serves(&client).await;
}

/// `SELECT 1+1+…+1` with 2 million terms (a 4 MB statement), and in a dev build already 500
/// terms, overflowed the stack and killed the server with every client: now a chain past the
/// limit is refused with `54001`, and one up to it runs. Against the server binary, whose
/// runtime threads have the stacks the limit is made for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_million_term_expression_is_refused_and_the_server_lives() {
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    let mut server = process::spawn_with(dir.path(), port, &[]);
    let client = process::connect_when_up(port).await;
    let other = process::connect_when_up(port).await;
    let sum = |terms: usize| format!("SELECT {}", vec!["1"; terms].join("+"));
    assert_eq!(sqlstate_of(&client, &sum(2_000_000)).await, "54001");
    assert_eq!(sqlstate_of(&client, &sum(1_002)).await, "54001");
    let ors = format!(
        "SELECT count(*) FROM (VALUES (1)) v(x) WHERE {}",
        vec!["x = 2"; 100_000].join(" OR ")
    );
    assert_eq!(sqlstate_of(&client, &ors).await, "54001");
    still_serves(&client).await;
    still_serves(&other).await;
    // Up to the limit, a chain is planned and run (simple and extended protocol).
    let rows = client.simple_query(&sum(1_000)).await.unwrap();
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("1000"));
    let n: i64 = client.query_one(&sum(1_000), &[]).await.unwrap().get(0);
    assert_eq!(n, 1_000);
    still_serves(&other).await;
    assert!(server.is_running());
}

/// `connector = 'file'` read any file the server could (`/etc/passwd`): now only files below
/// the file source root, with `..` and symbolic links resolved first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sources_read_only_below_the_file_source_root() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.csv"), "1\n").unwrap();
    std::fs::create_dir(root.path().join("in")).unwrap();
    std::fs::write(root.path().join("in/ok.csv"), "1\n2\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
    let root_dir = root.path().to_path_buf();
    let server = TestServer::start_with(|c| c.file_source_root = Some(root_dir)).await;
    let client = server.connect().await;
    let create = |name: &str, path: &str| {
        format!(
            "CREATE SOURCE {name} (x INT) WITH (connector = 'file', path = '{path}') FORMAT PLAIN ENCODE CSV (without_header = 'true')"
        )
    };
    let secret = outside.path().join("secret.csv");
    for (name, path) in [
        ("a", "/etc/passwd".to_string()),
        ("b", secret.display().to_string()),
        (
            "c",
            format!(
                "in/../../{}/secret.csv",
                outside.path().file_name().unwrap().to_str().unwrap()
            ),
        ),
        ("d", "link/secret.csv".to_string()),
        ("e", "link/*.csv".to_string()),
    ] {
        assert_eq!(
            sqlstate_of(&client, &create(name, &path)).await,
            "42501",
            "{path}"
        );
    }
    // Below the root, relative or absolute, it reads.
    client
        .batch_execute(&create("rel", "in/*.csv"))
        .await
        .unwrap();
    let abs = root.path().join("in/ok.csv");
    client
        .batch_execute(&create("abs", &abs.display().to_string()))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = common::sorted_rows(
            &client,
            "SELECT (SELECT sum(x) FROM rel), (SELECT sum(x) FROM abs)",
        )
        .await;
        if rows == ["3|3"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
