//! The redb database behind a ledger, and reopening it after an I/O error.
//!
//! redb latches the first I/O error of a `Database` (a write that found the disk full, a
//! failed fsync): from then on every operation of that `Database`, reads included, fails with
//! "previous I/O error" until it is closed and opened again. [`Store`] is the replaceable
//! handle the ledger and the crates beside it (the engine) use instead of a `Database`: the
//! ledger's writer reopens the database through it after such an error (docs/design.md,
//! "Crash behaviour"). Nobody keeps a `Database` of their own; a transaction is taken from the
//! handle when needed, so that the old database can close and the file can be opened again.
//!
//! The handle also keeps readers from seeing a group that the writer committed ahead of its
//! log record's sync ([`ahead`]): while such a window is open, readers are given the snapshot
//! from before it, and the other writers of the database wait. And it keeps a read that
//! begins after an append was answered from missing that append while the writer still holds
//! it in an open transaction ([`visible`]).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase, TransactionError, WriteTransaction};

use crate::error::StorageError;

mod ahead;
mod visible;

use ahead::Ahead;
use visible::Visible;

/// How long a reopen waits for calls in progress (`begin_read`, `begin_write`) to let go of
/// the old database.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// While no database is open (a reopen failed), how often a transaction may try to open it.
const RETRY_OPEN_EVERY: Duration = Duration::from_millis(50);

type Opener = dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync;

/// A handle on the ledger's redb database that survives the database being reopened after an
/// I/O error. Cheap to clone. Take transactions from it; do not keep them longer than needed.
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open database; `None` after a reopen that failed (the next reopen tries again).
    slot: RwLock<Option<Arc<Database>>>,
    open: Box<Opener>,
    /// Successful reopens so far.
    openings: AtomicU64,
    /// When a transaction last tried to open the database while none was open.
    last_try: Mutex<Option<Instant>>,
    /// The window of a group committed ahead of its sync, if one is open.
    ahead: Ahead,
    /// Acknowledged appends and what of them is committed.
    visible: Visible,
}

/// A read transaction: a snapshot of the database, possibly shared with other readers (the
/// one from before a group committed ahead of its sync).
pub(crate) type Snapshot = Arc<ReadTransaction>;

/// A write transaction of someone other than the ledger's writer (the catalog, the
/// registry): while it lives, the writer commits no group ahead of its sync, so that it never
/// sees, and never makes durable, a group that is not.
pub(crate) struct Write {
    txn: WriteTransaction,
    _other: ahead::OtherWriter,
}

impl Write {
    /// Commits the transaction.
    pub(crate) fn commit(self) -> Result<(), redb::CommitError> {
        self.txn.commit()
    }
}

impl Deref for Write {
    type Target = WriteTransaction;
    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

impl DerefMut for Write {
    fn deref_mut(&mut self) -> &mut WriteTransaction {
        &mut self.txn
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("open", &self.is_open())
            .field("opening", &self.opening())
            .finish()
    }
}

fn unavailable() -> redb::StorageError {
    redb::StorageError::Io(std::io::Error::other(
        "the ledger database is closed after a storage failure and could not be opened again \
         yet; it is retried shortly",
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
                openings: AtomicU64::new(0),
                last_try: Mutex::new(None),
                ahead: Ahead::default(),
                visible: Visible::default(),
            }),
        })
    }

    fn current(&self) -> Result<Arc<Database>, redb::StorageError> {
        if let Some(db) = self
            .inner
            .slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(db);
        }
        // A reopen failed (e.g. a write transaction still held the old database): try to
        // open it now, at most every RETRY_OPEN_EVERY, so that reads recover without waiting
        // for the next append.
        {
            let mut last = self
                .inner
                .last_try
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < RETRY_OPEN_EVERY) {
                return Err(unavailable());
            }
            *last = Some(Instant::now());
        }
        let mut slot = self
            .inner
            .slot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            let db = (self.inner.open)().map_err(|e| {
                tracing::warn!(error = %e, "opening the database again failed");
                unavailable()
            })?;
            *slot = Some(Arc::new(db));
            self.inner.openings.fetch_add(1, Ordering::AcqRel);
        }
        slot.clone().ok_or_else(unavailable)
    }

    /// Begins a read transaction (a snapshot): of the database as it is, or, while a group
    /// is committed ahead of its sync, as it was before that group. It holds every append
    /// answered before it began: if the writer has not committed some yet, this waits until
    /// it has.
    pub(crate) fn begin_read(&self) -> Result<Snapshot, TransactionError> {
        let opening = self.opening();
        self.inner
            .visible
            .wait(|| self.opening() != opening)
            .map_err(TransactionError::Storage)?;
        self.inner
            .ahead
            .read(|| Ok(Arc::new(self.current()?.begin_read()?)))
    }

    /// A read transaction of the database as it is, ahead or not: the writer's own reads.
    pub(crate) fn begin_read_own(&self) -> Result<ReadTransaction, TransactionError> {
        self.current()?.begin_read()
    }

    /// Begins a write transaction of someone other than the ledger's writer: waits for the
    /// current one to finish, and first for a group committed ahead of its sync to be synced
    /// (failing if that takes longer than a few seconds: the disk is failing).
    pub(crate) fn begin_write(&self) -> Result<Write, TransactionError> {
        let other = self.inner.ahead.other_writer()?;
        Ok(Write {
            txn: self.current()?.begin_write()?,
            _other: other,
        })
    }

    /// Begins one of the ledger writer's own write transactions, waiting for the current one
    /// to finish.
    pub(crate) fn begin_write_own(&self) -> Result<WriteTransaction, TransactionError> {
        self.current()?.begin_write()
    }

    /// Opens a window in which the writer may commit a group ahead of its sync: from here
    /// until [`close_window`](Self::close_window), readers get the snapshot taken now, and
    /// other writers wait. `false` (no window) while another writer's transaction is alive
    /// or waiting: the group then commits after its sync.
    pub(crate) fn open_window(&self) -> bool {
        self.inner
            .ahead
            .open(|| Ok(Arc::new(self.current()?.begin_read()?)))
    }

    /// Closes the window: what was committed in it is synced (or was undone by a reopen).
    pub(crate) fn close_window(&self) {
        self.inner.ahead.close();
    }

    /// The writer: the appends up to `position` are about to be answered.
    pub(crate) fn acked(&self, position: u64) {
        self.inner.visible.acked(position);
    }

    /// The writer: everything up to `position` is committed.
    pub(crate) fn committed(&self, position: u64) {
        self.inner.visible.committed(position);
    }

    /// The writer: whether it should commit what it holds now, because a reader waits for
    /// an answered append, or another writer for the database.
    pub(crate) fn commit_wanted(&self) -> bool {
        self.inner.visible.wanted() || self.inner.ahead.others_waiting()
    }

    /// Whether a database is open (false after a reopen that failed, until a transaction or
    /// the writer opens it again).
    pub(crate) fn is_open(&self) -> bool {
        self.inner
            .slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// How many times the database was reopened. Whoever keeps state derived from it in
    /// memory reloads that state when this changes: a reopen drops the commits that were not
    /// durable yet (`Durability::None`).
    pub(crate) fn opening(&self) -> u64 {
        self.inner.openings.load(Ordering::Acquire)
    }

    /// Closes the database and opens it again. On error no database is open until a later
    /// reopen succeeds; every operation meanwhile fails with a storage error.
    pub(crate) fn reopen(&self) -> Result<(), StorageError> {
        self.reopen_keeping(true)
    }

    /// Closes the window after the group committed in it failed, reopening the database
    /// while readers wait. The caller has made the database refuse every further write
    /// (`Deferral::retire`), so closing it writes nothing, and the reopen drops the group's
    /// commit, as every commit since the last durable one, and replays the log, which no
    /// longer holds the group's record. The window's snapshot is
    /// let go first (it keeps the old database's file open, and the file could not be opened
    /// again while it is). The window closes whether or not the reopen worked: either way the
    /// old database is out of reach, and with no database open, operations fail until one is.
    pub(crate) fn undo_window(&self) -> Result<(), StorageError> {
        // Nobody is in `begin_read` or `begin_write` of the old database meanwhile (readers
        // wait for the window, other writers for the gate), so it is never kept.
        self.inner.ahead.undo(|| self.reopen_keeping(false))
    }

    /// [`reopen`](Self::reopen); `keep`: whether the old database stays open when calls in
    /// progress do not let go of it in time.
    fn reopen_keeping(&self, keep: bool) -> Result<(), StorageError> {
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
                        if keep {
                            *slot = Some(still);
                        }
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
        self.inner.openings.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use redb::{StorageBackend, TableDefinition};

    use super::*;

    /// In-memory storage shared by every database opened on a clone.
    #[derive(Clone, Debug, Default)]
    struct Shared(Arc<RwLock<Vec<u8>>>);

    impl StorageBackend for Shared {
        fn len(&self) -> Result<u64, std::io::Error> {
            Ok(self.0.read().unwrap().len() as u64)
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            let data = self.0.read().unwrap();
            let start = offset as usize;
            out.copy_from_slice(&data[start..start + out.len()]);
            Ok(())
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.0.write().unwrap().resize(len as usize, 0);
            Ok(())
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn write(&self, offset: u64, src: &[u8]) -> Result<(), std::io::Error> {
            let start = offset as usize;
            self.0.write().unwrap()[start..start + src.len()].copy_from_slice(src);
            Ok(())
        }
    }

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    #[test]
    fn a_failed_reopen_is_retried_by_the_next_transaction() {
        let storage = Shared::default();
        let refuse = Arc::new(AtomicBool::new(false));
        let store = {
            let (storage, refuse) = (storage.clone(), refuse.clone());
            Store::open(move || {
                if refuse.load(Ordering::Acquire) {
                    return Err(redb::DatabaseError::DatabaseAlreadyOpen);
                }
                Database::builder().create_with_backend(storage.clone())
            })
            .unwrap()
        };
        let txn = store.begin_write().unwrap();
        txn.open_table(T).unwrap().insert(1, 10).unwrap();
        txn.commit().unwrap();

        // The reopen fails: no database, transactions fail with a clear error.
        refuse.store(true, Ordering::Release);
        assert!(store.reopen().is_err());
        assert!(!store.is_open());
        let err = store.begin_read().unwrap_err().to_string();
        assert!(err.contains("could not be opened again"), "{err}");
        assert_eq!(store.opening(), 0);

        // Once the database can be opened, the next transaction (after the retry interval)
        // opens it, and the data is there.
        refuse.store(false, Ordering::Release);
        std::thread::sleep(RETRY_OPEN_EVERY + Duration::from_millis(10));
        let txn = store.begin_read().unwrap();
        let value = txn.open_table(T).unwrap().get(1).unwrap().unwrap().value();
        assert_eq!(value, 10);
        assert!(store.is_open());
        assert_eq!(store.opening(), 1);

        // A reopen that works counts as an opening.
        store.reopen().unwrap();
        assert_eq!(store.opening(), 2);
    }

    #[test]
    fn a_window_opens_only_while_no_other_writer_has_a_transaction() {
        let storage = Shared::default();
        let store =
            Store::open(move || Database::builder().create_with_backend(storage.clone())).unwrap();
        let other = store.begin_write().unwrap();
        assert!(!store.open_window(), "opened beside another writer");
        drop(other);
        assert!(store.open_window());

        // The writer's own commit in the window is not read until the window closes.
        let txn = store.begin_write_own().unwrap();
        txn.open_table(T).unwrap().insert(1, 10).unwrap();
        txn.commit().unwrap();
        let unseen = |store: &Store| {
            let txn = store.begin_read().unwrap();
            match txn.open_table(T) {
                Ok(t) => t.get(1).unwrap().is_none(),
                Err(redb::TableError::TableDoesNotExist(_)) => true,
                Err(e) => panic!("{e}"),
            }
        };
        assert!(unseen(&store));
        store.close_window();
        assert!(!unseen(&store));
    }

    #[test]
    fn another_writer_is_not_kept_waiting_by_one_window_after_another() {
        let storage = Shared::default();
        let store =
            Store::open(move || Database::builder().create_with_backend(storage.clone())).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // A writer committing groups back to back: a window closes and the next opens at once.
        let windows = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut opened = 0u32;
                while !stop.load(Ordering::Acquire) {
                    if store.open_window() {
                        opened += 1;
                        std::thread::sleep(Duration::from_micros(200));
                        store.close_window();
                    }
                }
                opened
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        let other = store.begin_write();
        let waited = started.elapsed();
        stop.store(true, Ordering::Release);
        let opened = windows.join().unwrap();
        assert!(opened > 0, "no window opened");
        assert!(other.is_ok(), "{:?}", other.err());
        assert!(waited < Duration::from_secs(1), "waited {waited:?}");
    }
}
