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

mod deciders;
mod lifecycle;
mod modules;
mod projections;
mod reactors;
mod state_cache;

use std::sync::Arc;

use loom_ledger::{Ledger, ReadError, SelectorError, StorageError};
use loom_runtime::{CallError, ModuleError, Runtime, RuntimeConfig};

pub use deciders::{
    CommandEvent, CommandOutcome, DeciderRecord, DeciderSpec, Deciders, MAX_COMMAND_BYTES,
    MAX_COMMAND_EVENTS,
};
pub use lifecycle::{Failure, Status};
pub use modules::{ModuleRecord, ModuleStore, Uploaded};
pub use projections::{
    At, GenerationStatus, NextStatus, Partition, ProjectionSpec, ProjectionStatus, Projections,
    StateView,
};
pub use reactors::{ReactorSpec, ReactorStatus, Reactors, SinkPolicy};

/// Tuning of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Limits of every module call.
    pub runtime: RuntimeConfig,
    /// Most events a projection folds per transaction.
    pub batch_events: usize,
    /// Longest `min_position` wait a query may ask for.
    pub max_wait: std::time::Duration,
    /// How reactors retry deliveries to their sinks.
    pub sink: SinkPolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            runtime: RuntimeConfig::default(),
            // Large read batches give each stream several events per `evolve` call during a
            // catch-up over many streams (the per-call cost is then shared); groups are folded
            // in calls of at most 5 000 events.
            batch_events: 100_000,
            max_wait: std::time::Duration::from_secs(30),
            sink: SinkPolicy::default(),
        }
    }
}

/// Errors of the engine's operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The module bytes were refused (invalid wasm, wrong ABI, forbidden import, …).
    #[error("invalid module: {0}")]
    InvalidModule(ModuleError),
    /// No module with this id.
    #[error("module {0} is not stored")]
    ModuleNotFound(String),
    /// The module lacks an entry point the use needs.
    #[error("module {module} does not export {entry}")]
    MissingExport {
        /// The module.
        module: String,
        /// The missing entry point.
        entry: &'static str,
    },
    /// The module is used and cannot be deleted.
    #[error("module {id} is in use by {}", users.join(", "))]
    ModuleInUse {
        /// The module.
        id: String,
        /// What uses it (`projection cart`, …).
        users: Vec<String>,
    },
    /// No projection with this name.
    #[error("projection {0:?} does not exist")]
    ProjectionNotFound(String),
    /// No state for this key.
    #[error("projection {name:?} has no state for {key:?}")]
    KeyNotFound {
        /// The projection.
        name: String,
        /// The key.
        key: String,
    },
    /// A malformed name, spec or parameter.
    #[error("{0}")]
    Invalid(String),
    /// A module answered something the host cannot use (a decider's events that are not
    /// events, or that the registry refuses): the module's fault, not the caller's.
    #[error("{0}")]
    BadModuleOutput(String),
    /// A malformed selector.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// A module call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// `min_position` was not reached in time.
    #[error("projection {name:?} reached position {reached}, not {wanted}, within {waited_ms} ms")]
    Timeout {
        /// The projection.
        name: String,
        /// Position asked for.
        wanted: u64,
        /// Position reached.
        reached: u64,
        /// How long it waited.
        waited_ms: u64,
    },
    /// No decider is bound to this entity.
    #[error("no decider is bound to entity {0:?}")]
    DeciderNotFound(String),
    /// No reactor with this name.
    #[error("reactor {0:?} does not exist")]
    ReactorNotFound(String),
    /// The decider refused the command (a domain rejection); nothing was written.
    #[error("{0}")]
    Rejected(String),
    /// The stream kept changing: every attempt to append a decision conflicted.
    #[error("stream {subject:?} changed under the command {attempts} times; try again")]
    Contention {
        /// The stream.
        subject: String,
        /// Attempts made.
        attempts: usize,
    },
    /// Appending a decision failed.
    #[error(transparent)]
    Append(loom_ledger::AppendError),
    /// Stored engine data is unreadable.
    #[error("stored engine data is corrupt: {0}")]
    Corrupt(String),
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A ledger read failed.
    #[error(transparent)]
    Read(#[from] ReadError),
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
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), EngineError> {
    loom_ledger::check_new_name(name).map_err(|_| {
        EngineError::Invalid(format!(
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
    modules: Arc<ModuleStore>,
    projections: Projections,
    deciders: Arc<Deciders>,
    reactors: Reactors,
}

impl Engine {
    /// Opens the engine's tables, loads projection definitions and starts their workers.
    pub fn open(ledger: Arc<Ledger>, config: EngineConfig) -> Result<Engine, EngineError> {
        let runtime = Arc::new(Runtime::new(config.runtime.clone()));
        let modules = Arc::new(ModuleStore::new(ledger.catalog(), runtime.clone())?);
        let projections =
            Projections::open(ledger.clone(), runtime.clone(), modules.clone(), &config)?;
        let deciders = Arc::new(Deciders::open(
            ledger.clone(),
            runtime.clone(),
            modules.clone(),
        )?);
        let reactors = Reactors::open(
            ledger.clone(),
            runtime.clone(),
            modules.clone(),
            deciders.clone(),
            config.sink.clone(),
        )?;
        Ok(Engine {
            ledger,
            runtime,
            modules,
            projections,
            deciders,
            reactors,
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
        &self.modules
    }

    /// Projections.
    pub fn projections(&self) -> &Projections {
        &self.projections
    }

    /// Deciders.
    pub fn deciders(&self) -> &Deciders {
        &self.deciders
    }

    /// Reactors.
    pub fn reactors(&self) -> &Reactors {
        &self.reactors
    }

    /// Deletes a module unless a projection, decider or reactor still names it.
    pub fn delete_module(&self, id: &str) -> Result<(), EngineError> {
        let _exclusive = self.modules.lock_for_delete();
        let mut users = self.projections.users_of(id);
        users.extend(self.deciders.users_of(id));
        users.extend(self.reactors.users_of(id));
        self.modules.delete(id, users)
    }

    /// Stops every worker and waits for them.
    pub fn shutdown(&self) {
        self.reactors.shutdown();
        self.projections.shutdown();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
