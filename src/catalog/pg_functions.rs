//! The PostgreSQL functions that psql, drivers and BI tools call on the catalog
//! (`format_type`, `pg_table_is_visible`, `pg_get_indexdef`, `current_database` …), as DataFusion
//! scalar UDFs.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, ListBuilder, StringArray,
    StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, UInt32Type};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use super::pg_catalog::primary_key_index_def;
use super::pg_types::{format_type_oid, type_by_name};
use super::registry::TableRegistry;
use super::views::ViewRegistry;
use crate::config::{DATABASE_NAME, DEFAULT_USER};
use crate::error::{Error, sqlstate};

/// The server version we report: PostgreSQL's, so clients pick their modern code paths.
pub const SERVER_VERSION: &str = "16.6";

type Body = Arc<dyn Fn(&[ArrayRef], usize) -> DfResult<ArrayRef> + Send + Sync>;

/// A catalog function: a name, the argument counts it accepts, a result type and a body over
/// whole columns.
struct PgFunction {
    /// Function name as SQL calls it.
    name: &'static str,
    /// Accepted argument counts (any types; bodies cast what they need).
    signature: Signature,
    /// Result type.
    return_type: DataType,
    /// Computes the result column from argument columns and the row count.
    body: Body,
}

impl fmt::Debug for PgFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgFunction")
            .field("name", &self.name)
            .finish()
    }
}

impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PgFunction {}

impl Hash for PgFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.return_type.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array((self.body)(&arrays, rows)?))
    }
}

pub(crate) fn function(
    name: &'static str,
    arities: &[usize],
    return_type: DataType,
    body: impl Fn(&[ArrayRef], usize) -> DfResult<ArrayRef> + Send + Sync + 'static,
) -> ScalarUDF {
    let signatures: Vec<TypeSignature> = arities
        .iter()
        .map(|&n| {
            if n == 0 {
                TypeSignature::Nullary
            } else {
                TypeSignature::Any(n)
            }
        })
        .collect();
    let signature = if signatures.len() == 1 {
        Signature::new(
            signatures
                .into_iter()
                .next()
                .unwrap_or(TypeSignature::Nullary),
            Volatility::Stable,
        )
    } else {
        Signature::one_of(signatures, Volatility::Stable)
    };
    ScalarUDF::new_from_impl(PgFunction {
        name,
        signature,
        return_type,
        body: Arc::new(body),
    })
}

fn constant_text(value: String) -> impl Fn(&[ArrayRef], usize) -> DfResult<ArrayRef> {
    move |_, rows| Ok(Arc::new(StringArray::from(vec![value.as_str(); rows])) as ArrayRef)
}

fn null_text(_: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    Ok(Arc::new(StringArray::new_null(rows)))
}

/// `describe` of the SQL function of each OID (`pg_proc.oid`), NULL for any other.
fn describe_sql_function(
    functions: &std::sync::RwLock<crate::sql::functions::SqlFunctions>,
    oids: &ArrayRef,
    describe: impl Fn(&crate::sql::functions::SqlFunction) -> String,
) -> DfResult<ArrayRef> {
    let oids = as_u32(oids)?;
    let functions = crate::sync::read(functions, "the SQL functions");
    let by_oid: std::collections::HashMap<u32, &crate::sql::functions::SqlFunction> = functions
        .live
        .values()
        .filter_map(|(id, udf)| {
            crate::sql::functions::SqlFunction::of(udf).map(|f| (super::FIRST_USER_OID + 2 * id, f))
        })
        .collect();
    Ok(Arc::new(StringArray::from_iter(oids.iter().map(|oid| {
        oid.and_then(|oid| by_oid.get(&oid)).map(|f| describe(f))
    }))))
}

fn all_true(_: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    Ok(Arc::new(BooleanArray::from(vec![true; rows])))
}

fn as_u32(array: &ArrayRef) -> DfResult<UInt32Array> {
    Ok(cast(array, &DataType::UInt32)?
        .as_primitive::<UInt32Type>()
        .clone())
}

fn as_i32(array: &ArrayRef) -> DfResult<Int32Array> {
    Ok(cast(array, &DataType::Int32)?
        .as_primitive::<Int32Type>()
        .clone())
}

/// `describe(oid)` for each OID of `oids` (NULL where it gives none, or for a NULL OID).
fn text_by_oid(oids: &ArrayRef, describe: impl Fn(u32) -> Option<String>) -> DfResult<ArrayRef> {
    let out: StringArray = as_u32(oids)?.iter().map(|oid| describe(oid?)).collect();
    Ok(Arc::new(out))
}

pub(crate) fn as_text(array: &ArrayRef) -> DfResult<StringArray> {
    Ok(cast(array, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// The OID of the table or materialized view `name` (`public.` and double quotes allowed).
fn relation_oid(tables: &TableRegistry, views: &ViewRegistry, name: &str) -> Option<u32> {
    // The catalog relations clients name as `classoid` (PostgreSQL's own OIDs).
    if let Some(catalog) = name.strip_prefix("pg_catalog.").or(Some(name)) {
        let oid = match catalog {
            "pg_class" => Some(1259),
            "pg_type" => Some(1247),
            "pg_proc" => Some(1255),
            "pg_attribute" => Some(1249),
            "pg_namespace" => Some(2615),
            "pg_constraint" => Some(2606),
            "pg_index" => Some(2610),
            "pg_description" => Some(2609),
            "pg_database" => Some(1262),
            "pg_authid" | "pg_roles" => Some(1260),
            _ => None,
        };
        if oid.is_some() && (name.starts_with("pg_catalog.") || tables.get(name).is_none()) {
            return oid;
        }
    }
    let bare = name.strip_prefix("public.").unwrap_or(name);
    let bare = match bare.strip_prefix('"').and_then(|b| b.strip_suffix('"')) {
        Some(quoted) => quoted.to_string(),
        None => bare.to_ascii_lowercase(),
    };
    tables
        .get(&bare)
        .map(|t| t.def().oid())
        .or_else(|| views.get(&bare).map(|v| v.oid()))
}

/// `array_upper`/`array_lower` of `args` (an array, a dimension): `bound(length)` for dimension
/// 1 of a non-empty array, else NULL.
fn array_bound(args: &[ArrayRef], bound: fn(usize) -> Option<i64>) -> DfResult<ArrayRef> {
    use datafusion::arrow::array::Array;
    let dims = as_i32(&args[1])?;
    let lengths: Vec<Option<usize>> = match args[0].data_type() {
        DataType::List(_) => {
            let list = args[0].as_list::<i32>();
            (0..list.len())
                .map(|i| (!list.is_null(i)).then(|| list.value_length(i) as usize))
                .collect()
        }
        DataType::LargeList(_) => {
            let list = args[0].as_list::<i64>();
            (0..list.len())
                .map(|i| (!list.is_null(i)).then(|| list.value_length(i) as usize))
                .collect()
        }
        _ => vec![None; args[0].len()],
    };
    let out: Int64Array = lengths
        .into_iter()
        .zip(dims.iter())
        .map(|(len, dim)| match (len, dim) {
            (Some(len), Some(1)) if len > 0 => bound(len),
            _ => None,
        })
        .collect();
    Ok(Arc::new(out))
}

/// The OID of the type `name`: a type Sluice has, or one of PostgreSQL's pseudo-types, which
/// catalog queries name (`prorettype != 'trigger'::regtype`).
fn type_oid_by_name(name: &str) -> Option<u32> {
    if let Some(t) = type_by_name(name) {
        return Some(t.oid());
    }
    let bare = name.strip_prefix("pg_catalog.").unwrap_or(name);
    Some(match bare.to_ascii_lowercase().as_str() {
        "record" => 2249,
        "cstring" => 2275,
        "any" => 2276,
        "anyarray" => 2277,
        "void" => 2278,
        "trigger" => 2279,
        "internal" => 2281,
        "anyelement" => 2283,
        "event_trigger" => 3838,
        _ => return None,
    })
}

/// `quote_ident`: `name` as is when it needs no quotes, else in double quotes.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Every catalog function, bound to the live tables and views.
pub fn pg_functions(
    tables: Arc<TableRegistry>,
    views: Arc<ViewRegistry>,
    sql_functions: Arc<std::sync::RwLock<crate::sql::functions::SqlFunctions>>,
) -> Vec<ScalarUDF> {
    let s1 = Arc::clone(&sql_functions);
    let s2 = sql_functions;
    let version = format!(
        "PostgreSQL {SERVER_VERSION} (Sluice {}) on x86_64, compiled by rustc",
        env!("CARGO_PKG_VERSION")
    );
    let t1 = Arc::clone(&tables);
    let t2 = Arc::clone(&tables);
    let t3 = Arc::clone(&tables);
    let v3 = Arc::clone(&views);
    let v5 = Arc::clone(&views);
    let t4 = Arc::clone(&tables);
    let t5 = Arc::clone(&tables);
    #[allow(unused_mut)]
    let mut functions = vec![
        function("pg_table_is_visible", &[1], DataType::Boolean, all_true),
        function("pg_type_is_visible", &[1], DataType::Boolean, all_true),
        function("pg_function_is_visible", &[1], DataType::Boolean, all_true),
        function("has_table_privilege", &[2, 3], DataType::Boolean, all_true),
        function("has_schema_privilege", &[2, 3], DataType::Boolean, all_true),
        function(
            "has_database_privilege",
            &[2, 3],
            DataType::Boolean,
            all_true,
        ),
        function("pg_is_in_recovery", &[0], DataType::Boolean, |_, rows| {
            Ok(Arc::new(BooleanArray::from(vec![false; rows])))
        }),
        function(
            "pg_get_userbyid",
            &[1],
            DataType::Utf8,
            constant_text(DEFAULT_USER.into()),
        ),
        function(
            "pg_encoding_to_char",
            &[1],
            DataType::Utf8,
            constant_text("UTF8".into()),
        ),
        function(
            "current_database",
            &[0],
            DataType::Utf8,
            constant_text(DATABASE_NAME.into()),
        ),
        function(
            "current_catalog",
            &[0],
            DataType::Utf8,
            constant_text(DATABASE_NAME.into()),
        ),
        function(
            "current_schema",
            &[0],
            DataType::Utf8,
            constant_text("public".into()),
        ),
        function(
            "current_user",
            &[0],
            DataType::Utf8,
            constant_text(DEFAULT_USER.into()),
        ),
        function(
            "current_role",
            &[0],
            DataType::Utf8,
            constant_text(DEFAULT_USER.into()),
        ),
        function(
            "session_user",
            &[0],
            DataType::Utf8,
            constant_text(DEFAULT_USER.into()),
        ),
        function(
            "user",
            &[0],
            DataType::Utf8,
            constant_text(DEFAULT_USER.into()),
        ),
        function("version", &[0], DataType::Utf8, constant_text(version)),
        function(
            "current_schemas",
            &[1],
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            |_, rows| {
                let mut builder = ListBuilder::new(StringBuilder::new());
                for _ in 0..rows {
                    builder.values().append_value("pg_catalog");
                    builder.values().append_value("public");
                    builder.append(true);
                }
                Ok(Arc::new(builder.finish()))
            },
        ),
        function("pg_backend_pid", &[0], DataType::Int32, |_, rows| {
            Ok(Arc::new(Int32Array::from(vec![
                std::process::id() as i32;
                rows
            ])))
        }),
        function("obj_description", &[1, 2], DataType::Utf8, null_text),
        function("col_description", &[2], DataType::Utf8, null_text),
        function("shobj_description", &[2], DataType::Utf8, null_text),
        // A column's default as written, by table OID and column number (what psql's
        // correlated subquery over `pg_attrdef` becomes).
        function(
            "sluice_column_default",
            &[2],
            DataType::Utf8,
            move |args, _| {
                let tables = t5.all();
                let relids = as_u32(&args[0])?;
                let attnums = cast(&args[1], &DataType::Int64)?;
                let attnums = attnums.as_primitive::<Int64Type>();
                let out: StringArray = relids
                    .iter()
                    .zip(attnums.iter())
                    .map(|(relid, attnum)| {
                        let (relid, attnum) = (relid?, usize::try_from(attnum?).ok()?);
                        let table = tables.iter().find(|t| t.def().oid() == relid)?;
                        Some(table.def().default_sql(attnum.checked_sub(1)?)?.to_string())
                    })
                    .collect();
                Ok(Arc::new(out))
            },
        ),
        // `pg_attrdef.adbin` holds a default as written: its text is the expression.
        function("pg_get_expr", &[2, 3], DataType::Utf8, |args, _| {
            Ok(Arc::new(as_text(&args[0])?))
        }),
        function("pg_get_viewdef", &[1, 2], DataType::Utf8, move |args, _| {
            let all = v5.all();
            text_by_oid(&args[0], |oid| {
                all.iter()
                    .find(|v| v.oid() == oid)
                    .map(|v| super::pg_catalog::view_definition(&v.sql))
            })
        }),
        // `pg_proc` has no rows: psql's `\df` names these and never calls them.
        // A SQL function's types, as `\df` shows them; NULL for a built-in (DataFusion's
        // signatures are not PostgreSQL's).
        function(
            "pg_get_function_result",
            &[1],
            DataType::Utf8,
            move |a, _| {
                describe_sql_function(&s1, &a[0], |f| super::pg_types::format_type(f.returns()))
            },
        ),
        function(
            "pg_get_function_arguments",
            &[1],
            DataType::Utf8,
            move |a, _| {
                describe_sql_function(&s2, &a[0], |f| {
                    f.arguments()
                        .map(|(t, name)| match name {
                            Some(name) => format!("{name} {}", super::pg_types::format_type(t)),
                            None => super::pg_types::format_type(t),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            },
        ),
        function(
            "pg_get_function_identity_arguments",
            &[1],
            DataType::Utf8,
            null_text,
        ),
        function("pg_get_triggerdef", &[1, 2], DataType::Utf8, null_text),
        function(
            "pg_get_statisticsobjdef_columns",
            &[1],
            DataType::Utf8,
            null_text,
        ),
        function("format_type", &[2], DataType::Utf8, |args, _| {
            let oids = as_u32(&args[0])?;
            let mods = as_i32(&args[1])?;
            let out: StringArray = oids
                .iter()
                .zip(mods.iter())
                .map(|(oid, m)| {
                    oid.map(|oid| match oid {
                        // No type, as `0::regtype` prints it.
                        0 => "-".into(),
                        _ => format_type_oid(oid, m.unwrap_or(-1)).unwrap_or_else(|| "???".into()),
                    })
                })
                .collect();
            Ok(Arc::new(out))
        }),
        function("pg_size_pretty", &[1], DataType::Utf8, |args, _| {
            let sizes = cast(&args[0], &DataType::Int64)?;
            let out: StringArray = sizes
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map(size_pretty))
                .collect();
            Ok(Arc::new(out))
        }),
        function("pg_table_size", &[1], DataType::Int64, zero_size),
        function("pg_relation_size", &[1, 2], DataType::Int64, zero_size),
        function("pg_total_relation_size", &[1], DataType::Int64, zero_size),
        function("pg_indexes_size", &[1], DataType::Int64, zero_size),
        function(
            "pg_get_indexdef",
            &[1, 3],
            DataType::Utf8,
            move |args, _| {
                let all = t1.all();
                text_by_oid(&args[0], |oid| {
                    all.iter()
                        .find(|t| t.def().pkey_oid() == Some(oid))
                        .map(|t| primary_key_index_def(t.def()))
                })
            },
        ),
        function(
            "pg_get_constraintdef",
            &[1, 2],
            DataType::Utf8,
            move |args, _| {
                let all = t2.all();
                text_by_oid(&args[0], |oid| {
                    all.iter()
                        .find(|t| t.def().pkey_oid() == Some(oid))
                        .map(|t| {
                            format!("PRIMARY KEY ({})", t.def().primary_key_names().join(", "))
                        })
                })
            },
        ),
        function(REGCLASS_FUNCTION, &[1], DataType::UInt32, move |args, _| {
            let names = as_text(&args[0])?;
            let mut out = Vec::with_capacity(names.len());
            for name in names.iter() {
                out.push(match name {
                    None => None,
                    Some(name) => match relation_oid(&t3, &v3, name) {
                        Some(oid) => Some(oid),
                        None => {
                            return Err(Error::user(
                                sqlstate::UNDEFINED_TABLE,
                                format!("relation \"{name}\" does not exist"),
                            )
                            .into());
                        }
                    },
                });
            }
            Ok(Arc::new(UInt32Array::from(out)))
        }),
        function(REGTYPE_FUNCTION, &[1], DataType::UInt32, |args, _| {
            let names = as_text(&args[0])?;
            let mut out = Vec::with_capacity(names.len());
            for name in names.iter() {
                out.push(match name {
                    None => None,
                    Some(name) => match type_oid_by_name(name) {
                        Some(oid) => Some(oid),
                        None => {
                            return Err(Error::user(
                                sqlstate::UNDEFINED_OBJECT,
                                format!("type \"{name}\" does not exist"),
                            )
                            .into());
                        }
                    },
                });
            }
            Ok(Arc::new(UInt32Array::from(out)))
        }),
        // Like the casts, but NULL for a name that is no relation or type.
        function("to_regclass", &[1], DataType::UInt32, move |args, _| {
            let names = as_text(&args[0])?;
            let out: UInt32Array = names
                .iter()
                .map(|name| relation_oid(&t4, &views, name?))
                .collect();
            Ok(Arc::new(out))
        }),
        function("to_regtype", &[1], DataType::UInt32, |args, _| {
            let names = as_text(&args[0])?;
            let out: UInt32Array = names.iter().map(|name| type_oid_by_name(name?)).collect();
            Ok(Arc::new(out))
        }),
        // A one-dimensional array's bounds (`NULL` when empty, or for another dimension).
        // Int8, not PostgreSQL's int4: DataFusion's generate_series takes only int8 bounds.
        function("array_upper", &[2], DataType::Int64, |args, _| {
            array_bound(args, |len| i64::try_from(len).ok())
        }),
        function("array_lower", &[2], DataType::Int64, |args, _| {
            array_bound(args, |_| Some(1))
        }),
        // The type of its argument, by PostgreSQL's name for it.
        function("pg_typeof", &[1], DataType::Utf8, |args, rows| {
            let oid = super::pg_types::pg_type(args[0].data_type()).oid();
            let name = format_type_oid(oid, -1).unwrap_or_else(|| "unknown".into());
            Ok(Arc::new(StringArray::from(vec![name; rows])))
        }),
        function("quote_ident", &[1], DataType::Utf8, |args, _| {
            let names = as_text(&args[0])?;
            let out: StringArray = names.iter().map(|n| n.map(quote_ident)).collect();
            Ok(Arc::new(out))
        }),
    ];
    // Debug builds only: lets tests make an operator panic on a chosen row.
    #[cfg(debug_assertions)]
    functions.push(function(
        "sluice_test_panic",
        &[1],
        DataType::Int64,
        |args, rows| {
            let text = as_text(&args[0])?;
            if let Some(message) = text.iter().flatten().next() {
                panic!("sluice_test_panic: {message}");
            }
            Ok(Arc::new(datafusion::arrow::array::Int64Array::new_null(rows)) as ArrayRef)
        },
    ));
    functions
}

/// The function `'name'::regclass` is rewritten to (see `sql::pg_compat`).
pub const REGCLASS_FUNCTION: &str = "sluice_regclass";

/// The function `'name'::regtype` is rewritten to.
pub const REGTYPE_FUNCTION: &str = "sluice_regtype";

fn zero_size(_: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    Ok(Arc::new(Int64Array::from(vec![0; rows])))
}

/// `pg_size_pretty`: bytes below 10 kB, then kB, MB, GB, TB, rounding half up.
fn size_pretty(bytes: i64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let mut size = bytes;
    let mut unit = 0;
    while size.abs() >= 10 * 1024 && unit + 1 < units.len() {
        size = (size + if size >= 0 { 512 } else { -512 }) / 1024;
        unit += 1;
    }
    format!("{size} {}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_postgres_does() {
        assert_eq!(size_pretty(0), "0 bytes");
        assert_eq!(size_pretty(8192), "8192 bytes");
        assert_eq!(size_pretty(20 * 1024), "20 kB");
    }
}

/// `pg_get_keywords()`: the key words of Sluice's SQL parser, as PostgreSQL's function lists its
/// own (DBeaver and other editors read it to highlight and to quote). A word the parser will not
/// take as a table alias is `R` (reserved), any other `U` (unreserved); it can be a bare column
/// label (`SELECT 1 word`) unless the parser reserves it for column aliases.
#[derive(Debug)]
pub struct KeywordsFunction;

/// The name it is called by.
pub const KEYWORDS_FUNCTION: &str = "pg_get_keywords";

impl datafusion::catalog::TableFunctionImpl for KeywordsFunction {
    fn call_with_args(
        &self,
        args: datafusion::catalog::TableFunctionArgs,
    ) -> DfResult<Arc<dyn datafusion::catalog::TableProvider>> {
        use datafusion::sql::sqlparser::keywords::{
            ALL_KEYWORDS, ALL_KEYWORDS_INDEX, RESERVED_FOR_COLUMN_ALIAS, RESERVED_FOR_TABLE_ALIAS,
        };
        if !args.exprs().is_empty() {
            return Err(Error::user(
                sqlstate::UNDEFINED_FUNCTION,
                "function pg_get_keywords takes no arguments",
            )
            .into());
        }
        let mut words = StringBuilder::new();
        let mut codes = StringBuilder::new();
        let mut bare = datafusion::arrow::array::BooleanBuilder::new();
        let mut descriptions = StringBuilder::new();
        let mut bare_descriptions = StringBuilder::new();
        for (word, keyword) in ALL_KEYWORDS.iter().zip(ALL_KEYWORDS_INDEX) {
            let reserved = RESERVED_FOR_TABLE_ALIAS.contains(keyword);
            let label = !RESERVED_FOR_COLUMN_ALIAS.contains(keyword);
            words.append_value(word.to_lowercase());
            codes.append_value(if reserved { "R" } else { "U" });
            bare.append_value(label);
            descriptions.append_value(if reserved { "reserved" } else { "unreserved" });
            bare_descriptions.append_value(if label {
                "can be bare label"
            } else {
                "requires AS"
            });
        }
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("catcode", DataType::Utf8, false),
            Field::new("barelabel", DataType::Boolean, false),
            Field::new("catdesc", DataType::Utf8, false),
            Field::new("baredesc", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(words.finish()),
            Arc::new(codes.finish()),
            Arc::new(bare.finish()),
            Arc::new(descriptions.finish()),
            Arc::new(bare_descriptions.finish()),
        ];
        let batch = datafusion::arrow::array::RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Arc::new(datafusion::datasource::MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?))
    }
}
