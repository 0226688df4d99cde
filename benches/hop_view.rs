//! HOP view benchmark: a table of N Nexmark-style bids (default 10M, 1 ms apart in event time,
//! 1,000 auctions of which 100 are hot), then
//! `CREATE MATERIALIZED VIEW … GROUP BY auction, HOP(date_time, slide, 10 s)` with
//! `count(*)`, `sum(price)`, `max(price)` for slide 1 s, 2 s and 5 s, in both emit modes. The
//! view reads the table's log from position 0, so the time until CREATE returns (the view has
//! caught up, its contents published) is the time to process every event. Prints events/s.
//!
//! `cargo bench --bench hop_view [-- EVENTS]`; `HOP_VIEW_ONLY=window_close:1` runs one case.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use sluice::storage::FsyncPolicy;

/// 2026-01-01 00:00:00 UTC in nanoseconds.
const T0_NS: i64 = 1_767_225_600_000_000_000;

fn bids(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    from: usize,
    rows: usize,
    state: &mut u64,
) -> RecordBatch {
    let mut next = || {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    };
    let mut auction = Vec::with_capacity(rows);
    let mut bidder = Vec::with_capacity(rows);
    let mut price = Vec::with_capacity(rows);
    let mut ts = Vec::with_capacity(rows);
    for i in from..from + rows {
        let hot = next() % 2 == 0;
        auction.push(1000 + (next() % if hot { 100 } else { 1000 }) as i64);
        bidder.push(1000 + (next() % 10_000) as i64);
        let u = (next() % 1_000_000) as f64 / 1e6;
        price.push((100.0 * 10f64.powf(6.0 * u)).round() as i64);
        ts.push(T0_NS + i as i64 * 1_000_000);
    }
    let channel = StringArray::from_iter_values(
        (0..rows).map(|i| ["Google", "Facebook", "Baidu", "Apple"][i % 4]),
    );
    let url = StringArray::from_iter_values(
        (0..rows).map(|_| "https://www.nexmark.com/item.htm?query=1"),
    );
    let extra = StringArray::from_iter_values(
        (0..rows).map(|i| format!("extra{:08}", (from + i) % 100_000_000)),
    );
    RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            Arc::new(Int64Array::from(auction)),
            Arc::new(Int64Array::from(bidder)),
            Arc::new(Int64Array::from(price)),
            Arc::new(channel),
            Arc::new(url),
            Arc::new(TimestampNanosecondArray::from(ts)),
            Arc::new(extra),
        ],
    )
    .expect("batch")
}

fn main() {
    let events = common::count_arg(10_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let (server, client) = common::start_server(dir.path(), FsyncPolicy::Never).await;
        let parallelism = server.engine.config().parallelism;
        client
            .batch_execute(
                "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
                 url VARCHAR, date_time TIMESTAMP, extra VARCHAR, \
                 WATERMARK FOR date_time AS date_time) APPEND ONLY",
            )
            .await
            .expect("create table");
        let table = server.engine.tables().get("bids").expect("table");
        let schema = Arc::clone(&table.def().schema);
        let loaded = Instant::now();
        let mut state = 42u64;
        let chunk = 65_536;
        let mut from = 0;
        while from < events {
            let rows = chunk.min(events - from);
            table.insert(bids(&schema, from, rows, &mut state)).await.expect("insert");
            from += rows;
        }
        println!(
            "hop_view loaded events={events} seconds={:.2}",
            loaded.elapsed().as_secs_f64()
        );
        for emit in ["window_close", "update"] {
            for slide in [1, 2, 5] {
                if let Ok(only) = std::env::var("HOP_VIEW_ONLY")
                    && only != format!("{emit}:{slide}")
                {
                    continue;
                }
                let name = format!("hop_{emit}_{slide}");
                let sql = format!(
                    "CREATE MATERIALIZED VIEW {name} AS SELECT auction, \
                     HOP_START(date_time, INTERVAL '{slide}' SECOND, INTERVAL '10' SECOND) AS ws, \
                     count(*) AS c, sum(price) AS s, max(price) AS m FROM bids \
                     GROUP BY auction, HOP(date_time, INTERVAL '{slide}' SECOND, INTERVAL '10' SECOND){}",
                    if emit == "window_close" { " EMIT ON WINDOW CLOSE" } else { "" }
                );
                let started = Instant::now();
                client.batch_execute(&sql).await.expect("create view");
                let seconds = started.elapsed().as_secs_f64();
                let rows: i64 = client
                    .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                    .await
                    .expect("count")
                    .get(0);
                println!(
                    "hop_view emit={emit} slide_s={slide} size_s=10 events={events} view_rows={rows} \
                     seconds={seconds:.2} events_per_s={:.0} parallelism={parallelism}",
                    events as f64 / seconds
                );
                client
                    .batch_execute(&format!("DROP MATERIALIZED VIEW {name}"))
                    .await
                    .expect("drop");
            }
        }
        server.shutdown().await;
    });
}
