//! Subscriptions (`GET /v1/subscribe`, Server-Sent Events) as a `Stream` that resumes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use reqwest::Method;
use serde_json::value::RawValue;

use crate::filter::{Filter, filter_methods};
use crate::{Client, Error, ReadQuery, StoredEvent, query_string};

/// Which events a subscription delivers, and how hard it tries to stay connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeQuery {
    after: u64,
    filter: Filter,
    reconnects: u32,
}

impl Default for SubscribeQuery {
    fn default() -> Self {
        SubscribeQuery {
            after: 0,
            filter: Filter::default(),
            reconnects: 10,
        }
    }
}

impl SubscribeQuery {
    /// Every event after this position: history first, then live.
    pub fn after(mut self, position: u64) -> Self {
        self.after = position;
        self
    }

    filter_methods!();

    /// How many times in a row a broken connection is reopened before the subscription
    /// ends with the error (default 10; 0: never). Each reconnection resumes after the last
    /// event delivered, and waits longer than the one before (0.1 s doubling, at most 5 s);
    /// an event delivered resets the count.
    pub fn reconnects(mut self, times: u32) -> Self {
        self.reconnects = times;
        self
    }

    fn path(&self, after: u64) -> String {
        let mut pairs = vec![("after", after.to_string())];
        self.filter.push_pairs(&mut pairs);
        format!("/v1/subscribe{}", query_string(pairs))
    }
}

impl From<&ReadQuery> for SubscribeQuery {
    /// The events a read selects, from where it starts, followed live.
    fn from(read: &ReadQuery) -> SubscribeQuery {
        SubscribeQuery {
            after: read.start(),
            filter: read.filter().clone(),
            ..SubscribeQuery::default()
        }
    }
}

type Messages = BoxStream<'static, Result<eventsource_stream::Event, String>>;

/// A live subscription: each matching event once, in position order, across reconnections.
/// Ends with `Err` when the server refuses it, ends it with an error, or cannot be reached
/// again ([`SubscribeQuery::reconnects`]).
pub struct Subscription {
    inner: BoxStream<'static, Result<StoredEvent, Error>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<StoredEvent, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

struct Follow {
    client: Client,
    query: SubscribeQuery,
    /// The position of the last event delivered.
    last: u64,
    messages: Option<Messages>,
    failures: u32,
    done: bool,
}

/// Opens the event stream, resuming after `last`.
async fn connect(client: &Client, query: &SubscribeQuery, last: u64) -> Result<Messages, Error> {
    let mut request = client
        .long_request(Method::GET, &query.path(query.after))
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if last > query.after {
        // The server resumes exactly after it (and prefers it over `after`).
        request = request.header("last-event-id", last.to_string());
    }
    let response = client.send(request).await?;
    Ok(
        eventsource_stream::EventStream::new(response.bytes_stream())
            .map(|m| m.map_err(|e| e.to_string()))
            .boxed(),
    )
}

impl Follow {
    /// Waits before the next connection attempt, or gives up with `error`.
    async fn retry(&mut self, error: Error) -> Option<Error> {
        self.messages = None;
        self.failures += 1;
        if self.failures > self.query.reconnects {
            return Some(error);
        }
        let wait =
            Duration::from_millis(100u64 << self.failures.min(6)).min(Duration::from_secs(5));
        tokio::time::sleep(wait).await;
        None
    }

    async fn next(&mut self) -> Option<Result<StoredEvent, Error>> {
        loop {
            if self.done {
                return None;
            }
            let Some(messages) = self.messages.as_mut() else {
                match connect(&self.client, &self.query, self.last).await {
                    Ok(m) => self.messages = Some(m),
                    // A server that is there and refuses (a bad filter, no permission) will
                    // refuse again; one that is restarting or has no sequencer may not.
                    Err(e) if e.status().is_some_and(|s| s != 502 && s != 503) => {
                        return self.fail(e);
                    }
                    Err(e) => {
                        if let Some(e) = self.retry(e).await {
                            return self.fail(e);
                        }
                    }
                }
                continue;
            };
            let error = match messages.next().await {
                Some(Ok(m)) if m.event == "error" => {
                    return self.fail(Error::Subscription(m.data));
                }
                Some(Ok(m)) if m.data.is_empty() => continue,
                Some(Ok(m)) => match RawValue::from_string(m.data)
                    .map_err(|e| e.to_string())
                    .and_then(StoredEvent::from_raw)
                {
                    Ok(event) => {
                        self.last = event.position();
                        self.failures = 0;
                        return Some(Ok(event));
                    }
                    Err(message) => {
                        return self.fail(Error::Decode {
                            url: self.client.url(&self.query.path(self.query.after)),
                            message,
                        });
                    }
                },
                Some(Err(message)) => {
                    Error::Subscription(format!("the connection broke: {message}"))
                }
                None => Error::Subscription("the server closed the connection".into()),
            };
            if let Some(e) = self.retry(error).await {
                return self.fail(e);
            }
        }
    }

    fn fail(&mut self, error: Error) -> Option<Result<StoredEvent, Error>> {
        self.done = true;
        self.messages = None;
        Some(Err(error))
    }
}

impl Client {
    /// Subscribes to the events a query selects: every one after `after` (history), then
    /// each as it is committed (live), in position order. A broken connection is reopened
    /// and resumes after the last event delivered (`Last-Event-ID`), so no event is missed
    /// or repeated.
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    /// use loom_client::{Client, SubscribeQuery};
    ///
    /// # async fn run() -> Result<(), loom_client::Error> {
    /// let loom = Client::new("http://127.0.0.1:7070")?;
    /// let mut carts = loom.subscribe(SubscribeQuery::default().entity("cart"));
    /// while let Some(event) = carts.next().await {
    ///     let event = event?;
    ///     println!("{} {}", event.position(), event.subject());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, query: SubscribeQuery) -> Subscription {
        let follow = Follow {
            client: self.clone(),
            last: query.after,
            query,
            messages: None,
            failures: 0,
            done: false,
        };
        let inner = futures_util::stream::unfold(follow, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        })
        .boxed();
        Subscription { inner }
    }
}
