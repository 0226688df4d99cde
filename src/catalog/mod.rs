//! The catalog: every object a user created (tables now; views, sources and sinks later), kept
//! in memory and persisted so that a restart brings every object back.
//!
//! - [`TableDef`] (`table_def.rs`): what `CREATE TABLE` declared.
//! - [`CatalogStore`] (`store.rs`): the durable list of definitions.
//! - `pg_catalog.rs`, `pg_functions.rs` and `information_schema.rs`: the system relations and
//!   functions that psql, drivers and BI tools query, derived from the definitions
//!   (`relation.rs` builds them; `pg_types.rs` maps Arrow types to PostgreSQL's).

pub mod information_schema;
pub mod pg_catalog;
pub mod pg_functions;
pub mod pg_types;
pub mod public_schema;
pub mod registry;
pub mod relation;
pub mod store;
pub mod table_def;
pub mod views;

pub use store::{CatalogStore, StoredObject};
pub use table_def::TableDef;

/// The schema user objects live in, as in PostgreSQL.
pub const PUBLIC_SCHEMA: &str = "public";

/// The schema of the PostgreSQL system relations.
pub const PG_CATALOG_SCHEMA: &str = "pg_catalog";

/// The schema of the SQL-standard catalog views.
pub const INFORMATION_SCHEMA: &str = "information_schema";

/// OIDs of user objects start here, as in PostgreSQL (`FirstNormalObjectId`).
pub const FIRST_USER_OID: u32 = 16384;

/// OID of the `public` namespace in PostgreSQL.
pub const PUBLIC_NAMESPACE_OID: u32 = 2200;

/// OID of the `pg_catalog` namespace in PostgreSQL.
pub const PG_CATALOG_NAMESPACE_OID: u32 = 11;

/// OID of the `information_schema` namespace (any stable value above the system range).
pub const INFORMATION_SCHEMA_NAMESPACE_OID: u32 = 13000;

/// OID of the one database.
pub const DATABASE_OID: u32 = 16383;
