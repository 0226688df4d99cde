//! A Kafka source's partitions against their ends, as the broker reports them.
//!
//! A partition may stop holding the watermark back only when it is idle, and it may be idle
//! only when the broker confirmed, by an end-offset query made after the source's last
//! progress in it, that the source's position is at the partition's end. A partition behind
//! its end (or whose end is not known) is lagging however long no record comes; one that
//! makes no progress while behind for longer than the stall bound is stalled, which the
//! source shows as its status.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::connector::source::{SplitProgress, SplitState, SplitWatermarks};

/// How often the broker is asked for every partition's end offset.
pub const END_QUERY_EVERY: Duration = Duration::from_secs(1);
/// How soon after a partition reported its end the broker is asked to confirm it.
const END_QUERY_AFTER_EOF: Duration = Duration::from_millis(200);
/// A partition behind its end that makes no progress for this long is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Partition {
    /// The next offset the source reads (past every record written to its table).
    position: i64,
    /// When the position last moved (or the partition was assigned).
    progress_at: Instant,
    /// The end offset the broker reported, and when.
    end: Option<(i64, Instant)>,
    /// Since when the partition has been behind its end without progress.
    behind_since: Option<Instant>,
    /// Offsets skipped because the broker no longer held them.
    skipped: u64,
}

/// Every partition of a source.
#[derive(Debug)]
pub struct Progress {
    partitions: BTreeMap<i32, Partition>,
    stall_after: Duration,
    /// How long a partition must have been quiet when the broker confirms its end for it to
    /// count as caught up to the watermarks (the source's idle timeout).
    quiet: Duration,
    queried_at: Option<Instant>,
    end_reported: bool,
}

impl Progress {
    /// Partitions at their start positions.
    pub fn new(start: &BTreeMap<i32, i64>, stall_after: Duration, now: Instant) -> Self {
        let partitions = start
            .iter()
            .map(|(&p, &position)| {
                let partition = Partition {
                    position,
                    progress_at: now,
                    end: None,
                    behind_since: None,
                    skipped: 0,
                };
                (p, partition)
            })
            .collect();
        Self {
            partitions,
            stall_after,
            quiet: Duration::ZERO,
            queried_at: None,
            end_reported: false,
        }
    }

    /// A partition may go idle only on an end confirmed by an answer that came `quiet` (the
    /// idle timeout) after its last progress: an answer from before the quiet period says
    /// nothing of records produced during it that the consumer has not fetched yet.
    pub fn with_quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// True when `partition` is at its end as an answer newer than its quiet period says.
    fn confirmed_quiet(&self, partition: i32) -> bool {
        self.partitions.get(&partition).is_some_and(|p| {
            p.end.is_some_and(|(end, at)| {
                p.position >= end && at.saturating_duration_since(p.progress_at) >= self.quiet
            })
        })
    }

    /// The source read up to `position` (exclusive) in `partition`.
    pub fn moved(&mut self, partition: i32, position: i64, now: Instant) {
        if let Some(p) = self.partitions.get_mut(&partition)
            && position > p.position
        {
            p.position = position;
            p.progress_at = now;
            if p.behind_since.is_some() {
                p.behind_since = Some(now);
            }
        }
    }

    /// The consumer reported reaching a partition's end: ask the broker soon.
    pub fn end_reported(&mut self) {
        self.end_reported = true;
    }

    /// True when the broker should be asked for the end offsets now.
    pub fn query_due(&self, now: Instant) -> bool {
        self.queried_at.is_none_or(|at| {
            let since = now.saturating_duration_since(at);
            since >= END_QUERY_EVERY || (self.end_reported && since >= END_QUERY_AFTER_EOF)
        })
    }

    /// The broker's answer: each partition's end offset (a partition missing from `ends` has
    /// no known end until the next answer).
    pub fn ends(&mut self, ends: &BTreeMap<i32, i64>, now: Instant) {
        self.queried_at = Some(now);
        self.end_reported = false;
        for (id, p) in &mut self.partitions {
            p.end = ends.get(id).map(|&end| (end, now));
            if p.end.is_some_and(|(end, _)| p.position < end) {
                p.behind_since.get_or_insert(now);
            } else {
                p.behind_since = None;
            }
        }
    }

    /// The broker could not be asked: no end is known until it can.
    pub fn ends_unknown(&mut self, now: Instant) {
        self.ends(&BTreeMap::new(), now);
    }

    /// The broker no longer holds `partition` below `to`: the source goes on from there.
    /// Returns how many offsets were skipped.
    pub fn skip(&mut self, partition: i32, to: i64, now: Instant) -> u64 {
        let Some(p) = self.partitions.get_mut(&partition) else {
            return 0;
        };
        let skipped = u64::try_from(to - p.position).unwrap_or(0);
        p.skipped += skipped;
        p.position = p.position.max(to);
        p.progress_at = now;
        skipped
    }

    /// Where `partition` stands.
    pub fn state(&self, partition: i32, now: Instant) -> SplitState {
        let Some(p) = self.partitions.get(&partition) else {
            return SplitState::Lagging;
        };
        match p.end {
            // Confirmed only by an answer that came after the last progress.
            Some((end, at)) if p.position >= end && at >= p.progress_at => SplitState::CaughtUp,
            _ if p
                .behind_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.stall_after) =>
            {
                SplitState::Stalled
            }
            _ => SplitState::Lagging,
        }
    }

    /// Tells the watermarks which partitions are at their end (and may go idle) and which
    /// are not.
    pub fn apply(&self, splits: &mut SplitWatermarks) {
        for &partition in self.partitions.keys() {
            if self.confirmed_quiet(partition) {
                splits.caught_up(i64::from(partition));
            } else {
                splits.lagging(i64::from(partition));
            }
        }
    }

    /// The stalled partitions.
    pub fn stalled(&self, now: Instant) -> Vec<i32> {
        self.partitions
            .keys()
            .copied()
            .filter(|&p| self.state(p, now) == SplitState::Stalled)
            .collect()
    }

    /// What `sluice_source_partitions` shows.
    pub fn snapshot(&self, splits: &SplitWatermarks, now: Instant) -> Vec<SplitProgress> {
        self.partitions
            .iter()
            .map(|(&id, p)| {
                let split = i64::from(id);
                let state = match self.state(id, now) {
                    SplitState::CaughtUp if splits.is_idle(split) => SplitState::Idle,
                    state => state,
                };
                SplitProgress {
                    split,
                    position: Some(p.position),
                    end: p.end.map(|(end, _)| end),
                    state,
                    watermark: splits.split(split),
                    skipped: p.skipped,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::source::candidate_batch as candidates;

    /// Partition 1 stops fetching while the broker says it has more: it is lagging, never
    /// idle, it holds the watermark back, and after the stall bound it is stalled; once it
    /// reads to its end again it may go idle.
    #[test]
    fn a_partition_that_stops_fetching_lags_and_holds_the_watermark_back() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut progress = Progress::new(
            &BTreeMap::from([(0, 0), (1, 0)]),
            Duration::from_secs(10),
            t0,
        );
        let mut splits = SplitWatermarks::new(Duration::ZERO);
        splits.restore(0, None);
        splits.restore(1, None);
        // Both partitions read 10 records; partition 1's events are older.
        splits.observe(Some(&candidates(vec![100, 20])), [0, 1].into_iter());
        progress.moved(0, 10, at(10));
        progress.moved(1, 10, at(10));
        // Not confirmed at the end yet: nothing is idle, however quiet.
        progress.apply(&mut splits);
        assert_eq!(splits.current(), Some(20));
        assert_eq!(progress.state(0, at(20)), SplitState::Lagging);
        // The broker confirms both ends: both idle (timeout 0), the watermark is the newest.
        progress.ends(&BTreeMap::from([(0, 10), (1, 10)]), at(30));
        progress.apply(&mut splits);
        assert_eq!(progress.state(1, at(30)), SplitState::CaughtUp);
        assert_eq!(splits.current(), Some(100));
        // Partition 1 gets 5 more records that the source does not fetch: it lags and holds
        // the watermark back (here at its own watermark), though no record came.
        progress.ends(&BTreeMap::from([(0, 10), (1, 15)]), at(1_000));
        progress.apply(&mut splits);
        assert_eq!(progress.state(1, at(1_000)), SplitState::Lagging);
        assert_eq!(splits.current(), Some(20));
        let shown = progress.snapshot(&splits, at(1_000));
        assert_eq!(shown[0].state, SplitState::Idle);
        assert_eq!((shown[1].position, shown[1].end), (Some(10), Some(15)));
        // Still no progress 10 s after it fell behind: stalled.
        progress.ends(&BTreeMap::from([(0, 10), (1, 15)]), at(11_000));
        assert_eq!(progress.stalled(at(11_000)), vec![1]);
        progress.apply(&mut splits);
        assert_eq!(splits.current(), Some(20));
        // Progress (not yet to the end) ends the stall; the end confirmed makes it idle.
        progress.moved(1, 12, at(11_100));
        assert_eq!(progress.state(1, at(11_100)), SplitState::Lagging);
        progress.moved(1, 15, at(11_200));
        // The old answer predates the progress: not confirmed until the broker says so.
        assert_eq!(progress.state(1, at(11_200)), SplitState::Lagging);
        progress.ends(&BTreeMap::from([(0, 10), (1, 15)]), at(11_300));
        progress.apply(&mut splits);
        assert_eq!(progress.state(1, at(11_300)), SplitState::CaughtUp);
        assert_eq!(splits.current(), Some(100));
        // Without an answer from the broker, no end is known: lagging, not idle.
        progress.ends_unknown(at(12_000));
        progress.apply(&mut splits);
        assert_eq!(splits.current(), Some(20));
    }

    /// With a quiet period, an answer taken right after the last record does not let the
    /// partition go idle, however long ago that was: only an answer from after the quiet
    /// period does (records produced meanwhile may not have been fetched yet).
    #[test]
    fn idleness_needs_an_answer_from_after_the_quiet_period() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut progress = Progress::new(&BTreeMap::from([(0, 0), (1, 0)]), STALL_AFTER, t0)
            .with_quiet(Duration::from_secs(1));
        let mut splits = SplitWatermarks::new(Duration::ZERO);
        splits.observe(Some(&candidates(vec![100, 20])), [0, 1].into_iter());
        progress.moved(0, 10, at(10));
        progress.moved(1, 10, at(10));
        progress.ends(&BTreeMap::from([(0, 10), (1, 10)]), at(20));
        progress.apply(&mut splits);
        assert_eq!(progress.state(1, at(2_000)), SplitState::CaughtUp);
        assert_eq!(
            splits.current(),
            Some(20),
            "not idle on an answer from 20 ms"
        );
        progress.ends(&BTreeMap::from([(0, 10), (1, 10)]), at(1_010));
        progress.apply(&mut splits);
        assert_eq!(splits.current(), Some(100));
    }

    #[test]
    fn skipped_offsets_are_counted() {
        let t0 = Instant::now();
        let mut progress = Progress::new(&BTreeMap::from([(0, 100)]), STALL_AFTER, t0);
        assert_eq!(progress.skip(0, 250, t0), 150);
        let splits = SplitWatermarks::new(Duration::ZERO);
        let shown = progress.snapshot(&splits, t0);
        assert_eq!((shown[0].position, shown[0].skipped), (Some(250), 150));
    }

    #[test]
    fn the_broker_is_asked_every_second_and_soon_after_an_end() {
        let t0 = Instant::now();
        let mut progress = Progress::new(&BTreeMap::from([(0, 0)]), STALL_AFTER, t0);
        assert!(progress.query_due(t0));
        progress.ends(&BTreeMap::from([(0, 0)]), t0);
        assert!(!progress.query_due(t0 + Duration::from_millis(300)));
        progress.end_reported();
        assert!(progress.query_due(t0 + Duration::from_millis(300)));
        progress.ends(&BTreeMap::from([(0, 0)]), t0 + Duration::from_millis(300));
        assert!(progress.query_due(t0 + Duration::from_millis(1_300)));
    }
}
