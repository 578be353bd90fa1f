//! Named projections: definitions, worker threads, blue/green upgrades, queries.
//!
//! Each projection has an *active* generation (serving queries) and, during an upgrade, a
//! *pending* one building from position 0 in the background. A generation's worker thread
//! reads matching events after its checkpoint through the ledger's indexes, groups them by
//! partition key, folds each group with one batched `evolve` call, and commits the new states
//! together with the new checkpoint in one catalog transaction (while catching up, those of a
//! few steps together: [`carry`]). It then sleeps on the ledger's
//! head notification. When a pending generation has caught up with the head, it replaces the
//! active one atomically and the old states are deleted in the same transaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use event_listener::Listener;
use loom_ledger::{Catalog, CatalogTable, Durability, Epoch, ProjectionCheckpoint};
use loom_ledger::{
    CompiledSelector, DataRef, EventBatch, EventHead, EventView, Ledger, ReadOptions, Selector,
};
use loom_runtime::{CallError, Entry, Module, Outcome, Runtime};

use crate::lifecycle::Lifecycle;
use crate::modules::ModuleStore;
use crate::{DefinitionError, EngineConfig, EngineError, Kind, PutOutcome, QueryError, StoreError};

mod carry;
mod fold;
mod gate;
mod generation;
mod notes;
mod read;
mod spec;
mod state;
mod worker;

pub use spec::{
    At, GenerationStatus, NextStatus, OnError, Partition, ProjectionSpec, ProjectionStatus,
    Quarantined, StateView,
};

use crate::lifecycle::Failure;

use carry::Carry;
use spec::{PendingRecord, Record};
use state::{
    KeyState, LARGE_CALL_BYTES, LARGE_CALL_EVENTS, MAX_CALL_EVENTS, decode_state, state_after,
};
use worker::Fault;

/// Longest gap between durable projection commits. In between, projection commits skip the
/// fsync: state and checkpoint still commit atomically together, so a crash only rolls a
/// projection back to an earlier consistent checkpoint, from which it catches up again.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// One generation of a projection and its worker.
struct Gen {
    name: String,
    generation: u64,
    spec: ProjectionSpec,
    selector: CompiledSelector,
    /// The compiled module; `None` when it could not be loaded when the server started (the
    /// generation is then failed; `resume` tries again).
    module: RwLock<Option<Module>>,
    pending: AtomicBool,
    events_applied: AtomicU64,
    keys: AtomicU64,
    /// Position, flags and thread.
    life: Lifecycle,
    /// The opening of the database that `position`, `events_applied` and `keys` agree
    /// with. After an I/O error the ledger reopens the database, which drops the projection
    /// commits that were not durable yet; the worker then reloads its progress from the
    /// stored checkpoint.
    epoch: Mutex<Epoch>,
    /// Skipped events and quarantined streams, as committed.
    notes: Mutex<notes::Notes>,
    /// Set by `resume`: the worker retries the quarantined streams before its next step.
    retry_quarantine: AtomicBool,
    /// Set once a call of [`state::LARGE_CALL_EVENTS`] hit a limit: large groups fold in
    /// calls of [`state::MAX_CALL_EVENTS`] from then on.
    small_calls: AtomicBool,
    /// Waiting in the gate's line for a turn to catch up.
    queued: AtomicBool,
}

impl std::fmt::Debug for Gen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gen")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

struct Proj {
    record: Record,
    active: Arc<Gen>,
    pending: Option<Arc<Gen>>,
}

struct Shared {
    ledger: Arc<Ledger>,
    db: Catalog,
    runtime: Arc<Runtime>,
    modules: Arc<ModuleStore>,
    batch_events: usize,
    batch_bytes: usize,
    /// Lets `EngineConfig::catch_ups` generations catch up at a time.
    gate: Arc<gate::Gate>,
    max_wait: Duration,
    map: RwLock<BTreeMap<String, Proj>>,
    last_durable: Mutex<Instant>,
}

/// The projections of one ledger.
pub struct Projections {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projections").finish_non_exhaustive()
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Projections {
    pub(crate) fn open(
        ledger: Arc<Ledger>,
        runtime: Arc<Runtime>,
        modules: Arc<ModuleStore>,
        config: &EngineConfig,
    ) -> Result<Projections, StoreError> {
        let db = ledger.catalog();
        let mut records = Vec::new();
        for (name, v) in db.read()?.list(CatalogTable::Projections)? {
            let record: Record = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("projection {name:?}: {e}")))?;
            records.push((name, record));
        }
        let shared = Arc::new(Shared {
            ledger,
            db,
            runtime,
            modules,
            batch_events: config.batch_events.max(1),
            batch_bytes: config.batch_bytes.max(1),
            gate: gate::Gate::new(config.catch_ups, config.catch_up_slice),
            max_wait: config.max_wait,
            map: RwLock::new(BTreeMap::new()),
            last_durable: Mutex::new(Instant::now()),
        });
        for (name, record) in records {
            let active = shared.load_gen(&name, record.generation, &record.spec, false)?;
            let failure = record.failure.clone().or_else(|| active.life.failure());
            active.life.restore(record.paused, failure);
            let pending = match &record.pending {
                Some(p) => {
                    let g = shared.load_gen(&name, p.generation, &p.spec, true)?;
                    let failure = record.pending_failure.clone().or_else(|| g.life.failure());
                    g.life.restore(record.paused, failure);
                    Some(g)
                }
                None => None,
            };
            Shared::start(&shared, &active);
            if let Some(p) = &pending {
                Shared::start(&shared, p);
            }
            shared.map.write().expect("map lock").insert(
                name,
                Proj {
                    record,
                    active,
                    pending,
                },
            );
        }
        Ok(Projections { shared })
    }

    /// Creates or changes a projection.
    pub fn put(&self, name: &str, mut spec: ProjectionSpec) -> Result<PutOutcome, DefinitionError> {
        let _pin = self.shared.modules.pin();
        crate::check_name("projection", name)?;
        let sh = &self.shared;
        // Validate before touching anything. The reducer a v2 module chose is recorded, so
        // that the same definition with it or without it is the same definition.
        let module =
            sh.modules
                .load_with(&spec.module, spec.reducer.as_deref(), &[Entry::Evolve])?;
        spec.reducer = module.reducer().map(|r| r.name.clone());
        spec.selector.compile()?;
        crate::names::check_registered(&sh.ledger, &spec.selector)?;
        let mut map = sh.map.write().expect("map lock");
        match map.get_mut(name) {
            None => {
                let record = Record {
                    spec: spec.clone(),
                    generation: 1,
                    pending: None,
                    paused: false,
                    failure: None,
                    pending_failure: None,
                    created_micros: now_micros(),
                };
                let gen_ = sh.new_gen(name, 1, &spec, false)?;
                sh.write_record(name, &record, None)?;
                Shared::start(sh, &gen_);
                map.insert(
                    name.to_owned(),
                    Proj {
                        record,
                        active: gen_,
                        pending: None,
                    },
                );
                Ok(PutOutcome::Created)
            }
            Some(proj) => {
                if let Some(p) = &proj.pending {
                    if p.spec == spec {
                        return Ok(PutOutcome::Unchanged);
                    }
                } else if proj.active.spec == spec {
                    return Ok(PutOutcome::Unchanged);
                }
                // A new generation, building in the background.
                let generation = proj
                    .pending
                    .as_ref()
                    .map_or(proj.active.generation, |p| p.generation)
                    + 1;
                let gen_ = sh.new_gen(name, generation, &spec, true)?;
                gen_.life.restore(proj.record.paused, None);
                let old_pending = proj.pending.take();
                if let Some(old) = &old_pending {
                    old.life.halt();
                }
                let mut record = proj.record.clone();
                record.pending = Some(PendingRecord {
                    spec: spec.clone(),
                    generation,
                });
                record.pending_failure = None;
                sh.write_record(name, &record, old_pending.as_ref().map(|g| g.generation))?;
                proj.record = record;
                proj.pending = Some(gen_.clone());
                Shared::start(sh, &gen_);
                Ok(PutOutcome::Upgrading)
            }
        }
    }

    /// Every projection's status.
    pub fn list(&self) -> Vec<ProjectionStatus> {
        let head = self.shared.ledger.head();
        let map = self.shared.map.read().expect("map lock");
        map.iter()
            .map(|(name, p)| status_of(name, p, head))
            .collect()
    }

    /// One projection's status.
    pub fn status(&self, name: &str) -> Result<ProjectionStatus, QueryError> {
        let head = self.shared.ledger.head();
        let map = self.shared.map.read().expect("map lock");
        let p = map
            .get(name)
            .ok_or_else(|| QueryError::NotFound(name.to_owned()))?;
        Ok(status_of(name, p, head))
    }

    /// Module ids in use, with their users.
    pub(crate) fn users_of(&self, module: &str) -> Vec<String> {
        let map = self.shared.map.read().expect("map lock");
        let mut users = Vec::new();
        for (name, p) in map.iter() {
            if p.active.spec.module == module
                || p.pending.as_ref().is_some_and(|g| g.spec.module == module)
            {
                users.push(format!("projection {name}"));
            }
        }
        users
    }

    fn active(&self, name: &str) -> Result<Arc<Gen>, QueryError> {
        let map = self.shared.map.read().expect("map lock");
        map.get(name)
            .map(|p| p.active.clone())
            .ok_or_else(|| QueryError::NotFound(name.to_owned()))
    }

    /// Pauses a projection (both generations during an upgrade).
    pub fn pause(&self, name: &str) -> Result<(), DefinitionError> {
        self.set_paused(name, true)
    }

    /// Resumes a paused or failed projection; a failed one retries the failing event.
    pub fn resume(&self, name: &str) -> Result<(), DefinitionError> {
        self.set_paused(name, false)
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<(), DefinitionError> {
        let sh = &self.shared;
        let mut map = sh.map.write().expect("map lock");
        let proj = map
            .get_mut(name)
            .ok_or_else(|| DefinitionError::not_found(Kind::Projection, name))?;
        let mut record = proj.record.clone();
        record.paused = paused;
        if !paused {
            record.failure = None;
            record.pending_failure = None;
        }
        sh.write_record(name, &record, None)?;
        proj.record = record;
        for g in std::iter::once(&proj.active).chain(proj.pending.as_ref()) {
            if !paused {
                g.retry_quarantine.store(true, Ordering::Release);
            }
            g.life.set_paused(paused);
        }
        Ok(())
    }

    /// Starts the projection again from position 0 (its state is dropped now).
    pub fn rebuild(&self, name: &str) -> Result<(), DefinitionError> {
        let sh = &self.shared;
        let mut map = sh.map.write().expect("map lock");
        let proj = map
            .get_mut(name)
            .ok_or_else(|| DefinitionError::not_found(Kind::Projection, name))?;
        let generation = proj
            .pending
            .as_ref()
            .map_or(proj.active.generation, |p| p.generation)
            + 1;
        let spec = proj.active.spec.clone();
        let gen_ = sh.new_gen(name, generation, &spec, false)?;
        gen_.life.restore(proj.record.paused, None);
        let old = proj.active.clone();
        old.life.halt();
        let mut record = proj.record.clone();
        record.generation = generation;
        record.failure = None;
        sh.write_record(name, &record, Some(old.generation))?;
        proj.record = record;
        proj.active = gen_.clone();
        Shared::start(sh, &gen_);
        Ok(())
    }

    /// Deletes a projection and all its state.
    pub fn delete(&self, name: &str) -> Result<(), DefinitionError> {
        let sh = &self.shared;
        let proj = {
            let mut map = sh.map.write().expect("map lock");
            map.remove(name)
                .ok_or_else(|| DefinitionError::not_found(Kind::Projection, name))?
        };
        let gens: Vec<Arc<Gen>> = std::iter::once(proj.active).chain(proj.pending).collect();
        for g in &gens {
            g.life.halt();
        }
        let mut txn = sh.db.write(Durability::Immediate)?;
        txn.remove(CatalogTable::Projections, name)?;
        for g in &gens {
            txn.remove_projection_generation(name, g.generation)?;
        }
        txn.commit()?;
        for g in &gens {
            g.life.join();
        }
        Ok(())
    }

    /// Stops every worker and waits for them.
    pub fn shutdown(&self) {
        let gens: Vec<Arc<Gen>> = {
            let map = self.shared.map.read().expect("map lock");
            map.values()
                .flat_map(|p| std::iter::once(p.active.clone()).chain(p.pending.clone()))
                .collect()
        };
        for g in &gens {
            g.life.halt();
        }
        for g in &gens {
            g.life.join();
        }
    }
}

fn status_of(name: &str, p: &Proj, head: u64) -> ProjectionStatus {
    ProjectionStatus {
        name: name.to_owned(),
        spec: p.active.spec.clone(),
        created_at: loom_ledger::format_time(p.record.created_micros),
        active: p.active.status(head),
        next: p.pending.as_ref().map(|g| NextStatus {
            spec: g.spec.clone(),
            progress: g.status(head),
        }),
    }
}

fn check_key<'k>(g: &Gen, key: Option<&'k str>) -> Result<&'k str, QueryError> {
    match (g.spec.partition, key) {
        (Partition::Single, None) => Ok(""),
        (Partition::Single, Some(_)) => Err(QueryError::WrongPartition(format!(
            "projection {:?} is partitioned \"single\": ask for its state without a key",
            g.name
        ))),
        (Partition::Stream, None) => Err(QueryError::WrongPartition(format!(
            "projection {:?} is partitioned by stream: ask for …/state/{{entity}}/{{key}}",
            g.name
        ))),
        (Partition::Stream, Some(k)) => Ok(k),
    }
}

/// The projection's selector restricted to one stream, or `None` if it cannot match it.
fn narrow_to_stream(sel: &Selector, subject: &str) -> Option<Selector> {
    let (entity, key) = loom_ledger::split_subject(subject)?;
    if sel.entity.as_deref().is_some_and(|e| e != entity) {
        return None;
    }
    if !sel.keys.is_empty() && !sel.keys.iter().any(|k| k == key) {
        return None;
    }
    Some(Selector {
        entity: Some(entity.to_owned()),
        keys: vec![key.to_owned()],
        ..sel.clone()
    })
}

impl Shared {}
