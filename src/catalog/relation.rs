//! [`Relation`]: a small system relation (`pg_catalog`, `information_schema`) filled row by row
//! from the catalog each time a query plans, and the shorthands that fill it.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_empty_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;

/// A relation being filled row by row (catalog relations are small).
pub struct Relation {
    fields: Vec<Field>,
    rows: Vec<Vec<ScalarValue>>,
}

impl Relation {
    pub fn new(columns: &[(&str, DataType)]) -> Self {
        Self {
            fields: columns
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, values: Vec<ScalarValue>) {
        debug_assert_eq!(values.len(), self.fields.len());
        self.rows.push(values);
    }

    /// The relation as a table DataFusion can scan.
    pub fn into_table(self) -> DfResult<Arc<dyn TableProvider>> {
        let batch = self.finish()?;
        Ok(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?))
    }

    /// The rows as one batch.
    pub fn finish(self) -> DfResult<RecordBatch> {
        let schema = Arc::new(Schema::new(self.fields));
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if self.rows.is_empty() {
                    return Ok(new_empty_array(f.data_type()));
                }
                let values = self.rows.iter().map(|r| {
                    let v = &r[i];
                    if v.is_null() {
                        ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null)
                    } else {
                        v.clone()
                    }
                });
                ScalarValue::iter_to_array(values)
            })
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

pub const OID: DataType = DataType::UInt32;
pub const TEXT: DataType = DataType::Utf8;
pub const BOOL: DataType = DataType::Boolean;
pub const INT2: DataType = DataType::Int16;
pub const INT4: DataType = DataType::Int32;
pub const INT8: DataType = DataType::Int64;
pub const FLOAT4: DataType = DataType::Float32;

pub fn text_array() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

pub fn o(v: u32) -> ScalarValue {
    ScalarValue::UInt32(Some(v))
}
pub fn s(v: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(v.to_string()))
}
pub fn b(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}
pub fn i2(v: i16) -> ScalarValue {
    ScalarValue::Int16(Some(v))
}
pub fn i4(v: i32) -> ScalarValue {
    ScalarValue::Int32(Some(v))
}
pub fn null() -> ScalarValue {
    ScalarValue::Null
}
