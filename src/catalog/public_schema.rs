//! [`PublicSchema`]: the `public` schema as DataFusion sees it: the live tables, and, as in
//! PostgreSQL's default `search_path`, the `pg_catalog` relations by their bare names.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;

use crate::connector::queue::QueueTableProvider;

use super::pg_catalog::PgCatalogSchema;
use super::registry::TableRegistry;
use super::views::{ViewProvider, ViewRegistry};

/// The `public` schema.
#[derive(Debug)]
pub struct PublicSchema {
    /// The live tables.
    tables: Arc<TableRegistry>,
    /// The materialized views.
    views: Arc<ViewRegistry>,
    /// Fallback for bare names of system relations (`SELECT * FROM pg_class`).
    pg_catalog: Arc<PgCatalogSchema>,
}

impl PublicSchema {
    /// The schema over a registry.
    pub fn new(
        tables: Arc<TableRegistry>,
        views: Arc<ViewRegistry>,
        pg_catalog: Arc<PgCatalogSchema>,
    ) -> Self {
        Self {
            tables,
            views,
            pg_catalog,
        }
    }
}

#[async_trait]
impl SchemaProvider for PublicSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.tables.names();
        names.extend(self.views.names());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.tables.get(name) {
            return Ok(Some(Arc::new(QueueTableProvider::new(table))));
        }
        if let Some(view) = self.views.get(name) {
            return Ok(Some(Arc::new(ViewProvider::new(
                view,
                Arc::clone(&self.views),
            ))));
        }
        self.pg_catalog.table(name).await
    }

    /// What [`Self::table`] finds: tables, views, and (as PostgreSQL's search path has it)
    /// the catalog relations.
    fn table_exist(&self, name: &str) -> bool {
        self.tables.get(name).is_some()
            || self.views.get(name).is_some()
            || self.pg_catalog.table_exist(name)
    }
}
