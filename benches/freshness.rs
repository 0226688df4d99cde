//! Freshness: how long a change takes from an acknowledged `INSERT` to a subscriber.
//!
//! `cargo bench --bench freshness [-- PINGS]` (default 500): a server with a 10 ms barrier
//! (`FRESHNESS_BARRIER_MS` changes it) and `--fsync always`; a view over a `ping` table, read
//! by `COPY (SUBSCRIBE TO pings) TO STDOUT` on its own connection. Each ping is one
//! `INSERT`; its latency is from the INSERT's acknowledgement to its row arriving at the
//! subscriber. Measured at rest, then while a second connection loads another table (with a
//! grouped view over it) at 100k rows/s by `COPY` every 10 ms. Prints p50, p99 and max.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use sluice::storage::FsyncPolicy;
use sluice::{Config, Server};
use tokio_postgres::Client;

/// Sends `pings` pings and returns each one's latency, acknowledgement to arrival.
async fn pings(
    writer: &Client,
    arrivals: &Arc<Mutex<HashMap<i64, Instant>>>,
    first: i64,
    pings: i64,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for seq in first..first + pings {
        writer
            .execute(&format!("INSERT INTO ping VALUES ({seq})"), &[])
            .await
            .expect("insert");
        let acked = Instant::now();
        let deadline = acked + Duration::from_secs(10);
        let arrived = loop {
            if let Some(&at) = arrivals.lock().unwrap().get(&seq) {
                break at;
            }
            assert!(Instant::now() < deadline, "ping {seq} never arrived");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        // A row may even reach the subscriber before its INSERT's acknowledgement does.
        latencies.push(arrived.saturating_duration_since(acked));
        // Spread over the barrier interval rather than in step with it.
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    latencies
}

fn report(label: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "freshness {label}: {} pings, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let n = common::count_arg(500) as i64;
    let barrier_ms: u64 = std::env::var("FRESHNESS_BARRIER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config::new(dir.path());
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.fsync = FsyncPolicy::Always;
    config.barrier_interval = Duration::from_millis(barrier_ms);
    let server = Server::start(config).await.expect("server");
    let port = server.addr.port();
    let writer = common::connect(port).await;
    writer
        .batch_execute(
            "CREATE TABLE ping (seq BIGINT) APPEND ONLY;
             CREATE MATERIALIZED VIEW pings AS SELECT seq FROM ping;
             CREATE TABLE load (k BIGINT, v BIGINT) APPEND ONLY;
             CREATE MATERIALIZED VIEW load_per_k AS SELECT k, count(*) AS n, sum(v) AS s FROM load GROUP BY k;",
        )
        .await
        .expect("DDL");

    let arrivals: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let subscriber = common::connect(port).await;
    let feed = subscriber
        .copy_out("COPY (SUBSCRIBE TO pings WITH (SNAPSHOT = false)) TO STDOUT")
        .await
        .expect("subscribe");
    let seen = Arc::clone(&arrivals);
    tokio::spawn(async move {
        let mut feed = Box::pin(feed);
        while let Some(Ok(chunk)) = feed.next().await {
            let now = Instant::now();
            for line in String::from_utf8_lossy(&chunk).lines() {
                // epoch, diff, seq
                if let Some(seq) = line.split('\t').nth(2).and_then(|s| s.parse().ok()) {
                    seen.lock().unwrap().insert(seq, now);
                }
            }
        }
    });

    report(
        &format!("at rest (barrier {barrier_ms} ms)"),
        pings(&writer, &arrivals, 0, n).await,
    );

    // Background load: 1,000 rows by COPY every 10 ms.
    let loader = common::connect(port).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let load = tokio::spawn(async move {
        let started = Instant::now();
        let mut rows = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            tick.tick().await;
            let mut csv = String::with_capacity(16 * 1000);
            for i in 0..1000u64 {
                let r = rows + i;
                csv.push_str(&format!("{},{}\n", r % 1000, r % 97));
            }
            let sink = loader
                .copy_in("COPY load FROM STDIN WITH (FORMAT csv)")
                .await
                .expect("copy");
            let mut sink = Box::pin(sink);
            sink.send(Bytes::from(csv)).await.expect("copy data");
            sink.as_mut().finish().await.expect("copy done");
            rows += 1000;
        }
        (rows, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let under_load = pings(&writer, &arrivals, n, n).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (rows, elapsed) = load.await.expect("load");
    report(
        &format!(
            "under load ({:.0} k rows/s by COPY into a grouped view)",
            rows as f64 / elapsed.as_secs_f64() / 1e3
        ),
        under_load,
    );
    server.shutdown().await;
}
