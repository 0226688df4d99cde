//! Statements that read results as they change: `SUBSCRIBE`, `COPY (SUBSCRIBE …) TO STDOUT`,
//! and cursors (`DECLARE … CURSOR FOR`, `FETCH`, `CLOSE`) over a subscription or a query.
//! sqlparser knows none of the first two and not `FETCH … WITH (timeout = …)`, so they are
//! recognised here from the tokens; the queries inside are parsed by sqlparser.

use std::time::Duration;

use crate::sql::dialect::SluiceDialect;
use datafusion::sql::sqlparser::ast::{Query, Statement};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{Error, Result, sqlstate};
pub use crate::runtime::subscribe::SubscribeOptions;

/// What `SUBSCRIBE` reads.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscribeTarget {
    /// `SUBSCRIBE [TO] name`: a view, table or source.
    Relation(String),
    /// `SUBSCRIBE [TO] (SELECT …)`.
    Query(Box<Query>),
}

/// A `SUBSCRIBE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    /// What it reads.
    pub target: SubscribeTarget,
    /// How.
    pub options: SubscribeOptions,
}

/// What a cursor reads.
#[derive(Debug, Clone, PartialEq)]
pub enum CursorBody {
    /// `DECLARE c CURSOR FOR SUBSCRIBE …`.
    Subscribe(Subscribe),
    /// `DECLARE c CURSOR FOR SELECT …`.
    Query(Box<Statement>),
}

/// A statement of this module.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveStatement {
    /// `SUBSCRIBE …`: rows as a never-ending result set.
    Subscribe(Subscribe),
    /// `COPY (SUBSCRIBE …) TO STDOUT [WITH (FORMAT text | csv)]`.
    CopySubscribe {
        /// The subscription.
        subscribe: Subscribe,
        /// CSV rather than PostgreSQL's text format.
        csv: bool,
    },
    /// `DECLARE name CURSOR FOR …`.
    Declare {
        /// The cursor's name.
        name: String,
        /// What it reads.
        body: CursorBody,
    },
    /// `FETCH [FORWARD] [n | ALL] [FROM | IN] name [WITH (timeout = '…')]`.
    Fetch {
        /// The cursor.
        name: String,
        /// How many rows at most (`None`: all that are there).
        count: Option<u64>,
        /// How long to wait for a first row (`None`: until one comes).
        timeout: Option<Duration>,
    },
    /// `CLOSE name | ALL`.
    Close {
        /// The cursor (`None`: every cursor).
        name: Option<String>,
    },
}

/// A cursor for walking meaningful tokens.
struct Tokens {
    tokens: Vec<Token>,
    at: usize,
}

impl Tokens {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn keyword(&self) -> Option<String> {
        match self.peek() {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn eat(&mut self, keyword: &str) -> bool {
        if self.keyword().as_deref() == Some(keyword) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, keyword: &str) -> Result<()> {
        if self.eat(keyword) {
            Ok(())
        } else {
            Err(syntax(format!(
                "expected {keyword}, found {}",
                self.describe_next()
            )))
        }
    }

    fn eat_token(&mut self, token: &Token) -> bool {
        if self.peek() == Some(token) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn describe_next(&self) -> String {
        self.peek()
            .map_or("end of input".to_string(), |t| format!("\"{t}\""))
    }

    /// A name: an identifier, lowercased unless quoted.
    fn name(&mut self) -> Result<String> {
        match self.peek() {
            Some(Token::Word(w)) => {
                let name = if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_lowercase()
                };
                self.at += 1;
                Ok(name)
            }
            _ => Err(syntax(format!(
                "expected a name, found {}",
                self.describe_next()
            ))),
        }
    }

    /// The tokens of a parenthesized group, without its parentheses.
    fn group(&mut self) -> Result<Vec<Token>> {
        if !self.eat_token(&Token::LParen) {
            return Err(syntax(format!(
                "expected (, found {}",
                self.describe_next()
            )));
        }
        let start = self.at;
        let mut depth = 1;
        while let Some(t) = self.peek() {
            match t {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        let inner = self.tokens[start..self.at].to_vec();
                        self.at += 1;
                        return Ok(inner);
                    }
                }
                _ => {}
            }
            self.at += 1;
        }
        Err(syntax("unbalanced parentheses"))
    }

    fn done(&self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(syntax(format!(
                "unexpected {} at the end of the statement",
                self.describe_next()
            ))),
        }
    }

    fn rest(&self) -> Vec<Token> {
        self.tokens[self.at..].to_vec()
    }
}

fn syntax(message: impl Into<String>) -> Error {
    Error::user(sqlstate::SYNTAX_ERROR, message)
}

fn invalid(message: impl Into<String>) -> Error {
    Error::user(sqlstate::INVALID_PARAMETER_VALUE, message)
}

/// The live statement these tokens (one statement, no `;`) make, if they make one.
pub fn parse_live(chunk: &[Token]) -> Result<Option<LiveStatement>> {
    let tokens: Vec<Token> = chunk
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .cloned()
        .collect();
    let mut t = Tokens { tokens, at: 0 };
    let statement = match t.keyword().as_deref() {
        Some("SUBSCRIBE") => LiveStatement::Subscribe(subscribe(&mut t)?),
        Some("COPY") => {
            t.at += 1;
            let is_subscribe = t.peek() == Some(&Token::LParen)
                && matches!(t.tokens.get(t.at + 1), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("SUBSCRIBE"));
            if !is_subscribe {
                return Ok(None);
            }
            let mut inner = Tokens {
                tokens: t.group()?,
                at: 0,
            };
            let subscribe = subscribe(&mut inner)?;
            t.expect("TO")?;
            t.expect("STDOUT")?;
            let csv = copy_format(&mut t)?;
            LiveStatement::CopySubscribe { subscribe, csv }
        }
        Some("DECLARE") => {
            t.at += 1;
            let name = t.name()?;
            for word in ["BINARY", "INSENSITIVE", "ASENSITIVE", "NO", "SCROLL"] {
                t.eat(word);
            }
            t.expect("CURSOR")?;
            if t.eat("WITH") {
                t.expect("HOLD")?;
                return Err(Error::unsupported(
                    "WITH HOLD cursors; a cursor lives until its transaction ends",
                ));
            }
            if t.eat("WITHOUT") {
                t.expect("HOLD")?;
            }
            t.expect("FOR")?;
            let body = if t.keyword().as_deref() == Some("SUBSCRIBE") {
                CursorBody::Subscribe(subscribe(&mut t)?)
            } else {
                let statement = Parser::new(&SluiceDialect)
                    .with_tokens(t.rest())
                    .parse_statement()?;
                if !matches!(statement, Statement::Query(_)) {
                    return Err(syntax("a cursor reads a SELECT or a SUBSCRIBE"));
                }
                t.at = t.tokens.len();
                CursorBody::Query(Box::new(statement))
            };
            LiveStatement::Declare { name, body }
        }
        Some("FETCH") => {
            t.at += 1;
            fetch(&mut t)?
        }
        Some("CLOSE") => {
            t.at += 1;
            let name = if t.eat("ALL") { None } else { Some(t.name()?) };
            LiveStatement::Close { name }
        }
        _ => return Ok(None),
    };
    t.done()?;
    Ok(Some(statement))
}

/// `SUBSCRIBE [TO] name | (query) [WITH (…)] [AS OF n]`, from the `SUBSCRIBE` keyword on.
fn subscribe(t: &mut Tokens) -> Result<Subscribe> {
    t.expect("SUBSCRIBE")?;
    t.eat("TO");
    let target = if t.peek() == Some(&Token::LParen) {
        let inner = t.group()?;
        let query = Parser::new(&SluiceDialect)
            .with_tokens(inner)
            .parse_query()?;
        SubscribeTarget::Query(query)
    } else {
        let mut name = t.name()?;
        // `public.v`: the one schema.
        while t.eat_token(&Token::Period) {
            name = t.name()?;
        }
        SubscribeTarget::Relation(name)
    };
    let mut options = SubscribeOptions::default();
    if t.eat("WITH") {
        for (key, value) in key_values(t.group()?)? {
            let flag = match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("true" | "on" | "1") => true,
                Some("false" | "off" | "0") => false,
                Some(other) => {
                    return Err(invalid(format!(
                        "{key} must be true or false, not '{other}'"
                    )));
                }
            };
            match key.as_str() {
                "snapshot" => options.snapshot = flag,
                "progress" => options.progress = flag,
                other => return Err(invalid(format!("unknown SUBSCRIBE option '{other}'"))),
            }
        }
    }
    if t.eat("AS") {
        t.expect("OF")?;
        t.eat("AT");
        t.eat("LEAST");
        options.as_of = Some(match t.peek() {
            Some(Token::Number(n, _)) => {
                let n = n
                    .parse()
                    .map_err(|_| invalid(format!("AS OF needs an epoch, not '{n}'")))?;
                t.at += 1;
                n
            }
            _ => {
                return Err(syntax(format!(
                    "AS OF needs an epoch number, found {}",
                    t.describe_next()
                )));
            }
        });
    }
    Ok(Subscribe { target, options })
}

/// `key [= value], …` inside an option list; keys lowercased, values unquoted.
fn key_values(tokens: Vec<Token>) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for item in tokens.split(|t| *t == Token::Comma) {
        let mut words = item.iter().filter(|t| **t != Token::Eq);
        let key = match words.next() {
            Some(Token::Word(w)) => w.value.to_ascii_lowercase(),
            Some(other) => {
                return Err(syntax(format!(
                    "expected an option name, found \"{other}\""
                )));
            }
            None => continue,
        };
        let value = words.next().map(|v| match v {
            Token::SingleQuotedString(s) => s.clone(),
            Token::Word(w) => w.value.clone(),
            other => other.to_string(),
        });
        if let Some(extra) = words.next() {
            return Err(syntax(format!("unexpected \"{extra}\" in option {key}")));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// `[WITH] (FORMAT text | csv)` after `TO STDOUT`; true for CSV.
fn copy_format(t: &mut Tokens) -> Result<bool> {
    t.eat("WITH");
    if t.peek() != Some(&Token::LParen) {
        return Ok(false);
    }
    let mut csv = false;
    for (key, value) in key_values(t.group()?)? {
        match (
            key.as_str(),
            value.as_deref().map(str::to_ascii_lowercase).as_deref(),
        ) {
            ("format", Some("text")) => csv = false,
            ("format", Some("csv")) => csv = true,
            ("format", other) => {
                return Err(Error::unsupported(format!(
                    "COPY (SUBSCRIBE …) in format {}",
                    other.unwrap_or("?")
                )));
            }
            (other, _) => {
                return Err(Error::unsupported(format!(
                    "COPY (SUBSCRIBE …) option {other}"
                )));
            }
        }
    }
    Ok(csv)
}

/// `FETCH` after the keyword.
fn fetch(t: &mut Tokens) -> Result<LiveStatement> {
    let mut count = Some(1);
    if t.eat("FORWARD") || t.eat("NEXT") {
        // FORWARD alone is one row, as is NEXT.
    }
    if t.eat("ALL") {
        count = None;
    } else if let Some(Token::Number(n, _)) = t.peek() {
        count = Some(
            n.parse()
                .map_err(|_| invalid(format!("FETCH needs a row count, not '{n}'")))?,
        );
        t.at += 1;
    }
    if !t.eat("FROM") {
        t.eat("IN");
    }
    let name = t.name()?;
    let mut timeout = None;
    if t.eat("WITH") {
        for (key, value) in key_values(t.group()?)? {
            match key.as_str() {
                "timeout" => {
                    let text = value.unwrap_or_default();
                    timeout = Some(parse_timeout(&text).ok_or_else(|| {
                        invalid(format!(
                            "timeout must be a duration like '1s' (at most 365 days), not '{text}'"
                        ))
                    })?);
                }
                other => return Err(invalid(format!("unknown FETCH option '{other}'"))),
            }
        }
    }
    Ok(LiveStatement::Fetch {
        name,
        count,
        timeout,
    })
}

/// `'1s'`, `'250ms'`, `'2 minutes'`, or a number of seconds.
fn parse_timeout(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let value: f64 = text[..split].parse().ok()?;
    let seconds = match text[split..].trim() {
        "" | "s" | "sec" | "second" | "seconds" => value,
        "ms" | "millisecond" | "milliseconds" => value / 1000.0,
        "min" | "minute" | "minutes" => value * 60.0,
        _ => return None,
    };
    crate::connector::spec::duration_of_seconds(seconds)
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    use super::*;

    fn live(sql: &str) -> Result<Option<LiveStatement>> {
        let tokens = Tokenizer::new(&SluiceDialect, sql).tokenize().unwrap();
        parse_live(&tokens)
    }

    #[test]
    fn subscribe_forms() {
        let Some(LiveStatement::Subscribe(s)) = live("SUBSCRIBE TO v").unwrap() else {
            panic!()
        };
        assert_eq!(s.target, SubscribeTarget::Relation("v".into()));
        assert_eq!(s.options, SubscribeOptions::default());

        let Some(LiveStatement::Subscribe(s)) =
            live("subscribe (SELECT a FROM t) WITH (SNAPSHOT = false, progress) AS OF 42").unwrap()
        else {
            panic!()
        };
        assert!(matches!(s.target, SubscribeTarget::Query(_)));
        assert_eq!(
            s.options,
            SubscribeOptions {
                snapshot: false,
                progress: true,
                as_of: Some(42)
            }
        );
        assert!(live("SUBSCRIBE v WITH (fast = true)").is_err());
        assert!(live("SUBSCRIBE v extra").is_err());
    }

    #[test]
    fn copy_and_cursors() {
        let Some(LiveStatement::CopySubscribe { csv, .. }) =
            live("COPY (SUBSCRIBE TO v WITH (PROGRESS)) TO STDOUT WITH (FORMAT csv)").unwrap()
        else {
            panic!()
        };
        assert!(csv);
        // An ordinary COPY is not ours.
        assert_eq!(live("COPY t FROM STDIN").unwrap(), None);
        assert_eq!(live("COPY (SELECT 1) TO STDOUT").unwrap(), None);

        let Some(LiveStatement::Declare { name, body }) =
            live("DECLARE \"C\" NO SCROLL CURSOR WITHOUT HOLD FOR SUBSCRIBE v").unwrap()
        else {
            panic!()
        };
        assert_eq!(name, "C");
        assert!(matches!(body, CursorBody::Subscribe(_)));
        let Some(LiveStatement::Declare { body, .. }) =
            live("DECLARE c CURSOR FOR SELECT * FROM t WHERE a > 1").unwrap()
        else {
            panic!()
        };
        assert!(matches!(body, CursorBody::Query(_)));
        assert!(live("DECLARE c CURSOR WITH HOLD FOR SELECT 1").is_err());

        assert_eq!(
            live("FETCH 100 c WITH (timeout = '1s')").unwrap(),
            Some(LiveStatement::Fetch {
                name: "c".into(),
                count: Some(100),
                timeout: Some(Duration::from_secs(1))
            })
        );
        assert_eq!(
            live("FETCH ALL FROM c").unwrap(),
            Some(LiveStatement::Fetch {
                name: "c".into(),
                count: None,
                timeout: None
            })
        );
        assert_eq!(
            live("FETCH FORWARD 5 FROM \"x\"").unwrap(),
            Some(LiveStatement::Fetch {
                name: "x".into(),
                count: Some(5),
                timeout: None
            })
        );
        assert_eq!(
            live("CLOSE ALL").unwrap(),
            Some(LiveStatement::Close { name: None })
        );
        assert_eq!(live("SELECT 1").unwrap(), None);
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2 seconds"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("0"), Some(Duration::ZERO));
        assert_eq!(parse_timeout("soon"), None);
        assert_eq!(parse_timeout("100000000000000000000"), None);
        assert_eq!(parse_timeout("1e400"), None);
    }
}
