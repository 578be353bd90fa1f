//! Deciders: commands in, events out.
//!
//! `PUT /v1/deciders/{entity}` binds a module (exporting `evolve` and `decide`) to an entity.
//! A command on `{entity}/{key}` folds the stream's current state (from a cache of folded
//! states plus the stream's tail, not a full replay each time), calls `decide`, wraps the
//! returned events as CloudEvents and appends them with the revision it read as the expected
//! revision. On a revision conflict it reads again and decides again, a bounded number of
//! times.
//!
//! Idempotency: with an `Idempotency-Key`, event ids are `{key}/{idempotency key}/{i}` under
//! the source `loom/deciders/{entity}`; the ledger itself records that the command ran, so a
//! repeated command (even after a crash, even concurrently) finds its events and returns them
//! without writing anything. Without a key, ids are `{key}/~{random uuid}/{i}`, unique per
//! invocation (deterministic ids there would make two clients' identical decisions look like
//! one retried append).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use loom_ledger::{
    AppendError, AppendRequest, Conflict, Data, Event, ExpectedRevision, Ledger, Origin,
    StoredEvent,
};
use loom_ledger::{Catalog, CatalogTable, Durability};
use loom_runtime::{Entry, Module, Outcome, Runtime};
use serde::{Deserialize, Serialize};

use crate::PutOutcome;
use crate::modules::ModuleStore;
use crate::state_cache::Cache;
use crate::{CommandError, DefinitionError, Kind, StoreError};

mod limits;

pub(crate) use limits::CommandLimits;
pub use limits::{MAX_COMMAND_BYTES, MAX_COMMAND_EVENTS};
use limits::{check_request, parse_decided};

/// How many times a command is decided again after a revision conflict.
pub const MAX_ATTEMPTS: usize = 32;

/// Number of per-stream lock stripes.
const STRIPES: usize = 4096;

/// A decider's definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeciderSpec {
    /// Module id, exporting `evolve` and `decide`.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub module: String,
    /// The reducer of the module to run (ABI v2 modules; left out, the one reducer that
    /// fits). ABI v1 modules have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reducer: Option<String>,
}

/// A stored decider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeciderRecord {
    /// The entity it decides for.
    pub entity: String,
    /// Its module.
    pub module: String,
    /// Its reducer (ABI v2 modules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reducer: Option<String>,
    /// When it was (last) bound, RFC 3339.
    pub updated_at: String,
}

/// One event a command appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandEvent {
    /// `source`.
    pub source: String,
    /// `id`.
    pub id: String,
    /// `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// `subject`.
    pub subject: String,
    /// Global position.
    pub position: u64,
    /// Stream revision.
    pub revision: u64,
}

/// The result of a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandOutcome {
    /// The stream.
    pub subject: String,
    /// Events appended (none when `decide` returned none).
    pub events: Vec<CommandEvent>,
    /// The stream's revision after the command.
    pub revision: u64,
    /// True when an earlier command with the same idempotency key had already run; its
    /// events are returned and nothing was written.
    pub duplicate: bool,
    /// How many times the command was decided (more than 1 after conflicts).
    pub attempts: usize,
}

struct Bound {
    record: DeciderRecord,
    /// `None` when the module could not be loaded when the server started; each command
    /// tries again (and fails with the reason) until it loads.
    module: RwLock<Option<Module>>,
}

impl Bound {
    fn module(&self, modules: &ModuleStore) -> Result<Module, DefinitionError> {
        if let Some(m) = self.module.read().expect("module lock").as_ref() {
            return Ok(m.clone());
        }
        let m = modules.load_with(
            &self.record.module,
            self.record.reducer.as_deref(),
            &[Entry::Evolve, Entry::Decide],
        )?;
        *self.module.write().expect("module lock") = Some(m.clone());
        Ok(m)
    }
}

/// The deciders of one ledger.
pub struct Deciders {
    ledger: Arc<Ledger>,
    db: Catalog,
    runtime: Arc<Runtime>,
    modules: Arc<ModuleStore>,
    limits: CommandLimits,
    bound: RwLock<BTreeMap<String, Arc<Bound>>>,
    cache: Mutex<HashMap<String, Cache>>,
    /// Striped per-stream locks: commands on one stream take turns in this process, so they
    /// do not conflict with each other (only with other writers of the stream).
    stripes: Vec<Mutex<()>>,
}

impl std::fmt::Debug for Deciders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deciders").finish_non_exhaustive()
    }
}

impl Deciders {
    pub(crate) fn open(
        ledger: Arc<Ledger>,
        runtime: Arc<Runtime>,
        modules: Arc<ModuleStore>,
        limits: CommandLimits,
    ) -> Result<Deciders, StoreError> {
        let db = ledger.catalog();
        let mut bound = BTreeMap::new();
        {
            for (_, v) in db.read()?.list(CatalogTable::Deciders)? {
                let record: DeciderRecord = serde_json::from_slice(&v)
                    .map_err(|e| StoreError::Corrupt(format!("decider record: {e}")))?;
                // A module that cannot be loaded now must not keep the server from starting.
                let module = match modules.load_with(
                    &record.module,
                    record.reducer.as_deref(),
                    &[Entry::Evolve, Entry::Decide],
                ) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::error!(entity = %record.entity, module = %record.module, error = %e, "decider module could not be loaded");
                        None
                    }
                };
                bound.insert(
                    record.entity.clone(),
                    Arc::new(Bound {
                        record,
                        module: RwLock::new(module),
                    }),
                );
            }
        }
        Ok(Deciders {
            ledger,
            db,
            runtime,
            modules,
            limits,
            bound: RwLock::new(bound),
            cache: Mutex::new(HashMap::new()),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// Binds a module to an entity. Returns true when it was new or changed.
    pub fn put(&self, entity: &str, spec: DeciderSpec) -> Result<PutOutcome, DefinitionError> {
        let _pin = self.modules.pin();
        loom_ledger::check_entity_name(entity).map_err(DefinitionError::InvalidName)?;
        crate::names::check_entity_registered(&self.ledger, entity)?;
        let module = self.modules.load_with(
            &spec.module,
            spec.reducer.as_deref(),
            &[Entry::Evolve, Entry::Decide],
        )?;
        let reducer = module.reducer().map(|r| r.name.clone());
        let mut bound = self.bound.write().expect("deciders lock");
        let outcome = match bound.get(entity) {
            Some(b) if b.record.module == spec.module && b.record.reducer == reducer => {
                return Ok(PutOutcome::Unchanged);
            }
            Some(_) => PutOutcome::Replaced,
            None => PutOutcome::Created,
        };
        let record = DeciderRecord {
            entity: entity.to_owned(),
            module: spec.module,
            reducer,
            updated_at: loom_ledger::format_time(chrono::Utc::now().timestamp_micros()),
        };
        let json = serde_json::to_vec(&record).expect("a record serializes");
        let mut txn = self.db.write(Durability::Immediate)?;
        txn.put(CatalogTable::Deciders, entity, &json)?;
        txn.commit()?;
        // States folded by another module are not this module's states.
        if let Some(c) = self.cache.lock().expect("cache lock").get_mut(entity) {
            c.clear();
        }
        bound.insert(
            entity.to_owned(),
            Arc::new(Bound {
                record,
                module: RwLock::new(Some(module)),
            }),
        );
        Ok(outcome)
    }

    /// One decider.
    pub fn get(&self, entity: &str) -> Option<DeciderRecord> {
        let bound = self.bound.read().expect("deciders lock");
        bound.get(entity).map(|b| b.record.clone())
    }

    /// Every decider.
    pub fn list(&self) -> Vec<DeciderRecord> {
        let bound = self.bound.read().expect("deciders lock");
        bound.values().map(|b| b.record.clone()).collect()
    }

    /// Unbinds a decider.
    pub fn delete(&self, entity: &str) -> Result<(), DefinitionError> {
        let mut bound = self.bound.write().expect("deciders lock");
        if bound.remove(entity).is_none() {
            return Err(DefinitionError::not_found(Kind::Decider, entity));
        }
        let mut txn = self.db.write(Durability::Immediate)?;
        txn.remove(CatalogTable::Deciders, entity)?;
        txn.commit()?;
        self.cache.lock().expect("cache lock").remove(entity);
        Ok(())
    }

    pub(crate) fn users_of(&self, module: &str) -> Vec<String> {
        let bound = self.bound.read().expect("deciders lock");
        bound
            .values()
            .filter(|b| b.record.module == module)
            .map(|b| format!("decider {}", b.record.entity))
            .collect()
    }

    /// Runs a command (JSON) on stream `{entity}/{key}`.
    pub fn run(
        &self,
        entity: &str,
        key: &str,
        command: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<CommandOutcome, CommandError> {
        self.run_with(entity, key, command, idempotency_key, None)
    }

    /// Runs a command a reaction asked for: its events carry the reaction chain's hop count.
    pub(crate) fn run_as_reaction(
        &self,
        entity: &str,
        key: &str,
        command: &[u8],
        idempotency_key: &str,
        hops: u64,
    ) -> Result<CommandOutcome, CommandError> {
        self.run_with(entity, key, command, Some(idempotency_key), Some(hops))
    }

    fn run_with(
        &self,
        entity: &str,
        key: &str,
        command: &[u8],
        idempotency_key: Option<&str>,
        hops: Option<u64>,
    ) -> Result<CommandOutcome, CommandError> {
        let bound = {
            let b = self.bound.read().expect("deciders lock");
            b.get(entity)
                .cloned()
                .ok_or_else(|| CommandError::NoDecider(entity.to_owned()))?
        };
        check_request(key, command, idempotency_key)?;
        let subject = format!("{entity}/{key}");
        let source = format!("loom/deciders/{entity}");
        if let Some(k) = idempotency_key
            && let Some(done) = self.find_done(&source, &subject, key, k)?
        {
            return Ok(done);
        }
        // Without a key, every invocation gets ids of its own: two clients deciding the same
        // events must not look like one retried append.
        let invocation = format!("~{}", uuid::Uuid::new_v4().simple());
        // What an ABI v2 decider is told beside the stream and revision. The time is taken
        // once: a retry after a conflict decides with the same input.
        let context = serde_json::json!({
            "idempotency_key": idempotency_key,
            "time": loom_ledger::format_time(chrono::Utc::now().timestamp_micros()),
        })
        .to_string();
        let _turn = self.stripes[stripe(&subject)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for attempt in 1..=MAX_ATTEMPTS {
            let (revision, state) = self.fold(entity, &bound, &subject)?;
            let module = bound.module(&self.modules).map_err(CommandError::Module)?;
            let decided = self.runtime.decide(
                &module,
                Some(&state),
                command,
                &subject,
                revision,
                context.as_bytes(),
            )?;
            let emitted = match decided {
                Outcome::Rejected(r) => {
                    return Err(CommandError::Rejected(crate::rejection_message(&r)));
                }
                Outcome::Ok(out) => parse_decided(&out, self.limits)?,
            };
            if emitted.is_empty() {
                return Ok(CommandOutcome {
                    subject,
                    events: Vec::new(),
                    revision,
                    duplicate: false,
                    attempts: attempt,
                });
            }
            let decision = Decision {
                source: &source,
                subject: &subject,
                key,
                id_part: idempotency_key.unwrap_or(&invocation),
                idempotency_key,
                revision,
                attempt,
                hops,
            };
            if let Some(outcome) = self.append_decided(&decision, emitted)? {
                return Ok(outcome);
            }
        }
        Err(CommandError::Contention {
            subject,
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Appends what `decide` returned, expecting the revision it decided on. `None` when the
    /// stream changed meanwhile (or a concurrent run of the same command is not visible yet):
    /// decide again.
    fn append_decided(
        &self,
        d: &Decision<'_>,
        emitted: Vec<(String, serde_json::Value)>,
    ) -> Result<Option<CommandOutcome>, CommandError> {
        let events: Vec<Event> = emitted
            .into_iter()
            .enumerate()
            .map(|(i, (ty, data))| Event {
                id: format!("{}/{}/{i}", d.key, d.id_part),
                source: d.source.to_owned(),
                ty,
                subject: d.subject.to_owned(),
                time: None,
                datacontenttype: Some("application/json".into()),
                dataschema: None,
                data: Some(Data::json(&data)),
                extensions: d
                    .hops
                    .map(crate::reactors::hops_extension)
                    .unwrap_or_default(),
            })
            .collect();
        let types: Vec<String> = events.iter().map(|e| e.ty.clone()).collect();
        let entity = d.subject.split_once('/').map_or(d.subject, |(e, _)| e);
        let req = AppendRequest::new(events)
            .expect(d.subject, ExpectedRevision::Exact(d.revision))
            .by(Origin::Decider(entity.to_owned()));
        match self.ledger.append(req) {
            Ok(out) => {
                let last_revision = out.events.last().map_or(d.revision, |e| e.revision);
                Ok(Some(CommandOutcome {
                    subject: d.subject.to_owned(),
                    duplicate: out.duplicate,
                    revision: last_revision,
                    events: out
                        .events
                        .into_iter()
                        .zip(types)
                        .map(|(e, ty)| CommandEvent {
                            source: e.source,
                            id: e.id,
                            ty,
                            subject: e.subject,
                            position: e.position,
                            revision: e.revision,
                        })
                        .collect(),
                    attempts: d.attempt,
                }))
            }
            Err(AppendError::Conflict(Conflict::Revision { .. })) => {
                // Someone else wrote the stream; back off a random while so that a steady
                // writer does not win every race, then decide again on the new state.
                let jitter =
                    uuid::Uuid::new_v4().as_u128() as u64 % (1_000 * d.attempt.min(10) as u64);
                std::thread::sleep(std::time::Duration::from_micros(jitter));
                Ok(None)
            }
            Err(AppendError::Conflict(Conflict::Identity { .. }))
                if d.idempotency_key.is_some() =>
            {
                // The same command ran concurrently and won: answer with its events.
                let k = d.idempotency_key.expect("checked");
                if let Some(done) = self.find_done(d.source, d.subject, d.key, k)? {
                    return Ok(Some(done));
                }
                Ok(None)
            }
            Err(AppendError::Rejected(r)) => Err(CommandError::BadModuleOutput(format!(
                "the decider produced an event the registry refuses: {r}"
            ))),
            Err(e) => Err(CommandError::Append(e)),
        }
    }

    /// The events of an earlier run of this command, if it ran.
    fn find_done(
        &self,
        source: &str,
        subject: &str,
        key: &str,
        idem: &str,
    ) -> Result<Option<CommandOutcome>, StoreError> {
        let mut events = Vec::new();
        for i in 0.. {
            let id = format!("{key}/{idem}/{i}");
            match self.ledger.event_by_id(source, &id)? {
                Some(e) => events.push(e),
                None => break,
            }
        }
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(CommandOutcome {
            subject: subject.to_owned(),
            revision: events.last().map_or(0, |e| e.revision),
            events: events
                .into_iter()
                .map(|e| CommandEvent {
                    source: e.event.source,
                    id: e.event.id,
                    ty: e.event.ty,
                    subject: e.event.subject,
                    position: e.position,
                    revision: e.revision,
                })
                .collect(),
            duplicate: true,
            attempts: 0,
        }))
    }

    /// The stream's current revision and state: the cached state plus the tail.
    fn fold(
        &self,
        entity: &str,
        bound: &Bound,
        subject: &str,
    ) -> Result<(u64, Vec<u8>), CommandError> {
        let cached = self
            .cache
            .lock()
            .expect("cache lock")
            .get(entity)
            .and_then(|c| c.get(subject));
        let (mut revision, mut state) = match cached {
            Some((r, s)) => (r, Some(s.as_ref().clone())),
            None => (0, None),
        };
        let module = bound.module(&self.modules).map_err(CommandError::Module)?;
        loop {
            let tail: Vec<StoredEvent> = self.ledger.read_stream(subject, revision, 5_000)?;
            let Some(last) = tail.last() else { break };
            revision = last.revision;
            state = Some(self.runtime.evolve(&module, state.as_deref(), &tail)?);
            if tail.len() < 5_000 {
                break;
            }
        }
        let state = match state {
            Some(s) => s,
            None => self.runtime.evolve(&module, None, &[])?,
        };
        let shared = Arc::new(state.clone());
        self.cache
            .lock()
            .expect("cache lock")
            .entry(entity.to_owned())
            .or_default()
            .put(subject, revision, shared);
        Ok((revision, state))
    }
}

/// What one attempt of a command decided on.
struct Decision<'a> {
    source: &'a str,
    subject: &'a str,
    key: &'a str,
    /// The idempotency key, or this invocation's own id: event ids are `{key}/{id_part}/{i}`.
    id_part: &'a str,
    idempotency_key: Option<&'a str>,
    revision: u64,
    attempt: usize,
    /// For a command a reaction ran: how many reactions led to it.
    hops: Option<u64>,
}

fn stripe(subject: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    subject.hash(&mut h);
    (h.finish() % STRIPES as u64) as usize
}
