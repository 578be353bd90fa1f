//! Loom's event model, shared by every layer: the ledger stores it, the wasm host hands it to
//! reducers, the engine and the HTTP server speak it. It knows nothing of storage, wasm or
//! async.
//!
//! * [`Event`] — a CloudEvent v1.0 as a client appends it; [`StoredEvent`] — with the
//!   store-set `position`, `revision` and `recordedtime`; [`EventView`] — a stored event
//!   borrowed from its encoded record.
//! * Names: [`check_entity_name`], [`split_subject`] (`{entity}/{key}` streams).
//! * [`Selector`] — which events a read, subscription, projection or condition is about.
//! * [`AppendRequest`] with its [`Conditions`] ([`ExpectedRevision`], DCB
//!   `fail_if_events_match`), and the [`AppendOutcome`].
//! * [`EntitySpec`] — an entity's registration.
//!
//! ```
//! use loom_core::{Event, Selector};
//!
//! let event = Event::new("shop", "e-1", "was_created", "cart/1", serde_json::json!({"n": 1}));
//! event.validate()?;
//! let selector = Selector { data: Some("$.n".into()), ..Selector::stream("cart/1")? }.compile()?;
//! assert!(selector.selector().entity.as_deref() == Some("cart"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod append;
mod error;
mod event;
pub mod json;
pub mod jsonpath;
mod names;
#[cfg(feature = "openapi")]
pub mod openapi;
mod registry;
mod selector;
mod time;
mod view;
pub mod wire;

pub use append::{
    AppendOutcome, AppendRequest, AppendedEvent, Conditions, ExpectedRevision, Origin,
};
pub use error::{Conflict, CorruptEvent, InvalidEvent, Rejection, SelectorError};
pub use event::{
    Data, Event, ExtensionValue, MAX_ATTRIBUTE_LEN, SPEC_VERSION, STORE_SET_ATTRIBUTES,
    StoredEvent, is_json_content_type, is_text_content_type,
};
pub use names::{MAX_ENTITY_LEN, check_entity_name, check_new_name, split_subject};
pub use registry::{EntitySpec, EventTypeSpec};
pub use selector::{CompiledSelector, Selector};
pub use time::{format_time, parse_time};
pub use view::{DataRef, EventView, ExtensionRef, Extensions};
