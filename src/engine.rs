//! [`Engine`]: one running Sluice: the catalog, the tables and the DataFusion catalog through
//! which every session sees them. Opening an engine on a data directory brings back every
//! object and every acknowledged row.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;
use datafusion::sql::sqlparser::ast::{CreateTable, CreateView, Statement};

use crate::catalog::information_schema::InformationSchema;
use crate::catalog::pg_catalog::PgCatalogSchema;
use crate::catalog::pg_functions::pg_functions;
use crate::catalog::public_schema::PublicSchema;
use crate::catalog::registry::TableRegistry;
use crate::catalog::views::{ViewEntry, ViewRegistry};
use crate::catalog::{
    CatalogStore, INFORMATION_SCHEMA, PG_CATALOG_SCHEMA, PUBLIC_SCHEMA, StoredObject,
};
use crate::config::{Config, DATABASE_NAME};
use crate::connector::queue::QueueTable;
use crate::connector::sink::RunningSink;
use crate::connector::source::RunningSource;
use crate::error::{Error, Result, sqlstate};
use crate::planner::{StreamPlan, plan_view};
use crate::runtime::{Executor, RunningView, Subscription};
use crate::sql::ddl::{TableClauses, plan_create_table, table_name};
use crate::sql::live::{SubscribeOptions, SubscribeTarget};
use crate::sql::parse_sql;

/// A running engine.
pub struct Engine {
    /// Its configuration.
    config: Config,
    /// The durable list of objects. The lock also serializes DDL.
    store: Mutex<CatalogStore>,
    /// The live tables.
    tables: Arc<TableRegistry>,
    /// The materialized views and their published contents.
    views: Arc<ViewRegistry>,
    /// Runs the views. Dropped (and its thread joined) with the engine.
    executor: Executor,
    /// Shared by table commits, taken exclusively by the executor for a consistent cut.
    commit_gate: Arc<RwLock<()>>,
    /// The catalogs DataFusion plans against (one: `sluice`, with `public` and `pg_catalog`).
    catalogs: Arc<dyn CatalogProviderList>,
    /// Memory and disk limits shared by every session's queries.
    runtime: Arc<RuntimeEnv>,
    /// The running connectors of sources and connector tables, by table id. Dropping one
    /// stops its thread.
    sources: Mutex<HashMap<u32, RunningSource>>,
    /// The running sinks, by sink name.
    sinks: Mutex<HashMap<String, RunningSink>>,
    /// Shared CDC sources (`CREATE SOURCE pg WITH (connector = 'postgres-cdc', …)`), by name:
    /// their catalog id and options, which their tables (`… FROM pg TABLE 'x'`) take.
    cdc_sources: Mutex<CdcSources>,
    /// Ids of views that only feed a subscription, counting down from `u32::MAX` (catalog
    /// ids count up from 1).
    next_transient_id: std::sync::atomic::AtomicU32,
    /// `CREATE FUNCTION … LANGUAGE SQL` functions, which sessions take in before each statement
    /// (and `pg_proc` lists).
    functions: Arc<RwLock<crate::sql::functions::SqlFunctions>>,
    /// `CREATE TYPE name AS (…)` composite types, which every session's planner reads.
    types: crate::sql::pg_semantics::CompositeTypes,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.config.data_dir)
            .finish()
    }
}

/// A view just created, reading its sources' backlog. [`CreatedView::caught_up`] resolves once
/// it has; dropped before that (a cancel request, the client gone), the statement undoes
/// itself: the view stops at its next chunk of backlog and is dropped, as if never created.
#[derive(Debug)]
pub struct CreatedView {
    engine: Arc<Engine>,
    name: String,
    cancel: Arc<std::sync::atomic::AtomicBool>,
    armed: bool,
}

impl CreatedView {
    /// The view's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Resolves once the view has read the backlog there was when it was created.
    pub async fn caught_up(mut self) {
        if let Some(view) = self.engine.views.get(&self.name) {
            self.engine.executor.backfilled(Some(view.id)).await;
        }
        self.engine.flush().await;
        self.armed = false;
    }
}

impl Drop for CreatedView {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        match self.engine.drop_view(&self.name, true, true) {
            Ok(()) => {
                tracing::info!(view = %self.name, "CREATE MATERIALIZED VIEW cancelled: view dropped")
            }
            Err(e) => {
                tracing::error!(view = %self.name, error = %e, "CREATE MATERIALIZED VIEW cancelled, but the view could not be dropped")
            }
        }
    }
}

/// Registers our functions in a DataFusion context: PostgreSQL's catalog functions, the window
/// functions, `to_char` with PostgreSQL's patterns, and the temporal join's lookup.
fn register_functions(
    ctx: &SessionContext,
    tables: &Arc<TableRegistry>,
    views: &Arc<ViewRegistry>,
    sql_functions: &Arc<RwLock<crate::sql::functions::SqlFunctions>>,
) {
    for function in pg_functions(
        Arc::clone(tables),
        Arc::clone(views),
        Arc::clone(sql_functions),
    ) {
        ctx.register_udf(function);
    }
    for function in crate::sql::windows::window_functions() {
        ctx.register_udf(function);
    }
    // PostgreSQL's template patterns, in place of DataFusion's chrono formats.
    ctx.register_udf(crate::sql::to_char::to_char_udf());
    for function in crate::sql::pg_builtins::functions() {
        ctx.register_udf(function.as_ref().clone());
    }
    for function in crate::sql::jsonb::functions() {
        ctx.register_udf(function.as_ref().clone());
    }
    // PostgreSQL's name for the sample variance.
    ctx.register_udaf(
        datafusion::functions_aggregate::variance::var_samp_udaf()
            .as_ref()
            .clone()
            .with_aliases(["variance"]),
    );
    ctx.register_udtf(
        crate::catalog::pg_functions::KEYWORDS_FUNCTION,
        Arc::new(crate::catalog::pg_functions::KeywordsFunction),
    );
    ctx.register_udtf(
        crate::sql::parser::LOOKUP_FUNCTION,
        Arc::new(crate::connector::queue::provider::LookupFunction::new(
            Arc::clone(tables),
        )),
    );
}

/// The functions `pg_proc` lists: every scalar, aggregate and window function of a context but
/// our internal ones (named `sluice_…`, `_pg_…`).
fn catalog_functions(
    state: &datafusion::execution::SessionState,
) -> Vec<crate::catalog::pg_catalog::CatalogFunction> {
    use crate::catalog::pg_catalog::CatalogFunction;
    let scalar = state.scalar_functions().keys().map(|n| (n, "f"));
    let aggregate = state.aggregate_functions().keys().map(|n| (n, "a"));
    let window = state.window_functions().keys().map(|n| (n, "w"));
    scalar
        .chain(aggregate)
        .chain(window)
        .filter(|(name, _)| !name.starts_with("sluice_") && !name.starts_with('_'))
        .map(|(name, kind)| CatalogFunction {
            name: name.clone(),
            kind,
        })
        .collect()
}

impl Engine {
    /// Opens the data directory (creating it if needed) and restores every object in it.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::CatalogIo {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        if config.file_source_root.is_none() {
            let files = config.file_root();
            std::fs::create_dir_all(&files).map_err(|source| Error::CatalogIo {
                path: files.display().to_string(),
                source,
            })?;
        }
        let store = CatalogStore::open(&config.data_dir)?;
        let tables = Arc::new(TableRegistry::default());
        let views = Arc::new(ViewRegistry::default());
        let commit_gate = Arc::new(RwLock::new(()));
        let checkpoint_dir = config.data_dir.join("checkpoints");
        let mut recovered = None;
        let checkpoints = match config.checkpoint_interval {
            Some(interval) => {
                recovered = crate::state::recovery::recover(&checkpoint_dir);
                let registry = Arc::clone(&views);
                let writer = crate::state::CheckpointWriter::start(
                    checkpoint_dir,
                    recovered.as_ref().map(|r| r.manifest.clone()),
                    Box::new(move |info| registry.record_checkpoint(info)),
                )
                .map_err(|e| Error::io(format!("checkpoints: {e}")))?;
                Some(crate::runtime::executor::Checkpoints::new(writer, interval))
            }
            None => None,
        };
        let executor = Executor::start(
            config.barrier_interval,
            config.parallelism,
            Arc::clone(&tables),
            Arc::clone(&views),
            Arc::clone(&commit_gate),
            checkpoints,
        )?;
        let sql_functions = Arc::new(RwLock::new(crate::sql::functions::SqlFunctions::default()));
        let functions = {
            let ctx = SessionContext::new();
            register_functions(&ctx, &tables, &views, &sql_functions);
            catalog_functions(&ctx.state())
        };
        let pg_catalog = Arc::new(PgCatalogSchema::new(
            Arc::clone(&tables),
            Arc::clone(&views),
            functions,
            Arc::clone(&sql_functions),
        ));
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(
            PUBLIC_SCHEMA,
            Arc::new(PublicSchema::new(
                Arc::clone(&tables),
                Arc::clone(&views),
                Arc::clone(&pg_catalog),
            )),
        )?;
        catalog.register_schema(PG_CATALOG_SCHEMA, pg_catalog)?;
        catalog.register_schema(
            INFORMATION_SCHEMA,
            Arc::new(InformationSchema::new(Arc::clone(&tables))),
        )?;
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        catalogs.register_catalog(DATABASE_NAME.to_string(), Arc::new(catalog));
        let runtime = query_runtime(&config)?;
        let engine = Arc::new(Self {
            config,
            store: Mutex::new(store),
            tables,
            views,
            executor,
            commit_gate,
            catalogs,
            runtime,
            sources: Mutex::new(HashMap::new()),
            sinks: Mutex::new(HashMap::new()),
            cdc_sources: Mutex::new(HashMap::new()),
            next_transient_id: std::sync::atomic::AtomicU32::new(u32::MAX),
            functions: sql_functions,
            types: Default::default(),
        });
        engine.restore(recovered).await?;
        tracing::info!(
            data_dir = %engine.config.data_dir.display(),
            tables = engine.tables.names().len(),
            views = engine.views.names().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "engine opened"
        );
        Ok(engine)
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The live tables.
    pub fn tables(&self) -> &Arc<TableRegistry> {
        &self.tables
    }

    /// The materialized views.
    pub fn views(&self) -> &Arc<ViewRegistry> {
        &self.views
    }

    /// What the runtime, checkpoints and server count as it happens.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        self.views.metrics()
    }

    /// Bytes ad-hoc queries hold now, of `--query-memory`.
    pub fn query_memory_reserved(&self) -> usize {
        self.runtime.memory_pool.reserved()
    }

    /// `SUBSCRIBE`: a feed of `target`'s changes. A view is subscribed to directly; a table or
    /// a query gets a view of its own, which lives as long as the subscription. Returns the
    /// rows' schema with the feed.
    pub async fn subscribe(
        &self,
        state: &SessionState,
        target: &SubscribeTarget,
        options: &SubscribeOptions,
    ) -> Result<(SchemaRef, Subscription)> {
        let subscribe = |id: u32, owned| {
            self.executor
                .subscribe(id, options, self.config.subscribe_buffer_epochs, owned)
        };
        let query = match target {
            SubscribeTarget::Relation(name) => {
                if let Some(view) = self.views.get(name) {
                    return Ok((Arc::clone(&view.schema), subscribe(view.id, None)?));
                }
                if self.tables.get(name).is_none() {
                    return Err(Error::user(
                        sqlstate::UNDEFINED_TABLE,
                        format!("relation \"{name}\" does not exist"),
                    ));
                }
                let sql = format!("SELECT * FROM \"{}\"", name.replace('"', "\"\""));
                let parsed = parse_sql(&sql)?;
                match parsed.into_iter().next().map(|s| s.statement) {
                    Some(Statement::Query(q)) => q,
                    _ => return Err(Error::unsupported("SUBSCRIBE to this relation")),
                }
            }
            SubscribeTarget::Query(query) => query.clone(),
        };
        let plan = crate::sql::plan_statement(
            state,
            Statement::Query(query),
            crate::sql::windows::WindowMode::Stream,
        )
        .await?;
        let optimized = optimize_for_stream(state, &plan)?;
        let plan = plan_view(&optimized, self.config.parallelism, false)?;
        let schema = Arc::clone(&plan.schema);
        let id = self
            .next_transient_id
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.executor
            .add(RunningView::new(id, "subscribe".into(), plan, false)?.unpublished())?;
        let guard = self.executor.stop_on_drop(id);
        // Caught up with what its inputs already hold before the feed starts.
        self.executor.backfilled(Some(id)).await;
        self.flush().await;
        Ok((schema, subscribe(id, Some(Box::new(guard)))?))
    }

    /// Live subscriptions, and views running only for one (`SUBSCRIBE (SELECT …)`).
    pub fn subscriptions(&self) -> (usize, usize) {
        self.executor.subscriptions()
    }

    /// Returns once every write acknowledged before the call is visible in every view.
    pub async fn flush(&self) {
        self.executor.flush().await;
    }

    fn tables_dir(&self) -> PathBuf {
        self.config.data_dir.join("tables")
    }

    /// A DataFusion context over the engine's catalog, for one session.
    pub fn new_context(&self) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(DATABASE_NAME, PUBLIC_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            // Our own information_schema (PostgreSQL's type names) replaces DataFusion's.
            .with_information_schema(false);
        let options = config.options_mut();
        options.sql_parser.map_string_types_to_utf8view = false;
        options.sql_parser.enable_ident_normalization = true;
        // A literal with a decimal point is NUMERIC, as in PostgreSQL (`0.908 * price` is exact).
        options.sql_parser.parse_float_as_decimal = true;
        options.execution.time_zone = Some("+00:00".to_string());
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_catalog_list(Arc::clone(&self.catalogs))
            .with_default_features()
            // PostgreSQL's integer overflow, rounding casts, and interval, bytea and array input.
            .with_analyzer_rules(crate::sql::pg_semantics::analyzer_rules())
            // A filter stays above an aggregate without GROUP BY or over grouping sets.
            .with_optimizer_rules(crate::sql::filter_pushdown::optimizer_rules())
            // `JSONB`, `JSON`, `CHARACTER VARYING(n)` and composite-typed columns and casts.
            .with_type_planner(Arc::new(crate::sql::pg_semantics::PostgresTypes {
                composites: Arc::clone(&self.types),
            }));
        // `INTERVAL * number` and `INTERVAL / number`, after DataFusion's own planners; the
        // `jsonb` operators before them (`||` and `@>` mean something else for text and arrays).
        let planners = state.expr_planners().get_or_insert_with(Vec::new);
        planners.push(Arc::new(crate::sql::pg_semantics::IntervalArithmetic));
        planners.insert(0, Arc::new(crate::sql::jsonb::JsonbOperators));
        let state = state.build();
        let ctx = SessionContext::new_with_state(state);
        register_functions(&ctx, &self.tables, &self.views, &self.functions);
        ctx
    }

    /// Brings back every object of the catalog; views from `recovered` where they can be.
    async fn restore(&self, recovered: Option<crate::state::Recovered>) -> Result<()> {
        let started = std::time::Instant::now();
        // Views restored from the checkpoint; a view is restored only if every view it reads
        // was, so that all of them stand at the same barrier.
        let mut restored: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut replayed = 0usize;
        // Restored views stand at one barrier: no epoch may run until all of them are in.
        let hold = self.executor.hold();
        let objects: Vec<StoredObject> = self.lock_store().objects().to_vec();
        let ctx = self.new_context();
        let mut state = ctx.state();
        for object in &objects {
            let statement = parse_sql(&object.sql)?.into_iter().next().ok_or_else(|| {
                Error::unsupported(format!("empty definition of {}", object.name))
            })?;
            if object.kind == CDC_SOURCE_KIND {
                let options = statement.connector.map(|c| c.options).unwrap_or_default();
                self.lock_cdc_sources()
                    .insert(object.name.clone(), (object.id, options));
                continue;
            }
            match &statement.statement {
                Statement::CreateTable(create) => {
                    let expanded = self.expand_cdc_table(statement.connector.as_ref())?;
                    let mut clauses = TableClauses::of(&statement);
                    if let Some(expanded) = &expanded {
                        clauses.connector = Some(expanded);
                    }
                    let def =
                        plan_create_table(&state, create, clauses, object.id, &object.sql).await?;
                    let opening = std::time::Instant::now();
                    let table = QueueTable::open(
                        def,
                        &self.tables_dir(),
                        self.config.fsync,
                        self.config.log_segment_size,
                        Arc::clone(&self.commit_gate),
                    )?;
                    tracing::info!(
                        table = %object.name,
                        elapsed_ms = opening.elapsed().as_millis() as u64,
                        "table opened"
                    );
                    self.tables.insert(Arc::new(table));
                }
                Statement::CreateView(create) => {
                    let plan = self
                        .plan_view(&state, create, statement.emit_on_window_close)
                        .await?;
                    let upstream_restored = plan.sources.iter().all(|s| match s {
                        crate::planner::SourceRef::View(v) => restored.contains(&v.name),
                        crate::planner::SourceRef::Table(_) => true,
                    });
                    let checkpoint = recovered
                        .as_ref()
                        .and_then(|r| r.views.get(&object.id))
                        .filter(|_| upstream_restored);
                    let eowc = statement.emit_on_window_close;
                    let entry = view_entry(object.id, &object.name, &object.sql, &plan, eowc);
                    let mut view = RunningView::new(object.id, object.name.clone(), plan, eowc)?;
                    let restoring = std::time::Instant::now();
                    match checkpoint.map(|c| view.restore(c)) {
                        Some(Ok(())) => {
                            tracing::info!(
                                view = %object.name,
                                elapsed_ms = restoring.elapsed().as_millis() as u64,
                                "view restored from the checkpoint"
                            );
                            restored.insert(object.name.clone());
                        }
                        Some(Err(e)) => {
                            tracing::warn!(
                                view = %object.name,
                                error = %e,
                                "checkpoint of the view not usable; replaying its input"
                            );
                            let plan = self.plan_view(&state, create, eowc).await?;
                            view = RunningView::new(object.id, object.name.clone(), plan, eowc)?;
                            replayed += 1;
                        }
                        None => replayed += 1,
                    }
                    self.install_view(entry, view)?;
                }
                Statement::CreateType { representation, .. } => {
                    let fields = composite_fields(&state, representation.as_ref()).await?;
                    crate::sync::write(&self.types, "the composite types")
                        .insert(object.name.clone(), fields);
                }
                Statement::CreateFunction(create) => {
                    let udf = crate::sql::functions::plan_function(&state, create).await?;
                    ctx.register_udf(udf.clone());
                    state = ctx.state();
                    self.install_function(object.id, object.name.clone(), udf);
                }
                _ if object.kind == "sink" => {}
                _ => {
                    return Err(Error::unsupported(format!(
                        "catalog object kind {}",
                        object.kind
                    )));
                }
            }
        }
        // Sinks first: what the views emit while catching up is theirs too.
        for object in objects.iter().filter(|o| o.kind == "sink") {
            let statement = parse_sql(&object.sql)?.into_iter().next().ok_or_else(|| {
                Error::unsupported(format!("empty definition of {}", object.name))
            })?;
            // A sink resumes from the checkpoint only if its view was restored from it.
            let pending = recovered.as_ref().and_then(|r| {
                let from = &statement.sink.as_ref()?.from;
                if !restored.contains(from) {
                    return None;
                }
                r.sinks.get(&object.name).map(Vec::as_slice)
            });
            self.start_sink(&statement, pending)?;
        }
        drop(hold);
        if !self.views.names().is_empty() {
            // Views restart from their checkpoint (or their logs' start); catch up before
            // serving.
            self.executor.backfilled(None).await;
            self.flush().await;
            tracing::info!(
                checkpoint_epoch = recovered.as_ref().map(|r| r.manifest.epoch),
                checkpoint_read_ms = recovered.as_ref().map(|r| r.elapsed.as_millis() as u64),
                views_restored = restored.len(),
                views_replayed = replayed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "views recovered"
            );
            if let Some(recovered) = &recovered {
                self.views
                    .record_checkpoint(crate::state::CheckpointInfo::recovery(
                        &recovered.manifest,
                        recovered.elapsed + started.elapsed(),
                        restored.len(),
                        replayed,
                    ));
            }
        }
        for table in self.tables.all() {
            if table.def().connector.is_some() {
                self.start_source(table)?;
            }
        }
        Ok(())
    }

    /// `CREATE SINK name FROM view WITH (…) FORMAT … ENCODE JSON`.
    pub async fn create_sink(
        &self,
        sink: &crate::sql::parser::SinkClause,
        connector: &crate::sql::parser::ConnectorClause,
        text: &str,
    ) -> Result<()> {
        let spec = crate::connector::spec::SinkSpec::parse(connector)?;
        let exists = self
            .lock_store()
            .objects()
            .iter()
            .any(|o| o.kind == "sink" && o.name == sink.name);
        if exists {
            return if_not_exists(sink.if_not_exists, &sink.name).map(|_| ());
        }
        let id = self.lock_store().next_id();
        let statement = parse_sql(text)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::unsupported("empty CREATE SINK"))?;
        if let crate::connector::spec::SinkTarget::Postgres(target) = &spec.target {
            // A target that cannot be reached or does not fit is refused now, not later.
            let view = self.sink_view(&sink.from)?;
            let writer = crate::connector::postgres::sink::RowWriter::new(
                &view.schema,
                spec.format,
                &spec.primary_key,
                spec.force_append_only,
                view.append_only,
            )?;
            crate::connector::postgres::sink::check_target(&sink.name, target, &writer).await?;
        }
        self.start_sink(&statement, None)?;
        self.lock_store().add(StoredObject {
            id,
            kind: "sink".into(),
            name: sink.name.clone(),
            sql: text.to_string(),
        })?;
        tracing::info!(sink = %sink.name, from = %sink.from, "sink created");
        Ok(())
    }

    /// Starts a sink. `recovered`: its changes not confirmed in the checkpoint the views
    /// were restored from (an exactly-once sink resends what of them is missing).
    fn start_sink(
        &self,
        statement: &crate::sql::parser::SluiceStatement,
        recovered: Option<&[datafusion::arrow::array::RecordBatch]>,
    ) -> Result<()> {
        let (Some(sink), Some(connector)) = (&statement.sink, &statement.connector) else {
            return Err(Error::unsupported("not a CREATE SINK statement"));
        };
        let spec = crate::connector::spec::SinkSpec::parse(connector)?;
        let view = self.sink_view(&sink.from)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(16);
        let checkpoints = self.executor.checkpoint_completed();
        let (connector_name, target) = spec.shown_target();
        let checkpoints_on_and_exactly_once = checkpoints.is_some() && spec.exactly_once;
        if let crate::connector::spec::SinkTarget::Postgres(pg) = &spec.target {
            let writer = crate::connector::postgres::sink::RowWriter::new(
                &view.schema,
                spec.format,
                &spec.primary_key,
                spec.force_append_only,
                view.append_only,
            )?;
            let mut exactly_once = None;
            let mut feed = None;
            if let Some(checkpoints) = checkpoints.filter(|_| spec.exactly_once) {
                let confirmed = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let resumed = recovered
                    .map(crate::runtime::executor::sink_batches)
                    .transpose()?;
                exactly_once = Some(crate::connector::postgres::sink::Checkpointed {
                    confirmed: Arc::clone(&confirmed),
                    checkpoints,
                    resume: resumed.clone().unwrap_or_default(),
                });
                feed = Some(crate::runtime::executor::ExactlyOnce {
                    name: sink.name.clone(),
                    confirmed,
                    resumed,
                });
            }
            let stats: Arc<crate::connector::sink::SinkStats> = Default::default();
            let stop: Arc<std::sync::atomic::AtomicBool> = Default::default();
            let thread = crate::connector::postgres::sink::spawn(
                crate::connector::postgres::sink::PostgresSink {
                    name: sink.name.clone(),
                    target: pg.clone(),
                    writer,
                    receiver,
                    stats: Arc::clone(&stats),
                    stop: Arc::clone(&stop),
                    exactly_once,
                },
            )?;
            let running = RunningSink {
                view: sink.from.clone(),
                stats,
                stop,
                thread: Some(thread),
            };
            self.executor
                .add_sink(view.id, sender, Arc::clone(&running.stats), feed)?;
            self.show_sink(
                &sink.name,
                &sink.from,
                connector_name,
                target,
                checkpoints_on_and_exactly_once,
                running,
            );
            return Ok(());
        }
        let encoder =
            crate::connector::sink::SinkEncoder::new(&spec, &view.schema, view.append_only)?;
        let running = match checkpoints {
            Some(checkpoints) if spec.exactly_once => {
                let confirmed = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let stats: Arc<crate::connector::sink::SinkStats> = Default::default();
                let resumed = recovered
                    .map(crate::runtime::executor::sink_batches)
                    .transpose()?;
                let running = crate::connector::sink::start_transactional(
                    &sink.from,
                    crate::connector::kafka::transactional::TransactionalSink {
                        name: sink.name.clone(),
                        spec,
                        encoder,
                        receiver,
                        stats: Arc::clone(&stats),
                        stop: Default::default(),
                        confirmed: Arc::clone(&confirmed),
                        checkpoints,
                        state_file: self.sink_state_file(&sink.name),
                        resume: resumed.clone().unwrap_or_default(),
                    },
                )?;
                self.executor.add_sink(
                    view.id,
                    sender,
                    stats,
                    Some(crate::runtime::executor::ExactlyOnce {
                        name: sink.name.clone(),
                        confirmed,
                        resumed,
                    }),
                )?;
                running
            }
            _ => {
                if spec.exactly_once {
                    tracing::warn!(
                        sink = %sink.name,
                        "checkpoints are off, so the sink is at-least-once"
                    );
                }
                let running =
                    crate::connector::sink::start(&sink.name, &sink.from, spec, encoder, receiver)?;
                self.executor
                    .add_sink(view.id, sender, Arc::clone(&running.stats), None)?;
                running
            }
        };
        self.show_sink(
            &sink.name,
            &sink.from,
            connector_name,
            target,
            checkpoints_on_and_exactly_once,
            running,
        );
        Ok(())
    }

    /// The view a sink reads.
    fn sink_view(&self, name: &str) -> Result<Arc<crate::catalog::views::ViewEntry>> {
        self.views.get(name).ok_or_else(|| {
            Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!(
                    "materialized view \"{name}\" does not exist (a sink reads a materialized view)"
                ),
            )
        })
    }

    /// A started sink joins `sluice_sinks` and the running sinks.
    fn show_sink(
        &self,
        name: &str,
        view: &str,
        connector: &'static str,
        target: String,
        exactly_once: bool,
        running: RunningSink,
    ) {
        self.views.show_sink(
            name,
            crate::connector::sink::SinkShown {
                view: view.to_string(),
                connector,
                target,
                exactly_once,
                stats: Arc::clone(&running.stats),
            },
        );
        crate::sync::lock(&self.sinks, "the running sinks").insert(name.to_string(), running);
    }

    /// Where an exactly-once sink notes the batch it is sending.
    fn sink_state_file(&self, name: &str) -> PathBuf {
        self.config
            .data_dir
            .join("sinks")
            .join(format!("{name}.json"))
    }

    /// `DROP SINK`.
    pub fn drop_sink(&self, name: &str, if_exists: bool) -> Result<()> {
        let mut store = self.lock_store();
        let Some(object) = store
            .objects()
            .iter()
            .find(|o| o.kind == "sink" && o.name == name)
            .cloned()
        else {
            if if_exists {
                return Ok(());
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_OBJECT,
                format!("sink \"{name}\" does not exist"),
            ));
        };
        store.remove(object.id)?;
        drop(store);
        self.views.hide_sink(name);
        crate::sync::lock(&self.sinks, "the running sinks").remove(name);
        // A sink created later under this name starts afresh.
        let _ = std::fs::remove_file(self.sink_state_file(name));
        tracing::info!(sink = %name, "sink dropped");
        Ok(())
    }

    /// Sinks reading view `view`.
    fn sinks_of(&self, view: &str) -> Vec<String> {
        crate::sync::lock(&self.sinks, "the running sinks")
            .iter()
            .filter(|(_, s)| s.view == view)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn start_source(&self, table: Arc<QueueTable>) -> Result<()> {
        let id = table.def().id;
        let running = crate::connector::source::start(table, self.config.file_root())?;
        crate::sync::lock(&self.sources, "the running sources").insert(id, running);
        Ok(())
    }

    /// Plans a view's query into an operator graph (whose `explain` is what `EXPLAIN` prints).
    pub async fn plan_view(
        &self,
        state: &SessionState,
        create: &CreateView,
        emit_on_window_close: bool,
    ) -> Result<StreamPlan> {
        if create.or_replace || create.or_alter {
            return Err(Error::unsupported("CREATE OR REPLACE MATERIALIZED VIEW"));
        }
        if !create.columns.is_empty() {
            return Err(Error::unsupported(
                "a column list after the view name; name the columns with AS in the query",
            ));
        }
        let plan = crate::sql::plan_statement(
            state,
            Statement::Query(create.query.clone()),
            crate::sql::windows::WindowMode::Stream,
        )
        .await?;
        let optimized = optimize_for_stream(state, &plan)?;
        plan_view(&optimized, self.config.parallelism, emit_on_window_close)
    }

    /// Starts a view and makes it visible.
    fn install_view(&self, entry: Arc<ViewEntry>, view: RunningView) -> Result<()> {
        self.executor.add(view)?;
        self.views.insert(entry);
        Ok(())
    }

    /// `CREATE MATERIALIZED VIEW`: plans the query and starts the view from the beginning of
    /// its sources; the statement ends when the returned view has caught up. Returns `None`
    /// when it existed (IF NOT EXISTS).
    pub async fn create_view(
        self: &Arc<Self>,
        state: &SessionState,
        create: &CreateView,
        emit_on_window_close: bool,
        text: &str,
    ) -> Result<Option<CreatedView>> {
        let name = table_name(&create.name)?;
        if self.name_taken(&name) {
            return if_not_exists(create.if_not_exists, &name).map(|_| None);
        }
        let plan = self.plan_view(state, create, emit_on_window_close).await?;
        let cancel;
        {
            let mut store = self.lock_store();
            if self.name_taken(&name) {
                return Err(already_exists(&name));
            }
            let id = store.next_id();
            store.add(StoredObject {
                id,
                kind: "view".into(),
                name: name.clone(),
                sql: text.to_string(),
            })?;
            let entry = view_entry(id, &name, text, &plan, emit_on_window_close);
            let view = RunningView::new(id, name.clone(), plan, emit_on_window_close)?;
            cancel = view.cancel_flag();
            if let Err(e) = self.install_view(entry, view) {
                store.remove(id)?;
                return Err(e);
            }
            tracing::info!(view = %name, id, "materialized view created");
        }
        Ok(Some(CreatedView {
            engine: Arc::clone(self),
            name,
            cancel,
            armed: true,
        }))
    }

    /// `DROP MATERIALIZED VIEW`; with `cascade`, the views that read it go too.
    pub fn drop_view(&self, name: &str, if_exists: bool, cascade: bool) -> Result<()> {
        let Some(view) = self.views.get(name) else {
            if if_exists {
                return Ok(());
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("materialized view \"{name}\" does not exist"),
            ));
        };
        self.drop_dependents(name, "materialized view", cascade)?;
        self.lock_store().remove(view.id)?;
        self.executor.remove(view.id);
        self.views.remove(name);
        tracing::info!(view = %name, id = view.id, "materialized view dropped");
        Ok(())
    }

    /// `CREATE TYPE name AS (field type, …)`: a composite type, a struct of those fields.
    pub async fn create_type(
        &self,
        state: &SessionState,
        name: &datafusion::sql::sqlparser::ast::ObjectName,
        representation: Option<&datafusion::sql::sqlparser::ast::UserDefinedTypeRepresentation>,
        text: &str,
    ) -> Result<()> {
        let Some(name) = crate::sql::pg_semantics::composite_name(name) else {
            return Err(Error::user(
                sqlstate::INVALID_NAME,
                format!("type name \"{name}\" must be in schema \"public\""),
            ));
        };
        let fields = composite_fields(state, representation).await?;
        let mut store = self.lock_store();
        let taken = crate::sync::read(&self.types, "the composite types").contains_key(&name)
            || crate::catalog::pg_types::type_by_name(&name).is_some();
        if taken {
            return Err(Error::user(
                sqlstate::DUPLICATE_OBJECT,
                format!("type \"{name}\" already exists"),
            ));
        }
        let id = store.next_id();
        store.add(StoredObject {
            id,
            kind: TYPE_KIND.into(),
            name: name.clone(),
            sql: text.to_string(),
        })?;
        drop(store);
        crate::sync::write(&self.types, "the composite types").insert(name.clone(), fields);
        tracing::info!(r#type = %name, "composite type created");
        Ok(())
    }

    /// `DROP TYPE [IF EXISTS] name`: refused (2BP01) while a table, source, view, function or
    /// type names it (CASCADE, which would drop their columns, is refused as well).
    pub fn drop_type(&self, name: &str, if_exists: bool) -> Result<()> {
        let mut store = self.lock_store();
        let Some(id) = store
            .objects()
            .iter()
            .find(|o| o.kind == TYPE_KIND && o.name == name)
            .map(|o| o.id)
        else {
            if if_exists {
                return Ok(());
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_OBJECT,
                format!("type \"{name}\" does not exist"),
            ));
        };
        let users: Vec<String> = store
            .objects()
            .iter()
            .filter(|o| o.id != id && names_word(&o.sql, name))
            .map(|o| format!("{} {}", o.kind, o.name))
            .collect();
        if !users.is_empty() {
            return Err(Error::user(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop type {name} because other objects depend on it: {}",
                    users.join(", ")
                ),
            ));
        }
        store.remove(id)?;
        drop(store);
        crate::sync::write(&self.types, "the composite types").remove(name);
        tracing::info!(r#type = %name, "composite type dropped");
        Ok(())
    }

    /// `CREATE [OR REPLACE] FUNCTION name(…) RETURNS t LANGUAGE SQL AS …`.
    pub async fn create_function(
        &self,
        state: &SessionState,
        create: &datafusion::sql::sqlparser::ast::CreateFunction,
        text: &str,
    ) -> Result<()> {
        let name = crate::sql::functions::function_name(create)?;
        let udf = crate::sql::functions::plan_function(state, create).await?;
        let mut store = self.lock_store();
        let existing = store
            .objects()
            .iter()
            .find(|o| o.kind == FUNCTION_KIND && o.name == name)
            .map(|o| o.id);
        match existing {
            Some(_) if create.if_not_exists => return Ok(()),
            Some(id) if create.or_replace => {
                // Views inlined the old body; a restart would plan them with the new one.
                let readers = self.function_readers(&store, &name);
                if !readers.is_empty() {
                    return Err(Error::user(
                        sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                        format!(
                            "cannot replace function {name} because materialized view {} uses it",
                            readers.join(", ")
                        ),
                    ));
                }
                store.remove(id)?;
            }
            Some(_) => {
                return Err(Error::user(
                    sqlstate::DUPLICATE_FUNCTION,
                    format!("function {name} already exists"),
                ));
            }
            None => {
                let builtin = state.scalar_functions().contains_key(&name)
                    || state.aggregate_functions().contains_key(&name)
                    || state.window_functions().contains_key(&name);
                if builtin {
                    return Err(Error::user(
                        sqlstate::DUPLICATE_FUNCTION,
                        format!("function {name} already exists (a built-in function)"),
                    ));
                }
            }
        }
        let id = store.next_id();
        store.add(StoredObject {
            id,
            kind: FUNCTION_KIND.into(),
            name: name.clone(),
            sql: text.to_string(),
        })?;
        drop(store);
        self.install_function(id, name, udf);
        Ok(())
    }

    fn install_function(&self, id: u32, name: String, udf: datafusion::logical_expr::ScalarUDF) {
        let mut functions = crate::sync::write(&self.functions, "the SQL functions");
        functions.dropped.remove(&name);
        functions.live.insert(name, (id, Arc::new(udf)));
        functions.generation += 1;
    }

    /// `DROP FUNCTION [IF EXISTS] name [CASCADE]`: refused (2BP01) while a view uses it,
    /// unless `cascade`, which drops those views.
    pub fn drop_function(&self, name: &str, if_exists: bool, cascade: bool) -> Result<()> {
        let (id, readers) = {
            let store = self.lock_store();
            let id = store
                .objects()
                .iter()
                .find(|o| o.kind == FUNCTION_KIND && o.name == name)
                .map(|o| o.id);
            (id, self.function_readers(&store, name))
        };
        let Some(id) = id else {
            if if_exists {
                return Ok(());
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_FUNCTION,
                format!("function {name} does not exist"),
            ));
        };
        if !readers.is_empty() {
            if !cascade {
                return Err(Error::user(
                    sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                    format!(
                        "cannot drop function {name} because materialized view {} uses it; use DROP … CASCADE",
                        readers.join(", ")
                    ),
                ));
            }
            for view in &readers {
                self.drop_view(view, true, true)?;
            }
        }
        self.lock_store().remove(id)?;
        let mut functions = crate::sync::write(&self.functions, "the SQL functions");
        functions.live.remove(name);
        functions.dropped.insert(name.to_string());
        functions.generation += 1;
        tracing::info!(function = %name, "function dropped");
        Ok(())
    }

    /// The views whose definition calls function `name` (a call: the name, then `(`).
    fn function_readers(&self, store: &CatalogStore, name: &str) -> Vec<String> {
        store
            .objects()
            .iter()
            .filter(|o| o.kind == "view" && calls_function(&o.sql, name))
            .map(|o| o.name.clone())
            .collect()
    }

    /// Brings `ctx` up to date with the SQL functions, if they changed since `seen`.
    pub fn sync_functions(&self, ctx: &SessionContext, seen: &std::sync::atomic::AtomicU64) {
        use datafusion::execution::FunctionRegistry;
        let functions = crate::sync::read(&self.functions, "the SQL functions");
        if functions.generation == seen.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        for name in &functions.dropped {
            if ctx
                .udf(name)
                .is_ok_and(|f| crate::sql::functions::is_sql_function(&f))
            {
                ctx.deregister_udf(name);
            }
        }
        for (_, udf) in functions.live.values() {
            ctx.register_udf(udf.as_ref().clone());
        }
        seen.store(functions.generation, std::sync::atomic::Ordering::Release);
    }

    /// Refuses (2BP01) to drop `name` while views read it, unless `cascade`, which drops them.
    fn drop_dependents(&self, name: &str, kind: &str, cascade: bool) -> Result<()> {
        let sinks = self.sinks_of(name);
        if !sinks.is_empty() {
            if !cascade {
                return Err(Error::user(
                    sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                    format!(
                        "cannot drop {kind} {name} because sink {} reads it; use DROP … CASCADE",
                        sinks.join(", ")
                    ),
                ));
            }
            for sink in sinks {
                self.drop_sink(&sink, true)?;
            }
        }
        let dependents = self.views.dependents(name);
        if dependents.is_empty() {
            return Ok(());
        }
        if !cascade {
            let names: Vec<String> = dependents
                .iter()
                .map(|d| format!("materialized view {} depends on {kind} {name}", d.name))
                .collect();
            return Err(Error::user(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop {kind} {name} because other objects depend on it ({}); use DROP … CASCADE to drop the dependent objects too",
                    names.join(", ")
                ),
            ));
        }
        for dependent in dependents {
            self.drop_view(&dependent.name, true, true)?;
        }
        Ok(())
    }

    /// Whether a table or a view is called `name`.
    fn name_taken(&self, name: &str) -> bool {
        self.tables.get(name).is_some() || self.views.get(name).is_some()
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, CatalogStore> {
        crate::sync::lock(&self.store, "the catalog")
    }

    /// `CREATE TABLE`. Returns false when the table existed and `IF NOT EXISTS` was given.
    pub async fn create_table(
        &self,
        state: &SessionState,
        create: &CreateTable,
        clauses: TableClauses<'_>,
        text: &str,
    ) -> Result<bool> {
        let name = table_name(&create.name)?;
        if self.name_taken(&name) || self.lock_cdc_sources().contains_key(&name) {
            return if_not_exists(create.if_not_exists, &name);
        }
        if clauses.source
            && let Some(connector) = clauses.connector
            && connector
                .options
                .get("connector")
                .is_some_and(|c| c.eq_ignore_ascii_case("postgres-cdc"))
        {
            self.create_cdc_source(&name, connector, text).await?;
            return Ok(true);
        }
        let expanded = self.expand_cdc_table(clauses.connector)?;
        let mut clauses = clauses;
        if let Some(expanded) = &expanded {
            clauses.connector = Some(expanded);
        }
        let id = self.lock_store().next_id();
        let def = plan_create_table(state, create, clauses, id, text).await?;
        // A file source's path is checked now, so that a path outside the root (or matching
        // nothing) is this statement's error, not a failed source later.
        match def.connector.as_ref().map(|c| &c.kind) {
            Some(crate::connector::spec::SourceKind::File { path }) => {
                crate::connector::file::matching_files(&self.config.file_root(), path)?;
            }
            // PostgreSQL is reachable and has the table, with these columns and key.
            Some(crate::connector::spec::SourceKind::PostgresCdc(cdc)) => {
                // Two tables on one slot would each confirm the other's changes away.
                let slot = crate::connector::postgres::cdc::Names::of(cdc, &def).slot;
                let taken = self.tables.all().into_iter().any(|t| {
                    matches!(
                        t.def().connector.as_ref().map(|c| &c.kind),
                        Some(crate::connector::spec::SourceKind::PostgresCdc(other))
                            if crate::connector::postgres::cdc::Names::of(other, t.def()).slot == slot
                    )
                });
                if taken {
                    return Err(Error::user(
                        sqlstate::DUPLICATE_OBJECT,
                        format!("replication slot \"{slot}\" is another table's: give slot.name"),
                    ));
                }
                crate::connector::postgres::cdc::check_table(cdc, &def).await?;
            }
            _ => {}
        }
        let mut store = self.lock_store();
        // Another session may have created it while this one planned.
        if self.tables.get(&name).is_some() || store.next_id() != id {
            return Err(Error::user(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists or was created concurrently"),
            ));
        }
        let table = QueueTable::open(
            def,
            &self.tables_dir(),
            self.config.fsync,
            self.config.log_segment_size,
            Arc::clone(&self.commit_gate),
        )?;
        store.add(StoredObject {
            id,
            kind: "table".into(),
            name: name.clone(),
            sql: text.to_string(),
        })?;
        let table = Arc::new(table);
        self.tables.insert(Arc::clone(&table));
        drop(store);
        if table.def().connector.is_some() {
            self.start_source(table)?;
        }
        tracing::info!(table = %name, id, "table created");
        Ok(true)
    }

    fn lock_cdc_sources(&self) -> std::sync::MutexGuard<'_, CdcSources> {
        crate::sync::lock(&self.cdc_sources, "the CDC sources")
    }

    /// `CREATE SOURCE name WITH (connector = 'postgres-cdc', …)`: connection options that
    /// tables take with `FROM name TABLE 'schema.table'`. PostgreSQL must be reachable now.
    async fn create_cdc_source(
        &self,
        name: &str,
        connector: &crate::sql::parser::ConnectorClause,
        text: &str,
    ) -> Result<()> {
        let mut check = connector.clone();
        check
            .options
            .insert("table.name".into(), "pg_catalog.pg_class".into());
        let spec = crate::connector::spec::SourceSpec::parse(&check)?;
        let crate::connector::spec::SourceKind::PostgresCdc(cdc) = &spec.kind else {
            return Err(Error::internal("not a postgres-cdc source"));
        };
        crate::connector::postgres::cdc::check_server(cdc).await?;
        let mut store = self.lock_store();
        let id = store.next_id();
        store.add(StoredObject {
            id,
            kind: CDC_SOURCE_KIND.into(),
            name: name.to_string(),
            sql: text.to_string(),
        })?;
        drop(store);
        self.lock_cdc_sources()
            .insert(name.to_string(), (id, connector.options.clone()));
        tracing::info!(source = %name, "postgres-cdc source created");
        Ok(())
    }

    /// The clauses of `CREATE TABLE … FROM source TABLE 'schema.table'`: the shared source's
    /// options with the table's. `None` when the table names no shared source.
    fn expand_cdc_table(
        &self,
        connector: Option<&crate::sql::parser::ConnectorClause>,
    ) -> Result<Option<crate::sql::parser::ConnectorClause>> {
        use crate::sql::parser::{CDC_SOURCE_OPTION, CDC_TABLE_OPTION};
        let Some(connector) = connector else {
            return Ok(None);
        };
        let Some(source) = connector.options.get(CDC_SOURCE_OPTION) else {
            return Ok(None);
        };
        let sources = self.lock_cdc_sources();
        let Some((_, options)) = sources.get(source) else {
            return Err(Error::user(
                sqlstate::UNDEFINED_OBJECT,
                format!(
                    "source \"{source}\" does not exist (CREATE SOURCE {source} WITH (connector = 'postgres-cdc', …))"
                ),
            ));
        };
        let upstream = connector
            .options
            .get(CDC_TABLE_OPTION)
            .cloned()
            .unwrap_or_default();
        let (schema, table) = upstream
            .split_once('.')
            .map_or(("public", upstream.as_str()), |(s, t)| (s, t));
        let mut expanded = connector.clone();
        expanded.options = options.clone();
        for (key, value) in &connector.options {
            if key != CDC_SOURCE_OPTION && key != CDC_TABLE_OPTION {
                expanded.options.insert(key.clone(), value.clone());
            }
        }
        // One slot per table: a slot named on the source is each table's prefix.
        if !connector.options.contains_key("slot.name")
            && let Some(prefix) = options.get("slot.name")
        {
            let slot = crate::connector::postgres::cdc::slot_name(&format!("{prefix}_{table}"), 63);
            expanded.options.insert("slot.name".into(), slot);
        }
        expanded
            .options
            .insert("schema.name".into(), schema.to_string());
        expanded
            .options
            .insert("table.name".into(), table.to_string());
        expanded.options.remove("table");
        expanded.options.remove("schema");
        Ok(Some(expanded))
    }

    /// `DROP SOURCE` of a shared CDC source: refused while a table takes it, unless CASCADE.
    fn drop_cdc_source(&self, name: &str, cascade: bool) -> Result<bool> {
        let Some((id, _)) = self.lock_cdc_sources().get(name).cloned() else {
            return Ok(false);
        };
        let users: Vec<String> = self
            .lock_store()
            .objects()
            .iter()
            .filter(|o| o.kind == "table")
            .filter(|o| {
                parse_sql(&o.sql)
                    .ok()
                    .and_then(|s| s.into_iter().next())
                    .is_some_and(|s| {
                        s.connector.is_some_and(|c| {
                            c.options
                                .get(crate::sql::parser::CDC_SOURCE_OPTION)
                                .map(String::as_str)
                                == Some(name)
                        })
                    })
            })
            .map(|o| o.name.clone())
            .collect();
        if !users.is_empty() && !cascade {
            return Err(Error::user(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop source {name} because table {} takes it; use DROP … CASCADE",
                    users.join(", ")
                ),
            ));
        }
        for table in users {
            self.drop_table(&table, true, true)?;
        }
        self.lock_store().remove(id)?;
        self.lock_cdc_sources().remove(name);
        tracing::info!(source = %name, "postgres-cdc source dropped");
        Ok(true)
    }

    /// `DROP TABLE`: forgets the table and removes its log.
    pub fn drop_table(&self, name: &str, if_exists: bool, cascade: bool) -> Result<()> {
        if self.drop_cdc_source(name, cascade)? {
            return Ok(());
        }
        if self.tables.get(name).is_some() {
            self.drop_dependents(name, "table", cascade)?;
        }
        let mut store = self.lock_store();
        let Some(table) = self.tables.get(name) else {
            if if_exists {
                return Ok(());
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("table \"{name}\" does not exist"),
            ));
        };
        let id = table.def().id;
        store.remove(id)?;
        self.tables.remove(name);
        // What follows may wait (a thread to stop, PostgreSQL to drop a slot): not with the
        // catalog locked.
        drop(store);
        // Stops the connector's thread before its log goes.
        crate::sync::lock(&self.sources, "the running sources").remove(&id);
        if let Some(crate::connector::spec::SourceKind::PostgresCdc(cdc)) =
            table.def().connector.as_ref().map(|c| &c.kind)
        {
            // Its replication slot would keep PostgreSQL's WAL forever.
            crate::connector::postgres::cdc::drop_upstream(cdc, table.def());
        }
        let dir = self.tables_dir().join(id.to_string());
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(table = %name, dir = %dir.display(), error = %e, "could not remove the log of a dropped table");
        }
        tracing::info!(table = %name, id, "table dropped");
        Ok(())
    }
}

/// Shared CDC sources by name: catalog id and `WITH (…)` options.
type CdcSources = HashMap<String, (u32, std::collections::BTreeMap<String, String>)>;

/// The catalog kind of a shared CDC source.
const CDC_SOURCE_KIND: &str = "cdc_source";
const FUNCTION_KIND: &str = "function";
const TYPE_KIND: &str = "type";

/// The fields of a composite type `CREATE TYPE … AS (a int, b text)`: each field's type as the
/// session's planner reads it (so `VARCHAR(n)`, `JSONB`, `STRUCT<…>` and other composite types
/// may be fields).
async fn composite_fields(
    state: &SessionState,
    representation: Option<&datafusion::sql::sqlparser::ast::UserDefinedTypeRepresentation>,
) -> Result<datafusion::arrow::datatypes::Fields> {
    use datafusion::sql::sqlparser::ast::UserDefinedTypeRepresentation;
    let attributes = match representation {
        Some(UserDefinedTypeRepresentation::Composite { attributes }) => attributes,
        Some(UserDefinedTypeRepresentation::Enum { .. }) => {
            return Err(Error::unsupported(
                "CREATE TYPE … AS ENUM (Sluice has composite types: CREATE TYPE name AS (field type, …); a TEXT column with a CHECK is not supported either)",
            ));
        }
        _ => {
            return Err(Error::unsupported(
                "this form of CREATE TYPE (Sluice has composite types: CREATE TYPE name AS (field type, …))",
            ));
        }
    };
    if attributes.is_empty() {
        return Err(Error::user(
            sqlstate::SYNTAX_ERROR,
            "a composite type needs at least one field".to_string(),
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(attributes.len());
    for attribute in attributes {
        let name = crate::sql::ddl::ident_name(&attribute.name);
        if names.contains(&name) {
            return Err(Error::user(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{name}\" specified more than once"),
            ));
        }
        names.push(name);
    }
    let select = format!(
        "SELECT {}",
        attributes
            .iter()
            .enumerate()
            .map(|(i, a)| format!("CAST(NULL AS {}) AS c{i}", a.data_type))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let statement = parse_sql(&select)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::unsupported("an empty composite type"))?
        .statement;
    let plan = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement,
        )))
        .await?;
    let schema = plan.schema();
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            datafusion::arrow::datatypes::Field::new(
                name,
                schema.field(i).data_type().clone(),
                true,
            )
        })
        .collect())
}

/// Whether `sql` holds `name` as a word (an identifier, unquoted in any case or quoted as is).
fn names_word(sql: &str, name: &str) -> bool {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&crate::sql::dialect::SluiceDialect, sql).tokenize() else {
        // Text that no longer tokenizes cannot be told apart: count it as a user.
        return true;
    };
    tokens.iter().any(|t| match t {
        Token::Word(w) if w.quote_style.is_some() => w.value == name,
        Token::Word(w) => w.value.to_lowercase() == name,
        _ => false,
    })
}

/// Whether `sql` calls a function `name`: the name as a whole word (any case), then `(`.
fn calls_function(sql: &str, name: &str) -> bool {
    let sql = sql.to_lowercase();
    let name = name.to_lowercase();
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    sql.match_indices(&name).any(|(at, _)| {
        let before = sql[..at].chars().next_back();
        let after = sql[at + name.len()..].trim_start().chars().next();
        !before.is_some_and(word) && after == Some('(')
    })
}

/// What the catalog shows of a view.
fn view_entry(
    id: u32,
    name: &str,
    sql: &str,
    plan: &StreamPlan,
    emit_on_window_close: bool,
) -> Arc<ViewEntry> {
    let mut dependencies: Vec<String> = plan.sources.iter().map(|s| s.name().to_string()).collect();
    dependencies.sort();
    dependencies.dedup();
    Arc::new(ViewEntry {
        id,
        name: name.to_string(),
        schema: Arc::clone(&plan.schema),
        sql: sql.to_string(),
        dependencies,
        emit_on_window_close,
        append_only: plan.append_only,
    })
}

/// `CREATE … IF NOT EXISTS` of an existing name does nothing (`Ok(false)`); without it, 42P07.
fn if_not_exists(if_not_exists: bool, name: &str) -> Result<bool> {
    if if_not_exists {
        Ok(false)
    } else {
        Err(already_exists(name))
    }
}

/// 42P07 for `name`.
fn already_exists(name: &str) -> Error {
    Error::user(
        sqlstate::DUPLICATE_TABLE,
        format!("relation \"{name}\" already exists"),
    )
}

/// The runtime of ad-hoc queries: one memory pool for all of them (`--query-memory`), fair
/// among the operators that can spill, which spill to `<data_dir>/tmp/spill`.
fn query_runtime(config: &Config) -> Result<Arc<RuntimeEnv>> {
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let spill = config.data_dir.join("tmp").join("spill");
    std::fs::create_dir_all(&spill)
        .map_err(|e| Error::io(format!("spill directory {}: {e}", spill.display())))?;
    Ok(RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(config.query_memory)))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![spill])),
        )
        .build_arc()?)
}

/// Optimizes a view's plan. A scalar subquery becomes a join, also an uncorrelated one
/// (DataFusion would run that one once, before the query): a view re-evaluates it as its
/// inputs change.
fn optimize_for_stream(
    state: &SessionState,
    plan: &datafusion::logical_expr::LogicalPlan,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let mut state = state.clone();
    state
        .config_mut()
        .options_mut()
        .optimizer
        .enable_physical_uncorrelated_scalar_subquery = false;
    let plan = crate::planner::rewrite_distinct_on(plan.clone())?;
    let plan = crate::planner::rewrite_grouping_sets(plan)?;
    // `now()` stays the clock, not the time the view was created.
    let plan = crate::planner::mark_now(plan)?;
    Ok(state.optimize(&plan)?)
}
