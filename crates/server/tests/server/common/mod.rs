//! Helpers shared by the server's integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use loom_engine::{Engine, EngineConfig};
use loom_ledger::{EntitySpec, EventTypeSpec, Ledger, LedgerOptions};
use loom_server::{AppState, Config, app};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

/// A ledger in a temporary directory with the shopping-cart entity registered, and state.
pub struct TestState {
    pub dir: TempDir,
    pub state: AppState,
}

impl TestState {
    pub fn ledger(&self) -> &Arc<Ledger> {
        self.state.ledger()
    }
}

/// A small `cart` registration of its own, laxer than `examples/cart/entity.json`: these
/// tests exercise the registry and the content modes (a type without a schema takes any data),
/// not the cart example; the tests that run the example modules register the examples' own
/// files (`loom_testkit::example_entity`).
pub fn cart_spec() -> EntitySpec {
    let mut spec = EntitySpec::default();
    for ty in ["was_created", "had_item_removed", "was_checked_out"] {
        spec.events.insert(ty.into(), EventTypeSpec::default());
    }
    spec.events.insert(
        "had_item_added".into(),
        EventTypeSpec {
            schema: Some(json!({
                "type": "object",
                "required": ["sku", "quantity"],
                "properties": {
                    "sku": { "type": "string" },
                    "quantity": { "type": "integer", "minimum": 1 }
                }
            })),
        },
    );
    spec
}

pub fn new_state(config: Config) -> TestState {
    new_state_with(config, EngineConfig::default())
}

pub fn new_state_with(config: Config, engine: EngineConfig) -> TestState {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(dir.path(), LedgerOptions::default()).expect("open ledger");
    ledger
        .put_entity("cart", cart_spec())
        .expect("register cart");
    ledger
        .put_entity(
            "log",
            EntitySpec {
                open: true,
                ..Default::default()
            },
        )
        .expect("register log");
    let engine = Engine::open(Arc::new(ledger), engine).expect("open engine");
    TestState {
        dir,
        state: AppState::new(Arc::new(engine), config),
    }
}

pub fn state() -> TestState {
    new_state(Config::default())
}

/// The answer of one request through the router.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the answer is a problem with this status and returns its body.
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status, body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(
            p["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:loom:problem:"))
        );
        p
    }
}

pub async fn send(state: &AppState, req: Request<Body>) -> Answer {
    let response = app(state.clone())
        .oneshot(req)
        .await
        .expect("router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("read body");
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn get(state: &AppState, uri: &str) -> Answer {
    send(state, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub async fn post_json(state: &AppState, uri: &str, body: &Value) -> Answer {
    send(
        state,
        Request::post(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

/// POSTs events in structured (one) or batch (array) mode.
pub async fn post_events(state: &AppState, body: &Value) -> Answer {
    let ct = if body.is_array() {
        "application/cloudevents-batch+json"
    } else {
        "application/cloudevents+json"
    };
    send(
        state,
        Request::post("/v1/events")
            .header("content-type", ct)
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

/// A cart event in CloudEvents JSON.
pub fn cart_event(id: &str, key: &str, ty: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "https://shop.example/carts",
        "type": ty,
        "subject": format!("cart/{key}"),
        "datacontenttype": "application/json",
        "data": data,
    })
}

pub fn item(sku: &str, quantity: i64) -> Value {
    json!({ "sku": sku, "quantity": quantity })
}

/// A server on an ephemeral loopback port.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    pub dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(config: Config) -> Server {
        Self::start_with(config, EngineConfig::default()).await
    }

    pub async fn start_with(config: Config, engine: EngineConfig) -> Server {
        let TestState { dir, state } = new_state_with(config, engine);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(loom_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            state,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful shutdown; returns once the server stopped (bounded).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), t)
                .await
                .expect("graceful shutdown finishes")
                .expect("server task")
                .expect("server ran");
        }
    }
}
