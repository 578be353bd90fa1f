//! Errors of the event model: an invalid event, a registry refusal, a failed condition, a
//! malformed selector. Each says what is wrong in a sentence; none names an HTTP route (the
//! server adds such hints when it answers).

use std::fmt;

use crate::append::ExpectedRevision;

/// An event breaks the event model (missing or malformed attribute, bad subject, …).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidEvent {
    /// Index of the offending event in its batch, when known.
    pub index: Option<usize>,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl InvalidEvent {
    /// An error with this message, for no particular event of a batch.
    pub fn new(message: impl Into<String>) -> Self {
        InvalidEvent {
            index: None,
            message: message.into(),
        }
    }

    /// The same error, naming the event's index in its batch.
    pub fn at_index(mut self, index: usize) -> Self {
        self.index.get_or_insert(index);
        self
    }
}

impl fmt::Display for InvalidEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "event {i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for InvalidEvent {}

/// The registry refuses an event: unknown entity or type, or data failing its schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The subject's entity is not registered.
    #[error("event {index}: entity {entity:?} is not registered")]
    UnknownEntity {
        /// Index in the batch.
        index: usize,
        /// The entity.
        entity: String,
    },
    /// The event type is not registered for the entity (and the entity is not open).
    #[error("event {index}: type {ty:?} is not registered for entity {entity:?}")]
    UnknownType {
        /// Index in the batch.
        index: usize,
        /// The entity.
        entity: String,
        /// The event type.
        ty: String,
    },
    /// The entity takes events only from its decider (and named reactors): send a command.
    #[error(
        "event {index}: entity {entity:?} takes events only through its decider (commands_only); send a command instead"
    )]
    CommandsOnly {
        /// Index in the batch.
        index: usize,
        /// The entity.
        entity: String,
    },
    /// The data does not satisfy the type's JSON Schema.
    #[error("event {index}: data of {entity}/{ty} fails its schema: {message}")]
    Schema {
        /// Index in the batch.
        index: usize,
        /// The entity.
        entity: String,
        /// The event type.
        ty: String,
        /// The schema errors, with their JSON pointers.
        message: String,
    },
}

/// An append condition failed, or an identity is already taken by different content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// A stream is not at the expected revision.
    #[error("stream {stream:?} is at revision {actual}, expected {expected}")]
    Revision {
        /// The stream (subject).
        stream: String,
        /// What the append expected.
        expected: ExpectedRevision,
        /// The stream's revision when the append was checked (0: no stream).
        actual: u64,
    },
    /// The DCB condition: events matching `fail_if_events_match` exist after `after`.
    #[error("events matching the append condition exist at positions {positions:?}")]
    EventsMatched {
        /// Positions of the first matching events.
        positions: Vec<u64>,
    },
    /// `(source, id)` is stored already with different content, or only part of the batch
    /// was stored before (a batch is idempotent only as a whole).
    #[error(
        "event (source {event_source:?}, id {id:?}) is already stored at position {position}: {reason}"
    )]
    Identity {
        /// The event's source.
        event_source: String,
        /// The event's id.
        id: String,
        /// Where it is stored.
        position: u64,
        /// Why the re-append is not idempotent.
        reason: String,
    },
}

/// A selector is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// A JSONPath expression does not parse.
    #[error("{field} is not a valid RFC 9535 JSONPath expression: {message}")]
    JsonPath {
        /// `data` or `meta`.
        field: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A JSONPath expression exceeds a limit on its cost (see [`crate::jsonpath`]).
    #[error("{field} is too complex: {message}")]
    TooComplex {
        /// `data` or `meta`.
        field: &'static str,
        /// Which limit, as a sentence.
        message: String,
    },
    /// `keys` without `entity`.
    #[error("a selector with keys must name its entity")]
    KeysWithoutEntity,
    /// An entity name that cannot exist.
    #[error("{0}")]
    BadEntity(String),
}

/// A stored event's bytes do not decode (corruption, or a format newer than this build).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("stored event at position {position} is unreadable: {message}")]
pub struct CorruptEvent {
    /// Where.
    pub position: u64,
    /// What the decoder said.
    pub message: String,
}
