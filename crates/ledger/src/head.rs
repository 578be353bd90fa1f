//! Head notifications: wake waiters when the head passes a position, without polling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};

#[derive(Debug)]
pub(crate) struct Head {
    position: AtomicU64,
    changed: Event,
}

impl Head {
    pub(crate) fn new(position: u64) -> Head {
        Head {
            position: AtomicU64::new(position),
            changed: Event::new(),
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    pub(crate) fn advance(&self, position: u64) {
        self.position.store(position, Ordering::Release);
        self.changed.notify(usize::MAX);
    }

    /// Blocks until the head is at least `position` or `timeout` passed; returns the head.
    pub(crate) fn wait_for(&self, position: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let head = self.get();
            if head >= position {
                return head;
            }
            let listener = self.changed.listen();
            let head = self.get();
            if head >= position {
                return head;
            }
            if listener.wait_deadline(deadline).is_none() {
                return self.get();
            }
        }
    }

    /// Waits until the head is at least `position`; returns the head.
    pub(crate) async fn wait_for_async(&self, position: u64) -> u64 {
        loop {
            let head = self.get();
            if head >= position {
                return head;
            }
            let listener = self.changed.listen();
            let head = self.get();
            if head >= position {
                return head;
            }
            listener.await;
        }
    }
}
