//! [`RecordDecoder`]: many records' bytes into one Arrow batch, columnar (arrow-json, arrow-csv,
//! arrow-avro), never one parsed value per record.
//!
//! A batch decodes in one call. Only when that fails, or yields a different number of rows than
//! records (two JSON objects in one record, a CSV line with an embedded newline), are the
//! records decoded one by one to tell the bad ones from the good: the slow path costs only
//! batches that hold a bad record.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_avro::reader::ReaderBuilder as AvroReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::csv::reader::ReaderBuilder as CsvReaderBuilder;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::reader::ReaderBuilder as JsonReaderBuilder;

use super::spec::{AvroSchemaSource, Encode};
use crate::sql::uuid::is_uuid;

/// The outcome of decoding a batch of records.
#[derive(Debug)]
pub struct Decoded {
    /// The good records' rows, in record order.
    pub batch: RecordBatch,
    /// Indexes of the records that made `batch`'s rows, when some records were bad (`None`:
    /// row `i` is record `i`).
    pub rows_from: Option<Vec<usize>>,
    /// Records that did not decode: index and reason.
    pub bad: Vec<(usize, String)>,
}

/// Decodes records of one encoding into a schema.
pub struct RecordDecoder {
    schema: SchemaRef,
    encode: Encode,
    /// Avro schema ids seen so far and their writer schemas (the inline one, or the
    /// registry's; `None`: the registry does not know the id, so its records are bad).
    avro_schemas: HashMap<u32, Option<String>>,
    avro_store: Option<SchemaStore>,
    /// The `jsonb` columns (see `sql::jsonb`), read from a JSON record as they stand in it;
    /// `json_schema` is `schema` without them, for arrow-json.
    jsonb_columns: Vec<usize>,
    json_schema: SchemaRef,
    /// `schema` and `json_schema` with `uuid` columns as text: arrow-json and arrow-csv read
    /// no fixed-size binary, so those columns are read as text, then by [`with_uuids`].
    text_schema: SchemaRef,
    json_text_schema: SchemaRef,
}

impl std::fmt::Debug for RecordDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordDecoder")
            .field("encode", &self.encode)
            .finish()
    }
}

impl RecordDecoder {
    /// A decoder into `schema` (the payload columns, without `INCLUDE` columns).
    pub fn new(schema: SchemaRef, encode: Encode) -> Result<Self, ArrowError> {
        let jsonb_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| crate::sql::jsonb::is_jsonb(schema.field(i).data_type()))
            .collect();
        let json_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(i, _)| !jsonb_columns.contains(i))
                .map(|(_, f)| Arc::clone(f))
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            text_schema: uuids_as_text(&schema),
            json_text_schema: uuids_as_text(&json_schema),
            schema,
            encode,
            avro_schemas: HashMap::new(),
            avro_store: None,
            jsonb_columns,
            json_schema,
        })
    }

    /// A JSON batch decoded without the `jsonb` columns, with them read from `records`; a
    /// batch of another encoding with its `jsonb` columns read as text.
    fn with_jsonb(&self, batch: RecordBatch, records: &[&[u8]]) -> Result<RecordBatch, ArrowError> {
        if self.jsonb_columns.is_empty() {
            return Ok(batch);
        }
        let json_error = |e: String| ArrowError::JsonError(e);
        if !matches!(self.encode, Encode::Json) {
            let mut columns = batch.columns().to_vec();
            for &i in &self.jsonb_columns {
                columns[i] = crate::sql::jsonb::jsonb_in_array(&columns[i])
                    .map_err(|e| json_error(e.to_string()))?;
            }
            return RecordBatch::try_new(Arc::clone(&self.schema), columns);
        }
        let mut rest = batch.columns().iter();
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for (i, field) in self.schema.fields().iter().enumerate() {
            if !self.jsonb_columns.contains(&i) {
                columns.push(Arc::clone(rest.next().ok_or_else(|| {
                    json_error("a decoded JSON batch lacks a column".to_string())
                })?));
                continue;
            }
            let mut values = datafusion::arrow::array::LargeStringBuilder::new();
            for record in records {
                let text = std::str::from_utf8(record).map_err(|e| json_error(e.to_string()))?;
                values.append_option(
                    crate::sql::jsonb::record_member(text, field.name())
                        .map_err(|e| json_error(format!("column \"{}\": {e}", field.name())))?,
                );
            }
            columns.push(Arc::new(values.finish()));
        }
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
    }

    /// The schema rows come out in.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes `records`, skipping (and reporting) the ones that do not decode.
    pub fn decode(&mut self, records: &[&[u8]]) -> Result<Decoded, ArrowError> {
        if records.is_empty() {
            return Ok(Decoded {
                batch: RecordBatch::new_empty(Arc::clone(&self.schema)),
                rows_from: None,
                bad: Vec::new(),
            });
        }
        if matches!(self.encode, Encode::Avro { .. }) {
            // Outside the record-by-record fallback: a registry that cannot be reached is not
            // a bad record but the source's error.
            self.learn_avro_ids(records)?;
        }
        if let Ok(batch) = self.decode_all(records)
            && batch.num_rows() == records.len()
        {
            return Ok(Decoded {
                batch,
                rows_from: None,
                bad: Vec::new(),
            });
        }
        let mut split = Split::default();
        self.bisect(records, 0, &mut split);
        Ok(Decoded {
            batch: concat_batches(&self.schema, &split.good)?,
            rows_from: Some(split.rows_from),
            bad: split.bad,
        })
    }

    /// Decodes the two halves of `records` (which do not decode as a whole) each as a whole,
    /// and halves again those that do not, down to single records: a batch with a few bad
    /// records costs a few decodes of it, not one decoder per record.
    fn bisect(&mut self, records: &[&[u8]], offset: usize, split: &mut Split) {
        let mid = records.len() / 2;
        for (start, part) in [(0, &records[..mid]), (mid, &records[mid..])] {
            if part.is_empty() {
                continue;
            }
            let at = offset + start;
            match self.decode_all(part) {
                Ok(batch) if batch.num_rows() == part.len() => {
                    split.good.push(batch);
                    split.rows_from.extend(at..at + part.len());
                }
                Ok(batch) if part.len() == 1 => split.bad.push((
                    at,
                    format!("record holds {} rows, not one", batch.num_rows()),
                )),
                Err(e) if part.len() == 1 => split.bad.push((at, e.to_string())),
                _ => self.bisect(part, at, split),
            }
        }
    }

    /// Decodes newline-delimited records (a chunk of a JSON-lines or CSV file) in one call;
    /// record indexes in the result are line numbers among the chunk's non-empty lines.
    pub fn decode_lines(&mut self, chunk: &[u8]) -> Result<Decoded, ArrowError> {
        let lines: Vec<&[u8]> = chunk
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .collect();
        if !matches!(self.encode, Encode::Avro { .. })
            && self.jsonb_columns.is_empty()
            && let Ok(batch) = self.decode_joined(chunk, lines.len())
            && batch.num_rows() == lines.len()
        {
            return Ok(Decoded {
                batch,
                rows_from: None,
                bad: Vec::new(),
            });
        }
        self.decode(&lines)
    }

    fn decode_joined(&mut self, chunk: &[u8], rows: usize) -> Result<RecordBatch, ArrowError> {
        let schema = Arc::clone(&self.text_schema);
        let batch = match &self.encode {
            Encode::Json => {
                let mut decoder = JsonReaderBuilder::new(Arc::clone(&schema))
                    .with_batch_size(rows + 1)
                    .build_decoder()?;
                feed(|b| decoder.decode(b), chunk)?;
                decoder.flush()?
            }
            Encode::Csv { delimiter, .. } => {
                let mut decoder = CsvReaderBuilder::new(Arc::clone(&schema))
                    .with_delimiter(*delimiter)
                    .with_header(false)
                    .with_batch_size(rows + 1)
                    .build_decoder();
                feed(|b| decoder.decode(b), chunk)?;
                if !chunk.ends_with(b"\n") {
                    feed(|b| decoder.decode(b), b"\n")?;
                }
                decoder.flush()?
            }
            Encode::Avro { .. } => None,
        };
        with_uuids(
            batch.unwrap_or_else(|| RecordBatch::new_empty(schema)),
            &self.schema,
        )
    }

    fn decode_all(&mut self, records: &[&[u8]]) -> Result<RecordBatch, ArrowError> {
        let batch = self.decode_all_but_jsonb(records)?;
        self.with_jsonb(batch, records)
    }

    fn decode_all_but_jsonb(&mut self, records: &[&[u8]]) -> Result<RecordBatch, ArrowError> {
        match &self.encode {
            Encode::Json => {
                let mut decoder = JsonReaderBuilder::new(Arc::clone(&self.json_text_schema))
                    .with_batch_size(records.len() + 1)
                    .build_decoder()?;
                for (i, record) in records.iter().enumerate() {
                    feed(|b| decoder.decode(b), record)?;
                    // A separator, so that `1` `2` are not read as `12`.
                    feed(|b| decoder.decode(b), b"\n")?;
                    // One row per record, or rows could be credited to the wrong records.
                    if decoder.len() != i + 1 || decoder.has_partial_record() {
                        return Err(one_row_each(decoder.len(), i));
                    }
                }
                let batch = decoder
                    .flush()?
                    .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.json_text_schema)));
                with_uuids(batch, &self.json_schema)
            }
            Encode::Csv { delimiter, .. } => {
                let mut decoder = CsvReaderBuilder::new(Arc::clone(&self.text_schema))
                    .with_delimiter(*delimiter)
                    .with_header(false)
                    .with_batch_size(records.len() + 1)
                    .build_decoder();
                let size = records.len() + 1;
                for (i, record) in records.iter().enumerate() {
                    let line = record.strip_suffix(b"\n").unwrap_or(record);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    feed(|b| decoder.decode(b), line)?;
                    feed(|b| decoder.decode(b), b"\n")?;
                    if size - decoder.capacity() != i + 1 {
                        return Err(one_row_each(size - decoder.capacity(), i));
                    }
                }
                let batch = decoder
                    .flush()?
                    .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.text_schema)));
                with_uuids(batch, &self.schema)
            }
            Encode::Avro { .. } => self.decode_avro(records),
        }
    }

    /// Finds the writer schema of every schema id in `records` not seen before: the inline
    /// schema, or the registry's (one request per new id).
    fn learn_avro_ids(&mut self, records: &[&[u8]]) -> Result<(), ArrowError> {
        let Encode::Avro { schema } = &self.encode else {
            return Ok(());
        };
        let mut changed = self.avro_store.is_none();
        for record in records {
            let Some(id) = avro_schema_id(record) else {
                continue;
            };
            if self.avro_schemas.contains_key(&id) {
                continue;
            }
            let writer = match schema {
                AvroSchemaSource::Inline(text) => Some(text.clone()),
                AvroSchemaSource::Registry(url) => {
                    let found = fetch_with_retries(url, id)
                        .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                    if found.is_none() {
                        tracing::warn!(registry = %url, id, "schema id unknown to the registry");
                    }
                    found
                }
            };
            self.avro_schemas.insert(id, writer);
            changed = true;
        }
        if changed {
            let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
            for (&id, writer) in &self.avro_schemas {
                if let Some(writer) = writer {
                    store
                        .set(Fingerprint::Id(id), AvroSchema::new(writer.clone()))
                        .map_err(|e| ArrowError::SchemaError(e.to_string()))?;
                }
            }
            self.avro_store = Some(store);
        }
        Ok(())
    }

    /// Confluent wire format: byte 0, a 4-byte big-endian schema id, the Avro body, read with
    /// the writer schema of its id.
    fn decode_avro(&mut self, records: &[&[u8]]) -> Result<RecordBatch, ArrowError> {
        for record in records {
            let Some(id) = avro_schema_id(record) else {
                return Err(ArrowError::ParseError(
                    "not an Avro record in the Confluent wire format (magic byte 0, schema id)"
                        .to_string(),
                ));
            };
            if !matches!(self.avro_schemas.get(&id), Some(Some(_))) {
                return Err(ArrowError::ParseError(format!(
                    "Avro schema id {id} is unknown"
                )));
            }
        }
        let store = self.avro_store.clone().unwrap_or_default();
        let mut decoder = AvroReaderBuilder::new()
            .with_writer_schema_store(store)
            .with_batch_size(records.len() + 1)
            .build_decoder()?;
        for record in records {
            let used = decoder
                .decode(record)
                .map_err(|e| ArrowError::ParseError(e.to_string()))?;
            if used != record.len() {
                return Err(ArrowError::ParseError(format!(
                    "Avro record of {} bytes, {used} of them decoded",
                    record.len()
                )));
            }
        }
        let batch = decoder
            .flush()
            .map_err(|e| ArrowError::ParseError(e.to_string()))?;
        match batch {
            None => Ok(RecordBatch::new_empty(Arc::clone(&self.schema))),
            Some(batch) => conform(&batch, &self.schema),
        }
    }
}

/// A schema from the registry, asked up to three times: a registry that blinks should not
/// stop the source.
fn fetch_with_retries(
    url: &str,
    id: u32,
) -> Result<Option<String>, super::schema_registry::RegistryError> {
    let mut attempt = 0;
    loop {
        match super::schema_registry::fetch_schema(url, id) {
            Err(e) if attempt < 2 => {
                tracing::warn!(registry = %url, id, error = %e, "schema registry; retrying");
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(200 * attempt));
            }
            result => return result,
        }
    }
}

/// The schema id of a Confluent-framed Avro record.
fn avro_schema_id(record: &[u8]) -> Option<u32> {
    (record.len() >= 5 && record[0] == 0)
        .then(|| u32::from_be_bytes([record[1], record[2], record[3], record[4]]))
}

/// Feeds `bytes` to an arrow decoder until it has taken all of them.
/// Records up to `i` made `rows` rows, not one each.
fn one_row_each(rows: usize, i: usize) -> ArrowError {
    ArrowError::ParseError(format!(
        "records up to #{} hold {rows} rows, not one each",
        i + 1
    ))
}

/// What [`RecordDecoder::bisect`] found.
#[derive(Default)]
struct Split {
    good: Vec<RecordBatch>,
    rows_from: Vec<usize>,
    bad: Vec<(usize, String)>,
}

fn feed(
    mut decode: impl FnMut(&[u8]) -> Result<usize, ArrowError>,
    mut bytes: &[u8],
) -> Result<(), ArrowError> {
    while !bytes.is_empty() {
        let used = decode(bytes)?;
        if used == 0 {
            return Err(ArrowError::ParseError(
                "the decoder took no input (batch full)".to_string(),
            ));
        }
        bytes = &bytes[used..];
    }
    Ok(())
}

/// `schema` with its `uuid` columns as text (the same schema when it has none).
fn uuids_as_text(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| is_uuid(f.data_type())) {
        return Arc::clone(schema);
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| {
            if is_uuid(f.data_type()) {
                Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8))
            } else {
                Arc::clone(f)
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch`, decoded with [`uuids_as_text`]`(schema)`, in `schema`: its `uuid` columns read
/// from their text (a value that is not one fails the batch, so its record is found bad).
fn with_uuids(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if is_uuid(field.data_type()) && !is_uuid(column.data_type()) {
                crate::sql::uuid::uuid_in(column).map_err(|e| {
                    ArrowError::ParseError(format!("column \"{}\": {e}", field.name()))
                })
            } else {
                Ok(Arc::clone(column))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// `batch` in `schema`: columns matched by name (case-insensitively) and cast; a column the
/// record lacks is NULL, or an error when the column is NOT NULL.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let source = batch.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let found = source
                .fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(field.name()));
            let column: ArrayRef = match found {
                Some(i) => cast(batch.column(i), field.data_type())?,
                None if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
                None => {
                    return Err(ArrowError::InvalidArgumentError(format!(
                        "required field \"{}\" is missing",
                        field.name()
                    )));
                }
            };
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "null in NOT NULL column \"{}\"",
                    field.name()
                )));
            }
            Ok(column)
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]))
    }

    fn a_values(batch: &RecordBatch) -> Vec<i64> {
        batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn json_batches_decode_and_bad_records_are_singled_out() {
        let mut d = RecordDecoder::new(schema(), Encode::Json).unwrap();
        let good: Vec<&[u8]> = vec![br#"{"a": 1, "s": "x"}"#, br#"{"a": 2}"#];
        let out = d.decode(&good).unwrap();
        assert!(out.bad.is_empty() && out.rows_from.is_none());
        assert_eq!(a_values(&out.batch), vec![1, 2]);

        let mixed: Vec<&[u8]> = vec![
            br#"{"a": 1}"#,
            b"{not json",
            br#"{"a": "seven"}"#,
            br#"{"s": "no a"}"#,
            br#"{"a": 5}{"a": 6}"#,
            br#"{"a": 9}"#,
        ];
        let out = d.decode(&mixed).unwrap();
        assert_eq!(a_values(&out.batch), vec![1, 9]);
        assert_eq!(out.rows_from, Some(vec![0, 5]));
        let bad: Vec<usize> = out.bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![1, 2, 3, 4]);
    }

    #[test]
    fn rows_are_never_credited_to_the_wrong_records() {
        let mut d = RecordDecoder::new(schema(), Encode::Json).unwrap();
        // As many rows as records, but the first record has none and the second two.
        let records: Vec<&[u8]> = vec![b" ", br#"{"a": 5}{"a": 6}"#, br#"{"a": 7}"#];
        let out = d.decode(&records).unwrap();
        assert_eq!(a_values(&out.batch), vec![7]);
        assert_eq!(out.rows_from, Some(vec![2]));
        let bad: Vec<usize> = out.bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![0, 1]);
    }

    #[test]
    fn a_bad_record_among_many_is_found_by_halving() {
        let mut d = RecordDecoder::new(schema(), Encode::Json).unwrap();
        let texts: Vec<String> = (0..1000)
            .map(|i| match i {
                500 => "{broken".to_string(),
                _ => format!(r#"{{"a": {i}}}"#),
            })
            .collect();
        let records: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let out = d.decode(&records).unwrap();
        let want: Vec<i64> = (0..1000).filter(|&i| i != 500).collect();
        assert_eq!(a_values(&out.batch), want);
        assert_eq!(
            out.rows_from,
            Some((0..1000).filter(|&i| i != 500).collect())
        );
        assert_eq!(out.bad.len(), 1);
        assert_eq!(out.bad[0].0, 500);
    }

    #[test]
    fn csv_decodes_with_a_delimiter() {
        let mut d = RecordDecoder::new(
            schema(),
            Encode::Csv {
                delimiter: b';',
                header: false,
            },
        )
        .unwrap();
        let records: Vec<&[u8]> = vec![b"1;x\n", b"oops;y", b"3;"];
        let out = d.decode(&records).unwrap();
        assert_eq!(a_values(&out.batch), vec![1, 3]);
        assert_eq!(out.bad.len(), 1);
        assert!(out.batch.column(1).is_null(1));
    }

    #[test]
    fn conform_casts_and_checks_required_columns() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("A", DataType::Int32, true)])),
            vec![Arc::new(datafusion::arrow::array::Int32Array::from(vec![
                4,
            ]))],
        )
        .unwrap();
        let out = conform(&batch, &schema()).unwrap();
        assert_eq!(
            out.column(0).as_primitive::<Int64Type>(),
            &Int64Array::from(vec![4])
        );
        let missing = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)])),
            vec![Arc::new(datafusion::arrow::array::StringArray::from(vec![
                "x",
            ]))],
        )
        .unwrap();
        assert!(conform(&missing, &schema()).is_err());
    }
}
