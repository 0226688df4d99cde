//! SQL text to actions: parsing with our extensions (`parser.rs`), DDL (`ddl.rs`), `COPY`
//! (`copy.rs`), the rewrites that let PostgreSQL's catalog queries plan in DataFusion
//! (`pg_compat.rs`), and the per-connection session that runs statements (`session.rs`).

pub mod copy;
pub mod ddl;
pub mod parser;
pub mod pg_compat;
pub mod session;
pub mod windows;

pub use parser::{SluiceStatement, parse_sql};
pub use session::{Outcome, Session};
