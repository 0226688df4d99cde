//! DataFusion's `push_down_filter`, kept from moving a filter below an aggregate whose output
//! rows do not all come from groups of its input rows.
//!
//! DataFusion 55 pushes a predicate below an aggregate when every column it names is a group
//! column, which holds for plain `GROUP BY`. It also pushes one that names no column at all
//! (`false`, or `k = 0 AND k = 1` once simplified), which empties the input of an aggregate
//! without `GROUP BY` — and that aggregate still gives its one row (`count` 0), where the
//! filter above it gave none. Over `GROUPING SETS`/`ROLLUP`/`CUBE` it pushes a filter on a
//! column that some sets leave out: `WHERE k = 0` over `ROLLUP (k, …)` kept the grand total
//! (where `k` is NULL) and counted only `k = 0` rows in it. Over those two kinds of aggregate
//! the filter stays where it is, as PostgreSQL evaluates it; everything else is DataFusion's.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::push_down_filter::PushDownFilter;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// [`PushDownFilter`] that leaves a filter above a global or grouping-set aggregate.
#[derive(Debug, Default)]
pub struct GuardedPushDownFilter(PushDownFilter);

impl OptimizerRule for GuardedPushDownFilter {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        self.0.apply_order()
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if let LogicalPlan::Filter(filter) = &plan
            && let LogicalPlan::Aggregate(aggregate) = filter.input.as_ref()
            && matches!(aggregate.group_expr.as_slice(), [] | [Expr::GroupingSet(_)])
        {
            return Ok(Transformed::no(plan));
        }
        self.0.rewrite(plan, config)
    }
}

/// DataFusion's optimizer rules, with [`GuardedPushDownFilter`] in place of its own.
pub fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    datafusion::optimizer::Optimizer::new()
        .rules
        .into_iter()
        .map(|rule| {
            if rule.name() == "push_down_filter" {
                Arc::new(GuardedPushDownFilter::default()) as Arc<dyn OptimizerRule + Send + Sync>
            } else {
                rule
            }
        })
        .collect()
}
