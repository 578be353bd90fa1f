//! Projections: definitions, status and life cycle. Reading their state is in
//! [`super::projection_state`].

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use loom_engine::{Change, ProjectionSpec};

use crate::auth::{Admin, Reader};
use crate::params::Params;
use crate::problem::ApiError;
use crate::{AppState, put_definition, to_json};

pub(crate) fn router() -> Router<AppState> {
    use super::projection_state::*;
    Router::new()
        .route("/v1/projections", get(projections_list))
        .route(
            "/v1/projections/{name}",
            put(projections_put)
                .get(projections_get)
                .delete(projections_delete),
        )
        .route("/v1/projections/{name}/state", get(projections_state))
        .route(
            "/v1/projections/{name}/state/{entity}/{*key}",
            get(projections_state_key),
        )
        .route("/v1/projections/{name}/keys", get(projections_keys))
        .route("/v1/projections/{name}/query", post(projections_query))
        .route(
            "/v1/projections/{name}/query/{entity}/{*key}",
            post(projections_query_key),
        )
        .route("/v1/projections/{name}/rebuild", post(projections_rebuild))
        .route("/v1/projections/{name}/pause", post(projections_pause))
        .route("/v1/projections/{name}/resume", post(projections_resume))
}

/// Create or change a projection. A new name starts catching up (201); the same definition
/// again changes nothing (200); a changed definition builds a new generation in the
/// background while the current one keeps serving, and swaps when caught up (202).
#[utoipa::path(
    put, path = "/v1/projections/{name}", tag = "projections",
    params(("name" = String, Path, description = "1-128 ASCII letters, digits, '_', '-', '.'")),
    request_body(content = loom_engine::ProjectionSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; catching up", body = loom_engine::ProjectionStatus),
        (status = 200, description = "The same definition was in place", body = loom_engine::ProjectionStatus),
        (status = 202, description = "Upgrading: the new generation builds in the background (see `next`)", body = loom_engine::ProjectionStatus),
        (status = 400, description = "Malformed body", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name, unknown module, module without evolve, invalid selector", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn projections_put(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let location = format!("/v1/projections/{name}");
    put_definition(
        &state,
        (&uri, &headers, body),
        location,
        ApiError::InvalidProjection,
        move |e, spec: ProjectionSpec| {
            let outcome = e
                .change(Change::PutProjection {
                    name: name.clone(),
                    spec,
                })?
                .put();
            Ok((outcome, e.projections().status(&name)?))
        },
    )
    .await
}

/// Every projection's status.
#[utoipa::path(
    get, path = "/v1/projections", tag = "projections",
    responses((status = 200, description = "Statuses, by name", body = Vec<loom_engine::ProjectionStatus>)),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn projections_list(
    State(state): State<AppState>,
    _: Reader,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    let list = state
        .engine_blocking(|e| Ok(e.projections().list()))
        .await?;
    to_json(StatusCode::OK, &list)
}

/// One projection's status: `running`, `catching_up`, `paused` or `failed`, position, head,
/// lag, keys, events applied, last error; during an upgrade `next` shows the building
/// generation.
#[utoipa::path(
    get, path = "/v1/projections/{name}", tag = "projections",
    params(("name" = String, Path, description = "Projection name")),
    responses(
        (status = 200, description = "Status", body = loom_engine::ProjectionStatus),
        (status = 404, description = "No such projection", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn projections_get(
    State(state): State<AppState>,
    _: Reader,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    let status = state
        .engine_blocking(move |e| Ok(e.projections().status(&name)?))
        .await?;
    to_json(StatusCode::OK, &status)
}

/// Delete a projection and all its state.
#[utoipa::path(
    delete, path = "/v1/projections/{name}", tag = "projections",
    params(("name" = String, Path, description = "Projection name")),
    responses(
        (status = 204, description = "Deleted, state dropped"),
        (status = 404, description = "No such projection", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn projections_delete(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    state
        .engine_blocking(move |e| Ok(e.change(Change::DeleteProjection { name }).map(|_| ())?))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Runs a life-cycle operation and answers the status after it.
async fn life_cycle(
    state: AppState,
    uri: &Uri,
    name: String,
    code: StatusCode,
    change: fn(String) -> Change,
) -> Result<Response, ApiError> {
    Params::parse(uri, &[])?;
    let status = state
        .engine_blocking(move |e| {
            e.change(change(name.clone()))?;
            Ok(e.projections().status(&name)?)
        })
        .await?;
    to_json(code, &status)
}

/// Start again from position 0: the state is dropped now and rebuilt in the background.
#[utoipa::path(
    post, path = "/v1/projections/{name}/rebuild", tag = "projections",
    params(("name" = String, Path, description = "Projection name")),
    responses(
        (status = 202, description = "Rebuilding", body = loom_engine::ProjectionStatus),
        (status = 404, description = "No such projection", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn projections_rebuild(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    life_cycle(state, &uri, name, StatusCode::ACCEPTED, |name| {
        Change::RebuildProjection { name }
    })
    .await
}

/// Pause a projection (both generations during an upgrade); its state keeps being served.
#[utoipa::path(
    post, path = "/v1/projections/{name}/pause", tag = "projections",
    params(("name" = String, Path, description = "Projection name")),
    responses(
        (status = 200, description = "Paused", body = loom_engine::ProjectionStatus),
        (status = 404, description = "No such projection", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn projections_pause(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    life_cycle(state, &uri, name, StatusCode::OK, |name| {
        Change::PauseProjection { name }
    })
    .await
}

/// Resume a paused or failed projection; a failed one retries the event it failed on.
#[utoipa::path(
    post, path = "/v1/projections/{name}/resume", tag = "projections",
    params(("name" = String, Path, description = "Projection name")),
    responses(
        (status = 200, description = "Resumed", body = loom_engine::ProjectionStatus),
        (status = 404, description = "No such projection", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn projections_resume(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    life_cycle(state, &uri, name, StatusCode::OK, |name| {
        Change::ResumeProjection { name }
    })
    .await
}
