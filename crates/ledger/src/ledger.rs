//! The [`Ledger`]: opening, appending through the group-commit writer, reading.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadTransaction, ReadableTable, ReadableTableMetadata, StorageBackend};

use crate::catalog::Catalog;
use crate::error::{AppendError, InvalidEvent, OpenError, ReadError, RegistryError, StorageError};
use crate::head::Head;
use crate::log::DurableLog;
use crate::log::wal::{RESERVE_FILE, Reserve, WAL_FILE, Wal, WalFile};
use crate::query::{View, Window, decode};
use crate::records::{self, Events};
use crate::registry::{CompiledEntity, Registry};
use crate::store::Store;
use crate::tables::*;
use crate::view::{EventBatch, EventRecord};
use crate::writer::{self, Pending, Precheck, Writer};
use loom_core::EventView;
use loom_core::StoredEvent;
use loom_core::{AppendOutcome, AppendRequest, EntitySpec, check_entity_name, split_subject};
use loom_core::{CompiledSelector, Selector};

/// Tuning of a ledger.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    /// Most events one group commit takes from the queue.
    pub max_group_events: usize,
    /// Pending appends the queue holds before callers wait (back-pressure).
    pub queue_capacity: usize,
    /// redb page cache size in bytes.
    pub cache_bytes: usize,
    /// How much write-ahead log (bytes) is written before a group commits durably to the redb
    /// file itself and the log starts over (docs/design.md, "Write-ahead log"). Larger means
    /// fewer checkpoints and a longer replay after a crash.
    pub wal_checkpoint_bytes: u64,
    /// Most events packed into one segment of the stored history (docs/design.md,
    /// "Segments"); a segment also ends before it would pass 16 KiB. Lower values make scans
    /// slower and exist for tests of segment boundaries.
    pub segment_events: usize,
}

impl LedgerOptions {
    /// Disk space kept allocated beside the log (`ledger.reserve`) so that replaying the log
    /// finds room in the redb file even on a full disk: four times the checkpoint interval,
    /// at least 256 KiB.
    pub fn wal_reserve_bytes(&self) -> u64 {
        self.wal_checkpoint_bytes.saturating_mul(4).max(256 << 10)
    }

    /// [`LedgerOptions::segment_events`], at least 1.
    fn segment_events(&self) -> usize {
        self.segment_events.clamp(1, records::SEGMENT_EVENTS_MAX)
    }
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            max_group_events: 20_000,
            queue_capacity: 8_192,
            cache_bytes: 256 * 1024 * 1024,
            wal_checkpoint_bytes: 4 * 1024 * 1024,
            segment_events: records::SEGMENT_EVENTS,
        }
    }
}

/// Counters of the writer, for metrics.
#[derive(Debug, Default)]
pub struct LedgerStats {
    /// Group commits done (each durable: in the write-ahead log, or in the database file at a
    /// checkpoint).
    pub commits: AtomicU64,
    /// Appends acknowledged (including idempotent duplicates).
    pub appends: AtomicU64,
    /// Appends refused (conditions, identity).
    pub conflicts: AtomicU64,
    /// Events written.
    pub events: AtomicU64,
    /// Commit latency histogram: counts per bucket of [`LedgerStats::COMMIT_BUCKETS_MICROS`],
    /// the last slot counting everything slower.
    pub commit_micros: [AtomicU64; 13],
    /// Sum of commit latencies, microseconds.
    pub commit_micros_sum: AtomicU64,
    /// Times an async append found the queue full and waited for room (back-pressure).
    pub queue_full_waits: AtomicU64,
    /// Write-ahead log checkpoints: group commits made durable in the database file itself,
    /// after which the log started over.
    pub checkpoints: AtomicU64,
}

impl LedgerStats {
    /// Upper bounds (inclusive, µs) of the commit latency buckets.
    pub const COMMIT_BUCKETS_MICROS: [u64; 12] = [
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    ];

    pub(crate) fn record_commit(&self, micros: u64) {
        let slot = Self::COMMIT_BUCKETS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(Self::COMMIT_BUCKETS_MICROS.len());
        self.commit_micros[slot].fetch_add(1, Ordering::Relaxed);
        self.commit_micros_sum.fetch_add(micros, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Options of a read by position or selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    /// Only positions greater than this (forwards: where to start).
    pub after: u64,
    /// Only positions smaller than this (backwards: where to start); `None`: no bound.
    pub before: Option<u64>,
    /// Most events to return.
    pub limit: usize,
    /// Newest first.
    pub backwards: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            after: 0,
            before: None,
            limit: 1000,
            backwards: false,
        }
    }
}

impl ReadOptions {
    /// Forwards from `after`, at most `limit`.
    pub fn after(after: u64, limit: usize) -> ReadOptions {
        ReadOptions {
            after,
            limit,
            ..ReadOptions::default()
        }
    }

    fn window(&self) -> Window {
        Window {
            after: self.after,
            before: self.before.unwrap_or(u64::MAX),
            limit: self.limit,
            backwards: self.backwards,
        }
    }
}

/// The durable event ledger. Share it with `Arc`; every method takes `&self`.
pub struct Ledger {
    store: Store,
    path: PathBuf,
    head: Arc<Head>,
    registry: Arc<RwLock<Arc<Registry>>>,
    stats: Arc<LedgerStats>,
    queue: Mutex<Option<std::sync::mpsc::SyncSender<Pending>>>,
    /// Notified each time the writer takes a group off the queue.
    drained: Arc<event_listener::Event>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("head", &self.head.get())
            .finish_non_exhaustive()
    }
}

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "ledger.redb";

impl Ledger {
    /// Opens (creating if needed) the ledger in data directory `dir`.
    pub fn open(dir: impl AsRef<Path>, options: LedgerOptions) -> Result<Ledger, OpenError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let file = path.clone();
        let wal = dir.join(WAL_FILE);
        let log = wal.clone();
        let cache = options.cache_bytes;
        let segment_events = options.segment_events();
        // Every open (this one, and reopens after an I/O error) replays the write-ahead log
        // before the database is used; the first one says where the log goes on.
        let first = Arc::new(Mutex::new(None));
        let replayed = first.clone();
        let reserve = Arc::new(Reserve::new(
            dir.join(RESERVE_FILE),
            options.wal_reserve_bytes(),
        ));
        let spare = reserve.clone();
        let store = Store::open(move || {
            let (db, end) = open_replayed(cache, segment_events, &file, &log, &spare)?;
            let mut first = replayed.lock().unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert(end);
            Ok(db)
        });
        let end = first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(0);
        Self::start(store, path, Some((wal, end, reserve)), options)
    }

    /// Opens (creating if needed) a ledger on a custom redb storage backend, for tests that
    /// inject storage failures. Every reopen after an I/O error (see docs/design.md, "Crash
    /// behaviour") opens the database again on a clone of `backend`, so clones must share the
    /// underlying storage.
    #[doc(hidden)]
    pub fn open_with_backend<B: StorageBackend + Clone>(
        backend: B,
        options: LedgerOptions,
    ) -> Result<Ledger, OpenError> {
        let cache = options.cache_bytes;
        let store = Store::open(move || {
            Database::builder()
                .set_cache_size(cache)
                .create_with_backend(backend.clone())
        });
        // No write-ahead log here: every group commits durably to the backend itself.
        Self::start(
            store,
            PathBuf::from("<custom storage backend>"),
            None,
            options,
        )
    }

    fn start(
        store: Result<Store, redb::DatabaseError>,
        path: PathBuf,
        wal: Option<(PathBuf, u64, Arc<Reserve>)>,
        options: LedgerOptions,
    ) -> Result<Ledger, OpenError> {
        let shown = path.display().to_string();
        let db_err = |e: StorageError| OpenError::Database {
            path: shown.clone(),
            source: e,
        };
        let store = store.map_err(|e| db_err(e.into()))?;
        let loaded = Self::init(&store, options.segment_events())
            .and_then(|()| load(&store))
            .map_err(|e| match e {
                InitError::Storage(e) => db_err(e),
                InitError::Corrupt(message) => OpenError::Corrupt {
                    path: shown.clone(),
                    message,
                },
            })?;
        let head = Arc::new(Head::new(loaded.head));
        let registry = Arc::new(RwLock::new(Arc::new(loaded.registry)));
        let stats = Arc::new(LedgerStats::default());
        let (tx, rx) = std::sync::mpsc::sync_channel(options.queue_capacity.max(1));
        let drained = Arc::new(event_listener::Event::new());
        let wal = match wal {
            Some((p, end, reserve)) => Some(Box::new(
                Wal::open(&p, end, options.wal_checkpoint_bytes, reserve).map_err(|source| {
                    OpenError::Io {
                        path: p.display().to_string(),
                        source,
                    }
                })?,
            ) as Box<dyn DurableLog>),
            None => None,
        };
        let writer = Writer {
            wal,
            drained: drained.clone(),
            generation: store.generation(),
            store: store.clone(),
            head: head.clone(),
            registry: registry.clone(),
            stats: stats.clone(),
            next_stream_id: loaded.next_stream_id,
            last_recorded: loaded.last_recorded,
            max_group_events: options.max_group_events.max(1),
            segment_events: options.segment_events(),
        };
        let handle = std::thread::Builder::new()
            .name("loom-ledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| OpenError::Io {
                path: shown.clone(),
                source,
            })?;
        Ok(Ledger {
            store,
            path,
            head,
            registry,
            stats,
            queue: Mutex::new(Some(tx)),
            drained,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Creates the tables if missing and checks the on-disk format.
    fn init(store: &Store, segment_events: usize) -> Result<(), InitError> {
        let txn = store.begin_write().map_err(StorageError::from)?;
        let mut upgrade = false;
        {
            let mut meta = txn.open_table(META).map_err(StorageError::from)?;
            let format = meta
                .get(META_FORMAT)
                .map_err(StorageError::from)?
                .map(|v| v.value());
            match format {
                None => {
                    meta.insert(META_FORMAT, FORMAT_VERSION)
                        .map_err(StorageError::from)?;
                }
                Some(old) if FORMATS_BEFORE.contains(&old) => {
                    upgrade = true;
                    meta.insert(META_FORMAT, FORMAT_VERSION)
                        .map_err(StorageError::from)?;
                }
                Some(FORMAT_VERSION) => {}
                Some(other) => {
                    return Err(InitError::Corrupt(format!(
                        "on-disk format {other} is not supported by this build (format \
                         {FORMAT_VERSION})"
                    )));
                }
            }
            txn.open_table(EVENTS).map_err(StorageError::from)?;
            txn.open_table(SEGMENTS).map_err(StorageError::from)?;
            txn.open_table(STREAMS).map_err(StorageError::from)?;
            txn.open_table(IDS).map_err(StorageError::from)?;
            txn.open_table(STREAM_INDEX).map_err(StorageError::from)?;
            txn.open_table(ENTITY_INDEX).map_err(StorageError::from)?;
            txn.open_table(TYPE_INDEX).map_err(StorageError::from)?;
            txn.open_table(TIME_INDEX).map_err(StorageError::from)?;
            txn.open_table(ENTITIES).map_err(StorageError::from)?;
            for table in CATALOG_TABLES {
                txn.open_table(named(table)).map_err(StorageError::from)?;
            }
            txn.open_table(PROJECTION_STATES)
                .map_err(StorageError::from)?;
            txn.open_table(PROJECTION_CHECKPOINTS)
                .map_err(StorageError::from)?;
            txn.open_table(REACTOR_CHECKPOINTS)
                .map_err(StorageError::from)?;
        }
        txn.commit().map_err(StorageError::from)?;
        if upgrade {
            // Formats before 3 keep every event in the tail: pack them into segments now, a
            // bounded transaction at a time (the format says 3 already, so a build that would
            // not read segments refuses this file even if the packing is cut short; the rest
            // is packed on the next open, or by the writer as it goes).
            let started = std::time::Instant::now();
            let mut moved = 0;
            loop {
                let txn = store.begin_write().map_err(StorageError::from)?;
                let n = {
                    let mut tail = txn.open_table(EVENTS).map_err(StorageError::from)?;
                    let mut segments = txn.open_table(SEGMENTS).map_err(StorageError::from)?;
                    records::seal(&mut tail, &mut segments, 1024, segment_events)
                        .map_err(InitError::from_read)?
                };
                txn.commit().map_err(StorageError::from)?;
                moved += n;
                if n == 0 {
                    break;
                }
            }
            tracing::info!(
                events = moved,
                seconds = started.elapsed().as_secs_f64(),
                "upgraded the on-disk format: packed the stored events into segments"
            );
        }
        Ok(())
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine's tables in the same database (see [`Catalog`]).
    pub fn catalog(&self) -> Catalog {
        Catalog::new(self.store.clone())
    }

    /// Writer counters.
    pub fn stats(&self) -> &LedgerStats {
        &self.stats
    }

    /// Position of the last committed event (0: empty ledger).
    pub fn head(&self) -> u64 {
        self.head.get()
    }

    /// Blocks until the head reaches `position` or `timeout` passes; returns the head then.
    pub fn wait_for(&self, position: u64, timeout: Duration) -> u64 {
        self.head.wait_for(position, timeout)
    }

    /// Waits until the head reaches `position`; returns the head then. Runtime-agnostic.
    pub async fn wait_for_async(&self, position: u64) -> u64 {
        self.head.wait_for_async(position).await
    }

    // ----- appending -----

    /// Checks an append against the event model and the registry, before it is queued.
    fn prepare(
        &self,
        req: AppendRequest,
    ) -> Result<(AppendRequest, Option<(CompiledSelector, Precheck)>), AppendError> {
        if req.events.is_empty() {
            return Err(AppendError::Invalid(InvalidEvent::new(
                "an append needs at least one event",
            )));
        }
        let registry = self.registry.read().expect("registry lock").clone();
        let mut identities = HashSet::with_capacity(req.events.len());
        for (i, e) in req.events.iter().enumerate() {
            e.validate()
                .map_err(|err| AppendError::Invalid(err.at_index(i)))?;
            if !identities.insert((e.source.as_str(), e.id.as_str())) {
                return Err(AppendError::Invalid(
                    InvalidEvent::new(format!(
                        "(source {:?}, id {:?}) appears twice in the batch",
                        e.source, e.id
                    ))
                    .at_index(i),
                ));
            }
            registry.check(i, e).map_err(AppendError::Rejected)?;
        }
        for subject in req.conditions.expected_revisions.keys() {
            if split_subject(subject).is_none() {
                return Err(AppendError::Invalid(InvalidEvent::new(format!(
                    "expected_revisions names {subject:?}, which is not a stream \
                     (\"{{entity}}/{{key}}\")"
                ))));
            }
        }
        let selector = req
            .conditions
            .fail_if_events_match
            .as_ref()
            .map(Selector::compile)
            .transpose()?;
        let condition = match selector {
            Some(selector) => {
                let checked = self.precheck(&req, &selector)?;
                Some((selector, checked))
            }
            None => None,
        };
        Ok((req, condition))
    }

    /// Evaluates the DCB condition (`fail_if_events_match`) against a snapshot, on the
    /// calling thread, so that the writer — which every append waits for — only looks at
    /// the events committed after it. History does not change: what matches up to the
    /// snapshot's head matches there for good. The writer still decides, in the usual order
    /// (identity, expected revisions, then the condition), with these matches in hand.
    fn precheck(
        &self,
        req: &AppendRequest,
        selector: &CompiledSelector,
    ) -> Result<Precheck, AppendError> {
        let after = req.conditions.after.unwrap_or(0);
        let entities = self.entity_names();
        self.with_view(|v| {
            let head = v.events.head()?;
            let window = Window {
                after,
                before: head.saturating_add(1),
                limit: writer::MAX_REPORTED_MATCHES,
                backwards: false,
            };
            let found = v.select(selector, window, &entities)?;
            Ok(Precheck {
                through: head.max(after),
                matched: found.iter().map(|e| e.position).collect(),
            })
        })
        .map_err(append_error)
    }

    fn sender(&self) -> Result<std::sync::mpsc::SyncSender<Pending>, AppendError> {
        self.queue
            .lock()
            .expect("queue lock")
            .clone()
            .ok_or(AppendError::Closed)
    }

    /// Queues an append, blocking while the queue is full.
    fn enqueue(&self, pending: Pending) -> Result<(), AppendError> {
        use std::sync::mpsc::TrySendError;
        let queue = self.sender()?;
        match queue.try_send(pending) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(AppendError::Closed),
            Err(TrySendError::Full(p)) => {
                self.stats.queue_full_waits.fetch_add(1, Ordering::Relaxed);
                queue.send(p).map_err(|_| AppendError::Closed)
            }
        }
    }

    /// Queues an append; while the queue is full, waits (asynchronously) for the writer to
    /// drain it instead of blocking the calling thread.
    async fn enqueue_async(&self, mut pending: Pending) -> Result<(), AppendError> {
        use std::sync::mpsc::TrySendError;
        let queue = self.sender()?;
        loop {
            match queue.try_send(pending) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(AppendError::Closed),
                Err(TrySendError::Full(p)) => {
                    let listener = self.drained.listen();
                    match queue.try_send(p) {
                        Ok(()) => return Ok(()),
                        Err(TrySendError::Disconnected(_)) => return Err(AppendError::Closed),
                        Err(TrySendError::Full(p)) => {
                            pending = p;
                            self.stats.queue_full_waits.fetch_add(1, Ordering::Relaxed);
                            listener.await;
                        }
                    }
                }
            }
        }
    }

    /// Appends atomically; returns once the batch is durable (or refused). Blocking.
    pub fn append(&self, req: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let (req, condition) = self.prepare(req)?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(Pending {
            req,
            condition,
            reply: tx,
        })?;
        rx.recv().unwrap_or(Err(AppendError::Closed))
    }

    /// Appends atomically; resolves once the batch is durable (or refused). The validation
    /// runs on the calling thread; the commit on the writer thread. Runtime-agnostic; when the
    /// queue is full (back-pressure) it waits without blocking the thread. A
    /// `fail_if_events_match` condition is evaluated on the calling thread against a snapshot
    /// and may read much of the ledger: append such requests with [`Ledger::append`] from a
    /// thread that may block.
    pub async fn append_async(&self, req: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let (req, condition) = self.prepare(req)?;
        let (tx, rx) = oneshot::async_channel();
        self.enqueue_async(Pending {
            req,
            condition,
            reply: tx,
        })
        .await?;
        rx.await.unwrap_or(Err(AppendError::Closed))
    }

    // ----- registry -----

    /// Registers or replaces an entity's registration. Schemas are compiled first; an invalid
    /// one changes nothing.
    pub fn put_entity(&self, name: &str, spec: EntitySpec) -> Result<(), RegistryError> {
        check_entity_name(name).map_err(RegistryError::InvalidName)?;
        let compiled = Arc::new(CompiledEntity::compile(spec)?);
        let bytes = serde_json::to_vec(&compiled.spec).expect("a spec always serializes");
        let txn = self.store.begin_write().map_err(StorageError::from)?;
        {
            let mut t = txn.open_table(ENTITIES).map_err(StorageError::from)?;
            t.insert(name, bytes.as_slice())
                .map_err(StorageError::from)?;
        }
        // Registry writes are rare and small: hold the lock over the commit so that readers
        // never see a registration that is not durable.
        let mut guard = self.registry.write().expect("registry lock");
        txn.commit().map_err(StorageError::from)?;
        let mut next = Registry::clone(&guard);
        next.entities.insert(name.to_owned(), compiled);
        *guard = Arc::new(next);
        Ok(())
    }

    /// An entity's registration.
    pub fn entity(&self, name: &str) -> Option<EntitySpec> {
        let r = self.registry.read().expect("registry lock");
        r.entities.get(name).map(|c| c.spec.clone())
    }

    /// Every registration, by name.
    pub fn entities(&self) -> BTreeMap<String, EntitySpec> {
        let r = self.registry.read().expect("registry lock");
        r.entities
            .iter()
            .map(|(k, v)| (k.clone(), v.spec.clone()))
            .collect()
    }

    fn entity_names(&self) -> Vec<String> {
        let r = self.registry.read().expect("registry lock");
        r.entities.keys().cloned().collect()
    }

    // ----- reading -----

    fn read_txn(&self) -> Result<ReadTransaction, StorageError> {
        Ok(self.store.begin_read()?)
    }

    /// Runs `f` with a view of the index tables in one read transaction (one snapshot).
    fn with_view<R>(
        &self,
        f: impl FnOnce(
            &View<
                '_,
                redb::ReadOnlyTable<u64, &'static [u8]>,
                redb::ReadOnlyTable<u64, &'static [u8]>,
                redb::ReadOnlyTable<&'static str, (u64, u64)>,
                redb::ReadOnlyTable<(u64, u64), u64>,
                redb::ReadOnlyTable<(&'static str, u64), ()>,
                redb::ReadOnlyTable<(&'static str, &'static str, u64), ()>,
            >,
        ) -> Result<R, ReadError>,
    ) -> Result<R, ReadError> {
        let txn = self.read_txn()?;
        let tail = txn.open_table(EVENTS)?;
        let segments = txn.open_table(SEGMENTS)?;
        let streams = txn.open_table(STREAMS)?;
        let stream_index = txn.open_table(STREAM_INDEX)?;
        let entity_index = txn.open_table(ENTITY_INDEX)?;
        let type_index = txn.open_table(TYPE_INDEX)?;
        f(&View {
            events: Events {
                tail: &tail,
                segments: &segments,
            },
            streams: &streams,
            stream_index: &stream_index,
            entity_index: &entity_index,
            type_index: &type_index,
        })
    }

    /// Events by position, in either direction.
    pub fn read_all(&self, opts: ReadOptions) -> Result<Vec<StoredEvent>, ReadError> {
        self.read(&Selector::all().compile()?, opts)
    }

    /// Events matching a selector, in either direction, using indexes where the selector
    /// names entity, keys or types.
    pub fn read(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| v.select(selector, opts.window(), &entities))
    }

    /// Like [`Ledger::read`], but the events come as raw records in one buffer, viewed
    /// without allocating per event: the fast path for long reads (catch-up, replays).
    pub fn read_batch(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
    ) -> Result<EventBatch, ReadError> {
        let mut batch = EventBatch::default();
        self.read_batch_into(selector, opts, &mut batch)?;
        Ok(batch)
    }

    /// [`Ledger::read_batch`] into `batch`, which is emptied first and keeps its buffers: a
    /// loop reading batch after batch (catch-up) allocates once.
    pub fn read_batch_into(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
        batch: &mut EventBatch,
    ) -> Result<(), ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| v.select_batch(selector, opts.window(), &entities, &mut *batch))
    }

    /// Calls `f` on each event matching `selector` in `opts`' window, in one snapshot, until
    /// `f` returns `false`. For long reads (catch-up) without building a vector.
    pub fn scan(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
        f: impl FnMut(StoredEvent) -> bool,
    ) -> Result<(), ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| v.select_each(selector, opts.window(), &entities, f))
    }

    /// Calls `f` with a view of each event matching `selector` in `opts`' window, in one
    /// snapshot, until `f` returns `false`. The views borrow the stored records (nothing is
    /// copied or allocated per event; every record is checked before `f` sees it), so `f`
    /// must not keep them: the fastest way to fold over a long history in Rust. Keep `f`
    /// short — the read transaction stays open while it runs.
    pub fn scan_views(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
        f: impl FnMut(&EventView<'_>) -> bool,
    ) -> Result<(), ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| v.select_views(selector, opts.window(), &entities, f))
    }

    /// Like [`Ledger::scan_views`], with each event's record read lazily: an attribute is
    /// checked only when `f` asks for it (see [`EventRecord`]). For folds that read a few
    /// attributes of many events, such as counts and sums over the data.
    pub fn scan_records(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
        f: impl FnMut(&EventRecord<'_>) -> bool,
    ) -> Result<(), ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| v.select_lazy(selector, opts.window(), &entities, f))
    }

    /// One stream's events by revision: revisions greater than `after_revision`, at most
    /// `limit`.
    pub fn read_stream(
        &self,
        subject: &str,
        after_revision: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let txn = self.read_txn()?;
        let streams = txn.open_table(STREAMS)?;
        let Some(stream) = streams.get(subject)? else {
            return Ok(Vec::new());
        };
        let (id, _) = stream.value();
        let index = txn.open_table(STREAM_INDEX)?;
        let (tail, segments) = (txn.open_table(EVENTS)?, txn.open_table(SEGMENTS)?);
        let events = Events {
            tail: &tail,
            segments: &segments,
        };
        let mut out = Vec::new();
        let start = after_revision.saturating_add(1);
        for item in index.range((id, start)..=(id, u64::MAX))?.take(limit) {
            let (_, p) = item?;
            let position = p.value();
            let Some(e) = events.with(position, |bytes| decode(position, bytes))? else {
                return Err(ReadError::Corrupt {
                    position,
                    message: "the stream index names a position with no event".into(),
                });
            };
            out.push(e);
        }
        Ok(out)
    }

    /// A stream's current revision (0: no such stream). One index lookup.
    pub fn stream_revision(&self, subject: &str) -> Result<u64, ReadError> {
        let txn = self.read_txn()?;
        let streams = txn.open_table(STREAMS)?;
        Ok(streams.get(subject)?.map_or(0, |v| v.value().1))
    }

    /// The event at `position`.
    pub fn event_at(&self, position: u64) -> Result<Option<StoredEvent>, ReadError> {
        let txn = self.read_txn()?;
        let (tail, segments) = (txn.open_table(EVENTS)?, txn.open_table(SEGMENTS)?);
        Events {
            tail: &tail,
            segments: &segments,
        }
        .with(position, |bytes| decode(position, bytes))
    }

    /// The event with identity `(source, id)`.
    pub fn event_by_id(&self, source: &str, id: &str) -> Result<Option<StoredEvent>, ReadError> {
        let txn = self.read_txn()?;
        let ids = txn.open_table(IDS)?;
        let Some(p) = ids.get((source, id))? else {
            return Ok(None);
        };
        let position = p.value();
        let (tail, segments) = (txn.open_table(EVENTS)?, txn.open_table(SEGMENTS)?);
        let events = Events {
            tail: &tail,
            segments: &segments,
        };
        match events.with(position, |bytes| decode(position, bytes))? {
            None => Err(ReadError::Corrupt {
                position,
                message: "the identity index names a position with no event".into(),
            }),
            Some(e) => Ok(Some(e)),
        }
    }

    /// The last position recorded at or before `micros` (µs since the Unix epoch); 0 if none.
    pub fn position_at_time(&self, micros: i64) -> Result<u64, ReadError> {
        let txn = self.read_txn()?;
        let t = txn.open_table(TIME_INDEX)?;
        let last = t.range(..=micros)?.next_back().transpose()?;
        Ok(last.map_or(0, |(_, p)| p.value()))
    }

    /// Number of streams and events, for status pages.
    pub fn counts(&self) -> Result<(u64, u64), ReadError> {
        let txn = self.read_txn()?;
        let streams = txn.open_table(STREAMS)?.len()?;
        // Positions are gapless from 1: the last one is the number of events.
        let (tail, segments) = (txn.open_table(EVENTS)?, txn.open_table(SEGMENTS)?);
        let events = Events {
            tail: &tail,
            segments: &segments,
        }
        .head()?;
        Ok((streams, events))
    }

    /// Stops taking appends, lets the writer finish what is queued, and waits for it.
    pub fn shutdown(&self) {
        self.queue.lock().expect("queue lock").take();
        if let Some(handle) = self.writer.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Opens the database file and replays the write-ahead log into it — into the reserved space
/// if the disk is full (see `wal`). Returns the database and where the log goes on.
fn open_replayed(
    cache: usize,
    segment_events: usize,
    file: &Path,
    log: &Path,
    reserve: &Reserve,
) -> Result<(Database, u64), redb::DatabaseError> {
    let open = || Database::builder().set_cache_size(cache).create(file);
    let mut db = open()?;
    let mut result = writer::replay(&db, &WalFile(log), segment_events);
    if let Err(e) = &result
        && e.is_disk_full()
        && reserve.release()
    {
        // What the reserve is for. The failed database must be opened again first.
        tracing::warn!("the disk is full: replaying the write-ahead log into the reserved space");
        drop(db);
        db = open()?;
        result = writer::replay(&db, &WalFile(log), segment_events);
    }
    match result {
        Ok(r) => {
            if r.events > 0 {
                tracing::info!(events = r.events, "replayed from the write-ahead log");
            }
            Ok((db, r.end))
        }
        Err(e) => Err(redb::DatabaseError::Storage(match *e.0 {
            redb::Error::Io(io) => redb::StorageError::Io(io),
            other => redb::StorageError::Corrupted(other.to_string()),
        })),
    }
}

pub(crate) enum InitError {
    Storage(StorageError),
    Corrupt(String),
}

impl InitError {
    pub(crate) fn from_read(e: ReadError) -> InitError {
        match e {
            ReadError::Storage(e) => InitError::Storage(e),
            other => InitError::Corrupt(other.to_string()),
        }
    }

    pub(crate) fn into_storage(self) -> StorageError {
        match self {
            InitError::Storage(e) => e,
            InitError::Corrupt(message) => StorageError(Box::new(redb::Error::Corrupted(message))),
        }
    }
}

/// What the writer and the registry keep in memory, as read from the database.
pub(crate) struct Loaded {
    pub(crate) head: u64,
    pub(crate) registry: Registry,
    pub(crate) next_stream_id: u64,
    pub(crate) last_recorded: i64,
}

/// Reads head, registry and counters in one snapshot (at open, and after a reopen).
pub(crate) fn load(store: &Store) -> Result<Loaded, InitError> {
    let txn = store.begin_read().map_err(StorageError::from)?;
    let meta = txn.open_table(META).map_err(StorageError::from)?;
    let next_stream_id = meta
        .get(META_NEXT_STREAM_ID)
        .map_err(StorageError::from)?
        .map_or(1, |v| v.value());
    let tail = txn.open_table(EVENTS).map_err(StorageError::from)?;
    let segments = txn.open_table(SEGMENTS).map_err(StorageError::from)?;
    let head = Events {
        tail: &tail,
        segments: &segments,
    }
    .head()
    .map_err(InitError::from_read)?;
    let time = txn.open_table(TIME_INDEX).map_err(StorageError::from)?;
    let last_recorded = time
        .last()
        .map_err(StorageError::from)?
        .map_or(0, |(k, _)| k.value());
    let entities = txn.open_table(ENTITIES).map_err(StorageError::from)?;
    let mut registry = Registry::default();
    for item in entities.iter().map_err(StorageError::from)? {
        let (k, v) = item.map_err(StorageError::from)?;
        let name = k.value().to_owned();
        let spec: EntitySpec = serde_json::from_slice(v.value())
            .map_err(|e| InitError::Corrupt(format!("registration of entity {name:?}: {e}")))?;
        let compiled = CompiledEntity::compile(spec)
            .map_err(|e| InitError::Corrupt(format!("registration of entity {name:?}: {e}")))?;
        registry.entities.insert(name, Arc::new(compiled));
    }
    Ok(Loaded {
        head,
        registry,
        next_stream_id,
        last_recorded,
    })
}

impl From<StorageError> for InitError {
    fn from(e: StorageError) -> Self {
        InitError::Storage(e)
    }
}

/// A read's failure, answering an append.
fn append_error(e: ReadError) -> AppendError {
    match e {
        ReadError::Storage(e) => AppendError::Storage(e),
        ReadError::Selector(e) => AppendError::Selector(e),
        ReadError::Corrupt { position, message } => {
            AppendError::Storage(StorageError(Box::new(redb::Error::Corrupted(format!(
                "stored event at position {position} is unreadable: {message}"
            )))))
        }
    }
}
