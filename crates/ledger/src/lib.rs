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

mod codec;
mod error;
mod event;
mod head;
mod ledger;
mod query;
mod records;
mod registry;
mod selector;
mod store;
mod tables;
mod view;
mod wal;
mod writer;

pub use error::{
    AppendError, Conflict, InvalidEvent, OpenError, ReadError, RegistryError, Rejection,
    SelectorError, StorageError,
};
pub use event::{
    Data, Event, ExtensionValue, SPEC_VERSION, STORE_SET_ATTRIBUTES, StoredEvent, format_time,
    is_json_content_type, parse_time, split_subject,
};
pub use ledger::{
    AppendOutcome, AppendRequest, AppendedEvent, Conditions, ExpectedRevision, Ledger,
    LedgerOptions, LedgerStats, ReadOptions,
};
pub use registry::{EntitySpec, EventTypeSpec, check_entity_name};
pub use selector::{CompiledSelector, Selector};
pub use store::Store;
pub use view::{DataRef, EventBatch, EventRecord, EventView, ExtensionRef, Extensions};
pub use wal::{RESERVE_FILE, WAL_FILE};

/// Re-exported so that crates building on the ledger (projections, modules) can keep their own
/// tables in the same database and commit them atomically with their own data.
pub use redb;
