//! Joins into [`JoinOperator`]s: equi-joins (inner, outer, semi, anti), one operator per hash
//! partition of the join key.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::common::NullEquality;
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Join, JoinType, Operator};
use datafusion::physical_expr::PhysicalExpr;

use super::{ColumnTime, Planned, Planner, physical, pretty, refuse};
use crate::error::{Error, Result};
use crate::operator::join::Interval;
use crate::operator::not_in::NotInOperator;
use crate::operator::{FilterProjectOperator, JoinKind, JoinOperator, KeyedOperator};
use crate::runtime::dataflow::Node;

/// A key pair `l = r` as physical expressions of one type (cast where the sides differ), so
/// that equal keys hash and encode alike; and that type.
fn key_pair(l: &Expr, r: &Expr, left: &DFSchema, right: &DFSchema) -> Result<KeyPair> {
    let (lt, rt) = (l.get_type(left)?, r.get_type(right)?);
    let common = if lt == rt {
        lt.clone()
    } else {
        comparison_coercion(&lt, &rt)
            .ok_or_else(|| Error::unsupported(format!("cannot join {l} ({lt}) with {r} ({rt})")))?
    };
    let cast = |e: &Expr, t: &DataType| {
        if *t == common {
            e.clone()
        } else {
            Expr::Cast(Cast::new(Box::new(e.clone()), common.clone()))
        }
    };
    Ok((
        physical(&cast(l, &lt), left)?,
        physical(&cast(r, &rt), right)?,
        common.clone(),
    ))
}

/// Both sides' key expressions and their common type.
type KeyPair = (Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>, DataType);

/// `x NOT IN (SELECT y …)`: a [`NotInOperator`] as one partition (whether the subquery is
/// empty or holds a NULL decides every row).
fn plan_not_in(planner: &mut Planner, join: &Join) -> Result<Planned> {
    let (&[(ref l, ref r)], None) = (join.on.as_slice(), &join.filter) else {
        return Err(refuse(
            "a correlated NOT IN (subquery), or one over several columns (NOT EXISTS is supported)",
        ));
    };
    let left = planner.plan(&join.left)?;
    let right = planner.plan(&join.right)?;
    let (left_schema, right_schema) = (join.left.schema(), join.right.schema());
    let (left_key, right_key, common) = key_pair(l, r, left_schema, right_schema)?;
    let schema = Arc::new(join.schema.as_arrow().clone());
    let operator = NotInOperator::new(left_key, right_key, common, Arc::clone(&schema))?;
    Ok(Planned {
        times: vec![ColumnTime::Plain; schema.fields().len()],
        node: Node::Keyed {
            stats: Default::default(),
            inputs: vec![left.node, right.node],
            // One partition: no keys to hash.
            keys: vec![Vec::new(), Vec::new()],
            partitions: vec![Box::new(operator) as Box<dyn KeyedOperator>],
            hasher: datafusion::common::hash_utils::RandomState::with_seed(0),
            label: pretty(&format!(
                "NotIn: {l} NOT IN {r} state=[left rows by key, right counts by key] partitions=1"
            )),
        },
    })
}

/// Plans `join` over its two planned inputs.
pub(super) fn plan_join(planner: &mut Planner, join: &Join) -> Result<Planned> {
    if planner.slicing {
        planner.slice_failure = Some("a join below the window".into());
    }
    let kind = match join.join_type {
        JoinType::Inner => JoinKind::Inner,
        JoinType::Left => JoinKind::Left,
        JoinType::Right => JoinKind::Right,
        JoinType::Full => JoinKind::Full,
        JoinType::LeftSemi => JoinKind::Semi(0),
        JoinType::RightSemi => JoinKind::Semi(1),
        JoinType::LeftAnti if join.null_aware => return plan_not_in(planner, join),
        JoinType::LeftAnti => JoinKind::Anti(0),
        JoinType::RightAnti => JoinKind::Anti(1),
        JoinType::LeftMark | JoinType::RightMark => {
            return Err(refuse("an IN or EXISTS subquery under OR"));
        }
    };
    // A temporal join reads its versioned table (`FOR SYSTEM_TIME AS OF PROCTIME()`) on the
    // right. That table is planned first, so that its source comes first in every epoch: left
    // rows are looked up in the table as the epoch's cut leaves it.
    let temporal = reads_lookup(&join.right);
    if reads_lookup(&join.left) {
        return Err(refuse(
            "FOR SYSTEM_TIME AS OF PROCTIME() on the left side of a join (put the versioned table on the right)",
        ));
    }
    if temporal && !matches!(kind, JoinKind::Inner | JoinKind::Left) {
        return Err(refuse(&format!(
            "a {} temporal join (only INNER and LEFT join a table FOR SYSTEM_TIME AS OF PROCTIME())",
            kind.name()
        )));
    }
    let (left, right) = if temporal {
        let right = planner.plan(&join.right)?;
        (planner.plan(&join.left)?, right)
    } else {
        (planner.plan(&join.left)?, planner.plan(&join.right)?)
    };
    let (left_schema, right_schema) = (join.left.schema(), join.right.schema());
    // A condition that bounds the two sides' event times: an interval join, whose rows are
    // freed as the watermarks pass.
    let interval = join
        .filter
        .as_ref()
        .and_then(|f| {
            interval_bounds(f, [left_schema, right_schema], [&left.times, &right.times]).map(
                |(time, lo, hi)| Interval {
                    time,
                    lo,
                    hi,
                    watermark: kind == JoinKind::Inner,
                    window_end: None,
                    shift: [
                        watermark_shift(&left.times[time[0]]).unwrap_or(0),
                        watermark_shift(&right.times[time[1]]).unwrap_or(0),
                    ],
                },
            )
        })
        .or_else(|| {
            // Keys that are the same window on both sides: a window join.
            join.on.iter().find_map(|(l, r)| {
                let window = |e: &Expr, schema: &DFSchema, times: &[ColumnTime]| match e {
                    Expr::Column(c) => {
                        let i = schema.index_of_column(c).ok()?;
                        match times.get(i) {
                            Some(ColumnTime::Window {
                                end_offset,
                                event_time: true,
                            }) => Some((i, *end_offset)),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let (li, lend) = window(l, left_schema, &left.times)?;
                let (ri, rend) = window(r, right_schema, &right.times)?;
                Some(Interval {
                    time: [li, ri],
                    lo: None,
                    hi: None,
                    watermark: false,
                    window_end: Some([lend, rend]),
                    shift: [0, 0],
                })
            })
        });

    // Keys of both sides of one type, so that equal keys hash and encode alike.
    let mut keys = [Vec::new(), Vec::new()];
    let mut key_types = Vec::new();
    let mut on = Vec::new();
    for (l, r) in &join.on {
        let (left_key, right_key, common) = key_pair(l, r, left_schema, right_schema)?;
        keys[0].push(left_key);
        keys[1].push(right_key);
        key_types.push(common);
        on.push(format!("{l} = {r}"));
    }
    let null_equal = join.null_equality == NullEquality::NullEqualsNull;
    // An inner join's other conditions filter its pairs (below); any other join's decide
    // which rows match, in the operator, over the left columns then the right ones.
    let condition = match (&join.filter, kind) {
        (Some(filter), k) if k != JoinKind::Inner => {
            let both = left_schema.join(right_schema)?;
            Some((filter, physical(filter, &both)?))
        }
        _ => None,
    };
    let schema = Arc::new(join.schema.as_arrow().clone());
    let inputs = [left.node.schema(), right.node.schema()];
    let partitions = if keys[0].is_empty() {
        1
    } else {
        planner.parallelism
    };
    // A side that only inserts keeps its rows as they come (no lookup for an equal row).
    let append_only = [
        super::is_append_only(&join.left),
        super::is_append_only(&join.right),
    ];
    let operators = (0..partitions)
        .map(|_| -> Result<Box<dyn KeyedOperator>> {
            let mut operator = JoinOperator::new(
                kind,
                keys.clone(),
                key_types.clone(),
                condition.as_ref().map(|(_, f)| Arc::clone(f)),
                inputs.clone(),
                Arc::clone(&schema),
                null_equal,
            )?;
            if let Some(interval) = &interval {
                operator = operator.with_interval(interval.clone());
            }
            if temporal {
                operator = operator.with_lookup();
            }
            operator = operator.with_append_only_inputs(append_only);
            Ok(Box::new(operator))
        })
        .collect::<Result<Vec<_>>>()?;
    let state = match kind {
        _ if temporal => "right rows",
        _ if condition.is_some() => "rows of both sides, with match counts",
        JoinKind::Semi(0) | JoinKind::Anti(0) => "left rows, right counts",
        JoinKind::Semi(_) | JoinKind::Anti(_) => "left counts, right rows",
        _ => "rows of both sides",
    };
    let interval_text = interval
        .as_ref()
        .map(|i| {
            if i.window_end.is_some() {
                return format!(
                    " window=[left.{} = right.{}] free=[rows of windows both watermarks passed]",
                    left_schema.field(i.time[0]).name(),
                    right_schema.field(i.time[1]).name(),
                );
            }
            // A window bound's watermarked time is its window's end.
            let name = |schema: &DFSchema, side: usize| {
                let name = format!(
                    "{}.{}",
                    ["left", "right"][side],
                    schema.field(i.time[side]).name()
                );
                match i.shift[side] {
                    0 => name,
                    shift => format!("({name} + {}ms)", shift / 1_000_000),
                }
            };
            let names = [name(left_schema, 0), name(right_schema, 1)];
            let bound = |b: Option<i64>, unbounded: &str| {
                b.map_or(unbounded.to_string(), |ns| format!("{}ms", ns / 1_000_000))
            };
            let mut freed = Vec::new();
            if i.lo.is_some() {
                freed.push("left rows");
            }
            if i.hi.is_some() {
                freed.push("right rows");
            }
            format!(
                " interval=[{} - {} in {}..{}] free=[{} by watermark]",
                names[0],
                names[1],
                bound(i.lo, "-inf"),
                bound(i.hi, "+inf"),
                freed.join(", ")
            )
        })
        .unwrap_or_default();
    // Each input's watermark: the column it is on, when the input keeps one.
    let watermark_of = |schema: &DFSchema, times: &[ColumnTime]| {
        times
            .iter()
            .position(|t| watermark_shift(t).is_some())
            .and_then(|i| schema.fields().get(i))
            .map_or("none".to_string(), |f| f.name().clone())
    };
    let watermarks = format!(
        " watermarks=[left: {}, right: {}]",
        watermark_of(left_schema, &left.times),
        watermark_of(right_schema, &right.times)
    );
    let label = pretty(&format!(
        "{}{}Join: on=[{}]{interval_text}{}{} state=[{state}{}]{watermarks}",
        kind.name(),
        if temporal { "Temporal" } else { "" },
        on.join(", "),
        condition
            .as_ref()
            .map(|(f, _)| format!(" condition=[{}]", (*f).clone().unalias_nested().data))
            .unwrap_or_default(),
        if null_equal { " nulls_equal" } else { "" },
        match (on.is_empty(), temporal) {
            (true, _) => ", unkeyed",
            (false, true) => " by key; left rows looked up, not kept",
            (false, false) => " by key",
        },
    ));
    let node = Node::Keyed {
        stats: Default::default(),
        inputs: vec![left.node, right.node],
        keys: keys.to_vec(),
        partitions: operators,
        hasher: datafusion::common::hash_utils::RandomState::with_seed(0),
        label,
    };
    // No output column keeps a time role (a row may join a much older row), but the left
    // time column of an inner interval join, whose watermark the operator works out.
    let mut times = vec![ColumnTime::Plain; schema.fields().len()];
    if let Some(Interval {
        time: [left_time, _],
        lo: Some(_),
        watermark: true,
        ..
    }) = &interval
    {
        // An event-time column, or a window bound (the watermark bounds its window's end).
        times[*left_time] = left.times[*left_time];
    }
    let Some(filter) = join.filter.as_ref().filter(|_| condition.is_none()) else {
        return Ok(Planned { node, times });
    };
    // An inner join's other conditions filter its pairs.
    let columns = (0..join.schema.fields().len())
        .map(|i| {
            physical(
                &Expr::Column(join.schema.columns()[i].clone()),
                &join.schema,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Planned {
        node: Node::FilterProject {
            stats: Default::default(),
            label: pretty(&format!("Filter: {filter}")),
            operator: FilterProjectOperator::new(
                Some(physical(filter, &join.schema)?),
                columns,
                Arc::clone(&schema),
            ),
            input: Box::new(node),
        },
        times,
    })
}

/// What to add to a column's value to get the time its side's watermark bounds, for a
/// column the watermark bounds: an event-time column, or a bound of windows over one (an
/// aggregate's window; none of its rows changes once the watermark passes the window's end).
fn watermark_shift(time: &ColumnTime) -> Option<i64> {
    match time {
        ColumnTime::EventTime => Some(0),
        ColumnTime::Window {
            end_offset,
            event_time: true,
        } => Some(*end_offset),
        _ => None,
    }
}

/// One side of a time comparison: a side's watermarked column plus a constant (nanoseconds),
/// as (side, column, constant added to the time the watermark bounds).
fn time_term(
    expr: &Expr,
    schemas: [&DFSchema; 2],
    times: [&[ColumnTime]; 2],
) -> Option<(usize, usize, i64)> {
    match expr {
        // As the time the side's watermark bounds plus a constant: a window bound's value is
        // its window's end minus `end_offset`.
        Expr::Column(c) => (0..2).find_map(|side| {
            let i = schemas[side].index_of_column(c).ok()?;
            watermark_shift(times[side].get(i)?).map(|shift| (side, i, -shift))
        }),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (side, column, offset) = time_term(left, schemas, times)?;
            let d = super::time::literal_interval(right)?;
            match op {
                Operator::Plus => Some((side, column, offset.checked_add(d)?)),
                Operator::Minus => Some((side, column, offset.checked_sub(d)?)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The bounds of `left.t - right.t` that `filter`'s conjuncts set, over the two sides'
/// event-time columns: (each side's time column, lo, hi), when there is at least one.
fn interval_bounds(
    filter: &Expr,
    schemas: [&DFSchema; 2],
    times: [&[ColumnTime]; 2],
) -> Option<([usize; 2], Option<i64>, Option<i64>)> {
    let mut comparisons: Vec<(Expr, Operator, Expr)> = Vec::new();
    for conjunct in split_conjunction(filter) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                comparisons.push((left.as_ref().clone(), *op, right.as_ref().clone()));
            }
            Expr::Between(b) if !b.negated => {
                comparisons.push((
                    b.expr.as_ref().clone(),
                    Operator::GtEq,
                    b.low.as_ref().clone(),
                ));
                comparisons.push((
                    b.expr.as_ref().clone(),
                    Operator::LtEq,
                    b.high.as_ref().clone(),
                ));
            }
            _ => {}
        }
    }
    let (mut columns, mut lo, mut hi): (Option<[usize; 2]>, Option<i64>, Option<i64>) =
        (None, None, None);
    for (a, op, b) in comparisons {
        let (Some(a), Some(b)) = (time_term(&a, schemas, times), time_term(&b, schemas, times))
        else {
            continue;
        };
        // As `left + x op right + y`.
        let (l, r, op) = match (a.0, b.0) {
            (0, 1) => (a, b, op),
            (1, 0) => (b, a, op.swap()?),
            _ => continue,
        };
        let pair = [l.1, r.1];
        if columns.is_some_and(|c| c != pair) {
            continue;
        }
        columns = Some(pair);
        // left - right op y - x
        let bound = r.2.checked_sub(l.2)?;
        match op {
            Operator::Lt | Operator::LtEq => hi = Some(hi.map_or(bound, |h| h.min(bound))),
            Operator::Gt | Operator::GtEq => lo = Some(lo.map_or(bound, |l| l.max(bound))),
            _ => {}
        }
    }
    let columns = columns?;
    (lo.is_some() || hi.is_some()).then_some((columns, lo, hi))
}

/// Whether `plan` reads a table through `FOR SYSTEM_TIME AS OF PROCTIME()`.
fn reads_lookup(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::datasource::source_as_provider;
    use datafusion::logical_expr::LogicalPlan;
    plan.exists(|p| {
        Ok(match p {
            LogicalPlan::TableScan(scan) => source_as_provider(&scan.source).is_ok_and(|t| {
                t.downcast_ref::<crate::connector::queue::provider::LookupProvider>()
                    .is_some()
            }),
            _ => false,
        })
    })
    .unwrap_or(false)
}
