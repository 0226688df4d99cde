//! Arrow columns for operator state: row-format bytes as `LargeBinary` (a state column can pass
//! 2 GiB), exact sums as `Decimal128`, maps of counted values as length-prefixed blobs.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array, LargeBinaryArray,
    LargeBinaryBuilder, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type};

use super::StateError;

/// A column of optional byte strings.
pub fn blobs<'a>(values: impl Iterator<Item = Option<&'a [u8]>>) -> ArrayRef {
    let mut builder = LargeBinaryBuilder::new();
    for value in values {
        builder.append_option(value);
    }
    Arc::new(builder.finish())
}

/// The type of a column of 128-bit integers: integral decimals.
const I128: DataType = DataType::Decimal128(38, 0);

/// A column of 128-bit integers.
pub fn i128s(values: Vec<i128>) -> ArrayRef {
    Arc::new(
        Decimal128Array::from(values)
            .with_precision_and_scale(38, 0)
            .expect("38 digits, scale 0, is a valid decimal"),
    )
}

/// A column of 64-bit integers.
pub fn i64s(values: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(values))
}

/// A column of optional 64-bit integers.
pub fn opt_i64s(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from(values))
}

/// A column of floats.
pub fn f64s(values: Vec<f64>) -> ArrayRef {
    Arc::new(Float64Array::from(values))
}

/// Column `name` of `batch`.
fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, StateError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| StateError::mismatch(format!("no column {name}")))
}

fn typed<'a>(
    batch: &'a RecordBatch,
    name: &str,
    want: &DataType,
) -> Result<&'a ArrayRef, StateError> {
    let c = column(batch, name)?;
    if c.data_type() != want {
        return Err(StateError::mismatch(format!(
            "column {name} is {}, not {want}",
            c.data_type()
        )));
    }
    Ok(c)
}

/// Column `name` as byte strings.
pub fn blob_column<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a LargeBinaryArray, StateError> {
    Ok(typed(batch, name, &DataType::LargeBinary)?.as_binary::<i64>())
}

/// Column `name` as 64-bit integers (NULLs read as `None`).
pub fn opt_i64_column(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, StateError> {
    let c = typed(batch, name, &DataType::Int64)?.as_primitive::<Int64Type>();
    Ok(c.iter().collect())
}

/// Column `name` as 64-bit integers.
pub fn i64_column(batch: &RecordBatch, name: &str) -> Result<Vec<i64>, StateError> {
    let c = typed(batch, name, &DataType::Int64)?.as_primitive::<Int64Type>();
    Ok(c.values().to_vec())
}

/// Column `name` as 128-bit integers.
pub fn i128_column(batch: &RecordBatch, name: &str) -> Result<Vec<i128>, StateError> {
    let c = typed(batch, name, &I128)?.as_primitive::<Decimal128Type>();
    Ok(c.values().to_vec())
}

/// Column `name` as floats.
pub fn f64_column(batch: &RecordBatch, name: &str) -> Result<Vec<f64>, StateError> {
    let c = typed(batch, name, &DataType::Float64)?.as_primitive::<Float64Type>();
    Ok(c.values().to_vec())
}

/// Row `i` of a blob column, `None` when NULL.
pub fn blob_at(column: &LargeBinaryArray, i: usize) -> Option<&[u8]> {
    column.is_valid(i).then(|| column.value(i))
}

/// A map of values (row format) to counts as one blob: `[len: u32][value][count: i64]…`.
pub fn encode_counted<'a>(
    map: impl IntoIterator<Item = (&'a Box<[u8]>, &'a i64)>,
    out: &mut Vec<u8>,
) {
    out.clear();
    for (value, count) in map {
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        out.extend_from_slice(&count.to_le_bytes());
    }
}

/// The map [`encode_counted`] wrote.
pub fn decode_counted<M: Default + Extend<(Box<[u8]>, i64)>>(
    mut blob: &[u8],
) -> Result<M, StateError> {
    let short = || StateError::mismatch("a counted-values blob ends early");
    let mut map = M::default();
    while !blob.is_empty() {
        let len = u32::from_le_bytes(
            blob.get(..4)
                .ok_or_else(short)?
                .try_into()
                .map_err(|_| short())?,
        ) as usize;
        let value = blob.get(4..4 + len).ok_or_else(short)?;
        let count = i64::from_le_bytes(
            blob.get(4 + len..12 + len)
                .ok_or_else(short)?
                .try_into()
                .map_err(|_| short())?,
        );
        map.extend([(value.into(), count)]);
        blob = &blob[12 + len..];
    }
    Ok(map)
}

/// A batch of named columns.
pub fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, StateError> {
    Ok(RecordBatch::try_from_iter(
        columns.into_iter().map(|(n, c)| (n.to_string(), c)),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_values_round_trip() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(Box::from(&b"abc"[..]), 3);
        map.insert(Box::from(&b""[..]), -1);
        map.insert(Box::from(&[0u8, 255, 7][..]), i64::MAX);
        let mut blob = Vec::new();
        encode_counted(&map, &mut blob);
        assert_eq!(
            decode_counted::<std::collections::BTreeMap<Box<[u8]>, i64>>(&blob).unwrap(),
            map
        );
        assert!(
            decode_counted::<std::collections::BTreeMap<Box<[u8]>, i64>>(&blob[..blob.len() - 1])
                .is_err()
        );
    }

    #[test]
    fn columns_are_checked_by_type() {
        let b = batch(vec![
            ("n", i64s(vec![1, 2])),
            ("s", i128s(vec![1 << 100, -5])),
        ])
        .unwrap();
        assert_eq!(i64_column(&b, "n").unwrap(), vec![1, 2]);
        assert_eq!(i128_column(&b, "s").unwrap(), vec![1 << 100, -5]);
        assert!(f64_column(&b, "n").is_err());
        assert!(i64_column(&b, "missing").is_err());
    }
}
