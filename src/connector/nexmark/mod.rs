//! The Nexmark generator: Nexmark's person/auction/bid stream, generated columnar and split
//! deterministically (`generator.rs`). The `nexmark` source connector will read from it.

pub mod generator;

pub use generator::{NexmarkConfig, NexmarkGenerator, bid_schema};
