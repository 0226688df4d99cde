//! Parsing: sqlparser's PostgreSQL dialect, plus the clauses of our own that PostgreSQL has not,
//! as RisingWave spells them: `APPEND ONLY` after `CREATE TABLE (…)`, `WATERMARK FOR ts AS …`
//! among its columns, `EMIT ON WINDOW CLOSE` after a view's query, and `FLUSH`. Our clauses are
//! cut out at the token level and recorded beside the statement, so that everything else stays
//! sqlparser's AST. Connector clauses follow RisingWave: `CREATE SOURCE`, `CREATE TABLE … WITH
//! (connector = …)`, `INCLUDE key AS k`, `FORMAT … ENCODE … (…)` and `CREATE SINK … FROM v`.

use std::collections::BTreeMap;

use crate::sql::dialect::SluiceDialect;
use datafusion::sql::sqlparser::ast::{FlushType, Statement};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::Result;

/// One statement as the engine sees it.
#[derive(Debug, Clone)]
pub struct SluiceStatement {
    /// The statement, as sqlparser parsed it once our clauses were cut out.
    pub statement: Statement,
    /// `CREATE TABLE … APPEND ONLY`.
    pub append_only: bool,
    /// `CREATE TABLE t (…, WATERMARK FOR ts AS <expr>)`.
    pub watermark: Option<WatermarkClause>,
    /// `CREATE MATERIALIZED VIEW … EMIT ON WINDOW CLOSE`.
    pub emit_on_window_close: bool,
    /// The statement's text as the user wrote it (with our clauses), for the catalog.
    pub text: String,
    /// `CREATE SOURCE` (the statement is then the `CREATE TABLE` it would be).
    pub source: bool,
    /// `WITH (connector = …) FORMAT … ENCODE … INCLUDE …` of a source, table or sink.
    pub connector: Option<ConnectorClause>,
    /// `CREATE SINK name FROM relation`: the statement is then `SELECT * FROM relation`.
    pub sink: Option<SinkClause>,
    /// `DROP SINK [IF EXISTS] name`: the name and `IF EXISTS` (the statement is `SELECT 1`).
    pub drop_sink: Option<(String, bool)>,
    /// `SUBSCRIBE`, `COPY (SUBSCRIBE …) TO STDOUT`, `DECLARE`, `FETCH`, `CLOSE` (the statement
    /// is `SELECT 1`).
    pub live: Option<super::live::LiveStatement>,
}

/// A connector's clauses as written; `connector::spec` checks what they mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectorClause {
    /// `WITH (key = value, …)`, keys lowercased (`properties.bootstrap.server`).
    pub options: BTreeMap<String, String>,
    /// `FORMAT PLAIN | UPSERT | DEBEZIUM`, uppercased.
    pub format: Option<String>,
    /// `ENCODE JSON | CSV | AVRO`, uppercased.
    pub encode: Option<String>,
    /// `ENCODE CSV (delimiter = ',', …)`.
    pub encode_options: BTreeMap<String, String>,
    /// `INCLUDE partition AS p`: the metadata kind and the column name (`_rw_kafka_partition`
    /// style defaults when `AS` is left out).
    pub includes: Vec<(String, String)>,
}

/// The option `FROM source TABLE 'x'` becomes: the shared source's name.
pub const CDC_SOURCE_OPTION: &str = "cdc.source";
/// The option `FROM source TABLE 'x'` becomes: the upstream table.
pub const CDC_TABLE_OPTION: &str = "cdc.table";

/// `CREATE SINK [IF NOT EXISTS] name FROM relation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkClause {
    /// The sink's name.
    pub name: String,
    /// `IF NOT EXISTS`.
    pub if_not_exists: bool,
    /// The view (or table) whose changes it writes.
    pub from: String,
}

/// Parses a string of one or more `;`-separated statements.
pub fn parse_sql(sql: &str) -> Result<Vec<SluiceStatement>> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(crate::error::Error::user(
            crate::error::sqlstate::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "statement text of {} bytes is over the limit of {MAX_STATEMENT_BYTES} bytes (use COPY for bulk data)",
                sql.len()
            ),
        ));
    }
    let dialect = SluiceDialect;
    let tokens = Tokenizer::new(&dialect, sql).tokenize()?;
    check_operator_chains(&tokens)?;
    check_brackets(&tokens)?;
    let mut out = Vec::new();
    for chunk in tokens.split(|t| *t == Token::SemiColon) {
        if chunk.iter().all(is_blank) {
            continue;
        }
        let text = render(chunk).trim().to_string();
        if is_flush(chunk) {
            out.push(SluiceStatement {
                statement: Statement::Flush {
                    object_type: FlushType::Tables,
                    location: None,
                    channel: None,
                    read_lock: false,
                    export: false,
                    tables: Vec::new(),
                },
                ..ours_alone(text)?
            });
            continue;
        }
        if let Some(view) = explain_analyze_view(chunk) {
            // `EXPLAIN ANALYZE MATERIALIZED VIEW v` (RisingWave's form): the running view's
            // graph with each node's rows in and out and state, from `sluice_operators`.
            // The view read (and nothing of it kept) so that a name that is not a relation
            // fails as a query of it would (42P01).
            let literal = view.replace('\'', "''");
            let identifier = view.replace('"', "\"\"");
            let query = format!(
                "SELECT repeat('  ', depth) || operator AS \"QUERY PLAN\", rows_in, rows_out, \
                 state_rows, state_bytes FROM sluice_operators WHERE view_name = '{literal}' \
                 AND NOT EXISTS (SELECT 1 FROM \"{identifier}\" WHERE false) ORDER BY operator_id"
            );
            out.push(SluiceStatement {
                statement: Parser::new(&dialect)
                    .try_with_sql(&query)?
                    .parse_statement()?,
                ..ours_alone(text)?
            });
            continue;
        }
        if let Some(query) = show_relation(chunk) {
            // `SHOW SOURCES` and the like: the query on the system relation that holds them.
            out.push(SluiceStatement {
                statement: Parser::new(&dialect)
                    .try_with_sql(query)?
                    .parse_statement()?,
                ..ours_alone(text)?
            });
            continue;
        }
        if let Some(live) = super::live::parse_live(chunk)? {
            out.push(SluiceStatement {
                live: Some(live),
                ..ours_alone(text)?
            });
            continue;
        }
        if let Some(drop_sink) = drop_sink(chunk) {
            out.push(SluiceStatement {
                drop_sink: Some(drop_sink),
                ..ours_alone(text)?
            });
            continue;
        }
        let (chunk, source, connector, sink) = cut_connector(chunk)?;
        let chunk = chunk.as_slice();
        let (tokens, append_only) = cut_append_only(chunk);
        let (tokens, watermark) = cut_watermark(&tokens)?;
        let (tokens, emit_on_window_close) = cut_emit_on_window_close(&tokens);
        let tokens = rewrite_system_time(tokens)?;
        // parse_statements, not parse_statement: it refuses tokens left after the statement.
        let statements = Parser::new(&dialect)
            .with_tokens(tokens)
            .parse_statements()?;
        for mut statement in statements {
            super::pg_compat::float_types(&mut statement)?;
            out.push(SluiceStatement {
                statement,
                append_only,
                watermark: watermark.clone(),
                emit_on_window_close,
                text: text.clone(),
                source,
                connector: connector.clone(),
                sink: sink.clone(),
                drop_sink: None,
                live: None,
            });
        }
    }
    Ok(out)
}

/// A statement sqlparser does not take part in (`DROP SINK`, `SUBSCRIBE` …): `SELECT 1`
/// stands in for it, and the field the caller sets says what it is.
fn ours_alone(text: String) -> Result<SluiceStatement> {
    Ok(SluiceStatement {
        statement: Parser::new(&SluiceDialect)
            .try_with_sql("SELECT 1")?
            .parse_statement()?,
        append_only: false,
        watermark: None,
        emit_on_window_close: false,
        text,
        source: false,
        connector: None,
        sink: None,
        drop_sink: None,
        live: None,
    })
}

type ConnectorCut = (
    Vec<Token>,
    bool,
    Option<ConnectorClause>,
    Option<SinkClause>,
);

/// Cuts the connector clauses out of `CREATE SOURCE | TABLE | SINK`, leaving a statement
/// sqlparser knows: `CREATE SOURCE` becomes `CREATE TABLE`, `CREATE SINK s FROM v` becomes
/// `SELECT * FROM v`.
fn cut_connector(chunk: &[Token]) -> Result<ConnectorCut> {
    let syntax = |msg: String| crate::error::Error::user(crate::error::sqlstate::SYNTAX_ERROR, msg);
    let meaningful: Vec<usize> = (0..chunk.len())
        .filter(|&i| is_meaningful(&chunk[i]))
        .collect();
    let word_at = |k: usize| match meaningful.get(k).map(|&i| &chunk[i]) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_lowercase()),
        _ => None,
    };
    if word_at(0).as_deref() == Some("drop") && word_at(1).as_deref() == Some("source") {
        // DROP SOURCE is DROP TABLE of the source's table.
        let mut tokens = chunk.to_vec();
        tokens[meaningful[1]] = Token::make_keyword("TABLE");
        return Ok((tokens, true, None, None));
    }
    if word_at(0).as_deref() != Some("create") {
        return Ok((chunk.to_vec(), false, None, None));
    }
    let object = word_at(1).unwrap_or_default();
    if !matches!(object.as_str(), "source" | "table" | "sink") {
        return Ok((chunk.to_vec(), false, None, None));
    }
    let mut clause = ConnectorClause::default();
    let mut keep = vec![true; chunk.len()];
    let mut depth = 0i32;
    let mut k = 0;
    let mut found = false;
    while k < meaningful.len() {
        let i = meaningful[k];
        match &chunk[i] {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if depth != 0 || k < 2 {
            k += 1;
            continue;
        }
        let word = word_at(k);
        let next_is_paren = matches!(
            meaningful.get(k + 1).map(|&j| &chunk[j]),
            Some(Token::LParen)
        );
        match word.as_deref() {
            Some("with") if next_is_paren => {
                let (options, end) = parse_options(chunk, &meaningful, k + 1)?;
                if object == "table" && !options.contains_key("connector") {
                    // PostgreSQL storage parameters: not ours.
                    k = end;
                    continue;
                }
                clause.options = options;
                found = true;
                cut(&mut keep, &meaningful, k, end);
                k = end;
            }
            Some("format") => {
                let format = word_at(k + 1).ok_or_else(|| syntax("FORMAT needs a name".into()))?;
                if word_at(k + 2).as_deref() != Some("encode") {
                    return Err(syntax("expected ENCODE after FORMAT …".into()));
                }
                let encode = word_at(k + 3).ok_or_else(|| syntax("ENCODE needs a name".into()))?;
                let mut end = k + 4;
                if matches!(meaningful.get(end).map(|&j| &chunk[j]), Some(Token::LParen)) {
                    let (options, after) = parse_options(chunk, &meaningful, end)?;
                    clause.encode_options = options;
                    end = after;
                }
                clause.format = Some(format.to_ascii_uppercase());
                clause.encode = Some(encode.to_ascii_uppercase());
                found = true;
                cut(&mut keep, &meaningful, k, end);
                k = end;
            }
            // `CREATE TABLE t (…) FROM source TABLE 'schema.table'`: a table of a shared
            // CDC source (RisingWave's syntax); the engine fills in the source's options.
            Some("from")
                if object == "table"
                    && word_at(k + 2).as_deref() == Some("table")
                    && matches!(
                        meaningful.get(k + 3).map(|&j| &chunk[j]),
                        Some(Token::SingleQuotedString(_))
                    ) =>
            {
                let source = match meaningful.get(k + 1).map(|&j| &chunk[j]) {
                    Some(Token::Word(w)) if w.quote_style.is_some() => w.value.clone(),
                    Some(Token::Word(w)) => w.value.to_lowercase(),
                    _ => return Err(syntax("FROM … TABLE needs a source name".into())),
                };
                let Some(Token::SingleQuotedString(upstream)) =
                    meaningful.get(k + 3).map(|&j| &chunk[j])
                else {
                    return Err(syntax("FROM source TABLE needs 'schema.table'".into()));
                };
                clause.options.insert(CDC_SOURCE_OPTION.into(), source);
                clause
                    .options
                    .insert(CDC_TABLE_OPTION.into(), upstream.clone());
                found = true;
                cut(&mut keep, &meaningful, k, k + 4);
                k += 4;
            }
            Some("include") => {
                let kind = word_at(k + 1).ok_or_else(|| syntax("INCLUDE needs a kind".into()))?;
                let mut end = k + 2;
                let alias = if word_at(end).as_deref() == Some("as") {
                    let name = match meaningful.get(end + 1).map(|&j| &chunk[j]) {
                        Some(Token::Word(w)) if w.quote_style.is_some() => w.value.clone(),
                        Some(Token::Word(w)) => w.value.to_lowercase(),
                        _ => return Err(syntax("INCLUDE … AS needs a column name".into())),
                    };
                    end += 2;
                    name
                } else {
                    format!("_rw_kafka_{kind}")
                };
                clause.includes.push((kind, alias));
                found = true;
                cut(&mut keep, &meaningful, k, end);
                k = end;
            }
            _ => k += 1,
        }
    }
    let mut tokens: Vec<Token> = chunk
        .iter()
        .zip(&keep)
        .filter(|(_, keep)| **keep)
        .map(|(t, _)| t.clone())
        .collect();
    match object.as_str() {
        "source" => {
            let at = meaningful[1];
            tokens[at] = Token::make_keyword("TABLE");
            Ok((tokens, true, Some(clause), None))
        }
        "table" => Ok((tokens, false, found.then_some(clause), None)),
        _ => {
            // CREATE SINK [IF NOT EXISTS] name FROM relation
            let rest: Vec<&Token> = tokens.iter().filter(|t| is_meaningful(t)).collect();
            let words: Vec<Option<String>> = rest
                .iter()
                .map(|t| match t {
                    Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_lowercase()),
                    Token::Word(w) => Some(w.value.clone()),
                    _ => None,
                })
                .collect();
            let (if_not_exists, at) = match (words.get(2), words.get(3), words.get(4)) {
                (Some(Some(a)), Some(Some(b)), Some(Some(c)))
                    if a == "if" && b == "not" && c == "exists" =>
                {
                    (true, 5)
                }
                _ => (false, 2),
            };
            let (Some(Some(name)), Some(Some(from_kw)), Some(Some(from)), None) = (
                words.get(at),
                words.get(at + 1),
                words.get(at + 2),
                rest.get(at + 3),
            ) else {
                return Err(syntax(
                    "expected CREATE SINK name FROM relation WITH (…) [FORMAT … ENCODE …]".into(),
                ));
            };
            if from_kw != "from" {
                return Err(crate::error::Error::unsupported(
                    "CREATE SINK … AS SELECT: create a materialized view and sink FROM it",
                ));
            }
            let select =
                Tokenizer::new(&SluiceDialect, &format!("SELECT * FROM \"{from}\"")).tokenize()?;
            let sink = SinkClause {
                name: name.clone(),
                if_not_exists,
                from: from.clone(),
            };
            Ok((select, false, Some(clause), Some(sink)))
        }
    }
}

/// `DROP SINK [IF EXISTS] name`.
fn drop_sink(chunk: &[Token]) -> Option<(String, bool)> {
    let words: Vec<String> = chunk
        .iter()
        .filter(|t| is_meaningful(t))
        .map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_lowercase(),
            Token::Word(w) => w.value.clone(),
            other => other.to_string(),
        })
        .collect();
    match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["drop", "sink", "if", "exists", name] => Some((name.to_string(), true)),
        ["drop", "sink", name] => Some((name.to_string(), false)),
        _ => None,
    }
}

/// Marks meaningful tokens `from..to` (and the blanks between them) as cut.
fn cut(keep: &mut [bool], meaningful: &[usize], from: usize, to: usize) {
    let start = meaningful[from];
    let end = meaningful.get(to).copied().unwrap_or(keep.len());
    for k in keep.iter_mut().take(end).skip(start) {
        *k = false;
    }
}

/// Parses `( key = value, … )` starting at the meaningful token `open` (the `(`); returns the
/// options and the index of the first meaningful token after the `)`.
fn parse_options(
    chunk: &[Token],
    meaningful: &[usize],
    open: usize,
) -> Result<(BTreeMap<String, String>, usize)> {
    let syntax = |msg: String| crate::error::Error::user(crate::error::sqlstate::SYNTAX_ERROR, msg);
    let mut options = BTreeMap::new();
    let mut k = open + 1;
    loop {
        let token = |k: usize| meaningful.get(k).map(|&i| &chunk[i]);
        if matches!(token(k), Some(Token::RParen)) {
            return Ok((options, k + 1));
        }
        let mut key = String::new();
        loop {
            match token(k) {
                Some(Token::Word(w)) => key.push_str(&w.value.to_ascii_lowercase()),
                Some(Token::Period) => key.push('.'),
                Some(Token::Number(n, _)) => key.push_str(n),
                Some(Token::Eq) => break,
                other => {
                    return Err(syntax(format!(
                        "expected key = value in WITH (…), found {}",
                        other
                            .map(|t| t.to_string())
                            .unwrap_or_else(|| "the end".into())
                    )));
                }
            }
            k += 1;
        }
        k += 1;
        let value = match token(k) {
            Some(Token::SingleQuotedString(v)) => v.clone(),
            Some(Token::Number(n, _)) => n.clone(),
            Some(Token::Word(w)) => w.value.clone(),
            _ => return Err(syntax(format!("option \"{key}\" needs a value"))),
        };
        k += 1;
        options.insert(key, value);
        match token(k) {
            Some(Token::Comma) => k += 1,
            Some(Token::RParen) => return Ok((options, k + 1)),
            _ => return Err(syntax("expected , or ) in WITH (…)".into())),
        }
    }
}

/// `WATERMARK FOR column AS expression` in a column list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkClause {
    /// The event-time column.
    pub column: String,
    /// The watermark expression over the row, as SQL text (`ts - INTERVAL '5' SECOND`).
    pub expression: String,
}

fn is_flush(chunk: &[Token]) -> bool {
    let meaningful: Vec<&Token> = chunk.iter().filter(|t| is_meaningful(t)).collect();
    matches!(meaningful.as_slice(), [Token::Word(w)] if w.value.eq_ignore_ascii_case("flush"))
}

/// The view of `EXPLAIN ANALYZE MATERIALIZED VIEW name` (its name as the catalog keeps it).
fn explain_analyze_view(chunk: &[Token]) -> Option<String> {
    let meaningful: Vec<&Token> = chunk.iter().filter(|t| is_meaningful(t)).collect();
    let [
        Token::Word(explain),
        Token::Word(analyze),
        Token::Word(materialized),
        Token::Word(view),
        Token::Word(name),
    ] = meaningful.as_slice()
    else {
        return None;
    };
    let keyword = |w: &datafusion::sql::sqlparser::tokenizer::Word, k: &str| {
        w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k)
    };
    if !(keyword(explain, "explain")
        && keyword(analyze, "analyze")
        && keyword(materialized, "materialized")
        && keyword(view, "view"))
    {
        return None;
    }
    Some(match name.quote_style {
        Some(_) => name.value.clone(),
        None => name.value.to_lowercase(),
    })
}

/// `SHOW SOURCES`, `SHOW SINKS` and `SHOW JOBS` (RisingWave's words; a job is a view reading a
/// backlog): the query on the `sluice_*` relation that shows them.
fn show_relation(chunk: &[Token]) -> Option<&'static str> {
    let meaningful: Vec<&Token> = chunk.iter().filter(|t| is_meaningful(t)).collect();
    let [Token::Word(show), Token::Word(what)] = meaningful.as_slice() else {
        return None;
    };
    if !show.value.eq_ignore_ascii_case("show") || what.quote_style.is_some() {
        return None;
    }
    match what.value.to_ascii_lowercase().as_str() {
        "sources" => Some("SELECT * FROM sluice_sources ORDER BY source_name"),
        "sinks" => Some("SELECT * FROM sluice_sinks ORDER BY sink_name"),
        "jobs" => Some("SELECT * FROM sluice_progress ORDER BY view_name"),
        _ => None,
    }
}

fn is_meaningful(t: &Token) -> bool {
    !is_blank(t)
}

/// Removes `, WATERMARK FOR col AS expr` from a `CREATE TABLE` column list.
fn cut_watermark(tokens: &[Token]) -> Result<(Vec<Token>, Option<WatermarkClause>)> {
    let word = |i: usize, name: &str| matches!(tokens.get(i), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(name));
    let next_meaningful = |from: usize| (from..tokens.len()).find(|&i| is_meaningful(&tokens[i]));
    let mut depth = 0i32;
    for i in 0..tokens.len() {
        match &tokens[i] {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if depth != 1 || !word(i, "watermark") {
            continue;
        }
        let Some(f) = next_meaningful(i + 1) else {
            break;
        };
        if !word(f, "for") {
            continue;
        }
        let syntax = |msg: &str| {
            crate::error::Error::user(crate::error::sqlstate::SYNTAX_ERROR, msg.to_string())
        };
        let c = next_meaningful(f + 1).ok_or_else(|| syntax("WATERMARK FOR needs a column"))?;
        let column = match &tokens[c] {
            Token::Word(w) if w.quote_style.is_some() => w.value.clone(),
            Token::Word(w) => w.value.to_lowercase(),
            _ => return Err(syntax("WATERMARK FOR needs a column name")),
        };
        let a = next_meaningful(c + 1).ok_or_else(|| syntax("WATERMARK FOR col needs AS"))?;
        if !word(a, "as") {
            return Err(syntax("expected AS after WATERMARK FOR column"));
        }
        // The expression runs to the `,` or `)` that closes this element.
        let mut end = a + 1;
        let mut inner = 0i32;
        while end < tokens.len() {
            match &tokens[end] {
                Token::LParen => inner += 1,
                Token::RParen if inner == 0 => break,
                Token::RParen => inner -= 1,
                Token::Comma if inner == 0 => break,
                _ => {}
            }
            end += 1;
        }
        let expression = render(&tokens[a + 1..end]).trim().to_string();
        if expression.is_empty() {
            return Err(syntax("WATERMARK FOR col AS needs an expression"));
        }
        // Cut the preceding comma too (or the following one when the clause comes first).
        let before = (0..i).rev().find(|&k| is_meaningful(&tokens[k]));
        let (from, to) = match before {
            Some(k) if tokens[k] == Token::Comma => (k, end),
            _ if tokens.get(end) == Some(&Token::Comma) => (i, end + 1),
            _ => (i, end),
        };
        let mut out = tokens[..from].to_vec();
        out.extend_from_slice(&tokens[to..]);
        return Ok((out, Some(WatermarkClause { column, expression })));
    }
    Ok((tokens.to_vec(), None))
}

/// The table function a temporal join's versioned table is read through.
pub const LOOKUP_FUNCTION: &str = "sluice_lookup";

/// `t FOR SYSTEM_TIME AS OF PROCTIME()`, the versioned table of a temporal join as RisingWave
/// and Flink write it, becomes `sluice_lookup('t') AS t`: the same rows to a query, a lookup
/// to the stream planner. Any other `AS OF` is refused (0A000).
fn rewrite_system_time(tokens: Vec<Token>) -> Result<Vec<Token>> {
    use datafusion::sql::sqlparser::keywords::RESERVED_FOR_TABLE_ALIAS;
    use datafusion::sql::sqlparser::tokenizer::Whitespace;
    let meaningful: Vec<usize> = (0..tokens.len())
        .filter(|&i| is_meaningful(&tokens[i]))
        .collect();
    let word = |m: usize, name: &str| matches!(meaningful.get(m).map(|&i| &tokens[i]), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(name));
    let is = |m: usize, t: &Token| meaningful.get(m).map(|&i| &tokens[i]) == Some(t);
    // (first token, token after the clause, replacement)
    let mut replaced: Vec<(usize, usize, Vec<Token>)> = Vec::new();
    for m in 0..meaningful.len() {
        if !(word(m, "for") && word(m + 1, "system_time")) {
            continue;
        }
        let unsupported = |what: &str| {
            crate::error::Error::unsupported(format!(
                "FOR SYSTEM_TIME AS OF {what} (only FOR SYSTEM_TIME AS OF PROCTIME(), a temporal join)"
            ))
        };
        if !(word(m + 2, "as")
            && word(m + 3, "of")
            && word(m + 4, "proctime")
            && is(m + 5, &Token::LParen)
            && is(m + 6, &Token::RParen))
        {
            return Err(unsupported("a time other than PROCTIME()"));
        }
        // The table's name before it: `name` or `schema.name`.
        let mut parts = Vec::new();
        let mut first = m;
        while let Some(prev) = first.checked_sub(1) {
            match &tokens[meaningful[prev]] {
                // A keyword (`FROM`, `JOIN` …) is not a table's name unless quoted.
                Token::Word(w)
                    if (parts.is_empty() || is(prev + 1, &Token::Period))
                        && (w.quote_style.is_some()
                            || !RESERVED_FOR_TABLE_ALIAS.contains(&w.keyword)) =>
                {
                    parts.insert(0, w.clone());
                    first = prev;
                }
                Token::Period if !parts.is_empty() => first = prev,
                _ => break,
            }
            if parts.len() == 2 {
                break;
            }
        }
        let Some(table) = parts.last().cloned() else {
            return Err(unsupported("without a table before it"));
        };
        let name = |w: &datafusion::sql::sqlparser::tokenizer::Word| match w.quote_style {
            Some(_) => w.value.clone(),
            None => w.value.to_lowercase(),
        };
        let full = parts.iter().map(name).collect::<Vec<_>>().join(".");
        // An alias after the clause names the relation; otherwise it keeps the table's name.
        let aliased = match meaningful.get(m + 7).map(|&i| &tokens[i]) {
            Some(Token::Word(w)) => !RESERVED_FOR_TABLE_ALIAS.contains(&w.keyword),
            _ => false,
        };
        let mut replacement = vec![
            Token::make_word(LOOKUP_FUNCTION, None),
            Token::LParen,
            Token::SingleQuotedString(full),
            Token::RParen,
        ];
        if !aliased {
            replacement.extend([
                Token::Whitespace(Whitespace::Space),
                Token::make_keyword("AS"),
                Token::Whitespace(Whitespace::Space),
                Token::Word(table),
            ]);
        }
        replaced.push((meaningful[first], meaningful[m + 6] + 1, replacement));
    }
    if replaced.is_empty() {
        return Ok(tokens);
    }
    let mut out = Vec::with_capacity(tokens.len());
    let mut at = 0;
    for (start, end, replacement) in replaced {
        out.extend_from_slice(&tokens[at..start]);
        out.extend(replacement);
        at = end;
    }
    out.extend_from_slice(&tokens[at..]);
    Ok(out)
}

/// Removes a trailing `EMIT ON WINDOW CLOSE`.
fn cut_emit_on_window_close(tokens: &[Token]) -> (Vec<Token>, bool) {
    let meaningful: Vec<usize> = (0..tokens.len())
        .filter(|&i| is_meaningful(&tokens[i]))
        .collect();
    let words = ["emit", "on", "window", "close"];
    if meaningful.len() >= 4 {
        let tail = &meaningful[meaningful.len() - 4..];
        let all = tail.iter().zip(words).all(|(&i, w)| {
            matches!(&tokens[i], Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
        });
        if all {
            return (tokens[..tail[0]].to_vec(), true);
        }
    }
    (tokens.to_vec(), false)
}

fn is_blank(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_) | Token::EOF)
}

/// The longest statement text accepted (PostgreSQL's own limit is 1 GB, but nothing sane comes
/// near this; bulk data goes through COPY).
pub const MAX_STATEMENT_BYTES: usize = 64 << 20;

/// The most binary operators one expression may chain (`a + b + …`, `x OR y OR …`): the
/// parser builds such a chain as a tree as deep as it is long, and every pass over it
/// (planning, optimizing, dropping) recurses that deep, and DataFusion's type coercion takes
/// time quadratic in it (5,000 terms: 90 s in a dev build). A 2-million-term sum overflowed the
/// stack and killed the server; nothing written by hand comes near this limit.
pub const MAX_OPERATOR_CHAIN: usize = 1_000;

/// Brackets nested deeper than this are refused (`54001`) before parsing.
pub const MAX_NESTING: usize = 200;

/// Function calls (a word, then `(`) nested deeper than this are refused (`54001`) before
/// parsing. sqlparser 0.62 parses each argument of a call twice under PostgreSQL's dialect
/// (first as `name => value` with an expression for the name, then again as a value), so
/// parsing takes time exponential in the nesting of calls: 20 nested calls took 9.7 s in a
/// debug build, and the `sql_frontend` fuzz target found 281 bytes that kept a connection busy
/// for minutes. At 16 the worst case is about a second in a debug build.
pub const MAX_CALL_NESTING: usize = 16;

/// Refuses unbalanced brackets (`42601`), nesting deeper than [`MAX_NESTING`] and calls
/// nested deeper than [`MAX_CALL_NESTING`] (`54001`) before sqlparser runs (see
/// [`MAX_CALL_NESTING`]): text with unbalanced brackets cannot parse anyway.
fn check_brackets(tokens: &[Token]) -> Result<()> {
    let syntax = |message: String| {
        crate::error::Error::user(
            crate::error::sqlstate::SYNTAX_ERROR,
            format!("syntax error: {message}"),
        )
    };
    let too_complex = |message: String| {
        crate::error::Error::user(
            crate::error::sqlstate::STATEMENT_TOO_COMPLEX,
            format!("statement too complex: {message}"),
        )
    };
    let mut open: Vec<&Token> = Vec::new();
    // For each open bracket, whether it opened a call; and how many calls are open.
    let mut calls: Vec<bool> = Vec::new();
    let mut open_calls = 0usize;
    let mut previous: Option<&Token> = None;
    for token in tokens.iter().filter(|t| !is_blank(t)) {
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                open.push(token);
                let call = *token == Token::LParen && matches!(previous, Some(Token::Word(_)));
                calls.push(call);
                open_calls += usize::from(call);
                if open.len() > MAX_NESTING {
                    return Err(too_complex(format!(
                        "brackets nested more than {MAX_NESTING} deep"
                    )));
                }
                if open_calls > MAX_CALL_NESTING {
                    return Err(too_complex(format!(
                        "function calls nested more than {MAX_CALL_NESTING} deep"
                    )));
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                let opening = match token {
                    Token::RParen => Token::LParen,
                    Token::RBracket => Token::LBracket,
                    _ => Token::LBrace,
                };
                open_calls -= usize::from(calls.pop().unwrap_or(false));
                match open.pop() {
                    Some(o) if *o == opening => {}
                    Some(o) => return Err(syntax(format!("\"{token}\" closes \"{o}\""))),
                    None => return Err(syntax(format!("\"{token}\" without an opening one"))),
                }
            }
            Token::SemiColon if !open.is_empty() => {
                return Err(syntax(format!(
                    "\"{}\" is not closed before \";\"",
                    open[open.len() - 1]
                )));
            }
            _ => {}
        }
        previous = Some(token);
    }
    match open.last() {
        Some(o) => Err(syntax(format!("\"{o}\" is not closed"))),
        None => Ok(()),
    }
}

/// Refuses an expression chaining more than [`MAX_OPERATOR_CHAIN`] binary operators, before
/// it is parsed. A chain is counted within one level of parentheses, between commas.
fn check_operator_chains(tokens: &[Token]) -> Result<()> {
    let mut chains: Vec<usize> = vec![0];
    for token in tokens {
        match token {
            Token::LParen | Token::LBracket => chains.push(0),
            Token::RParen | Token::RBracket if chains.len() > 1 => {
                chains.pop();
            }
            Token::Comma | Token::SemiColon => {
                if let Some(c) = chains.last_mut() {
                    *c = 0;
                }
            }
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret => bump(&mut chains)?,
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR) => bump(&mut chains)?,
            _ => {}
        }
    }
    Ok(())
}

fn bump(chains: &mut [usize]) -> Result<()> {
    if let Some(c) = chains.last_mut() {
        *c += 1;
        if *c > MAX_OPERATOR_CHAIN {
            return Err(crate::error::Error::user(
                crate::error::sqlstate::STATEMENT_TOO_COMPLEX,
                format!(
                    "statement too complex: an expression chains more than {MAX_OPERATOR_CHAIN} operators (use IN (…) or an array for long lists)"
                ),
            ));
        }
    }
    Ok(())
}

fn render(tokens: &[Token]) -> String {
    tokens.iter().map(|t| t.to_string()).collect()
}

/// Removes a trailing `APPEND ONLY` of a `CREATE TABLE` statement.
fn cut_append_only(chunk: &[Token]) -> (Vec<Token>, bool) {
    let meaningful: Vec<(usize, &Token)> = chunk
        .iter()
        .enumerate()
        .filter(|(_, t)| is_meaningful(t))
        .collect();
    let is_create_table = matches!(
        meaningful.as_slice(),
        [(_, Token::Word(a)), (_, Token::Word(b)), ..]
            if a.keyword == Keyword::CREATE && b.keyword == Keyword::TABLE
    );
    if is_create_table
        && let [.., (i, Token::Word(append)), (j, Token::Word(only))] = meaningful.as_slice()
        && append.value.eq_ignore_ascii_case("append")
        && only.keyword == Keyword::ONLY
    {
        let tokens = chunk
            .iter()
            .enumerate()
            .filter(|(k, _)| k != i && k != j)
            .map(|(_, t)| t.clone())
            .collect();
        return (tokens, true);
    }
    (chunk.to_vec(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `t FOR SYSTEM_TIME AS OF PROCTIME()` reads the table through the lookup function, under
    /// the table's name or the alias written after it; keywords are not taken for a table.
    #[test]
    fn system_time_becomes_a_lookup() {
        let text = |sql: &str| parse_sql(sql).unwrap()[0].statement.to_string();
        assert_eq!(
            text(
                "SELECT * FROM s JOIN public.t FOR SYSTEM_TIME AS OF PROCTIME() AS x ON s.k = x.k"
            ),
            "SELECT * FROM s JOIN sluice_lookup('public.t') AS x ON s.k = x.k"
        );
        assert_eq!(
            text("SELECT * FROM s LEFT JOIN \"T\" FOR SYSTEM_TIME AS OF PROCTIME() ON true"),
            "SELECT * FROM s LEFT JOIN sluice_lookup('T') AS \"T\" ON true"
        );
        for refused in [
            "SELECT * FROM FOR SYSTEM_TIME AS OF PROCTIME()",
            "SELECT * FROM t FOR SYSTEM_TIME AS OF now()",
        ] {
            let e = parse_sql(refused).unwrap_err();
            assert_eq!(
                e.sqlstate(),
                crate::error::sqlstate::FEATURE_NOT_SUPPORTED,
                "{e}"
            );
        }
    }

    /// Unbalanced brackets are a syntax error before sqlparser backtracks over them, and calls
    /// nested past [`MAX_CALL_NESTING`] are refused (sqlparser's time doubles per level).
    #[test]
    fn brackets_are_checked_before_parsing() {
        use crate::error::sqlstate;
        // Found by the sql_frontend fuzz target: minutes of parsing before.
        let fuzzed = "SELECT couAt, nt(*), min(id,@min(idit(*), min(id,@min(idin(id,@couAt, nt(*), mincouAt, nt(*), min(id,@min(idit(*), min(id,@min(idin(id,@couAt, nt(*), min(id,@min(idin(id,n(id,@couAt, nt(*), min(id,@min(idin(id,@mi(id,@min(idin(id,n(id,@couAt, nt(*), min(id,@min(idin(id,@mini, minn";
        let e = parse_sql(fuzzed).unwrap_err();
        assert_eq!(e.sqlstate(), sqlstate::STATEMENT_TOO_COMPLEX, "{e}");
        let e = parse_sql(&fuzzed[..120]).unwrap_err();
        assert_eq!(e.sqlstate(), sqlstate::SYNTAX_ERROR, "{e}");
        for bad in [
            "SELECT (1",
            "SELECT 1)",
            "SELECT ARRAY[1)",
            "SELECT (1; SELECT 2)",
        ] {
            assert_eq!(
                parse_sql(bad).unwrap_err().sqlstate(),
                sqlstate::SYNTAX_ERROR,
                "{bad}"
            );
        }
        let calls = |n: usize| format!("SELECT {}1{}", "abs(".repeat(n), ")".repeat(n));
        assert!(parse_sql(&calls(MAX_CALL_NESTING)).is_ok());
        let e = parse_sql(&calls(MAX_CALL_NESTING + 1)).unwrap_err();
        assert_eq!(e.sqlstate(), sqlstate::STATEMENT_TOO_COMPLEX, "{e}");
        // Plain parentheses cost nothing extra (sqlparser's own recursion limit bounds them);
        // past MAX_NESTING they are refused before parsing.
        let parens = |n: usize| format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n));
        assert!(parse_sql(&parens(40)).is_ok());
        let e = parse_sql(&parens(MAX_NESTING + 1)).unwrap_err();
        assert_eq!(e.sqlstate(), sqlstate::STATEMENT_TOO_COMPLEX, "{e}");
        // Strings and comments are not brackets.
        assert!(parse_sql("SELECT '(((' AS x -- ((\n").is_ok());
    }

    #[test]
    fn splits_statements_and_cuts_append_only() {
        let stmts =
            parse_sql("CREATE TABLE t (a INT) APPEND ONLY; ; SELECT 1;\nINSERT INTO t VALUES (1)")
                .unwrap();
        assert_eq!(stmts.len(), 3);
        assert!(stmts[0].append_only);
        assert_eq!(stmts[0].text, "CREATE TABLE t (a INT) APPEND ONLY");
        assert!(matches!(stmts[0].statement, Statement::CreateTable(_)));
        assert!(!stmts[1].append_only);
    }

    #[test]
    fn cuts_watermark_emit_and_flush() {
        let stmts = parse_sql(
            "CREATE TABLE t (k INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY;\
             CREATE MATERIALIZED VIEW v AS SELECT k FROM t GROUP BY k EMIT ON WINDOW CLOSE; flush",
        )
        .unwrap();
        let wm = stmts[0].watermark.as_ref().unwrap();
        assert_eq!(wm.column, "ts");
        assert_eq!(wm.expression, "ts - INTERVAL '5' SECOND");
        assert!(stmts[0].append_only);
        let Statement::CreateTable(create) = &stmts[0].statement else {
            panic!("not a table")
        };
        assert_eq!(create.columns.len(), 2);
        assert!(stmts[1].emit_on_window_close);
        assert!(matches!(stmts[2].statement, Statement::Flush { .. }));
    }

    #[test]
    fn cuts_connector_clauses() {
        let stmts = parse_sql(
            "CREATE SOURCE s (a INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
             INCLUDE partition AS p INCLUDE offset \
             WITH (connector = 'kafka', topic = 't', properties.bootstrap.server = 'h:9092', n = 3) \
             FORMAT PLAIN ENCODE CSV (delimiter = ';', without_header = 'true');\
             CREATE TABLE t (a INT) WITH (fillfactor = 70);\
             CREATE SINK IF NOT EXISTS k FROM v WITH (connector = 'kafka') FORMAT UPSERT ENCODE JSON",
        )
        .unwrap();
        assert!(stmts[0].source);
        let c = stmts[0].connector.as_ref().unwrap();
        assert_eq!(c.options["properties.bootstrap.server"], "h:9092");
        assert_eq!(c.options["n"], "3");
        assert_eq!(c.format.as_deref(), Some("PLAIN"));
        assert_eq!(c.encode.as_deref(), Some("CSV"));
        assert_eq!(c.encode_options["delimiter"], ";");
        assert_eq!(
            c.includes,
            vec![
                ("partition".to_string(), "p".to_string()),
                ("offset".to_string(), "_rw_kafka_offset".to_string())
            ]
        );
        assert!(stmts[0].watermark.is_some());
        assert!(matches!(stmts[0].statement, Statement::CreateTable(_)));
        assert!(stmts[1].connector.is_none());
        let sink = stmts[2].sink.as_ref().unwrap();
        assert_eq!((sink.name.as_str(), sink.from.as_str()), ("k", "v"));
        assert!(sink.if_not_exists);
        assert_eq!(
            stmts[2].connector.as_ref().unwrap().format.as_deref(),
            Some("UPSERT")
        );
        assert!(matches!(stmts[2].statement, Statement::Query(_)));
    }

    #[test]
    fn a_table_of_a_shared_source() {
        let stmts = parse_sql(
            "CREATE TABLE orders (id INT PRIMARY KEY, v TEXT) FROM pg TABLE 'public.orders'",
        )
        .unwrap();
        let c = stmts[0].connector.as_ref().unwrap();
        assert_eq!(c.options[CDC_SOURCE_OPTION], "pg");
        assert_eq!(c.options[CDC_TABLE_OPTION], "public.orders");
        assert!(matches!(stmts[0].statement, Statement::CreateTable(_)));
    }

    #[test]
    fn syntax_errors_are_errors() {
        let err = parse_sql("SELEC 1").unwrap_err();
        assert_eq!(err.sqlstate(), crate::error::sqlstate::SYNTAX_ERROR);
    }
}
