//! Generations: a projection's active one and, during an upgrade, the pending one that
//! replaces it once caught up.

use super::*;

impl Gen {
    pub(super) fn status(&self, head: u64) -> GenerationStatus {
        let position = self.position.load(Ordering::Acquire);
        let failure = self.failure.lock().expect("failure lock").clone();
        let status = if failure.is_some() {
            Status::Failed
        } else if self.paused.load(Ordering::Acquire) {
            Status::Paused
        } else if self.caught_up.load(Ordering::Acquire) {
            Status::Running
        } else {
            Status::CatchingUp
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
            last_error: failure,
        }
    }

    pub(super) fn halt(&self) {
        self.stop.store(true, Ordering::Release);
        self.changed.notify(usize::MAX);
    }

    pub(super) fn join(&self) {
        if let Some(h) = self.handle.lock().expect("handle lock").take() {
            let _ = h.join();
        }
    }
}

impl Shared {
    /// The generation's module, loaded again if it could not be loaded at startup.
    pub(super) fn module_of(&self, g: &Gen) -> Result<Module, EngineError> {
        if let Some(m) = g.module.read().expect("module lock").as_ref() {
            return Ok(m.clone());
        }
        let m = self.modules.load_with(&g.spec.module, &[Entry::Evolve])?;
        *g.module.write().expect("module lock") = Some(m.clone());
        Ok(m)
    }

    pub(super) fn new_gen(
        &self,
        name: &str,
        generation: u64,
        spec: &ProjectionSpec,
        pending: bool,
    ) -> Result<Arc<Gen>, EngineError> {
        let module = self.modules.load_with(&spec.module, &[Entry::Evolve])?;
        self.gen_with(name, generation, spec, pending, Some(module))
    }

    pub(super) fn gen_with(
        &self,
        name: &str,
        generation: u64,
        spec: &ProjectionSpec,
        pending: bool,
        module: Option<Module>,
    ) -> Result<Arc<Gen>, EngineError> {
        let selector = spec.selector.compile()?;
        Ok(Arc::new(Gen {
            name: name.to_owned(),
            generation,
            spec: spec.clone(),
            selector,
            module: RwLock::new(module),
            pending: AtomicBool::new(pending),
            position: AtomicU64::new(0),
            events_applied: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            changed: Notify::new(),
            handle: Mutex::new(None),
            epoch: Mutex::new(self.db.epoch()),
        }))
    }

    /// A generation from its stored checkpoint.
    pub(super) fn load_gen(
        &self,
        name: &str,
        generation: u64,
        spec: &ProjectionSpec,
        pending: bool,
    ) -> Result<Arc<Gen>, EngineError> {
        // A module that cannot be loaded now (e.g. the server's limits changed) must not keep
        // the server from starting: the generation starts failed, and `resume` tries again.
        let (module, failure) = match self.modules.load_with(&spec.module, &[Entry::Evolve]) {
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
            Err(e) => return Err(EngineError::Corrupt(format!("projection {name:?}: {e}"))),
        };
        *g.failure.lock().expect("failure lock") = failure;
        if let Some(c) = self.db.read()?.projection_checkpoint(name, generation)? {
            g.position.store(c.position, Ordering::Release);
            g.events_applied.store(c.events_applied, Ordering::Release);
            g.keys.store(c.keys, Ordering::Release);
        }
        Ok(g)
    }

    /// Makes a caught-up pending generation the active one.
    pub(super) fn swap(&self, g: &Arc<Gen>) -> Result<(), EngineError> {
        let mut map = self.map.write().expect("map lock");
        let Some(proj) = map.get_mut(&g.name) else {
            return Ok(());
        };
        if !proj.pending.as_ref().is_some_and(|p| Arc::ptr_eq(p, g)) {
            return Ok(());
        }
        let old = proj.active.clone();
        old.halt();
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
                position: g.position.load(Ordering::Acquire),
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
        old.changed.notify(usize::MAX);
        tracing::info!(projection = %g.name, generation = g.generation, "new generation swapped in");
        Ok(())
    }
}
