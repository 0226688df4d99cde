//! Big view: what one small write costs when a view is large.
//!
//! `cargo bench --bench big_view [-- GROUPS]` (default 5,000,000): a server with `--fsync
//! always` and its default barrier and checkpoint intervals. First a view of 10 groups over a
//! small table; then a table of GROUPS rows (one per key, by `COPY`) and a view grouping it by
//! key. For each view, 50 single-row `INSERT`s into its table, each followed by `FLUSH`; the
//! round trip (INSERT sent to FLUSH answered) is timed. Then 50 point `SELECT`s by key on the
//! big view. Prints median, p90 and max of each, and the process's peak RSS.

mod common;

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use sluice::storage::FsyncPolicy;
use tokio_postgres::Client;

const WRITES: usize = 50;

fn report(label: &str, mut times: Vec<Duration>) -> f64 {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    println!(
        "big_view {label}: n={} median_ms={:.2} p90_ms={:.2} max_ms={:.2}",
        times.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
    at(0.5)
}

/// `WRITES` single-row inserts into `table` with keys below `keys`, each followed by FLUSH.
async fn writes(client: &Client, table: &str, keys: i64, rng: &mut StdRng) -> Vec<Duration> {
    let mut times = Vec::with_capacity(WRITES);
    for _ in 0..WRITES {
        let k = rng.random_range(0..keys);
        let started = Instant::now();
        client
            .batch_execute(&format!("INSERT INTO {table} VALUES ({k}, 1); FLUSH;"))
            .await
            .expect("insert and flush");
        times.push(started.elapsed());
        // Off the barrier's rhythm.
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..30))).await;
    }
    times
}

#[tokio::main]
async fn main() {
    common::init_logs();
    let groups = common::count_arg(5_000_000) as i64;
    let dir = tempfile::tempdir().expect("dir");
    let (_server, client) = common::start_server(dir.path(), FsyncPolicy::Always).await;
    let mut rng = StdRng::seed_from_u64(7);

    client
        .batch_execute(
            "CREATE TABLE small (k BIGINT, v BIGINT);
             INSERT INTO small SELECT g, 1 FROM generate_series(0, 9) AS t(g);
             CREATE MATERIALIZED VIEW small_v AS SELECT k, count(*) AS n, sum(v) AS s FROM small GROUP BY k;
             FLUSH;",
        )
        .await
        .expect("small view");
    let small = report(
        "small_view_insert_flush",
        writes(&client, "small", 10, &mut rng).await,
    );

    client
        .batch_execute("CREATE TABLE big (k BIGINT, v BIGINT)")
        .await
        .expect("big table");
    let seconds = common::copy_keys(&client, "big", groups).await;
    println!("big_view load: rows={groups} seconds={seconds:.2}");
    let started = Instant::now();
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW big_v AS SELECT k, count(*) AS n, sum(v) AS s FROM big GROUP BY k;
             FLUSH;",
        )
        .await
        .expect("big view");
    println!(
        "big_view create: groups={groups} seconds={:.2} peak_rss_mb={}",
        started.elapsed().as_secs_f64(),
        common::peak_rss_mb(std::process::id())
    );
    let big = report(
        "big_view_insert_flush",
        writes(&client, "big", groups, &mut rng).await,
    );

    let mut lookups = Vec::with_capacity(WRITES);
    for _ in 0..WRITES {
        let k = rng.random_range(0..groups);
        let started = Instant::now();
        let rows = client
            .query(&format!("SELECT n, s FROM big_v WHERE k = {k}"), &[])
            .await
            .expect("point select");
        lookups.push(started.elapsed());
        assert_eq!(rows.len(), 1, "key {k} has one row");
    }
    report("big_view_point_select", lookups);
    let row = client
        .query_one("SELECT count(*) FROM big_v", &[])
        .await
        .expect("count");
    let count: i64 = row.get(0);
    assert_eq!(count, groups, "every key is a group");
    println!(
        "big_view summary: groups={groups} insert_flush_ratio_big_to_small={:.2} peak_rss_mb={}",
        big / small,
        common::peak_rss_mb(std::process::id())
    );
}
