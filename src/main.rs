//! The `sluice` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice::Config;
use sluice::storage::FsyncPolicy;
use tracing_subscriber::EnvFilter;

/// Sluice: a streaming SQL engine that speaks the PostgreSQL protocol.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the engine and its Postgres wire server.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = sluice::config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given; e.g. 127.0.0.1:9187).
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Directory of the catalog and the tables' logs.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    data_dir: PathBuf,
    /// When a write is acknowledged: always (after fsync, grouped across writers), batch
    /// (after a grouped fsync a few ms later) or never (once the OS has it).
    #[arg(long, env = "SLUICE_FSYNC", default_value = "always")]
    fsync: FsyncPolicy,
    /// A file of `user:password` lines: turns on SCRAM-SHA-256 authentication. Without it,
    /// every client that can reach the address is trusted.
    #[arg(long, env = "SLUICE_USERS")]
    users: Option<PathBuf>,
    /// PEM certificate chain: with --tls-key, turns on TLS.
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How often views take a barrier and publish a new epoch: `250ms`, `1s`, or milliseconds.
    #[arg(long, env = "SLUICE_BARRIER_INTERVAL", default_value = "250ms", value_parser = parse_interval)]
    barrier_interval: std::time::Duration,
    /// How often views write a checkpoint of their state (`10s`, `500ms`; `0` turns
    /// checkpoints off, and a restart replays every log).
    #[arg(long, env = "SLUICE_CHECKPOINT_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    checkpoint_interval: std::time::Duration,
    /// Workers for keyed operators (default: the number of cores).
    #[arg(long, env = "SLUICE_PARALLELISM")]
    parallelism: Option<usize>,
    /// The directory `connector = 'file'` sources may read below; a relative `path` is taken
    /// from it (default: the data directory's `files/`).
    #[arg(long, env = "SLUICE_FILE_SOURCE_ROOT")]
    file_source_root: Option<PathBuf>,
    /// Client connections served at once; one more is refused with SQLSTATE 53300.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = sluice::config::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Memory all ad-hoc queries together may use (`512MB`, `2GB` or bytes); sorts and
    /// aggregates spill to disk beyond it, what cannot spill fails with SQLSTATE 53200.
    #[arg(long, env = "SLUICE_QUERY_MEMORY", default_value = "2GB", value_parser = parse_size)]
    query_memory: usize,
    /// Rows one FETCH may gather; more is refused with SQLSTATE 54000.
    #[arg(long, env = "SLUICE_MAX_RESULT_ROWS", default_value_t = sluice::config::DEFAULT_MAX_RESULT_ROWS)]
    max_result_rows: usize,
    /// Size past which a table's log starts a new segment file (`64MB`, `1GB` or bytes); a
    /// source's log is truncated a whole segment at a time.
    #[arg(long, env = "SLUICE_LOG_SEGMENT_SIZE", default_value = "64MB", value_parser = parse_size)]
    log_segment_size: usize,
}

/// The stack of every runtime thread. Parsing and planning recurse as deep as a statement's
/// expressions nest (sqlparser clones, drops and prints its tree recursively), so the 2 MiB
/// default let a few hundred chained `+` kill the server; the parser refuses chains past
/// `sql::parser::MAX_OPERATOR_CHAIN`, and this leaves room for those it accepts. It is
/// address space reserved, not memory used.
const THREAD_STACK_BYTES: usize = 64 << 20;

/// mimalloc: per-thread free lists for the many small allocations of keyed state and batches,
/// where glibc's malloc spent a large share of a join's time consolidating freed chunks
/// (Nexmark q7 0.38 → 0.70 M events/s per core; README's Benchmarks). The library leaves the
/// choice to its binaries; benchmarks use the same one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::new(args.data_dir);
    config.listen = args.listen;
    config.metrics_listen = args.metrics_listen;
    config.fsync = args.fsync;
    config.users_file = args.users;
    config.tls_cert = args.tls_cert;
    config.tls_key = args.tls_key;
    config.barrier_interval = args
        .barrier_interval
        .max(std::time::Duration::from_millis(1));
    config.checkpoint_interval =
        (!args.checkpoint_interval.is_zero()).then_some(args.checkpoint_interval);
    if let Some(p) = args.parallelism {
        config.parallelism = p.max(1);
    }
    config.file_source_root = args.file_source_root;
    config.max_connections = args.max_connections.max(1);
    config.query_memory = args.query_memory;
    config.max_result_rows = args.max_result_rows.max(1);
    config.log_segment_size = args.log_segment_size.max(1) as u64;
    let server = sluice::Server::start(config)
        .await
        .context("starting sluice")?;
    println!(
        "sluice is ready: psql -h {} -p {} -U sluice -d sluice",
        server.addr.ip(),
        server.addr.port()
    );
    if let Some(metrics) = server.metrics_addr {
        println!("metrics: http://{metrics}/metrics");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// `250ms`, `2s` or a bare number of milliseconds.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "ms"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not an interval: {text:?} (try 250ms or 1s)"))?;
    match unit.trim() {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        other => Err(format!("unknown unit {other:?} in {text:?} (use ms or s)")),
    }
}

/// `512MB`, `2GB`, `64KiB` or a bare number of bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a size: {text:?} (try 512MB or 2GB)"))?;
    let unit: u64 = match unit.trim() {
        "" | "b" => 1,
        "kb" | "kib" | "k" => 1 << 10,
        "mb" | "mib" | "m" => 1 << 20,
        "gb" | "gib" | "g" => 1 << 30,
        "tb" | "tib" | "t" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use KB, MB or GB)"
            ));
        }
    };
    n.checked_mul(unit)
        .and_then(|b| usize::try_from(b).ok())
        .filter(|b| *b >= 1 << 20)
        .ok_or_else(|| format!("{text:?} is not between 1MB and the address space"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
