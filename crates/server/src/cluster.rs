//! Cluster mode as the HTTP API sees it: `GET /v1/cluster`, and writes made on a follower
//! forwarded to the sequencer, so that clients may use any node.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::auth::Reader;
use crate::json_response;
use crate::problem::ApiError;

/// What the server needs to know of the cluster this node belongs to (implemented by the
/// `loom` binary over `loom-cluster`).
pub trait Replication: Send + Sync + std::fmt::Debug {
    /// The node's view of the cluster, as `GET /v1/cluster` answers it.
    fn status(&self) -> serde_json::Value;
    /// Where writes go when this node is not the sequencer: the sequencer's base URL
    /// (`None` when this node is the sequencer, or no node is).
    fn forward_to(&self) -> Option<String>;
    /// Whether this node decides writes itself now.
    fn is_sequencer(&self) -> bool;
    /// How far this node has applied the cluster's log (for `/metrics` and `/healthz`).
    fn progress(&self) -> Progress;
    /// Stores a backup file of this node as the cluster's snapshot of `log_sequence`;
    /// answers what was stored.
    fn snapshot(
        &self,
        file: std::path::PathBuf,
        head: u64,
        log_sequence: u64,
    ) -> futures_util::future::BoxFuture<'_, Result<serde_json::Value, String>>;
    /// The cluster's snapshots, oldest first.
    fn snapshots(&self) -> futures_util::future::BoxFuture<'_, Result<serde_json::Value, String>>;
    /// Keeps the newest `keep` snapshots and trims the stream below the oldest kept one.
    /// (`force`: even if some nodes have not applied that far).
    fn trim(
        &self,
        keep: usize,
        force: bool,
    ) -> futures_util::future::BoxFuture<'_, Result<serde_json::Value, String>>;
}

/// How far a node has applied the cluster's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The log sequence of the last message this node applied.
    pub applied: u64,
    /// The log's last sequence, as last seen.
    pub log_last: u64,
    /// Times this node became the sequencer since it started.
    pub terms: u64,
}

impl Progress {
    /// Messages in the log this node has not applied yet.
    pub fn behind(&self) -> u64 {
        self.log_last.saturating_sub(self.applied)
    }
}

/// Set on a forwarded request, so that it is never forwarded twice.
pub(crate) const FORWARDED: HeaderName = HeaderName::from_static("loom-forwarded-by");

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/cluster", get(cluster_status))
        .route(
            "/v1/cluster/snapshots",
            get(cluster_snapshots).post(cluster_snapshot),
        )
        .route("/v1/cluster/trim", axum::routing::post(cluster_trim))
}

/// This node's view of the cluster: its role, the sequencer, how far it has applied the log.
#[utoipa::path(
    get, path = "/v1/cluster", tag = "ops",
    responses(
        (status = 200, description = "This node's view of the cluster", content_type = "application/json"),
        (status = 404, description = "Not a cluster node", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn cluster_status(State(state): State<AppState>, _: Reader) -> Response {
    match &state.inner.config.replication {
        Some(r) => json_response(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&r.status()).expect("JSON serializes"),
        ),
        None => ApiError::NotFound("this server is a single node, not a cluster member".into())
            .into_response(),
    }
}

fn replication(state: &AppState) -> Result<std::sync::Arc<dyn Replication>, ApiError> {
    state.inner.config.replication.clone().ok_or_else(|| {
        ApiError::NotFound("this server is a single node, not a cluster member".into())
    })
}

/// Takes a snapshot of this node (a consistent backup, while it runs) and stores it in the
/// cluster's object store; a node started on an empty data directory starts from the latest.
/// Not forwarded: any node may take one.
#[utoipa::path(
    post, path = "/v1/cluster/snapshots", tag = "ops",
    responses(
        (status = 201, description = "Stored: name, log_sequence, head, bytes, node", content_type = "application/json"),
        (status = 404, description = "Not a cluster node", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn cluster_snapshot(
    State(state): State<AppState>,
    _: crate::auth::Admin,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> Result<Response, ApiError> {
    crate::params::Params::parse(&uri, &[])?;
    let replication = replication(&state)?;
    let (path, info) = state
        .blocking(|ledger| {
            let dir = ledger.path().parent().unwrap_or(std::path::Path::new("."));
            let path = dir.join(format!("snapshot-{}.redb.partial", ledger.log_sequence()));
            let _ = std::fs::remove_file(&path);
            let info = ledger.backup_to(&path).map_err(ApiError::storage)?;
            Ok((path, info))
        })
        .await?;
    let stored = replication
        .snapshot(path.clone(), info.head, info.log_sequence)
        .await;
    let _ = std::fs::remove_file(&path);
    let stored = stored.map_err(ApiError::Unavailable)?;
    Ok(json_response(
        StatusCode::CREATED,
        "application/json",
        serde_json::to_vec(&stored).expect("JSON serializes"),
    ))
}

/// The cluster's snapshots, oldest first.
#[utoipa::path(
    get, path = "/v1/cluster/snapshots", tag = "ops",
    responses(
        (status = 200, description = "Snapshots: name, log_sequence, head, bytes, node", content_type = "application/json"),
        (status = 404, description = "Not a cluster node", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn cluster_snapshots(
    State(state): State<AppState>,
    _: Reader,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> Result<Response, ApiError> {
    crate::params::Params::parse(&uri, &[])?;
    let all = replication(&state)?
        .snapshots()
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&all).expect("JSON serializes"),
    ))
}

/// Keeps the newest `keep` snapshots (default 2, at least 1), deletes the older ones and
/// removes from the stream every message the oldest kept snapshot covers. New nodes then start
/// from a snapshot; a node that had applied less must be started again from an empty data
/// directory (its status says so).
#[utoipa::path(
    post, path = "/v1/cluster/trim", tag = "ops",
    params(
        ("keep" = Option<u64>, Query, minimum = 1, description = "Snapshots to keep (default 2)"),
        ("force" = Option<bool>, Query, description = "Trim even though some nodes have not applied as far as the oldest snapshot kept"),
    ),
    responses(
        (status = 200, description = "Trimmed: deleted_snapshots, first_sequence, purged_messages", content_type = "application/json"),
        (status = 404, description = "Not a cluster node", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "There is no snapshot to keep, or (without force) a node has not applied as far as the oldest kept", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]), ())
)]
pub(crate) async fn cluster_trim(
    State(state): State<AppState>,
    _: crate::auth::Admin,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> Result<Response, ApiError> {
    let params = crate::params::Params::parse(&uri, &["keep", "force"])?;
    let force = params.bool("force")?;
    let keep = match params.u64("keep")? {
        Some(0) => return Err(ApiError::BadRequest("keep must be at least 1".into())),
        Some(n) => n as usize,
        None => 2,
    };
    let trimmed = replication(&state)?
        .trim(keep, force)
        .await
        .map_err(|why| {
            if why.contains("no snapshot") || why.starts_with("not trimmed") {
                ApiError::Precondition(why)
            } else {
                ApiError::Unavailable(why)
            }
        })?;
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&trimmed).expect("JSON serializes"),
    ))
}

/// Whether a request changes anything (and so must reach the sequencer).
fn is_write(req: &Request) -> bool {
    match *req.method() {
        Method::GET | Method::HEAD | Method::OPTIONS => false,
        // Reads with a body: event queries and projection queries
        // (`/v1/projections/{name}/query`, `/v1/projections/{name}/query/{*key}`).
        Method::POST => {
            let path = req.uri().path();
            let projection_query = path.strip_prefix("/v1/projections/").is_some_and(|rest| {
                let mut parts = rest.splitn(3, '/');
                parts.next();
                parts.next() == Some("query")
            });
            // A snapshot is this node's own.
            path != "/v1/events/query" && path != "/v1/cluster/snapshots" && !projection_query
        }
        _ => true,
    }
}

/// On a follower, sends writes to the sequencer and answers with its response.
pub(crate) async fn forward_writes(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(replication) = state.inner.config.replication.clone() else {
        return next.run(req).await;
    };
    if !is_write(&req) || replication.is_sequencer() {
        return next.run(req).await;
    }
    let Some(target) = replication.forward_to() else {
        return ApiError::Unavailable(
            "the cluster has no sequencer at the moment; retry shortly".into(),
        )
        .into_response();
    };
    if req.headers().contains_key(&FORWARDED) {
        return ApiError::Unavailable(
            "the node this write was forwarded to is not the sequencer (any more); retry shortly"
                .into(),
        )
        .into_response();
    }
    match forward(&state, &target, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn forward(state: &AppState, target: &str, req: Request) -> Result<Response, ApiError> {
    let config = &state.inner.config;
    let limit = config.max_body_bytes.max(config.max_module_bytes);
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?;
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let mut outgoing = forwarder()
        .request(parts.method.clone(), format!("{target}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH && name != header::CONNECTION {
            outgoing = outgoing.header(name, value);
        }
    }
    outgoing = outgoing.header(&FORWARDED, "1");
    let answer = outgoing.send().await.map_err(|e| {
        ApiError::Unavailable(format!(
            "forwarding the write to the sequencer at {target} failed ({e}); retry shortly"
        ))
    })?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != header::CONTENT_LENGTH
            && name != header::TRANSFER_ENCODING
            && name != header::CONNECTION
        {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// One HTTP client for every forwarded write (keeps connections to the sequencer alive).
fn forwarder() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .expect("an HTTP client")
    })
}
