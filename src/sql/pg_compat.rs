//! Rewrites that let the catalog queries of psql and drivers plan in DataFusion: PostgreSQL
//! spellings with no DataFusion meaning are turned into equivalents before planning.
//!
//! - `OPERATOR(pg_catalog.~)` → `~` (and the other operators spelled that way)
//! - `x COLLATE pg_catalog.default` → `x`
//! - `'t'::regclass` → the table's OID; `c.oid::regclass` → the OID itself
//! - `'int4'::regtype` → the type's OID; `t.oid::regtype` → `format_type(t.oid, NULL)`
//! - casts to `name`, `"char"`, `pg_catalog.text` → `TEXT`; to `oid` → `BIGINT`
//! - `pg_catalog.f(…)` → `f(…)`
//! - `(row).field` → `(row)['field']`

use std::ops::ControlFlow;

use crate::sql::dialect::SluiceDialect;
use datafusion::sql::sqlparser::ast::{
    AccessExpr, ArrayElemTypeDef, BinaryOperator, CastKind, DataType, ExactNumberInfo, Expr,
    FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName, OrderByKind,
    Query, Select, SelectItem, SetExpr, Statement, TableFactor, Value, ValueWithSpan, VisitMut,
    VisitorMut, visit_expressions_mut,
};
use datafusion::sql::sqlparser::parser::Parser;

use crate::catalog::pg_catalog::ALWAYS_EMPTY;
use crate::catalog::pg_functions::{REGCLASS_FUNCTION, REGTYPE_FUNCTION};

/// Rewrites a statement in place.
pub fn rewrite(statement: &mut Statement) {
    // Found by a visit, not by printing the statement (which may be 64 MiB of VALUES).
    let expands = datafusion::sql::sqlparser::ast::visit_expressions(&*statement, |e| match e {
        Expr::Function(f) if is_function(f, "_pg_expandarray") => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    if expands.is_break() {
        rewrite_expandarray(statement);
    }
    int4_literal_columns(statement);
    let _ = statement.visit(&mut BlankEmptyCatalogSelects);
    let _ = visit_expressions_mut(statement, |expr| {
        rewrite_expr(expr);
        ControlFlow::<()>::Continue(())
    });
}

/// An integer literal that is a whole output column (`SELECT 1`, `SELECT 42 AS n`, `-1`) is
/// `int4` where it fits, as PostgreSQL types it; DataFusion makes every integer literal `int8`.
/// Literals inside expressions keep DataFusion's type (`SELECT 1 + 1` is still `int8`, where
/// PostgreSQL says `int4`): int4 arithmetic would wrap where PostgreSQL fails with 22003.
fn int4_literal_columns(statement: &mut Statement) {
    fn columns(body: &mut SetExpr) {
        match body {
            SetExpr::Select(select) => {
                for item in select.projection.iter_mut() {
                    let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) =
                        item
                    else {
                        continue;
                    };
                    let number = match &*expr {
                        Expr::Value(ValueWithSpan {
                            value: Value::Number(n, _),
                            ..
                        }) => Some(n.clone()),
                        Expr::UnaryOp {
                            op: datafusion::sql::sqlparser::ast::UnaryOperator::Minus,
                            expr: inner,
                        } => match inner.as_ref() {
                            Expr::Value(ValueWithSpan {
                                value: Value::Number(n, _),
                                ..
                            }) => Some(format!("-{n}")),
                            _ => None,
                        },
                        _ => None,
                    };
                    if number.is_some_and(|n| n.parse::<i32>().is_ok()) {
                        *expr = cast(expr, DataType::Int(None), &CastKind::DoubleColon);
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                columns(left);
                columns(right);
            }
            SetExpr::Query(query) => columns(query.body.as_mut()),
            _ => {}
        }
    }
    match statement {
        Statement::Query(query) => columns(query.body.as_mut()),
        Statement::CreateView(create) => columns(create.query.body.as_mut()),
        _ => {}
    }
}

/// PostgreSQL's float types, in column definitions and casts: `float` and `float(25)` to
/// `float(53)` are `double precision`, `float(1)` to `float(24)` are `real` (DataFusion makes
/// every `FLOAT` `real`); other precisions are refused as PostgreSQL refuses them (22023).
pub fn float_types(statement: &mut Statement) -> crate::error::Result<()> {
    if let Statement::CreateTable(create) = statement {
        for column in create.columns.iter_mut() {
            postgres_float(&mut column.data_type)?;
        }
    }
    let visited = visit_expressions_mut(statement, |expr| match expr {
        Expr::Cast { data_type, .. } => match postgres_float(data_type) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        },
        _ => ControlFlow::Continue(()),
    });
    match visited {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

fn postgres_float(data_type: &mut DataType) -> crate::error::Result<()> {
    use crate::error::{Error, sqlstate};
    match data_type {
        DataType::Float(info) => {
            let bits = match info {
                ExactNumberInfo::None => 53,
                ExactNumberInfo::Precision(bits) => *bits,
                ExactNumberInfo::PrecisionAndScale(..) => {
                    return Err(Error::user(
                        sqlstate::SYNTAX_ERROR,
                        "type float takes one precision (bits), not a scale",
                    ));
                }
            };
            *data_type = match bits {
                0 => {
                    return Err(Error::user(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        "precision for type float must be at least 1 bit",
                    ));
                }
                1..=24 => DataType::Real,
                25..=53 => DataType::DoublePrecision,
                _ => {
                    return Err(Error::user(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        "precision for type float must be less than 54 bits",
                    ));
                }
            };
        }
        DataType::Array(
            ArrayElemTypeDef::SquareBracket(inner, _)
            | ArrayElemTypeDef::AngleBracket(inner)
            | ArrayElemTypeDef::Parenthesis(inner),
        ) => postgres_float(inner)?,
        _ => {}
    }
    Ok(())
}

/// Names a query's output columns as PostgreSQL does where the select list gives no name: a
/// function call by its name (`count`, not `count(*)`), a cast of something unnamed by its type
/// (`int4`), a `CASE` as `case`, anything else unnamed as `?column?`. Only the outermost select
/// list (the first branch of a set operation) of the statement, of each subquery in FROM and
/// of each WITH query is named, and only where the name is unique in it: DataFusion refuses two
/// output columns of one name, where PostgreSQL allows them.
pub fn name_columns(statement: &mut Statement) {
    // A subquery in FROM or a WITH names its columns as PostgreSQL does, so the query around
    // it can refer to them (`SELECT x FROM (SELECT (a).x FROM t) s`).
    let _ = statement.visit(&mut NameDerivedColumns);
    match statement {
        Statement::Query(query) => name_query_columns(query, true),
        // A view's columns must have distinct names (PostgreSQL: 42701).
        Statement::CreateView(create) => name_query_columns(&mut create.query, false),
        _ => {}
    }
}

/// Names the columns of each subquery in FROM and each WITH query (their names must be
/// distinct, so duplicates are left as DataFusion names them).
struct NameDerivedColumns;

impl VisitorMut for NameDerivedColumns {
    type Break = std::convert::Infallible;

    fn pre_visit_table_factor(
        &mut self,
        table_factor: &mut TableFactor,
    ) -> ControlFlow<Self::Break> {
        if let TableFactor::Derived { subquery, .. } = table_factor {
            name_query_columns(subquery, false);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Self::Break> {
        if let Some(with) = &mut query.with {
            for cte in &mut with.cte_tables {
                name_query_columns(&mut cte.query, false);
            }
        }
        ControlFlow::Continue(())
    }
}

/// Marks the second and later of a query's output columns of one name: DataFusion wants
/// distinct names, PostgreSQL allows duplicates (`SELECT count(*), count(v)` has two columns
/// `count`). The wire layer drops the mark and what follows ([`output_name`]).
pub const DUPLICATE_MARK: char = '\u{1f}';

/// A column's name as the client sees it: without the mark [`name_columns`] may have added.
pub fn output_name(name: &str) -> &str {
    name.split(DUPLICATE_MARK).next().unwrap_or(name)
}

fn name_query_columns(query: &mut Query, allow_duplicates: bool) {
    let mut body = query.body.as_mut();
    loop {
        match body {
            SetExpr::Select(select) => break name_select_columns(select, allow_duplicates),
            SetExpr::SetOperation { left, .. } => body = left.as_mut(),
            SetExpr::Query(inner) => body = inner.body.as_mut(),
            _ => return,
        }
    }
}

fn name_select_columns(select: &mut Select, allow_duplicates: bool) {
    // Plain column references keep their names untouched (even a cast of one: an alias equal
    // to a column's name is ambiguous for DataFusion); their names are taken first. A column
    // named twice is marked the second time.
    let mut taken: std::collections::HashMap<String, usize> = Default::default();
    for item in select.projection.iter_mut() {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        if !names_a_column(expr) {
            continue;
        }
        let Some(name) = figure_name(expr) else {
            continue;
        };
        let seen = taken.entry(name.clone()).or_insert(0);
        *seen += 1;
        if *seen > 1 && allow_duplicates {
            *item = SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: Ident::with_quote('"', format!("{name}{DUPLICATE_MARK}{seen}")),
            };
        }
    }
    for item in select.projection.iter_mut() {
        let (expr, name, aliased) = match item {
            SelectItem::UnnamedExpr(expr) if names_a_column(expr) => continue,
            SelectItem::ExprWithAlias { alias, .. } if alias.value.contains(DUPLICATE_MARK) => {
                continue;
            }
            SelectItem::UnnamedExpr(expr) => {
                let name = figure_name(expr).unwrap_or_else(|| "?column?".into());
                (expr.clone(), name, false)
            }
            // An unquoted alias is folded to lower case, as every unquoted name is.
            SelectItem::ExprWithAlias { expr, alias } => {
                (expr.clone(), super::ddl::ident_name(alias), true)
            }
            _ => continue,
        };
        let seen = taken.entry(name.clone()).or_insert(0);
        *seen += 1;
        let alias = match *seen {
            // The user's own alias stands as written.
            1 if aliased => continue,
            1 => name,
            n if allow_duplicates => format!("{name}{DUPLICATE_MARK}{n}"),
            // A view: leave the duplicate as DataFusion names (or refuses) it.
            _ => continue,
        };
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: Ident::with_quote('"', alias),
        };
    }
}

/// A query's columns that are casts of a column (`SELECT n::text FROM t`), which DataFusion
/// names by the qualified column (`t.n`), renamed as PostgreSQL names them (`n`) by a
/// projection on top, once the statement is planned (an alias in the query itself would make
/// `ORDER BY n` ambiguous for DataFusion). A name another column has is left alone.
pub fn name_cast_columns(
    plan: datafusion::logical_expr::LogicalPlan,
) -> datafusion::common::Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::logical_expr::{Expr as Lx, LogicalPlan, LogicalPlanBuilder};
    fn column_name(expr: &Lx) -> Option<&str> {
        match expr {
            Lx::Column(c) => Some(&c.name),
            Lx::Cast(c) => column_name(&c.expr),
            Lx::TryCast(c) => column_name(&c.expr),
            _ => None,
        }
    }
    let mut node = &plan;
    let projection = loop {
        match node {
            LogicalPlan::Sort(sort) => node = &sort.input,
            LogicalPlan::Limit(limit) => node = &limit.input,
            LogicalPlan::Projection(projection) => break projection,
            _ => return Ok(plan),
        }
    };
    let renames: Vec<Option<String>> = projection
        .expr
        .iter()
        .map(|e| match e {
            Lx::Cast(_) | Lx::TryCast(_) => column_name(e).map(str::to_owned),
            _ => None,
        })
        .collect();
    let schema = plan.schema();
    let mut taken: std::collections::HashSet<String> =
        schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut renamed = false;
    let columns: Vec<Lx> = schema
        .iter()
        .zip(&renames)
        .map(|((qualifier, field), rename)| {
            let column = Lx::Column(datafusion::common::Column::new(
                qualifier.cloned(),
                field.name(),
            ));
            match rename {
                Some(name) if name != field.name() && taken.insert(name.clone()) => {
                    renamed = true;
                    column.alias(name)
                }
                _ => column,
            }
        })
        .collect();
    if !renamed {
        return Ok(plan);
    }
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

/// A column reference, possibly in parentheses or casts.
fn names_a_column(expr: &Expr) -> bool {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => names_a_column(inner),
        _ => false,
    }
}

/// PostgreSQL's name for an unnamed select-list expression (`FigureColname`), if it has one.
fn figure_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(i) => Some(i.value.to_ascii_lowercase()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.to_ascii_lowercase()),
        Expr::Nested(inner) => figure_name(inner),
        // `(a).x` is named `x`.
        Expr::CompoundFieldAccess { access_chain, .. } => match access_chain.last()? {
            AccessExpr::Dot(Expr::Identifier(i)) => Some(i.value.to_ascii_lowercase()),
            AccessExpr::Dot(Expr::Value(ValueWithSpan {
                value: Value::SingleQuotedString(name),
                ..
            })) => Some(name.clone()),
            _ => None,
        },
        Expr::Function(function) => Some(last_part(&function.name)),
        Expr::Cast {
            expr, data_type, ..
        } => figure_name(expr).or_else(|| type_column_name(data_type)),
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Array(_) => Some("array".into()),
        _ => None,
    }
}

/// The name PostgreSQL gives a cast to `data_type` (its `pg_type.typname`).
fn type_column_name(data_type: &DataType) -> Option<String> {
    Some(
        match data_type {
            DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4",
            DataType::BigInt(_) | DataType::Int8(_) => "int8",
            DataType::SmallInt(_) | DataType::Int2(_) => "int2",
            DataType::Text => "text",
            DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar",
            DataType::Boolean | DataType::Bool => "bool",
            DataType::Real | DataType::Float4 => "float4",
            DataType::DoublePrecision | DataType::Double(_) | DataType::Float8 => "float8",
            DataType::Numeric(_) | DataType::Decimal(_) => "numeric",
            DataType::Date => "date",
            DataType::Timestamp(_, _) => "timestamp",
            DataType::Interval { .. } => "interval",
            DataType::Bytea => "bytea",
            DataType::Custom(name, _) => return Some(last_part(name)),
            _ => return None,
        }
        .to_string(),
    )
}

/// pgJDBC's `getPrimaryKeys` expands `pg_index.indkey` with `information_schema._pg_expandarray`,
/// a set-returning function of records `(x, n)`: `_pg_expandarray(a)` becomes `unnest(a)` (the
/// elements, `x`), `(_pg_expandarray(a)).n` the subscripts, and `(k).x` of such a column `k`.
fn rewrite_expandarray(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::AccessExpr;
    let unnest_arg = |expr: &Expr| -> Option<Expr> {
        let mut inner = expr;
        while let Expr::Nested(e) = inner {
            inner = e;
        }
        let Expr::Function(f) = inner else {
            return None;
        };
        if !is_function(f, "unnest") {
            return None;
        }
        let FunctionArguments::List(list) = &f.args else {
            return None;
        };
        match list.args.first() {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) => Some(e.clone()),
            _ => None,
        }
    };
    let _ = visit_expressions_mut(statement, |expr| {
        match expr {
            Expr::Function(f) if is_function(f, "_pg_expandarray") => {
                if let FunctionArguments::List(list) = &f.args
                    && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(array))) =
                        list.args.first()
                    && let Some(unnest) = parse_expr(&format!("unnest({array})"))
                {
                    *expr = unnest;
                }
            }
            Expr::CompoundFieldAccess { root, access_chain } if access_chain.len() == 1 => {
                let field = match &access_chain[0] {
                    AccessExpr::Dot(Expr::Identifier(i)) => i.value.to_ascii_lowercase(),
                    _ => return ControlFlow::<()>::Continue(()),
                };
                match (field.as_str(), unnest_arg(root)) {
                    ("n", Some(array)) => {
                        if let Some(subscripts) = parse_expr(&format!(
                            "unnest(range(1, CAST(cardinality({array}) AS BIGINT) + 1))"
                        )) {
                            *expr = subscripts;
                        }
                    }
                    ("x", _) => *expr = root.as_ref().clone(),
                    _ => {}
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

fn last_part(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_ascii_lowercase())
        .unwrap_or_default()
}

/// An expression written as SQL (the rewrites build their replacements so).
pub(crate) fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&SluiceDialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

fn call(function: &str, args: &[&Expr]) -> Option<Expr> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    parse_expr(&format!("{function}({})", args.join(", ")))
}

/// psql's and drivers' lookup of a column's default, `(SELECT pg_get_expr(d.adbin, d.adrelid)
/// FROM pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum …)`, a correlated
/// subquery DataFusion cannot run, as `sluice_column_default(a.attrelid, a.attnum)`; `None`
/// for any other subquery.
fn column_default_lookup(query: &Query) -> Option<Expr> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    let TableFactor::Table { name, alias, .. } = &from.relation else {
        return None;
    };
    if last_part(name) != "pg_attrdef" || !from.joins.is_empty() {
        return None;
    }
    let [
        SelectItem::UnnamedExpr(Expr::Function(f))
        | SelectItem::ExprWithAlias {
            expr: Expr::Function(f),
            ..
        },
    ] = select.projection.as_slice()
    else {
        return None;
    };
    if last_part(&f.name) != "pg_get_expr" {
        return None;
    }
    let inner = alias.as_ref().map_or_else(
        || "pg_attrdef".to_string(),
        |a| a.name.value.to_ascii_lowercase(),
    );
    // The outer side of `inner.column = outer` among the conditions joined by AND.
    fn outer_of<'a>(condition: &'a Expr, inner: &str, column: &str, found: &mut Option<&'a Expr>) {
        match condition {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                outer_of(left, inner, column, found);
                outer_of(right, inner, column, found);
            }
            Expr::Nested(e) => outer_of(e, inner, column, found),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let names = |e: &Expr| match e {
                    Expr::CompoundIdentifier(parts) => {
                        let parts: Vec<String> =
                            parts.iter().map(|p| p.value.to_ascii_lowercase()).collect();
                        parts.len() >= 2
                            && parts[parts.len() - 1] == column
                            && parts[parts.len() - 2] == inner
                    }
                    _ => false,
                };
                if names(left) {
                    *found = Some(right);
                } else if names(right) {
                    *found = Some(left);
                }
            }
            _ => {}
        }
    }
    let selection = select.selection.as_ref()?;
    let (mut relid, mut attnum) = (None, None);
    outer_of(selection, &inner, "adrelid", &mut relid);
    outer_of(selection, &inner, "adnum", &mut attnum);
    call("sluice_column_default", &[relid?, attnum?])
}

/// `$1`: a parameter a driver binds (SQLAlchemy binds `CAST($1 AS REGCLASS)`).
fn is_placeholder(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Value(ValueWithSpan {
            value: Value::Placeholder(_),
            ..
        })
    )
}

/// `SELECT e FROM … ORDER BY o` as `SELECT array_agg(e ORDER BY o) FROM …`; `None` for
/// anything but a plain one-column select.
fn array_agg_subquery(query: &Query) -> Option<Query> {
    let mut query = query.clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    if select.projection.len() != 1
        || !matches!(select.group_by, GroupByExpr::Expressions(ref e, _) if e.is_empty())
        || select.distinct.is_some()
        || query.limit_clause.is_some()
    {
        return None;
    }
    let (SelectItem::UnnamedExpr(element) | SelectItem::ExprWithAlias { expr: element, .. }) =
        &select.projection[0]
    else {
        return None;
    };
    let order = match query.order_by.take() {
        None => String::new(),
        Some(order_by) => {
            let OrderByKind::Expressions(items) = order_by.kind else {
                return None;
            };
            let items: Vec<String> = items
                .iter()
                .map(|item| {
                    // `ORDER BY 1` is the element itself.
                    let is_first = matches!(&item.expr, Expr::Value(ValueWithSpan { value: Value::Number(n, _), .. }) if n == "1");
                    let mut text = item.to_string();
                    if is_first {
                        text = text.replacen('1', &format!("({element})"), 1);
                    }
                    text
                })
                .collect();
            format!(" ORDER BY {}", items.join(", "))
        }
    };
    let aggregated = parse_expr(&format!("array_agg({element}{order})"))?;
    select.projection = vec![SelectItem::UnnamedExpr(aggregated)];
    Some(query)
}

/// `array(SELECT … FROM unnest(…) …)`.
fn over_unnest(function: &datafusion::sql::sqlparser::ast::Function) -> bool {
    let FunctionArguments::Subquery(query) = &function.args else {
        return false;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    select.from.iter().any(|t| match &t.relation {
        TableFactor::Table { name, args, .. } => args.is_some() && last_part(name) == "unnest",
        TableFactor::Function { name, .. } => last_part(name) == "unnest",
        _ => false,
    })
}

/// Whether `function` is `name` (or `pg_catalog.name`).
fn is_function(function: &datafusion::sql::sqlparser::ast::Function, name: &str) -> bool {
    function
        .name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case(name))
}

/// `x.typtype = 'd'` (or `'c'`, `'r'`, `'m'`, `'e'`, `'p'`): false for every row of our
/// `pg_type`, which holds base types only.
fn never_a_base_type(condition: &Expr) -> bool {
    compared_literal(condition, "typtype")
        .is_some_and(|kind| matches!(kind, "d" | "c" | "r" | "m" | "e" | "p"))
}

/// The name (last part, lower case) of the element type of `name[]` for a type sqlparser does
/// not know (`oid[]`, `regtype[]`).
pub fn custom_array_element(data_type: &DataType) -> Option<String> {
    match data_type {
        DataType::Array(
            ArrayElemTypeDef::SquareBracket(element, _) | ArrayElemTypeDef::AngleBracket(element),
        ) => match element.as_ref() {
            DataType::Custom(name, _) => Some(last_part(name)),
            _ => None,
        },
        _ => None,
    }
}

/// The string literal a condition `column = 'literal'` (or `t.column = …`) compares `column`
/// with.
fn compared_literal<'a>(condition: &'a Expr, column: &str) -> Option<&'a str> {
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = condition
    else {
        return None;
    };
    let name = match left.as_ref() {
        Expr::Identifier(i) => &i.value,
        Expr::CompoundIdentifier(parts) => &parts.last()?.value,
        _ => return None,
    };
    match right.as_ref() {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(literal),
            ..
        }) if name.eq_ignore_ascii_case(column) => Some(literal),
        _ => None,
    }
}

/// `x` of `format_type(x, NULL)`, what `x::regtype` becomes.
fn format_type_argument(expr: &Expr) -> Option<Expr> {
    let Expr::Function(f) = expr else {
        return None;
    };
    if !is_function(f, "format_type") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    match list.args.as_slice() {
        [
            FunctionArg::Unnamed(FunctionArgExpr::Expr(oid)),
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(ValueWithSpan {
                value: Value::Null,
                ..
            }))),
        ] => Some(oid.clone()),
        _ => None,
    }
}

fn is_string_literal(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(_),
            ..
        })
    )
}

fn rewrite_expr(expr: &mut Expr) {
    if let Expr::Subquery(query) = expr
        && let Some(default) = column_default_lookup(query)
    {
        *expr = default;
        return;
    }
    match expr {
        Expr::BinaryOp { left, op, right } => {
            if let BinaryOperator::PGCustomBinaryOperator(parts) = op
                && let Some(standard) = parts.last().and_then(|p| standard_operator(p))
            {
                *op = standard;
            }
            // `t.oid::regtype != 'trigger'::regtype` (pgcli): the OIDs compared, not a type's
            // name with an OID. Children are rewritten first, so both casts are calls by now.
            if matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq) {
                let names_type =
                    |e: &Expr| matches!(e, Expr::Function(f) if is_function(f, REGTYPE_FUNCTION));
                if names_type(right)
                    && let Some(oid) = format_type_argument(left)
                {
                    **left = oid;
                } else if names_type(left)
                    && let Some(oid) = format_type_argument(right)
                {
                    **right = oid;
                }
            }
        }
        Expr::Collate { expr: inner, .. } => {
            *expr = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
        }
        // `(a).x`, `t.items[1].sku`: a field of a row value, named as an identifier (lowercased
        // unless quoted); DataFusion reads a field named by a string. The leading names of a
        // column reference (`t.items` in `t.items[1]`) stay as they are: DataFusion resolves
        // them as a compound identifier.
        Expr::CompoundFieldAccess { root, access_chain } => {
            let names = matches!(**root, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
            let leading = if names {
                access_chain
                    .iter()
                    .take_while(|a| matches!(a, AccessExpr::Dot(Expr::Identifier(_))))
                    .count()
            } else {
                0
            };
            for access in access_chain.iter_mut().skip(leading) {
                if let AccessExpr::Dot(Expr::Identifier(ident)) = access {
                    let name = super::ddl::ident_name(ident);
                    *access = AccessExpr::Dot(Expr::value(Value::SingleQuotedString(name)));
                }
            }
        }
        Expr::Cast {
            expr: inner,
            data_type,
            kind,
            ..
        } => {
            // `oids::regtype[]`: the OIDs as they are (names only for single values).
            if custom_array_element(data_type).is_some_and(|name| name.starts_with("reg")) {
                *expr = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
                return;
            }
            // `$1::oid[]` (asyncpg's type introspection): OIDs are bigints here.
            if custom_array_element(data_type).as_deref() == Some("oid")
                && let DataType::Array(
                    ArrayElemTypeDef::SquareBracket(element, _)
                    | ArrayElemTypeDef::AngleBracket(element),
                ) = data_type
            {
                **element = DataType::BigInt(None);
                return;
            }
            let type_name = match data_type {
                DataType::Custom(name, _) => last_part(name),
                DataType::Regclass => "regclass".to_string(),
                _ => return,
            };
            let replacement = match type_name.as_str() {
                "regclass" if is_string_literal(inner) || is_placeholder(inner) => {
                    call(REGCLASS_FUNCTION, &[inner])
                }
                "regtype" if is_string_literal(inner) => call(REGTYPE_FUNCTION, &[inner]),
                "regtype" => call("format_type", &[inner, &Expr::value(Value::Null)]),
                "regclass" | "regproc" | "regprocedure" | "regnamespace" | "regrole"
                | "regoper" | "regconfig" => Some(inner.as_ref().clone()),
                "oid" | "xid" => Some(cast(inner, DataType::BigInt(None), kind)),
                "name" | "char" | "text" | "int2vector" | "oidvector" | "aclitem" => {
                    Some(cast(inner, DataType::Text, kind))
                }
                _ => None,
            };
            if let Some(replacement) = replacement {
                *expr = replacement;
            }
        }
        // `CASE WHEN t.typtype = 'd' THEN (…) ELSE NULL END`: every type in pg_type is a base
        // type, so a branch for domains, composites, ranges, enums or pseudo-types never runs
        // (asyncpg's type introspection puts correlated subqueries there).
        Expr::Case {
            operand: None,
            conditions,
            else_result,
            ..
        } if conditions.len() == 1
            && never_a_base_type(&conditions[0].condition)
            && else_result.as_deref().is_none_or(|e| {
                matches!(
                    e,
                    Expr::Value(ValueWithSpan {
                        value: Value::Null,
                        ..
                    })
                )
            }) =>
        {
            *expr = Expr::value(Value::Null);
        }
        Expr::Subquery(query) if over_empty_catalog_relation(query) => {
            *expr = Expr::value(Value::Null);
        }
        Expr::Exists { subquery, negated } if over_empty_catalog_relation(subquery) => {
            *expr = Expr::value(Value::Boolean(*negated));
        }
        Expr::Subquery(query) => aggregate_catalog_subquery(query),
        // psql's `array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x)` (a
        // correlated table function DataFusion cannot plan, over option arrays Sluice never
        // fills) and `ARRAY(SELECT … FROM pg_auth_members …)` (a relation without rows): an
        // empty array, as PostgreSQL answers them here.
        Expr::Function(function)
            if is_function(function, "array")
                && (over_unnest(function)
                    || matches!(&function.args, FunctionArguments::Subquery(q) if over_empty_catalog_relation(q))) =>
        {
            if let Some(empty) = parse_expr("CAST(make_array() AS TEXT[])") {
                *expr = empty;
            }
        }
        // `ARRAY(SELECT e FROM … [ORDER BY …])`, which DataFusion lacks: the scalar subquery
        // `(SELECT array_agg(e ORDER BY …) FROM …)` (NULL, not `{}`, when it has no rows).
        Expr::Function(function) if is_function(function, "array") => {
            if let FunctionArguments::Subquery(query) = &function.args
                && let Some(aggregated) = array_agg_subquery(query)
            {
                *expr = Expr::Subquery(Box::new(aggregated));
            }
        }
        // `jsonb_agg(x …)` is `to_jsonb(array_agg(x …))` and `jsonb_object_agg(k, v …)` pairs
        // `array_agg(k …)` with `array_agg(v …)` (fed the same rows in the same order), keeping
        // FILTER, ORDER BY and OVER: DataFusion's aggregate, and where a view may use it.
        Expr::Function(function)
            if [
                "jsonb_agg",
                "json_agg",
                "jsonb_object_agg",
                "json_object_agg",
            ]
            .iter()
            .any(|name| is_function(function, name)) =>
        {
            let object = is_function(function, "jsonb_object_agg")
                || is_function(function, "json_object_agg");
            // DISTINCT over (key, value) pairs is not two DISTINCT lists: left to DataFusion,
            // which does not know the function.
            let distinct = matches!(&function.args, FunctionArguments::List(list)
                if list.duplicate_treatment.is_some());
            if object && distinct {
                return;
            }
            let array_agg = |args: Vec<FunctionArg>| {
                let mut agg = function.clone();
                agg.name = ObjectName::from(vec![Ident::new("array_agg")]);
                if let FunctionArguments::List(list) = &mut agg.args {
                    list.args = args;
                }
                Expr::Function(agg)
            };
            let args = match &function.args {
                FunctionArguments::List(list) => list.args.clone(),
                _ => return,
            };
            let (wrapper, aggregates) = match (object, args.as_slice()) {
                (false, [_]) => ("to_jsonb", vec![array_agg(args)]),
                (true, [k, v]) => (
                    "sluice_jsonb_object_of",
                    vec![array_agg(vec![k.clone()]), array_agg(vec![v.clone()])],
                ),
                // A wrong number of arguments: left for DataFusion to refuse.
                _ => return,
            };
            if let Some(Expr::Function(mut outer)) = parse_expr(&format!("{wrapper}(NULL)")) {
                if let FunctionArguments::List(list) = &mut outer.args {
                    list.args = aggregates
                        .into_iter()
                        .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                        .collect();
                }
                *expr = Expr::Function(outer);
            }
        }
        // `generate_subscripts(a, 1)`: the subscripts of a one-dimensional array, as rows.
        Expr::Function(function) if is_function(function, "generate_subscripts") => {
            if let FunctionArguments::List(list) = &function.args
                && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(array))) = list.args.first()
                && let Some(replacement) = parse_expr(&format!(
                    "unnest(range(1, CAST(cardinality({array}) AS BIGINT) + 1))"
                ))
            {
                *expr = replacement;
            }
        }
        Expr::Function(function)
            if function.name.0.len() == 2
                && function.name.0[0]
                    .as_ident()
                    .is_some_and(|i| i.value.eq_ignore_ascii_case("pg_catalog")) =>
        {
            function.name.0.remove(0);
        }
        _ => {}
    }
}

/// A `SELECT` over a relation that never has rows returns no rows, whatever its select list
/// says; psql's queries of such relations use functions we do not have (`array(SELECT …)` over
/// `pg_roles` in the policies query). Their select lists become NULLs, so they plan and return
/// nothing, as they would in PostgreSQL.
struct BlankEmptyCatalogSelects;

impl VisitorMut for BlankEmptyCatalogSelects {
    type Break = ();

    /// `FROM pg_catalog.pg_get_keywords()`: table functions are found by their bare name.
    fn pre_visit_table_factor(
        &mut self,
        table_factor: &mut TableFactor,
    ) -> ControlFlow<Self::Break> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = table_factor
            && name.0.len() == 2
            && name.0[0]
                .as_ident()
                .is_some_and(|i| i.value.eq_ignore_ascii_case("pg_catalog"))
        {
            name.0.remove(0);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Self::Break> {
        blank_empty_selects(query.body.as_mut());
        ControlFlow::Continue(())
    }
}

fn blank_empty_selects(body: &mut SetExpr) {
    match body {
        SetExpr::SetOperation { left, right, .. } => {
            blank_empty_selects(left);
            blank_empty_selects(right);
        }
        SetExpr::Select(select) if select_over_empty_catalog_relation(select) => {
            for (i, item) in select.projection.iter_mut().enumerate() {
                let alias = match item {
                    SelectItem::ExprWithAlias { alias, .. } => alias.clone(),
                    _ => Ident::new(format!("column{}", i + 1)),
                };
                *item = SelectItem::ExprWithAlias {
                    expr: Expr::value(Value::Null),
                    alias,
                };
            }
            select.selection = Some(Expr::value(Value::Boolean(false)));
        }
        _ => {}
    }
}

/// True when the query reads, through a cross or inner join, a `pg_catalog` relation that never
/// has rows (`pg_attrdef`, `pg_collation` …): its result is empty, so a scalar subquery of it is
/// NULL and `EXISTS` of it is false. psql's correlated subqueries over these relations are ones
/// DataFusion cannot decorrelate, and need not be run at all.
fn over_empty_catalog_relation(query: &Query) -> bool {
    match query.body.as_ref() {
        SetExpr::Select(select) => select_over_empty_catalog_relation(select),
        _ => false,
    }
}

/// The aggregate functions catalog queries use.
fn is_aggregate_name(name: &str) -> bool {
    matches!(
        name,
        "count"
            | "sum"
            | "min"
            | "max"
            | "avg"
            | "bool_and"
            | "bool_or"
            | "array_agg"
            | "string_agg"
    )
}

fn select_over_empty_catalog_relation(select: &Select) -> bool {
    // `SELECT count(*) FROM pg_locks` has one row (an aggregate over nothing): it runs.
    let aggregates_only = matches!(select.group_by, GroupByExpr::Expressions(ref e, _) if e.is_empty())
        && !select.projection.is_empty()
        && select.projection.iter().all(|item| match item {
            SelectItem::UnnamedExpr(Expr::Function(f))
            | SelectItem::ExprWithAlias {
                expr: Expr::Function(f),
                ..
            } => is_aggregate_name(&last_part(&f.name)),
            _ => false,
        });
    if aggregates_only {
        return false;
    }
    select.from.iter().any(|t| match &t.relation {
        TableFactor::Table { name, .. } => {
            let name = name.to_string().to_ascii_lowercase();
            let bare = name.strip_prefix("pg_catalog.").unwrap_or(&name);
            ALWAYS_EMPTY.contains(&bare)
        }
        _ => false,
    }) || selects_foreign_keys(select)
}

/// True when the query reads `pg_constraint` and its `WHERE` keeps only foreign keys
/// (`contype = 'f'`, one of the conditions joined by `AND`): Sluice has none, so the result is
/// empty. pgcli's and SQLAlchemy's foreign key queries correlate subqueries inside `unnest(…)`,
/// which DataFusion cannot plan.
fn selects_foreign_keys(select: &Select) -> bool {
    let reads_constraints = select.from.iter().any(|t| match &t.relation {
        TableFactor::Table { name, .. } => last_part(name) == "pg_constraint",
        _ => false,
    });
    fn keeps_foreign_keys(expr: &Expr) -> bool {
        match expr {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => keeps_foreign_keys(left) || keeps_foreign_keys(right),
            Expr::Nested(inner) => keeps_foreign_keys(inner),
            other => compared_literal(other, "contype") == Some("f"),
        }
    }
    reads_constraints && select.selection.as_ref().is_some_and(keeps_foreign_keys)
}

/// psql's scalar subqueries over catalog relations (`(SELECT pg_get_expr(…) FROM pg_attrdef d
/// WHERE d.adrelid = a.attrelid …)`) return at most one row, which PostgreSQL checks at run time
/// and DataFusion wants to see in the plan: wrapping the one output in `max` says so. Only
/// subqueries over `pg_catalog` relations are touched; a user's subquery keeps its meaning.
fn aggregate_catalog_subquery(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let over_catalog = !select.from.is_empty()
        && select.from.iter().all(|t| match &t.relation {
            TableFactor::Table { name, .. } => {
                let name = name.to_string().to_ascii_lowercase();
                name.starts_with("pg_") || name.starts_with("pg_catalog.")
            }
            _ => false,
        });
    if !over_catalog
        || select.projection.len() != 1
        || !matches!(select.group_by, GroupByExpr::Expressions(ref e, _) if e.is_empty())
    {
        return;
    }
    let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) =
        &mut select.projection[0]
    else {
        return;
    };
    // An aggregate has one row already.
    if matches!(expr, Expr::Function(f) if is_aggregate_name(&last_part(&f.name))) {
        return;
    }
    if let Some(wrapped) = call("max", &[expr]) {
        *expr = wrapped;
    }
}

fn cast(inner: &Expr, data_type: DataType, kind: &CastKind) -> Expr {
    Expr::Cast {
        kind: kind.clone(),
        expr: Box::new(inner.clone()),
        data_type,
        array: false,
        format: None,
    }
}

fn standard_operator(op: &str) -> Option<BinaryOperator> {
    Some(match op {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "~~" => BinaryOperator::PGLikeMatch,
        "~~*" => BinaryOperator::PGILikeMatch,
        "!~~" => BinaryOperator::PGNotLikeMatch,
        "!~~*" => BinaryOperator::PGNotILikeMatch,
        "=" => BinaryOperator::Eq,
        "<>" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        ">" => BinaryOperator::Gt,
        "<=" => BinaryOperator::LtEq,
        ">=" => BinaryOperator::GtEq,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse_sql;

    fn rewritten(sql: &str) -> String {
        let mut stmt = parse_sql(sql).unwrap().remove(0).statement;
        rewrite(&mut stmt);
        stmt.to_string()
    }

    #[test]
    fn psql_spellings_become_plain_sql() {
        assert_eq!(
            rewritten(
                "SELECT 1 FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid)"
            ),
            // The literal column is int4, as PostgreSQL types it.
            "SELECT 1::INT FROM pg_catalog.pg_class c WHERE c.relname ~ '^(t)$' AND pg_table_is_visible(c.oid)"
        );
        assert_eq!(
            rewritten("SELECT 't'::regclass, c.oid::pg_catalog.regclass, x::name"),
            "SELECT sluice_regclass('t'), c.oid, x::TEXT"
        );
    }
}
