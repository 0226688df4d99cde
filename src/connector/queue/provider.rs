//! [`QueueTableProvider`]: a queue table as a DataFusion `TableProvider`. Scans read the current
//! contents; `INSERT`, `UPDATE`, `DELETE` and `TRUNCATE` go through the table's write path.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Constraint, Constraints, DFSchema};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::DataFusionError;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, ExprSchemable, col};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::TryStreamExt;

use crate::error::Error;

use super::table::QueueTable;

/// A queue table seen by DataFusion.
#[derive(Debug)]
pub struct QueueTableProvider {
    /// The table.
    table: Arc<QueueTable>,
    /// The primary key, for planners and `information_schema`.
    constraints: Constraints,
}

impl QueueTableProvider {
    /// The table behind the provider.
    pub fn table(&self) -> &Arc<QueueTable> {
        &self.table
    }

    /// Wraps a table.
    pub fn new(table: Arc<QueueTable>) -> Self {
        let pk = &table.def().primary_key;
        let constraints = if pk.is_empty() {
            Constraints::default()
        } else {
            Constraints::new_unverified(vec![Constraint::PrimaryKey(pk.clone())])
        };
        Self { table, constraints }
    }

    fn physical(&self, state: &dyn Session, expr: &Expr) -> DfResult<Arc<dyn PhysicalExpr>> {
        let schema = DFSchema::try_from(self.schema())?;
        create_physical_expr(
            expr,
            &schema,
            state.execution_props(),
            &PhysicalPlanningContext::default(),
        )
    }

    fn predicate(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> DfResult<Option<Arc<dyn PhysicalExpr>>> {
        conjunction(filters)
            .map(|e| self.physical(state, &e))
            .transpose()
    }
}

/// The rows of a table that does not keep them in memory: its log up to `end`, read a record
/// at a time as the scan is polled.
#[derive(Debug)]
struct LogPartition {
    log: crate::storage::Log,
    end: u64,
    schema: SchemaRef,
}

impl PartitionStream for LogPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let log = self.log.clone();
        let end = self.end;
        let schema = Arc::clone(&self.schema);
        let rows = futures::stream::try_unfold(0u64, move |position| {
            let log = log.clone();
            let schema = Arc::clone(&schema);
            async move {
                if position >= end {
                    return Ok(None);
                }
                let Some((at, change)) = log
                    .read(position, 1)
                    .map_err(|e| DataFusionError::from(Error::from(e)))?
                    .pop()
                else {
                    return Ok(None);
                };
                let batch = RecordBatch::try_new(schema, change.data().columns().to_vec())?;
                Ok(Some((batch, at + 1)))
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            rows,
        ))
    }
}

/// The single-row `count` result DataFusion expects from a DML plan.
fn count_result(count: u64) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(UInt64Array::from(vec![count]))],
    )?;
    Ok(MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        schema,
        None,
    )?)
}

#[async_trait]
impl TableProvider for QueueTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.table.def().schema)
    }

    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.constraints)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// What an `INSERT` that leaves `column` out writes in it (DataFusion's planner asks).
    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        let def = self.table.def();
        let i = def.schema.index_of(column).ok()?;
        def.defaults.get(i)?.as_ref().map(|d| &d.expr)
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !self.table.keeps_rows() {
            // Read from the log a record at a time, up to where it ends now.
            let partition = LogPartition {
                log: self.table.log().clone(),
                end: self.table.log().end(),
                schema: self.schema(),
            };
            return Ok(Arc::new(StreamingTableExec::try_new(
                self.schema(),
                vec![Arc::new(partition)],
                projection,
                Vec::new(),
                false,
                None,
            )?));
        }
        let batches = self.table.snapshot()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(Error::unsupported(format!("{insert_op} into a table")).into());
        }
        self.table.refuse_if_source("INSERT INTO")?;
        let sink = QueueSink {
            table: Arc::clone(&self.table),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let predicate = self.predicate(state, filters)?;
        count_result(self.table.delete(predicate.as_ref()).await?)
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let predicate = self.predicate(state, filters)?;
        let schema = self.schema();
        let new_row = schema
            .fields()
            .iter()
            .map(|f| {
                let expr = assignments
                    .iter()
                    .find(|(name, _)| name == f.name())
                    .map(|(_, e)| {
                        e.clone()
                            .cast_to(f.data_type(), &DFSchema::try_from(Arc::clone(&schema))?)
                    })
                    .unwrap_or_else(|| Ok(col(f.name())))?;
                self.physical(state, &expr)
            })
            .collect::<DfResult<Vec<_>>>()?;
        count_result(self.table.update(predicate.as_ref(), &new_row).await?)
    }

    async fn truncate(&self, _state: &dyn Session) -> DfResult<Arc<dyn ExecutionPlan>> {
        count_result(self.table.delete(None).await?)
    }
}

/// Where `INSERT` rows go: gathered into one batch, then one durable write.
#[derive(Debug)]
struct QueueSink {
    /// The target table.
    table: Arc<QueueTable>,
}

impl DisplayAs for QueueSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueSink: table={}", self.table.def().name)
    }
}

#[async_trait]
impl DataSink for QueueSink {
    fn schema(&self) -> &SchemaRef {
        &self.table.def().schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let batches: Vec<RecordBatch> = data.try_collect().await?;
        let schema = self.schema();
        let input_schema = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or(Arc::clone(schema));
        let batch = datafusion::arrow::compute::concat_batches(&input_schema, &batches)?;
        Ok(self.table.insert(batch).await?)
    }
}

/// A table read as the versioned side of a temporal join (`t FOR SYSTEM_TIME AS OF
/// PROCTIME()`, rewritten by the parser to [`crate::sql::parser::LOOKUP_FUNCTION`]): a query
/// reads its current rows like the table's; the stream planner looks rows up in it instead of
/// joining its changes.
#[derive(Debug)]
pub struct LookupProvider {
    inner: QueueTableProvider,
}

impl LookupProvider {
    /// The table behind the provider.
    pub fn table(&self) -> &Arc<QueueTable> {
        self.inner.table()
    }
}

#[async_trait]
impl TableProvider for LookupProvider {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.inner.scan(state, projection, filters, limit).await
    }
}

/// `sluice_lookup('t')`: table `t` as a [`LookupProvider`].
#[derive(Debug)]
pub struct LookupFunction {
    tables: Arc<crate::catalog::registry::TableRegistry>,
}

impl LookupFunction {
    /// Looks tables up in `tables`.
    pub fn new(tables: Arc<crate::catalog::registry::TableRegistry>) -> Self {
        Self { tables }
    }
}

impl datafusion::catalog::TableFunctionImpl for LookupFunction {
    fn call_with_args(
        &self,
        args: datafusion::catalog::TableFunctionArgs,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let name = match args.exprs() {
            [Expr::Literal(datafusion::common::ScalarValue::Utf8(Some(name)), _)] => name,
            _ => {
                return Err(DataFusionError::Plan(
                    "FOR SYSTEM_TIME AS OF PROCTIME() follows a table's name".into(),
                ));
            }
        };
        let bare = name.strip_prefix("public.").unwrap_or(name);
        let table = self.tables.get(bare).ok_or_else(|| {
            DataFusionError::from(Error::user(
                crate::error::sqlstate::UNDEFINED_TABLE,
                format!("table \"{name}\" does not exist (FOR SYSTEM_TIME AS OF reads a table)"),
            ))
        })?;
        Ok(Arc::new(LookupProvider {
            inner: QueueTableProvider::new(table),
        }))
    }
}
