//! Access control: SCRAM-SHA-256 passwords from a users file (a wrong one is 28P01), and TLS.

mod common;

use std::process::Command;

use sluice::{Config, Server};
use tokio_postgres::NoTls;

async fn start(dir: &std::path::Path, tls: bool) -> sluice::RunningServer {
    let users = dir.join("users.txt");
    std::fs::write(
        &users,
        "# user:password\nalice:s3cret\n# a reader\nreader:l00k:read-only\n",
    )
    .unwrap();
    let mut config = Config::new(dir.join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.users_file = Some(users);
    if tls {
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ])
            .arg("-keyout")
            .arg(dir.join("server.key"))
            .arg("-out")
            .arg(dir.join("server.crt"))
            .output()
            .expect("openssl makes a test certificate");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        config.tls_cert = Some(dir.join("server.crt"));
        config.tls_key = Some(dir.join("server.key"));
    }
    Server::start(config).await.expect("server starts")
}

#[tokio::test]
async fn scram_accepts_the_right_password_and_refuses_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), false).await;
    let port = server.addr.port();
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=alice password=s3cret dbname=sluice"),
        NoTls,
    )
    .await
    .expect("the right password is accepted");
    tokio::spawn(conn);
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    for (user, password) in [("alice", "wrong"), ("mallory", "s3cret")] {
        let err = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user={user} password={password} dbname=sluice"),
            NoTls,
        )
        .await
        .err()
        .expect("refused");
        assert_eq!(common::db_error(&err).0, "28P01", "{user}/{password}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_connects_over_tls_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), true).await;
    let port = server.addr.port();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT ssl FROM (SELECT 'tls works' AS ssl) t",
            ])
            .arg(format!(
                "host=127.0.0.1 port={port} user=alice dbname=sluice sslmode=require"
            ))
            .env("PGPASSWORD", "s3cret")
            .output()
            .expect("psql runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "psql over TLS failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tls works");
    server.shutdown().await;
}

/// A user marked `read-only` in the users file may SELECT, SUBSCRIBE and FETCH, and nothing
/// that writes or creates: 42501.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_user_reads_and_is_refused_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), false).await;
    let port = server.addr.port();
    let connect = |user: &'static str, password: &'static str| async move {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user={user} password={password} dbname=sluice"),
            NoTls,
        )
        .await
        .expect("the right password is accepted");
        tokio::spawn(conn);
        client
    };
    let alice = connect("alice", "s3cret").await;
    alice
        .batch_execute(
            "CREATE TABLE t (k INT, v INT);
             CREATE MATERIALIZED VIEW s AS SELECT k, sum(v) AS total FROM t GROUP BY k;
             INSERT INTO t VALUES (1, 10); FLUSH;",
        )
        .await
        .unwrap();
    let reader = connect("reader", "l00k").await;
    assert_eq!(
        common::sorted_rows(&reader, "SELECT * FROM s").await,
        ["1|10"]
    );
    reader
        .batch_execute(
            "SET statement_timeout = '10s'; SHOW statement_timeout;
             BEGIN; DECLARE c CURSOR FOR SUBSCRIBE s; FETCH ALL c; CLOSE c; COMMIT;
             EXPLAIN SELECT * FROM t; FLUSH;",
        )
        .await
        .expect("reading is allowed");
    for sql in [
        "INSERT INTO t VALUES (2, 2)",
        "UPDATE t SET v = 0",
        "DELETE FROM t",
        "CREATE TABLE u (x INT)",
        "CREATE MATERIALIZED VIEW w AS SELECT * FROM t",
        "DROP MATERIALIZED VIEW s",
        "DROP TABLE t",
        "COPY t FROM STDIN",
        "CREATE SINK k FROM s WITH (connector = 'kafka', topic = 'x', properties.bootstrap.server = 'localhost:1')",
        "EXPLAIN ANALYZE INSERT INTO t VALUES (3, 3)",
    ] {
        let e = reader.batch_execute(sql).await.expect_err(sql);
        assert_eq!(common::db_error(&e).0, "42501", "{sql}");
    }
    assert_eq!(
        common::sorted_rows(&alice, "SELECT * FROM t").await,
        ["1|10"]
    );
    server.shutdown().await;
}
