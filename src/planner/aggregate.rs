//! `GROUP BY` and `DISTINCT` into [`GroupAggregateOperator`]s, one per worker partition.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, ExprSchemable, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;

use super::{ColumnTime, Planned, Planner, physical, refuse};
use crate::error::{Error, Result};
use crate::operator::session::{SESSION_COLUMN, SessionWindowAggregate};
use crate::operator::sliced_window::{GroupColumn, SliceAggregate, SlicedWindowAggregate};
use crate::operator::{
    AggregateCall, AggregateKind, DataFusionAggregate, GroupAggregateOperator, KeyedOperator,
    WindowKey,
};
use crate::runtime::dataflow::Node;

pub(super) fn strip_alias(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(a) => strip_alias(&a.expr),
        e => e,
    }
}

fn is_decimal(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
    )
}

/// A keyed node: one operator per hash partition of the keys (one without keys), each made by
/// `make`.
pub(super) fn keyed(
    planner: &Planner,
    input: Node,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    label: String,
    mut make: impl FnMut() -> Result<Box<dyn KeyedOperator>>,
) -> Result<Node> {
    let partitions = if keys.is_empty() {
        1
    } else {
        planner.parallelism
    };
    Ok(Node::Keyed {
        stats: Default::default(),
        inputs: vec![input],
        keys: vec![keys],
        partitions: (0..partitions).map(|_| make()).collect::<Result<_>>()?,
        hasher: datafusion::common::hash_utils::RandomState::with_seed(0),
        label,
    })
}

/// An aggregate node as `EXPLAIN` shows it.
fn label(kind: &str, agg: &Aggregate, extra: &str) -> String {
    let names = |exprs: &[Expr]| {
        exprs
            .iter()
            .map(|e| e.schema_name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    super::pretty(&format!(
        "{kind}: keys=[{}] aggregates=[{}]{extra}",
        names(&agg.group_expr),
        names(&agg.aggr_expr)
    ))
}

/// An aggregate DataFusion keeps, by its accumulators (see [`DataFusionAggregate`]). Over
/// input that retracts (`retracting`), one whose accumulator cannot remove any value it was
/// given is refused, naming it.
fn datafusion_call(
    expr: &Expr,
    input: &datafusion::common::DFSchema,
    retracting: bool,
) -> Result<AggregateCall> {
    let datafusion::physical_expr::aggregate::LoweredAggregate {
        aggregate, filter, ..
    } = datafusion::physical_expr::aggregate::LoweredAggregateBuilder::new(
        expr,
        input,
        input.as_arrow(),
        &datafusion::execution::context::ExecutionProps::new(),
        &Default::default(),
    )
    .build()?;
    let name = aggregate.fun().name().to_ascii_lowercase();
    if retracting
        && (!DataFusionAggregate::retracts_exactly(&name, aggregate.is_distinct())
            || aggregate.create_sliding_accumulator().is_err())
    {
        let distinct = if aggregate.is_distinct() {
            "(DISTINCT …)"
        } else {
            ""
        };
        return Err(Error::unsupported(format!(
            "the aggregate {name}{distinct} cannot be maintained over input that updates or \
             deletes rows (it is accepted over append-only input: an APPEND ONLY table, a \
             source, or a window closed by EMIT ON WINDOW CLOSE)"
        )));
    }
    Ok(AggregateCall {
        kind: AggregateKind::DataFusion(Arc::new(DataFusionAggregate {
            expr: aggregate,
            filter,
            retracting,
        })),
        argument: None,
        argument_type: DataType::Null,
    })
}

/// One aggregate expression of the plan as an [`AggregateCall`] over `input`: one Sluice keeps
/// itself where it has one (they retract any row, and MIN/MAX keep counts per value), any other
/// by DataFusion's accumulators.
fn aggregate_call(
    expr: &Expr,
    input: &datafusion::common::DFSchema,
    retracting: bool,
) -> Result<AggregateCall> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = strip_alias(expr) else {
        return Err(refuse(&format!("the aggregate expression {expr}")));
    };
    let name = func.name().to_ascii_lowercase();
    let datafusion = || datafusion_call(expr, input, retracting);
    // `agg(x) FILTER (WHERE p)` is `agg(CASE WHEN p THEN x END)`: every aggregate here skips
    // NULLs, and `count(*)` counts `CASE WHEN p THEN 1 END`.
    let filtered = match &params.filter {
        None => None,
        Some(p) => {
            let value = params
                .args
                .first()
                .cloned()
                .unwrap_or(Expr::Literal(ScalarValue::Int64(Some(1)), None));
            Some(datafusion::logical_expr::when(p.as_ref().clone(), value).end()?)
        }
    };
    let argument = filtered.as_ref().or(params.args.first());
    let argument_type = match argument {
        Some(a) => a.get_type(input)?,
        None => DataType::Null,
    };
    let kind = match (name.as_str(), params.distinct) {
        ("count", false) => {
            if argument.is_none() {
                AggregateKind::CountStar
            } else {
                AggregateKind::Count
            }
        }
        ("count", true) if params.args.len() == 1 => AggregateKind::CountDistinct,
        ("sum" | "avg", true) => return datafusion(),
        ("sum", false) if matches!(argument_type, DataType::Decimal128(..)) => AggregateKind::Sum,
        ("sum" | "avg", false) if is_decimal(&argument_type) => return datafusion(),
        ("sum", false) => AggregateKind::Sum,
        ("avg", false) => AggregateKind::Avg,
        ("min", _) => AggregateKind::Min,
        ("max", _) => AggregateKind::Max,
        ("bool_and", _) => AggregateKind::BoolAnd,
        ("bool_or", _) => AggregateKind::BoolOr,
        ("string_agg", false) => {
            let separator = match params.args.get(1).map(strip_alias) {
                Some(Expr::Literal(
                    ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s),
                    _,
                )) => s.clone().unwrap_or_default(),
                _ => return datafusion(),
            };
            // The view keeps values ordered; an ORDER BY on the value itself is that order.
            match params.order_by.as_slice() {
                [] => {}
                [sort] if sort.asc && Some(&sort.expr) == params.args.first() => {}
                _ => return datafusion(),
            }
            AggregateKind::StringAgg(separator)
        }
        _ => return datafusion(),
    };
    let argument = match (&kind, argument) {
        (AggregateKind::CountStar, _) | (_, None) => None,
        (_, Some(a)) => Some(physical(a, input)?),
    };
    Ok(AggregateCall {
        kind,
        argument,
        argument_type,
    })
}

pub(super) fn plan_aggregate(
    planner: &mut Planner,
    agg: &Aggregate,
    input: Planned,
) -> Result<Planned> {
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Err(refuse("GROUPING SETS, ROLLUP or CUBE"));
    }
    let in_schema = agg.input.schema();
    let keys = agg
        .group_expr
        .iter()
        .map(|e| physical(e, in_schema))
        .collect::<Result<Vec<_>>>()?;
    let key_types = agg
        .group_expr
        .iter()
        .map(|e| e.get_type(in_schema))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let key_times: Vec<ColumnTime> = agg
        .group_expr
        .iter()
        .map(|e| super::time::expr_time(e, &input.times, in_schema))
        .collect();
    let window = key_times.iter().enumerate().find_map(|(key, t)| match t {
        ColumnTime::Window {
            end_offset,
            event_time: true,
        } => Some(WindowKey {
            key,
            end_offset: *end_offset,
        }),
        _ => None,
    });
    let close = if planner.emit_on_window_close {
        window
    } else {
        None
    };
    if close.is_some() {
        planner.windowed_close += 1;
    }
    let schema = Arc::new(agg.schema.as_arrow().clone());
    let append_only = super::is_append_only(&agg.input);
    let mut times = key_times;
    times.extend(std::iter::repeat_n(ColumnTime::Plain, agg.aggr_expr.len()));
    // Over append-only input no change reaches a window the watermark passed: an updating
    // window aggregate frees it then.
    let expire = if close.is_none() && append_only {
        window
    } else {
        None
    };
    let label = if close.is_some() {
        label("WindowAggregate", agg, " emit=on-window-close")
    } else if expire.is_some() {
        label("WindowAggregate", agg, " emit=on-update free=on-watermark")
    } else {
        label("GroupAggregate", agg, "")
    };
    let make = || {
        let calls = agg
            .aggr_expr
            .iter()
            .map(|e| aggregate_call(e, in_schema, !append_only))
            .collect::<Result<Vec<_>>>()?;
        let mut op = GroupAggregateOperator::new(
            keys.clone(),
            key_types.clone(),
            calls,
            Arc::clone(&schema),
        )
        .map_err(Error::from)?;
        if let Some(w) = close {
            op = op.with_emit_on_window_close(w);
        } else if let Some(w) = expire {
            op = op.with_window_expiry(w);
        }
        if append_only {
            op = op.with_append_only_input();
        }
        Ok(Box::new(op) as Box<dyn KeyedOperator>)
    };
    Ok(Planned {
        node: keyed(planner, input.node, keys.clone(), label, make)?,
        times,
    })
}

pub(super) fn plan_distinct(
    planner: &mut Planner,
    input_plan: &LogicalPlan,
    input: Planned,
) -> Result<Planned> {
    let schema = input_plan.schema();
    let group_expr: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
    let agg = Aggregate::try_new(Arc::new(input_plan.clone()), group_expr, Vec::new())?;
    plan_aggregate(planner, &agg, input)
}

/// The sliced form of an aggregate's function, when its partial states merge simply.
fn slice_kind(expr: &Expr, input: &datafusion::common::DFSchema) -> Option<SliceAggregate> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = strip_alias(expr) else {
        return None;
    };
    if params.filter.is_some() || params.distinct && func.name() != "min" && func.name() != "max" {
        return None;
    }
    let argument_type = match params.args.first() {
        Some(a) => a.get_type(input).ok()?,
        None => DataType::Null,
    };
    let int = argument_type.is_integer() || matches!(argument_type, DataType::Timestamp(..));
    let float = matches!(argument_type, DataType::Float32 | DataType::Float64);
    Some(match (func.name(), params.args.len()) {
        ("count", 0) => SliceAggregate::CountStar,
        ("count", _) if matches!(params.args[0], Expr::Literal(ref v, _) if !v.is_null()) => {
            SliceAggregate::CountStar
        }
        ("count", _) => SliceAggregate::Count,
        ("sum", _) if argument_type.is_integer() => SliceAggregate::SumInt,
        ("sum", _) if float => SliceAggregate::SumFloat,
        ("min", _) if int => SliceAggregate::MinInt,
        ("max", _) if int => SliceAggregate::MaxInt,
        ("min", _) if float => SliceAggregate::MinFloat,
        ("max", _) if float => SliceAggregate::MaxFloat,
        _ => return None,
    })
}

/// `EMIT ON WINDOW CLOSE` over `HOP`: plans the input with slicing (one row per event, in its
/// slice) and a [`SlicedWindowAggregate`] on top. `None` when the query does not fit (another
/// aggregate function, a filter on the window, …): the caller plans it the general way.
pub(super) fn plan_sliced(planner: &mut Planner, agg: &Aggregate) -> Result<Option<Planned>> {
    let in_schema = agg.input.schema();
    let Some(kinds) = agg
        .aggr_expr
        .iter()
        .map(|e| slice_kind(e, in_schema))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Ok(None);
    }
    let sources_before = planner.sources.len();
    planner.slicing = true;
    planner.slice_failure = None;
    let input = planner.plan(&agg.input);
    planner.slicing = false;
    let give_up = |planner: &mut Planner| {
        planner.sources.truncate(sources_before);
        planner.lookups.retain(|&i| i < sources_before);
        planner.slice_failure = None;
    };
    let input = match input {
        Ok(input) if planner.slice_failure.is_none() => input,
        Ok(_) => {
            give_up(planner);
            return Ok(None);
        }
        Err(e) => {
            give_up(planner);
            return Err(e);
        }
    };
    let mut keys = Vec::new();
    let mut key_types = Vec::new();
    let mut group_columns = Vec::new();
    let mut window: Option<(i64, i64, Arc<dyn datafusion::physical_expr::PhysicalExpr>)> = None;
    let mut times = Vec::new();
    for e in &agg.group_expr {
        match super::time::expr_time(e, &input.times, in_schema) {
            ColumnTime::Slice {
                slide,
                size,
                offset,
            } => {
                if offset == 0 && window.is_none() {
                    window = Some((slide, size, physical(e, in_schema)?));
                }
                group_columns.push(GroupColumn::Window(offset));
                times.push(ColumnTime::Window {
                    end_offset: size - offset,
                    event_time: true,
                });
            }
            _ if super::time::reads_slice(e, &input.times, in_schema) => {
                give_up(planner);
                return Ok(None);
            }
            _ => {
                group_columns.push(GroupColumn::Key(keys.len()));
                key_types.push(e.get_type(in_schema)?);
                keys.push(physical(e, in_schema)?);
                times.push(ColumnTime::Plain);
            }
        }
    }
    let Some((slide, size, time)) = window else {
        give_up(planner);
        return Ok(None);
    };
    let mut aggregates = Vec::with_capacity(kinds.len());
    for (kind, e) in kinds.into_iter().zip(&agg.aggr_expr) {
        let argument = match (kind, strip_alias(e)) {
            (SliceAggregate::CountStar, _) => None,
            (_, Expr::AggregateFunction(f)) => match f.params.args.first() {
                Some(a) => Some(physical(a, in_schema)?),
                None => None,
            },
            _ => None,
        };
        aggregates.push((kind, argument));
    }
    times.extend(std::iter::repeat_n(ColumnTime::Plain, agg.aggr_expr.len()));
    let schema = Arc::new(agg.schema.as_arrow().clone());
    if planner.emit_on_window_close {
        planner.windowed_close += 1;
    }
    let label = label(
        "SlicedWindowAggregate",
        agg,
        &format!(
            " slide={}ms size={}ms{}",
            slide / 1_000_000,
            size / 1_000_000,
            if planner.emit_on_window_close {
                " emit=on-window-close"
            } else {
                ""
            }
        ),
    );
    let updating = !planner.emit_on_window_close;
    let make = || {
        let operator = SlicedWindowAggregate::new(
            keys.clone(),
            key_types.clone(),
            Arc::clone(&time),
            slide,
            size,
            aggregates.clone(),
            group_columns.clone(),
            Arc::clone(&schema),
        )
        .map_err(Error::from)?;
        Ok(Box::new(if updating {
            operator.updating()
        } else {
            operator
        }) as Box<dyn KeyedOperator>)
    };
    Ok(Some(Planned {
        node: keyed(planner, input.node, keys.clone(), label, make)?,
        times,
    }))
}

/// The `sluice_session(ts, gap)` call among a GROUP BY, with its position.
fn session_call(agg: &Aggregate) -> Option<(usize, &Expr, i64)> {
    agg.group_expr
        .iter()
        .enumerate()
        .find_map(|(i, e)| match strip_alias(e) {
            Expr::ScalarFunction(f) if f.func.name() == crate::sql::windows::SESSION_FUNCTION => {
                let gap = match f.args.get(1).map(strip_alias) {
                    Some(Expr::Literal(v, _)) => crate::sql::windows::interval_nanos(v).ok()?,
                    _ => return None,
                };
                Some((i, f.args.first()?, gap))
            }
            _ => None,
        })
}

/// Whether the GROUP BY has a `SESSION` window.
pub(super) fn has_session(agg: &Aggregate) -> bool {
    session_call(agg).is_some()
}

/// `GROUP BY keys, SESSION(ts, gap)`: a [`SessionWindowAggregate`] over the planned input.
pub(super) fn plan_session(
    planner: &mut Planner,
    agg: &Aggregate,
    input: Planned,
) -> Result<Planned> {
    let Some((position, time, gap)) = session_call(agg) else {
        return Err(refuse("this SESSION window"));
    };
    if planner.emit_on_window_close {
        return Err(refuse("EMIT ON WINDOW CLOSE with SESSION windows"));
    }
    let in_schema = agg.input.schema();
    let arrow_input = in_schema.as_arrow();
    let extended = SessionWindowAggregate::extended_schema(arrow_input);
    let session_column: Arc<dyn datafusion::physical_expr::PhysicalExpr> =
        Arc::new(datafusion::physical_expr::expressions::Column::new(
            SESSION_COLUMN,
            arrow_input.fields().len(),
        ));
    let mut keys = Vec::new();
    let mut key_types = Vec::new();
    let mut inner_keys = Vec::new();
    let mut inner_types = Vec::new();
    for (i, e) in agg.group_expr.iter().enumerate() {
        if i == position {
            inner_keys.push(Arc::clone(&session_column));
            inner_types.push(
                extended
                    .field(arrow_input.fields().len())
                    .data_type()
                    .clone(),
            );
        } else {
            let p = physical(e, in_schema)?;
            let t = e.get_type(in_schema)?;
            keys.push(Arc::clone(&p));
            key_types.push(t.clone());
            inner_keys.push(p);
            inner_types.push(t);
        }
    }
    let schema = Arc::new(agg.schema.as_arrow().clone());
    // Over append-only input, with the watermark on the session's time, no row can join a
    // session that ended more than the gap behind the watermark: its state is dropped.
    let expire = super::is_append_only(&agg.input)
        && matches!(
            super::time::expr_time(time, &input.times, in_schema),
            ColumnTime::EventTime
        );
    let time = physical(time, in_schema)?;
    let label = label(
        "SessionWindowAggregate",
        agg,
        &format!(
            " gap={}ms{}",
            gap / 1_000_000,
            if expire { " free=on-watermark" } else { "" }
        ),
    );
    let make = || {
        let calls = agg
            .aggr_expr
            .iter()
            .map(|e| aggregate_call(e, in_schema, true))
            .collect::<Result<Vec<_>>>()?;
        let inner = GroupAggregateOperator::new(
            inner_keys.clone(),
            inner_types.clone(),
            calls,
            Arc::clone(&schema),
        )
        .map_err(Error::from)?;
        let operator = SessionWindowAggregate::new(
            arrow_input,
            keys.clone(),
            key_types.clone(),
            Arc::clone(&time),
            gap,
            inner,
            position,
        )
        .map_err(Error::from)?;
        let operator = if expire {
            operator.with_expiry()
        } else {
            operator
        };
        Ok(Box::new(operator) as Box<dyn KeyedOperator>)
    };
    let times = vec![ColumnTime::Plain; agg.group_expr.len() + agg.aggr_expr.len()];
    Ok(Planned {
        node: keyed(planner, input.node, keys.clone(), label, make)?,
        times,
    })
}

/// `GROUP BY GROUPING SETS (…)`, `ROLLUP (…)` or `CUBE (…)` as the `UNION ALL` of one plain
/// aggregate per grouping set, before the plan is analyzed: each branch groups by its set and
/// gives the columns outside it as NULL, the `__grouping_id` DataFusion would give it, and
/// `GROUPING(…)` as the constant it is within the set. Each branch is an aggregate a view
/// keeps; the input is read once per set.
pub fn rewrite_grouping_sets(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::Column;
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::{GroupingSet, Projection, Union};
    Ok(plan
        .transform_up(|node| {
            let LogicalPlan::Aggregate(agg) = &node else {
                return Ok(Transformed::no(node));
            };
            let [Expr::GroupingSet(grouping)] = agg.group_expr.as_slice() else {
                return Ok(Transformed::no(node));
            };
            let sets: Vec<Vec<Expr>> = match grouping {
                GroupingSet::GroupingSets(sets) => sets.clone(),
                GroupingSet::Rollup(exprs) => (0..=exprs.len())
                    .rev()
                    .map(|n| exprs[..n].to_vec())
                    .collect(),
                GroupingSet::Cube(exprs) => (0..1usize << exprs.len())
                    .rev()
                    .map(|mask| {
                        exprs
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << (exprs.len() - 1 - i)) != 0)
                            .map(|(_, e)| e.clone())
                            .collect()
                    })
                    .collect(),
            };
            let all: Vec<Expr> = grouping.distinct_expr().into_iter().cloned().collect();
            let n = all.len();
            if n > 64 {
                return Err(datafusion::error::DataFusionError::NotImplemented(
                    "grouping sets over more than 64 expressions".into(),
                ));
            }
            let masks: Vec<u64> = sets
                .iter()
                .map(|set| {
                    all.iter()
                        .fold(0u64, |acc, e| (acc << 1) | u64::from(!set.contains(e)))
                })
                .collect();
            let max_ordinal = (0..masks.len())
                .map(|i| masks[..i].iter().filter(|&&m| m == masks[i]).count())
                .max()
                .unwrap_or(0);
            let id_type = datafusion::logical_expr::Aggregate::grouping_id_type(n, max_ordinal);
            let is_grouping = |e: &Expr| {
                matches!(strip_alias(e), Expr::AggregateFunction(f) if f.func.name() == "grouping")
            };
            let plain: Vec<Expr> = agg
                .aggr_expr
                .iter()
                .filter(|e| !is_grouping(e))
                .cloned()
                .collect();
            let out = |i: usize| {
                let (q, f) = agg.schema.qualified_field(i);
                (q.cloned(), f.name().clone(), f.data_type().clone())
            };
            let mut branches = Vec::with_capacity(sets.len());
            for (s, set) in sets.iter().enumerate() {
                let ordinal = masks[..s].iter().filter(|&&m| m == masks[s]).count() as u64;
                let branch = datafusion::logical_expr::Aggregate::try_new(
                    Arc::clone(&agg.input),
                    set.clone(),
                    plain.clone(),
                )?;
                let column = |i: usize| {
                    let (q, f) = branch.schema.qualified_field(i);
                    Expr::Column(Column::new(q.cloned(), f.name()))
                };
                let mut exprs = Vec::with_capacity(agg.schema.fields().len());
                for (i, e) in all.iter().enumerate() {
                    let (q, name, data_type) = out(i);
                    let value = match set.iter().position(|x| x == e) {
                        Some(p) => column(p),
                        None => Expr::Literal(ScalarValue::try_from(&data_type)?, None),
                    };
                    exprs.push(value.alias_qualified(q, name));
                }
                let id = masks[s] | (ordinal << n);
                let id = ScalarValue::UInt64(Some(id)).cast_to(&id_type)?;
                exprs.push(
                    Expr::Literal(id, None)
                        .alias(datafusion::logical_expr::Aggregate::INTERNAL_GROUPING_ID),
                );
                let mut next_plain = set.len();
                for (j, e) in agg.aggr_expr.iter().enumerate() {
                    let (q, name, _) = out(n + 1 + j);
                    let value = match strip_alias(e) {
                        Expr::AggregateFunction(f) if f.func.name() == "grouping" => {
                            // Bit i (from the left) is set when the i-th argument is outside
                            // the set.
                            let bits = f.params.args.iter().fold(0i32, |acc, a| {
                                (acc << 1) | i32::from(!set.contains(a))
                            });
                            Expr::Literal(ScalarValue::Int32(Some(bits)), None)
                        }
                        _ => {
                            next_plain += 1;
                            column(next_plain - 1)
                        }
                    };
                    exprs.push(value.alias_qualified(q, name));
                }
                branches.push(Arc::new(LogicalPlan::Projection(Projection::try_new(
                    exprs,
                    Arc::new(LogicalPlan::Aggregate(branch)),
                )?)));
            }
            let union = LogicalPlan::Union(Union::try_new_with_loose_types(branches)?);
            // The union names its columns after the first branch, maybe without qualifiers:
            // name them as the aggregate did.
            let exprs = (0..agg.schema.fields().len())
                .map(|i| {
                    let (uq, uf) = union.schema().qualified_field(i);
                    let (q, name, _) = out(i);
                    Expr::Column(Column::new(uq.cloned(), uf.name())).alias_qualified(q, name)
                })
                .collect();
            Ok(Transformed::yes(LogicalPlan::Projection(
                Projection::try_new(exprs, Arc::new(union))?,
            )))
        })?
        .data)
}
