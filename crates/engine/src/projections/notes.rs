//! What a generation keeps beside its states: the events it skipped, by type (selected, but
//! of a type its reducer does not decode), and the streams it quarantined after a module
//! error (`on_error: quarantine`). Both are catalog notes, committed with the states and the
//! checkpoint they go with.

use std::collections::{BTreeMap, HashSet};

use foldhash::HashSet as FastSet;

use loom_ledger::CatalogWrite;

use super::*;

const SKIPPED: &str = "skipped:";
const QUARANTINE: &str = "quarantine:";

/// A generation's notes in memory, as last committed.
#[derive(Debug, Default)]
pub(super) struct Notes {
    pub(super) skipped: BTreeMap<String, u64>,
    pub(super) quarantine: BTreeMap<String, Failure>,
}

impl Notes {
    /// Reads the notes of a generation.
    pub(super) fn load(db: &Catalog, name: &str, generation: u64) -> Result<Notes, StoreError> {
        let mut notes = Notes::default();
        for (note, value) in db.read()?.projection_notes(name, generation)? {
            if let Some(ty) = note.strip_prefix(SKIPPED) {
                let n = value
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .ok_or_else(|| StoreError::Corrupt(format!("projection note {note:?}")))?;
                notes.skipped.insert(ty.to_owned(), n);
            } else if let Some(key) = note.strip_prefix(QUARANTINE) {
                let f: Failure = serde_json::from_slice(&value)
                    .map_err(|e| StoreError::Corrupt(format!("projection note {note:?}: {e}")))?;
                notes.quarantine.insert(key.to_owned(), f);
            }
        }
        Ok(notes)
    }

    /// The quarantined streams, for the status.
    pub(super) fn quarantined(&self) -> Vec<Quarantined> {
        self.quarantine
            .iter()
            .map(|(key, f)| Quarantined {
                key: key.clone(),
                position: f.position,
                message: f.message.clone(),
            })
            .collect()
    }
}

/// What one step adds to the notes.
#[derive(Debug, Default)]
pub(super) struct StepNotes {
    pub(super) skipped: BTreeMap<String, u64>,
    pub(super) quarantined: Vec<(String, Failure)>,
}

impl StepNotes {
    pub(super) fn is_empty(&self) -> bool {
        self.skipped.is_empty() && self.quarantined.is_empty()
    }

    /// Writes the step's notes (the skip counts as new totals over `current`).
    pub(super) fn write(
        &self,
        txn: &mut CatalogWrite,
        g: &Gen,
        current: &Notes,
    ) -> Result<(), StoreError> {
        for (ty, n) in &self.skipped {
            let total = current.skipped.get(ty).copied().unwrap_or(0) + n;
            txn.put_projection_note(
                &g.name,
                g.generation,
                &format!("{SKIPPED}{ty}"),
                &total.to_le_bytes(),
            )?;
        }
        for (key, f) in &self.quarantined {
            let json = serde_json::to_vec(f).expect("a failure serializes");
            txn.put_projection_note(&g.name, g.generation, &format!("{QUARANTINE}{key}"), &json)?;
        }
        Ok(())
    }

    /// After the commit: the notes in memory agree with the stored ones.
    pub(super) fn merge_into(self, notes: &mut Notes) {
        for (ty, n) in self.skipped {
            *notes.skipped.entry(ty).or_insert(0) += n;
        }
        notes.quarantine.extend(self.quarantined);
    }
}

impl Shared {
    /// Retries the quarantined streams of a generation (after `resume`), in its worker
    /// thread, so no step runs meanwhile: each stream's events after its stored state, up to
    /// the generation's position, are folded; a stream that folds leaves the quarantine with
    /// its new state (one transaction); one that fails again stays, with the new failure.
    pub(super) fn retry_quarantined(&self, g: &Gen) -> Result<(), EngineError> {
        let keys: Vec<String> = g
            .notes
            .lock()
            .expect("notes lock")
            .quarantine
            .keys()
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let module = self.module_of(g)?;
        let decodes: Option<HashSet<String>> = module
            .reducer()
            .and_then(|r| r.events.clone())
            .map(|v| v.into_iter().collect());
        let upto = g.life.position();
        for key in keys {
            let prev = match self.db.read()?.state(&g.name, g.generation, &key)? {
                Some(bytes) => Some(decode_state(&bytes)?),
                None => None,
            };
            let after = prev.as_ref().map_or(0, |p| p.position);
            let events: Vec<_> = self
                .ledger
                .read_stream(&key, 0, usize::MAX)?
                .into_iter()
                .filter(|e| e.position > after && e.position <= upto)
                .filter(|e| g.selector.matches(e))
                .filter(|e| decodes.as_ref().is_none_or(|d| d.contains(&e.event.ty)))
                .collect();
            let mut state = prev.as_ref().map(|p| p.state.clone());
            let mut failed = None;
            for chunk in events.chunks(MAX_CALL_EVENTS) {
                match self.runtime.evolve(&module, state.as_deref(), chunk) {
                    Ok(next) => state = Some(next),
                    Err(e) => {
                        failed = Some((chunk[0].position, e.to_string()));
                        break;
                    }
                }
            }
            if let (None, Some(next)) = (&failed, &state)
                && let Err(why) = loom_core::json::check_strict(next)
            {
                failed = Some((
                    events.last().map_or(after, |e| e.position),
                    format!("evolve returned a state that is not strict JSON: {why}"),
                ));
            }
            let epoch = *g.epoch.lock().expect("epoch lock");
            let Some(mut txn) = self.db.write_since(epoch, Durability::Immediate)? else {
                return Ok(());
            };
            let mut notes = g.notes.lock().expect("notes lock");
            let note = format!("{QUARANTINE}{key}");
            match failed {
                Some((position, message)) => {
                    tracing::warn!(projection = %g.name, stream = %key, position, error = %message, "quarantined stream failed again");
                    let f = Failure { position, message };
                    let json = serde_json::to_vec(&f).expect("a failure serializes");
                    txn.put_projection_note(&g.name, g.generation, &note, &json)?;
                    txn.commit()?;
                    notes.quarantine.insert(key, f);
                }
                None => {
                    if let Some(next) = state
                        && !events.is_empty()
                    {
                        let (bytes, new) = state_after(
                            prev.as_ref(),
                            &events,
                            |e| (e.position, e.recorded_micros),
                            &next,
                        );
                        let n = events.len() as u64;
                        txn.put_states(&g.name, g.generation, [(key.as_str(), bytes.as_slice())])?;
                        let keys = g.keys.load(Ordering::Acquire) + u64::from(new);
                        let applied = g.events_applied.load(Ordering::Acquire) + n;
                        txn.put_projection_checkpoint(
                            &g.name,
                            g.generation,
                            ProjectionCheckpoint {
                                position: upto,
                                events_applied: applied,
                                keys,
                            },
                        )?;
                        txn.remove_projection_note(&g.name, g.generation, &note)?;
                        txn.commit()?;
                        g.keys.store(keys, Ordering::Release);
                        g.events_applied.store(applied, Ordering::Release);
                    } else {
                        txn.remove_projection_note(&g.name, g.generation, &note)?;
                        txn.commit()?;
                    }
                    tracing::info!(projection = %g.name, stream = %key, "quarantined stream folded again");
                    notes.quarantine.remove(&key);
                }
            }
        }
        g.life.notify();
        Ok(())
    }
}

/// Which events of a step a generation folds: not those of quarantined streams (they wait
/// for `resume`), and not those whose type its reducer does not decode (counted, or, with
/// `strict`, the failure of the projection at the first of them). Asked once per event, as
/// the step's events are grouped ([`super::fold::Groups::new`]), so that each event's record
/// is read once while it is in the cache.
pub(super) struct Selection<'a> {
    g: &'a Gen,
    module: &'a Module,
    /// The types the reducer decodes, if it says.
    decodes: Option<Types<'a>>,
    quarantined: std::sync::MutexGuard<'a, Notes>,
}

impl<'a> Selection<'a> {
    pub(super) fn new(g: &'a Gen, module: &'a Module) -> Self {
        Selection {
            g,
            module,
            decodes: module
                .reducer()
                .and_then(|r| r.events.as_ref())
                .map(|types| Types::of(types)),
            quarantined: g.notes.lock().expect("notes lock"),
        }
    }

    /// Whether `e` is folded; a skipped event is counted in `notes`.
    pub(super) fn keep(&self, e: &EventHead<'_>, notes: &mut StepNotes) -> Result<bool, Fault> {
        if !self.quarantined.quarantine.is_empty()
            && self.quarantined.quarantine.contains_key(e.subject)
        {
            return Ok(false);
        }
        let Some(types) = &self.decodes else {
            return Ok(true);
        };
        if types.contains(e.ty) {
            return Ok(true);
        }
        if self.g.spec.strict {
            let reducer = self.module.reducer().map_or("", |r| r.name.as_str());
            let mut known = types.all();
            known.sort_unstable();
            known.dedup();
            return Err(Fault::Module {
                position: e.position,
                error: CallError::Guest {
                    entry: Entry::Evolve,
                    message: format!(
                        "the event at position {} has type {:?}, which reducer {reducer} does \
                         not decode (it decodes {}), and the projection is strict",
                        e.position,
                        e.ty,
                        known.join(", ")
                    ),
                },
            });
        }
        *notes.skipped.entry(e.ty.to_owned()).or_insert(0) += 1;
        Ok(false)
    }
}

/// A set of event types: a few are compared one by one (cheaper than hashing each event's
/// type), many are hashed.
enum Types<'a> {
    Few(Vec<&'a str>),
    Many(FastSet<&'a str>),
}

impl<'a> Types<'a> {
    fn of(types: &'a [String]) -> Self {
        let types = types.iter().map(String::as_str);
        if types.len() <= 8 {
            Types::Few(types.collect())
        } else {
            Types::Many(types.collect())
        }
    }

    fn contains(&self, ty: &str) -> bool {
        match self {
            Types::Few(few) => few.contains(&ty),
            Types::Many(many) => many.contains(ty),
        }
    }

    fn all(&self) -> Vec<&'a str> {
        match self {
            Types::Few(few) => few.clone(),
            Types::Many(many) => many.iter().copied().collect(),
        }
    }
}
