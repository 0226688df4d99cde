//! Statement handlers: the simple protocol (`Query`), the extended protocol (`Parse`, `Bind`,
//! `Describe`, `Execute`) and `COPY … FROM STDIN`, each turning wire messages into
//! [`Session`] calls and [`Outcome`]s into wire responses.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyResponse, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::DataRow;

use crate::engine::Engine;
use crate::error::{Error, sqlstate};
use crate::sql::copy::CopyLoad;
use crate::sql::{Outcome, Session, SluiceStatement, parse_sql};

use super::control::{self, CancelRegistry, StatementControl};
use super::encode::encode_batch;
use super::error::{error_info, pg_error};
use super::live::{FeedFormat, stream_feed};
use super::params::decode_param;
use crate::catalog::pg_types::pg_type;

/// The session of one connection, kept in pgwire's per-connection extensions.
struct SessionSlot {
    session: tokio::sync::Mutex<Session>,
    /// Cancel requests for this connection (kept outside the session's lock, which a running
    /// statement holds).
    control: Arc<StatementControl>,
    /// The connection's pid, as `pg_stat_activity` shows it.
    pid: i32,
    engine: Arc<Engine>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.engine.views().connection_closed(self.pid);
    }
}

/// How one statement can be stopped: by a cancel request after the `seen` ones, or by
/// `statement_timeout`: its own work from now, its rows from when the client first reads them.
/// A statement that writes or creates is not timed out: it cannot be rolled back, so a timeout
/// while it waits for its write to be durable would answer "cancelled" for a write that stands.
struct Stop {
    control: Arc<StatementControl>,
    seen: u64,
    timeout: Option<std::time::Duration>,
    deadline: Option<tokio::time::Instant>,
    /// Times the statement for `sluice_statement_duration_seconds`.
    timer: StatementTimer,
}

/// Observes a statement's duration when dropped: after its rows are sent (or dropped), or
/// once its response is made. A `SUBSCRIBE` is not a statement that ends; it is not timed.
struct StatementTimer {
    engine: Option<Arc<Engine>>,
    read: bool,
    started: std::time::Instant,
    /// The connection, whose `pg_stat_activity` row goes `idle` when the statement ends.
    activity: (Arc<Engine>, i32),
}

impl StatementTimer {
    fn disarm(&mut self) {
        self.engine = None;
    }
}

impl Drop for StatementTimer {
    fn drop(&mut self) {
        if let Some(engine) = &self.engine {
            engine
                .metrics()
                .statement(self.read, self.started.elapsed());
        }
        let (engine, pid) = &self.activity;
        engine.views().statement_ended(*pid);
    }
}

impl Stop {
    /// Notes where a statement starts: the cancels so far, and its deadline.
    fn start(
        engine: &Arc<Engine>,
        slot: &SessionSlot,
        session: &Session,
        statement: &SluiceStatement,
    ) -> Self {
        let read = crate::sql::session::reads_only(statement);
        let timeout = session.statement_timeout().filter(|_| read);
        engine.views().statement_started(slot.pid, &statement.text);
        Self {
            control: Arc::clone(&slot.control),
            seen: slot.control.cancels(),
            timeout,
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
            timer: StatementTimer {
                engine: Some(Arc::clone(engine)),
                read,
                started: std::time::Instant::now(),
                activity: (Arc::clone(engine), slot.pid),
            },
        }
    }

    /// Runs the statement's own work (not its rows) to its deadline.
    async fn run<T>(
        &self,
        work: impl std::future::Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<T> {
        let work = guarded(work);
        match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, work)
                .await
                .unwrap_or_else(|_| Err(control::timed_out())),
            None => work.await,
        }
    }
}

/// A `COPY FROM STDIN` in progress on a connection: what it loads and the rows so far.
#[derive(Default)]
struct PendingCopy(std::sync::Mutex<Option<CopyLoad>>);

impl PendingCopy {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CopyLoad>> {
        crate::sync::lock(&self.0, "the connection's COPY")
    }
}

/// The names of a connection's prepared statements (Parse messages), so that `DEALLOCATE ALL`
/// can drop them: pgwire's statement store cannot list them.
#[derive(Default)]
struct PreparedNames(std::sync::Mutex<std::collections::BTreeSet<String>>);

impl PreparedNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        crate::sync::lock(&self.0, "the connection's prepared statements")
    }
}

/// `DEALLOCATE name` / `DEALLOCATE ALL`: drops prepared statements made by Parse messages (as
/// drivers prepare them) from the connection's store. `None`: the session goes on with it
/// (statements made by SQL `PREPARE`, and the rest of `DEALLOCATE ALL`).
fn deallocate<C>(client: &C, name: &datafusion::sql::sqlparser::ast::Ident) -> Option<Response>
where
    C: ClientInfo + ClientPortalStore,
    C::PortalStore: PortalStore,
{
    let names = client
        .session_extensions()
        .get_or_insert_with(PreparedNames::default);
    let store = client.portal_store();
    if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
        for prepared in std::mem::take(&mut *names.lock()) {
            store.rm_statement(&prepared);
        }
        return None;
    }
    let known = names.lock().remove(&name.value);
    if !known || store.get_statement(&name.value).is_none() {
        return None;
    }
    store.rm_statement(&name.value);
    Some(Response::Execution(Tag::new("DEALLOCATE")))
}

/// Handles every statement of every connection.
#[derive(Debug)]
pub struct StatementHandler {
    /// The engine statements run against.
    engine: Arc<Engine>,
    /// Parses `Parse` messages.
    parser: Arc<StatementParser>,
    /// Every connection's cancel signal, by cancel key.
    cancels: Arc<CancelRegistry>,
    /// Users who may only read.
    read_only: Arc<std::collections::HashSet<String>>,
}

impl StatementHandler {
    /// A handler for an engine; cancel requests reach its connections through `cancels`.
    pub fn new(
        engine: Arc<Engine>,
        cancels: Arc<CancelRegistry>,
        read_only: Arc<std::collections::HashSet<String>>,
    ) -> Self {
        Self {
            engine,
            parser: Arc::new(StatementParser),
            cancels,
            read_only,
        }
    }

    fn session<C: ClientInfo>(&self, client: &C) -> Arc<SessionSlot> {
        client.session_extensions().get_or_insert_with(|| {
            let control = Arc::new(StatementControl::default());
            let (pid, key) = client.pid_and_secret_key();
            self.cancels.register(pid, key, &control);
            let mut session = Session::new(Arc::clone(&self.engine));
            session.set_backend_pid(pid);
            if let Some(user) = client.metadata().get("user")
                && self.read_only.contains(user)
            {
                session.set_read_only(user);
            }
            let now = crate::state::now_ms();
            self.engine
                .views()
                .connection_opened(crate::catalog::views::Activity {
                    pid,
                    user: client.metadata().get("user").cloned().unwrap_or_default(),
                    application_name: client
                        .metadata()
                        .get("application_name")
                        .cloned()
                        .unwrap_or_default(),
                    client: client.socket_addr(),
                    backend_start_ms: now,
                    query_start_ms: None,
                    state_change_ms: now,
                    state: "idle",
                    query: String::new(),
                });
            SessionSlot {
                session: tokio::sync::Mutex::new(session),
                control,
                pid,
                engine: Arc::clone(&self.engine),
            }
        })
    }

    /// Turns an outcome into a wire response; `formats` says text or binary per column.
    fn respond<C: ClientInfo>(
        &self,
        client: &C,
        outcome: Outcome,
        formats: &Format,
        stop: Stop,
    ) -> PgWireResult<Response> {
        Ok(match outcome {
            Outcome::Rows { schema, stream } => {
                let stream = control::controlled(stream, stop.control, stop.seen, stop.timeout);
                // The statement ends when its last row is sent, or its rows are dropped.
                let timer = stop.timer;
                let stream: SendableRecordBatchStream = Box::pin(
                    datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                        stream.schema(),
                        stream.inspect(move |_| {
                            let _ = &timer;
                        }),
                    ),
                );
                let fields = Arc::new(field_infos(&schema, formats));
                Response::Query(QueryResponse::new(
                    Arc::clone(&fields),
                    data_rows(stream, fields),
                ))
            }
            Outcome::Returning { schema, stream } => {
                match self.respond(client, Outcome::Rows { schema, stream }, formats, stop)? {
                    Response::Query(mut rows) => {
                        // pgwire appends the row count: `INSERT 0 n`, as PostgreSQL says it.
                        rows.set_command_tag("INSERT 0");
                        Response::Query(rows)
                    }
                    other => other,
                }
            }
            Outcome::Command { tag, rows } => {
                let mut t = Tag::new(&tag);
                if tag == "INSERT" {
                    t = t.with_oid(0);
                }
                if let Some(rows) = rows {
                    t = t.with_rows(rows as usize);
                }
                Response::Execution(t)
            }
            Outcome::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Outcome::End(tag) => Response::TransactionEnd(Tag::new(&tag)),
            Outcome::Subscribe { .. } => {
                return Err(pg_error(Error::unsupported(
                    "SUBSCRIBE here (it streams from do_query)",
                )));
            }
            Outcome::CopyOut {
                schema,
                stream,
                format,
            } => {
                let stream = control::controlled(stream, stop.control, stop.seen, stop.timeout);
                let timer = stop.timer;
                let binary = matches!(format, crate::sql::copy::CopyFormat::Binary);
                let header = if binary {
                    Some(bytes::Bytes::from_static(super::encode::BINARY_COPY_HEADER))
                } else {
                    format
                        .header()
                        .then(|| super::encode::copy_out_header(&schema, &format))
                };
                // One CopyData per row (pgwire counts them for `COPY n`); the header rides
                // in front of the first row, so that it is not counted.
                let lines = stream
                    .map(move |batch| {
                        let _ = &timer;
                        match batch {
                            Ok(batch) if binary => match super::encode::copy_out_binary(&batch) {
                                Ok(rows) => rows.into_iter().map(Ok).collect::<Vec<_>>(),
                                Err(e) => vec![Err(pg_error(Error::unsupported(e.to_string())))],
                            },
                            Ok(batch) => super::encode::copy_out_lines(&batch, &format)
                                .into_iter()
                                .map(Ok)
                                .collect::<Vec<_>>(),
                            Err(e) => vec![Err(pg_error(Error::from(e)))],
                        }
                    })
                    .flat_map(stream::iter);
                let header = Arc::new(std::sync::Mutex::new(header));
                let pending = Arc::clone(&header);
                let data = lines
                    .map(move |line| {
                        let line = line?;
                        let first = crate::sync::lock_value(&header).take();
                        Ok(CopyData::new(match first {
                            Some(h) => [h, line].concat().into(),
                            None => line,
                        }))
                    })
                    // No rows: the header alone (pgwire then says `COPY 1`). pgwire ends a
                    // binary COPY with its trailer itself.
                    .chain(stream::iter(std::iter::from_fn(move || {
                        crate::sync::lock_value(&pending)
                            .take()
                            .map(|h| Ok(CopyData::new(h)))
                    })));
                Response::CopyOut(CopyResponse::new(
                    i8::from(binary),
                    schema.fields().len(),
                    data,
                ))
            }
            Outcome::CatchingUp(_) => {
                // Dropping it drops the view: the statement did not complete.
                return Err(pg_error(Error::internal(
                    "a new view's catch-up reached the wrong place (it is awaited in do_query)",
                )));
            }
            Outcome::CopyIn(copy) => {
                let columns = copy.columns.len();
                // The overall format the client must send: binary (1) or text (0).
                let format = i8::from(matches!(copy.format, crate::sql::copy::CopyFormat::Binary));
                let load = CopyLoad::new(copy, self.engine.config().data_dir.join("tmp"))
                    .map_err(pg_error)?;
                let pending = client
                    .session_extensions()
                    .get_or_insert_with(PendingCopy::default);
                *pending.lock() = Some(load);
                Response::CopyIn(CopyResponse::new(format, columns, stream::empty()))
            }
        })
    }

    async fn bound_params(
        &self,
        session: &Session,
        portal: &Portal<SluiceStatement>,
    ) -> PgWireResult<Option<datafusion::common::ParamValues>> {
        if portal.parameter_len() == 0 {
            return Ok(None);
        }
        let (inferred, _) = guarded(session.describe(&portal.statement.statement))
            .await
            .map_err(pg_error)?;
        let cast = cast_parameter_types(&portal.statement.statement.statement);
        let mut values = Vec::with_capacity(portal.parameter_len());
        for (i, bytes) in portal.parameters.iter().enumerate() {
            let expected = inferred.get(i).cloned().flatten();
            let wire_type = parameter_type(&portal.statement.parameter_types, &cast, &inferred, i);
            let value = decode_param(
                bytes.as_deref(),
                &wire_type,
                portal.parameter_format.format_for(i),
            )
            .map_err(|e| {
                pg_error(Error::user(
                    sqlstate::INVALID_TEXT_REPRESENTATION,
                    e.to_string(),
                ))
            })?;
            let value = match &expected {
                // An array bound where the planner saw the element (`x = ANY($1)`, which
                // DataFusion types as a comparison with x) stays an array.
                Some(dt)
                    if matches!(value.data_type(), DataType::List(_))
                        && !matches!(dt, DataType::List(_) | DataType::LargeList(_)) =>
                {
                    value
                }
                Some(dt) if value.data_type() != *dt => cast_param(value, dt)?,
                _ => value,
            };
            values.push(value);
        }
        Ok(Some(values.into()))
    }
}

/// The type of parameter `i`: as the client declared it in `Parse`, else as the planner inferred
/// it, else text (PostgreSQL's `unknown`, coerced later).
fn parameter_type(
    declared: &[Option<Type>],
    cast: &[Option<Type>],
    inferred: &[Option<DataType>],
    i: usize,
) -> Type {
    declared
        .get(i)
        .cloned()
        .flatten()
        .filter(|t| *t != Type::UNKNOWN)
        .or_else(|| cast.get(i).cloned().flatten())
        .or_else(|| inferred.get(i).cloned().flatten().map(|dt| pg_type(&dt)))
        .unwrap_or(Type::TEXT)
}

/// Parameters cast in the text to a type the planner sees as another, by position: `$1::oid[]`
/// is planned as `bigint[]` but is `oid[]` on the wire (asyncpg's type introspection binds it
/// with the only array codecs it has before introspecting: `oid[]` and `text[]`).
fn cast_parameter_types(
    statement: &datafusion::sql::sqlparser::ast::Statement,
) -> Vec<Option<Type>> {
    use datafusion::sql::sqlparser::ast::{Expr, Value, ValueWithSpan, visit_expressions};
    let mut types: Vec<Option<Type>> = Vec::new();
    let _ = visit_expressions(statement, |expr| {
        if let Expr::Cast {
            expr: inner,
            data_type,
            ..
        } = expr
            && let Expr::Value(ValueWithSpan {
                value: Value::Placeholder(name),
                ..
            }) = inner.as_ref()
            && crate::sql::pg_compat::custom_array_element(data_type).as_deref() == Some("oid")
            && let Some(index) = name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
            && index < 65_536
        {
            if types.len() <= index {
                types.resize(index + 1, None);
            }
            types[index] = Some(Type::OID_ARRAY);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    types
}

fn cast_param(value: ScalarValue, to: &DataType) -> PgWireResult<ScalarValue> {
    value.cast_to(to).map_err(|e| {
        pg_error(Error::user(
            sqlstate::DATATYPE_MISMATCH,
            format!("parameter does not fit type {to}: {e}"),
        ))
    })
}

/// RowDescription fields of a schema.
pub fn field_infos(schema: &SchemaRef, formats: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ty = pg_type(f.data_type());
            let name = crate::sql::pg_compat::output_name(f.name()).to_string();
            FieldInfo::new(name, None, None, ty, formats.format_for(i))
        })
        .collect()
}

/// Runs a statement's future; a panic in it (a bug) answers `XX000` with the panic's message
/// instead of killing the connection without a word.
async fn guarded<T>(
    work: impl std::future::Future<Output = crate::error::Result<T>>,
) -> crate::error::Result<T> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(control::panicked(panic.as_ref())))
}

/// Waits for a new view to read its sources' backlog, telling the client how far it got in a
/// `NOTICE` every `progress_notice_interval` (what `sluice_progress` shows). Dropped before it
/// ends (a cancel request), the view is dropped.
async fn catch_up<C>(
    client: &mut C,
    engine: &Engine,
    view: crate::engine::CreatedView,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    PgWireError: From<C::Error>,
{
    let name = view.name().to_string();
    let caught_up = view.caught_up();
    futures::pin_mut!(caught_up);
    let every = engine.config().progress_notice_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            () = &mut caught_up => return Ok(()),
            _ = ticker.tick() => {
                let Some(b) = engine.views().backfills().into_iter().find(|b| b.view == name) else {
                    continue;
                };
                let percent = 100.0 * b.records_done as f64 / b.records_total.max(1) as f64;
                let message = format!(
                    "materialized view \"{name}\": {percent:.1}% of its backlog read ({} of {} log records, {} rows)",
                    b.records_done, b.records_total, b.rows_done
                );
                let notice = ErrorInfo::new("NOTICE".into(), "00000".into(), message);
                client
                    .send(PgWireBackendMessage::NoticeResponse(notice.into()))
                    .await?;
            }
        }
    }
}

/// Encodes a stream of batches as DataRows, a batch at a time. A panic while computing them
/// ends the result with `XX000`.
fn data_rows(
    batches: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    let formats: Vec<FieldFormat> = fields.iter().map(|f| f.format()).collect();
    let batches = std::panic::AssertUnwindSafe(batches)
        .catch_unwind()
        .map(|item| match item {
            Ok(batch) => batch.map_err(Error::from),
            Err(panic) => Err(control::panicked(panic.as_ref())),
        });
    batches.flat_map(move |batch| {
        let rows: Vec<PgWireResult<DataRow>> = match batch {
            Ok(batch) => match encode_batch(&batch, &formats) {
                Ok(rows) => rows.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(pg_error(Error::unsupported(e.to_string())))],
            },
            Err(e) => vec![Err(pg_error(e))],
        };
        stream::iter(rows)
    })
}

#[async_trait]
impl SimpleQueryHandler for StatementHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = parse_sql(query).map_err(pg_error)?;
        let slot = self.session(client);
        let mut session = slot.session.lock().await;
        let mut responses = Vec::with_capacity(statements.len());
        for statement in &statements {
            if let datafusion::sql::sqlparser::ast::Statement::Deallocate { name, .. } =
                &statement.statement
                && let Some(response) = deallocate(client, name)
            {
                responses.push(response);
                continue;
            }
            let mut stop = Stop::start(&self.engine, &slot, &session, statement);
            match stop.run(session.execute(statement, None)).await {
                Ok(Outcome::CatchingUp(view)) => {
                    catch_up(client, &self.engine, view).await?;
                    responses.push(Response::Execution(Tag::new("CREATE MATERIALIZED VIEW")));
                }
                Ok(Outcome::Subscribe { feed, copy }) => {
                    stop.timer.disarm();
                    if !responses.is_empty() {
                        // Its rows would overtake the earlier statements' responses.
                        let e = Error::unsupported(
                            "SUBSCRIBE after other statements in one query string; send it alone",
                        );
                        responses.push(Response::Error(Box::new(error_info(&e))));
                        break;
                    }
                    let fields = field_infos(feed.schema(), &Format::UnifiedText);
                    let format = match copy {
                        Some(csv) => FeedFormat::Copy { csv },
                        None => FeedFormat::Rows {
                            describe: true,
                            fields,
                        },
                    };
                    // Ends only with an error (or a cancel, which drops this future).
                    stream_feed(client, feed, format).await?;
                    break;
                }
                Ok(outcome) => {
                    responses.push(self.respond(client, outcome, &Format::UnifiedText, stop)?)
                }
                Err(e) => {
                    // Like PostgreSQL: the statements before the failing one stand, the
                    // rest of the string is not run.
                    tracing::debug!(code = e.sqlstate(), error = %e, "statement failed");
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// A parameter the client declared as an array (psycopg binds a list of ints as `int8[]`) is
/// planned as one, and an untyped one in `x = ANY($1)` (a list of strings) as `text[]`:
/// DataFusion would otherwise type it as the element it is compared with.
fn cast_array_parameters(
    statement: &mut datafusion::sql::sqlparser::ast::Statement,
    types: &[Option<Type>],
) {
    use datafusion::sql::sqlparser::ast::{Expr, Value, ValueWithSpan, visit_expressions_mut};
    let array_type = |name: &str| -> Option<String> {
        let index: usize = name.strip_prefix('$')?.parse().ok()?;
        let ty = types.get(index.checked_sub(1)?)?.as_ref()?;
        let element = crate::catalog::pg_types::array_element(ty)?;
        Some(format!("{}[]", element.name()))
    };
    let untyped = |name: &str| -> bool {
        let Some(index) = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
            return false;
        };
        index
            .checked_sub(1)
            .and_then(|i| types.get(i))
            .is_none_or(|t| t.as_ref().is_none_or(|t| *t == Type::UNKNOWN))
    };
    let _ = visit_expressions_mut(statement, |expr| {
        // `x = ANY($1)` with `$1` untyped (psycopg sends a list of strings so): a text array.
        if let Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } = expr
            && let Expr::Value(ValueWithSpan {
                value: Value::Placeholder(name),
                ..
            }) = right.as_ref()
            && untyped(name)
            && let Some(cast) =
                crate::sql::pg_compat::parse_expr(&format!("CAST({name} AS text[])"))
        {
            **right = cast;
        }
        if let Expr::Value(ValueWithSpan {
            value: Value::Placeholder(name),
            ..
        }) = expr
            && let Some(array) = array_type(name)
            && let Some(cast) =
                crate::sql::pg_compat::parse_expr(&format!("CAST({name} AS {array})"))
        {
            // Expressions are visited after their children: the cast is not visited again.
            *expr = cast;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// Parses the SQL of a `Parse` message: exactly one statement.
#[derive(Debug)]
pub struct StatementParser;

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = SluiceStatement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = parse_sql(sql).map_err(pg_error)?;
        match statements.len() {
            0 => Ok(None),
            1 => Ok(statements.pop().map(|mut s| {
                cast_array_parameters(&mut s.statement, types);
                s
            })),
            _ => Err(pg_error(Error::user(
                sqlstate::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            ))),
        }
    }

    fn get_parameter_types(&self, _stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(vec![])
    }

    fn get_result_schema(
        &self,
        _stmt: &Self::Statement,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(vec![])
    }
}

#[async_trait]
impl ExtendedQueryHandler for StatementHandler {
    type Statement = SluiceStatement;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    /// As pgwire's, noting the statement's name for `DEALLOCATE ALL`.
    async fn on_parse<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Parse,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| pgwire::api::DEFAULT_NAME.to_owned());
        let parser = self.query_parser();
        match StoredStatement::parse(client, &message, parser).await? {
            Some(statement) => client.portal_store().put_statement(Arc::new(statement)),
            None => client.portal_store().put_empty_statement(&name),
        }
        if name != pgwire::api::DEFAULT_NAME {
            client
                .session_extensions()
                .get_or_insert_with(PreparedNames::default)
                .lock()
                .insert(name);
        }
        client
            .send(PgWireBackendMessage::ParseComplete(
                pgwire::messages::extendedquery::ParseComplete::new(),
            ))
            .await?;
        Ok(())
    }

    /// As pgwire's, but a statement with parameters and no result columns (`INSERT … VALUES
    /// ($1)`) is answered `ParameterDescription` + `NoData`, as PostgreSQL answers it: pgwire
    /// sends an empty `RowDescription`, which pgJDBC's `executeUpdate` takes for a query.
    async fn on_describe<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == pgwire::messages::extendedquery::TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
            if let Some(pgwire::api::store::Entry::Value(statement)) =
                client.portal_store().get_statement(name)
            {
                let response = self.do_describe_statement(client, &statement).await?;
                if !response.fields.is_empty() {
                    return pgwire::api::query::send_describe_response(client, &response).await;
                }
                let types = response.parameters.iter().map(Type::oid).collect();
                client
                    .send(PgWireBackendMessage::ParameterDescription(
                        pgwire::messages::data::ParameterDescription::new(types),
                    ))
                    .await?;
                client
                    .send(PgWireBackendMessage::NoData(
                        pgwire::messages::data::NoData::new(),
                    ))
                    .await?;
                return Ok(());
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        statement: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = self.session(client);
        let session = slot.session.lock().await;
        let (inferred, schema) = guarded(session.describe(&statement.statement))
            .await
            .map_err(pg_error)?;
        let count = inferred.len().max(statement.parameter_types.len());
        let cast = cast_parameter_types(&statement.statement.statement);
        let parameters = (0..count)
            .map(|i| parameter_type(&statement.parameter_types, &cast, &inferred, i))
            .collect();
        let fields = schema
            .map(|s| field_infos(&s, &Format::UnifiedText))
            .unwrap_or_default();
        Ok(DescribeStatementResponse::new(parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = self.session(client);
        let session = slot.session.lock().await;
        let (_, schema) = guarded(session.describe(&portal.statement.statement))
            .await
            .map_err(pg_error)?;
        let fields = schema
            .map(|s| field_infos(&s, &portal.result_column_format))
            .unwrap_or_default();
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let datafusion::sql::sqlparser::ast::Statement::Deallocate { name, .. } =
            &portal.statement.statement.statement
            && let Some(done) = deallocate(client, name)
        {
            return Ok(done);
        }
        let slot = self.session(client);
        let mut session = slot.session.lock().await;
        let params = self.bound_params(&session, portal).await?;
        let mut stop = Stop::start(&self.engine, &slot, &session, &portal.statement.statement);
        let outcome = stop
            .run(session.execute(&portal.statement.statement, params))
            .await
            .map_err(pg_error)?;
        if let Outcome::CatchingUp(view) = outcome {
            catch_up(client, &self.engine, view).await?;
            return Ok(Response::Execution(Tag::new("CREATE MATERIALIZED VIEW")));
        }
        if let Outcome::Subscribe { feed, copy } = outcome {
            stop.timer.disarm();
            if copy.is_none() && max_rows > 0 {
                // A cursor on the portal (asyncpg, pgJDBC's setFetchSize): pgwire sends
                // `max_rows` rows per Execute and suspends the portal in between.
                let fields = Arc::new(field_infos(feed.schema(), &portal.result_column_format));
                let rows = super::live::feed_rows(feed, &fields);
                return Ok(Response::Query(QueryResponse::new(fields, rows)));
            }
            let format = match copy {
                Some(csv) => FeedFormat::Copy { csv },
                None => FeedFormat::Rows {
                    describe: false,
                    fields: field_infos(feed.schema(), &portal.result_column_format),
                },
            };
            stream_feed(client, feed, format).await?;
            return Ok(Response::Execution(Tag::new("SUBSCRIBE")));
        }
        self.respond(client, outcome, &portal.result_column_format, stop)
    }
}

#[async_trait]
impl CopyHandler for StatementHandler {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = client
            .session_extensions()
            .get_or_insert_with(PendingCopy::default);
        if let Some(load) = pending.lock().as_mut() {
            load.push(&copy_data.data);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = client
            .session_extensions()
            .get_or_insert_with(PendingCopy::default);
        let Some(load) = pending.lock().take() else {
            return Err(pg_error(Error::user(
                sqlstate::BAD_COPY_FORMAT,
                "no COPY in progress",
            )));
        };
        let slot = self.session(client);
        let session = slot.session.lock().await;
        let (table, bytes) = (load.table().to_string(), load.bytes);
        let rows = guarded(session.finish_copy(load)).await.map_err(pg_error)?;
        tracing::info!(%table, rows, bytes, "copy finished");
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows as usize).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = client
            .session_extensions()
            .get_or_insert_with(PendingCopy::default);
        pending.lock().take();
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}
