//! Temporal filters: `now()` in a view's `WHERE`, compared with a time of the row
//! (`WHERE ts > now() - INTERVAL '1' HOUR`), planned as a [`TemporalFilterOperator`] whose rows
//! leave the view (or enter it) as the clock passes their bounds.
//!
//! DataFusion folds `now()` into the time the query was planned, which in a view would be the
//! time it was created: before optimizing, [`mark_now`] puts `sluice_now()` (volatile, never
//! folded) in its place; the planner then takes the conjuncts that compare it with the row and
//! refuses `now()` anywhere else.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

use super::{Planned, Planner, physical, pretty};
use crate::error::{Error, Result};
use crate::operator::KeyedOperator;
use crate::operator::temporal_filter::{NowIs, TemporalFilterOperator, TimeBound};

/// The name of the unfoldable `now()` in a view's plan.
pub const NOW_FUNCTION: &str = "sluice_now";

/// `now()` that DataFusion does not fold into a constant: the wall clock when evaluated.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SluiceNow {
    signature: Signature,
}

impl ScalarUDFImpl for SluiceNow {
    fn name(&self) -> &str {
        NOW_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Nanosecond,
            Some("+00:00".into()),
        ))
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(
            Some(now),
            Some("+00:00".into()),
        )))
    }
}

fn now_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(SluiceNow {
        signature: Signature::nullary(Volatility::Volatile),
    }))
}

/// Replaces `now()` (and `current_timestamp`, its alias) by `sluice_now()` everywhere in a
/// view's plan, subqueries included.
pub fn mark_now(plan: LogicalPlan) -> Result<LogicalPlan> {
    let udf = now_udf();
    Ok(plan
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match &e {
                    Expr::ScalarFunction(f) if f.func.name() == "now" && f.args.is_empty() => {
                        Ok(Transformed::yes(Expr::ScalarFunction(
                            datafusion::logical_expr::expr::ScalarFunction::new_udf(
                                Arc::clone(&udf),
                                Vec::new(),
                            ),
                        )))
                    }
                    _ => Ok(Transformed::no(e)),
                })
            })
        })?
        .data)
}

/// Whether `expr` calls `sluice_now()`.
pub fn reads_now(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::ScalarFunction(f) if f.func.name() == NOW_FUNCTION)))
        .unwrap_or(true)
}

fn unsupported_now(expr: &Expr) -> Error {
    Error::unsupported(format!(
        "now() in {expr} is not supported in a materialized view (a view can use now() only in \
         WHERE, compared with a time of the row: ts > now() - INTERVAL '1' HOUR)"
    ))
}

/// Refuses `now()` anywhere in `plan` but a filter's conjuncts: those the filter's planning
/// checks itself.
pub fn check(plan: &LogicalPlan) -> Result<()> {
    let mut found: Option<Expr> = None;
    plan.apply_with_subqueries(|node| {
        if matches!(node, LogicalPlan::Filter(_)) {
            return Ok(TreeNodeRecursion::Continue);
        }
        node.apply_expressions(|e| {
            if reads_now(e) {
                found = Some(e.clone());
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
    })?;
    match found {
        Some(e) => Err(unsupported_now(&e)),
        None => Ok(()),
    }
}

/// `now()` plus a constant: the constant in nanoseconds, if `expr` is that.
fn now_plus(expr: &Expr) -> Result<Option<i64>> {
    Ok(match expr {
        Expr::ScalarFunction(f) if f.func.name() == NOW_FUNCTION => Some(0),
        Expr::Cast(c) => now_plus(&c.expr)?,
        Expr::TryCast(c) => now_plus(&c.expr)?,
        Expr::Alias(a) => now_plus(&a.expr)?,
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (base, constant, sign) = match op {
                Operator::Plus if reads_now(left) => (left, right, 1),
                Operator::Plus => (right, left, 1),
                Operator::Minus => (left, right, -1),
                _ => return Ok(None),
            };
            let (Some(base), Some(nanos)) = (now_plus(base)?, interval_nanos(constant)?) else {
                return Ok(None);
            };
            base.checked_add(nanos.saturating_mul(sign))
        }
        _ => None,
    })
}

/// A constant interval or duration in nanoseconds (`None`: not a constant one).
fn interval_nanos(expr: &Expr) -> Result<Option<i64>> {
    let value = match expr {
        Expr::Literal(v, _) => v,
        Expr::Cast(c) => return interval_nanos(&c.expr),
        _ => return Ok(None),
    };
    const DAY: i64 = 86_400_000_000_000;
    Ok(match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            if v.months != 0 {
                return Err(Error::unsupported(
                    "a temporal filter's interval in months (their length varies; use days) is not supported in a materialized view",
                ));
            }
            i64::from(v.days)
                .checked_mul(DAY)
                .and_then(|d| d.checked_add(v.nanoseconds))
        }
        ScalarValue::IntervalDayTime(Some(v)) => i64::from(v.days)
            .checked_mul(DAY)
            .and_then(|d| d.checked_add(i64::from(v.milliseconds) * 1_000_000)),
        ScalarValue::IntervalYearMonth(Some(0)) => Some(0),
        ScalarValue::DurationNanosecond(Some(v)) => Some(*v),
        ScalarValue::DurationMicrosecond(Some(v)) => v.checked_mul(1_000),
        ScalarValue::DurationMillisecond(Some(v)) => v.checked_mul(1_000_000),
        ScalarValue::DurationSecond(Some(v)) => v.checked_mul(1_000_000_000),
        _ => None,
    })
}

/// One conjunct as a bound on the row's time, if it compares `now()` (plus a constant) with an
/// expression of the row.
fn bound(conjunct: &Expr, schema: &DFSchema) -> Result<Option<TimeBound>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else {
        return Ok(None);
    };
    let as_now_left = match op {
        Operator::Lt => NowIs::Before,
        Operator::LtEq => NowIs::AtOrBefore,
        Operator::Gt => NowIs::After,
        Operator::GtEq => NowIs::AtOrAfter,
        _ => return Ok(None),
    };
    let (now_side, row_side, now_is) = match (reads_now(left), reads_now(right)) {
        (true, false) => (left, right, as_now_left),
        (false, true) => (right, left, as_now_left.flipped()),
        _ => return Ok(None),
    };
    let Some(offset) = now_plus(now_side)? else {
        return Ok(None);
    };
    Ok(Some(TimeBound {
        expr: physical(row_side, schema)?,
        offset,
        now_is,
    }))
}

/// The conjuncts of a filter, with `BETWEEN`s that read `now()` split in two.
fn conjuncts(predicate: &Expr) -> Vec<Expr> {
    let mut out = Vec::new();
    for c in split_conjunction(predicate) {
        match c {
            Expr::Between(b) if !b.negated && (reads_now(&b.low) || reads_now(&b.high)) => {
                out.push(b.expr.as_ref().clone().gt_eq(b.low.as_ref().clone()));
                out.push(b.expr.as_ref().clone().lt_eq(b.high.as_ref().clone()));
            }
            c => out.push(c.clone()),
        }
    }
    out
}

/// A filter's conjuncts that read `now()`, as bounds, and the rest as one predicate; `None`
/// when none reads `now()`.
pub fn split(
    predicate: &Expr,
    schema: &DFSchema,
) -> Result<Option<(Vec<TimeBound>, Option<Expr>)>> {
    if !reads_now(predicate) {
        return Ok(None);
    }
    let mut bounds = Vec::new();
    let mut rest = Vec::new();
    for c in conjuncts(predicate) {
        if !reads_now(&c) {
            rest.push(c);
            continue;
        }
        match bound(&c, schema)? {
            Some(b) => bounds.push(b),
            None => return Err(unsupported_now(&c)),
        }
    }
    Ok(Some((
        bounds,
        datafusion::logical_expr::utils::conjunction(rest),
    )))
}

/// A temporal filter node over `input`, rows of `schema`.
pub(super) fn plan_temporal_filter(
    planner: &Planner,
    bounds: Vec<TimeBound>,
    predicate: &Expr,
    schema: &DFSchema,
    input: Planned,
) -> Result<Planned> {
    let arrow = Arc::new(schema.as_arrow().clone());
    let label = pretty(&format!("TemporalFilter: {predicate}"));
    let node = super::aggregate::keyed(planner, input.node, Vec::new(), label, || {
        Ok(Box::new(
            TemporalFilterOperator::new(bounds.clone(), Arc::clone(&arrow)).map_err(Error::from)?,
        ) as Box<dyn KeyedOperator>)
    })?;
    Ok(Planned {
        node,
        times: input.times,
    })
}
