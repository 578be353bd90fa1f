//! Reactors: events in, further work out.
//!
//! A reactor's worker thread reads the events its selector matches after its checkpoint and,
//! one event at a time in ledger order, calls the module's `react`. The reaction may ask to
//! append events, run commands through deciders, and deliver CloudEvents to the reactor's sink.
//! Every effect is idempotent on replay:
//!
//! * appended events get the source `loom/reactors/{name}` and the id `{position}/{i}`
//!   (derived from the reacting event), so appending them again is an idempotent no-op;
//! * commands run with the idempotency key `r-{name}-{position}-{i}`;
//! * deliveries carry the id `{name}/{position}/{i}` (sinks can de-duplicate on it).
//!
//! The checkpoint advances only after all effects of an event are durable (appends and
//! commands acknowledged, deliveries answered 2xx), so delivery is at-least-once across crashes.
//! A sink that stays down is retried with exponential backoff and then fails the reactor with
//! a clear status; nothing is skipped, and `resume` retries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use event_listener::Listener;
use loom_ledger::{
    AppendRequest, CompiledSelector, Data, Event, ExtensionValue, Ledger, Origin, ReadOptions,
    Selector, StoredEvent,
};
use loom_ledger::{Catalog, CatalogTable, Durability, ReactorCheckpoint};
use loom_runtime::{Entry, Module, Outcome, Runtime};
use serde::{Deserialize, Serialize};

use crate::deciders::Deciders;
use crate::lifecycle::{Failure, Lifecycle, Status};
use crate::modules::ModuleStore;
use crate::{DefinitionError, Kind, PutOutcome, StoreError};

mod effects;
mod spec;
mod worker;

pub(crate) use effects::hops_extension;
pub use spec::{ReactorSpec, ReactorStatus, SinkPolicy};

/// Events read per batch.
const BATCH: usize = 256;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    spec: ReactorSpec,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    failure: Option<Failure>,
}

struct Worker {
    name: String,
    spec: ReactorSpec,
    selector: CompiledSelector,
    /// `None` when the module could not be loaded when the server started (the reactor is
    /// then failed; `resume` tries again).
    module: RwLock<Option<Module>>,
    counters: Counters,
    /// Cluster mode: when the progress was last published, and at which position.
    published: std::sync::Mutex<(std::time::Instant, u64)>,
    /// Position, flags and thread.
    life: Lifecycle,
}

/// What a reactor has done so far (kept in its checkpoint).
#[derive(Debug, Default)]
struct Counters {
    reacted: AtomicU64,
    appended: AtomicU64,
    commands: AtomicU64,
    delivered: AtomicU64,
}

impl Worker {
    /// Position and counters, as the checkpoint stores them.
    fn checkpoint(&self) -> ReactorCheckpoint {
        let c = &self.counters;
        ReactorCheckpoint {
            position: self.life.position(),
            reacted: c.reacted.load(Ordering::Acquire),
            appended: c.appended.load(Ordering::Acquire),
            commands: c.commands.load(Ordering::Acquire),
            delivered: c.delivered.load(Ordering::Acquire),
        }
    }

    /// Continues from a checkpoint.
    fn restore(&self, cp: ReactorCheckpoint) {
        let c = &self.counters;
        self.life.set_position(cp.position);
        c.reacted.store(cp.reacted, Ordering::Release);
        c.appended.store(cp.appended, Ordering::Release);
        c.commands.store(cp.commands, Ordering::Release);
        c.delivered.store(cp.delivered, Ordering::Release);
    }

    fn status(&self, head: u64) -> ReactorStatus {
        // As one publication left them (`Lifecycle::progress`), as for projections.
        let (status, last_error, position) = self.life.progress();
        let c = self.checkpoint();
        ReactorStatus {
            name: self.name.clone(),
            spec: self.spec.clone(),
            status,
            position,
            head,
            lag: head.saturating_sub(position),
            reacted: c.reacted,
            appended: c.appended,
            commands: c.commands,
            delivered: c.delivered,
            last_error,
        }
    }
}

/// How reactors run.
pub(crate) struct Options {
    /// Sink retries.
    pub(crate) policy: SinkPolicy,
    /// [`crate::EngineConfig::max_reaction_hops`].
    pub(crate) max_hops: u64,
    /// [`crate::EngineConfig::reactors_active`].
    pub(crate) active: Option<Arc<AtomicBool>>,
}

/// How often the node that runs the reactors publishes their progress to the cluster's log:
/// the node that takes over repeats at most about this much of their (idempotent) work.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

struct Shared {
    ledger: Arc<Ledger>,
    /// Cluster mode: whether this node runs the reactors now.
    active: Option<Arc<AtomicBool>>,
    db: Catalog,
    runtime: Arc<Runtime>,
    modules: Arc<ModuleStore>,
    deciders: Arc<Deciders>,
    policy: SinkPolicy,
    /// [`crate::EngineConfig::max_reaction_hops`].
    max_hops: u64,
    http: ureq::Agent,
    workers: RwLock<BTreeMap<String, Arc<Worker>>>,
}

/// The reactors of one ledger.
pub struct Reactors {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Reactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactors").finish_non_exhaustive()
    }
}

fn check_sink(sink: &Option<String>) -> Result<(), DefinitionError> {
    if let Some(url) = sink {
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() > "http://".len()
            && url.parse::<ureq::http::Uri>().is_ok();
        if !ok {
            return Err(DefinitionError::InvalidSpec(format!(
                "sink {url:?} is not an http:// or https:// URL"
            )));
        }
    }
    Ok(())
}

impl Reactors {
    pub(crate) fn open(
        ledger: Arc<Ledger>,
        runtime: Arc<Runtime>,
        modules: Arc<ModuleStore>,
        deciders: Arc<Deciders>,
        options: Options,
    ) -> Result<Reactors, StoreError> {
        let Options {
            policy,
            max_hops,
            active,
        } = options;
        let db = ledger.catalog();
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(policy.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let shared = Arc::new(Shared {
            ledger,
            active,
            db,
            runtime,
            modules,
            deciders,
            policy,
            max_hops,
            http,
            workers: RwLock::new(BTreeMap::new()),
        });
        let mut loaded = Vec::new();
        {
            let snapshot = shared.db.read()?;
            for (name, v) in snapshot.list(CatalogTable::Reactors)? {
                let record: Record = serde_json::from_slice(&v)
                    .map_err(|e| StoreError::Corrupt(format!("reactor record: {e}")))?;
                let cp = snapshot.reactor_checkpoint(&name)?;
                loaded.push((name, record, cp));
            }
        }
        for (name, record, cp) in loaded {
            // A module that cannot be loaded now must not keep the server from starting: the
            // reactor starts failed, and `resume` tries again.
            let (module, load_failure) = match shared.modules.load_with(
                &record.spec.module,
                record.spec.reducer.as_deref(),
                &[Entry::React],
            ) {
                Ok(m) => (Some(m), None),
                Err(e) => {
                    tracing::error!(reactor = %name, module = %record.spec.module, error = %e, "reactor module could not be loaded");
                    let message = format!("module {} could not be loaded: {e}", record.spec.module);
                    (None, Some(message))
                }
            };
            let w = shared
                .worker_with(&name, &record.spec, module)
                .map_err(|e| StoreError::Corrupt(format!("reactor {name:?}: {e}")))?;
            if let Some(cp) = cp {
                w.restore(cp);
            }
            let failure = record.failure.or(load_failure.map(|message| Failure {
                position: 0,
                message,
            }));
            w.life.restore(record.paused, failure);
            Shared::start(&shared, &w);
            shared
                .workers
                .write()
                .expect("workers lock")
                .insert(name, w);
        }
        Ok(Reactors { shared })
    }

    /// Creates or replaces a reactor. A changed definition keeps the checkpoint (it reacts
    /// to what comes next); delete and re-create it to react to history again.
    pub fn put(&self, name: &str, mut spec: ReactorSpec) -> Result<PutOutcome, DefinitionError> {
        let _pin = self.shared.modules.pin();
        crate::check_name("reactor", name)?;
        check_sink(&spec.sink)?;
        let sh = &self.shared;
        // The reducer a v2 module chose is recorded (see Projections::put).
        let module =
            sh.modules
                .load_with(&spec.module, spec.reducer.as_deref(), &[Entry::React])?;
        spec.reducer = module.reducer().map(|r| r.name.clone());
        spec.selector.compile()?;
        crate::names::check_registered(&sh.ledger, &spec.selector)?;
        let w = sh.worker_with(name, &spec, Some(module))?;
        let mut workers = sh.workers.write().expect("workers lock");
        let mut outcome = PutOutcome::Created;
        if let Some(old) = workers.get(name) {
            if old.spec == spec {
                return Ok(PutOutcome::Unchanged);
            }
            outcome = PutOutcome::Replaced;
            old.life.halt();
            old.life.join();
            w.restore(old.checkpoint());
            w.life.restore(old.life.is_paused(), None);
        }
        sh.save(name, &w)?;
        Shared::start(sh, &w);
        workers.insert(name.to_owned(), w);
        Ok(outcome)
    }

    /// Every reactor's status.
    pub fn list(&self) -> Vec<ReactorStatus> {
        let head = self.shared.ledger.head();
        let workers = self.shared.workers.read().expect("workers lock");
        workers.values().map(|w| w.status(head)).collect()
    }

    /// One reactor's status.
    pub fn status(&self, name: &str) -> Result<ReactorStatus, DefinitionError> {
        Ok(self.get(name)?.status(self.shared.ledger.head()))
    }

    fn get(&self, name: &str) -> Result<Arc<Worker>, DefinitionError> {
        let workers = self.shared.workers.read().expect("workers lock");
        workers
            .get(name)
            .cloned()
            .ok_or_else(|| DefinitionError::not_found(Kind::Reactor, name))
    }

    /// Pauses a reactor.
    pub fn pause(&self, name: &str) -> Result<(), DefinitionError> {
        let w = self.get(name)?;
        w.life.set_paused(true);
        self.shared.save(name, &w)?;
        Ok(())
    }

    /// Resumes a paused or failed reactor (a failed one retries the event it failed on).
    pub fn resume(&self, name: &str) -> Result<(), DefinitionError> {
        let w = self.get(name)?;
        w.life.set_paused(false);
        self.shared.save(name, &w)?;
        Ok(())
    }

    /// Cluster mode: the progress the node that runs the reactor published. A node that does
    /// not run it takes it over (it goes on from there when it becomes the sequencer).
    pub(crate) fn follow_progress(
        &self,
        name: &str,
        checkpoint: ReactorCheckpoint,
    ) -> Result<(), DefinitionError> {
        let Ok(w) = self.get(name) else {
            // Deleted since: nothing to follow.
            return Ok(());
        };
        if self.shared.is_active() || checkpoint.position <= w.life.position() {
            return Ok(());
        }
        w.restore(checkpoint);
        self.shared.save_checkpoint(&w)?;
        Ok(())
    }

    /// Deletes a reactor and its checkpoint.
    pub fn delete(&self, name: &str) -> Result<(), DefinitionError> {
        let w = {
            let mut workers = self.shared.workers.write().expect("workers lock");
            workers
                .remove(name)
                .ok_or_else(|| DefinitionError::not_found(Kind::Reactor, name))?
        };
        w.life.halt();
        w.life.join();
        let mut txn = self.shared.db.write(Durability::Immediate)?;
        txn.remove(CatalogTable::Reactors, name)?;
        txn.remove_reactor_checkpoint(name)?;
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn users_of(&self, module: &str) -> Vec<String> {
        let workers = self.shared.workers.read().expect("workers lock");
        workers
            .values()
            .filter(|w| w.spec.module == module)
            .map(|w| format!("reactor {}", w.name))
            .collect()
    }

    /// Stops every worker.
    pub fn shutdown(&self) {
        let workers: Vec<_> = self
            .shared
            .workers
            .read()
            .expect("workers lock")
            .values()
            .cloned()
            .collect();
        for w in &workers {
            w.life.halt();
        }
        for w in &workers {
            w.life.join();
        }
    }
}
