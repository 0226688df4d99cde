//! [`ViewContents`]: the rows of a view, a multiset kept in Arrow's row format, to which each
//! epoch's changes are applied and from which snapshots are built.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::operator::keys::{RowMap, row_map};
use crate::state::{StateError, columns};
use crate::stream::ChangeBatch;

/// A view's rows: row bytes → multiplicity; or, for an append-only view (`EMIT ON WINDOW
/// CLOSE`), simply the batches emitted, which costs no hashing and snapshots for free.
#[derive(Debug)]
pub struct ViewContents {
    schema: SchemaRef,
    /// Append-only: every change is an insertion, kept as it came.
    appended: Option<Vec<RecordBatch>>,
    converter: RowConverter,
    rows: RowMap<i64>,
}

impl ViewContents {
    /// Empty contents of an append-only view.
    pub fn append_only(schema: SchemaRef) -> Result<Self, ArrowError> {
        let mut contents = Self::new(schema)?;
        contents.appended = Some(Vec::new());
        Ok(contents)
    }

    /// Empty contents of `schema`.
    pub fn new(schema: SchemaRef) -> Result<Self, ArrowError> {
        let converter = RowConverter::new(
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Self {
            schema,
            appended: None,
            converter,
            rows: row_map(0),
        })
    }

    /// The rows' schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Applies a batch of changes.
    pub fn apply(&mut self, change: &ChangeBatch) -> Result<(), ArrowError> {
        if change.num_rows() == 0 {
            return Ok(());
        }
        if let Some(appended) = &mut self.appended {
            if !change.is_insert_only() {
                return Err(ArrowError::InvalidArgumentError(
                    "an append-only view received a retraction".into(),
                ));
            }
            appended.push(change.data().clone());
            return Ok(());
        }
        let rows = self.converter.convert_columns(change.data().columns())?;
        for (i, row) in rows.iter().enumerate() {
            let weight = change.weights().map_or(1, |w| w.value(i));
            let count = match self.rows.get_mut(row.data()) {
                Some(c) => c,
                None => self.rows.entry(row.data().into()).or_insert(0),
            };
            *count += weight;
            // A count below zero (a retraction of a row never inserted) also drops the row.
            if *count <= 0 {
                self.rows.remove(row.data());
            }
        }
        Ok(())
    }

    /// The rows as record batches of at most `batch_rows` rows each.
    pub fn to_batches(&self, batch_rows: usize) -> Result<Vec<RecordBatch>, ArrowError> {
        if let Some(batches) = &self.appended {
            return Ok(batches.clone());
        }
        let parser = self.converter.parser();
        let mut out = Vec::new();
        let mut pending = Vec::with_capacity(batch_rows.min(self.rows.len()));
        let flush = |pending: &mut Vec<&[u8]>, out: &mut Vec<RecordBatch>| {
            if pending.is_empty() {
                return Ok::<(), ArrowError>(());
            }
            let columns = self
                .converter
                .convert_rows(pending.iter().map(|r| parser.parse(r)))?;
            out.push(RecordBatch::try_new(self.schema.clone(), columns)?);
            pending.clear();
            Ok(())
        };
        for (row, &count) in &self.rows {
            for _ in 0..count {
                pending.push(row.as_ref());
                if pending.len() == batch_rows {
                    flush(&mut pending, &mut out)?;
                }
            }
        }
        flush(&mut pending, &mut out)?;
        Ok(out)
    }

    /// The contents for a checkpoint: an append-only view's batches as they are; otherwise
    /// one batch of (row bytes, count).
    pub fn checkpoint(&self) -> Result<(SchemaRef, Vec<RecordBatch>), StateError> {
        if let Some(appended) = &self.appended {
            return Ok((self.schema.clone(), appended.clone()));
        }
        let batch = columns::batch(vec![
            ("row", columns::blobs(self.rows.keys().map(|r| Some(&**r)))),
            (
                "count",
                columns::i64s(self.rows.values().copied().collect()),
            ),
        ])?;
        Ok((batch.schema(), vec![batch]))
    }

    /// Replaces the contents with a checkpoint's.
    pub fn restore(&mut self, batches: &[RecordBatch]) -> Result<(), StateError> {
        if let Some(appended) = &mut self.appended {
            if let Some(b) = batches
                .iter()
                .find(|b| b.schema().fields() != self.schema.fields())
            {
                return Err(StateError::mismatch(format!(
                    "view rows of schema {:?}, not {:?}",
                    b.schema(),
                    self.schema
                )));
            }
            *appended = batches.to_vec();
            return Ok(());
        }
        self.rows.clear();
        for batch in batches {
            let rows = columns::blob_column(batch, "row")?;
            let counts = columns::i64_column(batch, "count")?;
            self.rows.reserve(batch.num_rows());
            for (i, count) in counts.into_iter().enumerate() {
                self.rows.insert(rows.value(i).into(), count);
            }
        }
        Ok(())
    }

    /// The whole contents as insertions (to start a view that reads this one).
    pub fn as_inserts(&self) -> Result<Vec<ChangeBatch>, ArrowError> {
        Ok(self
            .to_batches(8192)?
            .into_iter()
            .map(ChangeBatch::inserts)
            .collect())
    }
}
