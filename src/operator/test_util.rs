//! Change tables for operator tests: `"+ 1 a\n- 2 NULL"` is a batch with an insertion of
//! `(1, 'a')` and a retraction of `(2, NULL)`, in a schema of Int64 and Utf8 columns.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::array_value_to_string;

use crate::stream::ChangeBatch;

/// Parses a change table in `schema` (Int64 and Utf8 columns; `NULL` is null).
pub fn changes(schema: &SchemaRef, table: &str) -> ChangeBatch {
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let weights: Vec<i64> = lines
        .iter()
        .map(|l| match l[0] {
            "+" => 1,
            "-" => -1,
            other => panic!("a change line starts with + or -, not {other}"),
        })
        .collect();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let cells = lines
                .iter()
                .map(|l| Some(l[i + 1]).filter(|c| *c != "NULL"));
            match f.data_type() {
                DataType::Int64 => Arc::new(Int64Array::from_iter(
                    cells.map(|c| c.map(|c| c.parse::<i64>().expect("an integer"))),
                )) as ArrayRef,
                DataType::Utf8 => Arc::new(StringArray::from_iter(cells)) as ArrayRef,
                other => panic!("change tables hold Int64 and Utf8 columns, not {other}"),
            }
        })
        .collect();
    let data = RecordBatch::try_new(Arc::clone(schema), columns).expect("a valid batch");
    ChangeBatch::with_weights(data, Int64Array::from(weights)).expect("weights fit")
}

/// Rows `(k, t, v)` of the window operators' tests: a key, an event time in nanoseconds and
/// a value.
pub fn timed_input() -> SchemaRef {
    use datafusion::arrow::datatypes::{Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("t", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

/// The lines of every batch's change table, sorted (an operator's output order is its own).
pub fn sorted_lines(batches: &[ChangeBatch]) -> Vec<String> {
    let mut lines: Vec<String> = batches
        .iter()
        .flat_map(|b| render(b).lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    lines.sort();
    lines
}

/// Prints a change batch as a change table, one line per row.
pub fn render(batch: &ChangeBatch) -> String {
    (0..batch.num_rows())
        .map(|row| {
            let sign = match batch.weights() {
                Some(w) if w.value(row) < 0 => "-",
                _ => "+",
            };
            let cells: Vec<String> = batch
                .data()
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(row) {
                        "NULL".to_string()
                    } else {
                        array_value_to_string(c, row).unwrap_or_default()
                    }
                })
                .collect();
            format!("{sign} {}", cells.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
