//! Acknowledged appends that are not committed to the database yet (docs/design.md,
//! "Commits shared by groups").
//!
//! While appends keep arriving, the ledger's writer leaves a group's transaction open once its
//! log record has synced, answers the group's appends, and writes the next group into the same
//! transaction: one redb commit then serves several groups. The appends are durable (their
//! records are in the log) but not yet in a snapshot. So that a read that begins after an
//! append was answered still finds it, a reader that finds acknowledged positions beyond the
//! last commit asks the writer to commit and waits for it; the writer looks for such a request
//! after each group, and while it polls for the next append.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};

/// The longest a reader waits for acknowledged appends to be committed. The writer commits
/// after the group it is writing (a sync or so); one that does not for this long has a disk
/// that is failing, and the reader gets an error instead of waiting on.
const READER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub(super) struct Visible {
    /// The last position the writer acknowledged (or is about to).
    acked: AtomicU64,
    /// The last position in a commit of the writer's (or found by a reopen, which replays
    /// the log).
    committed: AtomicU64,
    /// A reader waits for acknowledged appends to be committed.
    wanted: AtomicBool,
    changed: Event,
}

impl Visible {
    /// Notes that the appends up to `position` are about to be answered: before the answers
    /// go out, so that a reader who got one finds the position here.
    pub(super) fn acked(&self, position: u64) {
        self.acked.fetch_max(position, Ordering::AcqRel);
    }

    /// Notes that everything up to `position` is committed (readable).
    pub(super) fn committed(&self, position: u64) {
        self.committed.fetch_max(position, Ordering::AcqRel);
        if self.wanted.swap(false, Ordering::AcqRel) {
            self.changed.notify(usize::MAX);
        }
    }

    /// Whether a reader waits for a commit.
    pub(super) fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    /// Waits until every acknowledged append is committed. `reopened` tells whether the
    /// database was opened again since the wait began: a reopen replays the log, which holds
    /// every acknowledged append, so the wait is over then too.
    pub(super) fn wait(&self, reopened: impl Fn() -> bool) -> Result<(), redb::StorageError> {
        let target = self.acked.load(Ordering::Acquire);
        if self.committed.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let deadline = Instant::now() + READER_WAIT;
        loop {
            let listener = self.changed.listen();
            if self.committed.load(Ordering::Acquire) >= target || reopened() {
                return Ok(());
            }
            // Asked for after listening, so that the commit that clears it notifies us; and
            // checked once more, for a commit that came before the request.
            self.wanted.store(true, Ordering::Release);
            if self.committed.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            // Short slices: a reopen does not notify.
            let slice = (Instant::now() + Duration::from_millis(10)).min(deadline);
            if listener.wait_deadline(slice).is_none() && Instant::now() >= deadline {
                return Err(redb::StorageError::Io(std::io::Error::other(
                    "appends acknowledged 5 seconds ago are still not readable; the disk may be \
                     failing: check it, then retry",
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_reader_waits_for_acknowledged_positions_to_be_committed() {
        let visible = Arc::new(Visible::default());
        // Nothing acknowledged beyond the last commit: no wait, nothing asked.
        visible.acked(5);
        visible.committed(5);
        visible.wait(|| false).unwrap();
        assert!(!visible.wanted());

        visible.acked(7);
        let reader = {
            let visible = visible.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                visible.wait(|| false).unwrap();
                started.elapsed()
            })
        };
        let asked = Instant::now();
        while !visible.wanted() {
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "the reader never asked"
            );
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !reader.is_finished(),
            "the reader did not wait for the commit"
        );
        visible.committed(7);
        let waited = reader.join().unwrap();
        assert!(waited >= Duration::from_millis(50), "waited {waited:?}");
        assert!(!visible.wanted(), "the commit answers the request");
    }

    #[test]
    fn a_reopen_ends_the_wait() {
        let visible = Visible::default();
        visible.acked(3);
        let started = Instant::now();
        let checks = std::cell::Cell::new(0);
        visible
            .wait(|| {
                checks.set(checks.get() + 1);
                checks.get() > 2
            })
            .unwrap();
        assert_eq!(checks.get(), 3, "asked until the reopen");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
