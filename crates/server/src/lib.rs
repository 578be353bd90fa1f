//! Loom's HTTP API: CloudEvents in, CloudEvents out.
//!
//! [`app`] builds the axum [`Router`] over an [`AppState`] (an [`Engine`] over a [`Ledger`],
//! plus [`Config`]); [`serve`] runs it on a listener with graceful shutdown. One module per
//! resource: `events` (appends and reads), `streams`, `entities` (the registry), `subscribe`
//! (Server-Sent Events), `modules` (wasm uploads), `projections`, `deciders` (deciders and
//! commands), `reactors` and `ops` (health, metrics, OpenAPI). Every error is an
//! [`ApiError`], answered as RFC 9457 `application/problem+json`.
//!
//! The server never touches wasm itself: modules, projections, deciders and reactors go
//! through the [`Engine`], whose calls are blocking and run on `spawn_blocking` threads.
//!
//! ```no_run
//! use std::sync::Arc;
//! use loom_engine::{Engine, EngineConfig};
//! use loom_ledger::{Ledger, LedgerOptions};
//! use loom_server::{AppState, Config};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let ledger = Arc::new(Ledger::open("./loom-data", LedgerOptions::default())?);
//! let engine = Arc::new(Engine::open(ledger.clone(), EngineConfig::default())?);
//! let state = AppState::new(engine.clone(), Config::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
//! loom_server::serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! engine.shutdown();
//! ledger.shutdown();
//! # Ok(()) }
//! ```

mod auth;
mod binding;
mod body;
mod cluster;
mod console;
mod metrics;
mod openapi;
mod params;
mod problem;
mod routes;

pub(crate) use body::{charset_is_utf8, media_type, read_body, read_body_limited, require_json};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use loom_engine::Engine;
use loom_ledger::Ledger;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use auth::{Admin, Reader, Role, Token, Writer};
#[doc(hidden)]
pub use binding::fuzzing;
pub use cluster::{Progress, Replication};
pub use openapi::ApiDoc;
pub use problem::{ApiError, PROBLEM_JSON};

/// Settings of the HTTP server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest accepted request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Longest time a request may take to produce its response (longer: 408). Streaming
    /// bodies (NDJSON, Server-Sent Events) are not cut once they started.
    pub request_timeout: Duration,
    /// Bearer tokens. Empty: no authentication (only allowed on loopback, see
    /// [`check_listen`]).
    pub tokens: Vec<Token>,
    /// Interval of heartbeat comments on idle subscriptions.
    pub heartbeat: Duration,
    /// Page size of list reads when the request names no `limit`.
    pub default_page: usize,
    /// Largest page of a JSON list read (NDJSON reads stream any number).
    pub max_page: usize,
    /// Most bytes of stored events in one JSON list page: a page ends early (with its `Link`
    /// to the next) once its events hold this much, so that a page of large events cannot
    /// hold `max_page` × the largest event in memory. A page has at least one event.
    pub max_page_bytes: usize,
    /// Largest wasm module accepted by `POST /v1/modules`, in bytes (larger: 413). Separate
    /// from [`Config::max_body_bytes`], which bounds event bodies.
    pub max_module_bytes: usize,
    /// Longest a `min_position` read waits for its projection (`timeout_ms` is capped to
    /// this; without `timeout_ms` a read waits up to this). Kept below `request_timeout`.
    pub max_wait: Duration,
    /// Longest a client may take to send a request's headers, and longest a kept-alive
    /// connection may sit idle before its next request; then it is closed.
    pub header_timeout: Duration,
    /// Most open connections (subscriptions included); a connection beyond it is closed
    /// as soon as it is accepted.
    pub max_connections: usize,
    /// Most requests waiting for a projection's `min_position` at a time (more: 503). A
    /// wait holds no thread, only this permit.
    pub max_waits: usize,
    /// Cluster mode: the node's replication (writes on a follower are forwarded to the
    /// sequencer; `GET /v1/cluster`). `None` for a single node.
    pub replication: Option<Arc<dyn Replication>>,
    /// Serve the web console at `/console` (its files are compiled into the binary).
    pub console: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            tokens: Vec::new(),
            heartbeat: Duration::from_secs(15),
            default_page: 100,
            max_page: 10_000,
            max_page_bytes: 4 * 1024 * 1024,
            max_module_bytes: 32 * 1024 * 1024,
            max_wait: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_waits: 4096,
            replication: None,
            console: true,
        }
    }
}

/// Checks that serving on `addr` with `tokens` is safe: a server without tokens must listen
/// on loopback only. The error is a sentence for the operator.
pub fn check_listen(addr: SocketAddr, tokens: &[Token]) -> Result<(), String> {
    if tokens.is_empty() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {addr} without tokens: anyone who can reach that address \
             could read and write every event. Configure tokens (--token ROLE:TOKEN or \
             LOOM_TOKENS=\"admin:…,writer:…\") or listen on a loopback address such as \
             127.0.0.1:7070"
        ));
    }
    Ok(())
}

/// Shared state of every handler: the engine (and its ledger), the settings and the
/// server's counters.
#[derive(Clone, Debug)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: Config,
    pub(crate) tokens: auth::Tokens,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Permits of `min_position` waits (`Config::max_waits`).
    pub(crate) waits: tokio::sync::Semaphore,
}

impl AppState {
    /// State over an open engine and its ledger. The caller shuts the engine down (then the
    /// ledger) after [`serve`] returns.
    pub fn new(engine: Arc<Engine>, config: Config) -> AppState {
        let tokens = auth::Tokens::new(&config.tokens);
        let (shutdown, _) = watch::channel(false);
        let waits = tokio::sync::Semaphore::new(config.max_waits.max(1));
        AppState {
            inner: Arc::new(Inner {
                ledger: engine.ledger().clone(),
                engine,
                waits,
                config,
                tokens,
                metrics: metrics::Metrics::default(),
                shutdown,
            }),
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.inner.ledger
    }

    /// The engine: modules and projections.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Ends every open subscription (they would otherwise hold graceful shutdown forever).
    /// Appends and bounded reads in flight are not affected.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    pub(crate) fn ledger_arc(&self) -> Arc<Ledger> {
        self.inner.ledger.clone()
    }

    /// Runs a blocking ledger call off the async runtime.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Ledger) -> Result<T, ApiError> + Send + 'static,
    {
        let ledger = self.ledger_arc();
        tokio::task::spawn_blocking(move || f(&ledger)).await?
    }

    /// Runs a blocking engine call off the async runtime.
    pub(crate) async fn engine_blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    {
        let engine = self.inner.engine.clone();
        tokio::task::spawn_blocking(move || f(&engine)).await?
    }
}

/// The whole API as a router; call [`Router::into_make_service`] or use [`serve`].
pub fn app(state: AppState) -> Router {
    let console = if state.inner.config.console {
        console::router()
    } else {
        Router::new()
    };
    let router = Router::new()
        .merge(console)
        .merge(routes::events::router())
        .merge(routes::streams::router())
        .merge(routes::entities::router())
        .merge(routes::subscribe::router())
        .merge(routes::modules::router())
        .merge(routes::projections::router())
        .merge(routes::deciders::router())
        .merge(routes::reactors::router())
        .merge(routes::ops::router())
        .merge(routes::backup::router())
        .merge(cluster::router())
        .fallback(fallback);
    // Only a cluster node forwards writes; a single node's requests skip the layer.
    let router = if state.inner.config.replication.is_some() {
        router.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::forward_writes,
        ))
    } else {
        router
    };
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.inner.config.request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            finish_response,
        ))
        // The request's span is for debugging (`LOOM_LOG=debug`): at the default level a
        // span per request cost ~5 % of the server's CPU per append, in formatting its fields
        // and registering it. A failed request is logged by `finish_response` instead.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    tracing::debug_span!("request", method = %req.method(), uri = %req.uri())
                })
                .on_failure(()),
        )
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `signal` resolves, then shuts down gracefully:
/// subscriptions end, requests in flight (appends included) finish, and the call returns.
/// Shut the engine down, then the ledger, after it returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let router = app(state.clone());
    let config = &state.inner.config;
    let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header timeout also bounds how long a kept-alive connection may sit idle before
    // its next request: a client that trickles headers or sends nothing is let go.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.header_timeout)
        .keep_alive_timeout(config.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // back off briefly instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the connection cap: closed at once, so the file descriptors stay bounded.
            state.inner.metrics.record_refused_connection();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let header_timeout = config.header_timeout;
        let mut stopping = state.inner.shutdown.subscribe();
        tokio::spawn(async move {
            // hyper's header timeout starts once it has seen which HTTP version the client
            // speaks; a client that sends nothing at all is let go here. So is one that has
            // sent nothing when shutdown begins (the watcher would hold shutdown up).
            let mut first = [0u8; 1];
            tokio::select! {
                peeked = tokio::time::timeout(header_timeout, stream.peek(&mut first)) => {
                    match peeked {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                }
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let _ = watcher.watch(connection).await;
            drop(permit);
        });
    }
    tracing::info!("shutting down: finishing requests in flight");
    state.begin_shutdown();
    graceful.shutdown().await;
    Ok(())
}

async fn fallback() -> ApiError {
    ApiError::NotFound("no such route; see /v1/openapi.json for the API".into())
}

/// Counts every response for `/metrics` and turns bare error responses (from axum's own
/// rejections, 405s and timeouts) into problem+json, so that every error has one shape.
async fn finish_response(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Cheap clones (a standard method is an enum, a matched path an `Arc<str>`): counting a
    // request allocates nothing.
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let mut response = next.run(req).await;
    let status = response.status();
    if status.as_u16() >= 400 {
        let is_problem = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(PROBLEM_JSON));
        if !is_problem {
            response = problemify(response).await;
        }
    }
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state
        .inner
        .metrics
        .record_request(metrics::method_label(&method), route, status.as_u16());
    let elapsed_us = started.elapsed().as_micros() as u64;
    if status.is_server_error() {
        tracing::error!(%method, route, status = status.as_u16(), elapsed_us, "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), elapsed_us, "answered");
    }
    response
}

async fn problemify(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let status = parts.status;
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "this route does not take that method; see /v1/openapi.json".to_owned()
        }
        StatusCode::REQUEST_TIMEOUT => "the request did not finish in time".to_owned(),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
        _ => text,
    };
    let slug = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        s if s.is_server_error() => "internal-error",
        _ => "bad-request",
    };
    let mut out = problem::problem_response(status, slug, &detail, Default::default());
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The JSON body of a definition request (`PUT` of an entity, projection, decider or
/// reactor): no query parameters, a JSON content type, the body limit, then `T` from the
/// body — each failure its own problem (400, 413, 415).
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    params::Params::parse(uri, &[])?;
    require_json(headers)?;
    let bytes = read_body(state, headers, body).await?;
    parse_json(&bytes)
}

/// A definition's `PUT` (projection, decider, reactor): the body as `S`, then `put` on the
/// blocking pool, answering what it did (201 created, 202 upgrading, 200 otherwise) with the
/// definition's status or record and a `Location`. A definition that names what is not there
/// (a module that is not stored) or that is malformed is the caller's mistake in the body:
/// `refused` makes it the resource's 422 instead of a 404.
pub(crate) async fn put_definition<S, T, F>(
    state: &AppState,
    request: (&axum::http::Uri, &HeaderMap, Body),
    location: String,
    refused: fn(String) -> ApiError,
    put: F,
) -> Result<Response, ApiError>
where
    S: serde::de::DeserializeOwned + Send + 'static,
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&Engine, S) -> Result<(loom_engine::PutOutcome, T), ApiError> + Send + 'static,
{
    let (uri, headers, body) = request;
    let spec: S = json_body(state, uri, headers, body).await?;
    let (outcome, shown) =
        state
            .engine_blocking(move |e| put(e, spec))
            .await
            .map_err(|e| match e {
                ApiError::NotFound(m) | ApiError::InvalidProjection(m) => refused(m),
                other => other,
            })?;
    json_at(put_status(outcome), &shown, &location)
}

/// `200 OK` when the thing was there before, else `201 Created`.
pub(crate) fn created_or_ok(existed: bool) -> StatusCode {
    if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// The status of a definition's `put`: 201 created, 202 upgrading in the background, 200
/// otherwise.
pub(crate) fn put_status(outcome: loom_engine::PutOutcome) -> StatusCode {
    match outcome {
        loom_engine::PutOutcome::Created => StatusCode::CREATED,
        loom_engine::PutOutcome::Upgrading => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    }
}

/// `value` as an `application/json` response with `status`.
pub(crate) fn to_json<T: serde::Serialize>(
    status: StatusCode,
    value: &T,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(status, "application/json", body))
}

/// `value` as JSON with `status` and a `Location` header naming where it lives.
pub(crate) fn json_at<T: serde::Serialize>(
    status: StatusCode,
    value: &T,
    location: &str,
) -> Result<Response, ApiError> {
    let mut response = to_json(status, value)?;
    if let Ok(v) = header::HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Parses a JSON body into `T`, answering 400 with serde's message on failure.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::BadRequest(format!("the body is not valid JSON for this endpoint: {e}"))
    })
}

/// A JSON response with an explicit content type.
pub(crate) fn json_response(
    status: StatusCode,
    content_type: &'static str,
    bytes: Vec<u8>,
) -> Response {
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
