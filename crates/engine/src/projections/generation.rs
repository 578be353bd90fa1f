//! Generations: a projection's active one and, during an upgrade, the pending one that
//! replaces it once caught up.

use super::*;

impl Gen {
    pub(super) fn status(&self, head: u64) -> GenerationStatus {
        let (status, last_error, position) = self.life.progress();
        let (skipped, quarantined) = {
            let notes = self.notes.lock().expect("notes lock");
            (notes.skipped.clone(), notes.quarantined())
        };
        GenerationStatus {
            generation: self.generation,
            module: self.spec.module.clone(),
            status,
            position,
            head,
            lag: head.saturating_sub(position),
            keys: self.keys.load(Ordering::Acquire),
            events_applied: self.events_applied.load(Ordering::Acquire),
            last_error,
            skipped,
            quarantined,
            queued: self.queued.load(Ordering::Acquire),
        }
    }
}

impl Shared {
    /// The generation's module, loaded again if it could not be loaded at startup.
    pub(super) fn module_of(&self, g: &Gen) -> Result<Module, DefinitionError> {
        if let Some(m) = g.module.read().expect("module lock").as_ref() {
            return Ok(m.clone());
        }
        let m =
            self.modules
                .load_with(&g.spec.module, g.spec.reducer.as_deref(), &[Entry::Evolve])?;
        *g.module.write().expect("module lock") = Some(m.clone());
        Ok(m)
    }

    pub(super) fn new_gen(
        &self,
        name: &str,
        generation: u64,
        spec: &ProjectionSpec,
        pending: bool,
    ) -> Result<Arc<Gen>, DefinitionError> {
        let module =
            self.modules
                .load_with(&spec.module, spec.reducer.as_deref(), &[Entry::Evolve])?;
        self.gen_with(name, generation, spec, pending, Some(module))
    }

    pub(super) fn gen_with(
        &self,
        name: &str,
        generation: u64,
        spec: &ProjectionSpec,
        pending: bool,
        module: Option<Module>,
    ) -> Result<Arc<Gen>, DefinitionError> {
        let selector = spec.selector.compile()?;
        Ok(Arc::new(Gen {
            name: name.to_owned(),
            generation,
            spec: spec.clone(),
            selector,
            module: RwLock::new(module),
            pending: AtomicBool::new(pending),
            events_applied: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            life: Lifecycle::default(),
            epoch: Mutex::new(self.db.epoch()),
            notes: Mutex::new(notes::Notes::default()),
            retry_quarantine: AtomicBool::new(false),
            small_calls: AtomicBool::new(false),
            queued: AtomicBool::new(false),
        }))
    }

    /// A generation from its stored checkpoint.
    pub(super) fn load_gen(
        &self,
        name: &str,
        generation: u64,
        spec: &ProjectionSpec,
        pending: bool,
    ) -> Result<Arc<Gen>, StoreError> {
        // A module that cannot be loaded now (e.g. the server's limits changed) must not keep
        // the server from starting: the generation starts failed, and `resume` tries again.
        let (module, failure) = match self.modules.load_with(
            &spec.module,
            spec.reducer.as_deref(),
            &[Entry::Evolve],
        ) {
            Ok(m) => (Some(m), None),
            Err(e) => {
                tracing::error!(projection = %name, module = %spec.module, error = %e, "module could not be loaded");
                (
                    None,
                    Some(Failure {
                        position: 0,
                        message: format!("module {} could not be loaded: {e}", spec.module),
                    }),
                )
            }
        };
        let g = match self.gen_with(name, generation, spec, pending, module) {
            Ok(g) => g,
            Err(e) => return Err(StoreError::Corrupt(format!("projection {name:?}: {e}"))),
        };
        g.life.restore(false, failure);
        if let Some(c) = self.db.read()?.projection_checkpoint(name, generation)? {
            g.life.set_position(c.position);
            g.events_applied.store(c.events_applied, Ordering::Release);
            g.keys.store(c.keys, Ordering::Release);
        }
        *g.notes.lock().expect("notes lock") = notes::Notes::load(&self.db, name, generation)?;
        Ok(g)
    }

    /// Makes a caught-up pending generation the active one.
    pub(super) fn swap(&self, g: &Arc<Gen>) -> Result<(), StoreError> {
        let mut map = self.map.write().expect("map lock");
        let Some(proj) = map.get_mut(&g.name) else {
            return Ok(());
        };
        if !proj.pending.as_ref().is_some_and(|p| Arc::ptr_eq(p, g)) {
            return Ok(());
        }
        let old = proj.active.clone();
        old.life.halt();
        // Persist the swapped generation's progress with the swap.
        let mut record = proj.record.clone();
        record.spec = g.spec.clone();
        record.generation = g.generation;
        record.pending = None;
        record.failure = record.pending_failure.take();
        let json = serde_json::to_vec(&record).expect("a record serializes");
        let mut txn = self.db.write(Durability::Immediate)?;
        txn.put(CatalogTable::Projections, &g.name, &json)?;
        txn.remove_projection_generation(&g.name, old.generation)?;
        txn.put_projection_checkpoint(
            &g.name,
            g.generation,
            ProjectionCheckpoint {
                position: g.life.position(),
                events_applied: g.events_applied.load(Ordering::Acquire),
                keys: g.keys.load(Ordering::Acquire),
            },
        )?;
        txn.commit()?;
        g.pending.store(false, Ordering::Release);
        proj.record = record;
        proj.active = g.clone();
        proj.pending = None;
        // Wake waiters on the old generation: they re-read the active one.
        old.life.notify();
        tracing::info!(projection = %g.name, generation = g.generation, "new generation swapped in");
        Ok(())
    }
}
