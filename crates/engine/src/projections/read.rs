//! Reading a projection: live states, time travel by replay, queries, keys, and waiting
//! for a position (read-your-writes).

use super::*;

impl Projections {
    /// A state: live, or replayed at a position or time. `key` is the stream (`entity/key`)
    /// for `stream` projections and must be `None` for `single` ones.
    pub fn state(&self, name: &str, key: Option<&str>, at: At) -> Result<StateView, QueryError> {
        let g = self.active(name)?;
        let key = check_key(&g, key)?;
        match at {
            At::Now => self.live_state(&g, key),
            At::Position(p) => self.replay(&g, key, p),
            At::Time(t) => {
                let p = self.shared.ledger.position_at_time(t)?;
                self.replay(&g, key, p)
            }
        }
    }

    /// The live state when storage alone can answer it, without calling the module:
    /// `Ok(None)` when a `single` projection has no state yet (its initial state comes from
    /// the module; ask [`Projections::state`]). A short point read, for callers that must not
    /// run module code (such as an async request handler).
    pub fn stored_state(
        &self,
        name: &str,
        key: Option<&str>,
    ) -> Result<Option<StateView>, QueryError> {
        let g = self.active(name)?;
        let key = check_key(&g, key)?;
        self.read_live(&g, key)
    }

    pub(super) fn live_state(&self, g: &Gen, key: &str) -> Result<StateView, QueryError> {
        match self.read_live(g, key)? {
            Some(view) => Ok(view),
            None => Ok(StateView {
                state: self.shared.runtime.evolve(
                    &self.shared.module_of(g).map_err(QueryError::Module)?,
                    None,
                    &[],
                )?,
                // Nothing folded yet, as of the generation's position.
                position: g.life.position(),
                events_applied: 0,
                created_micros: None,
                updated_micros: None,
            }),
        }
    }

    /// The stored live state; `None` for a `single` projection without state yet.
    pub(super) fn read_live(&self, g: &Gen, key: &str) -> Result<Option<StateView>, QueryError> {
        let sh = &self.shared;
        // The in-memory position is read *before* the snapshot: the worker publishes it only
        // after committing, so every state it covers is in the snapshot. Read after, it could
        // name a commit the snapshot does not hold and overstate the answer's position.
        let in_memory = g.life.position();
        // The checkpoint is read in the same snapshot as the state.
        let snapshot = sh.db.read()?;
        let position = snapshot
            .projection_checkpoint(&g.name, g.generation)?
            .map_or(0, |c| c.position);
        // A generation ahead in memory (no matching events since) is as exact.
        let position = position.max(in_memory);
        match snapshot.state(&g.name, g.generation, key)? {
            Some(v) => {
                let s = decode_state(&v)?;
                Ok(Some(StateView {
                    state: s.state,
                    position,
                    events_applied: s.events,
                    created_micros: Some(s.created),
                    updated_micros: Some(s.updated),
                }))
            }
            None if g.spec.partition == Partition::Single => Ok(None),
            None => Err(QueryError::KeyNotFound {
                name: g.name.clone(),
                key: key.to_owned(),
            }),
        }
    }

    pub(super) fn replay(
        &self,
        g: &Gen,
        key: &str,
        position: u64,
    ) -> Result<StateView, QueryError> {
        let sh = &self.shared;
        let module = sh.module_of(g).map_err(QueryError::Module)?;
        let position = position.min(sh.ledger.head());
        let selector = match g.spec.partition {
            Partition::Single => g.selector.clone(),
            Partition::Stream => {
                let Some(sel) = narrow_to_stream(&g.spec.selector, key) else {
                    return Err(QueryError::KeyNotFound {
                        name: g.name.clone(),
                        key: key.to_owned(),
                    });
                };
                sel.compile().map_err(|e| {
                    QueryError::Store(StoreError::Corrupt(format!(
                        "projection {:?}: its selector narrowed to {key:?}: {e}",
                        g.name
                    )))
                })?
            }
        };
        let mut state: Option<Vec<u8>> = None;
        let mut after = 0;
        let mut applied = 0u64;
        let (mut created, mut updated) = (None, None);
        loop {
            let opts = ReadOptions {
                after,
                before: Some(position.saturating_add(1)),
                limit: MAX_CALL_EVENTS,
                backwards: false,
            };
            let batch = sh.ledger.read_batch(&selector, opts)?;
            let events: Vec<EventView<'_>> = batch.iter().collect();
            let Some(last) = events.last() else { break };
            after = last.position;
            created.get_or_insert(events[0].recorded_micros);
            updated = Some(last.recorded_micros);
            applied += events.len() as u64;
            state = Some(
                sh.runtime
                    .evolve_views(&module, state.as_deref(), &events)?,
            );
            if events.len() < MAX_CALL_EVENTS {
                break;
            }
        }
        let state = match state {
            Some(s) => s,
            None if g.spec.partition == Partition::Single => {
                sh.runtime.evolve(&module, None, &[])?
            }
            None => {
                return Err(QueryError::KeyNotFound {
                    name: g.name.clone(),
                    key: key.to_owned(),
                });
            }
        };
        Ok(StateView {
            state,
            position,
            events_applied: applied,
            created_micros: created,
            updated_micros: updated,
        })
    }

    /// Calls the module's `query` export on a live state with parameters (JSON).
    pub fn query(
        &self,
        name: &str,
        key: Option<&str>,
        params: &[u8],
    ) -> Result<Vec<u8>, QueryError> {
        let g = self.active(name)?;
        let module = self.shared.module_of(&g).map_err(QueryError::Module)?;
        if !module.exports(Entry::Query) {
            return Err(QueryError::Module(DefinitionError::MissingExport {
                module: g.spec.module.clone(),
                entry: Entry::Query.name(),
            }));
        }
        let view = self.state(name, key, At::Now)?;
        match self
            .shared
            .runtime
            .query(&module, Some(&view.state), params)?
        {
            Outcome::Ok(out) => Ok(out),
            Outcome::Rejected(r) => Err(QueryError::Rejected(crate::rejection_message(&r))),
        }
    }

    /// Partition keys with state, in order, after `after`.
    pub fn keys(
        &self,
        name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, QueryError> {
        let g = self.active(name)?;
        // `after` itself is in the range when it has a state: ask for one more.
        let mut keys = self.shared.db.read()?.state_keys(
            &g.name,
            g.generation,
            after.unwrap_or(""),
            limit.saturating_add(1),
        )?;
        if after.is_some_and(|a| keys.first().is_some_and(|k| k == a)) {
            keys.remove(0);
        }
        keys.truncate(limit);
        Ok(keys)
    }

    /// Blocks until the projection's serving generation has folded everything up to
    /// `position`, or `timeout` (capped by the engine's `max_wait`) passes.
    pub fn wait_for(
        &self,
        name: &str,
        position: u64,
        timeout: Duration,
    ) -> Result<u64, QueryError> {
        let timeout = timeout.min(self.shared.max_wait);
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let g = self.active(name)?;
            let reached = g.life.position();
            if reached >= position {
                return Ok(reached);
            }
            let listener = g.life.listen();
            let reached = g.life.position();
            if reached >= position {
                return Ok(reached);
            }
            if Instant::now() >= deadline {
                return Err(QueryError::Timeout {
                    name: name.to_owned(),
                    wanted: position,
                    reached,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            // Wake at least every 100 ms to notice a swap of generations.
            let _ =
                listener.wait_deadline(deadline.min(Instant::now() + Duration::from_millis(100)));
        }
    }

    /// The serving generation's position, and a listener that fires when it next changes
    /// (registered before the position is read, so no change is missed). For waiting without
    /// a thread: await the listener, with a timer, until the position is far enough.
    pub fn watch(&self, name: &str) -> Result<(u64, event_listener::EventListener), QueryError> {
        let g = self.active(name)?;
        let listener = g.life.listen();
        Ok((g.life.position(), listener))
    }
}
