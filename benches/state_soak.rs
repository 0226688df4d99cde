//! State soak: does state stay flat under a long steady stream?
//!
//! `cargo bench --bench state_soak [-- MINUTES]` (default 30): a server with its defaults
//! (250 ms barriers, a checkpoint every 10 s) and the `nexmark` generator's bids paced at
//! `SOAK_RATE` events per second (default 200,000; about 46 of every 50 events are bids), with
//! a 1-minute watermark delay. Event time runs at 10,000 events per second, so at 200k/s an
//! hour of event time passes every 3 minutes and windows close all the time. Five views:
//!
//! - `tumble_u`: an updating TUMBLE (10 s) count and max per window;
//! - `hop_u`: an updating HOP (2 s slide, 10 s size) per `auction % 10`;
//! - `hop_eowc`: the same HOP with `EMIT ON WINDOW CLOSE`;
//! - `sessions`: updating SESSION windows (1 minute gap) per auction, for 1 % of auctions
//!   (every session is a row of the view: all auctions would add 10M rows a minute);
//! - `keyed`: an aggregate per `bidder % 10000` (no window: 10,000 groups for ever).
//!
//! Each minute it prints the bids read so far and their rate, the operators' state (rows and
//! bytes in `sluice_state`, without the views' own rows, which grow with every closed window by
//! design), the views' rows and bytes, the process's RSS, the RSS less the views' bytes, and the
//! bytes of the source's log on disk (cut below what the views and the two newest checkpoints
//! need). State that stays bounded is flat after the first minutes; the last line compares the
//! last minute with the third.

mod common;

use std::time::{Duration, Instant};

use sluice::storage::FsyncPolicy;
use tokio_postgres::Client;

/// One minute's reading.
#[derive(Debug, Clone, Copy)]
struct Reading {
    bids: i64,
    state_rows: i64,
    state_bytes: i64,
    view_rows: i64,
    view_bytes: i64,
    rss_mb: u64,
    /// Bytes of the source's log on disk (`sluice_logs`).
    log_bytes: i64,
}

async fn read(client: &Client) -> Reading {
    let bids: i64 = client
        .query_one(
            "SELECT coalesce(sum(rows), 0)::bigint FROM sluice_sources WHERE source_name = 'bid'",
            &[],
        )
        .await
        .expect("sluice_sources")
        .get(0);
    let state = client
        .query_one(
            "SELECT coalesce(sum(rows), 0)::bigint, coalesce(sum(bytes), 0)::bigint FROM sluice_state \
             WHERE relation_kind = 'materialized view' AND operator <> 'Materialize'",
            &[],
        )
        .await
        .expect("sluice_state");
    let views = client
        .query_one(
            "SELECT coalesce(sum(rows), 0)::bigint, coalesce(sum(bytes), 0)::bigint FROM sluice_state \
             WHERE relation_kind = 'materialized view' AND operator = 'Materialize'",
            &[],
        )
        .await
        .expect("sluice_state");
    let log_bytes: i64 = client
        .query_one(
            "SELECT coalesce(sum(bytes), 0)::bigint FROM sluice_logs WHERE relation_name = 'bid'",
            &[],
        )
        .await
        .expect("sluice_logs")
        .get(0);
    Reading {
        log_bytes,
        bids,
        state_rows: state.get(0),
        state_bytes: state.get(1),
        view_rows: views.get(0),
        view_bytes: views.get(1),
        rss_mb: common::rss_mb(std::process::id()),
    }
}

#[tokio::main]
async fn main() {
    common::init_logs();
    let minutes = common::count_arg(30) as u64;
    let rate: u64 = std::env::var("SOAK_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("dir");
    let (_server, client) = common::start_server(dir.path(), FsyncPolicy::Never).await;
    // Enough events for the whole run, and some.
    let events = rate * 60 * (minutes + 1);
    let gap_ns = 1_000_000_000 / rate.max(1);
    client
        .batch_execute(&format!(
            "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR,
               url VARCHAR, date_time TIMESTAMP, extra VARCHAR,
               WATERMARK FOR date_time AS date_time - INTERVAL '1' MINUTE)
             WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = '{events}',
               nexmark.split.num = '2', nexmark.min.event.gap.in.ns = '{gap_ns}');
             CREATE MATERIALIZED VIEW tumble_u AS
               SELECT window_start, count(*) AS n, max(price) AS top
               FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start;
             CREATE MATERIALIZED VIEW hop_u AS
               SELECT window_start, auction % 10 AS part, count(*) AS n, sum(price) AS total
               FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
               GROUP BY window_start, auction % 10;
             CREATE MATERIALIZED VIEW hop_eowc AS
               SELECT window_start, auction % 10 AS part, count(*) AS n, sum(price) AS total
               FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
               GROUP BY window_start, auction % 10 EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW sessions AS
               SELECT auction, SESSION_START(date_time, INTERVAL '1' MINUTE) AS started,
                      count(*) AS n
               FROM bid WHERE auction % 100 = 0
               GROUP BY auction, SESSION(date_time, INTERVAL '1' MINUTE);
             CREATE MATERIALIZED VIEW keyed AS
               SELECT bidder % 10000 AS b, count(*) AS n, sum(price) AS total, max(price) AS top
               FROM bid GROUP BY bidder % 10000;"
        ))
        .await
        .expect("source and views");
    println!("state_soak: minutes={minutes} rate={rate}/s watermark_delay=1min");
    let started = Instant::now();
    let mut readings: Vec<Reading> = Vec::new();
    let mut previous_bids = 0;
    for minute in 1..=minutes {
        let due = started + Duration::from_secs(60 * minute);
        tokio::time::sleep_until(due.into()).await;
        let r = read(&client).await;
        println!(
            "state_soak minute={minute} bids={} bids_per_s={:.0} state_rows={} state_mb={:.1} \
             view_rows={} view_mb={:.1} rss_mb={} rss_without_views_mb={} log_mb={:.0}",
            r.bids,
            (r.bids - previous_bids) as f64 / 60.0,
            r.state_rows,
            r.state_bytes as f64 / 1e6,
            r.view_rows,
            r.view_bytes as f64 / 1e6,
            r.rss_mb,
            r.rss_mb.saturating_sub((r.view_bytes / 1_000_000) as u64),
            r.log_bytes as f64 / 1e6
        );
        previous_bids = r.bids;
        readings.push(r);
    }
    if let (Some(third), Some(last)) = (readings.get(2), readings.last()) {
        println!(
            "state_soak summary: state_rows minute3={} last={} ratio={:.2}; rss_mb minute3={} last={} \
             ratio={:.2}; view_rows last={}; log_mb minute3={:.0} last={:.0}",
            third.state_rows,
            last.state_rows,
            last.state_rows as f64 / third.state_rows.max(1) as f64,
            third.rss_mb,
            last.rss_mb,
            last.rss_mb as f64 / third.rss_mb.max(1) as f64,
            last.view_rows,
            third.log_bytes as f64 / 1e6,
            last.log_bytes as f64 / 1e6
        );
    }
}
