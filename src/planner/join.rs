//! Joins into [`JoinOperator`]s: equi-joins (inner, outer, semi, anti), one operator per hash
//! partition of the join key.

use std::sync::Arc;

use datafusion::common::NullEquality;
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::{Expr, ExprSchemable, Join, JoinType};

use super::{ColumnTime, Planned, Planner, physical, pretty, refuse};
use crate::error::{Error, Result};
use crate::operator::{FilterProjectOperator, JoinKind, JoinOperator, KeyedOperator};
use crate::runtime::dataflow::Node;

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
        JoinType::LeftAnti if join.null_aware => {
            return Err(refuse(
                "NOT IN (subquery) (its NULL semantics; NOT EXISTS is supported)",
            ));
        }
        JoinType::LeftAnti => JoinKind::Anti(0),
        JoinType::RightAnti => JoinKind::Anti(1),
        JoinType::LeftMark | JoinType::RightMark => {
            return Err(refuse("an IN or EXISTS subquery under OR"));
        }
    };
    let left = planner.plan(&join.left)?;
    let right = planner.plan(&join.right)?;
    let (left_schema, right_schema) = (join.left.schema(), join.right.schema());

    // Keys of both sides of one type, so that equal keys hash and encode alike.
    let mut keys = [Vec::new(), Vec::new()];
    let mut key_types = Vec::new();
    let mut on = Vec::new();
    for (l, r) in &join.on {
        let (lt, rt) = (l.get_type(left_schema)?, r.get_type(right_schema)?);
        let common = if lt == rt {
            lt.clone()
        } else {
            comparison_coercion(&lt, &rt).ok_or_else(|| {
                Error::unsupported(format!("cannot join {l} ({lt}) with {r} ({rt})"))
            })?
        };
        let cast = |e: &Expr, t: &datafusion::arrow::datatypes::DataType| {
            if *t == common {
                e.clone()
            } else {
                Expr::Cast(Cast::new(Box::new(e.clone()), common.clone()))
            }
        };
        keys[0].push(physical(&cast(l, &lt), left_schema)?);
        keys[1].push(physical(&cast(r, &rt), right_schema)?);
        key_types.push(common.clone());
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
    let operators = (0..partitions)
        .map(|_| -> Result<Box<dyn KeyedOperator>> {
            Ok(Box::new(JoinOperator::new(
                kind,
                keys.clone(),
                key_types.clone(),
                condition.as_ref().map(|(_, f)| Arc::clone(f)),
                inputs.clone(),
                Arc::clone(&schema),
                null_equal,
            )?))
        })
        .collect::<Result<Vec<_>>>()?;
    let state = match kind {
        _ if condition.is_some() => "rows of both sides, with match counts",
        JoinKind::Semi(0) | JoinKind::Anti(0) => "left rows, right counts",
        JoinKind::Semi(_) | JoinKind::Anti(_) => "left counts, right rows",
        _ => "rows of both sides",
    };
    let label = pretty(&format!(
        "{}Join: on=[{}]{}{} state=[{state}{}]",
        kind.name(),
        on.join(", "),
        condition
            .as_ref()
            .map(|(f, _)| format!(" condition=[{}]", (*f).clone().unalias_nested().data))
            .unwrap_or_default(),
        if null_equal { " nulls_equal" } else { "" },
        if on.is_empty() {
            ", unkeyed"
        } else {
            " by key"
        },
    ));
    let node = Node::Keyed {
        inputs: vec![left.node, right.node],
        keys: keys.to_vec(),
        partitions: operators,
        hasher: datafusion::common::hash_utils::RandomState::with_seed(0),
        label,
    };
    // No output column keeps an event-time role: a row may join a much older row.
    let times = vec![ColumnTime::Plain; schema.fields().len()];
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
