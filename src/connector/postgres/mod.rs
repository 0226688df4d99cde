//! PostgreSQL, through `tokio-postgres` and `pgwire-replication`: a sink writing a view's
//! changes into a table, and a CDC source mirroring a table (snapshot, then its logical
//! replication stream, `pgoutput` decoded in `pgoutput.rs`).

pub mod cdc;
pub mod pgoutput;
pub mod sink;

/// Connects with `config`; the connection's task ends quietly with the client.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
) -> std::result::Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// PostgreSQL's message and SQLSTATE, or the client's error.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(
        || e.to_string(),
        |d| format!("{} ({})", d.message(), d.code().code()),
    )
}

/// Whether an error is worth retrying on a new connection: the connection's (no SQLSTATE,
/// or class 08), resources (53), the server shutting down or starting (57P), or a
/// serialization failure or deadlock.
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.is_closed()
        || match e.code() {
            None => true,
            Some(code) => {
                *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
                    || ["08", "53", "57P"]
                        .iter()
                        .any(|class| code.code().starts_with(class))
            }
        }
}
