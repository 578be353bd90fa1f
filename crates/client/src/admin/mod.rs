//! The registry, modules, projections, deciders and commands, reactors, and operations.
//!
//! Statuses (of projections, reactors, the cluster) are answered as `serde_json::Value`: they
//! are documents for people and dashboards that grow new members release by release, and the
//! OpenAPI document (`GET /v1/openapi.json`) describes them.

use reqwest::{Method, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Client, Error, query_string, read_json, seg, subject_path};

mod types;

pub use types::*;

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
