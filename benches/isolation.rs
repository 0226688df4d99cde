//! Isolation: how long a small write takes to show in its view while other work runs.
//!
//! `cargo bench --bench isolation [-- ROWS]` (default 10,000,000): a server with its default
//! barrier interval (250 ms), `--fsync always` and a checkpoint every second. A small table `small (k, v)` has a view
//! counting rows per key. A ping is one `INSERT` of a new key into `small`, then a point
//! `SELECT` on the view every millisecond until the key shows; its time runs from the
//! INSERT's acknowledgement to the first SELECT that sees it. Pings are measured:
//!
//! 1. at rest;
//! 2. while a second connection creates a view of ROWS groups over a table of ROWS rows (pings run from
//!    the moment its `CREATE MATERIALIZED VIEW` is sent until it returns);
//! 3. while a PostgreSQL sink cannot write: its target table in the machine's PostgreSQL
//!    (127.0.0.1:5432, database `test`) is locked by another transaction, so the sink stops
//!    answering, and a third connection keeps writing to its view's table. Pings run for
//!    `ISOLATION_STUCK_SECS` (default 40) seconds; then the lock is released and the time
//!    until the sink has delivered everything is printed. Skipped without PostgreSQL.
//!
//! Prints p50, p99 and max of each phase and the p99 as a multiple of the barrier interval
//! (the aim is ≤ 4), and what `sluice_sinks` shows of the stuck sink.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice::storage::FsyncPolicy;
use tokio_postgres::{Client, NoTls};

/// How long a ping waits for its row before it is counted as timed out (its time is then
/// this long).
const PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Pings `small` until `stop` is set (at least `min` pings); returns each one's time to
/// visibility.
async fn pings(
    client: &Client,
    next_key: &mut i64,
    stop: &AtomicBool,
    min: usize,
) -> Vec<Duration> {
    let lookup = client
        .prepare("SELECT n FROM small_v WHERE k = $1")
        .await
        .expect("prepare");
    let mut times = Vec::new();
    while times.len() < min || !stop.load(Ordering::Relaxed) {
        let k = *next_key;
        *next_key += 1;
        client
            .execute(&format!("INSERT INTO small VALUES ({k}, 1)"), &[])
            .await
            .expect("insert");
        let acked = Instant::now();
        loop {
            if !client
                .query(&lookup, &[&k])
                .await
                .expect("lookup")
                .is_empty()
            {
                break;
            }
            if acked.elapsed() >= PING_TIMEOUT {
                println!("isolation ping: key {k} not visible after {PING_TIMEOUT:?}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(acked.elapsed());
        // Off the barrier's rhythm.
        tokio::time::sleep(Duration::from_millis(3 + (k % 17) as u64)).await;
    }
    times
}

/// Prints a phase's figures; returns its p99 in ms.
fn report(phase: &str, mut times: Vec<Duration>, barrier: Duration) -> f64 {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    let p99 = at(0.99);
    println!(
        "isolation {phase}: pings={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} p99_over_barrier={:.2}",
        times.len(),
        at(0.5),
        p99,
        at(1.0),
        p99 / (barrier.as_secs_f64() * 1e3)
    );
    p99
}

/// Loads `rows` rows into table `big` by COPY.
async fn load(client: &Client, rows: i64) {
    client
        .batch_execute("CREATE TABLE big (k BIGINT, v BIGINT)")
        .await
        .expect("big table");
    let seconds = common::copy_keys(client, "big", rows).await;
    println!("isolation load: rows={rows} seconds={seconds:.2}");
}

/// The stuck sink's `sluice_sinks.status`.
async fn sink_status(client: &Client) -> String {
    client
        .query_one(
            "SELECT status FROM sluice_sinks WHERE sink_name = 'feed_out'",
            &[],
        )
        .await
        .expect("sluice_sinks")
        .get(0)
}

/// The machine's PostgreSQL, if it answers.
async fn postgres() -> Option<Client> {
    let (client, connection) =
        tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", NoTls)
            .await
            .ok()?;
    tokio::spawn(connection);
    Some(client)
}

#[tokio::main]
async fn main() {
    common::init_logs();
    let rows = common::count_arg(10_000_000) as i64;
    let stuck_secs: u64 = std::env::var("ISOLATION_STUCK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().expect("dir");
    // The sink in phase 3 is exactly-once, handed a batch per checkpoint: checkpoints every
    // second fill its 16-batch channel in about 16 s.
    let (server, client) = common::start_server_with(dir.path(), FsyncPolicy::Always, |c| {
        c.checkpoint_interval = Some(Duration::from_secs(1))
    })
    .await;
    let barrier = sluice::Config::new(dir.path()).barrier_interval;
    let port = server.addr.port();
    client
        .batch_execute(
            "CREATE TABLE small (k BIGINT, v BIGINT);
             CREATE MATERIALIZED VIEW small_v AS SELECT k, count(*) AS n FROM small GROUP BY k;",
        )
        .await
        .expect("small view");
    let mut key = 0i64;

    // 1. At rest.
    let done = AtomicBool::new(true);
    let rest = pings(&client, &mut key, &done, 100).await;
    report("at_rest", rest, barrier);

    // 2. While another connection creates a view over `rows` rows.
    load(&client, rows).await;
    let creator = common::connect(port).await;
    let created = Arc::new(AtomicBool::new(false));
    let creating = {
        let created = Arc::clone(&created);
        tokio::spawn(async move {
            let started = Instant::now();
            creator
                .batch_execute(
                    "CREATE MATERIALIZED VIEW big_v AS \
                     SELECT k, count(*) AS n, sum(v) AS s FROM big GROUP BY k",
                )
                .await
                .expect("big view");
            created.store(true, Ordering::Relaxed);
            started.elapsed()
        })
    };
    let during = pings(&client, &mut key, &created, 10).await;
    let took = creating.await.expect("creator");
    println!(
        "isolation create_view: rows={rows} seconds={:.2} peak_rss_mb={}",
        took.as_secs_f64(),
        common::peak_rss_mb(std::process::id())
    );
    report("while_a_view_backfills", during, barrier);

    // 3. While a sink's target does not answer.
    let Some(pg) = postgres().await else {
        println!("isolation stuck_sink: skipped (no PostgreSQL at 127.0.0.1:5432)");
        return;
    };
    pg.batch_execute(
        "DROP TABLE IF EXISTS sluice_isolation_feed;
         CREATE TABLE sluice_isolation_feed (k BIGINT PRIMARY KEY, n BIGINT)",
    )
    .await
    .expect("sink table");
    client
        .batch_execute(
            "CREATE TABLE feed (k BIGINT, v BIGINT);
             CREATE MATERIALIZED VIEW feed_v AS SELECT k, count(*) AS n FROM feed GROUP BY k;
             CREATE SINK feed_out FROM feed_v WITH (connector = 'postgres', \
               hostname = '127.0.0.1', port = '5432', username = 'postgres', \
               database.name = 'test', table.name = 'sluice_isolation_feed', primary_key = 'k');",
        )
        .await
        .expect("sink");
    let locker = postgres().await.expect("second PostgreSQL connection");
    locker
        .batch_execute("BEGIN; LOCK TABLE sluice_isolation_feed IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = Arc::clone(&writing);
        let feeder = common::connect(port).await;
        tokio::spawn(async move {
            let mut k = 0i64;
            while writing.load(Ordering::Relaxed) {
                feeder
                    .execute(&format!("INSERT INTO feed VALUES ({}, 1)", k % 1000), &[])
                    .await
                    .expect("feed insert");
                k += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            k
        })
    };
    let stuck = Arc::new(AtomicBool::new(false));
    let timer = {
        let stuck = Arc::clone(&stuck);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(stuck_secs)).await;
            stuck.store(true, Ordering::Relaxed);
        })
    };
    let during = pings(&client, &mut key, &stuck, 10).await;
    timer.await.expect("timer");
    let status = sink_status(&client).await;
    // Columns an older build does not have are left out.
    let lag = client
        .query_one(
            "SELECT lag_seconds FROM sluice_sinks WHERE sink_name = 'feed_out'",
            &[],
        )
        .await
        .map(|r| format!("{:.1}", r.get::<_, f64>(0)))
        .unwrap_or_else(|_| "-".into());
    println!(
        "isolation stuck_sink: seconds={stuck_secs} sink_status={status} sink_lag_seconds={lag}"
    );
    report("while_a_sink_is_stuck", during, barrier);

    // The sink delivers everything once its target answers again.
    writing.store(false, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    let released = Instant::now();
    let expected = written;
    let keys = written.min(1000);
    loop {
        // Every row written is counted once in the sink's table.
        let delivered: i64 = pg
            .query_one(
                "SELECT coalesce(sum(n), 0)::bigint FROM sluice_isolation_feed",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        let status = sink_status(&client).await;
        if delivered == expected && status != "backpressured" {
            break;
        }
        assert!(
            released.elapsed() < Duration::from_secs(120),
            "the sink did not catch up: {delivered} of {expected} rows, {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "isolation sink_recovered: rows_written={written} keys={keys} seconds={:.2}",
        released.elapsed().as_secs_f64()
    );
    pg.batch_execute("DROP TABLE sluice_isolation_feed")
        .await
        .expect("drop sink table");
}
