//! SQL text to actions: parsing with our extensions (`parser.rs`), DDL (`ddl.rs`), `COPY`
//! (`copy.rs`), the rewrites that let PostgreSQL's catalog queries plan in DataFusion
//! (`pg_compat.rs`), and the per-connection session that runs statements (`session.rs`).

pub mod copy;
pub mod cursor;
pub mod ddl;
pub mod feed;
pub mod live;
pub mod parser;
pub mod pg_compat;
pub mod session;
mod session_live;
pub mod windows;

pub use parser::{SluiceStatement, parse_sql};
pub use session::{Outcome, Session};

/// Plans a statement with DataFusion after our rewrites: windows (spelled for `mode`), then the
/// PostgreSQL spellings DataFusion lacks.
pub async fn plan_statement(
    state: &datafusion::execution::context::SessionState,
    mut statement: datafusion::sql::sqlparser::ast::Statement,
    mode: windows::WindowMode,
) -> crate::error::Result<datafusion::logical_expr::LogicalPlan> {
    windows::rewrite(&mut statement, mode)?;
    pg_compat::rewrite(&mut statement);
    Ok(state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement,
        )))
        .await?)
}
