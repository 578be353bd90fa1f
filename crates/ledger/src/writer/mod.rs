//! The group-commit writer: one thread owns the write transaction. It drains the queue of
//! pending appends, checks and applies each in order inside one transaction (a refused append
//! does not affect its neighbours), makes the group durable — one record in the durable log
//! ([`crate::log`]) — and only then answers every caller, with the group committed to redb
//! (`Durability::None`) before, or, for a small group, after: its transaction is left open
//! for the groups after it, which share one commit ([`shared`]). While a group's record
//! syncs, the appends queued meanwhile may already be planned as the next group, its record
//! written right behind ([`behind`]). Every so much log, an empty transaction commits with
//! `Durability::Immediate` after a group was answered (a checkpoint, [`checkpoint`]; its sync
//! runs beside the next groups, see [`crate::log::deferred`]); without a local log the group's
//! own commit is durable (a replicated log's checkpoints are). (The catalog's
//! writers — projection commits, definitions — take redb write transactions of their own
//! between groups; see docs/architecture.md.)
//!
//! After an I/O error (a full disk) the writer closes and reopens the database, because redb
//! refuses every operation of a database that saw one (see [`crate::store`]); opening replays
//! the log ([`replay`]), and the writer reloads what it keeps in memory from the reopened
//! database.

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};

use crate::codec;
use crate::error::{AppendError, Conflict, ReadError, StorageError};
use crate::head::Head;
use crate::ledger::LedgerStats;
use crate::log::{DurableLog, GroupRecord, LogReplay};
use crate::poll::{Polled, Poller};

mod apply;
mod behind;
mod checkpoint;
mod commit;
mod recovery;
mod replay;
mod shared;

use crate::query::{View, Window, decode};
use crate::records::{self, Events};
use crate::registry::Registry;
use crate::store::Store;
use crate::tables::*;
use apply::{Entries, apply_one, corrupt, plan_group, plannable};
use behind::{Behind, Planned, Queue};
use loom_core::CompiledSelector;
use loom_core::split_subject;
use loom_core::{AppendOutcome, AppendRequest, AppendedEvent};
pub(crate) use replay::{ControlWork, ReplicatedGroup, replay};
pub(crate) use shared::SHARED_COMMIT_EVENTS;
use shared::Shared;

/// Most conflicting positions a DCB conflict reports.
pub(crate) const MAX_REPORTED_MATCHES: usize = 10;

/// The longest the writer polls for the next append before it sleeps (`crate::poll`): an
/// appender that was just acknowledged often sends its next append within tens of
/// microseconds.
const POLL_FOR_APPENDS: Duration = Duration::from_micros(300);

/// The most appends a group may hold for the appends queued behind it to be planned while it
/// syncs ([`behind`]). Small groups gain from it: their syncs run back to back, where the
/// writer's work between them would leave the disk idle. Larger groups gain more from growing:
/// the appends queued meanwhile wait and form one larger group, committed while its record
/// syncs, which costs the writer less per append (sixteen writers in process: groups of 12–15
/// appends instead of 8, about a third more events per second; docs/benchmarks/write-path.md,
/// "A group committed ahead of its sync").
const BEHIND_AT_MOST: usize = 4;

/// What the writer is asked to do.
// Appends are nearly all of it: boxing them to shrink the rare variants would cost every
// append an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Work {
    /// Decide and commit an append (grouped with the others queued).
    Append(Pending),
    /// Apply a group read from the replicated log (cluster mode, a follower).
    Replicated(ReplicatedGroup),
    /// Publish a control record and apply it (cluster mode, the sequencer).
    Control(ControlWork),
}

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

pub(crate) struct GroupCommit {
    pub(crate) store: Store,
    /// The opening of the database (`Store::opening`) the in-memory state below was loaded
    /// from.
    pub(crate) opening: u64,
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
    /// Cluster mode: the replicated log's sequence number of the last group applied.
    pub(crate) log_sequence: Arc<AtomicU64>,
    /// Cluster mode: the sequence of the last engine change kept for the engine.
    pub(crate) engine_inbox: Arc<Head>,
    /// Whether a group is committed ahead of its sync and not known to be synced
    /// ([`crate::store`]'s window is open): after a failure it is undone by a reopen.
    pub(crate) ahead: bool,
    /// The transaction of groups that are answered but not committed yet ([`Shared`]).
    pub(crate) shared: Option<Shared>,
    /// Whether the group being written took in a shared transaction's answered groups, so
    /// that its failure must restore them (a reopen).
    pub(crate) restore_shared: bool,
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
    /// What the last `records::store` left in the tail, while nothing else wrote `events` or
    /// `segments` since: the next group's store need not read the tail to find out.
    tail: Option<records::Tail>,
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
        self.tail = None;
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
            tail: None,
        })
    }
}

self_cell::self_cell!(
    /// A write transaction with the writer's tables open in it. Opening the nine tables and
    /// closing them again cost the writer about a sixth of a small group's time; a shared
    /// transaction ([`Shared`]) keeps them open for the groups after it.
    pub(crate) struct OpenTxn {
        owner: WriteTransaction,
        #[covariant]
        dependent: Tables,
    }
);

/// State of one group while it is being applied; becomes the writer's state on commit.
struct Group {
    head: u64,
    next_stream_id: u64,
    recorded: i64,
    buf: Vec<u8>,
    /// The registered entities, for matching DCB selectors (empty when no append has one).
    entities: Vec<String>,
    /// The group's log record, when it commits through the log.
    log: Option<GroupRecord>,
}

impl Group {
    /// A group starting after `head`, not logged (yet).
    fn new(head: u64, next_stream_id: u64, recorded: i64, entities: Vec<String>) -> Group {
        Group {
            head,
            next_stream_id,
            recorded,
            buf: Vec::with_capacity(512),
            entities,
            log: None,
        }
    }
}

impl GroupCommit {
    pub(crate) fn run(mut self, rx: Receiver<Work>) {
        let mut group: Vec<Pending> = Vec::new();
        let mut next = None;
        let mut arrivals = Poller::new(POLL_FOR_APPENDS);
        loop {
            // Answered groups stay uncommitted while more work comes: queued behind them, or
            // found while the writer polls for the next append, which it would do anyway (an
            // appender waiting for its answer sends its next append just after it). The
            // writer commits them before it sleeps, and as soon as someone waits for it.
            if self.shared.is_some() && next.is_none() {
                let store = &self.store;
                match arrivals.poll(&rx, || store.commit_wanted()) {
                    Polled::Got(work) => next = Some(work),
                    Polled::Stopped => self.settle(),
                    Polled::Idle(since) => {
                        self.settle();
                        next = arrivals.sleep(&rx, since);
                        if next.is_none() {
                            break;
                        }
                    }
                }
            }
            if self.shared.is_some() && self.store.commit_wanted() {
                self.settle();
            }
            let Some(work) = next.take().or_else(|| arrivals.recv(&rx)) else {
                break;
            };
            let first = match work {
                Work::Append(first) => first,
                Work::Replicated(replicated) => {
                    self.settle();
                    self.drained.notify(usize::MAX);
                    self.apply_replicated(replicated);
                    continue;
                }
                Work::Control(control) => {
                    self.settle();
                    self.drained.notify(usize::MAX);
                    self.commit_control(control);
                    continue;
                }
            };
            // A log with a largest message (a cluster's) takes groups below it; the local
            // write-ahead log has no such limit, and sizes are not counted for it.
            let max_bytes = self.wal.as_ref().and_then(|w| w.max_record_bytes());
            let size = |req: &AppendRequest| max_bytes.map_or(0, |_| request_size_bound(req));
            let mut events = first.req.events.len();
            let mut bytes = size(&first.req);
            group.push(first);
            while events < self.max_group_events {
                match rx.try_recv() {
                    Ok(Work::Append(p))
                        if max_bytes.is_some_and(|max| bytes + size(&p.req) > max) =>
                    {
                        next = Some(Work::Append(p));
                        break;
                    }
                    Ok(Work::Append(p)) => {
                        events += p.req.events.len();
                        bytes += size(&p.req);
                        group.push(p);
                    }
                    Ok(other) => {
                        next = Some(other);
                        break;
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            // Room in the queue again: wake appenders waiting for it.
            self.drained.notify(usize::MAX);
            self.commit_group(
                &mut group,
                &mut Queue {
                    rx: &rx,
                    next: &mut next,
                },
            );
        }
        self.settle();
        self.checkpoint_on_close();
    }

    /// Applies every pending append in one transaction and commits it. Returns each append's
    /// result and the new writer state; on error nothing was committed.
    // Long by design: the steps of one group commit in their required order (apply every
    // append, seal segments, make the group durable in the log, commit, note a checkpoint).
    fn apply_group(
        &mut self,
        group: &[Pending],
        planned: Option<Planned>,
        queue: &mut Queue<'_>,
        behind: &mut Option<Behind>,
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
        // Through the log unless it is time for a checkpoint (or there is no log); a
        // replicated log takes every group. The local log checkpoints between groups
        // ([`Self::checkpoint`]), so a shared transaction (only ever over the local log) is
        // never one; should it be, the answered groups are committed first.
        let checkpoint = self
            .wal
            .as_ref()
            .is_none_or(|w| w.wants_checkpoint() && w.deferral().is_none());
        if checkpoint {
            self.settle();
        }
        let replicated = self.wal.as_ref().and_then(|w| w.replicated());
        // Groups answered and not committed yet ride along in this transaction, its tables
        // still open; if it fails, the caller restores them by reopening the database.
        let (mut open, shared_groups, shared_events) = match self.shared.take() {
            Some(s) => {
                self.restore_shared = true;
                (s.open, s.groups, s.events)
            }
            None => {
                let mut txn = self.store.begin_write_own().map_err(|e| before(e.into()))?;
                txn.set_durability(if checkpoint {
                    Durability::Immediate
                } else {
                    Durability::None
                })
                .map_err(|e| before(e.into()))?;
                (
                    OpenTxn::try_new(txn, |txn| Tables::open(txn)).map_err(before)?,
                    0,
                    0,
                )
            }
        };
        // A group planned behind the last one brings its state, answers and record (and no
        // checkpoint is due while its record is in flight).
        let (mut state, carried) = match planned {
            Some(p) => (p.state, Some((p.results, p.record))),
            None => {
                let now = chrono::Utc::now().timestamp_micros();
                // Only a DCB condition's selector reads the entities; most groups have none.
                let entities = if group.iter().any(|p| p.condition.is_some()) {
                    self.registry
                        .read()
                        .expect("registry lock")
                        .entities
                        .keys()
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
                // Recorded times never go backwards, so the time index stays ordered.
                let recorded = now.max(self.last_recorded);
                let mut state =
                    Group::new(self.head.get(), self.next_stream_id, recorded, entities);
                if !checkpoint || replicated.is_some() {
                    state.log = Some(GroupRecord::new(state.head + 1, state.recorded));
                }
                (state, None)
            }
        };
        debug_assert!(carried.is_none() || !checkpoint);
        let mut results = Vec::with_capacity(group.len());
        let logging = |e: std::io::Error| Failure {
            error: StorageError(Box::new(redb::Error::Io(e))),
            committing: false,
            logging: true,
        };
        if replicated.is_none()
            && (carried.is_some() || (state.log.is_some() && plannable(group)))
            && let Some(wal) = self.wal.as_mut()
        {
            // The group's record is made durable while its events are written from it,
            // instead of after.
            let (log, begun) = match carried {
                Some((planned_results, record)) => {
                    results = planned_results;
                    (record, true)
                }
                None => {
                    results = open
                        .with_dependent_mut(|_, t| plan_group(t, &mut state, group))
                        .map_err(before)?;
                    let mut log = state.log.take().expect("checked above");
                    if !log.is_empty() {
                        log.finish(state.next_stream_id);
                    }
                    (log, false)
                }
            };
            if !log.is_empty() {
                if !begun {
                    wal.begin(&log).map_err(logging)?;
                }
                let stream_ids_moved = state.next_stream_id != self.next_stream_id;
                let applied = open.with_dependent_mut(|_, t| {
                    let groups = crate::log::group::groups(log.bytes());
                    let [logged] = groups.as_slice() else {
                        return Err(StorageError(Box::new(redb::Error::Corrupted(
                            "a group's log record did not read back as itself".into(),
                        ))));
                    };
                    replay::index_logged(t, logged, "group", self.segment_events)?;
                    t.time_index.insert(state.recorded, state.head)?;
                    if stream_ids_moved {
                        t.meta.insert(META_NEXT_STREAM_ID, state.next_stream_id)?;
                    }
                    Ok(())
                });
                // While the record syncs: the appends queued meanwhile, planned on this
                // group's tables, their record handed over behind this one — while groups
                // are small ([`BEHIND_AT_MOST`]).
                if applied.is_ok() && wal.may_begin_behind() && group.len() <= BEHIND_AT_MOST {
                    let next = behind::take(queue, self.max_group_events);
                    if !next.is_empty() {
                        self.drained.notify(usize::MAX);
                        *behind = Some(open.with_dependent_mut(|_, t| {
                            behind::plan(t, &state, next, wal.as_mut())
                        }));
                    }
                }
                let own_events = group.iter().map(|p| p.req.events.len()).sum::<usize>();
                if applied.is_ok()
                    && wal.deferral().is_some()
                    && own_events <= SHARED_COMMIT_EVENTS
                    && !self.store.commit_wanted()
                {
                    // Answered once its record is synced, committed with the groups after it.
                    wal.finish(true).map_err(logging)?;
                    self.shared = Some(Shared {
                        open,
                        groups: shared_groups + 1,
                        events: shared_events + own_events,
                    });
                    self.stats
                        .groups_sharing_a_commit
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.restore_shared = false;
                    return Ok((results, state));
                }
                if applied.is_ok()
                    && behind.is_none()
                    && shared_groups == 0
                    && wal.deferral().is_some()
                    && self.store.open_window()
                {
                    // Committed while the record syncs; until the sync is done nobody else
                    // sees it ([`crate::store`]), and if the sync fails, a reopen undoes it.
                    self.ahead = true;
                    open.into_owner().commit().map_err(|e| Failure {
                        error: e.into(),
                        committing: true,
                        logging: false,
                    })?;
                    wal.finish(true).map_err(logging)?;
                    self.ahead = false;
                    self.store.close_window();
                    self.store.committed(state.head);
                    return Ok((results, state));
                }
                wal.finish(applied.is_ok()).map_err(logging)?;
                applied.map_err(before)?;
            }
        } else {
            let applied = open.with_dependent_mut(|_, t| {
                let start_head = state.head;
                for pending in group {
                    results.push(apply_one(t, &mut state, pending)?);
                }
                if state.head > start_head {
                    t.time_index.insert(state.recorded, state.head)?;
                    t.seal(state.head - start_head, self.segment_events)?;
                    if let Some(sequence) = replicated {
                        t.meta.insert(META_LOG_SEQUENCE, sequence)?;
                    }
                }
                if state.next_stream_id != self.next_stream_id {
                    t.meta.insert(META_NEXT_STREAM_ID, state.next_stream_id)?;
                }
                Ok::<(), StorageError>(())
            });
            applied.map_err(before)?;
            if let (Some(log), Some(wal)) = (state.log.as_mut(), self.wal.as_mut())
                && !log.is_empty()
            {
                log.finish(state.next_stream_id);
                // Durable from here on: a crash before the commit below replays the record.
                wal.append(log).map_err(logging)?;
            }
        }
        let committing = Instant::now();
        open.into_owner().commit().map_err(|e| Failure {
            error: e.into(),
            committing: true,
            logging: false,
        })?;
        self.restore_shared = false;
        self.store.committed(state.head);
        if let Some(sequence) = replicated
            && state.head > self.head.get()
        {
            self.log_sequence
                .store(sequence, std::sync::atomic::Ordering::Release);
        }
        if checkpoint && let Some(wal) = self.wal.as_mut() {
            wal.checkpointed();
            self.stats
                .record_checkpoint(committing.elapsed().as_micros() as u64);
        }
        Ok((results, state))
    }
}

/// At least the bytes a request's events take in a group record (plus the record's header).
pub(crate) fn request_size_bound(req: &AppendRequest) -> usize {
    64 + req
        .events
        .iter()
        .map(crate::log::group::record_size_bound)
        .sum::<usize>()
}

/// The attributes an event is indexed by.
struct Keys<'a> {
    source: &'a str,
    id: &'a str,
    subject: &'a str,
    ty: &'a str,
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
