//! Durability: the server binary is killed with SIGKILL right after INSERTs were acknowledged;
//! restarted on the same data directory, it has every acknowledged row and every table.

mod common;

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

/// SIGKILL, again and again, while a Kafka topic (librdkafka's mock cluster) feeds a source
/// and clients write to a keyed table: after each restart the source resumes from the offsets
/// in its log, and in the end the source holds every record exactly once and every kind of view
/// (sliding windows, tumbling windows emitted on close, a grouped view over a keyed table with
/// deletes, a view over a view) equals its query run in batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_kafka_feed_keeps_every_view_exact() {
    use rand::{Rng, SeedableRng};
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    const EVENTS: i64 = 30_000;
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("events", 3, 1).expect("topic");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let client = connect(port).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (id BIGINT, k INT, v BIGINT, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH (connector = 'kafka', topic = 'events', properties.bootstrap.server = '{bootstrap}',
               idle.timeout = '1s') FORMAT PLAIN ENCODE JSON;
             CREATE TABLE pk (id INT PRIMARY KEY, g INT, v BIGINT);
             CREATE MATERIALIZED VIEW hop AS SELECT k, window_start, count(*) AS n, sum(v) AS s
               FROM HOP(ev, ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND) GROUP BY k, window_start;
             CREATE MATERIALIZED VIEW tumble_closed AS SELECT window_start, count(*) AS n, max(v) AS m
               FROM TUMBLE(ev, ts, INTERVAL '2' SECOND) GROUP BY window_start EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW per_g AS SELECT g, count(*) AS n, sum(v) AS s FROM pk GROUP BY g;
             CREATE MATERIALIZED VIEW hop_totals AS SELECT k, count(*) AS windows, sum(n) AS events
               FROM hop GROUP BY k;"
        ))
        .await
        .unwrap();
    drop(client);

    // The feed: 30,000 events over about 3 s, in time order per event number.
    let base_ms: i64 = 1_767_225_600_000;
    let feed_bootstrap = bootstrap.clone();
    let feed = std::thread::spawn(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &feed_bootstrap)
            .create()
            .expect("producer");
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for id in 0..EVENTS {
            let ts = chrono::DateTime::from_timestamp_millis(
                base_ms + id * 2 + rng.random_range(0..500),
            )
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.3f");
            let payload = format!(
                r#"{{"id": {id}, "k": {}, "v": {}, "ts": "{ts}"}}"#,
                rng.random_range(0..8),
                rng.random_range(0..1000)
            );
            let record = BaseRecord::<(), str>::to("events")
                .partition((id % 3) as i32)
                .payload(&payload);
            producer.send(record).map_err(|(e, _)| e).expect("send");
            if id % 1000 == 999 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    });

    // Writers to the keyed table, reconnecting after each kill.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer_stop = std::sync::Arc::clone(&stop);
    let writer = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        while !writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((c, conn)) = tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
                NoTls,
            )
            .await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(conn);
            while !writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = rng.random_range(0..200);
                let sql = if rng.random_ratio(1, 4) {
                    format!("DELETE FROM pk WHERE id = {id}")
                } else {
                    format!(
                        "INSERT INTO pk VALUES ({id}, {}, {})",
                        rng.random_range(0..5),
                        rng.random_range(0..100)
                    )
                };
                if c.batch_execute(&sql).await.is_err() {
                    break;
                }
            }
        }
    });

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        child.kill();
        child = spawn(dir.path(), port);
        connect(port).await;
    }
    feed.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();

    let client = connect(port).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Every record once, and the watermark at the newest event less the delay (every
        // partition idle), where it stays.
        let state = common::sorted_rows(
            &client,
            "SELECT count(*), count(DISTINCT id), (SELECT watermark = (SELECT max(ts) - INTERVAL '1' SECOND FROM ev)
               FROM sluice_sources WHERE source_name = 'ev') FROM ev",
        )
        .await;
        if state == [format!("{EVENTS}|{EVENTS}|t")] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "source never complete: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client.batch_execute("FLUSH").await.unwrap();
    let checks = [
        (
            "SELECT * FROM hop",
            "SELECT k, window_start, count(*), sum(v) FROM HOP(ev, ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND) GROUP BY k, window_start",
        ),
        (
            "SELECT * FROM tumble_closed",
            "SELECT window_start, count(*), max(v) FROM TUMBLE(ev, ts, INTERVAL '2' SECOND) GROUP BY window_start, window_end
               HAVING window_end <= (SELECT watermark FROM sluice_sources WHERE source_name = 'ev')",
        ),
        ("SELECT * FROM per_g", "SELECT g, count(*), sum(v) FROM pk GROUP BY g"),
        (
            "SELECT * FROM hop_totals",
            "SELECT k, count(*), sum(n) FROM (SELECT k, window_start, count(*) AS n FROM HOP(ev, ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND) GROUP BY k, window_start) w GROUP BY k",
        ),
    ];
    for (view, batch) in checks {
        let (got, want) = (
            common::sorted_rows(&client, view).await,
            common::sorted_rows(&client, batch).await,
        );
        assert!(!want.is_empty(), "{batch}");
        assert_eq!(got, want, "{view} after 10 kills");
    }
    child.kill();
}
