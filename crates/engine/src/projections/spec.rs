//! What a projection is, as the API takes and shows it: definitions, statuses, states.

use serde::{Deserialize, Serialize};

use loom_ledger::Selector;

use crate::lifecycle::{Failure, Status};

/// How a projection partitions its state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Partition {
    /// One state per stream (`{entity}/{key}`).
    #[default]
    Stream,
    /// One state for everything selected.
    Single,
}

/// A projection's definition, as `PUT /v1/projections/{name}` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectionSpec {
    /// Module id (`sha256:…`), exporting `evolve`.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub module: String,
    /// The reducer of the module to run (ABI v2 modules; left out, the one reducer that
    /// fits). ABI v1 modules have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reducer: Option<String>,
    /// Which events it folds (default: all).
    #[serde(default)]
    pub selector: Selector,
    /// Partitioning (default: per stream).
    #[serde(default)]
    pub partition: Partition,
    /// Fail at an event whose type the reducer does not decode, instead of skipping it (and
    /// counting it in the status). Only ABI v2 reducers say what they decode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// What a module error does: stop the whole projection at the failing event (default),
    /// or quarantine the failing stream and fold the others on (`stream` partition only).
    #[serde(default, skip_serializing_if = "OnError::is_stop")]
    pub on_error: OnError,
}

/// What a module error does to a projection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OnError {
    /// The projection stops at the failing event (status `failed`); `resume` retries it.
    #[default]
    Stop,
    /// The failing stream is set aside with its position and message; the other streams
    /// keep folding; `resume` retries the quarantined streams.
    Quarantine,
}

impl OnError {
    fn is_stop(&self) -> bool {
        *self == OnError::Stop
    }
}

/// A stream a projection set aside after a module error (`on_error: quarantine`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quarantined {
    /// The stream, `{entity}/{key}`.
    pub key: String,
    /// The event it failed at.
    pub position: u64,
    /// The module's message.
    pub message: String,
}

/// One generation's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GenerationStatus {
    /// Generation number (increases with every upgrade or rebuild).
    pub generation: u64,
    /// Its module.
    pub module: String,
    /// Status.
    pub status: Status,
    /// Every selected event up to here is folded.
    pub position: u64,
    /// The ledger's head.
    pub head: u64,
    /// `head - position`.
    pub lag: u64,
    /// Partition keys with state.
    pub keys: u64,
    /// Events folded.
    pub events_applied: u64,
    /// The error that stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Failure>,
    /// Events of a type the reducer does not decode, by type: selected, but not folded
    /// (ABI v2 reducers say which types they decode).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// Streams set aside after a module error (`on_error: quarantine`), until `resume`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<Quarantined>,
    /// Waiting in line to catch up: more projections are catching up than the server lets
    /// catch up at once (`--projection-catch-ups`). Left out when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
}

/// `GET /v1/projections/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectionStatus {
    /// Name.
    pub name: String,
    /// The serving definition.
    pub spec: ProjectionSpec,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// The serving generation.
    #[serde(flatten)]
    pub active: GenerationStatus,
    /// A generation building in the background, if an upgrade is under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<NextStatus>,
}

/// The building generation of an upgrade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NextStatus {
    /// Its definition.
    pub spec: ProjectionSpec,
    /// Its progress.
    #[serde(flatten)]
    pub progress: GenerationStatus,
}

/// Which moment a state query is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The live state.
    Now,
    /// The state after every selected event up to this position (replayed).
    Position(u64),
    /// The state at this time (µs since the epoch): the position the head had then.
    Time(i64),
}

/// A state answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateView {
    /// The state, JSON.
    pub state: Vec<u8>,
    /// The state includes every selected event up to this position.
    pub position: u64,
    /// Events folded into this state.
    pub events_applied: u64,
    /// Recorded time of the first event folded (µs), if any.
    pub created_micros: Option<i64>,
    /// Recorded time of the last event folded (µs), if any.
    pub updated_micros: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) spec: ProjectionSpec,
    pub(super) generation: u64,
    #[serde(default)]
    pub(super) pending: Option<PendingRecord>,
    #[serde(default)]
    pub(super) paused: bool,
    #[serde(default)]
    pub(super) failure: Option<Failure>,
    #[serde(default)]
    pub(super) pending_failure: Option<Failure>,
    pub(super) created_micros: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct PendingRecord {
    pub(super) spec: ProjectionSpec,
    pub(super) generation: u64,
}
