//! `CREATE FUNCTION … LANGUAGE SQL`: scalar functions whose body is one SQL expression,
//! written as PostgreSQL does (`AS $$ SELECT a * 2 $$`, `AS 'SELECT $1 * 2'`, `RETURN a * 2`).
//!
//! The body is planned once, at `CREATE`, over its arguments as columns of the declared types,
//! and type-checked by DataFusion's analyzer; a call is then replaced by the body with the
//! call's arguments in place of those columns (`simplify`), so that queries and views see a
//! plain expression (pushed down, folded, maintained as any other). Evaluated without that
//! replacement, it runs the same body over its arguments.

use std::sync::Arc;

use crate::sql::dialect::SluiceDialect;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::sql::sqlparser::ast::{
    self as ast, CreateFunction, CreateFunctionBody, FunctionReturnType, Ident, SelectItem,
    SetExpr, Statement, Value, visit_expressions_mut,
};
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Error, Result};

/// The column that stands for argument `i` (from 0) in a function's planned body.
fn argument_column(i: usize) -> String {
    format!("__sluice_arg_{}", i + 1)
}

/// The SQL functions made by `CREATE FUNCTION`, shared by the engine (which sessions sync
/// from) and `pg_proc`.
#[derive(Debug, Default)]
pub struct SqlFunctions {
    /// Bumped by every create and drop.
    pub generation: u64,
    /// By name: the catalog id and the function.
    pub live: std::collections::BTreeMap<String, (u32, Arc<ScalarUDF>)>,
    /// Names dropped, which sessions deregister.
    pub dropped: std::collections::BTreeSet<String>,
}

/// A SQL function: its body over argument columns.
#[derive(Debug)]
pub struct SqlFunction {
    name: String,
    signature: Signature,
    arguments: Vec<DataType>,
    /// The arguments' names as declared (`None` for `$n` only).
    argument_names: Vec<Option<String>>,
    /// The body's text, for `pg_proc.prosrc`.
    source: String,
    returns: DataType,
    /// The body, over columns `__sluice_arg_1…`, cast to `returns`.
    body: Expr,
    /// The arguments as a schema, for evaluating the body without inlining it.
    schema: Arc<DFSchema>,
}

impl PartialEq for SqlFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.body == other.body
    }
}

impl Eq for SqlFunction {}

impl std::hash::Hash for SqlFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for SqlFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(self.returns.clone())
    }

    fn coerce_types(&self, args: &[DataType]) -> datafusion::error::Result<Vec<DataType>> {
        if args.len() != self.arguments.len() {
            return datafusion::common::plan_err!(
                "function {}({}) does not exist: {} takes {} argument(s)",
                self.name,
                args.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.name,
                self.arguments.len()
            );
        }
        // Every argument is cast to the declared type, as PostgreSQL assigns a literal.
        Ok(self.arguments.clone())
    }

    fn simplify(
        &self,
        args: Vec<Expr>,
        _info: &SimplifyContext,
    ) -> datafusion::error::Result<ExprSimplifyResult> {
        Ok(ExprSimplifyResult::Simplified(self.inline(&args)?))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let columns = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new_with_options(
            Arc::new(self.schema.as_arrow().clone()),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let expr = datafusion::physical_expr::create_physical_expr(
            &self.body,
            &self.schema,
            &datafusion::execution::context::ExecutionProps::new(),
            &Default::default(),
        )?;
        expr.evaluate(&batch)
    }
}

impl SqlFunction {
    /// The SQL function `udf` is, if it is one.
    pub fn of(udf: &ScalarUDF) -> Option<&SqlFunction> {
        udf.inner().downcast_ref::<SqlFunction>()
    }

    /// The declared argument types (as Arrow types), with their names.
    pub fn arguments(&self) -> impl Iterator<Item = (&DataType, Option<&str>)> {
        self.arguments
            .iter()
            .zip(self.argument_names.iter().map(|n| n.as_deref()))
    }

    /// The result type.
    pub fn returns(&self) -> &DataType {
        &self.returns
    }

    /// The body as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The body with `args` in place of the argument columns.
    fn inline(&self, args: &[Expr]) -> datafusion::error::Result<Expr> {
        Ok(self
            .body
            .clone()
            .transform_up(|e| match &e {
                Expr::Column(c) => match c.name.strip_prefix("__sluice_arg_") {
                    Some(n) => match n
                        .parse::<usize>()
                        .ok()
                        .and_then(|n| n.checked_sub(1))
                        .and_then(|i| args.get(i))
                    {
                        Some(arg) => Ok(Transformed::yes(arg.clone())),
                        None => Ok(Transformed::no(e)),
                    },
                    None => Ok(Transformed::no(e)),
                },
                _ => Ok(Transformed::no(e)),
            })?
            .data)
    }
}

/// The function's name, folded as PostgreSQL folds an unquoted one, in `public` (the same
/// rule as a table's name).
pub fn function_name(create: &CreateFunction) -> Result<String> {
    super::ddl::table_name(&create.name)
}

/// An argument's name, lowercased unless quoted.
fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// The body as one SQL expression, and its text as PostgreSQL's `prosrc` keeps it (the
/// string of `AS '…'`, the expression of `RETURN …`).
fn body_expression(create: &CreateFunction) -> Result<(ast::Expr, String)> {
    let text = match &create.function_body {
        Some(CreateFunctionBody::Return(e)) => return Ok((e.clone(), e.to_string())),
        Some(CreateFunctionBody::AsBeforeOptions { body, .. })
        | Some(CreateFunctionBody::AsAfterOptions(body)) => match body {
            ast::Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => s.clone(),
                Value::DollarQuotedString(d) => d.value.clone(),
                _ => return Err(Error::unsupported("a function body that is not a string")),
            },
            _ => return Err(Error::unsupported("a function body that is not a string")),
        },
        _ => {
            return Err(Error::unsupported(
                "a function without a body (AS $$ SELECT … $$ or RETURN …)",
            ));
        }
    };
    let statements = Parser::parse_sql(&SluiceDialect, &text).map_err(|e| {
        Error::user(
            crate::error::sqlstate::SYNTAX_ERROR,
            format!("in the body of function {}: {e}", create.name),
        )
    })?;
    let one_expression = || {
        Error::unsupported(
            "a SQL function body other than one SELECT of one expression without FROM",
        )
    };
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(one_expression());
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(one_expression());
    };
    match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] | [SelectItem::ExprWithAlias { expr: e, .. }]
            if select.from.is_empty() && select.selection.is_none() =>
        {
            Ok((e.clone(), text))
        }
        _ => Err(one_expression()),
    }
}

/// Plans `CREATE FUNCTION name(args) RETURNS type LANGUAGE SQL AS …` into a scalar UDF.
pub async fn plan_function(state: &SessionState, create: &CreateFunction) -> Result<ScalarUDF> {
    if let Some(language) = &create.language
        && !language.value.eq_ignore_ascii_case("sql")
    {
        return Err(Error::unsupported(format!(
            "LANGUAGE {} (only LANGUAGE SQL)",
            language.value
        )));
    }
    let name = function_name(create)?;
    let returns = match &create.return_type {
        Some(FunctionReturnType::DataType(t)) => t.clone(),
        Some(FunctionReturnType::SetOf(_)) => {
            return Err(Error::unsupported(
                "RETURNS SETOF (a set-returning function)",
            ));
        }
        None => return Err(Error::unsupported("a function without RETURNS")),
    };
    let args = create.args.clone().unwrap_or_default();
    let names: Vec<Option<String>> = args.iter().map(|a| a.name.as_ref().map(fold)).collect();
    let (mut body, source) = body_expression(create)?;
    // `$1` and the arguments' names become the argument columns.
    let flow = visit_expressions_mut(&mut body, |e| {
        let index = match e {
            ast::Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => p
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| (1..=names.len()).contains(n))
                    .map(|n| n - 1),
                _ => None,
            },
            ast::Expr::Identifier(ident) => {
                let folded = fold(ident);
                names
                    .iter()
                    .position(|n| n.as_deref() == Some(folded.as_str()))
            }
            _ => None,
        };
        if let Some(i) = index {
            *e = ast::Expr::Identifier(Ident::with_quote('"', argument_column(i)));
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    debug_assert!(flow.is_continue());
    // `SELECT CAST((body) AS returns) FROM (VALUES (CAST(NULL AS t1), …)) AS args(a1, …)`,
    // analyzed: the body typed over the arguments.
    let mut sql = format!("SELECT CAST(({body}) AS {returns}) AS result");
    if !args.is_empty() {
        let nulls: Vec<String> = args
            .iter()
            .map(|a| format!("CAST(NULL AS {})", a.data_type))
            .collect();
        let columns: Vec<String> = (0..args.len())
            .map(|i| format!("\"{}\"", argument_column(i)))
            .collect();
        sql.push_str(&format!(
            " FROM (VALUES ({})) AS __sluice_args({})",
            nulls.join(", "),
            columns.join(", ")
        ));
    }
    let plan = state
        .create_logical_plan(&sql)
        .await
        .map_err(|e| body_error(&name, e))?;
    let plan = state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})
        .map_err(|e| body_error(&name, e))?;
    let LogicalPlan::Projection(projection) = &plan else {
        return Err(Error::internal(format!(
            "the body of {name} did not plan as a projection"
        )));
    };
    let body = match &projection.expr[..] {
        [Expr::Alias(a)] => a.expr.as_ref().clone(),
        [e] => e.clone(),
        _ => {
            return Err(Error::internal(format!(
                "the body of {name} planned as several expressions"
            )));
        }
    };
    // Argument columns unqualified, as `inline` and `invoke` see them.
    let body = body
        .transform_up(|e| match &e {
            Expr::Column(c) if c.name.starts_with("__sluice_arg_") => Ok(Transformed::yes(
                Expr::Column(datafusion::common::Column::from_name(c.name.clone())),
            )),
            _ => Ok(Transformed::no(e)),
        })?
        .data;
    let input = projection.input.schema();
    let arguments: Vec<DataType> = (0..args.len())
        .map(|i| input.field(i).data_type().clone())
        .collect();
    let returns = projection.schema.field(0).data_type().clone();
    let schema = Arc::new(DFSchema::try_from(Schema::new(
        arguments
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(argument_column(i), t.clone(), true))
            .collect::<Vec<_>>(),
    ))?);
    Ok(ScalarUDF::new_from_impl(SqlFunction {
        name,
        signature: Signature::user_defined(Volatility::Immutable),
        arguments,
        argument_names: names,
        source,
        returns,
        body,
        schema,
    }))
}

fn body_error(name: &str, e: datafusion::error::DataFusionError) -> Error {
    let e = Error::from(e);
    Error::user(e.sqlstate(), format!("in the body of function {name}: {e}"))
}

/// Whether `udf` is a SQL function made by `CREATE FUNCTION`.
pub fn is_sql_function(udf: &ScalarUDF) -> bool {
    SqlFunction::of(udf).is_some()
}
