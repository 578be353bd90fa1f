//! The module store: wasm modules kept content-addressed (`sha256:<hex>`) in the ledger's
//! database, validated and compiled through the runtime.

use std::sync::Arc;

use loom_ledger::{Catalog, CatalogTable, Durability};
use loom_runtime::{Entry, Module, Runtime};
use serde::{Deserialize, Serialize};

use crate::{DefinitionError, StoreError};

/// What the API says about a stored module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModuleRecord {
    /// `sha256:<hex>` of the bytes.
    pub id: String,
    /// Size in bytes.
    pub size: usize,
    /// ABI version.
    pub abi: u32,
    /// Entry points exported: `evolve`, `decide`, `react`, `query`.
    pub exports: Vec<String>,
    /// Upload time (RFC 3339).
    pub uploaded_at: String,
}

/// Result of an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// The module.
    pub record: ModuleRecord,
    /// False when the same bytes were stored already.
    pub created: bool,
}

/// The stored modules.
#[derive(Debug)]
pub struct ModuleStore {
    db: Catalog,
    runtime: Arc<Runtime>,
    /// Definitions that name a module hold this shared while they check and record it;
    /// deleting a module holds it exclusively while it checks users and deletes, so a module
    /// cannot vanish between a definition's check and its commit.
    pins: std::sync::RwLock<()>,
}

impl ModuleStore {
    pub(crate) fn new(db: Catalog, runtime: Arc<Runtime>) -> ModuleStore {
        ModuleStore {
            db,
            runtime,
            pins: std::sync::RwLock::new(()),
        }
    }

    /// Validates and stores module bytes. The same bytes give the same id (idempotent).
    pub fn upload(&self, bytes: &[u8]) -> Result<Uploaded, DefinitionError> {
        let module = self
            .runtime
            .compile(bytes)
            .map_err(DefinitionError::InvalidModule)?;
        let info = module.info();
        if let Some(record) = self.get(&info.id)? {
            return Ok(Uploaded {
                record,
                created: false,
            });
        }
        let record = ModuleRecord {
            id: info.id.clone(),
            size: info.size,
            abi: info.abi,
            exports: info.exports.iter().map(|e| e.name().to_owned()).collect(),
            uploaded_at: loom_ledger::format_time(chrono::Utc::now().timestamp_micros()),
        };
        let json = serde_json::to_vec(&record).expect("a record serializes");
        let mut txn = self.db.write(Durability::Immediate)?;
        txn.put(CatalogTable::ModuleBytes, &record.id, bytes)?;
        txn.put(CatalogTable::Modules, &record.id, &json)?;
        txn.commit()?;
        Ok(Uploaded {
            record,
            created: true,
        })
    }

    /// Held (shared) while a definition that names a module is checked and recorded.
    pub(crate) fn pin(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.pins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Held (exclusive) while a module's users are checked and it is deleted.
    pub(crate) fn lock_for_delete(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.pins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One module's record.
    pub fn get(&self, id: &str) -> Result<Option<ModuleRecord>, StoreError> {
        match self.db.read()?.get(CatalogTable::Modules, id)? {
            Some(v) => Ok(Some(decode_record(&v)?)),
            None => Ok(None),
        }
    }

    /// Every module, by id.
    pub fn list(&self) -> Result<Vec<ModuleRecord>, StoreError> {
        let rows = self.db.read()?.list(CatalogTable::Modules)?;
        rows.iter().map(|(_, v)| decode_record(v)).collect()
    }

    /// The compiled module `id` (compiling the stored bytes if not cached).
    pub fn load(&self, id: &str) -> Result<Module, DefinitionError> {
        if let Some(m) = self.runtime.cached(id) {
            return Ok(m);
        }
        let Some(bytes) = self.db.read()?.get(CatalogTable::ModuleBytes, id)? else {
            return Err(DefinitionError::ModuleNotFound(id.to_owned()));
        };
        self.runtime
            .compile(&bytes)
            .map_err(DefinitionError::InvalidModule)
    }

    /// Loads `id` and checks it exports `entries`.
    pub fn load_with(&self, id: &str, entries: &[Entry]) -> Result<Module, DefinitionError> {
        let m = self.load(id)?;
        for e in entries {
            if !m.exports(*e) {
                return Err(DefinitionError::MissingExport {
                    module: id.to_owned(),
                    entry: e.name(),
                });
            }
        }
        Ok(m)
    }

    /// Deletes a module nobody uses. `users` names what still uses it (409 when non-empty).
    pub(crate) fn delete(&self, id: &str, users: Vec<String>) -> Result<(), DefinitionError> {
        if !users.is_empty() {
            return Err(DefinitionError::ModuleInUse {
                id: id.to_owned(),
                users,
            });
        }
        let mut txn = self.db.write(Durability::Immediate)?;
        let bytes = txn.remove(CatalogTable::ModuleBytes, id)?;
        let record = txn.remove(CatalogTable::Modules, id)?;
        let existed = bytes || record;
        txn.commit()?;
        self.runtime.evict(id);
        if existed {
            Ok(())
        } else {
            Err(DefinitionError::ModuleNotFound(id.to_owned()))
        }
    }
}

fn decode_record(bytes: &[u8]) -> Result<ModuleRecord, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("stored module record: {e}")))
}
