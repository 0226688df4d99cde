//! The on-disk record format of a log segment.
//!
//! A segment file is named `<first_position:020>.seg` after the position of its first record
//! and holds records back to back, each framed as:
//!
//! ```text
//! u32 LE payload length | u32 LE crc32 of payload | payload
//! ```
//!
//! The payload is an Arrow IPC stream (schema + exactly one batch) of
//! [`ChangeBatch::to_stored`]. Every record carries its own schema so that a segment can be
//! read from any record on, and a table's schema may change between records. The schema's
//! metadata carries the record's [`RecordMeta`]: the watermark after it and, for records a
//! connector wrote, where its source stood.

use std::fs::File;
use std::io::{self, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use std::collections::HashMap;

use super::error::StorageError;
use crate::stream::ChangeBatch;

/// What a record says beside its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// The relation's watermark once this record is applied (nanoseconds), when it has one.
    pub watermark: Option<i64>,
    /// Where the connector that wrote the record stood after it (connector-specific text), so
    /// that it resumes exactly after the last durable record.
    pub source_position: Option<String>,
    /// The bounded source that wrote the record has nothing more to send.
    pub end_of_input: bool,
    /// Rows the write that made this record dropped as late (behind the watermark), so that
    /// the count survives a restart.
    pub late_rows: u64,
}

const META_WATERMARK: &str = "sluice.watermark";
const META_POSITION: &str = "sluice.source_position";
const META_END: &str = "sluice.end_of_input";
const META_LATE: &str = "sluice.late_rows";

impl RecordMeta {
    fn to_metadata(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        if let Some(w) = self.watermark {
            out.insert(META_WATERMARK.to_string(), w.to_string());
        }
        if let Some(p) = &self.source_position {
            out.insert(META_POSITION.to_string(), p.clone());
        }
        if self.end_of_input {
            out.insert(META_END.to_string(), "true".to_string());
        }
        if self.late_rows > 0 {
            out.insert(META_LATE.to_string(), self.late_rows.to_string());
        }
        out
    }

    fn from_metadata(metadata: &HashMap<String, String>) -> Self {
        Self {
            watermark: metadata.get(META_WATERMARK).and_then(|w| w.parse().ok()),
            source_position: metadata.get(META_POSITION).cloned(),
            end_of_input: metadata.contains_key(META_END),
            late_rows: metadata
                .get(META_LATE)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// The file name extension of segment files.
pub const SEGMENT_EXTENSION: &str = "seg";

/// Bytes of framing before each payload: the length and the crc.
pub const HEADER_LEN: u64 = 8;

/// The largest payload a record can hold (its length must fit the 32-bit header field).
pub const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;

/// The file name of the segment whose first record is at `first_position`.
pub fn segment_file_name(first_position: u64) -> String {
    format!("{first_position:020}.{SEGMENT_EXTENSION}")
}

/// The first position encoded in a segment file name, or `None` when `name` does not name a
/// segment.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXTENSION)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes `batch` as one complete record (header and payload), ready to be written with a
/// single `write_all`.
pub fn encode_record(batch: &ChangeBatch, meta: &RecordMeta) -> Result<Vec<u8>, StorageError> {
    let mut stored = batch.to_stored()?;
    if *meta != RecordMeta::default() {
        let schema = stored
            .schema()
            .as_ref()
            .clone()
            .with_metadata(meta.to_metadata());
        stored = stored.with_schema(std::sync::Arc::new(schema))?;
    }
    // The header is reserved up front and filled in afterwards so that the payload is
    // serialised straight into the final buffer.
    let mut record = vec![0u8; HEADER_LEN as usize];
    {
        let mut writer = StreamWriter::try_new(&mut record, &stored.schema())?;
        writer.write(&stored)?;
        writer.finish()?;
    }
    let payload = &record[HEADER_LEN as usize..];
    let len = u32::try_from(payload.len()).map_err(|_| StorageError::RecordTooLarge {
        len: payload.len(),
        max: MAX_PAYLOAD_LEN,
    })?;
    let crc = crc32fast::hash(payload);
    record[0..4].copy_from_slice(&len.to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(record)
}

/// Checks that every message of an Arrow IPC stream lies within `payload`: the stream
/// reader allocates what a length prefix says before it reads, so a damaged prefix would cost
/// gigabytes (and seconds) before the read fails.
fn check_ipc_framing(payload: &[u8]) -> Result<(), ArrowError> {
    let damaged = |what: &str| ArrowError::IpcError(format!("damaged record: {what}"));
    let word = |at: usize| -> Result<i32, ArrowError> {
        payload
            .get(at..at + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| damaged("a message prefix past its end"))
    };
    let mut at = 0usize;
    while at < payload.len() {
        let mut len = word(at)?;
        at += 4;
        if len == -1 {
            len = word(at)?;
            at += 4;
        }
        if len == 0 {
            return Ok(());
        }
        let len = usize::try_from(len).map_err(|_| damaged("a negative message length"))?;
        let end = at
            .checked_add(len)
            .filter(|&end| end <= payload.len())
            .ok_or_else(|| damaged("a message longer than the record"))?;
        let message = datafusion::arrow::ipc::root_as_message(&payload[at..end])
            .map_err(|e| damaged(&format!("message header: {e}")))?;
        let body =
            usize::try_from(message.bodyLength()).map_err(|_| damaged("a negative body length"))?;
        at = end
            .checked_add(body)
            .filter(|&end| end <= payload.len())
            .ok_or_else(|| damaged("a message body longer than the record"))?;
    }
    Ok(())
}

/// Decodes a record's payload (already checked against its crc) back into a change batch.
pub fn decode_payload(payload: &[u8]) -> Result<(ChangeBatch, RecordMeta), ArrowError> {
    check_ipc_framing(payload)?;
    // arrow-ipc panics on some damaged messages (a buffer sliced out of bounds).
    let (meta, mut stored) = crate::sync::contain(|| {
        let mut reader = StreamReader::try_new(Cursor::new(payload), None)?;
        let meta = RecordMeta::from_metadata(reader.schema().metadata());
        let stored = reader
            .next()
            .ok_or_else(|| ArrowError::IpcError("record holds no batch".to_string()))??;
        if reader.next().is_some() {
            return Err(ArrowError::IpcError(
                "record holds more than one batch".to_string(),
            ));
        }
        Ok((meta, stored))
    })
    .map_err(|panic| ArrowError::IpcError(format!("damaged record: {panic}")))??;
    if !stored.schema().metadata().is_empty() {
        let plain = stored
            .schema()
            .as_ref()
            .clone()
            .with_metadata(HashMap::new());
        stored = datafusion::arrow::array::RecordBatch::try_new(
            std::sync::Arc::new(plain),
            stored.columns().to_vec(),
        )?;
    }
    Ok((ChangeBatch::from_stored(stored)?, meta))
}

/// What [`read_frame`] found at the reader's position.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// The end of the file, exactly at a record boundary.
    End,
    /// An intact record whose payload (of this many bytes) is now in the buffer.
    Record(u64),
    /// A short, zero-length, oversized or crc-failing record.
    Damaged(Damage),
}

/// Why a record is not intact, and whether anything intact could follow it.
#[derive(Debug, PartialEq, Eq)]
pub struct Damage {
    /// What is wrong with the record.
    pub reason: String,
    /// True when nothing intact follows the damage in the file, as a crash mid-append leaves
    /// it: a record cut short, a zero fill, or a record failing its crc that is not followed by
    /// an intact record.
    pub torn: bool,
}

impl Damage {
    fn torn(reason: String) -> Frame {
        Frame::Damaged(Damage { reason, torn: true })
    }
}

/// Reads one framed record into `payload`, given that `remaining` bytes are left in the file
/// from the reader's position; checks the length against them and the crc against the payload.
///
/// After [`Frame::Damaged`] the reader's position is unspecified.
pub fn read_frame<R: Read>(
    reader: &mut R,
    remaining: u64,
    payload: &mut Vec<u8>,
) -> io::Result<Frame> {
    read_frame_checked(reader, remaining, payload, true)
}

/// [`read_frame`]; with `look_ahead`, a crc-failing record followed by more bytes counts as
/// torn unless an intact record follows it.
fn read_frame_checked<R: Read>(
    reader: &mut R,
    remaining: u64,
    payload: &mut Vec<u8>,
    look_ahead: bool,
) -> io::Result<Frame> {
    if remaining == 0 {
        return Ok(Frame::End);
    }
    if remaining < HEADER_LEN {
        return Ok(Damage::torn(format!(
            "truncated header: {remaining} of {HEADER_LEN} bytes"
        )));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let available = remaining - HEADER_LEN;
    // A zero length is never written (a payload always holds at least a schema) but is what
    // a zero-filled tail looks like after some filesystems' crash recovery.
    if len == 0 {
        payload.clear();
        reader.take(available).read_to_end(payload)?;
        let zero_fill = crc == 0 && payload.iter().all(|&b| b == 0);
        return Ok(Frame::Damaged(Damage {
            reason: "zero-length record".to_string(),
            torn: zero_fill,
        }));
    }
    if u64::from(len) > available {
        return Ok(Damage::torn(format!(
            "record of {len} bytes extends past the end of the file ({available} bytes left)"
        )));
    }
    payload.clear();
    payload.resize(len as usize, 0);
    reader.read_exact(payload)?;
    let actual = crc32fast::hash(payload);
    if actual != crc {
        let after = available - u64::from(len);
        // Garbage after a torn record may itself parse as a header with some length; only an
        // intact record where this one claims to end shows that the damage is mid-log.
        let torn = after == 0
            || (look_ahead
                && !matches!(
                    read_frame_checked(reader, after, &mut Vec::new(), false)?,
                    Frame::Record(_)
                ));
        return Ok(Frame::Damaged(Damage {
            reason: format!("crc mismatch: stored {crc:08x}, computed {actual:08x}"),
            torn,
        }));
    }
    Ok(Frame::Record(u64::from(len)))
}

/// The outcome of scanning a segment file from its start.
#[derive(Debug)]
pub struct SegmentScan {
    /// The byte offset of each intact record, in order.
    pub offsets: Vec<u64>,
    /// The bytes covered by intact records: where the next record belongs.
    pub valid_len: u64,
    /// The file's length on disk.
    pub file_len: u64,
    /// Why the scan stopped before `file_len`, if it did.
    pub damage: Option<Damage>,
}

/// Scans `file` (at `path`, for error messages) from the start, validating every record's
/// length and crc, and stops at the end of the file or at the first damaged record.
pub fn scan_segment(file: &File, path: &Path) -> Result<SegmentScan, StorageError> {
    let io_err = |e| StorageError::io("scanning segment", path, e);
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut handle = file;
    handle.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let mut reader = BufReader::new(handle);
    let mut offsets = Vec::new();
    let mut offset = 0;
    let mut payload = Vec::new();
    let damage = loop {
        match read_frame(&mut reader, file_len - offset, &mut payload).map_err(io_err)? {
            Frame::End => break None,
            Frame::Record(len) => {
                offsets.push(offset);
                offset += HEADER_LEN + len;
            }
            Frame::Damaged(damage) => break Some(damage),
        }
    };
    Ok(SegmentScan {
        offsets,
        valid_len: offset,
        file_len,
        damage,
    })
}

/// Reads the records at byte `offsets` of the segment at `path`, validating each; the offsets
/// must be consecutive records (each starting where the previous one ends), as the index
/// holds them.
pub fn read_records(
    path: &Path,
    offsets: &[u64],
) -> Result<Vec<(ChangeBatch, RecordMeta)>, StorageError> {
    if offsets.is_empty() {
        return Ok(Vec::new());
    }
    let file = File::open(path).map_err(|e| StorageError::io("reading segment", path, e))?;
    read_records_from(file, path, offsets)
}

/// Like [`read_records`], from a segment already open (`path` names it in errors). A log
/// opens its segments while it holds its index, so that truncation cannot remove one between
/// finding it and reading it.
pub fn read_records_from(
    mut file: File,
    path: &Path,
    offsets: &[u64],
) -> Result<Vec<(ChangeBatch, RecordMeta)>, StorageError> {
    let Some(&first) = offsets.first() else {
        return Ok(Vec::new());
    };
    let io_err = |e| StorageError::io("reading segment", path, e);
    let file_len = file.metadata().map_err(io_err)?.len();
    file.seek(SeekFrom::Start(first)).map_err(io_err)?;
    let mut reader = BufReader::new(file);
    let mut batches = Vec::with_capacity(offsets.len());
    let mut offset = first;
    let mut payload = Vec::new();
    for &expected in offsets {
        let corrupt = |reason: String| StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: expected,
            reason,
        };
        if offset != expected {
            return Err(corrupt(format!(
                "the index places a record at offset {expected} but the previous one ends at {offset}"
            )));
        }
        let remaining = file_len.saturating_sub(offset);
        match read_frame(&mut reader, remaining, &mut payload).map_err(io_err)? {
            Frame::Record(len) => offset += HEADER_LEN + len,
            Frame::End => return Err(corrupt("indexed record is missing".to_string())),
            Frame::Damaged(damage) => return Err(corrupt(damage.reason)),
        }
        let batch =
            decode_payload(&payload).map_err(|e| corrupt(format!("undecodable payload: {e}")))?;
        batches.push(batch);
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint's IPC file read as a record payload: its first bytes, read as a message
    /// length, announce 1.3 GB, which the stream reader allocated before failing (4 s; over
    /// 30 s in the fuzzer's build, found by `storage_readers`). The framing check refuses it.
    #[test]
    fn a_message_longer_than_its_record_is_refused_before_reading() {
        let data =
            include_bytes!("../../fuzz/regressions/storage_readers/ipc-file-as-record-payload.bin");
        let e = check_ipc_framing(data).expect_err("the prefix overruns the record");
        assert!(e.to_string().contains("longer than the record"), "{e}");
        assert!(decode_payload(data).is_err());
    }
    use datafusion::arrow::array::{Int32Array, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::io::Write;
    use std::sync::Arc;

    fn batch(values: &[i32], weights: Option<Vec<i64>>) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int32, true)]));
        let data = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values.to_vec()))])
            .unwrap();
        match weights {
            None => ChangeBatch::inserts(data),
            Some(w) => ChangeBatch::with_weights(data, Int64Array::from(w)).unwrap(),
        }
    }

    #[test]
    fn file_names_sort_by_position_and_parse_back() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004a.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.tmp"), None);
    }

    #[test]
    fn record_round_trips_through_a_frame() {
        let record = encode_record(
            &batch(&[1, 2], Some(vec![1, -1])),
            &RecordMeta {
                watermark: Some(42),
                source_position: Some("p".into()),
                end_of_input: true,
                late_rows: 7,
            },
        )
        .unwrap();
        let mut payload = Vec::new();
        let frame = read_frame(&mut record.as_slice(), record.len() as u64, &mut payload).unwrap();
        assert_eq!(frame, Frame::Record(record.len() as u64 - HEADER_LEN));
        let (back, meta) = decode_payload(&payload).unwrap();
        assert_eq!(back.weights().unwrap().values(), &[1, -1]);
        assert!(back.data().schema().metadata().is_empty());
        assert_eq!(meta.watermark, Some(42));
        assert_eq!(meta.source_position.as_deref(), Some("p"));
        assert!(meta.end_of_input);
    }

    #[test]
    fn damaged_frames_are_reported() {
        let record = encode_record(&batch(&[7], None), &RecordMeta::default()).unwrap();
        let mut payload = Vec::new();

        let mut damage =
            |bytes: &[u8]| match read_frame(&mut &bytes[..], bytes.len() as u64, &mut payload)
                .unwrap()
            {
                Frame::Damaged(damage) => damage,
                other => panic!("expected damage, got {other:?}"),
            };

        let short = damage(&record[..record.len() - 1]);
        assert!(
            short.torn && short.reason.contains("past the end"),
            "{short:?}"
        );
        let header = damage(&record[..3]);
        assert!(
            header.torn && header.reason.contains("truncated header"),
            "{header:?}"
        );

        let mut flipped = record.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let crc = damage(&flipped);
        assert!(crc.torn && crc.reason.contains("crc mismatch"), "{crc:?}");
        // The same bad record followed by garbage is still a torn tail...
        let mut garbage = flipped.clone();
        garbage.extend_from_slice(b"\x03\x00\x00\x00not a record");
        assert!(damage(&garbage).torn);
        // ...but followed by an intact record it is damage in the middle.
        flipped.extend_from_slice(&record);
        assert!(!damage(&flipped).torn);

        let zeros = damage(&[0u8; 16]);
        assert!(
            zeros.torn && zeros.reason.contains("zero-length"),
            "{zeros:?}"
        );
        let mut zero_then_data = vec![0u8; 8];
        zero_then_data.extend_from_slice(&record);
        assert!(!damage(&zero_then_data).torn);
    }

    #[test]
    fn scan_stops_at_damage_and_reads_validate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0));
        let a = encode_record(&batch(&[1], None), &RecordMeta::default()).unwrap();
        let b = encode_record(&batch(&[2, 3], None), &RecordMeta::default()).unwrap();
        let mut file = File::create(&path).unwrap();
        file.write_all(&a).unwrap();
        file.write_all(&b).unwrap();
        file.write_all(b"garbage").unwrap();
        drop(file);

        let file = File::open(&path).unwrap();
        let scan = scan_segment(&file, &path).unwrap();
        assert_eq!(scan.offsets, vec![0, a.len() as u64]);
        assert_eq!(scan.valid_len, (a.len() + b.len()) as u64);
        assert_eq!(scan.file_len, scan.valid_len + 7);
        assert!(scan.damage.is_some());

        let batches = read_records(&path, &scan.offsets).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].0.num_rows(), 2);
        let err = read_records(&path, &[1]).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { offset: 1, .. }));
    }
}
