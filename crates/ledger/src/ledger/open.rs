//! Opening a ledger: the database with its log replayed, the format checked or upgraded,
//! the in-memory state loaded, the writer started.

use super::*;

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
        let wal = WAL_FILES.map(|name| dir.join(name));
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
        let deferral = Arc::new(Deferral::default());
        let deferring = deferral.clone();
        let store = Store::open(move || {
            let (db, end) = open_replayed(cache, segment_events, &file, &log, &spare, &deferring)?;
            let mut first = replayed.lock().unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert(end);
            Ok(db)
        });
        let end = first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or_default();
        Self::start(
            store,
            path,
            Log::Wal(Box::new(LocalLog {
                paths: wal,
                end,
                reserve,
                deferral,
            })),
            options,
        )
    }

    /// Opens (creating if needed) a cluster node's ledger in `dir`: every group this node
    /// decides is published to `log` before it is acknowledged, and groups other nodes
    /// decided are applied with [`apply_replicated`](Self::apply_replicated). There is no
    /// local write-ahead log: after a crash the node reads `log` again from
    /// [`log_sequence`](Self::log_sequence). A directory a single node wrote (it has a
    /// write-ahead log) is refused: its events are not in the replicated log.
    pub fn open_replica(
        dir: impl AsRef<Path>,
        options: LedgerOptions,
        log: Box<dyn GroupLog>,
    ) -> Result<Ledger, OpenError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        if dir.join(WAL_FILE).exists() {
            return Err(OpenError::Corrupt {
                path: path.display().to_string(),
                message: format!(
                    "this data directory was written by a single node ({WAL_FILE} is there), \
                     and its events are not in the cluster's log; a cluster node starts from an \
                     empty directory, or from a backup of a cluster node (loom restore)"
                ),
            });
        }
        let file = path.clone();
        let cache = options.cache_bytes;
        let store = Store::open(move || Database::builder().set_cache_size(cache).create(&file));
        let ledger = Self::start(store, path.clone(), Log::Replicated(log), options)?;
        if ledger.head() > 0 && ledger.log_sequence() == 0 {
            ledger.shutdown();
            return Err(OpenError::Corrupt {
                path: path.display().to_string(),
                message: "this database holds events but no position in a cluster's log (a \
                          single node's, or a backup of one): a cluster node starts from an \
                          empty directory, or from a backup of a cluster node"
                    .into(),
            });
        }
        Ok(ledger)
    }

    /// Opens the database in `dir` as it is, without a write-ahead log or a cluster's log:
    /// for tools that read and check a data directory (`loom verify`, `loom restore`) without
    /// adding a log to it. Appends through it commit durably to redb itself.
    pub fn open_unlogged(
        dir: impl AsRef<Path>,
        options: LedgerOptions,
    ) -> Result<Ledger, OpenError> {
        let path = dir.as_ref().join(DB_FILE);
        if !path.is_file() {
            return Err(OpenError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no ledger database here",
                ),
            });
        }
        let file = path.clone();
        let cache = options.cache_bytes;
        let store = Store::open(move || Database::builder().set_cache_size(cache).create(&file));
        Self::start(store, path, Log::None, options)
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
            Log::None,
            options,
        )
    }

    fn start(
        store: Result<Store, redb::DatabaseError>,
        path: PathBuf,
        log: Log,
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
        let replicated = matches!(log, Log::Replicated(_));
        let wal = match log {
            Log::Wal(local) => {
                let LocalLog {
                    paths,
                    end,
                    reserve,
                    deferral,
                } = *local;
                let awake = paths[0]
                    .parent()
                    .and_then(|dir| Awake::start(dir, options.keep_disk_awake, stats.clone()));
                Some(Box::new(
                    Wal::open(
                        [&paths[0], &paths[1]],
                        end,
                        options.wal_checkpoint_bytes,
                        reserve,
                        deferral,
                        awake,
                    )
                    .map_err(|source| OpenError::Io {
                        path: paths[0].display().to_string(),
                        source,
                    })?,
                ) as Box<dyn DurableLog>)
            }
            Log::Replicated(log) => Some(Box::new(Replicated {
                log,
                checkpoint_bytes: options.wal_checkpoint_bytes,
                since_checkpoint: 0,
            }) as Box<dyn DurableLog>),
            Log::None => None,
        };
        let log_sequence = Arc::new(AtomicU64::new(loaded.log_sequence));
        let max_record_bytes = wal.as_ref().and_then(|w| w.max_record_bytes());
        // Changes kept before the open are in the table; the engine reads it first.
        let engine_inbox = Arc::new(Head::new(0));
        let writer = GroupCommit {
            wal,
            drained: drained.clone(),
            opening: store.opening(),
            store: store.clone(),
            head: head.clone(),
            registry: registry.clone(),
            stats: stats.clone(),
            next_stream_id: loaded.next_stream_id,
            last_recorded: loaded.last_recorded,
            max_group_events: options.max_group_events.max(1),
            segment_events: options.segment_events(),
            log_sequence: log_sequence.clone(),
            engine_inbox: engine_inbox.clone(),
            ahead: false,
            shared: None,
            restore_shared: false,
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
            log_sequence,
            engine_inbox,
            replicated,
            max_record_bytes,
            drained,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Creates the tables if missing and checks the on-disk format.
    pub(crate) fn init(store: &Store, segment_events: usize) -> Result<(), InitError> {
        let txn = store.begin_write_own().map_err(StorageError::from)?;
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
            txn.open_table(ENGINE_INBOX).map_err(StorageError::from)?;
            for table in CATALOG_TABLES {
                txn.open_table(named(table)).map_err(StorageError::from)?;
            }
            txn.open_table(PROJECTION_STATES)
                .map_err(StorageError::from)?;
            txn.open_table(PROJECTION_CHECKPOINTS)
                .map_err(StorageError::from)?;
            txn.open_table(PROJECTION_NOTES)
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
                let txn = store.begin_write_own().map_err(StorageError::from)?;
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
}

/// Where the writer makes groups durable.
enum Log {
    /// Every group commits durably to redb itself.
    None,
    /// The local write-ahead log.
    Wal(Box<LocalLog>),
    /// A replicated log (cluster mode).
    Replicated(Box<dyn GroupLog>),
}

/// The local write-ahead log, as the open found it.
struct LocalLog {
    /// Its two files.
    paths: [PathBuf; 2],
    /// Where it goes on.
    end: LogEnd,
    /// Its disk reserve.
    reserve: Arc<Reserve>,
    /// The deferral of checkpoint syncs, shared with every opening of the database.
    deferral: Arc<Deferral>,
}

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "ledger.redb";

/// Opens the database file and replays the write-ahead log into it — into the reserved space
/// if the disk is full (see `wal`). Returns the database and where the log goes on.
pub(crate) fn open_replayed(
    cache: usize,
    segment_events: usize,
    file: &Path,
    log: &[PathBuf; 2],
    reserve: &Reserve,
    deferral: &Arc<Deferral>,
) -> Result<(Database, LogEnd), redb::DatabaseError> {
    let open = || {
        let io = |e| redb::DatabaseError::Storage(redb::StorageError::Io(e));
        let opened = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(file)
            .map_err(io)?;
        let fd = opened.try_clone().map_err(io)?;
        let backend = DeferringFile::new(FileBackend::new(opened)?, fd, deferral.clone());
        Database::builder()
            .set_cache_size(cache)
            .create_with_backend(backend)
    };
    let files = WalFiles([&log[0], &log[1]]);
    let mut db = open()?;
    let mut result = writer::replay(&db, &files, segment_events);
    if let Err(e) = &result
        && e.is_disk_full()
        && reserve.release()
    {
        // What the reserve is for. The failed database must be opened again first.
        tracing::warn!("the disk is full: replaying the write-ahead log into the reserved space");
        drop(db);
        db = open()?;
        result = writer::replay(&db, &files, segment_events);
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
    pub(crate) log_sequence: u64,
}

/// Reads head, registry and counters in one snapshot (at open, and after a reopen).
pub(crate) fn load(store: &Store) -> Result<Loaded, InitError> {
    let txn = store.begin_read_own().map_err(StorageError::from)?;
    let meta = txn.open_table(META).map_err(StorageError::from)?;
    let next_stream_id = meta
        .get(META_NEXT_STREAM_ID)
        .map_err(StorageError::from)?
        .map_or(1, |v| v.value());
    let log_sequence = meta
        .get(META_LOG_SEQUENCE)
        .map_err(StorageError::from)?
        .map_or(0, |v| v.value());
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
        log_sequence,
    })
}

impl From<StorageError> for InitError {
    fn from(e: StorageError) -> Self {
        InitError::Storage(e)
    }
}
