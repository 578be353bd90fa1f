//! A client for [Loom](https://example.invalid/loom)'s HTTP API, built on the CloudEvents Rust
//! SDK (`cloudevents-sdk`) and `reqwest`.
//!
//! Events go in and come out as [`cloudevents::Event`]s; what Loom adds to a stored event
//! (`position`, `revision`, `recordedtime`) is read with [`LoomEventExt`]. Refusals arrive as
//! [`Error::Problem`], the server's RFC 9457 problem details, typed enough to branch on
//! ([`Error::is`]`("revision-conflict")`, [`Error::rejection`]).
//!
//! ```no_run
//! use cloudevents::{EventBuilder, EventBuilderV10};
//! use loom_client::{Client, Conditions, ExpectedRevision, LoomEventExt, StateQuery};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), loom_client::Error> {
//! let loom = Client::new("http://127.0.0.1:7070")?;
//!
//! // Append one event (binary content mode), as any CloudEvents producer would.
//! let opened = EventBuilderV10::new()
//!     .id("a1-opened")
//!     .source("https://bank.example")
//!     .ty("was_opened")
//!     .subject("account/a1")
//!     .data("application/json", json!({ "owner": "amal" }))
//!     .build()
//!     .expect("a valid event");
//! let appended = loom.append(opened).await?;
//!
//! // Append only if the stream is still where we saw it.
//! let credited = EventBuilderV10::new()
//!     .id("a1-credit-1")
//!     .source("https://bank.example")
//!     .ty("was_credited")
//!     .subject("account/a1")
//!     .data("application/json", json!({ "amount": 100 }))
//!     .build()
//!     .expect("a valid event");
//! let conditions = Conditions::default().expect("account/a1", ExpectedRevision::Exact(1));
//! match loom.append_with(vec![credited], conditions).await {
//!     Ok(outcome) => println!("at position {}", outcome.last_position),
//!     Err(e) if e.is("revision-conflict") => println!("someone was faster: {e}"),
//!     Err(e) => return Err(e),
//! }
//!
//! // Read the stream back as CloudEvents.
//! for stored in loom.stream("account/a1", 0).await?.events {
//!     let event = stored.to_event()?;
//!     println!("{} at revision {:?}", cloudevents::AttributesReader::ty(&event), event.revision());
//! }
//!
//! // A projection's state, once it has folded our append (read your writes).
//! let state = loom
//!     .state("accounts", Some("account/a1"), &StateQuery::min_position(appended.last_position))
//!     .await?;
//! println!("{}", state.state);
//! # Ok(()) }
//! ```
//!
//! Subscriptions are a [`futures_util::Stream`] that reconnects and resumes after the last
//! event it yielded (see [`Client::subscribe`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod error;
mod events;
mod filter;
mod subscribe;

pub use admin::{
    Backup, CommandEvent, CommandOutcome, Defined, ModuleRecord, Outcome, ProjectionAction,
    ProjectionSpec, ReactorAction, State, StateQuery,
};
pub use error::{Error, PROBLEM_PREFIX, Problem};
pub use events::{LoomEventExt, Page, ReadQuery, StoredEvent};
pub use subscribe::{SubscribeQuery, Subscription};

pub use cloudevents;
pub use loom_core::{
    AppendOutcome, AppendedEvent, Conditions, EntitySpec, ExpectedRevision, Selector,
};

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde::de::DeserializeOwned;

/// Characters left as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment, percent-encoded.
pub(crate) fn seg(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// A stream's subject `{entity}/{key}` as path segments: the entity and each part of the key
/// encoded, the key's slashes kept (the server reads the key as the rest of the path).
pub(crate) fn subject_path(subject: &str) -> Result<String, Error> {
    let Some((entity, key)) = subject
        .split_once('/')
        .filter(|(e, k)| !e.is_empty() && !k.is_empty())
    else {
        return Err(Error::Invalid(format!(
            "{subject:?} is not a stream name: write it as {{entity}}/{{key}}"
        )));
    };
    let key: Vec<String> = key.split('/').map(seg).collect();
    Ok(format!("{}/{}", seg(entity), key.join("/")))
}

/// A query string from pairs, `?a=1&b=2`, each value percent-encoded (empty without pairs).
pub(crate) fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut q = String::new();
    for (k, v) in pairs {
        q.push(if q.is_empty() { '?' } else { '&' });
        q.push_str(k);
        q.push('=');
        q.push_str(&utf8_percent_encode(&v, SEGMENT).to_string());
    }
    q
}

/// A connection to one Loom server (or cluster node). Cheap to clone: clones share the
/// connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// No streaming timeout: for subscriptions and downloads.
    long: reqwest::Client,
    base: String,
}

/// Settings of a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: String,
}

impl ClientBuilder {
    /// A bearer token (`loom serve --token ROLE:TOKEN`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The longest a request may take, answer included (default 60 s). Subscriptions and
    /// backups are not bound by it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest connecting may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The `User-Agent` sent (default `loom-client/<version>`).
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// Builds the client. Fails when the URL is not an `http(s)://` URL or the token is not a
    /// valid header value.
    pub fn build(self) -> Result<Client, Error> {
        let base = self.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "the server URL {:?} does not start with http:// or https://",
                self.url
            )));
        }
        let mut headers = header::HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Invalid("the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let builder = || {
            reqwest::Client::builder()
                .default_headers(headers.clone())
                .connect_timeout(self.connect_timeout)
                .user_agent(self.user_agent.clone())
        };
        let built = |b: reqwest::ClientBuilder| {
            b.build()
                .map_err(|e| Error::Invalid(format!("building the HTTP client: {e}")))
        };
        Ok(Client {
            http: built(builder().timeout(self.timeout))?,
            long: built(builder())?,
            base,
        })
    }
}

impl Client {
    /// A client of the server at `url` (`http://127.0.0.1:7070`), without a token.
    pub fn new(url: &str) -> Result<Client, Error> {
        Client::builder(url).build()
    }

    /// Settings for a client of the server at `url`.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            token: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("loom-client/", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    pub(crate) fn request(&self, method: Method, path_and_query: &str) -> RequestBuilder {
        self.http.request(method, self.url(path_and_query))
    }

    pub(crate) fn long_request(&self, method: Method, path_and_query: &str) -> RequestBuilder {
        self.long.request(method, self.url(path_and_query))
    }

    /// Sends a request (with the client that built it); a non-success answer becomes
    /// [`Error::Problem`].
    pub(crate) async fn send(&self, request: RequestBuilder) -> Result<Response, Error> {
        let (client, request) = request.build_split();
        let request = request.map_err(|e| Error::Invalid(e.to_string()))?;
        let url = request.url().to_string();
        let response = client
            .execute(request)
            .await
            .map_err(|source| Error::Transport { url, source })?;
        check(response).await
    }

    /// Sends a request and reads a JSON answer; also returns the status.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<(StatusCode, T), Error> {
        let response = self.send(request).await?;
        let status = response.status();
        let value = read_json(response).await?;
        Ok((status, value))
    }

    /// Sends a request whose answer has no body worth reading (204).
    pub(crate) async fn no_content(&self, request: RequestBuilder) -> Result<(), Error> {
        self.send(request).await.map(drop)
    }
}

/// Turns a non-success answer into [`Error::Problem`].
pub(crate) async fn check(response: Response) -> Result<Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = response.url().to_string();
    let body = response
        .bytes()
        .await
        .map_err(|source| Error::Transport { url, source })?;
    Err(Error::Problem(Box::new(Problem::from_answer(
        status.as_u16(),
        &body,
    ))))
}

/// Reads a JSON answer.
pub(crate) async fn read_json<T: DeserializeOwned>(response: Response) -> Result<T, Error> {
    let url = response.url().to_string();
    let body = response.bytes().await.map_err(|source| Error::Transport {
        url: url.clone(),
        source,
    })?;
    serde_json::from_slice(&body).map_err(|e| Error::Decode {
        url,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_become_path_segments() {
        assert_eq!(subject_path("cart/c1").unwrap(), "cart/c1");
        assert_eq!(subject_path("cart/eu/4 2").unwrap(), "cart/eu/4%202");
        assert!(subject_path("cart").is_err());
        assert!(subject_path("/c1").is_err());
        assert!(subject_path("cart/").is_err());
    }

    #[test]
    fn builds_only_for_http_urls_and_header_tokens() {
        assert!(Client::new("127.0.0.1:7070").is_err());
        assert!(Client::builder("http://x").token("a\nb").build().is_err());
        let c = Client::new("http://127.0.0.1:7070/").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:7070");
        assert_eq!(
            query_string([("a", "1".into()), ("t", "x y/z".into())]),
            "?a=1&t=x%20y%2Fz"
        );
    }
}
