//! PostgreSQL, through `tokio-postgres` and `pgwire-replication`: a sink writing a view's
//! changes into a table, and a CDC source mirroring a table (snapshot, then its logical
//! replication stream, `pgoutput` decoded in `pgoutput.rs`).

pub mod cdc;
pub mod pgoutput;
pub mod sink;
