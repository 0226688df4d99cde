//! SQL text to actions: parsing with our extensions (`parser.rs`), DDL (`ddl.rs`), `COPY`
//! (`copy.rs`), the rewrites that let PostgreSQL's catalog queries plan in DataFusion
//! (`pg_compat.rs`), and the per-connection session that runs statements (`session.rs`).

pub mod copy;
pub mod cursor;
pub mod ddl;
pub mod dialect;
pub mod feed;
pub mod filter_pushdown;
pub mod functions;
pub mod jsonb;
pub mod live;
pub mod parser;
pub mod pg_builtins;
pub mod pg_compat;
pub mod pg_semantics;
pub mod session;
mod session_live;
pub mod to_char;
pub mod uuid;
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
    // Names first, from what the user wrote (before windows are rewritten into our functions).
    pg_compat::name_columns(&mut statement);
    windows::rewrite(&mut statement, mode)?;
    pg_compat::rewrite(&mut statement);
    let query = matches!(
        statement,
        datafusion::sql::sqlparser::ast::Statement::Query(_)
    );
    let statement = datafusion::sql::parser::Statement::Statement(Box::new(statement));
    check_relations_exist(state, &statement)?;
    let plan = state.statement_to_plan(statement).await?;
    Ok(if query {
        pg_compat::name_cast_columns(plan)?
    } else {
        plan
    })
}

/// Every relation a statement names must exist (CTEs and table functions aside): `42P01`,
/// as PostgreSQL says it, instead of DataFusion's planning error, which has no type.
fn check_relations_exist(
    state: &datafusion::execution::context::SessionState,
    statement: &datafusion::sql::parser::Statement,
) -> crate::error::Result<()> {
    let options = state.config_options();
    let default_catalog = options.catalog.default_catalog.as_str();
    let default_schema = options.catalog.default_schema.as_str();
    for reference in state.resolve_table_references(statement)? {
        if reference.schema().is_none() && state.table_functions().contains_key(reference.table()) {
            continue;
        }
        let resolved = reference.clone().resolve(default_catalog, default_schema);
        let exists = state
            .catalog_list()
            .catalog(&resolved.catalog)
            .and_then(|c| c.schema(&resolved.schema))
            .is_some_and(|s| s.table_exist(&resolved.table));
        if !exists {
            return Err(crate::error::Error::user(
                crate::error::sqlstate::UNDEFINED_TABLE,
                format!("relation \"{reference}\" does not exist"),
            ));
        }
    }
    Ok(())
}
