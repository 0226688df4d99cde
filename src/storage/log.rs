//! [`Log`]: a segmented, durable, append-only log of change batches.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use tokio::sync::watch;

use super::error::StorageError;
use super::fsync::{FsyncPolicy, GroupCommit, SyncJob};
use super::segment::{self, Damage, RecordMeta, SegmentScan};
use crate::stream::ChangeBatch;

/// The size past which the log starts a new segment, unless opened with another.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

/// The file in a log directory that an open [`Log`] holds an exclusive lock on.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// A segmented, durable, append-only log of [`ChangeBatch`]es in one directory.
///
/// Each appended batch is one record at the next position (0, 1, 2, …). Records live in
/// segment files (see [`segment`](super::segment)); an in-memory index maps each position to
/// its segment and byte offset. A record becomes visible to [`Log::read`] and
/// [`Log::wait_for`] only once it is completely written to the operating system, and durable
/// per the [`FsyncPolicy`] once [`Log::wait_durable`] returns for it.
///
/// Records below a position no reader needs any more can be removed a segment at a time
/// ([`Log::truncate_before`]); the log then starts at a later position ([`Log::start`]) and
/// reads from below it begin there.
///
/// Cloning is cheap and every clone is the same log. Only one `Log` may have a directory open
/// at a time (enforced by a lock on [`LOCK_FILE_NAME`]).
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    policy: FsyncPolicy,
    segment_size: u64,
    /// Held only while one record is written (and the segment rolled when due).
    writer: Mutex<Writer>,
    /// Updated after a record is written, so readers never see half a record.
    index: RwLock<Index>,
    /// The position after the last appended record.
    end: watch::Sender<u64>,
    commit: GroupCommit,
    /// Holds the directory's lock for as long as the log is open.
    _lock: File,
}

/// The active (last) segment, which appends go to.
struct Writer {
    file: File,
    path: PathBuf,
    /// Bytes of complete records in the segment: where the next record goes.
    len: u64,
    /// The position the next record gets.
    next_position: u64,
    /// Set when a failed write could not be undone: the file's tail is unknown.
    broken: bool,
}

/// Where every record is: segments in order, each with its records' byte offsets.
struct Index {
    segments: Vec<SegmentIndex>,
}

#[derive(Debug)]
struct SegmentIndex {
    /// The position of the segment's first record.
    first: u64,
    path: PathBuf,
    /// The byte offset of each record in the segment.
    offsets: Vec<u64>,
    /// Bytes of complete records in it.
    bytes: u64,
}

impl SegmentIndex {
    fn end(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// Consecutive records of one segment, as [`Index::locate`] finds them.
struct Run {
    first: u64,
    path: PathBuf,
    offsets: Vec<u64>,
}

/// What a log holds on disk, as [`Log::size`] reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSize {
    /// The position of the first record kept.
    pub start: u64,
    /// The position after the last record.
    pub end: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of records in them.
    pub bytes: u64,
}

/// Segments taken out of a log by [`Log::detach_before`], whose files are still on disk.
#[derive(Debug)]
#[must_use = "the segments' files stay on disk until removed"]
pub struct Detached {
    segments: Vec<SegmentIndex>,
    dir: PathBuf,
    syncs: bool,
}

impl Detached {
    /// Whether nothing was detached.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Removes the files, oldest first.
    pub fn remove(self) -> Result<Truncated, StorageError> {
        let mut truncated = Truncated::default();
        for segment in &self.segments {
            fs::remove_file(&segment.path)
                .map_err(|e| StorageError::io("removing segment", &segment.path, e))?;
            truncated.segments += 1;
            truncated.records += segment.offsets.len() as u64;
            truncated.bytes += segment.bytes;
        }
        if !self.segments.is_empty() && self.syncs {
            sync_dir(&self.dir)?;
        }
        Ok(truncated)
    }
}

/// What one [`Log::truncate_before`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Truncated {
    /// Segment files removed.
    pub segments: usize,
    /// Records removed.
    pub records: u64,
    /// Bytes removed.
    pub bytes: u64,
}

impl Index {
    /// The records at positions `from..` (at most `max_records`), grouped by segment.
    fn locate(&self, from: u64, max_records: usize) -> Vec<Run> {
        let mut runs = Vec::new();
        let mut wanted = max_records;
        let start = self.segments.partition_point(|s| s.end() <= from);
        for segment in &self.segments[start..] {
            if wanted == 0 {
                break;
            }
            let skip = usize::try_from(from.saturating_sub(segment.first)).unwrap_or(usize::MAX);
            let offsets: Vec<u64> = segment
                .offsets
                .iter()
                .skip(skip)
                .take(wanted)
                .copied()
                .collect();
            if offsets.is_empty() {
                continue;
            }
            wanted -= offsets.len();
            runs.push(Run {
                first: segment.first.max(from),
                path: segment.path.clone(),
                offsets,
            });
        }
        runs
    }
}

impl Log {
    /// Opens (creating it if missing) the log in `dir`, with [`DEFAULT_SEGMENT_SIZE`].
    ///
    /// A torn or corrupt record at the tail of the log — what a crash mid-append leaves — is
    /// cut off with a warning and appends continue from there; damage anywhere else is
    /// [`StorageError::Corrupt`].
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<Log, StorageError> {
        Self::open_with_segment_size(dir, policy, DEFAULT_SEGMENT_SIZE)
    }

    /// Like [`Log::open`], starting a new segment once the active one holds at least
    /// `segment_size` bytes (a segment always holds at least one record, however large).
    pub fn open_with_segment_size(
        dir: &Path,
        policy: FsyncPolicy,
        segment_size: u64,
    ) -> Result<Log, StorageError> {
        fs::create_dir_all(dir).map_err(|e| StorageError::io("creating log directory", dir, e))?;
        let lock = lock_dir(dir)?;
        let (segments, writer) = recover(dir, policy)?;
        let end = writer.next_position;
        Ok(Log {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                policy,
                segment_size,
                writer: Mutex::new(writer),
                index: RwLock::new(Index { segments }),
                end: watch::Sender::new(end),
                // Recovery synced every segment, so everything found is durable.
                commit: GroupCommit::new(policy, dir, end),
                _lock: lock,
            }),
        })
    }

    /// Appends `batch` as one record and returns its position.
    ///
    /// The record is written to the operating system but not yet fsynced: call
    /// [`Log::wait_durable`] before acknowledging it.
    pub fn append(&self, batch: &ChangeBatch) -> Result<u64, StorageError> {
        self.append_with_meta(batch, &RecordMeta::default())
    }

    /// Like [`Log::append`], with what the record says beside its rows.
    pub fn append_with_meta(
        &self,
        batch: &ChangeBatch,
        meta: &RecordMeta,
    ) -> Result<u64, StorageError> {
        // Encoding is the expensive part and needs no lock.
        let record = segment::encode_record(batch, meta)?;
        let inner = &*self.inner;
        let mut writer = inner.lock_writer();
        if writer.broken {
            return Err(StorageError::Broken {
                path: inner.dir.clone(),
            });
        }
        if writer.len >= inner.segment_size && writer.len > 0 {
            inner.roll(&mut writer)?;
        }
        let offset = writer.len;
        if let Err(source) = writer.file.write_all(&record) {
            // A partial record in the middle of a segment would make every later record
            // unreadable after a restart, so cut it off before anything follows it.
            if writer.file.set_len(offset).is_err() {
                writer.broken = true;
            }
            return Err(StorageError::io("writing to segment", &writer.path, source));
        }
        writer.len += record.len() as u64;
        let position = writer.next_position;
        writer.next_position += 1;
        {
            let mut index = inner.write_index();
            if let Some(segment) = index.segments.last_mut() {
                segment.offsets.push(offset);
                segment.bytes = writer.len;
            }
        }
        inner.end.send_replace(position + 1);
        Ok(position)
    }

    /// Returns once the record at `position` is durable under the log's [`FsyncPolicy`].
    ///
    /// Concurrent waiters share fsyncs (group commit). After an fsync has failed this always
    /// fails with [`StorageError::SyncFailed`].
    pub async fn wait_durable(&self, position: u64) -> Result<(), StorageError> {
        let end = self.end();
        if position >= end {
            return Err(StorageError::NotAppended { position, end });
        }
        let inner = &*self.inner;
        inner
            .commit
            .wait_durable(position, || inner.prepare_sync())
            .await
    }

    /// The position after the last appended record (the number of records ever appended).
    pub fn end(&self) -> u64 {
        *self.inner.end.borrow()
    }

    /// The position of the first record the log still holds (0 until it is truncated).
    pub fn start(&self) -> u64 {
        self.inner
            .read_index()
            .segments
            .first()
            .map_or(0, |s| s.first)
    }

    /// Where the log starts and ends, and its segments and bytes on disk.
    pub fn size(&self) -> LogSize {
        let index = self.inner.read_index();
        LogSize {
            start: index.segments.first().map_or(0, |s| s.first),
            end: index.segments.last().map_or(0, SegmentIndex::end),
            segments: index.segments.len(),
            bytes: index.segments.iter().map(|s| s.bytes).sum(),
        }
    }

    /// Removes every segment whose records all lie below `position`, oldest first; the
    /// segment being appended to, and the last one holding a record, are always kept. Reads already under way finish; later reads
    /// from below the new start begin at it.
    ///
    /// Files are removed oldest first, so a crash part way leaves the log starting somewhere
    /// between its old start and the position asked for, never with a gap.
    pub fn truncate_before(&self, position: u64) -> Result<Truncated, StorageError> {
        self.detach_before(position).remove()
    }

    /// The first step of [`Log::truncate_before`]: the segments are gone from the log at once
    /// (reads from now on begin after them), their files stay until [`Detached::remove`]. A
    /// caller that must order truncation against other work does this step under its own
    /// lock and the slower file removal after it. Files never removed come back as the log's
    /// first segments when it is opened again.
    pub fn detach_before(&self, position: u64) -> Detached {
        let mut index = self.inner.write_index();
        // The newest segment that holds a record stays too: the last record says where a
        // connector resumes, and a segment just rolled to is empty until its first record.
        let keep = index
            .segments
            .iter()
            .rposition(|s| !s.offsets.is_empty())
            .unwrap_or(0)
            .min(index.segments.len().saturating_sub(1));
        let n = index.segments[..keep].partition_point(|s| s.end() <= position);
        Detached {
            segments: index.segments.drain(..n).collect(),
            dir: self.inner.dir.clone(),
            syncs: self.inner.policy.syncs(),
        }
    }

    /// The records at positions `from..`, at most `max_records` of them, read from disk.
    ///
    /// Returns fewer (or none) when the log ends sooner.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<(u64, ChangeBatch)>, StorageError> {
        Ok(self
            .read_with_meta(from, max_records)?
            .into_iter()
            .map(|(position, batch, _)| (position, batch))
            .collect())
    }

    /// Like [`Log::read`], with each record's [`RecordMeta`].
    pub fn read_with_meta(
        &self,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<(u64, ChangeBatch, RecordMeta)>, StorageError> {
        // The segments are opened while the index is held: truncation removes a segment from
        // the index before it removes its file, and an open file stays readable.
        let runs = {
            let index = self.inner.read_index();
            let mut runs = Vec::new();
            for run in index.locate(from, max_records) {
                let file = File::open(&run.path)
                    .map_err(|e| StorageError::io("reading segment", &run.path, e))?;
                runs.push((run, file));
            }
            runs
        };
        let mut records = Vec::with_capacity(runs.iter().map(|(r, _)| r.offsets.len()).sum());
        for (run, file) in runs {
            let batches = segment::read_records_from(file, &run.path, &run.offsets)?;
            records.extend(
                (run.first..)
                    .zip(batches)
                    .map(|(position, (batch, meta))| (position, batch, meta)),
            );
        }
        Ok(records)
    }

    /// Resolves once the log holds a record at `position`, i.e. once `end() > position`.
    pub async fn wait_for(&self, position: u64) {
        let mut end = self.inner.end.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = end.wait_for(|&end| end > position).await;
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The log's fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.inner.policy
    }

    /// The number of fsyncs group commit has performed (not counting those when rolling to a
    /// new segment): a measure of how well writers share them.
    pub fn group_fsyncs(&self) -> u64 {
        self.inner.commit.fsyncs()
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .field("policy", &self.inner.policy)
            .field("end", &self.end())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Starts a new segment at the writer's next position.
    ///
    /// The old segment is fsynced first (under a syncing policy), so group commit only ever
    /// has to sync the active segment, and a crash can never leave damage in a segment that
    /// is followed by data.
    fn roll(&self, writer: &mut Writer) -> Result<(), StorageError> {
        if self.policy.syncs()
            && let Err(source) = writer.file.sync_data()
        {
            return Err(self.commit.poison(source));
        }
        let first = writer.next_position;
        let path = self.dir.join(segment::segment_file_name(first));
        let file = open_segment(&path, true)?;
        if self.policy.syncs() {
            sync_dir(&self.dir)?;
        }
        self.write_index().segments.push(SegmentIndex {
            first,
            path: path.clone(),
            offsets: Vec::new(),
            bytes: 0,
        });
        *writer = Writer {
            file,
            path,
            len: 0,
            next_position: first,
            broken: false,
        };
        Ok(())
    }

    /// Captures what one group fsync must sync to cover every record appended so far.
    fn prepare_sync(&self) -> Result<SyncJob, StorageError> {
        let writer = self.lock_writer();
        let file = writer
            .file
            .try_clone()
            .map_err(|e| StorageError::io("cloning segment handle", &writer.path, e))?;
        Ok(SyncJob {
            upto: writer.next_position,
            file,
        })
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the writer cannot leave a half-written record behind that the
        // index knows of (it is updated last), and `len` is only advanced after the write.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // The index is pushed to and drained from the front, each a single step, so it is
        // consistent after any panic.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes the exclusive lock on the directory's lock file.
fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("opening lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StorageError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(StorageError::io("locking", &path, e)),
    }
}

/// Scans the segments in `dir`, cuts a damaged tail, syncs what was found (under a syncing
/// policy) and returns the index and a writer positioned after the last record.
fn recover(dir: &Path, policy: FsyncPolicy) -> Result<(Vec<SegmentIndex>, Writer), StorageError> {
    let found = list_segments(dir)?;
    let mut segments: Vec<SegmentIndex> = Vec::with_capacity(found.len());
    let mut active: Option<Writer> = None;
    let mut dir_changed = false;
    for (i, (first, path)) in found.iter().enumerate() {
        let first = *first;
        if let Some(previous) = segments.last()
            && previous.end() != first
        {
            return Err(StorageError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: format!(
                    "segment starts at position {first} but the previous one ends at {}",
                    previous.end()
                ),
            });
        }
        let file = open_segment(path, false)?;
        let SegmentScan {
            offsets,
            valid_len,
            file_len,
            damage,
        } = segment::scan_segment(&file, path)?;
        let later = &found[i + 1..];
        if let Some(Damage { reason, torn }) = &damage {
            // Damage counts as a torn tail when nothing follows it: not in its segment, and
            // later segments exist at most as empty files (created by a roll just before a
            // crash).
            let mut nothing_follows = *torn;
            for (_, later_path) in later {
                let len = fs::metadata(later_path)
                    .map_err(|e| StorageError::io("scanning segment", later_path, e))?
                    .len();
                nothing_follows &= len == 0;
            }
            if !nothing_follows {
                return Err(StorageError::Corrupt {
                    path: path.clone(),
                    offset: valid_len,
                    reason: reason.clone(),
                });
            }
            tracing::warn!(
                segment = %path.display(),
                offset = valid_len,
                cut_bytes = file_len - valid_len,
                %reason,
                "cutting damaged tail of log"
            );
            file.set_len(valid_len)
                .map_err(|e| StorageError::io("truncating segment", path, e))?;
            for (_, later_path) in later {
                fs::remove_file(later_path)
                    .map_err(|e| StorageError::io("removing empty segment", later_path, e))?;
            }
            dir_changed |= !later.is_empty();
        }
        if policy.syncs() {
            file.sync_data()
                .map_err(|e| StorageError::io("fsyncing segment", path, e))?;
        }
        let segment = SegmentIndex {
            first,
            path: path.clone(),
            offsets,
            bytes: valid_len,
        };
        if damage.is_some() || later.is_empty() {
            active = Some(Writer {
                file,
                path: path.clone(),
                len: valid_len,
                next_position: segment.end(),
                broken: false,
            });
            segments.push(segment);
            break;
        }
        segments.push(segment);
    }
    let writer = match active {
        Some(writer) => writer,
        None => {
            let path = dir.join(segment::segment_file_name(0));
            let file = open_segment(&path, true)?;
            segments.push(SegmentIndex {
                first: 0,
                path: path.clone(),
                offsets: Vec::new(),
                bytes: 0,
            });
            dir_changed = true;
            Writer {
                file,
                path,
                len: 0,
                next_position: 0,
                broken: false,
            }
        }
    };
    if dir_changed && policy.syncs() {
        sync_dir(dir)?;
    }
    Ok((segments, writer))
}

/// The segment files in `dir` with their first positions, in order.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let io_err = |e| StorageError::io("listing log directory", dir, e);
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(segment::parse_segment_file_name) {
            segments.push((first, entry.path()));
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Opens a segment for reading and appending, creating it when `create` is set.
fn open_segment(path: &Path, create: bool) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .open(path)
        .map_err(|e| StorageError::io("opening segment", path, e))
}

/// Makes the directory's entries (created or removed files) durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    super::durable::sync_dir(dir).map_err(|e| StorageError::io("fsyncing log directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use datafusion::arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn rows(keys: &[i32], values: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(keys.to_vec())),
                Arc::new(StringArray::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    /// A one-row insert whose key identifies it.
    fn numbered(n: i32) -> ChangeBatch {
        ChangeBatch::inserts(rows(&[n], &[Some("x")]))
    }

    fn key_of(batch: &ChangeBatch) -> i32 {
        batch
            .data()
            .column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .value(0)
    }

    fn keys(log: &Log) -> Vec<i32> {
        log.read(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|(_, b)| key_of(b))
            .collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir)
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    #[tokio::test]
    async fn append_and_read_round_trip_weights_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(log.end(), 0);
        assert!(log.read(0, 10).unwrap().is_empty());

        let inserts = ChangeBatch::inserts(rows(&[1, 2], &[Some("a"), None]));
        let mixed = ChangeBatch::with_weights(
            rows(&[1, 3, 4], &[Some("a"), None, Some("d")]),
            Int64Array::from(vec![-1, 1, 2]),
        )
        .unwrap();
        assert_eq!(log.append(&inserts).unwrap(), 0);
        assert_eq!(log.append(&mixed).unwrap(), 1);
        assert_eq!(log.end(), 2);
        log.wait_durable(1).await.unwrap();

        let records = log.read(0, 10).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].0, 0);
        assert_eq!(records[0].1.data(), inserts.data());
        assert!(records[0].1.weights().is_none());
        assert_eq!(records[1].0, 1);
        assert_eq!(records[1].1.data(), mixed.data());
        assert_eq!(records[1].1.weights().unwrap().values(), &[-1, 1, 2]);

        let tail = log.read(1, 10).unwrap();
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].0, 1);
        assert_eq!(log.read(0, 1).unwrap().len(), 1);
        assert!(log.read(2, 10).unwrap().is_empty());
        assert!(log.read(0, 0).unwrap().is_empty());

        let err = log.wait_durable(2).await.unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::NotAppended {
                    position: 2,
                    end: 2
                }
            ),
            "{err}"
        );
    }

    /// Truncation removes whole segments below the position, never the active one; reads
    /// from below the start begin at it; a reopened log starts there and appends go on.
    #[tokio::test]
    async fn truncation_removes_whole_segments_below_the_position() {
        let dir = tempfile::tempdir().unwrap();
        // Tiny segments: every record rolls to a new one.
        let log = Log::open_with_segment_size(dir.path(), FsyncPolicy::Always, 1).unwrap();
        for n in 0..6 {
            log.append(&numbered(n)).unwrap();
        }
        log.wait_durable(5).await.unwrap();
        let before = log.size();
        assert_eq!((before.start, before.end, before.segments), (0, 6, 6));
        let one = before.bytes / 6;
        assert!(one > 0);

        // Records 0..3 go; record 3 is needed, so its segment stays.
        let cut = log.truncate_before(3).unwrap();
        assert_eq!((cut.segments, cut.records, cut.bytes), (3, 3, 3 * one));
        assert_eq!(log.start(), 3);
        assert_eq!(segment_files(dir.path()).len(), 3);
        assert_eq!(keys(&log), vec![3, 4, 5]);
        let from_below = log.read(1, 2).unwrap();
        assert_eq!(
            from_below.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![3, 4]
        );
        // Asking again, or for less, removes nothing.
        assert_eq!(log.truncate_before(2).unwrap(), Truncated::default());

        // The active segment stays even when every record is below the position.
        let cut = log.truncate_before(100).unwrap();
        assert_eq!(cut.segments, 2);
        assert_eq!(log.size().segments, 1);
        assert_eq!(keys(&log), vec![5]);
        drop(log);

        let log = Log::open_with_segment_size(dir.path(), FsyncPolicy::Always, 1).unwrap();
        assert_eq!((log.start(), log.end()), (5, 6));
        assert_eq!(keys(&log), vec![5]);
        assert_eq!(log.append(&numbered(6)).unwrap(), 6);
        assert_eq!(keys(&log), vec![5, 6]);
        assert_eq!(log.size().bytes, 2 * one);
    }

    /// An empty newest segment (a roll whose first record a crash lost) does not let the
    /// last record go: it says where a connector resumes.
    #[test]
    fn truncation_keeps_the_last_record_behind_an_empty_segment() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open_with_segment_size(dir.path(), FsyncPolicy::Never, 1).unwrap();
            for n in 0..3 {
                log.append(&numbered(n)).unwrap();
            }
        }
        std::fs::File::create(dir.path().join(segment::segment_file_name(3))).unwrap();
        let log = Log::open_with_segment_size(dir.path(), FsyncPolicy::Never, 1).unwrap();
        assert_eq!(log.size().segments, 4);
        assert_eq!(log.truncate_before(100).unwrap().records, 2);
        assert_eq!(keys(&log), vec![2]);
        assert_eq!(log.read(2, 1).unwrap().len(), 1);
    }

    /// A read that found its segments before a truncation removed them still reads them: the
    /// files are opened while the index is held.
    #[test]
    fn a_read_racing_truncation_never_fails() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with_segment_size(dir.path(), FsyncPolicy::Never, 1).unwrap();
        for n in 0..400 {
            log.append(&numbered(n)).unwrap();
        }
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let records = log.read(0, usize::MAX).unwrap();
                    let positions: Vec<u64> = records.iter().map(|(p, _)| *p).collect();
                    let start = positions.first().copied().unwrap_or(399);
                    assert_eq!(positions, (start..400).collect::<Vec<_>>());
                }
            })
        };
        for position in 0..400 {
            log.truncate_before(position).unwrap();
        }
        reader.join().unwrap();
        assert_eq!(log.start(), 399);
    }

    #[tokio::test]
    async fn reopen_after_drop_finds_every_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path(), FsyncPolicy::Batch).unwrap();
            for n in 0..5 {
                log.append(&numbered(n)).unwrap();
            }
            log.wait_durable(4).await.unwrap();
        }
        let log = Log::open(dir.path(), FsyncPolicy::Batch).unwrap();
        assert_eq!(log.end(), 5);
        assert_eq!(keys(&log), vec![0, 1, 2, 3, 4]);
        // Recovered records are durable without another fsync.
        log.wait_durable(4).await.unwrap();
        assert_eq!(log.group_fsyncs(), 0);
        assert_eq!(log.append(&numbered(5)).unwrap(), 5);
        assert_eq!(keys(&log), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_directory_is_opened_by_one_log_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), FsyncPolicy::Never).unwrap();
        let err = Log::open(dir.path(), FsyncPolicy::Never).unwrap_err();
        assert!(matches!(err, StorageError::Locked { .. }), "{err}");
        drop(log);
        Log::open(dir.path(), FsyncPolicy::Never).unwrap();
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path(), FsyncPolicy::Always).unwrap();
            for n in 0..3 {
                log.append(&numbered(n)).unwrap();
            }
        }
        let [segment] = &segment_files(dir.path())[..] else {
            panic!("expected one segment");
        };
        let len = fs::metadata(segment).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(segment)
            .unwrap()
            .set_len(len - 3)
            .unwrap();

        let log = Log::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(log.end(), 2);
        assert_eq!(keys(&log), vec![0, 1]);
        assert_eq!(log.append(&numbered(2)).unwrap(), 2);
        drop(log);

        let log = Log::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(keys(&log), vec![0, 1, 2]);
    }

    #[test]
    fn trailing_garbage_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path(), FsyncPolicy::Never).unwrap();
            for n in 0..3 {
                log.append(&numbered(n)).unwrap();
            }
        }
        let segment = &segment_files(dir.path())[0];
        let mut file = OpenOptions::new().append(true).open(segment).unwrap();
        file.write_all(b"\x10\x00\x00\x00garbage that is not a record")
            .unwrap();
        drop(file);

        let log = Log::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(log.end(), 3);
        assert_eq!(log.append(&numbered(3)).unwrap(), 3);
        drop(log);
        let log = Log::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(keys(&log), vec![0, 1, 2, 3]);
    }

    #[test]
    fn corruption_before_the_tail_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path(), FsyncPolicy::Never).unwrap();
            for n in 0..3 {
                log.append(&numbered(n)).unwrap();
            }
        }
        let segment = &segment_files(dir.path())[0];
        let mut bytes = fs::read(segment).unwrap();
        // Flip a payload byte of the first record.
        bytes[segment::HEADER_LEN as usize + 4] ^= 0xff;
        fs::write(segment, &bytes).unwrap();

        let err = Log::open(dir.path(), FsyncPolicy::Never).unwrap_err();
        assert!(
            matches!(&err, StorageError::Corrupt { offset: 0, reason, .. } if reason.contains("crc")),
            "{err}"
        );
    }

    #[test]
    fn segments_roll_over_and_read_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let record_len = segment::encode_record(&numbered(0), &RecordMeta::default())
            .unwrap()
            .len() as u64;
        // Two records per segment.
        let size = record_len * 2;
        {
            let log = Log::open_with_segment_size(dir.path(), FsyncPolicy::Always, size).unwrap();
            for n in 0..7 {
                assert_eq!(log.append(&numbered(n)).unwrap(), n as u64);
            }
            let files = segment_files(dir.path());
            let names: Vec<_> = files
                .iter()
                .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
                .collect();
            assert_eq!(
                names,
                [0, 2, 4, 6].map(segment::segment_file_name).to_vec(),
                "{names:?}"
            );
            assert_eq!(keys(&log), (0..7).collect::<Vec<_>>());
            let middle = log.read(1, 4).unwrap();
            assert_eq!(
                middle.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                vec![1, 2, 3, 4]
            );
            assert_eq!(
                middle.iter().map(|(_, b)| key_of(b)).collect::<Vec<_>>(),
                vec![1, 2, 3, 4]
            );
        }
        let log = Log::open_with_segment_size(dir.path(), FsyncPolicy::Always, size).unwrap();
        assert_eq!(log.end(), 7);
        assert_eq!(keys(&log), (0..7).collect::<Vec<_>>());
        assert_eq!(log.append(&numbered(7)).unwrap(), 7);
        assert_eq!(log.append(&numbered(8)).unwrap(), 8);
        assert_eq!(segment_files(dir.path()).len(), 5);
        assert_eq!(log.read(5, 100).unwrap().len(), 4);
    }

    #[test]
    fn torn_tail_before_an_empty_segment_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let record_len = segment::encode_record(&numbered(0), &RecordMeta::default())
            .unwrap()
            .len() as u64;
        {
            let log =
                Log::open_with_segment_size(dir.path(), FsyncPolicy::Never, record_len).unwrap();
            log.append(&numbered(0)).unwrap();
            log.append(&numbered(1)).unwrap();
        }
        // A crash right after rolling: the new segment is empty, the old one's tail is torn.
        let files = segment_files(dir.path());
        fs::write(&files[1], b"").unwrap();
        let len = fs::metadata(&files[0]).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&files[0])
            .unwrap()
            .set_len(len - 1)
            .unwrap();

        let log = Log::open_with_segment_size(dir.path(), FsyncPolicy::Never, record_len).unwrap();
        assert_eq!(log.end(), 0);
        assert_eq!(segment_files(dir.path()), files[..1].to_vec());
        assert_eq!(log.append(&numbered(9)).unwrap(), 0);
        assert_eq!(keys(&log), vec![9]);
    }

    #[test]
    fn a_gap_between_segments_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let record_len = segment::encode_record(&numbered(0), &RecordMeta::default())
            .unwrap()
            .len() as u64;
        {
            let log =
                Log::open_with_segment_size(dir.path(), FsyncPolicy::Never, record_len).unwrap();
            for n in 0..3 {
                log.append(&numbered(n)).unwrap();
            }
        }
        fs::remove_file(dir.path().join(segment::segment_file_name(1))).unwrap();
        let err = Log::open(dir.path(), FsyncPolicy::Never).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }

    /// Runs 50 concurrent append + wait_durable writers and returns the group fsyncs used.
    async fn concurrent_writers(policy: FsyncPolicy, segment_size: u64) -> u64 {
        const WRITERS: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with_segment_size(dir.path(), policy, segment_size).unwrap();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|n| {
                let log = log.clone();
                tokio::spawn(async move {
                    let position = log.append(&numbered(n as i32)).unwrap();
                    log.wait_durable(position).await.unwrap();
                    position
                })
            })
            .collect();
        let mut positions = Vec::new();
        for task in tasks {
            positions.push(task.await.unwrap());
        }
        positions.sort_unstable();
        assert_eq!(positions, (0..WRITERS as u64).collect::<Vec<_>>());
        assert_eq!(log.end(), WRITERS as u64);
        let mut found = keys(&log);
        found.sort_unstable();
        assert_eq!(found, (0..WRITERS as i32).collect::<Vec<_>>());
        log.group_fsyncs()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_are_all_acknowledged() {
        let always = concurrent_writers(FsyncPolicy::Always, DEFAULT_SEGMENT_SIZE).await;
        assert!((1..=50).contains(&always), "{always} fsyncs");
        let batch = concurrent_writers(FsyncPolicy::Batch, DEFAULT_SEGMENT_SIZE).await;
        assert!((1..=50).contains(&batch), "{batch} fsyncs");
        println!("50 writers: {always} fsyncs (always), {batch} fsyncs (batch)");
        assert_eq!(
            concurrent_writers(FsyncPolicy::Never, DEFAULT_SEGMENT_SIZE).await,
            0
        );
        // Rolling while others wait for durability.
        concurrent_writers(FsyncPolicy::Always, 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writers_waiting_together_share_one_fsync() {
        const WRITERS: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), FsyncPolicy::Always).unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|n| {
                let (log, barrier) = (log.clone(), barrier.clone());
                tokio::spawn(async move {
                    let position = log.append(&numbered(n as i32)).unwrap();
                    // Everyone has appended before anyone asks for durability, so the first
                    // fsync covers every writer.
                    barrier.wait().await;
                    log.wait_durable(position).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(log.group_fsyncs(), 1);
    }

    #[tokio::test]
    async fn wait_for_wakes_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), FsyncPolicy::Never).unwrap();
        let reader = {
            let log = log.clone();
            tokio::spawn(async move {
                log.wait_for(0).await;
                log.read(0, 10).unwrap().len()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished());
        log.append(&numbered(0)).unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, 1);
        // Already past: resolves at once.
        tokio::time::timeout(Duration::from_secs(5), log.wait_for(0))
            .await
            .unwrap();
    }

    #[test]
    fn log_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Log>();
    }
}
