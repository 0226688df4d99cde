//! The PostgreSQL wire protocol, through `pgwire`: the listener (`server.rs`), startup and
//! authentication (`startup.rs`), statement handlers for the simple and extended protocols and
//! `COPY` (`handler.rs`), subscriptions streamed as rows or COPY data (`live.rs`), Arrow ↔
//! PostgreSQL value encoding (`encode.rs`, `params.rs`) and errors as SQLSTATE codes
//! (`error.rs`).

pub mod control;
pub mod encode;
pub mod error;
pub mod handler;
pub mod live;
pub mod params;
pub mod server;
pub mod startup;

pub use server::{RunningServer, Server};
