//! One checkpoint on disk:
//!
//! ```text
//! checkpoints/
//!   00000001764000000123/          the epoch, zero-padded so names sort by time
//!     view-7/contents.arrow        the view's rows
//!     view-7/n0p1s0.arrow          keyed operator 0, partition 1, state batch 0
//!     sink-orders_out.arrow        a sink's changes not yet confirmed delivered
//!     manifest.json                written last: the checkpoint exists once this does
//! ```
//!
//! A view that did not change since the previous checkpoint is not written again: the manifest
//! names the directory of the checkpoint that holds it. Every file is listed in the manifest
//! with its length and CRC-32, so a truncated or damaged file is found before any of it is
//! used.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};

use super::StateError;
use crate::storage::durable;

/// The manifest's file name inside a checkpoint directory.
pub const MANIFEST: &str = "manifest.json";
/// Bumped when the layout of state files changes (2: a view's `contents` holds its rows in
/// the view's own schema, no longer row-format bytes with counts).
pub const FORMAT: u32 = 2;

/// A state file and what it must read back as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the checkpoints directory.
    pub path: String,
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 of the whole file.
    pub crc32: u32,
}

/// A view as a checkpoint holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewCheckpoint {
    /// The view's catalog id.
    pub id: u32,
    /// Its name, for logs.
    pub name: String,
    /// The epoch whose directory holds its files (this checkpoint's, or an earlier one's when
    /// the view did not change since).
    pub written_at: u64,
    /// Its files: `contents` and one per state batch of each keyed operator partition
    /// (`n{node}p{partition}s{batch}`).
    pub files: Vec<(String, FileEntry)>,
    /// Per source of the view, the next log position to read.
    pub positions: Vec<u64>,
    /// Per source, its watermark (ns).
    pub source_watermarks: Vec<Option<i64>>,
    /// The view's watermark (ns).
    pub watermark: Option<i64>,
    /// Partitions per keyed operator when written (state is not re-partitioned).
    pub parallelism: usize,
}

/// A sink as a checkpoint holds it: the changes it had not yet confirmed delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCheckpoint {
    /// The sink's name.
    pub name: String,
    /// The epoch of the checkpoint that holds these changes (the batch's id downstream).
    pub batch: u64,
    /// The undelivered changes, if any.
    pub pending: Option<FileEntry>,
}

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`] when written.
    pub format: u32,
    /// The Sluice version that wrote it (Arrow's row format is only stable within one).
    pub version: String,
    /// The epoch the checkpoint was taken at.
    pub epoch: u64,
    /// Wall clock when it was taken, ms since 1970.
    pub taken_at_ms: u64,
    /// Every view that was running (and could checkpoint).
    pub views: Vec<ViewCheckpoint>,
    /// Every exactly-once sink.
    pub sinks: Vec<SinkCheckpoint>,
}

impl Manifest {
    /// Every file the checkpoint needs.
    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.views
            .iter()
            .flat_map(|v| v.files.iter().map(|(_, f)| f))
            .chain(self.sinks.iter().filter_map(|s| s.pending.as_ref()))
    }

    /// The checkpoint directories its files live in.
    pub fn directories(&self) -> Vec<String> {
        let mut dirs: Vec<String> = std::iter::once(dir_name(self.epoch))
            .chain(self.views.iter().map(|v| dir_name(v.written_at)))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Total bytes of its files.
    pub fn bytes(&self) -> u64 {
        self.files().map(|f| f.bytes).sum()
    }
}

/// The directory name of the checkpoint at `epoch`.
pub fn dir_name(epoch: u64) -> String {
    format!("{epoch:020}")
}

/// Fsyncs a directory, so that the entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StateError> {
    durable::sync_dir(dir).map_err(|e| StateError::io("syncing directory", dir, e))
}

/// A writer that computes the CRC-32 and length of what passes through it.
struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `batches` as an Arrow IPC file at `root/relative` and fsyncs it.
pub fn write_ipc(
    root: &Path,
    relative: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<FileEntry, StateError> {
    let path = root.join(relative);
    let file = File::create(&path).map_err(|e| StateError::io("creating", &path, e))?;
    let mut out = Checksummed {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: crc32fast::Hasher::new(),
        bytes: 0,
    };
    {
        let mut writer = FileWriter::try_new(&mut out, schema)?;
        for batch in batches {
            if batch.schema().fields() != schema.fields() {
                return Err(StateError::mismatch(format!(
                    "a batch of another schema in {relative}"
                )));
            }
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    let Checksummed {
        inner,
        hasher,
        bytes,
    } = out;
    let file = inner
        .into_inner()
        .map_err(|e| StateError::io("writing", &path, e.into_error()))?;
    file.sync_all()
        .map_err(|e| StateError::io("syncing", &path, e))?;
    Ok(FileEntry {
        path: relative.to_string(),
        bytes,
        crc32: hasher.finalize(),
    })
}

/// Reads back a file [`write_ipc`] wrote, checking its length and CRC first.
pub fn read_ipc(root: &Path, entry: &FileEntry) -> Result<Vec<RecordBatch>, StateError> {
    let path = root.join(&entry.path);
    let mut data = Vec::new();
    File::open(&path)
        .and_then(|mut f| {
            data.reserve(f.metadata()?.len() as usize);
            f.read_to_end(&mut data)
        })
        .map_err(|e| StateError::io("reading", &path, e))?;
    let damaged = |reason: String| StateError::Damaged {
        path: path.clone(),
        reason,
    };
    if data.len() as u64 != entry.bytes {
        return Err(damaged(format!(
            "{} bytes instead of {}",
            data.len(),
            entry.bytes
        )));
    }
    let crc = crc32fast::hash(&data);
    if crc != entry.crc32 {
        return Err(damaged(format!(
            "CRC-32 {crc:08x} instead of {:08x}",
            entry.crc32
        )));
    }
    decode_ipc(data)
}

/// Checks that every block an Arrow IPC file's footer lists lies within the file: the file
/// reader allocates what a block's lengths say before it reads (a damaged footer asked for
/// 7.8 EB and aborted the process; found by the `storage_readers` fuzz target).
fn check_ipc_file_framing(data: &[u8]) -> Result<(), StateError> {
    let damaged = |what: &str| {
        StateError::from(datafusion::arrow::error::ArrowError::IpcError(format!(
            "damaged IPC file: {what}"
        )))
    };
    const MAGIC: &[u8] = b"ARROW1";
    if data.len() < 2 * MAGIC.len() + 2 + 4 || !data.ends_with(MAGIC) || !data.starts_with(MAGIC) {
        return Err(damaged("not an Arrow IPC file"));
    }
    let trailer = data.len() - MAGIC.len() - 4;
    let footer_len = i32::from_le_bytes([
        data[trailer],
        data[trailer + 1],
        data[trailer + 2],
        data[trailer + 3],
    ]);
    let footer_start = usize::try_from(footer_len)
        .ok()
        .and_then(|len| trailer.checked_sub(len))
        .filter(|&start| start >= MAGIC.len() + 2)
        .ok_or_else(|| damaged("a footer longer than the file"))?;
    let footer = datafusion::arrow::ipc::root_as_footer(&data[footer_start..trailer])
        .map_err(|e| damaged(&format!("footer: {e}")))?;
    let blocks = footer
        .recordBatches()
        .into_iter()
        .flatten()
        .chain(footer.dictionaries().into_iter().flatten());
    for block in blocks {
        let end = usize::try_from(block.offset())
            .ok()
            .zip(usize::try_from(block.metaDataLength()).ok())
            .zip(usize::try_from(block.bodyLength()).ok())
            .and_then(|((offset, meta), body)| offset.checked_add(meta)?.checked_add(body));
        if end.is_none_or(|end| end > footer_start) {
            return Err(damaged("a block beyond the file's data"));
        }
    }
    Ok(())
}

/// The batches of an Arrow IPC file's bytes (a checkpoint file whose length and CRC matched).
pub fn decode_ipc(data: Vec<u8>) -> Result<Vec<RecordBatch>, StateError> {
    check_ipc_file_framing(&data)?;
    // arrow-ipc panics on some damaged files (a buffer sliced out of bounds).
    let decoded = crate::sync::contain(|| {
        let reader = FileReader::try_new(std::io::Cursor::new(data), None)?;
        reader.collect::<Result<Vec<_>, _>>()
    })
    .map_err(|panic| {
        datafusion::arrow::error::ArrowError::IpcError(format!("damaged IPC file: {panic}"))
    })?;
    Ok(decoded?)
}

/// Writes the manifest of the checkpoint in `dir` atomically: a temporary file, fsynced,
/// renamed over the final name, and the directory fsynced.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), StateError> {
    let path = dir.join(MANIFEST);
    let text = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    durable::write_atomically(&path, &text).map_err(|e| StateError::io("writing", &path, e))
}

/// Every complete checkpoint under `root` (a directory with a manifest that parses), newest
/// first. A manifest that does not parse is skipped with a warning.
pub fn complete_checkpoints(root: &Path) -> Vec<(PathBuf, Manifest)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, Manifest)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join(MANIFEST);
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        match serde_json::from_slice::<Manifest>(&text) {
            Ok(manifest) => found.push((entry.path(), manifest)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable checkpoint manifest")
            }
        }
    }
    found.sort_by_key(|(_, m)| std::cmp::Reverse(m.epoch));
    found
}

/// Removes every checkpoint directory under `root` that none of `keep` uses.
pub fn remove_unused(root: &Path, keep: &[&Manifest]) {
    let used: Vec<String> = keep.iter().flat_map(|m| m.directories()).collect();
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if used.contains(&name) {
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an old checkpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::columns;

    /// A footer whose block asks for 7.8 EB: the file reader allocated it and aborted the
    /// process (found by the `storage_readers` fuzz target). Now refused before reading.
    #[test]
    fn a_footer_block_beyond_the_file_is_damage_not_an_abort() {
        let data = include_bytes!(
            "../../fuzz/regressions/storage_readers/ipc-file-footer-block-of-exabytes.bin"
        );
        let e = decode_ipc(data.to_vec()).expect_err("damage");
        assert!(e.to_string().contains("beyond the file"), "{e}");
    }

    /// A file whose footer says a batch's body is shorter than its buffers: arrow-ipc slices
    /// a buffer out of bounds and panics (the fuzzer's `storage_readers` found it). It is now a
    /// damaged file, which recovery answers by falling back to an older checkpoint.
    #[test]
    fn a_body_shorter_than_its_buffers_is_damage_not_a_panic() {
        let batch = columns::batch(vec![("n", columns::i64s((0..1000).collect()))]).unwrap();
        let mut data = Vec::new();
        {
            let mut writer = FileWriter::try_new(&mut data, &batch.schema()).unwrap();
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
        }
        assert_eq!(decode_ipc(data.clone()).unwrap(), vec![batch]);
        // The footer (before its length and the closing magic) lists the batch's block.
        let footer_len =
            i32::from_le_bytes(data[data.len() - 10..data.len() - 6].try_into().unwrap()) as usize;
        let footer_start = data.len() - 10 - footer_len;
        let footer =
            datafusion::arrow::ipc::root_as_footer(&data[footer_start..data.len() - 10]).unwrap();
        let body = footer.recordBatches().unwrap().get(0).bodyLength();
        let at = data[footer_start..]
            .windows(8)
            .position(|w| w == body.to_le_bytes())
            .expect("the body length is in the footer")
            + footer_start;
        data[at..at + 8].copy_from_slice(&8i64.to_le_bytes());
        let e = decode_ipc(data).expect_err("damage");
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn ipc_files_read_back_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let batch = columns::batch(vec![("n", columns::i64s((0..1000).collect()))]).unwrap();
        let entry = write_ipc(
            dir.path(),
            "x.arrow",
            &batch.schema(),
            std::slice::from_ref(&batch),
        )
        .unwrap();
        assert_eq!(read_ipc(dir.path(), &entry).unwrap(), vec![batch]);
        let path = dir.path().join("x.arrow");
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        assert!(matches!(
            read_ipc(dir.path(), &entry),
            Err(StateError::Damaged { .. })
        ));
    }

    #[test]
    fn manifests_are_listed_newest_first_and_unused_directories_go() {
        let root = tempfile::tempdir().unwrap();
        let manifest = |epoch, written_at| Manifest {
            format: FORMAT,
            version: "test".into(),
            epoch,
            taken_at_ms: 0,
            views: vec![ViewCheckpoint {
                id: 1,
                name: "v".into(),
                written_at,
                files: Vec::new(),
                positions: vec![3],
                source_watermarks: vec![None],
                watermark: None,
                parallelism: 1,
            }],
            sinks: Vec::new(),
        };
        for (epoch, written_at) in [(10, 10), (20, 10), (30, 30)] {
            let dir = root.path().join(dir_name(epoch));
            std::fs::create_dir_all(&dir).unwrap();
            write_manifest(&dir, &manifest(epoch, written_at)).unwrap();
        }
        std::fs::create_dir_all(root.path().join(dir_name(40))).unwrap();
        let found = complete_checkpoints(root.path());
        let epochs: Vec<u64> = found.iter().map(|(_, m)| m.epoch).collect();
        assert_eq!(epochs, vec![30, 20, 10]);
        remove_unused(root.path(), &[&found[1].1]);
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![dir_name(10), dir_name(20)]);
    }
}
