//! What a reactor is, as the API takes and shows it.

use super::*;

/// A reactor's definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactorSpec {
    /// Module id, exporting `react`.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub module: String,
    /// The reducer of the module to run (ABI v2 modules; left out, the one reducer that
    /// fits). ABI v1 modules have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reducer: Option<String>,
    /// Which events it reacts to.
    #[serde(default)]
    pub selector: Selector,
    /// Where `deliver` effects are POSTed (CloudEvents HTTP binding, structured mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// Whether it also reacts to the events it appended itself (source
    /// `loom/reactors/{name}`). Off by default: a reactor whose selector matches its own
    /// output would otherwise feed itself forever.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub react_to_own: bool,
}

/// Delivery retry policy.
#[derive(Clone, Debug)]
pub struct SinkPolicy {
    /// Attempts before the reactor fails.
    pub attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for SinkPolicy {
    fn default() -> Self {
        SinkPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `GET /v1/reactors/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactorStatus {
    /// Name.
    pub name: String,
    /// Definition.
    pub spec: ReactorSpec,
    /// Status.
    pub status: Status,
    /// Every selected event up to here has been reacted to.
    pub position: u64,
    /// The ledger's head.
    pub head: u64,
    /// `head - position`.
    pub lag: u64,
    /// Events reacted to.
    pub reacted: u64,
    /// Events appended.
    pub appended: u64,
    /// Commands run.
    pub commands: u64,
    /// CloudEvents delivered to the sink.
    pub delivered: u64,
    /// What stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Failure>,
}
