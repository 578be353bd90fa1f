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
use crate::log::awake::{Awake, KeepAwake};
use crate::log::control::{Control, LedgerChange};
use crate::log::deferred::{Deferral, DeferringFile};
use crate::log::replicated::{GroupLog, Replicated};
use crate::log::wal::{RESERVE_FILE, Reserve, WAL_FILE, WAL_FILES, Wal, WalFiles};
use crate::log::{DurableLog, LogEnd};
use crate::query::{View, Window, decode};
use crate::records::{self, Events};
use crate::registry::{CompiledEntity, Registry};
use crate::store::{Snapshot, Store};
use crate::tables::*;
use crate::view::EventBatch;
#[cfg(feature = "bench")]
use crate::view::EventRecord;
use crate::writer::{self, ControlWork, GroupCommit, Pending, Precheck, ReplicatedGroup, Work};
#[cfg(feature = "bench")]
use loom_core::EventView;
use loom_core::StoredEvent;
use loom_core::{AppendOutcome, AppendRequest, EntitySpec, split_subject};
use loom_core::{CompiledSelector, Selector};
use redb::backends::FileBackend;

mod append;
mod backup;
mod engine_inbox;
mod open;
mod options;
mod read;
mod registry;
#[cfg(test)]
mod tests;

pub use backup::{BackupInfo, Verified};
pub use open::DB_FILE;
pub(crate) use open::load;
pub use options::{LedgerOptions, LedgerStats, ReadOptions};

/// The durable event ledger. Share it with `Arc`; every method takes `&self`.
pub struct Ledger {
    store: Store,
    path: PathBuf,
    head: Arc<Head>,
    registry: Arc<RwLock<Arc<Registry>>>,
    stats: Arc<LedgerStats>,
    queue: Mutex<Option<std::sync::mpsc::SyncSender<Work>>>,
    /// Cluster mode: the replicated log's sequence number of the last group applied.
    log_sequence: Arc<AtomicU64>,
    /// Cluster mode: the sequence of the last engine change kept in the inbox.
    engine_inbox: Arc<Head>,
    /// Cluster mode: registrations go through the replicated log.
    replicated: bool,
    /// Largest group record the durable log takes, if it has a limit (cluster mode).
    max_record_bytes: Option<usize>,
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

impl Ledger {
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

    /// Cluster mode: the sequence number, in the replicated log, of the last group this node
    /// applied (0: none; always 0 for a single node).
    pub fn log_sequence(&self) -> u64 {
        self.log_sequence.load(Ordering::Acquire)
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

    /// Queues an append; while the queue is full, waits (asynchronously) for the writer to
    /// drain it instead of blocking the calling thread.
    async fn enqueue_async(&self, mut pending: Work) -> Result<(), AppendError> {
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
