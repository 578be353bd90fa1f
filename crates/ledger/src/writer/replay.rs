//! Applying logged groups: the write-ahead log's when the database is opened, and, in cluster
//! mode, the replicated log's groups a follower reads.

use super::*;
use crate::log::control::{Control, LedgerChange};
use crate::log::group;
use crate::log::{LogEnd, LoggedGroup};
use crate::registry::CompiledEntity;

/// What a replay did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Replayed {
    /// Events applied again.
    pub(crate) events: u64,
    /// Where the log's next record goes: after the last record applied, the start of the
    /// first file if none was.
    pub(crate) end: LogEnd,
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
        let mut counters = Counters::read(&t)?;
        let end = log.replay_after(head, &mut |record| {
            replayed.events += apply_logged(
                &mut t,
                record,
                &mut counters,
                "write-ahead log",
                segment_events,
            )?;
            Ok(())
        })?;
        let Some(end) = end else {
            return Ok(Replayed::default());
        };
        replayed.end = end;
        t.meta
            .insert(META_NEXT_STREAM_ID, counters.next_stream_id)?;
        t.seal(replayed.events, segment_events)?;
    }
    txn.commit()?;
    Ok(replayed)
}

/// The counters a logged group moves on.
struct Counters {
    next_stream_id: u64,
    last_recorded: i64,
}

impl Counters {
    fn read(t: &Tables<'_>) -> Result<Counters, StorageError> {
        Ok(Counters {
            next_stream_id: t.meta.get(META_NEXT_STREAM_ID)?.map_or(1, |v| v.value()),
            last_recorded: t.time_index.last()?.map_or(i64::MIN, |(k, _)| k.value()),
        })
    }
}

/// Stores and indexes one logged group's events (which follow the database's head), and
/// moves the counters on. Returns how many events it stored.
fn apply_logged(
    t: &mut Tables<'_>,
    record: &LoggedGroup<'_>,
    counters: &mut Counters,
    log: &str,
    segment_events: usize,
) -> Result<u64, StorageError> {
    index_logged(t, record, log, segment_events)?;
    counters.last_recorded = counters.last_recorded.max(record.recorded);
    t.time_index.insert(counters.last_recorded, record.last())?;
    counters.next_stream_id = counters.next_stream_id.max(record.next_stream_id);
    Ok(record.events.len() as u64)
}

/// Groups of at least this many events are indexed on two threads (`index_logged`).
const SPLIT_INDEX_EVENTS: usize = 256;

/// Stores and indexes one logged group's events, and packs the segments they fill
/// (`records::store`).
///
/// Each index gets its entries in key order: a group spread over many streams puts its
/// stream index entries on leaves all over that B-tree, and in order each leaf is visited
/// once, while it is hot. A large group's stream index is written on a second thread while
/// this one writes the other indexes (both write tables of the one transaction, which redb
/// allows; if either fails, the group does). docs/benchmarks/writer.md, "Indexing a
/// large group", has the figures.
pub(super) fn index_logged(
    t: &mut Tables<'_>,
    record: &LoggedGroup<'_>,
    log: &str,
    segment_events: usize,
) -> Result<(), StorageError> {
    let stored: Vec<&[u8]> = record.events.iter().map(|(_, bytes)| *bytes).collect();
    records::store(
        &mut t.events,
        &mut t.segments,
        record.first,
        &stored,
        segment_events,
        &mut t.tail,
    )
    .map_err(corrupt)?;
    let mut entries = Entries::with_capacity(record.events.len());
    for (i, (stream_id, bytes)) in record.events.iter().enumerate() {
        let position = record.first + i as u64;
        let e = codec::decode_view(position, bytes).map_err(|message| {
            StorageError(Box::new(redb::Error::Corrupted(format!(
                "the {log}'s event at position {position}: {message}"
            ))))
        })?;
        let keys = Keys {
            source: e.source,
            id: e.id,
            subject: e.subject,
            ty: e.ty,
        };
        entries.push(position, *stream_id, e.revision, keys);
    }
    entries.sort();
    let Tables {
        ids,
        streams,
        stream_index,
        entity_index,
        type_index,
        ..
    } = t;
    let mut others = || entries.write_others(ids, streams, entity_index, type_index);
    // Behind a lock so that, should no second thread be had, this one can write it too.
    let stream_index = std::sync::Mutex::new(stream_index);
    let by_stream = || -> Result<(), StorageError> {
        let mut table = stream_index.lock().unwrap_or_else(|e| e.into_inner());
        Ok(entries.write_stream_index(&mut table)?)
    };
    if record.events.len() < SPLIT_INDEX_EVENTS || !second_cpu() {
        by_stream()?;
        return Ok(others()?);
    }
    std::thread::scope(|scope| {
        let spawn = || {
            std::thread::Builder::new()
                .name("loom-ledger-index".into())
                .spawn_scoped(scope, by_stream)
        };
        let Ok(spawned) = crate::log::on_every_cpu(spawn) else {
            by_stream()?;
            return Ok(others()?);
        };
        let here = others().map_err(StorageError::from);
        let there = spawned
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        here.and(there)
    })
}

/// Whether this process may run on more than one CPU: on one, a second indexing thread
/// would only take turns with the first.
fn second_cpu() -> bool {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from)) > 1
}

/// A group read from the replicated log, for a follower's writer to apply.
pub(crate) struct ReplicatedGroup {
    /// Its sequence number in the replicated log.
    pub(crate) sequence: u64,
    /// The record the sequencer published.
    pub(crate) record: Vec<u8>,
    pub(crate) reply: oneshot::Sender<Result<(), StorageError>>,
}

impl GroupCommit {
    /// Applies a replicated group, answering its caller.
    pub(crate) fn apply_replicated(&mut self, work: ReplicatedGroup) {
        let started = Instant::now();
        let result = self
            .ready()
            .map_err(|f| f.error)
            .and_then(|()| self.try_apply_replicated(work.sequence, &work.record));
        if let Err(e) = &result
            && e.needs_reopen()
        {
            // The caller reads the log again from what the reopened database holds.
            tracing::warn!(error = %e, "applying a replicated group failed; reopening the database");
            if let Err(e) = self.recover() {
                tracing::error!(error = %e, "reopening the database failed");
            }
        }
        if result.is_ok() {
            self.stats
                .record_commit(started.elapsed().as_micros() as u64);
        }
        let _ = work.reply.send(result);
    }

    fn try_apply_replicated(&mut self, sequence: u64, record: &[u8]) -> Result<(), StorageError> {
        let corrupt = |message: String| StorageError(Box::new(redb::Error::Corrupted(message)));
        if let Some(control) = Control::decode(record) {
            let control = control
                .map_err(|e| corrupt(format!("message {sequence} of the replicated log: {e}")))?;
            return self.apply_control(sequence, &control);
        }
        let groups = group::groups(record);
        let [group] = groups.as_slice() else {
            return Err(corrupt(format!(
                "message {sequence} of the replicated log is not one commit group"
            )));
        };
        if group.end != record.len() as u64 {
            return Err(corrupt(format!(
                "message {sequence} of the replicated log has bytes after its commit group"
            )));
        }
        let head = self.head.get();
        if group.last() > head && group.first != head + 1 {
            return Err(corrupt(format!(
                "message {sequence} of the replicated log holds positions {}..={}, but this \
                 node's ledger ends at {head}: the groups between are missing",
                group.first,
                group.last()
            )));
        }
        let checkpoint = self.wal.as_ref().is_none_or(|w| w.wants_checkpoint());
        let mut txn = self.store.begin_write_own()?;
        txn.set_durability(if checkpoint {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut counters = None;
        {
            let mut t = Tables::open(&txn)?;
            // A group at or below the head is one this node published itself (and applied
            // when it did): only the sequence number moves on.
            if group.last() > head {
                let mut c = Counters::read(&t)?;
                let events =
                    apply_logged(&mut t, group, &mut c, "replicated log", self.segment_events)?;
                t.meta.insert(META_NEXT_STREAM_ID, c.next_stream_id)?;
                t.seal(events, self.segment_events)?;
                counters = Some(c);
            }
            t.meta.insert(META_LOG_SEQUENCE, sequence)?;
        }
        txn.commit()?;
        let ordering = std::sync::atomic::Ordering::Release;
        self.log_sequence.store(sequence, ordering);
        if let Some(wal) = self.wal.as_mut() {
            if checkpoint {
                wal.checkpointed();
            } else {
                wal.applied(record.len());
            }
        }
        if let Some(c) = counters {
            self.next_stream_id = c.next_stream_id;
            self.last_recorded = self.last_recorded.max(c.last_recorded);
            self.stats
                .events
                .fetch_add(group.last() - head, std::sync::atomic::Ordering::Relaxed);
            self.head.advance(group.last());
        }
        Ok(())
    }
}

/// A control record for the sequencer's writer to publish and apply.
pub(crate) struct ControlWork {
    pub(crate) control: Control,
    /// The record's sequence in the log once applied.
    pub(crate) reply: oneshot::Sender<Result<u64, StorageError>>,
}

impl GroupCommit {
    /// Publishes a control record to the replicated log, then applies it, answering its
    /// caller.
    pub(crate) fn commit_control(&mut self, work: ControlWork) {
        let result = self
            .ready()
            .map_err(|f| f.error)
            .and_then(|()| self.try_commit_control(&work.control));
        let _ = work.reply.send(result);
    }

    fn try_commit_control(&mut self, control: &Control) -> Result<u64, StorageError> {
        let io = |e: std::io::Error| StorageError(Box::new(redb::Error::Io(e)));
        let wal = self
            .wal
            .as_mut()
            .ok_or_else(|| io(std::io::Error::other("no replicated log")))?;
        let sequence = wal
            .replicated()
            .ok_or_else(|| io(std::io::Error::other("no replicated log")))?;
        wal.ready().map_err(io)?;
        wal.publish_control(&control.encode()).map_err(io)?;
        self.apply_control(sequence, control)?;
        Ok(sequence)
    }

    /// Applies a control record at `sequence` of the replicated log, durably.
    fn apply_control(&mut self, sequence: u64, control: &Control) -> Result<(), StorageError> {
        let corrupt = |message: String| StorageError(Box::new(redb::Error::Corrupted(message)));
        match control {
            Control::Engine(change) => {
                // Kept, durably with the sequence, until the engine has applied it.
                let mut txn = self.store.begin_write_own()?;
                txn.set_durability(Durability::Immediate)?;
                {
                    let mut inbox = txn.open_table(ENGINE_INBOX)?;
                    inbox.insert(sequence, change.as_slice())?;
                    let mut meta = txn.open_table(META)?;
                    meta.insert(META_LOG_SEQUENCE, sequence)?;
                }
                txn.commit()?;
                self.engine_inbox.advance(sequence);
            }
            Control::Ledger(LedgerChange::PutEntity { name, spec }) => {
                let compiled = CompiledEntity::compile(spec.clone()).map_err(|e| {
                    corrupt(format!(
                        "the replicated registration of entity {name:?} does not compile: {e}"
                    ))
                })?;
                let bytes = serde_json::to_vec(spec).expect("a spec always serializes");
                let mut txn = self.store.begin_write_own()?;
                txn.set_durability(Durability::Immediate)?;
                {
                    let mut entities = txn.open_table(ENTITIES)?;
                    entities.insert(name.as_str(), bytes.as_slice())?;
                    let mut meta = txn.open_table(META)?;
                    meta.insert(META_LOG_SEQUENCE, sequence)?;
                }
                // As `Ledger::put_entity`: readers never see a registration that is not
                // durable.
                let mut guard = self.registry.write().expect("registry lock");
                txn.commit()?;
                let mut next = Registry::clone(&guard);
                next.entities.insert(name.clone(), Arc::new(compiled));
                *guard = Arc::new(next);
            }
        }
        self.log_sequence
            .store(sequence, std::sync::atomic::Ordering::Release);
        if let Some(wal) = self.wal.as_mut() {
            // A durable commit holds everything applied before it.
            wal.checkpointed();
        }
        Ok(())
    }
}
