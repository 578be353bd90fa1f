//! Checkpoints that do not hold up the groups behind them: the `fdatasync` of a checkpoint's
//! durable redb commit runs on a thread of its own while the writer goes on committing groups
//! through the write-ahead log (docs/design.md, "Checkpoints").
//!
//! A checkpoint writes every page the groups since the last one changed (megabytes) and syncs
//! the file; done inside a group that takes tens of milliseconds, and every append waiting
//! behind it waits as long. Here the writer [arms](Deferral::arm) the [`Deferral`] around the
//! checkpoint's commit: redb writes the pages and the header as usual, and its `sync_data`
//! hands the sync to a thread and returns. Until that sync completes the checkpoint is not
//! relied on: its group, and every group after it, is in the write-ahead log, and the log keeps
//! the records from before it ([`super::wal`] switches to its other file instead of starting
//! over). After a crash the database opens at this checkpoint or, if its sync did not finish,
//! at the one before — the same two outcomes redb has for a crash inside a durable commit — and
//! the log is replayed from there.
//!
//! What redb writes after a deferred sync must not reach the disk before it: redb counts the
//! checkpoint as durable and may reuse pages that only the checkpoint before it still needs.
//! So every write, resize or sync of the file waits until the deferred sync is done
//! ([`DeferringFile`]); between checkpoints redb writes the file only when its cache
//! overflows, when it grows the file, and for the engine's own durable commits. A deferred sync
//! that fails is reported by every later write and sync, and the writer, which
//! [checks](Deferral::failed) before each group, reopens the database, replaying the log.

use std::io;
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Whether syncs are deferred, and the deferred sync in progress; shared by the writer and
/// every opening of the database (a reopen after an I/O error makes a new backend).
#[derive(Debug, Default)]
pub(crate) struct Deferral {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The writer is committing a checkpoint: its syncs are deferred.
    armed: bool,
    /// A deferred sync is running.
    pending: bool,
    /// The last deferred sync failed (its error); cleared when the database is opened again.
    failed: Option<(io::ErrorKind, String)>,
}

impl Deferral {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Defers the syncs of the commit that follows (`true`), until disarmed (`false`).
    pub(crate) fn arm(&self, on: bool) {
        self.state().armed = on;
    }

    /// Whether no deferred sync is running.
    pub(crate) fn idle(&self) -> bool {
        !self.state().pending
    }

    /// Waits until no deferred sync is running.
    pub(crate) fn wait_idle(&self) {
        drop(self.settled());
    }

    /// Whether a deferred sync failed since the database was opened.
    pub(crate) fn failed(&self) -> Option<io::Error> {
        self.state()
            .failed
            .as_ref()
            .map(|(kind, message)| io::Error::new(*kind, message.clone()))
    }

    /// Waits for a deferred sync in progress; returns the state with none running.
    fn settled(&self) -> MutexGuard<'_, State> {
        let mut state = self.state();
        while state.pending {
            state = self
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state
    }

    /// Waits for a deferred sync in progress, then reports whether one failed.
    fn check(&self) -> io::Result<()> {
        match &self.settled().failed {
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(
                *kind,
                format!("a checkpoint's deferred sync failed: {message}"),
            )),
        }
    }
}

/// The database file, with a checkpoint's sync deferred while the [`Deferral`] is armed.
#[derive(Debug)]
pub(crate) struct DeferringFile {
    file: Arc<FileBackend>,
    deferral: Arc<Deferral>,
}

impl DeferringFile {
    /// The file for a new opening of the database: waits for a deferred sync of an earlier
    /// opening and forgets its failure (the opening replays the log over it).
    pub(crate) fn new(file: FileBackend, deferral: Arc<Deferral>) -> DeferringFile {
        {
            let mut state = deferral.settled();
            state.failed = None;
            state.armed = false;
        }
        DeferringFile {
            file: Arc::new(file),
            deferral,
        }
    }
}

impl StorageBackend for DeferringFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.deferral.check()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut state = self.deferral.settled();
        if let Some((kind, message)) = &state.failed {
            return Err(io::Error::new(
                *kind,
                format!("a checkpoint's deferred sync failed: {message}"),
            ));
        }
        if !state.armed {
            drop(state);
            return self.file.sync_data();
        }
        state.pending = true;
        drop(state);
        let file = self.file.clone();
        let deferral = self.deferral.clone();
        let spawned = std::thread::Builder::new()
            .name("loom-checkpoint-sync".into())
            .spawn(move || {
                let synced = file.sync_data();
                let mut state = deferral.state();
                state.pending = false;
                if let Err(e) = synced {
                    tracing::error!(error = %e, "a checkpoint's deferred sync failed; the database is reopened and the write-ahead log replayed");
                    state.failed = Some((e.kind(), e.to_string()));
                }
                drop(state);
                deferral.done.notify_all();
            });
        if let Err(e) = spawned {
            // No thread to defer to: sync here.
            tracing::warn!(error = %e, "no thread for a checkpoint's sync; syncing in the writer");
            let synced = self.file.sync_data();
            self.deferral.state().pending = false;
            self.deferral.done.notify_all();
            return synced;
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.deferral.check()?;
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.deferral.wait_idle();
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, Durability, ReadableDatabase, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn open(path: &std::path::Path, deferral: &Arc<Deferral>) -> Database {
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        let backend = DeferringFile::new(FileBackend::new(file).unwrap(), deferral.clone());
        Database::builder().create_with_backend(backend).unwrap()
    }

    #[test]
    fn an_armed_commit_returns_before_its_sync_and_is_on_disk_once_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let deferral = Arc::new(Deferral::default());
        let db = open(&path, &deferral);
        for (i, armed) in [(1, true), (2, false), (3, true)] {
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(Durability::Immediate).unwrap();
            txn.open_table(T).unwrap().insert(i, i * 10).unwrap();
            deferral.arm(armed);
            txn.commit().unwrap();
            deferral.arm(false);
        }
        deferral.wait_idle();
        assert!(deferral.idle() && deferral.failed().is_none());
        drop(db);
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        for i in 1..=3 {
            assert_eq!(t.get(i).unwrap().unwrap().value(), i * 10);
        }
    }

    #[test]
    fn a_failed_deferred_sync_fails_every_write_until_the_file_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let deferral = Arc::new(Deferral::default());
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let backend = DeferringFile::new(FileBackend::new(file).unwrap(), deferral.clone());
        backend.write(0, b"before").unwrap();
        deferral.state().failed = Some((io::ErrorKind::Other, "EIO".into()));
        assert!(deferral.failed().is_some());
        for e in [
            backend.write(0, b"after").unwrap_err(),
            backend.sync_data().unwrap_err(),
            backend.set_len(1 << 20).unwrap_err(),
        ] {
            assert!(e.to_string().contains("deferred sync failed: EIO"), "{e}");
        }
        let mut read = [0u8; 6];
        backend.read(0, &mut read).unwrap();
        assert_eq!(&read, b"before", "reads go on");
        drop(backend);
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let reopened = DeferringFile::new(FileBackend::new(file).unwrap(), deferral.clone());
        assert!(deferral.failed().is_none());
        reopened.write(0, b"again!").unwrap();
    }
}
