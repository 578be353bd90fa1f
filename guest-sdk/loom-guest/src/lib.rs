//! Write Loom reducers in Rust.
//!
//! A Loom module is a Rust `cdylib` compiled to `wasm32-unknown-unknown`. It implements one or
//! more of the pattern traits for its types and names them as reducers with [`module!`] (ABI
//! version 2: any number of reducers per module; [`export!`] builds ABI v1 modules with one):
//!
//! * [`Projection`] — a state and `evolve`, folding events into it (also what a decider folds);
//! * [`Decider`] — `decide`: turns a command and the current state into new events, or a
//!   rejection;
//! * [`Reactor`] — `react`: turns one event into events to append, commands to run and
//!   CloudEvents to deliver;
//! * [`Query`] — `query`: a derived answer computed from the state and parameters.
//!
//! Events are typed: an enum whose variants are the CloudEvents `type`s (serde's default
//! externally tagged representation, usually with `#[serde(rename_all = "snake_case")]`), each
//! carrying the event's `data`. Events of types the enum does not name are skipped by
//! `evolve`, so a projection can select more than it folds.
//!
//! ```
//! use loom_guest::{DecideContext, Decider, Event, Projection};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! pub struct Counter {
//!     pub total: i64,
//! }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! #[serde(rename_all = "snake_case")]
//! pub enum CounterEvent {
//!     WasIncremented { by: i64 },
//!     WasReset,
//! }
//!
//! #[derive(Debug, Deserialize)]
//! #[serde(tag = "type", rename_all = "snake_case")]
//! pub enum CounterCommand {
//!     Increment { by: i64 },
//! }
//!
//! impl Projection for Counter {
//!     type Event = CounterEvent;
//!     fn evolve(&mut self, event: Event<'_, CounterEvent>) {
//!         match event.data {
//!             CounterEvent::WasIncremented { by } => self.total += by,
//!             CounterEvent::WasReset => self.total = 0,
//!         }
//!     }
//! }
//!
//! impl Decider for Counter {
//!     type Command = CounterCommand;
//!     type Rejection = String;
//!     fn decide(&self, command: CounterCommand, _ctx: &DecideContext) -> Result<Vec<CounterEvent>, String> {
//!         match command {
//!             CounterCommand::Increment { by } if by <= 0 => Err("increment must be positive".into()),
//!             CounterCommand::Increment { by } => Ok(vec![CounterEvent::WasIncremented { by }]),
//!         }
//!     }
//! }
//!
//! // In the module crate, any number of named reducers:
//! // loom_guest::module! {
//! //     decider counters: Counter in "counter";
//! // }
//!
//! // Native tests with the given/when/then harness:
//! loom_guest::testing::given::<Counter>([CounterEvent::WasIncremented { by: 2 }])
//!     .when(CounterCommand::Increment { by: 3 })
//!     .then([CounterEvent::WasIncremented { by: 3 }]);
//! loom_guest::testing::given::<Counter>([])
//!     .when(CounterCommand::Increment { by: 0 })
//!     .then_rejected_with("positive");
//! ```

use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use loom_abi as abi;
pub use serde;
pub use serde_json;

#[doc(hidden)]
#[path = "export.rs"]
pub mod __export;
// Talc's cell is for single-threaded wasm only; a threaded build keeps Rust's allocator.
#[cfg(all(
    target_arch = "wasm32",
    not(target_feature = "atomics"),
    feature = "allocator"
))]
mod alloc;
mod context;
mod effects;
mod event;
mod mem;
#[doc(hidden)]
pub mod schema;
pub mod testing;

pub use context::{Cause, DecideContext, ReactContext};
pub use effects::{CommandRequest, EffectError, Emitted, Reaction, Stream};
pub use event::{
    DecodeEventError, EncodeEventError, Event, decode_event, encode_event, event_types,
};
pub use loom_guest_macros::module;

/// A state folded from events.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Loom projection",
    label = "needs `impl loom_guest::Projection for {Self}`",
    note = "a projection is a state type (`Default + Serialize + Deserialize`) with an `evolve` method"
)]
pub trait Projection: Default + Serialize + DeserializeOwned {
    /// The typed events: an enum keyed by CloudEvents `type`.
    type Event: DeserializeOwned;

    /// Folds one event into the state.
    fn evolve(&mut self, event: Event<'_, Self::Event>);
}

/// Turns commands into events, given the state its `evolve` folded.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Loom decider",
    label = "needs `impl loom_guest::Decider for {Self}`",
    note = "a decider is a projection whose events are also `Serialize`, with a `decide` method"
)]
pub trait Decider: Projection<Event: Serialize> {
    /// The commands it takes (JSON, usually an enum tagged by `"type"`).
    type Command: DeserializeOwned;
    /// Why a command is refused; shown to the client as the problem's detail.
    type Rejection: Display;

    /// Decides which events a command produces in the current state, or refuses it. `ctx`
    /// says which stream and revision, and carries the command's metadata.
    fn decide(
        &self,
        command: Self::Command,
        ctx: &DecideContext,
    ) -> Result<Vec<Self::Event>, Self::Rejection>;
}

/// A derived answer from a projection's state.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not answer Loom queries",
    label = "needs `impl loom_guest::Query for {Self}`"
)]
pub trait Query: Projection {
    /// Query parameters (JSON).
    type Params: DeserializeOwned;
    /// The answer (JSON).
    type Output: Serialize;

    /// Answers a query.
    fn query(&self, params: Self::Params) -> Self::Output;
}

/// Reacts to events with further work.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Loom reactor",
    label = "needs `impl loom_guest::Reactor for {Self}`"
)]
pub trait Reactor {
    /// The typed events it reacts to.
    type Event: DeserializeOwned;

    /// What to do about one event. An error fails the reactor at this event, with its
    /// message.
    fn react(event: Event<'_, Self::Event>, ctx: &ReactContext) -> Result<Reaction, EffectError>;
}

/// Writes a line to the host's log (shown in server logs; the last lines of a failing call are
/// part of its error).
pub fn log(message: &str) {
    __export::sys::log(message);
}
