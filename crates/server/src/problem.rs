//! [`ApiError`]: every way a request can fail, answered as RFC 9457 `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use loom_engine::{CommandError, DefinitionError, EngineError, Kind, QueryError, StoreError};
use loom_ledger::{
    AppendError, Conflict, InvalidEvent, ReadError, RegistryError, Rejection, SelectorError,
    StorageError,
};
use serde_json::{Map, Value, json};

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why a request failed. Each variant documents the status it answers with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad parameter, bad header).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such event, stream, entity or route.
    #[error("{0}")]
    NotFound(String),
    /// 409: an append condition failed or an identity is taken.
    #[error(transparent)]
    Conflict(Conflict),
    /// 413: the body is larger than the configured limit.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// 415: the body's media type is not one this endpoint takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: an event breaks the event model (missing attribute, bad subject, …).
    #[error(transparent)]
    InvalidEvent(InvalidEvent),
    /// 422: the registry refused an event (unknown entity or type, schema failure).
    #[error(transparent)]
    Rejected(Rejection),
    /// 422: a selector (JSONPath, entity name) is malformed.
    #[error(transparent)]
    Selector(SelectorError),
    /// 422: a registration is invalid (entity name, JSON Schema).
    #[error("{0}")]
    InvalidRegistration(String),
    /// 422: uploaded bytes are not a module Loom can run (invalid wasm, wrong ABI version,
    /// an import outside Loom's ABI such as WASI, a bad export). The detail says which.
    #[error("{0}")]
    InvalidModule(String),
    /// 422: a module lacks the entry point a use needs (`evolve` for a projection, `query`
    /// for a query).
    #[error("{0}")]
    MissingExport(String),
    /// 422: a projection definition or request is invalid (name, unknown module, a key
    /// where the partition has none, …).
    #[error("{0}")]
    InvalidProjection(String),
    /// 422: a definition names a reducer the module does not have, or names none where the
    /// module has several that fit.
    #[error("{0}")]
    InvalidReducer(String),
    /// 422: a definition names an entity or event type that is not registered.
    #[error("{0}")]
    Unregistered(String),
    /// 422: a module call failed (trap, fuel, memory, malformed data); the detail carries
    /// the module's message.
    #[error("{0}")]
    ModuleFailed(String),
    /// 422: the module's `query` refused the parameters; the detail is its message.
    #[error("{0}")]
    QueryRejected(String),
    /// 422: the decider refused the command (a domain rejection); the detail is the
    /// module's message and nothing was written.
    #[error("{0}")]
    CommandRejected(String),
    /// 409: the stream kept changing under a command; every bounded retry conflicted.
    #[error("{0}")]
    Contention(String),
    /// 409: the operation needs something that is not there yet (a cluster trim without a
    /// snapshot to keep).
    #[error("{0}")]
    Precondition(String),
    /// 409: the module is used by projections (or other users) and cannot be deleted.
    #[error("module {id} is in use by {}; delete or redefine them first", users.join(", "))]
    ModuleInUse {
        /// The module.
        id: String,
        /// What uses it (`projection carts`, …).
        users: Vec<String>,
    },
    /// 504: a `min_position` read timed out before the projection reached the position.
    #[error("{message}")]
    WaitTimeout {
        /// What happened, as a sentence.
        message: String,
        /// The position asked for.
        wanted: u64,
        /// The position the projection had reached.
        reached: u64,
    },
    /// 503: the server is shutting down or storage is unavailable; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 503, or 507 when the disk is full: the storage engine failed. Logged; the client
    /// gets a generic message.
    #[error(transparent)]
    Storage(StorageError),
    /// 500: a bug or an unexpected failure. Logged; the client gets a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Rejected(Rejection::CommandsOnly { .. }) => StatusCode::FORBIDDEN,
            ApiError::InvalidEvent(_)
            | ApiError::Rejected(_)
            | ApiError::Selector(_)
            | ApiError::InvalidRegistration(_)
            | ApiError::InvalidModule(_)
            | ApiError::MissingExport(_)
            | ApiError::InvalidProjection(_)
            | ApiError::InvalidReducer(_)
            | ApiError::Unregistered(_)
            | ApiError::ModuleFailed(_)
            | ApiError::QueryRejected(_)
            | ApiError::CommandRejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Contention(_) | ApiError::Precondition(_) => StatusCode::CONFLICT,
            ApiError::ModuleInUse { .. } => StatusCode::CONFLICT,
            ApiError::WaitTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Storage(e) if e.is_disk_full() => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, stable name of the problem kind; the problem `type` is `urn:loom:problem:<slug>`.
    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(Conflict::Revision { .. }) => "revision-conflict",
            ApiError::Conflict(Conflict::EventsMatched { .. }) => "condition-conflict",
            ApiError::Conflict(Conflict::Identity { .. }) => "identity-conflict",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::InvalidEvent(_) => "invalid-event",
            ApiError::Rejected(Rejection::UnknownEntity { .. }) => "unknown-entity",
            ApiError::Rejected(Rejection::UnknownType { .. }) => "unknown-type",
            ApiError::Rejected(Rejection::CommandsOnly { .. }) => "commands-only",
            ApiError::Rejected(Rejection::Schema { .. }) => "schema-violation",
            ApiError::Rejected(_) => "rejected",
            ApiError::Selector(SelectorError::TooComplex { .. }) => "selector-too-complex",
            ApiError::Selector(_) => "invalid-selector",
            ApiError::InvalidRegistration(_) => "invalid-registration",
            ApiError::InvalidModule(_) => "invalid-module",
            ApiError::MissingExport(_) => "missing-export",
            ApiError::InvalidProjection(_) => "invalid-projection",
            ApiError::InvalidReducer(_) => "invalid-reducer",
            ApiError::Unregistered(_) => "unregistered-name",
            ApiError::ModuleFailed(_) => "module-failed",
            ApiError::QueryRejected(_) => "query-rejected",
            ApiError::CommandRejected(_) => "command-rejected",
            ApiError::Contention(_) => "contention",
            ApiError::Precondition(_) => "precondition-failed",
            ApiError::ModuleInUse { .. } => "module-in-use",
            ApiError::WaitTimeout { .. } => "min-position-timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Storage(e) if e.is_disk_full() => "disk-full",
            ApiError::Storage(_) => "storage-error",
            ApiError::Internal(_) => "internal-error",
        }
    }

    /// The `detail` shown to the client, and extension members.
    // Long by design: one arm per kind of problem, each adding its own members: the mapping
    // reads best whole.
    fn detail_and_extensions(&self) -> (String, Map<String, Value>) {
        let mut ext = Map::new();
        let detail = match self {
            ApiError::Storage(e) => {
                tracing::error!(error = %e, "storage error");
                if e.is_disk_full() {
                    "the server's disk is full; nothing was written".to_owned()
                } else {
                    "the storage engine failed; nothing was written, retry later".to_owned()
                }
            }
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                "an internal error occurred; it has been logged".to_owned()
            }
            ApiError::Conflict(c) => {
                match c {
                    Conflict::Revision {
                        stream,
                        expected,
                        actual,
                    } => {
                        ext.insert("stream".into(), json!(stream));
                        ext.insert("expected".into(), json!(expected));
                        ext.insert("actual".into(), json!(actual));
                    }
                    Conflict::EventsMatched { positions } => {
                        ext.insert("positions".into(), json!(positions));
                    }
                    Conflict::Identity {
                        event_source,
                        id,
                        position,
                        ..
                    } => {
                        ext.insert("source".into(), json!(event_source));
                        ext.insert("id".into(), json!(id));
                        ext.insert("position".into(), json!(position));
                    }
                    _ => {}
                }
                c.to_string()
            }
            ApiError::InvalidEvent(e) => {
                if let Some(i) = e.index {
                    ext.insert("index".into(), json!(i));
                }
                e.to_string()
            }
            ApiError::Rejected(r) => {
                let (index, entity, ty) = match r {
                    Rejection::UnknownEntity { index, entity }
                    | Rejection::CommandsOnly { index, entity } => (index, entity, None),
                    Rejection::UnknownType { index, entity, ty }
                    | Rejection::Schema {
                        index, entity, ty, ..
                    } => (index, entity, Some(ty)),
                    _ => return (r.to_string(), ext),
                };
                ext.insert("index".into(), json!(index));
                ext.insert("entity".into(), json!(entity));
                if let Some(ty) = ty {
                    ext.insert("event_type".into(), json!(ty));
                }
                match r {
                    Rejection::UnknownEntity { entity, .. } => {
                        format!("{r}; register it with PUT /v1/entities/{entity}")
                    }
                    Rejection::CommandsOnly { entity, .. } => {
                        format!("{r} with POST /v1/commands/{entity}/{{key}}")
                    }
                    _ => r.to_string(),
                }
            }
            ApiError::PayloadTooLarge { limit } => {
                ext.insert("limit".into(), json!(limit));
                self.to_string()
            }
            ApiError::ModuleInUse { id, users } => {
                ext.insert("module".into(), json!(id));
                ext.insert("users".into(), json!(users));
                self.to_string()
            }
            ApiError::WaitTimeout {
                message,
                wanted,
                reached,
            } => {
                ext.insert("wanted".into(), json!(wanted));
                ext.insert("reached".into(), json!(reached));
                message.clone()
            }
            other => other.to_string(),
        };
        (detail, ext)
    }
}

/// An RFC 9457 problem, the body of every error answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Problem<'a> {
    /// `urn:loom:problem:<kind>`: what kind of problem, for programs.
    #[serde(rename = "type")]
    kind: String,
    /// The status's reason phrase.
    title: &'a str,
    /// The HTTP status.
    status: u16,
    /// What went wrong, as a sentence.
    detail: &'a str,
    /// Members some kinds add: `stream`, `expected`, `actual` for a revision conflict,
    /// `positions` for a matching condition, `index` for a refused event, …
    #[serde(flatten)]
    #[schema(ignore)]
    extensions: Map<String, Value>,
}

/// Builds a problem+json response.
pub(crate) fn problem_response(
    status: StatusCode,
    slug: &str,
    detail: &str,
    extensions: Map<String, Value>,
) -> Response {
    let body = Problem {
        kind: format!("urn:loom:problem:{slug}"),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        extensions,
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl ApiError {
    /// A storage failure; the cluster's log being unavailable (no sequencer, no quorum) is a
    /// 503 that says so.
    pub(crate) fn storage(s: StorageError) -> ApiError {
        match s.log_unavailable() {
            Some(why) => ApiError::Unavailable(why.to_string()),
            None => ApiError::Storage(s),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (detail, ext) = self.detail_and_extensions();
        let mut response = problem_response(status, self.slug(), &detail, ext);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"loom\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Invalid(e) => ApiError::InvalidEvent(e),
            AppendError::Rejected(r) => ApiError::Rejected(r),
            AppendError::Conflict(c) => ApiError::Conflict(c),
            AppendError::Selector(s) => ApiError::Selector(s),
            AppendError::Storage(s) => ApiError::storage(s),
            AppendError::Closed => {
                ApiError::Unavailable("the server is shutting down; retry the append".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Selector(s) => ApiError::Selector(s),
            ReadError::Storage(s) => ApiError::Storage(s),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<SelectorError> for ApiError {
    fn from(e: SelectorError) -> Self {
        ApiError::Selector(e)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Storage(s) => ApiError::storage(s),
            other => ApiError::InvalidRegistration(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Storage(s) => ApiError::storage(s),
            StoreError::Read(r) => r.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The 404 of a command on an entity without a decider, with how to bind one.
fn no_decider(entity: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no decider is bound to entity {entity:?}; bind one with PUT /v1/deciders/{entity}"
    ))
}

impl From<DefinitionError> for ApiError {
    fn from(e: DefinitionError) -> Self {
        match e {
            DefinitionError::NotFound {
                kind: Kind::Decider,
                name,
            } => no_decider(&name),
            e @ DefinitionError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            DefinitionError::InvalidName(m) | DefinitionError::InvalidSpec(m) => {
                ApiError::InvalidProjection(m)
            }
            DefinitionError::Selector(s) => ApiError::Selector(s),
            DefinitionError::InvalidModule(m) => ApiError::InvalidModule(format!(
                "the module was refused and nothing was stored: {m}"
            )),
            e @ DefinitionError::ModuleNotFound(_) => {
                ApiError::NotFound(format!("{e}; upload it with POST /v1/modules"))
            }
            e @ DefinitionError::MissingExport { .. } => ApiError::MissingExport(e.to_string()),
            DefinitionError::Reducer(m) => ApiError::InvalidReducer(m),
            DefinitionError::Unregistered(m) => ApiError::Unregistered(m),
            DefinitionError::ModuleInUse { id, users } => ApiError::ModuleInUse { id, users },
            DefinitionError::Store(s) => s.into(),
            // Non-exhaustive: a variant not mapped yet is an internal error, logged.
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            e @ (QueryError::NotFound(_) | QueryError::KeyNotFound { .. }) => {
                ApiError::NotFound(e.to_string())
            }
            QueryError::WrongPartition(m) => ApiError::InvalidProjection(m),
            QueryError::Rejected(m) => {
                ApiError::QueryRejected(format!("the module's query refused the parameters: {m}"))
            }
            QueryError::Module(d) => d.into(),
            QueryError::Call(c) => ApiError::ModuleFailed(format!("the module failed: {c}")),
            QueryError::BadModuleOutput(m) => ApiError::ModuleFailed(m),
            e @ QueryError::Timeout {
                wanted, reached, ..
            } => ApiError::WaitTimeout {
                message: format!(
                    "{e}; retry, or ask with a longer timeout_ms (the server caps it)"
                ),
                wanted,
                reached,
            },
            QueryError::Store(s) => s.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NoDecider(entity) => no_decider(&entity),
            CommandError::Invalid(m) => ApiError::BadRequest(m),
            CommandError::Rejected(m) => ApiError::CommandRejected(m),
            e @ CommandError::Contention { .. } => ApiError::Contention(e.to_string()),
            CommandError::Module(d) => d.into(),
            CommandError::Call(c) => ApiError::ModuleFailed(format!("the module failed: {c}")),
            CommandError::BadModuleOutput(m) => ApiError::ModuleFailed(m),
            CommandError::Append(a) => a.into(),
            CommandError::Store(s) => s.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Definition(d) => d.into(),
            EngineError::Command(c) => c.into(),
            EngineError::Query(q) => q.into(),
            EngineError::Store(s) => s.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("a blocking task failed: {e}"))
    }
}
