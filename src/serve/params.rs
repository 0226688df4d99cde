//! Bound parameters of the extended protocol, decoded into DataFusion values: PostgreSQL's
//! text input syntax, and the binary forms produced by clients (the inverse of
//! [`super::encode`]'s binary output).

use std::sync::Arc;

use datafusion::arrow::array::{ListArray, new_empty_array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano};
use datafusion::common::ScalarValue;
use pgwire::api::Type;
use pgwire::api::results::FieldFormat;

use super::encode::{MICROS_PER_DAY, PG_EPOCH_DAYS, PG_EPOCH_MICROS, days_from_civil};
use crate::catalog::pg_types::{array_element, arrow_type, type_display_name, utc};

/// Why a bound parameter could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// The text is not valid input for the type (SQLSTATE 22P02).
    #[error("invalid input syntax for type {}: \"{value}\"", type_display_name(.ty))]
    InvalidText {
        /// The parameter's type.
        ty: Type,
        /// The text given (lossily decoded if it was not UTF-8).
        value: String,
    },
    /// The bytes are not a valid binary value of the type (SQLSTATE 22P03).
    #[error("incorrect binary data format for type {} ({len} bytes)", type_display_name(.ty))]
    InvalidBinary {
        /// The parameter's type.
        ty: Type,
        /// Length of the value in bytes.
        len: usize,
    },
    /// The value is well-formed but outside the type's range (SQLSTATE 22003).
    #[error("{}", out_of_range_message(.ty, .value))]
    OutOfRange {
        /// The parameter's type.
        ty: Type,
        /// The value as given (or as decoded from binary).
        value: String,
    },
    /// The client sent a binary value of a type we only take as text (SQLSTATE 0A000).
    #[error("binary format is not supported for parameters of type {}", type_display_name(.ty))]
    UnsupportedBinary {
        /// The parameter's type.
        ty: Type,
    },
}

/// PostgreSQL's wording: floats say `"1e400" is out of range ...`, integers and the rest
/// `value "40000" is out of range ...`.
fn out_of_range_message(ty: &Type, value: &str) -> String {
    let name = type_display_name(ty);
    if *ty == Type::FLOAT4 || *ty == Type::FLOAT8 {
        format!("\"{value}\" is out of range for type {name}")
    } else {
        format!("value \"{value}\" is out of range for type {name}")
    }
}

impl ParamError {
    /// The SQLSTATE PostgreSQL reports for this kind of error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ParamError::InvalidText { .. } => "22P02",
            ParamError::InvalidBinary { .. } => "22P03",
            ParamError::OutOfRange { .. } => "22003",
            ParamError::UnsupportedBinary { .. } => "0A000",
        }
    }
}

/// Decodes one bound parameter of type `ty` sent in `format`.
///
/// `None` (SQL NULL) becomes a null of [`arrow_type`]`(ty)` (`Utf8` for unknown types). Text of
/// an unknown type is passed on as `Utf8` for DataFusion to coerce; binary values of unknown
/// types are rejected.
pub fn decode_param(
    bytes: Option<&[u8]>,
    ty: &Type,
    format: FieldFormat,
) -> Result<ScalarValue, ParamError> {
    let Some(bytes) = bytes else {
        return Ok(typed_null(ty));
    };
    match format {
        FieldFormat::Text => {
            let text = std::str::from_utf8(bytes).map_err(|_| ParamError::InvalidText {
                ty: ty.clone(),
                value: String::from_utf8_lossy(bytes).into_owned(),
            })?;
            decode_text(text, ty)
        }
        FieldFormat::Binary => decode_binary(bytes, ty),
    }
}

fn typed_null(ty: &Type) -> ScalarValue {
    arrow_type(ty)
        .and_then(|dt| ScalarValue::try_from(&dt).ok())
        .unwrap_or(ScalarValue::Utf8(None))
}

/// A text value failed to parse: either malformed or out of range.
#[derive(Debug)]
pub(crate) enum Bad {
    Syntax,
    Range,
}

fn text_error(ty: &Type, text: &str, bad: Bad) -> ParamError {
    let (ty, value) = (ty.clone(), text.to_owned());
    match bad {
        Bad::Syntax => ParamError::InvalidText { ty, value },
        Bad::Range => ParamError::OutOfRange { ty, value },
    }
}

fn decode_text(text: &str, ty: &Type) -> Result<ScalarValue, ParamError> {
    let err = |bad| text_error(ty, text, bad);
    let value = match *ty {
        Type::BOOL => ScalarValue::Boolean(Some(parse_bool(text).ok_or_else(|| err(Bad::Syntax))?)),
        Type::INT2 => ScalarValue::Int16(Some(parse_int(text).map_err(err)?)),
        Type::INT4 => ScalarValue::Int32(Some(parse_int(text).map_err(err)?)),
        Type::INT8 => ScalarValue::Int64(Some(parse_int(text).map_err(err)?)),
        Type::OID => ScalarValue::UInt32(Some(parse_int(text).map_err(err)?)),
        Type::FLOAT4 => ScalarValue::Float32(Some(parse_float(text).map_err(err)?)),
        Type::FLOAT8 => ScalarValue::Float64(Some(parse_float(text).map_err(err)?)),
        Type::NUMERIC => ScalarValue::Decimal128(Some(parse_numeric(text).map_err(err)?), 38, 10),
        Type::DATE => {
            // Like `date_in`, any time of day or zone after the date is ignored.
            let (micros, _) = parse_timestamp(text).map_err(err)?;
            let days = micros.div_euclid(MICROS_PER_DAY);
            ScalarValue::Date32(Some(i32::try_from(days).map_err(|_| err(Bad::Range))?))
        }
        Type::TIME => ScalarValue::Time64Microsecond(Some(parse_time(text).map_err(err)?)),
        Type::TIMESTAMP => {
            let (micros, _) = parse_timestamp(text).map_err(err)?;
            ScalarValue::TimestampMicrosecond(Some(micros), None)
        }
        Type::TIMESTAMPTZ => {
            let (micros, offset) = parse_timestamp(text).map_err(err)?;
            let utc_micros = micros
                .checked_sub(offset * 1_000_000)
                .ok_or_else(|| err(Bad::Range))?;
            ScalarValue::TimestampMicrosecond(Some(utc_micros), Some(utc()))
        }
        Type::INTERVAL => {
            ScalarValue::IntervalMonthDayNano(Some(parse_interval(text).map_err(err)?))
        }
        Type::BYTEA => {
            ScalarValue::Binary(Some(parse_bytea(text).ok_or_else(|| err(Bad::Syntax))?))
        }
        Type::JSON | Type::JSONB => ScalarValue::LargeUtf8(Some(
            crate::sql::jsonb::canonical(text).map_err(|_| err(Bad::Syntax))?,
        )),
        Type::UUID => ScalarValue::FixedSizeBinary(
            16,
            Some(
                crate::sql::uuid::parse_uuid(text)
                    .ok_or_else(|| err(Bad::Syntax))?
                    .to_vec(),
            ),
        ),
        _ => match array_element(ty) {
            Some(elem) => parse_array(text, ty, &elem)?,
            None => ScalarValue::Utf8(Some(text.to_owned())),
        },
    };
    Ok(value)
}

fn decode_binary(bytes: &[u8], ty: &Type) -> Result<ScalarValue, ParamError> {
    let bad = || ParamError::InvalidBinary {
        ty: ty.clone(),
        len: bytes.len(),
    };
    let range = |value: String| ParamError::OutOfRange {
        ty: ty.clone(),
        value,
    };
    let value = match *ty {
        Type::BOOL => match bytes {
            [b] => ScalarValue::Boolean(Some(*b != 0)),
            _ => return Err(bad()),
        },
        Type::INT2 => ScalarValue::Int16(Some(i16::from_be_bytes(fixed(bytes).ok_or_else(bad)?))),
        Type::INT4 => ScalarValue::Int32(Some(i32::from_be_bytes(fixed(bytes).ok_or_else(bad)?))),
        Type::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(fixed(bytes).ok_or_else(bad)?))),
        Type::OID => ScalarValue::UInt32(Some(u32::from_be_bytes(fixed(bytes).ok_or_else(bad)?))),
        Type::FLOAT4 => {
            ScalarValue::Float32(Some(f32::from_be_bytes(fixed(bytes).ok_or_else(bad)?)))
        }
        Type::FLOAT8 => {
            ScalarValue::Float64(Some(f64::from_be_bytes(fixed(bytes).ok_or_else(bad)?)))
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::CHAR | Type::NAME | Type::UNKNOWN => {
            ScalarValue::Utf8(Some(utf8(bytes).ok_or_else(bad)?))
        }
        // json's binary form is its text; jsonb's a version byte (1) followed by the text.
        Type::JSON | Type::JSONB => {
            let json = match (bytes.split_first(), *ty == Type::JSONB) {
                (Some((1, json)), true) => json,
                (_, true) => return Err(bad()),
                (_, false) => bytes,
            };
            let text = utf8(json).ok_or_else(bad)?;
            ScalarValue::LargeUtf8(Some(crate::sql::jsonb::canonical(&text).map_err(|_| {
                ParamError::InvalidText {
                    ty: ty.clone(),
                    value: text.clone(),
                }
            })?))
        }
        Type::UUID => {
            let raw: [u8; 16] = fixed(bytes).ok_or_else(bad)?;
            ScalarValue::FixedSizeBinary(16, Some(raw.to_vec()))
        }
        Type::BYTEA => ScalarValue::Binary(Some(bytes.to_vec())),
        Type::DATE => {
            let pg = i32::from_be_bytes(fixed(bytes).ok_or_else(bad)?);
            let days = i64::from(pg) + PG_EPOCH_DAYS;
            ScalarValue::Date32(Some(
                i32::try_from(days).map_err(|_| range(pg.to_string()))?,
            ))
        }
        Type::TIME => {
            let micros = i64::from_be_bytes(fixed(bytes).ok_or_else(bad)?);
            if !(0..=MICROS_PER_DAY).contains(&micros) {
                return Err(range(micros.to_string()));
            }
            ScalarValue::Time64Microsecond(Some(micros))
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let pg = i64::from_be_bytes(fixed(bytes).ok_or_else(bad)?);
            let micros = pg
                .checked_add(PG_EPOCH_MICROS)
                .ok_or_else(|| range(pg.to_string()))?;
            let tz = (*ty == Type::TIMESTAMPTZ).then(utc);
            ScalarValue::TimestampMicrosecond(Some(micros), tz)
        }
        Type::INTERVAL => {
            let raw: [u8; 16] = fixed(bytes).ok_or_else(bad)?;
            let (micros, rest) = raw.split_at(8);
            let (days, months) = rest.split_at(4);
            let micros = i64::from_be_bytes(fixed(micros).ok_or_else(bad)?);
            let nanoseconds = micros
                .checked_mul(1_000)
                .ok_or_else(|| range(format!("{micros} microseconds")))?;
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano {
                months: i32::from_be_bytes(fixed(months).ok_or_else(bad)?),
                days: i32::from_be_bytes(fixed(days).ok_or_else(bad)?),
                nanoseconds,
            }))
        }
        Type::NUMERIC => {
            let text = numeric_binary_to_text(bytes).ok_or_else(bad)?;
            let value = parse_numeric(&text).map_err(|_| range(text.clone()))?;
            ScalarValue::Decimal128(Some(value), 38, 10)
        }
        _ => match array_element(ty) {
            Some(elem) => decode_binary_array(bytes, ty, &elem)?,
            None => return Err(ParamError::UnsupportedBinary { ty: ty.clone() }),
        },
    };
    Ok(value)
}

fn fixed<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

fn utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

/// `boolin`: `t`/`true`/`yes`/`on`/`1` and `f`/`false`/`no`/`off`/`0`, any unambiguous prefix
/// of the words, case-insensitive, surrounding whitespace ignored.
fn parse_bool(text: &str) -> Option<bool> {
    let t = text.trim().to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || t == "1" || prefix_of("on", 2) {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || t == "0" || prefix_of("off", 2) {
        Some(false)
    } else {
        None
    }
}

fn parse_int<T: std::str::FromStr<Err = std::num::ParseIntError>>(text: &str) -> Result<T, Bad> {
    text.trim().parse::<T>().map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => Bad::Range,
        _ => Bad::Syntax,
    })
}

/// `float4in`/`float8in`: decimal or exponent notation, `NaN`, `Infinity`, `inf` (signed,
/// case-insensitive); finite input that overflows or underflows to zero is out of range.
fn parse_float<T>(text: &str) -> Result<T, Bad>
where
    T: std::str::FromStr + Into<f64> + Copy,
{
    let t = text.trim();
    let value: T = t.parse().map_err(|_| Bad::Syntax)?;
    let wide: f64 = value.into();
    let unsigned = t.trim_start_matches(['+', '-']).to_ascii_lowercase();
    let literal_inf = unsigned == "inf" || unsigned == "infinity";
    let nonzero_digits = t
        .bytes()
        .take_while(|b| !matches!(b, b'e' | b'E'))
        .any(|b| (b'1'..=b'9').contains(&b));
    if (wide.is_infinite() && !literal_inf) || (wide == 0.0 && nonzero_digits) {
        return Err(Bad::Range);
    }
    Ok(value)
}

/// Scale of the `Decimal128(38, 10)` numeric parameters decode to.
const NUMERIC_SCALE: i64 = 10;

/// `numeric_in` into a `Decimal128(38, 10)`: `[+-]digits[.digits][e[+-]digits]`, rounded half
/// away from zero to 10 fractional digits (as a cast to `numeric(38,10)` rounds).
fn parse_numeric(text: &str) -> Result<i128, Bad> {
    let t = text.trim();
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (mantissa, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return Err(Bad::Syntax);
    }
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.trim_start_matches(['+', '-']);
            if digits.is_empty() || !all_digits(digits) || e.len() - digits.len() > 1 {
                return Err(Bad::Syntax);
            }
            // PostgreSQL rejects exponents beyond ±1000 too.
            let e: i64 = e.parse().map_err(|_| Bad::Range)?;
            if e.abs() > 1000 {
                return Err(Bad::Range);
            }
            e
        }
    };
    let digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .skip_while(|&b| b == b'0')
        .map(|b| b - b'0')
        .collect();
    // value = digits * 10^(exponent - frac_len); scaled by 10^10.
    let shift = exponent - frac_part.len() as i64 + NUMERIC_SCALE;
    let (kept, round_up) = if shift >= 0 {
        (&digits[..], false)
    } else {
        let drop = usize::try_from(-shift).unwrap_or(usize::MAX);
        if drop > digits.len() {
            (&digits[..0], false)
        } else {
            let keep = digits.len() - drop;
            (&digits[..keep], digits.get(keep).is_some_and(|&d| d >= 5))
        }
    };
    let zeros = usize::try_from(shift.max(0)).unwrap_or(usize::MAX);
    if !kept.is_empty() && kept.len().saturating_add(zeros) > 38 {
        return Err(Bad::Range);
    }
    let mut value: i128 = 0;
    for &d in kept {
        value = value * 10 + i128::from(d);
    }
    if !kept.is_empty() {
        for _ in 0..zeros {
            value *= 10;
        }
    }
    if round_up {
        value += 1;
    }
    if value >= 10i128.pow(38) {
        return Err(Bad::Range);
    }
    Ok(if negative { -value } else { value })
}

/// `numeric_send`'s layout back to decimal text; `None` if malformed or NaN/infinite.
fn numeric_binary_to_text(bytes: &[u8]) -> Option<String> {
    let header = bytes.get(..8)?;
    let word = |i: usize| u16::from_be_bytes([header[2 * i], header[2 * i + 1]]);
    let ndigits = usize::from(word(0));
    let weight = i64::from(word(1) as i16);
    let sign = word(2);
    if ndigits > 0x7fff || bytes.len() != 8 + 2 * ndigits || !matches!(sign, 0 | 0x4000) {
        return None;
    }
    let mut digits = String::with_capacity(4 * ndigits);
    for pair in bytes[8..].chunks_exact(2) {
        let d = u16::from_be_bytes([pair[0], pair[1]]);
        if d > 9999 {
            return None;
        }
        digits.push_str(&format!("{d:04}"));
    }
    if ndigits == 0 {
        return Some("0".to_owned());
    }
    // The digits are 0.dddd... × 10000^(weight + 1).
    let exponent = 4 * (weight + 1) - digits.len() as i64;
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(format!("{sign}{digits}e{exponent}"))
}

/// A cursor over ASCII input for the date/time parsers.
struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s: s.trim().as_bytes(),
            at: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    /// A run of 1..=`max` digits.
    fn number(&mut self, max: usize) -> Result<(i64, usize), Bad> {
        let start = self.at;
        let mut value: i64 = 0;
        while let Some(b) = self.peek().filter(u8::is_ascii_digit) {
            if self.at - start == max {
                return Err(Bad::Syntax);
            }
            value = value * 10 + i64::from(b - b'0');
            self.at += 1;
        }
        if self.at == start {
            return Err(Bad::Syntax);
        }
        Ok((value, self.at - start))
    }

    fn rest(&self) -> &'a [u8] {
        &self.s[self.at..]
    }

    fn done(&self) -> bool {
        self.at == self.s.len()
    }
}

/// `YYYY-MM-DD` as (year, month, day), validated by [`civil_days`] once the era is known.
fn date_part(c: &mut Cursor<'_>) -> Result<(i64, u32, u32), Bad> {
    let (year, _) = c.number(7)?;
    if !c.eat(b'-') {
        return Err(Bad::Syntax);
    }
    let (month, _) = c.number(2)?;
    if !c.eat(b'-') {
        return Err(Bad::Syntax);
    }
    let (day, _) = c.number(2)?;
    let month = u32::try_from(month).map_err(|_| Bad::Range)?;
    let day = u32::try_from(day).map_err(|_| Bad::Range)?;
    Ok((year, month, day))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.rem_euclid(4) == 0 && (year % 100 != 0 || year.rem_euclid(400) == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// A trailing ` BC`/` AD` era marker.
fn era(c: &mut Cursor<'_>) -> Result<bool, Bad> {
    c.skip_spaces();
    let rest = c.rest();
    if rest.eq_ignore_ascii_case(b"bc") {
        c.at += 2;
        Ok(true)
    } else if rest.eq_ignore_ascii_case(b"ad") {
        c.at += 2;
        Ok(false)
    } else if rest.is_empty() {
        Ok(false)
    } else {
        Err(Bad::Syntax)
    }
}

/// Days since 1970-01-01 of a date whose year is counted in `bc` or AD years.
fn civil_days(year: i64, month: u32, day: u32, bc: bool) -> Result<i64, Bad> {
    if year == 0 {
        return Err(Bad::Range);
    }
    // Year 1 BC is astronomical year 0 (a leap year).
    let year = if bc { 1 - year } else { year };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(Bad::Range);
    }
    Ok(days_from_civil(year, month, day))
}

/// `HH:MM[:SS[.fraction]]` into microseconds, the fraction rounded to microseconds.
fn clock_part(c: &mut Cursor<'_>) -> Result<i64, Bad> {
    let (hours, _) = c.number(2)?;
    if !c.eat(b':') {
        return Err(Bad::Syntax);
    }
    let (minutes, _) = c.number(2)?;
    let mut seconds = 0;
    let mut micros = 0;
    if c.eat(b':') {
        seconds = c.number(2)?.0;
        if c.eat(b'.') {
            micros = fraction_micros(c)?;
        }
    }
    if minutes > 59 || seconds > 60 {
        return Err(Bad::Range);
    }
    let total = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros;
    if total > MICROS_PER_DAY {
        return Err(Bad::Range);
    }
    Ok(total)
}

/// Digits after a decimal point, as microseconds rounded half up.
fn fraction_micros(c: &mut Cursor<'_>) -> Result<i64, Bad> {
    let start = c.at;
    let mut micros = 0i64;
    let mut round = false;
    while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
        let n = c.at - start;
        if n < 6 {
            micros = micros * 10 + i64::from(b - b'0');
        } else if n == 6 {
            round = b >= b'5';
        }
        c.at += 1;
    }
    let n = c.at - start;
    for _ in n..6 {
        micros *= 10;
    }
    Ok(micros + i64::from(round))
}

fn parse_time(text: &str) -> Result<i64, Bad> {
    let mut c = Cursor::new(text);
    let micros = clock_part(&mut c)?;
    if !c.done() {
        return Err(Bad::Syntax);
    }
    Ok(micros)
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.f]]][offset][ BC]` into (local microseconds since 1970,
/// UTC offset in seconds, 0 if none given).
fn parse_timestamp(text: &str) -> Result<(i64, i64), Bad> {
    let mut c = Cursor::new(text);
    let (year, month, day) = date_part(&mut c)?;
    let mut clock = 0;
    let save = c.at;
    if c.eat(b'T') || c.eat(b't') || c.peek() == Some(b' ') {
        c.skip_spaces();
        if c.peek().is_some_and(|b| b.is_ascii_digit()) {
            clock = clock_part(&mut c)?;
        } else {
            c.at = save;
        }
    }
    let offset = utc_offset(&mut c)?;
    let bc = era(&mut c)?;
    if !c.done() {
        return Err(Bad::Syntax);
    }
    let days = civil_days(year, month, day, bc)?;
    let micros = days
        .checked_mul(MICROS_PER_DAY)
        .and_then(|m| m.checked_add(clock))
        .ok_or(Bad::Range)?;
    Ok((micros, offset))
}

/// An optional UTC offset: `Z`, `UTC`, `GMT`, `+HH`, `+HH:MM`, `+HHMM`, `+HH:MM:SS`; in
/// seconds east of UTC.
fn utc_offset(c: &mut Cursor<'_>) -> Result<i64, Bad> {
    c.skip_spaces();
    let rest = c.rest();
    for name in [&b"utc"[..], b"gmt", b"z"] {
        if rest.len() >= name.len()
            && rest[..name.len()].eq_ignore_ascii_case(name)
            && rest
                .get(name.len())
                .is_none_or(|b| !b.is_ascii_alphabetic())
        {
            c.at += name.len();
            return Ok(0);
        }
    }
    let sign = match c.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Ok(0),
    };
    c.at += 1;
    let (first, len) = c.number(4)?;
    let (hours, mut minutes) = match len {
        1 | 2 => (first, 0),
        4 => (first / 100, first % 100),
        _ => return Err(Bad::Syntax),
    };
    let mut seconds = 0;
    if len <= 2 && c.eat(b':') {
        minutes = c.number(2)?.0;
        if c.eat(b':') {
            seconds = c.number(2)?.0;
        }
    }
    if hours > 15 || minutes > 59 || seconds > 59 {
        return Err(Bad::Range);
    }
    Ok(sign * (hours * 3600 + minutes * 60 + seconds))
}

/// Interval input in PostgreSQL's `postgres` style: `[@] quantity unit [quantity unit...]
/// [[+-]HH:MM[:SS[.f]]] [ago]`, e.g. `1 year 2 mons -3 days 04:05:06.5`; a bare number is
/// seconds. Fractional years spill into months, fractional months (30 days) and weeks into
/// days, fractional days into time.
pub(crate) fn parse_interval(text: &str) -> Result<IntervalMonthDayNano, Bad> {
    let trimmed = text.trim();
    if let Some(iso) = trimmed
        .strip_prefix('P')
        .or_else(|| trimmed.strip_prefix('p'))
    {
        return parse_iso_interval(iso);
    }
    let mut months: f64 = 0.0;
    let mut days: f64 = 0.0;
    let mut micros: f64 = 0.0;
    let mut ago = false;
    let mut tokens = text
        .trim()
        .trim_start_matches('@')
        .split_whitespace()
        .peekable();
    let mut any = false;
    while let Some(token) = tokens.next() {
        any = true;
        if token.eq_ignore_ascii_case("ago") {
            ago = true;
            continue;
        }
        if token.contains(':') {
            let (sign, clock) = match token.as_bytes().first() {
                Some(b'-') => (-1.0, &token[1..]),
                Some(b'+') => (1.0, &token[1..]),
                _ => (1.0, token),
            };
            let mut c = Cursor::new(clock);
            let (hours, _) = c.number(9)?;
            if !c.eat(b':') {
                return Err(Bad::Syntax);
            }
            let (minutes, _) = c.number(2)?;
            let mut seconds = 0;
            let mut fraction = 0;
            if c.eat(b':') {
                seconds = c.number(2)?.0;
                if c.eat(b'.') {
                    fraction = fraction_micros(&mut c)?;
                }
            }
            if !c.done() || minutes > 59 || seconds > 59 {
                return Err(Bad::Syntax);
            }
            let total = ((hours * 60 + minutes) * 60 + seconds) as f64 * 1e6 + fraction as f64;
            micros += sign * total;
            continue;
        }
        // A number, with its unit attached (`3days`) or as the next token.
        let split = token
            .find(|ch: char| ch.is_ascii_alphabetic())
            .unwrap_or(token.len());
        let (number, attached) = token.split_at(split);
        let quantity: f64 = number.parse().map_err(|_| Bad::Syntax)?;
        if !quantity.is_finite() {
            return Err(Bad::Syntax);
        }
        let unit = if !attached.is_empty() {
            attached.to_ascii_lowercase()
        } else {
            match tokens.peek() {
                Some(next)
                    if next.starts_with(|ch: char| ch.is_ascii_alphabetic())
                        && !next.eq_ignore_ascii_case("ago") =>
                {
                    tokens.next().unwrap_or_default().to_ascii_lowercase()
                }
                _ => "second".to_owned(),
            }
        };
        match unit.as_str() {
            "microsecond" | "microseconds" | "usec" | "usecs" | "us" => micros += quantity,
            "millisecond" | "milliseconds" | "msec" | "msecs" | "ms" => micros += quantity * 1e3,
            "second" | "seconds" | "sec" | "secs" | "s" => micros += quantity * 1e6,
            "minute" | "minutes" | "min" | "mins" | "m" => micros += quantity * 6e7,
            "hour" | "hours" | "hr" | "hrs" | "h" => micros += quantity * 3.6e9,
            "day" | "days" | "d" => days += quantity,
            "week" | "weeks" | "w" => days += quantity * 7.0,
            "month" | "months" | "mon" | "mons" => months += quantity,
            "year" | "years" | "yr" | "yrs" | "y" => months += (quantity * 12.0).round(),
            "decade" | "decades" => months += (quantity * 120.0).round(),
            "century" | "centuries" => months += (quantity * 1200.0).round(),
            "millennium" | "millennia" => months += (quantity * 12000.0).round(),
            _ => return Err(Bad::Syntax),
        }
    }
    if !any {
        return Err(Bad::Syntax);
    }
    // Spill fractions downwards, as PostgreSQL does.
    let whole_months = months.trunc();
    days += (months - whole_months) * 30.0;
    let whole_days = days.trunc();
    micros += (days - whole_days) * MICROS_PER_DAY as f64;
    let sign = if ago { -1.0 } else { 1.0 };
    let months = sign * whole_months;
    let days = sign * whole_days;
    let nanos = sign * micros.round() * 1e3;
    let fits_i32 = |v: f64| v >= f64::from(i32::MIN) && v <= f64::from(i32::MAX);
    if !fits_i32(months) || !fits_i32(days) || nanos.abs() >= 9.2e18 {
        return Err(Bad::Range);
    }
    Ok(IntervalMonthDayNano {
        months: months as i32,
        days: days as i32,
        nanoseconds: nanos as i64,
    })
}

/// ISO 8601's `P[nY][nM][nW][nD][T[nH][nM][nS]]` (after the `P`), fractions spilling down as
/// in the other form.
fn parse_iso_interval(text: &str) -> Result<IntervalMonthDayNano, Bad> {
    let mut spelled = String::new();
    let mut in_time = false;
    let mut number = String::new();
    for c in text.chars() {
        match c.to_ascii_lowercase() {
            't' if number.is_empty() && !in_time => in_time = true,
            '0'..='9' | '.' | '-' | '+' => number.push(c),
            unit => {
                let unit = match (unit, in_time) {
                    ('y', false) => "years",
                    ('m', false) => "mons",
                    ('w', false) => "weeks",
                    ('d', false) => "days",
                    ('h', true) => "hours",
                    ('m', true) => "mins",
                    ('s', true) => "secs",
                    _ => return Err(Bad::Syntax),
                };
                if number.is_empty() {
                    return Err(Bad::Syntax);
                }
                spelled.push_str(&format!("{number} {unit} "));
                number.clear();
            }
        }
    }
    if !number.is_empty() || spelled.is_empty() {
        return Err(Bad::Syntax);
    }
    parse_interval(&spelled)
}

/// `byteain`: `\x` followed by hex digit pairs (whitespace between pairs allowed), or the
/// escape format (`\\` and `\ooo` octal escapes, other bytes as-is).
pub(crate) fn parse_bytea(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if let Some(hex) = bytes
        .strip_prefix(b"\\x")
        .or_else(|| bytes.strip_prefix(b"\\X"))
    {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut digits = hex.iter().filter(|b| !b.is_ascii_whitespace());
        while let Some(&hi) = digits.next() {
            let lo = *digits.next()?;
            let nibble = |b: u8| (b as char).to_digit(16);
            out.push((nibble(hi)? << 4 | nibble(lo)?) as u8);
        }
        return Some(out);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes.get(i + 1..i + 4)?;
            if !(b'0'..=b'3').contains(&octal[0])
                || !octal[1..].iter().all(|b| (b'0'..=b'7').contains(b))
            {
                return None;
            }
            out.push(octal.iter().fold(0u8, |acc, d| acc * 8 + (d - b'0')));
            i += 4;
        }
    }
    Some(out)
}

/// A one-dimensional array literal `{a,"b c",NULL}` of element type `elem`.
fn parse_array(text: &str, ty: &Type, elem: &Type) -> Result<ScalarValue, ParamError> {
    let invalid = || ParamError::InvalidText {
        ty: ty.clone(),
        value: text.to_owned(),
    };
    let values = split_array(text)
        .ok_or_else(invalid)?
        .into_iter()
        .map(|item| match item {
            None => Ok(typed_null(elem)),
            Some(item) => decode_text(&item, elem),
        })
        .collect::<Result<Vec<_>, _>>()?;
    list_scalar(values, elem).ok_or_else(invalid)
}

/// The elements of a one-dimensional array literal (`{a,"b c",NULL}`) as text, `None` for an
/// unquoted NULL; `None` overall when the text is not one (nested arrays included).
pub(crate) fn split_array(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut values = Vec::new();
    if inner.trim().is_empty() {
        return Some(values);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut item = String::new();
        let quoted = chars.next_if_eq(&'"').is_some();
        let mut escaped = false;
        if quoted {
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => item.push(chars.next()?),
                    ch => item.push(ch),
                }
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
        } else {
            while let Some(&ch) = chars.peek() {
                match ch {
                    ',' => break,
                    '{' | '}' | '"' => return None,
                    '\\' => {
                        chars.next();
                        item.push(chars.next()?);
                        escaped = true;
                    }
                    _ => {
                        item.push(ch);
                        chars.next();
                    }
                }
            }
            let trimmed = item.trim_end().len();
            item.truncate(trimmed);
            if item.is_empty() {
                return None;
            }
        }
        let null = !quoted && !escaped && item.eq_ignore_ascii_case("NULL");
        values.push((!null).then_some(item));
        match chars.next() {
            None => return Some(values),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

/// `array_recv` for one-dimensional arrays (or the empty, zero-dimensional array).
fn decode_binary_array(bytes: &[u8], ty: &Type, elem: &Type) -> Result<ScalarValue, ParamError> {
    let bad = || ParamError::InvalidBinary {
        ty: ty.clone(),
        len: bytes.len(),
    };
    let mut rest = bytes;
    let ndim = take_i32(&mut rest).ok_or_else(bad)?;
    let _has_null = take_i32(&mut rest).ok_or_else(bad)?;
    // The element type is the one the parameter was declared with, whatever the client says.
    let _elem_oid = take_i32(&mut rest).ok_or_else(bad)?;
    let len = match ndim {
        0 => 0,
        1 => {
            let len = take_i32(&mut rest).ok_or_else(bad)?;
            let _lower_bound = take_i32(&mut rest).ok_or_else(bad)?;
            usize::try_from(len).map_err(|_| bad())?
        }
        _ => return Err(bad()),
    };
    let mut values = Vec::with_capacity(len.min(1024));
    for _ in 0..len {
        let item_len = take_i32(&mut rest).ok_or_else(bad)?;
        let value = match usize::try_from(item_len) {
            Err(_) if item_len == -1 => typed_null(elem),
            Err(_) => return Err(bad()),
            Ok(n) => {
                let item = rest.get(..n).ok_or_else(bad)?;
                rest = &rest[n..];
                decode_binary(item, elem)?
            }
        };
        values.push(value);
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    list_scalar(values, elem).ok_or_else(bad)
}

/// Reads a big-endian `i32` off the front of `rest`.
fn take_i32(rest: &mut &[u8]) -> Option<i32> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(i32::from_be_bytes(*head))
}

/// A single-row `List` scalar of the given elements (all of `arrow_type(elem)`).
fn list_scalar(values: Vec<ScalarValue>, elem: &Type) -> Option<ScalarValue> {
    let elem_type = arrow_type(elem).unwrap_or(DataType::Utf8);
    let array = if values.is_empty() {
        new_empty_array(&elem_type)
    } else {
        ScalarValue::iter_to_array(values).ok()?
    };
    let field = Arc::new(Field::new_list_field(elem_type, true));
    let offsets = OffsetBuffer::from_lengths([array.len()]);
    let list = ListArray::try_new(field, offsets, array, None).ok()?;
    Some(ScalarValue::List(Arc::new(list)))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Date64Array, Decimal128Array,
        FixedSizeBinaryArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
        Int64Array, IntervalDayTimeArray, IntervalMonthDayNanoArray, IntervalYearMonthArray,
        LargeStringArray, ListArray, RecordBatch, StringArray, StringViewArray,
        Time32MillisecondArray, Time64MicrosecondArray, Time64NanosecondArray,
        TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
        TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
    };
    use datafusion::arrow::datatypes::{Int32Type, IntervalDayTime, TimeUnit};

    use super::super::encode::encode_batch;
    use super::*;
    use crate::catalog::pg_types::pg_type;

    fn text(s: &str, ty: Type) -> Result<ScalarValue, ParamError> {
        decode_param(Some(s.as_bytes()), &ty, FieldFormat::Text)
    }

    fn ok(s: &str, ty: Type) -> ScalarValue {
        text(s, ty).expect("valid input")
    }

    fn decimal(v: i128) -> ScalarValue {
        ScalarValue::Decimal128(Some(v), 38, 10)
    }

    #[test]
    fn nulls_are_typed() {
        let null = |ty: Type| decode_param(None, &ty, FieldFormat::Binary).expect("null");
        assert_eq!(null(Type::INT4), ScalarValue::Int32(None));
        assert_eq!(null(Type::TEXT), ScalarValue::Utf8(None));
        assert_eq!(null(Type::NUMERIC), ScalarValue::Decimal128(None, 38, 10));
        assert_eq!(
            null(Type::TIMESTAMPTZ),
            ScalarValue::TimestampMicrosecond(None, Some(utc()))
        );
        assert_eq!(null(Type::POINT), ScalarValue::Utf8(None));
        assert_eq!(
            null(Type::INT4_ARRAY).data_type(),
            arrow_type(&Type::INT4_ARRAY).expect("list")
        );
        assert!(null(Type::INT4_ARRAY).is_null());
    }

    #[test]
    fn text_scalars() {
        for t in ["t", "TRUE", "yes", "on", " 1 ", "y"] {
            assert_eq!(ok(t, Type::BOOL), ScalarValue::Boolean(Some(true)), "{t}");
        }
        for f in ["f", "false", "No", "off", "0", "of"] {
            assert_eq!(ok(f, Type::BOOL), ScalarValue::Boolean(Some(false)), "{f}");
        }
        assert!(text("o", Type::BOOL).is_err());
        assert_eq!(ok(" -12 ", Type::INT2), ScalarValue::Int16(Some(-12)));
        assert_eq!(ok("+7", Type::INT4), ScalarValue::Int32(Some(7)));
        assert_eq!(
            ok("9223372036854775807", Type::INT8),
            ScalarValue::Int64(Some(i64::MAX))
        );
        assert_eq!(
            ok("4294967295", Type::OID),
            ScalarValue::UInt32(Some(u32::MAX))
        );
        assert_eq!(ok("1.5", Type::FLOAT8), ScalarValue::Float64(Some(1.5)));
        assert_eq!(ok("1e-5", Type::FLOAT4), ScalarValue::Float32(Some(1e-5)));
        assert_eq!(
            ok("-Infinity", Type::FLOAT8),
            ScalarValue::Float64(Some(f64::NEG_INFINITY))
        );
        assert_eq!(
            ok("inf", Type::FLOAT4),
            ScalarValue::Float32(Some(f32::INFINITY))
        );
        assert!(matches!(ok("NaN", Type::FLOAT8), ScalarValue::Float64(Some(v)) if v.is_nan()));
        assert_eq!(
            ok("hello", Type::TEXT),
            ScalarValue::Utf8(Some("hello".into()))
        );
        assert_eq!(
            ok("{\"b\":1,\"a\":[1e2]}", Type::JSONB),
            ScalarValue::LargeUtf8(Some("{\"a\": [100], \"b\": 1}".into()))
        );
        assert!(decode_param(Some(b"{\"a\":"), &Type::JSONB, FieldFormat::Text).is_err());
        assert_eq!(
            ok("(1,2)", Type::POINT),
            ScalarValue::Utf8(Some("(1,2)".into()))
        );
    }

    #[test]
    fn text_errors_read_like_postgres() {
        let err = text("abc", Type::INT4).expect_err("not a number");
        assert_eq!(
            err.to_string(),
            "invalid input syntax for type integer: \"abc\""
        );
        assert_eq!(err.sqlstate(), "22P02");
        let err = text("40000", Type::INT2).expect_err("too big");
        assert_eq!(
            err.to_string(),
            "value \"40000\" is out of range for type smallint"
        );
        assert_eq!(err.sqlstate(), "22003");
        assert_eq!(
            text("1e400", Type::FLOAT8)
                .expect_err("too big")
                .to_string(),
            "\"1e400\" is out of range for type double precision"
        );
        assert!(matches!(
            text("1e-400", Type::FLOAT8),
            Err(ParamError::OutOfRange { .. })
        ));
        assert_eq!(
            text("maybe", Type::BOOL).expect_err("bad").to_string(),
            "invalid input syntax for type boolean: \"maybe\""
        );
        assert!(text("2023-02-30", Type::DATE).is_err());
        assert!(text("\\xabc", Type::BYTEA).is_err());
        assert!(text("12:34:56x", Type::TIME).is_err());
        assert!(text("1.2.3", Type::NUMERIC).is_err());
        assert!(text("NaN", Type::NUMERIC).is_err());
        let invalid_utf8 = decode_param(Some(&[0xff]), &Type::TEXT, FieldFormat::Text);
        assert!(matches!(invalid_utf8, Err(ParamError::InvalidText { .. })));
    }

    #[test]
    fn text_numeric() {
        assert_eq!(ok("12.50", Type::NUMERIC), decimal(125_000_000_000));
        assert_eq!(ok("-1", Type::NUMERIC), decimal(-10_000_000_000));
        assert_eq!(ok("0", Type::NUMERIC), decimal(0));
        assert_eq!(ok(".5", Type::NUMERIC), decimal(5_000_000_000));
        assert_eq!(ok("1e3", Type::NUMERIC), decimal(10_000_000_000_000));
        assert_eq!(ok("1.5E-3", Type::NUMERIC), decimal(15_000_000));
        assert_eq!(ok("0.00000000005", Type::NUMERIC), decimal(1));
        assert_eq!(ok("-0.00000000005", Type::NUMERIC), decimal(-1));
        assert_eq!(ok("0.00000000004", Type::NUMERIC), decimal(0));
        assert_eq!(ok("0.000000000000001", Type::NUMERIC), decimal(0));
        assert_eq!(
            ok("9999999999999999999999999999", Type::NUMERIC),
            decimal(99_999_999_999_999_999_999_999_999_990_000_000_000)
        );
        assert!(matches!(
            text("99999999999999999999999999999", Type::NUMERIC),
            Err(ParamError::OutOfRange { .. })
        ));
    }

    #[test]
    fn text_dates_and_times() {
        assert_eq!(
            ok("2000-01-01", Type::DATE),
            ScalarValue::Date32(Some(10_957))
        );
        assert_eq!(ok("1969-12-31", Type::DATE), ScalarValue::Date32(Some(-1)));
        assert_eq!(
            ok("2000-01-01 23:59:59+05", Type::DATE),
            ScalarValue::Date32(Some(10_957))
        );
        assert_eq!(
            ok("0837-02-29 BC", Type::DATE),
            ScalarValue::Date32(Some(-1_024_812))
        );
        assert!(text("0836-02-29 BC", Type::DATE).is_err());
        assert_eq!(
            ok("0001-01-01 BC", Type::DATE),
            ScalarValue::Date32(Some(-719_528))
        );
        assert_eq!(
            ok("12:34:56.5", Type::TIME),
            ScalarValue::Time64Microsecond(Some(45_296_500_000))
        );
        assert_eq!(
            ok("01:02", Type::TIME),
            ScalarValue::Time64Microsecond(Some(3_720_000_000))
        );
        assert_eq!(
            ok("2023-11-14 22:13:20.1234", Type::TIMESTAMP),
            ScalarValue::TimestampMicrosecond(Some(1_700_000_000_123_400), None)
        );
        assert_eq!(
            ok("2023-11-14T22:13:20", Type::TIMESTAMP),
            ScalarValue::TimestampMicrosecond(Some(1_700_000_000_000_000), None)
        );
        assert_eq!(
            ok("1970-01-01", Type::TIMESTAMP),
            ScalarValue::TimestampMicrosecond(Some(0), None)
        );
        assert_eq!(
            ok("1970-01-01 00:00:00.0000006", Type::TIMESTAMP),
            ScalarValue::TimestampMicrosecond(Some(1), None)
        );
        let tz = |micros| ScalarValue::TimestampMicrosecond(Some(micros), Some(utc()));
        assert_eq!(ok("1970-01-01 02:00:00+02", Type::TIMESTAMPTZ), tz(0));
        assert_eq!(ok("1970-01-01 02:00:00+02:00", Type::TIMESTAMPTZ), tz(0));
        assert_eq!(
            ok("1970-01-01 00:00:00-0130", Type::TIMESTAMPTZ),
            tz(5_400_000_000)
        );
        assert_eq!(ok("1970-01-01 00:00:01Z", Type::TIMESTAMPTZ), tz(1_000_000));
        assert_eq!(
            ok("1970-01-01 00:00:01 UTC", Type::TIMESTAMPTZ),
            tz(1_000_000)
        );
        assert_eq!(ok("1970-01-01 00:00:01", Type::TIMESTAMPTZ), tz(1_000_000));
        assert_eq!(
            ok("0001-01-01 00:00:00+00 BC", Type::TIMESTAMPTZ),
            tz(-62_167_219_200_000_000)
        );
    }

    #[test]
    fn text_intervals() {
        let iv = |months, days, nanoseconds| {
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano {
                months,
                days,
                nanoseconds,
            }))
        };
        let sec = 1_000_000_000i64;
        assert_eq!(
            ok("1 year 2 mons 3 days 04:05:06.5", Type::INTERVAL),
            iv(14, 3, (4 * 3600 + 5 * 60 + 6) * sec + sec / 2)
        );
        assert_eq!(
            ok("-1 days +02:00:00", Type::INTERVAL),
            iv(0, -1, 7200 * sec)
        );
        assert_eq!(ok("00:00:00", Type::INTERVAL), iv(0, 0, 0));
        assert_eq!(ok("-01:02:03", Type::INTERVAL), iv(0, 0, -3723 * sec));
        assert_eq!(ok("1.5 days", Type::INTERVAL), iv(0, 1, 43_200 * sec));
        assert_eq!(ok("2 weeks", Type::INTERVAL), iv(0, 14, 0));
        assert_eq!(ok("3h 30m", Type::INTERVAL), iv(0, 0, 12_600 * sec));
        assert_eq!(ok("1 day ago", Type::INTERVAL), iv(0, -1, 0));
        assert_eq!(ok("90", Type::INTERVAL), iv(0, 0, 90 * sec));
        assert_eq!(ok("@ 1 mon", Type::INTERVAL), iv(1, 0, 0));
        assert!(text("1 fortnight", Type::INTERVAL).is_err());
        assert!(text("", Type::INTERVAL).is_err());
    }

    #[test]
    fn text_bytea() {
        assert_eq!(
            ok("\\xDEad01", Type::BYTEA),
            ScalarValue::Binary(Some(vec![0xde, 0xad, 0x01]))
        );
        assert_eq!(ok("\\x", Type::BYTEA), ScalarValue::Binary(Some(vec![])));
        assert_eq!(
            ok("a\\\\b\\001", Type::BYTEA),
            ScalarValue::Binary(Some(vec![b'a', b'\\', b'b', 1]))
        );
    }

    fn int_list(values: Vec<Option<i32>>) -> ScalarValue {
        ScalarValue::List(Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            vec![Some(values)],
        )))
    }

    #[test]
    fn text_arrays() {
        assert_eq!(
            ok("{1,2,NULL}", Type::INT4_ARRAY),
            int_list(vec![Some(1), Some(2), None])
        );
        assert_eq!(ok("{}", Type::INT4_ARRAY), int_list(vec![]));
        assert_eq!(
            ok(" { 3 , 4 } ", Type::INT4_ARRAY),
            int_list(vec![Some(3), Some(4)])
        );
        let strings = ok(r#"{"a b",c,"",NULL,"NULL","q\"x"}"#, Type::TEXT_ARRAY);
        let expected = ScalarValue::List(ScalarValue::new_list_nullable(
            &[
                ScalarValue::Utf8(Some("a b".into())),
                ScalarValue::Utf8(Some("c".into())),
                ScalarValue::Utf8(Some("".into())),
                ScalarValue::Utf8(None),
                ScalarValue::Utf8(Some("NULL".into())),
                ScalarValue::Utf8(Some("q\"x".into())),
            ],
            &DataType::Utf8,
        ));
        assert_eq!(strings, expected);
        assert!(text("{1,{2}}", Type::INT4_ARRAY).is_err());
        assert!(text("{1,x}", Type::INT4_ARRAY).is_err());
        assert!(text("1,2", Type::INT4_ARRAY).is_err());
    }

    #[test]
    fn binary_errors() {
        let bin = |bytes: &[u8], ty: Type| decode_param(Some(bytes), &ty, FieldFormat::Binary);
        assert!(matches!(
            bin(&[0, 1], Type::INT4),
            Err(ParamError::InvalidBinary { len: 2, .. })
        ));
        assert_eq!(
            bin(&[0, 1], Type::INT4).expect_err("short").sqlstate(),
            "22P03"
        );
        assert!(matches!(
            bin(&[1, 2], Type::POINT),
            Err(ParamError::UnsupportedBinary { .. })
        ));
        // NaN numeric.
        assert!(bin(&[0, 0, 0, 0, 0xc0, 0, 0, 0], Type::NUMERIC).is_err());
        // A digit above 9999.
        assert!(bin(&[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10], Type::NUMERIC).is_err());
        assert_eq!(
            bin(&[1; 16], Type::UUID).expect("uuid"),
            ScalarValue::FixedSizeBinary(16, Some(vec![1; 16]))
        );
        assert_eq!(
            bin(b"\x01{}", Type::JSONB).expect("jsonb"),
            ScalarValue::LargeUtf8(Some("{}".into()))
        );
        assert!(bin(b"{}", Type::JSONB).is_err());
        assert_eq!(
            bin(b"[1, 2]", Type::JSON).expect("json"),
            ScalarValue::LargeUtf8(Some("[1, 2]".into()))
        );
    }

    /// Encodes `array[0]` in binary with `encode_batch`, decodes it as the announced type and
    /// checks the result equals the original value cast to the parameter's Arrow type.
    fn round_trip(array: ArrayRef) {
        let dt = array.data_type().clone();
        let ty = pg_type(&dt);
        let batch = RecordBatch::try_from_iter([("c", array.clone())]).expect("batch");
        let rows = encode_batch(&batch, &[FieldFormat::Binary]).expect("encode");
        for (row, data_row) in rows.iter().enumerate() {
            let len = i32::from_be_bytes(data_row.data[..4].try_into().expect("len"));
            let bytes = (len >= 0).then(|| &data_row.data[4..]);
            let decoded = decode_param(bytes, &ty, FieldFormat::Binary)
                .unwrap_or_else(|e| panic!("{dt} row {row}: {e}"));
            let target = arrow_type(&ty).expect("known type");
            let original = ScalarValue::try_from_array(array.as_ref(), row)
                .and_then(|v| v.cast_to(&target))
                .expect("cast original");
            assert_eq!(decoded, original, "{dt} row {row}");
        }
    }

    #[test]
    fn binary_round_trips() {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(Int8Array::from(vec![Some(i8::MIN), Some(0), None])),
            Arc::new(UInt8Array::from(vec![u8::MAX])),
            Arc::new(Int16Array::from(vec![i16::MIN, -1, i16::MAX])),
            Arc::new(UInt16Array::from(vec![u16::MAX])),
            Arc::new(Int32Array::from(vec![Some(i32::MIN), None, Some(i32::MAX)])),
            Arc::new(UInt32Array::from(vec![u32::MAX])),
            Arc::new(Int64Array::from(vec![i64::MIN, 0, i64::MAX])),
            Arc::new(UInt64Array::from(vec![i64::MAX as u64])),
            datafusion::arrow::compute::cast(
                &Float32Array::from(vec![1.5, -0.25]),
                &DataType::Float16,
            )
            .expect("f16"),
            Arc::new(Float32Array::from(vec![
                1.5,
                -0.0,
                f32::INFINITY,
                f32::MIN_POSITIVE,
            ])),
            Arc::new(Float64Array::from(vec![0.1, -1e300, f64::NEG_INFINITY])),
            Arc::new(StringArray::from(vec![Some("héllo"), Some(""), None])),
            Arc::new(LargeStringArray::from(vec!["{\"a\": [1, \"large\"]}"])),
            Arc::new(StringViewArray::from(vec![
                "a view string longer than twelve",
            ])),
            Arc::new(BinaryArray::from(vec![Some(&[0u8, 255, 7][..]), None])),
            Arc::new(
                FixedSizeBinaryArray::try_from_iter(vec![vec![1u8, 2]].into_iter()).expect("fixed"),
            ),
            Arc::new(Date32Array::from(vec![0, 10_957, -719_528, 2_932_896])),
            Arc::new(Date64Array::from(vec![86_400_000 * 3])),
            Arc::new(Time64MicrosecondArray::from(vec![
                0,
                45_296_500_000,
                86_399_999_999,
            ])),
            Arc::new(Time64NanosecondArray::from(vec![1_000])),
            Arc::new(Time32MillisecondArray::from(vec![1_500])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                0,
                1_700_000_000_123_456,
                -62_167_219_200_000_000,
            ])),
            Arc::new(TimestampSecondArray::from(vec![1_700_000_000])),
            Arc::new(TimestampMillisecondArray::from(vec![1_700_000_000_123])),
            Arc::new(TimestampNanosecondArray::from(vec![
                1_700_000_000_123_456_000,
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_700_000_000_000_000), None])
                    .with_timezone("+00:00"),
            ),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                IntervalMonthDayNano::new(14, -3, 4_000_000_000),
                IntervalMonthDayNano::new(0, 0, 0),
            ])),
            Arc::new(IntervalDayTimeArray::from(vec![IntervalDayTime::new(
                2, 1_500,
            )])),
            Arc::new(IntervalYearMonthArray::from(vec![25])),
        ];
        for array in arrays {
            round_trip(array);
        }
    }

    #[test]
    fn binary_round_trips_timestamptz_in_other_zones() {
        // The instant survives; the zone becomes UTC.
        let array: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![1_700_000_000_000_000]).with_timezone("+02:00"),
        );
        let batch = RecordBatch::try_from_iter([("c", array)]).expect("batch");
        let rows = encode_batch(&batch, &[FieldFormat::Binary]).expect("encode");
        let decoded = decode_param(
            Some(&rows[0].data[4..]),
            &Type::TIMESTAMPTZ,
            FieldFormat::Binary,
        )
        .expect("decode");
        assert_eq!(
            decoded,
            ScalarValue::TimestampMicrosecond(Some(1_700_000_000_000_000), Some(utc()))
        );
    }

    #[test]
    fn binary_round_trips_numeric() {
        let cases: &[(i128, i8)] = &[
            (0, 0),
            (0, 2),
            (1, 0),
            (-1, 0),
            (1250, 2),
            (-1250, 2),
            (10_000, 0),
            (1, 4),
            (123_456_789_123, 3),
            (1, 10),
            (-99_999_999_999_999_999_999_999_999_999_999_999, 10),
            (12, -2),
        ];
        for &(value, scale) in cases {
            let array = Decimal128Array::from(vec![value])
                .with_precision_and_scale(38, scale)
                .expect("valid");
            round_trip(Arc::new(array));
        }
    }

    #[test]
    fn binary_round_trips_arrays() {
        let ints: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None, Some(3)]),
            Some(vec![]),
            None,
        ]));
        round_trip(ints);
        let strings = ScalarValue::new_list_nullable(
            &[ScalarValue::Utf8(Some("a".into())), ScalarValue::Utf8(None)],
            &DataType::Utf8,
        );
        round_trip(strings);
        let dates = ScalarValue::new_list_nullable(
            &[ScalarValue::TimestampMicrosecond(Some(5), None)],
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        );
        round_trip(dates);
    }

    #[test]
    fn text_round_trips_through_encode() {
        // What we print in text, we also read back.
        use super::super::encode::text_value;
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![0.1, 1e20, 1.23e-5, -0.0])),
            Arc::new(Float32Array::from(vec![0.1, 1e6, 3.4028235e38])),
            Arc::new(
                Decimal128Array::from(vec![1250, -5])
                    .with_precision_and_scale(10, 2)
                    .expect("valid"),
            ),
            Arc::new(Date32Array::from(vec![-719_529, 0, 2_932_896])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                -62_167_219_200_000_000,
                1_700_000_000_123_456,
            ])),
            Arc::new(TimestampMicrosecondArray::from(vec![5]).with_timezone("UTC")),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                IntervalMonthDayNano::new(14, -3, -4_500_000_000),
                IntervalMonthDayNano::new(-1, 2, 0),
            ])),
            Arc::new(BinaryArray::from(vec![&[0u8, 0xff][..]])),
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None]),
            ])),
        ];
        for array in arrays {
            let ty = pg_type(array.data_type());
            let target = arrow_type(&ty).expect("known");
            for row in 0..array.len() {
                let printed = text_value(array.as_ref(), row).expect("non-null");
                let parsed =
                    text(&printed, ty.clone()).unwrap_or_else(|e| panic!("{printed}: {e}"));
                let original = ScalarValue::try_from_array(array.as_ref(), row)
                    .and_then(|v| v.cast_to(&target))
                    .expect("cast");
                assert_eq!(parsed, original, "{printed}");
            }
        }
    }
}
