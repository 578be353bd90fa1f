//! Projections' other requests over HTTP, with the real example modules: keys paging with
//! links, the `query` export, deletion freeing state, parameter errors as problems, and
//! definitions naming what is not registered refused.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::*;
use loom_server::AppState;
use serde_json::{Value, json};

use crate::common;
use crate::projections::{
    append, cart_history, define, delete, line, post, put_json, state_of, upload, wait_running,
};

#[tokio::test]
async fn keys_page_with_links_and_query_exports_answer() {
    let t = state();
    let s = &t.state;
    let cart = upload(s, "cart").await;
    // Keys with '/' in them.
    let keys: Vec<String> = (0..25).map(|i| format!("eu/{i:02}")).collect();
    let mut events = Vec::new();
    for k in &keys {
        events.push(cart_event(&format!("{k}-c"), k, "was_created", json!({})));
        events.push(cart_event(
            &format!("{k}-a"),
            k,
            "had_item_added",
            line("x", 250, 2),
        ));
    }
    append(s, &events).await;
    define(
        s,
        "carts",
        json!({"module": cart, "selector": {"entity": "cart"}}),
    )
    .await;
    wait_running(s, "carts").await;

    let mut seen = Vec::new();
    let mut uri = "/v1/projections/carts/keys?limit=10".to_owned();
    loop {
        let a = get(s, &uri).await;
        assert_eq!(a.status, 200);
        let page: Vec<String> = serde_json::from_value(a.json()).unwrap();
        assert!(page.len() <= 10);
        seen.extend(page);
        match a.header("link") {
            Some(l) => {
                uri = l
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_owned();
            }
            None => break,
        }
    }
    let expected: Vec<String> = keys.iter().map(|k| format!("cart/{k}")).collect();
    assert_eq!(seen, expected, "every key once, in order");
    let after: Vec<String> = serde_json::from_value(
        get(s, "/v1/projections/carts/keys?after=cart/eu/22")
            .await
            .json(),
    )
    .unwrap();
    assert_eq!(after, ["cart/eu/23", "cart/eu/24"]);

    // A key with '/' in the path, and the cart's query export on one stream.
    let v = state_of(s, "/v1/projections/carts/state/cart/eu/07").await;
    assert_eq!(v["state"]["items"][0]["quantity"], 2);
    let a = post_json(s, "/v1/projections/carts/query/cart/eu/07", &json!({})).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json(), json!({"total": 500, "units": 2}));
    // An empty body means {}.
    let a = post(s, "/v1/projections/carts/query/cart/eu/07").await;
    assert_eq!(a.json(), json!({"total": 500, "units": 2}));
    post_json(s, "/v1/projections/carts/query/cart/nope", &json!({}))
        .await
        .problem(404);
    post_json(s, "/v1/projections/carts/query", &json!({}))
        .await
        .problem(422);

    // A single projection over the bank: totals, and the top-n query.
    put_json(s, "/v1/entities/account", &json!({"open": true})).await;
    let stats = upload(s, "bank-stats").await;
    let ev = |id: &str, key: &str, ty: &str, data: Value| json!({"specversion": "1.0", "id": id, "source": "bank", "type": ty, "subject": format!("account/{key}"), "data": data});
    append(
        s,
        &[
            ev("1", "a", "was_opened", json!({"owner": "a"})),
            ev("2", "b", "was_opened", json!({"owner": "b"})),
            ev("3", "a", "was_credited", json!({"amount": 700})),
            ev("4", "b", "was_credited", json!({"amount": 300})),
            ev("5", "a", "was_debited", json!({"amount": 500})),
        ],
    )
    .await;
    let a = define(
        s,
        "stats",
        json!({"module": stats, "selector": {"entity": "account"}, "partition": "single"}),
    )
    .await;
    assert_eq!(a.status, 201);
    let head = s.ledger().head();
    let v = state_of(
        s,
        &format!("/v1/projections/stats/state?min_position={head}"),
    )
    .await;
    assert_eq!(v["state"]["total_deposits"], 1000);
    assert_eq!(v["state"]["accounts"], 2);
    assert_eq!(v["state"]["largest_balance"], 300);
    assert_eq!(v["events_applied"], 5);
    // A single projection with nothing folded yet answers the module's initial state.
    let a = define(
        s,
        "nobody",
        json!({"module": stats, "selector": {"entity": "account", "keys": ["nobody"]}, "partition": "single"}),
    )
    .await;
    assert_eq!(a.status, 201);
    let v = state_of(
        s,
        &format!("/v1/projections/nobody/state?min_position={head}"),
    )
    .await;
    assert_eq!(
        v["state"],
        json!({"total_deposits": 0, "accounts": 0, "largest_balance": 0, "balances": {}})
    );
    assert_eq!(v["events_applied"], 0);
    assert_eq!(v["created_at"], Value::Null);
    assert_eq!(v["position"], head);
    let a = post_json(s, "/v1/projections/stats/query", &json!({"n": 1})).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json(), json!([["b", 300]]));
    let a = post_json(s, "/v1/projections/stats/query", &json!({"n": 5})).await;
    assert_eq!(a.json(), json!([["b", 300], ["a", 200]]));
    // Parameters the module refuses, keys of a single projection, malformed JSON.
    let p = post_json(s, "/v1/projections/stats/query", &json!({"n": "many"}))
        .await
        .problem(422);
    assert_eq!(p["type"], "urn:loom:problem:query-rejected");
    get(s, "/v1/projections/stats/keys").await.problem(422);
    let a = send(
        s,
        Request::post("/v1/projections/stats/query")
            .header("content-type", "application/json")
            .body(Body::from("{nope"))
            .unwrap(),
    )
    .await;
    a.problem(400);
    // A module without query: bank.
    let bank = upload(s, "bank").await;
    define(
        s,
        "accounts",
        json!({"module": bank, "selector": {"entity": "account"}}),
    )
    .await;
    let p = post_json(s, "/v1/projections/accounts/query/account/a", &json!({}))
        .await
        .problem(422);
    assert_eq!(p["type"], "urn:loom:problem:missing-export");
}

#[tokio::test]
async fn deleting_a_projection_frees_its_state() {
    let rows = |s: &AppState, name: &str| {
        let snapshot = s.engine().ledger().catalog().read().unwrap();
        snapshot.state_count(name).unwrap() as usize
    };
    let t = state();
    let s = &t.state;
    let cart = upload(s, "cart").await;
    let keys: Vec<String> = (0..5).map(|i| format!("d{i}")).collect();
    append(s, &cart_history(&keys, 3)).await;
    for name in ["carts", "other"] {
        define(
            s,
            name,
            json!({"module": cart, "selector": {"entity": "cart"}}),
        )
        .await;
        wait_running(s, name).await;
    }
    assert_eq!(rows(s, "carts"), 5);
    assert_eq!(delete(s, "/v1/projections/carts").await.status, 204);
    assert_eq!(rows(s, "carts"), 0, "no state left behind");
    assert_eq!(rows(s, "other"), 5, "other projections keep theirs");
    get(s, "/v1/projections/carts").await.problem(404);
    get(s, "/v1/projections/carts/state/cart/d1")
        .await
        .problem(404);
    delete(s, "/v1/projections/carts").await.problem(404);
    // The name can be used again, from scratch.
    assert_eq!(
        define(
            s,
            "carts",
            json!({"module": cart, "selector": {"entity": "cart"}})
        )
        .await
        .status,
        201
    );
    let st = wait_running(s, "carts").await;
    assert_eq!(st["generation"], 1);
    assert_eq!(st["keys"], 5);
}

#[tokio::test]
async fn bad_requests_are_problems() {
    let t = state();
    let s = &t.state;
    let cart = upload(s, "cart").await;
    append(s, &cart_history(&["p".to_owned()], 1)).await;
    define(
        s,
        "carts",
        json!({"module": cart, "selector": {"entity": "cart"}}),
    )
    .await;
    wait_running(s, "carts").await;
    let base = "/v1/projections/carts/state/cart/p";
    for (query, says) in [
        (
            "at_position=1&at_time=2025-01-01T00:00:00Z",
            "give one of them",
        ),
        ("at_position=1&min_position=1", "min_position waits"),
        ("timeout_ms=5", "give min_position too"),
        ("at_time=yesterday", "RFC 3339"),
        ("at_position=-1", "non-negative integer"),
        ("frobnicate=1", "unknown query parameter"),
    ] {
        let p = get(s, &format!("{base}?{query}")).await.problem(400);
        assert!(p["detail"].as_str().unwrap().contains(says), "{query}: {p}");
    }
    // min_position beyond the head: a bounded wait, then 504 with what was reached.
    let head = s.ledger().head();
    let started = Instant::now();
    let p = get(
        s,
        &format!("{base}?min_position={}&timeout_ms=150", head + 10),
    )
    .await
    .problem(504);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(p["type"], "urn:loom:problem:min-position-timeout");
    assert_eq!(p["wanted"], head + 10);
    assert_eq!(p["reached"], head);
    // Partition mismatches, unknown names and keys.
    get(s, "/v1/projections/carts/state").await.problem(422);
    get(s, "/v1/projections/nope/state/cart/p")
        .await
        .problem(404);
    get(s, "/v1/projections/carts/state/cart/missing")
        .await
        .problem(404);
    // Definitions: bad JSON, unknown members, bad names, bad selectors, unknown partition.
    let a = send(
        s,
        Request::put("/v1/projections/x")
            .header("content-type", "application/json")
            .body(Body::from("{"))
            .unwrap(),
    )
    .await;
    a.problem(400);
    define(s, "x", json!({"module": cart, "colour": "blue"}))
        .await
        .problem(400);
    define(s, "x", json!({"module": cart, "partition": "diagonal"}))
        .await
        .problem(400);
    define(s, "bad%20name", json!({"module": cart}))
        .await
        .problem(422);
    let p = define(
        s,
        "x",
        json!({"module": cart, "selector": {"entity": "cart", "data": "$[?"}}),
    )
    .await
    .problem(422);
    assert_eq!(p["type"], "urn:loom:problem:invalid-selector");
    let p = define(s, "x", json!({"module": "sha256:00"}))
        .await
        .problem(422);
    assert!(p["detail"].as_str().unwrap().contains("not stored"));
    // A module without evolve cannot back a projection.
    let no_evolve = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
            (func (export "query") (param i32 i32) (result i64) i64.const 0))"#,
    )
    .unwrap();
    let a = send(
        s,
        Request::post("/v1/modules")
            .body(Body::from(no_evolve))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 201);
    let id = a.json()["id"].as_str().unwrap().to_owned();
    let p = define(s, "x", json!({"module": id})).await.problem(422);
    assert_eq!(p["type"], "urn:loom:problem:missing-export");
    assert_eq!(
        get(s, "/v1/projections")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Unknown projections for every verb.
    for uri in [
        "/v1/projections/nope/pause",
        "/v1/projections/nope/resume",
        "/v1/projections/nope/rebuild",
    ] {
        post(s, uri).await.problem(404);
    }
    get(s, "/v1/projections/nope/keys").await.problem(404);
}

#[tokio::test]
async fn definitions_naming_unregistered_entities_types_or_reducers_are_refused() {
    let t = state();
    let cart = upload(&t.state, "cart").await;
    let library = upload(&t.state, "library").await;
    // The registry knows cart (a laxer registration of the tests' own) and log (open).
    let refused = |a: Answer, kind: &str| {
        let p = a.problem(422);
        assert_eq!(p["type"], format!("urn:loom:problem:{kind}"), "{p}");
        p["detail"].as_str().unwrap().to_owned()
    };
    let detail = refused(
        define(
            &t.state,
            "p",
            json!({"module": cart, "selector": {"entity": "crat"}}),
        )
        .await,
        "unregistered-name",
    );
    assert!(
        detail.contains("\"crat\", which is not registered (did you mean \"cart\"?)")
            && detail.contains("registered: cart, log"),
        "{detail}"
    );
    let detail = refused(
        define(
            &t.state,
            "p",
            json!({"module": cart, "selector": {"entity": "cart", "types": ["was_creatd"]}}),
        )
        .await,
        "unregistered-name",
    );
    assert!(
        detail.contains("(did you mean \"was_created\"?)"),
        "{detail}"
    );
    // An open entity takes any type.
    let a = define(
        &t.state,
        "logs",
        json!({"module": cart, "selector": {"entity": "log", "types": ["anything"]}}),
    )
    .await;
    assert_eq!(a.status, 201, "{a:?}");
    let detail = refused(
        put_json(&t.state, "/v1/deciders/crat", &json!({"module": cart})).await,
        "unregistered-name",
    );
    assert!(detail.contains("(did you mean \"cart\"?)"), "{detail}");
    // Reducers: several fit a projection; a name that is not there.
    let detail = refused(
        define(
            &t.state,
            "books",
            json!({"module": library, "selector": {"entity": "log"}}),
        )
        .await,
        "invalid-reducer",
    );
    assert!(detail.contains("several reducers that fit"), "{detail}");
    let detail = refused(
        define(
            &t.state,
            "books",
            json!({"module": library, "reducer": "holding", "selector": {"entity": "log"}}),
        )
        .await,
        "invalid-reducer",
    );
    assert!(detail.contains("(did you mean \"holdings\"?)"), "{detail}");
    let a = define(
        &t.state,
        "books",
        json!({"module": library, "reducer": "holdings", "selector": {"entity": "log"}, "partition": "single"}),
    )
    .await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.json()["spec"]["reducer"], "holdings");
    // The module's record lists its reducers.
    let m = get(&t.state, &format!("/v1/modules/{library}"))
        .await
        .json();
    assert_eq!(m["abi"], 2);
    assert_eq!(m["reducers"].as_array().unwrap().len(), 4);
}
