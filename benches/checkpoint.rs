//! Checkpoint and recovery of a large view: how long a checkpoint of its state takes to write,
//! and how long a restart takes to bring the view back from it.
//!
//! `cargo bench --bench checkpoint [-- GROUPS]` (default 4,000,000): a server with
//! `--fsync never` (for loading speed) and a checkpoint every 2 s; a table `kv` and the view
//! `agg` (`count`, `sum`, `min`, `max` of `v` per `k`) over it. `kv` is not append-only, so MIN
//! and MAX keep a count per value and a group's state is sizeable: by the layout of the
//! operator's state and the view's rows, about 250 bytes of checkpoint per group at 1.5 rows
//! per group, so the default of 4M groups should make about 1 GB (10M, about 2.5 GB; the
//! bench prints the real size). Loads `1.5 × GROUPS` rows by `INSERT … SELECT …
//! generate_series`, 1M rows a statement, then `FLUSH`; one more row after that is a change
//! that a later checkpoint must write, so that one checkpoint of the whole state is sure to
//! be taken after the load. Prints that checkpoint's time, size and rate.
//!
//! Then restarts the server on the same data directory and prints the wall time of
//! `Server::start` (reading the checkpoint, opening the table's log, restoring the view and
//! replaying the log's tail since the checkpoint) and the `recovery` row of
//! `sluice_checkpoints`, whose `duration_ms` covers the view recovery from reading the
//! checkpoint files to the caught-up view. The aim, recovery within 5 s, is judged on the
//! wall time, the whole of it. The view's count of
//! groups and of rows must be the same before and after the restart. No timing is asserted;
//! `RUST_LOG=sluice=info` shows the engine's logs (`checkpoint_read_ms` among them).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use sluice::storage::FsyncPolicy;
use sluice::{Config, Server};
use tokio_postgres::Client;

/// How often the server checkpoints.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

/// Rows per `INSERT` statement.
const CHUNK_ROWS: u64 = 1_000_000;

/// The aim for a restart with about 1 GB of view state.
const RECOVERY_AIM: Duration = Duration::from_secs(5);

/// The same configuration for both starts, on a free port.
fn config(dir: &Path) -> Config {
    let mut config = Config::new(dir);
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.fsync = FsyncPolicy::Never;
    config.checkpoint_interval = Some(CHECKPOINT_INTERVAL);
    config
}

/// Groups and rows of the view: checked to be the same after the restart.
async fn totals(client: &Client) -> (i64, i64) {
    let row = client
        .query_one("SELECT count(*), sum(n) FROM agg", &[])
        .await
        .expect("totals");
    (row.get(0), row.get(1))
}

/// Milliseconds since 1970, the unit of epochs.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The first checkpoint that wrote a view at an epoch after `after` (ms since 1970): its
/// duration in ms, bytes written and total bytes. Polls every 200 ms.
async fn checkpoint_after(client: &Client, after: i64) -> (i64, i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let rows = client
            .query(
                &format!(
                    "SELECT duration_ms, bytes_written, total_bytes FROM sluice_checkpoints \
                     WHERE kind = 'checkpoint' AND epoch > {after} AND views_written >= 1 \
                     ORDER BY epoch LIMIT 1"
                ),
                &[],
            )
            .await
            .expect("sluice_checkpoints");
        if let Some(row) = rows.first() {
            return (row.get(0), row.get(1), row.get(2));
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint after epoch {after} within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    common::init_logs();
    let groups = common::count_arg(4_000_000) as u64;
    let rows = groups + groups / 2;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(config(dir.path())).await.expect("server");
    let parallelism = server.engine.config().parallelism;
    let client = common::connect(server.addr.port()).await;
    client
        .batch_execute(
            "CREATE TABLE kv (k BIGINT, v BIGINT);
             CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi FROM kv GROUP BY k;",
        )
        .await
        .expect("DDL");

    // Groups below GROUPS / 2 get two rows (two values for MIN and MAX to count), the rest one.
    let loading = Instant::now();
    let mut from = 0;
    while from < rows {
        let to = (from + CHUNK_ROWS).min(rows);
        let inserted = client
            .execute(
                &format!(
                    "INSERT INTO kv SELECT v % {groups}, v * 7919 % 1000003 \
                     FROM generate_series({from}, {}) AS g(v)",
                    to - 1
                ),
                &[],
            )
            .await
            .expect("insert");
        assert_eq!(inserted, to - from);
        from = to;
    }
    client.batch_execute("FLUSH").await.expect("flush");
    let loaded = loading.elapsed().as_secs_f64();
    println!(
        "load: {rows} rows into {groups} groups in {loaded:.1} s ({:.0} rows/s, parallelism {parallelism})",
        rows as f64 / loaded
    );

    // Every epoch after `flushed` follows the one that made the load visible, so a checkpoint
    // taken in it holds the whole state; the extra row makes sure one is taken.
    let flushed = now_ms();
    client
        .batch_execute("INSERT INTO kv VALUES (0, 0); FLUSH")
        .await
        .expect("one more row");
    let before = totals(&client).await;
    assert_eq!(before, (groups as i64, rows as i64 + 1), "view totals");
    let (duration_ms, bytes_written, total_bytes) = checkpoint_after(&client, flushed).await;
    let seconds = duration_ms as f64 / 1e3;
    println!(
        "checkpoint: {:.2} GB in {seconds:.1} s ({:.0} MB/s), {:.2} GB written",
        total_bytes as f64 / 1e9,
        bytes_written as f64 / 1e6 / seconds.max(1e-3),
        bytes_written as f64 / 1e9,
    );
    drop(client);
    server.shutdown().await;

    let starting = Instant::now();
    let server = Server::start(config(dir.path())).await.expect("restart");
    let start = starting.elapsed();
    let client = common::connect(server.addr.port()).await;
    let recovery = client
        .query_one(
            "SELECT duration_ms, total_bytes, views_written, views_reused FROM sluice_checkpoints \
             WHERE kind = 'recovery'",
            &[],
        )
        .await
        .expect("the recovery row");
    let (views_ms, read_bytes, restored, replayed): (i64, i64, i64, i64) = (
        recovery.get(0),
        recovery.get(1),
        recovery.get(2),
        recovery.get(3),
    );
    assert_eq!(
        (restored, replayed),
        (1, 0),
        "the view was replayed from the log's start, not restored from the checkpoint"
    );
    assert_eq!(
        totals(&client).await,
        before,
        "view totals after the restart"
    );
    println!(
        "recovery: {:.1} s (views, from a {:.2} GB checkpoint), server start {:.1} s; \
         aim recovery <= {} s: {}",
        views_ms as f64 / 1e3,
        read_bytes as f64 / 1e9,
        start.as_secs_f64(),
        RECOVERY_AIM.as_secs(),
        if start <= RECOVERY_AIM {
            "met"
        } else {
            "not met"
        },
    );
    drop(client);
    server.shutdown().await;
}
