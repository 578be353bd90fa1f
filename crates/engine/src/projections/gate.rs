//! How many generations catch up at once.
//!
//! A catching-up generation holds up to two read batches (the one it folds and the one read
//! beside it, each up to `batch_bytes`) and the states it keeps across steps (`carry`), and
//! its folds keep the cores busy. Without a bound, many projections defined or upgraded at
//! once would each hold that much while sharing the same cores, none of them finishing
//! sooner. So a generation folds a catch-up step only while it holds a [`Turn`]: the gate lets
//! `capacity` generations through at a time, in the order they asked. A holder whose turn is
//! [`due`](Turn::due) — held for a slice while others wait — commits what it kept and gives
//! its turn and its buffers up, then queues again, so that every projection keeps moving.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(super) struct Gate {
    capacity: usize,
    /// How long a turn lasts once others wait for one.
    slice: Duration,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Turns held now.
    held: usize,
    /// Places in line, first first.
    line: VecDeque<u64>,
    next_ticket: u64,
}

impl Gate {
    pub(super) fn new(capacity: usize, slice: Duration) -> Arc<Gate> {
        Arc::new(Gate {
            capacity: capacity.max(1),
            slice,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few counters, consistent after every step: a panic elsewhere
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place at the end of the line.
    pub(super) fn join(self: &Arc<Gate>) -> Place {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.line.push_back(ticket);
        Place {
            gate: self.clone(),
            ticket,
        }
    }
}

/// A place in the gate's line; leaving it (dropping it) lets the ones behind move up.
pub(super) struct Place {
    gate: Arc<Gate>,
    ticket: u64,
}

impl Place {
    /// Waits up to `timeout` for a turn; gives the place back if none came.
    pub(super) fn wait(self, timeout: Duration) -> Result<Turn, Place> {
        let deadline = Instant::now() + timeout;
        let gate = &self.gate;
        let mut state = gate.lock();
        loop {
            if state.held < gate.capacity && state.line.front() == Some(&self.ticket) {
                state.line.pop_front();
                state.held += 1;
                drop(state);
                // The next in line may enter too, if there is room for it.
                gate.changed.notify_all();
                // Dropping `self` then finds its ticket gone from the line already.
                return Ok(Turn {
                    gate: gate.clone(),
                    since: Instant::now(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(state);
                return Err(self);
            }
            state = gate
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.line.retain(|&t| t != self.ticket);
        drop(state);
        self.gate.changed.notify_all();
    }
}

/// Leave to fold a catch-up; given back when dropped.
pub(super) struct Turn {
    gate: Arc<Gate>,
    since: Instant,
}

impl Turn {
    /// Whether the turn has lasted its slice while others wait for one.
    pub(super) fn due(&self) -> bool {
        self.since.elapsed() >= self.gate.slice && !self.gate.lock().line.is_empty()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.held -= 1;
        drop(state);
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn lets_capacity_through_in_the_order_asked() {
        let gate = Gate::new(2, Duration::from_secs(60));
        let a = gate.join().wait(NOW).ok().expect("room for a");
        let b = gate.join().wait(NOW).ok().expect("room for b");
        let c = gate.join();
        let d = gate.join();
        // Full: d is behind c, and neither gets in.
        let c = c.wait(Duration::from_millis(20)).err().expect("full");
        let d = d.wait(NOW).err().expect("full, and behind c");
        drop(a);
        // One turn free: the first in line takes it, the second still waits.
        let d = d.wait(NOW).err().expect("c is first");
        let c = c.wait(NOW).ok().expect("c's turn");
        drop(b);
        let d = d.wait(NOW).ok().expect("d's turn");
        drop((c, d));
        assert_eq!(gate.lock().held, 0);
    }

    #[test]
    fn a_place_given_up_lets_the_ones_behind_move_up() {
        let gate = Gate::new(1, Duration::from_secs(60));
        let a = gate.join().wait(NOW).ok().expect("room for a");
        let b = gate.join();
        let c = gate.join();
        drop(b);
        drop(a);
        let _c = c.wait(NOW).ok().expect("c is first now");
    }

    #[test]
    fn a_waiter_is_woken_when_a_turn_is_given_back() {
        let gate = Gate::new(1, Duration::from_secs(60));
        let a = gate.join().wait(NOW).ok().expect("room for a");
        let b = gate.join();
        let waiter = std::thread::spawn(move || b.wait(Duration::from_secs(30)).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        drop(a);
        assert!(waiter.join().expect("waiter"));
    }

    #[test]
    fn a_turn_is_due_after_its_slice_only_while_others_wait() {
        let gate = Gate::new(1, Duration::from_millis(30));
        let a = gate.join().wait(NOW).ok().expect("room for a");
        std::thread::sleep(Duration::from_millis(40));
        assert!(!a.due(), "nobody waits");
        let b = gate.join();
        assert!(a.due());
        drop(b);
        assert!(!a.due(), "the waiter left");
    }
}
