//! DDL: turning `CREATE TABLE` into a [`TableDef`]. DataFusion's planner maps SQL types to Arrow
//! and reads the constraints; we keep what it found and add what PostgreSQL implies (primary key
//! columns are NOT NULL).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Constraint, DFSchema};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    CharacterLength, CreateTable, DataType as SqlDataType, Statement,
};

use crate::catalog::TableDef;
use crate::error::{Error, Result, sqlstate};
use crate::stream::WatermarkDef;
use crate::stream::columns::is_reserved;

use super::parser::{ConnectorClause, WatermarkClause};
use crate::connector::spec::{Format, SourceSpec};

/// What `CREATE TABLE | SOURCE` says besides sqlparser's `CreateTable`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableClauses<'a> {
    /// `APPEND ONLY`.
    pub append_only: bool,
    /// `WATERMARK FOR … AS …`.
    pub watermark: Option<&'a WatermarkClause>,
    /// `CREATE SOURCE`.
    pub source: bool,
    /// `WITH (connector = …) FORMAT … ENCODE … INCLUDE …`.
    pub connector: Option<&'a ConnectorClause>,
}

impl<'a> TableClauses<'a> {
    /// The clauses of a parsed statement.
    pub fn of(statement: &'a super::parser::SluiceStatement) -> Self {
        Self {
            append_only: statement.append_only,
            watermark: statement.watermark.as_ref(),
            source: statement.source,
            connector: statement.connector.as_ref(),
        }
    }
}

/// Plans `CREATE TABLE` (or `CREATE SOURCE`) into a table definition with catalog id `id`.
pub async fn plan_create_table(
    state: &SessionState,
    create: &CreateTable,
    clauses: TableClauses<'_>,
    id: u32,
    text: &str,
) -> Result<TableDef> {
    let connector = clauses.connector.map(SourceSpec::parse).transpose()?;
    if clauses.source && connector.is_none() {
        return Err(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            "a source needs WITH (connector = '…')",
        ));
    }
    // A source is append-only: its records are facts, never updated.
    let append_only = clauses.append_only || clauses.source;
    let watermark = clauses.watermark;
    if create.query.is_some() {
        return Err(Error::unsupported("CREATE TABLE AS is not supported"));
    }
    let name = table_name(&create.name)?;
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(Statement::CreateTable(
            create.clone(),
        ))))
        .await?;
    let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(cmd)) = plan else {
        return Err(Error::unsupported(format!(
            "this form of CREATE TABLE for \"{name}\""
        )));
    };
    let mut primary_key = Vec::new();
    for constraint in cmd.constraints.iter() {
        match constraint {
            Constraint::PrimaryKey(columns) => primary_key = columns.clone(),
            Constraint::Unique(_) => {
                return Err(Error::unsupported(
                    "UNIQUE constraints other than the primary key are not supported",
                ));
            }
        }
    }
    let arrow_schema = cmd.input.schema().as_arrow();
    let mut fields: Vec<Field> = Vec::with_capacity(arrow_schema.fields().len());
    for (i, f) in arrow_schema.fields().iter().enumerate() {
        if is_reserved(f.name()) {
            return Err(Error::user(
                sqlstate::INVALID_NAME,
                format!("column name \"{}\" is reserved", f.name()),
            ));
        }
        if fields.iter().any(|g| g.name() == f.name()) {
            return Err(Error::user(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{}\" specified more than once", f.name()),
            ));
        }
        let nullable = f.is_nullable() && !primary_key.contains(&i);
        // A declared length (`VARCHAR(3)`) is in `declared_types`, not in the Arrow field.
        fields.push(
            f.as_ref()
                .clone()
                .with_nullable(nullable)
                .with_metadata(Default::default()),
        );
    }
    if let Some(spec) = &connector {
        check_connector(&name, spec, clauses.source, append_only, &primary_key)?;
        for include in &spec.includes {
            if fields.iter().any(|g| g.name() == &include.column) {
                return Err(Error::user(
                    sqlstate::DUPLICATE_COLUMN,
                    format!("column \"{}\" specified more than once", include.column),
                ));
            }
            fields.push(Field::new(&include.column, include.data_type(), true));
        }
    }
    if fields.is_empty() {
        return Err(Error::unsupported(format!(
            "table \"{name}\" must have at least one column"
        )));
    }
    let schema = Arc::new(Schema::new(fields));
    let watermark = match watermark {
        None => None,
        Some(clause) => Some(plan_watermark(state, &name, &schema, clause, append_only)?),
    };
    let mut declared_types: Vec<_> = create
        .columns
        .iter()
        .map(|c| declared_type(&c.data_type))
        .collect();
    declared_types.resize(schema.fields().len(), None);
    let defaults = column_defaults(state, create, &cmd.column_defaults, &schema)?;
    Ok(TableDef {
        id,
        name,
        schema,
        primary_key,
        append_only,
        declared_types,
        watermark,
        sql: text.to_string(),
        source: clauses.source,
        connector,
        defaults,
    })
}

/// Each column's `DEFAULT` (of `create`, as DataFusion planned them in `planned`), as an
/// expression of the column's type gone through the analyzer (so PostgreSQL's casts apply:
/// `DEFAULT 'a0ee…'` of a `uuid`), evaluated once here so that one that cannot be (`DEFAULT
/// 'x'` of an `INT`) is refused by `CREATE TABLE`, as PostgreSQL refuses it.
fn column_defaults(
    state: &SessionState,
    create: &CreateTable,
    planned: &[(String, datafusion::logical_expr::Expr)],
    schema: &SchemaRef,
) -> Result<Vec<Option<crate::catalog::table_def::ColumnDefault>>> {
    use datafusion::logical_expr::expr::Cast;
    use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
    use datafusion::sql::sqlparser::ast::ColumnOption;
    let mut defaults = vec![None; schema.fields().len()];
    for (i, column) in create.columns.iter().enumerate() {
        let Some(sql) = column.options.iter().find_map(|o| match &o.option {
            ColumnOption::Default(e) => Some(e.to_string()),
            _ => None,
        }) else {
            continue;
        };
        let field = schema.field(i);
        let Some((_, expr)) = planned.iter().find(|(name, _)| name == field.name()) else {
            continue;
        };
        let from = expr.get_type(&DFSchema::empty())?;
        let expr = if from == *field.data_type() {
            expr.clone()
        } else {
            Expr::Cast(Cast::new(Box::new(expr.clone()), field.data_type().clone()))
        };
        let plan = LogicalPlanBuilder::empty(true)
            .project(vec![expr.alias("default")])?
            .build()?;
        let wrong_type = |e: &dyn std::fmt::Display| {
            Error::user(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "column \"{}\" is of type {} but default expression is of type {}: {e}",
                    field.name(),
                    crate::catalog::pg_types::format_type(field.data_type()),
                    crate::catalog::pg_types::format_type(&from),
                ),
            )
        };
        let analyzed = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(|e| wrong_type(&e))?;
        let LogicalPlan::Projection(projection) = analyzed else {
            return Err(Error::internal("a planned default is not a projection"));
        };
        let Some(expr) = projection.expr.into_iter().next() else {
            return Err(Error::internal("a planned default has no expression"));
        };
        let default = crate::catalog::table_def::ColumnDefault {
            sql,
            expr: expr.unalias(),
        };
        default.evaluate(1)?;
        defaults[i] = Some(default);
    }
    Ok(defaults)
}

/// What a connector's format asks of its table.
fn check_connector(
    name: &str,
    spec: &SourceSpec,
    source: bool,
    append_only: bool,
    primary_key: &[usize],
) -> Result<()> {
    if matches!(
        spec.kind,
        crate::connector::spec::SourceKind::PostgresCdc(_)
    ) && (source || primary_key.is_empty() || append_only)
    {
        return Err(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "a postgres-cdc table mirrors a PostgreSQL table by its key: \
                 CREATE TABLE {name} (…, PRIMARY KEY (…)) WITH (connector = 'postgres-cdc', …), \
                 without APPEND ONLY"
            ),
        ));
    }
    if spec.format == Format::Upsert {
        if source {
            return Err(Error::unsupported(format!(
                "FORMAT UPSERT needs a table with a primary key: CREATE TABLE {name} (…, PRIMARY KEY (…)) WITH (…)"
            )));
        }
        if primary_key.is_empty() || append_only {
            return Err(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("FORMAT UPSERT table \"{name}\" needs a PRIMARY KEY and no APPEND ONLY"),
            ));
        }
    }
    Ok(())
}

/// Checks and plans `WATERMARK FOR column AS expression`.
fn plan_watermark(
    state: &SessionState,
    table: &str,
    schema: &SchemaRef,
    clause: &WatermarkClause,
    append_only: bool,
) -> Result<WatermarkDef> {
    if !append_only {
        return Err(Error::unsupported(format!(
            "a watermark needs an append-only table: add APPEND ONLY to table \"{table}\""
        )));
    }
    let column = schema.index_of(&clause.column).map_err(|_| {
        Error::user(
            sqlstate::UNDEFINED_COLUMN,
            format!("watermark column \"{}\" does not exist", clause.column),
        )
    })?;
    if !matches!(schema.field(column).data_type(), DataType::Timestamp(..)) {
        return Err(Error::user(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "watermark column \"{}\" must be a timestamp, not {}",
                clause.column,
                schema.field(column).data_type()
            ),
        ));
    }
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    let expr = state.create_logical_expr(&clause.expression, &df_schema)?;
    let data_type = expr.get_type(&df_schema)?;
    if !matches!(data_type, DataType::Timestamp(..)) {
        return Err(Error::user(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "watermark expression \"{}\" must be a timestamp, not {data_type}",
                clause.expression
            ),
        ));
    }
    let expression = state.create_physical_expr(expr, &df_schema)?;
    Ok(WatermarkDef {
        column,
        expression,
        text: clause.expression.clone(),
    })
}

/// The PostgreSQL type (OID, `atttypmod`) of a declared SQL type when it says more than its
/// Arrow type: character types, which are all Utf8 in Arrow.
fn declared_type(data_type: &SqlDataType) -> Option<(u32, i32)> {
    let typmod = |length: &Option<CharacterLength>| match length {
        Some(CharacterLength::IntegerLength { length, .. }) => i32::try_from(*length)
            .map(|n| n.saturating_add(4))
            .unwrap_or(-1),
        _ => -1,
    };
    match data_type {
        SqlDataType::Varchar(n) | SqlDataType::CharacterVarying(n) => Some((1043, typmod(n))),
        SqlDataType::Char(n) | SqlDataType::Character(n) => {
            // CHAR without a length is char(1), as in PostgreSQL.
            Some((1042, if n.is_none() { 5 } else { typmod(n) }))
        }
        _ => None,
    }
}

/// An identifier's name: folded to lower case unless quoted, as PostgreSQL reads it.
pub fn ident_name(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The one-part name of a table, lowercased unless quoted; `public.t` is `t`.
pub fn table_name(name: &datafusion::sql::sqlparser::ast::ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map_or_else(|| p.to_string(), ident_name))
        .collect();
    match parts.as_slice() {
        [table] => Ok(table.clone()),
        [schema, table] if schema == crate::catalog::PUBLIC_SCHEMA => Ok(table.clone()),
        [db, schema, table]
            if db == crate::config::DATABASE_NAME && schema == crate::catalog::PUBLIC_SCHEMA =>
        {
            Ok(table.clone())
        }
        _ => Err(Error::user(
            sqlstate::INVALID_NAME,
            format!("relation name \"{name}\" must be in schema \"public\""),
        )),
    }
}
