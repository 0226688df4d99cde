//! PostgreSQL's semantics where DataFusion's differ, as analyzer rules over every logical plan
//! (queries and views alike, so a view still equals its batch query):
//!
//! - integer `+`, `-`, `*` raise 22003 on overflow (DataFusion wraps around);
//! - a cast of a float or a `NUMERIC` to an integer rounds (DataFusion truncates): half away from
//!   zero for `NUMERIC`, half to even for floats, as PostgreSQL's `numeric_int4` and `rint`;
//! - text read as an `INTERVAL` takes PostgreSQL's forms (`1 day 02:03:04`, which is how Sluice
//!   prints an interval, `@ 1 hour ago`, ISO 8601 `P1DT2H`, fractional units);
//! - text read as `BYTEA` takes PostgreSQL's hex (`\x00ff`) and escape formats;
//! - `INTERVAL * number` and `INTERVAL / number`, which DataFusion refuses, as PostgreSQL
//!   computes them (fractions of months spill into days, of days into time).
//!
//! Interval arithmetic is planned by [`IntervalArithmetic`] as the SQL planner meets it (the
//! planner would refuse it); the rest is an analyzer rule after DataFusion's type coercion,
//! when every operand's type is known.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Decimal128Array, IntervalMonthDayNanoArray,
    PrimitiveArray,
};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, IntervalMonthDayNano, IntervalUnit,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::optimizer::analyzer::Analyzer;
use datafusion::sql::sqlparser::ast::BinaryOperator as SqlOperator;

use crate::error::{Error, sqlstate};

/// DataFusion's analyzer rules, then ours (after type coercion, when every type is known).
pub fn analyzer_rules() -> Vec<Arc<dyn AnalyzerRule + Send + Sync>> {
    let mut rules = Analyzer::new().rules;
    rules.push(Arc::new(AfterCoercion));
    rules
}

#[derive(Debug)]
struct AfterCoercion;

impl AnalyzerRule for AfterCoercion {
    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> DfResult<LogicalPlan> {
        rewrite_plan(plan, after_coercion)
    }
    fn name(&self) -> &str {
        "sluice_pg_semantics"
    }
}

/// Rewrites every expression of every node (subqueries included) bottom up with `rewrite`,
/// which sees the types of the node's inputs; output names stay as they were.
fn rewrite_plan(
    plan: LogicalPlan,
    rewrite: fn(Expr, &DFSchema) -> DfResult<Transformed<Expr>>,
) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|plan| {
        let mut schema = merge_schema(&plan.inputs());
        if let LogicalPlan::TableScan(scan) = &plan {
            schema.merge(&DFSchema::try_from_qualified_schema(
                scan.table_name.clone(),
                &scan.source.schema(),
            )?);
        }
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|e| rewrite(e, &schema))?;
            Ok(rewritten.update_data(|e| name.restore(e)))
        })
    })
    .map(|t| t.data)
}

/// The type of `expr`, when it can be told from `schema` (an outer column of a correlated
/// subquery may not): such an expression is left as it is.
fn type_of(expr: &Expr, schema: &DFSchema) -> Option<DataType> {
    expr.get_type(schema).ok()
}

/// The type of an operand of integer arithmetic: through our checked operations (already
/// rewritten below it, each of its operands' type) down to the first operand that is not one,
/// so that a chain of `n` additions costs `n` steps per operator, not a full typing of the
/// chain below (`Expr::get_type` of nested function calls grows much faster than that).
fn operand_type(expr: &Expr, schema: &DFSchema) -> Option<DataType> {
    let mut expr = expr;
    while let Expr::ScalarFunction(f) = expr
        && [&*CHECKED_ADD, &*CHECKED_SUB, &*CHECKED_MUL]
            .iter()
            .any(|udf| f.func.name() == udf.name())
    {
        expr = f.args.first()?;
    }
    type_of(expr, schema)
}

fn is_interval(t: &DataType) -> bool {
    matches!(t, DataType::Interval(_))
}

fn call(udf: &Arc<ScalarUDF>, args: Vec<Expr>) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(udf), args))
}

/// `INTERVAL * number`, `number * INTERVAL` and `INTERVAL / number` as PostgreSQL computes
/// them; DataFusion's SQL planner refuses them (it types the operands' product before any
/// analyzer rule could step in), so this is an expression planner, asked for each operator.
#[derive(Debug)]
pub struct IntervalArithmetic;

impl ExprPlanner for IntervalArithmetic {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        let (Some(l), Some(r)) = (type_of(&expr.left, schema), type_of(&expr.right, schema)) else {
            return Ok(PlannerResult::Original(expr));
        };
        let divide = match expr.op {
            SqlOperator::Multiply => false,
            SqlOperator::Divide => true,
            // `iv = '1 day'`: a string literal compared with an interval is read as one, as
            // PostgreSQL reads an untyped literal (DataFusion finds no common type).
            SqlOperator::Eq
            | SqlOperator::NotEq
            | SqlOperator::Lt
            | SqlOperator::LtEq
            | SqlOperator::Gt
            | SqlOperator::GtEq => {
                let as_interval = |e: Expr, t: &DataType| match e {
                    Expr::Literal(..) if matches!(t, DataType::Utf8 | DataType::Utf8View) => {
                        Expr::Cast(Cast::new(
                            Box::new(e),
                            DataType::Interval(IntervalUnit::MonthDayNano),
                        ))
                    }
                    e => e,
                };
                if is_interval(&l) != is_interval(&r) {
                    let RawBinaryExpr { op, left, right } = expr;
                    return Ok(PlannerResult::Original(RawBinaryExpr {
                        op,
                        left: as_interval(left, &l),
                        right: as_interval(right, &r),
                    }));
                }
                return Ok(PlannerResult::Original(expr));
            }
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let (interval, factor) = if is_interval(&l) && r.is_numeric() {
            (expr.left, expr.right)
        } else if !divide && l.is_numeric() && is_interval(&r) {
            (expr.right, expr.left)
        } else {
            return Ok(PlannerResult::Original(expr));
        };
        let udf = if divide {
            &*INTERVAL_DIV
        } else {
            &*INTERVAL_MUL
        };
        Ok(PlannerResult::Planned(call(
            udf,
            vec![
                interval,
                Expr::Cast(Cast::new(Box::new(factor), DataType::Float64)),
            ],
        )))
    }
}

fn after_coercion(expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
    match &expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Plus | Operator::Minus | Operator::Multiply) =>
        {
            let (Some(l), Some(r)) = (operand_type(left, schema), operand_type(right, schema))
            else {
                return Ok(Transformed::no(expr));
            };
            if l != r || !matches!(l, DataType::Int16 | DataType::Int32 | DataType::Int64) {
                return Ok(Transformed::no(expr));
            }
            let udf = match op {
                Operator::Plus => &*CHECKED_ADD,
                Operator::Minus => &*CHECKED_SUB,
                _ => &*CHECKED_MUL,
            };
            Ok(Transformed::yes(call(
                udf,
                vec![(**left).clone(), (**right).clone()],
            )))
        }
        Expr::Cast(Cast { expr: inner, field }) | Expr::TryCast(TryCast { expr: inner, field }) => {
            let data_type = field.data_type();
            let Some(from) = type_of(inner, schema) else {
                return Ok(Transformed::no(expr));
            };
            let try_cast = matches!(expr, Expr::TryCast(_));
            let rebuild = |inner: Expr| {
                if try_cast {
                    Expr::TryCast(TryCast::new_from_field(Box::new(inner), Arc::clone(field)))
                } else {
                    Expr::Cast(Cast::new_from_field(Box::new(inner), Arc::clone(field)))
                }
            };
            let text = matches!(
                from,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            Ok(match data_type {
                DataType::Int16 | DataType::Int32 | DataType::Int64
                    if matches!(
                        from,
                        DataType::Float32 | DataType::Float64 | DataType::Decimal128(..)
                    ) =>
                {
                    Transformed::yes(rebuild(call(&ROUND_TO_INTEGER, vec![(**inner).clone()])))
                }
                DataType::Interval(IntervalUnit::MonthDayNano)
                | DataType::Binary
                | DataType::List(_)
                    if text && !try_cast =>
                {
                    let parse = ScalarUDF::new_from_impl(TextAs::new(data_type.clone()));
                    Transformed::yes(call(&Arc::new(parse), vec![(**inner).clone()]))
                }
                _ => Transformed::no(expr),
            })
        }
        _ => Ok(Transformed::no(expr)),
    }
}

/// A function of ours: name, argument count, and its body over the argument arrays.
struct Function {
    name: &'static str,
    signature: Signature,
    returns: fn(&[DataType]) -> DataType,
    body: fn(&[ArrayRef]) -> DfResult<ArrayRef>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Function {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Function {}

impl std::hash::Hash for Function {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for Function {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok((self.returns)(args))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out = (self.body)(&arrays)?;
        if scalar {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&out, 0)?,
            ))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

/// Text read as `target` by [`parse_text`]: a cast from text to `INTERVAL`, `BYTEA` or an
/// array.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TextAs {
    target: DataType,
    signature: Signature,
}

impl TextAs {
    fn new(target: DataType) -> Self {
        Self {
            target,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TextAs {
    fn name(&self) -> &str {
        "sluice_text_as"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(self.target.clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let values = args.args[0].clone().into_array(args.number_rows)?;
        let out = match parse_text(&values, &self.target) {
            Some(parsed) => parsed?,
            None => datafusion::arrow::compute::cast(&values, &self.target)?,
        };
        if scalar {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&out, 0)?,
            ))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

fn udf(
    name: &'static str,
    arguments: usize,
    returns: fn(&[DataType]) -> DataType,
    body: fn(&[ArrayRef]) -> DfResult<ArrayRef>,
) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(Function {
        name,
        signature: Signature::any(arguments, Volatility::Immutable),
        returns,
        body,
    }))
}

fn first_type(args: &[DataType]) -> DataType {
    args.first().cloned().unwrap_or(DataType::Null)
}

fn interval_type(_: &[DataType]) -> DataType {
    DataType::Interval(IntervalUnit::MonthDayNano)
}

fn user_error(code: &'static str, message: String) -> DataFusionError {
    DataFusionError::External(Box::new(Error::user(code, message)))
}

static CHECKED_ADD: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    udf("sluice_int_add", 2, first_type, |a| {
        checked(a, Operator::Plus)
    })
});
static CHECKED_SUB: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    udf("sluice_int_sub", 2, first_type, |a| {
        checked(a, Operator::Minus)
    })
});
static CHECKED_MUL: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    udf("sluice_int_mul", 2, first_type, |a| {
        checked(a, Operator::Multiply)
    })
});
static ROUND_TO_INTEGER: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    udf("sluice_round_to_integer", 1, first_type, |a| {
        round_to_integer(&a[0])
    })
});
static INTERVAL_MUL: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    udf("sluice_interval_mul", 2, interval_type, |a| {
        interval_scale(&a[0], &a[1], false)
    })
});
static INTERVAL_DIV: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    udf("sluice_interval_div", 2, interval_type, |a| {
        interval_scale(&a[0], &a[1], true)
    })
});

/// `a op b` over two integer arrays of one type, 22003 where PostgreSQL's would overflow.
fn checked(args: &[ArrayRef], op: Operator) -> DfResult<ArrayRef> {
    use datafusion::arrow::compute::kernels::numeric;
    let (a, b) = (&args[0], &args[1]);
    let result = match op {
        Operator::Plus => numeric::add(a, b),
        Operator::Minus => numeric::sub(a, b),
        _ => numeric::mul(a, b),
    };
    result.map_err(|e| match e {
        datafusion::arrow::error::ArrowError::ArithmeticOverflow(_) => user_error(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            match a.data_type() {
                DataType::Int16 => "smallint out of range",
                DataType::Int32 => "integer out of range",
                _ => "bigint out of range",
            }
            .to_string(),
        ),
        other => other.into(),
    })
}

/// Rounds to a whole number, as PostgreSQL does before a cast to an integer: `NUMERIC` half
/// away from zero, floats half to even. The type stays (the cast follows).
fn round_to_integer(values: &ArrayRef) -> DfResult<ArrayRef> {
    Ok(match values.data_type() {
        DataType::Float64 => Arc::new(
            values
                .as_primitive::<Float64Type>()
                .unary::<_, Float64Type>(f64::round_ties_even),
        ),
        DataType::Float32 => Arc::new(
            values
                .as_primitive::<Float32Type>()
                .unary::<_, Float32Type>(f32::round_ties_even),
        ),
        DataType::Decimal128(precision, scale) if *scale > 0 => {
            let unit = 10i128.pow(u32::from(*scale as u8));
            let rounded: Decimal128Array = values
                .as_primitive::<datafusion::arrow::datatypes::Decimal128Type>()
                .unary(|v| {
                    let (whole, rest) = (v / unit, v % unit);
                    let away = if rest.abs() * 2 >= unit {
                        v.signum()
                    } else {
                        0
                    };
                    (whole + away) * unit
                });
            Arc::new(rounded.with_precision_and_scale(*precision, *scale)?)
        }
        _ => Arc::clone(values),
    })
}

/// Text read as a type whose PostgreSQL input form Arrow's cast does not take (`INTERVAL`,
/// `BYTEA`): `None` for other types.
pub fn parse_text(values: &ArrayRef, target: &DataType) -> Option<DfResult<ArrayRef>> {
    if !matches!(
        values.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return None;
    }
    match target {
        DataType::Interval(IntervalUnit::MonthDayNano) => Some(interval_in(values)),
        DataType::Binary => Some(bytea_in(values)),
        DataType::List(element) => Some(array_in(values, element)),
        _ => None,
    }
}

/// PostgreSQL's array input (`{1,2,NULL}`, `{"a b","q\"uote"}`), one dimension, each element
/// read as text into the element's type.
fn array_in(
    values: &ArrayRef,
    element: &datafusion::arrow::datatypes::FieldRef,
) -> DfResult<ArrayRef> {
    use datafusion::arrow::array::{ListArray, StringBuilder};
    use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
    let text = datafusion::arrow::compute::cast(values, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut elements = StringBuilder::new();
    let mut offsets = vec![0i32];
    let mut count = 0i32;
    for value in text.iter() {
        if let Some(v) = value {
            let parsed = parse_array(v).ok_or_else(|| {
                user_error(
                    sqlstate::INVALID_TEXT_REPRESENTATION,
                    format!("malformed array literal: \"{v}\""),
                )
            })?;
            for item in parsed {
                elements.append_option(item);
                count += 1;
            }
        }
        offsets.push(count);
    }
    let elements: ArrayRef = Arc::new(elements.finish());
    let typed = match parse_text(&elements, element.data_type()) {
        Some(parsed) => parsed?,
        None => datafusion::arrow::compute::cast_with_options(
            &elements,
            element.data_type(),
            &datafusion::arrow::compute::CastOptions {
                safe: false,
                ..Default::default()
            },
        )?,
    };
    let nulls = NullBuffer::from_iter(text.iter().map(|v| v.is_some()));
    Ok(Arc::new(ListArray::try_new(
        Arc::new(element.as_ref().clone().with_nullable(true)),
        OffsetBuffer::new(offsets.into()),
        typed,
        Some(nulls),
    )?))
}

/// The elements of a one-dimensional array literal, `None` for NULL; `None` overall when the
/// text is not one.
pub fn parse_array(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if inner.trim().is_empty() {
        return Some(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut item = String::new();
        let mut quoted = false;
        let mut escaped_any = false;
        if chars.next_if_eq(&'"').is_some() {
            quoted = true;
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => item.push(chars.next()?),
                    c => item.push(c),
                }
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '{' | '}' | '"' => return None,
                    '\\' => {
                        chars.next();
                        item.push(chars.next()?);
                        escaped_any = true;
                    }
                    _ => {
                        item.push(c);
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
        let null = !quoted && !escaped_any && item.eq_ignore_ascii_case("null");
        items.push((!null).then_some(item));
        match chars.next() {
            None => return Some(items),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

fn interval_in(values: &ArrayRef) -> DfResult<ArrayRef> {
    let text = datafusion::arrow::compute::cast(values, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut out = Vec::with_capacity(text.len());
    for value in text.iter() {
        out.push(match value {
            Some(v) => Some(parse_interval(v).ok_or_else(|| {
                user_error(
                    sqlstate::INVALID_DATETIME_FORMAT,
                    format!("invalid input syntax for type interval: \"{v}\""),
                )
            })?),
            None => None,
        });
    }
    Ok(Arc::new(IntervalMonthDayNanoArray::from(out)))
}

const NANOS_PER_SECOND: f64 = 1e9;
const SECONDS_PER_DAY: f64 = 86_400.0;

/// An interval built from fractional parts, each spilling into the next smaller unit as
/// PostgreSQL's input does (a month is 30 days, a day 24 hours).
#[derive(Default)]
struct Parts {
    months: f64,
    days: f64,
    seconds: f64,
}

impl Parts {
    fn finish(self, negate: bool) -> Option<IntervalMonthDayNano> {
        let sign = if negate { -1.0 } else { 1.0 };
        let months = (self.months * sign).trunc();
        let days_total = self.days * sign + (self.months * sign - months) * 30.0;
        let days = days_total.trunc();
        let seconds = self.seconds * sign + (days_total - days) * SECONDS_PER_DAY;
        let nanos = (seconds * NANOS_PER_SECOND / 1000.0).round() * 1000.0;
        if months.abs() > f64::from(i32::MAX)
            || days.abs() > f64::from(i32::MAX)
            || nanos.abs() >= i64::MAX as f64
        {
            return None;
        }
        Some(IntervalMonthDayNano::new(
            months as i32,
            days as i32,
            nanos as i64,
        ))
    }
}

/// PostgreSQL's interval input: `[@] quantity unit [quantity unit …] [hh:mm[:ss[.f]]] [ago]`
/// (a quantity without a unit is seconds), or ISO 8601 `P…T…`.
pub fn parse_interval(text: &str) -> Option<IntervalMonthDayNano> {
    let text = text.trim().to_ascii_lowercase();
    if let Some(iso) = text.strip_prefix('p') {
        return parse_iso_interval(iso);
    }
    let text = text.strip_prefix('@').unwrap_or(&text).trim();
    let (text, ago) = match text.strip_suffix("ago") {
        Some(rest) => (rest.trim_end(), true),
        None => (text, false),
    };
    let mut parts = Parts::default();
    let mut tokens = text.split_whitespace().peekable();
    let mut any = false;
    while let Some(token) = tokens.next() {
        any = true;
        if token.contains(':') {
            parts.seconds += parse_clock(token)?;
            continue;
        }
        // A number, with its unit attached (`10d`) or as the next token.
        let split = token
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e')))
            .unwrap_or(token.len());
        let (number, attached) = token.split_at(split);
        let quantity: f64 = number.parse().ok()?;
        let unit = if !attached.is_empty() {
            attached.to_string()
        } else {
            match tokens.peek() {
                Some(next) if next.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                    tokens.next().map(str::to_string)?
                }
                _ => "second".to_string(),
            }
        };
        add_unit(&mut parts, quantity, &unit)?;
    }
    if !any {
        return None;
    }
    parts.finish(ago)
}

fn add_unit(parts: &mut Parts, quantity: f64, unit: &str) -> Option<()> {
    let unit = unit.trim_end_matches(',');
    match unit {
        "millennium" | "millennia" | "millenniums" | "mil" | "mils" => {
            parts.months += quantity * 12_000.0
        }
        "century" | "centuries" | "cent" | "c" => parts.months += quantity * 1_200.0,
        "decade" | "decades" | "dec" | "decs" => parts.months += quantity * 120.0,
        "year" | "years" | "y" | "yr" | "yrs" => parts.months += quantity * 12.0,
        "month" | "months" | "mon" | "mons" => parts.months += quantity,
        "week" | "weeks" | "w" => parts.days += quantity * 7.0,
        "day" | "days" | "d" => parts.days += quantity,
        "hour" | "hours" | "h" | "hr" | "hrs" => parts.seconds += quantity * 3_600.0,
        "minute" | "minutes" | "m" | "min" | "mins" => parts.seconds += quantity * 60.0,
        "second" | "seconds" | "s" | "sec" | "secs" => parts.seconds += quantity,
        "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => {
            parts.seconds += quantity / 1_000.0
        }
        "microsecond" | "microseconds" | "us" | "usec" | "usecs" => {
            parts.seconds += quantity / 1_000_000.0
        }
        _ => return None,
    }
    Some(())
}

/// `[-+]hh:mm[:ss[.fff]]` as seconds.
fn parse_clock(token: &str) -> Option<f64> {
    let (sign, rest) = match token.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, token.strip_prefix('+').unwrap_or(token)),
    };
    let fields: Vec<&str> = rest.split(':').collect();
    if fields.len() > 3 || fields.iter().any(|f| f.is_empty()) {
        return None;
    }
    let hours: f64 = fields[0].parse::<u64>().ok()? as f64;
    let minutes: f64 = fields[1].parse::<u64>().ok()? as f64;
    let seconds: f64 = match fields.get(2) {
        Some(s) => s.parse().ok()?,
        None => 0.0,
    };
    if minutes >= 60.0 || !(0.0..60.0).contains(&seconds) {
        return None;
    }
    Some(sign * (hours * 3_600.0 + minutes * 60.0 + seconds))
}

/// ISO 8601's `P[nY][nM][nW][nD][T[nH][nM][nS]]` (after the `P`).
fn parse_iso_interval(text: &str) -> Option<IntervalMonthDayNano> {
    let mut parts = Parts::default();
    let mut in_time = false;
    let mut number = String::new();
    let mut any = false;
    for c in text.chars() {
        match c {
            't' if number.is_empty() => in_time = true,
            '0'..='9' | '.' | '-' | '+' => number.push(c),
            _ => {
                let quantity: f64 = number.parse().ok()?;
                number.clear();
                any = true;
                match (c, in_time) {
                    ('y', false) => parts.months += quantity * 12.0,
                    ('m', false) => parts.months += quantity,
                    ('w', false) => parts.days += quantity * 7.0,
                    ('d', false) => parts.days += quantity,
                    ('h', true) => parts.seconds += quantity * 3_600.0,
                    ('m', true) => parts.seconds += quantity * 60.0,
                    ('s', true) => parts.seconds += quantity,
                    _ => return None,
                }
            }
        }
    }
    if !number.is_empty() || !any {
        return None;
    }
    parts.finish(false)
}

/// PostgreSQL's `interval_mul` / `interval_div`: months and days scaled and truncated, their
/// fractions carried down (a month is 30 days, a day 86,400 s), time scaled.
fn interval_scale(intervals: &ArrayRef, factors: &ArrayRef, divide: bool) -> DfResult<ArrayRef> {
    let intervals =
        intervals.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>();
    let factors = factors.as_primitive::<Float64Type>();
    let mut out = Vec::with_capacity(intervals.len());
    for i in 0..intervals.len() {
        if intervals.is_null(i) || factors.is_null(i) {
            out.push(None);
            continue;
        }
        let (v, f) = (intervals.value(i), factors.value(i));
        if divide && f == 0.0 {
            return Err(user_error(
                sqlstate::DIVISION_BY_ZERO,
                "division by zero".to_string(),
            ));
        }
        let scale = |x: f64| if divide { x / f } else { x * f };
        let months_exact = scale(f64::from(v.months));
        let days_exact = scale(f64::from(v.days));
        let (months, days) = (months_exact.trunc(), days_exact.trunc());
        let to_micros = |x: f64| (x * 1e6).round() / 1e6;
        let month_days = to_micros((months_exact - months) * 30.0);
        let mut seconds =
            to_micros((days_exact - days + month_days - month_days.trunc()) * SECONDS_PER_DAY);
        let mut days = days + month_days.trunc();
        if seconds.abs() >= SECONDS_PER_DAY {
            let whole = (seconds / SECONDS_PER_DAY).trunc();
            days += whole;
            seconds -= whole * SECONDS_PER_DAY;
        }
        let nanos = (scale(v.nanoseconds as f64) + seconds * NANOS_PER_SECOND) / 1000.0;
        let nanos = nanos.round_ties_even() * 1000.0;
        if months.abs() > f64::from(i32::MAX)
            || days.abs() > f64::from(i32::MAX)
            || !nanos.is_finite()
            || nanos.abs() >= i64::MAX as f64
        {
            return Err(user_error(
                sqlstate::DATETIME_FIELD_OVERFLOW,
                "interval out of range".to_string(),
            ));
        }
        out.push(Some(IntervalMonthDayNano::new(
            months as i32,
            days as i32,
            nanos as i64,
        )));
    }
    Ok(Arc::new(PrimitiveArray::from(out)))
}

/// PostgreSQL's `bytea` input: `\x` and hex digit pairs, or the escape format (`\\` is a
/// backslash, `\ooo` an octal byte, any other byte itself).
fn bytea_in(values: &ArrayRef) -> DfResult<ArrayRef> {
    let text = datafusion::arrow::compute::cast(values, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut out = BinaryBuilder::with_capacity(text.len(), text.value_data().len());
    for value in text.iter() {
        match value {
            Some(v) => out.append_value(parse_bytea(v).ok_or_else(|| {
                user_error(
                    sqlstate::INVALID_TEXT_REPRESENTATION,
                    format!("invalid input syntax for type bytea: \"{v}\""),
                )
            })?),
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

pub fn parse_bytea(text: &str) -> Option<Vec<u8>> {
    if let Some(hex) = text
        .strip_prefix("\\x")
        .or_else(|| text.strip_prefix("\\X"))
    {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        return digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
            .collect();
    }
    let bytes = text.as_bytes();
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
            if !matches!(octal[0], b'0'..=b'3')
                || !octal[1..].iter().all(|b| matches!(b, b'0'..=b'7'))
            {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(octal).ok()?, 8).ok()?);
            i += 4;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(months: i32, days: i32, seconds: f64) -> IntervalMonthDayNano {
        IntervalMonthDayNano::new(months, days, (seconds * 1e9).round() as i64)
    }

    #[test]
    fn intervals_in_postgresql_forms() {
        assert_eq!(parse_interval("1 day 02:03:04"), Some(iv(0, 1, 7384.0)));
        assert_eq!(parse_interval("02:03:04.5"), Some(iv(0, 0, 7384.5)));
        assert_eq!(parse_interval("-1 days -00:00:03"), Some(iv(0, -1, -3.0)));
        assert_eq!(parse_interval("1 year 2 mons"), Some(iv(14, 0, 0.0)));
        assert_eq!(parse_interval("@ 1 hour ago"), Some(iv(0, 0, -3600.0)));
        assert_eq!(parse_interval("1.5 days"), Some(iv(0, 1, 43_200.0)));
        assert_eq!(parse_interval("1.5 months"), Some(iv(1, 15, 0.0)));
        assert_eq!(parse_interval("90 minutes"), Some(iv(0, 0, 5400.0)));
        assert_eq!(parse_interval("5"), Some(iv(0, 0, 5.0)));
        assert_eq!(parse_interval("10d 3h"), Some(iv(0, 10, 10_800.0)));
        assert_eq!(parse_interval("P1DT2H"), Some(iv(0, 1, 7200.0)));
        assert_eq!(parse_interval("P1Y2M3W"), Some(iv(14, 21, 0.0)));
        assert_eq!(parse_interval("PT1.5S"), Some(iv(0, 0, 1.5)));
        for bad in [
            "",
            "day",
            "1 fortnight",
            "1:99",
            "P1X",
            "1 day ago ago",
            "P",
        ] {
            assert_eq!(parse_interval(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn interval_times_a_number_carries_fractions_down() {
        let scaled = |v: IntervalMonthDayNano, f: f64, divide: bool| {
            let out = interval_scale(
                &(Arc::new(IntervalMonthDayNanoArray::from(vec![v])) as ArrayRef),
                &(Arc::new(PrimitiveArray::<Float64Type>::from(vec![f])) as ArrayRef),
                divide,
            )
            .unwrap();
            out.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>()
                .value(0)
        };
        assert_eq!(scaled(iv(0, 1, 0.0), 3.0, false), iv(0, 3, 0.0));
        assert_eq!(scaled(iv(0, 0, 3600.0), 1.5, false), iv(0, 0, 5400.0));
        assert_eq!(scaled(iv(0, 1, 0.0), 2.0, true), iv(0, 0, 43_200.0));
        assert_eq!(scaled(iv(1, 0, 0.0), 2.0, true), iv(0, 15, 0.0));
        assert_eq!(scaled(iv(1, 1, 0.0), 0.5, false), iv(0, 15, 43_200.0));
    }

    #[test]
    fn arrays_in_postgresql_form() {
        let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        assert_eq!(parse_array("{1,2,3}"), Some(some(&["1", "2", "3"])));
        assert_eq!(parse_array(" { a , b c } "), Some(some(&["a", "b c"])));
        assert_eq!(parse_array("{}"), Some(vec![]));
        assert_eq!(
            parse_array(r#"{"a b",NULL,"q\"uo,te","","NULL",x\,y}"#),
            Some(vec![
                Some("a b".to_string()),
                None,
                Some("q\"uo,te".to_string()),
                Some(String::new()),
                Some("NULL".to_string()),
                Some("x,y".to_string()),
            ])
        );
        for bad in ["1,2", "{1,2", "{{1},{2}}", "{1,,2}", "{\"a\"b}", "{a\"b}"] {
            assert_eq!(parse_array(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bytea_in_hex_and_escape_forms() {
        assert_eq!(parse_bytea("\\x00ff"), Some(vec![0, 255]));
        assert_eq!(parse_bytea("\\x 0A 0b"), Some(vec![10, 11]));
        assert_eq!(parse_bytea("abc"), Some(b"abc".to_vec()));
        assert_eq!(parse_bytea("a\\\\b"), Some(b"a\\b".to_vec()));
        assert_eq!(parse_bytea("\\001x"), Some(vec![1, b'x']));
        for bad in ["\\x0", "\\xzz", "a\\b", "\\9"] {
            assert_eq!(parse_bytea(bad), None, "{bad:?}");
        }
    }
}
