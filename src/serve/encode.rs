//! Columnar Arrow data to PostgreSQL `DataRow`s, in the text form PostgreSQL itself prints or
//! in the binary form its `*send` functions produce.
//!
//! Encoding works column by column: each column is downcast once and its values are appended
//! to every row's buffer, so there is one type dispatch per column, not per cell.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::array::{
    Array, AsArray, GenericListArray, OffsetSizeTrait, PrimitiveArray, RecordBatch,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, Decimal32Type, Decimal64Type,
    Decimal128Type, Decimal256Type, DurationMicrosecondType, DurationMillisecondType,
    DurationNanosecondType, DurationSecondType, Float16Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit,
    IntervalYearMonthType, Time32MillisecondType, Time32SecondType, Time64MicrosecondType,
    Time64NanosecondType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions, array_value_to_string};
use pgwire::api::results::FieldFormat;
use pgwire::messages::data::DataRow;

use crate::catalog::pg_types::pg_type;

/// Days from the Unix epoch (1970-01-01) to the PostgreSQL epoch (2000-01-01).
pub(crate) const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds from the Unix epoch to the PostgreSQL epoch.
pub(crate) const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * MICROS_PER_DAY;
/// Microseconds in a day.
pub(crate) const MICROS_PER_DAY: i64 = 86_400_000_000;
const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_MINUTE: i64 = 60_000_000;
const MICROS_PER_SECOND: i64 = 1_000_000;

/// Why a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The column's type has no PostgreSQL encoding (not even Arrow's display text).
    #[error("column {column}: type {data_type} cannot be sent to a client")]
    Unsupported {
        /// Index of the column in the batch.
        column: usize,
        /// Arrow type of the column.
        data_type: DataType,
    },
    /// A value does not fit the PostgreSQL type the column is announced as.
    #[error("column {column}: value {value} is out of range for type {pg_type}")]
    OutOfRange {
        /// Index of the column in the batch.
        column: usize,
        /// The value, as Arrow displays it.
        value: String,
        /// `format_type` name of the PostgreSQL type.
        pg_type: &'static str,
    },
    /// Arrow could not format a value of the column.
    #[error("column {column}: cannot format a value of type {data_type}: {source}")]
    Format {
        /// Index of the column in the batch.
        column: usize,
        /// Arrow type of the column.
        data_type: DataType,
        /// What Arrow reported.
        #[source]
        source: ArrowError,
    },
    /// The number of result formats is neither 0, 1 nor the number of columns.
    #[error("{formats} result formats given for {columns} columns")]
    FormatCount {
        /// Number of formats given.
        formats: usize,
        /// Number of columns in the batch.
        columns: usize,
    },
    /// The batch has more columns than a `DataRow` can hold.
    #[error("{columns} columns do not fit in a data row")]
    TooManyColumns {
        /// Number of columns in the batch.
        columns: usize,
    },
    /// A single value is larger than a `DataRow` field can hold (2 GiB).
    #[error("column {column}: a value of {len} bytes does not fit in a data row")]
    TooLarge {
        /// Index of the column in the batch.
        column: usize,
        /// Size of the encoded value in bytes.
        len: usize,
    },
}

/// Encodes every row of `batch` as a PostgreSQL `DataRow`.
///
/// `formats[i]` is the format of column `i`; as in the `Bind` message, an empty slice means
/// text for every column and a single format applies to all of them. A text column is
/// rendered exactly as PostgreSQL prints the type [`pg_type`] announces; a binary column is
/// what PostgreSQL's `*send` function for that type produces. Columns whose type is announced
/// as `text` (structs, maps, nested lists, ...) carry Arrow's display form in both formats.
pub fn encode_batch(
    batch: &RecordBatch,
    formats: &[FieldFormat],
) -> Result<Vec<DataRow>, EncodeError> {
    let columns = batch.num_columns();
    if formats.len() > 1 && formats.len() != columns {
        return Err(EncodeError::FormatCount {
            formats: formats.len(),
            columns,
        });
    }
    let field_count =
        i16::try_from(columns).map_err(|_| EncodeError::TooManyColumns { columns })?;
    let mut rows: Vec<BytesMut> = (0..batch.num_rows())
        .map(|_| BytesMut::with_capacity(columns * 12))
        .collect();
    for (column, array) in batch.columns().iter().enumerate() {
        let format = match formats {
            [] => FieldFormat::Text,
            [one] => *one,
            many => many[column],
        };
        write_column(rows.as_mut_slice(), array.as_ref(), format, column)?;
    }
    Ok(rows
        .into_iter()
        .map(|data| DataRow::new(data, field_count))
        .collect())
}

/// The PostgreSQL text form of `array[row]`, or `None` if it is NULL (or `row` is out of
/// bounds).
///
/// This is the same text [`encode_batch`] sends in text format; a value that cannot be
/// encoded that way (e.g. a timestamp outside PostgreSQL's range) falls back to Arrow's
/// display form.
pub fn text_value(array: &dyn Array, row: usize) -> Option<String> {
    if row >= array.len() {
        return None;
    }
    // Logical nulls, so that dictionary and run-end encoded nulls count too.
    let one = array.slice(row, 1);
    if one.logical_null_count() == 1 {
        return None;
    }
    let mut flat = Flat::default();
    match write_column(&mut flat, one.as_ref(), FieldFormat::Text, 0) {
        Ok(()) => flat
            .value(0)
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned()),
        Err(_) => array_value_to_string(array, row).ok(),
    }
}

/// A whole column in PostgreSQL's text form, encoded in one pass: the values without DataRow
/// framing, for `COPY … TO STDOUT`.
pub enum TextColumn<'a> {
    /// Every value, encoded as [`encode_batch`] sends it in text format.
    Encoded(Flat),
    /// A column that cannot be encoded so: value by value, as [`text_value`] falls back.
    Fallback(&'a dyn Array),
}

impl TextColumn<'_> {
    /// The text of row `row`; `None` for NULL.
    pub fn value(&self, row: usize) -> Option<std::borrow::Cow<'_, [u8]>> {
        match self {
            TextColumn::Encoded(flat) => flat.value(row).map(std::borrow::Cow::Borrowed),
            TextColumn::Fallback(array) => {
                text_value(*array, row).map(|v| std::borrow::Cow::Owned(v.into_bytes()))
            }
        }
    }
}

/// `array` in PostgreSQL's text form, all rows at once.
pub fn text_column(array: &dyn Array) -> TextColumn<'_> {
    let mut flat = Flat::default();
    match write_column(&mut flat, array, FieldFormat::Text, 0) {
        Ok(()) => TextColumn::Encoded(flat),
        Err(_) => TextColumn::Fallback(array),
    }
}

/// The rows as lines of COPY text (tab-separated, `\N` for null, backslash escapes) or CSV
/// (comma-separated, empty for null, quoted when needed). Each column is encoded once.
pub fn copy_lines(batch: &RecordBatch, csv: bool) -> Vec<Bytes> {
    let format = if csv {
        crate::sql::copy::CopyFormat::Csv {
            delimiter: b',',
            quote: b'"',
            escape: b'"',
            header: false,
        }
    } else {
        crate::sql::copy::CopyFormat::Text {
            delimiter: b'\t',
            null: "\\N".into(),
        }
    };
    copy_out_lines(batch, &format)
}

/// One field of `COPY … TO` output in `format`: `None` is NULL.
fn put_copy_field(
    line: &mut BytesMut,
    value: Option<&[u8]>,
    format: &crate::sql::copy::CopyFormat,
) {
    use crate::sql::copy::CopyFormat;
    match (format, value) {
        (CopyFormat::Text { null, .. }, None) => line.put_slice(null.as_bytes()),
        (CopyFormat::Text { delimiter, .. }, Some(v)) => {
            for &b in v {
                match b {
                    b'\\' => line.put_slice(b"\\\\"),
                    b'\t' => line.put_slice(b"\\t"),
                    b'\n' => line.put_slice(b"\\n"),
                    b'\r' => line.put_slice(b"\\r"),
                    b if b == *delimiter => {
                        line.put_u8(b'\\');
                        line.put_u8(b);
                    }
                    other => line.put_u8(other),
                }
            }
        }
        // An unquoted empty field is NULL; an empty string is quoted.
        // Binary rows are written whole by `copy_out_binary`.
        (CopyFormat::Binary, _) => {}
        (CopyFormat::Csv { .. }, None) => {}
        (
            CopyFormat::Csv {
                delimiter,
                quote,
                escape,
                ..
            },
            Some(v),
        ) => {
            let quoted = v.is_empty()
                || v.iter()
                    .any(|&b| b == *delimiter || b == *quote || b == b'\n' || b == b'\r');
            if !quoted {
                line.put_slice(v);
                return;
            }
            line.put_u8(*quote);
            for &b in v {
                if b == *quote || b == *escape {
                    line.put_u8(*escape);
                }
                line.put_u8(b);
            }
            line.put_u8(*quote);
        }
    }
}

/// The rows of `batch` as `COPY … TO STDOUT` lines in `format`, one per row.
pub fn copy_out_lines(batch: &RecordBatch, format: &crate::sql::copy::CopyFormat) -> Vec<Bytes> {
    let delimiter = format.delimiter();
    let columns: Vec<TextColumn<'_>> = batch
        .columns()
        .iter()
        .map(|c| text_column(c.as_ref()))
        .collect();
    let mut lines = Vec::with_capacity(batch.num_rows());
    let mut line = BytesMut::new();
    for row in 0..batch.num_rows() {
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                line.put_u8(delimiter);
            }
            put_copy_field(&mut line, column.value(row).as_deref(), format);
        }
        line.put_u8(b'\n');
        lines.push(line.split().freeze());
    }
    lines
}

/// The signature, flags and header extension that open a binary COPY.
pub const BINARY_COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The rows of `batch` in binary COPY format: per row, the field count, then each field as
/// its length (-1: NULL) and its binary value, as a DataRow carries it.
pub fn copy_out_binary(batch: &RecordBatch) -> Result<Vec<Bytes>, EncodeError> {
    let rows = encode_batch(batch, &[FieldFormat::Binary])?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut out = BytesMut::with_capacity(2 + row.data.len());
            out.put_i16(row.field_count);
            out.extend_from_slice(&row.data);
            out.freeze()
        })
        .collect())
}

/// The `HEADER` line of `COPY … TO STDOUT`: the column names, as fields.
pub fn copy_out_header(
    schema: &datafusion::arrow::datatypes::Schema,
    format: &crate::sql::copy::CopyFormat,
) -> Bytes {
    let mut line = BytesMut::new();
    for (i, field) in schema.fields().iter().enumerate() {
        if i > 0 {
            line.put_u8(format.delimiter());
        }
        let name = crate::sql::pg_compat::output_name(field.name());
        put_copy_field(&mut line, Some(name.as_bytes()), format);
    }
    line.put_u8(b'\n');
    line.freeze()
}

/// `value` as a field of COPY's text format: backslash, tab, newline and carriage return
/// escaped.
pub fn put_copy_text(line: &mut BytesMut, value: &[u8]) {
    for &b in value {
        match b {
            b'\\' => line.put_slice(b"\\\\"),
            b'\t' => line.put_slice(b"\\t"),
            b'\n' => line.put_slice(b"\\n"),
            b'\r' => line.put_slice(b"\\r"),
            other => line.put_u8(other),
        }
    }
}

/// Where encoded fields go: one buffer per row of the column being written.
///
/// `field(row)` is called exactly once per row, in row order, and the whole field (length
/// prefix and bytes) is appended to the buffer it returns.
trait Sink {
    fn field(&mut self, row: usize) -> &mut BytesMut;
}

impl Sink for [BytesMut] {
    fn field(&mut self, row: usize) -> &mut BytesMut {
        &mut self[row]
    }
}

/// All fields of one column in a single buffer, e.g. the elements of a list column.
#[derive(Default)]
pub struct Flat {
    buf: BytesMut,
    /// Offset in `buf` where each field starts.
    starts: Vec<usize>,
}

impl Sink for Flat {
    fn field(&mut self, _row: usize) -> &mut BytesMut {
        self.starts.push(self.buf.len());
        &mut self.buf
    }
}

impl Flat {
    /// Fields `from..to`, length prefixes included.
    fn fields(&self, from: usize, to: usize) -> &[u8] {
        let end = self.starts.get(to).copied().unwrap_or(self.buf.len());
        match self.starts.get(from) {
            Some(&start) if from < to => &self.buf[start..end],
            _ => &[],
        }
    }

    /// The bytes of field `i`, `None` for NULL.
    fn value(&self, i: usize) -> Option<&[u8]> {
        let field = self.fields(i, i + 1);
        match field.get(..4) {
            Some(prefix) if prefix != [0xff; 4] => Some(&field[4..]),
            _ => None,
        }
    }
}

/// Appends one field per row of `array` to `sink`: `-1` for NULL, otherwise the length and
/// whatever `f` writes.
fn each<S: Sink + ?Sized>(
    sink: &mut S,
    array: &dyn Array,
    column: usize,
    mut f: impl FnMut(usize, &mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let nulls = array.logical_nulls();
    for row in 0..array.len() {
        let buf = sink.field(row);
        if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
            buf.put_i32(-1);
            continue;
        }
        let start = buf.len();
        buf.put_i32(0);
        f(row, buf)?;
        let len = buf.len() - start - 4;
        let len32 = i32::try_from(len).map_err(|_| EncodeError::TooLarge { column, len })?;
        buf[start..start + 4].copy_from_slice(&len32.to_be_bytes());
    }
    Ok(())
}

/// [`each`] for a primitive array, handing `f` the value.
fn each_value<T: ArrowPrimitiveType, S: Sink + ?Sized>(
    sink: &mut S,
    array: &PrimitiveArray<T>,
    column: usize,
    mut f: impl FnMut(T::Native, &mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    each(sink, array, column, |row, buf| f(array.value(row), buf))
}

/// Appends the field of every row of `array` to `sink`, in `format`; the one type dispatch
/// per column.
fn write_column<S: Sink + ?Sized>(
    sink: &mut S,
    array: &dyn Array,
    format: FieldFormat,
    column: usize,
) -> Result<(), EncodeError> {
    let binary = format == FieldFormat::Binary;
    let out_of_range = |value: String, pg_type: &'static str| EncodeError::OutOfRange {
        column,
        value,
        pg_type,
    };
    // Downcasts `array` once to the primitive array of `$t`, then runs `$f(value, buf)` for
    // every non-null row; `values!` is for bodies that cannot fail.
    macro_rules! try_values {
        ($t:ty, $f:expr) => {
            each_value(sink, array.as_primitive::<$t>(), column, $f)
        };
    }
    macro_rules! values {
        ($t:ty, |$v:pat_param, $buf:ident| $body:expr) => {
            try_values!($t, |$v, $buf| {
                $body;
                Ok(())
            })
        };
    }
    // `each` for bodies that cannot fail.
    macro_rules! rows {
        (|$row:ident, $buf:ident| $body:expr) => {
            each(sink, array, column, |$row, $buf| {
                $body;
                Ok(())
            })
        };
    }
    match array.data_type() {
        DataType::Null => each(sink, array, column, |_, _| Ok(())),
        DataType::Boolean => {
            let a = array.as_boolean();
            rows!(|row, buf| {
                let byte = match (binary, a.value(row)) {
                    (true, v) => u8::from(v),
                    (false, true) => b't',
                    (false, false) => b'f',
                };
                buf.put_u8(byte)
            })
        }
        DataType::Int8 => values!(Int8Type, |v, buf| put_int2(buf, v, binary)),
        DataType::Int16 => values!(Int16Type, |v, buf| put_int2(buf, v, binary)),
        DataType::UInt8 => values!(UInt8Type, |v, buf| put_int2(buf, v, binary)),
        DataType::Int32 => values!(Int32Type, |v, buf| put_int4(buf, v, binary)),
        DataType::UInt16 => values!(UInt16Type, |v, buf| put_int4(buf, v, binary)),
        DataType::Int64 => values!(Int64Type, |v, buf| put_int8(buf, v, binary)),
        DataType::UInt32 => values!(UInt32Type, |v, buf| put_int8(buf, v, binary)),
        DataType::UInt64 => try_values!(UInt64Type, |v, buf| {
            if binary {
                let v = i64::try_from(v).map_err(|_| out_of_range(v.to_string(), "bigint"))?;
                buf.put_i64(v);
            } else {
                put_display(buf, v);
            }
            Ok(())
        }),
        DataType::Float16 => values!(Float16Type, |v, buf| put_f32(buf, v.to_f32(), binary)),
        DataType::Float32 => values!(Float32Type, |v, buf| put_f32(buf, v, binary)),
        DataType::Float64 => values!(Float64Type, |v, buf| put_f64(buf, v, binary)),
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            rows!(|row, buf| buf.put_slice(a.value(row).as_bytes()))
        }
        // jsonb: its text, after a version byte (1) in binary.
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            rows!(|row, buf| {
                if binary {
                    buf.put_u8(1);
                }
                buf.put_slice(a.value(row).as_bytes())
            })
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            rows!(|row, buf| buf.put_slice(a.value(row).as_bytes()))
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            rows!(|row, buf| put_bytea(buf, a.value(row), binary))
        }
        DataType::LargeBinary => {
            let a = array.as_binary::<i64>();
            rows!(|row, buf| put_bytea(buf, a.value(row), binary))
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            rows!(|row, buf| put_bytea(buf, a.value(row), binary))
        }
        // `uuid` (see `sql::uuid`): its 16 bytes in binary.
        DataType::FixedSizeBinary(16) => {
            let a = array.as_fixed_size_binary();
            rows!(|row, buf| put_uuid(buf, a.value(row), binary))
        }
        DataType::FixedSizeBinary(_) => {
            let a = array.as_fixed_size_binary();
            rows!(|row, buf| put_bytea(buf, a.value(row), binary))
        }
        DataType::Date32 => try_values!(Date32Type, |v, buf| {
            put_date(buf, i64::from(v), binary).ok_or_else(|| out_of_range(v.to_string(), "date"))
        }),
        DataType::Date64 => try_values!(Date64Type, |v, buf| {
            put_date(buf, v.div_euclid(86_400_000), binary)
                .ok_or_else(|| out_of_range(v.to_string(), "date"))
        }),
        DataType::Time32(TimeUnit::Second) => values!(Time32SecondType, |v, buf| {
            put_time(buf, i64::from(v) * MICROS_PER_SECOND, binary)
        }),
        DataType::Time32(TimeUnit::Millisecond) => values!(Time32MillisecondType, |v, buf| {
            put_time(buf, i64::from(v) * 1_000, binary)
        }),
        DataType::Time64(TimeUnit::Microsecond) => {
            values!(Time64MicrosecondType, |v, buf| put_time(buf, v, binary))
        }
        DataType::Time64(TimeUnit::Nanosecond) => values!(Time64NanosecondType, |v, buf| {
            put_time(buf, v.div_euclid(1_000), binary)
        }),
        DataType::Timestamp(unit, tz) => {
            let tz = tz.is_some();
            let pg_name = if tz {
                "timestamp with time zone"
            } else {
                "timestamp without time zone"
            };
            let put = |micros: Option<i64>, v: i64, buf: &mut BytesMut| {
                micros
                    .and_then(|us| put_timestamp(buf, us, tz, binary))
                    .ok_or_else(|| out_of_range(v.to_string(), pg_name))
            };
            match unit {
                TimeUnit::Second => try_values!(TimestampSecondType, |v, buf| {
                    put(v.checked_mul(MICROS_PER_SECOND), v, buf)
                }),
                TimeUnit::Millisecond => try_values!(TimestampMillisecondType, |v, buf| {
                    put(v.checked_mul(1_000), v, buf)
                }),
                TimeUnit::Microsecond => {
                    try_values!(TimestampMicrosecondType, |v, buf| put(Some(v), v, buf))
                }
                // Truncated (towards the past) to PostgreSQL's microsecond resolution.
                TimeUnit::Nanosecond => try_values!(TimestampNanosecondType, |v, buf| {
                    put(Some(v.div_euclid(1_000)), v, buf)
                }),
            }
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            values!(IntervalYearMonthType, |v, buf| {
                put_interval(buf, v, 0, 0, binary)
            })
        }
        DataType::Interval(IntervalUnit::DayTime) => values!(IntervalDayTimeType, |v, buf| {
            let micros = i64::from(v.milliseconds) * 1_000;
            put_interval(buf, 0, v.days, micros, binary)
        }),
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            values!(IntervalMonthDayNanoType, |v, buf| {
                // PostgreSQL intervals have microsecond resolution; drop the rest.
                let micros = v.nanoseconds / 1_000;
                put_interval(buf, v.months, v.days, micros, binary)
            })
        }
        DataType::Duration(unit) => {
            let put = |micros: Option<i64>, v: i64, buf: &mut BytesMut| {
                let us = micros.ok_or_else(|| out_of_range(v.to_string(), "interval"))?;
                put_interval(buf, 0, 0, us, binary);
                Ok(())
            };
            match unit {
                TimeUnit::Second => try_values!(DurationSecondType, |v, buf| {
                    put(v.checked_mul(MICROS_PER_SECOND), v, buf)
                }),
                TimeUnit::Millisecond => try_values!(DurationMillisecondType, |v, buf| {
                    put(v.checked_mul(1_000), v, buf)
                }),
                TimeUnit::Microsecond => {
                    try_values!(DurationMicrosecondType, |v, buf| put(Some(v), v, buf))
                }
                TimeUnit::Nanosecond => {
                    try_values!(DurationNanosecondType, |v, buf| {
                        put(Some(v / 1_000), v, buf)
                    })
                }
            }
        }
        &DataType::Decimal32(_, scale) => values!(Decimal32Type, |v, buf| {
            put_decimal_i128(buf, i128::from(v), scale, binary)
        }),
        &DataType::Decimal64(_, scale) => values!(Decimal64Type, |v, buf| {
            put_decimal_i128(buf, i128::from(v), scale, binary)
        }),
        &DataType::Decimal128(_, scale) => {
            values!(Decimal128Type, |v, buf| {
                put_decimal_i128(buf, v, scale, binary)
            })
        }
        &DataType::Decimal256(_, scale) => values!(Decimal256Type, |v, buf| {
            // Rare enough that going through the decimal string is fine.
            let text = v.to_string();
            let (negative, digits) = match text.strip_prefix('-') {
                Some(digits) => (true, digits),
                None => (false, text.as_str()),
            };
            put_decimal(buf, negative, digits.as_bytes(), scale, binary)
        }),
        DataType::List(_) if pg_type(array.data_type()) != pgwire::api::Type::TEXT => {
            write_list(sink, array.as_list::<i32>(), format, column)
        }
        DataType::LargeList(_) if pg_type(array.data_type()) != pgwire::api::Type::TEXT => {
            write_list(sink, array.as_list::<i64>(), format, column)
        }
        // A row value (`ROW(1, 'a')`, a struct column) as PostgreSQL's `record`: `(1,a)` in
        // text, the field count and each field's type and value in binary.
        DataType::Struct(_) => {
            let record = array.as_struct();
            let fields = record
                .columns()
                .iter()
                .map(|child| {
                    let mut flat = Flat::default();
                    write_column(&mut flat, child.as_ref(), format, column)?;
                    Ok((pg_type(child.data_type()).oid(), flat))
                })
                .collect::<Result<Vec<_>, EncodeError>>()?;
            let count = i32::try_from(fields.len()).map_err(|_| EncodeError::TooLarge {
                column,
                len: fields.len(),
            })?;
            each(sink, array, column, |row, buf| {
                if format == FieldFormat::Binary {
                    buf.put_i32(count);
                    for (oid, flat) in &fields {
                        buf.put_u32(*oid);
                        buf.put_slice(flat.fields(row, row + 1));
                    }
                    return Ok(());
                }
                buf.put_u8(b'(');
                for (i, (_, flat)) in fields.iter().enumerate() {
                    if i > 0 {
                        buf.put_u8(b',');
                    }
                    if let Some(text) = flat.value(row) {
                        put_record_field(buf, text);
                    }
                }
                buf.put_u8(b')');
                Ok(())
            })
        }
        DataType::Dictionary(_, value) => {
            let plain = cast(array, value).map_err(|source| EncodeError::Format {
                column,
                data_type: array.data_type().clone(),
                source,
            })?;
            write_column(sink, plain.as_ref(), format, column)
        }
        // Announced as text: Arrow's display form is the value, in either format (the binary
        // form of `text` is its UTF-8 bytes).
        data_type => {
            let options = FormatOptions::default();
            let formatter =
                ArrayFormatter::try_new(array, &options).map_err(|_| EncodeError::Unsupported {
                    column,
                    data_type: data_type.clone(),
                })?;
            each(sink, array, column, |row, buf| {
                formatter
                    .value(row)
                    .write(buf)
                    .map_err(|source| EncodeError::Format {
                        column,
                        data_type: data_type.clone(),
                        source,
                    })
            })
        }
    }
}

/// An integer sent as `int2`: big-endian in binary, the plain decimal in text.
fn put_int2(buf: &mut BytesMut, v: impl Into<i16> + std::fmt::Display, binary: bool) {
    if binary {
        buf.put_i16(v.into());
    } else {
        put_display(buf, v);
    }
}

/// An integer sent as `int4`.
fn put_int4(buf: &mut BytesMut, v: impl Into<i32> + std::fmt::Display, binary: bool) {
    if binary {
        buf.put_i32(v.into());
    } else {
        put_display(buf, v);
    }
}

/// An integer sent as `int8`.
fn put_int8(buf: &mut BytesMut, v: impl Into<i64> + std::fmt::Display, binary: bool) {
    if binary {
        buf.put_i64(v.into());
    } else {
        put_display(buf, v);
    }
}

fn put_display(buf: &mut BytesMut, v: impl std::fmt::Display) {
    // Writing to a BytesMut only fails when its length would overflow usize.
    let _ = write!(buf, "{v}");
}

/// One-dimensional PostgreSQL array from a list column: `{a,b,NULL}` in text, `array_send`'s
/// layout in binary.
fn write_list<O: OffsetSizeTrait, S: Sink + ?Sized>(
    sink: &mut S,
    list: &GenericListArray<O>,
    format: FieldFormat,
    column: usize,
) -> Result<(), EncodeError> {
    let offsets = list.value_offsets();
    let (Some(first), Some(last)) = (offsets.first(), offsets.last()) else {
        return Ok(());
    };
    let (first, last) = (first.as_usize(), last.as_usize());
    let values = list.values().slice(first, last - first);
    let elem_oid = pg_type(values.data_type()).oid();
    // Encode all elements once, in the list's format, then cut them up per row.
    let mut elements = Flat {
        buf: BytesMut::new(),
        starts: Vec::with_capacity(values.len()),
    };
    write_column(&mut elements, values.as_ref(), format, column)?;
    each(sink, list, column, |row, buf| {
        let start = offsets[row].as_usize() - first;
        let end = offsets[row + 1].as_usize() - first;
        if format == FieldFormat::Binary {
            if start == end {
                // PostgreSQL sends an empty array as zero-dimensional.
                buf.put_i32(0);
                buf.put_i32(0);
                buf.put_u32(elem_oid);
                return Ok(());
            }
            let len = end - start;
            let len32 = i32::try_from(len).map_err(|_| EncodeError::TooLarge { column, len })?;
            let has_null = (start..end).any(|i| elements.value(i).is_none());
            buf.put_i32(1);
            buf.put_i32(i32::from(has_null));
            buf.put_u32(elem_oid);
            buf.put_i32(len32);
            buf.put_i32(1);
            buf.put_slice(elements.fields(start, end));
        } else {
            buf.put_u8(b'{');
            for i in start..end {
                if i > start {
                    buf.put_u8(b',');
                }
                match elements.value(i) {
                    None => buf.put_slice(b"NULL"),
                    Some(text) => put_array_element(buf, text),
                }
            }
            buf.put_u8(b'}');
        }
        Ok(())
    })
}

/// An array element as `array_out` prints it: double-quoted (with `"` and `\` escaped by a
/// backslash) when empty, `NULL`, or containing whitespace or one of `{},"\`.
fn put_array_element(buf: &mut BytesMut, text: &[u8]) {
    let quote = text.eq_ignore_ascii_case(b"NULL") || needs_quotes(text, b"{},");
    put_quoted(buf, text, quote, b'\\');
}

/// A field of a row value as `record_out` prints it: double-quoted (with `"` and `\`
/// doubled) when empty or containing whitespace or one of `(),"\`; NULL is nothing at all.
fn put_record_field(buf: &mut BytesMut, text: &[u8]) {
    put_quoted(buf, text, needs_quotes(text, b"(),"), 0);
}

/// Whether `text` must be quoted inside an array or a row: empty, or holding whitespace, a
/// quote, a backslash or one of `delimiters`.
fn needs_quotes(text: &[u8], delimiters: &[u8]) -> bool {
    text.is_empty()
        || text.iter().any(|b| {
            matches!(b, b'"' | b'\\' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
                || delimiters.contains(b)
        })
}

/// `text`, double-quoted when `quote`, each `"` and `\` inside preceded by `escape` (0: by
/// itself, doubled).
fn put_quoted(buf: &mut BytesMut, text: &[u8], quote: bool, escape: u8) {
    if !quote {
        buf.put_slice(text);
        return;
    }
    buf.put_u8(b'"');
    for &b in text {
        if b == b'"' || b == b'\\' {
            buf.put_u8(if escape == 0 { b } else { escape });
        }
        buf.put_u8(b);
    }
    buf.put_u8(b'"');
}

fn put_uuid(buf: &mut BytesMut, bytes: &[u8], binary: bool) {
    if binary {
        buf.put_slice(bytes);
        return;
    }
    let mut text = String::with_capacity(36);
    crate::sql::uuid::format_uuid(bytes, &mut text);
    buf.put_slice(text.as_bytes());
}

fn put_bytea(buf: &mut BytesMut, bytes: &[u8], binary: bool) {
    if binary {
        buf.put_slice(bytes);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.reserve(2 + 2 * bytes.len());
    buf.put_slice(b"\\x");
    for &b in bytes {
        buf.put_u8(HEX[usize::from(b >> 4)]);
        buf.put_u8(HEX[usize::from(b & 0xf)]);
    }
}

fn put_f32(buf: &mut BytesMut, v: f32, binary: bool) {
    if binary {
        buf.put_f32(v);
    } else {
        put_float_text(buf, v);
    }
}

fn put_f64(buf: &mut BytesMut, v: f64, binary: bool) {
    if binary {
        buf.put_f64(v);
    } else {
        put_float_text(buf, v);
    }
}

/// What the float formatting needs to know about `f32` and `f64`.
trait PgFloat: Copy + PartialEq + std::fmt::LowerExp + std::str::FromStr {
    /// Decimal exponent from which PostgreSQL switches to scientific notation.
    const SCIENTIFIC_FROM: i32;
    /// Significant digits that always suffice to round-trip.
    const MAX_DIGITS: usize;
    fn is_nan(self) -> bool;
    fn is_infinite(self) -> bool;
    fn is_zero(self) -> bool;
    fn is_sign_negative(self) -> bool;
    fn abs(self) -> Self;
    /// For a finite positive value `m · 2^e`: `(m, e, lower_gap_is_half)`, the last being
    /// true at a power of two, where the next smaller float is only half an ulp away.
    fn decompose(self) -> (u64, i32, bool);
}

impl PgFloat for f64 {
    const SCIENTIFIC_FROM: i32 = 15;
    const MAX_DIGITS: usize = 17;
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn is_infinite(self) -> bool {
        f64::is_infinite(self)
    }
    fn is_zero(self) -> bool {
        self == 0.0
    }
    fn is_sign_negative(self) -> bool {
        f64::is_sign_negative(self)
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
    fn decompose(self) -> (u64, i32, bool) {
        let bits = self.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i32;
        let fraction = bits & ((1 << 52) - 1);
        if exponent == 0 {
            (fraction, -1074, false)
        } else {
            (
                fraction | 1 << 52,
                exponent - 1075,
                fraction == 0 && exponent > 1,
            )
        }
    }
}

impl PgFloat for f32 {
    const SCIENTIFIC_FROM: i32 = 6;
    const MAX_DIGITS: usize = 9;
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn is_infinite(self) -> bool {
        f32::is_infinite(self)
    }
    fn is_zero(self) -> bool {
        self == 0.0
    }
    fn is_sign_negative(self) -> bool {
        f32::is_sign_negative(self)
    }
    fn abs(self) -> Self {
        f32::abs(self)
    }
    fn decompose(self) -> (u64, i32, bool) {
        let bits = self.to_bits();
        let exponent = ((bits >> 23) & 0xff) as i32;
        let fraction = u64::from(bits & ((1 << 23) - 1));
        if exponent == 0 {
            (fraction, -149, false)
        } else {
            (
                fraction | 1 << 23,
                exponent - 150,
                fraction == 0 && exponent > 1,
            )
        }
    }
}

/// A float as PostgreSQL 12+ prints it (`float8out`/`float4out` with the default
/// `extra_float_digits = 1`): the shortest digits that read back to the same value, in fixed
/// notation when the decimal exponent is in `-4..15` (float8) or `-4..6` (float4), otherwise
/// as `d.ddde+XX`; `NaN`, `Infinity`, `-Infinity`, `-0`.
fn put_float_text<F: PgFloat>(buf: &mut BytesMut, v: F) {
    if v.is_nan() {
        buf.put_slice(b"NaN");
        return;
    }
    if v.is_sign_negative() {
        buf.put_u8(b'-');
    }
    if v.is_infinite() {
        buf.put_slice(b"Infinity");
        return;
    }
    if v.is_zero() {
        buf.put_u8(b'0');
        return;
    }
    let (mut mantissa, mut exp10) = shortest_decimal(v.abs());
    while mantissa % 10 == 0 && mantissa != 0 {
        mantissa /= 10;
        exp10 += 1;
    }
    let mut digits = StackStr::default();
    let _ = write!(digits, "{mantissa}");
    let digits = digits.as_bytes();
    // Decimal exponent of the first digit.
    let exp = exp10 + digits.len() as i32 - 1;
    if (-4..F::SCIENTIFIC_FROM).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                buf.put_slice(digits);
                buf.put_bytes(b'0', int_len - digits.len());
            } else {
                buf.put_slice(&digits[..int_len]);
                buf.put_u8(b'.');
                buf.put_slice(&digits[int_len..]);
            }
        } else {
            buf.put_slice(b"0.");
            buf.put_bytes(b'0', (-exp - 1) as usize);
            buf.put_slice(digits);
        }
    } else {
        buf.put_u8(digits[0]);
        if digits.len() > 1 {
            buf.put_u8(b'.');
            buf.put_slice(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(buf, "e{sign}{:02}", exp.unsigned_abs());
    }
}

/// The digits PostgreSQL's Ryu picks for a finite positive `v`, as `mantissa · 10^exp`: the
/// fewest digits strictly inside the rounding interval of `v` (bounds excluded, unlike
/// Rust's formatter, which includes them for even mantissas), and among those the closest to
/// `v`, exact ties going to the even digit (Rust's formatter rounds them up).
///
/// Rust's shortest form is right except in those two cases, which need `v` to be exactly
/// representable in few decimal digits; they are detected exactly and handled by trying
/// longer correctly rounded forms.
fn shortest_decimal<F: PgFloat>(v: F) -> (u64, i32) {
    let (m, e, lower_gap_is_half) = v.decompose();
    let (d, p) = rust_digits(format_args!("{v:e}"));
    let on_bound = |d: u64, p: i32| {
        dec_eq_bin(d, p, 2 * m + 1, e - 1)
            || if lower_gap_is_half {
                dec_eq_bin(d, p, 4 * m - 1, e - 2)
            } else {
                dec_eq_bin(d, p, 2 * m - 1, e - 1)
            }
    };
    // `v` lies exactly halfway between `d · 10^p` and `(d + 1) · 10^p`.
    let tie_above = |d: u64, p: i32| dec_eq_bin(2 * d + 1, p, m, e + 1);
    let tie_below = |d: u64, p: i32| d > 0 && dec_eq_bin(2 * d - 1, p, m, e + 1);
    if !on_bound(d, p) && !tie_above(d, p) && !tie_below(d, p) {
        return (d, p);
    }
    let reads_back = |d: u64, p: i32| {
        d > 0 && format!("{d}e{p}").parse::<F>().is_ok_and(|r| r == v) && !on_bound(d, p)
    };
    let first_len = digit_count(d);
    for len in first_len..=F::MAX_DIGITS {
        let (mut d, p) = rust_digits(format_args!("{v:.*e}", len - 1));
        if tie_above(d, p) && d % 2 == 1 {
            d += 1;
        } else if tie_below(d, p) && d % 2 == 1 {
            d -= 1;
        }
        for candidate in [d, d + 1, d.saturating_sub(1)] {
            if reads_back(candidate, p) {
                return (candidate, p);
            }
        }
    }
    (d, p)
}

fn digit_count(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// Rust's `{:e}` output of a positive float as `(digits, exponent of the last digit)`.
fn rust_digits(args: std::fmt::Arguments<'_>) -> (u64, i32) {
    let mut text = StackStr::default();
    // StackStr holds any float in `{:e}` form with up to 17 digits.
    let _ = text.write_fmt(args);
    let text = text.as_bytes();
    let e_at = text.iter().position(|&b| b == b'e').unwrap_or(text.len());
    let exp: i32 = std::str::from_utf8(text.get(e_at + 1..).unwrap_or(&[]))
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let mut digits = 0u64;
    let mut count = 0;
    for &b in text[..e_at].iter().filter(|b| b.is_ascii_digit()) {
        digits = digits * 10 + u64::from(b - b'0');
        count += 1;
    }
    (digits, exp - (count - 1))
}

/// Whether `d · 10^p == n · 2^q` exactly (`d`, `n` > 0).
fn dec_eq_bin(d: u64, p: i32, n: u64, q: i32) -> bool {
    if d == 0 || n == 0 {
        return false;
    }
    let (d_twos, n_twos) = (d.trailing_zeros() as i32, n.trailing_zeros() as i32);
    // d · 10^p = (d / 2^a) · 5^p · 2^(a + p); both sides' powers of two must agree.
    if d_twos + p != n_twos + q {
        return false;
    }
    let (d_odd, n_odd) = (u128::from(d >> d_twos), u128::from(n >> n_twos));
    let pow5 = |k: u32| 5u128.checked_pow(k);
    if p >= 0 {
        pow5(p.unsigned_abs()).and_then(|f| d_odd.checked_mul(f)) == Some(n_odd)
    } else {
        pow5(p.unsigned_abs()).and_then(|f| n_odd.checked_mul(f)) == Some(d_odd)
    }
}

/// A fixed-capacity string on the stack, for formatting without allocating.
struct StackStr {
    buf: [u8; 40],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        Self {
            buf: [0; 40],
            len: 0,
        }
    }
}

impl StackStr {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dest = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn put_decimal_i128(buf: &mut BytesMut, v: i128, scale: i8, binary: bool) {
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    let mut rest = v.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    put_decimal(buf, v < 0, &digits[at..], scale, binary);
}

/// A decimal given as sign, ASCII digits of its unscaled magnitude and scale: in text with
/// exactly `scale` fractional digits (PostgreSQL's `numeric_out`), in binary as
/// `numeric_send`'s base-10000 digits.
fn put_decimal(buf: &mut BytesMut, negative: bool, digits: &[u8], scale: i8, binary: bool) {
    let digits = match digits.iter().position(|&d| d != b'0') {
        Some(first) => &digits[first..],
        None => &[],
    };
    let negative = negative && !digits.is_empty();
    if binary {
        put_numeric_binary(buf, negative, digits, scale);
        return;
    }
    if negative {
        buf.put_u8(b'-');
    }
    if scale <= 0 {
        if digits.is_empty() {
            buf.put_u8(b'0');
        } else {
            buf.put_slice(digits);
            buf.put_bytes(b'0', usize::from(scale.unsigned_abs()));
        }
        return;
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        buf.put_slice(int);
        buf.put_u8(b'.');
        buf.put_slice(frac);
    } else {
        buf.put_slice(b"0.");
        buf.put_bytes(b'0', scale - digits.len());
        buf.put_slice(digits);
    }
}

/// `numeric_send`: ndigits, weight, sign, dscale, then base-10000 digits, with leading and
/// trailing zero digits stripped (`weight` is the power of 10000 of the first digit).
fn put_numeric_binary(buf: &mut BytesMut, negative: bool, digits: &[u8], scale: i8) {
    // Negative scales are whole numbers with trailing zeros.
    let trailing_zeros = if scale < 0 {
        usize::from(scale.unsigned_abs())
    } else {
        0
    };
    let frac_len = if scale > 0 { scale as usize } else { 0 };
    let total = digits.len() + trailing_zeros;
    let int_len = total.saturating_sub(frac_len);
    let lead = (4 - int_len % 4) % 4;
    let int_groups = (int_len + lead) / 4;
    let frac_groups = frac_len.div_ceil(4);
    // Decimal digit `j` of the sequence `lead` zeros, integer part, `frac_len` fraction
    // digits, padding zeros (which puts the decimal point on a group boundary) is
    // `digits[j - lead - pad]`, or zero outside `digits`; `pad` counts the zeros between the
    // point and the first digit of a value below 1.
    let pad = int_len + frac_len - total;
    let digit = |j: usize| -> i16 {
        j.checked_sub(lead + pad)
            .and_then(|i| digits.get(i))
            .map_or(0, |d| i16::from(d - b'0'))
    };
    let groups: Vec<i16> = (0..int_groups + frac_groups)
        .map(|g| (0..4).fold(0, |acc, k| acc * 10 + digit(g * 4 + k)))
        .collect();
    let mut weight = int_groups as i32 - 1;
    let first = groups.iter().position(|&g| g != 0);
    let last = groups.iter().rposition(|&g| g != 0);
    let groups = match (first, last) {
        (Some(first), Some(last)) => {
            weight -= first as i32;
            &groups[first..=last]
        }
        _ => {
            weight = 0;
            &[][..]
        }
    };
    buf.put_i16(groups.len() as i16);
    buf.put_i16(weight as i16);
    buf.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    buf.put_u16(frac_len as u16);
    for &g in groups {
        buf.put_i16(g);
    }
}

/// A proleptic Gregorian date from days since 1970-01-01 (year 0 is 1 BC).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 is 1 BC).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of a day since 1970-01-01; returns whether the year is BC (the caller
/// appends ` BC` after anything else it prints).
fn put_date_text(buf: &mut BytesMut, days: i64) -> bool {
    let (year, month, day) = civil_from_days(days);
    let (year, bc) = if year <= 0 {
        (1 - year, true)
    } else {
        (year, false)
    };
    let _ = write!(buf, "{year:04}-{month:02}-{day:02}");
    bc
}

/// A date (days since 1970-01-01); `None` if it does not fit PostgreSQL's binary form.
fn put_date(buf: &mut BytesMut, days: i64, binary: bool) -> Option<()> {
    if binary {
        let pg = i32::try_from(days.checked_sub(PG_EPOCH_DAYS)?).ok()?;
        buf.put_i32(pg);
    } else if put_date_text(buf, days) {
        buf.put_slice(b" BC");
    }
    Some(())
}

/// `HH:MM:SS[.ffffff]` of a non-negative number of microseconds, fraction trimmed.
fn put_clock(buf: &mut BytesMut, micros: u64) {
    let hours = micros / MICROS_PER_HOUR as u64;
    let minutes = micros / MICROS_PER_MINUTE as u64 % 60;
    let seconds = micros / MICROS_PER_SECOND as u64 % 60;
    let _ = write!(buf, "{hours:02}:{minutes:02}:{seconds:02}");
    let mut fraction = micros % MICROS_PER_SECOND as u64;
    if fraction != 0 {
        let mut width = 6;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            width -= 1;
        }
        let _ = write!(buf, ".{fraction:0width$}");
    }
}

/// A time of day in microseconds since midnight.
fn put_time(buf: &mut BytesMut, micros: i64, binary: bool) {
    if binary {
        buf.put_i64(micros);
    } else {
        put_clock(buf, micros.rem_euclid(MICROS_PER_DAY) as u64);
    }
}

/// A timestamp in microseconds since the Unix epoch, UTC; `None` if it does not fit
/// PostgreSQL's binary form.
fn put_timestamp(buf: &mut BytesMut, micros: i64, tz: bool, binary: bool) -> Option<()> {
    if binary {
        buf.put_i64(micros.checked_sub(PG_EPOCH_MICROS)?);
        return Some(());
    }
    let bc = put_date_text(buf, micros.div_euclid(MICROS_PER_DAY));
    buf.put_u8(b' ');
    put_clock(buf, micros.rem_euclid(MICROS_PER_DAY) as u64);
    if tz {
        // Sessions run in UTC, so every instant is printed with offset +00.
        buf.put_slice(b"+00");
    }
    if bc {
        buf.put_slice(b" BC");
    }
    Some(())
}

/// An interval: binary `interval_send` (microseconds, days, months), text in PostgreSQL's
/// default `postgres` IntervalStyle (`1 year 2 mons -3 days +04:05:06.5`).
fn put_interval(buf: &mut BytesMut, months: i32, days: i32, micros: i64, binary: bool) {
    if binary {
        buf.put_i64(micros);
        buf.put_i32(days);
        buf.put_i32(months);
        return;
    }
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |buf: &mut BytesMut, value: i64, unit: &str| {
        if value == 0 {
            return;
        }
        let space = if is_zero { "" } else { " " };
        let plus = if is_before && value > 0 { "+" } else { "" };
        let plural = if value != 1 { "s" } else { "" };
        let _ = write!(buf, "{space}{plus}{value} {unit}{plural}");
        // As in PostgreSQL, each nonzero part decides whether the next one shows a `+`.
        is_before = value < 0;
        is_zero = false;
    };
    let months = i64::from(months);
    part(buf, months / 12, "year");
    part(buf, months % 12, "mon");
    part(buf, i64::from(days), "day");
    if is_zero || micros != 0 {
        if !is_zero {
            buf.put_u8(b' ');
        }
        if micros < 0 {
            buf.put_u8(b'-');
        } else if is_before {
            buf.put_u8(b'+');
        }
        put_clock(buf, micros.unsigned_abs());
    }
}

#[cfg(test)]
// The float cases are PostgreSQL's outputs for exactly these inputs.
#[allow(clippy::excessive_precision)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray,
        DurationMicrosecondArray, Float32Array, Float64Array, Int8Array, Int32Array, Int64Array,
        IntervalDayTimeArray, IntervalMonthDayNanoArray, IntervalYearMonthArray, LargeStringArray,
        ListArray, NullArray, StringArray, StructArray, Time64MicrosecondArray,
        TimestampMicrosecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt64Array,
    };
    use datafusion::arrow::datatypes::{
        Field, IntervalDayTime, IntervalMonthDayNano, Schema, i256,
    };

    use super::*;

    fn text(array: ArrayRef) -> Vec<Option<String>> {
        (0..array.len())
            .map(|row| text_value(array.as_ref(), row))
            .collect()
    }

    fn text1(array: ArrayRef) -> String {
        text_value(array.as_ref(), 0).expect("non-null")
    }

    /// The field bytes of each row of a one-column batch in binary format.
    fn binary(array: ArrayRef) -> Vec<Option<Vec<u8>>> {
        let batch = RecordBatch::try_from_iter([("c", array)]).expect("batch");
        encode_batch(&batch, &[FieldFormat::Binary])
            .expect("encode")
            .into_iter()
            .map(|row| {
                assert_eq!(row.field_count, 1);
                let len = i32::from_be_bytes(row.data[..4].try_into().expect("4 bytes"));
                if len < 0 {
                    assert_eq!(row.data.len(), 4);
                    None
                } else {
                    assert_eq!(row.data.len(), 4 + len as usize);
                    Some(row.data[4..].to_vec())
                }
            })
            .collect()
    }

    fn binary1(array: ArrayRef) -> Vec<u8> {
        binary(array).remove(0).expect("non-null")
    }

    fn f64s(values: &[f64]) -> Vec<String> {
        let array: ArrayRef = Arc::new(Float64Array::from(values.to_vec()));
        text(array).into_iter().map(Option::unwrap).collect()
    }

    fn f32s(values: &[f32]) -> Vec<String> {
        let array: ArrayRef = Arc::new(Float32Array::from(values.to_vec()));
        text(array).into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn float8_text_matches_postgres() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (100000.0, "100000"),
            (1e15, "1e+15"),
            (1.23e-5, "1.23e-05"),
            (-0.0, "-0"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1e20, "1e+20"),
            (1.5e-7, "1.5e-07"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (12345.678, "12345.678"),
            // Checked against PostgreSQL 15: a shortest candidate exactly on the rounding
            // bound is not taken, and exact ties go to the even digit.
            (-62582340106658256.0, "-6.2582340106658256e+16"),
            (97482232476053792.0, "9.748223247605379e+16"),
            (934406162568849.25, "934406162568849.2"),
            (234403437590749.62, "234403437590749.62"),
            (-1482669589823369.2, "-1.4826695898233692e+15"),
        ];
        let values: Vec<f64> = cases.iter().map(|(v, _)| *v).collect();
        let expected: Vec<&str> = cases.iter().map(|(_, s)| *s).collect();
        assert_eq!(f64s(&values), expected);
    }

    #[test]
    fn float4_text_matches_postgres() {
        let cases: &[(f32, &str)] = &[
            (1.0, "1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1.23e-5, "1.23e-05"),
            (-0.0, "-0"),
            (f32::NAN, "NaN"),
            (f32::NEG_INFINITY, "-Infinity"),
            (3.4028235e38, "3.4028235e+38"),
            (0.3333333, "0.3333333"),
            // Checked against PostgreSQL 15, as for float8.
            (111612704.0, "1.11612704e+08"),
            (-3001650.25, "-3.0016502e+06"),
            (356192.125, "356192.12"),
            (-332249.625, "-332249.62"),
        ];
        let values: Vec<f32> = cases.iter().map(|(v, _)| *v).collect();
        let expected: Vec<&str> = cases.iter().map(|(_, s)| *s).collect();
        assert_eq!(f32s(&values), expected);
    }

    #[test]
    fn scalar_text_forms() {
        assert_eq!(
            text(Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None
            ]))),
            [Some("t".into()), Some("f".into()), None]
        );
        assert_eq!(
            text(Arc::new(Int64Array::from(vec![-42, i64::MAX]))),
            [Some("-42".into()), Some(i64::MAX.to_string())]
        );
        assert_eq!(
            text1(Arc::new(UInt64Array::from(vec![u64::MAX]))),
            u64::MAX.to_string()
        );
        assert_eq!(
            text1(Arc::new(StringArray::from(vec!["a \"b\" \\ c"]))),
            "a \"b\" \\ c"
        );
        assert_eq!(
            text1(Arc::new(BinaryArray::from(vec![&[0xde, 0xad, 0x01][..]]))),
            "\\xdead01"
        );
        assert_eq!(text1(Arc::new(BinaryArray::from(vec![&[][..]]))), "\\x");
    }

    #[test]
    fn numeric_text_has_exactly_scale_digits() {
        let decimals = |values: Vec<i128>, p: u8, s: i8| -> Vec<String> {
            let array = Decimal128Array::from(values)
                .with_precision_and_scale(p, s)
                .expect("valid");
            text(Arc::new(array))
                .into_iter()
                .map(Option::unwrap)
                .collect()
        };
        assert_eq!(
            decimals(vec![1250, -1250, 0, 5, -5, 100], 10, 2),
            ["12.50", "-12.50", "0.00", "0.05", "-0.05", "1.00"]
        );
        assert_eq!(decimals(vec![7, -7, 0], 5, 0), ["7", "-7", "0"]);
        assert_eq!(decimals(vec![12, 0], 5, -2), ["1200", "0"]);
        assert_eq!(
            decimals(vec![i128::MAX / 10], 38, 10),
            ["1701411834604692317316873037.1588410572"]
        );
        let wide = datafusion::arrow::array::Decimal256Array::from(vec![i256::from_i128(-123456)])
            .with_precision_and_scale(60, 3)
            .expect("valid");
        assert_eq!(text1(Arc::new(wide)), "-123.456");
    }

    #[test]
    fn date_and_time_text() {
        let dates = Date32Array::from(vec![0, 10_957, -1, 2_932_896, -719_528, -719_529]);
        assert_eq!(
            text(Arc::new(dates)),
            [
                Some("1970-01-01".into()),
                Some("2000-01-01".into()),
                Some("1969-12-31".into()),
                Some("9999-12-31".into()),
                Some("0001-01-01 BC".into()),
                Some("0002-12-31 BC".into()),
            ]
        );
        let times = Time64MicrosecondArray::from(vec![
            0,
            45_296_000_000,
            45_296_500_000,
            45_296_000_001,
            86_399_999_999,
        ]);
        assert_eq!(
            text(Arc::new(times)),
            [
                Some("00:00:00".into()),
                Some("12:34:56".into()),
                Some("12:34:56.5".into()),
                Some("12:34:56.000001".into()),
                Some("23:59:59.999999".into()),
            ]
        );
    }

    #[test]
    fn timestamp_text() {
        let ts = TimestampMicrosecondArray::from(vec![0, 1_700_000_000_123_400, -1]);
        assert_eq!(
            text(Arc::new(ts)),
            [
                Some("1970-01-01 00:00:00".into()),
                Some("2023-11-14 22:13:20.1234".into()),
                Some("1969-12-31 23:59:59.999999".into()),
            ]
        );
        let ns = TimestampNanosecondArray::from(vec![1_500_000_999]);
        assert_eq!(text1(Arc::new(ns)), "1970-01-01 00:00:01.5");
        let secs = TimestampSecondArray::from(vec![86_400]);
        assert_eq!(text1(Arc::new(secs)), "1970-01-02 00:00:00");
        // The stored instant is UTC whatever the zone; sessions print it at +00.
        let tz = TimestampMicrosecondArray::from(vec![3_600_000_000]).with_timezone("+02:00");
        assert_eq!(text1(Arc::new(tz)), "1970-01-01 01:00:00+00");
        let bc =
            TimestampMicrosecondArray::from(vec![-62_167_219_200_000_000]).with_timezone("UTC");
        assert_eq!(text1(Arc::new(bc)), "0001-01-01 00:00:00+00 BC");
    }

    #[test]
    fn interval_text_uses_postgres_style() {
        let mdn = |months, days, nanoseconds| IntervalMonthDayNano {
            months,
            days,
            nanoseconds,
        };
        let hms = |h: i64, m: i64, s: i64| (h * 3600 + m * 60 + s) * 1_000_000_000;
        let intervals = IntervalMonthDayNanoArray::from(vec![
            mdn(14, 3, hms(4, 5, 6) + 500_000_000),
            mdn(0, 0, hms(0, 0, 1)),
            mdn(0, -1, hms(2, 0, 0)),
            mdn(0, 1, 0),
            mdn(2, 0, 0),
            mdn(0, 0, 0),
            mdn(-14, 0, 0),
            mdn(0, 0, -hms(1, 2, 3)),
            mdn(1, -2, -hms(0, 0, 1)),
            mdn(0, 0, hms(100, 0, 0)),
            mdn(12, 0, 0),
        ]);
        assert_eq!(
            text(Arc::new(intervals))
                .into_iter()
                .map(Option::unwrap)
                .collect::<Vec<_>>(),
            [
                "1 year 2 mons 3 days 04:05:06.5",
                "00:00:01",
                "-1 days +02:00:00",
                "1 day",
                "2 mons",
                "00:00:00",
                "-1 years -2 mons",
                "-01:02:03",
                "1 mon -2 days -00:00:01",
                "100:00:00",
                "1 year",
            ]
        );
        let day_time = IntervalDayTimeArray::from(vec![IntervalDayTime::new(2, 1_500)]);
        assert_eq!(text1(Arc::new(day_time)), "2 days 00:00:01.5");
        let year_month = IntervalYearMonthArray::from(vec![25]);
        assert_eq!(text1(Arc::new(year_month)), "2 years 1 mon");
        let duration = DurationMicrosecondArray::from(vec![90_000_000]);
        assert_eq!(text1(Arc::new(duration)), "00:01:30");
    }

    fn int_list(rows: Vec<Option<Vec<Option<i32>>>>) -> ArrayRef {
        Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(rows))
    }

    fn str_list(rows: Vec<Option<Vec<Option<&str>>>>) -> ArrayRef {
        let mut offsets = vec![0i32];
        let mut values = Vec::new();
        let mut validity = Vec::new();
        for row in &rows {
            validity.push(row.is_some());
            for v in row.iter().flatten() {
                values.push(*v);
            }
            offsets.push(values.len() as i32);
        }
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            datafusion::arrow::buffer::OffsetBuffer::new(offsets.into()),
            Arc::new(StringArray::from(values)),
            Some(validity.into()),
        ))
    }

    #[test]
    fn lists_print_as_postgres_arrays() {
        let ints = int_list(vec![
            Some(vec![Some(1), Some(2), None]),
            Some(vec![]),
            None,
            Some(vec![Some(-3)]),
        ]);
        assert_eq!(
            text(ints),
            [
                Some("{1,2,NULL}".into()),
                Some("{}".into()),
                None,
                Some("{-3}".into())
            ]
        );
        let strings = str_list(vec![Some(vec![
            Some("a b"),
            Some("c"),
            Some(""),
            Some("null"),
            Some("q\"x"),
            Some("back\\slash"),
            Some("{}"),
            None,
        ])]);
        assert_eq!(
            text1(strings),
            r#"{"a b",c,"","null","q\"x","back\\slash","{}",NULL}"#
        );
    }

    #[test]
    fn sliced_lists_use_their_own_elements() {
        let ints = int_list(vec![
            Some(vec![Some(1)]),
            Some(vec![Some(2), Some(3)]),
            Some(vec![Some(4)]),
        ]);
        let sliced = ints.slice(1, 2);
        assert_eq!(
            text(sliced.clone()),
            [Some("{2,3}".into()), Some("{4}".into())]
        );
        let bytes = binary(sliced);
        let mut expected = Vec::new();
        for v in [1i32, 0, 23, 2, 1] {
            expected.extend_from_slice(&v.to_be_bytes());
        }
        for v in [2i32, 3] {
            expected.extend_from_slice(&4i32.to_be_bytes());
            expected.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(bytes[0].as_deref(), Some(&expected[..]));
    }

    #[test]
    fn binary_arrays_follow_array_send() {
        let ints = int_list(vec![Some(vec![Some(7), None]), Some(vec![]), None]);
        let rows = binary(ints);
        let mut first = Vec::new();
        for v in [1i32, 1, 23, 2, 1, 4, 7, -1] {
            first.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(rows[0].as_deref(), Some(&first[..]));
        let mut empty = Vec::new();
        for v in [0i32, 0, 23] {
            empty.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(rows[1].as_deref(), Some(&empty[..]));
        assert_eq!(rows[2], None);
    }

    #[test]
    fn binary_scalars() {
        assert_eq!(
            binary1(Arc::new(Int8Array::from(vec![-2]))),
            (-2i16).to_be_bytes()
        );
        assert_eq!(
            binary1(Arc::new(Int32Array::from(vec![0x01020304]))),
            [1, 2, 3, 4]
        );
        assert_eq!(binary1(Arc::new(BooleanArray::from(vec![true]))), [1]);
        assert_eq!(
            binary1(Arc::new(Float64Array::from(vec![1.5]))),
            1.5f64.to_be_bytes()
        );
        assert_eq!(
            binary1(Arc::new(Date32Array::from(vec![10_958]))),
            [0, 0, 0, 1]
        );
        assert_eq!(
            binary1(Arc::new(TimestampMicrosecondArray::from(vec![
                PG_EPOCH_MICROS + 5
            ]))),
            5i64.to_be_bytes()
        );
        let interval = binary1(Arc::new(IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(3, 2, 1_000),
        ])));
        let mut expected = 1i64.to_be_bytes().to_vec();
        expected.extend_from_slice(&2i32.to_be_bytes());
        expected.extend_from_slice(&3i32.to_be_bytes());
        assert_eq!(interval, expected);
        assert_eq!(
            binary1(Arc::new(LargeStringArray::from(vec!["\"hé\""]))),
            b"\x01\"h\xc3\xa9\"".to_vec()
        );
    }

    #[test]
    fn binary_uint64_out_of_range_fails() {
        let batch = RecordBatch::try_from_iter([(
            "c",
            Arc::new(UInt64Array::from(vec![u64::MAX])) as ArrayRef,
        )])
        .expect("batch");
        let err = encode_batch(&batch, &[FieldFormat::Binary]).expect_err("too big for int8");
        assert!(
            matches!(err, EncodeError::OutOfRange { column: 0, .. }),
            "{err}"
        );
        assert!(encode_batch(&batch, &[FieldFormat::Text]).is_ok());
    }

    fn numeric(value: i128, scale: i8) -> Vec<u8> {
        let precision = if scale > 0 { 38 } else { 30 };
        let array = Decimal128Array::from(vec![value])
            .with_precision_and_scale(precision, scale)
            .expect("valid");
        binary1(Arc::new(array))
    }

    /// `numeric_send` bytes from its header fields and base-10000 digits.
    fn numeric_bytes(weight: i16, negative: bool, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numeric_binary_matches_numeric_send() {
        assert_eq!(numeric(0, 0), numeric_bytes(0, false, 0, &[]));
        assert_eq!(numeric(0, 2), numeric_bytes(0, false, 2, &[]));
        assert_eq!(numeric(1, 0), numeric_bytes(0, false, 0, &[1]));
        assert_eq!(numeric(-1, 0), numeric_bytes(0, true, 0, &[1]));
        assert_eq!(numeric(1250, 2), numeric_bytes(0, false, 2, &[12, 5000]));
        assert_eq!(numeric(-1250, 2), numeric_bytes(0, true, 2, &[12, 5000]));
        assert_eq!(numeric(10000, 0), numeric_bytes(1, false, 0, &[1]));
        assert_eq!(numeric(1, 4), numeric_bytes(-1, false, 4, &[1]));
        assert_eq!(numeric(1, 5), numeric_bytes(-2, false, 5, &[1000]));
        assert_eq!(
            numeric(123_456_789_123, 3),
            numeric_bytes(2, false, 3, &[1, 2345, 6789, 1230])
        );
        assert_eq!(numeric(100_000_000, 4), numeric_bytes(1, false, 4, &[1]));
        assert_eq!(numeric(12, -2), numeric_bytes(0, false, 0, &[1200]));
        assert_eq!(numeric(5, -4), numeric_bytes(1, false, 0, &[5]));
        assert_eq!(
            numeric(123_456_789, 9),
            numeric_bytes(-1, false, 9, &[1234, 5678, 9000])
        );
    }

    #[test]
    fn two_by_two_batch_has_exact_data_row_bytes() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("ab"), Some("")])),
            ],
        )
        .expect("batch");

        let text_rows = encode_batch(&batch, &[]).expect("text");
        assert_eq!(text_rows.len(), 2);
        assert_eq!(text_rows[0].field_count, 2);
        assert_eq!(&text_rows[0].data[..], b"\0\0\0\x011\0\0\0\x02ab");
        assert_eq!(&text_rows[1].data[..], b"\xff\xff\xff\xff\0\0\0\0");

        let mixed = encode_batch(&batch, &[FieldFormat::Binary, FieldFormat::Text]).expect("mixed");
        assert_eq!(&mixed[0].data[..], b"\0\0\0\x04\0\0\0\x01\0\0\0\x02ab");
        assert_eq!(&mixed[1].data[..], b"\xff\xff\xff\xff\0\0\0\0");

        let err = encode_batch(&batch, &[FieldFormat::Text; 3]).expect_err("3 formats");
        assert!(matches!(
            err,
            EncodeError::FormatCount {
                formats: 3,
                columns: 2
            }
        ));
    }

    #[test]
    fn nulls_dictionaries_and_fallback() {
        assert_eq!(text(Arc::new(NullArray::new(2))), [None, None]);
        assert_eq!(binary(Arc::new(NullArray::new(1))), [None]);

        let dict: DictionaryArray<Int32Type> =
            vec![Some("x"), None, Some("x")].into_iter().collect();
        let dict: ArrayRef = Arc::new(dict);
        assert_eq!(
            text(dict.clone()),
            [Some("x".into()), None, Some("x".into())]
        );
        assert_eq!(binary(dict)[2].as_deref(), Some(&b"x"[..]));

        // A row value as PostgreSQL's `record`: quoted where `record_out` quotes.
        let structs: ArrayRef = Arc::new(StructArray::from(vec![
            (
                Arc::new(Field::new("a", DataType::Int32, true)),
                Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("b", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["a \"q\" (x)", ""])) as ArrayRef,
            ),
        ]));
        assert_eq!(
            text(structs.clone()),
            [Some(r#"(1,"a ""q"" (x)")"#.into()), Some(r#"(,"")"#.into())]
        );
        let mut expected = 2i32.to_be_bytes().to_vec();
        expected.extend_from_slice(&23u32.to_be_bytes());
        expected.extend_from_slice(&4i32.to_be_bytes());
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&25u32.to_be_bytes());
        expected.extend_from_slice(&9i32.to_be_bytes());
        expected.extend_from_slice(b"a \"q\" (x)");
        assert_eq!(binary(structs)[0].as_deref(), Some(&expected[..]));
    }

    #[test]
    fn text_value_out_of_bounds_is_none() {
        let array = Int32Array::from(vec![1]);
        assert_eq!(text_value(&array, 1), None);
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [
            -1_000_000, -719_528, -1, 0, 59, 60, 10_957, 2_932_896, 5_000_000,
        ] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
