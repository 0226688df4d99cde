//! [`Config`]: every knob of a running engine, with its default. `main.rs` fills it from flags
//! and the environment; tests build it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::storage::FsyncPolicy;

/// The address `sluice serve` listens on unless told otherwise. Never 5432, so that a local
/// PostgreSQL is no obstacle.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";

/// The one database a Sluice server holds; connecting to any other is error 3D000.
pub const DATABASE_NAME: &str = "sluice";

/// Client connections served at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 500;
/// Memory all ad-hoc queries together may use (sorts, joins, aggregates), by default.
pub const DEFAULT_QUERY_MEMORY: usize = 2 << 30;
/// Rows one `FETCH` may gather before it answers, by default.
pub const DEFAULT_MAX_RESULT_ROWS: usize = 1_000_000;

/// The default user, trusted on loopback unless a users file turns on password auth.
pub const DEFAULT_USER: &str = "sluice";

/// Configuration of one engine and its server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the Postgres wire server listens.
    pub listen: SocketAddr,
    /// Where `GET /metrics` answers in the Prometheus (OpenMetrics) text format; `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the catalog and of every table's log.
    pub data_dir: PathBuf,
    /// When a write is acknowledged: after fsync (`always`), after a grouped fsync a few
    /// milliseconds later (`batch`), or once handed to the OS (`never`).
    pub fsync: FsyncPolicy,
    /// A file of `user:password` lines; when set, clients must authenticate with
    /// SCRAM-SHA-256.
    pub users_file: Option<PathBuf>,
    /// PEM certificate chain; with `tls_key`, turns on TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How often the view runtime takes a barrier and publishes every view.
    pub barrier_interval: Duration,
    /// How often views checkpoint their state; `None`: never (a restart replays every log).
    pub checkpoint_interval: Option<Duration>,
    /// Workers (hash partitions) of keyed operators.
    pub parallelism: usize,
    /// Epochs a subscriber may leave unread before it is dropped as too slow.
    pub subscribe_buffer_epochs: usize,
    /// The directory file sources may read below (default: the data directory's `files/`).
    pub file_source_root: Option<PathBuf>,
    /// Client connections served at once; one more is refused with `53300`.
    pub max_connections: usize,
    /// Bytes all ad-hoc queries together may hold; sorts and aggregates spill to
    /// `<data_dir>/tmp/spill` beyond it, what cannot spill fails with `53200`.
    pub query_memory: usize,
    /// Rows one `FETCH` may gather before it answers (`54000` beyond; fetch fewer at a time).
    pub max_result_rows: usize,
    /// How often a `CREATE MATERIALIZED VIEW` reading a backlog sends the client a `NOTICE`
    /// of its progress.
    pub progress_notice_interval: Duration,
    /// Bytes past which a table's log starts a new segment file: a source's log is truncated
    /// a whole segment at a time.
    pub log_segment_size: u64,
}

impl Config {
    /// Defaults for a data directory: listen on [`DEFAULT_LISTEN`], fsync always, trust auth.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            metrics_listen: None,
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::Always,
            users_file: None,
            tls_cert: None,
            tls_key: None,
            barrier_interval: Duration::from_millis(250),
            checkpoint_interval: Some(Duration::from_secs(10)),
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            subscribe_buffer_epochs: 4096,
            file_source_root: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            query_memory: DEFAULT_QUERY_MEMORY,
            max_result_rows: DEFAULT_MAX_RESULT_ROWS,
            progress_notice_interval: Duration::from_secs(2),
            log_segment_size: crate::storage::DEFAULT_SEGMENT_SIZE,
        }
    }

    /// The directory file sources may read below: `file_source_root`, or `<data_dir>/files`.
    pub fn file_root(&self) -> PathBuf {
        self.file_source_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("files"))
    }
}
