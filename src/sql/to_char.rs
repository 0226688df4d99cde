//! `to_char(timestamp, template)` with PostgreSQL's template patterns (`YYYY-MM-DD HH24:MI:SS`,
//! `Mon`, `Day`, `FM…`, `"text"`), in place of DataFusion's, which reads chrono's `%Y-%m-%d`
//! and returns a PostgreSQL template unchanged. The template is parsed once per distinct
//! template, then each row is written into one string buffer.

use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use datafusion::common::plan_err;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The `to_char` function.
pub fn to_char_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToChar {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToChar {
    signature: Signature,
}

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        "to_char"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        match args.first() {
            Some(
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Null,
            ) => Ok(DataType::Utf8),
            Some(other) => {
                plan_err!("to_char of {other} is not supported (only of a date or timestamp)")
            }
            None => plan_err!("to_char needs a value and a template"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let values = args.args[0].clone().into_array(rows)?;
        let templates = cast(&args.args[1].clone().into_array(rows)?, &DataType::Utf8)?;
        let templates = templates.as_string::<i32>();
        let times = cast(&values, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
        let times = times.as_primitive::<TimestampNanosecondType>();
        let array = render_column(times, templates);
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&array, 0)?)
        } else {
            ColumnarValue::Array(array)
        })
    }
}

/// `to_char` of each row: its time rendered by its template (parsed once while it repeats).
fn render_column(
    times: &datafusion::arrow::array::TimestampNanosecondArray,
    templates: &datafusion::arrow::array::StringArray,
) -> ArrayRef {
    let rows = times.len();
    let mut out = StringBuilder::with_capacity(rows, rows * 16);
    // The template parsed (and whether it prints only the date), kept while it repeats.
    let mut parsed: Option<(String, Vec<Token>, bool)> = None;
    let mut text = String::new();
    // The day `text` was rendered for, when the template prints only the date.
    let mut text_day: Option<i64> = None;
    const NANOS_PER_DAY: i64 = 86_400_000_000_000;
    for i in 0..rows {
        if times.is_null(i) || templates.is_null(i) {
            out.append_null();
            continue;
        }
        let template = templates.value(i);
        if parsed.as_ref().is_none_or(|(t, _, _)| t != template) {
            let tokens = parse(template);
            let date_only = date_only(&tokens);
            parsed = Some((template.to_string(), tokens, date_only));
            text_day = None;
        }
        let Some((_, tokens, date_only)) = parsed.as_ref() else {
            out.append_null();
            continue;
        };
        let nanos = times.value(i);
        let day = nanos.div_euclid(NANOS_PER_DAY);
        if !(*date_only && text_day == Some(day)) {
            let t = DateTime::from_timestamp_nanos(nanos).naive_utc();
            text.clear();
            render(tokens, &t, &mut text);
            text_day = date_only.then_some(day);
        }
        out.append_value(&text);
    }
    Arc::new(out.finish())
}

/// One piece of a template: a field (with `FM`: no padding) or literal text.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Field(Field, bool),
    Text(String),
}

/// Case of a name field: `MONTH`, `Month`, `month`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Upper,
    Title,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Hour24,
    Hour12,
    Minute,
    Second,
    Milli,
    Micro,
    SecondsOfDay,
    Meridiem { dots: bool, upper: bool },
    YearComma,
    Year4,
    Year3,
    Year2,
    Year1,
    IsoYear,
    Century,
    MonthName(Case),
    MonthAbbrev(Case),
    Month,
    DayName(Case),
    DayAbbrev(Case),
    DayOfYear,
    DayOfMonth,
    DayOfWeek,
    IsoDayOfWeek,
    WeekOfMonth,
    WeekOfYear,
    IsoWeek,
    Quarter,
    Julian,
    RomanMonth(bool),
    TimeZone,
}

/// Patterns, longest first where one is a prefix of another.
const PATTERNS: &[(&str, Field)] = &[
    ("HH24", Field::Hour24),
    ("HH12", Field::Hour12),
    ("HH", Field::Hour12),
    ("MI", Field::Minute),
    ("SSSSS", Field::SecondsOfDay),
    ("SSSS", Field::SecondsOfDay),
    ("SS", Field::Second),
    ("MS", Field::Milli),
    ("US", Field::Micro),
    (
        "A.M.",
        Field::Meridiem {
            dots: true,
            upper: true,
        },
    ),
    (
        "P.M.",
        Field::Meridiem {
            dots: true,
            upper: true,
        },
    ),
    (
        "a.m.",
        Field::Meridiem {
            dots: true,
            upper: false,
        },
    ),
    (
        "p.m.",
        Field::Meridiem {
            dots: true,
            upper: false,
        },
    ),
    (
        "AM",
        Field::Meridiem {
            dots: false,
            upper: true,
        },
    ),
    (
        "PM",
        Field::Meridiem {
            dots: false,
            upper: true,
        },
    ),
    (
        "am",
        Field::Meridiem {
            dots: false,
            upper: false,
        },
    ),
    (
        "pm",
        Field::Meridiem {
            dots: false,
            upper: false,
        },
    ),
    ("Y,YYY", Field::YearComma),
    ("YYYY", Field::Year4),
    ("YYY", Field::Year3),
    ("YY", Field::Year2),
    ("Y", Field::Year1),
    ("IYYY", Field::IsoYear),
    ("CC", Field::Century),
    ("MONTH", Field::MonthName(Case::Upper)),
    ("Month", Field::MonthName(Case::Title)),
    ("month", Field::MonthName(Case::Lower)),
    ("MON", Field::MonthAbbrev(Case::Upper)),
    ("Mon", Field::MonthAbbrev(Case::Title)),
    ("mon", Field::MonthAbbrev(Case::Lower)),
    ("MM", Field::Month),
    ("DAY", Field::DayName(Case::Upper)),
    ("Day", Field::DayName(Case::Title)),
    ("day", Field::DayName(Case::Lower)),
    ("DY", Field::DayAbbrev(Case::Upper)),
    ("Dy", Field::DayAbbrev(Case::Title)),
    ("dy", Field::DayAbbrev(Case::Lower)),
    ("DDD", Field::DayOfYear),
    ("DD", Field::DayOfMonth),
    ("D", Field::DayOfWeek),
    ("ID", Field::IsoDayOfWeek),
    ("IW", Field::IsoWeek),
    ("WW", Field::WeekOfYear),
    ("W", Field::WeekOfMonth),
    ("Q", Field::Quarter),
    ("J", Field::Julian),
    ("RM", Field::RomanMonth(true)),
    ("rm", Field::RomanMonth(false)),
    ("TZ", Field::TimeZone),
    ("tz", Field::TimeZone),
];

/// Parses a template into tokens. Patterns are matched case-sensitively where PostgreSQL
/// distinguishes case (names); the rest in upper case as written in the documentation, plus
/// the lower-case spellings PostgreSQL also accepts for numeric fields (`yyyy`, `hh24`, `mi`).
fn parse(template: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut rest = template;
    let mut text = String::new();
    let flush = |text: &mut String, tokens: &mut Vec<Token>| {
        if !text.is_empty() {
            tokens.push(Token::Text(std::mem::take(text)));
        }
    };
    while !rest.is_empty() {
        // Double-quoted text is copied as is; a backslash escapes a quote inside.
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            text.push(next);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => text.push(c),
                }
            }
            rest = &quoted[end.min(quoted.len())..];
            continue;
        }
        let fill = rest.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("FM"));
        let body = if fill { &rest[2..] } else { rest };
        let found = PATTERNS.iter().find_map(|(p, f)| {
            if body.starts_with(p) {
                return Some((p.len(), *f));
            }
            // Numeric fields also in lower case.
            let numeric = !matches!(
                f,
                Field::MonthName(_)
                    | Field::MonthAbbrev(_)
                    | Field::DayName(_)
                    | Field::DayAbbrev(_)
                    | Field::Meridiem { .. }
                    | Field::RomanMonth(_)
                    | Field::TimeZone
            );
            (numeric
                && body.len() >= p.len()
                && body.is_char_boundary(p.len())
                && body[..p.len()] == p.to_ascii_lowercase())
            .then_some((p.len(), *f))
        });
        match found {
            Some((len, field)) => {
                flush(&mut text, &mut tokens);
                tokens.push(Token::Field(field, fill));
                rest = &body[len..];
            }
            None => {
                let c = rest.chars().next().expect("rest is not empty");
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    flush(&mut text, &mut tokens);
    tokens
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const ROMAN: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];

fn cased(name: &str, case: Case) -> String {
    match case {
        Case::Upper => name.to_uppercase(),
        Case::Title => name.to_string(),
        Case::Lower => name.to_lowercase(),
    }
}

/// Appends formatted text (writing to a `String` cannot fail).
fn push(out: &mut String, args: std::fmt::Arguments<'_>) {
    out.write_fmt(args).expect("a String takes any text");
}

/// Writes `value` zero-padded to `width` digits (no padding with `FM`).
fn number(out: &mut String, value: i64, width: usize, fill: bool) {
    // Digits written directly: `core::fmt` was most of a `to_char` call's cost.
    let mut digits = [0u8; 20];
    let mut n = value.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        out.push('-');
    }
    if !fill {
        for _ in len..width {
            out.push('0');
        }
    }
    for &d in digits[..len].iter().rev() {
        out.push(char::from(d));
    }
}

/// Whether a template prints only what the date decides (no hour, minute, second, …): then
/// rows of one day print the same text.
fn date_only(tokens: &[Token]) -> bool {
    tokens.iter().all(|t| {
        !matches!(
            t,
            Token::Field(
                Field::Hour24
                    | Field::Hour12
                    | Field::Minute
                    | Field::Second
                    | Field::Milli
                    | Field::Micro
                    | Field::SecondsOfDay
                    | Field::Meridiem { .. }
                    | Field::TimeZone,
                _
            )
        )
    })
}

/// Writes `name`, blank-padded to `width` characters unless `FM`.
fn name(out: &mut String, name: &str, width: usize, fill: bool) {
    out.push_str(name);
    if !fill {
        for _ in name.chars().count()..width {
            out.push(' ');
        }
    }
}

fn render(tokens: &[Token], t: &NaiveDateTime, out: &mut String) {
    for token in tokens {
        let (field, fill) = match token {
            Token::Text(s) => {
                out.push_str(s);
                continue;
            }
            Token::Field(f, fill) => (*f, *fill),
        };
        let hour12 = match t.hour() % 12 {
            0 => 12,
            h => h,
        };
        match field {
            Field::Hour24 => number(out, t.hour().into(), 2, fill),
            Field::Hour12 => number(out, hour12.into(), 2, fill),
            Field::Minute => number(out, t.minute().into(), 2, fill),
            Field::Second => number(out, t.second().into(), 2, fill),
            Field::Milli => number(out, (t.nanosecond() / 1_000_000).into(), 3, fill),
            Field::Micro => number(out, (t.nanosecond() / 1_000).into(), 6, fill),
            Field::SecondsOfDay => number(out, t.num_seconds_from_midnight().into(), 1, true),
            Field::Meridiem { dots, upper } => {
                let pm = t.hour() >= 12;
                let s = match (pm, dots) {
                    (false, false) => "AM",
                    (true, false) => "PM",
                    (false, true) => "A.M.",
                    (true, true) => "P.M.",
                };
                if upper {
                    out.push_str(s);
                } else {
                    out.push_str(&s.to_lowercase());
                }
            }
            Field::YearComma => {
                let y = t.year();
                push(out, format_args!("{},{:03}", y / 1000, (y % 1000).abs()));
            }
            Field::Year4 => number(out, t.year().into(), 4, fill),
            Field::Year3 => number(out, (t.year() % 1000).into(), 3, fill),
            Field::Year2 => number(out, (t.year() % 100).into(), 2, fill),
            Field::Year1 => number(out, (t.year() % 10).into(), 1, fill),
            Field::IsoYear => number(out, t.iso_week().year().into(), 4, fill),
            Field::Century => {
                let y = t.year();
                let c = if y > 0 {
                    (y + 99) / 100
                } else {
                    -((99 - y) / 100)
                };
                number(out, c.into(), 2, fill)
            }
            Field::MonthName(case) => name(out, &cased(MONTHS[t.month0() as usize], case), 9, fill),
            Field::MonthAbbrev(case) => {
                out.push_str(&cased(&MONTHS[t.month0() as usize][..3], case))
            }
            Field::Month => number(out, t.month().into(), 2, fill),
            Field::DayName(case) => name(
                out,
                &cased(DAYS[t.weekday().num_days_from_sunday() as usize], case),
                9,
                fill,
            ),
            Field::DayAbbrev(case) => out.push_str(&cased(
                &DAYS[t.weekday().num_days_from_sunday() as usize][..3],
                case,
            )),
            Field::DayOfYear => number(out, t.ordinal().into(), 3, fill),
            Field::DayOfMonth => number(out, t.day().into(), 2, fill),
            Field::DayOfWeek => number(
                out,
                (t.weekday().num_days_from_sunday() + 1).into(),
                1,
                fill,
            ),
            Field::IsoDayOfWeek => number(out, t.weekday().number_from_monday().into(), 1, fill),
            Field::WeekOfMonth => number(out, ((t.day() - 1) / 7 + 1).into(), 1, fill),
            Field::WeekOfYear => number(out, ((t.ordinal() - 1) / 7 + 1).into(), 2, fill),
            Field::IsoWeek => number(out, t.iso_week().week().into(), 2, fill),
            Field::Quarter => number(out, (t.month0() / 3 + 1).into(), 1, fill),
            Field::Julian => number(
                out,
                (t.date().num_days_from_ce() + 1_721_425).into(),
                1,
                true,
            ),
            Field::RomanMonth(upper) => {
                let r = ROMAN[t.month0() as usize];
                let r = if upper {
                    r.to_string()
                } else {
                    r.to_lowercase()
                };
                name(out, &r, 4, fill)
            }
            // Timestamps here carry no zone: PostgreSQL prints nothing for one without.
            Field::TimeZone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(template: &str) -> String {
        let t = chrono::NaiveDate::from_ymd_opt(2026, 1, 5)
            .and_then(|d| d.and_hms_nano_opt(13, 4, 5, 123_456_000))
            .expect("a valid time");
        let mut out = String::new();
        render(&parse(template), &t, &mut out);
        out
    }

    #[test]
    fn a_column_renders_each_row_by_its_own_day_and_template() {
        use datafusion::arrow::array::{StringArray, TimestampNanosecondArray};
        let day = 86_400_000_000_000i64;
        let hour = day / 24;
        let t0 = 1_767_225_600_000_000_000i64; // 2026-01-01 00:00
        let times = TimestampNanosecondArray::from(vec![
            Some(t0 + hour),
            Some(t0 + 23 * hour),
            Some(t0 + day),
            None,
            Some(t0 + day + hour),
            Some(-hour),
            Some(-hour),
            Some(t0 + day + 2 * hour),
        ]);
        let templates = StringArray::from(vec![
            "YYYY-MM-DD",
            "YYYY-MM-DD",
            "YYYY-MM-DD",
            "YYYY-MM-DD",
            "HH24:MI",
            "YYYY-MM-DD",
            "YYYY-MM-DD",
            "HH24:MI",
        ]);
        let out = render_column(&times, &templates);
        let out: Vec<Option<&str>> = out.as_string::<i32>().iter().collect();
        assert_eq!(
            out,
            [
                Some("2026-01-01"),
                Some("2026-01-01"),
                Some("2026-01-02"),
                None,
                Some("01:00"),
                Some("1969-12-31"),
                Some("1969-12-31"),
                Some("02:00"),
            ]
        );
    }

    #[test]
    fn numbers_pad_as_before() {
        let mut out = String::new();
        number(&mut out, 5, 3, false);
        number(&mut out, -5, 3, false);
        number(&mut out, -5, 3, true);
        number(&mut out, 12345, 2, false);
        number(&mut out, 0, 1, true);
        number(&mut out, i64::MIN, 1, true);
        assert_eq!(out, format!("005-005-5123450{}", i64::MIN));
    }

    /// Each expected text is what PostgreSQL 15 prints for
    /// `to_char(timestamp '2026-01-05 13:04:05.123456', template)`.
    #[test]
    fn templates_print_as_postgresql_prints_them() {
        let cases = [
            ("YYYY-MM-DD", "2026-01-05"),
            ("YYYY-MM-DD HH24:MI:SS", "2026-01-05 13:04:05"),
            ("HH:MI", "01:04"),
            ("HH12:MI AM", "01:04 PM"),
            ("hh24:mi:ss.ms", "13:04:05.123"),
            ("US", "123456"),
            ("Mon DD, YYYY", "Jan 05, 2026"),
            ("Month|", "January  |"),
            ("FMMonth|", "January|"),
            ("Day|Dy|DAY", "Monday   |Mon|MONDAY   "),
            ("FMDD/FMMM", "5/1"),
            ("DDD D ID IW WW W Q", "005 2 1 02 01 1 1"),
            ("\"week\" IW", "week 02"),
            ("Y,YYY YY CC", "2,026 26 21"),
            ("SSSS", "47045"),
            ("J", "2461046"),
            ("RM", "I   "),
            ("yyyy_x", "2026_x"),
            ("HH:mm", "01:01"),
            ("a.m. TZ|", "p.m. |"),
            ("aé FMDD ü", "aé 5 ü"),
        ];
        for (template, want) in cases {
            assert_eq!(fmt(template), want, "{template}");
        }
    }
}
