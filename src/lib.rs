//! # Sluice
//!
//! A streaming SQL engine that speaks the PostgreSQL wire protocol. Users declare tables and
//! materialized views in SQL; every write is a change batch appended to a durable log, the queue
//! that incremental views consume.
//!
//! The path of a statement, module by module:
//!
//! | step | module |
//! |---|---|
//! | the wire: startup, auth, simple/extended protocol, COPY, value encoding | [`serve`] |
//! | parsing (sqlparser + our clauses), DDL, COPY decoding, windows, the session | [`sql`] |
//! | the objects users created; `pg_catalog` for psql and drivers | [`catalog`] |
//! | the engine: catalog + tables + views + DataFusion context | [`engine`] |
//! | a view's `LogicalPlan` → a graph of incremental operators; `EXPLAIN` | [`planner`] |
//! | running views epoch by epoch: barriers, consistent cuts, published contents | [`runtime`] |
//! | incremental operators over change batches (aggregates, windows, sessions) | [`operator`] |
//! | tables of the internal queue: write path, contents, DataFusion provider | [`connector`] |
//! | the queue's durable, segmented log of Arrow batches | [`storage`] |
//! | checkpoints of operator state and view contents; recovery | [`state`] |
//! | change batches, messages between operators, reserved column names | [`stream`] |
//!
//! Configuration is [`config::Config`]; errors are [`error::Error`], each with its SQLSTATE.

pub mod catalog;
pub mod config;
pub mod connector;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod operator;
pub mod planner;
pub mod runtime;
pub mod serve;
pub mod sql;
pub mod state;
pub mod storage;
pub mod stream;
pub mod sync;

pub use config::Config;
pub use engine::Engine;
pub use serve::{RunningServer, Server};
