//! Durability: the server binary is killed with SIGKILL right after INSERTs were acknowledged;
//! restarted on the same data directory, it has every acknowledged row and every table.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The server process, killed when dropped so that a failing test leaves nothing behind.
struct ServerProcess(Child);

impl ServerProcess {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(dir: &std::path::Path, port: u16) -> ServerProcess {
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the sluice binary starts");
    ServerProcess(child)
}

async fn connect(port: u16) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
            NoTls,
        )
        .await
        {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return client;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("server did not come up: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_acknowledged_inserts_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let client = connect(port).await;
    client
        .batch_execute(
            "CREATE TABLE acked (id BIGINT PRIMARY KEY, v TEXT); CREATE TABLE log (n INT) APPEND ONLY",
        )
        .await
        .unwrap();

    // Writers run concurrently; the server dies under them. Every INSERT that returned Ok
    // must be there after the restart.
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let c = connect(port).await;
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000i64 {
                let id = w * 1_000_000 + i;
                match c
                    .execute(
                        "INSERT INTO acked VALUES ($1, $2)",
                        &[&id, &format!("v{id}")],
                    )
                    .await
                {
                    Ok(_) => acked.push(id),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    client
        .execute("INSERT INTO log VALUES (1), (2), (3)", &[])
        .await
        .unwrap();
    let updated_before = client
        .execute("UPDATE acked SET v = 'updated' WHERE id < 5", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        !acked.is_empty(),
        "some inserts were acknowledged before the kill"
    );

    let mut child = spawn(dir.path(), port);
    let client = connect(port).await;
    let rows = client.query("SELECT id FROM acked", &[]).await.unwrap();
    let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let updated: i64 = client
        .query_one("SELECT count(*) FROM acked WHERE v = 'updated'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(updated as u64, updated_before);
    let n: i64 = client
        .query_one("SELECT sum(n) FROM log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
    // the restarted server keeps accepting writes after the recovered tail
    client
        .execute("INSERT INTO log VALUES (4)", &[])
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
    child.kill();
}
