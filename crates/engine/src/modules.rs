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
    /// Entry points exported: `evolve`, `decide`, `react`, `query` (ABI v2: those any of its
    /// reducers exports).
    pub exports: Vec<String>,
    /// Upload time (RFC 3339).
    pub uploaded_at: String,
    /// Its named reducers, as it describes them (ABI v2; empty for ABI v1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reducers: Vec<ReducerRecord>,
}

/// One named reducer of an ABI v2 module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReducerRecord {
    /// Its name: what a definition's `reducer` names.
    pub name: String,
    /// What it is: `projection`, `decider`, `query`, `reactor`.
    pub kinds: Vec<String>,
    /// The entity it is about, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// The event types it decodes; absent when it takes any event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Its entry points: `evolve`, `evolve_groups`, `decide`, `query`, `react`.
    pub exports: Vec<String>,
    /// JSON Schemas derived from its types, when the module derives them (`loom-guest`'s
    /// `schemars` feature): `{"events": {"<type>": schema of its data}, "command": schema}`.
    /// An event type it decodes with no schema here takes data of any form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<serde_json::Value>,
}

impl ReducerRecord {
    fn of(r: &loom_runtime::ReducerInfo) -> ReducerRecord {
        ReducerRecord {
            name: r.name.clone(),
            kinds: r.kinds.clone(),
            entity: r.entity.clone(),
            events: r.events.clone(),
            exports: r.exports.iter().map(|e| e.name().to_owned()).collect(),
            schemas: r.schemas.clone(),
        }
    }
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
            reducers: info.reducers.iter().map(ReducerRecord::of).collect(),
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

    /// Loads `id`, bound to the reducer `reducer` names (ABI v2) or chosen by what it
    /// exports, and checks it exports `entries`. A definition that leaves `reducer` out gets
    /// the one reducer of the module that exports them all; with none or several that do, it
    /// is refused with the reducers the module has.
    pub fn load_with(
        &self,
        id: &str,
        reducer: Option<&str>,
        entries: &[Entry],
    ) -> Result<Module, DefinitionError> {
        let m = self.load(id)?;
        let m = bind(id, m, reducer, entries)?;
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

/// What a reducer offers, for messages: `books (projection, query)`.
fn listed(m: &Module) -> String {
    m.info()
        .reducers
        .iter()
        .map(|r| format!("{} ({})", r.name, r.kinds.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn bind(
    id: &str,
    m: Module,
    reducer: Option<&str>,
    entries: &[Entry],
) -> Result<Module, DefinitionError> {
    let v2 = m.info().abi >= 2;
    match (v2, reducer) {
        (false, None) => Ok(m),
        (false, Some(r)) => Err(DefinitionError::Reducer(format!(
            "module {id} speaks ABI version 1 and has no named reducers; leave out \"reducer\" \
             (it was {r:?})"
        ))),
        (true, Some(r)) => m.bind(r).ok_or_else(|| {
            let names: Vec<&str> = m.info().reducers.iter().map(|x| x.name.as_str()).collect();
            DefinitionError::Reducer(format!(
                "module {id} has no reducer {r:?}{}; it has {}",
                crate::names::did_you_mean(r, &names),
                listed(&m)
            ))
        }),
        (true, None) => {
            let fits: Vec<&str> = m
                .info()
                .reducers
                .iter()
                .filter(|r| entries.iter().all(|e| r.exports.contains(e)))
                .map(|r| r.name.as_str())
                .collect();
            match fits.as_slice() {
                [one] => Ok(m.bind(one).expect("a reducer of the module")),
                [] => Err(DefinitionError::Reducer(format!(
                    "no reducer of module {id} exports {}; it has {}",
                    entries
                        .iter()
                        .map(|e| e.name())
                        .collect::<Vec<_>>()
                        .join(" and "),
                    listed(&m)
                ))),
                several => Err(DefinitionError::Reducer(format!(
                    "module {id} has several reducers that fit ({}): name one with \"reducer\"",
                    several.join(", ")
                ))),
            }
        }
    }
}

fn decode_record(bytes: &[u8]) -> Result<ModuleRecord, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("stored module record: {e}")))
}
