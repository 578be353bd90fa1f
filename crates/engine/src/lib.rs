//! Loom's engine: drives the wasm runtime over the ledger.
//!
//! * [`ModuleStore`] — uploaded modules, content-addressed, in the ledger's database.
//! * [`Projections`] — named projections kept current by worker threads: catch-up from a
//!   checkpoint through the ledger's indexes, batched `evolve` calls, state and checkpoint
//!   committed in one transaction, head notifications instead of polling, blue/green upgrades,
//!   time travel by replay.
//!
//! Everything here is synchronous; the server calls it from blocking tasks. No `wasmtime`
//! type crosses this crate's API.

#![forbid(unsafe_code)]

mod changes;
mod deciders;
mod error;
mod lifecycle;
mod modules;
mod names;
mod projections;
mod reactors;
mod state_cache;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use loom_ledger::Ledger;
/// An entry point of a module, as [`ModuleStore::load_with`] takes it.
pub use loom_runtime::Entry;
use loom_runtime::{Runtime, RuntimeConfig};

pub use changes::{Change, Changed, Progress};
pub use deciders::{
    CommandEvent, CommandOutcome, DeciderRecord, DeciderSpec, Deciders, MAX_COMMAND_BYTES,
    MAX_COMMAND_EVENTS,
};
pub use error::{CommandError, DefinitionError, EngineError, Kind, QueryError, StoreError};
pub use lifecycle::{Failure, Status};
pub use modules::{ModuleRecord, ModuleStore, ReducerRecord, Uploaded};
pub use projections::{
    At, GenerationStatus, NextStatus, OnError, Partition, ProjectionSpec, ProjectionStatus,
    Projections, Quarantined, StateView,
};
pub use reactors::{ReactorSpec, ReactorStatus, Reactors, SinkPolicy};

/// Tuning of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Limits of every module call.
    pub runtime: RuntimeConfig,
    /// Events a projection reads per step. A per-stream projection catching up over many
    /// streams (a step folded more than half this many) reads twice as many, so that each
    /// stream is folded fewer times; `batch_bytes` bounds every read.
    pub batch_events: usize,
    /// Most bytes of events (their fields) a projection reads for one step: with large
    /// events a step holds fewer than `batch_events`, so that a catch-up's memory — two
    /// batches, the one folded and the one read beside it — stays bounded.
    pub batch_bytes: usize,
    /// Most projection generations catching up at a time (each holds up to two read batches
    /// and the states of a few steps); the others wait in line, and while others wait a
    /// generation gives its turn up every couple of seconds. Default: the number of CPUs.
    pub catch_ups: usize,
    /// How long a generation catches up in one turn while others wait for theirs; then it
    /// commits what it kept and queues again.
    pub catch_up_slice: std::time::Duration,
    /// Longest `min_position` wait a query may ask for.
    pub max_wait: std::time::Duration,
    /// How reactors retry deliveries to their sinks.
    pub sink: SinkPolicy,
    /// Longest chain of reactions: an event a reactor appends (or a command it runs
    /// appends) is one hop further than the event it reacted to (extension `loomhops`); a
    /// reaction that would go past this fails its reactor instead, so reactors that feed each
    /// other in a loop stop with a clear status rather than fill the disk.
    pub max_reaction_hops: u64,
    /// Most events one command may append: a decider that answers more fails the command
    /// (422), so one command cannot hold the writer or build a huge answer.
    pub max_command_events: usize,
    /// Most bytes of event data (the JSON of every event's data) one command may append.
    pub max_command_bytes: usize,
    /// Cluster mode: whether this node runs the reactors' side effects now (it holds the
    /// sequencer's lease). `None`: always (a single node).
    pub reactors_active: Option<Arc<AtomicBool>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            runtime: RuntimeConfig::default(),
            // Large read batches give each stream several events per `evolve` call during a
            // catch-up over many streams (the per-call cost is then shared); groups are folded
            // in calls of at most 5 000 events.
            batch_events: 100_000,
            batch_bytes: 64 << 20,
            catch_ups: std::thread::available_parallelism().map_or(2, |n| n.get()),
            catch_up_slice: std::time::Duration::from_secs(2),
            max_wait: std::time::Duration::from_secs(30),
            sink: SinkPolicy::default(),
            max_reaction_hops: 16,
            max_command_events: MAX_COMMAND_EVENTS,
            max_command_bytes: MAX_COMMAND_BYTES,
            reactors_active: None,
        }
    }
}

/// What a definition's `put` did (projections, deciders, reactors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// Nothing of that name was defined; it is now (a projection starts catching up).
    Created,
    /// The same definition was in place (or building) already; nothing changed.
    Unchanged,
    /// A different definition was in place and is replaced now (deciders, reactors).
    Replaced,
    /// A projection's new generation is building in the background; the current one serves
    /// until it has caught up.
    Upgrading,
}

/// Checks the name of a projection or reactor: the same rule as entity names (1-128 ASCII
/// letters, digits, `_`, `-` or `.`), so every name is safe in a URL path segment.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), DefinitionError> {
    loom_ledger::check_new_name(name).map_err(|_| {
        DefinitionError::InvalidName(format!(
            "{name:?} is not a valid {kind} name: use 1-128 ASCII letters, digits, '_', '-' or \
             '.', other than '.' and '..'"
        ))
    })
}

/// The message of a module's rejection payload (`{"message": …}`), or its raw text.
pub(crate) fn rejection_message(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

/// The engine: module store and projections over one ledger.
#[derive(Debug)]
pub struct Engine {
    ledger: Arc<Ledger>,
    runtime: Arc<Runtime>,
    parts: Arc<Parts>,
    /// Cluster mode: applies the changes of the cluster's log.
    applier: Option<changes::Applier>,
}

/// What changes apply to.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) modules: Arc<ModuleStore>,
    pub(crate) projections: Projections,
    pub(crate) deciders: Arc<Deciders>,
    pub(crate) reactors: Reactors,
}

impl Engine {
    /// Opens the engine's tables, loads projection definitions and starts their workers; on
    /// a cluster node (a replicated ledger), also the thread that applies the cluster's
    /// changes.
    pub fn open(ledger: Arc<Ledger>, config: EngineConfig) -> Result<Engine, EngineError> {
        let runtime = Arc::new(Runtime::new(config.runtime.clone()));
        let modules = Arc::new(ModuleStore::new(ledger.catalog(), runtime.clone()));
        let projections =
            Projections::open(ledger.clone(), runtime.clone(), modules.clone(), &config)?;
        let deciders = Arc::new(Deciders::open(
            ledger.clone(),
            runtime.clone(),
            modules.clone(),
            deciders::CommandLimits {
                events: config.max_command_events.max(1),
                bytes: config.max_command_bytes.max(1),
            },
        )?);
        let reactors = Reactors::open(
            ledger.clone(),
            runtime.clone(),
            modules.clone(),
            deciders.clone(),
            reactors::Options {
                policy: config.sink.clone(),
                max_hops: config.max_reaction_hops,
                active: config.reactors_active.clone(),
            },
        )?;
        let parts = Arc::new(Parts {
            modules,
            projections,
            deciders,
            reactors,
        });
        let applier = if ledger.is_replicated() {
            let applier = changes::Applier::start(ledger.clone(), parts.clone()).map_err(|e| {
                EngineError::Store(StoreError::Corrupt(format!(
                    "starting the thread that applies the cluster's changes: {e}"
                )))
            })?;
            Some(applier)
        } else {
            None
        };
        Ok(Engine {
            ledger,
            runtime,
            parts,
            applier,
        })
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The wasm runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Stored modules.
    pub fn modules(&self) -> &ModuleStore {
        &self.parts.modules
    }

    /// Projections.
    pub fn projections(&self) -> &Projections {
        &self.parts.projections
    }

    /// Deciders.
    pub fn deciders(&self) -> &Deciders {
        &self.parts.deciders
    }

    /// Reactors.
    pub fn reactors(&self) -> &Reactors {
        &self.parts.reactors
    }

    /// Makes a change (see [`Change`]): at once on a single node; on a cluster node through
    /// the cluster's log, answered once this node has applied it (so the next read on this
    /// node sees it).
    pub fn change(&self, change: Change) -> Result<Changed, DefinitionError> {
        let Some(applier) = &self.applier else {
            return changes::apply(&self.parts, change);
        };
        let bytes = change.encode();
        if let Some(max) = self.ledger.max_record_bytes()
            && bytes.len() + 64 > max
        {
            return Err(DefinitionError::InvalidSpec(format!(
                "the change takes {} bytes in the cluster's log, whose largest message is {max} \
                 bytes: raise the NATS servers' max_payload (at most 64 MB), or make the module \
                 smaller",
                bytes.len()
            )));
        }
        let sequence = self
            .ledger
            .publish_engine_change(bytes)
            .map_err(|e| DefinitionError::Store(e.into()))?;
        applier.answer(sequence)
    }

    /// Deletes a module unless a projection, decider or reactor still names it.
    pub fn delete_module(&self, id: &str) -> Result<(), DefinitionError> {
        self.change(Change::DeleteModule { id: id.to_owned() })
            .map(|_| ())
    }

    /// Stops every worker and waits for them.
    pub fn shutdown(&self) {
        if let Some(applier) = &self.applier {
            applier.stop();
        }
        self.parts.reactors.shutdown();
        self.parts.projections.shutdown();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
