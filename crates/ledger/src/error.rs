//! Typed errors, one per kind of operation.

use std::fmt;

use crate::ExpectedRevision;

/// The storage engine failed (I/O error, corruption, full disk). Nothing of the failed
/// operation was written.
#[derive(Debug, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StorageError(pub(crate) Box<redb::Error>);

impl StorageError {
    /// Whether the failure looks like the disk being full.
    pub fn is_disk_full(&self) -> bool {
        if let redb::Error::Io(e) = &*self.0
            && matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        let text = self.0.to_string().to_ascii_lowercase();
        text.contains("no space left") || text.contains("disk quota")
    }

    /// Whether the failure is an I/O error (a full disk, a failed write or sync, or the
    /// database being reopened after one). redb refuses every operation of a database after
    /// its first I/O error; the ledger then reopens the database (docs/design.md, "Crash
    /// behaviour"), so the same operation may succeed when retried later.
    pub fn is_io(&self) -> bool {
        matches!(
            &*self.0,
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
        )
    }

    /// Whether redb has (or may have) latched the failure, so that the database must be
    /// closed and opened again before it can be used.
    pub(crate) fn needs_reopen(&self) -> bool {
        self.is_io()
    }

    /// A copy of the error, for answering every append of a failed group: the I/O error
    /// kind and message are kept (so a full disk is still recognised as one).
    pub(crate) fn duplicate(&self) -> StorageError {
        let io = match &*self.0 {
            redb::Error::Io(e) => std::io::Error::new(e.kind(), e.to_string()),
            other => std::io::Error::other(other.to_string()),
        };
        StorageError(Box::new(redb::Error::Io(io)))
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                StorageError(Box::new(e.into()))
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// An event breaks the event model (missing or malformed attribute, bad subject, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidEvent {
    /// Index of the offending event in its batch, when known.
    pub index: Option<usize>,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl InvalidEvent {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        InvalidEvent {
            index: None,
            message: message.into(),
        }
    }

    /// The same error, naming the event's index in its batch.
    pub fn at_index(mut self, index: usize) -> Self {
        self.index.get_or_insert(index);
        self
    }
}

impl fmt::Display for InvalidEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "event {i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for InvalidEvent {}

/// The registry refuses an event: unknown entity or type, or data failing its schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The subject's entity is not registered.
    #[error(
        "event {index}: entity {entity:?} is not registered; register it with PUT /v1/entities/{entity}"
    )]
    UnknownEntity {
        /// Index in the batch.
        index: usize,
        /// The entity.
        entity: String,
    },
    /// The event type is not registered for the entity (and the entity is not open).
    #[error("event {index}: type {ty:?} is not registered for entity {entity:?}")]
    UnknownType {
        /// Index in the batch.
        index: usize,
        /// The entity.
        entity: String,
        /// The event type.
        ty: String,
    },
    /// The data does not satisfy the type's JSON Schema.
    #[error("event {index}: data of {entity}/{ty} fails its schema: {message}")]
    Schema {
        /// Index in the batch.
        index: usize,
        /// The entity.
        entity: String,
        /// The event type.
        ty: String,
        /// The schema errors, with their JSON pointers.
        message: String,
    },
}

/// An append condition failed, or an identity is already taken by different content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// A stream is not at the expected revision.
    #[error("stream {stream:?} is at revision {actual}, expected {expected}")]
    Revision {
        /// The stream (subject).
        stream: String,
        /// What the append expected.
        expected: ExpectedRevision,
        /// The stream's revision when the append was checked (0: no stream).
        actual: u64,
    },
    /// The DCB condition: events matching `fail_if_events_match` exist after `after`.
    #[error("events matching the append condition exist at positions {positions:?}")]
    EventsMatched {
        /// Positions of the first matching events.
        positions: Vec<u64>,
    },
    /// `(source, id)` is stored already with different content, or only part of the batch
    /// was stored before (a batch is idempotent only as a whole).
    #[error(
        "event (source {event_source:?}, id {id:?}) is already stored at position {position}: {reason}"
    )]
    Identity {
        /// The event's source.
        event_source: String,
        /// The event's id.
        id: String,
        /// Where it is stored.
        position: u64,
        /// Why the re-append is not idempotent.
        reason: String,
    },
}

/// Why an append failed. Nothing of a failed append is written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// An event breaks the event model, or the request is malformed.
    #[error("invalid event: {0}")]
    Invalid(InvalidEvent),
    /// The registry refused an event.
    #[error(transparent)]
    Rejected(Rejection),
    /// A condition failed or an identity is taken.
    #[error("append conflict: {0}")]
    Conflict(Conflict),
    /// The condition's selector is malformed.
    #[error("invalid condition: {0}")]
    Selector(#[from] SelectorError),
    /// The storage engine failed; nothing was written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The ledger is shutting down and takes no more appends.
    #[error("the ledger is shutting down")]
    Closed,
}

/// A selector is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A JSONPath expression does not parse.
    #[error("{field} is not a valid RFC 9535 JSONPath expression: {message}")]
    JsonPath {
        /// `data` or `meta`.
        field: &'static str,
        /// The parser's message.
        message: String,
    },
    /// `keys` without `entity`.
    #[error("a selector with keys must name its entity")]
    KeysWithoutEntity,
    /// An entity name that cannot exist.
    #[error("{0}")]
    BadEntity(String),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The selector is malformed.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// A stored record could not be decoded (corruption or a newer format).
    #[error("stored event at position {position} is unreadable: {message}")]
    Corrupt {
        /// Where.
        position: u64,
        /// What the decoder said.
        message: String,
    },
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl<T> From<T> for ReadError
where
    StorageError: From<T>,
    T: RedbErrorMarker,
{
    fn from(e: T) -> Self {
        ReadError::Storage(StorageError::from(e))
    }
}

/// Marks redb error types convertible into [`ReadError`].
#[doc(hidden)]
pub trait RedbErrorMarker {}
impl RedbErrorMarker for redb::StorageError {}
impl RedbErrorMarker for redb::TableError {}
impl RedbErrorMarker for redb::TransactionError {}

/// Why registering an entity failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The entity name is not allowed.
    #[error("{0}")]
    InvalidName(String),
    /// A type's schema is not a valid JSON Schema.
    #[error("the schema of type {ty:?} is not a valid JSON Schema: {message}")]
    InvalidSchema {
        /// The event type.
        ty: String,
        /// The compiler's message.
        message: String,
    },
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why the ledger could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created or read.
    #[error("cannot use data directory {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// redb could not open the database file (locked by another process, corrupt, …).
    #[error("cannot open the ledger database {path}: {source}")]
    Database {
        /// The file.
        path: String,
        /// What redb said.
        source: StorageError,
    },
    /// The stored registry or metadata is unreadable.
    #[error("the ledger at {path} is unreadable: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}
