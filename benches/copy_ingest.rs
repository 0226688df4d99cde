//! Ingest benchmark: `COPY bids FROM STDIN (FORMAT csv)` of N Nexmark-style bid rows through a
//! real tokio-postgres connection into a table, with `--fsync always`. Prints rows/s.
//!
//! `cargo bench --bench copy_ingest [-- ROWS]` (default 1,000,000 rows).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use bytes::Bytes;
use futures::SinkExt;
use sluice::storage::FsyncPolicy;

/// Nexmark-like bid rows as CSV: auction, bidder, price, channel, url, date_time, extra.
fn bids_csv(rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * 110);
    let mut state: u64 = 42;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid date");
    for i in 0..rows {
        let auction = 1000 + next() % 1000;
        let bidder = 1000 + next() % 10_000;
        let price = 100 + next() % 1_000_000;
        let ts = base + chrono::Duration::milliseconds(i as i64);
        let channel = ["Google", "Facebook", "Baidu", "Apple"][(next() % 4) as usize];
        out.extend_from_slice(
            format!(
                "{auction},{bidder},{price},{channel},https://www.nexmark.com/item.htm?query=1,{},extra{:08}\n",
                ts.format("%Y-%m-%d %H:%M:%S%.3f"),
                next() % 100_000_000
            )
            .as_bytes(),
        );
    }
    out
}

fn main() {
    let rows = common::count_arg(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let (server, client) = common::start_server(dir.path(), FsyncPolicy::Always).await;
        let data = bids_csv(rows);
        for (round, append_only) in [(1, true), (2, false)] {
            let table = format!("bids{round}");
            client
                .batch_execute(&format!(
                    "CREATE TABLE {table} (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP, extra VARCHAR){}",
                    if append_only { " APPEND ONLY" } else { "" }
                ))
                .await
                .expect("create");
            let started = Instant::now();
            let sink = client
                .copy_in(&format!("COPY {table} FROM STDIN WITH (FORMAT csv)"))
                .await
                .expect("copy starts");
            futures::pin_mut!(sink);
            for chunk in data.chunks(1 << 20) {
                sink.send(Bytes::copy_from_slice(chunk)).await.expect("copy data");
            }
            let copied = sink.finish().await.expect("copy ends");
            let elapsed = started.elapsed().as_secs_f64();
            assert_eq!(copied as usize, rows);
            println!(
                "copy_ingest table={} rows={rows} bytes={} seconds={elapsed:.3} rows_per_s={:.0} MB_per_s={:.1} fsync=always",
                if append_only { "append_only" } else { "default" },
                data.len(),
                rows as f64 / elapsed,
                data.len() as f64 / elapsed / 1e6
            );
        }
        server.shutdown().await;
    });
}
