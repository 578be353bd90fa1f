//! Module uploads over HTTP with the real example modules and hostile ones written in WAT:
//! content addressing, idempotency, refusals that store nothing, the size limit of its own,
//! deletion refused while a projection uses the module, roles.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use loom_server::{Config, Role, Token};
use serde_json::{Value, json};

async fn upload(state: &loom_server::AppState, bytes: Vec<u8>) -> Answer {
    send(
        state,
        Request::post("/v1/modules")
            .header("content-type", "application/wasm")
            .body(Body::from(bytes))
            .unwrap(),
    )
    .await
}

async fn put_json(state: &loom_server::AppState, uri: &str, body: &Value) -> Answer {
    send(
        state,
        Request::put(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

async fn delete(state: &loom_server::AppState, uri: &str) -> Answer {
    send(state, Request::delete(uri).body(Body::empty()).unwrap()).await
}

fn sha256_hex(bytes: &[u8]) -> String {
    // Independent of the server's hashing: the system's sha256sum.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.wasm");
    std::fs::write(&file, bytes).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&file)
        .output()
        .expect("sha256sum");
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[tokio::test]
async fn upload_is_content_addressed_and_idempotent() {
    let t = state();
    let bytes = loom_testkit::example_wasm("cart");
    let a = upload(&t.state, bytes.clone()).await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let first = a.json();
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(id, format!("sha256:{}", sha256_hex(&bytes)));
    assert_eq!(
        a.header("location"),
        Some(format!("/v1/modules/{id}").as_str())
    );
    assert_eq!(first["size"], bytes.len());
    assert_eq!(first["abi"], 2);
    assert_eq!(
        first["exports"],
        json!(["evolve", "decide", "query", "evolve_groups"])
    );
    // The module describes its reducer.
    assert_eq!(
        first["reducers"],
        json!([{
            "name": "cart", "kinds": ["decider", "query"], "entity": "cart",
            "events": ["was_created", "had_item_added", "had_item_removed", "was_checked_out"],
            "exports": ["evolve", "decide", "query", "evolve_groups"]
        }])
    );
    assert!(first["uploaded_at"].as_str().unwrap().ends_with('Z'));

    // The same bytes again: 200, the same record (including the first upload time).
    let again = upload(&t.state, bytes.clone()).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), first);

    // Another module gets another id; the list has both, by id.
    let bank = upload(&t.state, loom_testkit::example_wasm("bank")).await;
    assert_eq!(bank.status, 201);
    let list = get(&t.state, "/v1/modules").await;
    assert_eq!(list.status, 200);
    let ids: Vec<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = vec![id.clone(), bank.json()["id"].as_str().unwrap().to_owned()];
    expected.sort();
    assert_eq!(ids, expected);
    let one = get(&t.state, &format!("/v1/modules/{id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json(), first);
    get(&t.state, "/v1/modules/sha256:0000").await.problem(404);
}

#[tokio::test]
async fn refused_modules_say_why_and_store_nothing() {
    let t = state();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"this is not wasm at all".to_vec(),
            "not a WebAssembly module",
        ),
        (
            "garbage after the magic bytes",
            b"\0asm\x01\0\0\0 and then nonsense".to_vec(),
            "not a valid WebAssembly module",
        ),
        (
            "WASI import",
            wat::parse_str(loom_testkit::WASI_IMPORTING_MODULE).unwrap(),
            "wasi_snapshot_preview1",
        ),
        (
            "wrong ABI version",
            wat::parse_str(
                r#"(module
                (memory (export "memory") 1)
                (func (export "loom_abi_version") (result i32) i32.const 7)
                (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
                (func (export "evolve") (param i32 i32) (result i64) i64.const 0))"#,
            )
            .unwrap(),
            "ABI version 7",
        ),
        (
            "no entry point",
            wat::parse_str(
                r#"(module
                (memory (export "memory") 1)
                (func (export "loom_abi_version") (result i32) i32.const 1)
                (func (export "loom_alloc") (param i32) (result i32) i32.const 0))"#,
            )
            .unwrap(),
            "none of evolve, decide, react or query",
        ),
        ("empty body", Vec::new(), "body is empty"),
    ];
    for (what, bytes, says) in cases {
        let a = upload(&t.state, bytes).await;
        let p = a.problem(422);
        assert_eq!(p["type"], "urn:loom:problem:invalid-module", "{what}");
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{what}: {detail}");
    }
    assert_eq!(get(&t.state, "/v1/modules").await.json(), json!([]));
}

#[tokio::test]
async fn module_size_limit_is_separate_from_the_event_body_limit() {
    let bytes = loom_testkit::example_wasm("bank");
    // Event bodies are limited to 1 KiB here, modules are not: the module goes in.
    let t = new_state(Config {
        max_body_bytes: 1024,
        ..Config::default()
    });
    assert!(bytes.len() > 1024);
    assert_eq!(upload(&t.state, bytes.clone()).await.status, 201);
    // A module limit below the module's size: 413 naming the limit, nothing stored.
    let t = new_state(Config {
        max_module_bytes: 4096,
        ..Config::default()
    });
    let p = upload(&t.state, bytes).await.problem(413);
    assert_eq!(p["limit"], 4096);
    assert_eq!(get(&t.state, "/v1/modules").await.json(), json!([]));
}

#[tokio::test]
async fn delete_is_refused_while_a_projection_uses_the_module() {
    let t = state();
    let id = upload(&t.state, loom_testkit::example_wasm("cart"))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = put_json(
        &t.state,
        "/v1/projections/carts",
        &json!({"module": id, "selector": {"entity": "cart"}, "partition": "stream"}),
    )
    .await;
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    let p = delete(&t.state, &format!("/v1/modules/{id}"))
        .await
        .problem(409);
    assert_eq!(p["type"], "urn:loom:problem:module-in-use");
    assert_eq!(p["users"], json!(["projection carts"]));
    assert!(p["detail"].as_str().unwrap().contains("projection carts"));
    // Still there.
    assert_eq!(
        get(&t.state, &format!("/v1/modules/{id}")).await.status,
        200
    );

    assert_eq!(delete(&t.state, "/v1/projections/carts").await.status, 204);
    assert_eq!(
        delete(&t.state, &format!("/v1/modules/{id}")).await.status,
        204
    );
    get(&t.state, &format!("/v1/modules/{id}"))
        .await
        .problem(404);
    delete(&t.state, &format!("/v1/modules/{id}"))
        .await
        .problem(404);
    // A projection naming a module that is not stored is refused.
    let p = put_json(
        &t.state,
        "/v1/projections/carts",
        &json!({"module": id, "selector": {"entity": "cart"}}),
    )
    .await
    .problem(422);
    assert!(p["detail"].as_str().unwrap().contains("not stored"), "{p}");
}

#[tokio::test]
async fn writes_need_the_admin_role() {
    let t = new_state(Config {
        tokens: vec![
            Token {
                role: Role::Admin,
                secret: "a".into(),
            },
            Token {
                role: Role::Writer,
                secret: "w".into(),
            },
            Token {
                role: Role::Reader,
                secret: "r".into(),
            },
        ],
        ..Config::default()
    });
    let bytes = loom_testkit::example_wasm("cart");
    let with = |token: &str, req: axum::http::request::Builder| {
        req.header("authorization", format!("Bearer {token}"))
    };
    for token in ["r", "w"] {
        let a = send(
            &t.state,
            with(token, Request::post("/v1/modules"))
                .body(Body::from(bytes.clone()))
                .unwrap(),
        )
        .await;
        a.problem(403);
    }
    let a = send(
        &t.state,
        with("a", Request::post("/v1/modules"))
            .body(Body::from(bytes.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 201);
    let id = a.json()["id"].as_str().unwrap().to_owned();
    let spec = json!({"module": id, "selector": {"entity": "cart"}}).to_string();
    let a = send(
        &t.state,
        with("w", Request::put("/v1/projections/carts"))
            .header("content-type", "application/json")
            .body(Body::from(spec.clone()))
            .unwrap(),
    )
    .await;
    a.problem(403);
    let a = send(
        &t.state,
        with("a", Request::put("/v1/projections/carts"))
            .header("content-type", "application/json")
            .body(Body::from(spec))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 201);
    for uri in [
        "/v1/modules".to_owned(),
        format!("/v1/modules/{id}"),
        "/v1/projections".to_owned(),
        "/v1/projections/carts".to_owned(),
    ] {
        let a = send(
            &t.state,
            with("r", Request::get(uri.as_str()))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 200, "reader may GET {uri}");
    }
    for uri in [
        "/v1/projections/carts/pause",
        "/v1/projections/carts/rebuild",
    ] {
        let a = send(
            &t.state,
            with("r", Request::post(uri)).body(Body::empty()).unwrap(),
        )
        .await;
        a.problem(403);
    }
    let a = send(
        &t.state,
        Request::get("/v1/projections").body(Body::empty()).unwrap(),
    )
    .await;
    a.problem(401);
}
