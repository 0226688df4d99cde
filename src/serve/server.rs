//! [`Server`]: the listener. It accepts connections, hands each to pgwire with our handlers, and
//! on shutdown stops accepting and closes the connections.

use std::net::SocketAddr;
use std::sync::Arc;

use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};

use super::control::{CancelRegistry, SluiceCancelHandler};
use pgwire::api::copy::CopyHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use pgwire::tokio::process_socket;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::engine::Engine;

use super::handler::StatementHandler;
use super::startup::{SluiceStartup, Users};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The engine could not open its data directory.
    #[error("opening the engine: {0}")]
    Engine(#[from] crate::error::Error),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The users file, certificate or key could not be read.
    #[error("reading {what} {path}: {reason}")]
    Setup {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// The handlers pgwire calls for every connection.
struct Handlers {
    /// Statements, extended protocol and COPY.
    statements: Arc<StatementHandler>,
    /// Startup and authentication.
    startup: Arc<SluiceStartup>,
    /// CancelRequests, routed by the connections' keys.
    cancel: Arc<SluiceCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.statements)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.statements)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::clone(&self.statements)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Starts servers.
pub struct Server;

/// The code a cancel request starts with, after its length (16).
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A connection beyond `--max-connections`: a cancel request is still served (it is how a
/// client stops a query on a full server); anything else gets `53300` and is closed, as
/// PostgreSQL answers "too many clients".
async fn refuse_unless_cancel(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    handlers: Arc<Handlers>,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
) {
    use tokio::io::AsyncWriteExt;
    let mut head = [0u8; 8];
    let peeked = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match socket.peek(&mut head).await {
                Ok(n) if n >= 8 => return true,
                Ok(0) | Err(_) => return false,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .unwrap_or(false);
    let cancel = peeked
        && u32::from_be_bytes([head[0], head[1], head[2], head[3]]) == 16
        && u32::from_be_bytes([head[4], head[5], head[6], head[7]]) == CANCEL_REQUEST_CODE;
    if cancel {
        if let Err(e) = process_socket(socket, tls, handlers).await {
            tracing::debug!(%peer, error = %e, "cancel request ended with an error");
        }
        return;
    }
    tracing::warn!(%peer, max_connections, "connection refused: too many clients");
    let mut socket = socket;
    let message = format!("sorry, too many clients already (--max-connections {max_connections})");
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', message.as_str()),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut frame = vec![b'E'];
    frame.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    frame.extend_from_slice(&fields);
    if let Err(e) = socket.write_all(&frame).await {
        tracing::debug!(%peer, error = %e, "could not tell a refused client why");
    }
}

/// Counts a connection in `sluice_connections_open` while it lives.
struct OpenConnection(Arc<Engine>);

impl OpenConnection {
    fn new(engine: Arc<Engine>) -> Self {
        engine.metrics().connections_open.inc();
        Self(engine)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics().connections_open.dec();
    }
}

/// A server accepting connections in the background.
pub struct RunningServer {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// Where it serves `/metrics`, if `--metrics-listen` was given.
    pub metrics_addr: Option<SocketAddr>,
    /// The engine it serves.
    pub engine: Arc<Engine>,
    /// Set to true to shut down.
    shutdown: watch::Sender<bool>,
    /// The accept loop.
    task: JoinHandle<()>,
    /// The metrics endpoint.
    metrics_task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, closes every connection and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        if let Some(task) = self.metrics_task {
            let _ = task.await;
        }
    }
}

fn setup_error(what: &'static str, path: &std::path::Path, reason: impl ToString) -> ServerError {
    ServerError::Setup {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl Server {
    /// Opens the engine on the configured data directory and starts listening.
    pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
        let (tls, cert_pem) = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let pem = std::fs::read(cert).map_err(|e| setup_error("certificate", cert, e))?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| setup_error("certificate", cert, e))?;
                let private_key =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| setup_error("key", key, e))?;
                let tls_config = ServerConfig::builder()
                    .with_no_client_auth()
                    .with_single_cert(certs, private_key)
                    .map_err(|e| setup_error("certificate", cert, e))?;
                (Some(TlsAcceptor::from(Arc::new(tls_config))), Some(pem))
            }
            (None, None) => (None, None),
            _ => {
                return Err(ServerError::Setup {
                    what: "TLS settings",
                    path: String::new(),
                    reason: "--tls-cert and --tls-key go together".into(),
                });
            }
        };
        let connections = Arc::new(ConnectionManager::new());
        let mut read_only = std::collections::HashSet::new();
        let startup = match &config.users_file {
            Some(path) => {
                let users = Users::load(path).map_err(|e| setup_error("users file", path, e))?;
                read_only = users.read_only();
                SluiceStartup::scram(users, cert_pem.as_deref(), Arc::clone(&connections))
                    .map_err(|e| setup_error("certificate", path, e))?
            }
            None => SluiceStartup::trust(Arc::clone(&connections)),
        };
        let engine = Engine::open(config.clone()).await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let cancels = Arc::new(CancelRegistry::default());
        let handlers = Arc::new(Handlers {
            statements: Arc::new(StatementHandler::new(
                Arc::clone(&engine),
                Arc::clone(&cancels),
                Arc::new(read_only),
            )),
            startup: Arc::new(startup),
            cancel: Arc::new(SluiceCancelHandler::new(
                DefaultCancelHandler::new(connections),
                cancels,
            )),
        });
        let (shutdown, mut stop) = watch::channel(false);
        let (metrics_addr, metrics_task) = match config.metrics_listen {
            Some(at) => {
                let listener = TcpListener::bind(at)
                    .await
                    .map_err(|source| ServerError::Bind { addr: at, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| ServerError::Bind { addr: at, source })?;
                tracing::info!(addr = %bound, "serving metrics at /metrics");
                let task = tokio::spawn(crate::metrics::serve(
                    listener,
                    Arc::clone(&engine),
                    stop.clone(),
                ));
                (Some(bound), Some(task))
            }
            None => (None, None),
        };
        let max_connections = config.max_connections;
        let served_engine = Arc::clone(&engine);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, peer)) => {
                            while connections.try_join_next().is_some() {}
                            let metrics = served_engine.metrics();
                            if connections.len() >= max_connections {
                                metrics.connections_refused.inc();
                                tokio::spawn(refuse_unless_cancel(socket, peer, Arc::clone(&handlers), tls.clone(), max_connections));
                                continue;
                            }
                            let handlers = Arc::clone(&handlers);
                            let tls = tls.clone();
                            metrics.connections.inc();
                            let open = OpenConnection::new(Arc::clone(&served_engine));
                            connections.spawn(async move {
                                let _open = open;
                                use futures::FutureExt;
                                tracing::debug!(%peer, "connection opened");
                                // pgwire 0.42 decodes some malformed messages (a Bind whose
                                // counts overrun it) without bounds checks and panics: that
                                // closes this connection only, and says so.
                                let served = std::panic::AssertUnwindSafe(process_socket(socket, tls, handlers))
                                    .catch_unwind()
                                    .await;
                                match served {
                                    Ok(Ok(())) => {}
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                                    Err(panic) => tracing::warn!(
                                        %peer,
                                        panic = %crate::sync::panic_message(panic.as_ref()),
                                        "connection closed: a malformed message made the protocol decoder panic"
                                    ),
                                }
                                tracing::debug!(%peer, "connection closed");
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "accept failed"),
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            connections.shutdown().await;
        });
        tracing::info!(%addr, tls = config.tls_cert.is_some(), auth = if config.users_file.is_some() { "scram-sha-256" } else { "trust" }, "listening");
        Ok(RunningServer {
            addr,
            metrics_addr,
            engine,
            shutdown,
            task,
            metrics_task,
        })
    }
}
