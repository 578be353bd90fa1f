//! Appending and reading events.

use cloudevents::Event;
use cloudevents::binding::reqwest::RequestBuilderExt;
use reqwest::{Method, header};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::filter::{Filter, filter_methods};
use crate::{
    AppendOutcome, Client, Conditions, Error, Selector, query_string, read_json, subject_path,
};

/// An event as Loom stored it: its CloudEvents JSON exactly as the server sent it (numbers in
/// `data` keep every digit), with the attributes Loom added.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    raw: Box<RawValue>,
    position: u64,
    revision: u64,
    subject: String,
}

#[derive(Deserialize)]
struct Placed {
    position: u64,
    revision: u64,
    subject: String,
}

impl StoredEvent {
    pub(crate) fn from_raw(raw: Box<RawValue>) -> Result<StoredEvent, String> {
        let placed: Placed = serde_json::from_str(raw.get())
            .map_err(|e| format!("a stored event without position, revision or subject: {e}"))?;
        Ok(StoredEvent {
            raw,
            position: placed.position,
            revision: placed.revision,
            subject: placed.subject,
        })
    }

    /// The global position (1, 2, 3, … across the ledger).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The revision in its stream (1, 2, 3, …).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The stream, `{entity}/{key}` (the event's `subject`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The stored event's CloudEvents JSON, as the server sent it.
    pub fn json(&self) -> &str {
        self.raw.get()
    }

    /// The event for the CloudEvents SDK; `position`, `revision` and `recordedtime` are its
    /// extensions ([`LoomEventExt`]). The SDK holds JSON data as `serde_json::Value`, so a
    /// number beyond what `f64`/`i64`/`u64` hold loses digits there; [`StoredEvent::json`]
    /// keeps them.
    pub fn to_event(&self) -> Result<Event, Error> {
        serde_json::from_str(self.raw.get()).map_err(|e| Error::Decode {
            url: format!("event at position {}", self.position),
            message: format!("not a CloudEvent: {e}"),
        })
    }
}

impl TryFrom<StoredEvent> for Event {
    type Error = Error;
    fn try_from(stored: StoredEvent) -> Result<Event, Error> {
        stored.to_event()
    }
}

/// What Loom adds to every stored event, read from a [`cloudevents::Event`].
pub trait LoomEventExt {
    /// The global position (extension `position`).
    fn position(&self) -> Option<u64>;
    /// The revision in its stream (extension `revision`).
    fn revision(&self) -> Option<u64>;
    /// When the event was committed, RFC 3339 (extension `recordedtime`).
    fn recorded_time(&self) -> Option<String>;
}

impl LoomEventExt for Event {
    fn position(&self) -> Option<u64> {
        integer_extension(self, "position")
    }

    fn revision(&self) -> Option<u64> {
        integer_extension(self, "revision")
    }

    fn recorded_time(&self) -> Option<String> {
        self.extension("recordedtime").map(|v| v.to_string())
    }
}

fn integer_extension(event: &Event, name: &str) -> Option<u64> {
    match event.extension(name)? {
        cloudevents::event::ExtensionValue::Integer(n) => u64::try_from(*n).ok(),
        // Binary mode carries every extension as text.
        cloudevents::event::ExtensionValue::String(s) => s.parse().ok(),
        cloudevents::event::ExtensionValue::Boolean(_) => None,
    }
}

/// One page of a read. When `more` is true, the page was full: read on after the last event
/// ([`ReadQuery::after`] its position, or [`ReadQuery::before`] when reading backwards).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Page {
    /// The events, in the order read.
    pub events: Vec<StoredEvent>,
    /// Whether the server has more after this page.
    pub more: bool,
}

impl Page {
    /// The events for the CloudEvents SDK.
    pub fn to_events(&self) -> Result<Vec<Event>, Error> {
        self.events.iter().map(StoredEvent::to_event).collect()
    }
}

/// Which events a read (`GET /v1/events`, `POST /v1/events/query`) returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadQuery {
    after: Option<u64>,
    before: Option<u64>,
    limit: Option<u64>,
    backwards: bool,
    filter: Filter,
    min_position: Option<u64>,
    timeout_ms: Option<u64>,
}

impl ReadQuery {
    /// The position reads start after, if set.
    pub(crate) fn start(&self) -> u64 {
        self.after.unwrap_or(0)
    }

    /// The filter.
    pub(crate) fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Only events after this position.
    pub fn after(mut self, position: u64) -> Self {
        self.after = Some(position);
        self
    }

    /// Only events before this position.
    pub fn before(mut self, position: u64) -> Self {
        self.before = Some(position);
        self
    }

    /// At most this many events (the server's default: 100; at most 10 000).
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Newest first.
    pub fn backwards(mut self) -> Self {
        self.backwards = true;
        self
    }

    filter_methods!();

    /// Answer only once the node holds this position (read your writes on a cluster
    /// follower), waiting at most `timeout_ms` (the server's default when `None`).
    pub fn min_position(mut self, position: u64, timeout_ms: Option<u64>) -> Self {
        self.min_position = Some(position);
        self.timeout_ms = timeout_ms;
        self
    }

    /// The same read, continued after `page` (`more` tells whether there is anything to
    /// continue with).
    pub fn next(&self, page: &Page) -> ReadQuery {
        let mut next = self.clone();
        if let Some(last) = page.events.last() {
            if self.backwards {
                next.before = Some(last.position());
            } else {
                next.after = Some(last.position());
            }
        }
        next
    }

    /// The query string's pairs; `with_selector` adds the selector parameters (a
    /// `POST /v1/events/query` takes those in its body).
    pub(crate) fn pairs(&self, with_selector: bool) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                pairs.push((k, v));
            }
        };
        put("after", self.after.map(|n| n.to_string()));
        put("before", self.before.map(|n| n.to_string()));
        put("limit", self.limit.map(|n| n.to_string()));
        put("backwards", self.backwards.then(|| "true".to_owned()));
        put("min_position", self.min_position.map(|n| n.to_string()));
        put("timeout_ms", self.timeout_ms.map(|n| n.to_string()));
        if with_selector {
            self.filter.push_pairs(&mut pairs);
        }
        pairs
    }
}

impl Client {
    /// Appends one event in binary content mode (the SDK's `ce-*` headers), as any CloudEvents
    /// producer would. A retry of an event already stored with the same content is a duplicate
    /// (`duplicate: true`, nothing written).
    pub async fn append(&self, event: Event) -> Result<AppendOutcome, Error> {
        let request = self.request(Method::POST, "/v1/events").event(event)?;
        self.json(request).await.map(|(_, outcome)| outcome)
    }

    /// Appends events atomically, all or nothing, in batch content mode.
    pub async fn append_batch(&self, events: Vec<Event>) -> Result<AppendOutcome, Error> {
        let request = self.request(Method::POST, "/v1/events").events(events)?;
        self.json(request).await.map(|(_, outcome)| outcome)
    }

    /// Appends events atomically if every condition holds: expected revisions per stream and
    /// a DCB-style `fail_if_events_match` ([`Conditions`]). A failed condition is
    /// [`Error::Problem`] `revision-conflict` or `condition-conflict`, and nothing is written.
    pub async fn append_with(
        &self,
        events: Vec<Event>,
        conditions: Conditions,
    ) -> Result<AppendOutcome, Error> {
        let body = serde_json::json!({ "events": events, "conditions": conditions });
        let request = self.request(Method::POST, "/v1/append").json(&body);
        self.json(request).await.map(|(_, outcome)| outcome)
    }

    /// Appends a batch given as CloudEvents JSON text (a JSON array of events), as it is:
    /// numbers and member order stay exactly as written.
    pub async fn append_json(&self, batch: String) -> Result<AppendOutcome, Error> {
        let request = self
            .request(Method::POST, "/v1/events")
            .header(header::CONTENT_TYPE, "application/cloudevents-batch+json")
            .body(batch);
        self.json(request).await.map(|(_, outcome)| outcome)
    }

    /// One page of events by position (`GET /v1/events`).
    pub async fn read(&self, query: &ReadQuery) -> Result<Page, Error> {
        let path = format!("/v1/events{}", query_string(query.pairs(true)));
        self.page(self.request(Method::GET, &path)).await
    }

    /// One page of the events a selector matches (`POST /v1/events/query`); the query's own
    /// selector parameters are not used.
    pub async fn query(&self, selector: &Selector, query: &ReadQuery) -> Result<Page, Error> {
        let path = format!("/v1/events/query{}", query_string(query.pairs(false)));
        self.page(self.request(Method::POST, &path).json(selector))
            .await
    }

    /// One event by its position.
    pub async fn event(&self, position: u64) -> Result<StoredEvent, Error> {
        self.one(&format!("/v1/events/{position}")).await
    }

    /// One event by its identity, `(source, id)`.
    pub async fn event_by_id(&self, source: &str, id: &str) -> Result<StoredEvent, Error> {
        let q = query_string([("source", source.to_owned()), ("id", id.to_owned())]);
        self.one(&format!("/v1/events/by-id{q}")).await
    }

    /// Up to 1 000 events of one stream (`{entity}/{key}`) after a revision. A stream with no
    /// events is a 404 problem (`not-found`).
    pub async fn stream(&self, subject: &str, after_revision: u64) -> Result<Page, Error> {
        let path = format!(
            "/v1/streams/{}{}",
            stream_path(subject)?,
            query_string([
                ("after_revision", after_revision.to_string()),
                ("limit", "1000".to_owned()),
            ])
        );
        self.page(self.request(Method::GET, &path)).await
    }

    /// A stream's current revision (0: no events).
    pub async fn stream_revision(&self, subject: &str) -> Result<u64, Error> {
        #[derive(Deserialize)]
        struct Answer {
            revision: u64,
        }
        let path = format!("/v1/streams/{}/revision", stream_path(subject)?);
        let (_, answer): (_, Answer) = self.json(self.request(Method::GET, &path)).await?;
        Ok(answer.revision)
    }

    async fn one(&self, path: &str) -> Result<StoredEvent, Error> {
        let response = self.send(self.request(Method::GET, path)).await?;
        let url = response.url().to_string();
        let raw: Box<RawValue> = read_json(response).await?;
        StoredEvent::from_raw(raw).map_err(|message| Error::Decode { url, message })
    }

    async fn page(&self, request: reqwest::RequestBuilder) -> Result<Page, Error> {
        let response = self.send(request).await?;
        let more = response.headers().contains_key(header::LINK);
        let url = response.url().to_string();
        let raw: Vec<Box<RawValue>> = read_json(response).await?;
        let events = raw
            .into_iter()
            .map(StoredEvent::from_raw)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| Error::Decode { url, message })?;
        Ok(Page { events, more })
    }
}

/// A stream's path below `/v1/streams/`: a key ending in `/revision` would read as the
/// revision endpoint, so every slash of the key is encoded here (docs/http.md).
fn stream_path(subject: &str) -> Result<String, Error> {
    subject_path(subject)?;
    let (entity, key) = subject.split_once('/').unwrap_or_default();
    Ok(format!("{}/{}", crate::seg(entity), crate::seg(key)))
}
