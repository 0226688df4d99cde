//! Shared by the integration tests: an in-process server on a free port over a fresh data
//! directory, and connections to it.

#![allow(dead_code)]

pub mod process;

use std::path::{Path, PathBuf};

use sluice::{Config, RunningServer, Server};
use tokio_postgres::{Client, NoTls};

/// A server on a temporary data directory, removed when dropped.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `tune` adjusts first (parallelism, barrier interval, …).
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::new(dir.path());
        config.listen = "127.0.0.1:0".parse().expect("address");
        tune(&mut config);
        let server = Server::start(config).await.expect("server starts");
        Self {
            server: Some(server),
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.server.as_ref().expect("running").addr.port()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub async fn connect(&self) -> Client {
        connect(self.port()).await
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// Starts a server on port 0 over `data_dir`.
pub async fn start_on(data_dir: &Path) -> RunningServer {
    start_on_with(data_dir, |_| {}).await
}

/// Starts a server on port 0 over `data_dir`, its configuration adjusted by `tune`.
pub async fn start_on_with(data_dir: &Path, tune: impl FnOnce(&mut Config)) -> RunningServer {
    let mut config = Config::new(data_dir);
    config.listen = "127.0.0.1:0".parse().expect("address");
    tune(&mut config);
    Server::start(config).await.expect("server starts")
}

/// Connects with tokio-postgres as user `sluice` to database `sluice`.
pub async fn connect(port: u16) -> Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
        NoTls,
    )
    .await
    .expect("connects");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The SQLSTATE and message of a failed statement.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {e:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// The rows of a query as `a|b|c` lines (NULL as `NULL`), sorted: a bag to compare.
pub async fn sorted_rows(client: &Client, sql: &str) -> Vec<String> {
    let mut out: Vec<String> = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Live subscriptions of `server`, and views running only for one.
pub fn subscriptions(server: &TestServer) -> (usize, usize) {
    server
        .server
        .as_ref()
        .expect("running")
        .engine
        .subscriptions()
}

/// Waits (at most 5 s) until `server` has `expected` subscriptions; returns how long it took.
pub async fn wait_for_subscriptions(
    server: &TestServer,
    expected: (usize, usize),
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while subscriptions(server) != expected {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "subscriptions {:?}, expected {expected:?}",
            subscriptions(server)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// Runs `tests/clients/<script>` with python3 against `port`; panics with its output unless it
/// succeeds, and returns its stdout.
pub async fn run_python_client(script: &str, port: u16) -> String {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&path)
            .arg(port.to_string())
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{script} failed (bash .ci/run installs psycopg, SQLAlchemy, pandas, asyncpg and pgcli):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A connection whose driver task the caller holds: aborting it closes the socket without a
/// word to the server, as when a client process dies.
pub async fn connect_cuttable(port: u16) -> (Client, tokio::task::JoinHandle<()>) {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
        NoTls,
    )
    .await
    .expect("connects");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, task)
}
