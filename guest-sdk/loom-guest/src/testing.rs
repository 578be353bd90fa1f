//! A native test harness: `given(events).when(command).then(events | rejection)`.
//!
//! Events go through the same path as in wasm (typed event → CloudEvents `type` + JSON `data`
//! → typed event), so a serde mismatch between how events are written and read shows up in
//! `cargo test`.

use std::fmt::Debug;

use loom_abi::{DataKind, EventRef};

use crate::event::{Event, decode_event, encode_event};
use crate::{Decider, Projection, Reaction, Reactor};

/// Subject used for the harness's events.
pub const TEST_SUBJECT: &str = "test/1";

/// Folds `events` (typed) into a fresh state, exactly as the host's `evolve` would. Every
/// event is about [`TEST_SUBJECT`].
pub fn fold<P: Projection>(events: impl IntoIterator<Item = P::Event>) -> P
where
    P::Event: serde::Serialize,
{
    fold_streams(events.into_iter().map(|e| (TEST_SUBJECT, e)))
}

/// Like [`fold`], with each event's subject (`{entity}/{key}`) given: for projections that
/// span streams (a `single` partition).
pub fn fold_streams<'s, P: Projection>(events: impl IntoIterator<Item = (&'s str, P::Event)>) -> P
where
    P::Event: serde::Serialize,
{
    let mut state = P::default();
    for (i, (subject, e)) in events.into_iter().enumerate() {
        let (ty, data) = encode_event(&e);
        let bytes = serde_json::to_vec(&data).expect("JSON");
        let raw = raw_event(i as u64 + 1, &ty, subject, &bytes);
        let typed = decode_event::<P::Event>(&raw)
            .unwrap_or_else(|err| panic!("event {ty:?} does not read back: {err}"))
            .unwrap_or_else(|| panic!("event type {ty:?} is not a variant of the event enum"));
        state.evolve(Event::new(typed, raw));
    }
    // The state must survive its JSON round trip, as it does between host calls.
    let json = serde_json::to_vec(&state).expect("state serializes");
    serde_json::from_slice(&json).expect("state deserializes from its own JSON")
}

fn raw_event<'a>(position: u64, ty: &'a str, subject: &'a str, data: &'a [u8]) -> EventRef<'a> {
    EventRef {
        position,
        revision: position,
        recorded_micros: 0,
        ty,
        subject,
        id: "test",
        source: "loom-guest/testing",
        time: None,
        datacontenttype: Some("application/json"),
        data_kind: DataKind::Json,
        data,
        extensions: "{}",
    }
}

/// Starts a decider test from the events already in the stream.
pub fn given<D: Decider>(events: impl IntoIterator<Item = D::Event>) -> Given<D> {
    Given {
        state: fold::<D>(events),
    }
}

/// A state built from past events.
#[derive(Debug)]
pub struct Given<D> {
    state: D,
}

impl<D: Decider> Given<D> {
    /// The folded state.
    pub fn state(&self) -> &D {
        &self.state
    }

    /// Decides a command in that state.
    pub fn when(self, command: D::Command) -> When<D> {
        let result = self.state.decide(command).map_err(|r| r.to_string());
        When { result }
    }
}

/// The outcome of a command.
#[derive(Debug)]
pub struct When<D: Decider> {
    result: Result<Vec<D::Event>, String>,
}

impl<D: Decider> When<D>
where
    D::Event: PartialEq + Debug,
{
    /// Asserts the command produced exactly these events.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = D::Event>) {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.result {
            Ok(events) => assert_eq!(events, expected, "the command produced other events"),
            Err(r) => panic!("expected events {expected:?}, but the command was rejected: {r}"),
        }
    }

    /// Asserts the command was rejected.
    #[track_caller]
    pub fn then_rejected(self) {
        if let Ok(events) = self.result {
            panic!("expected a rejection, but the command produced {events:?}");
        }
    }

    /// Asserts the command was rejected with a message containing `text`.
    #[track_caller]
    pub fn then_rejected_with(self, text: &str) {
        match self.result {
            Ok(events) => panic!("expected a rejection, but the command produced {events:?}"),
            Err(r) => assert!(
                r.contains(text),
                "rejection {r:?} does not mention {text:?}"
            ),
        }
    }

    /// The produced events, for custom assertions.
    pub fn events(self) -> Result<Vec<D::Event>, String> {
        self.result
    }
}

/// Runs a reactor on one typed event about `subject`.
pub fn react<R: Reactor>(subject: &str, event: &impl serde::Serialize) -> Reaction {
    let (ty, data) = encode_event(event);
    let bytes = serde_json::to_vec(&data).expect("JSON");
    let raw = raw_event(1, &ty, subject, &bytes);
    match decode_event::<R::Event>(&raw) {
        Ok(Some(typed)) => R::react(Event::new(typed, raw)),
        Ok(None) => Reaction::none(),
        Err(e) => panic!("event {ty:?} does not read back: {e}"),
    }
}
