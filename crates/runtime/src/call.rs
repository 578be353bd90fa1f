//! Calling a module: a fresh `Store` and instance per call, with fuel, a memory cap and an
//! epoch deadline; traps and limits classified into [`CallError`]s.

use super::*;

/// What a successful call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Status 0: the result (JSON).
    Ok(Vec<u8>),
    /// Status 1: a domain rejection (JSON `{"message": …}`).
    Rejected(Vec<u8>),
}

impl Runtime {
    pub(crate) fn store(&self) -> Store<HostState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.config.memory_limit)
            .instances(1)
            .memories(1)
            .tables(MAX_TABLES as usize)
            .table_elements(MAX_TABLE_ELEMENTS)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                limits,
                logs: Vec::new(),
            },
        );
        store.limiter(|s| &mut s.limits);
        store
            .set_fuel(self.config.fuel_per_call)
            .expect("fuel is enabled");
        let ticks = (self.config.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// Calls an entry point with an ABI input buffer; returns its output.
    pub fn call(&self, module: &Module, entry: Entry, input: &[u8]) -> Result<Outcome, CallError> {
        self.call_with(module, entry, input.len(), |buf| {
            buf.copy_from_slice(input);
            Ok(())
        })
    }

    /// Calls an entry point with an input of `len` bytes that `write` puts straight into the
    /// buffer the module allocated for it: a catch-up's megabytes of events are copied once,
    /// into the guest, with no buffer of their own in between.
    pub(crate) fn call_with(
        &self,
        module: &Module,
        entry: Entry,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<(), loom_abi::SizeMismatch>,
    ) -> Result<Outcome, CallError> {
        if !module.exports(entry) {
            return Err(CallError::MissingEntry(entry));
        }
        // Declared before the store, so the slot is released after the store (and its
        // instance) is dropped.
        let _slot = self.slots.acquire();
        let mut store = self.store();
        let result = self.call_in(&mut store, module, entry, len, write);
        result.map_err(|e| self.classify(entry, e, std::mem::take(&mut store.data_mut().logs)))
    }

    fn call_in(
        &self,
        store: &mut Store<HostState>,
        module: &Module,
        entry: Entry,
        size: usize,
        write: impl FnOnce(&mut [u8]) -> Result<(), loom_abi::SizeMismatch>,
    ) -> Result<Outcome, Failure> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let instance = module.pre.instantiate(&mut *store).map_err(Failure::Wasm)?;
        let memory = instance
            .get_memory(&mut *store, loom_abi::EXPORT_MEMORY)
            .ok_or_else(|| Failure::Output("the module has no memory".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut *store, loom_abi::EXPORT_ALLOC)
            .map_err(Failure::Wasm)?;
        let func = instance
            .get_typed_func::<(i32, i32), i64>(&mut *store, &module.export_name(entry))
            .map_err(Failure::Wasm)?;
        let len = i32::try_from(size)
            .map_err(|_| Failure::Output("the input is larger than 2 GiB".into()))?;
        let ptr = alloc.call(&mut *store, len).map_err(Failure::Wasm)?;
        let start = ptr as u32 as usize;
        let buf = memory
            .data_mut(&mut *store)
            .get_mut(start..start.saturating_add(size))
            .ok_or_else(|| {
                Failure::Output(format!(
                    "loom_alloc({len}) returned an out-of-bounds buffer {ptr:#x}"
                ))
            })?;
        // A mismatch is the host's bug, not the module's; it fails the call all the same
        // rather than hand the module a wrong input.
        write(buf).map_err(|e| Failure::Output(format!("the host encoded a bad input: {e}")))?;
        let packed = func.call(&mut *store, (ptr, len)).map_err(Failure::Wasm)?;
        let (out_ptr, out_len) = loom_abi::unpack(packed);
        let (out_ptr, out_len) = (out_ptr as usize, out_len as usize);
        if out_len > self.config.max_output {
            return Err(Failure::Output(format!(
                "the output is {out_len} bytes; the limit is {}",
                self.config.max_output
            )));
        }
        let data = memory.data(&*store);
        let Some(out) = data.get(out_ptr..out_ptr.saturating_add(out_len)) else {
            return Err(Failure::Output(format!(
                "the output {out_ptr:#x}+{out_len} lies outside the module's memory ({} bytes)",
                data.len()
            )));
        };
        let (status, payload) = loom_abi::parse_output(out).map_err(|e| Failure::Output(e.0))?;
        match status {
            CallStatus::Ok => Ok(Outcome::Ok(payload.to_vec())),
            CallStatus::Rejected => Ok(Outcome::Rejected(payload.to_vec())),
            CallStatus::Error => Err(Failure::Guest(
                String::from_utf8_lossy(payload).into_owned(),
            )),
        }
    }

    pub(crate) fn classify(&self, entry: Entry, failure: Failure, logs: Vec<String>) -> CallError {
        match failure {
            Failure::Output(message) => CallError::BadOutput { entry, message },
            Failure::Guest(message) => CallError::Guest { entry, message },
            Failure::Wasm(e) => {
                if let Some(trap) = e.downcast_ref::<Trap>() {
                    match *trap {
                        Trap::OutOfFuel => {
                            return CallError::OutOfFuel {
                                entry,
                                fuel: self.config.fuel_per_call,
                                logs,
                            };
                        }
                        Trap::Interrupt => {
                            return CallError::Timeout {
                                entry,
                                timeout: self.config.call_timeout,
                                logs,
                            };
                        }
                        _ => {}
                    }
                }
                let message = format!("{e:#}");
                if message.contains("memory")
                    && (message.contains("grow") || message.contains("limit"))
                {
                    return CallError::MemoryLimit {
                        entry,
                        limit: self.config.memory_limit,
                        logs,
                    };
                }
                // The root cause, not the wasm backtrace wrapped around it.
                let message = match e.downcast_ref::<Trap>() {
                    Some(trap) => trap.to_string(),
                    None => e.root_cause().to_string(),
                };
                CallError::Trap {
                    entry,
                    message,
                    logs,
                }
            }
        }
    }

    /// Folds `events` into `state` (JSON; `None` = initial); returns the new state JSON.
    /// Events of more than [`Runtime::call_bytes`] are folded in several calls, the state
    /// threaded through.
    pub fn evolve(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        events: &[StoredEvent],
    ) -> Result<Vec<u8>, CallError> {
        let ext: Vec<String> = events.iter().map(extensions_json).collect();
        self.evolve_each(module, state, events.len(), |i| {
            event_ref(&events[i], &ext[i])
        })
    }

    /// [`Runtime::evolve`] over borrowed views of stored records (the catch-up path).
    pub fn evolve_views(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        events: &[EventView<'_>],
    ) -> Result<Vec<u8>, CallError> {
        let ext: Vec<String> = events.iter().map(view_extensions_json).collect();
        self.evolve_each(module, state, events.len(), |i| {
            view_ref(&events[i], &ext[i])
        })
    }

    /// Most bytes of events one `evolve` or `evolve_groups` call is given: a quarter of a
    /// call's memory. Folding is the same in one call or in several with the state threaded
    /// through, so a long run of large events — each well within the limits — is split
    /// rather than copied whole into a module whose memory it would not fit.
    pub fn call_bytes(&self) -> usize {
        (self.config.memory_limit / 4).max(1 << 20)
    }

    /// Folds the `n` events `event(0..n)` in calls of at most [`Runtime::call_bytes`] of
    /// events (and at least one event each). Only the events count: a large state goes into
    /// every call whatever their number, and one event per call would make it slower, not
    /// smaller.
    fn evolve_each<'e>(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        n: usize,
        event: impl Fn(usize) -> EventRef<'e>,
    ) -> Result<Vec<u8>, CallError> {
        let budget = self.call_bytes();
        let mut folded: Option<Vec<u8>> = None;
        let mut start = 0;
        loop {
            let (end, bytes) = fill(start, n, budget, |i| {
                loom_abi::Encoder::event_len(&event(i))
            });
            let current = folded.as_deref().or(state);
            let events = (start..end).map(&event);
            let len = loom_abi::evolve::input_len(current, bytes);
            let outcome = self.call_with(module, Entry::Evolve, len, |buf| {
                loom_abi::evolve::encode_into(current, events, buf)
            })?;
            folded = Some(Self::evolved(outcome)?);
            if end >= n {
                return Ok(folded.expect("folded at least once"));
            }
            start = end;
        }
    }

    /// Folds many independent groups, `(state, events)` each, returning each group's new
    /// state in order. One `evolve_groups` call when the module exports it (a call's fixed
    /// cost is paid once, not per group), else one `evolve` call per group; groups of more
    /// than [`Runtime::call_bytes`] together are split over several calls, and a group
    /// larger than that alone folds on its own ([`Runtime::evolve_views`]). An error fails
    /// the whole call; [`Runtime::evolve_views`] per group tells which group it was.
    pub fn evolve_groups(
        &self,
        module: &Module,
        groups: &[(Option<&[u8]>, &[EventView<'_>])],
    ) -> Result<Vec<Vec<u8>>, CallError> {
        if !module.exports(Entry::EvolveGroups) || groups.len() < 2 {
            return groups
                .iter()
                .map(|(state, events)| self.evolve_views(module, *state, events))
                .collect();
        }
        // Extensions as JSON, made only when there are any (a catch-up step's groups would
        // otherwise each allocate a vector of empty strings).
        let any_ext = groups
            .iter()
            .any(|(_, events)| events.iter().any(|e| !e.extensions.is_empty()));
        let ext: Vec<Vec<String>> = if any_ext {
            groups
                .iter()
                .map(|(_, events)| events.iter().map(view_extensions_json).collect())
                .collect()
        } else {
            Vec::new()
        };
        let ext_of = |g: usize, i: usize| ext.get(g).map_or("", |x| x[i].as_str());
        let group_refs = |g: usize| {
            groups[g]
                .1
                .iter()
                .enumerate()
                .map(move |(i, e)| view_ref(e, ext_of(g, i)))
        };
        let size = |g: usize| {
            let events = group_refs(g)
                .map(|e| loom_abi::Encoder::event_len(&e))
                .sum();
            loom_abi::evolve::input_len(groups[g].0, events)
        };
        let budget = self.call_bytes();
        let mut states = Vec::with_capacity(groups.len());
        let mut start = 0;
        while start < groups.len() {
            let (end, bytes) = fill(start, groups.len(), budget, size);
            if end - start == 1 {
                let (state, events) = groups[start];
                states.push(self.evolve_views(module, state, events)?);
            } else {
                let refs: Vec<_> = (start..end).map(|g| (groups[g].0, group_refs(g))).collect();
                let len = loom_abi::evolve_groups::input_len(bytes);
                states.extend(self.evolve_groups_call(module, &refs, len)?);
            }
            start = end;
        }
        Ok(states)
    }

    /// One `evolve_groups` call, whose input is `len` bytes.
    fn evolve_groups_call<'e, E>(
        &self,
        module: &Module,
        groups: &[(Option<&[u8]>, E)],
        len: usize,
    ) -> Result<Vec<Vec<u8>>, CallError>
    where
        E: Clone + ExactSizeIterator<Item = EventRef<'e>>,
    {
        let bad = |message: String| CallError::BadOutput {
            entry: Entry::EvolveGroups,
            message,
        };
        let outcome = self.call_with(module, Entry::EvolveGroups, len, |buf| {
            loom_abi::evolve_groups::encode_into(groups, buf)
        })?;
        match outcome {
            Outcome::Ok(payload) => {
                let states = loom_abi::evolve_groups::decode_states(&payload, groups.len())
                    .map_err(|e| bad(format!("malformed states: {}", e.0)))?;
                Ok(states.into_iter().map(<[u8]>::to_vec).collect())
            }
            Outcome::Rejected(_) => Err(bad("evolve_groups may not reject".into())),
        }
    }

    /// The state an `evolve` call returned.
    fn evolved(outcome: Outcome) -> Result<Vec<u8>, CallError> {
        match outcome {
            Outcome::Ok(state) => Ok(state),
            Outcome::Rejected(_) => Err(CallError::BadOutput {
                entry: Entry::Evolve,
                message: "evolve may not reject".into(),
            }),
        }
    }

    /// Decides a command in a state folded to `revision` of `subject`. `context` (JSON) is
    /// given to ABI v2 modules; v1 modules get the v1 input, without it.
    pub fn decide(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        command: &[u8],
        subject: &str,
        revision: u64,
        context: &[u8],
    ) -> Result<Outcome, CallError> {
        let input = if module.info.abi >= loom_abi::ABI_VERSION_2 {
            loom_abi::decide::encode_v2(state, command, subject, revision, context)
        } else {
            loom_abi::decide::encode(state, command, subject, revision)
        };
        self.call(module, Entry::Decide, &input)
    }

    /// Asks a reactor about one event.
    pub fn react(&self, module: &Module, event: &StoredEvent) -> Result<Outcome, CallError> {
        let ext = extensions_json(event);
        let input = loom_abi::react::encode(&event_ref(event, &ext));
        self.call(module, Entry::React, &input)
    }

    /// Runs `query` on a state with parameters (JSON).
    pub fn query(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        params: &[u8],
    ) -> Result<Outcome, CallError> {
        let input = loom_abi::query::encode(state, params);
        self.call(module, Entry::Query, &input)
    }
}

/// The end of the run of items from `start` (before `n`) whose sizes add up to at most
/// `budget`, and their sizes' sum; at least one item when `start < n`.
fn fill(start: usize, n: usize, budget: usize, size: impl Fn(usize) -> usize) -> (usize, usize) {
    let mut bytes = 0;
    let mut end = start;
    while end < n {
        let next = size(end);
        if end > start && bytes + next > budget {
            break;
        }
        bytes += next;
        end += 1;
    }
    (end, bytes)
}
