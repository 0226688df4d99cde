//! A golden test against PostgreSQL itself: every expression of
//! `tests/pg_expressions/expressions.sql` is run as `SELECT <expression>` in Sluice and in the
//! machine's PostgreSQL 15, and the two must agree on the text of the value (as the simple
//! query protocol sends it), on its type, or on the SQLSTATE of the error.
//!
//! Where Sluice differs on purpose or has not caught up yet, the expression is listed in
//! `tests/pg_expressions/known_differences.txt` with the reason. The test fails on a difference
//! not listed there, and on a listed one that no longer differs (so the list stays true).

mod common;

use std::collections::BTreeMap;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// What one `SELECT <expression>` gave: the value's text (`NULL`) and type, or the error.
#[derive(Debug, PartialEq)]
enum Outcome {
    Value { text: String, type_name: String },
    Error { code: String, message: String },
}

impl Outcome {
    fn show(&self) -> String {
        match self {
            Outcome::Value { text, type_name } => format!("{text} :: {type_name}"),
            Outcome::Error { code, message } => format!("ERROR {code}: {message}"),
        }
    }

    /// Equal where it matters: errors by SQLSTATE only (messages are worded differently).
    fn agrees(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Error { code: a, .. }, Outcome::Error { code: b, .. }) => a == b,
            _ => self == other,
        }
    }
}

async fn outcome(client: &Client, expression: &str) -> Outcome {
    let sql = format!("SELECT {expression}");
    let error = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => Outcome::Error {
            code: db.code().code().to_string(),
            message: db.message().to_string(),
        },
        None => Outcome::Error {
            code: "connection".to_string(),
            message: e.to_string(),
        },
    };
    let messages = match client.simple_query(&sql).await {
        Ok(messages) => messages,
        Err(e) => return error(e),
    };
    let text = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "no row".to_string());
    let type_name = match client.prepare(&sql).await {
        Ok(statement) => statement
            .columns()
            .first()
            .map_or("none".to_string(), |c| c.type_().name().to_string()),
        Err(e) => return error(e),
    };
    Outcome::Value { text, type_name }
}

fn read(file: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/pg_expressions/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Lines that are neither blank nor `--` comments.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_print_as_postgresql_prints_them() {
    let (postgres, connection) = match tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        NoTls,
    )
    .await
    {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!(
                "SKIPPED expressions_print_as_postgresql_prints_them: no PostgreSQL at 127.0.0.1:5432 ({e})"
            );
            return;
        }
    };
    tokio::spawn(connection);
    // Sluice's session defaults, spelled out for PostgreSQL.
    postgres
        .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1")
        .await
        .unwrap();
    let server = common::TestServer::start().await;
    let sluice = server.connect().await;

    let expressions = read("expressions.sql");
    let known_text = read("known_differences.txt");
    let known: BTreeMap<&str, &str> = lines(&known_text)
        .map(|l| {
            let (expression, reason) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("known_differences.txt: no tab in {l:?}"));
            (expression, reason)
        })
        .collect();
    let mut checked = 0;
    let mut new_differences = Vec::new();
    let mut now_agreeing = Vec::new();
    let mut seen_known = 0;
    for expression in lines(&expressions) {
        checked += 1;
        let ours = outcome(&sluice, expression).await;
        let theirs = outcome(&postgres, expression).await;
        let agrees = ours.agrees(&theirs);
        match (agrees, known.get(expression)) {
            (true, None) => {}
            (true, Some(_)) => now_agreeing.push(expression.to_string()),
            (false, Some(_)) => seen_known += 1,
            (false, None) => new_differences.push(format!(
                "{expression}\n    sluice:     {}\n    postgresql: {}",
                ours.show(),
                theirs.show()
            )),
        }
    }
    eprintln!(
        "{checked} expressions: {} agree, {seen_known} known differences",
        checked - seen_known - new_differences.len()
    );
    let listed_but_absent: Vec<&str> = known
        .keys()
        .filter(|k| !lines(&expressions).any(|e| e == **k))
        .copied()
        .collect();
    assert!(
        new_differences.is_empty() && now_agreeing.is_empty() && listed_but_absent.is_empty(),
        "differences from PostgreSQL not in known_differences.txt:\n{}\n\n\
         listed in known_differences.txt but now agreeing (remove them): {now_agreeing:#?}\n\
         listed but not in expressions.sql: {listed_but_absent:#?}",
        new_differences.join("\n")
    );
    assert!(checked >= 300, "only {checked} expressions");
}
