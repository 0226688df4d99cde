//! PostgreSQL's scalar functions that DataFusion lacks: `num_nulls`/`num_nonnulls`,
//! `justify_hours`/`justify_days`, `isfinite`, `quote_literal`, `quote_ident`, `format`,
//! `scale`, `div`, `mod`, `sign`, `age`, and `gen_random_uuid` (a `uuid`, from DataFusion's `uuid()`). Each follows PostgreSQL's
//! documented behaviour for the types Sluice has.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, IntervalMonthDayNanoArray, StringArray,
};
use datafusion::arrow::datatypes::{
    DataType, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit,
};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{ScalarUDF, Signature, TypeSignature, Volatility};

use super::pg_semantics::{udf_with, user_error};
use crate::error::sqlstate;

const DAY_NANOS: i64 = 86_400_000_000_000;

fn int32(_: &[DataType]) -> DataType {
    DataType::Int32
}

fn text(_: &[DataType]) -> DataType {
    DataType::Utf8
}

fn boolean(_: &[DataType]) -> DataType {
    DataType::Boolean
}

fn interval(_: &[DataType]) -> DataType {
    DataType::Interval(IntervalUnit::MonthDayNano)
}

/// The functions, to register in every context.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    let any = |n| Signature::any(n, Volatility::Immutable);
    let variadic = Signature::variadic_any(Volatility::Immutable);
    let one_interval = Signature::exact(
        vec![DataType::Interval(IntervalUnit::MonthDayNano)],
        Volatility::Immutable,
    );
    vec![
        udf_with("num_nulls", variadic.clone(), int32, |a| {
            count_nulls(a, true)
        }),
        udf_with("num_nonnulls", variadic.clone(), int32, |a| {
            count_nulls(a, false)
        }),
        udf_with("justify_hours", one_interval.clone(), interval, |a| {
            justify(&a[0], true)
        }),
        udf_with("justify_days", one_interval, interval, |a| {
            justify(&a[0], false)
        }),
        udf_with("isfinite", any(1), boolean, |a| {
            // Sluice's dates, timestamps and intervals have no infinities.
            let nulls = a[0].logical_nulls();
            Ok(Arc::new(BooleanArray::from_iter((0..a[0].len()).map(
                |i| nulls.as_ref().is_none_or(|n| n.is_valid(i)).then_some(true),
            ))))
        }),
        udf_with(
            "quote_literal",
            Signature::one_of(
                vec![TypeSignature::String(1), TypeSignature::Any(1)],
                Volatility::Immutable,
            ),
            text,
            |a| map_text(&a[0], |s| Some(quote_literal(s))),
        ),
        udf_with(
            "quote_ident",
            Signature::string(1, Volatility::Immutable),
            text,
            |a| map_text(&a[0], |s| Some(quote_ident(s))),
        ),
        udf_with("format", variadic, text, format),
        udf_with("scale", any(1), int32, |a| {
            let scale = match a[0].data_type() {
                DataType::Decimal128(_, s) | DataType::Decimal256(_, s) => i32::from(*s),
                _ => 0,
            };
            let nulls = a[0].logical_nulls();
            Ok(Arc::new(Int32Array::from_iter((0..a[0].len()).map(|i| {
                nulls
                    .as_ref()
                    .is_none_or(|n| n.is_valid(i))
                    .then_some(scale)
            }))))
        }),
        udf_with(
            "div",
            any(2),
            |_| DataType::Decimal128(38, 0),
            |a| numeric_div(&a[0], &a[1]),
        ),
        udf_with("mod", any(2), remainder_type, |a| remainder(&a[0], &a[1])),
        udf_with(
            "sign",
            any(1),
            |t| match t.first() {
                Some(DataType::Float32 | DataType::Float64) => DataType::Float64,
                _ => DataType::Decimal128(38, 0),
            },
            |a| sign(&a[0]),
        ),
        udf_with("age", any(2), interval, |a| age(&a[0], &a[1])),
        super::uuid::GenRandomUuid::udf(),
    ]
}

/// `div(a, b)`: the integer quotient, truncated toward zero, as NUMERIC; 22012 for `b = 0`.
fn numeric_div(a: &ArrayRef, b: &ArrayRef) -> DfResult<ArrayRef> {
    let scale = |t: &DataType| match t {
        DataType::Decimal128(_, s) => *s,
        _ => 0,
    };
    let s = scale(a.data_type()).max(scale(b.data_type())).max(0);
    let target = DataType::Decimal128(38, s);
    let a = datafusion::arrow::compute::cast(a, &target)?;
    let b = datafusion::arrow::compute::cast(b, &target)?;
    let (a, b) = (
        a.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>(),
        b.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>(),
    );
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        if a.is_null(i) || b.is_null(i) {
            out.push(None);
            continue;
        }
        if b.value(i) == 0 {
            return Err(user_error(
                sqlstate::DIVISION_BY_ZERO,
                "division by zero".into(),
            ));
        }
        // Both at one scale: the quotient of the unscaled values is the quotient.
        out.push(Some(a.value(i) / b.value(i)));
    }
    Ok(Arc::new(
        datafusion::arrow::array::Decimal128Array::from(out).with_precision_and_scale(38, 0)?,
    ))
}

/// `mod(a, b)`'s type: the arguments' own when they agree, else NUMERIC if either is, else
/// double precision if either is, else bigint.
fn remainder_type(args: &[DataType]) -> DataType {
    match args {
        [a, b] if a == b => a.clone(),
        [a, b] => {
            let scale = |t: &DataType| match t {
                DataType::Decimal128(_, s) => Some(*s),
                _ => None,
            };
            match (scale(a), scale(b)) {
                (Some(x), Some(y)) => DataType::Decimal128(38, x.max(y)),
                (Some(x), None) | (None, Some(x)) => DataType::Decimal128(38, x),
                _ if a.is_floating() || b.is_floating() => DataType::Float64,
                _ => DataType::Int64,
            }
        }
        _ => DataType::Int64,
    }
}

/// `mod(a, b)`: the remainder, with the sign of `a` (22012 when `b` is zero).
fn remainder(a: &ArrayRef, b: &ArrayRef) -> DfResult<ArrayRef> {
    let target = remainder_type(&[a.data_type().clone(), b.data_type().clone()]);
    let a = datafusion::arrow::compute::cast(a, &target)?;
    let b = datafusion::arrow::compute::cast(b, &target)?;
    Ok(datafusion::arrow::compute::kernels::numeric::rem(&a, &b)?)
}

/// `sign(x)`: -1, 0 or 1, double precision for floats and NUMERIC otherwise.
fn sign(x: &ArrayRef) -> DfResult<ArrayRef> {
    let float = matches!(x.data_type(), DataType::Float32 | DataType::Float64);
    let values = datafusion::arrow::compute::cast(x, &DataType::Float64)?;
    let values = values.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    let signs = values.iter().map(|v| {
        v.map(|v| {
            if v > 0.0 {
                1
            } else if v < 0.0 {
                -1
            } else {
                0
            }
        })
    });
    Ok(if float {
        Arc::new(datafusion::arrow::array::Float64Array::from_iter(
            signs.map(|s| s.map(f64::from)),
        ))
    } else {
        Arc::new(
            datafusion::arrow::array::Decimal128Array::from_iter(signs.map(|s| s.map(i128::from)))
                .with_precision_and_scale(38, 0)?,
        )
    })
}

/// `age(a, b)`: `a - b` in years, months and days as PostgreSQL counts them (field by field,
/// borrowing from the next larger field; a month borrowed is the earlier date's), then the
/// time of day.
fn age(a: &ArrayRef, b: &ArrayRef) -> DfResult<ArrayRef> {
    use chrono::{DateTime, Datelike, Timelike};
    let naive = DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None);
    let a = datafusion::arrow::compute::cast(a, &naive)?;
    let b = datafusion::arrow::compute::cast(b, &naive)?;
    let a = a.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
    let b = b.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
    let days_in = |year: i32, month: u32| -> i64 {
        let (y, m) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        chrono::NaiveDate::from_ymd_opt(y, m, 1)
            .and_then(|d| d.pred_opt())
            .map_or(30, |d| i64::from(d.day()))
    };
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        if a.is_null(i) || b.is_null(i) {
            out.push(None);
            continue;
        }
        let (x, y) = (a.value(i), b.value(i));
        // PostgreSQL works on the larger minus the smaller and negates the result.
        let (negate, hi, lo) = if x < y { (true, y, x) } else { (false, x, y) };
        let (hi, lo) = (
            DateTime::from_timestamp_nanos(hi).naive_utc(),
            DateTime::from_timestamp_nanos(lo).naive_utc(),
        );
        let mut nanos = i64::from(hi.nanosecond()) - i64::from(lo.nanosecond());
        let mut secs =
            i64::from(hi.num_seconds_from_midnight()) - i64::from(lo.num_seconds_from_midnight());
        let mut days = i64::from(hi.day()) - i64::from(lo.day());
        let mut months = i64::from(hi.month()) - i64::from(lo.month());
        let mut years = i64::from(hi.year()) - i64::from(lo.year());
        if nanos < 0 {
            nanos += 1_000_000_000;
            secs -= 1;
        }
        if secs < 0 {
            secs += 86_400;
            days -= 1;
        }
        if days < 0 {
            // PostgreSQL borrows the length of the earlier date's month.
            days += days_in(lo.year(), lo.month());
            months -= 1;
        }
        if months < 0 {
            months += 12;
            years -= 1;
        }
        let sign = if negate { -1 } else { 1 };
        let total_months = i32::try_from(sign * (years * 12 + months)).unwrap_or(i32::MAX);
        out.push(Some(IntervalMonthDayNano::new(
            total_months,
            (sign * days) as i32,
            sign * (secs * 1_000_000_000 + nanos),
        )));
    }
    Ok(Arc::new(IntervalMonthDayNanoArray::from(out)))
}

/// How many arguments of each row are (or are not) NULL.
fn count_nulls(args: &[ArrayRef], nulls: bool) -> DfResult<ArrayRef> {
    let rows = args.first().map_or(1, |a| a.len());
    // Logical nulls: an untyped NULL argument is a NullArray, which has no validity buffer.
    let masks: Vec<_> = args.iter().map(|a| a.logical_nulls()).collect();
    Ok(Arc::new(Int32Array::from_iter_values((0..rows).map(|i| {
        masks
            .iter()
            .filter(|m| m.as_ref().is_some_and(|m| m.is_null(i)) == nulls)
            .count() as i32
    }))))
}

/// `justify_hours` (whole days out of the time part) or `justify_days` (months out of days),
/// keeping every part's sign as PostgreSQL does.
fn justify(values: &ArrayRef, hours: bool) -> DfResult<ArrayRef> {
    let values = values.as_primitive::<IntervalMonthDayNanoType>();
    let out: IntervalMonthDayNanoArray = values.unary(|v: IntervalMonthDayNano| {
        let (mut months, mut days, mut nanos) = (v.months, v.days, v.nanoseconds);
        if hours {
            days = days.saturating_add((nanos / DAY_NANOS) as i32);
            nanos %= DAY_NANOS;
            if days > 0 && nanos < 0 {
                nanos += DAY_NANOS;
                days -= 1;
            } else if days < 0 && nanos > 0 {
                nanos -= DAY_NANOS;
                days += 1;
            }
        } else {
            months = months.saturating_add(days / 30);
            days %= 30;
            if months > 0 && days < 0 {
                days += 30;
                months -= 1;
            } else if months < 0 && days > 0 {
                days -= 30;
                months += 1;
            }
        }
        IntervalMonthDayNano::new(months, days, nanos)
    });
    Ok(Arc::new(out))
}

/// Each value's text (Arrow's cast to text), mapped; NULL stays NULL.
fn map_text(values: &ArrayRef, f: impl Fn(&str) -> Option<String>) -> DfResult<ArrayRef> {
    let strings = datafusion::arrow::compute::cast(values, &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    Ok(Arc::new(StringArray::from_iter(
        strings.iter().map(|s| s.and_then(&f)),
    )))
}

/// `'it''s'`; with a backslash, PostgreSQL's escape string form (`E'a\\b'`).
fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    if s.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An identifier as PostgreSQL quotes it: bare when it is lowercase letters, digits and `_`
/// (not first a digit) and not a keyword, else in double quotes.
fn quote_ident(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !is_reserved(s);
    if bare {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// Whether `word` is a key word an identifier cannot be without quotes.
fn is_reserved(word: &str) -> bool {
    use datafusion::sql::sqlparser::keywords::{
        ALL_KEYWORDS, ALL_KEYWORDS_INDEX, RESERVED_FOR_COLUMN_ALIAS,
    };
    let upper = word.to_ascii_uppercase();
    ALL_KEYWORDS
        .binary_search(&upper.as_str())
        .is_ok_and(|i| RESERVED_FOR_COLUMN_ALIAS.contains(&ALL_KEYWORDS_INDEX[i]))
}

/// `format(fmt, args…)`: `%s` (the value's text, NULL as nothing), `%I` (an identifier),
/// `%L` (a literal, NULL as `NULL`), `%%`, and `%n$…` to pick the `n`th argument.
fn format(args: &[ArrayRef]) -> DfResult<ArrayRef> {
    let Some((template, values)) = args.split_first() else {
        return Err(user_error(
            sqlstate::UNDEFINED_FUNCTION,
            "function format() does not exist".into(),
        ));
    };
    let templates = datafusion::arrow::compute::cast(template, &DataType::Utf8)?;
    let templates = templates.as_string::<i32>();
    let texts = values
        .iter()
        .map(|v| datafusion::arrow::compute::cast(v, &DataType::Utf8))
        .collect::<Result<Vec<_>, _>>()?;
    let texts: Vec<&StringArray> = texts.iter().map(|t| t.as_string::<i32>()).collect();
    let mut out = Vec::with_capacity(templates.len());
    for row in 0..templates.len() {
        if templates.is_null(row) {
            out.push(None);
            continue;
        }
        let value = |i: usize| -> DfResult<Option<&str>> {
            let column = texts.get(i).ok_or_else(|| {
                user_error(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "too few arguments for format()".into(),
                )
            })?;
            Ok(column.is_valid(row).then(|| column.value(row)))
        };
        let mut result = String::new();
        let mut next = 0usize;
        let mut chars = templates.value(row).chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                result.push(c);
                continue;
            }
            // `%n$` picks argument n (from 1).
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            let index = if digits.is_empty() {
                None
            } else if chars.next_if_eq(&'$').is_some() {
                let n: usize = digits.parse().unwrap_or(0);
                if n == 0 {
                    return Err(user_error(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        "format specifies argument 0, but arguments are numbered from 1".into(),
                    ));
                }
                Some(n - 1)
            } else {
                return Err(user_error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "format() widths are not supported".into(),
                ));
            };
            let kind = chars.next();
            if kind == Some('%') && index.is_none() {
                result.push('%');
                continue;
            }
            let i = index.unwrap_or(next);
            next = i + 1;
            match kind {
                Some('s') => result.push_str(value(i)?.unwrap_or("")),
                Some('I') => match value(i)? {
                    Some(v) => result.push_str(&quote_ident(v)),
                    None => {
                        return Err(user_error(
                            sqlstate::NULL_VALUE_NOT_ALLOWED,
                            "null values cannot be formatted as an SQL identifier".into(),
                        ));
                    }
                },
                Some('L') => match value(i)? {
                    Some(v) => result.push_str(&quote_literal(v)),
                    None => result.push_str("NULL"),
                },
                other => {
                    return Err(user_error(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!(
                            "unrecognized format() type specifier \"{}\"",
                            other.map(String::from).unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        out.push(Some(result));
    }
    Ok(Arc::new(StringArray::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn format_follows_postgresql() {
        let out = format(&[
            strings(&[Some("%s, %I, %L, %%, %2$s")]),
            strings(&[Some("it's")]),
            strings(&[Some("B c")]),
            strings(&[None]),
        ])
        .expect("format");
        assert_eq!(
            out.as_string::<i32>().value(0),
            "it's, \"B c\", NULL, %, B c"
        );
        assert!(
            format(&[strings(&[Some("%s %s")]), strings(&[Some("a")])]).is_err(),
            "too few arguments"
        );
        assert!(format(&[strings(&[Some("%5s")]), strings(&[Some("a")])]).is_err());
    }

    #[test]
    fn justify_moves_days_and_months() {
        let hours: ArrayRef = Arc::new(IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(0, 0, 27 * 3_600_000_000_000),
            IntervalMonthDayNano::new(0, 1, -3_600_000_000_000),
        ]));
        let out = justify(&hours, true).expect("justify");
        let out = out.as_primitive::<IntervalMonthDayNanoType>();
        assert_eq!(
            out.value(0),
            IntervalMonthDayNano::new(0, 1, 3 * 3_600_000_000_000)
        );
        assert_eq!(
            out.value(1),
            IntervalMonthDayNano::new(0, 0, 23 * 3_600_000_000_000)
        );
        let days: ArrayRef = Arc::new(IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(0, 35, 0),
        ]));
        let out = justify(&days, false).expect("justify");
        assert_eq!(
            out.as_primitive::<IntervalMonthDayNanoType>().value(0),
            IntervalMonthDayNano::new(1, 5, 0)
        );
    }

    #[test]
    fn age_counts_as_postgresql() {
        use datafusion::arrow::array::TimestampNanosecondArray;
        let ts = |s: &str| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .expect("timestamp")
                .and_utc()
                .timestamp_nanos_opt()
                .expect("in range")
        };
        let a: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
            ts("2026-07-04 00:00:00"),
            ts("2026-03-01 10:00:00"),
            ts("2025-01-01 00:00:00"),
        ]));
        let b: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
            ts("2025-01-01 00:00:00"),
            ts("2026-01-31 12:00:00"),
            ts("2026-07-04 00:00:00"),
        ]));
        let out = age(&a, &b).expect("age");
        let out = out.as_primitive::<IntervalMonthDayNanoType>();
        // 1 year 6 mons 3 days; 1 mon 22:00:00 (January's 31 days borrowed); negated.
        assert_eq!(out.value(0), IntervalMonthDayNano::new(18, 3, 0));
        assert_eq!(
            out.value(1),
            IntervalMonthDayNano::new(1, 0, 22 * 3_600_000_000_000)
        );
        assert_eq!(out.value(2), IntervalMonthDayNano::new(-18, -3, 0));
    }

    #[test]
    fn quoting_follows_postgresql() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert_eq!(quote_ident("abc_1"), "abc_1");
        assert_eq!(quote_ident("A b"), "\"A b\"");
        assert_eq!(quote_ident("select"), "\"select\"");
    }
}
