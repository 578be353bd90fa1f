//! A generation's worker thread: catch up from the checkpoint, then follow the head.

use super::gate::{Place, Turn};
use super::*;

impl Shared {
    /// Persists a record; deletes the rows of `drop_generation` in the same transaction.
    pub(super) fn write_record(
        &self,
        name: &str,
        record: &Record,
        drop_generation: Option<u64>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(record).expect("a record serializes");
        let mut txn = self.db.write(Durability::Immediate)?;
        txn.put(CatalogTable::Projections, name, &json)?;
        if let Some(old) = drop_generation {
            txn.remove_projection_generation(name, old)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub(super) fn start(shared: &Arc<Shared>, g: &Arc<Gen>) {
        let sh = shared.clone();
        let gen_ = g.clone();
        g.life
            .spawn(format!("loom-proj-{}", g.name), move || sh.run(&gen_));
    }

    pub(super) fn run(&self, g: &Arc<Gen>) {
        tracing::debug!(projection = %g.name, generation = g.generation, "worker started");
        let mut backoff = Duration::from_millis(100);
        // Refilled by every step; their buffers are kept while catching up and let go once
        // caught up, so an idle projection does not hold a catch-up batch's memory.
        let mut reads = Reads::default();
        while !g.life.stopping() {
            if g.life.idle() {
                // Paused: what a catch-up kept is committed, so that its progress shows, and
                // its turn of the gate and its buffers are given up.
                self.put_down(g, &mut reads);
                continue;
            }
            match self.resync(g) {
                Ok(false) => {}
                // Reopened: what was kept was folded onto states the database may no longer
                // have; it is folded again from the stored checkpoint.
                Ok(true) => reads.carry.clear(),
                Err(e) => {
                    tracing::warn!(projection = %g.name, error = %e, "reloading the checkpoint failed; retrying");
                    reads.carry.clear();
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_STORAGE_BACKOFF);
                    continue;
                }
            }
            if g.retry_quarantine.swap(false, Ordering::AcqRel)
                && let Err(e) = self
                    .flush(g, &mut reads.carry)
                    .and_then(|()| self.retry_quarantined(g))
            {
                tracing::warn!(projection = %g.name, error = %e, "retrying quarantined streams failed");
            }
            let head = self.ledger.head();
            let position = g.life.position();
            if position >= head {
                // Nothing is kept here: a step that kept states covered less than the head
                // and the next one, reading on from them, commits them.
                debug_assert!(reads.carry.is_empty());
                // An idle projection holds no catch-up buffers, turn or place in line.
                self.put_down(g, &mut reads);
                g.life.reach_head();
                if g.pending.load(Ordering::Acquire) {
                    if let Err(e) = self.swap(g) {
                        tracing::error!(projection = %g.name, error = %e, "swapping generations failed");
                        self.fail(g, 0, format!("swapping in the new generation failed: {e}"));
                    }
                    continue;
                }
                self.ledger
                    .wait_for(position + 1, Duration::from_millis(250));
                continue;
            }
            // Far behind: a catch-up, which folds only in a turn of the gate ([`gate`]).
            if reads.turn.is_none() && head - position > self.batch_events as u64 {
                let place = reads.place.take().unwrap_or_else(|| self.gate.join());
                let waited = place.wait(Duration::ZERO).or_else(|place| {
                    // No turn free: the status says it waits in line.
                    g.queued.store(true, Ordering::Release);
                    place.wait(TURN_WAIT)
                });
                match waited {
                    Ok(turn) => {
                        reads.turn = Some(turn);
                        g.queued.store(false, Ordering::Release);
                    }
                    Err(place) => {
                        // Still in line; look at the flags again meanwhile.
                        reads.place = Some(place);
                        continue;
                    }
                }
            }
            let stepped = self.step(g, head, &mut reads);
            if stepped.is_err() {
                // Folded again from the stored checkpoint.
                reads.carry.clear();
            }
            match stepped {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) if is_io(&e) => {
                    // A full disk or another I/O error: the ledger reopens the database; try
                    // again later (from the stored checkpoint if it was reopened).
                    tracing::warn!(projection = %g.name, error = %e, "projection step failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_STORAGE_BACKOFF);
                }
                Err(e) => {
                    tracing::error!(projection = %g.name, error = %e, "projection step failed");
                    self.fail(g, 0, e.to_string());
                }
            }
            if reads.turn.as_ref().is_some_and(Turn::due) {
                // Others wait for a turn: this one queues again behind them.
                self.put_down(g, &mut reads);
            }
        }
        tracing::debug!(projection = %g.name, generation = g.generation, "worker stopped");
    }

    /// Commits what a catch-up kept, then lets go of the read buffers and of the turn of the
    /// gate (and the place in its line).
    fn put_down(&self, g: &Gen, reads: &mut Reads) {
        if let Err(e) = self.flush(g, &mut reads.carry) {
            tracing::warn!(projection = %g.name, error = %e, "committing the states kept while catching up failed; they are folded again");
        }
        *reads = Reads::default();
        g.queued.store(false, Ordering::Release);
    }

    /// Records a failure in memory and in the projection's record, and says so in the log
    /// (once: the projection stops here).
    pub(super) fn fail(&self, g: &Gen, position: u64, message: String) {
        tracing::warn!(projection = %g.name, generation = g.generation, position, error = %message, "projection failed; it stops at this event until resumed or redefined");
        let failure = Failure { position, message };
        g.life.fail(failure.clone());
        let mut map = self.map.write().expect("map lock");
        if let Some(proj) = map.get_mut(&g.name) {
            let mut record = proj.record.clone();
            if proj.active.generation == g.generation {
                record.failure = Some(failure);
            } else if proj
                .pending
                .as_ref()
                .is_some_and(|p| p.generation == g.generation)
            {
                record.pending_failure = Some(failure);
            } else {
                return;
            }
            if self.write_record(&g.name, &record, None).is_ok() {
                proj.record = record;
            }
        }
    }

    /// After the database was reopened (it drops the commits that were not durable yet),
    /// reloads the generation's progress from its stored checkpoint.
    /// Returns whether it did.
    pub(super) fn resync(&self, g: &Gen) -> Result<bool, StoreError> {
        let epoch = *g.epoch.lock().expect("epoch lock");
        if !self.db.reopened_since(epoch) {
            return Ok(false);
        }
        let current = self.db.epoch();
        let ProjectionCheckpoint {
            position,
            events_applied: events,
            keys,
        } = self
            .db
            .read()?
            .projection_checkpoint(&g.name, g.generation)?
            .unwrap_or_default();
        tracing::warn!(
            projection = %g.name,
            from = g.life.position(),
            to = position,
            "the database was reopened; continuing from the stored checkpoint"
        );
        g.life.fall_behind();
        *g.notes.lock().expect("notes lock") = notes::Notes::load(&self.db, &g.name, g.generation)?;
        g.events_applied.store(events, Ordering::Release);
        g.keys.store(keys, Ordering::Release);
        g.life.set_position(position);
        *g.epoch.lock().expect("epoch lock") = current;
        g.life.notify();
        Ok(true)
    }

    /// Folds the next batch of matching events. While catching up (a full batch), the batch
    /// after it is read on a second thread during the fold, for the next step.
    pub(super) fn step(&self, g: &Gen, head: u64, reads: &mut Reads) -> Result<(), EngineError> {
        // On from what was kept, if anything: it is not committed (nor published) yet.
        let position = reads.carry.covered().unwrap_or_else(|| g.life.position());
        // How many events reads ask for now: more while the steps fold many streams.
        let wanted = if reads.many_streams {
            self.batch_events.saturating_mul(MANY_STREAMS_GROWTH)
        } else {
            self.batch_events
        };
        let (head, asked) = match reads.ahead.take() {
            // Read during the last step from where this one starts (events are immutable, so
            // it is what reading now would return, up to the head known then).
            Some(Ahead { after, head, asked }) if after == position => {
                std::mem::swap(&mut reads.batch, &mut reads.next);
                (head, asked)
            }
            _ => {
                self.ledger.read_batch_bounded_into(
                    &g.selector,
                    ReadOptions::after(position, wanted),
                    self.batch_bytes,
                    &mut reads.batch,
                )?;
                (head, wanted)
            }
        };
        let (batch, carry) = (&mut reads.batch, &mut reads.carry);
        // Fewer than a full batch: every matching event up to `head` (read before the
        // snapshot was taken) is in hand. A batch is full by number or by size (a read
        // stops once it holds `batch_bytes`), and then only what it holds is covered.
        let full = batch.len() >= asked || batch.bytes() >= self.batch_bytes;
        let covered = match batch.last_position() {
            Some(last) if full => last,
            Some(last) => last.max(head),
            None => head,
        };
        if batch.is_empty() {
            reads.many_streams = false;
            self.flush(g, carry)?;
            // Nothing selected: advance in memory only; the stored checkpoint catches up with
            // the next commit (a restart re-reads a few non-matching events, harmlessly).
            g.life.advance(covered, covered >= head);
            g.life.notify();
            return Ok(());
        }
        let applied = if full {
            let next = &mut reads.next;
            let (applied, read) = std::thread::scope(|scope| {
                let reader = scope.spawn(|| {
                    // The head first: every matching event up to it is in the read after.
                    let head = self.ledger.head();
                    self.ledger
                        .read_batch_bounded_into(
                            &g.selector,
                            ReadOptions::after(covered, wanted),
                            self.batch_bytes,
                            next,
                        )
                        .map(|()| head)
                });
                (
                    self.apply(g, batch, covered, head, carry, true),
                    reader.join(),
                )
            });
            // A failed read is not this step's failure: the next step reads again.
            if let Ok(Ok(head)) = read {
                reads.ahead = Some(Ahead {
                    after: covered,
                    head,
                    asked: wanted,
                });
            }
            applied
        } else {
            self.apply(g, batch, covered, head, carry, false)
        };
        // The next step's size: larger after a full step that folded more streams than half
        // `batch_events` (about one event each); back to `batch_events` otherwise.
        reads.many_streams =
            full && matches!(applied, Ok(streams) if streams * 2 > self.batch_events);
        let failed = match applied {
            Ok(_) => return Ok(()),
            Err(Fault::Engine(e)) => return Err(e),
            Err(Fault::Module { position, error }) => (position, error),
        };
        // Keep what folds cleanly: every event before the failing one.
        let (mut position, mut error) = failed;
        let before = (0..batch.len())
            .take_while(|&i| batch.position(i) < position)
            .count();
        batch.truncate(before);
        if !batch.is_empty() {
            match self.apply(g, batch, position - 1, head, carry, false) {
                Ok(_) => {}
                Err(Fault::Engine(e)) => return Err(e),
                // The events before the failing one failed too, this time (a limit reached
                // only now): report that failure, where the projection really stopped.
                Err(Fault::Module {
                    position: earlier,
                    error: again,
                }) => {
                    tracing::warn!(projection = %g.name, first = position, error = %again, "folding the events before a failing one failed as well");
                    (position, error) = (earlier, again);
                }
            }
        }
        // What earlier steps kept is committed either way: it comes before the failure.
        self.flush(g, carry)?;
        self.fail(g, position, error.to_string());
        Ok(())
    }
}

/// A worker's read buffers: the batch of the current step and the one read beside its fold.
#[derive(Default)]
pub(super) struct Reads {
    batch: EventBatch,
    next: EventBatch,
    /// What `next` holds, if it was read: the matching events after `after`, read after
    /// the ledger's head was `head`.
    ahead: Option<Ahead>,
    /// States folded by the last steps of a catch-up and not committed yet.
    pub(super) carry: Carry,
    /// Leave to catch up, while catching up.
    turn: Option<Turn>,
    /// The place in the gate's line while waiting for a turn.
    place: Option<Place>,
    /// Whether the last step read a full batch and folded many streams: reads then ask for
    /// [`MANY_STREAMS_GROWTH`] times `batch_events`.
    many_streams: bool,
}

/// How many times `batch_events` a catch-up's reads ask for while its steps fold many
/// streams (more than half as many as `batch_events`, so about one event each). Every stream
/// a step folds costs about as much as several of its events — its state is found, handed to
/// the module and back, checked and kept — so larger steps, which fold each stream fewer
/// times, pay off there (docs/benchmarks/catch-up.md, "Larger steps over many streams"); with several events
/// per stream and step they do not, and cost memory. `batch_bytes` still bounds every read.
const MANY_STREAMS_GROWTH: usize = 2;

/// Longest wait for a turn of the gate before the worker looks at its flags again.
const TURN_WAIT: Duration = Duration::from_millis(250);

struct Ahead {
    after: u64,
    head: u64,
    /// How many events the read asked for.
    asked: usize,
}

/// Longest pause between retries of a projection step that failed with an I/O error.
pub(super) const MAX_STORAGE_BACKOFF: Duration = Duration::from_secs(5);

/// Whether an error is an I/O error of the database (a full disk, …), which may pass.
pub(super) fn is_io(e: &EngineError) -> bool {
    match e {
        EngineError::Store(s) => s.is_io(),
        _ => false,
    }
}

pub(super) enum Fault {
    Engine(EngineError),
    Module { position: u64, error: CallError },
}

impl From<EngineError> for Fault {
    fn from(e: EngineError) -> Self {
        Fault::Engine(e)
    }
}
