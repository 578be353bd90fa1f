//! Named projections: definitions, worker threads, blue/green upgrades, queries.
//!
//! Each projection has an *active* generation (serving queries) and, during an upgrade, a
//! *pending* one building from position 0 in the background. A generation's worker thread
//! reads matching events after its checkpoint through the ledger's indexes, groups them by
//! partition key, folds each group with one batched `evolve` call, and commits the new states
//! together with the new checkpoint in one catalog transaction. It then sleeps on the ledger's
//! head notification. When a pending generation has caught up with the head, it replaces the
//! active one atomically and the old states are deleted in the same transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_listener::{Event as Notify, Listener};
use loom_ledger::{Catalog, CatalogTable, Durability, Epoch, ProjectionCheckpoint};
use loom_ledger::{CompiledSelector, EventBatch, EventView, Ledger, ReadOptions, Selector};
use loom_runtime::{CallError, Entry, Module, Outcome, Runtime};
use serde::{Deserialize, Serialize};

use crate::modules::ModuleStore;
use crate::{EngineConfig, EngineError};

/// Longest gap between durable projection commits. In between, projection commits skip the
/// fsync: state and checkpoint still commit atomically together, so a crash only rolls a
/// projection back to an earlier consistent checkpoint, from which it catches up again.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// How a projection partitions its state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Partition {
    /// One state per stream (`{entity}/{key}`).
    #[default]
    Stream,
    /// One state for everything selected.
    Single,
}

/// A projection's definition, as `PUT /v1/projections/{name}` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSpec {
    /// Module id (`sha256:…`), exporting `evolve`.
    pub module: String,
    /// Which events it folds (default: all).
    #[serde(default)]
    pub selector: Selector,
    /// Partitioning (default: per stream).
    #[serde(default)]
    pub partition: Partition,
}

/// What a `put` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new projection; it is catching up.
    Created,
    /// The same definition was in place (or building) already.
    Unchanged,
    /// A new generation is building in the background; the current one serves until it has
    /// caught up.
    Upgrading,
}

/// Life-cycle status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Following the head.
    Running,
    /// Folding history; has not reached the head yet.
    CatchingUp,
    /// Paused by a user.
    Paused,
    /// Stopped by a module error; `resume` retries, a new module version rebuilds.
    Failed,
}

/// The error that stopped a generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Position of the event the module failed on (0 when not tied to an event).
    pub position: u64,
    /// What went wrong.
    pub message: String,
}

/// One generation's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GenerationStatus {
    /// Generation number (increases with every upgrade or rebuild).
    pub generation: u64,
    /// Its module.
    pub module: String,
    /// Status.
    pub status: Status,
    /// Every selected event up to here is folded.
    pub position: u64,
    /// The ledger's head.
    pub head: u64,
    /// `head - position`.
    pub lag: u64,
    /// Partition keys with state.
    pub keys: u64,
    /// Events folded.
    pub events_applied: u64,
    /// The error that stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Failure>,
}

/// `GET /v1/projections/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    /// Name.
    pub name: String,
    /// The serving definition.
    pub spec: ProjectionSpec,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// The serving generation.
    #[serde(flatten)]
    pub active: GenerationStatus,
    /// A generation building in the background, if an upgrade is under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<NextStatus>,
}

/// The building generation of an upgrade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NextStatus {
    /// Its definition.
    pub spec: ProjectionSpec,
    /// Its progress.
    #[serde(flatten)]
    pub progress: GenerationStatus,
}

/// Which moment a state query is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The live state.
    Now,
    /// The state after every selected event up to this position (replayed).
    Position(u64),
    /// The state at this time (µs since the epoch): the position the head had then.
    Time(i64),
}

/// A state answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateView {
    /// The state, JSON.
    pub state: Vec<u8>,
    /// The state includes every selected event up to this position.
    pub position: u64,
    /// Events folded into this state.
    pub events_applied: u64,
    /// Recorded time of the first event folded (µs), if any.
    pub created_micros: Option<i64>,
    /// Recorded time of the last event folded (µs), if any.
    pub updated_micros: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    spec: ProjectionSpec,
    generation: u64,
    #[serde(default)]
    pending: Option<PendingRecord>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    failure: Option<Failure>,
    #[serde(default)]
    pending_failure: Option<Failure>,
    created_micros: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingRecord {
    spec: ProjectionSpec,
    generation: u64,
}

/// Most events one `evolve` call folds (a larger group is folded in several calls).
const MAX_CALL_EVENTS: usize = 5_000;

/// State record: position u64, events u64, created i64, updated i64 (LE), then the state JSON.
const HEADER: usize = 32;

fn encode_state(position: u64, events: u64, created: i64, updated: i64, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + state.len());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&events.to_le_bytes());
    out.extend_from_slice(&created.to_le_bytes());
    out.extend_from_slice(&updated.to_le_bytes());
    out.extend_from_slice(state);
    out
}

struct KeyState {
    events: u64,
    created: i64,
    updated: i64,
    state: Vec<u8>,
}

fn decode_state(bytes: &[u8]) -> Result<KeyState, EngineError> {
    if bytes.len() < HEADER {
        return Err(EngineError::Corrupt(
            "projection state record too short".into(),
        ));
    }
    let word = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        a
    };
    Ok(KeyState {
        events: u64::from_le_bytes(word(1)),
        created: i64::from_le_bytes(word(2)),
        updated: i64::from_le_bytes(word(3)),
        state: bytes[HEADER..].to_vec(),
    })
}

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
    position: AtomicU64,
    events_applied: AtomicU64,
    keys: AtomicU64,
    caught_up: AtomicBool,
    paused: AtomicBool,
    stop: AtomicBool,
    failure: Mutex<Option<Failure>>,
    changed: Notify,
    handle: Mutex<Option<JoinHandle<()>>>,
    /// The opening of the database that `position`, `events_applied` and `keys` agree
    /// with. After an I/O error the ledger reopens the database, which drops the projection
    /// commits that were not durable yet; the worker then reloads its progress from the
    /// stored checkpoint.
    epoch: Mutex<Epoch>,
}

impl std::fmt::Debug for Gen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gen")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Gen {
    fn status(&self, head: u64) -> GenerationStatus {
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

    fn halt(&self) {
        self.stop.store(true, Ordering::Release);
        self.changed.notify(usize::MAX);
    }

    fn join(&self) {
        if let Some(h) = self.handle.lock().expect("handle lock").take() {
            let _ = h.join();
        }
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
    ) -> Result<Projections, EngineError> {
        let db = ledger.catalog();
        let mut records = Vec::new();
        for (name, v) in db.read()?.list(CatalogTable::Projections)? {
            let record: Record = serde_json::from_slice(&v)
                .map_err(|e| EngineError::Corrupt(format!("projection {name:?}: {e}")))?;
            records.push((name, record));
        }
        let shared = Arc::new(Shared {
            ledger,
            db,
            runtime,
            modules,
            batch_events: config.batch_events.max(1),
            max_wait: config.max_wait,
            map: RwLock::new(BTreeMap::new()),
            last_durable: Mutex::new(Instant::now()),
        });
        for (name, record) in records {
            let active = shared.load_gen(&name, record.generation, &record.spec, false)?;
            active.paused.store(record.paused, Ordering::Release);
            if record.failure.is_some() {
                *active.failure.lock().expect("failure lock") = record.failure.clone();
            }
            let pending = match &record.pending {
                Some(p) => {
                    let g = shared.load_gen(&name, p.generation, &p.spec, true)?;
                    g.paused.store(record.paused, Ordering::Release);
                    if record.pending_failure.is_some() {
                        *g.failure.lock().expect("failure lock") = record.pending_failure.clone();
                    }
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
    pub fn put(&self, name: &str, spec: ProjectionSpec) -> Result<PutOutcome, EngineError> {
        let _pin = self.shared.modules.pin();
        crate::check_name("projection", name)?;
        let sh = &self.shared;
        // Validate before touching anything.
        sh.modules.load_with(&spec.module, &[Entry::Evolve])?;
        spec.selector.compile()?;
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
                gen_.paused.store(proj.record.paused, Ordering::Release);
                let old_pending = proj.pending.take();
                if let Some(old) = &old_pending {
                    old.halt();
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
    pub fn status(&self, name: &str) -> Result<ProjectionStatus, EngineError> {
        let head = self.shared.ledger.head();
        let map = self.shared.map.read().expect("map lock");
        let p = map
            .get(name)
            .ok_or_else(|| EngineError::ProjectionNotFound(name.to_owned()))?;
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

    fn active(&self, name: &str) -> Result<Arc<Gen>, EngineError> {
        let map = self.shared.map.read().expect("map lock");
        map.get(name)
            .map(|p| p.active.clone())
            .ok_or_else(|| EngineError::ProjectionNotFound(name.to_owned()))
    }

    /// Pauses a projection (both generations during an upgrade).
    pub fn pause(&self, name: &str) -> Result<(), EngineError> {
        self.set_paused(name, true)
    }

    /// Resumes a paused or failed projection; a failed one retries the failing event.
    pub fn resume(&self, name: &str) -> Result<(), EngineError> {
        self.set_paused(name, false)
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<(), EngineError> {
        let sh = &self.shared;
        let mut map = sh.map.write().expect("map lock");
        let proj = map
            .get_mut(name)
            .ok_or_else(|| EngineError::ProjectionNotFound(name.to_owned()))?;
        let mut record = proj.record.clone();
        record.paused = paused;
        if !paused {
            record.failure = None;
            record.pending_failure = None;
        }
        sh.write_record(name, &record, None)?;
        proj.record = record;
        for g in std::iter::once(&proj.active).chain(proj.pending.as_ref()) {
            g.paused.store(paused, Ordering::Release);
            if !paused {
                *g.failure.lock().expect("failure lock") = None;
            }
            g.changed.notify(usize::MAX);
        }
        Ok(())
    }

    /// Starts the projection again from position 0 (its state is dropped now).
    pub fn rebuild(&self, name: &str) -> Result<(), EngineError> {
        let sh = &self.shared;
        let mut map = sh.map.write().expect("map lock");
        let proj = map
            .get_mut(name)
            .ok_or_else(|| EngineError::ProjectionNotFound(name.to_owned()))?;
        let generation = proj
            .pending
            .as_ref()
            .map_or(proj.active.generation, |p| p.generation)
            + 1;
        let spec = proj.active.spec.clone();
        let gen_ = sh.new_gen(name, generation, &spec, false)?;
        gen_.paused.store(proj.record.paused, Ordering::Release);
        let old = proj.active.clone();
        old.halt();
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
    pub fn delete(&self, name: &str) -> Result<(), EngineError> {
        let sh = &self.shared;
        let proj = {
            let mut map = sh.map.write().expect("map lock");
            map.remove(name)
                .ok_or_else(|| EngineError::ProjectionNotFound(name.to_owned()))?
        };
        let gens: Vec<Arc<Gen>> = std::iter::once(proj.active).chain(proj.pending).collect();
        for g in &gens {
            g.halt();
        }
        let mut txn = sh.db.write(Durability::Immediate)?;
        txn.remove(CatalogTable::Projections, name)?;
        for g in &gens {
            txn.remove_projection_generation(name, g.generation)?;
        }
        txn.commit()?;
        for g in &gens {
            g.join();
        }
        Ok(())
    }

    /// A state: live, or replayed at a position or time. `key` is the stream (`entity/key`)
    /// for `stream` projections and must be `None` for `single` ones.
    pub fn state(&self, name: &str, key: Option<&str>, at: At) -> Result<StateView, EngineError> {
        let g = self.active(name)?;
        let key = check_key(&g, key)?;
        match at {
            At::Now => self.live_state(&g, key),
            At::Position(p) => self.replay(&g, key, p),
            At::Time(t) => {
                let p = self.shared.ledger.position_at_time(t)?;
                self.replay(&g, key, p)
            }
        }
    }

    /// The live state when storage alone can answer it, without calling the module:
    /// `Ok(None)` when a `single` projection has no state yet (its initial state comes from
    /// the module; ask [`Projections::state`]). A short point read, for callers that must not
    /// run module code (such as an async request handler).
    pub fn stored_state(
        &self,
        name: &str,
        key: Option<&str>,
    ) -> Result<Option<StateView>, EngineError> {
        let g = self.active(name)?;
        let key = check_key(&g, key)?;
        self.read_live(&g, key)
    }

    fn live_state(&self, g: &Gen, key: &str) -> Result<StateView, EngineError> {
        match self.read_live(g, key)? {
            Some(view) => Ok(view),
            None => Ok(StateView {
                state: self
                    .shared
                    .runtime
                    .evolve(&self.shared.module_of(g)?, None, &[])?,
                // Nothing folded yet, as of the generation's position.
                position: g.position.load(Ordering::Acquire),
                events_applied: 0,
                created_micros: None,
                updated_micros: None,
            }),
        }
    }

    /// The stored live state; `None` for a `single` projection without state yet.
    fn read_live(&self, g: &Gen, key: &str) -> Result<Option<StateView>, EngineError> {
        let sh = &self.shared;
        // The in-memory position is read *before* the snapshot: the worker publishes it only
        // after committing, so every state it covers is in the snapshot. Read after, it could
        // name a commit the snapshot does not hold and overstate the answer's position.
        let in_memory = g.position.load(Ordering::Acquire);
        // The checkpoint is read in the same snapshot as the state.
        let snapshot = sh.db.read()?;
        let position = snapshot
            .projection_checkpoint(&g.name, g.generation)?
            .map_or(0, |c| c.position);
        // A generation ahead in memory (no matching events since) is as exact.
        let position = position.max(in_memory);
        match snapshot.state(&g.name, g.generation, key)? {
            Some(v) => {
                let s = decode_state(&v)?;
                Ok(Some(StateView {
                    state: s.state,
                    position,
                    events_applied: s.events,
                    created_micros: Some(s.created),
                    updated_micros: Some(s.updated),
                }))
            }
            None if g.spec.partition == Partition::Single => Ok(None),
            None => Err(EngineError::KeyNotFound {
                name: g.name.clone(),
                key: key.to_owned(),
            }),
        }
    }

    fn replay(&self, g: &Gen, key: &str, position: u64) -> Result<StateView, EngineError> {
        let sh = &self.shared;
        let module = sh.module_of(g)?;
        let position = position.min(sh.ledger.head());
        let selector = match g.spec.partition {
            Partition::Single => g.selector.clone(),
            Partition::Stream => {
                let Some(sel) = narrow_to_stream(&g.spec.selector, key) else {
                    return Err(EngineError::KeyNotFound {
                        name: g.name.clone(),
                        key: key.to_owned(),
                    });
                };
                sel.compile()?
            }
        };
        let mut state: Option<Vec<u8>> = None;
        let mut after = 0;
        let mut applied = 0u64;
        let (mut created, mut updated) = (None, None);
        loop {
            let opts = ReadOptions {
                after,
                before: Some(position.saturating_add(1)),
                limit: MAX_CALL_EVENTS,
                backwards: false,
            };
            let batch = sh.ledger.read_batch(&selector, opts)?;
            let events: Vec<EventView<'_>> = batch.iter().collect();
            let Some(last) = events.last() else { break };
            after = last.position;
            created.get_or_insert(events[0].recorded_micros);
            updated = Some(last.recorded_micros);
            applied += events.len() as u64;
            state = Some(
                sh.runtime
                    .evolve_views(&module, state.as_deref(), &events)?,
            );
            if events.len() < MAX_CALL_EVENTS {
                break;
            }
        }
        let state = match state {
            Some(s) => s,
            None if g.spec.partition == Partition::Single => {
                sh.runtime.evolve(&module, None, &[])?
            }
            None => {
                return Err(EngineError::KeyNotFound {
                    name: g.name.clone(),
                    key: key.to_owned(),
                });
            }
        };
        Ok(StateView {
            state,
            position,
            events_applied: applied,
            created_micros: created,
            updated_micros: updated,
        })
    }

    /// Calls the module's `query` export on a live state with parameters (JSON).
    pub fn query(
        &self,
        name: &str,
        key: Option<&str>,
        params: &[u8],
    ) -> Result<Vec<u8>, EngineError> {
        let g = self.active(name)?;
        let module = self.shared.module_of(&g)?;
        if !module.exports(Entry::Query) {
            return Err(EngineError::MissingExport {
                module: g.spec.module.clone(),
                entry: "query",
            });
        }
        let view = self.state(name, key, At::Now)?;
        match self
            .shared
            .runtime
            .query(&module, Some(&view.state), params)?
        {
            Outcome::Ok(out) => Ok(out),
            Outcome::Rejected(r) => Err(EngineError::Invalid(crate::rejection_message(&r))),
        }
    }

    /// Partition keys with state, in order, after `after`.
    pub fn keys(
        &self,
        name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, EngineError> {
        let g = self.active(name)?;
        // `after` itself is in the range when it has a state: ask for one more.
        let mut keys = self.shared.db.read()?.state_keys(
            &g.name,
            g.generation,
            after.unwrap_or(""),
            limit.saturating_add(1),
        )?;
        if after.is_some_and(|a| keys.first().is_some_and(|k| k == a)) {
            keys.remove(0);
        }
        keys.truncate(limit);
        Ok(keys)
    }

    /// Blocks until the projection's serving generation has folded everything up to
    /// `position`, or `timeout` (capped by the engine's `max_wait`) passes.
    pub fn wait_for(
        &self,
        name: &str,
        position: u64,
        timeout: Duration,
    ) -> Result<u64, EngineError> {
        let timeout = timeout.min(self.shared.max_wait);
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let g = self.active(name)?;
            let reached = g.position.load(Ordering::Acquire);
            if reached >= position {
                return Ok(reached);
            }
            let listener = g.changed.listen();
            let reached = g.position.load(Ordering::Acquire);
            if reached >= position {
                return Ok(reached);
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Timeout {
                    name: name.to_owned(),
                    wanted: position,
                    reached,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            // Wake at least every 100 ms to notice a swap of generations.
            let _ =
                listener.wait_deadline(deadline.min(Instant::now() + Duration::from_millis(100)));
        }
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
            g.halt();
        }
        for g in &gens {
            g.join();
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

fn check_key<'k>(g: &Gen, key: Option<&'k str>) -> Result<&'k str, EngineError> {
    match (g.spec.partition, key) {
        (Partition::Single, None) => Ok(""),
        (Partition::Single, Some(_)) => Err(EngineError::Invalid(format!(
            "projection {:?} is partitioned \"single\": ask for its state without a key",
            g.name
        ))),
        (Partition::Stream, None) => Err(EngineError::Invalid(format!(
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

impl Shared {
    /// The generation's module, loaded again if it could not be loaded at startup.
    fn module_of(&self, g: &Gen) -> Result<Module, EngineError> {
        if let Some(m) = g.module.read().expect("module lock").as_ref() {
            return Ok(m.clone());
        }
        let m = self.modules.load_with(&g.spec.module, &[Entry::Evolve])?;
        *g.module.write().expect("module lock") = Some(m.clone());
        Ok(m)
    }

    fn new_gen(
        &self,
        name: &str,
        generation: u64,
        spec: &ProjectionSpec,
        pending: bool,
    ) -> Result<Arc<Gen>, EngineError> {
        let module = self.modules.load_with(&spec.module, &[Entry::Evolve])?;
        self.gen_with(name, generation, spec, pending, Some(module))
    }

    fn gen_with(
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
    fn load_gen(
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

    /// Persists a record; deletes the rows of `drop_generation` in the same transaction.
    fn write_record(
        &self,
        name: &str,
        record: &Record,
        drop_generation: Option<u64>,
    ) -> Result<(), EngineError> {
        let json = serde_json::to_vec(record).expect("a record serializes");
        let mut txn = self.db.write(Durability::Immediate)?;
        txn.put(CatalogTable::Projections, name, &json)?;
        if let Some(old) = drop_generation {
            txn.remove_projection_generation(name, old)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn start(shared: &Arc<Shared>, g: &Arc<Gen>) {
        let sh = shared.clone();
        let gen_ = g.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loom-proj-{}", g.name))
            .spawn(move || sh.run(&gen_))
            .expect("spawning a projection worker");
        *g.handle.lock().expect("handle lock") = Some(handle);
    }

    fn run(&self, g: &Arc<Gen>) {
        tracing::debug!(projection = %g.name, generation = g.generation, "worker started");
        let mut backoff = Duration::from_millis(100);
        // Refilled by every step; its buffers are kept while catching up and let go once
        // caught up, so an idle projection does not hold a catch-up batch's memory.
        let mut batch = EventBatch::default();
        while !g.stop.load(Ordering::Acquire) {
            let idle = g.paused.load(Ordering::Acquire)
                || g.failure.lock().expect("failure lock").is_some();
            if idle {
                let l = g.changed.listen();
                if g.stop.load(Ordering::Acquire) {
                    break;
                }
                let _ = l.wait_timeout(Duration::from_millis(500));
                continue;
            }
            if let Err(e) = self.resync(g) {
                tracing::warn!(projection = %g.name, error = %e, "reloading the checkpoint failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_STORAGE_BACKOFF);
                continue;
            }
            let head = self.ledger.head();
            let position = g.position.load(Ordering::Acquire);
            if position >= head {
                batch = EventBatch::default();
                if !g.caught_up.swap(true, Ordering::AcqRel) {
                    g.changed.notify(usize::MAX);
                }
                if g.pending.load(Ordering::Acquire) {
                    if let Err(e) = self.swap(g) {
                        tracing::error!(projection = %g.name, error = %e, "swapping generations failed");
                        self.fail(g, 0, format!("swapping in the new generation failed: {e}"));
                    }
                    continue;
                }
                self.ledger
                    .wait_for(position + 1, Duration::from_millis(250));
                continue;
            }
            match self.step(g, head, &mut batch) {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) if is_io(&e) => {
                    // A full disk or another I/O error: the ledger reopens the database; try
                    // again later (from the stored checkpoint if it was reopened).
                    tracing::warn!(projection = %g.name, error = %e, "projection step failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_STORAGE_BACKOFF);
                }
                Err(e) => {
                    tracing::error!(projection = %g.name, error = %e, "projection step failed");
                    self.fail(g, 0, e.to_string());
                }
            }
        }
        tracing::debug!(projection = %g.name, generation = g.generation, "worker stopped");
    }

    /// Records a failure in memory and in the projection's record.
    fn fail(&self, g: &Gen, position: u64, message: String) {
        let failure = Failure { position, message };
        *g.failure.lock().expect("failure lock") = Some(failure.clone());
        g.changed.notify(usize::MAX);
        let mut map = self.map.write().expect("map lock");
        if let Some(proj) = map.get_mut(&g.name) {
            let mut record = proj.record.clone();
            if proj.active.generation == g.generation {
                record.failure = Some(failure);
            } else if proj
                .pending
                .as_ref()
                .is_some_and(|p| p.generation == g.generation)
            {
                record.pending_failure = Some(failure);
            } else {
                return;
            }
            if self.write_record(&g.name, &record, None).is_ok() {
                proj.record = record;
            }
        }
    }

    /// After the database was reopened (it drops the commits that were not durable yet),
    /// reloads the generation's progress from its stored checkpoint.
    fn resync(&self, g: &Gen) -> Result<(), EngineError> {
        let epoch = *g.epoch.lock().expect("epoch lock");
        if !self.db.reopened_since(epoch) {
            return Ok(());
        }
        let current = self.db.epoch();
        let ProjectionCheckpoint {
            position,
            events_applied: events,
            keys,
        } = self
            .db
            .read()?
            .projection_checkpoint(&g.name, g.generation)?
            .unwrap_or_default();
        tracing::warn!(
            projection = %g.name,
            from = g.position.load(Ordering::Acquire),
            to = position,
            "the database was reopened; continuing from the stored checkpoint"
        );
        g.caught_up.store(false, Ordering::Release);
        g.events_applied.store(events, Ordering::Release);
        g.keys.store(keys, Ordering::Release);
        g.position.store(position, Ordering::Release);
        *g.epoch.lock().expect("epoch lock") = current;
        g.changed.notify(usize::MAX);
        Ok(())
    }

    /// Folds the next batch of matching events.
    fn step(&self, g: &Gen, head: u64, batch: &mut EventBatch) -> Result<(), EngineError> {
        let position = g.position.load(Ordering::Acquire);
        self.ledger.read_batch_into(
            &g.selector,
            ReadOptions::after(position, self.batch_events),
            batch,
        )?;
        // Fewer than a full batch: every matching event up to `head` (read before the
        // snapshot was taken) is in hand.
        let covered = match batch.last_position() {
            Some(last) if batch.len() >= self.batch_events => last,
            Some(last) => last.max(head),
            None => head,
        };
        if batch.is_empty() {
            // Nothing selected: advance in memory only; the stored checkpoint catches up with
            // the next commit (a restart re-reads a few non-matching events, harmlessly).
            if covered >= head {
                g.caught_up.store(true, Ordering::Release);
            }
            g.position.store(covered, Ordering::Release);
            g.changed.notify(usize::MAX);
            return Ok(());
        }
        let views: Vec<EventView<'_>> = batch.iter().collect();
        let failed = match self.apply(g, &views, covered, head) {
            Ok(()) => return Ok(()),
            Err(Fault::Engine(e)) => return Err(e),
            Err(Fault::Module { position, error }) => (position, error),
        };
        drop(views);
        // Keep what folds cleanly: every event before the failing one.
        let (position, error) = failed;
        let before = (0..batch.len())
            .take_while(|&i| batch.position(i) < position)
            .count();
        batch.truncate(before);
        if !batch.is_empty() {
            let views: Vec<EventView<'_>> = batch.iter().collect();
            match self.apply(g, &views, position - 1, head) {
                Ok(()) => {}
                Err(Fault::Engine(e)) => return Err(e),
                Err(Fault::Module { .. }) => {}
            }
        }
        self.fail(g, position, error.to_string());
        Ok(())
    }

    fn apply(
        &self,
        g: &Gen,
        events: &[EventView<'_>],
        covered: u64,
        head: u64,
    ) -> Result<(), Fault> {
        // Group by partition key, keeping each group's order.
        let mut order: Vec<&str> = Vec::new();
        let mut groups: HashMap<&str, Vec<EventView<'_>>> = HashMap::new();
        for e in events {
            let key = match g.spec.partition {
                Partition::Stream => e.subject,
                Partition::Single => "",
            };
            groups
                .entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .push(*e);
        }
        let previous: Vec<Option<KeyState>> = self
            .db
            .read()
            .map_err(EngineError::from)?
            .states_of(&g.name, g.generation, order.iter().copied(), |_, v| {
                v.map(decode_state).transpose()
            })
            .map_err(EngineError::from)?
            .into_iter()
            .collect::<Result<_, EngineError>>()?;
        // Fold every group; many groups are folded on all cores (each call has its own
        // instance, so calls are independent).
        let module = self.module_of(g).map_err(Fault::Engine)?;
        let folded = self.fold_groups(&module, &order, &groups, &previous);
        let mut written = Vec::with_capacity(order.len());
        let mut new_keys = 0u64;
        for ((key, prev), result) in order.iter().zip(&previous).zip(folded) {
            let batch = &groups[key];
            let state = prev.as_ref().map(|p| p.state.as_slice());
            let next = match result {
                Ok(s) => s,
                Err(error) => return Err(self.locate(&module, state, batch, error)),
            };
            if serde_json::from_slice::<serde::de::IgnoredAny>(&next).is_err() {
                return Err(Fault::Module {
                    position: batch[0].position,
                    error: CallError::BadOutput {
                        entry: Entry::Evolve,
                        message: "evolve returned a state that is not JSON".into(),
                    },
                });
            }
            let (events_before, created) = match prev {
                Some(p) => (p.events, p.created),
                None => {
                    new_keys += 1;
                    (0, batch[0].recorded_micros)
                }
            };
            let last = batch.last().expect("non-empty group");
            written.push((
                *key,
                encode_state(
                    last.position,
                    events_before + batch.len() as u64,
                    created,
                    last.recorded_micros,
                    &next,
                ),
            ));
        }
        let applied = g.events_applied.load(Ordering::Acquire) + events.len() as u64;
        let keys = g.keys.load(Ordering::Acquire) + new_keys;
        let durability = {
            let mut last = self.last_durable.lock().expect("durable lock");
            if last.elapsed() >= DURABLE_EVERY {
                *last = Instant::now();
                Durability::Immediate
            } else {
                Durability::Deferred
            }
        };
        let epoch = *g.epoch.lock().expect("epoch lock");
        let Some(mut txn) = self
            .db
            .write_since(epoch, durability)
            .map_err(EngineError::from)?
        else {
            // The database was reopened after the states above were read: they may include
            // commits it no longer has. Write nothing; the worker reloads its checkpoint.
            return Ok(());
        };
        if g.stop.load(Ordering::Acquire) {
            // Swapped out, rebuilt or deleted meanwhile: its rows are gone; write nothing.
            return Ok(());
        }
        txn.put_states(
            &g.name,
            g.generation,
            written.iter().map(|(key, bytes)| (*key, bytes.as_slice())),
        )
        .map_err(EngineError::from)?;
        txn.put_projection_checkpoint(
            &g.name,
            g.generation,
            ProjectionCheckpoint {
                position: covered,
                events_applied: applied,
                keys,
            },
        )
        .map_err(EngineError::from)?;
        txn.commit().map_err(EngineError::from)?;
        g.events_applied.store(applied, Ordering::Release);
        g.keys.store(keys, Ordering::Release);
        if covered >= head {
            // Caught up is set before the position is published, so whoever sees the
            // position at the head also sees the status `running`.
            g.caught_up.store(true, Ordering::Release);
        }
        g.position.store(covered, Ordering::Release);
        g.changed.notify(usize::MAX);
        Ok(())
    }

    /// `evolve` for each group, in `order`; in parallel when there are many groups.
    ///
    /// Small groups are packed into `evolve_groups` calls of up to `MAX_CALL_EVENTS` events
    /// (a per-stream catch-up of 10 000 streams would otherwise pay a call's fixed cost for
    /// every few events); a group larger than that folds alone in calls of at most
    /// `MAX_CALL_EVENTS` events, threading its state through, so that one call stays well
    /// inside its fuel, memory and time limits.
    fn fold_groups(
        &self,
        module: &Module,
        order: &[&str],
        groups: &HashMap<&str, Vec<EventView<'_>>>,
        previous: &[Option<KeyState>],
    ) -> Vec<Result<Vec<u8>, CallError>> {
        let prev = |i: usize| previous[i].as_ref().map(|p| p.state.as_slice());
        // Units of work: ranges of `order`, each one call (or one chained group).
        let mut units: Vec<std::ops::Range<usize>> = Vec::new();
        let mut start = 0;
        let mut events = 0;
        for (i, key) in order.iter().enumerate() {
            let n = groups[key].len();
            if events > 0 && events + n > MAX_CALL_EVENTS {
                units.push(start..i);
                start = i;
                events = 0;
            }
            events += n;
        }
        if start < order.len() {
            units.push(start..order.len());
        }
        let fold_one = |i: usize| -> Result<Vec<u8>, CallError> {
            let mut state: Option<Vec<u8>> = None;
            for chunk in groups[order[i]].chunks(MAX_CALL_EVENTS) {
                let current = state.as_deref().or_else(|| prev(i));
                state = Some(self.runtime.evolve_views(module, current, chunk)?);
            }
            Ok(state.expect("groups are not empty"))
        };
        let fold_unit = |unit: std::ops::Range<usize>| -> Vec<Result<Vec<u8>, CallError>> {
            if unit.len() == 1 {
                return vec![fold_one(unit.start)];
            }
            let input: Vec<(Option<&[u8]>, &[EventView<'_>])> = unit
                .clone()
                .map(|i| (prev(i), groups[order[i]].as_slice()))
                .collect();
            match self.runtime.evolve_groups(module, &input) {
                Ok(states) => states.into_iter().map(Ok).collect(),
                // Which group failed: fold each alone (the others still succeed).
                Err(_) => unit.map(fold_one).collect(),
            }
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8)
            .min(units.len());
        if threads < 2 {
            return units.into_iter().flat_map(fold_unit).collect();
        }
        let per_thread = units.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = units
                .chunks(per_thread)
                .map(|mine| {
                    let fold_unit = &fold_unit;
                    scope.spawn(move || {
                        mine.iter()
                            .flat_map(|u| fold_unit(u.clone()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a fold thread panicked"))
                .collect()
        })
    }

    /// Finds the event a failing batch fails on by folding it one event at a time.
    fn locate(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        batch: &[EventView<'_>],
        error: CallError,
    ) -> Fault {
        let mut current = state.map(<[u8]>::to_vec);
        for e in batch {
            match self
                .runtime
                .evolve_views(module, current.as_deref(), std::slice::from_ref(e))
            {
                Ok(s) => current = Some(s),
                Err(error) => {
                    return Fault::Module {
                        position: e.position,
                        error,
                    };
                }
            }
        }
        // Folding one at a time succeeded (e.g. the batch hit a limit): blame the first event.
        Fault::Module {
            position: batch[0].position,
            error,
        }
    }

    /// Makes a caught-up pending generation the active one.
    fn swap(&self, g: &Arc<Gen>) -> Result<(), EngineError> {
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

/// Longest pause between retries of a projection step that failed with an I/O error.
const MAX_STORAGE_BACKOFF: Duration = Duration::from_secs(5);

/// Whether an error is an I/O error of the database (a full disk, …), which may pass.
fn is_io(e: &EngineError) -> bool {
    match e {
        EngineError::Storage(s) | EngineError::Read(loom_ledger::ReadError::Storage(s)) => {
            s.is_io()
        }
        _ => false,
    }
}

enum Fault {
    Engine(EngineError),
    Module { position: u64, error: CallError },
}

impl From<EngineError> for Fault {
    fn from(e: EngineError) -> Self {
        Fault::Engine(e)
    }
}
