//! What an entity's registration says: its event types and their JSON Schemas. The ledger
//! compiles and enforces them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One event type of an entity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventTypeSpec {
    /// JSON Schema the event's `data` must satisfy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
}

/// An entity's registration, as `PUT /v1/entities/{entity}` takes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntitySpec {
    /// Allowed event types, by CloudEvents `type` (non-empty names).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::event_types))]
    pub events: BTreeMap<String, EventTypeSpec>,
    /// An open entity accepts any type; listed types still have their schemas checked.
    #[serde(default)]
    pub open: bool,
    /// Only the entity's decider may append to it (through commands), and the reactors
    /// named in `reactors`: a client's append is refused and told to send a command.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub commands_only: bool,
    /// Reactors that may append to a `commands_only` entity directly (by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactors: Vec<String>,
}
