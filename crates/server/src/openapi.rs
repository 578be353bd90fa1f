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
        crate::routes::streams::streams_list,
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
        crate::cluster::cluster_snapshot,
        crate::cluster::cluster_snapshots,
        crate::cluster::cluster_trim,
        crate::routes::backup::backup_get,
        crate::routes::ops::ops_metrics,
        crate::routes::ops::ops_openapi,
        crate::routes::ops::ops_whoami,
    ),
    components(schemas(crate::params::Mode)),
    modifiers(&BearerAuth, &CommonAnswers, &PathNames, &OptionalBodies),
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

/// Answers every operation of a kind can give, added to each so that the document names every
/// status the server may answer: 400 for a malformed or unknown query parameter (every handler
/// refuses those), 401/403 where a token is needed, 413/415 where a JSON body is taken, 503
/// (storage unavailable, shutting down, too many waits, no cluster sequencer), 504 where
/// `min_position` waits. Operations that take no parameters (`/healthz`, `/metrics`, this
/// document, `/v1/cluster`) get none of them.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        const PLAIN: [&str; 5] = [
            "/healthz",
            "/metrics",
            "/v1/openapi.json",
            "/v1/cluster",
            "/v1/whoami",
        ];
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if PLAIN.contains(&path.as_str()) {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.keys().any(|k| k.contains("json")));
                let waits = op
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.name == "min_position");
                let mut answers = vec![(
                    "400",
                    "Bad request: an unknown, repeated or malformed query parameter, or a malformed body",
                )];
                if secured {
                    answers.push((
                        "401",
                        "No bearer token, or an unknown one (when the server has tokens)",
                    ));
                    answers.push(("403", "The token's role may not do this"));
                }
                if json_body {
                    answers.push(("413", "The body is larger than the server takes"));
                    answers.push((
                        "415",
                        "The body's Content-Type is not one this operation takes",
                    ));
                }
                answers.push((
                    "503",
                    "Unavailable: storage failure, shutting down, too many waits, or no cluster \
                     sequencer; retry after Retry-After",
                ));
                if waits {
                    answers.push(("504", "min_position was not reached within the wait"));
                }
                for (status, description) in answers {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(description));
                }
            }
        }
    }
}

/// The grammar of the names in paths, so that a client (or a generator of test requests) knows
/// what the server takes: entity, projection and reactor names, module ids, non-empty keys.
struct PathNames;

impl Modify for PathNames {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use loom_core::openapi::{MODULE_ID_PATTERN, NAME_PATTERN};
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        use utoipa::openapi::{RefOr, Schema};
        let string = |description: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::String))
                .description(Some(description))
                .min_length(Some(1))
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                for p in op.parameters.iter_mut().flatten() {
                    if !matches!(p.parameter_in, ParameterIn::Path) {
                        continue;
                    }
                    let schema = match p.name.as_str() {
                        "entity" | "name" => {
                            string("A name: 1-128 ASCII letters, digits, '_', '-', '.'")
                                .pattern(Some(NAME_PATTERN))
                        }
                        "id" => string("A module id, sha256:<64 hex digits>")
                            .pattern(Some(MODULE_ID_PATTERN)),
                        "key" => string("A stream key (any non-empty text; may contain '/')"),
                        _ => continue,
                    };
                    p.schema = Some(RefOr::T(Schema::Object(schema.build())));
                }
            }
        }
    }
}

/// Operations whose body may be left out: a selector read without one reads every event, a
/// projection query without one passes `{}`.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::Required;
        const OPTIONAL: [&str; 3] = [
            "/v1/events/query",
            "/v1/projections/{name}/query",
            "/v1/projections/{name}/query/{entity}/{key}",
        ];
        for path in OPTIONAL {
            if let Some(body) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
                .and_then(|op| op.request_body.as_mut())
            {
                body.required = Some(Required::False);
            }
        }
    }
}
