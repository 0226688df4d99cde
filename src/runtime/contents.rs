//! [`ViewContents`]: the rows of a view, kept so that an epoch costs what it changed, and
//! [`ViewRows`], the snapshot of them that `SELECT` reads.
//!
//! The rows sit in chunks of at most [`CHUNK_ROWS`] rows: an Arrow batch that is never changed
//! once built, plus a bitmap of the rows deleted since. New rows are appended to the one open
//! chunk; a deletion sets a bit. A snapshot clones the chunk list (a few `Arc`s per chunk) and
//! shares the batches, so publishing an epoch costs the number of chunks, not the number of
//! rows, and no row is copied. A sealed chunk whose live rows fall below half moves them to the
//! open chunk and is freed, so dead rows never take more room than live ones.
//!
//! Views that retract rows are indexed on their key (the group keys of an aggregate, found
//! from DataFusion's functional dependencies; otherwise every column): a hash table from the
//! key to each row's place finds the row a retraction removes, and every sealed chunk keeps its
//! rows' positions sorted by key hash so that a snapshot finds the rows of a key
//! ([`ViewRows::lookup`]) without reading the others. An append-only view (`EMIT ON WINDOW
//! CLOSE`) keeps no index.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array, make_comparator,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{
    SortOptions, concat_batches, filter_record_batch, take_record_batch,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use hashbrown::HashTable;

use crate::state::StateError;
use crate::state::writer::PieceData;
use crate::stream::ChangeBatch;

/// Rows per chunk.
pub const CHUNK_ROWS: usize = 8192;

/// A weight larger than this (many copies of one row) is refused rather than expanded.
const MAX_WEIGHT: i64 = 1 << 20;

/// A row's place: chunk id in the high 32 bits, row in the low.
type Loc = u64;

fn loc(chunk: u32, row: usize) -> Loc {
    (u64::from(chunk) << 32) | row as u64
}

fn chunk_of(loc: Loc) -> usize {
    (loc >> 32) as usize
}

fn row_of(loc: Loc) -> usize {
    (loc & 0xffff_ffff) as usize
}

/// One indexed row.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    loc: Loc,
}

/// A run of rows that never changes but for its deletion bitmap.
#[derive(Debug, Clone)]
struct Chunk {
    batch: RecordBatch,
    /// The key of each row in row format (indexed views with key columns).
    keys: Option<Arc<Rows>>,
    /// The hash of each row's key (indexed views).
    hashes: Arc<Vec<u64>>,
    /// Row positions sorted by hash, once the chunk is sealed (indexed views).
    sorted: Option<Arc<Vec<u32>>>,
    /// Bit `r` set: row `r` was deleted. Words past the end mean no deletion.
    dead: Arc<Vec<u64>>,
    live: usize,
}

impl Chunk {
    fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// Bytes the chunk holds: its rows (the slice of the buffers it uses), keys, hashes, hash
    /// order, and room for a full deletion bitmap.
    fn bytes(&self) -> usize {
        let rows: usize = self
            .batch
            .columns()
            .iter()
            .map(crate::operator::array_bytes)
            .sum();
        rows + self.keys.as_ref().map_or(0, |k| k.size())
            + self.hashes.capacity() * std::mem::size_of::<u64>()
            + self
                .sorted
                .as_ref()
                .map_or(0, |s| s.capacity() * std::mem::size_of::<u32>())
            + CHUNK_ROWS / 8
    }

    fn is_dead(&self, row: usize) -> bool {
        self.dead
            .get(row / 64)
            .is_some_and(|w| w & (1 << (row % 64)) != 0)
    }

    fn kill(&mut self, row: usize) {
        let dead = Arc::make_mut(&mut self.dead);
        if dead.len() <= row / 64 {
            dead.resize(row / 64 + 1, 0);
        }
        dead[row / 64] |= 1 << (row % 64);
        self.live -= 1;
    }

    /// The live rows.
    fn live_batch(&self) -> Result<RecordBatch, ArrowError> {
        if self.live == self.len() {
            return Ok(self.batch.clone());
        }
        let mask = BooleanBuffer::collect_bool(self.len(), |r| !self.is_dead(r));
        filter_record_batch(&self.batch, &BooleanArray::new(mask, None))
    }

    /// Live rows whose key hashes to `hash` and equals `key` (`None`: the empty key).
    fn rows_of(&self, hash: u64, key: Option<&[u8]>, out: &mut Vec<u32>) {
        let mut check = |r: usize| {
            if self.hashes[r] != hash || self.is_dead(r) {
                return;
            }
            let equal = match (key, &self.keys) {
                (Some(key), Some(keys)) => keys.row(r).data() == key,
                _ => true,
            };
            if equal {
                out.push(r as u32);
            }
        };
        match &self.sorted {
            Some(sorted) => {
                let start = sorted.partition_point(|&r| self.hashes[r as usize] < hash);
                for &r in &sorted[start..] {
                    if self.hashes[r as usize] != hash {
                        break;
                    }
                    check(r as usize);
                }
            }
            None => (0..self.len()).for_each(check),
        }
    }
}

/// The key index of a view that retracts rows.
#[derive(Debug)]
struct Index {
    /// Encodes the key columns (`None` when the key has no columns).
    converter: Option<RowConverter>,
    table: HashTable<Entry>,
}

/// A view's rows, updated by each epoch's changes.
#[derive(Debug)]
pub struct ViewContents {
    schema: SchemaRef,
    /// The columns the index is keyed on.
    key: Arc<[usize]>,
    index: Option<Index>,
    /// Chunks by id; a freed id is reused.
    chunks: Vec<Option<Chunk>>,
    free: Vec<u32>,
    /// The chunk new rows go to.
    open: Option<u32>,
    live: usize,
    /// Bytes of the sealed chunks (they never change but for deletion bits).
    sealed_bytes: usize,
}

impl ViewContents {
    /// Empty contents of an append-only view: no index, and a retraction is an error.
    pub fn append_only(schema: SchemaRef) -> Result<Self, ArrowError> {
        Ok(Self {
            schema,
            key: Arc::from(Vec::new()),
            index: None,
            chunks: Vec::new(),
            free: Vec::new(),
            open: None,
            live: 0,
            sealed_bytes: 0,
        })
    }

    /// Empty contents of `schema`, indexed on the columns `key` (every column if `None`).
    pub fn new(schema: SchemaRef, key: Option<Vec<usize>>) -> Result<Self, ArrowError> {
        let key: Vec<usize> = key.unwrap_or_else(|| (0..schema.fields().len()).collect());
        let converter = if key.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                key.iter()
                    .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                    .collect(),
            )?)
        };
        Ok(Self {
            schema,
            key: Arc::from(key),
            index: Some(Index {
                converter,
                table: HashTable::new(),
            }),
            chunks: Vec::new(),
            free: Vec::new(),
            open: None,
            live: 0,
            sealed_bytes: 0,
        })
    }

    /// The rows' schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Live rows.
    pub fn num_rows(&self) -> usize {
        self.live
    }

    /// Live rows, and the bytes the rows, their chunks and the key index hold.
    pub fn state_size(&self) -> crate::operator::StateSize {
        let open = self
            .open
            .and_then(|id| self.chunks[id as usize].as_ref())
            .map_or(0, Chunk::bytes);
        let index = self.index.as_ref().map_or(0, |i| {
            i.table.capacity() * (std::mem::size_of::<Entry>() + 1)
        });
        let chunks = self.chunks.capacity() * std::mem::size_of::<Option<Chunk>>()
            + self.free.capacity() * std::mem::size_of::<u32>();
        crate::operator::StateSize {
            rows: self.live as u64,
            bytes: (self.sealed_bytes + open + index + chunks) as u64,
        }
    }

    /// Applies a batch of changes, row by row in order: an insertion adds a row, a retraction
    /// removes one equal row (one with its key, preferring one equal in every column); a
    /// retraction of a row that is not there changes nothing.
    pub fn apply(&mut self, change: &ChangeBatch) -> Result<(), ArrowError> {
        let n = change.num_rows();
        if n == 0 {
            return Ok(());
        }
        let data = change.data();
        if self.index.is_none() {
            if !change.is_insert_only() {
                return Err(ArrowError::InvalidArgumentError(
                    "an append-only view received a retraction".into(),
                ));
            }
            self.append(data)?;
            return Ok(());
        }
        // Copies inserted and removed, in the batch's order.
        let (mut inserted, mut removed) = (Vec::new(), Vec::new());
        let mut order = Vec::with_capacity(n);
        for i in 0..n {
            let weight = change.weights().map_or(1, |w| w.value(i));
            if weight.abs() > MAX_WEIGHT {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "a change of weight {weight} to a view's rows"
                )));
            }
            for _ in 0..weight.abs() {
                order.push(weight > 0);
                if weight > 0 {
                    inserted.push(i as u32);
                } else {
                    removed.push(i as u32);
                }
            }
        }
        let new = if inserted.is_empty() {
            (Vec::new(), Vec::new())
        } else if inserted.len() == n && removed.is_empty() {
            // Every row inserted once (with a retraction or a weight above 1 among them,
            // `inserted` would not be the rows in order).
            self.append(data)?
        } else {
            self.append(&take_record_batch(data, &UInt32Array::from(inserted))?)?
        };
        let gone = if removed.is_empty() {
            None
        } else {
            let rows = take_record_batch(data, &UInt32Array::from(removed))?;
            let (hashes, keys) = self.encode(&rows)?;
            Some((rows, hashes, keys))
        };
        let (mut next_new, mut next_gone) = (0, 0);
        let mut touched = Vec::new();
        for insert in order {
            if insert {
                let entry = Entry {
                    hash: new.1[next_new],
                    loc: new.0[next_new],
                };
                next_new += 1;
                self.table().insert_unique(entry.hash, entry, |e| e.hash);
                continue;
            }
            let (rows, hashes, keys) = gone.as_ref().expect("removals were encoded");
            let r = next_gone;
            next_gone += 1;
            let key = keys.as_ref().map(|k| k.row(r).data());
            if let Some(at) = self.remove(hashes[r], key, rows, r)? {
                let chunk = self.chunks[chunk_of(at)].as_mut().expect("indexed chunk");
                chunk.kill(row_of(at));
                self.live -= 1;
                touched.push(chunk_of(at) as u32);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            self.tidy(id)?;
        }
        Ok(())
    }

    fn table(&mut self) -> &mut HashTable<Entry> {
        &mut self.index.as_mut().expect("an indexed view").table
    }

    /// The hash of each row's key.
    fn hashes(&self, batch: &RecordBatch) -> Result<Vec<u64>, ArrowError> {
        let mut hashes = vec![0; batch.num_rows()];
        if !self.key.is_empty() {
            let columns: Vec<ArrayRef> =
                self.key.iter().map(|&i| batch.column(i).clone()).collect();
            create_hashes(&columns, &RandomState::default(), &mut hashes)
                .map_err(|e| ArrowError::ComputeError(e.to_string()))?;
        }
        Ok(hashes)
    }

    /// The key hash and key row of each row of `batch`.
    fn encode(&self, batch: &RecordBatch) -> Result<(Vec<u64>, Option<Rows>), ArrowError> {
        let hashes = self.hashes(batch)?;
        let Some(Index {
            converter: Some(converter),
            ..
        }) = &self.index
        else {
            return Ok((hashes, None));
        };
        let columns: Vec<ArrayRef> = self.key.iter().map(|&i| batch.column(i).clone()).collect();
        Ok((hashes, Some(converter.convert_columns(&columns)?)))
    }

    /// Takes out of the index the row `r` of `rows` (with key hash `hash` and key `key`) and
    /// returns its place: among rows with its key, one equal in every column if there is one.
    fn remove(
        &mut self,
        hash: u64,
        key: Option<&[u8]>,
        rows: &RecordBatch,
        r: usize,
    ) -> Result<Option<Loc>, ArrowError> {
        let chunks = &self.chunks;
        let index = self.index.as_mut().expect("an indexed view");
        let same_key = |e: &Entry| {
            if e.hash != hash {
                return false;
            }
            let chunk = chunks[chunk_of(e.loc)].as_ref().expect("indexed chunk");
            match (key, &chunk.keys) {
                (Some(key), Some(keys)) => keys.row(row_of(e.loc)).data() == key,
                _ => true,
            }
        };
        let every_column = self.key.len() == self.schema.fields().len();
        let mut chosen = None;
        if !every_column {
            // Rows are compared in full only when the key is not unique at this moment.
            let mut candidates = index
                .table
                .iter_hash(hash)
                .filter(|e| same_key(e))
                .map(|e| e.loc);
            let first = candidates.next();
            if let Some(second) = candidates.next() {
                for at in first.into_iter().chain([second]).chain(candidates) {
                    let chunk = chunks[chunk_of(at)].as_ref().expect("indexed chunk");
                    if rows_equal(rows, r, &chunk.batch, row_of(at))? {
                        chosen = Some(at);
                        break;
                    }
                }
            }
            chosen = chosen.or(first);
        }
        let found = match chosen {
            Some(at) => index.table.find_entry(hash, |e| e.loc == at),
            None => index.table.find_entry(hash, same_key),
        };
        Ok(found.ok().map(|entry| entry.remove().0.loc))
    }

    /// Appends rows (not indexed here) to the open chunk, sealing and opening chunks as they
    /// fill; returns each row's place and key hash.
    fn append(&mut self, batch: &RecordBatch) -> Result<(Vec<Loc>, Vec<u64>), ArrowError> {
        let indexed = self.index.is_some();
        let hashes = if indexed {
            self.hashes(batch)?
        } else {
            Vec::new()
        };
        let mut locs = Vec::with_capacity(if indexed { batch.num_rows() } else { 0 });
        let mut start = 0;
        while start < batch.num_rows() {
            let id = match self.open {
                Some(id) => id,
                None => {
                    let id = self.new_chunk(batch.slice(0, 0));
                    self.open = Some(id);
                    id
                }
            };
            let converter = self.index.as_ref().and_then(|i| i.converter.as_ref());
            let chunk = self.chunks[id as usize].as_mut().expect("open chunk");
            let before = chunk.len();
            let count = (CHUNK_ROWS - before).min(batch.num_rows() - start);
            let piece = batch.slice(start, count);
            chunk.batch = if before == 0 {
                piece
            } else {
                concat_batches(&self.schema, [&chunk.batch, &piece])?
            };
            if indexed {
                Arc::make_mut(&mut chunk.hashes).extend_from_slice(&hashes[start..start + count]);
                if let Some(converter) = converter {
                    let columns: Vec<ArrayRef> = self
                        .key
                        .iter()
                        .map(|&i| batch.column(i).slice(start, count))
                        .collect();
                    let chunk_keys = chunk
                        .keys
                        .get_or_insert_with(|| Arc::new(converter.empty_rows(count, 0)));
                    converter.append(Arc::make_mut(chunk_keys), &columns)?;
                }
                locs.extend((before..before + count).map(|r| loc(id, r)));
            }
            chunk.live += count;
            self.live += count;
            if chunk.len() == CHUNK_ROWS {
                if indexed {
                    let hashes = &chunk.hashes;
                    let mut sorted: Vec<u32> = (0..CHUNK_ROWS as u32).collect();
                    sorted.sort_unstable_by_key(|&r| hashes[r as usize]);
                    chunk.sorted = Some(Arc::new(sorted));
                }
                self.sealed_bytes += chunk.bytes();
                self.open = None;
            }
            start += count;
        }
        Ok((locs, hashes))
    }

    fn new_chunk(&mut self, batch: RecordBatch) -> u32 {
        let chunk = Chunk {
            batch,
            keys: None,
            hashes: Arc::new(Vec::new()),
            sorted: None,
            dead: Arc::new(Vec::new()),
            live: 0,
        };
        match self.free.pop() {
            Some(id) => {
                self.chunks[id as usize] = Some(chunk);
                id
            }
            None => {
                self.chunks.push(Some(chunk));
                (self.chunks.len() - 1) as u32
            }
        }
    }

    /// After deletions from chunk `id`: frees it when empty; when sealed and less than half
    /// live, moves its live rows to the open chunk and frees it.
    fn tidy(&mut self, id: u32) -> Result<(), ArrowError> {
        let Some(chunk) = &self.chunks[id as usize] else {
            return Ok(());
        };
        let sealed = self.open != Some(id);
        if chunk.live > 0 && (!sealed || chunk.live * 2 >= chunk.len()) {
            return Ok(());
        }
        let chunk = self.chunks[id as usize].take().expect("checked above");
        if sealed {
            self.sealed_bytes -= chunk.bytes();
        }
        self.free.push(id);
        if self.open == Some(id) {
            self.open = None;
        }
        if chunk.live == 0 {
            return Ok(());
        }
        let table = self.table();
        for r in (0..chunk.len()).filter(|&r| !chunk.is_dead(r)) {
            let at = loc(id, r);
            if let Ok(entry) = table.find_entry(chunk.hashes[r], |e| e.loc == at) {
                entry.remove();
            }
        }
        self.live -= chunk.live;
        let (locs, hashes) = self.append(&chunk.live_batch()?)?;
        let table = self.table();
        for (loc, hash) in locs.into_iter().zip(hashes) {
            table.insert_unique(hash, Entry { hash, loc }, |e| e.hash);
        }
        Ok(())
    }

    /// The rows as they stand, for `SELECT`: shares every chunk.
    pub fn snapshot(&self) -> ViewRows {
        ViewRows {
            schema: self.schema.clone(),
            key: self.index.as_ref().map(|_| Arc::clone(&self.key)),
            chunks: self.chunks.iter().flatten().cloned().collect(),
            rows: self.live,
        }
    }

    /// The contents for a checkpoint: the live rows, in the view's schema, copied when the
    /// piece is written (on the checkpoint thread) from chunks shared now.
    pub fn checkpoint(&self) -> (SchemaRef, PieceData) {
        let rows = self.snapshot();
        let data = PieceData::Deferred(Box::new(move || Ok(rows.batches()?)));
        (self.schema.clone(), data)
    }

    /// Replaces the contents with a checkpoint's.
    pub fn restore(&mut self, batches: &[RecordBatch]) -> Result<(), StateError> {
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
        self.chunks.clear();
        self.free.clear();
        self.open = None;
        self.live = 0;
        self.sealed_bytes = 0;
        if let Some(index) = &mut self.index {
            index.table.clear();
        }
        for batch in batches {
            self.apply(&ChangeBatch::inserts(batch.clone()))?;
        }
        Ok(())
    }

    /// The whole contents as insertions (to start a view that reads this one).
    pub fn as_inserts(&self) -> Result<Vec<ChangeBatch>, ArrowError> {
        self.snapshot().as_inserts()
    }
}

/// Whether row `a` of `left` equals row `b` of `right` in every column (NULL equal to NULL).
fn rows_equal(
    left: &RecordBatch,
    a: usize,
    right: &RecordBatch,
    b: usize,
) -> Result<bool, ArrowError> {
    for (l, r) in left.columns().iter().zip(right.columns()) {
        let compare = make_comparator(l.as_ref(), r.as_ref(), SortOptions::default())?;
        if compare(a, b).is_ne() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A view's rows at one epoch, as `SELECT` reads them. Cloning shares every chunk.
#[derive(Debug, Clone)]
pub struct ViewRows {
    schema: SchemaRef,
    /// The key columns of the index, if the view is indexed.
    key: Option<Arc<[usize]>>,
    chunks: Vec<Chunk>,
    rows: usize,
}

impl ViewRows {
    /// No rows.
    pub fn empty(schema: SchemaRef) -> Self {
        Self {
            schema,
            key: None,
            chunks: Vec::new(),
            rows: 0,
        }
    }

    /// The rows' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Live rows.
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// The columns [`Self::lookup`] finds rows by, if any.
    pub fn key(&self) -> Option<&[usize]> {
        self.key.as_deref()
    }

    /// Every live row, as insertions (a new subscriber's or sink's first changes).
    pub fn as_inserts(&self) -> Result<Vec<ChangeBatch>, ArrowError> {
        Ok(self
            .batches()?
            .into_iter()
            .map(ChangeBatch::inserts)
            .collect())
    }

    /// Every live row.
    pub fn batches(&self) -> Result<Vec<RecordBatch>, ArrowError> {
        self.chunks
            .iter()
            .filter(|c| c.live > 0)
            .map(Chunk::live_batch)
            .collect()
    }

    /// The live rows whose key is one of `keys` (one array per key column, of the column's
    /// type, with one value per key sought), reading only those rows. `None` if the view is
    /// not indexed.
    pub fn lookup(&self, keys: &[ArrayRef]) -> Result<Option<Vec<RecordBatch>>, ArrowError> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        if keys.len() != key.len() {
            return Ok(None);
        }
        let sought = keys.first().map_or(1, |k| k.len());
        let mut hashes = vec![0; sought];
        let encoded = if key.is_empty() {
            None
        } else {
            create_hashes(keys, &RandomState::default(), &mut hashes)
                .map_err(|e| ArrowError::ComputeError(e.to_string()))?;
            let converter = RowConverter::new(
                key.iter()
                    .map(|&i| SortField::new(self.schema.field(i).data_type().clone()))
                    .collect(),
            )?;
            Some(converter.convert_columns(keys)?)
        };
        let mut out = Vec::new();
        let mut found = Vec::new();
        for chunk in &self.chunks {
            found.clear();
            for (q, &hash) in hashes.iter().enumerate() {
                let key = encoded.as_ref().map(|k| k.row(q).data());
                chunk.rows_of(hash, key, &mut found);
            }
            if !found.is_empty() {
                out.push(take_record_batch(
                    &chunk.batch,
                    &UInt32Array::from(found.clone()),
                )?);
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn batch(rows: &[(i64, &str)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    fn change(rows: &[(i64, &str, i64)]) -> ChangeBatch {
        let data = batch(&rows.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>());
        ChangeBatch::with_weights(data, Int64Array::from_iter_values(rows.iter().map(|r| r.2)))
            .unwrap()
    }

    /// The rows as sorted `(k, v)` pairs.
    fn rows(batches: &[RecordBatch]) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for b in batches {
            let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let v = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                out.push((k.value(i), v.value(i).to_string()));
            }
        }
        out.sort();
        out
    }

    fn probe(view: &ViewRows, k: i64) -> Vec<(i64, String)> {
        let keys: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![k]))];
        rows(&view.lookup(&keys).unwrap().unwrap())
    }

    #[test]
    fn a_multiset_keeps_copies_and_drops_retracted_ones() {
        let mut c = ViewContents::new(schema(), None).unwrap();
        c.apply(&change(&[(1, "a", 2), (2, "b", 1)])).unwrap();
        c.apply(&change(&[(1, "a", -1), (3, "c", -1)])).unwrap();
        assert_eq!(
            rows(&c.snapshot().batches().unwrap()),
            vec![(1, "a".into()), (2, "b".into())]
        );
    }

    #[test]
    fn a_copy_added_beside_a_retraction_in_one_batch_is_one_more_copy() {
        // Two rows, two copies inserted: one retraction and a row of weight 2.
        let mut c = ViewContents::new(schema(), None).unwrap();
        c.apply(&change(&[(1, "a", 1), (2, "b", 1)])).unwrap();
        c.apply(&change(&[(1, "a", -1), (2, "b", 2)])).unwrap();
        assert_eq!(
            rows(&c.snapshot().batches().unwrap()),
            vec![(2, "b".into()), (2, "b".into()), (2, "b".into())]
        );
    }

    #[test]
    fn a_snapshot_keeps_its_epoch_while_the_contents_move_on() {
        let mut c = ViewContents::new(schema(), Some(vec![0])).unwrap();
        c.apply(&change(&[(1, "a", 1), (2, "b", 1)])).unwrap();
        let before = c.snapshot();
        c.apply(&change(&[(1, "a", -1), (1, "z", 1)])).unwrap();
        assert_eq!(probe(&before, 1), vec![(1, "a".into())]);
        assert_eq!(probe(&c.snapshot(), 1), vec![(1, "z".into())]);
        assert_eq!(probe(&c.snapshot(), 7), vec![]);
    }

    #[test]
    fn a_retraction_removes_the_row_equal_in_every_column() {
        // The insertion of a key's new value comes before the retraction of its old one.
        let mut c = ViewContents::new(schema(), Some(vec![0])).unwrap();
        c.apply(&change(&[(1, "old", 1)])).unwrap();
        c.apply(&change(&[(1, "new", 1), (1, "old", -1)])).unwrap();
        assert_eq!(
            rows(&c.snapshot().batches().unwrap()),
            vec![(1, "new".into())]
        );
    }

    #[test]
    fn chunks_below_half_are_compacted_and_lookups_still_find_every_row() {
        let mut c = ViewContents::new(schema(), Some(vec![0])).unwrap();
        let n = 5 * CHUNK_ROWS as i64 + 17;
        let all: Vec<(i64, &str, i64)> = (0..n).map(|k| (k, "v", 1)).collect();
        c.apply(&change(&all)).unwrap();
        // Update three keys in four, one epoch of 1000 keys at a time.
        for start in (0..n).step_by(1000) {
            let mut updates = Vec::new();
            for k in (start..(start + 1000).min(n)).filter(|k| k % 4 != 0) {
                updates.push((k, "v", -1));
                updates.push((k, "w", 1));
            }
            c.apply(&change(&updates)).unwrap();
        }
        let snapshot = c.snapshot();
        assert_eq!(snapshot.num_rows(), n as usize);
        let stored: usize = snapshot.chunks.iter().map(Chunk::len).sum();
        assert!(
            stored < 2 * n as usize + CHUNK_ROWS,
            "{stored} rows stored for {n}"
        );
        // The sealed chunks' bytes follow compaction; the rows are counted as slices of the
        // one big input batch, not each as the whole of it.
        let sealed: usize = c
            .chunks
            .iter()
            .enumerate()
            .filter(|&(id, chunk)| chunk.is_some() && c.open != Some(id as u32))
            .map(|(_, chunk)| chunk.as_ref().map_or(0, Chunk::bytes))
            .sum();
        assert_eq!(c.sealed_bytes, sealed);
        let size = c.state_size();
        assert_eq!(size.rows, n as u64);
        assert!(
            size.bytes < 100 * stored as u64,
            "{size:?} for {stored} rows"
        );
        let got = rows(&snapshot.batches().unwrap());
        assert_eq!(got.len(), n as usize);
        for k in [0, 1, 4097, n - 1] {
            let v = if k % 4 == 0 { "v" } else { "w" };
            assert_eq!(probe(&snapshot, k), vec![(k, v.to_string())]);
        }
        // Deleting everything frees every chunk.
        let gone: Vec<(i64, &str, i64)> = got.iter().map(|(k, v)| (*k, v.as_str(), -1)).collect();
        c.apply(&change(&gone)).unwrap();
        assert_eq!(c.num_rows(), 0);
        assert!(c.chunks.iter().all(Option::is_none));
        assert_eq!(c.sealed_bytes, 0);
    }

    #[test]
    fn checkpointed_rows_restore() {
        let mut c = ViewContents::new(schema(), Some(vec![0])).unwrap();
        c.apply(&change(&[(1, "a", 1), (2, "b", 1), (2, "b", -1)]))
            .unwrap();
        let (_, data) = c.checkpoint();
        let batches = data.batches().unwrap();
        let mut d = ViewContents::new(schema(), Some(vec![0])).unwrap();
        d.restore(&batches).unwrap();
        assert_eq!(
            rows(&d.snapshot().batches().unwrap()),
            vec![(1, "a".into())]
        );
        assert_eq!(probe(&d.snapshot(), 1), vec![(1, "a".into())]);
    }

    #[test]
    fn an_append_only_view_refuses_retractions() {
        let mut c = ViewContents::append_only(schema()).unwrap();
        c.apply(&ChangeBatch::inserts(batch(&[(1, "a")]))).unwrap();
        assert!(c.apply(&change(&[(1, "a", -1)])).is_err());
        assert!(c.snapshot().lookup(&[]).unwrap().is_none());
        assert_eq!(c.num_rows(), 1);
    }
}
