//! Operations: health, Prometheus metrics, the OpenAPI document.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;

use crate::auth::Reader;
use crate::openapi::ApiDoc;
use crate::problem::ApiError;
use crate::{AppState, json_response};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(ops_health))
        .route("/metrics", get(ops_metrics))
        .route("/v1/openapi.json", get(ops_openapi))
        .route("/v1/whoami", get(ops_whoami))
}

/// The answer of `/v1/whoami`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct WhoAmI {
    /// What the presented token may do: `admin` ⊇ `writer` ⊇ `reader` (`admin` on a server
    /// without tokens; `null` when no token was sent to a server that wants one).
    #[schema(value_type = Option<String>, pattern = "^(admin|writer|reader)$")]
    role: Option<&'static str>,
    /// Whether the server takes requests without a token.
    open: bool,
}

/// The role of the presented token, so that a client (the console) shows only what the token
/// may do, and whether the server needs a token at all. A 401 for an unknown token.
#[utoipa::path(
    get, path = "/v1/whoami", tag = "ops",
    responses(
        (status = 200, description = "The token's role", body = WhoAmI),
        (status = 401, description = "An unknown token", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ())
)]
pub(crate) async fn ops_whoami(caller: crate::auth::Caller) -> axum::Json<WhoAmI> {
    axum::Json(WhoAmI {
        role: caller.role.map(|r| r.as_str()),
        open: caller.open,
    })
}

/// The answer of `/healthz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `ok`: an answer at all means the server is up.
    status: &'static str,
    /// The ledger's head position.
    head: u64,
    /// Cluster mode: this node's role (`follower`, `candidate`, `sequencer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    /// Cluster mode: messages of the cluster's log not applied here yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    behind: Option<u64>,
}

/// Liveness: answers 200 with the head position while the server runs. Needs no token.
#[utoipa::path(
    get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Up", body = crate::routes::ops::Health))
)]
pub(crate) async fn ops_health(State(state): State<AppState>) -> Response {
    let body = Health {
        status: "ok",
        head: state.ledger().head(),
        role: None,
        behind: None,
    };
    let body = match &state.inner.config.replication {
        Some(r) => Health {
            role: r.status()["role"].as_str().map(str::to_owned),
            behind: Some(r.progress().behind()),
            ..body
        },
        None => body,
    };
    json_response(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&body).expect("a health answer serializes"),
    )
}

/// Metrics in the Prometheus text format: appends, events, conflicts, commit latency
/// histogram, open subscriptions, module uploads, projection progress and status, state
/// query latency histogram, HTTP requests.
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4")),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn ops_metrics(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Response, ApiError> {
    let projections = state
        .engine_blocking(|e| Ok(e.projections().list()))
        .await?;
    let mut text = state.inner.metrics.render(state.ledger(), &projections);
    if let Some(r) = &state.inner.config.replication {
        crate::metrics::render_cluster(&mut text, r.is_sequencer(), r.progress());
    }
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// This API's OpenAPI 3.1 document. Needs no token.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub(crate) async fn ops_openapi() -> Response {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default().into_bytes());
    json_response(StatusCode::OK, "application/json", bytes.clone())
}
