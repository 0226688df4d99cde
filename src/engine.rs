//! [`Engine`]: one running Sluice: the catalog, the tables and the DataFusion catalog through
//! which every session sees them. Opening an engine on a data directory brings back every
//! object and every acknowledged row.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;
use datafusion::sql::sqlparser::ast::{CreateTable, Statement};

use crate::catalog::information_schema::InformationSchema;
use crate::catalog::pg_catalog::PgCatalogSchema;
use crate::catalog::pg_functions::pg_functions;
use crate::catalog::public_schema::PublicSchema;
use crate::catalog::registry::TableRegistry;
use crate::catalog::{
    CatalogStore, INFORMATION_SCHEMA, PG_CATALOG_SCHEMA, PUBLIC_SCHEMA, StoredObject,
};
use crate::config::{Config, DATABASE_NAME};
use crate::connector::queue::QueueTable;
use crate::error::{Error, Result, sqlstate};
use crate::sql::ddl::{plan_create_table, table_name};
use crate::sql::parse_sql;

/// A running engine.
pub struct Engine {
    /// Its configuration.
    config: Config,
    /// The durable list of objects. The lock also serializes DDL.
    store: Mutex<CatalogStore>,
    /// The live tables.
    tables: Arc<TableRegistry>,
    /// The catalogs DataFusion plans against (one: `sluice`, with `public` and `pg_catalog`).
    catalogs: Arc<dyn CatalogProviderList>,
    /// Memory and disk limits shared by every session's queries.
    runtime: Arc<RuntimeEnv>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.config.data_dir)
            .finish()
    }
}

impl Engine {
    /// Opens the data directory (creating it if needed) and restores every object in it.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::CatalogIo {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = CatalogStore::open(&config.data_dir)?;
        let tables = Arc::new(TableRegistry::default());
        let pg_catalog = Arc::new(PgCatalogSchema::new(Arc::clone(&tables)));
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(
            PUBLIC_SCHEMA,
            Arc::new(PublicSchema::new(
                Arc::clone(&tables),
                Arc::clone(&pg_catalog),
            )),
        )?;
        catalog.register_schema(PG_CATALOG_SCHEMA, pg_catalog)?;
        catalog.register_schema(
            INFORMATION_SCHEMA,
            Arc::new(InformationSchema::new(Arc::clone(&tables))),
        )?;
        let catalogs = Arc::new(MemoryCatalogProviderList::new());
        catalogs.register_catalog(DATABASE_NAME.to_string(), Arc::new(catalog));
        let engine = Arc::new(Self {
            config,
            store: Mutex::new(store),
            tables,
            catalogs,
            runtime: Arc::new(RuntimeEnv::default()),
        });
        engine.restore().await?;
        tracing::info!(
            data_dir = %engine.config.data_dir.display(),
            tables = engine.tables.names().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "engine opened"
        );
        Ok(engine)
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The live tables.
    pub fn tables(&self) -> &Arc<TableRegistry> {
        &self.tables
    }

    fn tables_dir(&self) -> PathBuf {
        self.config.data_dir.join("tables")
    }

    /// A DataFusion context over the engine's catalog, for one session.
    pub fn new_context(&self) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(DATABASE_NAME, PUBLIC_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            // Our own information_schema (PostgreSQL's type names) replaces DataFusion's.
            .with_information_schema(false);
        let options = config.options_mut();
        options.sql_parser.map_string_types_to_utf8view = false;
        options.sql_parser.enable_ident_normalization = true;
        options.execution.time_zone = Some("+00:00".to_string());
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_catalog_list(Arc::clone(&self.catalogs))
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        for function in pg_functions(Arc::clone(&self.tables)) {
            ctx.register_udf(function);
        }
        ctx
    }

    async fn restore(&self) -> Result<()> {
        let objects: Vec<StoredObject> = self.lock_store().objects().to_vec();
        let state = self.new_context().state();
        for object in objects {
            let statement = parse_sql(&object.sql)?.into_iter().next().ok_or_else(|| {
                Error::unsupported(format!("empty definition of {}", object.name))
            })?;
            let Statement::CreateTable(create) = &statement.statement else {
                return Err(Error::unsupported(format!(
                    "catalog object kind {}",
                    object.kind
                )));
            };
            let def = plan_create_table(
                &state,
                create,
                statement.append_only,
                object.id,
                &object.sql,
            )
            .await?;
            let table = QueueTable::open(def, &self.tables_dir(), self.config.fsync)?;
            self.tables.insert(Arc::new(table));
        }
        Ok(())
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, CatalogStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `CREATE TABLE`. Returns false when the table existed and `IF NOT EXISTS` was given.
    pub async fn create_table(
        &self,
        state: &SessionState,
        create: &CreateTable,
        append_only: bool,
        text: &str,
    ) -> Result<bool> {
        let name = table_name(&create.name)?;
        if self.tables.get(&name).is_some() {
            if create.if_not_exists {
                return Ok(false);
            }
            return Err(Error::user(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        let id = self.lock_store().next_id();
        let def = plan_create_table(state, create, append_only, id, text).await?;
        let mut store = self.lock_store();
        // Another session may have created it while this one planned.
        if self.tables.get(&name).is_some() || store.next_id() != id {
            return Err(Error::user(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists or was created concurrently"),
            ));
        }
        let table = QueueTable::open(def, &self.tables_dir(), self.config.fsync)?;
        store.add(StoredObject {
            id,
            kind: "table".into(),
            name: name.clone(),
            sql: text.to_string(),
        })?;
        self.tables.insert(Arc::new(table));
        tracing::info!(table = %name, id, "table created");
        Ok(true)
    }

    /// `DROP TABLE`: forgets the table and removes its log.
    pub fn drop_table(&self, name: &str, if_exists: bool) -> Result<()> {
        let mut store = self.lock_store();
        let Some(table) = self.tables.get(name) else {
            if if_exists {
                return Ok(());
            }
            return Err(Error::user(
                sqlstate::UNDEFINED_TABLE,
                format!("table \"{name}\" does not exist"),
            ));
        };
        let id = table.def().id;
        store.remove(id)?;
        self.tables.remove(name);
        let dir = self.tables_dir().join(id.to_string());
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(table = %name, dir = %dir.display(), error = %e, "could not remove the log of a dropped table");
        }
        tracing::info!(table = %name, id, "table dropped");
        Ok(())
    }
}
