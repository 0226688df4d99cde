//! PostgreSQL's `uuid`: 16 bytes, kept as Arrow's `FixedSizeBinary(16)` (which Sluice uses for
//! nothing else), so it groups, joins, sorts (byte order, as PostgreSQL's `uuid_cmp`) and is
//! stored at its width. Its text form is PostgreSQL's: read by [`uuid_in`] (`uuid_in`'s forms:
//! upper or lower case, hyphens after any group of four digits or none, braces), written by
//! [`format_uuid`] (lower case, `8-4-4-4-12`).
//!
//! Arrow casts neither from text to fixed-size binary nor back, so the analyzer turns those
//! casts into [`uuid_in`] and [`UUID_OUT`], and [`TextAsUuid`] casts the text operand of a
//! comparison with a `uuid` before DataFusion's type coercion (which finds no common type).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::{Cast, InList};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use crate::error::sqlstate;

/// The Arrow type of a `uuid`.
pub const UUID: DataType = DataType::FixedSizeBinary(16);

/// Whether `t` is the type of a `uuid`.
pub fn is_uuid(t: &DataType) -> bool {
    *t == UUID
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// The 16 bytes `text` spells, read as PostgreSQL's `string_to_uuid` does: an optional `{`,
/// 32 hex digits in pairs with an optional `-` after every second pair (but the last), the
/// matching `}`, nothing else (no spaces).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let mut rest = text.as_bytes();
    let braces = rest.first() == Some(&b'{');
    if braces {
        rest = &rest[1..];
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let [hi, lo, ..] = rest else {
            return None;
        };
        *byte = (digit(*hi)? << 4) | digit(*lo)?;
        rest = &rest[2..];
        if i % 2 == 1 && i < 15 && rest.first() == Some(&b'-') {
            rest = &rest[1..];
        }
    }
    if braces {
        rest = rest.strip_prefix(b"}")?;
    }
    rest.is_empty().then_some(out)
}

/// `raw` in PostgreSQL's text form, appended to `out`.
pub fn format_uuid(raw: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// Text values read as `uuid`s (NULL stays NULL); 22P02 names the first that is not one.
pub fn uuid_in(values: &ArrayRef) -> DfResult<ArrayRef> {
    let text = datafusion::arrow::compute::cast(values, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut out = FixedSizeBinaryBuilder::with_capacity(text.len(), 16);
    for value in text.iter() {
        match value {
            None => out.append_null(),
            Some(value) => match parse_uuid(value) {
                Some(raw) => out.append_value(raw)?,
                None => {
                    return Err(super::pg_semantics::user_error(
                        sqlstate::INVALID_TEXT_REPRESENTATION,
                        format!("invalid input syntax for type uuid: \"{value}\""),
                    ));
                }
            },
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `uuid`s as text.
fn uuid_out(values: &[ArrayRef]) -> DfResult<ArrayRef> {
    let values = values[0].as_fixed_size_binary();
    let mut out = StringBuilder::with_capacity(values.len(), 36 * values.len());
    let mut text = String::with_capacity(36);
    for value in values.iter() {
        match value {
            None => out.append_null(),
            Some(raw) => {
                text.clear();
                format_uuid(raw, &mut text);
                out.append_value(&text);
            }
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `uuid::text`, which the analyzer puts in place of Arrow's cast (it has none).
pub static UUID_OUT: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    super::pg_semantics::udf_with(
        "sluice_uuid_out",
        Signature::exact(vec![UUID], Volatility::Immutable),
        |_| DataType::Utf8,
        uuid_out,
    )
});

/// `gen_random_uuid()`: a random (version 4) `uuid` per row, from DataFusion's `uuid()`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct GenRandomUuid {
    signature: Signature,
}

impl GenRandomUuid {
    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            signature: Signature::nullary(Volatility::Volatile),
        }))
    }
}

impl ScalarUDFImpl for GenRandomUuid {
    fn name(&self) -> &str {
        "gen_random_uuid"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(UUID)
    }
    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        args.return_field = Arc::new(Field::new("uuid", DataType::Utf8, false));
        let text = datafusion::functions::string::uuid().invoke_with_args(args)?;
        Ok(ColumnarValue::Array(uuid_in(&text.into_array(rows)?)?))
    }
}

/// Before DataFusion's type coercion: text that meets a `uuid` (`id = '…'`, `id IN ('…', …)`,
/// `BETWEEN`, the results of a `CASE`, `coalesce(id, '…')`) is cast to `uuid`, as PostgreSQL
/// reads a literal by the type it meets (DataFusion finds no common type of fixed-size binary
/// and text). Where DataFusion types an expression as it plans it (`coalesce(id, '…')`,
/// `nullif`, `greatest`, a `UNION` of a `uuid` and text), the text needs an explicit `::uuid`.
#[derive(Debug)]
pub struct TextAsUuid;

impl AnalyzerRule for TextAsUuid {
    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> DfResult<LogicalPlan> {
        super::pg_semantics::rewrite_plan(plan, text_as_uuid)
    }
    fn name(&self) -> &str {
        "sluice_text_as_uuid"
    }
}

fn as_uuid(expr: &Expr) -> Expr {
    Expr::Cast(Cast::new(Box::new(expr.clone()), UUID))
}

fn text_as_uuid(expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
    let type_of = |e: &Expr| e.get_type(schema).ok();
    match &expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(
                op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
            ) =>
        {
            let (Some(l), Some(r)) = (type_of(left), type_of(right)) else {
                return Ok(Transformed::no(expr));
            };
            let (left, right) = match (is_uuid(&l), is_uuid(&r)) {
                (true, false) if is_text(&r) => ((**left).clone(), as_uuid(right)),
                (false, true) if is_text(&l) => (as_uuid(left), (**right).clone()),
                _ => return Ok(Transformed::no(expr)),
            };
            Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                Box::new(left),
                *op,
                Box::new(right),
            ))))
        }
        Expr::InList(InList {
            expr: value,
            list,
            negated,
        }) if type_of(value).is_some_and(|t| is_uuid(&t))
            && list.iter().any(|e| type_of(e).is_some_and(|t| is_text(&t))) =>
        {
            let list = list
                .iter()
                .map(|e| match type_of(e) {
                    Some(t) if is_text(&t) => as_uuid(e),
                    _ => e.clone(),
                })
                .collect();
            Ok(Transformed::yes(Expr::InList(InList::new(
                value.clone(),
                list,
                *negated,
            ))))
        }
        // `BETWEEN` bounds.
        Expr::Between(between) if type_of(&between.expr).is_some_and(|t| is_uuid(&t)) => {
            let bound = |e: &Expr| match type_of(e) {
                Some(t) if is_text(&t) => Some(as_uuid(e)),
                _ => None,
            };
            let (low, high) = (bound(&between.low), bound(&between.high));
            if low.is_none() && high.is_none() {
                return Ok(Transformed::no(expr));
            }
            let mut between = between.clone();
            if let Some(low) = low {
                *between.low = low;
            }
            if let Some(high) = high {
                *between.high = high;
            }
            Ok(Transformed::yes(Expr::Between(between)))
        }
        // The results of a `CASE`, when one of them is a `uuid`.
        Expr::Case(case) => {
            let results: Vec<&Expr> = case
                .when_then_expr
                .iter()
                .map(|(_, then)| then.as_ref())
                .chain(case.else_expr.as_deref())
                .collect();
            if !mixes_uuid_and_text(&results, &type_of) {
                return Ok(Transformed::no(expr));
            }
            let mut case = case.clone();
            for (_, then) in &mut case.when_then_expr {
                **then = text_to_uuid(then, &type_of);
            }
            if let Some(otherwise) = &mut case.else_expr {
                **otherwise = text_to_uuid(otherwise, &type_of);
            }
            Ok(Transformed::yes(Expr::Case(case)))
        }
        _ => Ok(Transformed::no(expr)),
    }
}

/// Whether some of `exprs` are `uuid`s and some text.
fn mixes_uuid_and_text(exprs: &[&Expr], type_of: &dyn Fn(&Expr) -> Option<DataType>) -> bool {
    let types: Vec<DataType> = exprs.iter().filter_map(|e| type_of(e)).collect();
    types.iter().any(is_uuid) && types.iter().any(is_text)
}

/// `expr` cast to `uuid` if it is text.
fn text_to_uuid(expr: &Expr, type_of: &dyn Fn(&Expr) -> Option<DataType>) -> Expr {
    match type_of(expr) {
        Some(t) if is_text(&t) => as_uuid(expr),
        _ => expr.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_postgresql_reads() {
        let canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let raw = parse_uuid(canonical).expect("canonical");
        for form in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
        ] {
            assert_eq!(parse_uuid(form), Some(raw), "{form}");
        }
        for bad in [
            "",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad:?}");
        }
        let mut text = String::new();
        format_uuid(&raw, &mut text);
        assert_eq!(text, canonical);
    }
}
