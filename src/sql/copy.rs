//! `COPY t [(cols)] FROM STDIN`: the options PostgreSQL accepts, and decoding the received text
//! or CSV into a batch in the table's schema. Decoding is columnar: arrow-csv splits the fields
//! into string columns, and Arrow's cast kernel converts each column at once.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options, concat_batches};
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::FormatOptions;
use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, Ident};

use crate::error::{Error, Result, sqlstate};

/// The text formats of `COPY`.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyFormat {
    /// PostgreSQL's text format: tab-separated, `\N` for NULL, backslash escapes.
    Text {
        /// Field separator.
        delimiter: u8,
        /// The string that means NULL.
        null: String,
    },
    /// CSV: quoted fields, an unquoted empty field is NULL.
    Csv {
        /// Field separator.
        delimiter: u8,
        /// Quote character.
        quote: u8,
        /// Escape character inside quotes (defaults to the quote).
        escape: u8,
        /// Whether the first line is a header to skip.
        header: bool,
    },
}

/// A `COPY … FROM STDIN` ready to receive data.
#[derive(Debug, Clone)]
pub struct CopyIn {
    /// Target table name.
    pub table: String,
    /// The table's schema.
    pub schema: SchemaRef,
    /// For each field of the received rows, the index of the table column it fills.
    pub columns: Vec<usize>,
    /// How the data is encoded.
    pub format: CopyFormat,
}

impl CopyFormat {
    /// Reads the options of a `COPY` statement (both the `WITH (…)` and the legacy spelling).
    pub fn from_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Self> {
        let mut csv = false;
        let mut delimiter = None;
        let mut null = None;
        let mut header = false;
        let mut quote = b'"';
        let mut escape = None;
        let byte = |c: char, what: &str| -> Result<u8> {
            u8::try_from(c).map_err(|_| {
                Error::user(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("COPY {what} must be a single one-byte character"),
                )
            })
        };
        for option in options {
            match option {
                CopyOption::Format(Ident { value, .. }) => match value.to_lowercase().as_str() {
                    "csv" => csv = true,
                    "text" => csv = false,
                    other => {
                        return Err(Error::unsupported(format!("COPY format \"{other}\"")));
                    }
                },
                CopyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = byte(*c, "quote")?,
                CopyOption::Escape(c) => escape = Some(byte(*c, "escape")?),
                CopyOption::Encoding(e)
                    if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                CopyOption::Freeze(_) => {}
                other => return Err(Error::unsupported(format!("COPY option {other}"))),
            }
        }
        for option in legacy {
            match option {
                CopyLegacyOption::Csv(csv_options) => {
                    csv = true;
                    for o in csv_options {
                        match o {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(c) => quote = byte(*c, "quote")?,
                            CopyLegacyCsvOption::Escape(c) => escape = Some(byte(*c, "escape")?),
                            other => {
                                return Err(Error::unsupported(format!("COPY option {other}")));
                            }
                        }
                    }
                }
                CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                other => return Err(Error::unsupported(format!("COPY option {other}"))),
            }
        }
        if csv {
            if null.as_deref().is_some_and(|n| !n.is_empty()) {
                return Err(Error::unsupported(
                    "COPY CSV with a NULL string other than ''",
                ));
            }
            Ok(Self::Csv {
                delimiter: delimiter.unwrap_or(b','),
                quote,
                escape: escape.unwrap_or(quote),
                header,
            })
        } else {
            if header {
                return Err(Error::unsupported("COPY HEADER available only in CSV mode"));
            }
            Ok(Self::Text {
                delimiter: delimiter.unwrap_or(b'\t'),
                null: null.unwrap_or_else(|| "\\N".to_string()),
            })
        }
    }
}

impl CopyIn {
    /// Decodes everything received into one batch in the table's schema. Columns not listed
    /// are NULL. A malformed line or value fails the whole COPY: nothing is written.
    pub fn decode(&self, data: &[u8]) -> Result<RecordBatch> {
        let text_schema = Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|&i| Field::new(self.schema.field(i).name(), DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        // PostgreSQL's text format ends the data with an optional `\.` line.
        let data = strip_end_marker(data);
        let mut builder = ReaderBuilder::new(Arc::clone(&text_schema)).with_batch_size(65536);
        let unescape;
        match &self.format {
            CopyFormat::Csv {
                delimiter,
                quote,
                escape,
                header,
            } => {
                builder = builder
                    .with_delimiter(*delimiter)
                    .with_quote(*quote)
                    .with_header(*header);
                if escape != quote {
                    builder = builder.with_escape(*escape);
                }
                unescape = false;
            }
            CopyFormat::Text { delimiter, null } => {
                let null_regex = regex::Regex::new(&format!("^{}$", regex::escape(null)))
                    .map_err(|e| Error::unsupported(format!("COPY NULL string: {e}")))?;
                // Text format has no quoting; a NUL byte can't appear in valid UTF-8 text data.
                builder = builder
                    .with_delimiter(*delimiter)
                    .with_quote(0)
                    .with_null_regex(null_regex);
                unescape = true;
            }
        }
        let reader = builder.build(Cursor::new(data)).map_err(copy_error)?;
        let mut batches = Vec::new();
        for batch in reader {
            batches.push(batch.map_err(copy_error)?);
        }
        let text = concat_batches(&text_schema, &batches)?;
        let rows = text.num_rows();
        let mut columns: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), rows))
            .collect();
        let cast_options = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        for (field_index, &column) in self.columns.iter().enumerate() {
            let mut values: ArrayRef = Arc::clone(text.column(field_index));
            if unescape {
                values = unescape_text(values.as_string::<i32>());
            }
            let target = self.schema.field(column);
            columns[column] = cast_with_options(&values, target.data_type(), &cast_options)
                .map_err(|e| {
                    Error::user(
                        sqlstate::INVALID_TEXT_REPRESENTATION,
                        format!("invalid input for column \"{}\": {e}", target.name()),
                    )
                })?;
        }
        let loose = Schema::new(
            self.schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        );
        Ok(RecordBatch::try_new(Arc::new(loose), columns)?)
    }
}

fn copy_error(e: datafusion::arrow::error::ArrowError) -> Error {
    Error::user(sqlstate::BAD_COPY_FORMAT, format!("COPY data: {e}"))
}

fn strip_end_marker(data: &[u8]) -> &[u8] {
    for marker in [&b"\\.\n"[..], &b"\\.\r\n"[..], &b"\\."[..]] {
        if data.ends_with(marker)
            && (data.len() == marker.len() || data[data.len() - marker.len() - 1] == b'\n')
        {
            return &data[..data.len() - marker.len()];
        }
    }
    data
}

/// Undoes the text format's backslash escapes (`\t`, `\n`, `\\` …) where a value has any.
fn unescape_text(values: &StringArray) -> ArrayRef {
    if !values.iter().flatten().any(|v| v.contains('\\')) {
        return Arc::new(values.clone());
    }
    let out: StringArray = values
        .iter()
        .map(|v| {
            v.map(|v| {
                let mut s = String::with_capacity(v.len());
                let mut chars = v.chars();
                while let Some(c) = chars.next() {
                    if c != '\\' {
                        s.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some('t') => s.push('\t'),
                        Some('n') => s.push('\n'),
                        Some('r') => s.push('\r'),
                        Some('b') => s.push('\u{8}'),
                        Some('f') => s.push('\u{c}'),
                        Some('v') => s.push('\u{b}'),
                        Some(other) => s.push(other),
                        None => s.push('\\'),
                    }
                }
                s
            })
        })
        .collect();
    Arc::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;

    fn copy_in(format: CopyFormat) -> CopyIn {
        CopyIn {
            table: "t".into(),
            schema: Arc::new(Schema::new(vec![
                Field::new("a", DataType::Int32, false),
                Field::new("b", DataType::Utf8, true),
                Field::new("c", DataType::Boolean, true),
            ])),
            columns: vec![0, 1, 2],
            format,
        }
    }

    #[test]
    fn csv_with_quotes_and_nulls() {
        let c = copy_in(
            CopyFormat::from_options(&[CopyOption::Format(Ident::new("csv"))], &[]).unwrap(),
        );
        let batch = c.decode(b"1,\"x, y\",t\n2,,false\n").unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            batch
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int32Type>(),
            &Int32Array::from(vec![1, 2])
        );
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "x, y");
        assert!(batch.column(1).is_null(1));
    }

    #[test]
    fn text_format_with_escapes_and_null_marker() {
        let c = copy_in(CopyFormat::from_options(&[], &[]).unwrap());
        let batch = c.decode(b"1\ta\\tb\t\\N\n\\.\n").unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "a\tb");
        assert!(batch.column(2).is_null(0));
    }

    #[test]
    fn bad_values_are_22p02() {
        let c = copy_in(
            CopyFormat::from_options(&[CopyOption::Format(Ident::new("csv"))], &[]).unwrap(),
        );
        let err = c.decode(b"x,a,t\n").unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::INVALID_TEXT_REPRESENTATION);
    }
}
