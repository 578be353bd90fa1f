//! Typed errors, one per kind of operation.

pub use loom_core::{Conflict, InvalidEvent, Rejection, SelectorError};

/// The storage engine failed (I/O error, corruption, full disk). Nothing of the failed
/// operation was written.
#[derive(Debug, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StorageError(pub(crate) Box<redb::Error>);

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> StorageError {
        StorageError(Box::new(redb::Error::Io(e)))
    }
}

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

    /// When the failure is the replicated log's (cluster mode): why it could not take the
    /// group.
    pub fn log_unavailable(&self) -> Option<&LogUnavailable> {
        match &*self.0 {
            redb::Error::Io(e) => e.get_ref()?.downcast_ref(),
            _ => None,
        }
    }

    /// A copy of the error, for answering every append of a failed group: the I/O error
    /// kind and message are kept (so a full disk is still recognised as one).
    pub(crate) fn duplicate(&self) -> StorageError {
        if let Some(u) = self.log_unavailable() {
            return StorageError(Box::new(redb::Error::Io(std::io::Error::other(u.clone()))));
        }
        let io = match &*self.0 {
            redb::Error::Io(e) => std::io::Error::new(e.kind(), e.to_string()),
            other => std::io::Error::other(other.to_string()),
        };
        StorageError(Box::new(redb::Error::Io(io)))
    }
}

/// Cluster mode: the replicated log could not take a group (this node is not the sequencer,
/// the cluster has none at the moment, or the log did not acknowledge it). The group's
/// appends are refused; retrying them is safe (the same events again are duplicates). A
/// [`GroupLog`](crate::GroupLog) reports it as an `std::io::Error` wrapping this.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct LogUnavailable(pub String);

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

/// Why an append failed. Nothing of a failed append is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

impl From<loom_core::CorruptEvent> for ReadError {
    fn from(e: loom_core::CorruptEvent) -> Self {
        ReadError::Corrupt {
            position: e.position,
            message: e.message,
        }
    }
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
#[non_exhaustive]
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
#[non_exhaustive]
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
