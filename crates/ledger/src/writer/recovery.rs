//! Recovering from a storage failure: reopening the database (which replays the log),
//! undoing a group committed ahead of a sync that failed, and reloading what the writer keeps
//! in memory from the reopened database.

use std::sync::Arc;

use super::{Failure, GroupCommit};
use crate::error::StorageError;
use crate::ledger::load;

impl GroupCommit {
    /// Makes sure a database is open and the in-memory state was loaded from it.
    pub(super) fn ready(&mut self) -> Result<(), Failure> {
        let fail = |error| Failure {
            error,
            committing: false,
            logging: false,
        };
        let failed = self.wal.as_ref().and_then(|w| w.deferral()?.failed());
        if failed.is_some() || !self.store.is_open() || self.store.opening() != self.opening {
            // Answered groups held uncommitted are committed first (or restored by a reopen).
            self.settle();
        }
        if let Some(e) = failed {
            // A checkpoint's deferred sync failed: the database may not hold on disk what it
            // shows. Reopening it replays the log, which kept everything since the last
            // checkpoint that is on disk.
            tracing::warn!(error = %e, "a checkpoint did not reach the disk; reopening the database");
            self.recover_after(StorageError::from(e)).map_err(fail)?;
        }
        if !self.store.is_open() {
            self.store.reopen().map_err(fail)?;
        }
        if self.store.opening() != self.opening {
            self.reload().map_err(fail)?;
        }
        Ok(())
    }

    /// [`recover`](Self::recover) after `reason`, the failure that made it necessary; if the
    /// reopen fails too, the error is `reason`: a full disk is told apart by it (HTTP 507),
    /// where the reopen's own failure (the old database still held by a transaction, say)
    /// would not be. The next group tries again.
    pub(super) fn recover_after(&mut self, reason: StorageError) -> Result<(), StorageError> {
        self.recover().map_err(|reopen| {
            tracing::warn!(error = %reopen, "reopening the database failed; retrying with the next append");
            reason
        })
    }

    /// Undoes a group committed ahead of its sync after the sync (or the commit) failed:
    /// reopening the database drops every commit since the last durable one and replays the
    /// log, which no longer holds the group's record ([`crate::store::Store::undo_window`]). If the reopen
    /// fails, the next group opens the database again.
    pub(super) fn undo_ahead(&mut self) -> Result<(), StorageError> {
        debug_assert!(
            self.shared.is_none(),
            "no window opens over answered groups"
        );
        // A healthy database makes its pending commits durable when it closes: not this one.
        if let Some(deferral) = self.wal.as_ref().and_then(|w| w.deferral()) {
            deferral.retire();
        }
        let reopened = self.store.undo_window();
        self.ahead = false;
        reopened?;
        tracing::info!("reopened the database to undo a group whose sync failed");
        self.reload()
    }

    /// Closes and reopens the database after an I/O error, then reloads the in-memory state.
    pub(super) fn recover(&mut self) -> Result<(), StorageError> {
        // Answered groups held uncommitted: the reopen replays them from the log (an open
        // transaction would keep the database from closing).
        self.shared = None;
        self.store.reopen()?;
        tracing::info!("reopened the database after a storage failure");
        self.reload()
    }

    /// Reloads head, counters and registry from the (reopened) database. A commit that
    /// failed may still have become durable (the error came after the commit record was
    /// written): then the head moves on here, and its events are there for everyone to read,
    /// although the callers were told the append failed (a retry of it is idempotent).
    fn reload(&mut self) -> Result<(), StorageError> {
        let loaded = load(&self.store).map_err(|e| e.into_storage())?;
        let head = self.head.get();
        if loaded.head < head {
            tracing::error!(
                acknowledged = head,
                found = loaded.head,
                "the reopened database ends before the acknowledged head"
            );
        } else if loaded.head > head {
            tracing::warn!(
                from = head,
                to = loaded.head,
                "a commit reported as failed is durable after all"
            );
            self.head.advance(loaded.head);
        }
        // What the reopen found is readable; and when it ended before the acknowledged head
        // (logged above), readers must not wait for positions that no commit will bring.
        self.store.committed(self.head.get().max(loaded.head));
        self.next_stream_id = loaded.next_stream_id;
        self.last_recorded = self.last_recorded.max(loaded.last_recorded);
        self.log_sequence
            .store(loaded.log_sequence, std::sync::atomic::Ordering::Release);
        *self.registry.write().expect("registry lock") = Arc::new(loaded.registry);
        self.opening = self.store.opening();
        Ok(())
    }
}
