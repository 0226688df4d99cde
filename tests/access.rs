//! Access control: SCRAM-SHA-256 passwords from a users file (a wrong one is 28P01), and TLS.

mod common;

use std::process::Command;

use sluice::{Config, Server};
use tokio_postgres::NoTls;

async fn start(dir: &std::path::Path, tls: bool) -> sluice::RunningServer {
    let users = dir.join("users.txt");
    std::fs::write(&users, "# user:password\nalice:s3cret\n").unwrap();
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
    let one: i64 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
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
