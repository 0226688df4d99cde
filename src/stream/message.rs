//! [`Message`]: what flows between operators.

use super::ChangeBatch;

/// Event time, as nanoseconds since the Unix epoch (Arrow's `Timestamp(Nanosecond)`).
pub type Timestamp = i64;

/// An epoch marker: every operator sees all data of epoch `epoch` before the barrier, and none
/// after it, so the barrier is a consistent cut across the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The epoch that ends at this barrier; epochs increase by one.
    pub epoch: u64,
    /// Whether stateful operators write their state at this barrier.
    pub checkpoint: bool,
}

/// One message on an edge of the operator graph.
#[derive(Debug, Clone)]
pub enum Message {
    /// Changes: rows with weights (see [`ChangeBatch`] for the invariants).
    Data(ChangeBatch),
    /// No row with an event time below this will come on this edge.
    Watermark(Timestamp),
    /// The end of an epoch.
    Barrier(Barrier),
}
