//! Events: appends (`POST /v1/events`, `POST /v1/append`) and reads by position, selector,
//! identity.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;
use loom_ledger::{
    AppendOutcome, AppendRequest, CompiledSelector, Conditions, Event, ExpectedRevision, Ledger,
    ReadOptions, Selector, StoredEvent,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::auth::{Reader, Writer};
use crate::binding::{self, CLOUDEVENTS_BATCH_JSON};
use crate::params::{Params, link};
use crate::problem::ApiError;
use crate::{AppState, json_response, parse_json, read_body, require_json};

/// Header of `POST /v1/events` naming the expected revision of the (one) stream.
pub(crate) const EXPECTED_REVISION_HEADER: &str = "loom-expected-revision";
/// Media type of streamed reads.
pub(crate) const NDJSON: &str = "application/x-ndjson";
/// Batches above this many events are validated and appended on a blocking thread.
const INLINE_APPEND_EVENTS: usize = 64;
/// Events read per step of a streamed (NDJSON) read.
const STREAM_CHUNK: usize = 1000;
/// Most bytes of events one step of a streamed read holds (and so one stalled reader).
const STREAM_CHUNK_BYTES: usize = 1 << 20;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(events_post).get(events_list))
        .route("/v1/append", post(events_append))
        .route("/v1/events/query", post(events_query))
        .route("/v1/events/by-id", get(events_by_id))
        .route("/v1/events/{position}", get(events_get))
}

/// Appends through the ledger and answers 201 (200 for an idempotent retry).
async fn append(state: &AppState, req: AppendRequest) -> Result<Response, ApiError> {
    // A DCB condition is checked against a snapshot by the appending thread, and may read
    // much of the ledger: never on an async worker.
    let blocking =
        req.events.len() > INLINE_APPEND_EVENTS || req.conditions.fail_if_events_match.is_some();
    let outcome: AppendOutcome = if blocking {
        state.blocking(move |l| Ok(l.append(req)?)).await?
    } else {
        state.ledger().append_async(req).await?
    };
    let status = if outcome.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = serde_json::to_vec(&outcome).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = json_response(status, "application/json", body);
    if let [one] = outcome.events.as_slice()
        && let Ok(v) = HeaderValue::from_str(&format!("/v1/events/{}", one.position))
    {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Append events in any CloudEvents HTTP content mode.
///
/// Binary mode: attributes in `ce-*` headers, the data as the body under its own
/// `Content-Type`. Structured mode: `Content-Type: application/cloudevents+json`. Batch mode:
/// `Content-Type: application/cloudevents-batch+json`. The request is one atomic append.
#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    params(("Loom-Expected-Revision" = Option<String>, Header, nullable = false, pattern = "^(any|none|exists|[0-9]+)$",
        description = "any | none | exists | <n>; all events must share one subject")),
    request_body(description = "One event (structured mode) or an array of events (batch mode). \
        Binary mode is the third content mode: the attributes as `ce-*` headers (`ce-specversion`, \
        `ce-id`, `ce-source`, `ce-type`, `ce-subject`, optional `ce-time`, `ce-dataschema` and \
        extensions), the data as the body under its own `Content-Type` (any media type). It is not \
        listed as a content type here because it is told apart by its headers, not its media type.",
        content(
            (loom_core::Event = "application/cloudevents+json"),
            (Vec<loom_core::Event> = "application/cloudevents-batch+json"),
        )),
    responses(
        (status = 201, description = "Appended", body = loom_core::AppendOutcome),
        (status = 200, description = "Every event was stored before with the same content (idempotent retry)", body = loom_core::AppendOutcome),
        (status = 400, description = "Malformed body or header", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 409, description = "Expected revision or identity conflict", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 415, description = "Not a CloudEvents content mode", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "Invalid event, or refused by the registry", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["writer"]), ())
)]
pub(crate) async fn events_post(
    State(state): State<AppState>,
    _: Writer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, &headers, body).await?;
    let events = binding::events_from_request(&headers, &bytes)?;
    let mut req = AppendRequest::new(events);
    if let Some(value) = headers.get(EXPECTED_REVISION_HEADER) {
        let expected: ExpectedRevision = value
            .to_str()
            .map_err(|_| ApiError::BadRequest("Loom-Expected-Revision is not ASCII".into()))?
            .parse()
            .map_err(|e: String| ApiError::BadRequest(format!("Loom-Expected-Revision: {e}")))?;
        let subject = req.events[0].subject.clone();
        if let Some(other) = req.events.iter().find(|e| e.subject != subject) {
            return Err(ApiError::BadRequest(format!(
                "Loom-Expected-Revision applies to one stream, but the events name {subject:?} \
                 and {:?}; use POST /v1/append with expected_revisions per stream",
                other.subject
            )));
        }
        req = req.expect(subject, expected);
    }
    append(&state, req).await
}

/// The body of `POST /v1/append`: events (any streams) and the conditions under which they
/// are appended, all or none.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendBody {
    /// The events, appended in this order; each is parsed as a CloudEvent on its own so that
    /// an error names its index.
    #[schema(value_type = Vec<loom_core::Event>, min_items = 1)]
    events: Vec<Box<RawValue>>,
    /// All must hold, or nothing is written.
    #[serde(default)]
    conditions: Conditions,
}

/// Append events atomically with conditions: expected revisions per stream and a DCB-style
/// `fail_if_events_match` selector (optionally only `after` a position).
#[utoipa::path(
    post, path = "/v1/append", tag = "events",
    request_body(content = crate::routes::events::AppendBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Appended", body = loom_core::AppendOutcome),
        (status = 200, description = "Idempotent retry of a stored batch", body = loom_core::AppendOutcome),
        (status = 400, description = "Malformed body", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 409, description = "A condition failed: the problem names stream, expected and actual, or the conflicting positions", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "Invalid event, registry refusal, or invalid selector", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["writer"]), ())
)]
pub(crate) async fn events_append(
    State(state): State<AppState>,
    _: Writer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let bytes = read_body(&state, &headers, body).await?;
    let parsed: AppendBody = parse_json(&bytes)?;
    let mut events = Vec::with_capacity(parsed.events.len());
    for (i, raw) in parsed.events.iter().enumerate() {
        if !raw.get().starts_with('{') {
            return Err(ApiError::BadRequest(format!(
                "events[{i}] is not a JSON object"
            )));
        }
        events.push(
            Event::from_json_slice(raw.get().as_bytes())
                .map_err(|e| ApiError::InvalidEvent(e.at_index(i)))?,
        );
    }
    append(
        &state,
        AppendRequest {
            events,
            conditions: parsed.conditions,
            ..AppendRequest::default()
        },
    )
    .await
}

/// Read events by position, optionally filtered by subject, entity and type.
///
/// Answers a CloudEvents batch (JSON array) with `Link: <…>; rel="next"` when the page is
/// full; with `Accept: application/x-ndjson` streams one event per line instead (up to
/// `limit`, or to the head at the time of the request).
#[utoipa::path(
    get, path = "/v1/events", tag = "events",
    params(crate::params::ListParams),
    responses(
        (status = 200, description = "Stored events",
            content(
                (Vec<loom_core::StoredEvent> = "application/cloudevents-batch+json"),
                (String = "application/x-ndjson"),
            ),
            headers(("Link" = String, description = "rel=\"next\": the next page"))),
        (status = 400, description = "Bad parameter", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "Invalid selector", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 504, description = "min_position was not reached within the wait", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn events_list(
    State(state): State<AppState>,
    _: Reader,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(&uri, crate::params::LIST)?;
    let selector = params.selector()?;
    list(&state, "/v1/events", &params, &headers, selector).await
}

/// Read events matching a selector (the body), paged like `GET /v1/events`.
///
/// The body is a selector: `{ "entity", "keys": [...], "types": [...], "data": "<JSONPath>",
/// "meta": "<JSONPath>" }` (all optional). Paging parameters go in the query string; the
/// `Link` header names the next page's query string (POST the same body to it).
#[utoipa::path(
    post, path = "/v1/events/query", tag = "events",
    params(crate::params::PageParams),
    request_body(content = loom_core::Selector, content_type = "application/json",
        description = "The selector; no body (or only whitespace) selects every event"),
    responses(
        (status = 200, description = "Stored events",
            content(
                (Vec<loom_core::StoredEvent> = "application/cloudevents-batch+json"),
                (String = "application/x-ndjson"),
            ),
            headers(("Link" = String, description = "rel=\"next\": the next page"))),
        (status = 400, description = "Malformed selector or parameter", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "Invalid selector (JSONPath, entity)", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 504, description = "min_position was not reached within the wait", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn events_query(
    State(state): State<AppState>,
    _: Reader,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = Params::parse(&uri, crate::params::PAGE)?;
    let bytes = read_body(&state, &headers, body).await?;
    let selector: Selector = if bytes.iter().all(u8::is_ascii_whitespace) {
        Selector::all()
    } else {
        require_json(&headers)?;
        parse_json(&bytes)?
    };
    list(&state, "/v1/events/query", &params, &headers, selector).await
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains(NDJSON))
}

/// A list read: a JSON page with a `Link` header, or an NDJSON stream.
pub(crate) async fn list(
    state: &AppState,
    path: &str,
    params: &Params,
    headers: &HeaderMap,
    selector: Selector,
) -> Result<Response, ApiError> {
    let compiled = Arc::new(selector.compile()?);
    super::wait::head_reaches(state, params).await?;
    let after = params.u64("after")?.unwrap_or(0);
    let before = params.u64("before")?;
    let backwards = params.bool("backwards")?;
    if wants_ndjson(headers) {
        let limit = match params.u64("limit")? {
            Some(0) => return Err(ApiError::BadRequest("limit must be at least 1".into())),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => usize::MAX,
        };
        // A stream without an upper bound ends at the head as of now.
        let before = before.or(Some(state.ledger().head().saturating_add(1)));
        let opts = ReadOptions {
            after,
            before,
            limit,
            backwards,
        };
        return Ok(ndjson_stream(state.ledger_arc(), compiled, opts));
    }
    let limit = params.limit(state.inner.config.default_page, state.inner.config.max_page)?;
    let opts = ReadOptions {
        after,
        before,
        limit,
        backwards,
    };
    let max_bytes = state.inner.config.max_page_bytes;
    let (page, cut) = {
        let compiled = compiled.clone();
        state
            .blocking(move |l| Ok(l.read_bounded(&compiled, opts, max_bytes)?))
            .await?
    };
    let body = serde_json::to_vec(&page).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = json_response(StatusCode::OK, CLOUDEVENTS_BATCH_JSON, body);
    if (page.len() == limit || cut)
        && let Some(last) = page.last()
    {
        let next = if backwards {
            link(path, params, &[("before", last.position.to_string())])
        } else {
            link(path, params, &[("after", last.position.to_string())])
        };
        if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(response)
}

/// Streams the window as NDJSON, reading it in chunks on blocking threads.
fn ndjson_stream(
    ledger: Arc<Ledger>,
    selector: Arc<CompiledSelector>,
    opts: ReadOptions,
) -> Response {
    struct Cursor {
        ledger: Arc<Ledger>,
        selector: Arc<CompiledSelector>,
        opts: ReadOptions,
        remaining: usize,
        done: bool,
    }
    let start = Cursor {
        ledger,
        selector,
        remaining: opts.limit,
        opts,
        done: false,
    };
    let body = stream::unfold(start, |mut c| async move {
        if c.done || c.remaining == 0 {
            return None;
        }
        let want = c.remaining.min(STREAM_CHUNK);
        let opts = ReadOptions {
            limit: want,
            ..c.opts
        };
        let (ledger, selector) = (c.ledger.clone(), c.selector.clone());
        let read = tokio::task::spawn_blocking(move || {
            ledger.read_bounded(&selector, opts, STREAM_CHUNK_BYTES)
        })
        .await;
        let (page, cut): (Vec<StoredEvent>, bool) = match read {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "streamed read failed");
                return Some((
                    Err(std::io::Error::other(e.to_string())),
                    Cursor { done: true, ..c },
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "streamed read task failed");
                return Some((
                    Err(std::io::Error::other(e.to_string())),
                    Cursor { done: true, ..c },
                ));
            }
        };
        let last = page.last()?;
        if c.opts.backwards {
            c.opts.before = Some(last.position);
        } else {
            c.opts.after = last.position;
        }
        c.remaining -= page.len();
        c.done = page.len() < want && !cut;
        let mut out = Vec::with_capacity(page.len() * 256);
        for e in &page {
            if serde_json::to_writer(&mut out, e).is_err() {
                return Some((
                    Err(std::io::Error::other("serialization failed")),
                    Cursor { done: true, ..c },
                ));
            }
            out.push(b'\n');
        }
        Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), c))
    });
    let mut response = Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    response
}

fn parse_position(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("{text:?} is not a position (a positive integer)"))
        })
}

/// One event by position, in structured mode, or in binary mode with `?mode=binary`.
#[utoipa::path(
    get, path = "/v1/events/{position}", tag = "events",
    params(("position" = u64, Path, description = "Global position"),
        ("mode" = Option<crate::params::Mode>, Query, description = "structured (default) or binary"),
        ("min_position" = Option<u64>, Query, description = "Wait until this node's ledger holds this position (read-your-writes on any node of a cluster)"),
        ("timeout_ms" = Option<u64>, Query, description = "Longest wait for min_position, ms (capped by the server)")),
    responses(
        (status = 200, description = "The event (structured mode; in binary mode attributes are ce-* headers and the body is the data)",
            body = loom_core::StoredEvent, content_type = "application/cloudevents+json"),
        (status = 404, description = "No event at that position", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 504, description = "min_position was not reached within the wait", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn events_get(
    State(state): State<AppState>,
    _: Reader,
    Path(position): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let params = Params::parse(&uri, &["mode", "min_position", "timeout_ms"])?;
    let binary = binary_mode(&params)?;
    super::wait::head_reaches(&state, &params).await?;
    let position = parse_position(&position)?;
    let event = state.blocking(move |l| Ok(l.event_at(position)?)).await?;
    let Some(event) = event else {
        return Err(ApiError::NotFound(format!(
            "there is no event at position {position}"
        )));
    };
    one_event(&event, binary)
}

/// `?mode=binary` or `?mode=structured` (the default).
fn binary_mode(params: &Params) -> Result<bool, ApiError> {
    match params.one("mode")? {
        None | Some("structured") => Ok(false),
        Some("binary") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "mode {other:?} is not \"structured\" or \"binary\""
        ))),
    }
}

pub(crate) fn one_event(event: &StoredEvent, binary: bool) -> Result<Response, ApiError> {
    if binary {
        let (headers, body) = binding::binary_response(event);
        return Ok((StatusCode::OK, headers, body).into_response());
    }
    let body = serde_json::to_vec(event).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(
        StatusCode::OK,
        binding::CLOUDEVENTS_JSON,
        body,
    ))
}

/// One event by its identity `(source, id)`.
#[utoipa::path(
    get, path = "/v1/events/by-id", tag = "events",
    params(("source" = String, Query, description = "The event's source"),
        ("id" = String, Query, description = "The event's id"),
        ("mode" = Option<crate::params::Mode>, Query, description = "structured (default) or binary"),
        ("min_position" = Option<u64>, Query, description = "Wait until this node's ledger holds this position (read-your-writes on any node of a cluster)"),
        ("timeout_ms" = Option<u64>, Query, description = "Longest wait for min_position, ms (capped by the server)")),
    responses(
        (status = 200, description = "The event", body = loom_core::StoredEvent, content_type = "application/cloudevents+json"),
        (status = 400, description = "source or id missing", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such event", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 504, description = "min_position was not reached within the wait", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn events_by_id(
    State(state): State<AppState>,
    _: Reader,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let params = Params::parse(
        &uri,
        &["source", "id", "mode", "min_position", "timeout_ms"],
    )?;
    super::wait::head_reaches(&state, &params).await?;
    let binary = binary_mode(&params)?;
    let (Some(source), Some(id)) = (params.one("source")?, params.one("id")?) else {
        return Err(ApiError::BadRequest(
            "name the event with both query parameters source and id".into(),
        ));
    };
    let (source, id) = (source.to_owned(), id.to_owned());
    let found = {
        let (source, id) = (source.clone(), id.clone());
        state
            .blocking(move |l| Ok(l.event_by_id(&source, &id)?))
            .await?
    };
    match found {
        Some(event) => one_event(&event, binary),
        None => Err(ApiError::NotFound(format!(
            "there is no event with source {source:?} and id {id:?}"
        ))),
    }
}
