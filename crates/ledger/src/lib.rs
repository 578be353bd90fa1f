//! Loom's ledger: a durable, append-only store of CloudEvents on redb.
//!
//! Every event gets a gapless global `position` and a gapless per-stream `revision`. Appends are
//! atomic batches with optimistic conditions, acknowledged only after a durable commit; one
//! writer thread groups concurrent appends into a single commit (group commit). Reads use
//! index tables for streams, entities and types, and a time index answers "which position was
//! the head at time T".
//!
//! ```no_run
//! use loom_ledger::{AppendRequest, EntitySpec, Event, Ledger, LedgerOptions};
//!
//! let ledger = Ledger::open("./loom-data", LedgerOptions::default())?;
//! ledger.put_entity("cart", EntitySpec { open: true, ..Default::default() })?;
//! let event = Event::new("shop", "e-1", "was_created", "cart/1", serde_json::json!({}));
//! let outcome = ledger.append(AppendRequest::new(vec![event]))?;
//! assert_eq!(outcome.events[0].revision, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod catalog;
mod codec;
mod error;
mod head;
mod ledger;
mod log;
mod poll;
mod query;
mod records;
mod registry;
mod store;
mod tables;
mod view;
mod writer;

pub use catalog::{
    Catalog, CatalogRead, CatalogWrite, Durability, Epoch, ProjectionCheckpoint, ReactorCheckpoint,
};
pub use error::{AppendError, LogUnavailable, OpenError, ReadError, RegistryError, StorageError};
pub use ledger::{BackupInfo, DB_FILE, Ledger, LedgerOptions, LedgerStats, ReadOptions, Verified};
pub use log::awake::{AWAKE_FILE, KeepAwake};
pub use log::replicated::GroupLog;
pub use log::wal::{RESERVE_FILE, WAL_FILE, WAL_FILES};
pub use tables::CatalogTable;
/// Lazy records, for the bulk scans the benchmarks compare (feature `bench`).
#[cfg(feature = "bench")]
pub use view::EventRecord;
pub use view::{EventBatch, EventHead};

/// The event model the ledger's API speaks, from `loom-core`.
pub use loom_core::{
    AppendOutcome, AppendRequest, AppendedEvent, CompiledSelector, Conditions, Conflict,
    CorruptEvent, Data, DataRef, EntitySpec, Event, EventTypeSpec, EventView, ExpectedRevision,
    ExtensionRef, ExtensionValue, Extensions, InvalidEvent, Origin, Rejection, SPEC_VERSION,
    STORE_SET_ATTRIBUTES, Selector, SelectorError, StoredEvent, check_entity_name, check_new_name,
    format_time, is_json_content_type, parse_time, split_subject,
};
