//! [`PgCatalogSchema`]: the `pg_catalog` relations that psql (`\d`, `\dt`, `\l`), drivers and BI
//! tools query, computed from the live tables each time a query plans. Relations we have nothing
//! to put in (triggers, policies, publications …) exist with PostgreSQL's columns and no rows, so
//! that the clients' queries plan and say "none".

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;

use pgwire::api::Type;

use super::pg_types::{CATALOG_TYPES, array_element, array_of, type_len};
use super::registry::TableRegistry;
use super::relation::{
    BOOL, FLOAT4, INT2, INT4, INT8, OID, Relation, TEXT, b, i2, i4, null, o, s, text_array,
};
use super::views::ViewRegistry;
use super::{
    DATABASE_OID, INFORMATION_SCHEMA_NAMESPACE_OID, PG_CATALOG_NAMESPACE_OID, PUBLIC_NAMESPACE_OID,
};
use crate::config::{DATABASE_NAME, DEFAULT_USER};

/// OID of the one role, as PostgreSQL's bootstrap superuser.
pub const USER_OID: u32 = 10;

/// The relations of `pg_catalog`, by name.
pub const RELATIONS: &[&str] = &[
    "pg_am",
    "pg_attrdef",
    "pg_attribute",
    "pg_auth_members",
    "pg_class",
    "pg_collation",
    "pg_constraint",
    "pg_database",
    "pg_depend",
    "pg_description",
    "pg_enum",
    "pg_extension",
    "pg_foreign_table",
    "pg_index",
    "pg_indexes",
    "pg_inherits",
    "pg_locks",
    "pg_matviews",
    "pg_namespace",
    "pg_opclass",
    "pg_partitioned_table",
    "pg_policy",
    "pg_proc",
    "pg_publication",
    "pg_publication_namespace",
    "pg_publication_rel",
    "pg_range",
    "pg_rewrite",
    "pg_roles",
    "pg_sequence",
    "pg_settings",
    "pg_shdescription",
    "pg_stat_activity",
    "pg_stat_user_tables",
    "pg_statistic_ext",
    "pg_tables",
    "pg_tablespace",
    "pg_trigger",
    "pg_type",
    "pg_user",
    "pg_views",
    "sluice_checkpoints",
    "sluice_logs",
    "sluice_operators",
    "sluice_progress",
    "sluice_sinks",
    "sluice_source_partitions",
    "sluice_sources",
    "sluice_state",
    "sluice_subscriptions",
    "sluice_views",
    "sluice_watermarks",
];

/// Relations that exist for clients' queries but never have rows: Sluice has no collations, comments, inheritance, triggers, policies, extended statistics,
/// publications, rules, foreign tables, partitions, sequences, extensions, enums or ranges.
pub const ALWAYS_EMPTY: &[&str] = &[
    "pg_auth_members",
    "pg_collation",
    "pg_depend",
    "pg_description",
    "pg_enum",
    "pg_extension",
    "pg_foreign_table",
    "pg_inherits",
    "pg_locks",
    "pg_opclass",
    "pg_partitioned_table",
    "pg_policy",
    "pg_publication",
    "pg_publication_namespace",
    "pg_publication_rel",
    "pg_range",
    "pg_rewrite",
    "pg_sequence",
    "pg_shdescription",
    "pg_statistic_ext",
    "pg_trigger",
];

/// The `pg_catalog` schema.
#[derive(Debug)]
pub struct PgCatalogSchema {
    /// The live tables the relations describe.
    tables: Arc<TableRegistry>,
    /// The materialized views (relkind `m`).
    views: Arc<ViewRegistry>,
    /// The functions a query can call (`pg_proc`).
    functions: Arc<Vec<CatalogFunction>>,
    /// The SQL functions made by `CREATE FUNCTION` (`pg_proc`, in `public`).
    sql_functions: Arc<std::sync::RwLock<crate::sql::functions::SqlFunctions>>,
}

/// A function as `pg_proc` lists it: its name and kind (`f` function, `a` aggregate, `w`
/// window). DataFusion's signatures are not PostgreSQL's: argument types are not listed (NULL)
/// and the result is `anyelement`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CatalogFunction {
    /// The name a query calls it by.
    pub name: String,
    /// `f`, `a` or `w`.
    pub kind: &'static str,
}

/// The OID of the first function of `pg_proc` (between `information_schema`'s OID and the
/// first user object's).
const FIRST_FUNCTION_OID: u32 = 14000;

impl PgCatalogSchema {
    /// The schema over the registries, listing `functions` in `pg_proc`.
    pub fn new(
        tables: Arc<TableRegistry>,
        views: Arc<ViewRegistry>,
        mut functions: Vec<CatalogFunction>,
        sql_functions: Arc<std::sync::RwLock<crate::sql::functions::SqlFunctions>>,
    ) -> Self {
        functions.sort();
        functions.dedup_by(|a, b| a.name == b.name);
        functions.truncate((super::FIRST_USER_OID - FIRST_FUNCTION_OID) as usize);
        Self {
            tables,
            views,
            functions: Arc::new(functions),
            sql_functions,
        }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        RELATIONS.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let sql_functions = crate::sync::read(&self.sql_functions, "the SQL functions");
        let Some(relation) = build(
            name,
            &self.tables,
            &self.views,
            &self.functions,
            &sql_functions,
        ) else {
            return Ok(None);
        };
        Ok(Some(relation.into_table()?))
    }

    fn table_exist(&self, name: &str) -> bool {
        RELATIONS.contains(&name)
    }
}

/// A `pg_class` row: a relation of kind `kind` (`r` table, `i` index, `m` materialized view).
fn class_row(
    oid: u32,
    name: &str,
    kind: &str,
    natts: usize,
    am: u32,
    tuples: f32,
    has_index: bool,
) -> Vec<ScalarValue> {
    vec![
        o(oid),
        s(name),
        o(PUBLIC_NAMESPACE_OID),
        o(0),
        o(0),
        o(USER_OID),
        o(am),
        o(oid),
        o(0),
        i4(0),
        ScalarValue::Float32(Some(tuples)),
        i4(0),
        o(0),
        b(has_index),
        b(false),
        s("p"),
        s(kind),
        i2(natts as i16),
        i2(0),
        b(false),
        b(false),
        b(false),
        b(false),
        b(false),
        b(true),
        s("d"),
        b(false),
        o(0),
        ScalarValue::Int64(Some(0)),
        ScalarValue::Int64(Some(0)),
        null(),
        null(),
        null(),
    ]
}

/// A `pg_attribute` row: column `num` (from 1) of relation `rel`.
/// `int2[]` (column numbers).
fn oid_array_i2() -> DataType {
    DataType::List(Arc::new(
        datafusion::arrow::datatypes::Field::new_list_field(DataType::Int16, true),
    ))
}

/// `oidvector` and `oid[]`: a list of OIDs.
fn oid_array() -> DataType {
    DataType::List(Arc::new(
        datafusion::arrow::datatypes::Field::new_list_field(DataType::UInt32, true),
    ))
}

/// How PostgreSQL stores a type's values (`typstorage`, `attstorage`): fixed-length in place,
/// `numeric` compressible in line, other variable-length types extended.
fn storage(ty: &Type) -> &'static str {
    if type_len(ty) > 0 {
        "p"
    } else if *ty == Type::NUMERIC {
        "m"
    } else {
        "x"
    }
}

fn attribute_row(
    rel: u32,
    name: &str,
    num: usize,
    type_oid: u32,
    typmod: i32,
    not_null: bool,
    has_default: bool,
) -> Vec<ScalarValue> {
    let ty = Type::from_oid(type_oid).unwrap_or(Type::TEXT);
    let collation = if matches!(ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR) {
        100
    } else {
        0
    };
    vec![
        o(rel),
        s(name),
        o(type_oid),
        i4(-1),
        i2(type_len(&ty)),
        i2(num as i16),
        i4(0),
        i4(-1),
        i4(typmod),
        b(false),
        s("i"),
        s(storage(&ty)),
        s(""),
        b(not_null),
        b(has_default),
        b(false),
        s(""),
        s(""),
        b(false),
        b(true),
        i4(0),
        o(collation),
        null(),
        null(),
        null(),
    ]
}

/// Builds one relation, or `None` when `name` is not one of ours.
fn build(
    name: &str,
    tables: &TableRegistry,
    registry: &ViewRegistry,
    functions: &[CatalogFunction],
    sql_functions: &crate::sql::functions::SqlFunctions,
) -> Option<Relation> {
    let tables = tables.all();
    let views = registry.all();
    let rel = match name {
        "pg_namespace" => {
            let mut r = Relation::new(&[
                ("oid", OID),
                ("nspname", TEXT),
                ("nspowner", OID),
                ("nspacl", text_array()),
            ]);
            for (oid, name) in [
                (PG_CATALOG_NAMESPACE_OID, "pg_catalog"),
                (PUBLIC_NAMESPACE_OID, "public"),
                (INFORMATION_SCHEMA_NAMESPACE_OID, "information_schema"),
            ] {
                r.row(vec![o(oid), s(name), o(USER_OID), null()]);
            }
            r
        }
        "pg_class" => {
            let mut r = Relation::new(&[
                ("oid", OID),
                ("relname", TEXT),
                ("relnamespace", OID),
                ("reltype", OID),
                ("reloftype", OID),
                ("relowner", OID),
                ("relam", OID),
                ("relfilenode", OID),
                ("reltablespace", OID),
                ("relpages", INT4),
                ("reltuples", FLOAT4),
                ("relallvisible", INT4),
                ("reltoastrelid", OID),
                ("relhasindex", BOOL),
                ("relisshared", BOOL),
                ("relpersistence", TEXT),
                ("relkind", TEXT),
                ("relnatts", INT2),
                ("relchecks", INT2),
                ("relhasrules", BOOL),
                ("relhastriggers", BOOL),
                ("relhassubclass", BOOL),
                ("relrowsecurity", BOOL),
                ("relforcerowsecurity", BOOL),
                ("relispopulated", BOOL),
                ("relreplident", TEXT),
                ("relispartition", BOOL),
                ("relrewrite", OID),
                ("relfrozenxid", INT8),
                ("relminmxid", INT8),
                ("relacl", text_array()),
                ("reloptions", text_array()),
                ("relpartbound", TEXT),
            ]);
            for t in &tables {
                let def = t.def();
                let tuples = t.num_rows() as f32;
                let natts = def.schema.fields().len();
                let has_index = def.pkey_oid().is_some();
                r.row(class_row(
                    def.oid(),
                    &def.name,
                    "r",
                    natts,
                    2,
                    tuples,
                    has_index,
                ));
                if let Some(pkey) = def.pkey_oid() {
                    let name = format!("{}_pkey", def.name);
                    let natts = def.primary_key.len();
                    r.row(class_row(pkey, &name, "i", natts, 403, tuples, false));
                }
            }
            for v in &views {
                let natts = v.schema.fields().len();
                r.row(class_row(v.oid(), &v.name, "m", natts, 2, -1.0, false));
            }
            r
        }
        "pg_attribute" => {
            let mut r = Relation::new(&[
                ("attrelid", OID),
                ("attname", TEXT),
                ("atttypid", OID),
                ("attstattarget", INT4),
                ("attlen", INT2),
                ("attnum", INT2),
                ("attndims", INT4),
                ("attcacheoff", INT4),
                ("atttypmod", INT4),
                ("attbyval", BOOL),
                ("attalign", TEXT),
                ("attstorage", TEXT),
                ("attcompression", TEXT),
                ("attnotnull", BOOL),
                ("atthasdef", BOOL),
                ("atthasmissing", BOOL),
                ("attidentity", TEXT),
                ("attgenerated", TEXT),
                ("attisdropped", BOOL),
                ("attislocal", BOOL),
                ("attinhcount", INT4),
                ("attcollation", OID),
                ("attacl", text_array()),
                ("attoptions", text_array()),
                ("attfdwoptions", text_array()),
            ]);
            for t in &tables {
                let def = t.def();
                let attribute = |rel: u32, num: usize, column: usize| {
                    let field = def.schema.field(column);
                    let (type_oid, typmod) = def.column_pg_type(column);
                    attribute_row(
                        rel,
                        field.name(),
                        num,
                        type_oid,
                        typmod,
                        !field.is_nullable(),
                        rel == def.oid() && def.default_sql(column).is_some(),
                    )
                };
                for i in 0..def.schema.fields().len() {
                    r.row(attribute(def.oid(), i + 1, i));
                }
                if let Some(pkey) = def.pkey_oid() {
                    for (n, &i) in def.primary_key.iter().enumerate() {
                        r.row(attribute(pkey, n + 1, i));
                    }
                }
            }
            for v in &views {
                for (i, field) in v.schema.fields().iter().enumerate() {
                    let dt = field.data_type();
                    r.row(attribute_row(
                        v.oid(),
                        field.name(),
                        i + 1,
                        super::pg_types::pg_type(dt).oid(),
                        super::pg_types::type_modifier(dt),
                        // PostgreSQL never marks a materialized view's column NOT NULL.
                        false,
                        false,
                    ));
                }
            }
            r
        }
        "sluice_checkpoints" => {
            // The most recent checkpoints of view state: when, how long, how big.
            let mut r = Relation::new(&[
                ("kind", TEXT),
                ("epoch", INT8),
                (
                    "completed_at",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                ),
                ("duration_ms", INT8),
                ("bytes_written", INT8),
                ("total_bytes", INT8),
                ("views_written", INT8),
                ("views_reused", INT8),
            ]);
            let int = |v: u64| ScalarValue::Int64(Some(v as i64));
            for c in registry.checkpoints() {
                r.row(vec![
                    s(c.kind),
                    int(c.epoch),
                    ScalarValue::TimestampMillisecond(Some(c.completed_at_ms as i64), None),
                    int(c.duration_ms),
                    int(c.bytes_written),
                    int(c.total_bytes),
                    int(c.views_written as u64),
                    int(c.views_reused as u64),
                ]);
            }
            r
        }
        "sluice_watermarks" => {
            // Tables with a WATERMARK: where event time stands, and the late rows dropped.
            let mut r = Relation::new(&[
                ("table_name", TEXT),
                ("watermark", DataType::Timestamp(TimeUnit::Nanosecond, None)),
                ("late_rows", INT8),
            ]);
            for t in &tables {
                if t.def().watermark.is_none() {
                    continue;
                }
                let time = t.event_time();
                r.row(vec![
                    s(&t.def().name),
                    ScalarValue::TimestampNanosecond(time.watermark, None),
                    ScalarValue::Int64(Some(time.late_rows as i64)),
                ]);
            }
            r
        }
        "sluice_sources" => {
            // Sources and connector tables: what their connector did so far.
            let mut r = Relation::new(&[
                ("source_name", TEXT),
                ("connector", TEXT),
                ("is_table", BOOL),
                ("status", TEXT),
                ("rows", INT8),
                ("bad_records", INT8),
                ("late_rows", INT8),
                ("watermark", DataType::Timestamp(TimeUnit::Nanosecond, None)),
                ("position", TEXT),
                ("error", TEXT),
            ]);
            for t in &tables {
                let Some(spec) = &t.def().connector else {
                    continue;
                };
                let stats = t.source_stats();
                let status = stats.as_ref().map(|s| s.status()).unwrap_or_default();
                let (status, error) = match status {
                    crate::connector::source::SourceStatus::Running => ("running", None),
                    crate::connector::source::SourceStatus::Stalled(why) => ("stalled", Some(why)),
                    crate::connector::source::SourceStatus::Finished => ("finished", None),
                    crate::connector::source::SourceStatus::Failed(e) => ("failed", Some(e)),
                };
                let count = |f: fn(&crate::connector::source::SourceStats) -> u64| {
                    ScalarValue::Int64(Some(stats.as_deref().map_or(0, f) as i64))
                };
                let time = t.event_time();
                let position = t.last_source_position().ok().and_then(|(p, _)| p);
                r.row(vec![
                    s(&t.def().name),
                    s(spec.connector()),
                    b(!t.def().source),
                    s(status),
                    count(|s| s.rows.load(std::sync::atomic::Ordering::Relaxed)),
                    count(|s| s.bad_records.load(std::sync::atomic::Ordering::Relaxed)),
                    ScalarValue::Int64(Some(time.late_rows as i64)),
                    ScalarValue::TimestampNanosecond(time.watermark, None),
                    ScalarValue::Utf8(position),
                    ScalarValue::Utf8(error),
                ]);
            }
            r
        }
        "sluice_sinks" => {
            // Running sinks: what they delivered, what failed, and why one stopped.
            let mut r = Relation::new(&[
                ("sink_name", TEXT),
                ("view_name", TEXT),
                ("connector", TEXT),
                ("target", TEXT),
                ("exactly_once", BOOL),
                ("status", TEXT),
                ("records", INT8),
                ("failed_records", INT8),
                ("epoch", INT8),
                ("lag_seconds", DataType::Float64),
                (
                    "blocked_since",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                ),
                ("error", TEXT),
            ]);
            let newest = registry.published().epoch;
            let int = |v: u64| ScalarValue::Int64(Some(i64::try_from(v).unwrap_or(i64::MAX)));
            for (name, sink) in registry.sinks() {
                let error = sink.stats.error();
                let blocked = sink.stats.blocked_since_ms();
                let load = |a: &std::sync::atomic::AtomicU64| {
                    int(a.load(std::sync::atomic::Ordering::Relaxed))
                };
                r.row(vec![
                    s(&name),
                    s(&sink.view),
                    s(sink.connector),
                    s(&sink.target),
                    b(sink.exactly_once),
                    // A sink with no room for its view's changes holds the view back.
                    s(match (&error, blocked) {
                        (Some(_), _) => "failed",
                        (None, Some(_)) => "backpressured",
                        (None, None) => "running",
                    }),
                    load(&sink.stats.records),
                    load(&sink.stats.failed_records),
                    load(&sink.stats.epoch),
                    ScalarValue::Float64(Some(sink.stats.lag_ms(newest) as f64 / 1e3)),
                    ScalarValue::TimestampMillisecond(blocked.map(|ms| ms as i64), None),
                    ScalarValue::Utf8(error),
                ]);
            }
            r
        }
        "sluice_source_partitions" => {
            // Each partition of a source: where the source reads, the broker's end, the lag.
            let mut r = Relation::new(&[
                ("source_name", TEXT),
                ("partition", INT4),
                ("position", INT8),
                ("end_offset", INT8),
                ("lag", INT8),
                ("state", TEXT),
                ("watermark", DataType::Timestamp(TimeUnit::Nanosecond, None)),
                ("skipped_offsets", INT8),
            ]);
            for t in &tables {
                let Some(stats) = t.source_stats() else {
                    continue;
                };
                for split in stats.splits() {
                    let lag = split
                        .end
                        .zip(split.position)
                        .map(|(end, position)| (end - position).max(0));
                    r.row(vec![
                        s(&t.def().name),
                        ScalarValue::Int32(i32::try_from(split.split).ok()),
                        ScalarValue::Int64(split.position),
                        ScalarValue::Int64(split.end),
                        ScalarValue::Int64(lag),
                        s(split.state.name()),
                        ScalarValue::TimestampNanosecond(split.watermark, None),
                        ScalarValue::Int64(Some(i64::try_from(split.skipped).unwrap_or(i64::MAX))),
                    ]);
                }
            }
            r
        }
        "sluice_subscriptions" => {
            // Live SUBSCRIBEs and how far behind their clients are.
            let published = registry.published();
            let mut r = Relation::new(&[
                ("view_name", TEXT),
                ("start_epoch", INT8),
                ("current_epoch", INT8),
                ("progress", BOOL),
                ("queued_epochs", INT8),
                ("queue_capacity", INT8),
            ]);
            for sub in &published.subscriptions {
                r.row(vec![
                    ScalarValue::Utf8(sub.view.clone()),
                    ScalarValue::Int64(Some(sub.start_epoch as i64)),
                    ScalarValue::Int64(Some(published.epoch as i64)),
                    b(sub.progress),
                    ScalarValue::Int64(Some(sub.queued as i64)),
                    ScalarValue::Int64(Some(sub.capacity as i64)),
                ]);
            }
            r
        }
        "sluice_state" => {
            // What each table and view keeps in memory: a table's rows; a view's rows, and
            // each keyed operator's state per partition.
            let published = registry.published();
            let mut r = Relation::new(&[
                ("relation_name", TEXT),
                ("relation_kind", TEXT),
                ("operator_id", INT4),
                ("operator", TEXT),
                ("partition", INT4),
                ("rows", INT8),
                ("bytes", INT8),
            ]);
            let int = |v: u64| ScalarValue::Int64(Some(i64::try_from(v).unwrap_or(i64::MAX)));
            for t in &tables {
                let size = t.state_size();
                let held = if !t.keeps_rows() {
                    "Table: rows in the log only"
                } else if t.def().primary_key.is_empty() {
                    "Table: rows"
                } else {
                    "Table: rows by primary key"
                };
                r.row(vec![
                    s(&t.def().name),
                    s(if t.def().source { "source" } else { "table" }),
                    ScalarValue::Int32(Some(0)),
                    s(held),
                    ScalarValue::Int32(None),
                    int(size.rows),
                    int(size.bytes),
                ]);
            }
            for v in &views {
                let Some(state) = published.state.get(&v.id) else {
                    continue;
                };
                for op in state {
                    r.row(vec![
                        s(&v.name),
                        s("materialized view"),
                        ScalarValue::Int32(Some(op.operator_id as i32)),
                        s(&op.operator),
                        ScalarValue::Int32(op.partition.map(|p| p as i32)),
                        int(op.size.rows),
                        int(op.size.bytes),
                    ]);
                }
            }
            r
        }
        "sluice_logs" => {
            // Each table's and source's durable log: what it holds on disk. A source's log
            // loses the records below what every view and checkpoint still needs.
            let mut r = Relation::new(&[
                ("relation_name", TEXT),
                ("relation_kind", TEXT),
                ("start_position", INT8),
                ("end_position", INT8),
                ("segments", INT8),
                ("bytes", INT8),
            ]);
            let int = |v: u64| ScalarValue::Int64(Some(i64::try_from(v).unwrap_or(i64::MAX)));
            for t in &tables {
                let size = t.log().size();
                r.row(vec![
                    s(&t.def().name),
                    s(if t.def().source { "source" } else { "table" }),
                    int(size.start),
                    int(size.end),
                    int(size.segments as u64),
                    int(size.bytes),
                ]);
            }
            r
        }
        "sluice_views" => {
            // Materialized views: how they emit, what they read, and whether they run.
            let published = registry.published();
            let mut r = Relation::new(&[
                ("view_name", TEXT),
                ("emit_on_window_close", BOOL),
                ("depends_on", TEXT),
                ("status", TEXT),
                ("error", TEXT),
                ("epoch", INT8),
                ("state_rows", INT8),
                ("state_bytes", INT8),
                ("lag_seconds", DataType::Float64),
            ]);
            let backfilling: std::collections::HashSet<String> =
                registry.backfills().into_iter().map(|b| b.view).collect();
            let now = crate::state::now_ms();
            // How old the input the published epoch reflects is.
            let lag = now.saturating_sub(registry.metrics().epoch_cut_at_ms()) as f64 / 1e3;
            // Views a sink holds back, and since when (the earliest of their sinks).
            let mut held: std::collections::HashMap<String, u64> = Default::default();
            for (_, sink) in registry.sinks() {
                if let Some(since) = sink.stats.blocked_since_ms() {
                    let at = held.entry(sink.view.clone()).or_insert(since);
                    *at = (*at).min(since);
                }
            }
            for v in &views {
                // Its rows and its operators' state, as `sluice_state` details them.
                let state = published.state.get(&v.id);
                let total = |f: fn(&crate::operator::StateSize) -> u64| {
                    ScalarValue::Int64(state.map(|ops| {
                        i64::try_from(ops.iter().map(|op| f(&op.size)).sum::<u64>())
                            .unwrap_or(i64::MAX)
                    }))
                };
                let (status, error) = match published.views.get(&v.id) {
                    Some(crate::catalog::views::ViewSnapshot::Failed(_, message)) => {
                        ("failed", Some(message.clone()))
                    }
                    Some(_) if backfilling.contains(&v.name) => ("backfilling", None),
                    Some(_) if held.contains_key(&v.name) => ("backpressured", None),
                    Some(_) => ("running", None),
                    None if backfilling.contains(&v.name) => ("backfilling", None),
                    None => ("starting", None),
                };
                r.row(vec![
                    s(&v.name),
                    b(v.emit_on_window_close),
                    s(&v.dependencies.join(", ")),
                    s(status),
                    ScalarValue::Utf8(error),
                    ScalarValue::Int64(
                        state.map(|_| i64::try_from(published.epoch).unwrap_or(i64::MAX)),
                    ),
                    total(|s| s.rows),
                    total(|s| s.bytes),
                    // A view held back by its sink is as old as when the sink stopped taking.
                    ScalarValue::Float64(state.map(|_| match held.get(&v.name) {
                        Some(&since) => lag.max(now.saturating_sub(since) as f64 / 1e3),
                        None => lag,
                    })),
                ]);
            }
            r
        }
        "pg_stat_activity" => {
            // The connections that ran a statement: who, from where, and what they run now.
            let timestamp = || DataType::Timestamp(TimeUnit::Millisecond, None);
            let mut r = Relation::new(&[
                ("datid", OID),
                ("datname", TEXT),
                ("pid", INT4),
                ("leader_pid", INT4),
                ("usesysid", OID),
                ("usename", TEXT),
                ("application_name", TEXT),
                ("client_addr", TEXT),
                ("client_hostname", TEXT),
                ("client_port", INT4),
                ("backend_start", timestamp()),
                ("xact_start", timestamp()),
                ("query_start", timestamp()),
                ("state_change", timestamp()),
                ("wait_event_type", TEXT),
                ("wait_event", TEXT),
                ("state", TEXT),
                ("backend_xid", TEXT),
                ("backend_xmin", TEXT),
                ("query_id", INT8),
                ("query", TEXT),
                ("backend_type", TEXT),
            ]);
            let at = |ms: Option<u64>| {
                ScalarValue::TimestampMillisecond(ms.and_then(|m| i64::try_from(m).ok()), None)
            };
            for a in registry.activity() {
                r.row(vec![
                    o(DATABASE_OID),
                    s(crate::config::DATABASE_NAME),
                    ScalarValue::Int32(Some(a.pid)),
                    ScalarValue::Int32(None),
                    o(USER_OID),
                    s(&a.user),
                    s(&a.application_name),
                    s(&a.client.ip().to_string()),
                    ScalarValue::Utf8(None),
                    ScalarValue::Int32(Some(i32::from(a.client.port()))),
                    at(Some(a.backend_start_ms)),
                    ScalarValue::TimestampMillisecond(None, None),
                    at(a.query_start_ms),
                    at(Some(a.state_change_ms)),
                    ScalarValue::Utf8(None),
                    ScalarValue::Utf8(None),
                    s(a.state),
                    ScalarValue::Utf8(None),
                    ScalarValue::Utf8(None),
                    ScalarValue::Int64(None),
                    s(&a.query),
                    s("client backend"),
                ]);
            }
            r
        }
        "sluice_operators" => {
            // Every node of every view's graph, as EXPLAIN prints it, with the rows of the
            // changes it took in and gave out since the view started, and its state.
            let published = registry.published();
            let mut r = Relation::new(&[
                ("view_name", TEXT),
                ("operator_id", INT4),
                ("depth", INT4),
                ("operator", TEXT),
                ("rows_in", INT8),
                ("rows_out", INT8),
                ("state_rows", INT8),
                ("state_bytes", INT8),
            ]);
            let int = |v: u64| ScalarValue::Int64(Some(i64::try_from(v).unwrap_or(i64::MAX)));
            for v in &views {
                let Some(operators) = published.operators.get(&v.id) else {
                    continue;
                };
                for (i, op) in operators.iter().enumerate() {
                    r.row(vec![
                        s(&v.name),
                        ScalarValue::Int32(i32::try_from(i).ok()),
                        ScalarValue::Int32(i32::try_from(op.depth).ok()),
                        s(&op.operator),
                        int(op.stats.rows_in),
                        int(op.stats.rows_out),
                        ScalarValue::Int64(
                            op.state.map(|s| i64::try_from(s.rows).unwrap_or(i64::MAX)),
                        ),
                        ScalarValue::Int64(
                            op.state.map(|s| i64::try_from(s.bytes).unwrap_or(i64::MAX)),
                        ),
                    ]);
                }
            }
            r
        }
        "sluice_progress" => {
            // Views reading a backlog now (a new view catching up, a large write): how far.
            let mut r = Relation::new(&[
                ("view_name", TEXT),
                ("records_done", INT8),
                ("records_total", INT8),
                ("rows_done", INT8),
                ("percent_done", DataType::Float64),
                (
                    "started_at",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                ),
                ("elapsed_seconds", DataType::Float64),
            ]);
            let int = |v: u64| ScalarValue::Int64(Some(i64::try_from(v).unwrap_or(i64::MAX)));
            let now = crate::state::now_ms();
            for b in registry.backfills() {
                let percent = 100.0 * b.records_done as f64 / b.records_total.max(1) as f64;
                r.row(vec![
                    s(&b.view),
                    int(b.records_done),
                    int(b.records_total),
                    int(b.rows_done),
                    ScalarValue::Float64(Some((percent * 10.0).round() / 10.0)),
                    ScalarValue::TimestampMillisecond(Some(b.started_at_ms as i64), None),
                    ScalarValue::Float64(Some(now.saturating_sub(b.started_at_ms) as f64 / 1e3)),
                ]);
            }
            r
        }
        "pg_type" => {
            let mut r = Relation::new(&[
                ("oid", OID),
                ("typname", TEXT),
                ("typnamespace", OID),
                ("typowner", OID),
                ("typlen", INT2),
                ("typbyval", BOOL),
                ("typtype", TEXT),
                ("typcategory", TEXT),
                ("typispreferred", BOOL),
                ("typisdefined", BOOL),
                ("typdelim", TEXT),
                ("typrelid", OID),
                ("typsubscript", TEXT),
                ("typelem", OID),
                ("typarray", OID),
                ("typinput", TEXT),
                ("typoutput", TEXT),
                ("typreceive", TEXT),
                ("typsend", TEXT),
                ("typmodin", TEXT),
                ("typmodout", TEXT),
                ("typanalyze", TEXT),
                ("typalign", TEXT),
                ("typstorage", TEXT),
                ("typnotnull", BOOL),
                ("typbasetype", OID),
                ("typtypmod", INT4),
                ("typndims", INT4),
                ("typcollation", OID),
                ("typdefaultbin", TEXT),
                ("typdefault", TEXT),
                ("typacl", text_array()),
            ]);
            for (t, category) in CATALOG_TYPES {
                let len = type_len(t);
                let elem = array_element(t).map(|e| e.oid()).unwrap_or(0);
                let array = array_of(t).map(|a| a.oid()).unwrap_or(0);
                let name = t.name();
                r.row(vec![
                    o(t.oid()),
                    s(name),
                    o(PG_CATALOG_NAMESPACE_OID),
                    o(USER_OID),
                    i2(len),
                    b(len > 0 && len <= 8),
                    s("b"),
                    s(category),
                    b(false),
                    b(true),
                    s(","),
                    o(0),
                    s(if elem != 0 {
                        "array_subscript_handler"
                    } else {
                        "-"
                    }),
                    o(elem),
                    o(array),
                    s(&format!("{name}in")),
                    s(&format!("{name}out")),
                    s(&format!("{name}recv")),
                    s(&format!("{name}send")),
                    s("-"),
                    s("-"),
                    s("-"),
                    s(if len == 8 { "d" } else { "i" }),
                    s(storage(t)),
                    b(false),
                    o(0),
                    i4(-1),
                    i4(0),
                    o(if *category == "S" { 100 } else { 0 }),
                    null(),
                    null(),
                    null(),
                ]);
            }
            r
        }
        "pg_database" => {
            let mut r = Relation::new(&[
                ("oid", OID),
                ("datname", TEXT),
                ("datdba", OID),
                ("encoding", INT4),
                ("datlocprovider", TEXT),
                ("datistemplate", BOOL),
                ("datallowconn", BOOL),
                ("datconnlimit", INT4),
                ("datfrozenxid", INT8),
                ("datminmxid", INT8),
                ("dattablespace", OID),
                ("datcollate", TEXT),
                ("datctype", TEXT),
                ("daticulocale", TEXT),
                ("daticurules", TEXT),
                ("datcollversion", TEXT),
                ("datacl", text_array()),
            ]);
            r.row(vec![
                o(DATABASE_OID),
                s(DATABASE_NAME),
                o(USER_OID),
                i4(6),
                s("c"),
                b(false),
                b(true),
                i4(-1),
                ScalarValue::Int64(Some(0)),
                ScalarValue::Int64(Some(0)),
                o(1663),
                s("C.UTF-8"),
                s("C.UTF-8"),
                null(),
                null(),
                null(),
                null(),
            ]);
            r
        }
        "pg_index" => {
            let mut r = Relation::new(&[
                ("indexrelid", OID),
                ("indrelid", OID),
                ("indnatts", INT2),
                ("indnkeyatts", INT2),
                ("indisunique", BOOL),
                ("indnullsnotdistinct", BOOL),
                ("indisprimary", BOOL),
                ("indisexclusion", BOOL),
                ("indimmediate", BOOL),
                ("indisclustered", BOOL),
                ("indisvalid", BOOL),
                ("indcheckxmin", BOOL),
                ("indisready", BOOL),
                ("indislive", BOOL),
                ("indisreplident", BOOL),
                // int2vector: a list, so that `unnest(indkey)` and `indkey[1]` work.
                (
                    "indkey",
                    DataType::List(Arc::new(
                        datafusion::arrow::datatypes::Field::new_list_field(DataType::Int16, true),
                    )),
                ),
                (
                    "indcollation",
                    DataType::List(Arc::new(
                        datafusion::arrow::datatypes::Field::new_list_field(DataType::UInt32, true),
                    )),
                ),
                (
                    "indclass",
                    DataType::List(Arc::new(
                        datafusion::arrow::datatypes::Field::new_list_field(DataType::UInt32, true),
                    )),
                ),
                (
                    "indoption",
                    DataType::List(Arc::new(
                        datafusion::arrow::datatypes::Field::new_list_field(DataType::Int16, true),
                    )),
                ),
                ("indexprs", TEXT),
                ("indpred", TEXT),
            ]);
            for t in &tables {
                let def = t.def();
                if let Some(pkey) = def.pkey_oid() {
                    let n = def.primary_key.len() as i16;
                    let key: Vec<ScalarValue> = def
                        .primary_key
                        .iter()
                        .map(|i| ScalarValue::Int16(Some(*i as i16 + 1)))
                        .collect();
                    r.row(vec![
                        o(pkey),
                        o(def.oid()),
                        i2(n),
                        i2(n),
                        b(true),
                        b(false),
                        b(true),
                        b(false),
                        b(true),
                        b(false),
                        b(true),
                        b(false),
                        b(true),
                        b(true),
                        b(false),
                        ScalarValue::List(ScalarValue::new_list_nullable(&key, &DataType::Int16)),
                        // Default collation and operator class, no options, per key column.
                        ScalarValue::List(ScalarValue::new_list_nullable(
                            &vec![ScalarValue::UInt32(Some(0)); key.len()],
                            &DataType::UInt32,
                        )),
                        ScalarValue::List(ScalarValue::new_list_nullable(
                            &vec![ScalarValue::UInt32(Some(0)); key.len()],
                            &DataType::UInt32,
                        )),
                        ScalarValue::List(ScalarValue::new_list_nullable(
                            &vec![ScalarValue::Int16(Some(0)); key.len()],
                            &DataType::Int16,
                        )),
                        null(),
                        null(),
                    ]);
                }
            }
            r
        }
        "pg_constraint" => {
            let mut r = Relation::new(&[
                ("oid", OID),
                ("conname", TEXT),
                ("connamespace", OID),
                ("contype", TEXT),
                ("condeferrable", BOOL),
                ("condeferred", BOOL),
                ("convalidated", BOOL),
                ("conrelid", OID),
                ("contypid", OID),
                ("conindid", OID),
                ("conparentid", OID),
                ("confrelid", OID),
                ("confupdtype", TEXT),
                ("confdeltype", TEXT),
                ("confmatchtype", TEXT),
                ("conislocal", BOOL),
                ("coninhcount", INT4),
                ("connoinherit", BOOL),
                (
                    "conkey",
                    DataType::List(Arc::new(
                        datafusion::arrow::datatypes::Field::new_list_field(DataType::Int16, true),
                    )),
                ),
                ("confkey", oid_array_i2()),
                ("conbin", TEXT),
            ]);
            for t in &tables {
                let def = t.def();
                if let Some(pkey) = def.pkey_oid() {
                    let key: Vec<ScalarValue> = def
                        .primary_key
                        .iter()
                        .map(|i| ScalarValue::Int16(Some(*i as i16 + 1)))
                        .collect();
                    r.row(vec![
                        o(pkey),
                        s(&format!("{}_pkey", def.name)),
                        o(PUBLIC_NAMESPACE_OID),
                        s("p"),
                        b(false),
                        b(false),
                        b(true),
                        o(def.oid()),
                        o(0),
                        o(pkey),
                        o(0),
                        o(0),
                        s(" "),
                        s(" "),
                        s(" "),
                        b(true),
                        i4(0),
                        b(true),
                        ScalarValue::List(ScalarValue::new_list_nullable(&key, &DataType::Int16)),
                        null(),
                        null(),
                    ]);
                }
            }
            r
        }
        "pg_am" => {
            let mut r = Relation::new(&[
                ("oid", OID),
                ("amname", TEXT),
                ("amhandler", TEXT),
                ("amtype", TEXT),
            ]);
            r.row(vec![o(2), s("heap"), s("heap_tableam_handler"), s("t")]);
            r.row(vec![o(403), s("btree"), s("bthandler"), s("i")]);
            r
        }
        "pg_roles" | "pg_user" => {
            let mut r = Relation::new(&[
                ("oid", OID),
                ("rolname", TEXT),
                ("usename", TEXT),
                ("usesysid", OID),
                ("rolsuper", BOOL),
                ("usesuper", BOOL),
                ("rolinherit", BOOL),
                ("rolcreaterole", BOOL),
                ("rolcreatedb", BOOL),
                ("usecreatedb", BOOL),
                ("rolcanlogin", BOOL),
                ("rolreplication", BOOL),
                ("rolconnlimit", INT4),
                ("rolpassword", TEXT),
                ("rolvaliduntil", TEXT),
                ("rolbypassrls", BOOL),
                ("rolconfig", text_array()),
            ]);
            r.row(vec![
                o(USER_OID),
                s(DEFAULT_USER),
                s(DEFAULT_USER),
                o(USER_OID),
                b(true),
                b(true),
                b(true),
                b(true),
                b(true),
                b(true),
                b(true),
                b(false),
                i4(-1),
                s("********"),
                null(),
                b(true),
                null(),
            ]);
            r
        }
        "pg_tables" => {
            let mut r = Relation::new(&[
                ("schemaname", TEXT),
                ("tablename", TEXT),
                ("tableowner", TEXT),
                ("tablespace", TEXT),
                ("hasindexes", BOOL),
                ("hasrules", BOOL),
                ("hastriggers", BOOL),
                ("rowsecurity", BOOL),
            ]);
            for t in &tables {
                let def = t.def();
                r.row(vec![
                    s("public"),
                    s(&def.name),
                    s(DEFAULT_USER),
                    null(),
                    b(def.pkey_oid().is_some()),
                    b(false),
                    b(false),
                    b(false),
                ]);
            }
            r
        }
        "pg_settings" => {
            let mut r = Relation::new(&[
                ("name", TEXT),
                ("setting", TEXT),
                ("unit", TEXT),
                ("category", TEXT),
                ("short_desc", TEXT),
                ("context", TEXT),
                ("vartype", TEXT),
                ("source", TEXT),
            ]);
            for (name, value) in crate::sql::session::DEFAULT_SETTINGS {
                r.row(vec![
                    s(name),
                    s(value),
                    null(),
                    s("Sluice"),
                    s(""),
                    s("user"),
                    s("string"),
                    s("default"),
                ]);
            }
            r
        }
        "pg_tablespace" => {
            let mut r = Relation::new(&[("oid", OID), ("spcname", TEXT), ("spcowner", OID)]);
            r.row(vec![o(1663), s("pg_default"), o(USER_OID)]);
            r
        }
        "pg_depend" => Relation::new(&[
            ("classid", OID),
            ("objid", OID),
            ("objsubid", INT4),
            ("refclassid", OID),
            ("refobjid", OID),
            ("refobjsubid", INT4),
            ("deptype", TEXT),
        ]),
        "pg_auth_members" => Relation::new(&[
            ("oid", OID),
            ("roleid", OID),
            ("member", OID),
            ("grantor", OID),
            ("admin_option", BOOL),
        ]),
        // Operator classes: every index uses its column type's default, so none is listed.
        "pg_opclass" => Relation::new(&[
            ("oid", OID),
            ("opcmethod", OID),
            ("opcname", TEXT),
            ("opcnamespace", OID),
            ("opcowner", OID),
            ("opcfamily", OID),
            ("opcintype", OID),
            ("opcdefault", BOOL),
            ("opckeytype", OID),
        ]),
        "pg_collation" => Relation::new(&[
            ("oid", OID),
            ("collname", TEXT),
            ("collnamespace", OID),
            ("collprovider", TEXT),
        ]),
        "pg_attrdef" => {
            // Column defaults; `adbin` holds the expression as written, which `pg_get_expr`
            // gives back.
            let mut r = Relation::new(&[
                ("oid", OID),
                ("adrelid", OID),
                ("adnum", INT2),
                ("adbin", TEXT),
            ]);
            for t in &tables {
                let def = t.def();
                for i in 0..def.schema.fields().len() {
                    if let Some(sql) = def.default_sql(i) {
                        r.row(vec![
                            o(def.attrdef_oid(i)),
                            o(def.oid()),
                            i2(i as i16 + 1),
                            s(sql),
                        ]);
                    }
                }
            }
            r
        }
        "pg_description" => Relation::new(&[
            ("objoid", OID),
            ("classoid", OID),
            ("objsubid", INT4),
            ("description", TEXT),
        ]),
        "pg_inherits" => Relation::new(&[
            ("inhrelid", OID),
            ("inhparent", OID),
            ("inhseqno", INT4),
            ("inhdetachpending", BOOL),
        ]),
        "pg_trigger" => Relation::new(&[
            ("oid", OID),
            ("tgrelid", OID),
            ("tgparentid", OID),
            ("tgname", TEXT),
            ("tgfoid", OID),
            ("tgtype", INT2),
            ("tgenabled", TEXT),
            ("tgisinternal", BOOL),
            ("tgconstrrelid", OID),
            ("tgconstrindid", OID),
            ("tgconstraint", OID),
            ("tgdeferrable", BOOL),
            ("tginitdeferred", BOOL),
            ("tgnargs", INT2),
        ]),
        "pg_policy" => Relation::new(&[
            ("oid", OID),
            ("polname", TEXT),
            ("polrelid", OID),
            ("polcmd", TEXT),
            ("polpermissive", BOOL),
            ("polroles", text_array()),
            ("polqual", TEXT),
            ("polwithcheck", TEXT),
        ]),
        "pg_statistic_ext" => Relation::new(&[
            ("oid", OID),
            ("stxrelid", OID),
            ("stxname", TEXT),
            ("stxnamespace", OID),
            ("stxowner", OID),
            ("stxstattarget", INT4),
            ("stxkeys", TEXT),
            ("stxkind", text_array()),
            ("stxexprs", TEXT),
        ]),
        "pg_publication" => Relation::new(&[
            ("oid", OID),
            ("pubname", TEXT),
            ("pubowner", OID),
            ("puballtables", BOOL),
            ("pubinsert", BOOL),
            ("pubupdate", BOOL),
            ("pubdelete", BOOL),
            ("pubtruncate", BOOL),
            ("pubviaroot", BOOL),
        ]),
        "pg_publication_rel" => Relation::new(&[
            ("oid", OID),
            ("prpubid", OID),
            ("prrelid", OID),
            ("prqual", TEXT),
            ("prattrs", TEXT),
        ]),
        "pg_publication_namespace" => {
            Relation::new(&[("oid", OID), ("pnpubid", OID), ("pnnspid", OID)])
        }
        "pg_rewrite" => Relation::new(&[
            ("oid", OID),
            ("rulename", TEXT),
            ("ev_class", OID),
            ("ev_type", TEXT),
            ("ev_enabled", TEXT),
            ("is_instead", BOOL),
        ]),
        "pg_foreign_table" => Relation::new(&[
            ("ftrelid", OID),
            ("ftserver", OID),
            ("ftoptions", text_array()),
        ]),
        "pg_partitioned_table" => {
            Relation::new(&[("partrelid", OID), ("partstrat", TEXT), ("partnatts", INT2)])
        }
        "pg_sequence" => Relation::new(&[("seqrelid", OID), ("seqtypid", OID)]),
        "pg_extension" => Relation::new(&[
            ("oid", OID),
            ("extname", TEXT),
            ("extowner", OID),
            ("extnamespace", OID),
            ("extversion", TEXT),
        ]),
        "pg_enum" => Relation::new(&[
            ("oid", OID),
            ("enumtypid", OID),
            ("enumsortorder", FLOAT4),
            ("enumlabel", TEXT),
        ]),
        "pg_range" => Relation::new(&[
            ("rngtypid", OID),
            ("rngsubtype", OID),
            ("rngmultitypid", OID),
        ]),
        "pg_proc" => {
            let mut r = Relation::new(&[
                ("oid", OID),
                ("proname", TEXT),
                ("pronamespace", OID),
                ("proowner", OID),
                ("prokind", TEXT),
                ("prorettype", OID),
                ("proargtypes", oid_array()),
                ("proretset", BOOL),
                ("proargnames", text_array()),
                ("proallargtypes", oid_array()),
                ("proargmodes", text_array()),
                ("proargdefaults", TEXT),
                ("prosrc", TEXT),
                ("prolang", OID),
                ("prosecdef", BOOL),
                ("provolatile", TEXT),
            ]);
            for (i, function) in functions.iter().enumerate() {
                r.row(vec![
                    o(FIRST_FUNCTION_OID + i as u32),
                    s(&function.name),
                    o(PG_CATALOG_NAMESPACE_OID),
                    o(USER_OID),
                    s(function.kind),
                    o(Type::ANYELEMENT.oid()),
                    null(),
                    b(false),
                    null(),
                    null(),
                    null(),
                    null(),
                    s(&function.name),
                    // `internal`, PostgreSQL's language of built-in functions.
                    o(12),
                    b(false),
                    s("i"),
                ]);
            }
            // `CREATE FUNCTION … LANGUAGE SQL`: in `public`, with their types and body.
            for (name, (id, udf)) in &sql_functions.live {
                let Some(f) = crate::sql::functions::SqlFunction::of(udf) else {
                    continue;
                };
                let types: Vec<ScalarValue> = f
                    .arguments()
                    .map(|(t, _)| ScalarValue::UInt32(Some(super::pg_types::pg_type(t).oid())))
                    .collect();
                let names: Vec<ScalarValue> = f
                    .arguments()
                    .map(|(_, n)| ScalarValue::Utf8(Some(n.unwrap_or("").to_string())))
                    .collect();
                let named = f.arguments().any(|(_, n)| n.is_some());
                r.row(vec![
                    o(super::FIRST_USER_OID + 2 * id),
                    s(name),
                    o(PUBLIC_NAMESPACE_OID),
                    o(USER_OID),
                    s("f"),
                    o(super::pg_types::pg_type(f.returns()).oid()),
                    ScalarValue::List(ScalarValue::new_list_nullable(&types, &DataType::UInt32)),
                    b(false),
                    if named {
                        ScalarValue::List(ScalarValue::new_list_nullable(&names, &DataType::Utf8))
                    } else {
                        null()
                    },
                    null(),
                    null(),
                    null(),
                    s(f.source()),
                    // `sql`, PostgreSQL's OID of the SQL language.
                    o(14),
                    b(false),
                    s("i"),
                ]);
            }
            r
        }
        // Sluice has no plain views.
        "pg_views" => Relation::new(&[
            ("schemaname", TEXT),
            ("viewname", TEXT),
            ("viewowner", TEXT),
            ("definition", TEXT),
        ]),
        "pg_matviews" => {
            let mut r = Relation::new(&[
                ("schemaname", TEXT),
                ("matviewname", TEXT),
                ("matviewowner", TEXT),
                ("tablespace", TEXT),
                ("hasindexes", BOOL),
                ("ispopulated", BOOL),
                ("definition", TEXT),
            ]);
            for v in &views {
                r.row(vec![
                    s("public"),
                    s(&v.name),
                    s(crate::config::DEFAULT_USER),
                    null(),
                    b(false),
                    b(true),
                    s(&view_definition(&v.sql)),
                ]);
            }
            r
        }
        "pg_locks" => Relation::new(&[
            ("locktype", TEXT),
            ("database", OID),
            ("relation", OID),
            ("pid", INT4),
            ("mode", TEXT),
            ("granted", BOOL),
        ]),
        "pg_shdescription" => {
            Relation::new(&[("objoid", OID), ("classoid", OID), ("description", TEXT)])
        }
        "pg_stat_user_tables" => {
            // Tables and sources with the rows they hold (`n_live_tup`: what they keep in
            // memory; a source or append-only table keeps its rows in its log only).
            let mut r = Relation::new(&[
                ("relid", OID),
                ("schemaname", TEXT),
                ("relname", TEXT),
                ("seq_scan", INT8),
                ("n_live_tup", INT8),
                ("n_dead_tup", INT8),
            ]);
            for t in &tables {
                r.row(vec![
                    o(t.def().oid()),
                    s("public"),
                    s(&t.def().name),
                    ScalarValue::Int64(None),
                    ScalarValue::Int64(Some(
                        i64::try_from(t.state_size().rows).unwrap_or(i64::MAX),
                    )),
                    ScalarValue::Int64(Some(0)),
                ]);
            }
            r
        }
        "pg_indexes" => {
            let mut r = Relation::new(&[
                ("schemaname", TEXT),
                ("tablename", TEXT),
                ("indexname", TEXT),
                ("tablespace", TEXT),
                ("indexdef", TEXT),
            ]);
            for t in &tables {
                let def = t.def();
                if def.pkey_oid().is_some() {
                    r.row(vec![
                        s("public"),
                        s(&def.name),
                        s(&format!("{}_pkey", def.name)),
                        null(),
                        s(&primary_key_index_def(def)),
                    ]);
                }
            }
            r
        }
        _ => return None,
    };
    Some(rel)
}

/// `CREATE UNIQUE INDEX t_pkey ON public.t USING btree (a)`, as `pg_get_indexdef` prints it.
pub fn primary_key_index_def(def: &super::TableDef) -> String {
    format!(
        "CREATE UNIQUE INDEX {}_pkey ON public.{} USING btree ({})",
        def.name,
        def.name,
        def.primary_key_names().join(", ")
    )
}

/// The query of a `CREATE MATERIALIZED VIEW … AS query` statement, as `pg_matviews` and
/// `pg_get_viewdef` show it.
pub fn view_definition(sql: &str) -> String {
    let lower = sql.to_ascii_lowercase();
    let start = [" as\n", " as ", " as\t", "\nas ", "\nas\n"]
        .iter()
        .filter_map(|k| lower.find(k).map(|i| i + k.len()))
        .min();
    match start {
        Some(i) => sql[i..].trim().trim_end_matches(';').to_string(),
        None => sql.to_string(),
    }
}
