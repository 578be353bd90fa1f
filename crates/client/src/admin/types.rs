//! What the admin calls take and answer: definitions' outcomes, module records, projection
//! definitions and state reads, command outcomes, backups.

use bytes::Bytes;
use futures_util::Stream;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Error, Selector};

/// How a `PUT` of a definition went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It did not exist before (201).
    Created,
    /// It existed; it is now as given, whether or not that changed anything (200).
    Updated,
    /// A projection's new definition builds in the background while the old one serves (202).
    Upgrading,
}

impl Outcome {
    pub(super) fn of(status: StatusCode) -> Outcome {
        match status {
            StatusCode::CREATED => Outcome::Created,
            StatusCode::ACCEPTED => Outcome::Upgrading,
            _ => Outcome::Updated,
        }
    }
}

/// A definition's outcome and the server's status document after it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Defined {
    /// What the request did.
    pub outcome: Outcome,
    /// The definition's status (as `GET` answers it).
    pub status: Value,
}

/// A stored module (`POST /v1/modules`, `GET /v1/modules/{id}`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct ModuleRecord {
    /// `sha256:<hex>` of its bytes.
    pub id: String,
    /// Its size in bytes.
    pub size: u64,
    /// The guest ABI version it speaks.
    pub abi: u32,
    /// Its entry points (`evolve`, `decide`, `react`, `query`, …).
    pub exports: Vec<String>,
    /// When it was first stored.
    pub uploaded_at: String,
    /// Members this client does not know yet.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A projection's definition (`PUT /v1/projections/{name}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProjectionSpec {
    /// The module's id, `sha256:…`.
    pub module: String,
    /// The reducer of an ABI v2 module (left out: the one that fits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reducer: Option<String>,
    /// The events it folds.
    pub selector: Selector,
    /// `stream` (one state per `{entity}/{key}`) or `single` (one state).
    pub partition: String,
}

impl ProjectionSpec {
    /// One state per stream.
    pub fn stream(module: impl Into<String>, selector: Selector) -> ProjectionSpec {
        ProjectionSpec {
            module: module.into(),
            reducer: None,
            selector,
            partition: "stream".into(),
        }
    }

    /// One state for everything selected.
    pub fn single(module: impl Into<String>, selector: Selector) -> ProjectionSpec {
        ProjectionSpec {
            module: module.into(),
            reducer: None,
            selector,
            partition: "single".into(),
        }
    }

    /// The same, running the module's reducer `name`.
    pub fn reducer(mut self, name: impl Into<String>) -> ProjectionSpec {
        self.reducer = Some(name.into());
        self
    }
}

/// A projection's life-cycle request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProjectionAction {
    /// Fold again from position 0, as a new generation that swaps in when caught up.
    Rebuild,
    /// Stop folding; the state is still served.
    Pause,
    /// Fold again (retrying a failed event).
    Resume,
}

/// A reactor's life-cycle request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReactorAction {
    /// Stop reacting.
    Pause,
    /// React again (retrying a failed event).
    Resume,
}

/// Which state a projection read answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateQuery {
    at_position: Option<u64>,
    at_time: Option<String>,
    min_position: Option<u64>,
    timeout_ms: Option<u64>,
}

impl StateQuery {
    /// The live state, as far as the projection has folded.
    pub fn live() -> StateQuery {
        StateQuery::default()
    }

    /// The live state once the projection has folded everything up to `position` (read your
    /// writes: pass an append's `last_position`).
    pub fn min_position(position: u64) -> StateQuery {
        StateQuery {
            min_position: Some(position),
            ..StateQuery::default()
        }
    }

    /// The state after every selected event up to `position`, replayed (time travel).
    pub fn at_position(position: u64) -> StateQuery {
        StateQuery {
            at_position: Some(position),
            ..StateQuery::default()
        }
    }

    /// The state as of the head at an RFC 3339 time, replayed.
    pub fn at_time(time: impl Into<String>) -> StateQuery {
        StateQuery {
            at_time: Some(time.into()),
            ..StateQuery::default()
        }
    }

    /// The longest the server waits for `min_position` (its default when not set).
    pub fn timeout_ms(mut self, ms: u64) -> StateQuery {
        self.timeout_ms = Some(ms);
        self
    }

    pub(super) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(p) = self.at_position {
            pairs.push(("at_position", p.to_string()));
        }
        if let Some(t) = &self.at_time {
            pairs.push(("at_time", t.clone()));
        }
        if let Some(p) = self.min_position {
            pairs.push(("min_position", p.to_string()));
        }
        if let Some(t) = self.timeout_ms {
            pairs.push(("timeout_ms", t.to_string()));
        }
        pairs
    }
}

/// A projection's state (`GET /v1/projections/{name}/state…`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct State {
    /// The state as the module's `evolve` made it.
    pub state: Value,
    /// Every selected event up to this position is folded into it.
    pub position: u64,
    /// How many events were folded into it.
    pub events_applied: u64,
    /// `recordedtime` of the first event folded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// `recordedtime` of the last event folded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// An event a command appended.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct CommandEvent {
    /// `source` (`loom/deciders/{entity}`).
    pub source: String,
    /// `id`, derived from the command so that a retry appends nothing twice.
    pub id: String,
    /// `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The stream.
    pub subject: String,
    /// Global position.
    pub position: u64,
    /// Revision in the stream.
    pub revision: u64,
}

/// The outcome of a command (`POST /v1/commands/{entity}/{key}`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct CommandOutcome {
    /// The stream the command ran on.
    pub subject: String,
    /// The events the decider decided and Loom appended.
    pub events: Vec<CommandEvent>,
    /// The stream's revision after them.
    pub revision: u64,
    /// Whether this was a repeat of a command already run (same `Idempotency-Key`): nothing
    /// was written.
    #[serde(default)]
    pub duplicate: bool,
    /// How many times the decider ran (conflicting appends are retried).
    #[serde(default)]
    pub attempts: u64,
}

/// A backup being downloaded (`GET /v1/backup`).
#[derive(Debug)]
#[non_exhaustive]
pub struct Backup {
    /// The last position the backup holds.
    pub head: u64,
    /// In a cluster, the log sequence the backup covers (0 on a single node).
    pub log_sequence: u64,
    pub(super) response: reqwest::Response,
}

impl Backup {
    /// The database file's bytes, as they arrive.
    pub fn bytes(self) -> impl Stream<Item = Result<Bytes, Error>> {
        use futures_util::StreamExt;
        let url = self.response.url().to_string();
        self.response.bytes_stream().map(move |chunk| {
            chunk.map_err(|source| Error::Transport {
                url: url.clone(),
                source,
            })
        })
    }
}
