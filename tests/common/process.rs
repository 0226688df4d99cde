//! The server binary as a process of its own (its own runtime and stacks, killable with
//! SIGKILL), for tests of crashes and of what would take a server down.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The server process, killed when dropped so that a failing test leaves nothing behind.
pub struct ServerProcess(Child);

impl ServerProcess {
    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// The process id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The server's output goes to the file `SLUICE_TEST_SERVER_LOG` names, if any.
fn server_log() -> Stdio {
    match std::env::var_os("SLUICE_TEST_SERVER_LOG") {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_or_else(|_| Stdio::null(), Stdio::from),
        None => Stdio::null(),
    }
}

/// Starts `sluice serve` on `port` over `dir`, with `extra` arguments.
pub fn spawn_with(dir: &std::path::Path, port: u16, extra: &[&str]) -> ServerProcess {
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("SLUICE_TEST_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(server_log())
        .stderr(server_log())
        .spawn()
        .expect("the sluice binary starts");
    ServerProcess(child)
}

/// Connects once the server on `port` accepts connections (30 s at most).
pub async fn connect_when_up(port: u16) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
            NoTls,
        )
        .await
        {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return client;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("server did not come up: {e}"),
        }
    }
}
