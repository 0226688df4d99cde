//! The internal queue behind `CREATE TABLE`: every write is a [`ChangeBatch`] appended to the
//! table's durable log (`storage::Log`), and the table's current contents are kept in memory
//! for ad-hoc queries.
//!
//! - [`QueueTable`] (`table.rs`): the write path (insert, upsert, delete, update) and durability.
//! - [`TableContents`] (`contents.rs`): the current rows, updated by applying change batches.
//! - [`QueueTableProvider`] (`provider.rs`): the table as DataFusion sees it, for `SELECT`,
//!   `INSERT`, `UPDATE`, `DELETE` and `TRUNCATE`.
//!
//! [`ChangeBatch`]: crate::stream::ChangeBatch

pub mod contents;
pub mod provider;
pub mod table;

pub use contents::TableContents;
pub use provider::QueueTableProvider;
pub use table::{EventTime, QueueTable};
