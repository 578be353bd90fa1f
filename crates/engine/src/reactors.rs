//! Reactors: events in, further work out.
//!
//! A reactor's worker thread reads the events its selector matches after its checkpoint and,
//! one event at a time in ledger order, calls the module's `react`. The reaction may ask to
//! append events, run commands through deciders, and deliver CloudEvents to the reactor's sink.
//! Every effect is idempotent on replay:
//!
//! * appended events get the source `loom/reactors/{name}` and the id `{position}/{i}`
//!   (derived from the reacting event), so appending them again is an idempotent no-op;
//! * commands run with the idempotency key `r-{name}-{position}-{i}`;
//! * deliveries carry the id `{name}/{position}/{i}` (sinks can de-duplicate on it).
//!
//! The checkpoint advances only after all effects of an event are durable (appends and
//! commands acknowledged, deliveries answered 2xx), so delivery is at-least-once across crashes.
//! A sink that stays down is retried with exponential backoff and then fails the reactor with
//! a clear status; nothing is skipped, and `resume` retries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use event_listener::{Event as Notify, Listener};
use loom_ledger::{
    AppendRequest, CompiledSelector, Data, Event, Ledger, ReadOptions, Selector, StoredEvent,
};
use loom_ledger::{Catalog, CatalogTable, Durability, ReactorCheckpoint};
use loom_runtime::{Entry, Module, Outcome, Runtime};
use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::deciders::Deciders;
use crate::modules::ModuleStore;
use crate::projections::{Failure, Status};

/// Events read per batch.
const BATCH: usize = 256;

/// A reactor's definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactorSpec {
    /// Module id, exporting `react`.
    pub module: String,
    /// Which events it reacts to.
    #[serde(default)]
    pub selector: Selector,
    /// Where `deliver` effects are POSTed (CloudEvents HTTP binding, structured mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
}

/// Delivery retry policy.
#[derive(Clone, Debug)]
pub struct SinkPolicy {
    /// Attempts before the reactor fails.
    pub attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for SinkPolicy {
    fn default() -> Self {
        SinkPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `GET /v1/reactors/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReactorStatus {
    /// Name.
    pub name: String,
    /// Definition.
    pub spec: ReactorSpec,
    /// Status.
    pub status: Status,
    /// Every selected event up to here has been reacted to.
    pub position: u64,
    /// The ledger's head.
    pub head: u64,
    /// `head - position`.
    pub lag: u64,
    /// Events reacted to.
    pub reacted: u64,
    /// Events appended.
    pub appended: u64,
    /// Commands run.
    pub commands: u64,
    /// CloudEvents delivered to the sink.
    pub delivered: u64,
    /// What stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Failure>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    spec: ReactorSpec,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    failure: Option<Failure>,
}

struct Worker {
    name: String,
    spec: ReactorSpec,
    selector: CompiledSelector,
    /// `None` when the module could not be loaded when the server started (the reactor is
    /// then failed; `resume` tries again).
    module: RwLock<Option<Module>>,
    position: AtomicU64,
    counters: Counters,
    caught_up: AtomicBool,
    paused: AtomicBool,
    stop: AtomicBool,
    failure: Mutex<Option<Failure>>,
    changed: Notify,
    handle: Mutex<Option<JoinHandle<()>>>,
}

/// What a reactor has done so far (kept in its checkpoint).
#[derive(Debug, Default)]
struct Counters {
    reacted: AtomicU64,
    appended: AtomicU64,
    commands: AtomicU64,
    delivered: AtomicU64,
}

impl Worker {
    /// Position and counters, as the checkpoint stores them.
    fn checkpoint(&self) -> ReactorCheckpoint {
        let c = &self.counters;
        ReactorCheckpoint {
            position: self.position.load(Ordering::Acquire),
            reacted: c.reacted.load(Ordering::Acquire),
            appended: c.appended.load(Ordering::Acquire),
            commands: c.commands.load(Ordering::Acquire),
            delivered: c.delivered.load(Ordering::Acquire),
        }
    }

    /// Continues from a checkpoint.
    fn restore(&self, cp: ReactorCheckpoint) {
        let c = &self.counters;
        self.position.store(cp.position, Ordering::Release);
        c.reacted.store(cp.reacted, Ordering::Release);
        c.appended.store(cp.appended, Ordering::Release);
        c.commands.store(cp.commands, Ordering::Release);
        c.delivered.store(cp.delivered, Ordering::Release);
    }

    fn halt(&self) {
        self.stop.store(true, Ordering::Release);
        self.changed.notify(usize::MAX);
    }

    fn join(&self) {
        if let Some(h) = self.handle.lock().expect("handle lock").take() {
            let _ = h.join();
        }
    }

    fn status(&self, head: u64) -> ReactorStatus {
        let position = self.position.load(Ordering::Acquire);
        let failure = self.failure.lock().expect("failure lock").clone();
        let status = if failure.is_some() {
            Status::Failed
        } else if self.paused.load(Ordering::Acquire) {
            Status::Paused
        } else if self.caught_up.load(Ordering::Acquire) {
            Status::Running
        } else {
            Status::CatchingUp
        };
        let c = self.checkpoint();
        ReactorStatus {
            name: self.name.clone(),
            spec: self.spec.clone(),
            status,
            position,
            head,
            lag: head.saturating_sub(position),
            reacted: c.reacted,
            appended: c.appended,
            commands: c.commands,
            delivered: c.delivered,
            last_error: failure,
        }
    }
}

struct Shared {
    ledger: Arc<Ledger>,
    db: Catalog,
    runtime: Arc<Runtime>,
    modules: Arc<ModuleStore>,
    deciders: Arc<Deciders>,
    policy: SinkPolicy,
    http: ureq::Agent,
    workers: RwLock<BTreeMap<String, Arc<Worker>>>,
}

/// The reactors of one ledger.
pub struct Reactors {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Reactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactors").finish_non_exhaustive()
    }
}

fn check_sink(sink: &Option<String>) -> Result<(), EngineError> {
    if let Some(url) = sink {
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() > "http://".len()
            && url.parse::<ureq::http::Uri>().is_ok();
        if !ok {
            return Err(EngineError::Invalid(format!(
                "sink {url:?} is not an http:// or https:// URL"
            )));
        }
    }
    Ok(())
}

impl Reactors {
    pub(crate) fn open(
        ledger: Arc<Ledger>,
        runtime: Arc<Runtime>,
        modules: Arc<ModuleStore>,
        deciders: Arc<Deciders>,
        policy: SinkPolicy,
    ) -> Result<Reactors, EngineError> {
        let db = ledger.catalog();
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(policy.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let shared = Arc::new(Shared {
            ledger,
            db,
            runtime,
            modules,
            deciders,
            policy,
            http,
            workers: RwLock::new(BTreeMap::new()),
        });
        let mut loaded = Vec::new();
        {
            let snapshot = shared.db.read()?;
            for (name, v) in snapshot.list(CatalogTable::Reactors)? {
                let record: Record = serde_json::from_slice(&v)
                    .map_err(|e| EngineError::Corrupt(format!("reactor record: {e}")))?;
                let cp = snapshot.reactor_checkpoint(&name)?;
                loaded.push((name, record, cp));
            }
        }
        for (name, record, cp) in loaded {
            // A module that cannot be loaded now must not keep the server from starting: the
            // reactor starts failed, and `resume` tries again.
            let (module, load_failure) = match shared
                .modules
                .load_with(&record.spec.module, &[Entry::React])
            {
                Ok(m) => (Some(m), None),
                Err(e) => {
                    tracing::error!(reactor = %name, module = %record.spec.module, error = %e, "reactor module could not be loaded");
                    let message = format!("module {} could not be loaded: {e}", record.spec.module);
                    (None, Some(message))
                }
            };
            let w = shared.worker_with(&name, &record.spec, module)?;
            if let Some(cp) = cp {
                w.restore(cp);
            }
            w.paused.store(record.paused, Ordering::Release);
            *w.failure.lock().expect("failure lock") =
                record.failure.or(load_failure.map(|message| Failure {
                    position: 0,
                    message,
                }));
            Shared::start(&shared, &w);
            shared
                .workers
                .write()
                .expect("workers lock")
                .insert(name, w);
        }
        Ok(Reactors { shared })
    }

    /// Creates or replaces a reactor. A changed definition keeps the checkpoint (it reacts
    /// to what comes next); delete and re-create it to react to history again.
    pub fn put(&self, name: &str, spec: ReactorSpec) -> Result<bool, EngineError> {
        let _pin = self.shared.modules.pin();
        crate::check_name("reactor", name)?;
        check_sink(&spec.sink)?;
        let sh = &self.shared;
        let w = sh.worker(name, &spec)?;
        let mut workers = sh.workers.write().expect("workers lock");
        if let Some(old) = workers.get(name) {
            if old.spec == spec {
                return Ok(false);
            }
            old.halt();
            old.join();
            w.restore(old.checkpoint());
            w.paused
                .store(old.paused.load(Ordering::Acquire), Ordering::Release);
        }
        sh.save(name, &w)?;
        Shared::start(sh, &w);
        workers.insert(name.to_owned(), w);
        Ok(true)
    }

    /// Every reactor's status.
    pub fn list(&self) -> Vec<ReactorStatus> {
        let head = self.shared.ledger.head();
        let workers = self.shared.workers.read().expect("workers lock");
        workers.values().map(|w| w.status(head)).collect()
    }

    /// One reactor's status.
    pub fn status(&self, name: &str) -> Result<ReactorStatus, EngineError> {
        Ok(self.get(name)?.status(self.shared.ledger.head()))
    }

    fn get(&self, name: &str) -> Result<Arc<Worker>, EngineError> {
        let workers = self.shared.workers.read().expect("workers lock");
        workers
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::ReactorNotFound(name.to_owned()))
    }

    /// Pauses a reactor.
    pub fn pause(&self, name: &str) -> Result<(), EngineError> {
        let w = self.get(name)?;
        w.paused.store(true, Ordering::Release);
        self.shared.save(name, &w)?;
        w.changed.notify(usize::MAX);
        Ok(())
    }

    /// Resumes a paused or failed reactor (a failed one retries the event it failed on).
    pub fn resume(&self, name: &str) -> Result<(), EngineError> {
        let w = self.get(name)?;
        w.paused.store(false, Ordering::Release);
        *w.failure.lock().expect("failure lock") = None;
        self.shared.save(name, &w)?;
        w.changed.notify(usize::MAX);
        Ok(())
    }

    /// Deletes a reactor and its checkpoint.
    pub fn delete(&self, name: &str) -> Result<(), EngineError> {
        let w = {
            let mut workers = self.shared.workers.write().expect("workers lock");
            workers
                .remove(name)
                .ok_or_else(|| EngineError::ReactorNotFound(name.to_owned()))?
        };
        w.halt();
        w.join();
        let mut txn = self.shared.db.write(Durability::Immediate)?;
        txn.remove(CatalogTable::Reactors, name)?;
        txn.remove_reactor_checkpoint(name)?;
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn users_of(&self, module: &str) -> Vec<String> {
        let workers = self.shared.workers.read().expect("workers lock");
        workers
            .values()
            .filter(|w| w.spec.module == module)
            .map(|w| format!("reactor {}", w.name))
            .collect()
    }

    /// Stops every worker.
    pub fn shutdown(&self) {
        let workers: Vec<_> = self
            .shared
            .workers
            .read()
            .expect("workers lock")
            .values()
            .cloned()
            .collect();
        for w in &workers {
            w.halt();
        }
        for w in &workers {
            w.join();
        }
    }
}

/// What to do with one reaction, parsed from `react`'s JSON.
#[derive(Debug, Default, Deserialize)]
struct Reaction {
    #[serde(default)]
    append: Vec<Emitted>,
    #[serde(default)]
    commands: Vec<CommandRequest>,
    #[serde(default)]
    deliver: Vec<Emitted>,
}

#[derive(Debug, Deserialize)]
struct Emitted {
    subject: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct CommandRequest {
    entity: String,
    key: String,
    command: serde_json::Value,
}

impl Shared {
    fn worker(&self, name: &str, spec: &ReactorSpec) -> Result<Arc<Worker>, EngineError> {
        let module = self.modules.load_with(&spec.module, &[Entry::React])?;
        self.worker_with(name, spec, Some(module))
    }

    fn worker_with(
        &self,
        name: &str,
        spec: &ReactorSpec,
        module: Option<Module>,
    ) -> Result<Arc<Worker>, EngineError> {
        let selector = spec.selector.compile()?;
        Ok(Arc::new(Worker {
            name: name.to_owned(),
            spec: spec.clone(),
            selector,
            module: RwLock::new(module),
            position: AtomicU64::new(0),
            counters: Default::default(),
            caught_up: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            changed: Notify::new(),
            handle: Mutex::new(None),
        }))
    }

    /// Persists definition, flags and checkpoint.
    fn save(&self, name: &str, w: &Worker) -> Result<(), EngineError> {
        let record = Record {
            spec: w.spec.clone(),
            paused: w.paused.load(Ordering::Acquire),
            failure: w.failure.lock().expect("failure lock").clone(),
        };
        let json = serde_json::to_vec(&record).expect("a record serializes");
        let mut txn = self.db.write(Durability::Immediate)?;
        txn.put(CatalogTable::Reactors, name, &json)?;
        txn.put_reactor_checkpoint(name, w.checkpoint())?;
        txn.commit()?;
        Ok(())
    }

    fn start(shared: &Arc<Shared>, w: &Arc<Worker>) {
        let sh = shared.clone();
        let worker = w.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loom-reactor-{}", w.name))
            .spawn(move || sh.run(&worker))
            .expect("spawning a reactor worker");
        *w.handle.lock().expect("handle lock") = Some(handle);
    }

    fn run(&self, w: &Worker) {
        while !w.stop.load(Ordering::Acquire) {
            let idle = w.paused.load(Ordering::Acquire)
                || w.failure.lock().expect("failure lock").is_some();
            if idle {
                let l = w.changed.listen();
                if w.stop.load(Ordering::Acquire) {
                    break;
                }
                let _ = l.wait_timeout(Duration::from_millis(500));
                continue;
            }
            let head = self.ledger.head();
            let position = w.position.load(Ordering::Acquire);
            if position >= head {
                w.caught_up.store(true, Ordering::Release);
                self.ledger
                    .wait_for(position + 1, Duration::from_millis(250));
                continue;
            }
            if let Err((at, message)) = self.step(w, head) {
                if w.stop.load(Ordering::Acquire) {
                    // Interrupted by a shutdown, not a failure: the event is retried next time.
                    break;
                }
                tracing::warn!(reactor = %w.name, position = at, %message, "reactor failed");
                *w.failure.lock().expect("failure lock") = Some(Failure {
                    position: at,
                    message,
                });
                if let Err(e) = self.save(&w.name, w) {
                    tracing::error!(reactor = %w.name, error = %e, "saving reactor status failed");
                }
                w.changed.notify(usize::MAX);
            }
        }
    }

    /// Reacts to the next batch; the checkpoint is saved after each batch (and before a
    /// failure is reported). Effects are idempotent, so a crash between an effect and the
    /// checkpoint only repeats it harmlessly.
    fn step(&self, w: &Worker, head: u64) -> Result<(), (u64, String)> {
        let position = w.position.load(Ordering::Acquire);
        let events = self
            .ledger
            .read(&w.selector, ReadOptions::after(position, BATCH))
            .map_err(|e| (position + 1, e.to_string()))?;
        let covered = match events.last() {
            Some(last) if events.len() >= BATCH => last.position,
            Some(last) => last.position.max(head),
            None => head,
        };
        let mut result = Ok(());
        for e in &events {
            if w.stop.load(Ordering::Acquire) || w.paused.load(Ordering::Acquire) {
                break;
            }
            if let Err(message) = self.react(w, e) {
                result = Err((e.position, message));
                break;
            }
            w.position.store(e.position, Ordering::Release);
        }
        if result.is_ok() && !w.stop.load(Ordering::Acquire) && !w.paused.load(Ordering::Acquire) {
            if covered >= head {
                w.caught_up.store(true, Ordering::Release);
            }
            w.position.store(covered, Ordering::Release);
        }
        if w.position.load(Ordering::Acquire) != position {
            self.save_checkpoint(w)
                .map_err(|e| (position + 1, e.to_string()))?;
        }
        result
    }

    /// The worker's module, loaded again if it could not be loaded at startup.
    fn module_of(&self, w: &Worker) -> Result<Module, EngineError> {
        if let Some(m) = w.module.read().expect("module lock").as_ref() {
            return Ok(m.clone());
        }
        let m = self.modules.load_with(&w.spec.module, &[Entry::React])?;
        *w.module.write().expect("module lock") = Some(m.clone());
        Ok(m)
    }

    fn save_checkpoint(&self, w: &Worker) -> Result<(), EngineError> {
        let mut txn = self.db.write(Durability::Immediate)?;
        txn.put_reactor_checkpoint(&w.name, w.checkpoint())?;
        txn.commit()?;
        Ok(())
    }

    /// All effects of one event.
    fn react(&self, w: &Worker, e: &StoredEvent) -> Result<(), String> {
        let module = self.module_of(w).map_err(|err| err.to_string())?;
        let out = match self
            .runtime
            .react(&module, e)
            .map_err(|err| err.to_string())?
        {
            Outcome::Ok(out) => out,
            Outcome::Rejected(r) => {
                return Err(format!(
                    "react refused the event: {}",
                    String::from_utf8_lossy(&r)
                ));
            }
        };
        let reaction: Reaction = serde_json::from_slice(&out)
            .map_err(|err| format!("react returned a malformed reaction: {err}"))?;
        let source = format!("loom/reactors/{}", w.name);
        if !reaction.append.is_empty() {
            let events = reaction
                .append
                .iter()
                .enumerate()
                .map(|(i, em)| Event {
                    id: format!("{}/{i}", e.position),
                    source: source.clone(),
                    ty: em.ty.clone(),
                    subject: em.subject.clone(),
                    time: None,
                    datacontenttype: Some("application/json".into()),
                    dataschema: None,
                    data: Some(Data::json(&em.data)),
                    extensions: BTreeMap::new(),
                })
                .collect();
            let out = self
                .ledger
                .append(AppendRequest::new(events))
                .map_err(|err| format!("appending the reaction's events failed: {err}"))?;
            if !out.duplicate {
                w.counters
                    .appended
                    .fetch_add(out.events.len() as u64, Ordering::AcqRel);
            }
        }
        for (i, c) in reaction.commands.iter().enumerate() {
            let idem = format!("r-{}-{}-{i}", w.name, e.position);
            let command = serde_json::to_vec(&c.command).expect("a Value serializes");
            match self
                .deciders
                .execute(&c.entity, &c.key, &command, Some(&idem))
            {
                Ok(outcome) => {
                    if !outcome.duplicate {
                        w.counters.commands.fetch_add(1, Ordering::AcqRel);
                    }
                }
                // A domain rejection is an answer, not a failure: the command was decided.
                Err(EngineError::Rejected(message)) => {
                    tracing::info!(reactor = %w.name, position = e.position, %message, "command rejected");
                    w.counters.commands.fetch_add(1, Ordering::AcqRel);
                }
                Err(err) => {
                    return Err(format!("command on {}/{} failed: {err}", c.entity, c.key));
                }
            }
        }
        if !reaction.deliver.is_empty() {
            let Some(sink) = &w.spec.sink else {
                return Err("the reaction delivers CloudEvents but the reactor has no sink".into());
            };
            for (i, d) in reaction.deliver.iter().enumerate() {
                let body = serde_json::json!({
                    "specversion": "1.0",
                    "id": format!("{}/{}/{i}", w.name, e.position),
                    "source": source,
                    "type": d.ty,
                    "subject": d.subject,
                    "time": loom_ledger::format_time(e.recorded_micros),
                    "datacontenttype": "application/json",
                    "data": d.data,
                });
                self.deliver(w, sink, &body)?;
                w.counters.delivered.fetch_add(1, Ordering::AcqRel);
            }
        }
        w.counters.reacted.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// POSTs one CloudEvent (structured mode), retrying with exponential backoff.
    fn deliver(&self, w: &Worker, sink: &str, body: &serde_json::Value) -> Result<(), String> {
        let bytes = serde_json::to_vec(body).expect("a Value serializes");
        let mut backoff = self.policy.initial_backoff;
        let mut last = String::new();
        for attempt in 1..=self.policy.attempts {
            if w.stop.load(Ordering::Acquire) {
                return Err("stopped".into());
            }
            match self
                .http
                .post(sink)
                .header(
                    "content-type",
                    "application/cloudevents+json; charset=utf-8",
                )
                .send(&bytes[..])
            {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => last = format!("the sink answered {}", resp.status()),
                Err(e) => last = format!("the sink is unreachable: {e}"),
            }
            tracing::debug!(reactor = %w.name, attempt, %last, "delivery failed; retrying");
            if attempt < self.policy.attempts {
                let l = w.changed.listen();
                if w.stop.load(Ordering::Acquire) {
                    return Err("stopped".into());
                }
                let _ = l.wait_timeout(backoff);
                backoff = (backoff * 2).min(self.policy.max_backoff);
            }
        }
        Err(format!(
            "delivery to {sink} failed after {} attempts: {last}",
            self.policy.attempts
        ))
    }
}
