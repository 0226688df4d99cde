//! The engine's error type. Each variant says whose fault it is: [`Error::User`] carries the
//! SQLSTATE of a user's mistake; the others are faults of the engine or of its environment and
//! are mapped to SQLSTATE codes in one place, [`Error::sqlstate`].

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

use crate::storage::StorageError;

/// SQLSTATE codes the engine answers with, named as in PostgreSQL's errcodes.txt.
pub mod sqlstate {
    pub const SYNTAX_ERROR: &str = "42601";
    pub const SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION: &str = "42000";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const DUPLICATE_FUNCTION: &str = "42723";
    pub const DUPLICATE_TABLE: &str = "42P07";
    pub const DUPLICATE_OBJECT: &str = "42710";
    pub const DUPLICATE_COLUMN: &str = "42701";
    pub const AMBIGUOUS_COLUMN: &str = "42702";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const CANNOT_COERCE: &str = "42846";
    pub const INVALID_NAME: &str = "42602";
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const NULL_VALUE_NOT_ALLOWED: &str = "22004";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const BAD_COPY_FORMAT: &str = "22P04";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const DEPENDENT_OBJECTS_STILL_EXIST: &str = "2BP01";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const IO_ERROR: &str = "58030";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const WRONG_OBJECT_TYPE: &str = "42809";
    pub const QUERY_CANCELED: &str = "57014";
    pub const INVALID_CURSOR_NAME: &str = "34000";
    pub const UNDEFINED_PARAMETER: &str = "42P02";
    pub const DUPLICATE_CURSOR: &str = "42P03";
    pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
    pub const INVALID_SAVEPOINT_SPECIFICATION: &str = "3B001";
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    pub const STATEMENT_TOO_COMPLEX: &str = "54001";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const OUT_OF_MEMORY: &str = "53200";
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while running a statement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's mistake, with the SQLSTATE it answers with.
    #[error("{message}")]
    User {
        /// SQLSTATE code, one of [`sqlstate`].
        code: &'static str,
        /// What went wrong, naming the object.
        message: String,
    },
    /// The SQL text does not parse.
    #[error("syntax error: {0}")]
    Parse(#[from] ParserError),
    /// The SQL text does not even split into tokens (an unterminated string, say).
    #[error("syntax error: {0}")]
    Tokenize(#[from] datafusion::sql::sqlparser::tokenizer::TokenizerError),
    /// Planning or running a query failed.
    #[error("{}", describe_datafusion(.0))]
    DataFusion(#[from] DataFusionError),
    /// An Arrow kernel failed (casts of user data, mostly).
    #[error("{0}")]
    Arrow(#[from] ArrowError),
    /// An operator of a view failed on its input.
    #[error("{0}")]
    Operator(#[from] crate::operator::OperatorError),
    /// The table log could not be read or written.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The catalog file could not be read or written.
    #[error("catalog {path}: {source}")]
    CatalogIo {
        /// The catalog file.
        path: String,
        /// The underlying failure.
        source: std::io::Error,
    },
}

impl Error {
    /// A user error with a SQLSTATE.
    pub fn user(code: &'static str, message: impl Into<String>) -> Self {
        Self::User {
            code,
            message: message.into(),
        }
    }

    /// `0A000`: something PostgreSQL has that we do not (yet).
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::user(sqlstate::FEATURE_NOT_SUPPORTED, message)
    }

    /// `XX000`: our own fault (a broken invariant, a thread that would not start), never the
    /// user's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::user(sqlstate::INTERNAL_ERROR, message)
    }

    /// `08006`: an external system (a Kafka broker) failed or could not be reached.
    pub fn connector(message: impl Into<String>) -> Self {
        Self::user(sqlstate::CONNECTION_FAILURE, message)
    }

    /// `58030`: reading or writing a file failed.
    pub fn io(message: impl Into<String>) -> Self {
        Self::user(sqlstate::IO_ERROR, message)
    }

    /// The SQLSTATE the client receives for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::User { code, .. } => code,
            Error::Parse(_) | Error::Tokenize(_) => sqlstate::SYNTAX_ERROR,
            Error::DataFusion(e) => datafusion_sqlstate(e),
            Error::Arrow(e) => arrow_sqlstate(e),
            Error::Operator(crate::operator::OperatorError::Arrow { source, .. }) => {
                arrow_sqlstate(source)
            }
            Error::Operator(crate::operator::OperatorError::DataFusion { source, .. }) => {
                datafusion_sqlstate(source)
            }
            Error::Storage(_) | Error::CatalogIo { .. } => sqlstate::IO_ERROR,
        }
    }
}

fn arrow_sqlstate(e: &ArrowError) -> &'static str {
    match e {
        ArrowError::CastError(_) | ArrowError::ParseError(_) => {
            sqlstate::INVALID_TEXT_REPRESENTATION
        }
        ArrowError::DivideByZero => sqlstate::DIVISION_BY_ZERO,
        ArrowError::ArithmeticOverflow(_) => sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        ArrowError::CsvError(_) => sqlstate::BAD_COPY_FORMAT,
        // DataFusion checks NOT NULL itself while planning an INSERT … VALUES.
        ArrowError::InvalidArgumentError(m) if m.contains("non-nullable") => {
            sqlstate::NOT_NULL_VIOLATION
        }
        ArrowError::InvalidArgumentError(_) => sqlstate::INVALID_PARAMETER_VALUE,
        _ => sqlstate::INTERNAL_ERROR,
    }
}

/// The SQLSTATE of a DataFusion error, by its type wherever it has one: schema errors, Arrow
/// errors, SQL parser errors, resources, our own errors carried through. Unknown relations never
/// reach DataFusion (`sql::plan_statement` answers 42P01 first). DataFusion 55 gives the rest
/// of its planning errors (an unknown function, a type it cannot coerce) no type of their own,
/// only a message, so those are told apart by it ([`message_sqlstate`]); a planning error
/// nothing matches is `42000` (a semantic error in the statement), an execution error `XX000`.
fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    use datafusion::common::SchemaError;
    match e {
        DataFusionError::SQL(_, _) => sqlstate::SYNTAX_ERROR,
        DataFusionError::NotImplemented(_) => sqlstate::FEATURE_NOT_SUPPORTED,
        DataFusionError::ResourcesExhausted(_) => sqlstate::OUT_OF_MEMORY,
        DataFusionError::ArrowError(a, _) => arrow_sqlstate(a),
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { .. } => sqlstate::UNDEFINED_COLUMN,
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. } => sqlstate::DUPLICATE_COLUMN,
            SchemaError::AmbiguousReference { .. } => sqlstate::AMBIGUOUS_COLUMN,
        },
        DataFusionError::Context(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::Shared(inner) => datafusion_sqlstate(inner),
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(e) => e.sqlstate(),
            None => match inner.downcast_ref::<ArrowError>() {
                Some(a) => arrow_sqlstate(a),
                None => sqlstate::INTERNAL_ERROR,
            },
        },
        DataFusionError::Plan(m) => {
            message_sqlstate(m).unwrap_or(sqlstate::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION)
        }
        DataFusionError::Execution(m) => message_sqlstate(m).unwrap_or(sqlstate::INTERNAL_ERROR),
        _ => sqlstate::INTERNAL_ERROR,
    }
}

/// The SQLSTATE a DataFusion message names, if it names one.
fn message_sqlstate(m: &str) -> Option<&'static str> {
    let m = m.to_ascii_lowercase();
    Some(
        if m.contains("table") && (m.contains("not found") || m.contains("doesn't exist")) {
            sqlstate::UNDEFINED_TABLE
        } else if m.contains("no field named") || m.contains("column") && m.contains("not found") {
            sqlstate::UNDEFINED_COLUMN
        } else if m.contains("invalid function")
            || m.contains("function") && m.contains("not found")
        {
            sqlstate::UNDEFINED_FUNCTION
        } else if m.contains("non-nullable") {
            sqlstate::NOT_NULL_VIOLATION
        } else if m.contains("divide by zero") || m.contains("division by zero") {
            sqlstate::DIVISION_BY_ZERO
        } else if m.contains("cannot be cast")
            || m.contains("cannot infer common")
            || m.contains("type coercion")
            || m.contains("does not support")
            || m.contains("mismatch")
            || m.contains("expected")
        {
            sqlstate::DATATYPE_MISMATCH
        } else if m.contains("cast") || m.contains("parse") {
            sqlstate::INVALID_TEXT_REPRESENTATION
        } else if m.contains("not supported") || m.contains("unsupported") {
            sqlstate::FEATURE_NOT_SUPPORTED
        } else {
            return None;
        },
    )
}

/// DataFusion's messages carry prefixes ("Error during planning: ") and backtraces that mean
/// nothing to a SQL user; keep the sentence that names the problem.
fn describe_datafusion(e: &DataFusionError) -> String {
    match e {
        DataFusionError::External(inner) => inner.to_string(),
        DataFusionError::Context(_, inner) => describe_datafusion(inner),
        DataFusionError::Diagnostic(_, inner) => describe_datafusion(inner),
        DataFusionError::Shared(inner) => describe_datafusion(inner),
        DataFusionError::ArrowError(a, _) => a.to_string(),
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::SQL(_, Some(m)) => m.clone(),
        DataFusionError::NotImplemented(m) => format!("not supported: {m}"),
        DataFusionError::ResourcesExhausted(m) => format!(
            "out of query memory (--query-memory): {}",
            m.lines().next().unwrap_or_default()
        ),
        other => other.strip_backtrace(),
    }
}

/// Lets a DataFusion callback (a table sink, a UDF) return the engine's error and keep its
/// SQLSTATE on the way back out.
impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(d) => d,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datafusion_errors_map_to_postgres_codes() {
        let e = Error::from(DataFusionError::Plan(
            "table 'sluice.public.nope' not found".into(),
        ));
        assert_eq!(e.sqlstate(), sqlstate::UNDEFINED_TABLE);
        let e = Error::from(DataFusionError::NotImplemented("x".into()));
        assert_eq!(e.sqlstate(), sqlstate::FEATURE_NOT_SUPPORTED);
        let inner = Error::user(sqlstate::UNIQUE_VIOLATION, "duplicate key");
        let e = Error::from(DataFusionError::from(inner));
        assert_eq!(e.sqlstate(), sqlstate::UNIQUE_VIOLATION);
        assert_eq!(e.to_string(), "duplicate key");
    }
}
