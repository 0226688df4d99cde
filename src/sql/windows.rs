//! Time windows in SQL, both spellings, lowered to two scalar functions that DataFusion plans
//! like any other (so the same query runs in batch and in a view):
//!
//! - group-window form (Flink): `GROUP BY k, TUMBLE(ts, size)` with `TUMBLE_START/_END(ts, size)`;
//!   `GROUP BY k, HOP(ts, slide, size)` with `HOP_START/_END(ts, slide, size)`;
//! - table-function form (RisingWave): `FROM TUMBLE(t, ts, size)`, `FROM HOP(t, ts, slide, size)`,
//!   adding `window_start` and `window_end` to the rows of `t`.
//!
//! `TUMBLE` becomes [`TUMBLE_FUNCTION`]`(ts, size)`, the start of the row's window. `HOP` becomes
//! `unnest(`[`HOP_FUNCTION`]`(ts, slide, size))` in a derived table: one row per window
//! containing the row. The stream planner recognises both functions (`planner/`), so a view
//! keeps the window's identity (for `EMIT ON WINDOW CLOSE` and slicing).

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::sql::dialect::SluiceDialect;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, TimestampNanosecondArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, TimestampNanosecondType};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Query, Select, SetExpr,
    Statement, TableFactor, VisitMut, VisitorMut, visit_expressions_mut,
};
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Error, Result};
use crate::stream::watermark::nanos;

/// `sluice_tumble(ts, size)`: the start of the tumbling window of width `size` holding `ts`.
pub const TUMBLE_FUNCTION: &str = "sluice_tumble";
/// `sluice_hop_starts(ts, slide, size)`: the starts of every hopping window holding `ts`.
pub const HOP_FUNCTION: &str = "sluice_hop_starts";
/// `sluice_session(ts, gap)`: in a view, the session of the row (computed by the session
/// operator, never evaluated as a function).
pub const SESSION_FUNCTION: &str = "sluice_session";
/// The column the batch form of `SESSION` adds: the session's number within its key.
pub const SESSION_COLUMN: &str = "_sluice_session";
/// The column a group-window `HOP` adds to its input.
pub const HOP_START_COLUMN: &str = "_sluice_window_start";

/// The window functions, registered in every session.
pub fn window_functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(Tumble::new()),
        ScalarUDF::new_from_impl(HopStarts::new()),
        ScalarUDF::new_from_impl(SessionPlaceholder::new()),
    ]
}

/// How `SESSION` is spelled for the planner that will run the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowMode {
    /// An ad-hoc query: sessions computed with window functions (`lag`, running `sum`).
    Batch,
    /// A view: sessions left to the session operator, as `sluice_session(ts, gap)`.
    Stream,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionPlaceholder {
    signature: Signature,
}

impl SessionPlaceholder {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SessionPlaceholder {
    fn name(&self) -> &str {
        SESSION_FUNCTION
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        timestamp_return_type("SESSION", args)
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        exec_err!("SESSION is computed by the session operator of a materialized view")
    }
}

/// The `TUMBLE` function, for planners that build calls to it.
pub fn tumble_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Tumble::new())
}

/// An interval argument in nanoseconds; windows are fixed widths, so months are refused.
pub fn interval_nanos(value: &ScalarValue) -> DfResult<i64> {
    let nanos = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            i64::from(v.days) * 86_400_000_000_000 + v.nanoseconds
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            i64::from(v.days) * 86_400_000_000_000 + i64::from(v.milliseconds) * 1_000_000
        }
        ScalarValue::IntervalMonthDayNano(Some(_)) => {
            return plan_err!("window sizes in months or years are not supported");
        }
        // `ts - INTERVAL '10' SECOND` is planned as a duration (see `pg_semantics`).
        ScalarValue::DurationNanosecond(Some(v)) => *v,
        other => return plan_err!("a window size must be a constant interval, got {other}"),
    };
    if nanos <= 0 {
        return plan_err!("a window size must be positive");
    }
    Ok(nanos)
}

fn scalar_interval(arg: &ColumnarValue, what: &str) -> DfResult<i64> {
    match arg {
        ColumnarValue::Scalar(s) => interval_nanos(s),
        ColumnarValue::Array(_) => exec_err!("the {what} of a window must be a constant"),
    }
}

fn timestamp_return_type(name: &str, args: &[DataType]) -> DfResult<DataType> {
    match args.first() {
        Some(t @ DataType::Timestamp(..)) => Ok(t.clone()),
        Some(other) => plan_err!("{name} needs a timestamp as its first argument, got {other}"),
        None => plan_err!("{name} needs arguments"),
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Tumble {
    signature: Signature,
}

impl Tumble {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Tumble {
    fn name(&self) -> &str {
        TUMBLE_FUNCTION
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        timestamp_return_type("TUMBLE", args)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let size = scalar_interval(&args.args[1], "size")?;
        let rows = args.number_rows;
        let ts = args.args[0].clone().into_array(rows)?;
        let ns = nanos(&ts)?;
        let starts: TimestampNanosecondArray = ns
            .as_primitive::<TimestampNanosecondType>()
            .unary(|t| t - t.rem_euclid(size));
        let out = cast(&starts, ts.data_type())?;
        Ok(ColumnarValue::Array(out))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct HopStarts {
    signature: Signature,
}

impl HopStarts {
    fn new() -> Self {
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

/// The starts of the windows of `slide`/`size` holding `t`, ascending, into `out`.
pub fn hop_starts(t: i64, slide: i64, size: i64, out: &mut Vec<i64>) {
    let last = t - t.rem_euclid(slide);
    let mut first = last;
    while first - slide + size > t {
        first -= slide;
    }
    let mut start = first;
    while start <= last {
        out.push(start);
        start += slide;
    }
}

impl ScalarUDFImpl for HopStarts {
    fn name(&self) -> &str {
        HOP_FUNCTION
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let item = timestamp_return_type("HOP", args)?;
        Ok(DataType::List(Arc::new(Field::new_list_field(item, true))))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let slide = scalar_interval(&args.args[1], "slide")?;
        let size = scalar_interval(&args.args[2], "size")?;
        let rows = args.number_rows;
        let ts = args.args[0].clone().into_array(rows)?;
        let ns = nanos(&ts)?;
        let ns = ns.as_primitive::<TimestampNanosecondType>();
        let per_row = usize::try_from(size / slide + 1).unwrap_or(1);
        let mut values: Vec<i64> = Vec::with_capacity(rows * per_row);
        let mut offsets: Vec<i32> = Vec::with_capacity(rows + 1);
        offsets.push(0);
        for i in 0..rows {
            if ns.is_valid(i) {
                hop_starts(ns.value(i), slide, size, &mut values);
            }
            offsets.push(i32::try_from(values.len()).map_err(|_| {
                datafusion::error::DataFusionError::Execution("too many hop windows".into())
            })?);
        }
        let item_type = ts.data_type().clone();
        let values: ArrayRef = cast(&TimestampNanosecondArray::from(values), &item_type)?;
        let nulls = ns.nulls().cloned();
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(item_type, true)),
            OffsetBuffer::new(offsets.into()),
            values,
            nulls,
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// Rewrites every window of `statement` into the functions above.
pub fn rewrite(statement: &mut Statement, mode: WindowMode) -> Result<()> {
    let mut rewriter = WindowRewriter { error: None, mode };
    let _ = statement.visit(&mut rewriter);
    match rewriter.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct WindowRewriter {
    error: Option<Error>,
    mode: WindowMode,
}

impl VisitorMut for WindowRewriter {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let Err(e) = rewrite_set_expr(&mut query.body, self.mode) {
            self.error = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

fn rewrite_set_expr(body: &mut SetExpr, mode: WindowMode) -> Result<()> {
    match body {
        SetExpr::Select(select) => rewrite_select(select, mode),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left, mode)?;
            rewrite_set_expr(right, mode)
        }
        _ => Ok(()),
    }
}

fn function_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_ascii_lowercase()),
        _ => None,
    }
}

fn function_args(expr: &Expr) -> Vec<String> {
    let Expr::Function(f) = expr else {
        return Vec::new();
    };
    let FunctionArguments::List(list) = &f.args else {
        return Vec::new();
    };
    list.args.iter().map(function_arg_text).collect()
}

fn function_arg_text(arg: &FunctionArg) -> String {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => e.to_string(),
        other => other.to_string(),
    }
}

fn parse_expr(text: &str) -> Result<Expr> {
    Ok(Parser::new(&SluiceDialect)
        .try_with_sql(text)?
        .parse_expr()?)
}

/// A `FROM` item from the text of a derived table and its alias.
fn derived(subquery: &str, alias: &str) -> Result<TableFactor> {
    let sql = format!("SELECT * FROM ({subquery}) AS {alias}");
    let statement = Parser::parse_sql(&SluiceDialect, &sql)?
        .pop()
        .ok_or_else(|| Error::unsupported("window rewrite produced nothing"))?;
    if let Statement::Query(query) = statement
        && let SetExpr::Select(select) = *query.body
        && let Some(from) = select.from.into_iter().next()
    {
        return Ok(from.relation);
    }
    Err(Error::unsupported("window rewrite produced no FROM item"))
}

fn wrong_arity(name: &str, expected: &str) -> Error {
    Error::user(
        crate::error::sqlstate::SYNTAX_ERROR,
        format!("{name} takes {expected}"),
    )
}

fn rewrite_select(select: &mut Select, mode: WindowMode) -> Result<()> {
    // Table-function form.
    for from in &mut select.from {
        rewrite_table_function(&mut from.relation)?;
        for join in &mut from.joins {
            rewrite_table_function(&mut join.relation)?;
        }
    }
    // Group-window form.
    let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
        return Ok(());
    };
    let windows: Vec<usize> = (0..exprs.len())
        .filter(|&i| {
            matches!(
                function_name(&exprs[i]).as_deref(),
                Some("tumble" | "hop" | "session")
            )
        })
        .collect();
    let [index] = windows.as_slice() else {
        if windows.len() > 1 {
            return Err(Error::unsupported("more than one window in one GROUP BY"));
        }
        return Ok(());
    };
    let window = exprs[*index].clone();
    let kind = function_name(&window).unwrap_or_default();
    let args = function_args(&window);
    let (group_expr, start, end, prefix) = match (kind.as_str(), args.as_slice()) {
        ("tumble", [ts, size]) => {
            let start = format!("{TUMBLE_FUNCTION}({ts}, {size})");
            (
                start.clone(),
                start.clone(),
                format!("{start} + {size}"),
                "tumble",
            )
        }
        ("tumble", _) => return Err(wrong_arity("TUMBLE", "(time column, size)")),
        ("hop", [ts, slide, size]) => {
            let [from] = select.from.as_mut_slice() else {
                return Err(Error::unsupported(
                    "GROUP BY HOP over more than one FROM item; use FROM HOP(t, ts, slide, size)",
                ));
            };
            if !from.joins.is_empty() {
                return Err(Error::unsupported(
                    "GROUP BY HOP over a join; use FROM HOP(t, ts, slide, size)",
                ));
            }
            let alias = relation_alias(&from.relation);
            let inner = format!(
                "SELECT *, unnest({HOP_FUNCTION}({ts}, {slide}, {size})) AS {HOP_START_COLUMN} FROM {}",
                from.relation
            );
            from.relation = derived(&inner, &alias)?;
            (
                HOP_START_COLUMN.to_string(),
                HOP_START_COLUMN.to_string(),
                format!("{HOP_START_COLUMN} + {size}"),
                "hop",
            )
        }
        ("hop", _) => return Err(wrong_arity("HOP", "(time column, slide, size)")),
        ("session", [ts, gap]) => {
            let start = format!("min({ts})");
            let end = format!("max({ts}) + {gap}");
            if mode == WindowMode::Stream {
                (
                    format!("{SESSION_FUNCTION}({ts}, {gap})"),
                    start,
                    end,
                    "session",
                )
            } else {
                let [from] = select.from.as_mut_slice() else {
                    return Err(Error::unsupported(
                        "GROUP BY SESSION over more than one FROM item",
                    ));
                };
                if !from.joins.is_empty() {
                    return Err(Error::unsupported("GROUP BY SESSION over a join"));
                }
                let keys: Vec<String> = exprs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i != index)
                    .map(|(_, e)| e.to_string())
                    .collect();
                let partition = if keys.is_empty() {
                    String::new()
                } else {
                    format!("PARTITION BY {}", keys.join(", "))
                };
                let alias = relation_alias(&from.relation);
                // A row starts a session unless the previous row of its key is within the gap.
                let inner = format!(
                    "SELECT *, sum(_sluice_new) OVER ({partition} ORDER BY {ts} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {SESSION_COLUMN} FROM \
                     (SELECT *, CASE WHEN {ts} - {gap} <= lag({ts}) OVER ({partition} ORDER BY {ts}) THEN 0 ELSE 1 END AS _sluice_new \
                      FROM {} WHERE {ts} IS NOT NULL) AS {alias}",
                    from.relation
                );
                from.relation = derived(&inner, &alias)?;
                (SESSION_COLUMN.to_string(), start, end, "session")
            }
        }
        ("session", _) => return Err(wrong_arity("SESSION", "(time column, gap)")),
        _ => return Err(Error::unsupported("this window function")),
    };
    exprs[*index] = parse_expr(&group_expr)?;
    let start = parse_expr(&start)?;
    let end = parse_expr(&end)?;
    let start_name = format!("{prefix}_start");
    let end_name = format!("{prefix}_end");
    let mut replace = |expr: &mut Expr| {
        if let Some(name) = function_name(expr) {
            if name == start_name {
                *expr = start.clone();
            } else if name == end_name {
                *expr = end.clone();
            }
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions_mut(&mut select.projection, &mut replace);
    let _ = visit_expressions_mut(&mut select.having, &mut replace);
    Ok(())
}

/// The name a `FROM` item is known by: its alias, or its table's name.
fn relation_alias(relation: &TableFactor) -> String {
    match relation {
        TableFactor::Table { alias: Some(a), .. } | TableFactor::Derived { alias: Some(a), .. } => {
            a.name.to_string()
        }
        TableFactor::Table { name, .. } => name
            .0
            .last()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "w".into()),
        _ => "w".into(),
    }
}

fn rewrite_table_function(relation: &mut TableFactor) -> Result<()> {
    let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = relation
    else {
        return Ok(());
    };
    let kind = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(kind.as_str(), "tumble" | "hop" | "session") {
        return Ok(());
    }
    let args: Vec<String> = args.args.iter().map(function_arg_text).collect();
    let subquery = match (kind.as_str(), args.as_slice()) {
        ("tumble", [table, ts, size]) => format!(
            "SELECT *, {TUMBLE_FUNCTION}({ts}, {size}) AS window_start, \
             {TUMBLE_FUNCTION}({ts}, {size}) + {size} AS window_end FROM {table}"
        ),
        ("tumble", _) => return Err(wrong_arity("TUMBLE", "(table, time column, size)")),
        ("hop", [table, ts, slide, size]) => format!(
            "SELECT *, window_start + {size} AS window_end FROM \
             (SELECT *, unnest({HOP_FUNCTION}({ts}, {slide}, {size})) AS window_start FROM {table}) AS _sluice_hop"
        ),
        ("hop", _) => return Err(wrong_arity("HOP", "(table, time column, slide, size)")),
        _ => {
            return Err(Error::unsupported(
                "SESSION windows are not supported yet; use TUMBLE or HOP",
            ));
        }
    };
    let alias = match alias {
        Some(a) => a.name.to_string(),
        None => args[0].rsplit('.').next().unwrap_or("w").to_string(),
    };
    *relation = derived(&subquery, &alias)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_starts_cover_every_window_holding_the_time() {
        let mut out = Vec::new();
        hop_starts(12, 2, 10, &mut out);
        assert_eq!(out, vec![4, 6, 8, 10, 12]);
        out.clear();
        hop_starts(-1, 2, 4, &mut out);
        assert_eq!(out, vec![-4, -2]);
        out.clear();
        hop_starts(5, 5, 5, &mut out);
        assert_eq!(out, vec![5]);
    }

    #[test]
    fn rewrites_both_spellings() {
        let mut s = Parser::parse_sql(
            &SluiceDialect,
            "SELECT k, HOP_END(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND) FROM t \
             GROUP BY k, HOP(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND)",
        )
        .unwrap()
        .pop()
        .unwrap();
        rewrite(&mut s, WindowMode::Batch).unwrap();
        let text = s.to_string();
        assert!(text.contains("unnest(sluice_hop_starts(ts"), "{text}");
        assert!(text.contains("GROUP BY k, _sluice_window_start"), "{text}");

        let mut s = Parser::parse_sql(
            &SluiceDialect,
            "SELECT window_start, count(*) FROM TUMBLE(t, ts, INTERVAL '5' SECOND) GROUP BY 1",
        )
        .unwrap()
        .pop()
        .unwrap();
        rewrite(&mut s, WindowMode::Batch).unwrap();
        assert!(s.to_string().contains("AS t GROUP BY"), "{s}");
    }
}
