//! Nexmark benchmark: every query of `tests/nexmark/queries.rs` as a view over the `nexmark`
//! generator's person, auction and bid sources (default 1M events), loaded first; each view is
//! then created and timed until it has caught up (it reads its sources' logs from the start),
//! and checked against the same query run in batch (`EXCEPT ALL` both ways: 0 rows differ).
//! Prints events/s over all the stream's events (the Nexmark convention) and per core, the
//! view's rows, its state (`sluice_state`) and the process's peak RSS.
//!
//! `cargo bench --bench nexmark [-- EVENTS] [-- q5 q9 …]`: a number sets the events, names
//! pick queries.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/nexmark/queries.rs"]
mod queries;

use std::time::Instant;

use sluice::storage::FsyncPolicy;

fn main() {
    common::init_logs();
    let events = common::count_arg(1_000_000);
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
        let (server, client) = common::start_server(dir.path(), FsyncPolicy::Never).await;
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
            let checked = Instant::now();
            let differ: i64 = client
                .query_one(
                    &format!(
                        "SELECT count(*) FROM ((SELECT * FROM {name} EXCEPT ALL ({query})) \
                         UNION ALL (({query}) EXCEPT ALL SELECT * FROM {name})) d"
                    ),
                    &[],
                )
                .await
                .expect("batch check")
                .get(0);
            println!(
                "nexmark query={name} events={events} view_rows={rows} seconds={seconds:.2} \
                 events_per_s={:.0} events_per_s_per_core={:.0} state_rows={state_rows} \
                 state_mb={:.1} peak_rss_mb={} rows_differing_from_batch={differ} \
                 batch_check_seconds={:.1} parallelism={parallelism} cores={cores}",
                events as f64 / seconds,
                events as f64 / seconds / cores as f64,
                state_bytes as f64 / 1e6,
                common::peak_rss_mb(std::process::id()),
                checked.elapsed().as_secs_f64(),
            );
            assert_eq!(differ, 0, "{name} differs from its batch query");
            client
                .batch_execute(&format!("DROP MATERIALIZED VIEW {name}"))
                .await
                .expect("drop");
        }
        server.shutdown().await;
    });
}
