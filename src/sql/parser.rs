//! Parsing: sqlparser's PostgreSQL dialect, plus the clauses of our own that PostgreSQL has not
//! (`APPEND ONLY` after `CREATE TABLE (…)`, as in RisingWave). Our clauses are cut out at the
//! token level and recorded beside the statement, so that everything else stays sqlparser's AST.

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use crate::error::Result;

/// One statement as the engine sees it.
#[derive(Debug, Clone)]
pub struct SluiceStatement {
    /// The statement, as sqlparser parsed it once our clauses were cut out.
    pub statement: Statement,
    /// `CREATE TABLE … APPEND ONLY`.
    pub append_only: bool,
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
        let (tokens, append_only) = cut_append_only(chunk);
        // parse_statements, not parse_statement: it refuses tokens left after the statement.
        let statements = Parser::new(&dialect)
            .with_tokens(tokens)
            .parse_statements()?;
        for statement in statements {
            out.push(SluiceStatement {
                statement,
                append_only,
                text: text.clone(),
            });
        }
    }
    Ok(out)
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
        .filter(|(_, t)| {
            !matches!(
                t,
                Token::Whitespace(
                    Whitespace::Space
                        | Whitespace::Newline
                        | Whitespace::Tab
                        | Whitespace::SingleLineComment { .. }
                        | Whitespace::MultiLineComment(_)
                ) | Token::EOF
            )
        })
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
    fn syntax_errors_are_errors() {
        let err = parse_sql("SELEC 1").unwrap_err();
        assert_eq!(err.sqlstate(), crate::error::sqlstate::SYNTAX_ERROR);
    }
}
