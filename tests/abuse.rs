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
