//! Nexmark generator benchmark: each table's rows generated into Arrow batches on one core.
//! Prints rows/s per table.
//!
//! `cargo bench --bench nexmark_gen [-- EVENTS]` (default 10,000,000 events: 92 % bids, 6 %
//! auctions, 2 % persons).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use sluice::connector::nexmark::{NexmarkConfig, NexmarkGenerator};

type Next = fn(&mut NexmarkGenerator, usize) -> Result<RecordBatch, ArrowError>;

fn main() {
    let events = common::count_arg(10_000_000) as u64;
    let tables: [(&str, Next); 3] = [
        ("bid", NexmarkGenerator::next_bids),
        ("auction", NexmarkGenerator::next_auctions),
        ("person", NexmarkGenerator::next_persons),
    ];
    for (table, next) in tables {
        let mut generator = NexmarkGenerator::new(NexmarkConfig {
            event_num: Some(events),
            ..NexmarkConfig::default()
        });
        let started = Instant::now();
        let mut rows = 0usize;
        let mut bytes = 0usize;
        loop {
            let batch = next(&mut generator, 8192).expect("batch");
            if batch.num_rows() == 0 {
                break;
            }
            rows += batch.num_rows();
            bytes += batch.get_array_memory_size();
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "nexmark_gen table={table} events={events} rows={rows} seconds={seconds:.3} rows_per_s={:.0} arrow_MB={:.0}",
            rows as f64 / seconds,
            bytes as f64 / 1e6
        );
    }
}
