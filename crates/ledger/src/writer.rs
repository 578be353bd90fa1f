//! The group-commit writer: one thread owns the write transaction. It drains the queue of
//! pending appends, checks and applies each in order inside one transaction (a refused append
//! does not affect its neighbours), makes the group durable — one record in the durable log
//! ([`crate::log`]) and a redb commit with `Durability::None`, or at a checkpoint a redb
//! commit with `Durability::Immediate` — and only then answers every caller. (The catalog's
//! writers — projection commits, definitions — take redb write transactions of their own
//! between groups; see docs/architecture.md.)
//!
//! After an I/O error (a full disk) the writer closes and reopens the database, because redb
//! refuses every operation of a database that saw one (see [`crate::store`]); opening replays
//! the log ([`replay`]), and the writer reloads what it keeps in memory from the reopened
//! database.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};

use crate::codec;
use crate::error::{AppendError, Conflict, ReadError, StorageError};
use crate::head::Head;
use crate::ledger::{LedgerStats, load};
use crate::log::{DurableLog, GroupRecord, LogReplay};
use crate::query::{View, Window, decode};
use crate::records::{self, Events};
use crate::registry::Registry;
use crate::store::Store;
use crate::tables::*;
use loom_core::CompiledSelector;
use loom_core::split_subject;
use loom_core::{AppendOutcome, AppendRequest, AppendedEvent};

/// Most conflicting positions a DCB conflict reports.
pub(crate) const MAX_REPORTED_MATCHES: usize = 10;

pub(crate) struct Pending {
    pub(crate) req: AppendRequest,
    /// The DCB condition's selector, and what the caller found checking it against a
    /// snapshot: the writer checks only what comes after.
    pub(crate) condition: Option<(CompiledSelector, Precheck)>,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome, AppendError>>,
}

/// A DCB condition checked against a snapshot (`Ledger::precheck`).
pub(crate) struct Precheck {
    /// The snapshot covered positions up to here (and at least the condition's `after`).
    pub(crate) through: u64,
    /// The first matching positions up to `through` (at most `MAX_REPORTED_MATCHES`).
    pub(crate) matched: Vec<u64>,
}

pub(crate) struct Writer {
    pub(crate) store: Store,
    /// The store generation the in-memory state below was loaded from.
    pub(crate) generation: u64,
    pub(crate) head: Arc<Head>,
    pub(crate) registry: Arc<RwLock<Arc<Registry>>>,
    pub(crate) stats: Arc<LedgerStats>,
    pub(crate) next_stream_id: u64,
    pub(crate) last_recorded: i64,
    pub(crate) max_group_events: usize,
    /// Most events in one segment.
    pub(crate) segment_events: usize,
    pub(crate) drained: Arc<event_listener::Event>,
    /// The durable log; `None` when every group commits durably to redb itself (a ledger on
    /// a custom storage backend).
    pub(crate) wal: Option<Box<dyn DurableLog>>,
}

/// The tail or the segments, open for writing.
type RecordTable<'t> = Table<'t, u64, &'static [u8]>;

struct Tables<'t> {
    events: RecordTable<'t>,
    segments: RecordTable<'t>,
    ids: Table<'t, (&'static str, &'static str), u64>,
    streams: Table<'t, &'static str, (u64, u64)>,
    stream_index: Table<'t, (u64, u64), u64>,
    entity_index: Table<'t, (&'static str, u64), ()>,
    type_index: Table<'t, (&'static str, &'static str, u64), ()>,
    time_index: Table<'t, i64, u64>,
    meta: Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    fn records(&self) -> Events<'_, RecordTable<'t>, RecordTable<'t>> {
        Events {
            tail: &self.events,
            segments: &self.segments,
        }
    }

    /// Packs what the group made full into segments (see [`crate::records`]): the tail held
    /// less than one segment before, so this is at most one more segment than `events`
    /// fill.
    fn seal(&mut self, events: u64, segment_events: usize) -> Result<(), StorageError> {
        let max = usize::try_from(events)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        records::seal(&mut self.events, &mut self.segments, max, segment_events)
            .map_err(corrupt)?;
        Ok(())
    }

    fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, StorageError> {
        Ok(Tables {
            events: txn.open_table(EVENTS)?,
            segments: txn.open_table(SEGMENTS)?,
            ids: txn.open_table(IDS)?,
            streams: txn.open_table(STREAMS)?,
            stream_index: txn.open_table(STREAM_INDEX)?,
            entity_index: txn.open_table(ENTITY_INDEX)?,
            type_index: txn.open_table(TYPE_INDEX)?,
            time_index: txn.open_table(TIME_INDEX)?,
            meta: txn.open_table(META)?,
        })
    }
}

/// State of one group while it is being applied; becomes the writer's state on commit.
struct Group {
    head: u64,
    next_stream_id: u64,
    recorded: i64,
    buf: Vec<u8>,
    entities: Vec<String>,
    /// The group's log record, when it commits through the log.
    log: Option<GroupRecord>,
}

impl Writer {
    pub(crate) fn run(mut self, rx: Receiver<Pending>) {
        let mut group: Vec<Pending> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut events = first.req.events.len();
            group.push(first);
            while events < self.max_group_events {
                match rx.try_recv() {
                    Ok(p) => {
                        events += p.req.events.len();
                        group.push(p);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            // Room in the queue again: wake appenders waiting for it.
            self.drained.notify(usize::MAX);
            self.commit_group(&mut group);
        }
        self.checkpoint_on_close();
    }

    /// On a clean close, carries the logged groups into the redb file, so that the next open
    /// has nothing to replay. If it fails, the next open replays them.
    fn checkpoint_on_close(&mut self) {
        let Some(wal) = self.wal.as_mut().filter(|w| w.has_records()) else {
            return;
        };
        let done = (|| -> Result<(), StorageError> {
            self.store.begin_write()?.commit()?;
            Ok(())
        })();
        match done {
            Ok(()) => {
                wal.checkpointed();
                self.stats
                    .checkpoints
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the closing checkpoint failed; the next open replays the log")
            }
        }
    }

    fn commit_group(&mut self, group: &mut Vec<Pending>) {
        let started = Instant::now();
        let mut result = self.ready().and_then(|()| self.apply_group(group));
        if let Err(Failure {
            error,
            committing: false,
            logging: false,
        }) = &result
            && error.needs_reopen()
        {
            // Nothing was committed: the database had failed before (another writer of it, an
            // earlier group). Reopen it and try this group once more.
            tracing::warn!(error = %error, "the database failed before this group; reopening it");
            result = self
                .recover()
                .map_err(|error| Failure {
                    error,
                    committing: false,
                    logging: false,
                })
                .and_then(|()| self.apply_group(group));
        }
        match result {
            Ok((results, state)) => {
                self.stats
                    .record_commit(started.elapsed().as_micros() as u64);
                let written = state.head - self.head.get();
                self.next_stream_id = state.next_stream_id;
                self.last_recorded = state.recorded;
                self.stats
                    .events
                    .fetch_add(written, std::sync::atomic::Ordering::Relaxed);
                self.head.advance(state.head);
                for (pending, result) in group.drain(..).zip(results) {
                    let counter = match &result {
                        Ok(_) => &self.stats.appends,
                        Err(_) => &self.stats.conflicts,
                    };
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = pending.reply.send(result);
                }
            }
            Err(Failure { error, logging, .. }) => {
                tracing::error!(error = %error, appends = group.len(), "group commit failed");
                // Reopen before answering, so that a caller who reads after its failed append
                // finds a working database. (A failed log write left the database as it was:
                // the group's transaction is dropped uncommitted.)
                if error.needs_reopen()
                    && !logging
                    && let Err(e) = self.recover()
                {
                    tracing::error!(error = %e, "reopening the database failed; retrying with the next append");
                }
                for pending in group.drain(..) {
                    let _ = pending
                        .reply
                        .send(Err(AppendError::Storage(error.duplicate())));
                }
            }
        }
    }

    /// Makes sure a database is open and the in-memory state was loaded from it.
    fn ready(&mut self) -> Result<(), Failure> {
        let fail = |error| Failure {
            error,
            committing: false,
            logging: false,
        };
        if !self.store.is_open() {
            self.store.reopen().map_err(fail)?;
        }
        if self.store.generation() != self.generation {
            self.reload().map_err(fail)?;
        }
        Ok(())
    }

    /// Closes and reopens the database after an I/O error, then reloads the in-memory state.
    fn recover(&mut self) -> Result<(), StorageError> {
        self.store.reopen()?;
        tracing::info!("reopened the database after a storage failure");
        self.reload()
    }

    /// Reloads head, counters and registry from the (reopened) database. A commit that
    /// failed may still have become durable (the error came after the commit record was
    /// written): then the head moves on here, and its events are there for everyone to read,
    /// although the callers were told the append failed (a retry of it is idempotent).
    fn reload(&mut self) -> Result<(), StorageError> {
        let loaded = load(&self.store).map_err(|e| e.into_storage())?;
        let head = self.head.get();
        if loaded.head < head {
            tracing::error!(
                acknowledged = head,
                found = loaded.head,
                "the reopened database ends before the acknowledged head"
            );
        } else if loaded.head > head {
            tracing::warn!(
                from = head,
                to = loaded.head,
                "a commit reported as failed is durable after all"
            );
            self.head.advance(loaded.head);
        }
        self.next_stream_id = loaded.next_stream_id;
        self.last_recorded = self.last_recorded.max(loaded.last_recorded);
        *self.registry.write().expect("registry lock") = Arc::new(loaded.registry);
        self.generation = self.store.generation();
        Ok(())
    }

    /// Applies every pending append in one transaction and commits it. Returns each append's
    /// result and the new writer state; on error nothing was committed.
    fn apply_group(
        &mut self,
        group: &[Pending],
    ) -> Result<(Vec<Result<AppendOutcome, AppendError>>, Group), Failure> {
        let before = |error: StorageError| Failure {
            error,
            committing: false,
            logging: false,
        };
        if let Some(wal) = &self.wal {
            wal.ready().map_err(|e| Failure {
                error: StorageError(Box::new(redb::Error::Io(e))),
                committing: false,
                logging: true,
            })?;
        }
        let mut txn = self.store.begin_write().map_err(|e| before(e.into()))?;
        // Through the log unless it is time for a checkpoint (or there is no log).
        let checkpoint = self.wal.as_ref().is_none_or(|w| w.wants_checkpoint());
        txn.set_durability(if checkpoint {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(|e| before(e.into()))?;
        let now = chrono::Utc::now().timestamp_micros();
        let mut state = Group {
            head: self.head.get(),
            next_stream_id: self.next_stream_id,
            // Recorded times never go backwards, so the time index stays ordered.
            recorded: now.max(self.last_recorded),
            buf: Vec::with_capacity(512),
            entities: self
                .registry
                .read()
                .expect("registry lock")
                .entities
                .keys()
                .cloned()
                .collect(),
            log: None,
        };
        if !checkpoint {
            state.log = Some(GroupRecord::new(state.head + 1, state.recorded));
        }
        let mut results = Vec::with_capacity(group.len());
        let applied = (|| {
            let mut t = Tables::open(&txn)?;
            let start_head = state.head;
            for pending in group {
                results.push(apply_one(&mut t, &mut state, pending)?);
            }
            if state.head > start_head {
                t.time_index.insert(state.recorded, state.head)?;
                t.seal(state.head - start_head, self.segment_events)?;
            }
            if state.next_stream_id != self.next_stream_id {
                t.meta.insert(META_NEXT_STREAM_ID, state.next_stream_id)?;
            }
            Ok::<(), StorageError>(())
        })();
        applied.map_err(before)?;
        if let (Some(log), Some(wal)) = (state.log.as_mut(), self.wal.as_mut())
            && !log.is_empty()
        {
            log.finish(state.next_stream_id);
            // Durable from here on: a crash before the commit below replays the record.
            wal.append(log).map_err(|e| Failure {
                error: StorageError(Box::new(redb::Error::Io(e))),
                committing: false,
                logging: true,
            })?;
        }
        txn.commit().map_err(|e| Failure {
            error: e.into(),
            committing: true,
            logging: false,
        })?;
        if checkpoint && let Some(wal) = self.wal.as_mut() {
            wal.checkpointed();
            self.stats
                .checkpoints
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok((results, state))
    }
}

/// Checks one append's identity and conditions against the transaction's current state and,
/// if they hold, writes it. A refusal writes nothing; a storage error aborts the group.
fn apply_one(
    t: &mut Tables<'_>,
    g: &mut Group,
    p: &Pending,
) -> Result<Result<AppendOutcome, AppendError>, StorageError> {
    let req = &p.req;
    // Identity: a batch stored before as a whole is an idempotent success.
    if let Some(outcome) = match check_identity(t, req) {
        Ok(o) => o,
        Err(Refusal::Conflict(c)) => return Ok(Err(AppendError::Conflict(c))),
        Err(Refusal::Read(e)) => return read_failure(e),
        Err(Refusal::Storage(e)) => return Err(e),
    } {
        return Ok(Ok(outcome));
    }
    for (subject, expected) in &req.conditions.expected_revisions {
        let actual = t.streams.get(subject.as_str())?.map_or(0, |v| v.value().1);
        if !expected.admits(actual) {
            return Ok(Err(AppendError::Conflict(Conflict::Revision {
                stream: subject.clone(),
                expected: *expected,
                actual,
            })));
        }
    }
    if let Some((selector, pre)) = &p.condition {
        let mut positions = pre.matched.clone();
        let wanted = MAX_REPORTED_MATCHES - positions.len().min(MAX_REPORTED_MATCHES);
        if wanted > 0 {
            let view = View {
                events: t.records(),
                streams: &t.streams,
                stream_index: &t.stream_index,
                entity_index: &t.entity_index,
                type_index: &t.type_index,
            };
            let window = Window {
                after: pre.through,
                before: u64::MAX,
                limit: wanted,
                backwards: false,
            };
            match view.select(selector, window, &g.entities) {
                Ok(found) => positions.extend(found.iter().map(|e| e.position)),
                Err(e) => return read_failure(e),
            }
        }
        if !positions.is_empty() {
            return Ok(Err(AppendError::Conflict(Conflict::EventsMatched {
                positions,
            })));
        }
    }
    // Every check passed: write.
    let mut appended = Vec::with_capacity(req.events.len());
    for e in &req.events {
        let position = g.head + 1;
        let (stream_id, revision) = match t.streams.get(e.subject.as_str())? {
            Some(v) => {
                let (id, rev) = v.value();
                (id, rev + 1)
            }
            None => {
                let id = g.next_stream_id;
                g.next_stream_id += 1;
                (id, 1)
            }
        };
        codec::encode(revision, g.recorded, e, &mut g.buf);
        let keys = Keys {
            source: &e.source,
            id: &e.id,
            subject: &e.subject,
            ty: &e.ty,
        };
        index(t, position, stream_id, revision, keys, &g.buf)?;
        if let Some(log) = &mut g.log {
            log.push(stream_id, &g.buf);
        }
        g.head = position;
        appended.push(AppendedEvent {
            source: e.source.clone(),
            id: e.id.clone(),
            subject: e.subject.clone(),
            position,
            revision,
        });
    }
    Ok(Ok(AppendOutcome {
        events: appended,
        last_position: g.head,
        duplicate: false,
    }))
}

/// The attributes an event is indexed by.
struct Keys<'a> {
    source: &'a str,
    id: &'a str,
    subject: &'a str,
    ty: &'a str,
}

/// Writes one event (`record`, its stored encoding) and its index entries.
fn index(
    t: &mut Tables<'_>,
    position: u64,
    stream_id: u64,
    revision: u64,
    keys: Keys<'_>,
    record: &[u8],
) -> Result<(), redb::StorageError> {
    t.events.insert(position, record)?;
    t.ids.insert((keys.source, keys.id), position)?;
    t.streams.insert(keys.subject, (stream_id, revision))?;
    t.stream_index.insert((stream_id, revision), position)?;
    let entity = split_subject(keys.subject).map_or("", |(entity, _)| entity);
    t.entity_index.insert((entity, position), ())?;
    t.type_index.insert((entity, keys.ty, position), ())?;
    Ok(())
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Replayed {
    /// Events applied again.
    pub(crate) events: u64,
    /// Where the log's next record goes: after the last record applied, 0 if none was.
    pub(crate) end: u64,
}

/// Applies the groups of the durable log that `db` does not hold yet and commits them
/// durably. Runs every time the database is opened, before anyone else uses it.
pub(crate) fn replay(
    db: &Database,
    log: &dyn LogReplay,
    segment_events: usize,
) -> Result<Replayed, StorageError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut replayed = Replayed::default();
    {
        let mut t = Tables::open(&txn)?;
        let head = t.records().head().map_err(corrupt)?;
        let mut next_stream_id = t.meta.get(META_NEXT_STREAM_ID)?.map_or(1, |v| v.value());
        let mut last_recorded = t.time_index.last()?.map_or(i64::MIN, |(k, _)| k.value());
        let end = log.replay_after(head, &mut |record| {
            for (i, (stream_id, bytes)) in record.events.iter().enumerate() {
                let position = record.first + i as u64;
                let e = codec::decode_view(position, bytes).map_err(|message| {
                    StorageError(Box::new(redb::Error::Corrupted(format!(
                        "the write-ahead log's event at position {position}: {message}"
                    ))))
                })?;
                let keys = Keys {
                    source: e.source,
                    id: e.id,
                    subject: e.subject,
                    ty: e.ty,
                };
                index(&mut t, position, *stream_id, e.revision, keys, bytes)?;
                replayed.events += 1;
            }
            last_recorded = last_recorded.max(record.recorded);
            t.time_index.insert(last_recorded, record.last())?;
            next_stream_id = next_stream_id.max(record.next_stream_id);
            Ok(())
        })?;
        let Some(end) = end else {
            return Ok(Replayed::default());
        };
        replayed.end = end;
        t.meta.insert(META_NEXT_STREAM_ID, next_stream_id)?;
        t.seal(replayed.events, segment_events)?;
    }
    txn.commit()?;
    Ok(replayed)
}

/// Why a group failed; `committing` when the failure came from the commit itself (so the
/// group may or may not be durable), rather than before anything was committed; `logging`
/// when writing the log or allocating its reserve failed (nothing was committed, the database
/// is fine).
struct Failure {
    error: StorageError,
    committing: bool,
    logging: bool,
}

enum Refusal {
    Conflict(Conflict),
    Read(ReadError),
    Storage(StorageError),
}

impl From<redb::StorageError> for Refusal {
    fn from(e: redb::StorageError) -> Self {
        Refusal::Storage(e.into())
    }
}

/// A read error met while writing, as a storage error (a record that does not decode is
/// corruption).
fn corrupt(e: ReadError) -> StorageError {
    match e {
        ReadError::Storage(e) => e,
        other => StorageError(Box::new(redb::Error::Corrupted(other.to_string()))),
    }
}

/// A stored record that does not decode is reported as a storage failure of the group.
fn read_failure<T>(e: ReadError) -> Result<T, StorageError> {
    match e {
        ReadError::Storage(s) => Err(s),
        other => Err(StorageError(Box::new(redb::Error::Io(
            std::io::Error::other(other.to_string()),
        )))),
    }
}

/// `Ok(Some(outcome))` when the whole batch is stored already with the same content;
/// `Ok(None)` when none of it is; a conflict otherwise.
fn check_identity(t: &Tables<'_>, req: &AppendRequest) -> Result<Option<AppendOutcome>, Refusal> {
    let mut found = Vec::new();
    for e in &req.events {
        if let Some(p) = t.ids.get((e.source.as_str(), e.id.as_str()))? {
            found.push(Some(p.value()));
        } else {
            found.push(None);
        }
    }
    let stored = found.iter().filter(|f| f.is_some()).count();
    if stored == 0 {
        return Ok(None);
    }
    let mut appended = Vec::with_capacity(req.events.len());
    for (e, position) in req.events.iter().zip(&found) {
        let Some(position) = *position else {
            // Part of the batch is new: the batch as a whole was not stored before.
            let (i, p) = found
                .iter()
                .enumerate()
                .find_map(|(i, f)| f.map(|p| (i, p)))
                .expect("at least one stored");
            let other = &req.events[i];
            return Err(Refusal::Conflict(Conflict::Identity {
                event_source: other.source.clone(),
                id: other.id.clone(),
                position: p,
                reason: "the rest of this batch is not stored, so it is not a retry of the \
                         same append"
                    .into(),
            }));
        };
        let Some(existing) = t
            .records()
            .with(position, |bytes| decode(position, bytes))
            .map_err(Refusal::Read)?
        else {
            return Err(Refusal::Read(ReadError::Corrupt {
                position,
                message: "the identity index names a position with no event".into(),
            }));
        };
        if !existing.event.same_content(e) {
            return Err(Refusal::Conflict(Conflict::Identity {
                event_source: e.source.clone(),
                id: e.id.clone(),
                position,
                reason: "the stored event has different content".into(),
            }));
        }
        appended.push(AppendedEvent {
            source: e.source.clone(),
            id: e.id.clone(),
            subject: e.subject.clone(),
            position,
            revision: existing.revision,
        });
    }
    let last_position = appended.iter().map(|a| a.position).max().unwrap_or(0);
    Ok(Some(AppendOutcome {
        events: appended,
        last_position,
        duplicate: true,
    }))
}
