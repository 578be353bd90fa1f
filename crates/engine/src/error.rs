//! The engine's errors, one enum per kind of operation, with infrastructure failures kept in
//! one [`StoreError`] apart from the caller's and the module's mistakes:
//!
//! * [`DefinitionError`] — uploading or deleting a module; defining, changing, pausing,
//!   resuming, rebuilding or deleting a projection, decider or reactor.
//! * [`CommandError`] — running a command; a decider's [`CommandError::Rejected`] is the
//!   domain's answer, not a fault.
//! * [`QueryError`] — reading a projection: status, state (live, past, after a position),
//!   keys, `query`.
//! * [`EngineError`] — any of them, for callers that mix operations (opening the engine).
//!
//! Messages name what went wrong in the engine's terms; the HTTP server adds how to fix it
//! over HTTP.

use loom_ledger::{AppendError, ReadError, SelectorError, StorageError};
use loom_runtime::{CallError, ModuleError};

/// The storage under the engine failed, or holds data the engine cannot read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed (I/O, a full disk).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A ledger read failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Stored engine data is unreadable.
    #[error("stored engine data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True for an I/O failure of the database (a full disk, …), which may pass once the
    /// ledger has reopened it, as opposed to unreadable data.
    pub fn is_io(&self) -> bool {
        match self {
            StoreError::Storage(s) | StoreError::Read(ReadError::Storage(s)) => s.is_io(),
            _ => false,
        }
    }
}

/// What kind of thing a name did not name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A projection.
    Projection,
    /// A reactor.
    Reactor,
    /// A decider (named by its entity).
    Decider,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Projection => "projection",
            Kind::Reactor => "reactor",
            Kind::Decider => "decider",
        })
    }
}

/// Defining things, and managing what is defined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// Nothing of that kind has this name.
    #[error("{kind} {name:?} does not exist")]
    NotFound {
        /// What was looked for.
        kind: Kind,
        /// The name (for a decider, its entity).
        name: String,
    },
    /// A name that breaks the naming rule.
    #[error("{0}")]
    InvalidName(String),
    /// A definition the engine cannot carry out (e.g. a sink that is not an HTTP URL).
    #[error("{0}")]
    InvalidSpec(String),
    /// A malformed selector.
    #[error(transparent)]
    Selector(#[from] SelectorError),
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
    /// The definition names an entity or event type the registry does not know (a typo
    /// would select nothing, forever).
    #[error("{0}")]
    Unregistered(String),
    /// The definition names a reducer the module does not have, names none where the module
    /// has several that fit, or names one of a module of ABI v1 (which has none).
    #[error("{0}")]
    Reducer(String),
    /// The module is used and cannot be deleted.
    #[error("module {id} is in use by {}", users.join(", "))]
    ModuleInUse {
        /// The module.
        id: String,
        /// What uses it (`projection cart`, …).
        users: Vec<String>,
    },
    /// Infrastructure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DefinitionError {
    pub(crate) fn not_found(kind: Kind, name: &str) -> DefinitionError {
        DefinitionError::NotFound {
            kind,
            name: name.to_owned(),
        }
    }
}

/// Running a command through a decider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No decider is bound to this entity.
    #[error("no decider is bound to entity {0:?}")]
    NoDecider(String),
    /// The request is malformed: no key, a body that is not JSON, a bad idempotency key.
    #[error("{0}")]
    Invalid(String),
    /// The decider refused the command: the domain's answer; nothing was written.
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
    /// The decider's module could not be loaded.
    #[error(transparent)]
    Module(DefinitionError),
    /// A call into the decider's module failed (trap, fuel, memory, deadline).
    #[error(transparent)]
    Call(#[from] CallError),
    /// The decider answered something the host cannot use (events that are not events, or
    /// that the registry refuses): the module's fault, not the caller's.
    #[error("{0}")]
    BadModuleOutput(String),
    /// Appending the decision failed for another reason than a conflict.
    #[error(transparent)]
    Append(AppendError),
    /// Infrastructure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reading a projection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No projection with this name.
    #[error("projection {0:?} does not exist")]
    NotFound(String),
    /// No state for this key.
    #[error("projection {name:?} has no state for {key:?}")]
    KeyNotFound {
        /// The projection.
        name: String,
        /// The key.
        key: String,
    },
    /// A key given to a `single` projection, or none to a `stream` one.
    #[error("{0}")]
    WrongPartition(String),
    /// The module's `query` refused the question (its own answer, not a fault).
    #[error("{0}")]
    Rejected(String),
    /// The projection's module could not be loaded.
    #[error(transparent)]
    Module(DefinitionError),
    /// A call into the module failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The module answered something that is not a state or an answer.
    #[error("{0}")]
    BadModuleOutput(String),
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
    /// Infrastructure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Any of the engine's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A definition was refused, or names something missing.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// A command was not carried out.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A read of a projection failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Infrastructure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

macro_rules! store_errors_convert {
    ($($target:ty),*) => {$(
        impl From<StorageError> for $target {
            fn from(e: StorageError) -> Self {
                StoreError::from(e).into()
            }
        }
        impl From<ReadError> for $target {
            fn from(e: ReadError) -> Self {
                StoreError::from(e).into()
            }
        }
    )*};
}

store_errors_convert!(DefinitionError, CommandError, QueryError, EngineError);
