//! `GET /v1/subscribe`: Server-Sent Events, history first, then live.
//!
//! Each subscriber reads the ledger itself, a page at a time, and sleeps on the ledger's head
//! notifications when it has caught up; nothing is buffered per subscriber beyond one page
//! and nothing is pushed by the writer. A slow consumer therefore only slows itself: the
//! response body is produced when the connection can take more, and appends never wait for it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use futures_util::stream;
use loom_ledger::{CompiledSelector, Ledger, ReadOptions};
use tokio::sync::watch;

use crate::AppState;
use crate::auth::Reader;
use crate::metrics::SubscriptionGuard;
use crate::params::Params;
use crate::problem::ApiError;

/// Events read per step while catching up.
const PAGE: usize = 500;
/// Most bytes of events one page holds in memory (a stalled subscriber holds one page).
const PAGE_BYTES: usize = 1 << 20;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/subscribe", get(subscribe_events))
}

/// Subscribe to events as Server-Sent Events: every matching event after `after` (or after
/// the `Last-Event-ID` header), then live ones as they are committed.
///
/// Each message's `id` is the event's position and its `data` the stored event as CloudEvents
/// JSON. Comments (`: heartbeat`) are sent while idle.
#[utoipa::path(
    get, path = "/v1/subscribe", tag = "subscribe",
    params(crate::params::SubscribeParams,
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this position (takes precedence over after)")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "Server-Sent Events. Each message's `id` is an event's position and its `data` \
            the stored event as one line of CloudEvents JSON (the `StoredCloudEvent` schema). While idle, \
            a comment (`: heartbeat`) every 15 s. A message with `event: error` and a sentence as \
            its `data` ends the stream when the server cannot go on (its storage failed); reconnect \
            with `Last-Event-ID` to resume."),
        (status = 400, description = "Bad parameter", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
        (status = 422, description = "Invalid selector", body = crate::problem::Problem<'static>, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reader"]), ())
)]
pub(crate) async fn subscribe_events(
    State(state): State<AppState>,
    _: Reader,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let params = Params::parse(&uri, crate::params::SUBSCRIBE)?;
    let selector = Arc::new(params.selector()?.compile()?);
    let mut after = params.u64("after")?.unwrap_or(0);
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().unwrap_or("").trim();
        after = text
            .parse::<u64>()
            .ok()
            .filter(|n| i64::try_from(*n).is_ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Last-Event-ID {text:?} is not a position (a non-negative integer)"
                ))
            })?;
    }
    let sub = Subscription {
        ledger: state.ledger_arc(),
        selector,
        cursor: after,
        buffer: VecDeque::new(),
        shutdown: state.inner.shutdown.subscribe(),
        _guard: SubscriptionGuard::new(state.inner.clone()),
    };
    let keep_alive = KeepAlive::new()
        .interval(state.inner.config.heartbeat)
        .text("heartbeat");
    Ok(Sse::new(stream::unfold(sub, Subscription::next)).keep_alive(keep_alive))
}

struct Subscription {
    ledger: Arc<Ledger>,
    selector: Arc<CompiledSelector>,
    /// Every event up to here has been read (matching ones are in `buffer` or sent).
    cursor: u64,
    buffer: VecDeque<loom_ledger::StoredEvent>,
    shutdown: watch::Receiver<bool>,
    _guard: SubscriptionGuard,
}

impl Subscription {
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                let message = match serde_json::to_string(&e) {
                    Ok(json) => SseEvent::default().id(e.position.to_string()).data(json),
                    Err(err) => {
                        tracing::error!(error = %err, position = e.position, "event serialization failed");
                        return None;
                    }
                };
                return Some((Ok(message), self));
            }
            if *self.shutdown.borrow() {
                return None;
            }
            let head = self.ledger.head();
            if head > self.cursor {
                let opts = ReadOptions {
                    after: self.cursor,
                    before: Some(head.saturating_add(1)),
                    limit: PAGE,
                    backwards: false,
                };
                let (ledger, selector) = (self.ledger.clone(), self.selector.clone());
                let read = move || ledger.read_bounded(&selector, opts, PAGE_BYTES);
                let (page, cut) = match tokio::task::spawn_blocking(read).await {
                    Ok(Ok(page)) => page,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "subscription read failed");
                        let message = SseEvent::default().event("error").data(
                            "the subscription could not read the ledger; reconnect to resume",
                        );
                        self.buffer.clear();
                        self.cursor = u64::MAX;
                        return Some((Ok(message), self));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "subscription read task failed");
                        return None;
                    }
                };
                self.cursor = if page.len() < PAGE && !cut {
                    head
                } else {
                    page.last().map_or(head, |e| e.position)
                };
                self.buffer.extend(page);
                continue;
            }
            if self.cursor == u64::MAX {
                return None;
            }
            let wanted = self.cursor + 1;
            tokio::select! {
                _ = self.ledger.wait_for_async(wanted) => {}
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}
