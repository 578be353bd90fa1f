//! Requests that try to trick the server: names that clients cannot address, invented HTTP
//! methods that would add metric series.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use common::*;

fn put_json(uri: &str, body: &serde_json::Value) -> Request<Body> {
    Request::put(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn dot_names_are_refused_for_entities_projections_and_reactors() {
    let t = state();
    let s = &t.state;
    for uri in ["/v1/entities/..", "/v1/entities/%2e%2e", "/v1/entities/."] {
        let p = send(s, put_json(uri, &json!({"open": true})))
            .await
            .problem(422);
        assert!(p["detail"].as_str().unwrap().contains("'..'"), "{uri}: {p}");
    }
    for uri in [
        "/v1/projections/..",
        "/v1/projections/%2E",
        "/v1/reactors/%2e%2e",
    ] {
        let body = json!({"module": "sha256:00", "selector": {"entity": "cart"}});
        let p = send(s, put_json(uri, &body)).await.problem(422);
        assert!(p["detail"].as_str().unwrap().contains("'..'"), "{uri}: {p}");
    }
    assert!(s.ledger().entity("..").is_none());
    // Names with dots inside are names.
    send(s, put_json("/v1/entities/a.b", &json!({"open": true})))
        .await
        .json();
    assert!(s.ledger().entity("a.b").is_some());
}

#[tokio::test]
async fn invented_methods_share_one_metric_series() {
    let t = state();
    let s = &t.state;
    for i in 0..50 {
        let req = Request::builder()
            .method(format!("INVENTED{i}").as_str())
            .uri("/v1/events")
            .body(Body::empty())
            .unwrap();
        send(s, req).await;
    }
    let text = String::from_utf8(get(s, "/metrics").await.body.to_vec()).unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("loom_http_requests_total{"))
        .collect();
    assert!(!text.contains("INVENTED"), "{text}");
    assert!(
        series.iter().any(|l| l.contains("method=\"other\"")),
        "{series:?}"
    );
    assert!(series.len() < 5, "{series:?}");
}
