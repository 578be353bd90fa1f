//! What a reducer is told about the call beyond its input: the stream and revision a command is
//! decided on, with the command's metadata; where the event a reaction answers came from.

use serde::Deserialize;

/// The context of a command: the stream it is decided on and the request's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DecideContext {
    /// The stream, `{entity}/{key}`.
    pub subject: String,
    /// Its revision, which the state was folded to (0: no events yet).
    pub revision: u64,
    /// The client's `Idempotency-Key`, if it sent one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// When the server received the command (RFC 3339, UTC): the only clock a decider may
    /// read. It is part of the input, so a retry of the same command decides the same way.
    /// `None` from hosts of ABI v1.
    #[serde(default)]
    pub time: Option<String>,
}

impl DecideContext {
    /// A context for `subject` at `revision`, as tests build one.
    pub fn new(subject: impl Into<String>, revision: u64) -> DecideContext {
        DecideContext {
            subject: subject.into(),
            revision,
            ..DecideContext::default()
        }
    }

    /// The same, with a request time.
    pub fn at(mut self, time: impl Into<String>) -> DecideContext {
        self.time = Some(time.into());
        self
    }

    /// The same, with an idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> DecideContext {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The entity part of the subject.
    pub fn entity(&self) -> &str {
        self.subject.split_once('/').map_or("", |(e, _)| e)
    }

    /// The key part of the subject (may contain `/`).
    pub fn key(&self) -> &str {
        self.subject.split_once('/').map_or("", |(_, k)| k)
    }
}

/// Who appended the event a reaction answers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// A client appended it (any source not written by Loom).
    Client,
    /// The decider of this entity, running a command.
    Decider(String),
    /// This reactor, reacting to an earlier event.
    Reactor(String),
}

/// The context of a reaction: the event's place and what caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReactContext {
    /// The event's global position.
    pub position: u64,
    /// How many reactions led to it: 0 for an event a client appended, one more than the
    /// event reacted to for each reaction in between (extension `loomhops`). The host stops a
    /// chain at its limit (16 by default).
    pub hops: u64,
    /// Who appended it.
    pub caused_by: Cause,
}

impl ReactContext {
    /// The context of an event from its source and extensions.
    pub(crate) fn of(raw: &loom_abi::EventRef<'_>) -> ReactContext {
        let hops =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.extensions)
                .ok()
                .and_then(|m| m.get("loomhops").and_then(serde_json::Value::as_u64))
                .unwrap_or(0);
        let caused_by = if let Some(e) = raw.source.strip_prefix("loom/deciders/") {
            Cause::Decider(e.to_owned())
        } else if let Some(r) = raw.source.strip_prefix("loom/reactors/") {
            Cause::Reactor(r.to_owned())
        } else {
            Cause::Client
        };
        ReactContext {
            position: raw.position,
            hops,
            caused_by,
        }
    }
}
