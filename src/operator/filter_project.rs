//! [`FilterProjectOperator`]: `WHERE` and the select list, over whole batches. Stateless: a row's
//! weight passes through unchanged, so a retraction of an input row retracts exactly the output
//! row its insertion produced.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions,
};
use datafusion::arrow::compute::{filter, filter_record_batch, prep_null_mask_filter};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::{Operator, OperatorError};
use crate::stream::ChangeBatch;

const NAME: &str = "FilterProject";

/// Keeps the rows a predicate holds for and computes the output columns from them.
#[derive(Debug)]
pub struct FilterProjectOperator {
    /// `WHERE`, over the input schema; `None` keeps every row.
    predicate: Option<Arc<dyn PhysicalExpr>>,
    /// One expression per output column, over the input schema.
    projection: Vec<Arc<dyn PhysicalExpr>>,
    /// The output schema.
    schema: SchemaRef,
}

impl FilterProjectOperator {
    /// An operator computing `projection` over the rows where `predicate` is true.
    pub fn new(
        predicate: Option<Arc<dyn PhysicalExpr>>,
        projection: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Self {
        Self {
            predicate,
            projection,
            schema,
        }
    }

    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

fn df(source: datafusion::error::DataFusionError) -> OperatorError {
    OperatorError::datafusion(NAME, source)
}

fn arrow(source: datafusion::arrow::error::ArrowError) -> OperatorError {
    OperatorError::arrow(NAME, source)
}

impl Operator for FilterProjectOperator {
    fn name(&self) -> &'static str {
        NAME
    }

    fn process(&mut self, input: ChangeBatch) -> Result<Option<ChangeBatch>, OperatorError> {
        let (rows, weights) = match &self.predicate {
            None => (input.data().clone(), input.weights().cloned()),
            Some(predicate) => {
                let mask = predicate
                    .evaluate(input.data())
                    .and_then(|v| v.into_array(input.num_rows()))
                    .map_err(df)?;
                // NULL is not true: the row is filtered out, as in SQL.
                let mask: BooleanArray = match mask.as_boolean() {
                    m if m.null_count() > 0 => prep_null_mask_filter(m),
                    m => m.clone(),
                };
                let rows = filter_record_batch(input.data(), &mask).map_err(arrow)?;
                let weights = match input.weights() {
                    None => None,
                    Some(w) => Some(
                        filter(w, &mask)
                            .map_err(arrow)?
                            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                            .clone(),
                    ),
                };
                (rows, weights)
            }
        };
        if rows.num_rows() == 0 {
            return Ok(None);
        }
        let columns = self
            .projection
            .iter()
            .map(|e| {
                e.evaluate(&rows)
                    .and_then(|v| v.into_array(rows.num_rows()))
            })
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(df)?;
        // A projection may keep no column (`count(*)` needs only the rows' number).
        let count = RecordBatchOptions::new().with_row_count(Some(rows.num_rows()));
        let output = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &count)
            .map_err(arrow)?;
        Ok(Some(match weights {
            None => ChangeBatch::inserts(output),
            Some(w) => ChangeBatch::with_weights(output, Int64Array::from(w.values().to_vec()))
                .map_err(arrow)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::test_util::{changes, render};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::execution::context::ExecutionProps;
    use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
    use datafusion::logical_expr::{col, lit};
    use datafusion::physical_expr::create_physical_expr;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn physical(expr: datafusion::logical_expr::Expr) -> Arc<dyn PhysicalExpr> {
        let schema = DFSchema::try_from(input_schema()).unwrap();
        create_physical_expr(
            &expr,
            &schema,
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )
        .unwrap()
    }

    #[test]
    fn filters_and_projects_keeping_weights() {
        let output = Arc::new(Schema::new(vec![Field::new("k2", DataType::Int64, false)]));
        let mut op = FilterProjectOperator::new(
            Some(physical(col("k").gt(lit(1i64)))),
            vec![physical(col("k") * lit(2i64))],
            output,
        );
        let out = op
            .process(changes(
                &input_schema(),
                "+ 1 a
                 + 2 b
                 - 3 c
                 + 4 NULL",
            ))
            .unwrap()
            .unwrap();
        assert_eq!(render(&out), "+ 4\n- 6\n+ 8");
    }

    #[test]
    fn nothing_left_is_no_change() {
        let output = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let mut op = FilterProjectOperator::new(
            Some(physical(col("v").eq(lit("zzz")))),
            vec![physical(col("k"))],
            output,
        );
        assert!(
            op.process(changes(&input_schema(), "+ 1 a\n- 1 NULL"))
                .unwrap()
                .is_none()
        );
    }
}
