//! The redb database behind a ledger, and reopening it after an I/O error.
//!
//! redb latches the first I/O error of a `Database` (a write that found the disk full, a
//! failed fsync): from then on every operation of that `Database`, reads included, fails with
//! "previous I/O error" until it is closed and opened again. [`Store`] is the replaceable
//! handle the ledger and the crates beside it (the engine) use instead of a `Database`: the
//! ledger's writer reopens the database through it after such an error (docs/design.md,
//! "Crash behaviour"). Nobody keeps a `Database` of their own; a transaction is taken from the
//! handle when needed, so that the old database can close and the file can be opened again.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase, TransactionError, WriteTransaction};

use crate::error::StorageError;

/// How long a reopen waits for calls in progress (`begin_read`, `begin_write`) to let go of
/// the old database.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

type Opener = dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync;

/// A handle on the ledger's redb database that survives the database being reopened after an
/// I/O error. Cheap to clone. Take transactions from it; do not keep them longer than needed.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open database; `None` after a reopen that failed (the next reopen tries again).
    slot: RwLock<Option<Arc<Database>>>,
    open: Box<Opener>,
    /// Successful reopens so far.
    generation: AtomicU64,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("open", &self.is_open())
            .field("generation", &self.generation())
            .finish()
    }
}

fn unavailable() -> redb::StorageError {
    redb::StorageError::Io(std::io::Error::other(
        "the ledger database is closed after a storage failure and could not be opened again \
         yet; it is retried with the next append",
    ))
}

impl Store {
    /// Opens the database with `open`, which is called again for every reopen.
    pub(crate) fn open(
        open: impl Fn() -> Result<Database, redb::DatabaseError> + Send + Sync + 'static,
    ) -> Result<Store, redb::DatabaseError> {
        let db = open()?;
        Ok(Store {
            inner: Arc::new(Inner {
                slot: RwLock::new(Some(Arc::new(db))),
                open: Box::new(open),
                generation: AtomicU64::new(0),
            }),
        })
    }

    fn current(&self) -> Result<Arc<Database>, redb::StorageError> {
        self.inner
            .slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(unavailable)
    }

    /// Begins a read transaction (a snapshot).
    pub fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        self.current()?.begin_read()
    }

    /// Begins a write transaction, waiting for the current one to finish.
    pub fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        self.current()?.begin_write()
    }

    /// Whether a database is open (false after a reopen that failed).
    pub fn is_open(&self) -> bool {
        self.inner
            .slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// How many times the database was reopened.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Closes the database and opens it again. On error no database is open until a later
    /// reopen succeeds; every operation meanwhile fails with a storage error.
    pub(crate) fn reopen(&self) -> Result<(), StorageError> {
        let mut slot = self
            .inner
            .slot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(mut db) = slot.take() {
            // The other holders are calls to `begin_read`/`begin_write` in progress; no new
            // ones start while the slot is locked. Wait for them, bounded: one may be waiting
            // for a write transaction whose owner waits for this lock.
            let deadline = Instant::now() + CLOSE_WAIT;
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        // Closes the file unless a write transaction is still alive, in which
                        // case redb closes it when that transaction ends, and the open below
                        // fails (the database is still open) until then.
                        drop(db);
                        break;
                    }
                    Err(still) if Instant::now() >= deadline => {
                        *slot = Some(still);
                        return Err(StorageError(Box::new(redb::Error::Io(
                            std::io::Error::other(
                                "the ledger database is still in use and could not be closed \
                                 for reopening",
                            ),
                        ))));
                    }
                    Err(still) => {
                        db = still;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        let db = (self.inner.open)()?;
        *slot = Some(Arc::new(db));
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}
