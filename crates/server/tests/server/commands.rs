//! Deciders and commands over HTTP on a real loopback server, with the real example modules
//! (`cart`, `bank`, `checkout`) and the examples' own closed registrations. The reactor
//! tests, in `reactors.rs`, use the server and client here.
//!
//! Expectations come from the events the ledger holds (folded here), not from the server's
//! own answers.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use loom_engine::{EngineConfig, SinkPolicy};
use loom_server::{Config, Role, Token};
use serde_json::{Value, json};

fn engine_config() -> EngineConfig {
    EngineConfig {
        sink: SinkPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            timeout: Duration::from_secs(2),
        },
        ..EngineConfig::default()
    }
}

/// A server with `cart`, `account` and `order` registered from the examples' files.
pub(crate) async fn server(config: Config) -> Server {
    let s = Server::start_with(config, engine_config()).await;
    for (entity, example) in loom_testkit::EXAMPLE_ENTITIES {
        let spec = loom_testkit::example_entity(example);
        assert!(!spec.open, "{entity} is a closed registration");
        s.state.ledger().put_entity(entity, spec).unwrap();
    }
    s
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        assert_eq!(self.body["status"], status);
        &self.body
    }
}

impl Client {
    pub(crate) fn new(s: &Server) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: s.url(""),
            token: None,
        }
    }

    pub(crate) fn with_token(s: &Server, token: &str) -> Client {
        Client {
            token: Some(token.to_owned()),
            ..Client::new(s)
        }
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        self.send_with(method, path, body, None).await
    }

    pub(crate) async fn send_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            content_type,
            body,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub(crate) async fn post(&self, path: &str) -> Reply {
        self.send(reqwest::Method::POST, path, None).await
    }

    pub(crate) async fn command(&self, entity: &str, key: &str, command: Value) -> Reply {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/commands/{entity}/{key}"),
            Some(command),
        )
        .await
    }

    pub(crate) async fn upload(&self, example: &str) -> String {
        let mut req = self
            .http
            .post(format!("{}/v1/modules", self.base))
            .body(loom_testkit::example_wasm(example));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "{resp:?}");
        let v: Value = resp.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn bind(&self, entity: &str, example: &str) -> String {
        let id = self.upload(example).await;
        let r = self
            .put(&format!("/v1/deciders/{entity}"), json!({ "module": id }))
            .await;
        assert!(r.status == 201 || r.status == 200, "{r:?}");
        assert_eq!(r.body["module"], id.as_str());
        id
    }
}

/// The stream's events as (type, data).
fn stream(s: &Server, subject: &str) -> Vec<(String, Value)> {
    s.state
        .ledger()
        .read_stream(subject, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| (e.event.ty.clone(), e.event.data_json().unwrap()))
        .collect()
}

pub(crate) async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cart_commands_decide_append_and_reject_over_http() {
    let s = server(Config::default()).await;
    let c = Client::new(&s);
    // Without a decider: 404.
    let r = c.command("cart", "1", json!({"type": "create"})).await;
    assert!(
        r.problem(404)["detail"]
            .as_str()
            .unwrap()
            .contains("PUT /v1/deciders/cart"),
        "{r:?}"
    );
    let id = c.bind("cart", "cart").await;
    // Binding the same again: 200; listing and reading it.
    let r = c.put("/v1/deciders/cart", json!({ "module": id })).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.get("/v1/deciders").await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    assert_eq!(r.body[0]["entity"], "cart");
    assert_eq!(c.get("/v1/deciders/cart").await.body["module"], id.as_str());
    c.get("/v1/deciders/nope").await.problem(404);

    let r = c.command("cart", "eu/1", json!({"type": "create"})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["subject"], "cart/eu/1");
    assert_eq!(r.body["revision"], 1);
    assert_eq!(r.body["duplicate"], false);
    assert_eq!(r.body["events"][0]["type"], "was_created");
    assert_eq!(r.body["events"][0]["source"], "loom/deciders/cart");
    let add = json!({"type": "add_item", "sku": "a", "name": "A", "price": 5, "quantity": 2});
    let r = c.command("cart", "eu/1", add).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["revision"], 2);
    let r = c
        .command("cart", "eu/1", json!({"type": "check_out"}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["revision"], 3);
    assert_eq!(r.body["events"][0]["type"], "was_checked_out");
    let position = r.body["events"][0]["position"].as_u64().unwrap();
    assert_eq!(position, s.state.ledger().head());
    assert_eq!(
        stream(&s, "cart/eu/1")
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
        ["was_created", "had_item_added", "was_checked_out"]
    );
    assert_eq!(
        stream(&s, "cart/eu/1")[1].1,
        json!({"sku": "a", "name": "A", "price": 5, "quantity": 2})
    );

    // Domain rejections: 422 with the module's message, and nothing written.
    let head = s.state.ledger().head();
    let r = c
        .command(
            "cart",
            "eu/1",
            json!({"type": "add_item", "sku": "b", "name": "B", "price": 1, "quantity": 1}),
        )
        .await;
    let p = r.problem(422);
    assert_eq!(p["type"], "urn:loom:problem:command-rejected");
    assert!(p["detail"].as_str().unwrap().contains("checked out"), "{p}");
    let r = c.command("cart", "eu/1", json!({"type": "create"})).await;
    assert!(
        r.problem(422)["detail"]
            .as_str()
            .unwrap()
            .contains("exists already"),
        "{r:?}"
    );
    let r = c.command("cart", "2", json!({"type": "check_out"})).await;
    assert!(
        r.problem(422)["detail"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{r:?}"
    );
    assert_eq!(s.state.ledger().head(), head, "a rejection writes nothing");
    assert_eq!(stream(&s, "cart/eu/1").len(), 3);
    assert!(stream(&s, "cart/2").is_empty());

    // Malformed requests are problems too.
    let r = c
        .http
        .post(s.url("/v1/commands/cart/3"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = c
        .http
        .post(s.url("/v1/commands/cart/3"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = c
        .send_with(
            reqwest::Method::POST,
            "/v1/commands/cart/3",
            Some(json!({"type": "create"})),
            Some("a/b"),
        )
        .await;
    r.problem(400);
    let r = c
        .put("/v1/deciders/cart", json!({ "module": "sha256:00" }))
        .await;
    r.problem(422);
    let r = c.put("/v1/deciders/cart", json!({ "modul": id })).await;
    r.problem(400);
    assert_eq!(s.state.ledger().head(), head);

    // Metrics count commands by outcome.
    let text = c
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("loom_commands_total{outcome=\"ok\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("loom_commands_total{outcome=\"rejected\"} 3"),
        "{text}"
    );

    // Unbinding: commands are 404 again.
    let r = c
        .send(reqwest::Method::DELETE, "/v1/deciders/cart", None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    c.command("cart", "9", json!({"type": "create"}))
        .await
        .problem(404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_withdrawals_over_http_never_overdraw_and_never_lose_a_deposit() {
    let s = server(Config::default()).await;
    let c = Arc::new(Client::new(&s));
    c.bind("account", "bank").await;
    let r = c
        .command(
            "account",
            "shared",
            json!({"type": "open", "owner": "amal"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = c
        .command(
            "account",
            "shared",
            json!({"type": "deposit", "amount": 500}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let clients = 32;
    let rounds = 8;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let c = c.clone();
            tokio::spawn(async move {
                let (mut ok, mut refused, mut deposits) = (0, 0, 0);
                for i in 0..rounds {
                    let deposit = (client + i) % 4 == 0;
                    let cmd = if deposit {
                        json!({"type": "deposit", "amount": 10})
                    } else {
                        json!({"type": "withdraw", "amount": 30})
                    };
                    let r = c.command("account", "shared", cmd).await;
                    match r.status {
                        200 => {
                            ok += 1;
                            if deposit {
                                deposits += 1;
                            }
                        }
                        422 => {
                            assert!(!deposit, "a deposit was refused: {r:?}");
                            assert!(
                                r.body["detail"].as_str().unwrap().contains("insufficient"),
                                "{r:?}"
                            );
                            refused += 1;
                        }
                        _ => panic!("{r:?}"),
                    }
                }
                (ok, refused, deposits)
            })
        })
        .collect();
    let (mut accepted, mut refused, mut deposits) = (0, 0, 0);
    for t in tasks {
        let (o, r, d) = t.await.unwrap();
        accepted += o;
        refused += r;
        deposits += d;
    }
    assert_eq!(accepted + refused, clients * rounds);
    assert!(refused > 0, "the test must drive the account to refusals");
    // The final balance is the fold of what the ledger holds; it never went below zero.
    let mut balance = 0i64;
    let (mut credits, mut debits) = (0, 0);
    for (ty, data) in stream(&s, "account/shared") {
        let amount = data["amount"].as_i64().unwrap_or(0);
        match ty.as_str() {
            "was_credited" => {
                balance += amount;
                credits += 1;
            }
            "was_debited" => {
                balance -= amount;
                debits += 1;
            }
            "was_opened" => {}
            other => panic!("unexpected {other}"),
        }
        assert!(balance >= 0, "overdrawn at some point: {balance}");
    }
    assert_eq!(credits, deposits + 1, "no deposit is lost");
    assert_eq!(
        credits + debits,
        accepted + 1,
        "every accepted command (and the first deposit) wrote one event"
    );
    assert_eq!(
        balance,
        500 + 10 * deposits as i64 - 30 * (accepted - deposits) as i64
    );
    // What the decider sees is what the ledger holds.
    let r = c
        .command(
            "account",
            "shared",
            json!({"type": "withdraw", "amount": balance + 1}),
        )
        .await;
    assert!(
        r.problem(422)["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("account shared is {balance}")),
        "{r:?}"
    );
    if balance > 0 {
        let r = c
            .command(
                "account",
                "shared",
                json!({"type": "withdraw", "amount": balance}),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_replay_returns_the_first_result_and_writes_nothing() {
    let s = server(Config::default()).await;
    let c = Client::new(&s);
    c.bind("account", "bank").await;
    let run = |key: &'static str, cmd: Value| {
        let c = &c;
        async move {
            c.send_with(
                reqwest::Method::POST,
                "/v1/commands/account/a",
                Some(cmd),
                Some(key),
            )
            .await
        }
    };
    let r = run("open-1", json!({"type": "open", "owner": "amal"})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let first = run("dep-1", json!({"type": "deposit", "amount": 100})).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body["duplicate"], false);
    let head = s.state.ledger().head();
    let again = run("dep-1", json!({"type": "deposit", "amount": 100})).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["events"], first.body["events"]);
    assert_eq!(again.body["revision"], first.body["revision"]);
    // Even a different body under the same key returns the first result.
    let other = run("dep-1", json!({"type": "deposit", "amount": 7})).await;
    assert_eq!(other.body["events"], first.body["events"]);
    assert_eq!(s.state.ledger().head(), head, "a replay writes nothing");
    assert_eq!(stream(&s, "account/a").len(), 2);
    // A new key runs again.
    let next = run("dep-2", json!({"type": "deposit", "amount": 100})).await;
    assert_eq!(next.body["duplicate"], false);
    assert_eq!(next.body["revision"], 3);
    assert_eq!(s.state.ledger().head(), head + 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_need_a_writer_and_deciders_and_reactors_an_admin() {
    let tokens = vec![
        Token {
            role: Role::Admin,
            secret: "root".into(),
        },
        Token {
            role: Role::Writer,
            secret: "pen".into(),
        },
        Token {
            role: Role::Reader,
            secret: "eye".into(),
        },
    ];
    let s = server(Config {
        tokens,
        ..Config::default()
    })
    .await;
    let admin = Client::with_token(&s, "root");
    let writer = Client::with_token(&s, "pen");
    let reader = Client::with_token(&s, "eye");
    let anonymous = Client::new(&s);
    let id = admin.upload("cart").await;
    let bind = json!({ "module": id });
    anonymous
        .put("/v1/deciders/cart", bind.clone())
        .await
        .problem(401);
    reader
        .put("/v1/deciders/cart", bind.clone())
        .await
        .problem(403);
    writer
        .put("/v1/deciders/cart", bind.clone())
        .await
        .problem(403);
    assert_eq!(admin.put("/v1/deciders/cart", bind).await.status, 201);
    assert_eq!(reader.get("/v1/deciders/cart").await.status, 200);
    let create = json!({"type": "create"});
    anonymous
        .command("cart", "1", create.clone())
        .await
        .problem(401);
    reader
        .command("cart", "1", create.clone())
        .await
        .problem(403);
    assert_eq!(
        writer.command("cart", "1", create.clone()).await.status,
        200
    );
    assert_eq!(admin.command("cart", "2", create).await.status, 200);
    let del = |c: &Client| {
        let c = c.http.clone();
        let url = s.url("/v1/deciders/cart");
        async move { c.delete(url) }
    };
    let r = del(&writer).await.bearer_auth("pen").send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Reactors: admin only to define, pause, resume, delete.
    let rid = admin.upload("checkout").await;
    let spec = json!({"module": rid, "selector": {"entity": "cart"}});
    writer
        .put("/v1/reactors/r", spec.clone())
        .await
        .problem(403);
    assert_eq!(admin.put("/v1/reactors/r", spec).await.status, 201);
    assert_eq!(reader.get("/v1/reactors/r").await.status, 200);
    assert_eq!(reader.get("/v1/reactors").await.status, 200);
    writer.post("/v1/reactors/r/pause").await.problem(403);
    reader.post("/v1/reactors/r/resume").await.problem(403);
    let r = writer
        .send(reqwest::Method::DELETE, "/v1/reactors/r", None)
        .await;
    r.problem(403);
    assert_eq!(admin.post("/v1/reactors/r/pause").await.status, 200);
    let r = admin
        .send(reqwest::Method::DELETE, "/v1/reactors/r", None)
        .await;
    assert_eq!(r.status, 204);
    let r = admin
        .send(reqwest::Method::DELETE, "/v1/deciders/cart", None)
        .await;
    assert_eq!(r.status, 204);
    s.stop().await;
}
