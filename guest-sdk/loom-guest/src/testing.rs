//! A native test harness: `given(events).when(command).then(events | rejection)`, reactions,
//! and [`check_registration`]: the event types a module's reducers decode against the entity
//! registration a deployment uses, so a misspelt variant fails `cargo test`.
//!
//! Events go through the same path as in wasm (typed event → CloudEvents `type` + JSON `data`
//! → typed event), so a serde mismatch between how events are written and read shows up in
//! `cargo test`.

use std::fmt::Debug;

use loom_abi::{DataKind, EventRef};

use crate::__export::ReducerDesc;
use crate::context::{DecideContext, ReactContext};
use crate::effects::EffectError;
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
        let (ty, data) = encode_event(&e).unwrap_or_else(|err| panic!("{err}"));
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

/// Starts a decider test from the events already in the stream ([`TEST_SUBJECT`]).
pub fn given<D: Decider>(events: impl IntoIterator<Item = D::Event>) -> Given<D>
where
    D::Event: serde::Serialize,
{
    let events: Vec<D::Event> = events.into_iter().collect();
    let revision = events.len() as u64;
    Given {
        state: fold::<D>(events),
        revision,
    }
}

/// A state built from past events.
#[derive(Debug)]
pub struct Given<D> {
    state: D,
    revision: u64,
}

impl<D: Decider> Given<D> {
    /// The folded state.
    pub fn state(&self) -> &D {
        &self.state
    }

    /// Decides a command in that state, with the context the host would give: the stream
    /// [`TEST_SUBJECT`] at the revision of the given events.
    pub fn when(self, command: D::Command) -> When<D> {
        let ctx = DecideContext::new(TEST_SUBJECT, self.revision);
        self.when_with(command, &ctx)
    }

    /// Decides a command with a context of the test's own (a subject, a time, an
    /// idempotency key).
    pub fn when_with(self, command: D::Command, ctx: &DecideContext) -> When<D> {
        let result = self.state.decide(command, ctx).map_err(|r| r.to_string());
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

/// Runs a reactor on one typed event about `subject`, appended by a client (position 1).
pub fn react<R: Reactor>(
    subject: &str,
    event: &impl serde::Serialize,
) -> Result<Reaction, EffectError> {
    let (ty, data) = encode_event(event).unwrap_or_else(|err| panic!("{err}"));
    let bytes = serde_json::to_vec(&data).expect("JSON");
    let raw = raw_event(1, &ty, subject, &bytes);
    let ctx = ReactContext::of(&raw);
    match decode_event::<R::Event>(&raw) {
        Ok(Some(typed)) => R::react(Event::new(typed, raw), &ctx),
        Ok(None) => Ok(Reaction::none()),
        Err(e) => panic!("event {ty:?} does not read back: {e}"),
    }
}

/// Checks a module's reducers against an entity's registration (its `entity.json`, as
/// `loom entities put` takes it): every event type a projection or decider of `entity`
/// decodes is registered (unless the entity is open), and every registered type is decoded
/// by one of them. Panics with what differs, so that a misspelt variant or a forgotten
/// `rename_all` fails `cargo test` instead of being skipped in production.
///
/// ```ignore
/// #[test]
/// fn the_reducers_decode_what_is_registered() {
///     loom_guest::testing::check_registration(crate::LOOM_REDUCERS, "book", include_str!("../book.json"));
/// }
/// ```
#[track_caller]
pub fn check_registration(reducers: &[ReducerDesc], entity: &str, registration: &str) {
    let spec: serde_json::Value = serde_json::from_str(registration)
        .unwrap_or_else(|e| panic!("the registration of {entity} is not JSON: {e}"));
    let registered: Vec<&str> = spec
        .get("events")
        .and_then(serde_json::Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let open = spec.get("open").and_then(serde_json::Value::as_bool) == Some(true);
    let folding: Vec<&ReducerDesc> = reducers
        .iter()
        .filter(|r| r.entity == Some(entity))
        .filter(|r| {
            r.kinds
                .iter()
                .any(|k| *k == "projection" || *k == "decider")
        })
        .collect();
    assert!(
        !folding.is_empty(),
        "no projection or decider of the module is `in \"{entity}\"`"
    );
    let mut problems = Vec::new();
    let mut decoded_by_any = Vec::new();
    for r in &folding {
        let Some(types) = (r.events)() else {
            continue; // takes any event
        };
        for ty in &types {
            if !open && !registered.contains(ty) {
                problems.push(format!(
                    "reducer {} decodes {ty:?}, which {entity} does not register{}",
                    r.name,
                    did_you_mean(ty, &registered)
                ));
            }
        }
        decoded_by_any.extend(types);
    }
    if folding.iter().all(|r| (r.events)().is_some()) {
        for ty in &registered {
            if !decoded_by_any.contains(ty) {
                problems.push(format!(
                    "{entity} registers {ty:?}, which no reducer of it decodes{}",
                    did_you_mean(ty, &decoded_by_any)
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the reducers and the registration of {entity} disagree:\n  {}",
        problems.join("\n  ")
    );
}

/// The JSON Schemas reducer `name` derives from its types (`loom_describe`'s `schemas`:
/// `{"events": {"<type>": …}, "command": …}`), or `None` when its types do not derive
/// `JsonSchema` or loom-guest's `schemars` feature is off. `loom deploy` registers an entity
/// whose loom.toml says `registration = "derive"` from these.
///
/// # Panics
/// If the module has no reducer `name`.
#[track_caller]
pub fn derived_schemas(reducers: &[ReducerDesc], name: &str) -> Option<serde_json::Value> {
    let r = reducers
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("the module has no reducer {name:?}"));
    (r.schemas)()
}

/// ` (did you mean "x"?)` for the closest of `candidates`, if one is close.
fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    };
    candidates
        .iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min()
        .map(|(_, c)| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}
