//! Waiting for the write path's hand-offs by polling briefly before sleeping.
//!
//! An append passes through three threads: the caller queues it, the writer applies it while
//! the log's sync thread writes and syncs its record, and the writer acknowledges it once
//! both are done. Each hand-off can be waited for asleep, but a thread that sleeps lets its
//! CPU go idle, and a CPU woken from idle is slow to notice the hand-off: on the virtual
//! machines measured, a sync that completes while every CPU is idle is noticed up to ten
//! times later than one that completes while a CPU is running (docs/benchmarks/write-path.md,
//! "A sync on an idle machine"). So the waits that are usually short — the writer's for the sync, the
//! sync thread's for the next record, the writer's for the next append — poll first.
//!
//! A [`Poller`] polls only as long as its recent waits suggest the hand-off is near (about
//! twice their average, at most its cap), and not at all once they have grown longer than
//! the cap: a ledger that gets an append every few milliseconds, or a disk whose syncs take
//! milliseconds, is waited for asleep. While it polls it gives the CPU to any other runnable
//! thread every few microseconds.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// What [`Poller::poll`] found.
#[derive(Debug)]
pub(crate) enum Polled<T> {
    /// A value.
    Got(T),
    /// The caller's `stop` said to stop polling.
    Stopped,
    /// Nothing came while polling was worth it, or the sender is gone; the wait began at the
    /// instant given.
    Idle(Instant),
}

/// Polls a channel for up to about twice its recent waits (at most `cap`), then sleeps on it.
#[derive(Debug)]
pub(crate) struct Poller {
    cap: Duration,
    /// Moving average of the last waits, in nanoseconds.
    average: u64,
}

impl Poller {
    /// A poller that never polls longer than `cap`.
    pub(crate) fn new(cap: Duration) -> Poller {
        Poller { cap, average: 0 }
    }

    /// How long the next wait polls before it sleeps.
    fn limit(&self) -> Duration {
        let cap = self.cap.as_nanos() as u64;
        if self.average >= cap {
            return Duration::ZERO;
        }
        // Twice the average, and at least 20 µs: a wait that was often instant still polls a
        // little, so that the average can notice when waits get short again.
        Duration::from_nanos((2 * self.average).clamp(20_000, cap))
    }

    /// Receives from `rx`; `None` once the sender is gone.
    pub(crate) fn recv<T>(&mut self, rx: &Receiver<T>) -> Option<T> {
        let start = Instant::now();
        let got = poll(rx, self.limit(), start, &|| false).or_else(|| rx.recv().ok());
        self.note(start);
        got
    }

    /// Polls `rx` as [`Self::recv`] does, but returns instead of sleeping: [`Polled::Idle`]
    /// once its polls are over (or the sender is gone), [`Polled::Stopped`] as soon as `stop`
    /// says so (asked every few microseconds). The caller does what it must before sleeping,
    /// then sleeps with [`Self::sleep`].
    pub(crate) fn poll<T>(&mut self, rx: &Receiver<T>, stop: impl Fn() -> bool) -> Polled<T> {
        let start = Instant::now();
        match poll(rx, self.limit(), start, &stop) {
            Some(v) => {
                self.note(start);
                Polled::Got(v)
            }
            None if stop() => Polled::Stopped,
            None => Polled::Idle(start),
        }
    }

    /// Sleeps until `rx` has a value, after a [`Self::poll`] that began at `since` found
    /// none; `None` once the sender is gone.
    pub(crate) fn sleep<T>(&mut self, rx: &Receiver<T>, since: Instant) -> Option<T> {
        let got = rx.recv().ok();
        self.note(since);
        got
    }

    /// Counts a wait that began at `start` and just ended into the average.
    fn note(&mut self, start: Instant) {
        let waited = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        // The last eight waits count about evenly; a sleep that lasted seconds must not keep
        // the poller from polling for long, so one wait counts at most as four times the cap.
        let waited = waited.min(4 * self.cap.as_nanos() as u64);
        self.average = (self.average * 7 + waited) / 8;
    }
}

/// Polls `rx` until `limit` has passed since `start`; `None` if nothing came (or the sender
/// is gone, which the caller's `recv` then reports).
fn poll<T>(
    rx: &Receiver<T>,
    limit: Duration,
    start: Instant,
    stop: &impl Fn() -> bool,
) -> Option<T> {
    if limit.is_zero() {
        return None;
    }
    let mut polls = 0u32;
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        polls += 1;
        // The clock is read and the CPU offered to other threads every 64 polls (a few
        // microseconds): often enough that a thread with work on this CPU is not held up.
        if polls.is_multiple_of(64) {
            if start.elapsed() >= limit || stop() {
                return None;
            }
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    #[test]
    fn every_value_arrives_in_order_whether_it_was_polled_or_slept_for() {
        let (tx, rx) = mpsc::sync_channel(1);
        let mut poller = Poller::new(Duration::from_millis(1));
        let sender = thread::spawn(move || {
            for i in 0..2_000u32 {
                // Most sent at once (found polling), some after more than the cap (found
                // asleep, and the average grows until polling stops for a while).
                if i % 100 == 0 {
                    thread::sleep(Duration::from_millis(3));
                }
                tx.send(i).expect("receiver");
            }
        });
        for i in 0..2_000u32 {
            assert_eq!(poller.recv(&rx), Some(i));
        }
        sender.join().expect("sender");
        assert_eq!(poller.recv(&rx), None, "the sender is gone");
    }

    #[test]
    fn it_polls_while_waits_are_short_and_stops_once_they_are_long() {
        let cap = Duration::from_micros(300);
        let mut poller = Poller::new(cap);
        let (tx, rx) = mpsc::channel();
        for _ in 0..16 {
            let tx = tx.clone();
            let late = thread::spawn(move || {
                thread::sleep(Duration::from_millis(2));
                tx.send(()).expect("receiver");
            });
            poller.recv(&rx).expect("a value");
            late.join().expect("sender");
        }
        assert_eq!(
            poller.limit(),
            Duration::ZERO,
            "waits of 2 ms against a cap of 300 µs: no polling (average {} ns)",
            poller.average
        );
        for _ in 0..32 {
            tx.send(()).expect("receiver");
            poller.recv(&rx).expect("a value");
        }
        let limit = poller.limit();
        assert!(
            limit >= Duration::from_micros(20) && limit <= cap,
            "instant waits: it polls again, within the cap ({limit:?})"
        );
    }

    #[test]
    fn a_poll_returns_what_came_stops_when_asked_and_leaves_the_sleep_to_the_caller() {
        let (tx, rx) = mpsc::channel();
        let mut poller = Poller::new(Duration::from_secs(20));
        // Recent waits of a second: a poll lasts up to two.
        poller.average = 1_000_000_000;
        tx.send(1).expect("receiver");
        assert!(matches!(poller.poll(&rx, || false), Polled::Got(1)));
        let start = Instant::now();
        assert!(matches!(poller.poll(&rx, || true), Polled::Stopped));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the poll stopped when asked ({:?})",
            start.elapsed()
        );
        let mut quick = Poller::new(Duration::from_micros(300));
        let Polled::Idle(since) = quick.poll(&rx, || false) else {
            panic!("nothing was sent: the poll ends idle");
        };
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(5));
            tx.send(2).expect("receiver");
        });
        assert_eq!(quick.sleep(&rx, since), Some(2));
        sender.join().expect("sender");
        assert_eq!(quick.sleep(&rx, Instant::now()), None, "the sender is gone");
    }

    #[test]
    fn a_sender_that_goes_away_ends_a_wait_that_is_polling() {
        let (tx, rx) = mpsc::channel::<()>();
        let mut poller = Poller::new(Duration::from_secs(20));
        // Recent waits of a second: the next one polls for up to two.
        poller.average = 1_000_000_000;
        assert_eq!(poller.limit(), Duration::from_secs(2));
        let dropper = thread::spawn(move || {
            thread::sleep(Duration::from_millis(5));
            drop(tx);
        });
        let start = Instant::now();
        assert_eq!(poller.recv(&rx), None);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the poll noticed the sender was gone ({:?})",
            start.elapsed()
        );
        dropper.join().expect("dropper");
    }
}
