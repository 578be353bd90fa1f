//! docs/walkthrough.md's walk-throughs on a real loopback server, with their request bodies
//! byte for byte — j17's cart events, prices such as `29.99` — the cart's own registration
//! and the real `cart` module: the answers the document shows are the answers a reader gets.

use crate::common;

use common::*;
use loom_server::Config;
use serde_json::Value;

/// The batch the walk-through appends (docs/walkthrough.md, "Walk-through: projections").
const BATCH: &str = r#"[
 {"specversion":"1.0","id":"c1-created","source":"https://shop.example","type":"was_created","subject":"cart/c1","data":{}},
 {"specversion":"1.0","id":"c1-add-1","source":"https://shop.example","type":"had_item_added","subject":"cart/c1","data":{"sku":"mug","name":"Mug","price":29.99,"quantity":2}},
 {"specversion":"1.0","id":"c1-add-2","source":"https://shop.example","type":"had_item_added","subject":"cart/c1","data":{"sku":"tea","name":"Green tea","price":4.5,"quantity":1}}
]"#;

/// The removal it appends next.
const REMOVE: &str = r#"{"specversion":"1.0","id":"c1-rm-1","source":"https://shop.example","type":"had_item_removed","subject":"cart/c1","data":{"sku":"tea"}}"#;

#[tokio::test]
async fn the_http_walk_through_with_j17_cart_bodies_answers_what_the_document_shows() {
    let server = Server::start(Config::default()).await;
    server
        .state
        .ledger()
        .put_entity("cart", loom_testkit::example_entity("cart"))
        .unwrap();
    let http = reqwest::Client::new();
    let text = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    };

    let (status, body) = text(
        http.post(server.url("/v1/modules"))
            .header("content-type", "application/wasm")
            .body(loom_testkit::example_wasm("cart"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let module: Value = serde_json::from_str(&body).unwrap();
    let spec = format!(
        r#"{{ "module": {}, "selector": {{ "entity": "cart" }}, "partition": "stream" }}"#,
        module["id"]
    );
    let (status, body) = text(
        http.put(server.url("/v1/projections/carts"))
            .header("content-type", "application/json")
            .body(spec)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let post = |ct: &'static str, body: &'static str| {
        http.post(server.url("/v1/events"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let (status, body) = text(
        post("application/cloudevents-batch+json", BATCH)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(r#""last_position":3"#), "{body}");

    // Prices come back exactly as written: `29.99`, not a float's neighbour, not refused.
    let (status, body) = text(
        http.get(server.url("/v1/projections/carts/state/cart/c1?min_position=3"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with(
            r#"{"state":{"items":[{"sku":"mug","name":"Mug","price":29.99,"quantity":2},{"sku":"tea","name":"Green tea","price":4.5,"quantity":1}],"status":"active"},"position":3,"events_applied":3,"#
        ),
        "{body}"
    );

    let (status, body) = text(post("application/cloudevents+json", REMOVE).await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    let (_, body) = text(
        http.get(server.url("/v1/projections/carts/state/cart/c1?min_position=4"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        body.starts_with(
            r#"{"state":{"items":[{"sku":"mug","name":"Mug","price":29.99,"quantity":2}],"status":"active"},"position":4,"events_applied":4,"#
        ),
        "{body}"
    );
    let (_, body) = text(
        http.get(server.url("/v1/projections/carts/state/cart/c1?at_position=3"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(body.contains(r#""sku":"tea""#), "{body}");

    // The query's total is exact: 2 × 29.99.
    let (status, body) = text(
        http.post(server.url("/v1/projections/carts/query/cart/c1"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"total":59.98,"units":2}"#);
    server.stop().await;
}

#[tokio::test]
async fn the_http_cart_walk_through_appends_conditionally_and_refuses_what_the_document_shows() {
    let server = Server::start(Config::default()).await;
    let http = reqwest::Client::new();
    let registration = std::fs::read(loom_testkit::example_entity_path("cart")).unwrap();
    let r = http
        .put(server.url("/v1/entities/cart"))
        .header("content-type", "application/json")
        .body(registration)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let events = || http.post(server.url("/v1/events"));
    let (status, body) = send(
        events()
            .header("content-type", "application/cloudevents+json")
            .header("Loom-Expected-Revision", "none")
            .body(
                r#"{"specversion":"1.0","id":"c1-created","source":"https://shop.example","type":"was_created",
       "subject":"cart/c1","data":{"customer":"amal"}}"#,
            ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        r#"{"events":[{"source":"https://shop.example","id":"c1-created","subject":"cart/c1","position":1,"revision":1}],"last_position":1,"duplicate":false}"#
    );
    let (status, body) = send(
        events()
            .header("content-type", "application/cloudevents-batch+json")
            .header("Loom-Expected-Revision", "1")
            .body(
                r#"[
   {"specversion":"1.0","id":"c1-add-1","source":"https://shop.example","type":"had_item_added","subject":"cart/c1","data":{"sku":"mug","name":"Mug","price":29.99,"quantity":2}},
   {"specversion":"1.0","id":"c1-add-2","source":"https://shop.example","type":"had_item_added","subject":"cart/c1","data":{"sku":"tea","name":"Green tea","price":4.5,"quantity":1}},
   {"specversion":"1.0","id":"c1-rm-1","source":"https://shop.example","type":"had_item_removed","subject":"cart/c1","data":{"sku":"tea"}}
  ]"#,
            ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        events()
            .header("ce-specversion", "1.0")
            .header("ce-id", "c1-checkout")
            .header("ce-source", "https://shop.example")
            .header("ce-type", "was_checked_out")
            .header("ce-subject", "cart/c1")
            .header("Loom-Expected-Revision", "4")
            .header("content-type", "application/json; charset=utf-8")
            .body(r#"{"total": 59.98}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, body) = send(http.get(server.url("/v1/streams/cart/c1/revision"))).await;
    assert_eq!(body, r#"{"stream":"cart/c1","revision":5}"#);
    let (_, body) = send(http.get(server.url("/v1/streams/cart/c1"))).await;
    assert!(body.contains(r#""price":29.99"#), "{body}");

    let (status, body) = send(
        events()
            .header("content-type", "application/cloudevents+json")
            .body(
                r#"{"specversion":"1.0","id":"bad","source":"https://shop.example","type":"had_item_added","subject":"cart/c1","data":{"sku":"fig","name":"Fig","price":1.2,"quantity":0}}"#,
            ),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["type"], "urn:loom:problem:schema-violation");
    assert_eq!(
        problem["detail"],
        "event 0: data of cart/had_item_added fails its schema: at /quantity: 0 is less than the minimum of 1"
    );
    let (_, body) = send(http.get(server.url("/v1/streams/cart/c1/revision"))).await;
    assert_eq!(
        body, r#"{"stream":"cart/c1","revision":5}"#,
        "nothing was written"
    );
    server.stop().await;
}
