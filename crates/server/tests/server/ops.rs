//! Health, metrics, the OpenAPI document (true to the routes), the error model for routes and
//! methods, and robustness against arbitrary input.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use serde_json::{Value, json};

/// Every route of the API: (method, OpenAPI path, a concrete path to call).
const ROUTES: &[(&str, &str, &str)] = &[
    ("post", "/v1/events", "/v1/events"),
    ("get", "/v1/events", "/v1/events"),
    ("post", "/v1/append", "/v1/append"),
    ("post", "/v1/events/query", "/v1/events/query"),
    ("get", "/v1/events/{position}", "/v1/events/1"),
    ("get", "/v1/events/by-id", "/v1/events/by-id?source=s&id=i"),
    ("get", "/v1/streams/{entity}/{key}", "/v1/streams/cart/a/b"),
    (
        "get",
        "/v1/streams/{entity}/{key}/revision",
        "/v1/streams/cart/a/b/revision",
    ),
    ("get", "/v1/subscribe", "/v1/subscribe?after=999999"),
    ("put", "/v1/entities/{entity}", "/v1/entities/thing"),
    ("get", "/v1/entities/{entity}", "/v1/entities/cart"),
    ("get", "/v1/entities", "/v1/entities"),
    ("post", "/v1/modules", "/v1/modules"),
    ("get", "/v1/modules", "/v1/modules"),
    ("get", "/v1/modules/{id}", "/v1/modules/sha256:00"),
    ("delete", "/v1/modules/{id}", "/v1/modules/sha256:00"),
    ("get", "/v1/projections", "/v1/projections"),
    ("put", "/v1/projections/{name}", "/v1/projections/p"),
    ("get", "/v1/projections/{name}", "/v1/projections/p"),
    ("delete", "/v1/projections/{name}", "/v1/projections/p"),
    (
        "get",
        "/v1/projections/{name}/state",
        "/v1/projections/p/state",
    ),
    (
        "get",
        "/v1/projections/{name}/state/{entity}/{key}",
        "/v1/projections/p/state/cart/a/b",
    ),
    (
        "get",
        "/v1/projections/{name}/keys",
        "/v1/projections/p/keys",
    ),
    (
        "post",
        "/v1/projections/{name}/query",
        "/v1/projections/p/query",
    ),
    (
        "post",
        "/v1/projections/{name}/query/{entity}/{key}",
        "/v1/projections/p/query/cart/a/b",
    ),
    (
        "post",
        "/v1/projections/{name}/rebuild",
        "/v1/projections/p/rebuild",
    ),
    (
        "post",
        "/v1/projections/{name}/pause",
        "/v1/projections/p/pause",
    ),
    (
        "post",
        "/v1/projections/{name}/resume",
        "/v1/projections/p/resume",
    ),
    ("put", "/v1/deciders/{entity}", "/v1/deciders/cart"),
    ("get", "/v1/deciders", "/v1/deciders"),
    ("get", "/v1/deciders/{entity}", "/v1/deciders/cart"),
    ("delete", "/v1/deciders/{entity}", "/v1/deciders/cart"),
    (
        "post",
        "/v1/commands/{entity}/{key}",
        "/v1/commands/cart/a/b",
    ),
    ("put", "/v1/reactors/{name}", "/v1/reactors/r"),
    ("get", "/v1/reactors", "/v1/reactors"),
    ("get", "/v1/reactors/{name}", "/v1/reactors/r"),
    ("delete", "/v1/reactors/{name}", "/v1/reactors/r"),
    ("post", "/v1/reactors/{name}/pause", "/v1/reactors/r/pause"),
    (
        "post",
        "/v1/reactors/{name}/resume",
        "/v1/reactors/r/resume",
    ),
    ("get", "/healthz", "/healthz"),
    ("get", "/metrics", "/metrics"),
    ("get", "/v1/openapi.json", "/v1/openapi.json"),
    ("get", "/v1/cluster", "/v1/cluster"),
    ("get", "/v1/cluster/snapshots", "/v1/cluster/snapshots"),
    ("post", "/v1/cluster/snapshots", "/v1/cluster/snapshots"),
    ("post", "/v1/cluster/trim", "/v1/cluster/trim"),
    ("get", "/v1/backup", "/v1/backup"),
    ("get", "/v1/streams", "/v1/streams"),
    ("get", "/v1/whoami", "/v1/whoami"),
];

#[tokio::test]
async fn openapi_lists_every_route_and_nothing_else() {
    let t = state();
    let doc = get(&t.state, "/v1/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        documented, expected,
        "openapi.json lists exactly the routes"
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // Every reference names a schema the document has.
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "#/components/schemas/{name} is referenced but not there"
        );
    }
    // Statuses every operation of a kind can answer are documented on each.
    let read = &doc["paths"]["/v1/events/{position}"]["get"]["responses"];
    for status in ["400", "401", "403", "503", "504"] {
        assert!(
            read[status].is_object(),
            "GET /v1/events/{{position}} documents {status}"
        );
    }
    let put = &doc["paths"]["/v1/projections/{name}"]["put"]["responses"];
    for status in ["400", "413", "415", "503"] {
        assert!(
            put[status].is_object(),
            "PUT /v1/projections/{{name}} documents {status}"
        );
    }
    assert!(doc["paths"]["/healthz"]["get"]["responses"]["503"].is_null());
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let t = state();
    for (method, _, uri) in ROUTES {
        if *uri == "/v1/subscribe?after=999999" {
            continue; // an endless stream; covered by the subscribe tests
        }
        let req = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(*uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let a = send(&t.state, req).await;
        let p = if a.status.is_client_error() {
            a.json()
        } else {
            json!({})
        };
        assert_ne!(
            p["type"], "urn:loom:problem:method-not-allowed",
            "{method} {uri}"
        );
        assert!(
            a.status != 404
                || p["detail"]
                    .as_str()
                    .is_some_and(|d| !d.contains("no such route")),
            "{method} {uri} is routed: {p}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let t = state();
    let p = get(&t.state, "/v2/things").await.problem(404);
    assert!(p["detail"].as_str().unwrap().contains("no such route"));
    let a = send(
        &t.state,
        Request::delete("/v1/events").body(Body::empty()).unwrap(),
    )
    .await;
    a.problem(405);
    assert!(a.header("allow").is_some());
}

#[tokio::test]
async fn health_and_metrics() {
    let t = state();
    let h = get(&t.state, "/healthz").await;
    assert_eq!(h.json(), json!({"status": "ok", "head": 0}));
    let e = cart_event("m1", "1", "was_created", json!({}));
    assert_eq!(post_events(&t.state, &e).await.status, 201);
    assert_eq!(post_events(&t.state, &e).await.status, 200);
    let conflict = cart_event("m1", "1", "was_created", json!({"other": true}));
    post_events(&t.state, &conflict).await.problem(409);
    let m = get(&t.state, "/metrics").await;
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("loom_appends_total"), 2.0);
    assert_eq!(value("loom_events_appended_total"), 1.0);
    assert_eq!(value("loom_append_conflicts_total"), 1.0);
    assert_eq!(value("loom_head_position"), 1.0);
    assert_eq!(value("loom_wal_checkpoints_total"), 0.0);
    assert_eq!(value("loom_wal_checkpoint_seconds_total"), 0.0);
    assert_eq!(value("loom_subscriptions"), 0.0);
    assert!(value("loom_commit_duration_seconds_count") >= 1.0);
    assert_eq!(
        value("loom_commit_duration_seconds_bucket{le=\"+Inf\"}"),
        value("loom_commit_duration_seconds_count")
    );
    assert_eq!(
        value("loom_http_requests_total{method=\"POST\",route=\"/v1/events\",status=\"201\"}"),
        1.0
    );
    assert_eq!(
        value("loom_http_requests_total{method=\"POST\",route=\"/v1/events\",status=\"409\"}"),
        1.0
    );
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

fn mutate(rng: &mut Rng, text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..(rng.next() % 4) {
        if bytes.is_empty() {
            break;
        }
        let at = (rng.next() % bytes.len() as u64) as usize;
        match rng.next() % 3 {
            0 => bytes[at] = (rng.next() % 256) as u8,
            1 => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, *rng.pick(b"{}[]\",:\\0x\xff")),
        }
    }
    bytes
}

#[tokio::test]
async fn arbitrary_input_never_panics_or_writes_partially() {
    let t = state();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let seeds: Vec<String> = vec![
        cart_event("f1", "1", "was_created", json!({"a": [1, 2, {"b": null}]})).to_string(),
        json!([cart_event("f2", "1", "was_created", json!({})), cart_event("f3", "2", "had_item_added", item("x", 1))]).to_string(),
        json!({"events": [cart_event("f4", "1", "was_created", json!({}))], "conditions": {"expected_revisions": {"cart/1": "none"}, "fail_if_events_match": {"entity": "cart", "data": "$.a"}, "after": 3}}).to_string(),
        json!({"entity": "cart", "keys": ["1"], "types": ["was_created"], "data": "$[?@ > 1]"}).to_string(),
        json!({"events": {"t": {"schema": {"type": "object"}}}, "open": false}).to_string(),
    ];
    let targets = [
        ("POST", "/v1/events", "application/cloudevents+json"),
        ("POST", "/v1/events", "application/cloudevents-batch+json"),
        ("POST", "/v1/events", "application/json"),
        ("POST", "/v1/append", "application/json"),
        ("POST", "/v1/events/query", "application/json"),
        ("PUT", "/v1/entities/fuzz", "application/json"),
    ];
    let header_values = [
        "1.0",
        "",
        "%",
        "%ZZ",
        "%C3%28",
        "cart/1",
        "none",
        "-1",
        "18446744073709551616",
        "\u{7f}",
    ];
    for round in 0..1500 {
        let (method, uri, ct) = *rng.pick(&targets);
        let seed = rng.pick(&seeds).clone();
        let body = mutate(&mut rng, &seed);
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ct);
        if round % 3 == 0 {
            for name in [
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-subject",
                "loom-expected-revision",
                "ce-x",
            ] {
                if rng.next().is_multiple_of(2)
                    && let Ok(v) =
                        axum::http::HeaderValue::from_bytes(rng.pick(&header_values).as_bytes())
                {
                    req = req.header(name, v);
                }
            }
        }
        let head_before = t.ledger().head();
        let a = send(&t.state, req.body(Body::from(body)).unwrap()).await;
        assert!(
            a.status.as_u16() < 500,
            "round {round}: {} {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        if !a.status.is_success() {
            assert_eq!(
                t.ledger().head(),
                head_before,
                "a refused request wrote nothing"
            );
            let p: Value = serde_json::from_slice(&a.body).expect("errors are problem+json");
            assert!(p["detail"].is_string());
        }
    }
    // Query strings too.
    for q in [
        "after=%FF",
        "type=%00",
        "limit=1e3",
        "subject=%2F",
        "data=%24..%5B",
        "before=0",
        "backwards=",
        "meta=$..*",
    ] {
        let a = get(&t.state, &format!("/v1/events?{q}")).await;
        assert!(a.status.as_u16() < 500, "{q}: {}", a.status);
    }
}

#[tokio::test]
async fn a_single_node_says_it_is_not_a_cluster_member() {
    let t = state();
    let a = get(&t.state, "/v1/cluster").await;
    assert_eq!(a.status, 404);
    let p = a.json();
    assert!(p["detail"].as_str().unwrap().contains("single node"), "{p}");
}
