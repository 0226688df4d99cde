//! PostgreSQL's `jsonb` (and `json`, kept the same way).
//!
//! A `jsonb` value is an Arrow `LargeUtf8` holding PostgreSQL's text form of the value: keys of
//! an object sorted (shorter first, then bytewise) without duplicates (the last one wins),
//! `", "` and `": "` between items, numbers as `numeric` prints them (`1e2` is `100`), strings
//! escaped as PostgreSQL escapes them. Every way into the type (a cast from text, `INSERT`,
//! `COPY`, a bound parameter, a JSON source) goes through [`canonical`], so equal documents are
//! equal bytes: grouping, joins, `DISTINCT` and state compare them as strings, and the text
//! sent to a client is the column itself. `LargeUtf8` is used for nothing else in Sluice, so the
//! Arrow type alone says "jsonb" through every operator, checkpoint and view.
//!
//! Operators (`->`, `->>`, `#>`, `#>>`, `@>`, `<@`, `?`, `?|`, `?&`, `||`, `-`) are planned by
//! [`JsonbOperators`] as the SQL planner meets them; the functions are [`functions`]. Reading
//! a member (`->`, `->>`, `jsonb_typeof`, …) scans the stored text without building a tree.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Int32Builder, LargeStringArray, LargeStringBuilder,
    StringBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    Expr, ExprSchemable, ScalarUDF, Signature, TypeSignature, Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator as SqlOperator;

use super::pg_semantics::{udf_with, user_error};
use crate::error::sqlstate;

/// The Arrow type of `jsonb`.
pub const JSONB: DataType = DataType::LargeUtf8;

/// Whether `t` is `jsonb`.
pub fn is_jsonb(t: &DataType) -> bool {
    *t == JSONB
}

/// Nesting deeper than this is refused (54001), so no document can exhaust the stack.
const MAX_DEPTH: usize = 1000;

/// The largest exponent a number may have (PostgreSQL's `numeric` stops near 131072 digits);
/// beyond it a number is 22003, so that `1e999999999` cannot ask for a gigabyte of zeros.
const MAX_EXPONENT: i64 = 10_000;

/// A JSON document as a tree, for the operations that rebuild one (`||`, `-`, `@>`, …).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// A number as `numeric` prints it (no exponent, no `-0`).
    Number(String),
    String(String),
    Array(Vec<Json>),
    /// Sorted and without duplicate keys (see [`Json::object`]).
    Object(Vec<(String, Json)>),
}

impl Json {
    /// An object from its members in any order; a repeated key keeps its last value.
    pub fn object(mut members: Vec<(String, Json)>) -> Json {
        // Stable: among equal keys the later stays later, and the last of a run is kept.
        members.sort_by(|a, b| key_order(&a.0, &b.0));
        let mut out: Vec<(String, Json)> = Vec::with_capacity(members.len());
        for member in members {
            match out.last_mut() {
                Some(last) if last.0 == member.0 => *last = member,
                _ => out.push(member),
            }
        }
        Json::Object(out)
    }

    fn is_scalar(&self) -> bool {
        !matches!(self, Json::Array(_) | Json::Object(_))
    }

    /// PostgreSQL's text form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    #[recursive::recursive]
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(true) => out.push_str("true"),
            Json::Bool(false) => out.push_str("false"),
            Json::Number(n) => out.push_str(n),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_string(key, out);
                    out.push_str(": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    /// `jsonb_pretty`'s form: four spaces per level, one item per line.
    #[recursive::recursive]
    fn write_pretty(&self, level: usize, out: &mut String) {
        let indent = |out: &mut String, level: usize| {
            for _ in 0..level {
                out.push_str("    ");
            }
        };
        match self {
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i > 0 { ",\n" } else { "\n" });
                    indent(out, level + 1);
                    item.write_pretty(level + 1, out);
                }
                out.push('\n');
                indent(out, level);
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    out.push_str(if i > 0 { ",\n" } else { "\n" });
                    indent(out, level + 1);
                    write_string(key, out);
                    out.push_str(": ");
                    value.write_pretty(level + 1, out);
                }
                out.push('\n');
                indent(out, level);
                out.push('}');
            }
            scalar => scalar.write(out),
        }
    }

    /// PostgreSQL's `@>`: whether `self` contains `other`.
    #[recursive::recursive]
    fn contains(&self, other: &Json) -> bool {
        match (self, other) {
            (Json::Object(left), Json::Object(right)) => {
                right.iter().all(|(key, value)| {
                    match left.binary_search_by(|(k, _)| key_order(k, key)) {
                        Ok(i) => {
                            let found = &left[i].1;
                            if value.is_scalar() {
                                scalar_eq(found, value)
                            } else {
                                found.contains(value)
                            }
                        }
                        Err(_) => false,
                    }
                })
            }
            (Json::Array(left), Json::Array(right)) => right.iter().all(|wanted| {
                left.iter().any(|item| {
                    if wanted.is_scalar() {
                        scalar_eq(item, wanted)
                    } else {
                        item.contains(wanted)
                    }
                })
            }),
            // At the top level only, an array contains a scalar it has as an element.
            (Json::Array(left), scalar) if scalar.is_scalar() => {
                left.iter().any(|item| scalar_eq(item, scalar))
            }
            (left, right) if left.is_scalar() && right.is_scalar() => scalar_eq(left, right),
            _ => false,
        }
    }

    #[recursive::recursive]
    fn strip_nulls(self) -> Json {
        match self {
            Json::Object(members) => Json::Object(
                members
                    .into_iter()
                    .filter(|(_, v)| *v != Json::Null)
                    .map(|(k, v)| (k, v.strip_nulls()))
                    .collect(),
            ),
            Json::Array(items) => Json::Array(items.into_iter().map(Json::strip_nulls).collect()),
            scalar => scalar,
        }
    }
}

/// Equality of scalars, numbers by value (`1.0` equals `1`), as in PostgreSQL.
fn scalar_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => number_value(x) == number_value(y),
        (a, b) if a.is_scalar() && b.is_scalar() => a == b,
        _ => false,
    }
}

/// A canonical number without the trailing zeros of its fraction.
fn number_value(n: &str) -> &str {
    if n.contains('.') {
        n.trim_end_matches('0').trim_end_matches('.')
    } else {
        n
    }
}

/// The order of keys in a `jsonb` object: shorter first, then bytewise.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// A string in JSON, escaped as PostgreSQL's `escape_json` does.
pub fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Why text is not a `jsonb` value: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonError {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<JsonError> for datafusion::error::DataFusionError {
    fn from(e: JsonError) -> Self {
        user_error(e.code, e.message)
    }
}

fn syntax(detail: impl std::fmt::Display) -> JsonError {
    JsonError {
        code: sqlstate::INVALID_TEXT_REPRESENTATION,
        message: format!("invalid input syntax for type json: {detail}"),
    }
}

/// Reads `text` as a JSON document.
pub fn parse(text: &str) -> Result<Json, JsonError> {
    let mut parser = Parser {
        s: text.as_bytes(),
        text,
        pos: 0,
        expansion: (8 * text.len()).max(64 * 1024),
    };
    parser.ws();
    if parser.pos == parser.s.len() {
        return Err(syntax("the input string ended unexpectedly"));
    }
    let value = parser.value()?;
    parser.ws();
    if parser.pos != parser.s.len() {
        return Err(parser.unexpected("end of input"));
    }
    Ok(value)
}

/// `text` as a `jsonb` value's stored form, or why it is not one.
pub fn canonical(text: &str) -> Result<String, JsonError> {
    Ok(parse(text)?.to_text())
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    /// Digits the document's exponents may still add when written out (`1e9999` is 10,000
    /// characters): the stored form stays within a small multiple of the input.
    expansion: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn unexpected(&self, expected: &str) -> JsonError {
        if self.pos >= self.s.len() {
            return syntax("the input string ended unexpectedly");
        }
        let token: String = self.text[self.pos..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !",:[]{}".contains(*c))
            .take(20)
            .collect();
        let token = if token.is_empty() {
            self.text[self.pos..]
                .chars()
                .next()
                .unwrap_or(' ')
                .to_string()
        } else {
            token
        };
        syntax(format!("token \"{token}\" is invalid, expected {expected}"))
    }

    /// A value, nested ones included, without recursion (a deep document cannot exhaust the
    /// stack): containers being read wait on `open`.
    fn value(&mut self) -> Result<Json, JsonError> {
        enum Open {
            Array(Vec<Json>),
            /// Members so far and the key of the one being read.
            Object(Vec<(String, Json)>, String),
        }
        let mut open: Vec<Open> = Vec::new();
        loop {
            self.ws();
            let mut value = match self.s.get(self.pos) {
                Some(b'{' | b'[') => {
                    if open.len() >= MAX_DEPTH {
                        return Err(JsonError {
                            code: sqlstate::STATEMENT_TOO_COMPLEX,
                            message: format!("a JSON document may nest at most {MAX_DEPTH} levels"),
                        });
                    }
                    let object = self.s[self.pos] == b'{';
                    self.pos += 1;
                    self.ws();
                    let close = if object { b'}' } else { b']' };
                    if self.s.get(self.pos) == Some(&close) {
                        self.pos += 1;
                        if object {
                            Json::Object(Vec::new())
                        } else {
                            Json::Array(Vec::new())
                        }
                    } else {
                        open.push(if object {
                            Open::Object(Vec::new(), self.key()?)
                        } else {
                            Open::Array(Vec::new())
                        });
                        continue;
                    }
                }
                Some(b'"') => Json::String(self.string()?),
                Some(b'-' | b'0'..=b'9') => Json::Number(self.number()?),
                Some(b't') => self.word("true", Json::Bool(true))?,
                Some(b'f') => self.word("false", Json::Bool(false))?,
                Some(b'n') => self.word("null", Json::Null)?,
                _ => return Err(self.unexpected("a JSON value")),
            };
            // Hand the value to the container it is in; close containers that end here.
            loop {
                let Some(container) = open.last_mut() else {
                    return Ok(value);
                };
                let object = match container {
                    Open::Array(items) => {
                        items.push(value);
                        false
                    }
                    Open::Object(members, key) => {
                        members.push((std::mem::take(key), value));
                        true
                    }
                };
                self.ws();
                match self.s.get(self.pos) {
                    Some(b',') => {
                        self.pos += 1;
                        if let Open::Object(_, key) = container {
                            *key = self.key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        self.pos += 1;
                        value = match open.pop() {
                            Some(Open::Object(members, _)) => Json::object(members),
                            _ => return Err(self.unexpected("\"]\"")),
                        };
                    }
                    Some(b']') if !object => {
                        self.pos += 1;
                        value = match open.pop() {
                            Some(Open::Array(items)) => Json::Array(items),
                            _ => return Err(self.unexpected("\"}\"")),
                        };
                    }
                    _ => {
                        return Err(self.unexpected(if object {
                            "\",\" or \"}\""
                        } else {
                            "\",\" or \"]\""
                        }));
                    }
                }
            }
        }
    }

    /// An object's key and the `:` after it.
    fn key(&mut self) -> Result<String, JsonError> {
        self.ws();
        if self.s.get(self.pos) != Some(&b'"') {
            return Err(self.unexpected("a string"));
        }
        let key = self.string()?;
        self.ws();
        if self.s.get(self.pos) != Some(&b':') {
            return Err(self.unexpected("\":\""));
        }
        self.pos += 1;
        Ok(key)
    }

    fn word(&mut self, word: &str, value: Json) -> Result<Json, JsonError> {
        if self.s[self.pos..].starts_with(word.as_bytes())
            && !self
                .s
                .get(self.pos + word.len())
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.unexpected("a JSON value"))
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .s
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| syntax("\"\\u\" must be followed by four hexadecimal digits"))?;
        let value = u32::from_str_radix(digits, 16).map_err(syntax)?;
        self.pos += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(&b) = self.s.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.s.get(self.pos) {
                None => return Err(syntax("the input string ended unexpectedly")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escape = self.s.get(self.pos).copied();
                    self.pos += 1;
                    match escape {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => {
                            let mut code = self.hex4()?;
                            if code == 0 {
                                return Err(JsonError {
                                    code: "22P05",
                                    message: "unsupported Unicode escape sequence: \\u0000 cannot \
                                              be converted to text"
                                        .to_string(),
                                });
                            }
                            if (0xD800..0xDC00).contains(&code) {
                                if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return Err(syntax(
                                        "Unicode high surrogate must not follow a high surrogate \
                                         or stand alone",
                                    ));
                                }
                                self.pos += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(syntax(if (0xD800..0xDC00).contains(&low) {
                                        "Unicode high surrogate must not follow a high surrogate"
                                    } else {
                                        "Unicode low surrogate must follow a high surrogate"
                                    }));
                                }
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            } else if (0xDC00..0xE000).contains(&code) {
                                return Err(syntax(
                                    "Unicode low surrogate must follow a high surrogate",
                                ));
                            }
                            out.push(
                                char::from_u32(code)
                                    .ok_or_else(|| syntax("invalid Unicode escape value"))?,
                            );
                        }
                        Some(_) => {
                            return Err(syntax(
                                "escape sequence is invalid (a backslash must be followed by \
                                 one of \" \\ / b f n r t u)",
                            ));
                        }
                        None => return Err(syntax("the input string ended unexpectedly")),
                    }
                }
                Some(b) => {
                    return Err(syntax(format!(
                        "character with value 0x{b:02x} must be escaped"
                    )));
                }
            }
        }
    }

    /// A number, written as `numeric` prints it: `1e2` is `100`, `1.50` stays `1.50`, `2E-3`
    /// is `0.002`.
    fn number(&mut self) -> Result<String, JsonError> {
        let start = self.pos;
        let digits_from = |s: &[u8], mut pos: usize| {
            while s.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            pos
        };
        let negative = self.s.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_end = digits_from(self.s, self.pos);
        if int_end == int_start || (self.s[int_start] == b'0' && int_end - int_start > 1) {
            self.pos = start;
            return Err(self.unexpected("a JSON value"));
        }
        self.pos = int_end;
        let mut frac = (int_end, int_end);
        if self.s.get(self.pos) == Some(&b'.') {
            let end = digits_from(self.s, self.pos + 1);
            if end == self.pos + 1 {
                self.pos = start;
                return Err(self.unexpected("a JSON value"));
            }
            frac = (self.pos + 1, end);
            self.pos = end;
        }
        let mut exponent: i64 = 0;
        if let Some(b'e' | b'E') = self.s.get(self.pos) {
            let mut pos = self.pos + 1;
            let minus = self.s.get(pos) == Some(&b'-');
            if let Some(b'-' | b'+') = self.s.get(pos) {
                pos += 1;
            }
            let end = digits_from(self.s, pos);
            if end == pos {
                self.pos = start;
                return Err(self.unexpected("a JSON value"));
            }
            let text = &self.text[pos..end];
            let magnitude = text
                .parse::<i64>()
                .ok()
                .filter(|m| *m <= MAX_EXPONENT)
                .ok_or_else(|| JsonError {
                    code: sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                    message: "value overflows numeric format".to_string(),
                })?;
            exponent = if minus { -magnitude } else { magnitude };
            self.expansion = self
                .expansion
                .checked_sub(magnitude as usize)
                .ok_or_else(|| JsonError {
                    code: sqlstate::PROGRAM_LIMIT_EXCEEDED,
                    message: "a JSON document's numbers would be too long written out (their \
                              exponents add more digits than 8 per byte of input)"
                        .to_string(),
                })?;
            self.pos = end;
        }
        let followed = self
            .s
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'_');
        if followed {
            self.pos = start;
            return Err(self.unexpected("a JSON value"));
        }
        let int = &self.text[int_start..int_end];
        let fraction = &self.text[frac.0..frac.1];
        Ok(decimal_text(negative, int, fraction, exponent))
    }
}

/// `±int.fraction × 10^exponent` as `numeric` prints it.
fn decimal_text(negative: bool, int: &str, fraction: &str, exponent: i64) -> String {
    let digits: Vec<u8> = int.bytes().chain(fraction.bytes()).collect();
    // Where the decimal point falls among `digits`, and how many digits follow it.
    let point = int.len() as i64 + exponent;
    let scale = (fraction.len() as i64 - exponent).max(0);
    let mut out = String::new();
    let digit = |i: i64| {
        if i >= 0 && (i as usize) < digits.len() {
            digits[i as usize] as char
        } else {
            '0'
        }
    };
    let mut int_part: String = (0..point.max(0)).map(digit).collect();
    let trimmed = int_part.trim_start_matches('0').len();
    int_part.drain(..int_part.len() - trimmed);
    if int_part.is_empty() {
        int_part.push('0');
    }
    let frac_part: String = (point..point + scale).map(digit).collect();
    let zero = int_part == "0" && frac_part.bytes().all(|b| b == b'0');
    if negative && !zero {
        out.push('-');
    }
    out.push_str(&int_part);
    if scale > 0 {
        out.push('.');
        out.push_str(&frac_part);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reading stored values without building a tree.

/// A cursor over a document's text, for reading one member without parsing the rest.
struct Scan<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Self {
        let mut scan = Scan {
            s: text.as_bytes(),
            text,
            pos: 0,
        };
        scan.ws();
        scan
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skips a string at the cursor; returns its raw (still escaped) contents.
    fn string(&mut self) -> Option<&'a str> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.pos + 1;
        let mut pos = start;
        loop {
            match self.s.get(pos)? {
                b'"' => break,
                b'\\' => pos += 2,
                _ => pos += 1,
            }
        }
        self.pos = pos + 1;
        self.text.get(start..pos)
    }

    /// Skips the value at the cursor (without recursion); returns its text.
    fn value(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    self.pos += 1;
                }
                b',' | b':' if depth > 0 => self.pos += 1,
                b' ' | b'\t' | b'\n' | b'\r' if depth > 0 => self.ws(),
                _ => {
                    while self.peek().is_some_and(|b| !b" \t\n\r,:]}".contains(&b)) {
                        self.pos += 1;
                    }
                }
            }
            if depth == 0 {
                return self.text.get(start..self.pos);
            }
        }
    }

    /// The next member of an object or item of an array, after `{`/`[` or a previous one:
    /// `(key, value)` (no key in an array), `None` at the end.
    fn next_item(&mut self, first: &mut bool, object: bool) -> Option<(Option<&'a str>, &'a str)> {
        self.ws();
        if *first {
            *first = false;
        } else {
            if self.peek()? != b',' {
                return None;
            }
            self.pos += 1;
            self.ws();
        }
        if matches!(self.peek(), Some(b'}' | b']')) {
            return None;
        }
        let key = if object {
            let key = self.string()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            self.ws();
            Some(key)
        } else {
            None
        };
        let value = self.value()?;
        Some((key, value))
    }

    /// Enters an object or an array at the cursor; `Some(true)` for an object.
    fn open(&mut self) -> Option<bool> {
        let object = match self.peek()? {
            b'{' => true,
            b'[' => false,
            _ => return None,
        };
        self.pos += 1;
        Some(object)
    }
}

/// A raw JSON string's contents, unescaped (borrowed when there is nothing to unescape).
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let quoted = format!("\"{raw}\"");
    match parse(&quoted) {
        Ok(Json::String(s)) => Cow::Owned(s),
        _ => Cow::Borrowed(raw),
    }
}

/// The member `key` of an object.
fn member<'a>(doc: &'a str, key: &str) -> Option<&'a str> {
    let mut scan = Scan::new(doc);
    if scan.open()? {
        let mut first = true;
        while let Some((Some(k), value)) = scan.next_item(&mut first, true) {
            if unescape(k) == key {
                return Some(value);
            }
        }
    }
    None
}

/// The member `name` of a JSON record (a source's message) as a `jsonb` value: `None` when
/// the record has no such member or it is JSON null.
pub fn record_member(record: &str, name: &str) -> Result<Option<String>, JsonError> {
    // The last of repeated keys, as jsonb keeps it.
    let mut last = None;
    let mut scan = Scan::new(record);
    if scan.open() == Some(true) {
        let mut first = true;
        while let Some((Some(k), value)) = scan.next_item(&mut first, true) {
            if unescape(k) == name {
                last = Some(value);
            }
        }
    }
    match last {
        None => Ok(None),
        Some("null") => Ok(None),
        Some(value) => canonical(value).map(Some),
    }
}

/// The items of an array (`None` for anything else).
fn items(doc: &str) -> Option<Vec<&str>> {
    let mut scan = Scan::new(doc);
    if scan.open()? {
        return None;
    }
    let mut first = true;
    let mut out = Vec::new();
    while let Some((_, value)) = scan.next_item(&mut first, false) {
        out.push(value);
    }
    Some(out)
}

/// Item `index` of an array, counted from the end when negative.
fn item(doc: &str, index: i64) -> Option<&str> {
    let mut scan = Scan::new(doc);
    if scan.open()? {
        return None;
    }
    if index < 0 {
        let all = items(doc)?;
        let at = all.len() as i64 + index;
        return (at >= 0).then(|| all[at as usize]);
    }
    let mut first = true;
    let mut i = 0;
    while let Some((_, value)) = scan.next_item(&mut first, false) {
        if i == index {
            return Some(value);
        }
        i += 1;
    }
    None
}

/// Follows a path of keys (or array positions) from `doc`.
fn path<'a>(doc: &'a str, steps: impl Iterator<Item = Option<&'a str>>) -> Option<&'a str> {
    let mut at = doc;
    for step in steps {
        let step = step?;
        at = match Scan::new(at).peek()? {
            b'{' => member(at, step)?,
            // Leading spaces only, as PostgreSQL reads the position.
            b'[' => item(at, step.trim_start().parse().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// A member's value as text (`->>`): a string unescaped, `null` as SQL NULL, else the JSON.
fn as_text(value: &str) -> Option<Cow<'_, str>> {
    match value.as_bytes().first()? {
        b'"' => Some(unescape(
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value),
        )),
        b'n' => None,
        _ => Some(Cow::Borrowed(value)),
    }
}

fn type_name(value: &str) -> &'static str {
    match value.trim_start().as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

// ---------------------------------------------------------------------------------------------
// Planning.

/// Plans the `jsonb` operators when an operand is `jsonb`.
#[derive(Debug)]
pub struct JsonbOperators;

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(ours(name), args))
}

/// One of the functions of [`functions`], by name.
fn ours(name: &str) -> Arc<ScalarUDF> {
    Arc::clone(
        FUNCTIONS
            .iter()
            .find(|f| f.name() == name)
            .expect("a jsonb function of ours"),
    )
}

/// A text operand read as `jsonb` (a literal `'{"a": 1}'`, as PostgreSQL reads an untyped
/// literal next to a `jsonb`).
fn as_jsonb(e: Expr, t: &DataType) -> Expr {
    if matches!(t, DataType::Utf8 | DataType::Utf8View) {
        Expr::Cast(Cast::new(Box::new(e), JSONB))
    } else {
        e
    }
}

fn text_array() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

impl ExprPlanner for JsonbOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        // Typing an operand costs a walk of it: only for the operators `jsonb` has, the right
        // one only where the left one does not decide.
        let ours = matches!(
            expr.op,
            SqlOperator::Arrow
                | SqlOperator::LongArrow
                | SqlOperator::HashArrow
                | SqlOperator::HashLongArrow
                | SqlOperator::AtArrow
                | SqlOperator::ArrowAt
                | SqlOperator::Question
                | SqlOperator::QuestionPipe
                | SqlOperator::QuestionAnd
                | SqlOperator::StringConcat
                | SqlOperator::Minus
                | SqlOperator::HashMinus
        );
        if !ours {
            return Ok(PlannerResult::Original(expr));
        }
        let Ok(l) = expr.left.get_type(schema) else {
            return Ok(PlannerResult::Original(expr));
        };
        let either_side = matches!(
            expr.op,
            SqlOperator::ArrowAt | SqlOperator::AtArrow | SqlOperator::StringConcat
        );
        let r = if is_jsonb(&l) || either_side {
            match expr.right.get_type(schema) {
                Ok(r) => r,
                Err(_) => return Ok(PlannerResult::Original(expr)),
            }
        } else {
            DataType::Null
        };
        if !(is_jsonb(&l) || (either_side && is_jsonb(&r))) {
            return Ok(PlannerResult::Original(expr));
        }
        let RawBinaryExpr { op, left, right } = expr;
        let to_text_array = |e: Expr| Expr::Cast(Cast::new(Box::new(e), text_array()));
        let planned = match op {
            SqlOperator::Arrow => call("jsonb_get", vec![left, right]),
            SqlOperator::LongArrow => call("jsonb_get_text", vec![left, right]),
            SqlOperator::HashArrow => call("jsonb_extract_path", vec![left, to_text_array(right)]),
            SqlOperator::HashLongArrow => {
                call("jsonb_extract_path_text", vec![left, to_text_array(right)])
            }
            SqlOperator::AtArrow => call(
                "jsonb_contains",
                vec![as_jsonb(left, &l), as_jsonb(right, &r)],
            ),
            SqlOperator::ArrowAt => call(
                "jsonb_contains",
                vec![as_jsonb(right, &r), as_jsonb(left, &l)],
            ),
            SqlOperator::Question => call("jsonb_exists", vec![left, right]),
            SqlOperator::QuestionPipe => call("jsonb_exists_any", vec![left, to_text_array(right)]),
            SqlOperator::QuestionAnd => call("jsonb_exists_all", vec![left, to_text_array(right)]),
            // `jsonb || jsonb` (an untyped literal counts as one); with text, or anything
            // else, `||` is text concatenation of the jsonb's text, as in PostgreSQL.
            SqlOperator::StringConcat => {
                let jsonb_or_literal = |e: &Expr, t: &DataType| {
                    is_jsonb(t)
                        || matches!(e, Expr::Literal(..))
                            && matches!(t, DataType::Utf8 | DataType::Utf8View)
                };
                if jsonb_or_literal(&left, &l) && jsonb_or_literal(&right, &r) {
                    call(
                        "jsonb_concat",
                        vec![as_jsonb(left, &l), as_jsonb(right, &r)],
                    )
                } else {
                    let text = |e: Expr| Expr::Cast(Cast::new(Box::new(e), DataType::Utf8));
                    return Ok(PlannerResult::Original(RawBinaryExpr {
                        op: SqlOperator::StringConcat,
                        left: text(left),
                        right: text(right),
                    }));
                }
            }
            SqlOperator::Minus => call("jsonb_delete", vec![left, right]),
            SqlOperator::HashMinus => call("jsonb_delete_path", vec![left, right]),
            op => {
                return Ok(PlannerResult::Original(RawBinaryExpr { op, left, right }));
            }
        };
        Ok(PlannerResult::Planned(planned))
    }
}

// ---------------------------------------------------------------------------------------------
// Functions.

fn jsonb_type(_: &[DataType]) -> DataType {
    JSONB
}
fn text_type(_: &[DataType]) -> DataType {
    DataType::Utf8
}
fn bool_type(_: &[DataType]) -> DataType {
    DataType::Boolean
}
fn int_type(_: &[DataType]) -> DataType {
    DataType::Int32
}

/// A `jsonb` argument; text (an untyped literal, `jsonb_typeof('[1]')`) is read as `jsonb`.
fn docs(a: &ArrayRef) -> DfResult<LargeStringArray> {
    match a.data_type() {
        DataType::LargeUtf8 => Ok(a.as_string::<i64>().clone()),
        DataType::Utf8 | DataType::Utf8View => Ok(jsonb_in(std::slice::from_ref(a))?
            .as_string::<i64>()
            .clone()),
        DataType::Null => Ok(LargeStringArray::new_null(a.len())),
        other => Err(user_error(
            sqlstate::UNDEFINED_FUNCTION,
            format!(
                "expected jsonb, found {}",
                crate::catalog::pg_types::pg_type_name(other)
            ),
        )),
    }
}

/// Text arguments as `&str` per row, whatever string type they come as.
fn texts(a: &ArrayRef) -> DfResult<Vec<Option<&str>>> {
    Ok(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().iter().collect(),
        DataType::LargeUtf8 => a.as_string::<i64>().iter().collect(),
        DataType::Utf8View => a.as_string_view().iter().collect(),
        DataType::Null => vec![None; a.len()],
        other => {
            return Err(user_error(
                sqlstate::DATATYPE_MISMATCH,
                format!("expected text, found {other}"),
            ));
        }
    })
}

/// A text array argument (a path or a list of keys) per row.
fn text_lists(a: &ArrayRef) -> DfResult<Vec<Option<Vec<Option<String>>>>> {
    let DataType::List(_) = a.data_type() else {
        return Err(user_error(
            sqlstate::DATATYPE_MISMATCH,
            format!("expected text[], found {}", a.data_type()),
        ));
    };
    let list = a.as_list::<i32>();
    (0..list.len())
        .map(|i| {
            if list.is_null(i) {
                return Ok(None);
            }
            let values = datafusion::arrow::compute::cast(&list.value(i), &DataType::Utf8)?;
            Ok(Some(
                values
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::to_string))
                    .collect(),
            ))
        })
        .collect()
}

/// Per row, the stored text of a `jsonb` argument, parsed.
fn parsed(doc: &str) -> DfResult<Json> {
    Ok(parse(doc)?)
}

/// An integer argument (a position) as `Int64`; `None` for a key.
fn int_index(a: &ArrayRef) -> DfResult<Option<ArrayRef>> {
    Ok(if a.data_type().is_integer() {
        Some(datafusion::arrow::compute::cast(a, &DataType::Int64)?)
    } else {
        None
    })
}

/// `->` and `->>`: a member by key, or an item by position.
fn get(args: &[ArrayRef], as_text_out: bool) -> DfResult<ArrayRef> {
    let doc = docs(&args[0])?;
    let index = int_index(&args[1])?;
    let keys = match &index {
        None => Some(texts(&args[1])?),
        Some(_) => None,
    };
    let value = |row: usize| -> Option<&str> {
        if doc.is_null(row) {
            return None;
        }
        let d = doc.value(row);
        match (&index, &keys) {
            (Some(index), _) => {
                let index = index.as_primitive::<Int64Type>();
                if index.is_null(row) {
                    return None;
                }
                item(d, index.value(row))
            }
            (None, Some(keys)) => member(d, keys[row]?),
            _ => None,
        }
    };
    emit(doc.len(), value, as_text_out)
}

/// The found values of each row as `jsonb`, or as text (`->>`).
fn emit<'a>(
    rows: usize,
    value: impl Fn(usize) -> Option<&'a str>,
    as_text_out: bool,
) -> DfResult<ArrayRef> {
    if as_text_out {
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for row in 0..rows {
            out.append_option(value(row).and_then(as_text));
        }
        Ok(Arc::new(out.finish()))
    } else {
        let mut out = LargeStringBuilder::with_capacity(rows, rows * 8);
        for row in 0..rows {
            out.append_option(value(row));
        }
        Ok(Arc::new(out.finish()))
    }
}

/// `#>`, `#>>`, `jsonb_extract_path[_text]`.
fn extract_path(args: &[ArrayRef], as_text_out: bool) -> DfResult<ArrayRef> {
    let doc = docs(&args[0])?;
    // `jsonb_extract_path(j, VARIADIC text)`: the path is the remaining arguments, or one
    // text[] (from `#>`).
    enum Steps<'a> {
        Lists(Vec<Option<Vec<Option<String>>>>),
        Columns(Vec<Vec<Option<&'a str>>>),
    }
    let steps = if args.len() == 2 && matches!(args[1].data_type(), DataType::List(_)) {
        Steps::Lists(text_lists(&args[1])?)
    } else {
        Steps::Columns(args[1..].iter().map(texts).collect::<DfResult<_>>()?)
    };
    let value = |row: usize| -> Option<&str> {
        if doc.is_null(row) {
            return None;
        }
        match &steps {
            Steps::Lists(lists) => {
                let list = lists[row].as_ref()?;
                path(doc.value(row), list.iter().map(|s| s.as_deref()))
            }
            Steps::Columns(columns) => path(doc.value(row), columns.iter().map(|c| c[row])),
        }
    };
    emit(doc.len(), value, as_text_out)
}

fn typeof_(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let doc = docs(&args[0])?;
    let mut out = StringBuilder::with_capacity(doc.len(), doc.len() * 6);
    for d in doc.iter() {
        out.append_option(d.map(type_name));
    }
    Ok(Arc::new(out.finish()))
}

fn array_length(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let doc = docs(&args[0])?;
    let mut out = Int32Builder::with_capacity(doc.len());
    for d in doc.iter() {
        match d {
            None => out.append_null(),
            Some(d) => match items(d) {
                Some(items) => out.append_value(items.len() as i32),
                None => {
                    return Err(user_error(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!(
                            "cannot get array length of a {}",
                            match type_name(d) {
                                "object" => "non-array",
                                _ => "scalar",
                            }
                        ),
                    ));
                }
            },
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `@>`: whether the first contains the second.
fn contains(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let (left, right) = (docs(&args[0])?, docs(&args[1])?);
    let mut out = BooleanBuilder::with_capacity(left.len());
    // The right side is most often one literal for every row: parsed once while it repeats.
    let mut wanted: Option<(&str, Json)> = None;
    for (l, r) in left.iter().zip(right.iter()) {
        match (l, r) {
            (Some(l), Some(r)) => {
                if wanted.as_ref().is_none_or(|(text, _)| *text != r) {
                    wanted = Some((r, parsed(r)?));
                }
                let Some((_, wanted)) = &wanted else {
                    out.append_null();
                    continue;
                };
                out.append_value(parsed(l)?.contains(wanted))
            }
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `?`, `?|`, `?&`: whether a key (or a string item of an array, or the string itself) is
/// there.
fn has_key(doc: &str, key: &str) -> bool {
    let mut scan = Scan::new(doc);
    match scan.peek() {
        Some(b'{') => member(doc, key).is_some(),
        Some(b'[') => items(doc).is_some_and(|items| {
            items
                .iter()
                .any(|i| as_text(i).is_some_and(|t| i.starts_with('"') && t == key))
        }),
        Some(b'"') => scan.string().is_some_and(|s| unescape(s) == key),
        _ => false,
    }
}

fn exists(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let doc = docs(&args[0])?;
    let keys = texts(&args[1])?;
    let mut out = BooleanBuilder::with_capacity(doc.len());
    for (d, k) in doc.iter().zip(keys) {
        match (d, k) {
            (Some(d), Some(k)) => out.append_value(has_key(d, k)),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

fn exists_many(args: &[ArrayRef], all: bool) -> DfResult<ArrayRef> {
    let doc = docs(&args[0])?;
    let lists = text_lists(&args[1])?;
    let mut out = BooleanBuilder::with_capacity(doc.len());
    for (d, keys) in doc.iter().zip(lists) {
        match (d, keys) {
            (Some(d), Some(keys)) => {
                // NULL keys are ignored, as in PostgreSQL.
                let mut keys = keys.iter().flatten();
                out.append_value(if all {
                    keys.all(|k| has_key(d, k))
                } else {
                    keys.any(|k| has_key(d, k))
                })
            }
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `||`: objects merge (the right one's keys win), arrays concatenate, anything else is
/// wrapped into an array first.
fn concat(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let (left, right) = (docs(&args[0])?, docs(&args[1])?);
    let mut out = LargeStringBuilder::with_capacity(left.len(), left.len() * 16);
    for (l, r) in left.iter().zip(right.iter()) {
        let (Some(l), Some(r)) = (l, r) else {
            out.append_null();
            continue;
        };
        let joined = match (parsed(l)?, parsed(r)?) {
            (Json::Object(mut a), Json::Object(b)) => {
                a.extend(b);
                Json::object(a)
            }
            (Json::Array(mut a), Json::Array(b)) => {
                a.extend(b);
                Json::Array(a)
            }
            (Json::Array(mut a), b) => {
                a.push(b);
                Json::Array(a)
            }
            (a, Json::Array(b)) => {
                let mut items = vec![a];
                items.extend(b);
                Json::Array(items)
            }
            (a, b) => Json::Array(vec![a, b]),
        };
        out.append_value(joined.to_text());
    }
    Ok(Arc::new(out.finish()))
}

/// `-`: a key from an object (or matching strings from an array), or an item by position.
fn delete(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    if matches!(args[1].data_type(), DataType::List(_)) {
        return delete_keys(args);
    }
    let doc = docs(&args[0])?;
    let indexes = int_index(&args[1])?;
    let by_index = indexes.is_some();
    let keys = if by_index {
        None
    } else {
        Some(texts(&args[1])?)
    };
    let mut out = LargeStringBuilder::with_capacity(doc.len(), doc.len() * 16);
    for row in 0..doc.len() {
        if doc.is_null(row) || args[1].is_null(row) {
            out.append_null();
            continue;
        }
        let value = parsed(doc.value(row))?;
        let result = match (value, &indexes, &keys) {
            (value, None, Some(keys)) => {
                let key = keys[row].unwrap_or_default();
                without_keys(value, |k| k == key)?
            }
            (Json::Array(mut items), Some(indexes), _) => {
                let i = indexes.as_primitive::<Int64Type>().value(row);
                let at = if i < 0 { items.len() as i64 + i } else { i };
                if at >= 0 && (at as usize) < items.len() {
                    items.remove(at as usize);
                }
                Json::Array(items)
            }
            (Json::Object(_), Some(_), _) => {
                return Err(user_error(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "cannot delete from object using integer index".to_string(),
                ));
            }
            _ => {
                return Err(user_error(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "cannot delete from scalar".to_string(),
                ));
            }
        };
        out.append_value(result.to_text());
    }
    Ok(Arc::new(out.finish()))
}

/// A `text[]` argument given as a list, or as text in PostgreSQL's array syntax (`'{a,0}'`).
fn path_lists(a: &ArrayRef) -> DfResult<Vec<Option<Vec<Option<String>>>>> {
    match a.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let item = Arc::new(Field::new("item", DataType::Utf8, true));
            text_lists(&super::pg_semantics::array_in(a, &item)?)
        }
        DataType::Null => Ok(vec![None; a.len()]),
        _ => text_lists(a),
    }
}

/// `jsonb_set(target, path, new_value [, create_if_missing])`: `target` with the value at
/// `path` replaced by `new_value`, or added where only the last step is missing (unless
/// `create_if_missing` is false), as PostgreSQL's `setPath` does. NULL in, NULL out.
fn set(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let doc = docs(&args[0])?;
    let paths = path_lists(&args[1])?;
    let values = docs(&args[2])?;
    let create = match args.get(3) {
        Some(a) => Some(booleans(a)?),
        None => None,
    };
    let mut out = LargeStringBuilder::with_capacity(doc.len(), doc.len() * 16);
    for (row, path) in paths.iter().enumerate() {
        let create_row = match &create {
            Some(c) if c.is_null(row) => None,
            Some(c) => Some(c.value(row)),
            None => Some(true),
        };
        let (Some(path), Some(create_row)) = (path, create_row) else {
            out.append_null();
            continue;
        };
        if doc.is_null(row) || values.is_null(row) {
            out.append_null();
            continue;
        }
        let (steps, mut target) = path_target(doc.value(row), path, "set")?;
        // As PostgreSQL: an empty document with nothing to create is returned as it is.
        if !steps.is_empty() && (!is_empty(&target) || create_row) {
            let value = Some(parsed(values.value(row))?);
            set_path(&mut target, &steps, 0, value, create_row)?;
        }
        out.append_value(target.to_text());
    }
    Ok(Arc::new(out.finish()))
}

/// A path's steps and the document it goes into, which may not be a scalar ("cannot {verb}
/// path in scalar", 22023).
fn path_target<'a>(
    doc: &str,
    path: &'a [Option<String>],
    verb: &str,
) -> DfResult<(Vec<Option<&'a str>>, Json)> {
    let target = parsed(doc)?;
    if target.is_scalar() {
        return Err(user_error(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("cannot {verb} path in scalar"),
        ));
    }
    Ok((path.iter().map(Option::as_deref).collect(), target))
}

/// An empty object or array.
fn is_empty(doc: &Json) -> bool {
    matches!(doc, Json::Array(v) if v.is_empty()) || matches!(doc, Json::Object(m) if m.is_empty())
}

/// `jsonb #- text[]` (`jsonb_delete_path`): `target` without the member or element at `path`
/// (a negative position counts from the end), or as it is where the path finds nothing, as
/// PostgreSQL's `jsonb_delete_path`. NULL in, NULL out.
fn delete_path(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let doc = docs(&args[0])?;
    let paths = path_lists(&args[1])?;
    let mut out = LargeStringBuilder::with_capacity(doc.len(), doc.len() * 16);
    for (row, path) in paths.iter().enumerate() {
        let Some(path) = path.as_ref().filter(|_| !doc.is_null(row)) else {
            out.append_null();
            continue;
        };
        let (steps, mut target) = path_target(doc.value(row), path, "delete")?;
        if !steps.is_empty() && !is_empty(&target) {
            set_path(&mut target, &steps, 0, None, false)?;
        }
        out.append_value(target.to_text());
    }
    Ok(Arc::new(out.finish()))
}

/// A boolean argument; text is read as PostgreSQL reads a boolean (22P02 when it is none).
fn booleans(a: &ArrayRef) -> DfResult<datafusion::arrow::array::BooleanArray> {
    let cast = datafusion::arrow::compute::cast(a, &DataType::Boolean)?;
    let cast = cast.as_boolean().clone();
    if matches!(
        a.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        for (row, text) in texts(a)?.into_iter().enumerate() {
            if let Some(text) = text
                && cast.is_null(row)
            {
                return Err(user_error(
                    sqlstate::INVALID_TEXT_REPRESENTATION,
                    format!("invalid input syntax for type boolean: \"{text}\""),
                ));
            }
        }
    }
    Ok(cast)
}

/// A path step into an array as PostgreSQL reads it (`strtoint`): a 32-bit integer, blanks
/// allowed before it and nothing after.
fn array_step(step: &str) -> Option<i64> {
    step.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r'])
        .parse::<i32>()
        .ok()
        .map(i64::from)
}

/// Sets `steps[level..]` under `node` to `value` (see [`set`]), or deletes what is there
/// where `value` is `None` (see [`delete_path`]); a step that finds nothing, or a scalar,
/// before the last leaves the document as it is. A NULL step is an error once it is reached
/// (22004), as in PostgreSQL.
fn set_path(
    node: &mut Json,
    steps: &[Option<&str>],
    level: usize,
    value: Option<Json>,
    create: bool,
) -> DfResult<()> {
    let last = level + 1 == steps.len();
    // As PostgreSQL's setPath: a NULL step is refused once reached, even at a scalar.
    let Some(step) = steps[level] else {
        return Err(user_error(
            sqlstate::NULL_VALUE_NOT_ALLOWED,
            format!("path element at position {} is null", level + 1),
        ));
    };
    match node {
        Json::Object(members) => match members.binary_search_by(|(k, _)| key_order(k, step)) {
            Ok(i) if last => match value {
                Some(value) => members[i].1 = value,
                None => {
                    members.remove(i);
                }
            },
            Ok(i) => set_path(&mut members[i].1, steps, level + 1, value, create)?,
            Err(i) if last && create => {
                if let Some(value) = value {
                    members.insert(i, (step.to_string(), value));
                }
            }
            Err(_) => {}
        },
        Json::Array(items) => {
            let index: i64 = array_step(step).ok_or_else(|| {
                user_error(
                    sqlstate::INVALID_TEXT_REPRESENTATION,
                    format!(
                        "path element at position {} is not an integer: \"{step}\"",
                        level + 1
                    ),
                )
            })?;
            let n = items.len() as i64;
            let at = if index < 0 { n + index } else { index };
            if (0..n).contains(&at) {
                match value {
                    _ if !last => {
                        set_path(&mut items[at as usize], steps, level + 1, value, create)?
                    }
                    Some(value) => items[at as usize] = value,
                    None => {
                        items.remove(at as usize);
                    }
                }
            } else if let Some(value) = value.filter(|_| last && create) {
                // Before the first element or past the last: prepended or appended.
                if at < 0 {
                    items.insert(0, value);
                } else {
                    items.push(value);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `jsonb - text[]`: an object without any of the keys, an array without the strings equal to
/// any of them (NULL elements match nothing), as PostgreSQL's `jsonb_delete_array`.
fn delete_keys(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let doc = docs(&args[0])?;
    let lists = text_lists(&args[1])?;
    let mut out = LargeStringBuilder::with_capacity(doc.len(), doc.len() * 16);
    for (row, keys) in lists.iter().enumerate() {
        let Some(keys) = keys.as_ref().filter(|_| !doc.is_null(row)) else {
            out.append_null();
            continue;
        };
        let gone = |k: &str| keys.iter().flatten().any(|key| key == k);
        out.append_value(without_keys(parsed(doc.value(row))?, gone)?.to_text());
    }
    Ok(Arc::new(out.finish()))
}

/// `value` without the object members, or the array's string elements, that `gone` names
/// (`jsonb - text` and `jsonb - text[]`); a scalar is 22023.
fn without_keys(value: Json, gone: impl Fn(&str) -> bool) -> DfResult<Json> {
    Ok(match value {
        Json::Object(members) => {
            Json::Object(members.into_iter().filter(|(k, _)| !gone(k)).collect())
        }
        Json::Array(items) => Json::Array(
            items
                .into_iter()
                .filter(|i| !matches!(i, Json::String(s) if gone(s)))
                .collect(),
        ),
        _ => {
            return Err(user_error(
                sqlstate::INVALID_PARAMETER_VALUE,
                "cannot delete from scalar".to_string(),
            ));
        }
    })
}

fn map_docs(args: &[ArrayRef], f: fn(Json) -> Json, pretty: bool) -> DfResult<ArrayRef> {
    let doc = docs(&args[0])?;
    let rows = doc.len();
    let mut out_jsonb = LargeStringBuilder::with_capacity(rows, rows * 16);
    let mut out_text = StringBuilder::with_capacity(rows, rows * 16);
    for d in doc.iter() {
        match d {
            None if pretty => out_text.append_null(),
            None => out_jsonb.append_null(),
            Some(d) => {
                let value = f(parsed(d)?);
                if pretty {
                    let mut text = String::new();
                    value.write_pretty(0, &mut text);
                    out_text.append_value(text);
                } else {
                    out_jsonb.append_value(value.to_text());
                }
            }
        }
    }
    Ok(if pretty {
        Arc::new(out_text.finish())
    } else {
        Arc::new(out_jsonb.finish())
    })
}

/// `to_jsonb` of row `row` of `a`: SQL values as JSON (`NULL` is JSON null here; the caller
/// decides where SQL NULL is wanted instead).
#[recursive::recursive]
fn to_json(a: &ArrayRef, row: usize) -> DfResult<Json> {
    if a.data_type() == &DataType::Null || a.is_null(row) {
        return Ok(Json::Null);
    }
    macro_rules! number {
        ($t:ty) => {
            Json::Number(a.as_primitive::<$t>().value(row).to_string())
        };
    }
    let float = |v: f64| {
        if v.is_finite() {
            // Shortest text that reads back, as PostgreSQL prints float8.
            let text = format!("{v}");
            match parse(&text) {
                Ok(json @ Json::Number(_)) => json,
                _ => Json::String(text),
            }
        } else if v.is_nan() {
            Json::String("NaN".to_string())
        } else if v > 0.0 {
            Json::String("Infinity".to_string())
        } else {
            Json::String("-Infinity".to_string())
        }
    };
    Ok(match a.data_type() {
        DataType::Boolean => Json::Bool(a.as_boolean().value(row)),
        DataType::Int8 => number!(Int8Type),
        DataType::Int16 => number!(Int16Type),
        DataType::Int32 => number!(Int32Type),
        DataType::Int64 => number!(Int64Type),
        DataType::UInt8 => number!(UInt8Type),
        DataType::UInt16 => number!(UInt16Type),
        DataType::UInt32 => number!(UInt32Type),
        DataType::UInt64 => number!(UInt64Type),
        DataType::Float32 => {
            // f32's own shortest text (`0.1`, not the f64 widening `0.10000000149011612`).
            let v = a.as_primitive::<Float32Type>().value(row);
            if v.is_finite() {
                parse(&format!("{v}")).unwrap_or_else(|_| float(v as f64))
            } else {
                float(v as f64)
            }
        }
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(..) => {
            let text = datafusion::arrow::util::display::array_value_to_string(a, row)?;
            parse(&text).unwrap_or(Json::String(text))
        }
        DataType::LargeUtf8 => parsed(a.as_string::<i64>().value(row))?,
        DataType::Utf8 => Json::String(a.as_string::<i32>().value(row).to_string()),
        DataType::Utf8View => Json::String(a.as_string_view().value(row).to_string()),
        DataType::Date32 => {
            let days = a.as_primitive::<Date32Type>().value(row);
            Json::String(
                datafusion::arrow::temporal_conversions::date32_to_datetime(days)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
            )
        }
        DataType::Timestamp(_, tz) => {
            let text = datafusion::arrow::util::display::array_value_to_string(a, row)?;
            // ISO 8601 as PostgreSQL writes a timestamp in JSON: `2024-01-02T03:04:05`.
            let mut text = text.replacen(' ', "T", 1);
            // PostgreSQL prints only the digits of the fraction that are not trailing zeros.
            if let Some(dot) = text.find('.') {
                let end = text[dot..]
                    .find(|c: char| !c.is_ascii_digit() && c != '.')
                    .map_or(text.len(), |i| dot + i);
                let digits = text[dot + 1..end].trim_end_matches('0').len();
                let cut = if digits == 0 { dot } else { dot + 1 + digits };
                text.replace_range(cut..end, "");
            }
            if tz.is_some() && text.ends_with('Z') {
                text.truncate(text.len() - 1);
                text.push_str("+00:00");
            }
            Json::String(text)
        }
        DataType::List(_) => {
            let list = a.as_list::<i32>();
            let values = list.value(row);
            Json::Array(
                (0..values.len())
                    .map(|i| to_json(&values, i))
                    .collect::<DfResult<_>>()?,
            )
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            Json::object(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| Ok((f.name().clone(), to_json(c, row)?)))
                    .collect::<DfResult<_>>()?,
            )
        }
        _ => Json::String(datafusion::arrow::util::display::array_value_to_string(
            a, row,
        )?),
    })
}

fn to_jsonb(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let a = &args[0];
    let mut out = LargeStringBuilder::with_capacity(a.len(), a.len() * 8);
    for row in 0..a.len() {
        if a.is_null(row) {
            out.append_null();
        } else {
            out.append_value(to_json(a, row)?.to_text());
        }
    }
    Ok(Arc::new(out.finish()))
}

fn rows_of(args: &[ArrayRef]) -> usize {
    args.first().map_or(1, |a| a.len())
}

fn build_array(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let rows = rows_of(args);
    let mut out = LargeStringBuilder::with_capacity(rows, rows * 16);
    for row in 0..rows {
        let items = args
            .iter()
            .map(|a| to_json(a, row))
            .collect::<DfResult<Vec<_>>>()?;
        out.append_value(Json::Array(items).to_text());
    }
    Ok(Arc::new(out.finish()))
}

fn build_object(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    if !args.len().is_multiple_of(2) {
        return Err(user_error(
            sqlstate::INVALID_PARAMETER_VALUE,
            "argument list must have even number of elements".to_string(),
        ));
    }
    let rows = rows_of(args);
    let mut out = LargeStringBuilder::with_capacity(rows, rows * 16);
    for row in 0..rows {
        let mut members = Vec::with_capacity(args.len() / 2);
        for (i, pair) in args.chunks(2).enumerate() {
            let key = match to_json(&pair[0], row)? {
                Json::Null => {
                    return Err(user_error(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("argument {}: key must not be null", 2 * i + 1),
                    ));
                }
                Json::String(s) | Json::Number(s) => s,
                Json::Bool(b) => b.to_string(),
                _ => {
                    return Err(user_error(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        "key value must be scalar, not array, composite, or json".to_string(),
                    ));
                }
            };
            members.push((key, to_json(&pair[1], row)?));
        }
        out.append_value(Json::object(members).to_text());
    }
    Ok(Arc::new(out.finish()))
}

/// `jsonb_object_agg`'s result from the keys and values its group aggregated, in one order.
fn object_of(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let rows = args[0].len();
    let mut out = LargeStringBuilder::with_capacity(rows, rows * 16);
    let lists = |a: &ArrayRef| -> DfResult<Option<datafusion::arrow::array::ListArray>> {
        Ok(match a.data_type() {
            DataType::List(_) => Some(a.as_list::<i32>().clone()),
            DataType::Null => None,
            other => {
                return Err(user_error(
                    sqlstate::DATATYPE_MISMATCH,
                    format!("expected an array, found {other}"),
                ));
            }
        })
    };
    let (Some(keys), Some(values)) = (lists(&args[0])?, lists(&args[1])?) else {
        return Ok(Arc::new(LargeStringArray::new_null(rows)));
    };
    for row in 0..rows {
        if keys.is_null(row) || values.is_null(row) {
            out.append_null();
            continue;
        }
        let (k, v) = (keys.value(row), values.value(row));
        let mut members = Vec::with_capacity(k.len());
        for i in 0..k.len().min(v.len()) {
            let key = match to_json(&k, i)? {
                Json::Null => {
                    return Err(user_error(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        "field name must not be null".to_string(),
                    ));
                }
                Json::String(s) | Json::Number(s) => s,
                other => other.to_text(),
            };
            members.push((key, to_json(&v, i)?));
        }
        out.append_value(Json::object(members).to_text());
    }
    Ok(Arc::new(out.finish()))
}

/// Text read as `jsonb` (a cast, `INSERT`, `COPY`): 22P02 for text that is not JSON.
fn jsonb_in(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let values = texts(&args[0])?;
    let mut out = LargeStringBuilder::with_capacity(values.len(), values.len() * 16);
    for v in values {
        match v {
            None => out.append_null(),
            Some(v) => out.append_value(canonical(v)?),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Text read as `jsonb`, for the analyzer's casts and the loaders.
pub fn jsonb_in_array(values: &ArrayRef) -> DfResult<ArrayRef> {
    jsonb_in(std::slice::from_ref(values))
}

/// A cast of `jsonb` to a number or a boolean: the value must be one (22023 otherwise).
pub fn jsonb_to(values: &ArrayRef, target: &DataType) -> DfResult<ArrayRef> {
    let doc = docs(values)?;
    let want_bool = *target == DataType::Boolean;
    let mut texts = StringBuilder::with_capacity(doc.len(), doc.len() * 4);
    for d in doc.iter() {
        let Some(d) = d else {
            texts.append_null();
            continue;
        };
        let kind = type_name(d);
        if (want_bool && kind != "boolean") || (!want_bool && kind != "number") {
            return Err(user_error(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "cannot cast jsonb {kind} to type {}",
                    crate::catalog::pg_types::pg_type_name(target)
                ),
            ));
        }
        texts.append_value(d.trim());
    }
    let texts: ArrayRef = Arc::new(texts.finish());
    let unsafe_cast = datafusion::arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let out_of_range = |_: ()| {
        user_error(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            format!(
                "{} out of range",
                crate::catalog::pg_types::pg_type_name(target)
            ),
        )
    };
    if target.is_integer() {
        // A stored number is a plain decimal: its whole part, rounded half away from zero by
        // its first fractional digit, as PostgreSQL's numeric to integer cast rounds.
        let text = texts.as_string::<i32>();
        let whole: datafusion::arrow::array::Int64Array = text
            .iter()
            .map(|t| {
                t.map(|t| {
                    let (int, fraction) = t.split_once('.').unwrap_or((t, ""));
                    let value: i64 = int.parse().map_err(|_| out_of_range(()))?;
                    let up = fraction.as_bytes().first().is_some_and(|d| *d >= b'5');
                    let away = if int.starts_with('-') { -1 } else { 1 };
                    value
                        .checked_add(if up { away } else { 0 })
                        .ok_or_else(|| out_of_range(()))
                })
                .transpose()
            })
            .collect::<DfResult<_>>()?;
        return datafusion::arrow::compute::cast_with_options(&whole, target, &unsafe_cast)
            .map_err(|_| out_of_range(()));
    }
    if let Some(parsed) = super::pg_semantics::parse_text(&texts, target) {
        return parsed;
    }
    datafusion::arrow::compute::cast_with_options(&texts, target, &unsafe_cast)
        .map_err(|_| out_of_range(()))
}

/// The `jsonb` functions and the functions behind the operators.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    FUNCTIONS.clone()
}

static FUNCTIONS: LazyLock<Vec<Arc<ScalarUDF>>> = LazyLock::new(build_functions);

fn build_functions() -> Vec<Arc<ScalarUDF>> {
    let any = |n| Signature::any(n, Volatility::Immutable);
    let variadic = Signature::one_of(
        vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
        Volatility::Immutable,
    );
    let mut out = vec![
        udf_with("jsonb_get", any(2), jsonb_type, |a| get(a, false)),
        udf_with("jsonb_get_text", any(2), text_type, |a| get(a, true)),
        udf_with("jsonb_contains", any(2), bool_type, contains),
        udf_with("jsonb_exists", any(2), bool_type, exists),
        udf_with("jsonb_exists_any", any(2), bool_type, |a| {
            exists_many(a, false)
        }),
        udf_with("jsonb_exists_all", any(2), bool_type, |a| {
            exists_many(a, true)
        }),
        udf_with("jsonb_concat", any(2), jsonb_type, concat),
        udf_with("jsonb_delete", any(2), jsonb_type, delete),
        udf_with(
            "jsonb_set",
            Signature::one_of(
                vec![TypeSignature::Any(3), TypeSignature::Any(4)],
                Volatility::Immutable,
            ),
            jsonb_type,
            set,
        ),
        udf_with("jsonb_delete_path", any(2), jsonb_type, delete_path),
        udf_with("sluice_jsonb_in", any(1), jsonb_type, jsonb_in),
        udf_with("sluice_jsonb_object_of", any(2), jsonb_type, object_of),
    ];
    // `json_*` are the same functions: `json` is kept as `jsonb` is.
    for [jsonb, json] in [
        ["jsonb_typeof", "json_typeof"],
        ["jsonb_array_length", "json_array_length"],
        ["jsonb_extract_path", "json_extract_path"],
        ["jsonb_extract_path_text", "json_extract_path_text"],
        ["jsonb_build_object", "json_build_object"],
        ["jsonb_build_array", "json_build_array"],
        ["jsonb_strip_nulls", "json_strip_nulls"],
    ] {
        let variadic_path = Signature::variadic_any(Volatility::Immutable);
        for name in [jsonb, json] {
            out.push(match jsonb {
                "jsonb_typeof" => udf_with(name, any(1), text_type, typeof_),
                "jsonb_array_length" => udf_with(name, any(1), int_type, array_length),
                "jsonb_extract_path" => udf_with(name, variadic_path.clone(), jsonb_type, |a| {
                    extract_path(a, false)
                }),
                "jsonb_extract_path_text" => {
                    udf_with(name, variadic_path.clone(), text_type, |a| {
                        extract_path(a, true)
                    })
                }
                "jsonb_build_object" => udf_with(name, variadic.clone(), jsonb_type, build_object),
                "jsonb_build_array" => udf_with(name, variadic.clone(), jsonb_type, build_array),
                _ => udf_with(name, any(1), jsonb_type, |a| {
                    map_docs(a, Json::strip_nulls, false)
                }),
            });
        }
    }
    out.extend([
        udf_with("to_jsonb", any(1), jsonb_type, to_jsonb),
        udf_with("to_json", any(1), jsonb_type, to_jsonb),
        udf_with("jsonb_pretty", any(1), text_type, |a| {
            map_docs(a, |j| j, true)
        }),
    ]);
    out
}

/// A cast of `jsonb` to a number or a boolean, as the analyzer plans `j::int`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct JsonbTo {
    target: DataType,
    signature: Signature,
}

impl JsonbTo {
    pub fn udf(target: DataType) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(JsonbTo {
            target,
            signature: Signature::any(1, Volatility::Immutable),
        }))
    }

    /// Whether a cast from `jsonb` to `target` reads the value (rather than its text).
    pub fn reads(target: &DataType) -> bool {
        target.is_numeric() || *target == DataType::Boolean
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for JsonbTo {
    fn name(&self) -> &str {
        "sluice_jsonb_to"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(self.target.clone())
    }
    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> DfResult<datafusion::logical_expr::ColumnarValue> {
        let scalar = matches!(
            args.args[0],
            datafusion::logical_expr::ColumnarValue::Scalar(_)
        );
        let values = args.args[0].clone().into_array(args.number_rows)?;
        super::pg_semantics::columnar(jsonb_to(&values, &self.target)?, scalar)
    }
}

/// Whether a function is one of ours over `jsonb`, whose `LargeUtf8` results are `jsonb`.
pub fn is_jsonb_function(name: &str) -> bool {
    name.starts_with("jsonb_")
        || name.starts_with("json_")
        || name == "to_jsonb"
        || name == "to_json"
        || name.starts_with("sluice_jsonb")
}

/// The `jsonb_in` function, for the analyzer's casts from text.
pub fn jsonb_in_udf() -> Arc<ScalarUDF> {
    ours("sluice_jsonb_in")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        canonical(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn stored_form_is_postgres_text() {
        assert_eq!(
            canon(r#" {"b":1 ,"a":2, "aa":[], "a":3} "#),
            r#"{"a": 3, "b": 1, "aa": []}"#
        );
        assert_eq!(
            canon("[1e2, 1.50, -0, -0.0, 2E-3, 12e-1, 1.5e1, 0]"),
            "[100, 1.50, 0, 0.0, 0.002, 1.2, 15, 0]"
        );
        assert_eq!(
            canon(r#""\u00e9\ud83d\ude00\/\b\u001f""#),
            "\"é😀/\\b\\u001f\""
        );
        assert_eq!(canon("  true "), "true");
        for bad in [
            "",
            "[1,]",
            "{\"a\"}",
            "01",
            "1.",
            ".5",
            "+1",
            "nul",
            "[1 2]",
            "\"a",
            "\"\t\"",
            "{\"a\":1}x",
            "\"\\ud800\"",
            "\"\\x\"",
        ] {
            assert_eq!(
                canonical(bad).map_err(|e| e.code),
                Err(sqlstate::INVALID_TEXT_REPRESENTATION),
                "{bad:?}"
            );
        }
        assert_eq!(canonical("\"\\u0000\"").map_err(|e| e.code), Err("22P05"));
        assert_eq!(
            canonical("1e10001").map_err(|e| e.code),
            Err(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE)
        );
    }

    #[test]
    fn deep_documents_are_refused_without_exhausting_the_stack() {
        // Half the stack of any thread that runs SQL (tokio's 2 MiB): the parser keeps its
        // open containers on the heap; printing, comparing and dropping a tree recurse per
        // level, which MAX_DEPTH bounds.
        std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(|| {
                let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
                let doc = canon(&deep(MAX_DEPTH));
                let tree = parse(&doc).expect("deep");
                assert!(tree.contains(&tree));
                let mut pretty = String::new();
                tree.clone().strip_nulls().write_pretty(0, &mut pretty);
                assert_eq!(pretty.matches('[').count(), MAX_DEPTH);
                assert_eq!(doc.len(), 2 * MAX_DEPTH);
                assert_eq!(type_name(&doc), "array");
                assert_eq!(item(&doc, 0).map(str::len), Some(2 * MAX_DEPTH - 2));
                assert_eq!(
                    canonical(&deep(MAX_DEPTH + 1)).map_err(|e| e.code),
                    Err(sqlstate::STATEMENT_TOO_COMPLEX)
                );
                assert_eq!(
                    canonical(&"[".repeat(1_000_000)).map_err(|e| e.code),
                    Err(sqlstate::STATEMENT_TOO_COMPLEX)
                );
            })
            .expect("thread")
            .join()
            .expect("no overflow");
    }

    #[test]
    fn members_are_read_from_the_text() {
        let doc = canon(r#"{"a": {"b": [10, "x\"y", null]}, "k\"": 1}"#);
        assert_eq!(
            member(&doc, "a").and_then(|a| member(a, "b")),
            Some(r#"[10, "x\"y", null]"#)
        );
        assert_eq!(
            path(&doc, ["a", "b", "-2"].into_iter().map(Some))
                .and_then(as_text)
                .as_deref(),
            Some("x\"y")
        );
        assert_eq!(
            path(&doc, ["a", "b", "2"].into_iter().map(Some)).and_then(as_text),
            None
        );
        assert_eq!(member(&doc, "k\""), Some("1"));
        assert_eq!(member(&doc, "z"), None);
        assert_eq!(item(&doc, 0), None);
        assert_eq!(items("[]"), Some(vec![]));
        assert!(has_key(r#"["a", "b"]"#, "b") && has_key(r#""s""#, "s") && !has_key("1", "1"));
        // Text that is not JSON (only reachable by a cast we do not make) reads as nothing.
        assert_eq!(member("{\"a\": [", "a"), None);
        assert_eq!(item("[1, ", 5), None);
    }

    #[test]
    fn a_record_member_is_the_last_of_repeated_keys() {
        assert_eq!(
            record_member(r#"{"a": 1, "b": {"x": 2}, "a": [3]}"#, "a"),
            Ok(Some("[3]".to_string()))
        );
        assert_eq!(record_member(r#"{"a": null}"#, "a"), Ok(None));
        assert_eq!(record_member(r#"{"a": 1}"#, "b"), Ok(None));
        assert_eq!(record_member("[1]", "a"), Ok(None));
    }

    #[test]
    fn exponents_have_a_budget() {
        assert_eq!(canon("1e3"), "1000");
        let many = format!("[{}1]", "1e9999,".repeat(100));
        assert_eq!(
            canonical(&many).map_err(|e| e.code),
            Err(sqlstate::PROGRAM_LIMIT_EXCEEDED)
        );
    }

    #[test]
    fn containment_follows_postgres() {
        let c = |a: &str, b: &str| parse(a).expect("a").contains(&parse(b).expect("b"));
        assert!(c(r#"{"a": 1, "b": {"c": [1, 2]}}"#, r#"{"b": {"c": [2]}}"#));
        assert!(c("[1, [2, 3]]", "[[3]]"));
        assert!(c("[1, 2]", "2"));
        assert!(!c("[[1]]", "1"));
        assert!(c(r#"{"a": 1.0}"#, r#"{"a": 1}"#));
        assert!(!c(r#"{"a": {"b": 1}}"#, r#"{"b": 1}"#));
        assert!(c("[]", "[]") && c("{}", "{}") && !c("{}", "[]"));
    }
}
