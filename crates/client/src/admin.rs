//! The registry, modules, projections, deciders and commands, reactors, and operations.
//!
//! Statuses (of projections, reactors, the cluster) are answered as `serde_json::Value`: they
//! are documents for people and dashboards that grow new members release by release, and the
//! OpenAPI document (`GET /v1/openapi.json`) describes them.

use bytes::Bytes;
use futures_util::Stream;
use reqwest::{Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Client, Error, Selector, query_string, read_json, seg, subject_path};

/// How a `PUT` of a definition went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It did not exist before (201).
    Created,
    /// It existed; it is now as given, whether or not that changed anything (200).
    Updated,
    /// A projection's new definition builds in the background while the old one serves (202).
    Upgrading,
}

impl Outcome {
    fn of(status: StatusCode) -> Outcome {
        match status {
            StatusCode::CREATED => Outcome::Created,
            StatusCode::ACCEPTED => Outcome::Upgrading,
            _ => Outcome::Updated,
        }
    }
}

/// A definition's outcome and the server's status document after it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Defined {
    /// What the request did.
    pub outcome: Outcome,
    /// The definition's status (as `GET` answers it).
    pub status: Value,
}

/// A stored module (`POST /v1/modules`, `GET /v1/modules/{id}`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct ModuleRecord {
    /// `sha256:<hex>` of its bytes.
    pub id: String,
    /// Its size in bytes.
    pub size: u64,
    /// The guest ABI version it speaks.
    pub abi: u32,
    /// Its entry points (`evolve`, `decide`, `react`, `query`, …).
    pub exports: Vec<String>,
    /// When it was first stored.
    pub uploaded_at: String,
    /// Members this client does not know yet.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A projection's definition (`PUT /v1/projections/{name}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProjectionSpec {
    /// The module's id, `sha256:…`.
    pub module: String,
    /// The reducer of an ABI v2 module (left out: the one that fits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reducer: Option<String>,
    /// The events it folds.
    pub selector: Selector,
    /// `stream` (one state per `{entity}/{key}`) or `single` (one state).
    pub partition: String,
}

impl ProjectionSpec {
    /// One state per stream.
    pub fn stream(module: impl Into<String>, selector: Selector) -> ProjectionSpec {
        ProjectionSpec {
            module: module.into(),
            reducer: None,
            selector,
            partition: "stream".into(),
        }
    }

    /// One state for everything selected.
    pub fn single(module: impl Into<String>, selector: Selector) -> ProjectionSpec {
        ProjectionSpec {
            module: module.into(),
            reducer: None,
            selector,
            partition: "single".into(),
        }
    }

    /// The same, running the module's reducer `name`.
    pub fn reducer(mut self, name: impl Into<String>) -> ProjectionSpec {
        self.reducer = Some(name.into());
        self
    }
}

/// A projection's life-cycle request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProjectionAction {
    /// Fold again from position 0, as a new generation that swaps in when caught up.
    Rebuild,
    /// Stop folding; the state is still served.
    Pause,
    /// Fold again (retrying a failed event).
    Resume,
}

/// A reactor's life-cycle request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReactorAction {
    /// Stop reacting.
    Pause,
    /// React again (retrying a failed event).
    Resume,
}

/// Which state a projection read answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateQuery {
    at_position: Option<u64>,
    at_time: Option<String>,
    min_position: Option<u64>,
    timeout_ms: Option<u64>,
}

impl StateQuery {
    /// The live state, as far as the projection has folded.
    pub fn live() -> StateQuery {
        StateQuery::default()
    }

    /// The live state once the projection has folded everything up to `position` (read your
    /// writes: pass an append's `last_position`).
    pub fn min_position(position: u64) -> StateQuery {
        StateQuery {
            min_position: Some(position),
            ..StateQuery::default()
        }
    }

    /// The state after every selected event up to `position`, replayed (time travel).
    pub fn at_position(position: u64) -> StateQuery {
        StateQuery {
            at_position: Some(position),
            ..StateQuery::default()
        }
    }

    /// The state as of the head at an RFC 3339 time, replayed.
    pub fn at_time(time: impl Into<String>) -> StateQuery {
        StateQuery {
            at_time: Some(time.into()),
            ..StateQuery::default()
        }
    }

    /// The longest the server waits for `min_position` (its default when not set).
    pub fn timeout_ms(mut self, ms: u64) -> StateQuery {
        self.timeout_ms = Some(ms);
        self
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(p) = self.at_position {
            pairs.push(("at_position", p.to_string()));
        }
        if let Some(t) = &self.at_time {
            pairs.push(("at_time", t.clone()));
        }
        if let Some(p) = self.min_position {
            pairs.push(("min_position", p.to_string()));
        }
        if let Some(t) = self.timeout_ms {
            pairs.push(("timeout_ms", t.to_string()));
        }
        pairs
    }
}

/// A projection's state (`GET /v1/projections/{name}/state…`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct State {
    /// The state as the module's `evolve` made it.
    pub state: Value,
    /// Every selected event up to this position is folded into it.
    pub position: u64,
    /// How many events were folded into it.
    pub events_applied: u64,
    /// `recordedtime` of the first event folded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// `recordedtime` of the last event folded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// An event a command appended.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct CommandEvent {
    /// `source` (`loom/deciders/{entity}`).
    pub source: String,
    /// `id`, derived from the command so that a retry appends nothing twice.
    pub id: String,
    /// `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The stream.
    pub subject: String,
    /// Global position.
    pub position: u64,
    /// Revision in the stream.
    pub revision: u64,
}

/// The outcome of a command (`POST /v1/commands/{entity}/{key}`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct CommandOutcome {
    /// The stream the command ran on.
    pub subject: String,
    /// The events the decider decided and Loom appended.
    pub events: Vec<CommandEvent>,
    /// The stream's revision after them.
    pub revision: u64,
    /// Whether this was a repeat of a command already run (same `Idempotency-Key`): nothing
    /// was written.
    #[serde(default)]
    pub duplicate: bool,
    /// How many times the decider ran (conflicting appends are retried).
    #[serde(default)]
    pub attempts: u64,
}

/// A backup being downloaded (`GET /v1/backup`).
#[derive(Debug)]
#[non_exhaustive]
pub struct Backup {
    /// The last position the backup holds.
    pub head: u64,
    /// In a cluster, the log sequence the backup covers (0 on a single node).
    pub log_sequence: u64,
    response: reqwest::Response,
}

impl Backup {
    /// The database file's bytes, as they arrive.
    pub fn bytes(self) -> impl Stream<Item = Result<Bytes, Error>> {
        use futures_util::StreamExt;
        let url = self.response.url().to_string();
        self.response.bytes_stream().map(move |chunk| {
            chunk.map_err(|source| Error::Transport {
                url: url.clone(),
                source,
            })
        })
    }
}

fn projection_path(name: &str) -> String {
    format!("/v1/projections/{}", seg(name))
}

impl Client {
    // ----- registry -----

    /// Registers or replaces an entity: its event types, each with an optional JSON Schema for
    /// its data, or `open` for any type. Answers the registration as stored and whether it is
    /// new.
    pub async fn put_entity(
        &self,
        entity: &str,
        spec: &(impl Serialize + ?Sized),
    ) -> Result<(Value, Outcome), Error> {
        let request = self
            .request(Method::PUT, &format!("/v1/entities/{}", seg(entity)))
            .json(spec);
        let (status, value) = self.json(request).await?;
        Ok((value, Outcome::of(status)))
    }

    /// Every registered entity, by name.
    pub async fn entities(&self) -> Result<Map<String, Value>, Error> {
        self.get("/v1/entities").await
    }

    /// One entity's registration (as [`EntitySpec`](crate::EntitySpec) writes it, and any members newer servers
    /// add).
    pub async fn entity(&self, entity: &str) -> Result<Value, Error> {
        self.get(&format!("/v1/entities/{}", seg(entity))).await
    }

    // ----- modules -----

    /// Uploads a wasm module; answers its record and whether the bytes are new (the same
    /// bytes again answer the stored record).
    pub async fn upload_module(&self, wasm: Vec<u8>) -> Result<(ModuleRecord, bool), Error> {
        let request = self
            .long_request(Method::POST, "/v1/modules")
            .header(header::CONTENT_TYPE, "application/wasm")
            .body(wasm);
        let (status, record) = self.json(request).await?;
        Ok((record, status == StatusCode::CREATED))
    }

    /// Every stored module.
    pub async fn modules(&self) -> Result<Vec<ModuleRecord>, Error> {
        self.get("/v1/modules").await
    }

    /// One stored module.
    pub async fn module(&self, id: &str) -> Result<ModuleRecord, Error> {
        self.get(&format!("/v1/modules/{}", seg(id))).await
    }

    /// Deletes a module (a 409 `module-in-use` while a definition names it).
    pub async fn delete_module(&self, id: &str) -> Result<(), Error> {
        self.no_content(self.request(Method::DELETE, &format!("/v1/modules/{}", seg(id))))
            .await
    }

    // ----- projections -----

    /// Creates, keeps or upgrades a projection ([`ProjectionSpec`], or its JSON).
    pub async fn put_projection(
        &self,
        name: &str,
        spec: &(impl Serialize + ?Sized),
    ) -> Result<Defined, Error> {
        self.define(&projection_path(name), spec).await
    }

    /// Every projection's status.
    pub async fn projections(&self) -> Result<Vec<Value>, Error> {
        self.get("/v1/projections").await
    }

    /// A projection's status: `status`, `position`, `head`, `lag`, `last_error`, and `next`
    /// while a new generation builds.
    pub async fn projection(&self, name: &str) -> Result<Value, Error> {
        self.get(&projection_path(name)).await
    }

    /// Rebuilds, pauses or resumes a projection; answers its status.
    pub async fn projection_action(
        &self,
        name: &str,
        action: ProjectionAction,
    ) -> Result<Value, Error> {
        let verb = match action {
            ProjectionAction::Rebuild => "rebuild",
            ProjectionAction::Pause => "pause",
            ProjectionAction::Resume => "resume",
        };
        let request = self.request(Method::POST, &format!("{}/{verb}", projection_path(name)));
        self.json(request).await.map(|(_, v)| v)
    }

    /// Deletes a projection and all its state.
    pub async fn delete_projection(&self, name: &str) -> Result<(), Error> {
        self.no_content(self.request(Method::DELETE, &projection_path(name)))
            .await
    }

    /// A projection's state: of one stream (`subject` `{entity}/{key}`) of a `stream`
    /// projection, or of a `single` projection (`subject` `None`).
    pub async fn state(
        &self,
        name: &str,
        subject: Option<&str>,
        query: &StateQuery,
    ) -> Result<State, Error> {
        let mut path = format!("{}/state", projection_path(name));
        if let Some(subject) = subject {
            path.push('/');
            path.push_str(&subject_path(subject)?);
        }
        path.push_str(&query_string(query.pairs()));
        self.get(&path).await
    }

    /// A page of the streams a `stream` projection holds state for, after `after`; also
    /// whether there are more.
    pub async fn keys(
        &self,
        name: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<String>, bool), Error> {
        let mut pairs = vec![("limit", limit.to_string())];
        if let Some(a) = after {
            pairs.push(("after", a.to_owned()));
        }
        let path = format!("{}/keys{}", projection_path(name), query_string(pairs));
        let response = self.send(self.request(Method::GET, &path)).await?;
        let more = response.headers().contains_key(header::LINK);
        Ok((read_json(response).await?, more))
    }

    /// Calls the module's `query` export on a projection's live state with `params`; answers
    /// the module's output.
    pub async fn query_projection(
        &self,
        name: &str,
        subject: Option<&str>,
        params: &(impl Serialize + ?Sized),
        min_position: Option<u64>,
    ) -> Result<Value, Error> {
        let mut path = format!("{}/query", projection_path(name));
        if let Some(subject) = subject {
            path.push('/');
            path.push_str(&subject_path(subject)?);
        }
        if let Some(p) = min_position {
            path.push_str(&query_string([("min_position", p.to_string())]));
        }
        let request = self.request(Method::POST, &path).json(params);
        self.json(request).await.map(|(_, v)| v)
    }

    // ----- deciders and commands -----

    /// Binds a decider module to an entity; `reducer` names the decider of an ABI v2 module
    /// (`None`: the one it has).
    pub async fn put_decider(
        &self,
        entity: &str,
        module: &str,
        reducer: Option<&str>,
    ) -> Result<Defined, Error> {
        let mut body = serde_json::json!({ "module": module });
        if let Some(r) = reducer {
            body["reducer"] = r.into();
        }
        self.define(&format!("/v1/deciders/{}", seg(entity)), &body)
            .await
    }

    /// Every decider binding.
    pub async fn deciders(&self) -> Result<Vec<Value>, Error> {
        self.get("/v1/deciders").await
    }

    /// One entity's decider binding.
    pub async fn decider(&self, entity: &str) -> Result<Value, Error> {
        self.get(&format!("/v1/deciders/{}", seg(entity))).await
    }

    /// Unbinds an entity's decider.
    pub async fn delete_decider(&self, entity: &str) -> Result<(), Error> {
        self.no_content(self.request(Method::DELETE, &format!("/v1/deciders/{}", seg(entity))))
            .await
    }

    /// Runs a command on a stream (`{entity}/{key}`): the entity's decider decides, Loom
    /// appends. With an idempotency key, a repeat answers the first outcome
    /// (`duplicate: true`). The decider's refusal is [`Error::rejection`].
    pub async fn command(
        &self,
        subject: &str,
        command: &(impl Serialize + ?Sized),
        idempotency_key: Option<&str>,
    ) -> Result<CommandOutcome, Error> {
        let mut request = self
            .request(
                Method::POST,
                &format!("/v1/commands/{}", subject_path(subject)?),
            )
            .json(command);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        self.json(request).await.map(|(_, v)| v)
    }

    // ----- reactors -----

    /// Creates or changes a reactor: `{ "module", "selector", "sink", "react_to_own" }`.
    pub async fn put_reactor(
        &self,
        name: &str,
        spec: &(impl Serialize + ?Sized),
    ) -> Result<Defined, Error> {
        self.define(&format!("/v1/reactors/{}", seg(name)), spec)
            .await
    }

    /// Every reactor's status.
    pub async fn reactors(&self) -> Result<Vec<Value>, Error> {
        self.get("/v1/reactors").await
    }

    /// A reactor's status and counters.
    pub async fn reactor(&self, name: &str) -> Result<Value, Error> {
        self.get(&format!("/v1/reactors/{}", seg(name))).await
    }

    /// Pauses or resumes a reactor; answers its status.
    pub async fn reactor_action(&self, name: &str, action: ReactorAction) -> Result<Value, Error> {
        let verb = match action {
            ReactorAction::Pause => "pause",
            ReactorAction::Resume => "resume",
        };
        let request = self.request(Method::POST, &format!("/v1/reactors/{}/{verb}", seg(name)));
        self.json(request).await.map(|(_, v)| v)
    }

    /// Deletes a reactor and its checkpoint.
    pub async fn delete_reactor(&self, name: &str) -> Result<(), Error> {
        self.no_content(self.request(Method::DELETE, &format!("/v1/reactors/{}", seg(name))))
            .await
    }

    // ----- operations -----

    /// `GET /healthz`: `status`, `head`; a cluster node adds `role` and `behind`.
    pub async fn health(&self) -> Result<Value, Error> {
        self.get("/healthz").await
    }

    /// `GET /metrics`, Prometheus text.
    pub async fn metrics(&self) -> Result<String, Error> {
        let response = self.send(self.request(Method::GET, "/metrics")).await?;
        let url = response.url().to_string();
        response
            .text()
            .await
            .map_err(|source| Error::Transport { url, source })
    }

    /// The API's OpenAPI document.
    pub async fn openapi(&self) -> Result<Value, Error> {
        self.get("/v1/openapi.json").await
    }

    /// A consistent copy of the node's database, taken while it keeps serving.
    pub async fn backup(&self) -> Result<Backup, Error> {
        let response = self
            .send(self.long_request(Method::GET, "/v1/backup"))
            .await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Backup {
            head: header("loom-head"),
            log_sequence: header("loom-log-sequence"),
            response,
        })
    }

    /// A cluster node's view of the cluster (a 404 problem on a single node).
    pub async fn cluster(&self) -> Result<Value, Error> {
        self.get("/v1/cluster").await
    }

    /// Takes a snapshot of the node into the cluster's object store.
    pub async fn take_snapshot(&self) -> Result<Value, Error> {
        let request = self.long_request(Method::POST, "/v1/cluster/snapshots");
        self.json(request).await.map(|(_, v)| v)
    }

    /// The cluster's snapshots.
    pub async fn snapshots(&self) -> Result<Value, Error> {
        self.get("/v1/cluster/snapshots").await
    }

    /// Keeps the newest `keep` snapshots and trims the stream below the oldest kept; `force`
    /// trims even while a node is behind that point.
    pub async fn trim(&self, keep: u64, force: bool) -> Result<Value, Error> {
        let path = format!(
            "/v1/cluster/trim{}",
            query_string([("keep", keep.to_string()), ("force", force.to_string())])
        );
        let request = self.long_request(Method::POST, &path);
        self.json(request).await.map(|(_, v)| v)
    }

    // ----- shared -----

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.json(self.request(Method::GET, path))
            .await
            .map(|(_, v)| v)
    }

    async fn define(&self, path: &str, spec: &(impl Serialize + ?Sized)) -> Result<Defined, Error> {
        let request = self.request(Method::PUT, path).json(spec);
        let (status, value) = self.json(request).await?;
        Ok(Defined {
            outcome: Outcome::of(status),
            status: value,
        })
    }
}
