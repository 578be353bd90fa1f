//! The life cycle projections' generations and reactors share: a worker thread that works
//! through the ledger from a position, which a user may pause and resume, a module error
//! stops with a [`Failure`], and the engine halts and joins.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use event_listener::{Event as Notify, EventListener, Listener};
use serde::{Deserialize, Serialize};

/// How long an idle (paused or failed) worker sleeps before it looks at its flags again; a
/// change of them wakes it at once.
const IDLE_NAP: Duration = Duration::from_millis(500);

/// Life-cycle status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Following the head.
    Running,
    /// Working through history; has not reached the head yet.
    CatchingUp,
    /// Paused by a user.
    Paused,
    /// Stopped by an error; `resume` retries (for a projection, a new module version also
    /// rebuilds).
    Failed,
}

/// The error that stopped a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Failure {
    /// Position of the event the module failed on (0 when not tied to an event).
    pub position: u64,
    /// What went wrong.
    pub message: String,
}

/// A worker's position, flags and thread. Every change of a flag, a failure or reaching the
/// head notifies [`Lifecycle::listen`]ers (the worker itself while idle, and readers waiting
/// for a position).
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    /// Every selected event up to here is done.
    position: AtomicU64,
    caught_up: AtomicBool,
    paused: AtomicBool,
    stop: AtomicBool,
    failure: Mutex<Option<Failure>>,
    /// Held while progress is published ([`advance`](Self::advance)) and while a status is
    /// read ([`progress`](Self::progress)), so that the two agree.
    publishing: Mutex<()>,
    changed: Notify,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Lifecycle {
    /// Takes the flags a stored definition recorded (before the worker starts).
    pub(crate) fn restore(&self, paused: bool, failure: Option<Failure>) {
        self.paused.store(paused, Ordering::Release);
        *self.failure.lock().expect("failure lock") = failure;
    }

    pub(crate) fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    pub(crate) fn set_position(&self, position: u64) {
        self.position.store(position, Ordering::Release);
    }

    /// The status the flags say: a failure first, then a pause, then whether it reached the
    /// head.
    pub(crate) fn status(&self) -> Status {
        if self.failure.lock().expect("failure lock").is_some() {
            Status::Failed
        } else if self.is_paused() {
            Status::Paused
        } else if self.caught_up.load(Ordering::Acquire) {
            Status::Running
        } else {
            Status::CatchingUp
        }
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        self.failure.lock().expect("failure lock").clone()
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.failure.lock().expect("failure lock").is_some()
    }

    /// Stops the work at `failure` until resumed.
    pub(crate) fn fail(&self, failure: Failure) {
        *self.failure.lock().expect("failure lock") = Some(failure);
        self.notify();
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Pauses, or resumes; resuming also clears a failure (the failed event is retried).
    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        if !paused {
            *self.failure.lock().expect("failure lock") = None;
        }
        self.notify();
    }

    /// True once the engine asked the worker to stop.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// True when the worker should put down the batch in hand: stopping or paused.
    pub(crate) fn interrupted(&self) -> bool {
        self.stopping() || self.is_paused()
    }

    /// Records that every event up to the head is done; notifies on the first time.
    pub(crate) fn reach_head(&self) {
        if !self.caught_up.swap(true, Ordering::AcqRel) {
            self.notify();
        }
    }

    /// Publishes the worker's progress: every selected event up to `position` is done, and
    /// whether that is the head. A status read through [`progress`](Self::progress) then
    /// never says `running` with the position from before, nor shows the position at the
    /// head still `catching_up`.
    pub(crate) fn advance(&self, position: u64, at_head: bool) {
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        if at_head {
            self.reach_head();
        }
        self.set_position(position);
    }

    /// The status, the failure and the position, as one publication left them.
    pub(crate) fn progress(&self) -> (Status, Option<Failure>, u64) {
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        // The status and failure first, progress after: the worker publishes progress before
        // it records a failure, so read in this order a failed status never comes with the
        // progress from before the events it folded up to the failing one.
        (self.status(), self.failure(), self.position())
    }

    /// Records that the worker is behind the head again (its progress was reloaded).
    pub(crate) fn fall_behind(&self) {
        self.caught_up.store(false, Ordering::Release);
    }

    /// While paused or failed, waits for a change (or a short nap) and returns true; the
    /// worker loop then looks at its flags again. Returns false when there is work to do.
    pub(crate) fn idle(&self) -> bool {
        if !self.is_paused() && !self.is_failed() {
            return false;
        }
        let listener = self.listen();
        if !self.stopping() {
            let _ = listener.wait_timeout(IDLE_NAP);
        }
        true
    }

    /// A listener woken by the next change of progress or flags.
    pub(crate) fn listen(&self) -> EventListener {
        self.changed.listen()
    }

    /// Wakes every listener.
    pub(crate) fn notify(&self) {
        self.changed.notify(usize::MAX);
    }

    /// Runs `work` on a thread of its own, named `name`.
    pub(crate) fn spawn(&self, name: String, work: impl FnOnce() + Send + 'static) {
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(work)
            .expect("spawning a worker thread");
        *self.handle.lock().expect("handle lock") = Some(handle);
    }

    /// Asks the worker to stop; it finishes the call in hand.
    pub(crate) fn halt(&self) {
        self.stop.store(true, Ordering::Release);
        self.notify();
    }

    /// Waits for the worker thread to end.
    pub(crate) fn join(&self) {
        if let Some(h) = self.handle.lock().expect("handle lock").take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_status_never_says_running_with_the_position_from_before() {
        // A worker reaching the head (position 2) while a reader polls its status, many
        // times over: `running` must come with position 2.
        for _ in 0..20_000 {
            let life = Arc::new(Lifecycle::default());
            life.advance(1, false);
            let reader = {
                let life = life.clone();
                std::thread::spawn(move || {
                    loop {
                        let (status, _, position) = life.progress();
                        if status == Status::Running {
                            return position;
                        }
                        std::hint::spin_loop();
                    }
                })
            };
            life.advance(2, true);
            assert_eq!(reader.join().expect("reader"), 2);
        }
    }
}
