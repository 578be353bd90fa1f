//! Deciders and commands: bind a module's `decide` (and the `evolve` it folds state with) to
//! an entity, then run commands on `{entity}/{key}` streams.
//!
//! Routing: `POST /v1/commands/{entity}/{key}` where `{key}` is the rest of the path and may
//! contain `/` (`/v1/commands/cart/eu/42` runs on stream `cart/eu/42`).

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use loom_engine::{Change, CommandError, DeciderSpec, DefinitionError, Kind};

use crate::auth::{Admin, Reader, Writer};
use crate::params::Params;
use crate::problem::ApiError;
use crate::{AppState, put_definition, read_body, require_json, to_json};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/deciders", get(deciders_list))
        .route(
            "/v1/deciders/{entity}",
            put(deciders_put).get(deciders_get).delete(deciders_delete),
        )
        .route("/v1/commands/{entity}/{*key}", post(commands_run))
}

/// Bind a module (exporting `evolve` and `decide`) to an entity: commands on that entity's
/// streams run through it. 201 when new, 200 when changed or the same.
#[utoipa::path(
    put, path = "/v1/deciders/{entity}", tag = "deciders",
    params(("entity" = String, Path, description = "The entity whose streams the decider decides for")),
    request_body(content = loom_engine::DeciderSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "Bound", body = loom_engine::DeciderRecord),
        (status = 200, description = "Rebound to another module, or the same binding was in place", body = loom_engine::DeciderRecord),
        (status = 400, description = "Malformed body", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "Invalid entity, unknown module, module without evolve or decide", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn deciders_put(
    State(state): State<AppState>,
    _: Admin,
    Path(entity): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let location = format!("/v1/deciders/{entity}");
    put_definition(
        &state,
        (&uri, &headers, body),
        location,
        ApiError::InvalidRegistration,
        move |e, spec: DeciderSpec| {
            let outcome = e
                .change(Change::PutDecider {
                    entity: entity.clone(),
                    spec,
                })?
                .put();
            // Deleted by another request right after binding.
            let record = e.deciders().get(&entity).ok_or(DefinitionError::NotFound {
                kind: Kind::Decider,
                name: entity,
            })?;
            Ok((outcome, record))
        },
    )
    .await
}

/// Every decider binding.
#[utoipa::path(
    get, path = "/v1/deciders", tag = "deciders",
    responses((status = 200, description = "Bindings, by entity", body = Vec<loom_engine::DeciderRecord>)),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn deciders_list(
    State(state): State<AppState>,
    _: Reader,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    let list = state.engine_blocking(|e| Ok(e.deciders().list())).await?;
    to_json(StatusCode::OK, &list)
}

/// One decider binding.
#[utoipa::path(
    get, path = "/v1/deciders/{entity}", tag = "deciders",
    params(("entity" = String, Path, description = "Entity")),
    responses(
        (status = 200, description = "The binding", body = loom_engine::DeciderRecord),
        (status = 404, description = "No decider for this entity", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn deciders_get(
    State(state): State<AppState>,
    _: Reader,
    Path(entity): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    let record = state
        .engine_blocking(move |e| {
            e.deciders().get(&entity).ok_or_else(|| {
                DefinitionError::NotFound {
                    kind: Kind::Decider,
                    name: entity,
                }
                .into()
            })
        })
        .await?;
    to_json(StatusCode::OK, &record)
}

/// Unbind a decider (the events its commands wrote stay).
#[utoipa::path(
    delete, path = "/v1/deciders/{entity}", tag = "deciders",
    params(("entity" = String, Path, description = "Entity")),
    responses(
        (status = 204, description = "Unbound"),
        (status = 404, description = "No decider for this entity", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn deciders_delete(
    State(state): State<AppState>,
    _: Admin,
    Path(entity): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    state
        .engine_blocking(move |e| Ok(e.change(Change::DeleteDecider { entity }).map(|_| ())?))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Run a command on stream `{entity}/{key}`: Loom folds the stream's state, calls the
/// decider's `decide`, and appends the events it returns with the revision it read as the
/// expected revision, deciding again after a conflict (bounded). With an `Idempotency-Key`
/// header a repeated command returns the first result and writes nothing.
#[utoipa::path(
    post, path = "/v1/commands/{entity}/{key}", tag = "deciders",
    params(
        ("entity" = String, Path, description = "Entity (a decider must be bound to it)"),
        ("key" = String, Path, description = "Stream key; may contain '/'"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 200, pattern = "^[^/]+$", description = "1-200 characters without '/'; a repeated key returns the first result"),
    ),
    request_body(description = "The command, as JSON (the decider's own format)", content((Object = "application/json"))),
    responses(
        (status = 200, description = "Decided and appended (or a duplicate of an earlier run)", body = loom_engine::CommandOutcome),
        (status = 400, description = "Malformed command JSON, key or Idempotency-Key", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No decider for this entity", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 409, description = "The stream kept changing; every retry conflicted", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "The decider rejected the command (its message is the detail; nothing was written), or its events broke the registry", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["writer"]), ())
)]
pub(crate) async fn commands_run(
    State(state): State<AppState>,
    _: Writer,
    Path((entity, key)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    require_json(&headers)?;
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::BadRequest("the Idempotency-Key header is not ASCII".into()))
        })
        .transpose()?;
    let bytes = read_body(&state, &headers, body).await?;
    // Counted on the blocking thread: a command whose client went away still ran to the end
    // (its events are stored), and the counter must say so.
    let counted = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let result =
            counted
                .engine()
                .deciders()
                .run(&entity, &key, &bytes, idempotency_key.as_deref());
        let outcome = match &result {
            Ok(o) if o.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Contention { .. }) => "contention",
            Err(_) => "error",
        };
        counted.inner.metrics.record_command(outcome);
        result
    })
    .await?;
    to_json(StatusCode::OK, &result?)
}
