//! A reactor's worker thread: read after the checkpoint, react to each event, save.

use super::*;

impl Shared {
    pub(crate) fn worker_with(
        &self,
        name: &str,
        spec: &ReactorSpec,
        module: Option<Module>,
    ) -> Result<Arc<Worker>, DefinitionError> {
        let selector = spec.selector.compile()?;
        Ok(Arc::new(Worker {
            name: name.to_owned(),
            spec: spec.clone(),
            selector,
            module: RwLock::new(module),
            counters: Default::default(),
            published: std::sync::Mutex::new((std::time::Instant::now(), 0)),
            life: Lifecycle::default(),
        }))
    }

    /// Persists definition, flags and checkpoint.
    pub(crate) fn save(&self, name: &str, w: &Worker) -> Result<(), StoreError> {
        let record = Record {
            spec: w.spec.clone(),
            paused: w.life.is_paused(),
            failure: w.life.failure(),
        };
        let json = serde_json::to_vec(&record).expect("a record serializes");
        let mut txn = self.db.write(Durability::Immediate)?;
        txn.put(CatalogTable::Reactors, name, &json)?;
        txn.put_reactor_checkpoint(name, w.checkpoint())?;
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn start(shared: &Arc<Shared>, w: &Arc<Worker>) {
        let sh = shared.clone();
        let worker = w.clone();
        w.life
            .spawn(format!("loom-reactor-{}", w.name), move || sh.run(&worker));
    }

    /// Whether this node runs the reactors' effects now (always, on a single node).
    pub(crate) fn is_active(&self) -> bool {
        self.active
            .as_ref()
            .is_none_or(|a| a.load(Ordering::Acquire))
    }

    pub(crate) fn run(&self, w: &Worker) {
        while !w.life.stopping() {
            if w.life.idle() {
                continue;
            }
            if !self.is_active() {
                // Another node (the sequencer) runs it; its progress arrives as changes.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let head = self.ledger.head();
            let position = w.life.position();
            if position >= head {
                w.life.reach_head();
                if self.ledger.is_replicated() {
                    self.publish_progress(w, w.checkpoint());
                }
                self.ledger
                    .wait_for(position + 1, Duration::from_millis(250));
                continue;
            }
            if let Err((at, message)) = self.step(w, head) {
                if w.life.stopping() {
                    // Interrupted by a shutdown, not a failure: the event is retried next time.
                    break;
                }
                tracing::warn!(reactor = %w.name, position = at, %message, "reactor failed");
                w.life.fail(Failure {
                    position: at,
                    message,
                });
                if let Err(e) = self.save(&w.name, w) {
                    tracing::error!(reactor = %w.name, error = %e, "saving reactor status failed");
                }
                w.life.notify();
            }
        }
    }

    /// Reacts to the next batch; the checkpoint is saved after each batch (and before a
    /// failure is reported). Effects are idempotent, so a crash between an effect and the
    /// checkpoint only repeats it harmlessly.
    pub(crate) fn step(&self, w: &Worker, head: u64) -> Result<(), (u64, String)> {
        let position = w.life.position();
        let events = self
            .ledger
            .read(&w.selector, ReadOptions::after(position, BATCH))
            .map_err(|e| (position + 1, e.to_string()))?;
        let covered = match events.last() {
            Some(last) if events.len() >= BATCH => last.position,
            Some(last) => last.position.max(head),
            None => head,
        };
        let mut result = Ok(());
        let own = own_source(&w.name);
        for e in &events {
            if w.life.interrupted() {
                break;
            }
            if !w.spec.react_to_own && e.event.source == own {
                w.life.set_position(e.position);
                continue;
            }
            if let Err(message) = self.react(w, e) {
                result = Err((e.position, message));
                break;
            }
            w.life.set_position(e.position);
        }
        if result.is_ok() && !w.life.interrupted() {
            w.life.advance(covered, covered >= head);
        }
        if w.life.position() != position {
            self.save_checkpoint(w)
                .map_err(|e| (position + 1, e.to_string()))?;
        }
        result
    }

    /// The worker's module, loaded again if it could not be loaded at startup.
    pub(crate) fn module_of(&self, w: &Worker) -> Result<Module, DefinitionError> {
        if let Some(m) = w.module.read().expect("module lock").as_ref() {
            return Ok(m.clone());
        }
        let m =
            self.modules
                .load_with(&w.spec.module, w.spec.reducer.as_deref(), &[Entry::React])?;
        *w.module.write().expect("module lock") = Some(m.clone());
        Ok(m)
    }

    pub(crate) fn save_checkpoint(&self, w: &Worker) -> Result<(), StoreError> {
        let checkpoint = w.checkpoint();
        let mut txn = self.db.write(Durability::Immediate)?;
        txn.put_reactor_checkpoint(&w.name, checkpoint)?;
        txn.commit()?;
        if self.ledger.is_replicated() && self.is_active() {
            self.publish_progress(w, checkpoint);
        }
        Ok(())
    }

    /// Cluster mode: tells the other nodes how far the reactor got, at most every
    /// [`PROGRESS_EVERY`]. A failed publish is only logged: the next one carries the progress.
    fn publish_progress(&self, w: &Worker, checkpoint: ReactorCheckpoint) {
        let mut published = w.published.lock().expect("published lock");
        if published.1 >= checkpoint.position || published.0.elapsed() < PROGRESS_EVERY {
            return;
        }
        let change = crate::Change::ReactorProgress {
            name: w.name.clone(),
            checkpoint: checkpoint.into(),
        };
        match self.ledger.publish_engine_change(change.encode()) {
            Ok(_) => *published = (std::time::Instant::now(), checkpoint.position),
            Err(e) => {
                tracing::warn!(reactor = %w.name, error = %e, "publishing reactor progress failed")
            }
        }
    }
}

/// The `source` of the events a reactor appends.
pub(crate) fn own_source(reactor: &str) -> String {
    format!("loom/reactors/{reactor}")
}
