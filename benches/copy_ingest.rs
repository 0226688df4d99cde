//! Ingest benchmark: `COPY bids FROM STDIN (FORMAT csv)` of N Nexmark-style bid rows through a
//! real tokio-postgres connection into a table, with `--fsync always`. The server is the
//! `sluice` binary in a process of its own, so its peak RSS (`VmHWM`) is its own; the CSV is
//! generated as it is sent, 1 MiB at a time. Prints rows/s, MB/s and the server's peak RSS.
//!
//! `cargo bench --bench copy_ingest [-- ROWS]` (default 1,000,000 rows). The first round loads
//! an `APPEND ONLY` table (its rows stay in its log); the second a default table, which keeps
//! its rows in memory for `UPDATE`/`DELETE` and so gets at most 2,000,000 rows.

#[path = "common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;

/// Nexmark-like bid rows as CSV, `rows` of them from row `from`: auction, bidder, price,
/// channel, url, date_time, extra.
fn bids_csv(from: usize, rows: usize, state: &mut u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * 120);
    let mut next = || {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    };
    let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid date");
    for i in from..from + rows {
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
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut server = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--fsync",
            "always",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the sluice binary starts");
    let pid = server.id();
    runtime.block_on(async move {
        let started = Instant::now();
        let client = loop {
            match tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
                tokio_postgres::NoTls,
            )
            .await
            {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    break client;
                }
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the server does not answer: {e}"),
            }
        };
        println!("copy_ingest server_peak_rss_mb_at_start={}", common::peak_rss_mb(pid));
        for (round, append_only) in [(1, true), (2, false)] {
            let rows = if append_only { rows } else { rows.min(2_000_000) };
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
            let mut state: u64 = 42;
            let mut bytes = 0usize;
            let mut sent = 0;
            while sent < rows {
                let n = (rows - sent).min(8_000);
                let chunk = bids_csv(sent, n, &mut state);
                bytes += chunk.len();
                sink.send(Bytes::from(chunk)).await.expect("copy data");
                sent += n;
            }
            let copied = sink.finish().await.expect("copy ends");
            let elapsed = started.elapsed().as_secs_f64();
            assert_eq!(copied as usize, rows);
            let counted: i64 = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .expect("count")
                .get(0);
            assert_eq!(counted as usize, rows);
            println!(
                "copy_ingest table={} rows={rows} bytes={bytes} seconds={elapsed:.3} rows_per_s={:.0} MB_per_s={:.1} fsync=always server_peak_rss_mb={}",
                if append_only { "append_only" } else { "default" },
                rows as f64 / elapsed,
                bytes as f64 / elapsed / 1e6,
                common::peak_rss_mb(pid)
            );
        }
    });
    let _ = server.kill();
    let _ = server.wait();
}
