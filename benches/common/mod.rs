//! Shared by the benchmarks: the count argument and an in-process server with a client.

#![allow(dead_code)]

/// The server binary's allocator (see `src/main.rs`), so that measurements match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use sluice::storage::FsyncPolicy;
use sluice::{Config, RunningServer, Server};
use tokio_postgres::{Client, NoTls};

/// The engine's logs on stderr, as `RUST_LOG` says (`RUST_LOG=sluice=info`); none by default.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The first argument that is not a flag, as a count, or `default`.
pub fn count_arg(default: usize) -> usize {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// A server over `dir` on a free port with `fsync`, and a tokio-postgres client of it.
pub async fn start_server(dir: &std::path::Path, fsync: FsyncPolicy) -> (RunningServer, Client) {
    start_server_with(dir, fsync, |_| {}).await
}

/// [`start_server`] with a configuration `tune` adjusts first.
pub async fn start_server_with(
    dir: &std::path::Path,
    fsync: FsyncPolicy,
    tune: impl FnOnce(&mut Config),
) -> (RunningServer, Client) {
    let mut config = Config::new(dir);
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.fsync = fsync;
    tune(&mut config);
    let server = Server::start(config).await.expect("server");
    let client = connect(server.addr.port()).await;
    (server, client)
}

/// A tokio-postgres client of the server on `port`.
pub async fn connect(port: u16) -> Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
        NoTls,
    )
    .await
    .expect("connect");
    tokio::spawn(connection);
    client
}

/// A process's peak resident memory in MB (`VmHWM` in `/proc`; 0 if unreadable).
pub fn peak_rss_mb(pid: u32) -> u64 {
    status_mb(pid, "VmHWM:")
}

/// A process's resident memory now, in MB (`VmRSS`; 0 if unreadable).
pub fn rss_mb(pid: u32) -> u64 {
    status_mb(pid, "VmRSS:")
}

/// A `kB` line of `/proc/PID/status`, in MB.
fn status_mb(pid: u32, line: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(line))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// Loads `rows` rows `(k, k % 100)` for k from 0 into `table (k BIGINT, v BIGINT)` by
/// `COPY … FROM STDIN` in 1 MB chunks; returns the seconds it took.
pub async fn copy_keys(client: &Client, table: &str, rows: i64) -> f64 {
    use futures::SinkExt;
    let started = std::time::Instant::now();
    let sink = client
        .copy_in(&format!("COPY {table} FROM STDIN (FORMAT csv)"))
        .await
        .expect("copy");
    futures::pin_mut!(sink);
    let mut k = 0;
    while k < rows {
        let mut chunk = String::with_capacity(1 << 20);
        while k < rows && chunk.len() < (1 << 20) - 64 {
            chunk.push_str(&format!("{k},{}\n", k % 100));
            k += 1;
        }
        sink.send(bytes::Bytes::from(chunk))
            .await
            .expect("copy data");
    }
    sink.finish().await.expect("copy done");
    started.elapsed().as_secs_f64()
}

/// Returns once every source has read all its input (`sluice_sources` says `finished`).
pub async fn wait_for_sources(client: &Client) {
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM sluice_sources WHERE status <> 'finished'",
                &[],
            )
            .await
            .expect("sluice_sources")
            .get(0);
        if waiting == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Writes the `nexmark` generator's person, auction and bid rows of an `events`-event stream as
/// CSV under `dir` (`DIR/<table>/part-0.csv`, no header, timestamps to the microsecond, as exact as the generator's): the rows
/// the `nexmark` source makes, for the peers' scripts in `benches/peers/`.
pub fn write_nexmark_csv(dir: &std::path::Path, events: u64) {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::error::ArrowError;
    use sluice::connector::nexmark::{NexmarkConfig, NexmarkGenerator};
    type Next = fn(&mut NexmarkGenerator, usize) -> Result<RecordBatch, ArrowError>;
    let tables: [(&str, Next); 3] = [
        ("person", NexmarkGenerator::next_persons),
        ("auction", NexmarkGenerator::next_auctions),
        ("bid", NexmarkGenerator::next_bids),
    ];
    for (table, next) in tables {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(dir.join(table)).expect("directory");
        let file = std::fs::File::create(dir.join(table).join("part-0.csv")).expect("file");
        let mut writer = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(false)
            .with_timestamp_format("%Y-%m-%d %H:%M:%S%.6f".to_string())
            .build(std::io::BufWriter::new(file));
        let mut generator = NexmarkGenerator::new(NexmarkConfig {
            event_num: Some(events),
            ..NexmarkConfig::default()
        });
        let mut rows = 0;
        loop {
            let batch = next(&mut generator, 8192).expect("batch");
            if batch.num_rows() == 0 {
                break;
            }
            rows += batch.num_rows();
            writer.write(&batch).expect("write");
        }
        println!(
            "nexmark csv table={table} rows={rows} seconds={:.1}",
            started.elapsed().as_secs_f64()
        );
    }
}
