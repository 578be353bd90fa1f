//! Committing a group and the groups planned behind it, and answering their appends.

use std::time::Instant;

use loom_core::AppendOutcome;

use super::behind::{Behind, Planned, Queue};
use super::{Failure, Group, GroupCommit, Pending};
use crate::error::AppendError;

impl GroupCommit {
    /// Commits `group`, then each group planned behind the one before while its record
    /// synced ([`behind`]), in order.
    pub(super) fn commit_group(&mut self, group: &mut Vec<Pending>, queue: &mut Queue<'_>) {
        let mut planned: Option<Planned> = None;
        loop {
            let carried = planned.is_some();
            let mut behind: Option<Behind> = None;
            let started = Instant::now();
            let mut result = if carried {
                self.apply_group(group, planned.take(), queue, &mut behind)
            } else {
                self.ready()
                    .and_then(|()| self.apply_group(group, None, queue, &mut behind))
            };
            // Whether the database was reopened to undo a group committed ahead of its sync:
            // the failed database is gone then, and answering need not reopen it again.
            let mut undone = false;
            if let Err(Failure { committing, .. }) = &result {
                self.take_back_records_in_flight();
                if std::mem::take(&mut self.restore_shared) {
                    // The failed transaction held groups already answered: reopening the
                    // database replays them from the log (and not this group's record, taken
                    // back above).
                    undone = true;
                    if let Err(e) = self.recover() {
                        tracing::error!(error = %e, "restoring answered groups after a failed group failed; retrying with the next append");
                    }
                } else if self.ahead {
                    undone = true;
                    if let Err(e) = self.undo_ahead() {
                        tracing::error!(error = %e, "undoing a group committed ahead of its failed sync failed; retrying with the next append");
                    }
                }
                if carried && !committing {
                    // Nothing of it is in the log or the tables: planned on its own again.
                    if let Some(b) = behind.take() {
                        group.extend(b.group);
                    }
                    continue;
                }
            }
            if let Err(Failure {
                error,
                committing: false,
                logging: false,
            }) = &result
                && error.needs_reopen()
            {
                // Nothing was committed: the database had failed before (another writer of
                // it, an earlier group). Reopen it and try this group once more.
                tracing::warn!(error = %error, "the database failed before this group; reopening it");
                let reason = error.duplicate();
                if let Some(b) = behind.take() {
                    group.extend(b.group);
                }
                result = self
                    .recover_after(reason)
                    .map_err(|error| Failure {
                        error,
                        committing: false,
                        logging: false,
                    })
                    .and_then(|()| self.apply_group(group, None, queue, &mut behind));
                if result.is_err() {
                    self.take_back_records_in_flight();
                }
            }
            let committed = result.is_ok();
            if committed && carried {
                self.stats
                    .groups_behind
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.answer(group, result, started, undone);
            // A full shared transaction, or one somebody waits for, is committed now, before
            // the group planned behind (which then writes into a transaction of its own).
            if self
                .shared
                .as_ref()
                .is_some_and(|s| s.full() || self.store.commit_wanted())
            {
                self.settle();
            }
            match behind {
                Some(b) => {
                    *group = b.group;
                    // Planned on a group that did not commit: planned again, on its own.
                    planned = b.planned.filter(|_| committed);
                }
                None => {
                    if committed {
                        self.checkpoint();
                    }
                    return;
                }
            }
        }
    }

    /// After a group failed: every record begun and not finished is taken back, the group's
    /// own (if it failed before its sync was waited for) and the one behind it. A failure
    /// here leaves the log's tail marked dirty, which the next record overwrites.
    fn take_back_records_in_flight(&mut self) {
        if let Some(wal) = self.wal.as_mut() {
            while wal.pending() > 0 {
                let _ = wal.finish(false);
            }
        }
    }

    /// Answers a group's appends with its result (and reopens the database after a failure
    /// that needs it, unless `undone` already did).
    fn answer(
        &mut self,
        group: &mut Vec<Pending>,
        result: Result<(Vec<Result<AppendOutcome, AppendError>>, Group), Failure>,
        started: Instant,
        undone: bool,
    ) {
        match result {
            Ok((results, state)) => {
                self.stats
                    .record_commit(started.elapsed().as_micros() as u64);
                let written = state.head - self.head.get();
                if let Some(wal) = self.wal.as_mut() {
                    wal.group_committed(group.len());
                }
                self.next_stream_id = state.next_stream_id;
                self.last_recorded = state.recorded;
                self.stats
                    .events
                    .fetch_add(written, std::sync::atomic::Ordering::Relaxed);
                // Before the answers: a read that begins after one waits for the group to be
                // committed if it is not yet (`Shared`).
                self.store.acked(state.head);
                self.head.advance(state.head);
                for (pending, result) in group.drain(..).zip(results) {
                    let counter = match &result {
                        Ok(_) => &self.stats.appends,
                        Err(_) => &self.stats.conflicts,
                    };
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = pending.reply.send(result);
                }
            }
            Err(Failure { error, logging, .. }) => {
                tracing::error!(error = %error, appends = group.len(), "group commit failed");
                // Reopen before answering, so that a caller who reads after its failed append
                // finds a working database. (A failed log write left the database as it was:
                // the group's transaction is dropped uncommitted.)
                if error.needs_reopen()
                    && !logging
                    && !undone
                    && let Err(e) = self.recover()
                {
                    tracing::error!(error = %e, "reopening the database failed; retrying with the next append");
                }
                for pending in group.drain(..) {
                    let _ = pending
                        .reply
                        .send(Err(AppendError::Storage(error.duplicate())));
                }
            }
        }
    }
}
