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
    DataType, Field, FieldRef, Fields, Float32Type, Float64Type, IntervalMonthDayNano,
    IntervalUnit, TimeUnit,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr, TypePlanner};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::optimizer::analyzer::Analyzer;
use datafusion::sql::sqlparser::ast::{BinaryOperator as SqlOperator, DataType as SqlDataType};

use crate::error::{Error, sqlstate};
use crate::serve::params::{Bad, parse_bytea, parse_interval, split_array};

/// DataFusion's analyzer rules, then ours (after type coercion, when every type is known).
pub fn analyzer_rules() -> Vec<Arc<dyn AnalyzerRule + Send + Sync>> {
    let mut rules = Analyzer::new().rules;
    // Text compared with a `uuid` is read as one before DataFusion looks for a common type.
    let coercion = rules
        .iter()
        .position(|r| r.name() == "type_coercion")
        .unwrap_or(rules.len());
    rules.insert(coercion, Arc::new(super::uuid::TextAsUuid));
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
pub(crate) fn rewrite_plan(
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
                // Text compared with a `uuid` is read as one (see `uuid::TextAsUuid`).
                let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View);
                let as_uuid = |e: Expr| Expr::Cast(Cast::new(Box::new(e), super::uuid::UUID));
                let RawBinaryExpr { op, left, right } = expr;
                let (left, right) = match (super::uuid::is_uuid(&l), super::uuid::is_uuid(&r)) {
                    (true, false) if text(&r) => (left, as_uuid(right)),
                    (false, true) if text(&l) => (as_uuid(left), right),
                    _ => (left, right),
                };
                return Ok(PlannerResult::Original(RawBinaryExpr { op, left, right }));
            }
            // `id || 'x'` over a `uuid` concatenates its text (PostgreSQL's `anynonarray ||
            // text`); the cast becomes `uuid`'s text form after coercion.
            SqlOperator::StringConcat if super::uuid::is_uuid(&l) || super::uuid::is_uuid(&r) => {
                let as_text = |e: Expr, t: &DataType| {
                    if super::uuid::is_uuid(t) {
                        Expr::Cast(Cast::new(Box::new(e), DataType::Utf8))
                    } else {
                        e
                    }
                };
                let RawBinaryExpr { op, left, right } = expr;
                return Ok(PlannerResult::Original(RawBinaryExpr {
                    op,
                    left: as_text(left, &l),
                    right: as_text(right, &r),
                }));
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

/// The metadata key of a cast's field that carries a character type's length
/// (`CAST(x AS VARCHAR(3))`); the analyzer turns the cast into a truncation and drops it.
pub const MAX_LENGTH: &str = "sluice.max_length";

/// The composite types made by `CREATE TYPE name AS (…)`, by name: their fields. Shared by the
/// engine (which adds and drops them) and every session's [`PostgresTypes`].
pub type CompositeTypes = Arc<std::sync::RwLock<std::collections::BTreeMap<String, Fields>>>;

/// PostgreSQL's types DataFusion's SQL planner lacks or reads otherwise: `JSONB` and `JSON`
/// (see `jsonb`), `CHARACTER VARYING(n)`, `CHARACTER(n)` (text, their length kept for casts),
/// and composite types by name (structs).
#[derive(Debug, Default)]
pub struct PostgresTypes {
    pub composites: CompositeTypes,
}

/// The name a composite type is known by, as a table's (`addr`, `public.addr` and `"addr"` are
/// `addr`); `None` for a name outside schema `public`.
pub fn composite_name(name: &datafusion::sql::sqlparser::ast::ObjectName) -> Option<String> {
    super::ddl::table_name(name).ok()
}

impl TypePlanner for PostgresTypes {
    fn plan_type_field(&self, sql_type: &SqlDataType) -> DfResult<Option<FieldRef>> {
        use datafusion::sql::sqlparser::ast::CharacterLength;
        let text = |length: &Option<CharacterLength>| {
            let mut field = Field::new("", DataType::Utf8, true);
            if let Some(CharacterLength::IntegerLength { length, .. }) = length {
                field = field.with_metadata(
                    [(MAX_LENGTH.to_string(), length.to_string())]
                        .into_iter()
                        .collect(),
                );
            }
            Some(Arc::new(field))
        };
        Ok(match sql_type {
            SqlDataType::JSONB | SqlDataType::JSON => {
                Some(Arc::new(Field::new("", super::jsonb::JSONB, true)))
            }
            SqlDataType::Varchar(length)
            | SqlDataType::CharacterVarying(length)
            | SqlDataType::CharVarying(length)
            | SqlDataType::Character(length)
            | SqlDataType::Char(length) => text(length),
            SqlDataType::Uuid => Some(Arc::new(Field::new("", super::uuid::UUID, true))),
            SqlDataType::Custom(name, modifiers) if modifiers.is_empty() => {
                let Some(name) = composite_name(name) else {
                    return Ok(None);
                };
                match crate::sync::read(&self.composites, "the composite types").get(&name) {
                    Some(fields) => Some(Arc::new(Field::new(
                        "",
                        DataType::Struct(fields.clone()),
                        true,
                    ))),
                    None => {
                        return Err(user_error(
                            sqlstate::UNDEFINED_OBJECT,
                            format!("type \"{name}\" does not exist"),
                        ));
                    }
                }
            }
            _ => None,
        })
    }
}

/// `value` (a struct of `from` fields, or NULL) as a struct of `to` fields, field by field in
/// order: each cast to its new type (nested structs alike) under its new name.
fn struct_cast(value: Expr, from: &Fields, to: &Fields, try_cast: bool) -> DfResult<Expr> {
    if from.len() != to.len() {
        let (few, count) = if from.len() < to.len() {
            ("few", to.len())
        } else {
            ("many", to.len())
        };
        return Err(user_error(
            sqlstate::CANNOT_COERCE,
            format!(
                "cannot cast a row of {} columns to a struct of {count}: input has too {few} columns",
                from.len()
            ),
        ));
    }
    let mut args = Vec::with_capacity(2 * to.len());
    for (source, target) in from.iter().zip(to.iter()) {
        let field =
            datafusion::functions::core::expr_fn::get_field(value.clone(), source.name().as_str());
        let cast = match (source.data_type(), target.data_type()) {
            (DataType::Struct(f), DataType::Struct(t)) if f != t => {
                struct_cast(field, f, t, try_cast)?
            }
            (s, t) if s == t => field,
            _ if try_cast => {
                Expr::TryCast(TryCast::new(Box::new(field), target.data_type().clone()))
            }
            _ => Expr::Cast(Cast::new(Box::new(field), target.data_type().clone())),
        };
        args.push(Expr::Literal(
            ScalarValue::from(target.name().as_str()),
            None,
        ));
        args.push(cast);
    }
    let record = datafusion::functions::core::expr_fn::named_struct(args);
    Ok(Expr::Case(datafusion::logical_expr::Case::new(
        None,
        vec![(
            Box::new(value.is_null()),
            Box::new(Expr::Literal(
                ScalarValue::try_from(&DataType::Struct(to.clone()))?,
                None,
            )),
        )],
        Some(Box::new(record)),
    )))
}

/// The length a cast's target field carries (`VARCHAR(3)`), if any.
fn max_length(field: &Field) -> Option<i64> {
    field.metadata().get(MAX_LENGTH)?.parse().ok()
}

/// `ts ± INTERVAL '10' SECOND` over a `timestamp` (nanoseconds, no time zone) with an interval
/// of days and smaller units: the interval as a duration, which arrow adds as integers (an
/// interval goes through calendar arithmetic, row by row). Without a time zone a day is 24 hours,
/// so the result is the same; an interval with months keeps its calendar meaning.
fn as_duration(left: &Expr, op: Operator, right: &Expr, schema: &DFSchema) -> Option<Expr> {
    if !matches!(op, Operator::Plus | Operator::Minus) {
        return None;
    }
    let Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), None) = right else {
        return None;
    };
    if v.months != 0 || type_of(left, schema)? != DataType::Timestamp(TimeUnit::Nanosecond, None) {
        return None;
    }
    let nanos = i64::from(v.days)
        .checked_mul(86_400_000_000_000)?
        .checked_add(v.nanoseconds)?;
    Some(Expr::BinaryExpr(BinaryExpr::new(
        Box::new(left.clone()),
        op,
        Box::new(Expr::Literal(
            ScalarValue::DurationNanosecond(Some(nanos)),
            None,
        )),
    )))
}

fn after_coercion(expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
    if let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr
        && let Some(plain) = as_duration(left, *op, right, schema)
    {
        return Ok(Transformed::yes(plain));
    }
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
        // `x / 0` over floats is 22012, as in PostgreSQL (IEEE 754 would give Infinity).
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Divide,
            right,
        }) => {
            let (Some(l), Some(r)) = (operand_type(left, schema), operand_type(right, schema))
            else {
                return Ok(Transformed::no(expr));
            };
            if l != r || !matches!(l, DataType::Float32 | DataType::Float64) {
                return Ok(Transformed::no(expr));
            }
            Ok(Transformed::yes(call(
                &FLOAT_DIV,
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
            // `CAST(x AS VARCHAR(3))` keeps the first 3 characters, as PostgreSQL's explicit
            // cast does (an INSERT's is checked by the table instead: 22001).
            if let Some(length) = max_length(field) {
                let plain = Arc::new(Field::new(field.name(), data_type.clone(), true));
                let cast = if try_cast {
                    Expr::TryCast(TryCast::new_from_field(inner.clone(), plain))
                } else {
                    Expr::Cast(Cast::new_from_field(inner.clone(), plain))
                };
                return Ok(Transformed::yes(call(
                    &TRUNCATE_TEXT,
                    vec![cast, Expr::Literal(ScalarValue::Int64(Some(length)), None)],
                )));
            }
            // A row value cast to a struct type (`ROW(1, 'a')` into a `STRUCT<x INT, y TEXT>`
            // column) matches fields by position, as PostgreSQL's composite types do.
            if let (DataType::Struct(from_fields), DataType::Struct(to_fields)) = (&from, data_type)
                && from_fields != to_fields
            {
                return Ok(Transformed::yes(struct_cast(
                    (**inner).clone(),
                    from_fields,
                    to_fields,
                    try_cast,
                )?));
            }
            // A `uuid` as text: PostgreSQL's form (Arrow has no such cast).
            if super::uuid::is_uuid(&from)
                && matches!(data_type, DataType::Utf8 | DataType::Utf8View)
            {
                let out = call(&super::uuid::UUID_OUT, vec![(**inner).clone()]);
                return Ok(Transformed::yes(match data_type {
                    DataType::Utf8 => out,
                    _ => rebuild(out),
                }));
            }
            // `jsonb` is LargeUtf8 (see `jsonb`): text read as one is parsed, and one read as
            // a number or a boolean must hold one.
            if super::jsonb::is_jsonb(data_type)
                && matches!(from, DataType::Utf8 | DataType::Utf8View)
            {
                return Ok(Transformed::yes(call(
                    &super::jsonb::jsonb_in_udf(),
                    vec![(**inner).clone()],
                )));
            }
            // Only text (and NULL) becomes `jsonb` by a cast; PostgreSQL has no cast from a
            // number or a date (`to_jsonb` makes JSON of any value).
            if super::jsonb::is_jsonb(data_type)
                && !super::jsonb::is_jsonb(&from)
                && !matches!(from, DataType::Null | DataType::Dictionary(..))
            {
                return Err(user_error(
                    sqlstate::CANNOT_COERCE,
                    format!(
                        "cannot cast type {} to jsonb (to_jsonb(x) makes JSON of a value)",
                        crate::catalog::pg_types::pg_type_name(&from)
                    ),
                ));
            }
            if super::jsonb::is_jsonb(&from) && super::jsonb::JsonbTo::reads(data_type) {
                return Ok(Transformed::yes(call(
                    &super::jsonb::JsonbTo::udf(data_type.clone()),
                    vec![(**inner).clone()],
                )));
            }
            Ok(match data_type {
                DataType::Int16 | DataType::Int32 | DataType::Int64
                    if matches!(
                        from,
                        DataType::Float32 | DataType::Float64 | DataType::Decimal128(..)
                    ) =>
                {
                    Transformed::yes(rebuild(call(&ROUND_TO_INTEGER, vec![(**inner).clone()])))
                }
                target if text && !try_cast && reads_text(target) => {
                    let parse = ScalarUDF::new_from_impl(TextAs::new(data_type.clone()));
                    Transformed::yes(call(&Arc::new(parse), vec![(**inner).clone()]))
                }
                _ => Transformed::no(expr),
            })
        }
        // A function not made for `jsonb` that returns LargeUtf8 (`left(j, 3)`, `coalesce(j,
        // …)`): its result is `jsonb` only if it is JSON, so it is read as such (22P02 if not).
        Expr::ScalarFunction(f)
            if !super::jsonb::is_jsonb_function(f.func.name())
                && type_of(&expr, schema).is_some_and(|t| super::jsonb::is_jsonb(&t)) =>
        {
            Ok(Transformed::yes(call(
                &super::jsonb::jsonb_in_udf(),
                vec![Expr::Cast(Cast::new(
                    Box::new(expr.clone()),
                    DataType::Utf8,
                ))],
            )))
        }
        _ => Ok(Transformed::no(expr)),
    }
}

/// A function of ours: name, argument count, and its body over the argument arrays.
pub(crate) struct Function {
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
        columnar((self.body)(&arrays)?, scalar)
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
        columnar(out, scalar)
    }
}

/// A function's result: one value when every argument was one, else the array.
pub(crate) fn columnar(out: ArrayRef, scalar: bool) -> DfResult<ColumnarValue> {
    Ok(if scalar {
        ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)
    } else {
        ColumnarValue::Array(out)
    })
}

fn udf(
    name: &'static str,
    arguments: usize,
    returns: fn(&[DataType]) -> DataType,
    body: fn(&[ArrayRef]) -> DfResult<ArrayRef>,
) -> Arc<ScalarUDF> {
    udf_with(
        name,
        Signature::any(arguments, Volatility::Immutable),
        returns,
        body,
    )
}

/// A function of ours with its own signature.
pub(crate) fn udf_with(
    name: &'static str,
    signature: Signature,
    returns: fn(&[DataType]) -> DataType,
    body: fn(&[ArrayRef]) -> DfResult<ArrayRef>,
) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(Function {
        name,
        signature,
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

pub(crate) fn user_error(code: &'static str, message: String) -> DataFusionError {
    DataFusionError::External(Box::new(Error::user(code, message)))
}

/// The first `n` characters of text (a cast to `VARCHAR(n)`).
static TRUNCATE_TEXT: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    udf("sluice_truncate_text", 2, first_type, |a| {
        let limit = a[1]
            .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
            .filter(|l| !l.is_empty() && l.is_valid(0))
            .map(|l| l.value(0).max(0) as usize)
            .unwrap_or(usize::MAX);
        let values = a[0].as_string_opt::<i32>().ok_or_else(|| {
            user_error(
                sqlstate::DATATYPE_MISMATCH,
                format!("expected text, found {}", a[0].data_type()),
            )
        })?;
        if values.iter().flatten().all(|v| v.len() <= limit) {
            return Ok(Arc::clone(&a[0]));
        }
        Ok(Arc::new(
            values
                .iter()
                .map(|v| v.map(|v| truncate_chars(v, limit)))
                .collect::<datafusion::arrow::array::StringArray>(),
        ))
    })
});

/// `text` cut to at most `limit` characters.
pub fn truncate_chars(text: &str, limit: usize) -> &str {
    match text.char_indices().nth(limit) {
        Some((at, _)) => &text[..at],
        None => text,
    }
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
static FLOAT_DIV: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    udf("sluice_float_div", 2, first_type, |a| {
        float_div(&a[0], &a[1])
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

/// `a / b` over two float arrays of one type: 22012 where `b` is zero.
fn float_div(a: &ArrayRef, b: &ArrayRef) -> DfResult<ArrayRef> {
    let divisors = datafusion::arrow::compute::cast(b, &DataType::Float64)?;
    let divisors = divisors.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    if divisors.iter().any(|d| d == Some(0.0)) {
        return Err(user_error(
            sqlstate::DIVISION_BY_ZERO,
            "division by zero".to_string(),
        ));
    }
    Ok(datafusion::arrow::compute::kernels::numeric::div(a, b)?)
}

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
pub(crate) fn round_to_integer(values: &ArrayRef) -> DfResult<ArrayRef> {
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

/// Whether [`parse_text`] reads text as `target` (the casts the analyzer hands it).
fn reads_text(target: &DataType) -> bool {
    matches!(
        target,
        DataType::LargeUtf8
            | DataType::Interval(IntervalUnit::MonthDayNano)
            | DataType::Binary
            | DataType::FixedSizeBinary(16)
            | DataType::List(_)
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(..)
            | DataType::Date32
            | DataType::Timestamp(..)
    )
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
        DataType::LargeUtf8 if !super::jsonb::is_jsonb(values.data_type()) => {
            Some(super::jsonb::jsonb_in_array(values))
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => Some(interval_in(values)),
        DataType::Binary => Some(bytea_in(values)),
        DataType::FixedSizeBinary(16) => Some(super::uuid::uuid_in(values)),
        DataType::List(element) => Some(array_in(values, element)),
        DataType::LargeUtf8 => None,
        _ if reads_text(target) => Some(scalar_in(values, target)),
        _ => None,
    }
}

/// Text read as an integer, a date or a timestamp: Arrow's cast, with PostgreSQL's reading of
/// a timestamp without seconds (`2026-01-01 10:00`) and its errors: an integer out of range is
/// 22003, an impossible date (`2026-02-30`) 22008, anything else unreadable 22P02.
fn scalar_in(values: &ArrayRef, target: &DataType) -> DfResult<ArrayRef> {
    // Unsafe: an unreadable value is an error, not NULL (as DataFusion's CAST).
    let cast = |values: &ArrayRef, target: &DataType| {
        datafusion::arrow::compute::cast_with_options(
            values,
            target,
            &datafusion::arrow::compute::CastOptions {
                safe: false,
                ..Default::default()
            },
        )
    };
    let error = match cast(values, target) {
        Ok(cast) if matches!(target, DataType::Float32 | DataType::Float64) => {
            return float_in_range(values, cast, target);
        }
        Ok(cast) => return Ok(cast),
        Err(error) => error,
    };
    let text = cast(values, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    if matches!(target, DataType::Timestamp(..)) {
        // `YYYY-MM-DD HH:MM` is `YYYY-MM-DD HH:MM:00`.
        let no_seconds = |s: &str| {
            let s = s.trim();
            let b = s.as_bytes();
            b.len() >= 15
                && b.len() <= 16
                && b[4] == b'-'
                && b[7] == b'-'
                && (b[10] == b' ' || b[10] == b'T')
                && b[b.len() - 3] == b':'
                && s.bytes().filter(|c| *c == b':').count() == 1
        };
        if text.iter().flatten().any(no_seconds) {
            let fixed: datafusion::arrow::array::StringArray = text
                .iter()
                .map(|v| {
                    v.map(|s| {
                        if no_seconds(s) {
                            format!("{}:00", s.trim())
                        } else {
                            s.to_string()
                        }
                    })
                })
                .collect();
            return Ok(cast(&(Arc::new(fixed) as ArrayRef), target)?);
        }
        return Err(error.into());
    }
    let name = match target {
        DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        DataType::Int64 => "bigint",
        DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal128(..) => "numeric",
        _ => "date",
    };
    // The first value that does not read, and why.
    for value in text.iter().flatten() {
        let one = datafusion::arrow::array::StringArray::from(vec![value]);
        if cast(&(Arc::new(one) as ArrayRef), target).is_ok() {
            continue;
        }
        let trimmed = value.trim();
        let integer_text = !trimmed.is_empty()
            && trimmed
                .strip_prefix(['-', '+'])
                .unwrap_or(trimmed)
                .bytes()
                .all(|c| c.is_ascii_digit());
        let date_text = {
            let parts: Vec<&str> = trimmed.split('-').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
        };
        let number_text = !trimmed.is_empty()
            && trimmed.bytes().any(|c| c.is_ascii_digit())
            && trimmed
                .bytes()
                .all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c));
        let special = [
            "nan",
            "infinity",
            "+infinity",
            "-infinity",
            "inf",
            "+inf",
            "-inf",
        ]
        .contains(&trimmed.to_ascii_lowercase().as_str());
        return Err(match target {
            DataType::Decimal128(precision, scale) if special => user_error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "numeric \"{value}\" is not supported: Sluice's numeric({precision},{scale}) \
                     is fixed-point, without NaN or infinities (double precision has them)"
                ),
            ),
            DataType::Decimal128(precision, scale) if number_text => user_error(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!(
                    "numeric field overflow: \"{value}\" does not fit numeric({precision},{scale})"
                ),
            ),
            DataType::Float32 | DataType::Float64 if number_text => user_error(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("\"{value}\" is out of range for type {name}"),
            ),
            DataType::Date32 if date_text => user_error(
                sqlstate::DATETIME_FIELD_OVERFLOW,
                format!("date/time field value out of range: \"{value}\""),
            ),
            DataType::Int16 | DataType::Int32 | DataType::Int64 if integer_text => user_error(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("value \"{value}\" is out of range for type {name}"),
            ),
            _ => user_error(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!("invalid input syntax for type {name}: \"{value}\""),
            ),
        });
    }
    Err(error.into())
}

/// A float read from text is infinite only when the text says so: `1e400` is 22003 in
/// PostgreSQL, not `Infinity`.
fn float_in_range(text: &ArrayRef, floats: ArrayRef, target: &DataType) -> DfResult<ArrayRef> {
    let floats64 = datafusion::arrow::compute::cast(&floats, &DataType::Float64)?;
    let floats64 = floats64.as_primitive::<Float64Type>();
    if !floats64.iter().flatten().any(f64::is_infinite) {
        return Ok(floats);
    }
    let text = datafusion::arrow::compute::cast(text, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    for (value, float) in text.iter().zip(floats64.iter()) {
        if let (Some(value), Some(float)) = (value, float)
            && float.is_infinite()
            && !value.to_ascii_lowercase().contains("inf")
        {
            let name = if *target == DataType::Float32 {
                "real"
            } else {
                "double precision"
            };
            return Err(user_error(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("\"{}\" is out of range for type {name}", value.trim()),
            ));
        }
    }
    Ok(floats)
}

/// PostgreSQL's array input (`{1,2,NULL}`, `{"a b","q\"uote"}`), one dimension, each element
/// read as text into the element's type.
pub(crate) fn array_in(
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
            let parsed = split_array(v).ok_or_else(|| {
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

fn interval_in(values: &ArrayRef) -> DfResult<ArrayRef> {
    let text = datafusion::arrow::compute::cast(values, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut out = Vec::with_capacity(text.len());
    for value in text.iter() {
        out.push(match value {
            Some(v) => Some(parse_interval(v).map_err(|bad| match bad {
                Bad::Syntax => user_error(
                    sqlstate::INVALID_DATETIME_FORMAT,
                    format!("invalid input syntax for type interval: \"{v}\""),
                ),
                Bad::Range => user_error(
                    sqlstate::DATETIME_FIELD_OVERFLOW,
                    format!("interval field value out of range: \"{v}\""),
                ),
            })?),
            None => None,
        });
    }
    Ok(Arc::new(IntervalMonthDayNanoArray::from(out)))
}

const NANOS_PER_SECOND: f64 = 1e9;
const SECONDS_PER_DAY: f64 = 86_400.0;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(months: i32, days: i32, seconds: f64) -> IntervalMonthDayNano {
        IntervalMonthDayNano::new(months, days, (seconds * 1e9).round() as i64)
    }

    /// `ts ± interval` over a plain timestamp becomes integer arithmetic on a duration when the
    /// interval has no months; months, time zones and other types keep the interval.
    #[test]
    fn day_and_second_intervals_on_timestamps_become_durations() {
        use datafusion::logical_expr::col;
        let schema = DFSchema::try_from(datafusion::arrow::datatypes::Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new(
                "tz",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
                true,
            ),
            Field::new("d", DataType::Date32, true),
        ]))
        .expect("schema");
        let interval = |v| Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), None);
        let rewritten = as_duration(
            &col("ts"),
            Operator::Minus,
            &interval(iv(0, 1, 10.0)),
            &schema,
        );
        let Some(Expr::BinaryExpr(BinaryExpr { op, right, .. })) = rewritten else {
            panic!("not rewritten: {rewritten:?}");
        };
        assert_eq!(op, Operator::Minus);
        assert_eq!(
            *right,
            Expr::Literal(
                ScalarValue::DurationNanosecond(Some(86_410_000_000_000)),
                None
            )
        );
        let month = interval(iv(1, 0, 0.0));
        assert!(as_duration(&col("ts"), Operator::Plus, &month, &schema).is_none());
        let second = interval(iv(0, 0, 1.0));
        assert!(as_duration(&col("tz"), Operator::Plus, &second, &schema).is_none());
        assert!(as_duration(&col("d"), Operator::Plus, &second, &schema).is_none());
        assert!(as_duration(&col("ts"), Operator::Multiply, &second, &schema).is_none());
    }

    #[test]
    fn intervals_in_postgresql_forms() {
        let parse_interval_ok = |text: &str| parse_interval(text).ok();
        assert_eq!(parse_interval_ok("1 day 02:03:04"), Some(iv(0, 1, 7384.0)));
        assert_eq!(parse_interval_ok("02:03:04.5"), Some(iv(0, 0, 7384.5)));
        assert_eq!(
            parse_interval_ok("-1 days -00:00:03"),
            Some(iv(0, -1, -3.0))
        );
        assert_eq!(parse_interval_ok("1 year 2 mons"), Some(iv(14, 0, 0.0)));
        assert_eq!(parse_interval_ok("@ 1 hour ago"), Some(iv(0, 0, -3600.0)));
        assert_eq!(parse_interval_ok("1.5 days"), Some(iv(0, 1, 43_200.0)));
        assert_eq!(parse_interval_ok("1.5 months"), Some(iv(1, 15, 0.0)));
        assert_eq!(parse_interval_ok("90 minutes"), Some(iv(0, 0, 5400.0)));
        assert_eq!(parse_interval_ok("5"), Some(iv(0, 0, 5.0)));
        assert_eq!(parse_interval_ok("10d 3h"), Some(iv(0, 10, 10_800.0)));
        assert_eq!(parse_interval_ok("P1DT2H"), Some(iv(0, 1, 7200.0)));
        assert_eq!(parse_interval_ok("P1Y2M3W"), Some(iv(14, 21, 0.0)));
        assert_eq!(parse_interval_ok("PT1.5S"), Some(iv(0, 0, 1.5)));
        for bad in ["", "day", "1 fortnight", "1:99", "P1X", "P"] {
            assert_eq!(parse_interval_ok(bad), None, "{bad:?}");
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
        assert_eq!(split_array("{1,2,3}"), Some(some(&["1", "2", "3"])));
        assert_eq!(split_array(" { a , b c } "), Some(some(&["a", "b c"])));
        assert_eq!(split_array("{}"), Some(vec![]));
        assert_eq!(
            split_array(r#"{"a b",NULL,"q\"uo,te","","NULL",x\,y}"#),
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
            assert_eq!(split_array(bad), None, "{bad:?}");
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
