//! Reading a projection over HTTP: its state (live, at a past position or time, or after a
//! position for read-your-writes), its partition keys, and the module's `query` export.
//!
//! Routing: a `stream` projection's state is `…/state/{entity}/{key}` where `{key}` is the
//! rest of the path and may contain `/` (`…/state/cart/eu/42` is stream `cart/eu/42`); a
//! `single` projection's is `…/state`. The same goes for `…/query`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use loom_engine::{At, Partition, StateView, Status};

use super::wait::wait_limit;
use crate::auth::Reader;
use crate::params::{Params, link};
use crate::problem::ApiError;
use crate::{AppState, json_response, read_body, require_json, to_json};

/// Which state a read wants, from `at_position`, `at_time`, `min_position`, `timeout_ms`.
#[derive(Debug)]
struct When {
    at: At,
    /// Wait until the projection reached this position, at most `wait`.
    min_position: Option<u64>,
    wait: Duration,
}

fn when(state: &AppState, params: &Params) -> Result<When, ApiError> {
    let at_position = params.u64("at_position")?;
    let at_time = params
        .one("at_time")?
        .map(|t| {
            loom_ledger::parse_time(t.trim()).map_err(|e| {
                ApiError::BadRequest(format!(
                    "at_time {t:?} is not an RFC 3339 time such as 2025-01-31T12:00:00Z: {e}"
                ))
            })
        })
        .transpose()?;
    let min_position = params.u64("min_position")?;
    let timeout_ms = params.u64("timeout_ms")?;
    let at = match (at_position, at_time) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "at_position and at_time both name a moment; give one of them".into(),
            ));
        }
        (Some(p), None) => At::Position(p),
        (None, Some(t)) => At::Time(t),
        (None, None) => At::Now,
    };
    if min_position.is_some() && at != At::Now {
        return Err(ApiError::BadRequest(
            "min_position waits for the live state; at_position and at_time replay history \
             and need no wait: give one or the other"
                .into(),
        ));
    }
    if timeout_ms.is_some() && min_position.is_none() {
        return Err(ApiError::BadRequest(
            "timeout_ms bounds the wait of min_position; give min_position too".into(),
        ));
    }
    Ok(When {
        at,
        min_position,
        wait: wait_limit(state, timeout_ms),
    })
}

/// Waits, without holding a thread, until `name` has folded everything up to `position`
/// (bounded by `wait`). A paused or failed projection will not get there: that answers at
/// once. At most `Config::max_waits` requests wait at a time; more are a 503.
async fn wait_async(
    state: &AppState,
    name: &str,
    position: u64,
    wait: Duration,
) -> Result<(), ApiError> {
    let _permit = state.inner.waits.try_acquire().map_err(|_| {
        ApiError::Unavailable(format!(
            "{} requests are waiting for projections already; retry shortly",
            state.inner.config.max_waits
        ))
    })?;
    let projections = state.engine().projections();
    let started = Instant::now();
    loop {
        let (reached, changed) = projections.watch(name)?;
        if reached >= position {
            return Ok(());
        }
        let status = projections.status(name)?;
        let active = &status.active;
        if matches!(active.status, Status::Paused | Status::Failed) {
            let why = match (&active.status, &active.last_error) {
                (Status::Failed, Some(f)) => format!(
                    "failed at position {}: {}; resume it once fixed",
                    f.position, f.message
                ),
                (Status::Failed, None) => "failed; resume it once fixed".to_owned(),
                _ => "paused; resume it".to_owned(),
            };
            return Err(ApiError::WaitTimeout {
                message: format!(
                    "projection {name:?} is at position {reached} and {why}; it will not \
                     reach min_position {position} until then"
                ),
                wanted: position,
                reached,
            });
        }
        let elapsed = started.elapsed();
        if elapsed >= wait {
            return Err(ApiError::WaitTimeout {
                message: format!(
                    "projection {name:?} reached position {reached}, not {position}, within \
                     {} ms; retry, or ask with a longer timeout_ms (the server caps it)",
                    elapsed.as_millis()
                ),
                wanted: position,
                reached,
            });
        }
        // Wake at least every 100 ms to notice a swap of generations.
        let nap = (wait - elapsed).min(Duration::from_millis(100));
        let _ = tokio::time::timeout(nap, changed).await;
    }
}

fn push_time(out: &mut Vec<u8>, micros: Option<i64>) {
    match micros {
        Some(m) => {
            out.push(b'"');
            out.extend_from_slice(loom_ledger::format_time(m).as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn check_json(bytes: &[u8], what: &str) -> Result<(), ApiError> {
    loom_core::json::check_strict(bytes)
        .map_err(|e| ApiError::ModuleFailed(format!("the module's {what} is not strict JSON: {e}")))
}

/// A state read's answer, as [`state_body`] writes it. The body is written by hand so that the
/// state's JSON is copied as the module produced it, not parsed again; this type is what the
/// OpenAPI document shows, and a test reads written bodies back into it.
#[cfg_attr(test, derive(serde::Deserialize))]
#[cfg_attr(test, serde(deny_unknown_fields))]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct StateAnswer {
    /// The state, as the module's `evolve` made it.
    state: serde_json::Value,
    /// The state includes every selected event up to this position.
    position: u64,
    /// Events folded into this state.
    events_applied: u64,
    /// Recorded time of the first event folded (RFC 3339; null: none).
    created_at: Option<String>,
    /// Recorded time of the last event folded (RFC 3339; null: none).
    updated_at: Option<String>,
}

/// Writes a [`StateAnswer`], with the state's JSON as the module produced it. States read
/// from storage were checked to be JSON when they were committed; replayed ones (`validate`)
/// are checked here.
fn state_body(view: &StateView, validate: bool) -> Result<Vec<u8>, ApiError> {
    if validate {
        check_json(&view.state, "state")?;
    }
    let mut out = Vec::with_capacity(view.state.len() + 160);
    out.extend_from_slice(b"{\"state\":");
    out.extend_from_slice(&view.state);
    let _ = write!(
        out,
        ",\"position\":{},\"events_applied\":{},\"created_at\":",
        view.position, view.events_applied
    );
    push_time(&mut out, view.created_micros);
    out.extend_from_slice(b",\"updated_at\":");
    push_time(&mut out, view.updated_micros);
    out.push(b'}');
    Ok(out)
}

/// Answers a state read. A live read whose `min_position` (if any) is already reached is a
/// short point read of the stored state, answered right here on the async runtime: handing
/// it to the blocking pool cost more than the read itself (thread wake-ups dominated the
/// profile under load). Waits, replays (`at_position`, `at_time`) and anything that needs a
/// module call run on the blocking pool.
async fn state_answer(
    state: AppState,
    uri: &Uri,
    name: String,
    key: Option<String>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = Params::parse(uri, crate::params::STATE)?;
    let when = when(&state, &params)?;
    let projections = state.engine().projections();
    let reached = match (when.at, when.min_position) {
        (At::Now, None) => true,
        (At::Now, Some(p)) => projections.wait_for(&name, p, Duration::ZERO).is_ok(),
        _ => false,
    };
    if reached && let Some(view) = projections.stored_state(&name, key.as_deref())? {
        let body = state_body(&view, false)?;
        state.inner.metrics.record_state_query(started.elapsed());
        return Ok(json_response(StatusCode::OK, "application/json", body));
    }
    if let Some(p) = when.min_position {
        wait_async(&state, &name, p, when.wait).await?;
    }
    let engine = state.engine().clone();
    let view = tokio::task::spawn_blocking(move || {
        Ok::<_, ApiError>(engine.projections().state(&name, key.as_deref(), when.at)?)
    })
    .await??;
    let body = state_body(&view, true)?;
    state.inner.metrics.record_state_query(started.elapsed());
    Ok(json_response(StatusCode::OK, "application/json", body))
}

/// The state of a `single` projection: live, at a past position or time (replayed, exact),
/// or once the projection reached `min_position` (read-your-writes).
#[utoipa::path(
    get, path = "/v1/projections/{name}/state", tag = "projections",
    params(("name" = String, Path, description = "Projection name"), crate::params::StateParams),
    responses(
        (status = 200, description = "The state", body = crate::routes::projection_state::StateAnswer),
        (status = 400, description = "Bad or conflicting parameters", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such projection", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "The projection is partitioned by stream, or the module failed replaying", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 504, description = "min_position not reached in time", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn projections_state(
    State(state): State<AppState>,
    _: Reader,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    state_answer(state, &uri, name, None).await
}

/// The state of one stream (`{entity}/{key}`) of a `stream` projection; parameters as for
/// the `single` state.
#[utoipa::path(
    get, path = "/v1/projections/{name}/state/{entity}/{key}", tag = "projections",
    params(("name" = String, Path, description = "Projection name"),
        ("entity" = String, Path, description = "The stream's entity"),
        ("key" = String, Path, description = "The stream's key; may contain '/'"),
        crate::params::StateParams),
    responses(
        (status = 200, description = "The state", body = crate::routes::projection_state::StateAnswer),
        (status = 400, description = "Bad or conflicting parameters", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 404, description = "No such projection, or no state for this stream (at that moment)", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "The projection is `single`, or the module failed replaying", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 504, description = "min_position not reached in time", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn projections_state_key(
    State(state): State<AppState>,
    _: Reader,
    Path((name, entity, key)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    state_answer(state, &uri, name, Some(format!("{entity}/{key}"))).await
}

/// The partition keys (streams) with state, in order, a page at a time: `after` a key,
/// `limit` keys; a full page carries `Link: <…>; rel="next"`.
#[utoipa::path(
    get, path = "/v1/projections/{name}/keys", tag = "projections",
    params(("name" = String, Path, description = "Projection name"),
        ("after" = Option<String>, Query, description = "Only keys after this one"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 10000, description = "Most keys (default 100, at most 10000)")),
    responses(
        (status = 200, description = "Keys (`{entity}/{key}`)", body = Vec<String>,
            headers(("Link" = String, description = "rel=\"next\": the next page"))),
        (status = 404, description = "No such projection", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "A `single` projection has no keys", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn projections_keys(
    State(state): State<AppState>,
    _: Reader,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let params = Params::parse(&uri, &["after", "limit"])?;
    let limit = params.limit(state.config().default_page, state.config().max_page)?;
    let after = params.one("after")?.map(str::to_owned);
    let engine = state.engine().clone();
    let keys = tokio::task::spawn_blocking(move || {
        let status = engine.projections().status(&name)?;
        if status.spec.partition == Partition::Single {
            return Err(ApiError::InvalidProjection(format!(
                "projection {name:?} is partitioned \"single\": it has one state, at \
                 /v1/projections/{name}/state"
            )));
        }
        Ok(engine.projections().keys(&name, after.as_deref(), limit)?)
    })
    .await??;
    let mut response = to_json(StatusCode::OK, &keys)?;
    if keys.len() == limit
        && let Some(last) = keys.last()
    {
        let next = link(uri.path(), &params, &[("after", last.clone())]);
        if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(response)
}

async fn query_answer(
    state: AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    name: String,
    key: Option<String>,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri, &["min_position", "timeout_ms"])?;
    let min_position = params.u64("min_position")?;
    let timeout_ms = params.u64("timeout_ms")?;
    if timeout_ms.is_some() && min_position.is_none() {
        return Err(ApiError::BadRequest(
            "timeout_ms bounds the wait of min_position; give min_position too".into(),
        ));
    }
    let wait = wait_limit(&state, timeout_ms);
    let bytes = read_body(&state, headers, body).await?;
    let input = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".to_vec()
    } else {
        require_json(headers)?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|e| {
            ApiError::BadRequest(format!("the query parameters are not valid JSON: {e}"))
        })?;
        bytes.to_vec()
    };
    if let Some(p) = min_position {
        wait_async(&state, &name, p, wait).await?;
    }
    let engine = state.engine().clone();
    let out = tokio::task::spawn_blocking(move || {
        let status = engine.projections().status(&name)?;
        if let Some(m) = engine.modules().get(&status.spec.module)?
            && !m.exports.iter().any(|e| e == "query")
        {
            return Err(ApiError::MissingExport(format!(
                "module {} of projection {name:?} does not export query",
                m.id
            )));
        }
        match (status.spec.partition, &key) {
            (Partition::Single, Some(_)) => {
                return Err(ApiError::InvalidProjection(format!(
                    "projection {name:?} is partitioned \"single\": query it at \
                     /v1/projections/{name}/query"
                )));
            }
            (Partition::Stream, None) => {
                return Err(ApiError::InvalidProjection(format!(
                    "projection {name:?} is partitioned by stream: query a stream at \
                     /v1/projections/{name}/query/{{entity}}/{{key}}"
                )));
            }
            _ => {}
        }
        engine
            .projections()
            .query(&name, key.as_deref(), &input)
            .map_err(ApiError::from)
    })
    .await??;
    check_json(&out, "query answer")?;
    Ok(json_response(StatusCode::OK, "application/json", out))
}

/// Call the module's `query` export on a `single` projection's live state, with the body as
/// its parameters (JSON; empty means `{}`). The answer is the module's output as-is.
#[utoipa::path(
    post, path = "/v1/projections/{name}/query", tag = "projections",
    params(("name" = String, Path, description = "Projection name"),
        ("min_position" = Option<u64>, Query, description = "Wait until the projection reached this position"),
        ("timeout_ms" = Option<u64>, Query, description = "Longest wait for min_position (capped by the server)")),
    request_body(description = "Query parameters for the module (JSON); no body means {}", content((Object = "application/json"))),
    responses(
        (status = 200, description = "The module's answer", body = Object),
        (status = 404, description = "No such projection", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "No query export, wrong partition, or the module refused the parameters", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn projections_query(
    State(state): State<AppState>,
    _: Reader,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    query_answer(state, &uri, &headers, body, name, None).await
}

/// Call the module's `query` export on one stream's live state (`stream` projections).
#[utoipa::path(
    post, path = "/v1/projections/{name}/query/{entity}/{key}", tag = "projections",
    params(("name" = String, Path, description = "Projection name"),
        ("entity" = String, Path, description = "The stream's entity"),
        ("key" = String, Path, description = "The stream's key; may contain '/'"),
        ("min_position" = Option<u64>, Query, description = "Wait until the projection reached this position"),
        ("timeout_ms" = Option<u64>, Query, description = "Longest wait for min_position (capped by the server)")),
    request_body(description = "Query parameters for the module (JSON); no body means {}", content((Object = "application/json"))),
    responses(
        (status = 200, description = "The module's answer", body = Object),
        (status = 404, description = "No such projection or no state for the stream", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "No query export, wrong partition, or the module refused the parameters", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn projections_query_key(
    State(state): State<AppState>,
    _: Reader,
    Path((name, entity, key)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    query_answer(
        state,
        &uri,
        &headers,
        body,
        name,
        Some(format!("{entity}/{key}")),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_state_body_is_a_state_answer() {
        for (created, updated) in [(None, None), (Some(1), Some(1_700_000_000_123_456))] {
            let view = StateView {
                state: br#"{"items":[1,2],"note":"\u00e9"}"#.to_vec(),
                position: 7,
                events_applied: 2,
                created_micros: created,
                updated_micros: updated,
            };
            let body = state_body(&view, true).unwrap();
            let answer: StateAnswer = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                answer.state,
                serde_json::json!({"items": [1, 2], "note": "é"})
            );
            assert_eq!((answer.position, answer.events_applied), (7, 2));
            assert_eq!(answer.created_at.is_some(), created.is_some());
            assert_eq!(answer.updated_at, updated.map(loom_ledger::format_time),);
        }
    }
}
