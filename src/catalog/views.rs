//! [`ViewRegistry`]: the materialized views, and the contents the runtime last published for
//! them. The runtime publishes every view at once per epoch ([`Published`]), and a statement
//! pins one [`Published`] for all its scans, so that one `SELECT` sees every view at one epoch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;

use super::FIRST_USER_OID;
use crate::runtime::contents::ViewRows;

/// A materialized view as the catalog knows it.
#[derive(Debug)]
pub struct ViewEntry {
    /// Catalog id (shared with tables: ids are never reused).
    pub id: u32,
    /// Name.
    pub name: String,
    /// Output columns.
    pub schema: SchemaRef,
    /// The `CREATE MATERIALIZED VIEW` statement as the user wrote it.
    pub sql: String,
    /// Names of the tables and views it reads.
    pub dependencies: Vec<String>,
    /// `EMIT ON WINDOW CLOSE`: each window emitted once, final; the view is append-only.
    pub emit_on_window_close: bool,
    /// The view only ever inserts rows.
    pub append_only: bool,
}

impl ViewEntry {
    /// The PostgreSQL OID of the view, as `pg_class.oid`.
    pub fn oid(&self) -> u32 {
        FIRST_USER_OID + 2 * self.id
    }
}

/// One view's contents at one epoch.
#[derive(Debug, Clone)]
pub enum ViewSnapshot {
    /// The rows (shared with the runtime's chunks, not copied).
    Rows(Arc<ViewRows>),
    /// The view stopped on an error (a division by zero in its select list, a panic in an
    /// operator …): its SQLSTATE and message.
    Failed(&'static str, String),
}

/// Every view's contents at one epoch.
#[derive(Debug, Default)]
pub struct Published {
    /// The epoch (milliseconds since 1970 at its barrier, or one more than the last).
    pub epoch: u64,
    /// View id → contents.
    pub views: HashMap<u32, ViewSnapshot>,
    /// The live subscriptions, as of this epoch.
    pub subscriptions: Vec<SubscriptionInfo>,
    /// View id → the state its operators keep, as of this epoch.
    pub state: HashMap<u32, Vec<OperatorState>>,
    /// View id → each node of its graph with its rows in and out, as `EXPLAIN ANALYZE` shows.
    pub operators: HashMap<u32, Vec<crate::runtime::dataflow::OperatorStats>>,
}

/// State one operator keeps (one partition of it), as `sluice_state` shows it.
#[derive(Debug, Clone)]
pub struct OperatorState {
    /// 0 for the view's own rows (`Materialize`), then the keyed operators in depth-first
    /// order of the view's `EXPLAIN`.
    pub operator_id: u32,
    /// Its line of `EXPLAIN`.
    pub operator: String,
    /// The hash partition (`None`: the view's rows, which are not partitioned).
    pub partition: Option<u32>,
    /// Entries and bytes.
    pub size: crate::operator::StateSize,
}

/// A live subscription, as `sluice_subscriptions` shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    /// The view it follows (`None`: a view of its own, for `SUBSCRIBE (SELECT …)` or a table).
    pub view: Option<String>,
    /// The epoch it started at (or waits for, with a future `AS OF`).
    pub start_epoch: u64,
    /// Progress rows asked for.
    pub progress: bool,
    /// Epochs handed over but not read yet by the client.
    pub queued: usize,
    /// How many may queue before the subscriber is dropped.
    pub capacity: usize,
}

/// The views and their published contents.
#[derive(Debug, Default)]
pub struct ViewRegistry {
    views: RwLock<BTreeMap<String, Arc<ViewEntry>>>,
    published: RwLock<Arc<Published>>,
    /// The recovery this start made (if any), then the most recent checkpoints, oldest first.
    checkpoints: std::sync::Mutex<(
        Option<crate::state::CheckpointInfo>,
        std::collections::VecDeque<crate::state::CheckpointInfo>,
    )>,
    /// The running sinks, by name, as `sluice_sinks` shows them.
    sinks: std::sync::Mutex<BTreeMap<String, crate::connector::sink::SinkShown>>,
    /// What the runtime, checkpoints and server count as it happens.
    metrics: crate::metrics::Metrics,
    /// Views reading a backlog now, by id, as `sluice_progress` shows them.
    backfills: std::sync::Mutex<BTreeMap<u32, Backfill>>,
    /// Client connections by backend pid, as `pg_stat_activity` shows them.
    activity: std::sync::Mutex<BTreeMap<i32, Activity>>,
}

/// A client connection as `pg_stat_activity` shows it.
#[derive(Debug, Clone)]
pub struct Activity {
    /// The pid the connection was given (its cancel key's).
    pub pid: i32,
    /// The user it logged in as.
    pub user: String,
    /// Its `application_name` startup parameter.
    pub application_name: String,
    /// Where it connects from.
    pub client: std::net::SocketAddr,
    /// When its first statement came, ms since 1970.
    pub backend_start_ms: u64,
    /// When its current (or last) statement started.
    pub query_start_ms: Option<u64>,
    /// When `state` last changed.
    pub state_change_ms: u64,
    /// `active` while a statement runs, else `idle`.
    pub state: &'static str,
    /// The current (or last) statement's text.
    pub query: String,
}

/// A view reading a backlog of its sources' logs (a new view catching up, or a large write),
/// as `sluice_progress` shows it while the epoch that reads it runs.
#[derive(Debug, Clone)]
pub struct Backfill {
    /// The view.
    pub view: String,
    /// When the epoch reading it began, ms since 1970.
    pub started_at_ms: u64,
    /// Log records read so far (a record is one write: an `INSERT`, a `COPY` batch, a
    /// connector's batch).
    pub records_done: u64,
    /// Log records the epoch reads in all.
    pub records_total: u64,
    /// Rows in the records read so far.
    pub rows_done: u64,
}

/// Checkpoints `sluice_checkpoints` remembers.
const CHECKPOINTS_SHOWN: usize = 20;

impl ViewRegistry {
    /// The view called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<ViewEntry>> {
        self.read().get(name).cloned()
    }

    /// Every view, by name.
    pub fn all(&self) -> Vec<Arc<ViewEntry>> {
        self.read().values().cloned().collect()
    }

    /// Names of every view.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Adds a view.
    pub fn insert(&self, view: Arc<ViewEntry>) {
        crate::sync::write(&self.views, "the view registry").insert(view.name.clone(), view);
    }

    /// Removes a view.
    pub fn remove(&self, name: &str) -> Option<Arc<ViewEntry>> {
        crate::sync::write(&self.views, "the view registry").remove(name)
    }

    /// Views that read `name` directly.
    pub fn dependents(&self, name: &str) -> Vec<Arc<ViewEntry>> {
        self.read()
            .values()
            .filter(|v| v.dependencies.iter().any(|d| d == name))
            .cloned()
            .collect()
    }

    /// What the runtime, checkpoints and server count as it happens.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The contents of every view at the last completed epoch.
    pub fn published(&self) -> Arc<Published> {
        Arc::clone(&crate::sync::read_value(&self.published))
    }

    /// Replaces the published contents (the runtime, once per epoch).
    pub fn publish(&self, published: Published) {
        *crate::sync::write_value(&self.published) = Arc::new(published);
    }

    /// Remembers a completed checkpoint (the checkpoint thread).
    pub fn record_checkpoint(&self, info: crate::state::CheckpointInfo) {
        self.metrics.checkpoint_completed(&info);
        let mut shown = crate::sync::lock(&self.checkpoints, "the list of checkpoints");
        if info.kind == "recovery" {
            shown.0 = Some(info);
            return;
        }
        if shown.1.len() == CHECKPOINTS_SHOWN {
            shown.1.pop_front();
        }
        shown.1.push_back(info);
    }

    /// The recovery this start made, then the most recent checkpoints, oldest first.
    pub fn checkpoints(&self) -> Vec<crate::state::CheckpointInfo> {
        let shown = crate::sync::lock(&self.checkpoints, "the list of checkpoints");
        shown.0.iter().chain(shown.1.iter()).cloned().collect()
    }

    /// A connection ran its first statement: it shows in `pg_stat_activity` until it closes.
    pub fn connection_opened(&self, activity: Activity) {
        crate::sync::lock(&self.activity, "the activity").insert(activity.pid, activity);
    }

    /// The connection `pid` started running `query`.
    pub fn statement_started(&self, pid: i32, query: &str) {
        if let Some(a) = crate::sync::lock(&self.activity, "the activity").get_mut(&pid) {
            let now = crate::state::now_ms();
            a.state = "active";
            a.query_start_ms = Some(now);
            a.state_change_ms = now;
            // What pg_stat_activity shows of a statement is bounded, as PostgreSQL's
            // track_activity_query_size bounds it (1 KiB by default).
            a.query = query.chars().take(1024).collect();
        }
    }

    /// The connection `pid`'s statement ended.
    pub fn statement_ended(&self, pid: i32) {
        if let Some(a) = crate::sync::lock(&self.activity, "the activity").get_mut(&pid) {
            a.state = "idle";
            a.state_change_ms = crate::state::now_ms();
        }
    }

    /// The connection `pid` closed.
    pub fn connection_closed(&self, pid: i32) {
        crate::sync::lock(&self.activity, "the activity").remove(&pid);
    }

    /// Every connection that ran a statement, by pid.
    pub fn activity(&self) -> Vec<Activity> {
        crate::sync::lock(&self.activity, "the activity")
            .values()
            .cloned()
            .collect()
    }

    /// Shows (or, `None`, hides) a view's backlog in `sluice_progress`.
    pub fn show_backfill(&self, id: u32, backfill: Option<Backfill>) {
        let mut shown = crate::sync::lock(&self.backfills, "the backfills");
        match backfill {
            Some(b) => shown.insert(id, b),
            None => shown.remove(&id),
        };
    }

    /// The views reading a backlog now.
    pub fn backfills(&self) -> Vec<Backfill> {
        crate::sync::lock(&self.backfills, "the backfills")
            .values()
            .cloned()
            .collect()
    }

    /// Shows a running sink in `sluice_sinks`.
    pub fn show_sink(&self, name: &str, sink: crate::connector::sink::SinkShown) {
        crate::sync::lock(&self.sinks, "the list of sinks").insert(name.to_string(), sink);
    }

    /// A dropped sink leaves `sluice_sinks`.
    pub fn hide_sink(&self, name: &str) {
        crate::sync::lock(&self.sinks, "the list of sinks").remove(name);
    }

    /// The running sinks, by name.
    pub fn sinks(&self) -> Vec<(String, crate::connector::sink::SinkShown)> {
        crate::sync::lock(&self.sinks, "the list of sinks")
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<ViewEntry>>> {
        crate::sync::read(&self.views, "the view registry")
    }
}

/// The epoch a statement reads, set in its session config so that every scan agrees.
#[derive(Debug)]
pub struct PinnedEpoch(pub Arc<Published>);

/// A view as DataFusion scans it.
#[derive(Debug)]
pub struct ViewProvider {
    view: Arc<ViewEntry>,
    registry: Arc<ViewRegistry>,
}

impl ViewProvider {
    /// A provider for `view`.
    pub fn new(view: Arc<ViewEntry>, registry: Arc<ViewRegistry>) -> Self {
        Self { view, registry }
    }

    /// The view.
    pub fn view(&self) -> &Arc<ViewEntry> {
        &self.view
    }
}

#[async_trait]
impl TableProvider for ViewProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.view.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Equalities on the view's key are used to look rows up; DataFusion still applies
        // every filter to what the scan returns.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let published = match state.config().get_extension::<PinnedEpoch>() {
            Some(pinned) => Arc::clone(&pinned.0),
            None => self.registry.published(),
        };
        let batches = match published.views.get(&self.view.id) {
            Some(ViewSnapshot::Rows(rows)) => match key_values(rows, filters) {
                Some(keys) => match rows.lookup(&keys)? {
                    Some(found) => found,
                    None => rows.batches()?,
                },
                None => rows.batches()?,
            },
            Some(ViewSnapshot::Failed(code, message)) => {
                return Err(crate::error::Error::user(
                    code,
                    format!("materialized view \"{}\" failed: {message}", self.view.name),
                )
                .into());
            }
            None => Vec::new(),
        };
        MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())
            .map(|e| e as Arc<dyn ExecutionPlan>)
    }
}

/// Most keys one scan looks up (the product of the values given for each key column).
const MAX_LOOKUPS: usize = 1024;

/// The keys `filters` pin the view's key to, one array per key column: when each key column is
/// compared for equality with literals (`k = 42`, `k IN (1, 2)`), the combinations of them.
/// `None` when the filters do not pin every key column, or a column's type could compare equal
/// values unequal in bytes (floating point: `0.0 = -0.0`).
fn key_values(rows: &ViewRows, filters: &[Expr]) -> Option<Vec<ArrayRef>> {
    let key = rows.key()?;
    if key.is_empty() {
        return None;
    }
    let schema = rows.schema();
    let mut values: Vec<Option<Vec<ScalarValue>>> = vec![None; key.len()];
    for filter in filters {
        let Some((column, literals)) = equality(filter) else {
            continue;
        };
        let Ok(index) = schema.index_of(&column) else {
            continue;
        };
        let Some(k) = key.iter().position(|&c| c == index) else {
            continue;
        };
        let data_type = schema.field(index).data_type();
        if data_type.is_floating() {
            return None;
        }
        let mut cast = Vec::with_capacity(literals.len());
        for literal in literals {
            cast.push(literal.cast_to(data_type).ok()?);
        }
        // Two filters on one column: the values both allow.
        values[k] = Some(match values[k].take() {
            Some(earlier) => earlier.into_iter().filter(|v| cast.contains(v)).collect(),
            None => cast,
        });
    }
    let values: Vec<Vec<ScalarValue>> = values.into_iter().collect::<Option<_>>()?;
    let combinations = values
        .iter()
        .try_fold(1usize, |n, v| n.checked_mul(v.len()))?;
    if combinations > MAX_LOOKUPS {
        return None;
    }
    // Column k repeats each value once per combination of the columns after it.
    let mut columns = Vec::with_capacity(values.len());
    for (k, column) in values.iter().enumerate() {
        let inner: usize = values[k + 1..].iter().map(Vec::len).product();
        let outer = combinations / (inner * column.len()).max(1);
        let mut repeated = Vec::with_capacity(combinations);
        for _ in 0..outer {
            for value in column {
                repeated.extend(std::iter::repeat_n(value.clone(), inner));
            }
        }
        if repeated.is_empty() {
            columns.push(datafusion::arrow::array::new_empty_array(
                schema.field(key[k]).data_type(),
            ));
        } else {
            columns.push(ScalarValue::iter_to_array(repeated).ok()?);
        }
    }
    Some(columns)
}

/// `column = literal`, `literal = column` or `column IN (literals)`: the column's name and the
/// literals.
fn equality(filter: &Expr) -> Option<(String, Vec<ScalarValue>)> {
    match filter {
        Expr::BinaryExpr(b) if b.op == Operator::Eq => match (&*b.left, &*b.right) {
            (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
                Some((c.name.clone(), vec![v.clone()]))
            }
            _ => None,
        },
        Expr::InList(list) if !list.negated => {
            let Expr::Column(c) = &*list.expr else {
                return None;
            };
            let literals = list
                .list
                .iter()
                .map(|e| match e {
                    Expr::Literal(v, _) => Some(v.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some((c.name.clone(), literals))
        }
        _ => None,
    }
}
