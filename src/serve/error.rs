//! Engine errors as PostgreSQL ErrorResponses: the one place SQLSTATE codes reach the wire.

use pgwire::error::{ErrorInfo, PgWireError};

use crate::error::Error;

/// The ErrorResponse fields of an engine error.
pub fn error_info(e: &Error) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_string(), e.sqlstate().to_string(), e.to_string())
}

/// An engine error as pgwire's error.
pub fn pg_error(e: Error) -> PgWireError {
    tracing::debug!(code = e.sqlstate(), error = %e, "statement failed");
    PgWireError::UserError(Box::new(error_info(&e)))
}
