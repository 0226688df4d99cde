//! [`CatalogStore`]: the durable list of object definitions, one JSON file in the data directory,
//! rewritten atomically (temp file, fsync, rename, fsync of the directory) on every change.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One persisted object: its id, kind and the statement that created it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredObject {
    /// Catalog id, never reused.
    pub id: u32,
    /// Object kind, `"table"` for now.
    pub kind: String,
    /// Object name.
    pub name: String,
    /// The creating statement, replayed on restart.
    pub sql: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CatalogFile {
    next_id: u32,
    objects: Vec<StoredObject>,
}

/// The catalog file and the ids it hands out.
#[derive(Debug)]
pub struct CatalogStore {
    /// `<data-dir>/catalog.json`.
    path: PathBuf,
    /// The file's contents as last written.
    contents: CatalogFile,
}

impl CatalogStore {
    /// Opens (or starts) the catalog of a data directory.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("catalog.json");
        let contents = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::CatalogIo {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogFile::default(),
            Err(source) => {
                return Err(Error::CatalogIo {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Ok(Self { path, contents })
    }

    /// The objects, in creation order.
    pub fn objects(&self) -> &[StoredObject] {
        &self.contents.objects
    }

    /// The id the next object will get.
    pub fn next_id(&self) -> u32 {
        self.contents.next_id
    }

    /// Records a new object durably.
    pub fn add(&mut self, object: StoredObject) -> Result<()> {
        self.contents.next_id = self.contents.next_id.max(object.id + 1);
        self.contents.objects.push(object);
        self.save()
    }

    /// Removes an object durably.
    pub fn remove(&mut self, id: u32) -> Result<()> {
        self.contents.objects.retain(|o| o.id != id);
        self.save()
    }

    fn save(&self) -> Result<()> {
        let io = |source| Error::CatalogIo {
            path: self.path.display().to_string(),
            source,
        };
        let bytes =
            serde_json::to_vec_pretty(&self.contents).map_err(|e| io(std::io::Error::other(e)))?;
        crate::storage::durable::write_atomically(&self.path, &bytes).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_survive_reopen_and_ids_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CatalogStore::open(dir.path()).unwrap();
        let obj = |id: u32| StoredObject {
            id,
            kind: "table".into(),
            name: format!("t{id}"),
            sql: format!("CREATE TABLE t{id} (a INT)"),
        };
        store.add(obj(0)).unwrap();
        store.add(obj(1)).unwrap();
        store.remove(1).unwrap();
        let reopened = CatalogStore::open(dir.path()).unwrap();
        assert_eq!(reopened.objects(), &[obj(0)]);
        assert_eq!(reopened.next_id(), 2);
    }
}
