//! `COPY t [(cols)] FROM STDIN`: the options PostgreSQL accepts, and decoding the received text
//! or CSV into a batch in the table's schema. Decoding is columnar: arrow-csv splits the fields
//! into string columns, and Arrow's cast kernel converts each column at once.

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
    /// PostgreSQL's binary format: a signature and header, then tuples of length-prefixed
    /// values in each column type's binary form.
    Binary,
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
    /// Per column of `schema`, its `DEFAULT`, which the rows get where the COPY leaves the
    /// column out (empty, or `None`: NULL).
    pub defaults: Vec<Option<crate::catalog::table_def::ColumnDefault>>,
}

impl CopyFormat {
    /// The field separator.
    pub fn delimiter(&self) -> u8 {
        match self {
            CopyFormat::Text { delimiter, .. } | CopyFormat::Csv { delimiter, .. } => *delimiter,
            CopyFormat::Binary => 0,
        }
    }

    /// Whether `HEADER` was given (a first line of column names).
    pub fn header(&self) -> bool {
        matches!(self, CopyFormat::Csv { header: true, .. })
    }

    /// Reads the options of a `COPY` statement (both the `WITH (…)` and the legacy spelling).
    pub fn from_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Self> {
        let binary = options.iter().any(|o| {
            matches!(o, CopyOption::Format(Ident { value, .. }) if value.eq_ignore_ascii_case("binary"))
        }) || legacy.iter().any(|o| matches!(o, CopyLegacyOption::Binary));
        if binary {
            if options.len() + legacy.len() > 1 {
                return Err(Error::unsupported(
                    "COPY (FORMAT binary) with other options",
                ));
            }
            return Ok(Self::Binary);
        }
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

/// Rows per batch the decoder makes: bounds what one step of a COPY holds in memory.
const DECODE_BATCH_ROWS: usize = 16_384;
/// Decoded rows a COPY keeps in memory before it stages them in a file.
const STAGE_IN_MEMORY_BYTES: usize = 16 << 20;
/// The longest line the decoder waits for: a line longer than this is refused.
pub const MAX_LINE_BYTES: usize = 64 << 20;

impl CopyIn {
    /// Decodes `data` (a whole COPY's text) into one batch in the table's schema. Columns not
    /// listed are NULL. A malformed line or value fails the whole COPY: nothing is written.
    pub fn decode(&self, data: &[u8]) -> Result<RecordBatch> {
        let mut decoder = CopyDecoder::new(self.clone())?;
        let mut batches = Vec::new();
        decoder.push(data, &mut |b| {
            batches.push(b);
            Ok(())
        })?;
        decoder.finish(&mut |b| {
            batches.push(b);
            Ok(())
        })?;
        Ok(concat_batches(&decoder.loose_schema(), &batches)?)
    }

    fn text_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|&i| Field::new(self.schema.field(i).name(), DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ))
    }
}

/// Decodes a COPY's data as it arrives, in pieces of any size: complete lines go to arrow-csv's
/// incremental decoder, and every [`DECODE_BATCH_ROWS`] rows come out as a batch in the
/// table's schema (NOT NULL checked). Memory does not grow with the COPY's size.
pub struct CopyDecoder {
    copy: CopyIn,
    decoder: datafusion::arrow::csv::reader::Decoder,
    /// Whether values need the text format's backslash escapes undone.
    unescape: bool,
    /// The bytes after the last complete line but one: the last line is held back so that
    /// an end marker (`\.`) is seen as such.
    tail: Vec<u8>,
    loose: SchemaRef,
    /// CSV only: marks unquoted empty fields (NULL) apart from `""` (the empty string).
    csv_nulls: Option<CsvNulls>,
    /// The marked bytes of the piece being decoded (reused).
    marked: Vec<u8>,
    /// Binary format only: its decoder, in place of arrow-csv's.
    binary: Option<BinaryCopy>,
}

impl std::fmt::Debug for CopyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyDecoder")
            .field("table", &self.copy.table)
            .finish()
    }
}

impl CopyDecoder {
    /// A decoder for a `COPY … FROM STDIN`.
    pub fn new(copy: CopyIn) -> Result<Self> {
        let mut builder = ReaderBuilder::new(copy.text_schema()).with_batch_size(DECODE_BATCH_ROWS);
        let unescape;
        let mut csv_nulls = None;
        let mut binary = None;
        match &copy.format {
            CopyFormat::Csv {
                delimiter,
                quote,
                escape,
                header,
            } => {
                let null_regex = regex::Regex::new(&format!("^\\x{CSV_NULL:02x}$"))
                    .map_err(|e| Error::internal(format!("the CSV null pattern: {e}")))?;
                builder = builder
                    .with_delimiter(*delimiter)
                    .with_quote(*quote)
                    .with_header(*header)
                    .with_null_regex(null_regex);
                if escape != quote {
                    builder = builder.with_escape(*escape);
                }
                csv_nulls = Some(CsvNulls::new(*delimiter, *quote, *escape));
                unescape = false;
            }
            CopyFormat::Binary => {
                // The text decoder below stays unused.
                binary = Some(BinaryCopy::new(&copy));
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
        let loose = Arc::new(Schema::new(
            copy.schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            decoder: builder.build_decoder(),
            unescape,
            tail: Vec::new(),
            loose,
            copy,
            csv_nulls,
            marked: Vec::new(),
            binary,
        })
    }

    /// The schema of the batches it makes: the table's, every column nullable.
    pub fn loose_schema(&self) -> SchemaRef {
        Arc::clone(&self.loose)
    }

    /// Takes the next piece of data; every batch completed goes to `out`.
    pub fn push(
        &mut self,
        data: &[u8],
        out: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        if self.binary.is_some() {
            return self.push_binary(data, false, out);
        }
        let old = self.tail.len();
        self.tail.extend_from_slice(data);
        // Feed everything up to the last complete line but one. Only the new bytes are
        // searched for the last newline, so a long line arriving in many pieces costs its
        // length once, not once per piece.
        let Some(last) = memchr_rev(b'\n', &self.tail[old..]).map(|p| p + old) else {
            return self.check_line_length();
        };
        let Some(before) = memchr_rev(b'\n', &self.tail[..last]) else {
            return self.check_line_length();
        };
        let ready = std::mem::take(&mut self.tail);
        self.feed(&ready[..=before], out)?;
        self.tail = ready[before + 1..].to_vec();
        Ok(())
    }

    /// The data has ended: decodes what is left (without a trailing end marker).
    pub fn finish(&mut self, out: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        if self.binary.is_some() {
            return self.push_binary(&[], true, out);
        }
        let tail = std::mem::take(&mut self.tail);
        self.feed(strip_end_marker(&tail), out)?;
        if let Some(nulls) = self.csv_nulls.as_mut() {
            let mut marker = Vec::new();
            nulls.finish(&mut marker);
            self.decode_all(&marker, out)?;
        }
        // An empty piece ends the last line if it has no newline.
        self.decoder.decode(&[]).map_err(copy_error)?;
        if let Some(text) = self.decoder.flush().map_err(copy_error)? {
            out(self.typed(text)?)?;
        }
        Ok(())
    }

    /// Binary format: decodes the complete tuples received; at the end, what is left.
    fn push_binary(
        &mut self,
        data: &[u8],
        end: bool,
        out: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let Some(binary) = self.binary.as_mut() else {
            return Err(Error::internal("binary COPY data without its decoder"));
        };
        let mut full = Vec::new();
        binary.push(data, end, &mut |columns| {
            full.push(columns);
            Ok(())
        })?;
        for columns in full {
            let batch = self.binary_batch(columns)?;
            out(batch)?;
        }
        Ok(())
    }

    /// Decoded columns of a binary COPY in the table's schema.
    fn binary_batch(&self, decoded: Vec<ArrayRef>) -> Result<RecordBatch> {
        let rows = decoded.first().map_or(0, |c| c.len());
        self.in_table_schema(decoded, rows, sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "value")
    }

    fn check_line_length(&self) -> Result<()> {
        if self.tail.len() > MAX_LINE_BYTES {
            return Err(Error::user(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("COPY data: a line longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    fn feed(&mut self, data: &[u8], out: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        let Some(nulls) = self.csv_nulls.as_mut() else {
            return self.decode_all(data, out);
        };
        let mut marked = std::mem::take(&mut self.marked);
        nulls.mark(data, &mut marked);
        let decoded = self.decode_all(&marked, out);
        self.marked = marked;
        decoded
    }

    fn decode_all(
        &mut self,
        mut data: &[u8],
        out: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        while !data.is_empty() {
            let read = self.decoder.decode(data).map_err(copy_error)?;
            data = &data[read..];
            if self.decoder.capacity() == 0 {
                if let Some(text) = self.decoder.flush().map_err(copy_error)? {
                    out(self.typed(text)?)?;
                }
            } else if read == 0 {
                return Err(Error::internal("the COPY decoder took no data"));
            }
        }
        Ok(())
    }

    /// Casts a batch of text columns to the table's types.
    fn typed(&self, text: RecordBatch) -> Result<RecordBatch> {
        let rows = text.num_rows();
        let values = (0..self.copy.columns.len())
            .map(|i| {
                let values = Arc::clone(text.column(i));
                match self.unescape {
                    true => unescape_text(values.as_string::<i32>()),
                    false => values,
                }
            })
            .collect();
        self.in_table_schema(values, rows, sqlstate::INVALID_TEXT_REPRESENTATION, "input")
    }

    /// The COPY's columns (`decoded`, one per listed column) cast to the table's types, the
    /// columns not listed NULL, NOT NULL checked; a value that does not cast fails with `code`.
    fn in_table_schema(
        &self,
        decoded: Vec<ArrayRef>,
        rows: usize,
        code: &'static str,
        what: &str,
    ) -> Result<RecordBatch> {
        let schema = &self.copy.schema;
        let mut columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| match self.copy.defaults.get(i) {
                Some(Some(default)) if !self.copy.columns.contains(&i) => Ok(
                    datafusion::arrow::compute::cast(&default.evaluate(rows)?, f.data_type())?,
                ),
                _ => Ok(new_null_array(f.data_type(), rows)),
            })
            .collect::<Result<_>>()?;
        let cast_options = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        for (values, &column) in decoded.iter().zip(&self.copy.columns) {
            let target = schema.field(column);
            columns[column] = if values.data_type() == target.data_type() {
                Arc::clone(values)
            } else if let Some(parsed) =
                crate::sql::pg_semantics::parse_text(values, target.data_type())
            {
                parsed.map_err(|e| {
                    Error::user(
                        code,
                        format!("invalid {what} for column \"{}\": {e}", target.name()),
                    )
                })?
            } else {
                cast_with_options(values, target.data_type(), &cast_options).map_err(|e| {
                    Error::user(
                        code,
                        format!("invalid {what} for column \"{}\": {e}", target.name()),
                    )
                })?
            };
        }
        crate::connector::queue::table::check_not_null(schema, &self.copy.table, &columns)?;
        Ok(RecordBatch::try_new(Arc::clone(&self.loose), columns)?)
    }
}

/// Marks CSV's unquoted empty fields, which are NULL, so that the decoder tells them from a
/// quoted empty field (`""`), which is the empty string: arrow-csv reads both as an empty value.
/// Each unquoted empty field gets [`CSV_NULL`] written into it, and the decoder's null pattern is
/// that byte alone (no PostgreSQL text holds a NUL byte). A state machine over the bytes, kept
/// between pieces, so a field or a quoted newline may span them.
#[derive(Debug, Clone)]
struct CsvNulls {
    delimiter: u8,
    quote: u8,
    escape: u8,
    /// Inside a quoted part of a field.
    quoted: bool,
    /// The previous byte was an escape inside quotes (when the escape is not the quote).
    escaped: bool,
    /// Nothing of the current field seen yet.
    field_start: bool,
    /// The previous byte closed a quoted part: a quote now opens another (`"a""b"`).
    closed: bool,
    /// Nothing of the current line seen yet (an empty line gets no marker).
    line_start: bool,
}

/// What an unquoted empty CSV field becomes before arrow-csv decodes it.
const CSV_NULL: u8 = 0;

impl CsvNulls {
    fn new(delimiter: u8, quote: u8, escape: u8) -> Self {
        Self {
            delimiter,
            quote,
            escape,
            quoted: false,
            escaped: false,
            field_start: true,
            closed: false,
            line_start: true,
        }
    }

    /// `data` with a marker in each unquoted empty field that it ends.
    fn mark(&mut self, data: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(data.len() + data.len() / 16);
        for &b in data {
            if self.quoted {
                if self.escaped {
                    self.escaped = false;
                } else if b == self.escape && self.escape != self.quote {
                    self.escaped = true;
                } else if b == self.quote {
                    self.quoted = false;
                    self.closed = true;
                }
            } else if b == self.delimiter {
                if self.field_start {
                    out.push(CSV_NULL);
                }
                self.field_start = true;
                self.closed = false;
                self.line_start = false;
            } else if b == b'\n' || b == b'\r' {
                if self.field_start && !self.line_start {
                    out.push(CSV_NULL);
                }
                self.field_start = true;
                self.closed = false;
                self.line_start = true;
            } else {
                // A quote opens a quoted part only at a field's start or right after one
                // closed, as the CSV reader takes it.
                self.quoted = b == self.quote && (self.field_start || self.closed);
                self.closed = false;
                self.field_start = false;
                self.line_start = false;
            }
            out.push(b);
        }
    }

    /// The data has ended: the marker a last line without a newline needs.
    fn finish(&mut self, out: &mut Vec<u8>) {
        out.clear();
        if self.field_start && !self.line_start {
            out.push(CSV_NULL);
        }
        self.field_start = true;
        self.line_start = true;
    }
}

/// The signature that starts PostgreSQL's binary COPY data.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// `COPY … FROM STDIN (FORMAT binary)` as it arrives: the header (signature, flags, extension),
/// then tuples (a field count, then each value's length, -1 for NULL, and its bytes in the
/// binary form of its column's type), then -1. Complete tuples are decoded; a tuple split
/// across pieces waits for the rest. Values are decoded one by one (by the parameter decoders),
/// so this is slower than text or CSV.
#[derive(Debug)]
struct BinaryCopy {
    /// The PostgreSQL type of each field, from its column's type.
    types: Vec<pgwire::api::Type>,
    /// The names of the fields' columns, for errors.
    names: Vec<String>,
    /// Bytes received and not yet decoded.
    buffer: Vec<u8>,
    header_read: bool,
    /// The trailer (-1) was read.
    ended: bool,
    /// Each field's values decoded so far (a batch's worth at most).
    values: Vec<Vec<datafusion::common::ScalarValue>>,
    /// The byte ranges of the tuple being read (`None`: NULL), reused from tuple to tuple.
    bounds: Vec<Option<(usize, usize)>>,
    rows: usize,
}

impl BinaryCopy {
    fn new(copy: &CopyIn) -> Self {
        let fields: Vec<&Field> = copy.columns.iter().map(|&i| copy.schema.field(i)).collect();
        Self {
            types: fields
                .iter()
                .map(|f| crate::catalog::pg_types::pg_type(f.data_type()))
                .collect(),
            names: fields.iter().map(|f| f.name().clone()).collect(),
            buffer: Vec::new(),
            header_read: false,
            ended: false,
            values: vec![Vec::new(); fields.len()],
            bounds: Vec::with_capacity(fields.len()),
            rows: 0,
        }
    }

    /// Takes `data`, and gives every [`DECODE_BATCH_ROWS`] rows (all that is left at the `end`)
    /// to `out`, one array per field.
    fn push(
        &mut self,
        data: &[u8],
        end: bool,
        out: &mut dyn FnMut(Vec<ArrayRef>) -> Result<()>,
    ) -> Result<()> {
        let bad = |message: String| Error::user(sqlstate::BAD_COPY_FORMAT, message);
        if self.ended && !data.is_empty() {
            return Err(bad("binary COPY data after the trailer".into()));
        }
        self.buffer.extend_from_slice(data);
        let mut pos = 0;
        if !self.header_read {
            if self.buffer.len() < 19 {
                if end {
                    return Err(bad("COPY file signature not recognized".into()));
                }
                return Ok(());
            }
            if &self.buffer[..11] != BINARY_SIGNATURE {
                return Err(bad("COPY file signature not recognized".into()));
            }
            let flags = u32::from_be_bytes(self.buffer[11..15].try_into().expect("4 bytes"));
            if flags & (1 << 16) != 0 {
                return Err(Error::unsupported("binary COPY data with OIDs"));
            }
            if flags & 0xffff_0000 & !(1 << 16) != 0 {
                return Err(bad("unrecognized critical flags in COPY file header".into()));
            }
            let extension =
                u32::from_be_bytes(self.buffer[15..19].try_into().expect("4 bytes")) as usize;
            if extension > MAX_LINE_BYTES {
                return Err(bad(format!("a COPY header extension of {extension} bytes")));
            }
            if self.buffer.len() < 19 + extension {
                if end {
                    return Err(bad("unexpected end of binary COPY data".into()));
                }
                return Ok(());
            }
            pos = 19 + extension;
            self.header_read = true;
        }
        while !self.ended {
            match self.tuple(pos)? {
                Some(next) => pos = next,
                None => break,
            }
            if self.rows == DECODE_BATCH_ROWS {
                out(self.take()?)?;
            }
        }
        self.buffer.drain(..pos);
        if self.buffer.len() > MAX_LINE_BYTES {
            return Err(Error::user(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("COPY data: a row longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        if end {
            if self.ended && !self.buffer.is_empty() {
                return Err(bad("binary COPY data after the trailer".into()));
            }
            if !self.buffer.is_empty() {
                return Err(bad("unexpected end of binary COPY data".into()));
            }
            if self.rows > 0 {
                out(self.take()?)?;
            }
        }
        Ok(())
    }

    /// Decodes the tuple (or trailer) at `pos` if it is all there: the position after it.
    fn tuple(&mut self, pos: usize) -> Result<Option<usize>> {
        let bad = |message: String| Error::user(sqlstate::BAD_COPY_FORMAT, message);
        let buffer = &self.buffer;
        let Some(count) = buffer.get(pos..pos + 2) else {
            return Ok(None);
        };
        let count = i16::from_be_bytes(count.try_into().expect("2 bytes"));
        if count == -1 {
            self.ended = true;
            return Ok(Some(pos + 2));
        }
        if count as usize != self.types.len() || count < 0 {
            return Err(bad(format!(
                "row field count is {count}, expected {}",
                self.types.len()
            )));
        }
        // Every field's bounds first: a tuple is decoded only once it is all here.
        let mut at = pos + 2;
        let fields = &mut self.bounds;
        fields.clear();
        for _ in 0..self.types.len() {
            let Some(len) = buffer.get(at..at + 4) else {
                return Ok(None);
            };
            let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
            at += 4;
            if len == -1 {
                fields.push(None);
                continue;
            }
            let len = usize::try_from(len)
                .map_err(|_| bad(format!("invalid field size {len} in binary COPY data")))?;
            if len > MAX_LINE_BYTES {
                return Err(Error::user(
                    sqlstate::PROGRAM_LIMIT_EXCEEDED,
                    format!("COPY data: a value longer than {MAX_LINE_BYTES} bytes"),
                ));
            }
            if buffer.len() < at + len {
                return Ok(None);
            }
            fields.push(Some((at, at + len)));
            at += len;
        }
        for (i, field) in self.bounds.iter().enumerate() {
            let bytes = field.map(|(from, to)| &self.buffer[from..to]);
            let value = crate::serve::params::decode_param(
                bytes,
                &self.types[i],
                pgwire::api::results::FieldFormat::Binary,
            )
            .map_err(|e| {
                Error::user(
                    e.sqlstate(),
                    format!("COPY data, column \"{}\": {e}", self.names[i]),
                )
            })?;
            self.values[i].push(value);
        }
        self.rows += 1;
        Ok(Some(at))
    }

    /// The rows decoded so far, one array per field.
    fn take(&mut self) -> Result<Vec<ArrayRef>> {
        self.rows = 0;
        self.values
            .iter_mut()
            .map(|values| {
                Ok(datafusion::common::ScalarValue::iter_to_array(
                    std::mem::take(values),
                )?)
            })
            .collect()
    }
}

fn memchr_rev(byte: u8, data: &[u8]) -> Option<usize> {
    data.iter().rposition(|&b| b == byte)
}

/// A COPY in progress: its decoder, and the rows decoded so far, staged in memory and, past
/// [`STAGE_IN_MEMORY_BYTES`], in an unlinked file under the data directory. Nothing reaches
/// the table before the data has ended and all of it decoded, so a bad line anywhere writes
/// nothing (as in PostgreSQL).
#[derive(Debug)]
pub struct CopyLoad {
    decoder: CopyDecoder,
    staged: Vec<RecordBatch>,
    staged_bytes: usize,
    spill: Option<Spill>,
    spill_dir: std::path::PathBuf,
    /// The first error: the rest of the data is ignored, and the COPY fails when it ends.
    error: Option<Error>,
    /// Bytes of data received.
    pub bytes: u64,
    /// Rows decoded.
    pub rows: u64,
}

struct Spill {
    writer: datafusion::arrow::ipc::writer::StreamWriter<std::io::BufWriter<std::fs::File>>,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spill")
    }
}

impl CopyLoad {
    /// Starts a COPY whose rows may be staged in files under `spill_dir`.
    pub fn new(copy: CopyIn, spill_dir: std::path::PathBuf) -> Result<Self> {
        Ok(Self {
            decoder: CopyDecoder::new(copy)?,
            staged: Vec::new(),
            staged_bytes: 0,
            spill: None,
            spill_dir,
            error: None,
            bytes: 0,
            rows: 0,
        })
    }

    /// The table it loads.
    pub fn table(&self) -> &str {
        &self.decoder.copy.table
    }

    /// Takes a `CopyData` message's bytes. An error is kept for the end (the client goes on
    /// sending; PostgreSQL, too, reports it when the data ends).
    pub fn push(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.bytes += data.len() as u64;
        let mut decoded = Vec::new();
        let result = self
            .decoder
            .push(data, &mut |b| {
                decoded.push(b);
                Ok(())
            })
            .and_then(|()| decoded.into_iter().try_for_each(|b| self.stage(b)));
        if let Err(e) = result {
            self.error = Some(e);
        }
    }

    fn stage(&mut self, batch: RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.staged_bytes += batch.get_array_memory_size();
        self.staged.push(batch);
        if self.staged_bytes < STAGE_IN_MEMORY_BYTES {
            return Ok(());
        }
        if self.spill.is_none() {
            std::fs::create_dir_all(&self.spill_dir).map_err(|e| {
                Error::io(format!(
                    "COPY staging directory {}: {e}",
                    self.spill_dir.display()
                ))
            })?;
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let path = self.spill_dir.join(format!(
                "copy-{}-{}.arrows",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| Error::io(format!("COPY staging file {}: {e}", path.display())))?;
            // Unlinked at once: the file lives as long as this COPY holds it, crash or not.
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("COPY staging file {}: {e}", path.display())))?;
            let writer = datafusion::arrow::ipc::writer::StreamWriter::try_new(
                std::io::BufWriter::new(file),
                &self.decoder.loose_schema(),
            )?;
            self.spill = Some(Spill { writer });
        }
        if let Some(spill) = &mut self.spill {
            for batch in self.staged.drain(..) {
                spill.writer.write(&batch)?;
            }
            self.staged_bytes = 0;
        }
        Ok(())
    }

    /// The data has ended: the rows to write, in order, read back a batch at a time; or the
    /// first error the data had.
    pub fn finish(mut self) -> Result<StagedRows> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut last = Vec::new();
        self.decoder.finish(&mut |b| {
            last.push(b);
            Ok(())
        })?;
        for batch in last {
            self.stage(batch)?;
        }
        let spilled = match self.spill.take() {
            None => None,
            Some(spill) => {
                let mut writer = spill.writer;
                writer.finish()?;
                let mut file = writer
                    .into_inner()?
                    .into_inner()
                    .map_err(|e| Error::io(format!("COPY staging file: {}", e.error())))?;
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(0))
                    .map_err(|e| Error::io(format!("COPY staging file: {e}")))?;
                Some(datafusion::arrow::ipc::reader::StreamReader::try_new(
                    std::io::BufReader::new(file),
                    None,
                )?)
            }
        };
        Ok(StagedRows {
            spilled,
            memory: std::mem::take(&mut self.staged).into_iter(),
        })
    }
}

/// The rows of a finished COPY, in order: those staged in a file, then those in memory.
pub struct StagedRows {
    spilled:
        Option<datafusion::arrow::ipc::reader::StreamReader<std::io::BufReader<std::fs::File>>>,
    memory: std::vec::IntoIter<RecordBatch>,
}

impl Iterator for StagedRows {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(reader) = &mut self.spilled {
            match reader.next() {
                Some(batch) => return Some(batch.map_err(Error::from)),
                None => self.spilled = None,
            }
        }
        self.memory.next().map(Ok)
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
    use datafusion::arrow::array::{Array, Int32Array};

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
            defaults: Vec::new(),
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

    /// `data` pushed in pieces of `piece` bytes, as `CopyData` messages bring it.
    fn decode_in_pieces(c: &CopyIn, data: &[u8], piece: usize) -> RecordBatch {
        let mut decoder = CopyDecoder::new(c.clone()).unwrap();
        let mut batches = Vec::new();
        for chunk in data.chunks(piece) {
            decoder
                .push(chunk, &mut |b| {
                    batches.push(b);
                    Ok(())
                })
                .unwrap();
        }
        decoder
            .finish(&mut |b| {
                batches.push(b);
                Ok(())
            })
            .unwrap();
        concat_batches(&decoder.loose_schema(), &batches).unwrap()
    }

    /// Whatever the sizes of the pieces the data arrives in, the rows are those of the whole.
    #[test]
    fn pieces_of_any_size_decode_like_the_whole() {
        let csv = CopyFormat::from_options(&[CopyOption::Format(Ident::new("csv"))], &[]).unwrap();
        let text = CopyFormat::from_options(&[], &[]).unwrap();
        let mut csv_data = Vec::new();
        let mut text_data = Vec::new();
        for i in 0..5000 {
            // Quoted newlines, empty strings and NULLs (unquoted empty fields, also at a
            // line's end) across the pieces' boundaries.
            let b = match i % 3 {
                0 => format!("\"line {i}\nwith a newline, and a comma\""),
                1 => "\"\"".to_string(),
                _ => String::new(),
            };
            let c = match i % 5 {
                0 => String::new(),
                _ => (i % 2 == 0).to_string(),
            };
            csv_data.extend_from_slice(format!("{i},{b},{c}\n").as_bytes());
            text_data.extend_from_slice(format!("{i}\tx\\ty {i}\t\\N\n").as_bytes());
        }
        text_data.extend_from_slice(b"\\.\n");
        for (format, data, b_nulls) in [(csv, csv_data, 1666), (text, text_data, 0)] {
            let c = copy_in(format);
            let whole = c.decode(&data).unwrap();
            assert_eq!(whole.num_rows(), 5000);
            assert_eq!(whole.column(1).null_count(), b_nulls);
            for piece in [1, 2, 3, 7, 64, 1000, 65_537] {
                assert_eq!(
                    decode_in_pieces(&c, &data, piece),
                    whole,
                    "pieces of {piece} bytes"
                );
            }
        }
    }

    /// An unquoted empty field is NULL and `""` the empty string, as PostgreSQL reads CSV; a
    /// quote inside a field's value, or doubled within quotes, is data.
    #[test]
    fn csv_tells_null_from_the_empty_string() {
        let c = copy_in(
            CopyFormat::from_options(&[CopyOption::Format(Ident::new("csv"))], &[]).unwrap(),
        );
        let batch = c
            .decode(b"1,\"\",t\r\n2,,\n3,\"a\"\",b\"\"\",\n4,x\"y,f\n5,,")
            .unwrap();
        let b = batch.column(1).as_string::<i32>();
        let c_column = batch.column(2);
        assert_eq!(batch.num_rows(), 5);
        assert!(b.is_valid(0) && b.value(0).is_empty());
        assert!(c_column.is_valid(0));
        assert!(b.is_null(1) && c_column.is_null(1));
        assert_eq!(b.value(2), "a\",b\"");
        assert!(c_column.is_null(2));
        assert_eq!(b.value(3), "x\"y");
        assert!(b.is_null(4) && c_column.is_null(4));
        // The empty string is no integer (PostgreSQL: invalid input syntax for type integer).
        let err = c.decode(b"\"\",x,t\n").unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::INVALID_TEXT_REPRESENTATION);
    }

    /// Binary COPY data as the binary `COPY … TO` writes it decodes back to the same rows, in
    /// pieces of any size; damaged data is 22P04, never a panic.
    #[test]
    fn binary_round_trips_in_pieces_of_any_size() {
        let c = copy_in(CopyFormat::Binary);
        let rows = 3000;
        let batch = RecordBatch::try_new(
            Arc::clone(&c.schema),
            vec![
                Arc::new(Int32Array::from_iter_values(0..rows)),
                Arc::new(StringArray::from_iter((0..rows).map(|i| match i % 3 {
                    0 => Some(format!("row {i}")),
                    1 => Some(String::new()),
                    _ => None,
                }))),
                Arc::new(datafusion::arrow::array::BooleanArray::from_iter(
                    (0..rows).map(|i| (i % 5 != 0).then_some(i % 2 == 0)),
                )),
            ],
        )
        .unwrap();
        let mut data = crate::serve::encode::BINARY_COPY_HEADER.to_vec();
        for row in crate::serve::encode::copy_out_binary(&batch).unwrap() {
            data.extend_from_slice(&row);
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        let whole = c.decode(&data).unwrap();
        assert_eq!(whole.columns(), batch.columns());
        for piece in [1, 2, 3, 7, 64, 1000, 65_537] {
            let pieces = decode_in_pieces(&c, &data, piece);
            assert_eq!(pieces.columns(), batch.columns(), "pieces of {piece} bytes");
        }
        // Damage: a wrong signature, a cut tuple, a wrong field count, data after the
        // trailer, a negative length.
        let mut wrong_count = crate::serve::encode::BINARY_COPY_HEADER.to_vec();
        wrong_count.extend_from_slice(&2i16.to_be_bytes());
        let mut negative = crate::serve::encode::BINARY_COPY_HEADER.to_vec();
        negative.extend_from_slice(&3i16.to_be_bytes());
        negative.extend_from_slice(&(-7i32).to_be_bytes());
        let mut after = data.clone();
        after.extend_from_slice(b"more");
        for damaged in [
            b"PGCOPY\n\xff\r\n\x01".to_vec(),
            data[..data.len() - 7].to_vec(),
            wrong_count,
            negative,
            after,
        ] {
            let err = c.decode(&damaged).unwrap_err();
            assert_eq!(err.sqlstate(), sqlstate::BAD_COPY_FORMAT, "{err}");
        }
        // A value of the wrong size for its type: 22P03, naming the column.
        let mut bad_int = crate::serve::encode::BINARY_COPY_HEADER.to_vec();
        bad_int.extend_from_slice(&3i16.to_be_bytes());
        bad_int.extend_from_slice(&2i32.to_be_bytes());
        bad_int.extend_from_slice(&[0, 1]);
        bad_int.extend_from_slice(&(-1i32).to_be_bytes());
        bad_int.extend_from_slice(&(-1i32).to_be_bytes());
        let err = c.decode(&bad_int).unwrap_err();
        assert_eq!(err.sqlstate(), "22P03", "{err}");
        assert!(err.to_string().contains("\"a\""), "{err}");
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
