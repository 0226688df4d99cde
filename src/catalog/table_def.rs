//! [`TableDef`]: a table as `CREATE TABLE` declared it.

use datafusion::arrow::datatypes::SchemaRef;

use super::FIRST_USER_OID;

/// A table's definition.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Catalog id, unique for the life of the data directory, never reused.
    pub id: u32,
    /// Name, lowercased unless it was quoted.
    pub name: String,
    /// Column names and types; nullability says whether a column may hold NULL.
    pub schema: SchemaRef,
    /// Indexes into `schema` of the primary key columns, empty when there is none.
    pub primary_key: Vec<usize>,
    /// `APPEND ONLY`: rows are never updated or deleted, so no state is kept for changes.
    pub append_only: bool,
    /// Per column, the PostgreSQL type the user declared when it says more than the Arrow type
    /// does (`varchar(20)` is Utf8 in Arrow): its type OID and `atttypmod`. `None` means the
    /// type follows from the Arrow type.
    pub declared_types: Vec<Option<(u32, i32)>>,
    /// `WATERMARK FOR ts AS …`: rows behind the watermark are dropped at insert and counted.
    pub watermark: Option<crate::stream::WatermarkDef>,
    /// The `CREATE TABLE` statement as the user wrote it; replayed on restart.
    pub sql: String,
    /// `CREATE SOURCE`: only its connector writes to it, and its rows are read from its log
    /// rather than kept in memory.
    pub source: bool,
    /// `WITH (connector = …)`: where its rows come from.
    pub connector: Option<crate::connector::spec::SourceSpec>,
}

impl TableDef {
    /// The PostgreSQL OID of the table, as `pg_class.oid`.
    pub fn oid(&self) -> u32 {
        FIRST_USER_OID + 2 * self.id
    }

    /// The OID of the table's primary key index (`<table>_pkey`), when it has a key.
    pub fn pkey_oid(&self) -> Option<u32> {
        (!self.primary_key.is_empty()).then(|| self.oid() + 1)
    }

    /// The PostgreSQL type OID and `atttypmod` of column `i`, as `pg_attribute` lists them.
    pub fn column_pg_type(&self, i: usize) -> (u32, i32) {
        match self.declared_types.get(i).copied().flatten() {
            Some(declared) => declared,
            None => {
                let dt = self.schema.field(i).data_type();
                (
                    super::pg_types::pg_type(dt).oid(),
                    super::pg_types::type_modifier(dt),
                )
            }
        }
    }

    /// The columns a connector decodes: all but the `INCLUDE` ones.
    pub fn payload_schema(&self) -> SchemaRef {
        let includes: Vec<&str> = self
            .connector
            .iter()
            .flat_map(|c| c.includes.iter().map(|i| i.column.as_str()))
            .collect();
        let fields: Vec<_> = self
            .schema
            .fields()
            .iter()
            .filter(|f| !includes.contains(&f.name().as_str()))
            .cloned()
            .collect();
        std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
    }

    /// Names of the primary key columns, in key order.
    pub fn primary_key_names(&self) -> Vec<&str> {
        self.primary_key
            .iter()
            .map(|&i| self.schema.field(i).name().as_str())
            .collect()
    }
}
