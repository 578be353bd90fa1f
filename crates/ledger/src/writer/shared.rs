//! Commits shared by groups (docs/design.md, "Commits shared by groups"): a small group's
//! transaction left open once its record is synced and its appends are answered, so that the
//! groups after it write into it and one redb commit serves them all.

use std::sync::atomic::Ordering;

use super::{GroupCommit, OpenTxn};

/// After this many groups a shared transaction ([`Shared`]) is committed once the last one is
/// answered. Each commit costs the writer about as much as writing a single-event group
/// (docs/benchmarks/writer.md, "Commits shared by groups"); past a few dozen groups that
/// saving is small.
const SHARED_COMMIT_GROUPS: usize = 32;

/// A group of more events than this does not share its commit (large groups gain little from
/// it; such a group commits ahead of its sync instead), and a shared transaction that holds
/// this many is committed once its last group is answered.
pub(crate) const SHARED_COMMIT_EVENTS: usize = 1024;

/// A write transaction left open after its groups' records synced and their appends were
/// answered, so that the next group writes into it and one commit serves them all. The
/// writer commits it when no append comes while it polls for the next one, when a reader
/// waits for an answered append or another writer for the database, before its own other
/// transactions, and right after answering the group that brings it to
/// [`SHARED_COMMIT_GROUPS`] groups or [`SHARED_COMMIT_EVENTS`] events (docs/design.md,
/// "Commits shared by groups"). Dropped uncommitted after a failure, its groups are restored
/// from the log by reopening the database.
pub(crate) struct Shared {
    /// The transaction, its tables open.
    pub(super) open: OpenTxn,
    pub(super) groups: usize,
    pub(super) events: usize,
}

impl Shared {
    /// Whether it holds enough to be committed once its last group is answered.
    pub(super) fn full(&self) -> bool {
        self.groups >= SHARED_COMMIT_GROUPS || self.events >= SHARED_COMMIT_EVENTS
    }
}

impl GroupCommit {
    /// Commits the groups answered in a shared transaction, if one is open. If the commit
    /// fails, the database is reopened, which restores them from the log.
    pub(super) fn settle(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        match shared.open.into_owner().commit() {
            Ok(()) => {
                self.store.committed(self.head.get());
                self.stats.shared_commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, groups = shared.groups, "committing answered groups failed; reopening the database, which replays them from the log");
                if let Err(e) = self.recover() {
                    tracing::error!(error = %e, "reopening the database failed; retrying with the next append");
                }
            }
        }
    }
}
