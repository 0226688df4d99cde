//! `OVER` window functions, top-N (`ROW_NUMBER() … WHERE rn <= N`, `ORDER BY … LIMIT`) and
//! `DISTINCT ON` into [`OverOperator`]s, one per worker partition of the `PARTITION BY` keys.

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::row::SortField;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::expr::{Sort, WindowFunction};
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Distinct, Expr, ExprFunctionExt, ExprSchemable, Limit, LogicalPlan,
    LogicalPlanBuilder, Operator, Window, WindowFunctionDefinition,
};
use datafusion::physical_expr::PhysicalExpr;

use super::aggregate::strip_alias;
use super::{ColumnTime, Planned, Planner, physical, refuse};
use crate::error::{Error, Result};
use crate::operator::KeyedOperator;
use crate::operator::over::{OverMode, OverOperator, RankKind, TopN};

/// `DISTINCT ON (k) … ORDER BY k, o` as `ROW_NUMBER() OVER (PARTITION BY k ORDER BY k, o) = 1`,
/// a top-1 per key, before the plan is optimized (DataFusion would make it an aggregate of
/// `first_value`, which a view cannot keep under deletions).
pub fn rewrite_distinct_on(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up(|node| {
            let LogicalPlan::Distinct(Distinct::On(on)) = node else {
                return Ok(Transformed::no(node));
            };
            let rank = datafusion::functions_window::expr_fn::row_number()
                .partition_by(on.on_expr.clone())
                .order_by(on.sort_expr.clone().unwrap_or_default())
                .build()?;
            let rank_column = Expr::Column(Column::from_name(rank.schema_name().to_string()));
            let plan = LogicalPlanBuilder::from(Arc::clone(&on.input))
                .window(vec![rank])?
                .filter(rank_column.eq(Expr::Literal(ScalarValue::UInt64(Some(1)), None)))?
                .project(on.select_expr.clone())?
                .build()?;
            Ok(Transformed::yes(plan))
        })?
        .data)
}

/// The ranks a filter over a window keeps, when the window is one rank function and the
/// filter bounds it from above: `(kind, first, last)`.
pub(super) fn rank_filter(window: &Window, predicate: &Expr) -> Option<(RankKind, u64, u64)> {
    let [expr] = window.window_expr.as_slice() else {
        return None;
    };
    let Expr::WindowFunction(f) = strip_alias(expr) else {
        return None;
    };
    let WindowFunctionDefinition::WindowUDF(udf) = &f.fun else {
        return None;
    };
    let kind = RankKind::from_name(udf.name())?;
    let column = window.schema.field(window.schema.fields().len() - 1).name();
    let is_rank = |e: &Expr| matches!(strip_cast(e), Expr::Column(c) if c.name == *column);
    let value = |e: &Expr| -> Option<i64> {
        match strip_cast(e) {
            Expr::Literal(v, _) => {
                match v.cast_to(&datafusion::arrow::datatypes::DataType::Int64) {
                    Ok(ScalarValue::Int64(Some(n))) => Some(n),
                    _ => None,
                }
            }
            _ => None,
        }
    };
    let (mut first, mut last): (i64, Option<i64>) = (1, None);
    let mut bounded = false;
    let lower = |n: i64, first: &mut i64| *first = (*first).max(n);
    for conjunct in split_conjunction(predicate) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, n) = if is_rank(left) {
                    (*op, value(right))
                } else if is_rank(right) {
                    (op.swap()?, value(left))
                } else {
                    continue;
                };
                let Some(n) = n else { continue };
                let mut upper = |m: i64| {
                    last = Some(last.map_or(m, |l| l.min(m)));
                    bounded = true;
                };
                match op {
                    Operator::Eq => {
                        lower(n, &mut first);
                        upper(n);
                    }
                    Operator::LtEq => upper(n),
                    Operator::Lt => upper(n.saturating_sub(1)),
                    Operator::GtEq => lower(n, &mut first),
                    Operator::Gt => lower(n.saturating_add(1), &mut first),
                    _ => {}
                }
            }
            Expr::Between(b) if !b.negated && is_rank(&b.expr) => {
                if let (Some(lo), Some(hi)) = (value(&b.low), value(&b.high)) {
                    lower(lo, &mut first);
                    last = Some(last.map_or(hi, |l| l.min(hi)));
                    bounded = true;
                }
            }
            _ => {}
        }
    }
    if !bounded {
        return None;
    }
    // An empty range (`rn <= 0`) keeps nothing: first past last.
    let last = last?.max(0) as u64;
    Some((kind, first.max(1) as u64, last))
}

/// Whether `projection` (over `window`) passes the window's last column (its rank) through
/// under its own name, so that a filter above reads the rank itself.
pub(super) fn keeps_rank_column(
    projection: &datafusion::logical_expr::Projection,
    window: &Window,
) -> bool {
    let column = window.schema.field(window.schema.fields().len() - 1).name();
    projection
        .expr
        .iter()
        .any(|e| matches!(e, Expr::Column(c) if c.name == *column))
}

fn strip_cast(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_cast(&a.expr),
        Expr::Cast(c) => strip_cast(&c.expr),
        Expr::TryCast(c) => strip_cast(&c.expr),
        e => e,
    }
}

/// `ORDER BY` keys: expressions and their sort fields.
type OrderKeys = (Vec<Arc<dyn PhysicalExpr>>, Vec<SortField>);

/// `ORDER BY` keys as physical expressions and sort fields over `plan`'s schema.
fn order_keys(order: &[Sort], plan: &LogicalPlan) -> Result<OrderKeys> {
    let schema = plan.schema();
    let mut exprs = Vec::with_capacity(order.len());
    let mut fields = Vec::with_capacity(order.len());
    for sort in order {
        exprs.push(physical(&sort.expr, schema)?);
        fields.push(SortField::new_with_options(
            sort.expr.get_type(schema)?,
            SortOptions {
                descending: !sort.asc,
                nulls_first: sort.nulls_first,
            },
        ));
    }
    Ok((exprs, fields))
}

fn names(exprs: impl IntoIterator<Item = String>) -> String {
    exprs.into_iter().collect::<Vec<_>>().join(", ")
}

fn sort_names(order: &[Sort]) -> String {
    names(
        order
            .iter()
            .map(|s| format!("{} {}", s.expr, if s.asc { "ASC" } else { "DESC" })),
    )
}

/// A window aggregate cannot slice through a top-N or window function below it.
fn no_slicing(planner: &mut Planner) {
    if planner.slicing {
        planner.slice_failure = Some("a window function or top-N below the window".into());
    }
}

/// A keyed node of [`OverOperator`]s.
#[allow(clippy::too_many_arguments)]
fn over_node(
    planner: &Planner,
    input: Planned,
    input_plan: &LogicalPlan,
    partition_by: &[Expr],
    order: &[Sort],
    schema: datafusion::arrow::datatypes::SchemaRef,
    label: String,
    expiry: Option<(usize, i64)>,
    emit_on_close: bool,
    mut mode: impl FnMut() -> Result<OverMode>,
) -> Result<Planned> {
    let in_schema = input_plan.schema();
    let keys = partition_by
        .iter()
        .map(|e| physical(e, in_schema))
        .collect::<Result<Vec<_>>>()?;
    let key_types = partition_by
        .iter()
        .map(|e| e.get_type(in_schema))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let (order_exprs, order_fields) = order_keys(order, input_plan)?;
    let append_only = super::is_append_only(input_plan);
    let input_schema = Arc::new(in_schema.as_arrow().clone());
    let columns = schema.fields().len();
    let make = || {
        let mut op = OverOperator::new(
            mode()?,
            keys.clone(),
            key_types.clone(),
            order_exprs.clone(),
            order_fields.clone(),
            Arc::clone(&input_schema),
            Arc::clone(&schema),
        )
        .map_err(Error::from)?;
        if append_only {
            op = op.with_append_only_input();
        }
        if let Some((key, end_offset)) = expiry {
            op = op.with_window_expiry(key, end_offset);
        }
        if emit_on_close {
            op = op.with_emit_on_window_close();
        }
        Ok(Box::new(op) as Box<dyn KeyedOperator>)
    };
    Ok(Planned {
        node: super::aggregate::keyed(planner, input.node, keys.clone(), label, make)?,
        // Rows of a top-N or window may be retracted: no column keeps an event-time role.
        times: vec![ColumnTime::Plain; columns],
    })
}

/// A window of one rank function filtered to `first..=last`: a top-N per partition.
pub(super) fn plan_top_n(
    planner: &mut Planner,
    window: &Window,
    (kind, first, last): (RankKind, u64, u64),
) -> Result<Planned> {
    let Expr::WindowFunction(f) = strip_alias(&window.window_expr[0]) else {
        return Err(refuse("this window function"));
    };
    no_slicing(planner);
    let input = planner.plan(&window.input)?;
    let schema = Arc::new(window.schema.as_arrow().clone());
    // A window top-N (partitioned by a window of event time) over append-only input frees
    // each window's partitions once the watermark passes the window's end.
    let expiry = if super::is_append_only(&window.input) {
        f.params.partition_by.iter().enumerate().find_map(|(i, e)| {
            match super::time::expr_time(e, &input.times, window.input.schema()) {
                ColumnTime::Window {
                    end_offset,
                    event_time: true,
                } => Some((i, end_offset)),
                _ => None,
            }
        })
    } else {
        None
    };
    // `EMIT ON WINDOW CLOSE` over a window top-N that no aggregate below closes: each
    // window's top rows once, when it closes.
    let close = planner.emit_on_window_close && expiry.is_some() && planner.windowed_close == 0;
    if close {
        planner.windowed_close += 1;
        planner.closing_top_n = true;
    }
    let label = super::pretty(&format!(
        "TopN: partition=[{}] order=[{}] rank={} range={first}..={last}{}{}{}",
        names(f.params.partition_by.iter().map(|e| e.to_string())),
        sort_names(&f.params.order_by),
        match kind {
            RankKind::RowNumber => "row_number",
            RankKind::Rank => "rank",
            RankKind::DenseRank => "dense_rank",
        },
        if super::is_append_only(&window.input) {
            " keep=top"
        } else {
            ""
        },
        if expiry.is_some() {
            " free=on-watermark"
        } else {
            ""
        },
        if close { " emit=on-window-close" } else { "" }
    ));
    let top = TopN {
        kind,
        first,
        last,
        rank_column: true,
    };
    over_node(
        planner,
        input,
        &window.input,
        &f.params.partition_by,
        &f.params.order_by,
        schema,
        label,
        expiry,
        close,
        || Ok(OverMode::TopN(top)),
    )
}

/// `ORDER BY … LIMIT … OFFSET …` over `sort_input`: one top-N over all rows.
fn plan_limit(
    planner: &mut Planner,
    sort_input: &LogicalPlan,
    order: &[Sort],
    skip: usize,
    fetch: Option<usize>,
) -> Result<Planned> {
    no_slicing(planner);
    let input = planner.plan(sort_input)?;
    let schema = Arc::new(sort_input.schema().as_arrow().clone());
    let first = (skip as u64).saturating_add(1);
    let last = match fetch {
        Some(n) => (skip as u64).saturating_add(n as u64),
        None => u64::MAX,
    };
    let label = super::pretty(&format!(
        "TopN: order=[{}] offset={skip} limit={}",
        sort_names(order),
        fetch.map_or("ALL".to_string(), |n| n.to_string())
    ));
    let top = TopN {
        kind: RankKind::RowNumber,
        first,
        last,
        rank_column: false,
    };
    over_node(
        planner,
        input,
        sort_input,
        &[],
        order,
        schema,
        label,
        None,
        false,
        || Ok(OverMode::TopN(top)),
    )
}

/// `LIMIT`/`OFFSET`: a top-N when it is over an `ORDER BY`.
pub(super) fn plan_limit_node(planner: &mut Planner, limit: &Limit) -> Result<Planned> {
    let SkipType::Literal(skip) = limit.get_skip_type()? else {
        return Err(refuse("OFFSET that is not a constant"));
    };
    let FetchType::Literal(fetch) = limit.get_fetch_type()? else {
        return Err(refuse("LIMIT that is not a constant"));
    };
    match limit.input.as_ref() {
        LogicalPlan::Sort(sort) => {
            let fetch = match (fetch, sort.fetch) {
                (Some(a), Some(b)) => Some(a.min(b.saturating_sub(skip))),
                (a, None) => a,
                (None, Some(b)) => Some(b.saturating_sub(skip)),
            };
            plan_limit(planner, &sort.input, &sort.expr, skip, fetch)
        }
        _ => Err(refuse(
            "LIMIT or OFFSET without ORDER BY (which rows it keeps is not defined)",
        )),
    }
}

/// `ORDER BY … LIMIT n` folded into the sort.
pub(super) fn plan_sort_fetch(
    planner: &mut Planner,
    sort: &datafusion::logical_expr::Sort,
    fetch: usize,
) -> Result<Planned> {
    plan_limit(planner, &sort.input, &sort.expr, 0, Some(fetch))
}

/// Window functions (`lag`, running sums, ranks without a filter, …), computed by DataFusion
/// over each changed partition.
pub(super) fn plan_functions(planner: &mut Planner, window: &Window) -> Result<Planned> {
    let in_schema = window.input.schema();
    let mut shape: Option<(&[Expr], &[Sort])> = None;
    for expr in &window.window_expr {
        let Expr::WindowFunction(f) = strip_alias(expr) else {
            return Err(refuse(&format!("the window expression {expr}")));
        };
        let WindowFunction { params, .. } = f.as_ref();
        let this = (params.partition_by.as_slice(), params.order_by.as_slice());
        match shape {
            None => shape = Some(this),
            Some(s) if s == this => {}
            Some(_) => {
                return Err(refuse(
                    "window functions of different PARTITION BY or ORDER BY in one step",
                ));
            }
        }
    }
    let Some((partition_by, order)) = shape else {
        return Err(refuse("a window node without functions"));
    };
    no_slicing(planner);
    let input = planner.plan(&window.input)?;
    let schema = Arc::new(window.schema.as_arrow().clone());
    let label = super::pretty(&format!(
        "Over: partition=[{}] order=[{}] functions=[{}]",
        names(partition_by.iter().map(|e| e.to_string())),
        sort_names(order),
        names(
            window
                .window_expr
                .iter()
                .map(|e| e.schema_name().to_string())
        )
    ));
    let make_exprs = || {
        window
            .window_expr
            .iter()
            .map(|e| {
                Ok(datafusion::physical_planner::create_window_expr(
                    e,
                    in_schema,
                    &ExecutionProps::new(),
                    &PhysicalPlanningContext::default(),
                )?)
            })
            .collect::<Result<Vec<_>>>()
    };
    // Checked once here, so that an expression DataFusion cannot plan is refused at CREATE.
    make_exprs()?;
    over_node(
        planner,
        input,
        &window.input,
        partition_by,
        order,
        schema,
        label,
        None,
        false,
        || Ok(OverMode::Functions(make_exprs()?)),
    )
}
