//! Appends: a batch of events with its conditions, and where its events landed.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::Event;
use crate::selector::Selector;

/// What an append expects of a stream's revision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExpectedRevision {
    /// No expectation.
    #[default]
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream has at least one event.
    Exists,
    /// The stream is exactly at this revision (0 is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedRevision {
    /// Whether a stream at revision `actual` (0: no stream) satisfies the expectation.
    pub fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => actual == 0,
            ExpectedRevision::Exists => actual > 0,
            ExpectedRevision::Exact(n) => actual == n,
        }
    }
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("none"),
            ExpectedRevision::Exists => f.write_str("exists"),
            ExpectedRevision::Exact(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for ExpectedRevision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "any" => Ok(ExpectedRevision::Any),
            "none" | "no_stream" => Ok(ExpectedRevision::NoStream),
            "exists" => Ok(ExpectedRevision::Exists),
            n => n.parse::<u64>().map(ExpectedRevision::Exact).map_err(|_| {
                format!(
                    "expected revision {n:?} is not one of \"any\", \"none\", \"exists\" or a \
                     non-negative integer"
                )
            }),
        }
    }
}

impl Serialize for ExpectedRevision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpectedRevision::Exact(n) => s.serialize_u64(*n),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedRevision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "an expected revision is \"any\", \"none\", \"exists\" or a non-negative integer",
            )
        })? {
            Raw::N(n) => Ok(ExpectedRevision::Exact(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Conditions of an append; all must hold or nothing is written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conditions {
    /// Expected revision per stream (subject).
    #[serde(default)]
    pub expected_revisions: BTreeMap<String, ExpectedRevision>,
    /// DCB-style condition: fail if any event matching this selector exists after `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_if_events_match: Option<Selector>,
    /// Position after which `fail_if_events_match` looks (default: the whole ledger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

impl Conditions {
    /// Adds an expected revision for a stream (`{entity}/{key}`).
    pub fn expect(mut self, subject: impl Into<String>, expected: ExpectedRevision) -> Self {
        self.expected_revisions.insert(subject.into(), expected);
        self
    }

    /// Fails the append if an event matching `selector` exists after position `after` (the
    /// whole ledger when `None`): a DCB-style condition.
    pub fn fail_if_events_match(mut self, selector: Selector, after: Option<u64>) -> Self {
        self.fail_if_events_match = Some(selector);
        self.after = after;
        self
    }
}

/// Who appends: a client, or Loom on behalf of a decider or a reactor. Set by the engine,
/// never taken from a request, so that an entity registered `commands_only` can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A client, through the API.
    #[default]
    Client,
    /// The decider of an entity, running a command.
    Decider(String),
    /// A reactor, by name.
    Reactor(String),
}

/// One atomic append: events (any streams) and conditions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppendRequest {
    /// The events, appended in this order.
    pub events: Vec<Event>,
    /// The conditions.
    pub conditions: Conditions,
    /// Who appends (default: a client).
    pub origin: Origin,
}

impl AppendRequest {
    /// An unconditional append.
    pub fn new(events: Vec<Event>) -> AppendRequest {
        AppendRequest {
            events,
            conditions: Conditions::default(),
            origin: Origin::Client,
        }
    }

    /// Adds an expected revision for a stream.
    pub fn expect(mut self, subject: impl Into<String>, expected: ExpectedRevision) -> Self {
        self.conditions
            .expected_revisions
            .insert(subject.into(), expected);
        self
    }

    /// The same append, made by `origin`.
    pub fn by(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }
}

/// Where one appended event landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendedEvent {
    /// `source`.
    pub source: String,
    /// `id`.
    pub id: String,
    /// `subject` (the stream).
    pub subject: String,
    /// Global position.
    pub position: u64,
    /// Revision in its stream.
    pub revision: u64,
}

/// The result of a successful append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppendOutcome {
    /// One entry per event, in request order.
    pub events: Vec<AppendedEvent>,
    /// Position of the last event of the batch.
    pub last_position: u64,
    /// True when every event was stored already with the same content and nothing was
    /// written (an idempotent retry).
    #[serde(default)]
    pub duplicate: bool,
}
