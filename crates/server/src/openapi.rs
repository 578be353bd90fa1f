//! The OpenAPI document, generated with `utoipa` from the handlers' `#[utoipa::path]`
//! attributes. Bodies are described by the types the server really parses and writes: the
//! model's and the engine's (feature `openapi` of `loom-core` and `loom-engine`) and the
//! server's own answers; query strings by the parameter sets in [`crate::params`].

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        crate::cluster::cluster_status,
        crate::routes::backup::backup_get,
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
