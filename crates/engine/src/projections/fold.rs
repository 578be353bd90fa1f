//! One step's fold: the new events grouped by partition key, each group folded by the
//! module from its previous state, and the states and checkpoint committed together.

use super::*;

impl Shared {
    /// One step: folds the events of `events` it selects (every matching event up to
    /// `covered`) onto the states kept in `carry` or stored, and commits the new states with
    /// the checkpoint — or, when `keep` (the step read a full batch), may keep them in
    /// `carry` for the next step's commit ([`super::carry`]). Returns how many groups (streams,
    /// for a per-stream projection) it folded.
    // Long by design: one step — which events, their groups and previous states, the fold,
    // each group's outcome (a state, or a quarantined stream), the commit.
    #[allow(clippy::too_many_arguments)] // one step's input, its carry and its mode
    pub(super) fn apply(
        &self,
        g: &Gen,
        events: &EventBatch,
        covered: u64,
        head: u64,
        carry: &mut Carry,
        keep: bool,
    ) -> Result<usize, Fault> {
        let module = self.module_of(g).map_err(|e| Fault::Engine(e.into()))?;
        let mut step_notes = notes::StepNotes::default();
        let groups = {
            let selection = notes::Selection::new(g, &module);
            Groups::new(g.spec.partition, events, |e| {
                selection.keep(e, &mut step_notes)
            })?
        };
        let previous = self.previous_states(g, &groups, carry)?;
        let quarantine =
            g.spec.on_error == OnError::Quarantine && g.spec.partition == Partition::Stream;
        // Fold every group; many groups are folded on all cores (each call has its own
        // instance, so calls are independent).
        let mut folded = self.fold_groups(g, &module, &groups, 0, &previous);
        let mut written = Vec::with_capacity(groups.len());
        let mut new_keys = 0u64;
        let mut count = 0u64;
        let mut i = 0;
        while i < groups.len() {
            let (key, prev) = (groups.keys[i], &previous[i]);
            let batch = groups.events(i);
            let state = prev.as_ref().map(|p| p.state.as_slice());
            let outcome = match std::mem::replace(&mut folded[i], Ok(Vec::new())) {
                Ok(next) => match loom_core::json::check_strict(&next) {
                    Ok(()) => Ok(next),
                    Err(why) => Err(Fault::Module {
                        position: batch[0].position,
                        error: CallError::BadOutput {
                            entry: Entry::Evolve,
                            message: format!(
                                "evolve returned a state that is not strict JSON: {why}"
                            ),
                        },
                    }),
                },
                Err(error) => Err(self.locate(&module, state, batch, error)),
            };
            let next = match outcome {
                Ok(next) => next,
                Err(Fault::Module { position, error }) if quarantine => {
                    tracing::warn!(projection = %g.name, stream = key, position, error = %error, "stream quarantined; the other streams fold on until it is resumed");
                    step_notes.quarantined.push((
                        key.to_owned(),
                        Failure {
                            position,
                            message: error.to_string(),
                        },
                    ));
                    // What comes before the failing event is folded, as in a stopped
                    // projection; `resume` goes on from there.
                    let before: Vec<EventView<'_>> = batch
                        .iter()
                        .take_while(|e| e.position < position)
                        .copied()
                        .collect();
                    if !before.is_empty()
                        && let Ok(next) = self.runtime.evolve_views(&module, state, &before)
                        && loom_core::json::check_strict(&next).is_ok()
                    {
                        let (record, new) = state_after(prev.as_ref(), &before, view_at, &next);
                        new_keys += u64::from(new);
                        count += before.len() as u64;
                        written.push((key, record));
                    }
                    // The groups after a failing one were not folded (the call stopped at
                    // it): fold them now.
                    let rest = self.fold_groups(g, &module, &groups, i + 1, &previous);
                    for (slot, r) in folded[i + 1..].iter_mut().zip(rest) {
                        *slot = r;
                    }
                    i += 1;
                    continue;
                }
                Err(fault) => return Err(fault),
            };
            let (record, new) = state_after(prev.as_ref(), batch, view_at, &next);
            new_keys += u64::from(new);
            count += batch.len() as u64;
            written.push((key, record));
            i += 1;
        }
        carry.add(written, count, new_keys, covered);
        // A step with notes commits at once: the next step's selection reads them as
        // committed.
        if keep && step_notes.is_empty() && !carry.is_due() {
            return Ok(groups.len());
        }
        self.commit(g, carry, head, step_notes)?;
        Ok(groups.len())
    }

    /// The state of each group's key before the step: kept in `carry`, else stored.
    fn previous_states(
        &self,
        g: &Gen,
        groups: &Groups<'_>,
        carry: &Carry,
    ) -> Result<Vec<Option<KeyState>>, EngineError> {
        let stored = self.db.read()?.states_of(
            &g.name,
            g.generation,
            groups
                .keys
                .iter()
                .copied()
                .filter(|k| carry.get(k).is_none()),
            |_, v| v.map(decode_state).transpose(),
        )?;
        let mut stored = stored.into_iter();
        groups
            .keys
            .iter()
            .map(|k| match carry.get(k) {
                Some(kept) => decode_state(kept).map(Some),
                None => stored.next().expect("one stored state per key not kept"),
            })
            .collect::<Result<_, StoreError>>()
            .map_err(EngineError::from)
    }

    /// Commits what `carry` holds, if anything (the worker's way out of a catch-up: paused,
    /// failed, or at the head).
    pub(super) fn flush(&self, g: &Gen, carry: &mut Carry) -> Result<(), EngineError> {
        if carry.is_empty() {
            return Ok(());
        }
        self.commit(g, carry, self.ledger.head(), notes::StepNotes::default())
    }

    /// Commits the states in `carry` with the new checkpoint in one transaction, then
    /// publishes the progress; `carry` is empty afterwards, committed or not (on an error the
    /// worker folds again from the stored checkpoint). Durable at most every
    /// [`DURABLE_EVERY`]: in between a crash rolls the projection back to an earlier
    /// consistent checkpoint, from which it catches up again.
    fn commit(
        &self,
        g: &Gen,
        carry: &mut Carry,
        head: u64,
        step_notes: notes::StepNotes,
    ) -> Result<(), EngineError> {
        let committed = self.commit_carry(g, carry, head, step_notes);
        carry.clear();
        committed
    }

    fn commit_carry(
        &self,
        g: &Gen,
        carry: &Carry,
        head: u64,
        step_notes: notes::StepNotes,
    ) -> Result<(), EngineError> {
        let Some(covered) = carry.covered() else {
            return Ok(());
        };
        let applied = g.events_applied.load(Ordering::Acquire) + carry.folded;
        let keys = g.keys.load(Ordering::Acquire) + carry.new_keys;
        let durability = {
            let mut last = self.last_durable.lock().expect("durable lock");
            if last.elapsed() >= DURABLE_EVERY {
                *last = Instant::now();
                Durability::Immediate
            } else {
                Durability::Deferred
            }
        };
        let epoch = *g.epoch.lock().expect("epoch lock");
        let Some(mut txn) = self
            .db
            .write_since(epoch, durability)
            .map_err(EngineError::from)?
        else {
            // The database was reopened after the states above were read: they may include
            // commits it no longer has. Write nothing; the worker reloads its checkpoint.
            return Ok(());
        };
        if g.life.stopping() {
            // Swapped out, rebuilt or deleted meanwhile: its rows are gone; write nothing.
            return Ok(());
        }
        // In key order: neighbouring keys share the table's pages.
        let mut states: Vec<(&str, &[u8])> = carry.states().collect();
        states.sort_unstable_by_key(|(key, _)| *key);
        txn.put_states(&g.name, g.generation, states)
            .map_err(EngineError::from)?;
        txn.put_projection_checkpoint(
            &g.name,
            g.generation,
            ProjectionCheckpoint {
                position: covered,
                events_applied: applied,
                keys,
            },
        )
        .map_err(EngineError::from)?;
        let mut notes = g.notes.lock().expect("notes lock");
        if !step_notes.is_empty() {
            step_notes
                .write(&mut txn, g, &notes)
                .map_err(EngineError::from)?;
        }
        txn.commit().map_err(EngineError::from)?;
        step_notes.merge_into(&mut notes);
        drop(notes);
        g.events_applied.store(applied, Ordering::Release);
        g.keys.store(keys, Ordering::Release);
        // Caught up is set before the position is published, so whoever sees the position at
        // the head also sees the status `running`; a status sees both or neither.
        g.life.advance(covered, covered >= head);
        g.life.notify();
        Ok(())
    }

    /// `evolve` for each group from `first` on, in order; in parallel when there are many
    /// groups. `previous` holds the states before the step of all groups.
    ///
    /// Small groups are packed into `evolve_groups` calls of up to `MAX_CALL_EVENTS` events
    /// (a per-stream catch-up of 10 000 streams would otherwise pay a call's fixed cost for
    /// every few events); a group larger than that folds alone in calls of at most
    /// `MAX_CALL_EVENTS` events, threading its state through, so that one call stays well
    /// inside its fuel, memory and time limits — or in calls of up to `LARGE_CALL_EVENTS`
    /// (see [`Shared::fold_large`]).
    pub(super) fn fold_groups(
        &self,
        g: &Gen,
        module: &Module,
        groups: &Groups<'_>,
        first: usize,
        previous: &[Option<KeyState>],
    ) -> Folded {
        let prev = |i: usize| previous[i].as_ref().map(|p| p.state.as_slice());
        // Units of work: ranges of groups, each one call (or one chained group).
        let mut units: Vec<std::ops::Range<usize>> = Vec::new();
        let mut start = first;
        let mut events = 0;
        for i in first..groups.len() {
            let n = groups.events(i).len();
            if events > 0 && events + n > MAX_CALL_EVENTS {
                units.push(start..i);
                start = i;
                events = 0;
            }
            events += n;
        }
        if start < groups.len() {
            units.push(start..groups.len());
        }
        let fold_one = |i: usize| -> Result<Vec<u8>, CallError> {
            let events = groups.events(i);
            if events.len() > MAX_CALL_EVENTS && !g.small_calls.load(Ordering::Relaxed) {
                return self.fold_large(g, module, prev(i), events);
            }
            let mut state: Option<Vec<u8>> = None;
            for chunk in events.chunks(MAX_CALL_EVENTS) {
                let current = state.as_deref().or_else(|| prev(i));
                state = Some(self.runtime.evolve_views(module, current, chunk)?);
            }
            Ok(state.expect("groups are not empty"))
        };
        let fold_unit = |unit: std::ops::Range<usize>| -> Folded {
            if unit.len() == 1 {
                return vec![fold_one(unit.start)];
            }
            let input: Vec<(Option<&[u8]>, &[EventView<'_>])> =
                unit.clone().map(|i| (prev(i), groups.events(i))).collect();
            match self.runtime.evolve_groups(module, &input) {
                Ok(states) => states.into_iter().map(Ok).collect(),
                Err(error) => {
                    self.first_failing_group(module, &input, error, &fold_one, unit.start)
                }
            }
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8)
            .min(units.len());
        if threads < 2 {
            return units.into_iter().flat_map(fold_unit).collect();
        }
        // Each thread takes the next unit when it is done with one, so that a thread slowed
        // down (by the read of the next batch beside it, or by a unit of large events) leaves
        // the rest to the others instead of holding the step up with its share.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut done: Vec<(usize, Folded)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (fold_unit, units, next) = (&fold_unit, &units, &next);
                    scope.spawn(move || {
                        let mut mine = Vec::new();
                        loop {
                            let u = next.fetch_add(1, Ordering::Relaxed);
                            let Some(unit) = units.get(u) else {
                                return mine;
                            };
                            mine.push((u, fold_unit(unit.clone())));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a fold thread panicked"))
                .collect()
        });
        done.sort_unstable_by_key(|(u, _)| *u);
        done.into_iter().flat_map(|(_, results)| results).collect()
    }

    /// Folds one large group in calls of up to `LARGE_CALL_EVENTS` events and
    /// `LARGE_CALL_BYTES` of event data, threading its state through. A call that hits a
    /// limit is folded again in calls of `MAX_CALL_EVENTS`, and the generation keeps to those
    /// from then on: a module that passed its limits in smaller calls still does.
    fn fold_large(
        &self,
        g: &Gen,
        module: &Module,
        previous: Option<&[u8]>,
        events: &[EventView<'_>],
    ) -> Result<Vec<u8>, CallError> {
        let mut state: Option<Vec<u8>> = None;
        let mut rest = events;
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take(LARGE_CALL_EVENTS)
                .take_while(|e| {
                    bytes += view_bytes(e);
                    bytes <= LARGE_CALL_BYTES
                })
                .count()
                .max(1);
            let (chunk, after) = rest.split_at(n);
            let current = state.as_deref().or(previous);
            state = Some(match self.runtime.evolve_views(module, current, chunk) {
                Ok(next) => next,
                Err(
                    CallError::OutOfFuel { .. }
                    | CallError::Timeout { .. }
                    | CallError::MemoryLimit { .. },
                ) => {
                    g.small_calls.store(true, Ordering::Relaxed);
                    let mut small = current.map(<[u8]>::to_vec);
                    for part in chunk.chunks(MAX_CALL_EVENTS) {
                        small = Some(self.runtime.evolve_views(module, small.as_deref(), part)?);
                    }
                    small.expect("a chunk is not empty")
                }
                Err(e) => return Err(e),
            });
            rest = after;
        }
        Ok(state.expect("groups are not empty"))
    }

    /// Which group of a failing `evolve_groups` call fails first, by bisection: O(log n)
    /// calls, not one per group (with a module that fails every call at its full fuel or
    /// deadline, one call per group of a 10 000-stream step would take hours). The groups
    /// before it keep the states the successful halves returned; the failing one gets the
    /// error of folding it alone; the ones after it are not folded (the step stops at the
    /// first failure, in order).
    pub(super) fn first_failing_group(
        &self,
        module: &Module,
        input: &[(Option<&[u8]>, &[EventView<'_>])],
        error: CallError,
        fold_one: &dyn Fn(usize) -> Result<Vec<u8>, CallError>,
        first: usize,
    ) -> Vec<Result<Vec<u8>, CallError>> {
        let mut out: Vec<Result<Vec<u8>, CallError>> = Vec::with_capacity(input.len());
        // `lo..hi` is known to fail as one call; everything before `lo` folded.
        let (mut lo, mut hi) = (0, input.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match self.runtime.evolve_groups(module, &input[lo..mid]) {
                Ok(states) => {
                    out.extend(states.into_iter().map(Ok));
                    lo = mid;
                }
                Err(_) => hi = mid,
            }
        }
        // A group that fails in a call with others may fold alone (a limit of the whole
        // call); then the rest are bisected again.
        match fold_one(first + lo) {
            Ok(state) => {
                out.push(Ok(state));
                if lo + 1 < input.len() {
                    let rest = &input[lo + 1..];
                    match self.runtime.evolve_groups(module, rest) {
                        Ok(states) => out.extend(states.into_iter().map(Ok)),
                        Err(error) => out.extend(self.first_failing_group(
                            module,
                            rest,
                            error,
                            fold_one,
                            first + lo + 1,
                        )),
                    }
                }
            }
            Err(e) => {
                out.push(Err(e));
                let skipped = input.len() - out.len();
                out.extend((0..skipped).map(|_| Err(error.clone())));
            }
        }
        out
    }

    /// Finds the event a failing batch fails on: the chunks of at most `MAX_CALL_EVENTS`
    /// events are folded in turn, and in the chunk that fails the shortest failing prefix is
    /// found by bisection — O(log n) calls, not one per event.
    pub(super) fn locate(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        batch: &[EventView<'_>],
        error: CallError,
    ) -> Fault {
        let mut current = state.map(<[u8]>::to_vec);
        for chunk in batch.chunks(MAX_CALL_EVENTS) {
            let mut failure = match self.runtime.evolve_views(module, current.as_deref(), chunk) {
                Ok(s) => {
                    current = Some(s);
                    continue;
                }
                Err(e) => e,
            };
            // The shortest failing prefix is `chunk[..=lo]`, with every shorter one folding
            // and `chunk[..=hi]` failing (`failure` is its error).
            let (mut lo, mut hi) = (0, chunk.len() - 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match self
                    .runtime
                    .evolve_views(module, current.as_deref(), &chunk[..=mid])
                {
                    Ok(_) => lo = mid + 1,
                    Err(e) => {
                        failure = e;
                        hi = mid;
                    }
                }
            }
            return Fault::Module {
                position: chunk[lo].position,
                error: failure,
            };
        }
        // Folding it again succeeded (e.g. the batch hit a limit): blame the first event.
        Fault::Module {
            position: batch[0].position,
            error,
        }
    }
}

/// A step's events grouped by partition key (the stream, or one group for `single`): group
/// `i` is `keys[i]` with `events(i)`, in ledger order; the groups in the order of their first
/// event.
pub(super) struct Groups<'e> {
    keys: Vec<&'e str>,
    events: Vec<EventView<'e>>,
    /// Group `i` is `events[bounds[i]..bounds[i + 1]]`.
    bounds: Vec<usize>,
}

impl<'e> Groups<'e> {
    /// Groups the events of `batch` that `keep` keeps. Selecting and finding each event's
    /// group happen in one pass, which reads each record once while it is in the cache.
    fn new(
        partition: Partition,
        batch: &'e EventBatch,
        mut keep: impl FnMut(&EventHead<'e>) -> Result<bool, Fault>,
    ) -> Result<Self, Fault> {
        if partition == Partition::Single {
            let mut kept: Vec<EventView<'e>> = Vec::with_capacity(batch.len());
            // Every kept event's view is needed here, so the view is made first.
            for e in batch.iter() {
                if keep(&EventHead::from(&e))? {
                    kept.push(e);
                }
            }
            let (keys, bounds) = if kept.is_empty() {
                (Vec::new(), vec![0])
            } else {
                (vec![""], vec![0, kept.len()])
            };
            return Ok(Groups {
                keys,
                events: kept,
                bounds,
            });
        }
        // A counting sort by stream: each event's group, the groups' sizes, then each kept
        // event's view made again (cheap: the batch is already checked) straight into its
        // group's place, so that no view is copied from one vector into another.
        const DROPPED: u32 = u32::MAX;
        let mut ids: foldhash::HashMap<&'e str, u32> = foldhash::HashMap::default();
        let mut keys: Vec<&'e str> = Vec::new();
        let mut sizes: Vec<usize> = Vec::new();
        let mut group_of: Vec<u32> = Vec::with_capacity(batch.len());
        let mut kept = 0;
        for e in (0..batch.len()).map(|i| batch.head(i)) {
            if !keep(&e)? {
                group_of.push(DROPPED);
                continue;
            }
            let id = *ids.entry(e.subject).or_insert_with(|| {
                keys.push(e.subject);
                sizes.push(0);
                (keys.len() - 1) as u32
            });
            sizes[id as usize] += 1;
            group_of.push(id);
            kept += 1;
        }
        let mut bounds = Vec::with_capacity(keys.len() + 1);
        bounds.push(0);
        for size in &sizes {
            bounds.push(bounds[bounds.len() - 1] + size);
        }
        let mut next: Vec<usize> = bounds[..keys.len()].to_vec();
        let mut order = vec![0u32; kept];
        for (i, &id) in group_of.iter().enumerate() {
            if id == DROPPED {
                continue;
            }
            let slot = &mut next[id as usize];
            order[*slot] = i as u32;
            *slot += 1;
        }
        let grouped: Vec<EventView<'e>> = order.iter().map(|&i| batch.get(i as usize)).collect();
        Ok(Groups {
            keys,
            events: grouped,
            bounds,
        })
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn events(&self, i: usize) -> &[EventView<'e>] {
        &self.events[self.bounds[i]..self.bounds[i + 1]]
    }
}

/// What folding a unit of groups gives: each group's new state, or the error of its call.
type Folded = Vec<Result<Vec<u8>, CallError>>;

/// About how many bytes an event takes in a call's input.
fn view_bytes(e: &EventView<'_>) -> usize {
    let data = match e.data {
        DataRef::None => 0,
        DataRef::Json(t) | DataRef::Text(t) => t.len(),
        DataRef::Binary(b) => b.len(),
    };
    64 + e.id.len() + e.source.len() + e.ty.len() + e.subject.len() + data
}

/// A folded event's position and recorded time.
fn view_at(e: &EventView<'_>) -> (u64, i64) {
    (e.position, e.recorded_micros)
}

#[cfg(test)]
mod tests;
