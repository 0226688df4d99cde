//! Parsing: sqlparser's PostgreSQL dialect, plus the clauses of our own that PostgreSQL has not,
//! as RisingWave spells them: `APPEND ONLY` after `CREATE TABLE (…)`, `WATERMARK FOR ts AS …`
//! among its columns, `EMIT ON WINDOW CLOSE` after a view's query, and `FLUSH`. Our clauses are
//! cut out at the token level and recorded beside the statement, so that everything else stays
//! sqlparser's AST.

use datafusion::sql::sqlparser::ast::{FlushType, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
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
}

/// Parses a string of one or more `;`-separated statements.
pub fn parse_sql(sql: &str) -> Result<Vec<SluiceStatement>> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize()?;
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
                append_only: false,
                watermark: None,
                emit_on_window_close: false,
                text,
            });
            continue;
        }
        let (tokens, append_only) = cut_append_only(chunk);
        let (tokens, watermark) = cut_watermark(&tokens)?;
        let (tokens, emit_on_window_close) = cut_emit_on_window_close(&tokens);
        // parse_statements, not parse_statement: it refuses tokens left after the statement.
        let statements = Parser::new(&dialect)
            .with_tokens(tokens)
            .parse_statements()?;
        for statement in statements {
            out.push(SluiceStatement {
                statement,
                append_only,
                watermark: watermark.clone(),
                emit_on_window_close,
                text: text.clone(),
            });
        }
    }
    Ok(out)
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
    fn syntax_errors_are_errors() {
        let err = parse_sql("SELEC 1").unwrap_err();
        assert_eq!(err.sqlstate(), crate::error::sqlstate::SYNTAX_ERROR);
    }
}
