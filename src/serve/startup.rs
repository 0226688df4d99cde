//! Connection startup: the database check (there is one database, `sluice`; any other is 3D000)
//! and authentication: trust by default, SCRAM-SHA-256 against a users file when one is given.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionManager, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::catalog::pg_functions::SERVER_VERSION;
use crate::config::DATABASE_NAME;
use crate::error::sqlstate;

/// SCRAM iterations, PostgreSQL's default.
const SCRAM_ITERATIONS: usize = 4096;

/// How clients prove who they are.
pub enum StartupAuth {
    /// Anyone who can reach the socket is trusted (the default; loopback only).
    Trust(RandomPidSecretKeyGenerator),
    /// SCRAM-SHA-256 against the users file.
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

/// The startup handler of every connection.
pub struct SluiceStartup {
    /// The authentication method.
    auth: StartupAuth,
    /// ParameterStatus values sent after authentication.
    parameters: DefaultServerParameterProvider,
    /// Where each connection's cancel key is registered, so a CancelRequest (psql's Ctrl-C)
    /// reaches the statement it is for.
    connections: Arc<ConnectionManager>,
}

/// Parameters PostgreSQL sends after authentication, with our server version.
fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = format!("{SERVER_VERSION} (Sluice {})", env!("CARGO_PKG_VERSION"));
    parameters.date_style = "ISO, MDY".to_string();
    parameters.time_zone = "UTC".to_string();
    parameters
}

impl SluiceStartup {
    /// Trust authentication.
    pub fn trust(connections: Arc<ConnectionManager>) -> Self {
        Self {
            auth: StartupAuth::Trust(RandomPidSecretKeyGenerator::default()),
            parameters: server_parameters(),
            connections,
        }
    }

    /// SCRAM-SHA-256 against `user:password` lines; `tls_cert_pem` enables channel binding.
    pub fn scram(
        users: Users,
        tls_cert_pem: Option<&[u8]>,
        connections: Arc<ConnectionManager>,
    ) -> Result<Self, PgWireError> {
        let mut scram = ScramAuth::new(Arc::new(users));
        scram.set_iterations(SCRAM_ITERATIONS);
        if let Some(pem) = tls_cert_pem {
            scram.configure_certificate(pem)?;
        }
        let handler = SASLAuthStartupHandler::new(Arc::new(server_parameters()))
            .with_scram(scram)
            .with_connection_manager(Arc::clone(&connections));
        Ok(Self {
            auth: StartupAuth::Scram(Box::new(handler)),
            parameters: server_parameters(),
            connections,
        })
    }
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message,
    )))
}

#[async_trait]
impl StartupHandler for SluiceStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = &message {
            // As in PostgreSQL, the database defaults to the user's name.
            let database = startup
                .parameters
                .get("database")
                .or_else(|| startup.parameters.get("user"))
                .cloned()
                .unwrap_or_default();
            // `postgres` is every tool's default database name (sqllogictest, pgAdmin,
            // Grafana …); it names the one database too.
            if database != DATABASE_NAME && database != "postgres" {
                tracing::info!(database = %database, "connection refused: unknown database");
                return Err(fatal(
                    sqlstate::INVALID_CATALOG_NAME,
                    format!("database \"{database}\" does not exist"),
                ));
            }
        }
        match &self.auth {
            StartupAuth::Scram(handler) => handler.on_startup(client, message).await,
            StartupAuth::Trust(pids) => {
                if let PgWireFrontendMessage::Startup(startup) = &message {
                    protocol_negotiation(client, startup).await?;
                    save_startup_parameters_to_metadata(client, startup);
                    let (pid, key) = pids.generate(client);
                    client.set_pid_and_secret_key(pid, key.clone());
                    let (handle, guard) = self.connections.register(pid, key);
                    client.session_extensions().insert(handle);
                    client.session_extensions().insert(guard);
                    finish_authentication(client, &self.parameters).await?;
                }
                Ok(())
            }
        }
    }
}

/// The users file: `user:password` per line, or `user:password:read-only` for a user who may
/// only read (`SELECT`, `SUBSCRIBE`, `FETCH`, `SHOW` …); `#` starts a comment.
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// Password by user name.
    passwords: HashMap<String, String>,
    /// Users who may only read.
    read_only: std::collections::HashSet<String>,
}

/// What a line of the users file ends with to make its user read-only.
const READ_ONLY_SUFFIX: &str = ":read-only";

impl Users {
    /// Reads a users file.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let mut passwords = HashMap::new();
        let mut read_only = std::collections::HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, password) = line.split_once(':').ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: expected user:password", path.display(), n + 1),
                )
            })?;
            let user = user.trim().to_string();
            let password = match password.strip_suffix(READ_ONLY_SUFFIX) {
                Some(password) => {
                    read_only.insert(user.clone());
                    password
                }
                None => password,
            };
            passwords.insert(user, password.to_string());
        }
        Ok(Self {
            passwords,
            read_only,
        })
    }

    /// The users who may only read.
    pub fn read_only(&self) -> std::collections::HashSet<String> {
        self.read_only.clone()
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let salt: [u8; 16] = rand_salt();
        // An unknown user gets a random password, so that the exchange fails the same way as
        // for a wrong password and does not reveal which users exist.
        let password = login
            .user()
            .and_then(|u| self.passwords.get(u).cloned())
            .unwrap_or_else(|| format!("{:x?}", rand_salt()));
        let hashed = gen_salted_password(&password, &salt, SCRAM_ITERATIONS);
        Ok(Password::new(Some(salt.to_vec()), hashed))
    }
}

fn rand_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    // Salts need to be unique, not secret: the clock and a counter are enough.
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    salt[..8].copy_from_slice(&nanos.to_le_bytes());
    salt[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    salt
}
