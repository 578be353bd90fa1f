//! A group committed ahead of its sync (docs/design.md, "Ahead of the sync").
//!
//! The writer may commit a group's transaction (`Durability::None`) while the group's log
//! record syncs, instead of after, and so answer its appends sooner. Until the sync is done
//! that commit is not durable, and if the sync fails it is undone by reopening the database.
//! So for as long as it may be undone — the window — nobody else may see it:
//!
//! * readers are given the snapshot taken when the window opened, before the commit;
//! * writers other than the ledger's (the catalog, the registry) wait: their transaction
//!   would see the group, and a durable commit of theirs would make it durable on disk.
//!
//! A window opens only while no other writer's transaction is alive or waiting, so the
//! ledger's writer never waits for one; the group then commits after its sync, as before.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::TransactionError;

use super::Snapshot;

/// The longest another writer waits for a window to close. A window lasts one sync; one that
/// stays open this long belongs to a disk that is failing, and the caller gets an error
/// instead of waiting on.
const OTHER_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct Ahead {
    /// The snapshot readers are given while a window is open.
    snapshot: RwLock<Option<Snapshot>>,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    closed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// Other writers' transactions alive, being begun or waiting to be.
    others: usize,
    /// Whether a window is open.
    open: bool,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts one transaction of another writer until dropped.
pub(crate) struct OtherWriter(Arc<Gate>);

impl Drop for OtherWriter {
    fn drop(&mut self) {
        self.0.lock().others -= 1;
    }
}

impl Ahead {
    /// The snapshot of an open window, else `fresh()`. The lock is held while `fresh` runs, so
    /// that a window cannot open and its commit land between the check and the snapshot.
    pub(super) fn read(
        &self,
        fresh: impl FnOnce() -> Result<Snapshot, TransactionError>,
    ) -> Result<Snapshot, TransactionError> {
        let published = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        match &*published {
            Some(snapshot) => Ok(snapshot.clone()),
            None => fresh(),
        }
    }

    /// Whether another writer's transaction is alive, being begun or waiting to be.
    pub(super) fn others_waiting(&self) -> bool {
        self.gate.lock().others > 0
    }

    /// Counts a transaction of another writer, once no window is open. It counts from
    /// before it waits, so that no new window opens meanwhile: a writer committing one group
    /// after another would otherwise open the next window before the waiting one wakes up.
    pub(super) fn other_writer(&self) -> Result<OtherWriter, TransactionError> {
        let deadline = Instant::now() + OTHER_WAIT;
        let mut state = self.gate.lock();
        state.others += 1;
        while state.open {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.others -= 1;
                return Err(TransactionError::Storage(redb::StorageError::Io(
                    std::io::Error::other(
                        "the ledger's last group has not finished syncing for 5 seconds, so \
                         this write did not start; the disk may be failing: check it, then \
                         retry",
                    ),
                )));
            }
            state = self
                .gate
                .closed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(OtherWriter(self.gate.clone()))
    }

    /// Opens a window with the snapshot `take()` returns (taken before the group commits),
    /// unless another writer's transaction is alive or waiting, or the snapshot cannot be
    /// taken.
    pub(super) fn open(&self, take: impl FnOnce() -> Result<Snapshot, TransactionError>) -> bool {
        {
            let mut state = self.gate.lock();
            if state.others > 0 {
                return false;
            }
            state.open = true;
        }
        // Readers that begin before the snapshot is published read the database as it is:
        // the group is not committed yet.
        match take() {
            Ok(snapshot) => {
                *self
                    .snapshot
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "no snapshot for a window; the group commits after its sync");
                self.close();
                false
            }
        }
    }

    /// Closes the window after `reopen`, which runs while readers wait, with the window's
    /// snapshot let go.
    pub(super) fn undo<T>(&self, reopen: impl FnOnce() -> T) -> T {
        let mut published = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *published = None;
        let reopened = reopen();
        self.gate.lock().open = false;
        drop(published);
        self.gate.closed.notify_all();
        reopened
    }

    /// Closes the window: readers read the database as it is again, other writers go on.
    pub(super) fn close(&self) {
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.gate.lock().open = false;
        self.gate.closed.notify_all();
    }
}
