//! Where rows come from and go to.
//!
//! - `queue/`: the internal queue behind `CREATE TABLE`; every source writes into one too.
//! - `spec.rs`: what `WITH (…) FORMAT … ENCODE …` means, checked at DDL time.
//! - `source.rs`: running a source on its thread, bad-record counts, per-split watermarks.
//! - `decode.rs`: records to Arrow batches (JSON, CSV, Avro), columnar;
//!   `schema_registry.rs`: Avro writer schemas from a Confluent schema registry.
//! - `kafka/`, `rabbitmq.rs`, `file.rs`, `nexmark/`: the connectors.
//! - `sink.rs`: a view's changes encoded for a sink (plain, upsert, Debezium);
//!   `postgres/`: a sink writing them into a PostgreSQL table.

pub mod decode;
pub mod file;
pub mod kafka;
pub mod nexmark;
pub mod postgres;
pub mod queue;
pub mod rabbitmq;
pub mod schema_registry;
pub mod sink;
pub mod source;
pub mod spec;
