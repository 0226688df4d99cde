//! The stream planner: a view's query, planned and optimized by DataFusion into a
//! [`LogicalPlan`], becomes a graph of incremental operators ([`Node`]). Each plan node maps to
//! one operator; a node with no incremental form is refused here with 0A000 and the name of
//! the construct, never run into a wrong answer later.
//!
//! Besides the operators, the planner follows event time through the plan ([`ColumnTime`]):
//! which columns are a table's watermarked time column, and which are window bounds computed
//! from it (`TUMBLE`, `HOP`). `EMIT ON WINDOW CLOSE` needs a group key that is such a window.

mod aggregate;
mod join;
mod over;
mod temporal;
mod time;

pub use aggregate::rewrite_grouping_sets;
pub use over::rewrite_distinct_on;
pub use temporal::mark_now;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DFSchema;
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Distinct, Expr, ExprSchemable, LogicalPlan};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};

use crate::catalog::views::{ViewEntry, ViewProvider};
use crate::connector::queue::provider::LookupProvider;
use crate::connector::queue::{QueueTable, QueueTableProvider};
use crate::error::{Error, Result};
use crate::operator::FilterProjectOperator;
use crate::runtime::dataflow::Node;

pub use time::ColumnTime;

/// What a view reads.
#[derive(Debug, Clone)]
pub enum SourceRef {
    /// A table's log.
    Table(Arc<QueueTable>),
    /// Another view's changes.
    View(Arc<ViewEntry>),
}

impl SourceRef {
    /// The relation's name.
    pub fn name(&self) -> &str {
        match self {
            SourceRef::Table(t) => &t.def().name,
            SourceRef::View(v) => &v.name,
        }
    }
}

/// A view's operator graph and what it reads.
#[derive(Debug)]
pub struct StreamPlan {
    /// The graph's output node.
    pub root: Node,
    /// The sources, in the order `Node::Source` indexes them.
    pub sources: Vec<SourceRef>,
    /// The output schema.
    pub schema: SchemaRef,
    /// The graph as `EXPLAIN` prints it.
    pub explain: String,
    /// The view only ever inserts rows (`EMIT ON WINDOW CLOSE`, or filters and projections
    /// of append-only input).
    pub append_only: bool,
    /// Output columns no two rows share the values of (a GROUP BY's keys), when known: the
    /// view's rows are indexed on them.
    pub key: Option<Vec<usize>>,
}

/// Plans `plan` (optimized) into an operator graph.
pub fn plan_view(
    plan: &LogicalPlan,
    parallelism: usize,
    emit_on_window_close: bool,
) -> Result<StreamPlan> {
    let mut planner = Planner {
        parallelism: parallelism.max(1),
        emit_on_window_close,
        sources: Vec::new(),
        aggregates: 0,
        windowed_close: 0,
        slicing: false,
        slice_failure: None,
        lookups: Vec::new(),
        closing_top_n: false,
    };
    temporal::check(plan)?;
    let planned = planner.plan(plan)?;
    // One operator closes windows: a window aggregate, or a window top-N with no aggregate.
    let closes = if planner.closing_top_n {
        planner.aggregates == 0
    } else {
        planner.aggregates == 1
    };
    if emit_on_window_close && (!closes || planner.windowed_close != 1) {
        return Err(Error::unsupported(
            "EMIT ON WINDOW CLOSE needs exactly one GROUP BY with a window (TUMBLE or HOP), or \
             one top-N per window (ROW_NUMBER() OVER (PARTITION BY window_start …) <= N), over \
             the time column of a table with a WATERMARK",
        ));
    }
    let names: Vec<String> = planner
        .sources
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    let mut explain = planned.node.explain(&names);
    if emit_on_window_close {
        explain = format!("EmitOnWindowClose\n{}", indent(&explain));
    }
    Ok(StreamPlan {
        schema: Arc::new(plan.schema().as_arrow().clone()),
        root: planned.node,
        sources: planner.sources,
        explain: format!("Materialize\n{}", indent(&explain)),
        append_only: emit_on_window_close || is_append_only(plan),
        key: unique_key(plan),
    })
}

/// The smallest set of output columns that DataFusion's functional dependencies say no two
/// rows share (an aggregate's group keys, a table's primary key carried through).
fn unique_key(plan: &LogicalPlan) -> Option<Vec<usize>> {
    use datafusion::common::Dependency;
    let columns = plan.schema().fields().len();
    plan.schema()
        .functional_dependencies()
        .iter()
        .filter(|d| d.mode == Dependency::Single && d.target_indices.len() == columns)
        .map(|d| d.source_indices.clone())
        .filter(|key| !key.is_empty() && key.iter().all(|&i| i < columns))
        .min_by_key(Vec::len)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect::<String>()
}

/// A planned subtree and the event-time role of each of its output columns.
struct Planned {
    node: Node,
    times: Vec<ColumnTime>,
}

struct Planner {
    parallelism: usize,
    emit_on_window_close: bool,
    sources: Vec<SourceRef>,
    /// Aggregates planned, and how many of them close windows.
    aggregates: usize,
    windowed_close: usize,
    /// Planning the input of a window aggregate that may slice: `HOP` becomes the slice start
    /// of each row instead of one row per window.
    slicing: bool,
    /// Why slicing cannot be used here (the input is then planned again without it).
    slice_failure: Option<String>,
    /// Sources read as a temporal join's versioned table (`FOR SYSTEM_TIME AS OF PROCTIME()`).
    lookups: Vec<usize>,
    /// A window top-N emits on window close (`EMIT ON WINDOW CLOSE` without a window
    /// aggregate).
    closing_top_n: bool,
}

fn refuse(construct: &str) -> Error {
    Error::unsupported(format!(
        "{construct} is not supported in a materialized view"
    ))
}

/// A `FilterProject` keeping the rows of `input` (of `schema`) where `predicate` holds.
fn filter_node(predicate: &Expr, schema: &DFSchema, input: Planned) -> Result<Planned> {
    let columns = (0..schema.fields().len())
        .map(|i| physical(&Expr::Column(schema.columns()[i].clone()), schema))
        .collect::<Result<Vec<_>>>()?;
    Ok(Planned {
        node: Node::FilterProject {
            stats: Default::default(),
            label: pretty(&format!("Filter: {predicate}")),
            operator: FilterProjectOperator::new(
                Some(physical(predicate, schema)?),
                columns,
                Arc::new(schema.as_arrow().clone()),
            ),
            input: Box::new(input.node),
        },
        times: input.times,
    })
}

/// A physical expression over `schema`.
fn physical(expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(create_physical_expr(
        expr,
        schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )?)
}

impl Planner {
    fn plan(&mut self, plan: &LogicalPlan) -> Result<Planned> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                if scan.fetch.is_some() {
                    return Err(refuse("LIMIT"));
                }
                let provider = source_as_provider(&scan.source)?;
                let (source, watermark_column) =
                    if let Some(table) = provider.downcast_ref::<QueueTableProvider>() {
                        let table = Arc::clone(table.table());
                        let column = table.def().watermark.as_ref().map(|w| w.column);
                        (SourceRef::Table(table), column)
                    } else if let Some(lookup) = provider.downcast_ref::<LookupProvider>() {
                        // A temporal join's versioned table: its changes update the join's
                        // state; only the other side's rows make output.
                        self.lookups.push(self.sources.len());
                        (SourceRef::Table(Arc::clone(lookup.table())), None)
                    } else if let Some(view) = provider.downcast_ref::<ViewProvider>() {
                        (SourceRef::View(Arc::clone(view.view())), None)
                    } else {
                        return Err(refuse(&format!(
                            "reading the system relation \"{}\"",
                            scan.table_name
                        )));
                    };
                let index = self.sources.len();
                self.sources.push(source);
                let columns: Vec<usize> = match &scan.projection {
                    Some(p) => p.clone(),
                    None => (0..provider.schema().fields().len()).collect(),
                };
                let times = columns
                    .iter()
                    .map(|&c| {
                        if Some(c) == watermark_column {
                            ColumnTime::EventTime
                        } else {
                            ColumnTime::Plain
                        }
                    })
                    .collect();
                let schema: SchemaRef = Arc::new(scan.projected_schema.as_arrow().clone());
                let node = Node::Source {
                    stats: Default::default(),
                    source: index,
                    projection: scan.projection.clone(),
                    schema: Arc::clone(&schema),
                };
                if scan.filters.is_empty() {
                    return Ok(Planned { node, times });
                }
                let predicate = scan
                    .filters
                    .iter()
                    .cloned()
                    .reduce(datafusion::logical_expr::and)
                    .expect("filters are not empty");
                filter_node(
                    &predicate,
                    scan.projected_schema.as_ref(),
                    Planned { node, times },
                )
            }
            LogicalPlan::Projection(projection) => {
                let input = self.plan(&projection.input)?;
                self.plan_projection(projection, input)
            }
            LogicalPlan::Filter(filter) => {
                let input = match filter.input.as_ref() {
                    LogicalPlan::Window(window)
                        if let Some(range) = over::rank_filter(window, &filter.predicate) =>
                    {
                        over::plan_top_n(self, window, range)?
                    }
                    // `SELECT a, rn FROM (SELECT *, row_number() … AS rn …) WHERE rn <= N`: a
                    // projection that keeps the rank column between the filter and the window.
                    LogicalPlan::Projection(projection)
                        if let LogicalPlan::Window(window) = projection.input.as_ref()
                            && over::keeps_rank_column(projection, window)
                            && let Some(range) = over::rank_filter(window, &filter.predicate) =>
                    {
                        let top = over::plan_top_n(self, window, range)?;
                        self.plan_projection(projection, top)?
                    }
                    other => self.plan(other)?,
                };
                let schema = filter.input.schema();
                if self.slicing && time::reads_slice(&filter.predicate, &input.times, schema) {
                    self.slice_failure = Some("a filter on a window column".into());
                }
                // `now()` compared with the row: rows leave (or enter) as the clock moves.
                if let Some((bounds, rest)) = temporal::split(&filter.predicate, schema)? {
                    if self.slicing {
                        self.slice_failure = Some("a temporal filter".into());
                    }
                    let input = match rest {
                        Some(rest) => filter_node(&rest, schema, input)?,
                        None => input,
                    };
                    return temporal::plan_temporal_filter(
                        self,
                        bounds,
                        &filter.predicate,
                        schema,
                        input,
                    );
                }
                filter_node(&filter.predicate, schema, input)
            }
            LogicalPlan::SubqueryAlias(alias) => self.plan(&alias.input),
            LogicalPlan::Aggregate(agg) => {
                self.aggregates += 1;
                if self.slicing {
                    self.slice_failure = Some("an aggregate below the window".into());
                } else if (self.emit_on_window_close || is_append_only(&agg.input))
                    && let Some(planned) = aggregate::plan_sliced(self, agg)?
                {
                    return Ok(planned);
                }
                let input = self.plan(&agg.input)?;
                if aggregate::has_session(agg) {
                    return aggregate::plan_session(self, agg, input);
                }
                aggregate::plan_aggregate(self, agg, input)
            }
            LogicalPlan::Distinct(Distinct::All(input_plan)) => {
                if self.slicing {
                    self.slice_failure = Some("DISTINCT below the window".into());
                }
                let input = self.plan(input_plan)?;
                self.aggregates += 1;
                aggregate::plan_distinct(self, input_plan, input)
            }
            LogicalPlan::Distinct(Distinct::On(_)) => Err(refuse(
                "DISTINCT ON here (it is planned as a top-1 per key before optimizing)",
            )),
            LogicalPlan::Unnest(unnest) => {
                let input = self.plan(&unnest.input)?;
                if unnest.list_type_columns.len() != 1 || !unnest.struct_type_columns.is_empty() {
                    return Err(refuse(
                        "unnest of more than one list column, or of a struct",
                    ));
                }
                let (list_column, list) = &unnest.list_type_columns[0];
                if list.depth != 1 {
                    return Err(refuse("recursive unnest"));
                }
                if let Some(ColumnTime::Slice { .. }) = input.times.get(*list_column) {
                    // Sliced: each row already carries its one slice; no unnest.
                    let in_schema = unnest.input.schema();
                    let columns = unnest
                        .dependency_indices
                        .iter()
                        .map(|&i| {
                            physical(&Expr::Column(in_schema.columns()[i].clone()), in_schema)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let times = unnest
                        .dependency_indices
                        .iter()
                        .map(|&i| input.times[i])
                        .collect();
                    return Ok(Planned {
                        node: Node::FilterProject {
                            stats: Default::default(),
                            input: Box::new(input.node),
                            operator: FilterProjectOperator::new(
                                None,
                                columns,
                                Arc::new(unnest.schema.as_arrow().clone()),
                            ),
                            label: "Slice: one row per event, in its slice".into(),
                        },
                        times,
                    });
                }
                let times = unnest
                    .dependency_indices
                    .iter()
                    .map(|&i| match input.times.get(i) {
                        Some(ColumnTime::HopList {
                            size, event_time, ..
                        }) if i == *list_column => ColumnTime::Window {
                            end_offset: *size,
                            event_time: *event_time,
                        },
                        Some(t) if i != *list_column => *t,
                        _ => ColumnTime::Plain,
                    })
                    .collect();
                Ok(Planned {
                    node: Node::Unnest {
                        stats: Default::default(),
                        input: Box::new(input.node),
                        list_column: *list_column,
                        sources: unnest.dependency_indices.clone(),
                        preserve_nulls: unnest.options.preserve_nulls(),
                        schema: Arc::new(unnest.schema.as_arrow().clone()),
                    },
                    times,
                })
            }
            LogicalPlan::Union(union) => {
                if self.slicing {
                    self.slice_failure = Some("UNION below the window".into());
                }
                let mut nodes = Vec::with_capacity(union.inputs.len());
                for input in &union.inputs {
                    nodes.push(self.plan(input)?.node);
                }
                Ok(Planned {
                    times: vec![ColumnTime::Plain; union.schema.fields().len()],
                    node: Node::Union {
                        stats: Default::default(),
                        inputs: nodes,
                        schema: Arc::new(union.schema.as_arrow().clone()),
                    },
                })
            }
            LogicalPlan::Sort(sort) => match sort.fetch {
                Some(fetch) => over::plan_sort_fetch(self, sort, fetch),
                // A view's rows have no order: ORDER BY alone changes nothing.
                None => self.plan(&sort.input),
            },
            LogicalPlan::Limit(limit) => over::plan_limit_node(self, limit),
            LogicalPlan::Join(j) => join::plan_join(self, j),
            LogicalPlan::Window(window) => over::plan_functions(self, window),
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => {
                Err(refuse("a query without a table (constant rows)"))
            }
            LogicalPlan::RecursiveQuery(_) => Err(refuse("WITH RECURSIVE")),
            LogicalPlan::Subquery(_) => Err(refuse("a subquery in an expression")),
            other => Err(refuse(&format!("the plan node {}", other.display()))),
        }
    }
}

impl Planner {
    /// A projection over its planned input.
    fn plan_projection(
        &mut self,
        projection: &datafusion::logical_expr::Projection,
        input: Planned,
    ) -> Result<Planned> {
        let in_schema = projection.input.schema();
        let mut times: Vec<ColumnTime> = projection
            .expr
            .iter()
            .map(|e| time::expr_time(e, &input.times, in_schema))
            .collect();
        let mut schema = projection.schema.as_arrow().clone();
        let mut exprs = Vec::with_capacity(projection.expr.len());
        let mut names: Vec<String> = projection
            .expr
            .iter()
            .map(|e| e.schema_name().to_string())
            .collect();
        for (i, e) in projection.expr.iter().enumerate() {
            if self.slicing {
                // Closing windows needs them on the watermarked time; updating does not.
                if let ColumnTime::HopList {
                    slide,
                    size,
                    event_time,
                } = times[i]
                    && (event_time || !self.emit_on_window_close)
                    && let Some(slice) = slice_expr(e, slide, size)
                {
                    // The row's slice start instead of the list of its windows.
                    let slice_type = slice.get_type(in_schema)?;
                    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
                    fields[i] = Arc::new(fields[i].as_ref().clone().with_data_type(slice_type));
                    schema = datafusion::arrow::datatypes::Schema::new(fields);
                    times[i] = ColumnTime::Slice {
                        slide,
                        size,
                        offset: 0,
                    };
                    names[i] = format!("{slice} AS slice");
                    exprs.push(physical(&slice, in_schema)?);
                    continue;
                }
                if !matches!(times[i], ColumnTime::Slice { .. })
                    && time::reads_slice(e, &input.times, in_schema)
                {
                    self.slice_failure = Some(format!("{e} reads a window column"));
                }
            }
            exprs.push(physical(e, in_schema)?);
        }
        let label = pretty(&format!("Project: {}", names.join(", ")));
        Ok(Planned {
            node: Node::FilterProject {
                stats: Default::default(),
                input: Box::new(input.node),
                operator: FilterProjectOperator::new(None, exprs, Arc::new(schema)),
                label,
            },
            times,
        })
    }
}

/// Whether `plan` only ever inserts: it reads append-only tables and append-only views
/// (`EMIT ON WINDOW CLOSE`) through filters, projections, unnests and unions.
pub(crate) fn is_append_only(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => match source_as_provider(&scan.source) {
            Ok(provider) => {
                if let Some(table) = provider.downcast_ref::<QueueTableProvider>() {
                    table.table().def().append_only
                } else if let Some(view) = provider.downcast_ref::<ViewProvider>() {
                    view.view().emit_on_window_close
                } else {
                    false
                }
            }
            Err(_) => false,
        },
        LogicalPlan::Projection(p) => is_append_only(&p.input),
        // A temporal filter retracts rows as the clock passes them.
        LogicalPlan::Filter(f) => !temporal::reads_now(&f.predicate) && is_append_only(&f.input),
        LogicalPlan::SubqueryAlias(a) => is_append_only(&a.input),
        LogicalPlan::Sort(s) if s.fetch.is_none() => is_append_only(&s.input),
        LogicalPlan::Unnest(u) => is_append_only(&u.input),
        LogicalPlan::Union(u) => u.inputs.iter().all(|i| is_append_only(i)),
        _ => false,
    }
}

/// For `sluice_hop_starts(ts, slide, size)`: `sluice_tumble(ts, gcd(slide, size))`, the start
/// of the row's slice.
fn slice_expr(expr: &Expr, slide: i64, size: i64) -> Option<Expr> {
    let inner = match expr {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::ScalarFunction(f) = inner else {
        return None;
    };
    if f.func.name() != crate::sql::windows::HOP_FUNCTION {
        return None;
    }
    let width = crate::operator::sliced_window::slice_width(slide, size);
    let tumble = Arc::new(crate::sql::windows::tumble_udf());
    Some(Expr::ScalarFunction(
        datafusion::logical_expr::expr::ScalarFunction::new_udf(
            tumble,
            vec![
                f.args.first()?.clone(),
                Expr::Literal(
                    datafusion::common::ScalarValue::IntervalMonthDayNano(Some(
                        datafusion::arrow::datatypes::IntervalMonthDayNano::new(0, 0, width),
                    )),
                    None,
                ),
            ],
        ),
    ))
}

/// An expression as `EXPLAIN` shows it: DataFusion's rendering with our internal spellings
/// turned back into SQL (`INTERVAL '10' SECOND`, `TUMBLE(…)`, `HOP(…)`, `count(*)`).
pub(crate) fn pretty(text: &str) -> String {
    use std::sync::LazyLock;
    static INTERVAL: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r#"IntervalMonthDayNano\("IntervalMonthDayNano \{ months: 0, days: (\d+), nanoseconds: (\d+) \}"\)"#,
        )
        .expect("valid regex")
    });
    // `ts - INTERVAL '10' SECOND` is planned as a duration (`pg_semantics`); shown as written.
    static DURATION: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r#"DurationNanosecond\("(-?\d+)"\)"#).expect("valid regex")
    });
    let interval = |nanos: i64| {
        if nanos % 1_000_000_000 == 0 {
            format!("INTERVAL '{}' SECOND", nanos / 1_000_000_000)
        } else {
            format!("INTERVAL '{}' MILLISECOND", nanos / 1_000_000)
        }
    };
    let text = INTERVAL.replace_all(text, |c: &regex::Captures<'_>| {
        let days: i64 = c[1].parse().unwrap_or(0);
        interval(c[2].parse().unwrap_or(0) + days * 86_400_000_000_000)
    });
    let text = DURATION.replace_all(&text, |c: &regex::Captures<'_>| {
        interval(c[1].parse().unwrap_or(0))
    });
    text.replace("count(Int64(1))", "count(*)")
        .replace("__unnest_placeholder(", "unnest(")
        .replace(crate::sql::windows::TUMBLE_FUNCTION, "TUMBLE")
        .replace(crate::sql::windows::HOP_FUNCTION, "HOP")
}
