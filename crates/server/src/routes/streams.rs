//! Streams: the streams there are (by subject prefix), one subject's events by revision, and
//! its current revision.
//!
//! Routing: `GET /v1/streams/{entity}/{key}` where `{key}` is the rest of the path and may
//! contain `/` (`/v1/streams/cart/eu/42` is stream `cart/eu/42`). A path ending in a literal
//! `/revision` is the revision endpoint of the stream before it. A key that itself ends in
//! `/revision` (or contains any other reserved character) is written with its slashes
//! percent-encoded: `/v1/streams/cart/a%2Frevision` reads stream `cart/a/revision`.

use axum::Router;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use percent_encoding::percent_decode_str;

use crate::auth::Reader;
use crate::binding::CLOUDEVENTS_BATCH_JSON;
use crate::params::{Params, link};
use crate::problem::ApiError;
use crate::{AppState, json_response};

const PREFIX: &str = "/v1/streams/";
const REVISION_SUFFIX: &str = "/revision";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/streams", get(streams_list))
        .route("/v1/streams/{entity}/{*key}", get(streams_dispatch))
}

/// One stream in a list: its subject and current revision.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct StreamEntry {
    /// The stream, `{entity}/{key}`.
    subject: String,
    /// Its current revision (its number of events).
    revision: u64,
}

/// The streams whose subject starts with `prefix`, in subject order (bytewise), a page at a
/// time: `after` a subject, `limit` streams; a full page carries `Link: <…>; rel="next"`.
#[utoipa::path(
    get, path = "/v1/streams", tag = "streams",
    params(("prefix" = Option<String>, Query, description = "Only subjects starting with this (`cart/`, `cart/eu-`); default: every stream"),
        ("after" = Option<String>, Query, description = "Only subjects after this one"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 10000, description = "Most streams (default 100, at most 10000)")),
    responses(
        (status = 200, description = "Streams with their revisions", body = Vec<StreamEntry>,
            headers(("Link" = String, description = "rel=\"next\": the next page"))),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn streams_list(
    State(state): State<AppState>,
    _: Reader,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let params = Params::parse(&uri, &["prefix", "after", "limit"])?;
    let limit = params.limit(state.config().default_page, state.config().max_page)?;
    let prefix = params.one("prefix")?.unwrap_or("").to_owned();
    let after = params.one("after")?.map(str::to_owned);
    let ledger = state.ledger_arc();
    let streams =
        tokio::task::spawn_blocking(move || ledger.streams(&prefix, after.as_deref(), limit))
            .await
            .map_err(|e| ApiError::Internal(format!("listing streams: {e}")))??;
    let page: Vec<StreamEntry> = streams
        .into_iter()
        .map(|(subject, revision)| StreamEntry { subject, revision })
        .collect();
    let mut response = crate::to_json(StatusCode::OK, &page)?;
    if page.len() == limit
        && let Some(last) = page.last()
    {
        let next = link(uri.path(), &params, &[("after", last.subject.clone())]);
        if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(response)
}

/// Splits the raw path into the subject and whether the revision endpoint is meant.
fn subject_of(path: &str) -> Result<(String, bool), ApiError> {
    let rest = path
        .strip_prefix(PREFIX)
        .ok_or_else(|| ApiError::NotFound("no such route".into()))?;
    let (entity, mut key) = rest.split_once('/').ok_or_else(|| {
        ApiError::BadRequest("a stream is addressed as /v1/streams/{entity}/{key}".into())
    })?;
    let mut revision = false;
    if let Some(k) = key.strip_suffix(REVISION_SUFFIX)
        && !k.is_empty()
    {
        key = k;
        revision = true;
    }
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| {
                ApiError::BadRequest("the stream name is not percent-encoded UTF-8".into())
            })
    };
    let subject = format!("{}/{}", decode(entity)?, decode(key)?);
    if loom_ledger::split_subject(&subject).is_none() {
        return Err(ApiError::BadRequest(format!(
            "{subject:?} is not a stream name (\"{{entity}}/{{key}}\")"
        )));
    }
    Ok((subject, revision))
}

async fn streams_dispatch(
    State(state): State<AppState>,
    reader: Reader,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let (subject, revision) = subject_of(uri.path())?;
    if revision {
        streams_revision(state, reader, &uri, subject).await
    } else {
        streams_read(state, reader, &uri, subject).await
    }
}

/// One stream's events in revision order.
#[utoipa::path(
    get, path = "/v1/streams/{entity}/{key}", tag = "streams",
    params(("entity" = String, Path, description = "The entity"),
        ("key" = String, Path, description = "The stream key; may contain '/' (percent-encode a key ending in /revision)"),
        ("after_revision" = Option<u64>, Query, description = "Only revisions after this (default 0)"),
        ("limit" = Option<u64>, Query, minimum = 1, description = "Most events (default 100)"),
        ("min_position" = Option<u64>, Query, description = "Wait until this node's ledger holds this position (read-your-writes on any node of a cluster)"),
        ("timeout_ms" = Option<u64>, Query, description = "Longest wait for min_position, ms (capped by the server)")),
    responses(
        (status = 200, description = "The stream's events", body = Vec<loom_core::StoredEvent>,
            content_type = "application/cloudevents-batch+json",
            headers(("Link" = String, description = "rel=\"next\": the next page"))),
        (status = 404, description = "The stream has no events", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 504, description = "min_position was not reached within the wait", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn streams_read(
    state: AppState,
    _: Reader,
    uri: &axum::http::Uri,
    subject: String,
) -> Result<Response, ApiError> {
    let params = Params::parse(
        uri,
        &["after_revision", "limit", "min_position", "timeout_ms"],
    )?;
    super::wait::head_reaches(&state, &params).await?;
    let after = params.u64("after_revision")?.unwrap_or(0);
    let limit = params.limit(state.inner.config.default_page, state.inner.config.max_page)?;
    let (events, revision) = {
        let subject = subject.clone();
        state
            .blocking(move |l| {
                let events = l.read_stream(&subject, after, limit)?;
                let revision = if events.is_empty() {
                    l.stream_revision(&subject)?
                } else {
                    0
                };
                Ok((events, revision))
            })
            .await?
    };
    if events.is_empty() && revision == 0 {
        return Err(ApiError::NotFound(format!(
            "stream {subject:?} has no events"
        )));
    }
    let body = serde_json::to_vec(&events).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = json_response(StatusCode::OK, CLOUDEVENTS_BATCH_JSON, body);
    if events.len() == limit
        && let Some(last) = events.last()
    {
        let next = link(
            uri.path(),
            &params,
            &[("after_revision", last.revision.to_string())],
        );
        if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(response)
}

/// The answer of `…/revision`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct StreamRevision {
    /// The stream, `{entity}/{key}`.
    stream: String,
    /// Its last event's revision; 0 when it has no events.
    revision: u64,
}

/// A stream's current revision (0: no events yet), in O(1).
#[utoipa::path(
    get, path = "/v1/streams/{entity}/{key}/revision", tag = "streams",
    params(("entity" = String, Path, description = "The entity"),
        ("key" = String, Path, description = "The stream key; may contain '/'")),
    responses(
        (status = 200, description = "The revision", body = crate::routes::streams::StreamRevision),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn streams_revision(
    state: AppState,
    _: Reader,
    uri: &axum::http::Uri,
    subject: String,
) -> Result<Response, ApiError> {
    Params::parse(uri, &[])?;
    let revision = {
        let subject = subject.clone();
        state
            .blocking(move |l| Ok(l.stream_revision(&subject)?))
            .await?
    };
    let body = serde_json::to_vec(&StreamRevision {
        stream: subject,
        revision,
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, "application/json", body))
}
