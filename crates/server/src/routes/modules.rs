//! Modules: wasm reducers uploaded as raw bytes, stored content-addressed (`sha256:<hex>`).
//!
//! Validation (wasm, ABI version, imports, exports) and storage are the engine's; this module
//! reads the body under its own size limit ([`crate::Config::max_module_bytes`]) and maps the
//! answers to HTTP.

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::{Admin, Reader};
use crate::params::Params;
use crate::problem::ApiError;
use crate::{AppState, created_or_ok, json_at, read_body_limited, to_json};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/modules", post(modules_upload).get(modules_list))
        .route("/v1/modules/{id}", get(modules_get).delete(modules_delete))
}

/// Upload a module: the raw wasm bytes as the body (any `Content-Type`; `application/wasm`
/// is the proper one). The same bytes always give the same id.
#[utoipa::path(
    post, path = "/v1/modules", tag = "modules",
    request_body(description = "The module's wasm bytes", content((String = "application/wasm"))),
    responses(
        (status = 201, description = "Stored", body = loom_engine::ModuleRecord,
            headers(("Location" = String, description = "/v1/modules/{id}"))),
        (status = 200, description = "The same bytes were stored already (idempotent)", body = loom_engine::ModuleRecord),
        (status = 413, description = "Larger than the module size limit", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "Not a module Loom runs: invalid wasm, wrong ABI version, forbidden import (e.g. WASI), bad export", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn modules_upload(
    State(state): State<AppState>,
    _: Admin,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    let limit = state.config().max_module_bytes;
    let bytes = read_body_limited(limit, &headers, body).await?;
    if bytes.is_empty() {
        return Err(ApiError::InvalidModule(
            "the body is empty: send the module's wasm bytes (curl --data-binary @module.wasm)"
                .into(),
        ));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(ApiError::InvalidModule(
            "the body is not a WebAssembly module: it does not start with the wasm magic bytes \
             (\\0asm); send the bytes of the .wasm file (curl --data-binary @module.wasm)"
                .into(),
        ));
    }
    let uploaded = state
        .engine_blocking(move |e| {
            Ok(e.change(loom_engine::Change::UploadModule {
                bytes: bytes.to_vec(),
            })?
            .uploaded())
        })
        .await?;
    state.inner.metrics.record_upload(uploaded.created);
    json_at(
        created_or_ok(!uploaded.created),
        &uploaded.record,
        &format!("/v1/modules/{}", uploaded.record.id),
    )
}

/// Every stored module, by id.
#[utoipa::path(
    get, path = "/v1/modules", tag = "modules",
    responses(
        (status = 200, description = "The modules", body = Vec<loom_engine::ModuleRecord>),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn modules_list(
    State(state): State<AppState>,
    _: Reader,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    let list = state.engine_blocking(|e| Ok(e.modules().list()?)).await?;
    to_json(StatusCode::OK, &list)
}

/// One module's record.
#[utoipa::path(
    get, path = "/v1/modules/{id}", tag = "modules",
    params(("id" = String, Path, description = "Module id, sha256:<hex>")),
    responses(
        (status = 200, description = "The module", body = loom_engine::ModuleRecord),
        (status = 404, description = "No such module", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn modules_get(
    State(state): State<AppState>,
    _: Reader,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    let found = {
        let id = id.clone();
        state
            .engine_blocking(move |e| Ok(e.modules().get(&id)?))
            .await?
    };
    match found {
        Some(record) => to_json(StatusCode::OK, &record),
        None => Err(ApiError::NotFound(not_stored(&id))),
    }
}

fn not_stored(id: &str) -> String {
    format!("module {id} is not stored; upload it with POST /v1/modules")
}

/// Delete a module nobody uses. While a projection names it (active or building), the answer
/// is a 409 whose `users` lists them.
#[utoipa::path(
    delete, path = "/v1/modules/{id}", tag = "modules",
    params(("id" = String, Path, description = "Module id, sha256:<hex>")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such module", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 409, description = "In use; `users` names the users", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn modules_delete(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    Params::parse(&uri, &[])?;
    state
        .engine_blocking(move |e| Ok(e.delete_module(&id)?))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
