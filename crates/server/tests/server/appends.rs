//! Atomicity, conditions, idempotency and registry checks of appends.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use serde_json::json;

async fn post_with_expected(t: &TestState, body: &serde_json::Value, expected: &str) -> Answer {
    let ct = if body.is_array() {
        "application/cloudevents-batch+json"
    } else {
        "application/cloudevents+json"
    };
    send(
        &t.state,
        Request::post("/v1/events")
            .header("content-type", ct)
            .header("Loom-Expected-Revision", expected)
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn one_bad_event_rejects_the_whole_batch() {
    let t = state();
    // Each kind of bad event, always in the last place of the batch.
    let bad = [
        (
            cart_event("b", "1", "had_item_added", json!({"sku": "x"})),
            422,
        ), // schema
        (cart_event("b", "1", "was_teleported", json!({})), 422), // unknown type
        (
            json!({"specversion": "1.0", "id": "b", "source": "s", "type": "t", "subject": "ghost/1"}),
            422,
        ),
        (
            json!({"specversion": "1.0", "id": "b", "source": "s", "type": "was_created"}),
            422,
        ), // no subject
        (
            json!({"specversion": "1.0", "id": "b", "source": "s", "type": "was_created", "subject": "cart/1", "time": "yesterday"}),
            422,
        ),
        (cart_event("a-1", "1", "was_created", json!({})), 422), // same identity twice in the batch
        (json!(42), 400),
    ];
    for (event, status) in bad {
        let batch = json!([
            cart_event("a-1", "1", "was_created", json!({})),
            cart_event("a-2", "1", "had_item_added", item("apple", 1)),
            event,
        ]);
        let a = post_events(&t.state, &batch).await;
        let status = if a.status == 400 { 400 } else { status };
        let p = a.problem(status);
        if status == 422 {
            assert!(
                p["index"] == 2 || p["detail"].as_str().unwrap().starts_with("event 2:"),
                "the problem names the offending event: {p}"
            );
        }
        assert_eq!(
            t.ledger().head(),
            0,
            "nothing of a rejected batch is written"
        );
    }
    assert!(
        t.ledger()
            .event_by_id("https://shop.example/carts", "a-1")
            .unwrap()
            .is_none()
    );
    // The same batch without the bad event goes through whole.
    let good = json!([
        cart_event("a-1", "1", "was_created", json!({})),
        cart_event("a-2", "1", "had_item_added", item("apple", 1)),
    ]);
    assert_eq!(post_events(&t.state, &good).await.status, 201);
    assert_eq!(t.ledger().head(), 2);
}

#[tokio::test]
async fn schema_rejection_names_entity_type_and_error() {
    let t = state();
    let e = cart_event(
        "s-1",
        "1",
        "had_item_added",
        json!({"sku": "apple", "quantity": 0}),
    );
    let p = post_events(&t.state, &e).await.problem(422);
    assert_eq!(p["type"], "urn:loom:problem:schema-violation");
    assert_eq!(p["entity"], "cart");
    assert_eq!(p["event_type"], "had_item_added");
    assert!(p["detail"].as_str().unwrap().contains("quantity"), "{p}");
    let e = cart_event("s-2", "1", "had_item_added", json!({"sku": "apple"}));
    post_events(&t.state, &e).await.problem(422);
    let p = post_events(
        &t.state,
        &json!({
            "specversion": "1.0", "id": "u", "source": "s", "type": "x", "subject": "order/1"
        }),
    )
    .await
    .problem(422);
    assert_eq!(p["type"], "urn:loom:problem:unknown-entity");
    assert_eq!(p["entity"], "order");
    assert_eq!(t.ledger().head(), 0);
}

#[tokio::test]
async fn expected_revision_header_each_kind() {
    let t = state();
    let e = |id: &str| cart_event(id, "1", "was_created", json!({}));
    // none: passes on a new stream, fails on an existing one.
    assert_eq!(post_with_expected(&t, &e("1"), "none").await.status, 201);
    let p = post_with_expected(&t, &e("2"), "none").await.problem(409);
    assert_eq!(
        (
            p["stream"].clone(),
            p["expected"].clone(),
            p["actual"].clone()
        ),
        (json!("cart/1"), json!("none"), json!(1))
    );
    // exists
    assert_eq!(post_with_expected(&t, &e("3"), "exists").await.status, 201);
    let fresh = cart_event("4", "new", "was_created", json!({}));
    let p = post_with_expected(&t, &fresh, "exists").await.problem(409);
    assert_eq!(
        (p["expected"].clone(), p["actual"].clone()),
        (json!("exists"), json!(0))
    );
    // exact
    assert_eq!(post_with_expected(&t, &e("5"), "2").await.status, 201);
    let p = post_with_expected(&t, &e("6"), "2").await.problem(409);
    assert_eq!(p["type"], "urn:loom:problem:revision-conflict");
    assert_eq!(
        (p["expected"].clone(), p["actual"].clone()),
        (json!(2), json!(3))
    );
    // any
    assert_eq!(post_with_expected(&t, &e("7"), "any").await.status, 201);
    // bad values and mixed subjects are malformed requests
    post_with_expected(&t, &e("8"), "soon").await.problem(400);
    let mixed = json!([e("9"), cart_event("10", "2", "was_created", json!({}))]);
    post_with_expected(&t, &mixed, "any").await.problem(400);
    assert_eq!(t.ledger().stream_revision("cart/1").unwrap(), 4);
    assert_eq!(t.ledger().head(), 4);
}

#[tokio::test]
async fn append_endpoint_expected_revisions_across_streams() {
    let t = state();
    let ok = post_json(&t.state, "/v1/append", &json!({
        "events": [cart_event("1", "a", "was_created", json!({})), cart_event("2", "b", "was_created", json!({}))],
        "conditions": { "expected_revisions": { "cart/a": "none", "cart/b": 0 } }
    })).await;
    assert_eq!(ok.status, 201, "{}", String::from_utf8_lossy(&ok.body));
    // One stream's condition fails: nothing of the batch is written.
    let p = post_json(&t.state, "/v1/append", &json!({
        "events": [cart_event("3", "a", "was_created", json!({})), cart_event("4", "b", "was_created", json!({}))],
        "conditions": { "expected_revisions": { "cart/a": 1, "cart/b": "none" } }
    })).await.problem(409);
    assert_eq!(p["stream"], "cart/b");
    assert_eq!(p["expected"], "none");
    assert_eq!(p["actual"], 1);
    assert_eq!(t.ledger().head(), 2);
    // Malformed conditions are 400; unknown members too.
    post_json(
        &t.state,
        "/v1/append",
        &json!({
            "events": [cart_event("5", "a", "was_created", json!({}))],
            "conditions": { "expected_revisions": { "cart/a": "later" } }
        }),
    )
    .await
    .problem(400);
    post_json(
        &t.state,
        "/v1/append",
        &json!({
            "events": [cart_event("5", "a", "was_created", json!({}))], "conditons": {}
        }),
    )
    .await
    .problem(400);
    post_json(&t.state, "/v1/append", &json!({ "events": [] }))
        .await
        .problem(422);
}

#[tokio::test]
async fn dcb_condition_with_and_without_after() {
    let t = state();
    let seed = json!([
        cart_event("1", "a", "was_created", json!({})),
        cart_event("2", "a", "had_item_added", item("apple", 1)),
        cart_event("3", "b", "was_created", json!({})),
    ]);
    assert_eq!(post_events(&t.state, &seed).await.status, 201);
    let condition =
        json!({ "entity": "cart", "types": ["had_item_added"], "data": "$[?@ == 'apple']" });
    // Without after: the apple at position 2 conflicts.
    let p = post_json(
        &t.state,
        "/v1/append",
        &json!({
            "events": [cart_event("4", "a", "had_item_added", item("apple", 1))],
            "conditions": { "fail_if_events_match": condition }
        }),
    )
    .await
    .problem(409);
    assert_eq!(p["type"], "urn:loom:problem:condition-conflict");
    assert_eq!(p["positions"], json!([2]));
    // After position 2: nothing matches, the append goes through.
    let a = post_json(
        &t.state,
        "/v1/append",
        &json!({
            "events": [cart_event("4", "a", "had_item_added", item("apple", 1))],
            "conditions": { "fail_if_events_match": condition, "after": 2 }
        }),
    )
    .await;
    assert_eq!(a.status, 201);
    assert_eq!(a.json()["last_position"], 4);
    // after 2 again: now position 4 matches.
    let p = post_json(
        &t.state,
        "/v1/append",
        &json!({
            "events": [cart_event("5", "a", "had_item_added", item("apple", 1))],
            "conditions": { "fail_if_events_match": condition, "after": 2 }
        }),
    )
    .await
    .problem(409);
    assert_eq!(p["positions"], json!([4]));
    // A selector that does not parse is 422.
    post_json(
        &t.state,
        "/v1/append",
        &json!({
            "events": [cart_event("5", "a", "was_created", json!({}))],
            "conditions": { "fail_if_events_match": { "data": "$[?" } }
        }),
    )
    .await
    .problem(422);
    assert_eq!(t.ledger().head(), 4);
}

#[tokio::test]
async fn idempotent_repost_and_identity_conflict() {
    let t = state();
    let e = cart_event("id-1", "1", "had_item_added", item("pear", 2));
    let first = post_events(&t.state, &e).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.json()["duplicate"], false);
    // The same event again: success, same position, nothing written.
    let again = post_events(&t.state, &e).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["duplicate"], true);
    assert_eq!(again.json()["events"][0]["position"], 1);
    // The same event in binary mode is the same event too.
    let bin = send(
        &t.state,
        Request::post("/v1/events")
            .header("ce-specversion", "1.0")
            .header("ce-id", "id-1")
            .header("ce-source", "https://shop.example/carts")
            .header("ce-type", "had_item_added")
            .header("ce-subject", "cart/1")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"quantity": 2, "sku": "pear"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(bin.status, 200, "{}", String::from_utf8_lossy(&bin.body));
    assert_eq!(bin.json()["events"][0]["position"], 1);
    assert_eq!(t.ledger().head(), 1);
    // Same identity, different content: 409 naming the identity and where it is stored.
    let changed = cart_event("id-1", "1", "had_item_added", item("pear", 3));
    let p = post_events(&t.state, &changed).await.problem(409);
    assert_eq!(p["type"], "urn:loom:problem:identity-conflict");
    assert_eq!(p["id"], "id-1");
    assert_eq!(p["source"], "https://shop.example/carts");
    assert_eq!(p["position"], 1);
    // A batch that is part stored, part new is not a retry.
    let mixed = json!([e, cart_event("id-2", "1", "was_created", json!({}))]);
    post_events(&t.state, &mixed).await.problem(409);
    assert_eq!(t.ledger().head(), 1);
}

#[tokio::test]
async fn a_retry_that_writes_the_same_time_another_way_is_a_duplicate() {
    let t = state();
    // Binary mode, time with a numeric UTC offset (as the Rust SDK writes it)…
    let binary = |id: &str, time: &str| {
        Request::post("/v1/events")
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "sdk")
            .header("ce-type", "was_created")
            .header("ce-subject", "cart/t")
            .header("ce-time", time)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap()
    };
    let first = send(&t.state, binary("t-1", "2026-05-06T07:08:09.123456+00:00")).await;
    assert_eq!(
        first.status,
        201,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    // …then structured, with `Z` (as the same SDK writes JSON): the same instant, a retry.
    let mut e = cart_event("t-1", "t", "was_created", json!({}));
    e["source"] = json!("sdk");
    e["time"] = json!("2026-05-06T07:08:09.123456Z");
    let again = post_events(&t.state, &e).await;
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(again.json()["duplicate"], true);
    // In another zone, still the same instant.
    e["time"] = json!("2026-05-06T09:08:09.123456+02:00");
    assert_eq!(post_events(&t.state, &e).await.status, 200);
    // A microsecond later is another event with the same identity: a conflict.
    e["time"] = json!("2026-05-06T07:08:09.123457Z");
    let p = post_events(&t.state, &e).await.problem(409);
    assert_eq!(p["type"], "urn:loom:problem:identity-conflict");
    assert_eq!(t.ledger().head(), 1);
    // The stored text is the producer's own.
    let stored = get(&t.state, "/v1/events/1").await.json();
    assert_eq!(stored["time"], "2026-05-06T07:08:09.123456+00:00");
}

#[tokio::test]
async fn registry_put_get_list() {
    let t = state();
    let spec =
        json!({ "events": { "was_opened": { "schema": { "type": "object" } } }, "open": false });
    let a = send(
        &t.state,
        Request::put("/v1/entities/account")
            .header("content-type", "application/json")
            .body(Body::from(spec.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 201);
    let a = send(
        &t.state,
        Request::put("/v1/entities/account")
            .header("content-type", "application/json")
            .body(Body::from(spec.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(get(&t.state, "/v1/entities/account").await.json(), spec);
    let all = get(&t.state, "/v1/entities").await.json();
    assert!(all.get("account").is_some() && all.get("cart").is_some());
    get(&t.state, "/v1/entities/nobody").await.problem(404);
    // Invalid schema and invalid name are 422; unknown members 400.
    let bad = json!({ "events": { "x": { "schema": { "type": 12 } } } });
    send(
        &t.state,
        Request::put("/v1/entities/bad")
            .header("content-type", "application/json")
            .body(Body::from(bad.to_string()))
            .unwrap(),
    )
    .await
    .problem(422);
    send(
        &t.state,
        Request::put("/v1/entities/b%20d")
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await
    .problem(422);
    send(
        &t.state,
        Request::put("/v1/entities/ok")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"evnts":{}}"#))
            .unwrap(),
    )
    .await
    .problem(400);
    get(&t.state, "/v1/entities/bad").await.problem(404);
}

#[tokio::test]
async fn an_entity_registered_commands_only_refuses_raw_appends_and_says_to_send_a_command() {
    let t = state();
    let a = send(
        &t.state,
        Request::put("/v1/entities/ledgerline")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"open": true, "commands_only": true}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.json()["commands_only"], true);
    let event = json!({"specversion": "1.0", "id": "x", "source": "loom/deciders/ledgerline",
                       "type": "was_posted", "subject": "ledgerline/1", "data": {}});
    let p = post_events(&t.state, &event).await.problem(403);
    assert_eq!(p["type"], "urn:loom:problem:commands-only");
    assert_eq!(p["entity"], "ledgerline");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("send a command instead with POST /v1/commands/ledgerline/{key}"),
        "{p}"
    );
    assert_eq!(t.ledger().head(), 0);
}
