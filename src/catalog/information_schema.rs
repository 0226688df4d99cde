//! [`InformationSchema`]: the SQL-standard `information_schema` views as PostgreSQL fills them
//! (`data_type` is `bigint`, `text`, `numeric` …, not Arrow's names), for drivers and BI tools.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;

use super::pg_catalog::RELATIONS as PG_CATALOG_RELATIONS;
use pgwire::api::Type;

use super::pg_types::format_type_oid;
use super::registry::TableRegistry;
use super::relation::{INT4, Relation, TEXT, null, s};
use crate::config::{DATABASE_NAME, DEFAULT_USER};

/// The relations of `information_schema`.
const RELATIONS: &[&str] = &[
    "columns",
    "key_column_usage",
    "schemata",
    "table_constraints",
    "tables",
    "views",
];

/// The `information_schema` schema.
#[derive(Debug)]
pub struct InformationSchema {
    /// The live tables it describes.
    tables: Arc<TableRegistry>,
}

impl InformationSchema {
    /// The schema over a registry.
    pub fn new(tables: Arc<TableRegistry>) -> Self {
        Self { tables }
    }
}

fn int(v: Option<i32>) -> ScalarValue {
    ScalarValue::Int32(v)
}

/// `numeric_precision`, `numeric_scale` and `datetime_precision` of a column type, as
/// PostgreSQL reports them.
fn precision(dt: &DataType) -> (Option<i32>, Option<i32>, Option<i32>) {
    match dt {
        DataType::Int16 => (Some(16), Some(0), None),
        DataType::Int32 => (Some(32), Some(0), None),
        DataType::Int64 => (Some(64), Some(0), None),
        DataType::Float32 => (Some(24), None, None),
        DataType::Float64 => (Some(53), None, None),
        DataType::Decimal128(p, sc) | DataType::Decimal256(p, sc) => {
            (Some(i32::from(*p)), Some(i32::from(*sc)), None)
        }
        DataType::Timestamp(_, _) | DataType::Time64(_) | DataType::Time32(_) => {
            (None, None, Some(6))
        }
        DataType::Date32 => (None, None, Some(0)),
        _ => (None, None, None),
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        RELATIONS.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let tables = self.tables.all();
        let relation = match name {
            "schemata" => {
                let mut r = Relation::new(&[
                    ("catalog_name", TEXT),
                    ("schema_name", TEXT),
                    ("schema_owner", TEXT),
                ]);
                for schema in ["information_schema", "pg_catalog", "public"] {
                    r.row(vec![s(DATABASE_NAME), s(schema), s(DEFAULT_USER)]);
                }
                r
            }
            "tables" => {
                let mut r = Relation::new(&[
                    ("table_catalog", TEXT),
                    ("table_schema", TEXT),
                    ("table_name", TEXT),
                    ("table_type", TEXT),
                    ("is_insertable_into", TEXT),
                ]);
                for t in &tables {
                    r.row(vec![
                        s(DATABASE_NAME),
                        s("public"),
                        s(&t.def().name),
                        s("BASE TABLE"),
                        s("YES"),
                    ]);
                }
                for relation in PG_CATALOG_RELATIONS {
                    r.row(vec![
                        s(DATABASE_NAME),
                        s("pg_catalog"),
                        s(relation),
                        s("VIEW"),
                        s("NO"),
                    ]);
                }
                for relation in RELATIONS {
                    r.row(vec![
                        s(DATABASE_NAME),
                        s("information_schema"),
                        s(relation),
                        s("VIEW"),
                        s("NO"),
                    ]);
                }
                r
            }
            "columns" => {
                let mut r = Relation::new(&[
                    ("table_catalog", TEXT),
                    ("table_schema", TEXT),
                    ("table_name", TEXT),
                    ("column_name", TEXT),
                    ("ordinal_position", INT4),
                    ("column_default", TEXT),
                    ("is_nullable", TEXT),
                    ("data_type", TEXT),
                    ("character_maximum_length", INT4),
                    ("numeric_precision", INT4),
                    ("numeric_scale", INT4),
                    ("datetime_precision", INT4),
                    ("udt_name", TEXT),
                ]);
                for t in &tables {
                    let def = t.def();
                    for (i, f) in def.schema.fields().iter().enumerate() {
                        let (type_oid, typmod) = def.column_pg_type(i);
                        let ty = Type::from_oid(type_oid).unwrap_or(Type::TEXT);
                        let (p, sc, dtp) = precision(f.data_type());
                        let max_length = (matches!(ty, Type::VARCHAR | Type::BPCHAR)
                            && typmod >= 4)
                            .then_some(typmod - 4);
                        r.row(vec![
                            s(DATABASE_NAME),
                            s("public"),
                            s(&def.name),
                            s(f.name()),
                            int(Some(i as i32 + 1)),
                            def.default_sql(i).map_or_else(null, s),
                            s(if f.is_nullable() { "YES" } else { "NO" }),
                            s(&format_type_oid(ty.oid(), -1)
                                .unwrap_or_else(|| ty.name().to_string())),
                            int(max_length),
                            int(p),
                            int(sc),
                            int(dtp),
                            s(ty.name()),
                        ]);
                    }
                }
                r
            }
            "table_constraints" => {
                let mut r = Relation::new(&[
                    ("constraint_catalog", TEXT),
                    ("constraint_schema", TEXT),
                    ("constraint_name", TEXT),
                    ("table_schema", TEXT),
                    ("table_name", TEXT),
                    ("constraint_type", TEXT),
                ]);
                for t in &tables {
                    let def = t.def();
                    if def.pkey_oid().is_some() {
                        let mut row = primary_key_constraint(def);
                        row.push(s("PRIMARY KEY"));
                        r.row(row);
                    }
                }
                r
            }
            "key_column_usage" => {
                let mut r = Relation::new(&[
                    ("constraint_catalog", TEXT),
                    ("constraint_schema", TEXT),
                    ("constraint_name", TEXT),
                    ("table_schema", TEXT),
                    ("table_name", TEXT),
                    ("column_name", TEXT),
                    ("ordinal_position", INT4),
                ]);
                for t in &tables {
                    let def = t.def();
                    for (n, column) in def.primary_key_names().iter().enumerate() {
                        let mut row = primary_key_constraint(def);
                        row.extend([s(column), int(Some(n as i32 + 1))]);
                        r.row(row);
                    }
                }
                r
            }
            "views" => Relation::new(&[
                ("table_catalog", TEXT),
                ("table_schema", TEXT),
                ("table_name", TEXT),
                ("view_definition", TEXT),
            ]),
            _ => return Ok(None),
        };
        Ok(Some(relation.into_table()?))
    }

    fn table_exist(&self, name: &str) -> bool {
        RELATIONS.contains(&name)
    }
}

/// The columns that name a table's primary key constraint: constraint catalog, schema and name,
/// table schema and name.
fn primary_key_constraint(def: &crate::catalog::TableDef) -> Vec<ScalarValue> {
    vec![
        s(DATABASE_NAME),
        s("public"),
        s(&format!("{}_pkey", def.name)),
        s("public"),
        s(&def.name),
    ]
}
