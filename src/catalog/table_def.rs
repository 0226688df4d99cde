//! [`TableDef`]: a table as `CREATE TABLE` declared it.

use datafusion::arrow::datatypes::SchemaRef;

use super::FIRST_USER_OID;

/// A table's definition.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Catalog id, unique for the life of the data directory, never reused.
    pub id: u32,
    /// Name, lowercased unless it was quoted.
    pub name: String,
    /// Column names and types; nullability says whether a column may hold NULL.
    pub schema: SchemaRef,
    /// Indexes into `schema` of the primary key columns, empty when there is none.
    pub primary_key: Vec<usize>,
    /// `APPEND ONLY`: rows are never updated or deleted, so no state is kept for changes.
    pub append_only: bool,
    /// Per column, the PostgreSQL type the user declared when it says more than the Arrow type
    /// does (`varchar(20)` is Utf8 in Arrow): its type OID and `atttypmod`. `None` means the
    /// type follows from the Arrow type.
    pub declared_types: Vec<Option<(u32, i32)>>,
    /// `WATERMARK FOR ts AS …`: rows behind the watermark are dropped at insert and counted.
    pub watermark: Option<crate::stream::WatermarkDef>,
    /// The `CREATE TABLE` statement as the user wrote it; replayed on restart.
    pub sql: String,
    /// `CREATE SOURCE`: only its connector writes to it, and its rows are read from its log
    /// rather than kept in memory.
    pub source: bool,
    /// `WITH (connector = …)`: where its rows come from.
    pub connector: Option<crate::connector::spec::SourceSpec>,
    /// Per column, its `DEFAULT` (`None`: NULL), what a row written without the column gets.
    pub defaults: Vec<Option<ColumnDefault>>,
}

/// A column's `DEFAULT`.
#[derive(Debug, Clone)]
pub struct ColumnDefault {
    /// As written (`gen_random_uuid()`), as the catalogs show it.
    pub sql: String,
    /// Planned and analyzed, of the column's type: what an `INSERT` leaving the column out
    /// evaluates (per row: `gen_random_uuid()` differs row to row; `now()` is the statement's).
    pub expr: datafusion::logical_expr::Expr,
}

impl ColumnDefault {
    /// The default's values for `rows` rows (of the type it was planned as).
    pub fn evaluate(
        &self,
        rows: usize,
    ) -> crate::error::Result<datafusion::arrow::array::ArrayRef> {
        use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
        use datafusion::arrow::datatypes::Schema;
        use datafusion::common::DFSchema;
        use datafusion::execution::context::ExecutionProps;
        use datafusion::optimizer::simplify_expressions::{ExprSimplifier, SimplifyContext};
        let now = chrono::Utc::now();
        let props = ExecutionProps::new().with_query_execution_start_time(now);
        let schema = std::sync::Arc::new(DFSchema::empty());
        // `now()` and the like become the statement's values first, as in a query.
        let context = SimplifyContext::builder()
            .with_schema(schema.clone())
            .with_query_execution_start_time(Some(now))
            .build();
        let expr = ExprSimplifier::new(context).simplify(self.expr.clone())?;
        let physical = datafusion::physical_expr::create_physical_expr(
            &expr,
            &schema,
            &props,
            &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(
            ),
        )?;
        let batch = RecordBatch::try_new_with_options(
            std::sync::Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        Ok(physical.evaluate(&batch)?.into_array(rows)?)
    }
}

impl TableDef {
    /// Column `column`'s values for `rows` rows written without it: its default, or NULLs.
    pub fn default_values(
        &self,
        column: usize,
        rows: usize,
    ) -> crate::error::Result<datafusion::arrow::array::ArrayRef> {
        let data_type = self.schema.field(column).data_type();
        match self.defaults.get(column).and_then(Option::as_ref) {
            Some(default) => Ok(datafusion::arrow::compute::cast(
                &default.evaluate(rows)?,
                data_type,
            )?),
            None => Ok(datafusion::arrow::array::new_null_array(data_type, rows)),
        }
    }

    /// Column `column`'s `DEFAULT` as written, if it has one.
    pub fn default_sql(&self, column: usize) -> Option<&str> {
        Some(self.defaults.get(column)?.as_ref()?.sql.as_str())
    }

    /// The OID of column `column`'s default (`pg_attrdef.oid`): past every table's and key's
    /// OID, 2048 per table.
    pub fn attrdef_oid(&self, column: usize) -> u32 {
        0x4000_0000_u32
            .wrapping_add(self.id.wrapping_mul(2048))
            .wrapping_add(column as u32)
    }

    /// The PostgreSQL OID of the table, as `pg_class.oid`.
    pub fn oid(&self) -> u32 {
        FIRST_USER_OID + 2 * self.id
    }

    /// The OID of the table's primary key index (`<table>_pkey`), when it has a key.
    pub fn pkey_oid(&self) -> Option<u32> {
        (!self.primary_key.is_empty()).then(|| self.oid() + 1)
    }

    /// The PostgreSQL type OID and `atttypmod` of column `i`, as `pg_attribute` lists them.
    pub fn column_pg_type(&self, i: usize) -> (u32, i32) {
        match self.declared_types.get(i).copied().flatten() {
            Some(declared) => declared,
            None => {
                let dt = self.schema.field(i).data_type();
                (
                    super::pg_types::pg_type(dt).oid(),
                    super::pg_types::type_modifier(dt),
                )
            }
        }
    }

    /// The columns a connector decodes: all but the `INCLUDE` ones.
    pub fn payload_schema(&self) -> SchemaRef {
        let includes: Vec<&str> = self
            .connector
            .iter()
            .flat_map(|c| c.includes.iter().map(|i| i.column.as_str()))
            .collect();
        let fields: Vec<_> = self
            .schema
            .fields()
            .iter()
            .filter(|f| !includes.contains(&f.name().as_str()))
            .cloned()
            .collect();
        std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
    }

    /// Names of the primary key columns, in key order.
    pub fn primary_key_names(&self) -> Vec<&str> {
        self.primary_key
            .iter()
            .map(|&i| self.schema.field(i).name().as_str())
            .collect()
    }
}
