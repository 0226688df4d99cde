//! [`TableRegistry`]: the live tables by name, shared by the engine (which adds and drops them)
//! and the schema providers through which DataFusion and `pg_catalog` see them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::connector::queue::QueueTable;

/// Live tables by name.
#[derive(Debug, Default)]
pub struct TableRegistry {
    /// Name → table, in name order.
    tables: RwLock<BTreeMap<String, Arc<QueueTable>>>,
}

impl TableRegistry {
    /// The table of this name.
    pub fn get(&self, name: &str) -> Option<Arc<QueueTable>> {
        self.read().get(name).cloned()
    }

    /// Every table, in name order.
    pub fn all(&self) -> Vec<Arc<QueueTable>> {
        self.read().values().cloned().collect()
    }

    /// Every table name, in order.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Adds a table under its definition's name.
    pub fn insert(&self, table: Arc<QueueTable>) {
        let name = table.def().name.clone();
        crate::sync::write(&self.tables, "the table registry").insert(name, table);
    }

    /// Removes a table by name.
    pub fn remove(&self, name: &str) -> Option<Arc<QueueTable>> {
        crate::sync::write(&self.tables, "the table registry").remove(name)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<QueueTable>>> {
        crate::sync::read(&self.tables, "the table registry")
    }
}
