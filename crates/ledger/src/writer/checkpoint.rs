//! Checkpoints of the write-ahead log: a durable redb commit that carries every logged group
//! into the database file, after which the log moves on (docs/design.md, "Write-ahead log").

use std::time::Instant;

use redb::Durability;

use super::GroupCommit;
use crate::error::StorageError;

impl GroupCommit {
    /// On a clean close, carries the logged groups into the redb file, so that the next open
    /// has nothing to replay. If it fails, the next open replays them.
    pub(super) fn checkpoint_on_close(&mut self) {
        if let Some(deferral) = self.wal.as_ref().and_then(|w| w.deferral()) {
            deferral.wait_idle();
        }
        let Some(wal) = self.wal.as_mut().filter(|w| w.has_records()) else {
            return;
        };
        let started = Instant::now();
        let done = (|| -> Result<(), StorageError> {
            self.store.begin_write_own()?.commit()?;
            Ok(())
        })();
        match done {
            Ok(()) => {
                wal.checkpointed();
                self.stats
                    .record_checkpoint(started.elapsed().as_micros() as u64);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the closing checkpoint failed; the next open replays the log")
            }
        }
    }

    /// A checkpoint of a log whose checkpoints are deferred, when it wants one: after a group
    /// was answered, an empty transaction commits durably, which carries every group since
    /// the last checkpoint into the redb file; its sync runs beside the next groups
    /// ([`crate::log::deferred`]). Its failure fails no append (they are in the log): the
    /// database is reopened, which replays the log.
    pub(super) fn checkpoint(&mut self) {
        if !self.wal.as_ref().is_some_and(|w| w.wants_checkpoint()) {
            return;
        }
        self.settle();
        let Some(wal) = self.wal.as_mut() else {
            return;
        };
        let Some(deferral) = wal.deferral() else {
            return;
        };
        let started = Instant::now();
        let committed = (|| -> Result<(), StorageError> {
            let mut txn = self.store.begin_write_own()?;
            txn.set_durability(Durability::Immediate)?;
            deferral.arm(true);
            let committed = txn.commit();
            deferral.arm(false);
            Ok(committed?)
        })();
        match committed {
            Ok(()) => {
                wal.checkpoint_deferred();
                self.stats
                    .record_checkpoint(started.elapsed().as_micros() as u64);
            }
            Err(error) => {
                tracing::warn!(error = %error, "a checkpoint failed; the log keeps the groups since the last one");
                if error.needs_reopen()
                    && let Err(e) = self.recover()
                {
                    tracing::error!(error = %e, "reopening the database failed; retrying with the next append");
                }
            }
        }
    }
}
