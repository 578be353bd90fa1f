//! Reactors: for each selected event, a module's `react` returns events to append, commands
//! to run and CloudEvents to deliver to a sink. Definitions, status, pause/resume, delete.

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use loom_engine::{Change, ReactorSpec};

use crate::auth::{Admin, Reader};
use crate::params::Params;
use crate::problem::ApiError;
use crate::{AppState, put_definition, to_json};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reactors", get(reactors_list))
        .route(
            "/v1/reactors/{name}",
            put(reactors_put).get(reactors_get).delete(reactors_delete),
        )
        .route("/v1/reactors/{name}/pause", post(reactors_pause))
        .route("/v1/reactors/{name}/resume", post(reactors_resume))
}

/// Create or change a reactor. A new name starts at the beginning of the ledger (201); a
/// changed definition keeps the checkpoint (200).
#[utoipa::path(
    put, path = "/v1/reactors/{name}", tag = "reactors",
    params(("name" = String, Path, description = "1-128 ASCII letters, digits, '_', '-', '.'")),
    request_body(content = loom_engine::ReactorSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; reacting", body = loom_engine::ReactorStatus),
        (status = 200, description = "Changed, or the same definition was in place", body = loom_engine::ReactorStatus),
        (status = 400, description = "Malformed body", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name, unknown module, module without react, invalid selector or sink", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn reactors_put(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let location = format!("/v1/reactors/{name}");
    put_definition(
        &state,
        (&uri, &headers, body),
        location,
        ApiError::InvalidRegistration,
        move |e, spec: ReactorSpec| {
            let outcome = e
                .change(Change::PutReactor {
                    name: name.clone(),
                    spec,
                })?
                .put();
            Ok((outcome, e.reactors().status(&name)?))
        },
    )
    .await
}

/// Every reactor's status.
#[utoipa::path(
    get, path = "/v1/reactors", tag = "reactors",
    responses((status = 200, description = "Statuses, by name", body = Vec<loom_engine::ReactorStatus>)),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn reactors_list(
    State(state): State<AppState>,
    _: Reader,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    let list = state.engine_blocking(|e| Ok(e.reactors().list())).await?;
    to_json(StatusCode::OK, &list)
}

/// One reactor's status: `running`, `paused` or `failed` (with the error, e.g. a sink that
/// stayed down), position, head, lag and counts of reactions and their effects.
#[utoipa::path(
    get, path = "/v1/reactors/{name}", tag = "reactors",
    params(("name" = String, Path, description = "Reactor name")),
    responses(
        (status = 200, description = "Status", body = loom_engine::ReactorStatus),
        (status = 404, description = "No such reactor", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn reactors_get(
    State(state): State<AppState>,
    _: Reader,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    let status = state
        .engine_blocking(move |e| Ok(e.reactors().status(&name)?))
        .await?;
    to_json(StatusCode::OK, &status)
}

/// Delete a reactor and its checkpoint (what it appended and delivered stays).
#[utoipa::path(
    delete, path = "/v1/reactors/{name}", tag = "reactors",
    params(("name" = String, Path, description = "Reactor name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such reactor", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn reactors_delete(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    state
        .engine_blocking(move |e| Ok(e.change(Change::DeleteReactor { name }).map(|_| ())?))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Pause a reactor (its checkpoint stays).
#[utoipa::path(
    post, path = "/v1/reactors/{name}/pause", tag = "reactors",
    params(("name" = String, Path, description = "Reactor name")),
    responses(
        (status = 200, description = "Paused; the status", body = loom_engine::ReactorStatus),
        (status = 404, description = "No such reactor", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn reactors_pause(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    life_cycle(state, &uri, name, |name| Change::PauseReactor { name }).await
}

/// Resume a paused or failed reactor; a failed one retries the event it failed on.
#[utoipa::path(
    post, path = "/v1/reactors/{name}/resume", tag = "reactors",
    params(("name" = String, Path, description = "Reactor name")),
    responses(
        (status = 200, description = "Resumed; the status", body = loom_engine::ReactorStatus),
        (status = 404, description = "No such reactor", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn reactors_resume(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    life_cycle(state, &uri, name, |name| Change::ResumeReactor { name }).await
}

async fn life_cycle(
    state: AppState,
    uri: &Uri,
    name: String,
    change: fn(String) -> Change,
) -> Result<Response, ApiError> {
    Params::parse(uri, &[])?;
    let status = state
        .engine_blocking(move |e| {
            e.change(change(name.clone()))?;
            Ok(e.reactors().status(&name)?)
        })
        .await?;
    to_json(StatusCode::OK, &status)
}
