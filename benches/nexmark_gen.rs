//! Nexmark generator benchmark: bids generated into Arrow batches on one core. Prints bids/s.
//!
//! `cargo bench --bench nexmark_gen [-- EVENTS]` (default 10,000,000 events, of which 92 % bids).

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use sluice::connector::nexmark::{NexmarkConfig, NexmarkGenerator};

fn main() {
    let events = common::count_arg(10_000_000) as u64;
    let mut generator = NexmarkGenerator::new(NexmarkConfig {
        event_num: Some(events),
        ..NexmarkConfig::default()
    });
    let started = Instant::now();
    let mut bids = 0usize;
    let mut bytes = 0usize;
    loop {
        let batch = generator.next_bids(8192).expect("batch");
        if batch.num_rows() == 0 {
            break;
        }
        bids += batch.num_rows();
        bytes += batch.get_array_memory_size();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "nexmark_gen events={events} bids={bids} seconds={seconds:.3} bids_per_s={:.0} arrow_MB={:.0}",
        bids as f64 / seconds,
        bytes as f64 / 1e6
    );
}
