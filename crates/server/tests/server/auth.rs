//! Bearer tokens and roles: each role allowed and denied where it should be.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use loom_server::{Config, Role, Token, check_listen};
use serde_json::json;

fn tokens() -> Vec<Token> {
    vec![
        "admin:a-secret".parse().unwrap(),
        "writer:w-secret".parse().unwrap(),
        "reader:r-secret".parse().unwrap(),
    ]
}

async fn call(t: &TestState, method: &str, uri: &str, token: Option<&str>, n: usize) -> u16 {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(tok) = token {
        req = req.header("authorization", format!("Bearer {tok}"));
    }
    let body = match (method, uri) {
        ("POST", "/v1/events") => {
            req = req.header("content-type", "application/cloudevents+json");
            cart_event(&format!("auth-{n}"), "1", "was_created", json!({})).to_string()
        }
        ("PUT", _) => {
            req = req.header("content-type", "application/json");
            json!({"open": true}).to_string()
        }
        _ => String::new(),
    };
    send(&t.state, req.body(Body::from(body)).unwrap())
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn each_role_allowed_and_denied() {
    let t = new_state(Config {
        tokens: tokens(),
        ..Config::default()
    });
    // (method, uri, least role)
    let routes = [
        ("GET", "/v1/events", Role::Reader),
        ("GET", "/v1/entities", Role::Reader),
        ("GET", "/v1/streams/cart/1/revision", Role::Reader),
        ("GET", "/metrics", Role::Reader),
        ("POST", "/v1/events", Role::Writer),
        ("PUT", "/v1/entities/thing", Role::Admin),
    ];
    let mut n = 0;
    for (method, uri, least) in routes {
        for (role, token) in [
            (Role::Reader, "r-secret"),
            (Role::Writer, "w-secret"),
            (Role::Admin, "a-secret"),
        ] {
            n += 1;
            let status = call(&t, method, uri, Some(token), n).await;
            if role >= least {
                assert!(
                    (200..300).contains(&status),
                    "{role} on {method} {uri}: {status}"
                );
            } else {
                assert_eq!(status, 403, "{role} on {method} {uri}");
            }
        }
        n += 1;
        assert_eq!(
            call(&t, method, uri, None, n).await,
            401,
            "no token on {method} {uri}"
        );
        n += 1;
        assert_eq!(
            call(&t, method, uri, Some("wrong"), n).await,
            401,
            "bad token on {method} {uri}"
        );
    }
    // Health and the API document need no token.
    assert_eq!(call(&t, "GET", "/healthz", None, 0).await, 200);
    assert_eq!(call(&t, "GET", "/v1/openapi.json", None, 0).await, 200);
    // 401 is a problem with a WWW-Authenticate challenge; other schemes are refused.
    let a = send(
        &t.state,
        Request::get("/v1/events")
            .header("authorization", "Basic cjpy")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    a.problem(401);
    assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"));
    // Denied writes wrote nothing: only the writer's and admin's appends are stored.
    assert_eq!(t.ledger().head(), 2);
}

#[tokio::test]
async fn open_server_without_tokens_allows_everything() {
    let t = state();
    assert_eq!(call(&t, "PUT", "/v1/entities/thing", None, 0).await, 201);
    assert_eq!(call(&t, "POST", "/v1/events", None, 1).await, 201);
}

#[test]
fn non_loopback_without_tokens_refuses_to_start() {
    let msg = check_listen("0.0.0.0:7070".parse().unwrap(), &[]).unwrap_err();
    assert!(
        msg.contains("without tokens") && msg.contains("--token"),
        "{msg}"
    );
    assert!(check_listen("192.168.1.5:7070".parse().unwrap(), &[]).is_err());
    assert!(check_listen("127.0.0.1:7070".parse().unwrap(), &[]).is_ok());
    assert!(check_listen("[::1]:7070".parse().unwrap(), &[]).is_ok());
    assert!(check_listen("0.0.0.0:7070".parse().unwrap(), &tokens()).is_ok());
}

#[test]
fn token_parsing() {
    let t: Token = "writer:abc:def".parse().unwrap();
    assert_eq!((t.role, t.secret.as_str()), (Role::Writer, "abc:def"));
    assert!("boss:abc".parse::<Token>().is_err());
    assert!("writer:".parse::<Token>().is_err());
    assert!("abc".parse::<Token>().is_err());
    assert!(
        !format!("{t:?}").contains("abc"),
        "Debug never shows the secret"
    );
}

#[tokio::test]
async fn whoami_tells_the_role_of_the_token() {
    let whoami = |state: &loom_server::AppState, token: Option<&str>| {
        let mut req = Request::builder().uri("/v1/whoami");
        if let Some(tok) = token {
            req = req.header("authorization", format!("Bearer {tok}"));
        }
        let req = req.body(Body::empty()).unwrap();
        let state = state.clone();
        async move { send(&state, req).await }
    };
    let t = new_state(Config {
        tokens: tokens(),
        ..Config::default()
    });
    for (secret, role) in [
        ("a-secret", "admin"),
        ("w-secret", "writer"),
        ("r-secret", "reader"),
    ] {
        let a = whoami(&t.state, Some(secret)).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json(), json!({"role": role, "open": false}));
    }
    // No token: the console learns that it must ask for one, without an error.
    let a = whoami(&t.state, None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), json!({"role": null, "open": false}));
    whoami(&t.state, Some("wrong")).await.problem(401);

    let open = state();
    assert_eq!(
        whoami(&open.state, None).await.json(),
        json!({"role": "admin", "open": true})
    );
}
