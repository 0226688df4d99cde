//! The Nexmark generator: Nexmark's person/auction/bid stream, generated columnar and split
//! deterministically (`generator.rs`), and the `nexmark` source connector over it
//! (`source.rs`).

pub mod generator;
pub mod source;

pub use generator::{NexmarkConfig, NexmarkGenerator, auction_schema, bid_schema, person_schema};
