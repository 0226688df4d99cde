//! PostgreSQL, through `tokio-postgres`: a sink writing a view's changes into a table.

pub mod sink;
