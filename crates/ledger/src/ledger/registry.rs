//! The registry as the ledger keeps it: entities with their event types and schemas.

use super::*;

impl Ledger {
    /// Registers or replaces an entity's registration. Schemas are compiled first; an invalid
    /// one changes nothing.
    pub fn put_entity(&self, name: &str, spec: EntitySpec) -> Result<(), RegistryError> {
        loom_core::check_new_name(name).map_err(RegistryError::InvalidName)?;
        let compiled = Arc::new(CompiledEntity::compile(spec)?);
        if self.replicated {
            // Through the cluster's log, in order with the commit groups.
            let (tx, rx) = oneshot::channel();
            self.enqueue(Work::Control(ControlWork {
                control: Control::Ledger(LedgerChange::PutEntity {
                    name: name.to_owned(),
                    spec: compiled.spec.clone(),
                }),
                reply: tx,
            }))
            .map_err(|_| RegistryError::Storage(closed()))?;
            return rx
                .recv()
                .unwrap_or_else(|_| Err(closed()))
                .map(|_sequence| ())
                .map_err(RegistryError::Storage);
        }
        let bytes = serde_json::to_vec(&compiled.spec).expect("a spec always serializes");
        let txn = self.store.begin_write().map_err(StorageError::from)?;
        {
            let mut t = txn.open_table(ENTITIES).map_err(StorageError::from)?;
            t.insert(name, bytes.as_slice())
                .map_err(StorageError::from)?;
        }
        // Registry writes are rare and small: hold the lock over the commit so that readers
        // never see a registration that is not durable.
        let mut guard = self.registry.write().expect("registry lock");
        txn.commit().map_err(StorageError::from)?;
        let mut next = Registry::clone(&guard);
        next.entities.insert(name.to_owned(), compiled);
        *guard = Arc::new(next);
        Ok(())
    }

    /// An entity's registration.
    pub fn entity(&self, name: &str) -> Option<EntitySpec> {
        let r = self.registry.read().expect("registry lock");
        r.entities.get(name).map(|c| c.spec.clone())
    }

    /// Every registration, by name.
    pub fn entities(&self) -> BTreeMap<String, EntitySpec> {
        let r = self.registry.read().expect("registry lock");
        r.entities
            .iter()
            .map(|(k, v)| (k.clone(), v.spec.clone()))
            .collect()
    }

    pub(crate) fn entity_names(&self) -> Vec<String> {
        let r = self.registry.read().expect("registry lock");
        r.entities.keys().cloned().collect()
    }
}

pub(super) fn closed() -> StorageError {
    StorageError(Box::new(redb::Error::Io(std::io::Error::other(
        "the ledger is shutting down",
    ))))
}
