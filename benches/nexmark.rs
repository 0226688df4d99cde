//! Nexmark benchmark: every query of `tests/nexmark/queries.rs` as a view over the `nexmark`
//! generator's person, auction and bid sources (default 1M events), loaded first; each view is
//! then created and timed until it has caught up (it reads its sources' logs from the start),
//! and checked against the same query run in batch (`EXCEPT ALL` both ways: 0 rows differ; a
//! batch query that cannot run, out of `--query-memory`, is reported and skipped).
//! Prints events/s over all the stream's events (the Nexmark convention) and per core, the
//! view's rows, its state (`sluice_state`) and the process's peak RSS.
//!
//! Each line also carries a checksum of the view that an engine with other types can compute
//! too: its row count and the sum of its integer columns (`rows:sum`). `benches/peers/nexmark.py`
//! compares it with DuckDB's batch result of the same query over the same rows.
//!
//! `cargo bench --bench nexmark [-- EVENTS] [-- q5 q9 …]`: a number sets the events, names
//! pick queries. `NEXMARK_CSV=DIR` instead writes the generator's tables for those events as CSV
//! (`DIR/<table>/part-0.csv`, and q13's `side_input`) for the peers' scripts.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/nexmark/queries.rs"]
mod queries;

use std::time::Instant;

use sluice::storage::FsyncPolicy;

fn main() {
    common::init_logs();
    let events = common::count_arg(1_000_000);
    if let Ok(dir) = std::env::var("NEXMARK_CSV") {
        let dir = std::path::Path::new(&dir);
        common::write_nexmark_csv(dir, events as u64);
        // q13's side input, as `queries::setup` fills it.
        std::fs::create_dir_all(dir.join("side_input")).expect("directory");
        let side: String = (0..10_000).map(|k| format!("{k},value-{k}\n")).collect();
        std::fs::write(dir.join("side_input").join("part-0.csv"), side).expect("side input");
        return;
    }
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.starts_with('q'))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        // Source logs are never cut (one segment): the batch check reads every event again.
        let (server, client) = common::start_server_with(dir.path(), FsyncPolicy::Never, |c| {
            c.log_segment_size = u64::MAX
        })
        .await;
        let parallelism = server.engine.config().parallelism;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let loaded = Instant::now();
        client
            .batch_execute(&queries::setup(events as u64, 2, 0, 8192))
            .await
            .expect("sources");
        common::wait_for_sources(&client).await;
        println!(
            "nexmark loaded events={events} seconds={:.2}",
            loaded.elapsed().as_secs_f64()
        );
        for (name, query) in queries::QUERIES {
            if !only.is_empty() && !only.iter().any(|q| q == name) {
                continue;
            }
            let started = Instant::now();
            client
                .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
                .await
                .unwrap_or_else(|e| panic!("{name}: {:?}", e.as_db_error()));
            let seconds = started.elapsed().as_secs_f64();
            let rows: i64 = client
                .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                .await
                .expect("count")
                .get(0);
            let state = client
                .query_one(
                    "SELECT coalesce(sum(rows), 0)::BIGINT, coalesce(sum(bytes), 0)::BIGINT \
                     FROM sluice_state WHERE relation_name = $1 AND operator_id > 0",
                    &[name],
                )
                .await
                .expect("state");
            let (state_rows, state_bytes): (i64, i64) = (state.get(0), state.get(1));
            let checksum = checksum(&client, name).await;
            println!(
                "nexmark query={name} events={events} view_rows={rows} seconds={seconds:.2} \
                 events_per_s={:.0} events_per_s_per_core={:.0} state_rows={state_rows} \
                 state_mb={:.1} peak_rss_mb={} checksum={checksum} parallelism={parallelism} \
                 cores={cores}",
                events as f64 / seconds,
                events as f64 / seconds / cores as f64,
                state_bytes as f64 / 1e6,
                common::peak_rss_mb(std::process::id()),
            );
            let checked = Instant::now();
            let differ = client
                .query_one(
                    &format!(
                        "SELECT count(*) FROM ((SELECT * FROM {name} EXCEPT ALL ({query})) \
                         UNION ALL (({query}) EXCEPT ALL SELECT * FROM {name})) d"
                    ),
                    &[],
                )
                .await;
            match differ {
                Ok(row) => {
                    let differ: i64 = row.get(0);
                    println!(
                        "nexmark check query={name} rows_differing_from_batch={differ} \
                         seconds={:.1}",
                        checked.elapsed().as_secs_f64()
                    );
                    assert_eq!(differ, 0, "{name} differs from its batch query");
                }
                // The batch query itself may not run (out of --query-memory): said, not fatal.
                Err(e) => println!(
                    "nexmark check query={name} error={:?}",
                    e.as_db_error().map(|d| d.message())
                ),
            }
            client
                .batch_execute(&format!("DROP MATERIALIZED VIEW {name}"))
                .await
                .expect("drop");
        }
        server.shutdown().await;
    });
}

/// `rows:sum`: the view's row count and the sum of all its integer columns' values (NULLs
/// count 0), the same whatever integer widths an engine gives the columns.
async fn checksum(client: &tokio_postgres::Client, view: &str) -> String {
    use tokio_postgres::types::Type;
    // Materialized views are not in information_schema.columns (as in PostgreSQL): the
    // statement's description gives the types.
    let columns: Vec<String> = client
        .prepare(&format!("SELECT * FROM {view}"))
        .await
        .expect("describe")
        .columns()
        .iter()
        .filter(|c| [Type::INT2, Type::INT4, Type::INT8].contains(c.type_()))
        .map(|c| c.name().to_string())
        .collect();
    let sums: String = columns
        .iter()
        .map(|c| format!(", coalesce(sum(\"{c}\"), 0)::TEXT"))
        .collect();
    let row = client
        .query_one(&format!("SELECT count(*){sums} FROM {view}"), &[])
        .await
        .expect("checksum");
    let rows: i64 = row.get(0);
    let sum: i128 = (1..row.len())
        .map(|i| {
            row.get::<_, String>(i)
                .parse::<i128>()
                .expect("an integer sum")
        })
        .sum();
    format!("{rows}:{sum}")
}
