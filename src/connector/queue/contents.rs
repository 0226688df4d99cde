//! [`TableContents`]: the rows a table holds now, as the sum of every change batch applied so
//! far.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::stream::ChangeBatch;

/// The current rows of a table.
#[derive(Debug)]
pub enum TableContents {
    /// A multiset of rows kept as the batches they arrived in: tables without a primary key.
    /// A retraction removes one equal row.
    Batches {
        /// The table's schema.
        schema: SchemaRef,
        /// The rows, in arrival order.
        batches: Vec<RecordBatch>,
    },
    /// Rows by primary key, in key order: a later insertion of a key replaces the row.
    Keyed(KeyedRows),
    /// Rows not kept in memory, only counted: an append-only table or a source, whose rows
    /// are read back from the log.
    Counted {
        /// Rows inserted minus rows retracted.
        rows: usize,
    },
}

/// Rows of a table with a primary key, in Arrow's row format.
#[derive(Debug)]
pub struct KeyedRows {
    /// The table's schema.
    schema: SchemaRef,
    /// Indexes of the key columns in `schema`.
    key_columns: Vec<usize>,
    /// Encodes the key columns; its byte order is the key's sort order.
    key_converter: RowConverter,
    /// Encodes whole rows.
    row_converter: RowConverter,
    /// Key bytes → row bytes.
    rows: BTreeMap<Box<[u8]>, Box<[u8]>>,
    /// Bytes `rows` holds (keys, rows, entries), kept as it changes.
    bytes: usize,
    /// The rows as one batch, rebuilt on the first read after a change.
    snapshot: Option<RecordBatch>,
}

fn converter(schema: &SchemaRef, columns: &[usize]) -> Result<RowConverter, ArrowError> {
    RowConverter::new(
        columns
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )
}

impl TableContents {
    /// Empty contents for a table whose rows are only counted, not kept.
    pub fn counted() -> Self {
        Self::Counted { rows: 0 }
    }

    /// Whether the rows themselves are kept (else they are in the log only).
    pub fn keeps_rows(&self) -> bool {
        !matches!(self, Self::Counted { .. })
    }

    /// Empty contents for a table; keyed when `primary_key` names columns.
    pub fn new(schema: SchemaRef, primary_key: &[usize]) -> Result<Self, ArrowError> {
        if primary_key.is_empty() {
            return Ok(Self::Batches {
                schema,
                batches: Vec::new(),
            });
        }
        let all: Vec<usize> = (0..schema.fields().len()).collect();
        Ok(Self::Keyed(KeyedRows {
            key_converter: converter(&schema, primary_key)?,
            row_converter: converter(&schema, &all)?,
            key_columns: primary_key.to_vec(),
            schema,
            rows: BTreeMap::new(),
            bytes: 0,
            snapshot: None,
        }))
    }

    /// The rows, as batches that share memory with the contents (cheap to clone).
    pub fn snapshot(&mut self) -> Result<Vec<RecordBatch>, ArrowError> {
        match self {
            Self::Batches { batches, .. } => Ok(batches.clone()),
            Self::Keyed(keyed) => Ok(vec![keyed.snapshot()?]),
            Self::Counted { .. } => Err(ArrowError::InvalidArgumentError(
                "the table's rows are in its log only".into(),
            )),
        }
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        match self {
            Self::Batches { batches, .. } => batches.iter().map(RecordBatch::num_rows).sum(),
            Self::Keyed(keyed) => keyed.rows.len(),
            Self::Counted { rows } => *rows,
        }
    }

    /// Rows held in memory and their bytes (an estimate: Arrow buffers, or keys, rows and
    /// tree entries, plus the cached snapshot of a keyed table). A table whose rows are in its
    /// log only holds none. Constant time for a keyed table; a table without a primary key
    /// adds up its batches.
    pub fn state_size(&self) -> crate::operator::StateSize {
        let (rows, bytes) = match self {
            Self::Batches { batches, .. } => (
                batches.iter().map(RecordBatch::num_rows).sum(),
                batches
                    .iter()
                    .flat_map(|b| b.columns())
                    .map(crate::operator::array_bytes)
                    .sum(),
            ),
            Self::Keyed(keyed) => (
                keyed.rows.len(),
                keyed.bytes
                    + keyed
                        .snapshot
                        .as_ref()
                        .map_or(0, RecordBatch::get_array_memory_size),
            ),
            Self::Counted { .. } => (0, 0),
        };
        crate::operator::StateSize {
            rows: rows as u64,
            bytes: bytes as u64,
        }
    }

    /// The keyed rows, when the table has a primary key.
    pub fn keyed(&self) -> Option<&KeyedRows> {
        match self {
            Self::Keyed(k) => Some(k),
            Self::Batches { .. } | Self::Counted { .. } => None,
        }
    }

    /// Applies a change batch: retractions first, then insertions.
    pub fn apply(&mut self, change: &ChangeBatch) -> Result<(), ArrowError> {
        if let Self::Counted { rows } = self {
            let (inserts, retractions) = change.count_by_sign();
            *rows = (*rows + inserts).saturating_sub(retractions);
            return Ok(());
        }
        let (inserts, retractions) = change.split_by_sign()?;
        match self {
            Self::Counted { .. } => {}
            Self::Batches { schema, batches } => {
                if retractions.num_rows() > 0 {
                    remove_equal_rows(schema, batches, &retractions)?;
                }
                if inserts.num_rows() > 0 {
                    batches.push(inserts);
                }
            }
            Self::Keyed(keyed) => {
                keyed.snapshot = None;
                if retractions.num_rows() > 0 {
                    let keys = keyed.keys_of(&retractions)?;
                    for key in keys.iter() {
                        if let Some((k, row)) = keyed.rows.remove_entry(key.as_ref()) {
                            keyed.bytes -= entry_bytes(&k, &row);
                        }
                    }
                }
                if inserts.num_rows() > 0 {
                    let keys = keyed.keys_of(&inserts)?;
                    let rows = keyed.row_converter.convert_columns(inserts.columns())?;
                    for (key, row) in keys.iter().zip(rows.iter()) {
                        keyed.bytes += entry_bytes(key.as_ref(), row.as_ref());
                        if let Some(old) =
                            keyed.rows.insert(key.as_ref().into(), row.as_ref().into())
                        {
                            keyed.bytes -= entry_bytes(key.as_ref(), &old);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl KeyedRows {
    /// The key columns' indexes.
    pub fn key_columns(&self) -> &[usize] {
        &self.key_columns
    }

    /// The encoded keys of a batch in the table's schema.
    pub fn keys_of(&self, batch: &RecordBatch) -> Result<datafusion::arrow::row::Rows, ArrowError> {
        let key_arrays: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        self.key_converter.convert_columns(&key_arrays)
    }

    /// The encoded keys of a batch holding only the key columns, in key order.
    pub fn key_rows_of(
        &self,
        keys: &RecordBatch,
    ) -> Result<datafusion::arrow::row::Rows, ArrowError> {
        self.key_converter.convert_columns(keys.columns())
    }

    /// True when a row with this encoded key is present.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.rows.contains_key(key)
    }

    /// The present rows among `keys`, as one batch (keys not present are skipped).
    pub fn lookup<'a>(
        &self,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Result<RecordBatch, ArrowError> {
        let parser = self.row_converter.parser();
        let found: Vec<&[u8]> = keys
            .filter_map(|k| self.rows.get(k))
            .map(|r| &**r)
            .collect();
        let columns = self
            .row_converter
            .convert_rows(found.iter().map(|r| parser.parse(r)))?;
        batch(&self.schema, columns)
    }

    fn snapshot(&mut self) -> Result<RecordBatch, ArrowError> {
        if let Some(s) = &self.snapshot {
            return Ok(s.clone());
        }
        let parser = self.row_converter.parser();
        let columns = self
            .row_converter
            .convert_rows(self.rows.values().map(|r| parser.parse(r)))?;
        let snapshot = batch(&self.schema, columns)?;
        self.snapshot = Some(snapshot.clone());
        Ok(snapshot)
    }
}

/// Bytes a keyed row costs: its key and row bytes, the two boxes, and its share of a B-tree
/// node.
fn entry_bytes(key: &[u8], row: &[u8]) -> usize {
    key.len()
        + row.len()
        + 2 * std::mem::size_of::<Box<[u8]>>()
        + crate::operator::BTREE_ENTRY_OVERHEAD
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, ArrowError> {
    if columns.is_empty() {
        return Ok(RecordBatch::new_empty(Arc::clone(schema)));
    }
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// Removes one stored row per retracted row, comparing whole rows in Arrow's row format.
fn remove_equal_rows(
    schema: &SchemaRef,
    batches: &mut Vec<RecordBatch>,
    retractions: &RecordBatch,
) -> Result<(), ArrowError> {
    let all: Vec<usize> = (0..schema.fields().len()).collect();
    let converter = converter(schema, &all)?;
    let wanted = converter.convert_columns(retractions.columns())?;
    let mut pending: HashMap<&[u8], usize> = HashMap::new();
    for row in wanted.iter() {
        *pending.entry(row.data()).or_default() += 1;
    }
    let mut kept = Vec::with_capacity(batches.len());
    for batch in batches.drain(..) {
        if pending.is_empty() {
            kept.push(batch);
            continue;
        }
        let rows = converter.convert_columns(batch.columns())?;
        let keep: BooleanArray = rows
            .iter()
            .map(|row| match pending.get_mut(row.as_ref()) {
                Some(n) => {
                    *n -= 1;
                    if *n == 0 {
                        pending.remove(row.as_ref());
                    }
                    Some(false)
                }
                None => Some(true),
            })
            .collect();
        let filtered = filter_record_batch(&batch, &keep)?;
        if filtered.num_rows() > 0 {
            kept.push(filtered);
        }
    }
    *batches = kept;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn rows(k: &[i32], v: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int32Array::from(k.to_vec())),
                Arc::new(StringArray::from(v.to_vec())),
            ],
        )
        .unwrap()
    }

    fn keys(contents: &mut TableContents) -> Vec<i32> {
        let mut out: Vec<i32> = contents
            .snapshot()
            .unwrap()
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn multiset_retraction_removes_one_equal_row() {
        let mut c = TableContents::new(schema(), &[]).unwrap();
        c.apply(&ChangeBatch::inserts(rows(&[1, 1, 2], &["a", "a", "b"])))
            .unwrap();
        c.apply(&ChangeBatch::retractions(rows(&[1], &["a"])))
            .unwrap();
        assert_eq!(keys(&mut c), vec![1, 2]);
        // a retraction of a row that differs in any column removes nothing
        c.apply(&ChangeBatch::retractions(rows(&[2], &["x"])))
            .unwrap();
        assert_eq!(c.num_rows(), 2);
    }

    #[test]
    fn keyed_insert_replaces_and_retraction_removes_by_key() {
        let mut c = TableContents::new(schema(), &[0]).unwrap();
        c.apply(&ChangeBatch::inserts(rows(&[2, 1], &["b", "a"])))
            .unwrap();
        c.apply(&ChangeBatch::inserts(rows(&[1], &["z"]))).unwrap();
        let snap = c.snapshot().unwrap();
        assert_eq!(snap[0].column(1).as_string::<i32>().value(0), "z");
        let change =
            ChangeBatch::with_weights(rows(&[2], &["b"]), Int64Array::from(vec![-1])).unwrap();
        c.apply(&change).unwrap();
        assert_eq!(keys(&mut c), vec![1]);
    }

    /// A keyed table's byte count follows replacements and deletions back to nothing.
    #[test]
    fn keyed_bytes_follow_the_rows() {
        let mut c = TableContents::new(schema(), &[0]).unwrap();
        let long = "b".repeat(200);
        c.apply(&ChangeBatch::inserts(rows(&[1, 2], &["a", &long])))
            .unwrap();
        let two = c.state_size();
        assert_eq!(two.rows, 2);
        // replacing a row with a shorter one shrinks it
        c.apply(&ChangeBatch::inserts(rows(&[2], &["b"]))).unwrap();
        let replaced = c.state_size();
        assert_eq!(replaced.rows, 2);
        assert!(
            replaced.bytes + 150 < two.bytes,
            "{replaced:?} after {two:?}"
        );
        let gone =
            ChangeBatch::with_weights(rows(&[1, 2], &["a", "b"]), Int64Array::from(vec![-1, -1]))
                .unwrap();
        c.apply(&gone).unwrap();
        assert_eq!(c.state_size(), crate::operator::StateSize::default());
        assert_eq!(TableContents::counted().state_size().bytes, 0);
    }
}
