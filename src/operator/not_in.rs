//! [`NotInOperator`]: `x NOT IN (SELECT y …)`, the null-aware anti join, over two changing
//! inputs.
//!
//! A left row with key `x` is output when the right side is empty; otherwise when `x` is not
//! NULL, no right key is NULL and no right key equals `x` (SQL's three-valued `NOT IN`: a NULL
//! on either side makes the comparison unknown, and the row is not output).
//!
//! Whether the right side is empty or holds a NULL is global, so the operator runs as one
//! partition. Left rows are kept by key, right keys as counts. At the end of an epoch a left
//! row changes the output by `count_after·out_after − count_before·out_before`: rows changed
//! this epoch are judged one by one; of the others, only those under right keys that changed
//! are visited, or every one when the right side became (or stopped being) empty or
//! NULL-holding.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::keys::{GroupKeys, RowMap, row_map};
use super::{KeyedOperator, OperatorError, StateSize, map_bytes};
use crate::state::{StateError, columns};
use crate::stream::{ChangeBatch, Timestamp};

const NAME: &str = "NotIn";

fn arrow(source: datafusion::arrow::error::ArrowError) -> OperatorError {
    OperatorError::arrow(NAME, source)
}

/// The right side's totals that decide every left row at once.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Globals {
    /// Right rows (NULL keys included).
    total: i64,
    /// Right rows whose key is NULL.
    nulls: i64,
}

/// `NOT IN (subquery)` (see the module documentation).
#[derive(Debug)]
pub struct NotInOperator {
    /// The left key (`x`) and the right key (`y`), of one type.
    keys: [GroupKeys; 2],
    /// Encodes left rows.
    rows: RowConverter,
    /// The output: the left schema.
    schema: SchemaRef,
    /// Left rows under each non-NULL key: row bytes → count.
    left: RowMap<RowMap<i64>>,
    /// Left rows whose key is NULL.
    left_null: RowMap<i64>,
    /// Right rows per non-NULL key.
    right: RowMap<i64>,
    globals: Globals,
    /// At the last finish.
    globals_before: Globals,
    /// Right keys changed this epoch → their count before.
    right_before: RowMap<i64>,
    /// Left rows changed this epoch → (their key, the change).
    left_delta: RowMap<(Option<Box<[u8]>>, i64)>,
    /// Bytes held through pointers.
    heap: isize,
}

impl NotInOperator {
    /// `left_key NOT IN (right_key)`, keys of type `key_type`, output `schema` (the left's).
    pub fn new(
        left_key: Arc<dyn PhysicalExpr>,
        right_key: Arc<dyn PhysicalExpr>,
        key_type: DataType,
        schema: SchemaRef,
    ) -> Result<Self, OperatorError> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            keys: [
                GroupKeys::new(vec![left_key], vec![key_type.clone()]).map_err(arrow)?,
                GroupKeys::new(vec![right_key], vec![key_type]).map_err(arrow)?,
            ],
            rows: RowConverter::new(fields).map_err(arrow)?,
            schema,
            left: row_map(0),
            left_null: row_map(0),
            right: row_map(0),
            globals: Globals::default(),
            globals_before: Globals::default(),
            right_before: row_map(0),
            left_delta: row_map(0),
            heap: 0,
        })
    }

    fn apply_left(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        let data = change.data();
        let keys = self.keys[0].encode(data, NAME)?;
        let rows = self.rows.convert_columns(data.columns()).map_err(arrow)?;
        for i in 0..data.num_rows() {
            let weight = change.weights().map_or(1, |w| w.value(i));
            let row = rows.row(i).data();
            let key = keys.columns[0].is_valid(i).then(|| keys.key(i));
            let rows_of = match key {
                Some(k) => match self.left.get_mut(k) {
                    Some(r) => r,
                    None => {
                        self.heap += 2 * k.len() as isize;
                        self.left.entry(k.into()).or_insert_with(|| row_map(1))
                    }
                },
                None => &mut self.left_null,
            };
            let count = match rows_of.get_mut(row) {
                Some(c) => c,
                None => {
                    self.heap += 2 * row.len() as isize;
                    rows_of.entry(row.into()).or_insert(0)
                }
            };
            *count += weight;
            if *count == 0 {
                rows_of.remove(row);
                self.heap -= 2 * row.len() as isize;
                if let Some(k) = key
                    && self.left.get(k).is_some_and(|r| r.is_empty())
                {
                    self.left.remove(k);
                    self.heap -= 2 * k.len() as isize;
                }
            }
            // A row's key is copied once per epoch, at its first change.
            match self.left_delta.get_mut(row) {
                Some(delta) => delta.1 += weight,
                None => {
                    self.left_delta
                        .insert(row.into(), (key.map(Into::into), weight));
                }
            }
        }
        Ok(())
    }

    fn apply_right(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        let data = change.data();
        let keys = self.keys[1].encode(data, NAME)?;
        for i in 0..data.num_rows() {
            let weight = change.weights().map_or(1, |w| w.value(i));
            self.globals.total += weight;
            if keys.columns[0].is_null(i) {
                self.globals.nulls += weight;
                continue;
            }
            let key = keys.key(i);
            let before = self.right.get(key).copied().unwrap_or(0);
            if !self.right_before.contains_key(key) {
                self.right_before.insert(key.into(), before);
            }
            let after = before + weight;
            if after == 0 {
                if self.right.remove(key).is_some() {
                    self.heap -= 2 * key.len() as isize;
                }
            } else if before == 0 {
                self.heap += 2 * key.len() as isize;
                self.right.insert(key.into(), after);
            } else if let Some(c) = self.right.get_mut(key) {
                *c = after;
            }
        }
        Ok(())
    }
}

/// Whether a left row with key `key` (`None`: NULL) is output, given the right side.
fn output(key: Option<&[u8]>, globals: Globals, count: impl Fn(&[u8]) -> i64) -> bool {
    if globals.total == 0 {
        return true;
    }
    match key {
        None => false,
        Some(k) => globals.nulls == 0 && count(k) == 0,
    }
}

impl KeyedOperator for NotInOperator {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn update(&mut self, change: &ChangeBatch) -> Result<(), OperatorError> {
        self.apply_left(change)
    }

    fn update_input(&mut self, input: usize, change: &ChangeBatch) -> Result<(), OperatorError> {
        if input == 0 {
            self.apply_left(change)
        } else {
            self.apply_right(change)
        }
    }

    fn finish(&mut self, _watermark: Option<Timestamp>) -> Result<Vec<ChangeBatch>, OperatorError> {
        let (old, new) = (self.globals_before, self.globals);
        let right_before = std::mem::replace(&mut self.right_before, row_map(0));
        let left_delta = std::mem::replace(&mut self.left_delta, row_map(0));
        let count_new = |k: &[u8]| self.right.get(k).copied().unwrap_or(0);
        let count_old = |k: &[u8]| {
            right_before
                .get(k)
                .copied()
                .unwrap_or_else(|| self.right.get(k).copied().unwrap_or(0))
        };
        let out_old = |k: Option<&[u8]>| output(k, old, count_old) as i64;
        let out_new = |k: Option<&[u8]>| output(k, new, count_new) as i64;
        let mut emit: Vec<(&[u8], i64)> = Vec::new();
        // Rows not changed this epoch whose output changed: under a right key that changed,
        // or any row when the right side flipped between empty, NULL-holding and neither.
        let flipped = (old.total == 0) != (new.total == 0) || (old.nulls > 0) != (new.nulls > 0);
        let mut groups: Vec<(Option<&[u8]>, &RowMap<i64>)> = Vec::new();
        if flipped {
            groups.extend(self.left.iter().map(|(k, rows)| (Some(k.as_ref()), rows)));
            groups.push((None, &self.left_null));
        } else {
            groups.extend(
                right_before
                    .keys()
                    .filter_map(|k| self.left.get(k).map(|rows| (Some(k.as_ref()), rows))),
            );
        }
        for (key, rows) in groups {
            let d = out_new(key) - out_old(key);
            if d == 0 {
                continue;
            }
            for (row, &count) in rows {
                // Rows changed this epoch are judged below.
                if !left_delta.contains_key(row) {
                    emit.push((row, count * d));
                }
            }
        }
        // Rows that changed this epoch (those whose copies all left are in no map any more):
        // their copies now as the right side stands now, less their copies before as it stood.
        for (row, (key, delta)) in &left_delta {
            let key = key.as_deref();
            let rows = match key {
                Some(k) => self.left.get(k),
                None => Some(&self.left_null),
            };
            let now = rows.and_then(|r| r.get(row.as_ref())).copied().unwrap_or(0);
            let weight = now * out_new(key) - (now - delta) * out_old(key);
            if weight != 0 {
                emit.push((row, weight));
            }
        }
        if emit.is_empty() {
            self.globals_before = new;
            return Ok(Vec::new());
        }
        emit.sort_by_key(|e| e.1 > 0);
        let parser = self.rows.parser();
        let columns = self
            .rows
            .convert_rows(emit.iter().map(|e| parser.parse(e.0)))
            .map_err(arrow)?;
        let data = RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(arrow)?;
        let weights = Int64Array::from_iter_values(emit.iter().map(|e| e.1));
        let change = ChangeBatch::with_weights(data, weights).map_err(arrow)?;
        self.globals_before = new;
        Ok(vec![change])
    }

    fn checkpoint(&self) -> Result<Vec<RecordBatch>, StateError> {
        let mut sides = Vec::new();
        let mut keys: Vec<Option<&[u8]>> = Vec::new();
        let mut rows: Vec<Option<&[u8]>> = Vec::new();
        let mut counts = Vec::new();
        for (key, by_row) in &self.left {
            for (row, &count) in by_row {
                sides.push(0);
                keys.push(Some(key));
                rows.push(Some(row));
                counts.push(count);
            }
        }
        for (row, &count) in &self.left_null {
            sides.push(0);
            keys.push(None);
            rows.push(Some(row));
            counts.push(count);
        }
        for (key, &count) in &self.right {
            sides.push(1);
            keys.push(Some(key));
            rows.push(None);
            counts.push(count);
        }
        sides.push(1);
        keys.push(None);
        rows.push(None);
        counts.push(self.globals.nulls);
        Ok(vec![columns::batch(vec![
            ("side", columns::i64s(sides)),
            ("key", columns::blobs(keys.into_iter())),
            ("row", columns::blobs(rows.into_iter())),
            ("count", columns::i64s(counts)),
        ])?])
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<(), StateError> {
        let [batch] = state else {
            return Err(StateError::mismatch("a NOT IN's state is one batch"));
        };
        let sides = columns::i64_column(batch, "side")?;
        let keys = columns::blob_column(batch, "key")?;
        let rows = columns::blob_column(batch, "row")?;
        let counts = columns::i64_column(batch, "count")?;
        self.left = row_map(0);
        self.left_null = row_map(0);
        self.right = row_map(0);
        self.right_before = row_map(0);
        self.left_delta = row_map(0);
        self.globals = Globals::default();
        self.heap = 0;
        for i in 0..batch.num_rows() {
            let key = columns::blob_at(keys, i);
            let count = counts[i];
            match (sides[i], key, columns::blob_at(rows, i)) {
                (0, Some(k), Some(row)) => {
                    self.heap += 2 * (k.len() + row.len()) as isize;
                    self.left
                        .entry(k.into())
                        .or_insert_with(|| row_map(1))
                        .insert(row.into(), count);
                }
                (0, None, Some(row)) => {
                    self.heap += 2 * row.len() as isize;
                    self.left_null.insert(row.into(), count);
                }
                (1, Some(k), None) => {
                    self.heap += 2 * k.len() as isize;
                    self.right.insert(k.into(), count);
                    self.globals.total += count;
                }
                (1, None, None) => {
                    self.globals.nulls += count;
                    self.globals.total += count;
                }
                _ => return Err(StateError::mismatch("a NOT IN state row of no known form")),
            }
        }
        self.globals_before = self.globals;
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        let left: usize = self.left.values().map(|r| r.len()).sum();
        StateSize {
            rows: (left + self.left_null.len() + self.right.len()) as u64,
            bytes: (self.heap.max(0) as usize
                + map_bytes(&self.left)
                + self.left.values().map(map_bytes).sum::<usize>()
                + map_bytes(&self.left_null)
                + map_bytes(&self.right)) as u64,
        }
    }

    fn repartition(
        &self,
        old: &[Vec<RecordBatch>],
        n: usize,
        _assign: &super::Assign<'_>,
    ) -> Result<Vec<Vec<RecordBatch>>, StateError> {
        // One partition whatever the parallelism: the state moves whole.
        super::whole_state(old, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::test_util::{changes, sorted_lines};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn side() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn op() -> NotInOperator {
        NotInOperator::new(
            Arc::new(Column::new("k", 0)),
            Arc::new(Column::new("k", 0)),
            DataType::Int64,
            side(),
        )
        .expect("an operator")
    }

    fn step(op: &mut NotInOperator, input: usize, table: &str) -> Vec<String> {
        op.update_input(input, &changes(&side(), table))
            .expect("update");
        sorted_lines(&op.finish(None).expect("finish"))
    }

    #[test]
    fn a_null_on_the_right_hides_every_row_and_an_empty_right_shows_them_all() {
        let mut op = op();
        // Nothing on the right: every left row, the NULL one too.
        assert_eq!(
            step(&mut op, 0, "+ 1 a\n+ 2 b\n+ NULL c"),
            ["+ 1 a", "+ 2 b", "+ NULL c"]
        );
        // A right row: the NULL-key row and the matched row leave.
        assert_eq!(step(&mut op, 1, "+ 1 x"), ["- 1 a", "- NULL c"]);
        // A NULL on the right: nothing is certainly not in it.
        assert_eq!(step(&mut op, 1, "+ NULL y"), ["- 2 b"]);
        assert_eq!(step(&mut op, 1, "- NULL y"), ["+ 2 b"]);
        // The right side empties: every row is back.
        assert_eq!(step(&mut op, 1, "- 1 x"), ["+ 1 a", "+ NULL c"]);
        // State round-trips a checkpoint.
        let saved = op.checkpoint().expect("checkpoint");
        let mut again = super::tests::op();
        again.restore(&saved).expect("restore");
        assert_eq!(again.state_size().rows, op.state_size().rows);
        assert_eq!(step(&mut again, 1, "+ 2 z"), ["- 2 b", "- NULL c"]);
    }

    #[test]
    fn random_changes_equal_a_recount() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut op = op();
        let key = |rng: &mut rand::rngs::StdRng| {
            if rng.random_bool(0.15) {
                "NULL".to_string()
            } else {
                rng.random_range(0..4).to_string()
            }
        };
        let (mut left, mut right): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        let mut view: std::collections::BTreeMap<String, i64> = Default::default();
        for _ in 0..300 {
            let side = rng.random_range(0..2);
            let rows = if side == 0 { &mut left } else { &mut right };
            let mut lines = Vec::new();
            for _ in 0..rng.random_range(1..4) {
                if !rows.is_empty() && rng.random_bool(0.45) {
                    let row = rows.swap_remove(rng.random_range(0..rows.len()));
                    lines.push(format!("- {row}"));
                } else {
                    let row = format!("{} v{}", key(&mut rng), rng.random_range(0..3));
                    lines.push(format!("+ {row}"));
                    rows.push(row);
                }
            }
            op.update_input(side, &changes(&side_schema(), &lines.join("\n")))
                .expect("update");
            if rng.random_bool(0.5) {
                continue;
            }
            for batch in op.finish(None).expect("finish") {
                let rendered = crate::operator::test_util::render(&batch);
                for (i, line) in rendered.lines().enumerate() {
                    let w = batch.weights().map_or(1, |w| w.value(i));
                    *view.entry(line[2..].to_string()).or_default() += w;
                }
            }
            view.retain(|_, w| *w != 0);
            let right_keys: Vec<&str> = right
                .iter()
                .map(|r| r.split(' ').next().unwrap_or(""))
                .collect();
            let mut want: std::collections::BTreeMap<String, i64> = Default::default();
            for row in &left {
                let k = row.split(' ').next().unwrap_or("");
                let out = right.is_empty()
                    || (k != "NULL" && !right_keys.contains(&"NULL") && !right_keys.contains(&k));
                if out {
                    *want.entry(row.clone()).or_default() += 1;
                }
            }
            assert_eq!(view, want, "seed {seed}");
        }
    }

    fn side_schema() -> SchemaRef {
        side()
    }
}
