//! The registry: which event types each entity allows, with JSON Schemas for their data.

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use loom_ledger::{EntitySpec, check_entity_name};

use crate::auth::{Admin, Reader};
use crate::problem::ApiError;
use crate::{AppState, created_or_ok, json_body, to_json};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/entities", get(entities_list))
        .route("/v1/entities/{entity}", get(entities_get).put(entities_put))
}

/// Register or replace an entity: its event types, their schemas, and whether it is open.
#[utoipa::path(
    put, path = "/v1/entities/{entity}", tag = "entities",
    params(("entity" = String, Path, description = "Entity name: 1-128 ASCII letters, digits, '_', '-', '.'")),
    request_body(content = loom_core::EntitySpec, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = loom_core::EntitySpec),
        (status = 200, description = "Registration replaced", body = loom_core::EntitySpec),
        (status = 400, description = "Malformed body", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or JSON Schema", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn entities_put(
    State(state): State<AppState>,
    _: Admin,
    Path(entity): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_entity_name(&entity).map_err(ApiError::InvalidRegistration)?;
    let spec: EntitySpec = json_body(&state, &uri, &headers, body).await?;
    let existed = state.ledger().entity(&entity).is_some();
    let stored = spec.clone();
    state
        .blocking(move |l| Ok(l.put_entity(&entity, spec)?))
        .await?;
    to_json(created_or_ok(existed), &stored)
}

/// One entity's registration.
#[utoipa::path(
    get, path = "/v1/entities/{entity}", tag = "entities",
    params(("entity" = String, Path, description = "Entity name")),
    responses(
        (status = 200, description = "The registration", body = loom_core::EntitySpec),
        (status = 404, description = "Not registered", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn entities_get(
    State(state): State<AppState>,
    _: Reader,
    Path(entity): Path<String>,
) -> Result<Response, ApiError> {
    match state.ledger().entity(&entity) {
        Some(spec) => to_json(StatusCode::OK, &spec),
        None => Err(ApiError::NotFound(format!(
            "entity {entity:?} is not registered; register it with PUT /v1/entities/{entity}"
        ))),
    }
}

/// Every registration, by entity name.
#[utoipa::path(
    get, path = "/v1/entities", tag = "entities",
    responses(
        (status = 200, description = "Registrations by entity name", body = std::collections::BTreeMap<String, loom_core::EntitySpec>),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn entities_list(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Response, ApiError> {
    to_json(StatusCode::OK, &state.ledger().entities())
}
