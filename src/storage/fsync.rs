//! [`FsyncPolicy`] and group commit: many writers waiting for durability share one fsync.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::error::StorageError;

/// When an appended record counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Durable once fsynced. A waiter whose record is not yet synced starts an fsync of
    /// everything written so far, or waits for the one in progress and checks again.
    #[default]
    Always,
    /// Like [`FsyncPolicy::Always`], but the task that starts an fsync first waits
    /// [`BATCH_GATHER`] so that more writers share it: fewer fsyncs, slightly more latency.
    Batch,
    /// Durable as soon as written to the operating system: survives a crash of the process,
    /// not of the machine.
    Never,
}

/// How long a [`FsyncPolicy::Batch`] fsync waits to gather more writers before it starts.
pub const BATCH_GATHER: Duration = Duration::from_millis(2);

impl FsyncPolicy {
    /// The policy's name, as accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Batch => "batch",
            Self::Never => "never",
        }
    }

    /// True when this policy ever fsyncs.
    pub fn syncs(self) -> bool {
        self != Self::Never
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`FsyncPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fsync policy {0:?} (expected always, batch or never)")]
pub struct ParseFsyncPolicyError(pub String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Always, Self::Batch, Self::Never]
            .into_iter()
            .find(|p| s.eq_ignore_ascii_case(p.as_str()))
            .ok_or_else(|| ParseFsyncPolicyError(s.to_string()))
    }
}

/// One fsync to perform: taken while appends are excluded, so that syncing `file` makes every
/// record before `upto` durable (earlier segments were synced when the log rolled past them).
#[derive(Debug)]
pub(crate) struct SyncJob {
    /// Records at positions below this are durable once the sync succeeds.
    pub upto: u64,
    /// A clone of the active segment's handle.
    pub file: File,
}

/// The group-commit state shared by every waiter of one log.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    policy: FsyncPolicy,
    /// The log directory, for error messages.
    dir: PathBuf,
    state: Mutex<CommitState>,
    /// Bumped whenever a sync finishes (or is abandoned); waiters re-check the state then.
    finished: watch::Sender<u64>,
    /// Fsyncs performed by group commit, for metrics and tests.
    fsyncs: AtomicU64,
}

#[derive(Debug)]
struct CommitState {
    /// Records at positions below this are durable.
    durable: u64,
    /// True while some waiter leads an fsync.
    syncing: bool,
    /// Set by a failed fsync; from then on nothing more is reported durable.
    failed: Option<Arc<std::io::Error>>,
}

/// What a waiter does after looking at the state.
enum Step {
    Done,
    Lead,
    Wait(watch::Receiver<u64>),
}

impl GroupCommit {
    /// Group commit for the log in `dir`, with every record below `durable` already durable.
    pub fn new(policy: FsyncPolicy, dir: &Path, durable: u64) -> Self {
        Self {
            policy,
            dir: dir.to_path_buf(),
            state: Mutex::new(CommitState {
                durable,
                syncing: false,
                failed: None,
            }),
            finished: watch::Sender::new(0),
            fsyncs: AtomicU64::new(0),
        }
    }

    /// The number of fsyncs group commit has performed.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Records that an fsync outside group commit (when rolling segments) failed, so that no
    /// later fsync is trusted to have made that data durable; returns the error to report.
    pub fn poison(&self, error: std::io::Error) -> StorageError {
        let source = Arc::new(error);
        self.lock().failed = Some(Arc::clone(&source));
        self.finished.send_modify(|g| *g = g.wrapping_add(1));
        self.failed(&source)
    }

    /// Returns once the record at `position` (which must have been appended) is durable.
    ///
    /// `prepare` captures what to sync; it is called by the waiter that leads an fsync.
    pub async fn wait_durable<F>(&self, position: u64, prepare: F) -> Result<(), StorageError>
    where
        F: Fn() -> Result<SyncJob, StorageError>,
    {
        if !self.policy.syncs() {
            return Ok(());
        }
        loop {
            let step = {
                let mut state = self.lock();
                if let Some(source) = &state.failed {
                    return Err(self.failed(source));
                }
                if position < state.durable {
                    Step::Done
                } else if state.syncing {
                    // Subscribing under the lock: the leader marks the sync finished under the
                    // same lock before notifying, so this receiver cannot miss its wake-up.
                    Step::Wait(self.finished.subscribe())
                } else {
                    state.syncing = true;
                    Step::Lead
                }
            };
            match step {
                Step::Done => return Ok(()),
                Step::Lead => self.lead(&prepare).await?,
                Step::Wait(mut finished) => {
                    // The sender lives in `self`, so this only ends by a notification.
                    let _ = finished.changed().await;
                }
            }
        }
    }

    /// Performs one fsync as the leader: everything written when it starts becomes durable.
    async fn lead<F>(&self, prepare: &F) -> Result<(), StorageError>
    where
        F: Fn() -> Result<SyncJob, StorageError>,
    {
        // Hands leadership back even if this future is dropped mid-sync, so that waiters
        // never wait for a leader that is gone.
        let _leader = Leader(self);
        if self.policy == FsyncPolicy::Batch {
            tokio::time::sleep(BATCH_GATHER).await;
        }
        let SyncJob { upto, file } = prepare()?;
        let outcome = tokio::task::spawn_blocking(move || file.sync_data()).await;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        match outcome {
            Ok(Ok(())) => {
                state.durable = state.durable.max(upto);
                Ok(())
            }
            Ok(Err(error)) => {
                let source = Arc::new(error);
                state.failed = Some(Arc::clone(&source));
                Err(self.failed(&source))
            }
            // The blocking task panicked: whether the data reached the disk is unknown, so
            // this waiter fails and the next one retries.
            Err(join) => Err(StorageError::io(
                "fsyncing log",
                &self.dir,
                std::io::Error::other(join),
            )),
        }
    }

    fn failed(&self, source: &Arc<std::io::Error>) -> StorageError {
        StorageError::SyncFailed {
            path: self.dir.clone(),
            source: Arc::clone(source),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CommitState> {
        // The state is a few plain fields updated atomically under the lock, so it stays
        // consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Leadership of one fsync; dropping it lets the next waiter lead and wakes every waiter.
struct Leader<'a>(&'a GroupCommit);

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.0.lock().syncing = false;
        self.0.finished.send_modify(|g| *g = g.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn policy_parses_and_displays() {
        for policy in [FsyncPolicy::Always, FsyncPolicy::Batch, FsyncPolicy::Never] {
            assert_eq!(policy.to_string().parse::<FsyncPolicy>(), Ok(policy));
        }
        assert_eq!("BATCH".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Batch));
        assert_eq!(FsyncPolicy::default(), FsyncPolicy::Always);
        let err = "sometimes".parse::<FsyncPolicy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown fsync policy \"sometimes\" (expected always, batch or never)"
        );
    }

    /// Twenty waiters for positions that are all written before any of them waits: the first
    /// fsync covers every one, so a group commit that shares performs exactly one (one per
    /// waiter would mean nothing is shared).
    async fn shared_fsyncs(policy: FsyncPolicy) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("f")).unwrap();
        file.write_all(b"data").unwrap();
        let file = Arc::new(file);
        let commit = Arc::new(GroupCommit::new(policy, dir.path(), 0));
        let written = Arc::new(AtomicU64::new(20));
        let mut tasks = Vec::new();
        for position in 0..20 {
            let (commit, file, written) = (commit.clone(), file.clone(), written.clone());
            tasks.push(tokio::spawn(async move {
                let prepare = || {
                    Ok(SyncJob {
                        upto: written.load(Ordering::SeqCst),
                        file: file.try_clone().unwrap(),
                    })
                };
                commit.wait_durable(position, prepare).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        commit.fsyncs()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiters_share_fsyncs() {
        assert_eq!(shared_fsyncs(FsyncPolicy::Always).await, 1);
        assert_eq!(shared_fsyncs(FsyncPolicy::Batch).await, 1);
        assert_eq!(shared_fsyncs(FsyncPolicy::Never).await, 0);
    }

    #[tokio::test]
    async fn poisoned_commit_reports_failure() {
        let dir = tempfile::tempdir().unwrap();
        let commit = GroupCommit::new(FsyncPolicy::Always, dir.path(), 0);
        let poisoned = commit.poison(std::io::Error::other("disk on fire"));
        assert!(matches!(poisoned, StorageError::SyncFailed { .. }));
        let err = commit
            .wait_durable(0, || unreachable!("a poisoned log never syncs"))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::SyncFailed { .. }), "{err}");
    }
}
