//! The Nexmark source (`connector = 'nexmark'`): `nexmark.split.num` generators take turns,
//! one chunk each, and write their bids with the event number each has reached, so that a
//! restart resumes where the log ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::generator::{
    NexmarkConfig, NexmarkGenerator, auction_schema, bid_schema, person_schema,
};
use crate::connector::decode::conform;
use crate::connector::queue::table::ConnectorBatch;
use crate::connector::source::{
    SourceContext, SplitWatermarks, position_text, watermark_candidates,
};
use crate::connector::spec::{NexmarkSource, NexmarkTable};
use crate::error::Result;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    /// Next event number of each split.
    next: BTreeMap<u64, u64>,
}

/// Generates until the stream (if bounded) ends or the source is dropped.
pub fn run(context: &SourceContext, nexmark: &NexmarkSource) -> Result<()> {
    let Some(mut position) = context.resume::<Position>()? else {
        return Ok(());
    };
    let splits_num = u64::from(nexmark.split_num);
    let mut generators: Vec<NexmarkGenerator> = (0..splits_num)
        .map(|split_index| {
            let mut generator = NexmarkGenerator::new(NexmarkConfig {
                event_num: nexmark.event_num,
                split_num: splits_num,
                split_index,
                ..NexmarkConfig::default()
            });
            if let Some(&next) = position.next.get(&split_index) {
                generator.resume_at(next);
            }
            generator
        })
        .collect();
    let schema = context.table.def().schema.clone();
    let generated_schema = match nexmark.table {
        NexmarkTable::Bid => bid_schema(),
        NexmarkTable::Auction => auction_schema(),
        NexmarkTable::Person => person_schema(),
    };
    if schema.fields().len() != generated_schema.fields().len() {
        tracing::info!("nexmark source declares its own columns; matched by name");
    }
    // Every split holds the watermark back from the start: a split not yet heard from may
    // still send rows older than another split's first chunk.
    let mut splits = SplitWatermarks::new(Duration::MAX);
    for index in 0..splits_num {
        splits.restore(index as i64, None);
    }
    let started = Instant::now();
    let mut generated: u64 = 0;
    while !context.stopped() {
        let mut any = false;
        for (index, generator) in generators.iter_mut().enumerate() {
            if generator.is_exhausted() {
                splits.finish(index as i64);
                continue;
            }
            any = true;
            let events = match nexmark.table {
                NexmarkTable::Bid => generator.next_bids(nexmark.chunk_size)?,
                NexmarkTable::Auction => generator.next_auctions(nexmark.chunk_size)?,
                NexmarkTable::Person => generator.next_persons(nexmark.chunk_size)?,
            };
            generated += events.num_rows() as u64;
            let rows = conform(&events, &schema)?;
            let candidates = watermark_candidates(&context.table, &rows)?;
            splits.observe(
                candidates.as_ref(),
                std::iter::repeat_n(index as i64, rows.num_rows()),
            );
            position.next.insert(index as u64, generator.next_event());
            context.write(ConnectorBatch {
                rows,
                deleted_keys: None,
                watermark: splits.current(),
                position: position_text(&position),
                end_of_input: false,
            })?;
        }
        if !any {
            context.write_mark(None, &position, true)?;
            return Ok(());
        }
        if nexmark.event_gap_ns > 0 {
            // Pace: generated events should not run ahead of gap × count.
            let due = Duration::from_nanos(nexmark.event_gap_ns.saturating_mul(generated));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait.min(Duration::from_millis(100)));
            }
        }
    }
    Ok(())
}
