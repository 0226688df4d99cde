//! [`Session`]: one client's view of the engine. It runs statements: DDL and session commands
//! itself, queries and DML through DataFusion, over the tables the engine holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::sql::sqlparser::ast::{
    CopySource, CopyTarget, Expr, Ident, ObjectName, ObjectType, Set, Statement, Value,
};
use futures::TryStreamExt;

use crate::catalog::pg_functions::SERVER_VERSION;
use crate::catalog::views::PinnedEpoch;
use crate::engine::Engine;
use crate::error::{Error, Result, sqlstate};

use super::copy::{CopyFormat, CopyIn, CopyLoad};
use super::ddl::table_name;
use super::parser::SluiceStatement;

/// Settings a client may `SHOW` before it `SET`s them, with PostgreSQL's values.
pub const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_table_access_method", "heap"),
    ("default_transaction_isolation", "read committed"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("lc_collate", "C.UTF-8"),
    ("max_identifier_length", "63"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", SERVER_VERSION),
    ("server_version_num", "160006"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// What running a statement produced.
pub enum Outcome {
    /// Rows to send (a query, `SHOW`, `EXPLAIN`).
    Rows {
        /// Their schema.
        schema: SchemaRef,
        /// The rows, computed as the client reads them.
        stream: SendableRecordBatchStream,
    },
    /// `INSERT … RETURNING`: rows, answered with the tag `INSERT 0 n`.
    Returning {
        /// Their schema.
        schema: SchemaRef,
        /// The rows.
        stream: SendableRecordBatchStream,
    },
    /// A command that finished: its tag (`CREATE TABLE`, `INSERT 0 3` …).
    Command {
        /// The command word(s).
        tag: String,
        /// Rows affected, for tags that carry a count.
        rows: Option<u64>,
    },
    /// `BEGIN`: a transaction block starts.
    Begin,
    /// `COMMIT` / `ROLLBACK`: the block ends, with this tag.
    End(String),
    /// `COPY … FROM STDIN`: the client sends data next.
    CopyIn(CopyIn),
    /// `COPY table|(query) TO STDOUT`: rows sent as COPY data in `format`.
    CopyOut {
        /// Their schema.
        schema: SchemaRef,
        /// The rows, computed as they are sent.
        stream: SendableRecordBatchStream,
        /// Text or CSV, with their options.
        format: CopyFormat,
    },
    /// `CREATE MATERIALIZED VIEW`: the view exists and reads its backlog; the statement ends
    /// (`CREATE MATERIALIZED VIEW`) when [`crate::engine::CreatedView::caught_up`] resolves,
    /// and is undone if dropped before.
    CatchingUp(crate::engine::CreatedView),
    /// `SUBSCRIBE` (`copy: None`: rows of an endless result set) or `COPY (SUBSCRIBE …) TO
    /// STDOUT` (`Some(csv)`): the wire layer streams the feed until it ends or is canceled.
    Subscribe {
        /// The rows.
        feed: super::feed::LiveFeed,
        /// As COPY data, in CSV (`true`) or text format.
        copy: Option<bool>,
    },
}

impl Outcome {
    fn command(tag: &str) -> Self {
        Self::Command {
            tag: tag.to_string(),
            rows: None,
        }
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Rows { schema, .. } => write!(f, "Rows({schema:?})"),
            Outcome::Returning { schema, .. } => write!(f, "Returning({schema:?})"),
            Outcome::Command { tag, rows } => write!(f, "Command({tag}, {rows:?})"),
            Outcome::Begin => write!(f, "Begin"),
            Outcome::End(tag) => write!(f, "End({tag})"),
            Outcome::CopyIn(c) => write!(f, "CopyIn({})", c.table),
            Outcome::CopyOut { schema, .. } => write!(f, "CopyOut({schema:?})"),
            Outcome::Subscribe { copy, .. } => write!(f, "Subscribe(copy: {copy:?})"),
            Outcome::CatchingUp(view) => write!(f, "CatchingUp({})", view.name()),
        }
    }
}

/// A setting's value: as `SET` left it, else its default.
fn setting_of(
    settings: &std::sync::RwLock<BTreeMap<String, String>>,
    name: &str,
) -> Option<String> {
    crate::sync::read_value(settings)
        .get(name)
        .cloned()
        .or_else(|| {
            DEFAULT_SETTINGS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
}

/// `current_setting(name [, missing_ok])` and `set_config(name, value, is_local)` over one
/// session's settings (drivers read them this way: asyncpg, SQLAlchemy, DBeaver).
fn setting_functions(
    settings: &Arc<std::sync::RwLock<BTreeMap<String, String>>>,
) -> Vec<datafusion::logical_expr::ScalarUDF> {
    use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
    use datafusion::arrow::compute::cast;
    let text = crate::catalog::pg_functions::as_text;
    let unknown = |name: &str| -> datafusion::error::DataFusionError {
        Error::user(
            sqlstate::UNDEFINED_OBJECT,
            format!("unrecognized configuration parameter \"{name}\""),
        )
        .into()
    };
    let read = Arc::clone(settings);
    let write = Arc::clone(settings);
    vec![
        crate::catalog::pg_functions::function(
            "current_setting",
            &[1, 2],
            DataType::Utf8,
            move |args, _| {
                let names = text(&args[0])?;
                let missing_ok = match args.get(1) {
                    Some(a) => cast(a, &DataType::Boolean)?
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .cloned(),
                    None => None,
                };
                let mut out = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    let Some(name) = name else {
                        out.push(None);
                        continue;
                    };
                    let name = name.to_ascii_lowercase();
                    match setting_of(&read, &name) {
                        Some(v) => out.push(Some(v)),
                        None if missing_ok.as_ref().is_some_and(|m| m.value(i)) => out.push(None),
                        None => return Err(unknown(&name)),
                    }
                }
                Ok(Arc::new(StringArray::from(out)) as ArrayRef)
            },
        ),
        crate::catalog::pg_functions::function(
            "set_config",
            &[3],
            DataType::Utf8,
            move |args, _| {
                let names = text(&args[0])?;
                let values = text(&args[1])?;
                let mut out = Vec::with_capacity(names.len());
                for (name, value) in names.iter().zip(values.iter()) {
                    let (Some(name), Some(value)) = (name, value) else {
                        out.push(None);
                        continue;
                    };
                    let name = name.to_ascii_lowercase();
                    if name == "statement_timeout" {
                        return Err(Error::unsupported(
                            "set_config('statement_timeout', …); use SET statement_timeout",
                        )
                        .into());
                    }
                    crate::sync::write_value(&write).insert(name, value.to_string());
                    out.push(Some(value.to_string()));
                }
                Ok(Arc::new(StringArray::from(out)) as ArrayRef)
            },
        ),
    ]
}

/// A client's session.
pub struct Session {
    /// The engine.
    engine: Arc<Engine>,
    /// DataFusion over the engine's catalog, with this session's settings.
    pub(super) ctx: SessionContext,
    /// Values given by `SET`, by lowercase name.
    /// Shared with the session's `current_setting` and `set_config`.
    settings: Arc<std::sync::RwLock<BTreeMap<String, String>>>,
    /// Inside `BEGIN` … `COMMIT`.
    pub(super) in_transaction: bool,
    /// Statements that wrote since `BEGIN` (each committed as it ran).
    writes_in_transaction: u64,
    /// The transaction's savepoints, oldest first: each name with the writes before it.
    savepoints: Vec<(String, u64)>,
    /// Statements made by SQL `PREPARE`, by name.
    prepared: std::collections::BTreeSet<String>,
    /// Open cursors by name; they close with the transaction.
    pub(super) cursors: std::collections::HashMap<String, super::cursor::Cursor>,
    /// `statement_timeout`: how long a statement may run (`None`: no limit).
    statement_timeout: Option<std::time::Duration>,
    /// The user, when it may only read.
    read_only: Option<String>,
    /// The generation of the engine's SQL functions this context holds.
    functions_seen: std::sync::atomic::AtomicU64,
}

impl Session {
    /// A session with default settings.
    pub fn new(engine: Arc<Engine>) -> Self {
        let ctx = engine.new_context();
        let settings = Arc::default();
        for function in setting_functions(&settings) {
            ctx.register_udf(function);
        }
        Self {
            engine,
            ctx,
            settings,
            in_transaction: false,
            writes_in_transaction: 0,
            savepoints: Vec::new(),
            prepared: Default::default(),
            cursors: std::collections::HashMap::new(),
            statement_timeout: None,
            read_only: None,
            functions_seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Lets `user` only read from now on: `SELECT`, `SUBSCRIBE`, cursors, `SHOW`, `SET`,
    /// transactions; anything else is refused with `42501`.
    pub fn set_read_only(&mut self, user: &str) {
        self.read_only = Some(user.to_string());
    }

    /// The connection's pid: what `pg_backend_pid()` returns and `pg_stat_activity.pid` shows.
    pub fn set_backend_pid(&mut self, pid: i32) {
        self.ctx
            .register_udf(crate::catalog::pg_functions::function(
                "pg_backend_pid",
                &[0],
                DataType::Int32,
                move |_, rows| {
                    Ok(
                        Arc::new(datafusion::arrow::array::Int32Array::from(vec![pid; rows]))
                            as datafusion::arrow::array::ArrayRef,
                    )
                },
            ));
    }

    /// How long a statement may run (`SET statement_timeout`), if limited.
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        self.statement_timeout
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// `25P01` outside `BEGIN` … `COMMIT`, as PostgreSQL answers savepoint commands there.
    fn in_transaction_block(&self, command: &str) -> Result<()> {
        if self.in_transaction {
            return Ok(());
        }
        Err(Error::user(
            sqlstate::NO_ACTIVE_SQL_TRANSACTION,
            format!("{command} can only be used in transaction blocks"),
        ))
    }

    /// Where the newest savepoint called `name` is (`3B001` if there is none).
    fn savepoint(&self, name: &str) -> Result<usize> {
        self.savepoints
            .iter()
            .rposition(|(n, _)| n == name)
            .ok_or_else(|| {
                Error::user(
                    sqlstate::INVALID_SAVEPOINT_SPECIFICATION,
                    format!("savepoint \"{name}\" does not exist"),
                )
            })
    }

    /// The session's DataFusion state, with the SQL functions as they stand.
    pub(super) fn state(&self) -> datafusion::execution::context::SessionState {
        self.engine.sync_functions(&self.ctx, &self.functions_seen);
        self.ctx.state()
    }

    /// Runs one statement; `params` are the values of `$1, $2, …` when the extended protocol
    /// bound any.
    pub async fn execute(
        &mut self,
        statement: &SluiceStatement,
        params: Option<ParamValues>,
    ) -> Result<Outcome> {
        let span = tracing::debug_span!("statement", sql = %statement.text);
        let outcome =
            tracing::Instrument::instrument(self.execute_in_span(statement, params), span).await;
        if outcome.is_ok() && self.in_transaction && !reads_only(statement) {
            self.writes_in_transaction += 1;
        }
        outcome
    }

    async fn execute_in_span(
        &mut self,
        statement: &SluiceStatement,
        params: Option<ParamValues>,
    ) -> Result<Outcome> {
        if let Some(user) = &self.read_only
            && !reads_only(statement)
        {
            return Err(Error::user(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!(
                    "permission denied: user \"{user}\" may only read (SELECT, SUBSCRIBE, FETCH)"
                ),
            ));
        }
        if let Some(sink) = &statement.sink {
            let connector = statement.connector.clone().unwrap_or_default();
            self.engine
                .create_sink(sink, &connector, &statement.text)
                .await?;
            return Ok(Outcome::command("CREATE SINK"));
        }
        if let Some(live) = &statement.live {
            return self.execute_live(statement, live).await;
        }
        if let Some((name, if_exists)) = &statement.drop_sink {
            self.engine.drop_sink(name, *if_exists)?;
            return Ok(Outcome::command("DROP SINK"));
        }
        match &statement.statement {
            Statement::CreateTable(create) => {
                let created = self
                    .engine
                    .create_table(
                        &self.state(),
                        create,
                        crate::sql::ddl::TableClauses::of(statement),
                        &statement.text,
                    )
                    .await?;
                if !created {
                    tracing::info!(table = %create.name, "table exists, skipping");
                }
                Ok(Outcome::command(if statement.source {
                    "CREATE SOURCE"
                } else {
                    "CREATE TABLE"
                }))
            }
            Statement::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                ..
            } => {
                let tag = match object_type {
                    ObjectType::Table => {
                        for name in names {
                            self.engine
                                .drop_table(&table_name(name)?, *if_exists, *cascade)?;
                        }
                        if statement.source {
                            "DROP SOURCE"
                        } else {
                            "DROP TABLE"
                        }
                    }
                    ObjectType::MaterializedView => {
                        for name in names {
                            self.engine
                                .drop_view(&table_name(name)?, *if_exists, *cascade)?;
                        }
                        "DROP MATERIALIZED VIEW"
                    }
                    ObjectType::Type => {
                        if *cascade {
                            return Err(Error::unsupported(
                                "DROP TYPE … CASCADE (drop or alter what uses the type first)",
                            ));
                        }
                        for name in names {
                            let Some(name) = super::pg_semantics::composite_name(name) else {
                                return Err(Error::user(
                                    crate::error::sqlstate::UNDEFINED_OBJECT,
                                    format!("type \"{name}\" does not exist"),
                                ));
                            };
                            self.engine.drop_type(&name, *if_exists)?;
                        }
                        "DROP TYPE"
                    }
                    other => return Err(Error::unsupported(format!("DROP {other}"))),
                };
                Ok(Outcome::command(tag))
            }
            Statement::CreateType {
                name,
                representation,
            } => {
                self.engine
                    .create_type(
                        &self.state(),
                        name,
                        representation.as_ref(),
                        &statement.text,
                    )
                    .await?;
                Ok(Outcome::command("CREATE TYPE"))
            }
            Statement::CreateFunction(create) => {
                self.engine
                    .create_function(&self.state(), create, &statement.text)
                    .await?;
                Ok(Outcome::command("CREATE FUNCTION"))
            }
            Statement::DropFunction(drop) => {
                let cascade = matches!(
                    drop.drop_behavior,
                    Some(datafusion::sql::sqlparser::ast::DropBehavior::Cascade)
                );
                for desc in &drop.func_desc {
                    let name = table_name(&desc.name)?;
                    self.engine.drop_function(&name, drop.if_exists, cascade)?;
                }
                Ok(Outcome::command("DROP FUNCTION"))
            }
            Statement::CreateView(create) if create.materialized => {
                let created = self
                    .engine
                    .create_view(
                        &self.state(),
                        create,
                        statement.emit_on_window_close,
                        &statement.text,
                    )
                    .await?;
                match created {
                    Some(view) => Ok(Outcome::CatchingUp(view)),
                    None => {
                        tracing::info!(view = %create.name, "materialized view exists, skipping");
                        Ok(Outcome::command("CREATE MATERIALIZED VIEW"))
                    }
                }
            }
            Statement::CreateView(_) => Err(Error::unsupported(
                "CREATE VIEW (not materialized); use CREATE MATERIALIZED VIEW",
            )),
            Statement::Explain {
                statement: inner, ..
            } if matches!(inner.as_ref(), Statement::CreateView(c) if c.materialized) => {
                let Statement::CreateView(create) = inner.as_ref() else {
                    unreachable!("matched just above")
                };
                let plan = self
                    .engine
                    .plan_view(&self.state(), create, statement.emit_on_window_close)
                    .await?;
                self.rows("QUERY PLAN", plan.explain.lines().collect())
            }
            Statement::ShowViews {
                materialized: true, ..
            } => {
                let names = self.engine.views().names();
                self.rows("Name", names.iter().map(String::as_str).collect::<Vec<_>>())
            }
            Statement::Flush { .. } => {
                self.engine.flush().await;
                Ok(Outcome::command("FLUSH"))
            }
            Statement::ShowTables { .. } => {
                let names = self.engine.tables().names();
                self.rows("Name", names.iter().map(String::as_str).collect::<Vec<_>>())
            }
            Statement::ShowVariable { variable } => {
                let name = variable_name(variable);
                if name == "all" {
                    return self.show_all();
                }
                let value = self.setting(&name).ok_or_else(|| {
                    Error::user(
                        sqlstate::UNDEFINED_OBJECT,
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?;
                self.rows(&name, vec![value.as_str()])
            }
            Statement::Set(set) => {
                self.set(set)?;
                Ok(Outcome::command("SET"))
            }
            Statement::StartTransaction { .. } => {
                if !self.in_transaction {
                    self.writes_in_transaction = 0;
                    self.savepoints.clear();
                }
                self.in_transaction = true;
                Ok(Outcome::Begin)
            }
            Statement::Savepoint { name } => {
                self.in_transaction_block("SAVEPOINT")?;
                let writes = self.writes_in_transaction;
                self.savepoints.push((name.value.clone(), writes));
                Ok(Outcome::command("SAVEPOINT"))
            }
            Statement::ReleaseSavepoint { name } => {
                self.in_transaction_block("RELEASE SAVEPOINT")?;
                let at = self.savepoint(&name.value)?;
                self.savepoints.truncate(at);
                Ok(Outcome::command("RELEASE"))
            }
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => {
                self.in_transaction_block("ROLLBACK TO SAVEPOINT")?;
                let at = self.savepoint(&name.value)?;
                let since = self.writes_in_transaction - self.savepoints[at].1;
                if since > 0 {
                    // What ran is committed already: saying it was undone would be a lie.
                    return Err(Error::user(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!(
                            "ROLLBACK TO SAVEPOINT cannot undo the {since} statement(s) that wrote since \"{}\": in Sluice each statement commits as it runs",
                            name.value
                        ),
                    ));
                }
                // The savepoint stays; those after it go.
                self.savepoints.truncate(at + 1);
                Ok(Outcome::command("ROLLBACK"))
            }
            Statement::Commit { .. } | Statement::Rollback { .. } => {
                // Cursors are WITHOUT HOLD: they end with their transaction.
                self.in_transaction = false;
                self.savepoints.clear();
                self.writes_in_transaction = 0;
                self.cursors.clear();
                let tag = if matches!(statement.statement, Statement::Commit { .. }) {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                Ok(Outcome::End(tag.into()))
            }
            Statement::Copy {
                source,
                to: false,
                target: CopyTarget::Stdin,
                options,
                legacy_options,
                ..
            } => {
                let CopySource::Table {
                    table_name: name,
                    columns,
                } = source
                else {
                    return Err(Error::unsupported("COPY FROM into a query"));
                };
                let (name, table) = self.table(name)?;
                let schema = Arc::clone(&table.def().schema);
                let columns = column_indexes(
                    &schema,
                    &name,
                    columns.iter().map(|c| c.value.to_lowercase()),
                )?;
                Ok(Outcome::CopyIn(CopyIn {
                    table: name,
                    schema,
                    columns,
                    format: CopyFormat::from_options(options, legacy_options)?,
                    defaults: table.def().defaults.clone(),
                }))
            }
            Statement::Copy {
                source,
                to: true,
                target: CopyTarget::Stdout,
                options,
                legacy_options,
                ..
            } => {
                let format = CopyFormat::from_options(options, legacy_options)?;
                let query = match source {
                    CopySource::Query(query) => Statement::Query(query.clone()),
                    CopySource::Table {
                        table_name: name,
                        columns,
                    } => {
                        let quote = |n: &str| format!("\"{}\"", n.replace('"', "\"\""));
                        let name = table_name(name)?;
                        let columns = if columns.is_empty() {
                            "*".to_string()
                        } else {
                            columns
                                .iter()
                                .map(|c| quote(&c.value.to_lowercase()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        let sql = format!("SELECT {columns} FROM {}", quote(&name));
                        datafusion::sql::sqlparser::parser::Parser::new(
                            &crate::sql::dialect::SluiceDialect,
                        )
                        .try_with_sql(&sql)?
                        .parse_statement()?
                    }
                };
                let copy = SluiceStatement {
                    statement: query,
                    ..statement.clone()
                };
                match self.run_datafusion(&copy, params).await? {
                    Outcome::Rows { schema, stream } => Ok(Outcome::CopyOut {
                        schema,
                        stream,
                        format,
                    }),
                    other => Err(Error::internal(format!("COPY TO ran as {other:?}"))),
                }
            }
            Statement::Copy { .. } => Err(Error::unsupported(
                "COPY other than COPY table FROM STDIN and COPY table|(query) TO STDOUT",
            )),
            Statement::Insert(insert) if insert.returning.is_some() => {
                self.insert_returning(statement, insert, params).await
            }
            Statement::Insert(_) => {
                let completed = self.completed_dml(statement);
                self.run_datafusion(completed.as_ref().unwrap_or(statement), params)
                    .await
            }
            Statement::Update(_) => {
                let completed = self.completed_dml(statement);
                self.run_datafusion(completed.as_ref().unwrap_or(statement), params)
                    .await
            }
            Statement::Query(_)
            | Statement::Delete(_)
            | Statement::Truncate(_)
            | Statement::Explain { .. } => self.run_datafusion(statement, params).await,
            Statement::Prepare { name, .. } => {
                let outcome = self.run_prepared(statement).await?;
                self.prepared.insert(name.value.clone());
                Ok(outcome)
            }
            Statement::Execute { name, .. } => {
                let name = name.as_ref().map(|n| n.to_string()).unwrap_or_default();
                if !self.prepared.contains(&name) {
                    return Err(Error::user(
                        sqlstate::INVALID_SQL_STATEMENT_NAME,
                        format!("prepared statement \"{name}\" does not exist"),
                    ));
                }
                self.run_prepared(statement).await
            }
            // What the wire layer did not find among the statements Parse messages made.
            Statement::Deallocate { name, .. } => {
                let all = name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all");
                let names: Vec<String> = if all {
                    std::mem::take(&mut self.prepared).into_iter().collect()
                } else if self.prepared.remove(&name.value) {
                    vec![name.value.clone()]
                } else {
                    return Err(Error::user(
                        sqlstate::INVALID_SQL_STATEMENT_NAME,
                        format!("prepared statement \"{}\" does not exist", name.value),
                    ));
                };
                for prepared in names {
                    let plan =
                        LogicalPlan::Statement(datafusion::logical_expr::Statement::Deallocate(
                            datafusion::logical_expr::Deallocate { name: prepared },
                        ));
                    self.ctx.execute_logical_plan(plan).await?;
                }
                Ok(Outcome::command(if all {
                    "DEALLOCATE ALL"
                } else {
                    "DEALLOCATE"
                }))
            }
            other => Err(Error::unsupported(format!(
                "statement not supported: {}",
                first_words(&other.to_string())
            ))),
        }
    }

    /// Finishes a `COPY … FROM STDIN`: once all its data decoded, writes its rows.
    pub async fn finish_copy(&self, load: CopyLoad) -> Result<u64> {
        let table = self
            .engine
            .tables()
            .get(load.table())
            .ok_or_else(|| undefined_table(load.table()))?;
        table.insert_all(load.finish()?).await
    }

    /// The parameter types and result schema of a statement, for `Describe`. Statements that
    /// DataFusion does not plan take no parameters and return no rows, except `SHOW`.
    pub async fn describe(
        &self,
        statement: &SluiceStatement,
    ) -> Result<(Vec<Option<DataType>>, Option<SchemaRef>)> {
        if let Some(live) = &statement.live {
            return Ok((vec![], self.describe_live(statement, live).await?));
        }
        match &statement.statement {
            Statement::Explain {
                statement: inner, ..
            } if matches!(inner.as_ref(), Statement::CreateView(_)) => {
                Ok((vec![], Some(text_schema("QUERY PLAN"))))
            }
            Statement::Query(_) | Statement::Explain { .. } => {
                let plan = self.plan(statement).await?;
                Ok((
                    parameter_types(&plan)?,
                    Some(Arc::clone(plan.schema().inner())),
                ))
            }
            Statement::Insert(insert) if insert.returning.is_some() => {
                self.describe_insert_returning(statement, insert).await
            }
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                let completed = self.completed_dml(statement);
                let plan = self.plan(completed.as_ref().unwrap_or(statement)).await?;
                Ok((parameter_types(&plan)?, None))
            }
            Statement::ShowVariable { variable } => {
                Ok((vec![], Some(text_schema(&variable_name(variable)))))
            }
            Statement::ShowTables { .. } | Statement::ShowViews { .. } => {
                Ok((vec![], Some(text_schema("Name"))))
            }
            _ => Ok((vec![], None)),
        }
    }

    pub(super) async fn plan(&self, statement: &SluiceStatement) -> Result<LogicalPlan> {
        let plan = super::plan_statement(
            &self.state(),
            statement.statement.clone(),
            super::windows::WindowMode::Batch,
        )
        .await?;
        datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_statements(false)
            .verify_plan(&plan)?;
        Ok(plan)
    }

    /// `INSERT … RETURNING`: the rows are computed first (cast to the table's columns, the
    /// columns not named NULL), inserted, and the `RETURNING` list evaluated over them.
    async fn insert_returning(
        &self,
        statement: &SluiceStatement,
        insert: &datafusion::sql::sqlparser::ast::Insert,
        params: Option<ParamValues>,
    ) -> Result<Outcome> {
        let (name, table) = self.insert_target(insert)?;
        let schema = Arc::clone(&table.def().schema);
        let targets = column_indexes(
            &schema,
            &name,
            insert.columns.iter().map(|c| {
                c.0.last()
                    .and_then(|p| p.as_ident())
                    .map(super::ddl::ident_name)
                    .unwrap_or_default()
            }),
        )?;
        let Some(source) = &insert.source else {
            return Err(Error::unsupported(
                "INSERT … RETURNING without VALUES or a query",
            ));
        };
        // A parameter in VALUES takes its target column's type, as in the INSERT itself.
        let mut source = source.clone();
        if let datafusion::sql::sqlparser::ast::SetExpr::Values(values) = source.body.as_mut() {
            for row in values.rows.iter_mut() {
                for (j, item) in row.iter_mut().enumerate() {
                    let placeholder = matches!(
                        item,
                        Expr::Value(datafusion::sql::sqlparser::ast::ValueWithSpan {
                            value: Value::Placeholder(_),
                            ..
                        })
                    );
                    let Some(&column) = targets.get(j) else {
                        continue;
                    };
                    if !placeholder {
                        continue;
                    }
                    let ty = crate::catalog::pg_types::pg_type(schema.field(column).data_type());
                    if let Some(cast) =
                        super::pg_compat::parse_expr(&format!("CAST({item} AS {})", ty.name()))
                    {
                        *item = cast;
                    }
                }
            }
        }
        let rows = SluiceStatement {
            statement: Statement::Query(source),
            ..statement.clone()
        };
        let Outcome::Rows { stream, .. } = self.run_datafusion(&rows, params).await? else {
            return Err(Error::internal("INSERT … RETURNING: its rows are not rows"));
        };
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        // Every column nullable: a NOT NULL column left out fails in the insert itself.
        let full_schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let mut full = Vec::with_capacity(batches.len());
        // Without a column list, n expressions fill the first n columns (PostgreSQL's rule).
        let mut targets = targets;
        if insert.columns.is_empty()
            && let Some(first) = batches.first()
            && first.num_columns() < targets.len()
        {
            targets.truncate(first.num_columns());
        }
        for batch in &batches {
            if batch.num_columns() != targets.len() {
                return Err(Error::user(
                    sqlstate::SYNTAX_ERROR,
                    format!(
                        "INSERT has {} expressions for {} target columns",
                        batch.num_columns(),
                        targets.len()
                    ),
                ));
            }
            let columns = full_schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, field)| match targets.iter().position(|t| *t == i) {
                    Some(from) => {
                        datafusion::arrow::compute::cast(batch.column(from), field.data_type())
                            .map_err(Error::from)
                    }
                    None => table.def().default_values(i, batch.num_rows()),
                })
                .collect::<Result<Vec<_>>>()?;
            crate::connector::queue::table::check_not_null(&schema, &name, &columns)?;
            full.push(RecordBatch::try_new(Arc::clone(&full_schema), columns)?);
        }
        // The rows go in as an INSERT would put them, then RETURNING is evaluated over them
        // with the table's name as their qualifier.
        let written = self
            .ctx
            .read_batches(full.clone())?
            .write_table(&name, datafusion::dataframe::DataFrameWriteOptions::new())
            .await?;
        drop(written);
        let rows = self.ctx.read_batches(full)?.alias(&name)?;
        let returned = returning(rows, insert)?;
        let schema = Arc::new(returned.schema().as_arrow().clone());
        let batches: Vec<RecordBatch> = returned.collect().await?;
        Ok(Outcome::Returning {
            stream: Box::pin(MemoryStream::try_new(batches, Arc::clone(&schema), None)?),
            schema,
        })
    }

    /// An `INSERT`, `UPDATE` or `DELETE` as DataFusion can plan it, or `None` when it already
    /// can: `INSERT INTO t VALUES (…)` with fewer values than `t` has columns gets the column
    /// list PostgreSQL assumes (the first columns), and a string literal bound for a `uuid`
    /// column (`VALUES ('a0ee…')`, `SET id = '…'`) is cast to `uuid`, as PostgreSQL reads a
    /// literal by the column it goes to (DataFusion would not cast text to a `uuid`).
    fn completed_dml(&self, statement: &SluiceStatement) -> Option<SluiceStatement> {
        use datafusion::sql::sqlparser::ast::{AssignmentTarget, SetExpr, TableFactor};
        // The statement (megabytes of VALUES, maybe) is copied only when something changes:
        // missing leading columns, or a `uuid` column a literal may be bound for.
        let has_uuid = |table: &crate::connector::queue::QueueTable| {
            (table.def().schema.fields().iter()).any(|f| super::uuid::is_uuid(f.data_type()))
        };
        let worth = match &statement.statement {
            Statement::Insert(insert) => {
                let (_, table) = self.insert_target(insert).ok()?;
                let Some(SetExpr::Values(values)) = insert.source.as_ref().map(|s| s.body.as_ref())
                else {
                    return None;
                };
                let width = values.rows.first().map_or(0, |r| r.len());
                let columns = table.def().schema.fields().len();
                (insert.columns.is_empty() && width > 0 && width < columns) || has_uuid(&table)
            }
            Statement::Update(update) => match &update.table.relation {
                TableFactor::Table { name, .. } => has_uuid(&self.table(name).ok()?.1),
                _ => false,
            },
            _ => false,
        };
        if !worth {
            return None;
        }
        let mut completed = statement.statement.clone();
        let mut changed = false;
        match &mut completed {
            Statement::Insert(insert) => {
                let (_, table) = self.insert_target(insert).ok()?;
                let fields = table.def().schema.fields().clone();
                let Some(SetExpr::Values(values)) = insert.source.as_mut().map(|s| s.body.as_mut())
                else {
                    return None;
                };
                let width = values.rows.first().map_or(0, |r| r.len());
                if insert.columns.is_empty() && width > 0 && width < fields.len() {
                    insert.columns = fields[..width]
                        .iter()
                        .map(|f| ObjectName::from(vec![Ident::with_quote('"', f.name().clone())]))
                        .collect();
                    changed = true;
                }
                let targets: Vec<Option<&Field>> = if insert.columns.is_empty() {
                    fields.iter().map(|f| Some(f.as_ref())).collect()
                } else {
                    insert
                        .columns
                        .iter()
                        .map(|c| {
                            let name = c.0.last()?.as_ident().map(super::ddl::ident_name)?;
                            fields
                                .iter()
                                .find(|f| *f.name() == name)
                                .map(|f| f.as_ref())
                        })
                        .collect()
                };
                for row in &mut values.rows {
                    for (value, target) in row.iter_mut().zip(&targets) {
                        changed |= target.is_some_and(|f| uuid_literal(value, f));
                    }
                }
            }
            Statement::Update(update) => {
                let TableFactor::Table { name, .. } = &update.table.relation else {
                    return None;
                };
                let (_, table) = self.table(name).ok()?;
                let schema = Arc::clone(&table.def().schema);
                for assignment in &mut update.assignments {
                    let AssignmentTarget::ColumnName(column) = &assignment.target else {
                        continue;
                    };
                    let Some(name) = column.0.last().and_then(|p| p.as_ident()) else {
                        continue;
                    };
                    if let Ok(field) = schema.field_with_name(&super::ddl::ident_name(name)) {
                        changed |= uuid_literal(&mut assignment.value, field);
                    }
                }
            }
            _ => {}
        }
        changed.then(|| SluiceStatement {
            statement: completed,
            ..statement.clone()
        })
    }

    /// The table an `INSERT` writes: its name as the catalog keeps it, and the table.
    fn insert_target(
        &self,
        insert: &datafusion::sql::sqlparser::ast::Insert,
    ) -> Result<(String, Arc<crate::connector::queue::QueueTable>)> {
        let datafusion::sql::sqlparser::ast::TableObject::TableName(name) = &insert.table else {
            return Err(Error::unsupported(
                "INSERT … RETURNING into a table function",
            ));
        };
        self.table(name)
    }

    /// The table `name`: its name as the catalog keeps it, and the table (`42P01` if none).
    fn table(
        &self,
        name: &datafusion::sql::sqlparser::ast::ObjectName,
    ) -> Result<(String, Arc<crate::connector::queue::QueueTable>)> {
        let name = table_name(name)?;
        let table = self
            .engine
            .tables()
            .get(&name)
            .ok_or_else(|| undefined_table(&name))?;
        Ok((name, table))
    }

    /// What `INSERT … RETURNING` takes and gives: its parameters as the insert without
    /// `RETURNING` types them, and the `RETURNING` list's columns.
    async fn describe_insert_returning(
        &self,
        statement: &SluiceStatement,
        insert: &datafusion::sql::sqlparser::ast::Insert,
    ) -> Result<(Vec<Option<DataType>>, Option<SchemaRef>)> {
        let mut plain = insert.clone();
        plain.returning = None;
        let plan = self
            .plan(&SluiceStatement {
                statement: Statement::Insert(plain),
                ..statement.clone()
            })
            .await?;
        let (name, table) = self.insert_target(insert)?;
        let empty = RecordBatch::new_empty(Arc::clone(&table.def().schema));
        let returned = returning(self.ctx.read_batch(empty)?.alias(&name)?, insert)?;
        Ok((
            parameter_types(&plan)?,
            Some(Arc::new(returned.schema().as_arrow().clone())),
        ))
    }

    /// SQL-level `PREPARE name [(types)] AS statement` and `EXECUTE name [(values)]`: kept in
    /// the session's DataFusion context until `DEALLOCATE` or the end of the connection.
    async fn run_prepared(&self, statement: &SluiceStatement) -> Result<Outcome> {
        let plan = super::plan_statement(
            &self.state(),
            statement.statement.clone(),
            super::windows::WindowMode::Batch,
        )
        .await?;
        let prepare = matches!(
            plan,
            LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(_))
        );
        let df = self.ctx.execute_logical_plan(plan).await?;
        if prepare {
            return Ok(Outcome::command("PREPARE"));
        }
        let tag = match df.logical_plan() {
            LogicalPlan::Dml(dml) => match dml.op {
                datafusion::logical_expr::WriteOp::Insert(_) => "INSERT",
                datafusion::logical_expr::WriteOp::Update => "UPDATE",
                datafusion::logical_expr::WriteOp::Delete => "DELETE",
                _ => "EXECUTE",
            },
            _ => {
                let schema = Arc::new(df.schema().as_arrow().clone());
                let stream = df.execute_stream().await?;
                return Ok(Outcome::Rows { schema, stream });
            }
        };
        let count = rows_written(df).await?;
        Ok(Outcome::Command {
            tag: tag.to_string(),
            rows: Some(count),
        })
    }

    pub(super) async fn run_datafusion(
        &self,
        statement: &SluiceStatement,
        params: Option<ParamValues>,
    ) -> Result<Outcome> {
        let mut plan = self.plan(statement).await?;
        if let Some(params) = params {
            plan = plan.with_param_values(params)?;
        }
        // Every view this statement reads is read at one epoch.
        let mut state = self.state();
        state
            .config_mut()
            .set_extension(Arc::new(PinnedEpoch(self.engine.views().published())));
        let df = datafusion::dataframe::DataFrame::new(state, plan);
        let tag = match &statement.statement {
            Statement::Insert(_) => "INSERT",
            Statement::Update(_) => "UPDATE",
            Statement::Delete(_) => "DELETE",
            Statement::Truncate(_) => "TRUNCATE TABLE",
            _ => {
                let schema = Arc::new(df.schema().as_arrow().clone());
                let stream = df.execute_stream().await?;
                return Ok(Outcome::Rows { schema, stream });
            }
        };
        let count = rows_written(df).await?;
        if tag == "TRUNCATE TABLE" {
            return Ok(Outcome::command(tag));
        }
        Ok(Outcome::Command {
            tag: tag.to_string(),
            rows: Some(count),
        })
    }

    fn setting(&self, name: &str) -> Option<String> {
        setting_of(&self.settings, name)
    }

    fn set(&mut self, set: &Set) -> Result<()> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_lowercase();
                let value = values
                    .iter()
                    .map(setting_value)
                    .collect::<Vec<_>>()
                    .join(", ");
                if name == "statement_timeout" {
                    self.statement_timeout = parse_statement_timeout(&value)?;
                    if self.statement_timeout.is_none() {
                        crate::sync::write_value(&self.settings).remove(&name);
                        return Ok(());
                    }
                }
                crate::sync::write_value(&self.settings).insert(name, value);
                Ok(())
            }
            Set::SetTimeZone { value, .. } => {
                let value = setting_value(value);
                if !matches!(
                    value.to_uppercase().as_str(),
                    "UTC" | "ETC/UTC" | "GMT" | "Z" | "+00:00" | "0" | "DEFAULT" | "LOCAL"
                ) {
                    return Err(Error::unsupported(format!(
                        "time zone \"{value}\": Sluice runs in UTC"
                    )));
                }
                crate::sync::write_value(&self.settings).insert("timezone".into(), "UTC".into());
                Ok(())
            }
            Set::SetNames { .. } | Set::SetNamesDefault {} => Ok(()),
            Set::SetTransaction { .. } | Set::SetSessionParam(_) | Set::SetRole { .. } => Ok(()),
            other => Err(Error::unsupported(format!("{other}"))),
        }
    }

    fn rows(&self, column: &str, values: Vec<&str>) -> Result<Outcome> {
        let schema = text_schema(column);
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(values))],
        )?;
        let stream = MemoryStream::try_new(vec![batch], Arc::clone(&schema), None)?;
        Ok(Outcome::Rows {
            schema,
            stream: Box::pin(stream),
        })
    }

    fn show_all(&self) -> Result<Outcome> {
        let mut all: BTreeMap<String, String> = DEFAULT_SETTINGS
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        all.extend(crate::sync::read_value(&self.settings).clone());
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from_iter_values(all.keys())),
                Arc::new(StringArray::from_iter_values(all.values())),
            ],
        )?;
        let stream = MemoryStream::try_new(vec![batch], Arc::clone(&schema), None)?;
        Ok(Outcome::Rows {
            schema,
            stream: Box::pin(stream),
        })
    }
}

/// The setting a `SHOW` names, with PostgreSQL's multi-word spellings folded to their names.
fn variable_name(variable: &[Ident]) -> String {
    let name = variable
        .iter()
        .map(|i| i.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    match name.as_str() {
        "time zone" => "timezone".to_string(),
        "transaction isolation level" => "transaction_isolation".to_string(),
        _ => name,
    }
}

fn text_schema(column: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, true)]))
}

/// Whether a statement only reads: what a read-only user may run, and what
/// `statement_timeout` may stop.
pub(crate) fn reads_only(statement: &SluiceStatement) -> bool {
    if statement.sink.is_some() || statement.drop_sink.is_some() {
        return false;
    }
    if statement.live.is_some() {
        // SUBSCRIBE, DECLARE, FETCH, CLOSE, COPY (SUBSCRIBE …) TO STDOUT.
        return true;
    }
    fn reads(statement: &Statement) -> bool {
        match statement {
            Statement::Query(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowViews { .. }
            | Statement::ShowColumns { .. }
            | Statement::Set(_)
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Deallocate { .. }
            | Statement::Copy { to: true, .. }
            | Statement::Flush { .. } => true,
            Statement::Explain {
                statement, analyze, ..
            } => match statement.as_ref() {
                // Planning a view creates nothing.
                Statement::CreateView(_) if !analyze => true,
                inner => reads(inner),
            },
            _ => false,
        }
    }
    reads(&statement.statement)
}

/// `statement_timeout` as PostgreSQL reads it: milliseconds, or a number with a unit (`us`,
/// `ms`, `s`, `min`, `h`, `d`); `0` or `DEFAULT` for no limit; at most 2147483647 ms.
fn parse_statement_timeout(value: &str) -> Result<Option<std::time::Duration>> {
    let invalid = || {
        Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("invalid value for parameter \"statement_timeout\": \"{value}\""),
        )
    };
    let v = value.trim().to_ascii_lowercase();
    if v == "default" {
        return Ok(None);
    }
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let ms_per_unit = match unit.trim() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(invalid()),
    };
    let ms = (number * ms_per_unit).round();
    if !ms.is_finite() || ms > f64::from(i32::MAX) {
        return Err(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "{value} is outside the valid range for parameter \"statement_timeout\" (0 .. 2147483647 ms)"
            ),
        ));
    }
    Ok((ms >= 1.0).then(|| std::time::Duration::from_millis(ms as u64)))
}

fn setting_value(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// The most parameters a statement can have: the wire protocol counts them in 16 bits.
const MAX_PARAMETERS: usize = 65_535;

/// The indexes in `schema` of the named columns (all of them when none is named); `42703` for
/// a name that is not a column of `table`.
fn column_indexes(
    schema: &Schema,
    table: &str,
    names: impl ExactSizeIterator<Item = String>,
) -> Result<Vec<usize>> {
    if names.len() == 0 {
        return Ok((0..schema.fields().len()).collect());
    }
    names
        .map(|column| {
            schema.index_of(&column).map_err(|_| {
                Error::user(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("column \"{column}\" of relation \"{table}\" does not exist"),
                )
            })
        })
        .collect()
}

/// Runs a DML plan and returns the rows it wrote (the count DataFusion's DML returns).
async fn rows_written(df: datafusion::dataframe::DataFrame) -> Result<u64> {
    let batches: Vec<RecordBatch> = df.execute_stream().await?.try_collect().await?;
    Ok(batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .filter_map(|b| {
            datafusion::arrow::array::AsArray::as_primitive_opt::<
                datafusion::arrow::datatypes::UInt64Type,
            >(b.column(0))
            .map(|a| a.value(0))
        })
        .sum())
}

/// The `RETURNING` list of `insert` over `rows` (qualified by the table's name).
fn returning(
    rows: datafusion::dataframe::DataFrame,
    insert: &datafusion::sql::sqlparser::ast::Insert,
) -> Result<datafusion::dataframe::DataFrame> {
    use datafusion::sql::sqlparser::ast::SelectItem;
    let mut exprs = Vec::new();
    for item in insert.returning.iter().flatten() {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                exprs.extend(
                    rows.schema()
                        .columns()
                        .into_iter()
                        .map(datafusion::prelude::Expr::Column),
                );
            }
            SelectItem::UnnamedExpr(expr) => exprs.push(rows.parse_sql_expr(&expr.to_string())?),
            SelectItem::ExprWithAlias { expr, alias } => exprs.push(
                rows.parse_sql_expr(&expr.to_string())?
                    .alias(super::ddl::ident_name(alias)),
            ),
            other => return Err(Error::unsupported(format!("RETURNING {other}"))),
        }
    }
    Ok(rows.select(exprs)?)
}

fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
    let mut types = plan.get_parameter_types()?;
    // `$1::int`: DataFusion infers a parameter's type from comparisons and inserts, not from
    // a cast of it; PostgreSQL (and asyncpg, which binds by the described type) takes the
    // cast's type.
    let untyped: Vec<String> = types
        .iter()
        .filter(|(_, ty)| ty.is_none())
        .map(|(name, _)| name.clone())
        .collect();
    if !untyped.is_empty() {
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        use datafusion::logical_expr::Expr;
        let mut cast_to: std::collections::HashMap<String, DataType> = Default::default();
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    let (inner, to) = match e {
                        Expr::Cast(c) => (c.expr.as_ref(), c.field.data_type()),
                        Expr::TryCast(c) => (c.expr.as_ref(), c.field.data_type()),
                        _ => return Ok(TreeNodeRecursion::Continue),
                    };
                    if let Expr::Placeholder(p) = inner
                        && p.field.is_none()
                    {
                        cast_to.entry(p.id.clone()).or_insert_with(|| to.clone());
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        for name in untyped {
            if let Some(ty) = cast_to.remove(&name) {
                types.insert(name, Some(ty));
            }
        }
    }
    let mut out = vec![None; types.len()];
    for (name, ty) in types {
        let index: usize = name
            .trim_start_matches('$')
            .parse()
            .map_err(|_| Error::unsupported(format!("parameter {name}")))?;
        if index == 0 {
            return Err(Error::unsupported(format!("parameter {name}")));
        }
        // The protocol counts parameters in 16 bits. `$5555555555` made this allocate 5.5
        // billion slots and abort the process (found by the `sql_frontend` fuzz target).
        if index > MAX_PARAMETERS {
            return Err(Error::user(
                sqlstate::UNDEFINED_PARAMETER,
                format!("there is no parameter {name} (at most ${MAX_PARAMETERS})"),
            ));
        }
        if out.len() < index {
            out.resize(index, None);
        }
        out[index - 1] = ty;
    }
    Ok(out)
}

fn undefined_table(name: &str) -> Error {
    Error::user(
        sqlstate::UNDEFINED_TABLE,
        format!("relation \"{name}\" does not exist"),
    )
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// `value`, a string literal bound for `field`, a `uuid` column, as `value::uuid`; whether it
/// was one.
fn uuid_literal(value: &mut datafusion::sql::sqlparser::ast::Expr, field: &Field) -> bool {
    use datafusion::sql::sqlparser::ast::{CastKind, DataType as SqlType, Expr as SqlExpr, Value};
    let literal = matches!(
        value,
        SqlExpr::Value(v) if matches!(v.value, Value::SingleQuotedString(_))
    );
    if !literal || !super::uuid::is_uuid(field.data_type()) {
        return false;
    }
    *value = SqlExpr::Cast {
        kind: CastKind::DoubleColon,
        expr: Box::new(value.clone()),
        data_type: SqlType::Uuid,
        array: false,
        format: None,
    };
    true
}
