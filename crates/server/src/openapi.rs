//! The OpenAPI document, generated with `utoipa` from the handlers' `#[utoipa::path]`
//! attributes. The schema types here describe the wire format only; the server never builds
//! them (the ledger's own types serialize to the same shapes).

#![allow(dead_code)]

use std::collections::BTreeMap;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// The OpenAPI document of the whole API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Loom", description = "An event store that speaks CloudEvents, with WebAssembly projections. Errors are RFC 9457 application/problem+json."),
    paths(
        crate::routes::events::events_post,
        crate::routes::events::events_append,
        crate::routes::events::events_list,
        crate::routes::events::events_query,
        crate::routes::events::events_get,
        crate::routes::events::events_by_id,
        crate::routes::streams::streams_read,
        crate::routes::streams::streams_revision,
        crate::routes::subscribe::subscribe_events,
        crate::routes::entities::entities_put,
        crate::routes::entities::entities_get,
        crate::routes::entities::entities_list,
        crate::routes::modules::modules_upload,
        crate::routes::modules::modules_list,
        crate::routes::modules::modules_get,
        crate::routes::modules::modules_delete,
        crate::routes::projections::projections_put,
        crate::routes::projections::projections_list,
        crate::routes::projections::projections_get,
        crate::routes::projections::projections_delete,
        crate::routes::projection_state::projections_state,
        crate::routes::projection_state::projections_state_key,
        crate::routes::projection_state::projections_keys,
        crate::routes::projection_state::projections_query,
        crate::routes::projection_state::projections_query_key,
        crate::routes::projections::projections_rebuild,
        crate::routes::projections::projections_pause,
        crate::routes::projections::projections_resume,
        crate::routes::deciders::deciders_put,
        crate::routes::deciders::deciders_list,
        crate::routes::deciders::deciders_get,
        crate::routes::deciders::deciders_delete,
        crate::routes::deciders::commands_run,
        crate::routes::reactors::reactors_put,
        crate::routes::reactors::reactors_list,
        crate::routes::reactors::reactors_get,
        crate::routes::reactors::reactors_delete,
        crate::routes::reactors::reactors_pause,
        crate::routes::reactors::reactors_resume,
        crate::routes::ops::ops_health,
        crate::routes::ops::ops_metrics,
        crate::routes::ops::ops_openapi,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "events", description = "Append and read CloudEvents"),
        (name = "streams", description = "One stream by revision"),
        (name = "subscribe", description = "Server-Sent Events"),
        (name = "entities", description = "The event registry"),
        (name = "modules", description = "WebAssembly reducer modules"),
        (name = "projections", description = "Named projections: definitions, status, state, time travel, queries"),
        (name = "deciders", description = "Deciders and commands: decide turns a command into events"),
        (name = "reactors", description = "Reactors: react turns events into appends, commands and sink deliveries"),
        (name = "ops", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// An RFC 9457 problem.
#[derive(ToSchema)]
pub(crate) struct Problem {
    /// `urn:loom:problem:<kind>`.
    #[schema(rename = "type")]
    r#type: String,
    title: String,
    status: u16,
    /// What went wrong, as a sentence.
    detail: String,
}

/// A CloudEvent in the JSON format (structured mode). `subject` names the stream
/// (`{entity}/{key}`); extension attributes are further members.
#[derive(ToSchema)]
pub(crate) struct CloudEvent {
    specversion: String,
    id: String,
    source: String,
    #[schema(rename = "type")]
    r#type: String,
    subject: String,
    time: Option<String>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    data: Option<serde_json::Value>,
    data_base64: Option<String>,
}

/// A stored CloudEvent: the appended event plus `position`, `revision`, `recordedtime`.
#[derive(ToSchema)]
pub(crate) struct StoredCloudEvent {
    specversion: String,
    id: String,
    source: String,
    #[schema(rename = "type")]
    r#type: String,
    subject: String,
    time: Option<String>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    data: Option<serde_json::Value>,
    data_base64: Option<String>,
    /// Global position.
    position: u64,
    /// Revision in the stream.
    revision: u64,
    /// Commit time (RFC 3339).
    recordedtime: String,
}

/// Where one appended event landed.
#[derive(ToSchema)]
pub(crate) struct AppendedEvent {
    source: String,
    id: String,
    subject: String,
    position: u64,
    revision: u64,
}

/// The answer to an append.
#[derive(ToSchema)]
pub(crate) struct AppendResponse {
    events: Vec<AppendedEvent>,
    last_position: u64,
    /// True when the whole batch was stored before (idempotent retry, nothing written).
    duplicate: bool,
}

/// A selector: replay part (`entity`, `keys`, `types`) and filter part (`data`, `meta`:
/// RFC 9535 JSONPath; an event matches when the path selects anything).
#[derive(ToSchema)]
pub(crate) struct SelectorSchema {
    entity: Option<String>,
    keys: Option<Vec<String>>,
    types: Option<Vec<String>>,
    data: Option<String>,
    meta: Option<String>,
}

/// Conditions of an append.
#[derive(ToSchema)]
pub(crate) struct ConditionsSchema {
    /// Per stream: `"any"`, `"none"`, `"exists"` or a revision number.
    expected_revisions: Option<BTreeMap<String, serde_json::Value>>,
    fail_if_events_match: Option<SelectorSchema>,
    /// Only events after this position count for `fail_if_events_match`.
    after: Option<u64>,
}

/// The body of `POST /v1/append`.
#[derive(ToSchema)]
pub(crate) struct AppendBody {
    events: Vec<CloudEvent>,
    conditions: Option<ConditionsSchema>,
}

/// One event type of an entity.
#[derive(ToSchema)]
pub(crate) struct EventTypeSchema {
    /// JSON Schema for the event's data.
    schema: Option<serde_json::Value>,
}

/// An entity's registration.
#[derive(ToSchema)]
pub(crate) struct EntitySpecSchema {
    events: BTreeMap<String, EventTypeSchema>,
    /// Accept any type (listed types still have their schemas checked).
    open: bool,
}

/// A stream's revision.
#[derive(ToSchema)]
pub(crate) struct StreamRevision {
    stream: String,
    /// 0 when the stream has no events.
    revision: u64,
}

/// Health.
#[derive(ToSchema)]
pub(crate) struct Health {
    status: String,
    head: u64,
}

/// Paging parameters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// Only positions after this (default 0).
    after: Option<u64>,
    /// Only positions before this.
    before: Option<u64>,
    /// Page size (default 100, at most 10000 for JSON; NDJSON takes any).
    limit: Option<u64>,
    /// Newest first.
    backwards: Option<bool>,
}

/// Paging and filter parameters of `GET /v1/events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only positions after this (default 0).
    after: Option<u64>,
    /// Only positions before this.
    before: Option<u64>,
    /// Page size (default 100, at most 10000 for JSON; NDJSON takes any).
    limit: Option<u64>,
    /// Newest first.
    backwards: Option<bool>,
    /// Only this stream (`{entity}/{key}`); repeatable.
    subject: Option<String>,
    /// Only this entity.
    entity: Option<String>,
    /// Only these types: repeat the parameter or separate with commas.
    #[param(rename = "type")]
    r#type: Option<String>,
    /// JSONPath over `data`.
    data: Option<String>,
    /// JSONPath over the whole event.
    meta: Option<String>,
}

/// Selector parameters of `GET /v1/subscribe`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubscribeParams {
    /// Start after this position (default 0: from the beginning).
    after: Option<u64>,
    /// Only this stream; repeatable.
    subject: Option<String>,
    /// Only this entity.
    entity: Option<String>,
    /// Only these types (repeat or comma-separate).
    #[param(rename = "type")]
    r#type: Option<String>,
    /// JSONPath over `data`.
    data: Option<String>,
    /// JSONPath over the whole event.
    meta: Option<String>,
}

/// A stored module.
#[derive(ToSchema)]
pub(crate) struct ModuleSchema {
    /// `sha256:<hex>` of the bytes.
    id: String,
    /// Size in bytes.
    size: u64,
    /// Loom ABI version the module speaks.
    abi: u32,
    /// Entry points: `evolve`, `decide`, `react`, `query`.
    exports: Vec<String>,
    /// Upload time (RFC 3339).
    uploaded_at: String,
}

/// A projection's definition.
#[derive(ToSchema)]
pub(crate) struct ProjectionSpecSchema {
    /// Module id (`sha256:…`), exporting `evolve`.
    module: String,
    /// Which events it folds (default: all).
    selector: Option<SelectorSchema>,
    /// `stream` (one state per `{entity}/{key}`, default) or `single` (one state).
    partition: Option<String>,
}

/// The error that stopped a generation.
#[derive(ToSchema)]
pub(crate) struct FailureSchema {
    /// Position of the event the module failed on (0: not tied to an event).
    position: u64,
    /// The module's (or engine's) message.
    message: String,
}

/// A building generation during an upgrade.
#[derive(ToSchema)]
pub(crate) struct NextSchema {
    spec: ProjectionSpecSchema,
    generation: u64,
    module: String,
    status: String,
    position: u64,
    head: u64,
    lag: u64,
    keys: u64,
    events_applied: u64,
    last_error: Option<FailureSchema>,
}

/// A projection's status (the serving generation's progress, flattened).
#[derive(ToSchema)]
pub(crate) struct ProjectionStatusSchema {
    name: String,
    /// The serving definition.
    spec: ProjectionSpecSchema,
    /// Creation time (RFC 3339).
    created_at: String,
    /// Grows with every upgrade or rebuild.
    generation: u64,
    module: String,
    /// `running`, `catching_up`, `paused` or `failed`.
    status: String,
    /// Every selected event up to here is folded.
    position: u64,
    /// The ledger's head.
    head: u64,
    /// `head - position`.
    lag: u64,
    /// Partition keys with state.
    keys: u64,
    /// Events folded.
    events_applied: u64,
    /// What stopped it, when failed.
    last_error: Option<FailureSchema>,
    /// The generation building in the background during an upgrade.
    next: Option<NextSchema>,
}

/// A projection state.
#[derive(ToSchema)]
pub(crate) struct StateSchema {
    /// The state, as the module's `evolve` made it.
    state: serde_json::Value,
    /// The state includes every selected event up to this position.
    position: u64,
    /// Events folded into this state.
    events_applied: u64,
    /// Recorded time of the first event folded (null: none).
    created_at: Option<String>,
    /// Recorded time of the last event folded (null: none).
    updated_at: Option<String>,
}

/// Which state to read.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StateParams {
    /// The state after every selected event up to this position (replayed).
    at_position: Option<u64>,
    /// The state at this time (RFC 3339): as of the head at that time (replayed).
    at_time: Option<String>,
    /// Wait until the projection has folded everything up to this position (read-your-writes).
    min_position: Option<u64>,
    /// Longest wait for `min_position`, ms (default and cap: the server's max wait, 10 s).
    timeout_ms: Option<u64>,
}

/// `PUT /v1/deciders/{entity}`.
#[derive(ToSchema)]
pub(crate) struct DeciderSpecSchema {
    /// Module id (`sha256:…`) exporting `evolve` and `decide`.
    module: String,
}

/// A decider binding.
#[derive(ToSchema)]
pub(crate) struct DeciderSchema {
    entity: String,
    module: String,
    /// When it was (last) bound, RFC 3339.
    updated_at: String,
}

/// One event a command appended.
#[derive(ToSchema)]
pub(crate) struct CommandEventSchema {
    source: String,
    id: String,
    #[schema(rename = "type")]
    r#type: String,
    subject: String,
    position: u64,
    revision: u64,
}

/// The result of a command.
#[derive(ToSchema)]
pub(crate) struct CommandOutcomeSchema {
    /// The stream, `{entity}/{key}`.
    subject: String,
    /// Events appended (none when `decide` returned none).
    events: Vec<CommandEventSchema>,
    /// The stream's revision after the command.
    revision: u64,
    /// True when an earlier command with the same `Idempotency-Key` had run: its events are
    /// returned and nothing was written.
    duplicate: bool,
    /// How many times the command was decided (more than 1 after conflicts).
    attempts: u64,
}

/// `PUT /v1/reactors/{name}`.
#[derive(ToSchema)]
pub(crate) struct ReactorSpecSchema {
    /// Module id (`sha256:…`) exporting `react`.
    module: String,
    /// Which events it reacts to (default: all).
    selector: Option<SelectorSchema>,
    /// Where `deliver` effects are POSTed (CloudEvents HTTP binding, structured mode).
    sink: Option<String>,
    /// Also react to the events it appended itself (source `loom/reactors/{name}`); default
    /// false, so that a reactor cannot feed itself.
    react_to_own: Option<bool>,
}

/// A reactor's status.
#[derive(ToSchema)]
pub(crate) struct ReactorStatusSchema {
    name: String,
    spec: ReactorSpecSchema,
    /// `running`, `paused` or `failed`.
    status: String,
    /// Every selected event up to here has been reacted to.
    position: u64,
    head: u64,
    lag: u64,
    reacted: u64,
    appended: u64,
    commands: u64,
    delivered: u64,
    /// What stopped it.
    last_error: Option<FailureSchema>,
}
