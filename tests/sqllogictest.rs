//! Runs every `sql-tests/**/*.slt` file against an in-process server over a real socket, with
//! tokio-postgres as the client. Each file gets a fresh server and data directory.

mod common;

use std::time::Duration;

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::{Client, SimpleQueryMessage};

/// A tokio-postgres connection as sqllogictest's database.
struct Postgres {
    client: Client,
}

/// A failed statement: the server's message and SQLSTATE.
#[derive(Debug)]
struct PgError {
    message: String,
    sqlstate: Option<String>,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => Self {
                message: db.message().to_string(),
                sqlstate: Some(db.code().code().to_string()),
            },
            None => Self {
                message: e.to_string(),
                sqlstate: None,
            },
        }
    }
}

#[async_trait]
impl AsyncDB for Postgres {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let messages = self.client.simple_query(sql).await?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut affected = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(desc) => columns = Some(desc.len()),
                SimpleQueryMessage::Row(row) => {
                    columns = Some(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        match columns {
            Some(n) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(affected)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "sluice"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &Self::Error) -> Option<String> {
        err.sqlstate.clone()
    }
}

fn slt_files() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql-tests");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("sql-tests is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "slt") {
                files.push(path);
            }
        }
    }
    files.sort();
    // `SLUICE_SLT=topn,over` runs only the files whose path holds one of those words.
    if let Ok(only) = std::env::var("SLUICE_SLT") {
        let words: Vec<&str> = only.split(',').filter(|w| !w.is_empty()).collect();
        files.retain(|f| words.iter().any(|w| f.to_string_lossy().contains(w)));
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_tests() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files found");
    let mut failures = Vec::new();
    for file in &files {
        // File sources read the repository's sql-tests/data (paths relative to the root).
        let server = common::TestServer::start_with(|c| {
            c.file_source_root = Some(env!("CARGO_MANIFEST_DIR").into())
        })
        .await;
        let port = server.port();
        let mut runner = sqllogictest::Runner::new(move || async move {
            Ok(Postgres {
                client: common::connect(port).await,
            })
        });
        runner.with_column_validator(sqllogictest::default_column_validator);
        match runner.run_file_async(file).await {
            Ok(()) => eprintln!("ok   {}", file.display()),
            Err(e) => {
                eprintln!("FAIL {}\n{e}", file.display());
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "failed .slt files: {failures:?}");
}
