//! Projections end to end over HTTP with the real example modules (`cart`, `bank`,
//! `bank-stats`): catch-up over history, live updates, read-your-writes with `min_position`,
//! time travel equal to a fresh fold, failures with position and message, resume, blue/green
//! upgrades. Keys paging, the `query` export, deletion and refused requests are in
//! `projection_requests.rs`, with the helpers here.
//!
//! Expected states are computed here from the events the test appended (a model of the
//! cart and bank reducers), not from the server's answers.

use crate::common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::*;
use loom_server::AppState;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

pub(crate) async fn upload(state: &AppState, example: &str) -> String {
    let a = send(
        state,
        Request::post("/v1/modules")
            .body(Body::from(loom_testkit::example_wasm(example)))
            .unwrap(),
    )
    .await;
    assert!(a.status == 201 || a.status == 200, "{a:?}");
    a.json()["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn put_json(state: &AppState, uri: &str, body: &Value) -> Answer {
    send(
        state,
        Request::put(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

pub(crate) async fn post(state: &AppState, uri: &str) -> Answer {
    send(state, Request::post(uri).body(Body::empty()).unwrap()).await
}

pub(crate) async fn delete(state: &AppState, uri: &str) -> Answer {
    send(state, Request::delete(uri).body(Body::empty()).unwrap()).await
}

/// Appends events (batch mode) and returns the last position.
pub(crate) async fn append(state: &AppState, events: &[Value]) -> u64 {
    let a = post_events(state, &Value::from(events.to_vec())).await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    a.json()["last_position"].as_u64().unwrap()
}

pub(crate) fn line(sku: &str, price: i64, quantity: i64) -> Value {
    json!({"sku": sku, "name": format!("Item {sku}"), "price": price, "quantity": quantity})
}

/// Every stored event, in order.
async fn stored_events(state: &AppState) -> Vec<Value> {
    let a = get(state, "/v1/events?limit=10000").await;
    assert_eq!(a.status, 200);
    a.json().as_array().unwrap().clone()
}

/// The cart reducer, written again here: the state a clean fold of `events` gives.
fn fold_cart<'a>(events: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut items: Vec<Value> = Vec::new();
    let mut status = "missing";
    for e in events {
        let d = &e["data"];
        match e["type"].as_str().unwrap() {
            "was_created" => status = "active",
            "had_item_added" => match items.iter_mut().find(|i| i["sku"] == d["sku"]) {
                Some(i) => {
                    i["quantity"] =
                        json!(i["quantity"].as_i64().unwrap() + d["quantity"].as_i64().unwrap());
                    i["price"] = d["price"].clone();
                    i["name"] = d["name"].clone();
                }
                None => items.push(d.clone()),
            },
            "had_item_removed" => items.retain(|i| i["sku"] != d["sku"]),
            "was_checked_out" => status = "checked_out",
            _ => {}
        }
    }
    json!({"items": items, "status": status})
}

/// The stored events of one stream up to `upto`.
fn of_stream<'a>(events: &'a [Value], subject: &'a str, upto: u64) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["subject"] == subject && e["position"].as_u64().unwrap() <= upto)
        .collect()
}

/// Polls the status until `check` holds.
async fn wait_status(state: &AppState, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let a = get(state, &format!("/v1/projections/{name}")).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let st = a.json();
        if check(&st) {
            return st;
        }
        assert!(started.elapsed() < WAIT, "status stayed {st}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the serving generation runs at the head with no upgrade under way.
pub(crate) async fn wait_running(state: &AppState, name: &str) -> Value {
    let head = state.ledger().head();
    wait_status(state, name, |st| {
        st["status"] == "running"
            && st.get("next").is_none()
            && st["position"].as_u64() >= Some(head)
    })
    .await
}

pub(crate) async fn state_of(state: &AppState, uri: &str) -> Value {
    let a = get(state, uri).await;
    assert_eq!(a.status, 200, "{uri}: {}", String::from_utf8_lossy(&a.body));
    a.json()
}

/// `n` carts, each created, then `items` additions round-robin (repeating SKUs), then one
/// removal per cart; appended in batches of 7 (separate commits).
pub(crate) fn cart_history(keys: &[String], items: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for k in keys {
        out.push(cart_event(&format!("{k}-c"), k, "was_created", json!({})));
    }
    for i in 0..items {
        for k in keys {
            out.push(cart_event(
                &format!("{k}-a{i}"),
                k,
                "had_item_added",
                line(
                    &format!("sku-{}", i % 4),
                    100 + i as i64,
                    1 + (i % 3) as i64,
                ),
            ));
        }
    }
    for k in keys {
        out.push(cart_event(
            &format!("{k}-r"),
            k,
            "had_item_removed",
            json!({"sku": "sku-1"}),
        ));
    }
    out
}

pub(crate) async fn define(state: &AppState, name: &str, spec: Value) -> Answer {
    put_json(state, &format!("/v1/projections/{name}"), &spec).await
}

#[tokio::test]
async fn catches_up_follows_live_appends_reads_own_writes_and_travels_in_time() {
    let t = state();
    let s = &t.state;
    let cart = upload(s, "cart").await;
    let keys: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
    let history = cart_history(&keys, 12);
    for chunk in history.chunks(7) {
        append(s, chunk).await;
        // Commits a little apart, so that at_time can name a moment between them.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Another entity's events are not selected.
    append(
        s,
        &[json!({"specversion": "1.0", "id": "l1", "source": "t", "type": "noted", "subject": "log/1", "data": {}})],
    )
    .await;

    // Defined over existing history: it catches up.
    let a = define(
        s,
        "carts",
        json!({"module": cart, "selector": {"entity": "cart"}, "partition": "stream"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("location"), Some("/v1/projections/carts"));
    assert_eq!(a.json()["spec"]["module"], cart);
    let st = wait_running(s, "carts").await;
    assert_eq!(
        st["events_applied"],
        history.len(),
        "every cart event folded exactly once"
    );
    assert_eq!(st["keys"], 4);
    assert_eq!(st["lag"], 0);
    assert_eq!(st["generation"], 1);

    let events = stored_events(s).await;
    let head = s.ledger().head();
    for k in &keys {
        let subject = format!("cart/{k}");
        let mine = of_stream(&events, &subject, head);
        let v = state_of(s, &format!("/v1/projections/carts/state/cart/{k}")).await;
        assert_eq!(v["state"], fold_cart(mine.iter().copied()), "{subject}");
        assert_eq!(v["events_applied"], mine.len());
        assert_eq!(v["position"], head);
        assert_eq!(v["created_at"], mine[0]["recordedtime"]);
        assert_eq!(v["updated_at"], mine.last().unwrap()["recordedtime"]);
    }
    // Sanity of the model itself: sku-1 was removed, three lines remain.
    let c0 = state_of(s, "/v1/projections/carts/state/cart/c0").await;
    assert_eq!(c0["state"]["items"].as_array().unwrap().len(), 3);
    assert_eq!(c0["state"]["status"], "active");

    // Time travel by position: equal to a fresh fold up to there.
    let mid = events[events.len() / 2]["position"].as_u64().unwrap();
    for k in &keys {
        let subject = format!("cart/{k}");
        let mine = of_stream(&events, &subject, mid);
        let v = state_of(
            s,
            &format!("/v1/projections/carts/state/cart/{k}?at_position={mid}"),
        )
        .await;
        assert_eq!(
            v["state"],
            fold_cart(mine.iter().copied()),
            "{subject} at {mid}"
        );
        assert_eq!(v["position"], mid);
        assert_eq!(v["events_applied"], mine.len());
    }
    // Before a stream's first event it has no state.
    get(s, "/v1/projections/carts/state/cart/c3?at_position=1")
        .await
        .problem(404);

    // Time travel by time: the head as it was at that time (whole commits).
    let moment = events[events.len() / 3]["recordedtime"]
        .as_str()
        .unwrap()
        .to_owned();
    let upto = events
        .iter()
        .filter(|e| e["recordedtime"].as_str().unwrap() <= moment.as_str())
        .map(|e| e["position"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(upto < head);
    let encoded: String = form_urlencoded::byte_serialize(moment.as_bytes()).collect();
    let v = state_of(
        s,
        &format!("/v1/projections/carts/state/cart/c2?at_time={encoded}"),
    )
    .await;
    assert_eq!(v["state"], fold_cart(of_stream(&events, "cart/c2", upto)));
    assert_eq!(v["position"], upto);
    // The live state is not the past one.
    assert_ne!(
        state_of(s, "/v1/projections/carts/state/cart/c2").await["state"],
        v["state"]
    );

    // Live: every append is visible to a min_position read right after it. Each append
    // carries a few hundred events (for other carts first), so that the projection is still
    // folding when the read arrives: only the wait makes the last event visible.
    let mut live = 0;
    for i in 0..6 {
        let mut batch = Vec::new();
        for j in 0..300 {
            batch.push(cart_event(
                &format!("live-{i}-{j}"),
                &keys[1 + j % 3],
                "had_item_added",
                line(&format!("bulk-{}", j % 5), 5, 1),
            ));
        }
        batch.push(cart_event(
            &format!("live-{i}"),
            "c0",
            "had_item_added",
            line(&format!("live-{i}"), 5, 1),
        ));
        live += batch.len();
        let p = append(s, &batch).await;
        let v = state_of(
            s,
            &format!("/v1/projections/carts/state/cart/c0?min_position={p}"),
        )
        .await;
        assert!(v["position"].as_u64().unwrap() >= p, "{v}");
        let items = v["state"]["items"].as_array().unwrap();
        assert!(
            items.iter().any(|it| it["sku"] == format!("live-{i}")),
            "read-your-writes: live-{i} missing at {p}: {v}"
        );
    }
    // A new stream appears live, too.
    let p = append(s, &[cart_event("new-c", "c9", "was_created", json!({}))]).await;
    let v = state_of(
        s,
        &format!("/v1/projections/carts/state/cart/c9?min_position={p}"),
    )
    .await;
    assert_eq!(v["state"], json!({"items": [], "status": "active"}));
    let st = wait_running(s, "carts").await;
    assert_eq!(st["events_applied"], history.len() + live + 1);
    assert_eq!(st["keys"], 5);

    // Listed, and the same definition again is a 200 that changes nothing.
    let list = get(s, "/v1/projections").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "carts");
    let a = define(
        s,
        "carts",
        json!({"module": cart, "selector": {"entity": "cart"}, "partition": "stream"}),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["generation"], 1);

    // Metrics show the projection.
    let m = String::from_utf8(get(s, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        m.contains("loom_projection_events_applied{projection=\"carts\"}"),
        "{m}"
    );
    assert!(m.contains("loom_projection_status{projection=\"carts\",status=\"running\"} 1"));
    assert!(m.contains("loom_projection_state_query_duration_seconds_count"));
}

#[tokio::test]
async fn a_failing_module_stops_with_position_and_message_until_redefined() {
    let t = state();
    let s = &t.state;
    let r = put_json(s, "/v1/entities/account", &json!({"open": true})).await;
    assert_eq!(r.status, 201);
    let bank = upload(s, "bank").await;
    let ev = |id: &str, key: &str, ty: &str, data: Value| json!({"specversion": "1.0", "id": id, "source": "bank", "type": ty, "subject": format!("account/{key}"), "data": data});
    append(
        s,
        &[
            ev("1", "a1", "was_opened", json!({"owner": "amal"})),
            ev("2", "a1", "was_credited", json!({"amount": 100})),
        ],
    )
    .await;
    append(s, &[ev("3", "b2", "was_opened", json!({"owner": "bo"}))]).await;
    let bad = append(
        s,
        &[ev("4", "b2", "was_credited", json!({"amount": "lots"}))],
    )
    .await;
    append(s, &[ev("5", "a1", "was_credited", json!({"amount": 5}))]).await;

    let spec = json!({"module": bank, "selector": {"entity": "account"}, "partition": "stream"});
    assert_eq!(define(s, "accounts", spec).await.status, 201);
    let st = wait_status(s, "accounts", |st| st["status"] == "failed").await;
    assert_eq!(st["last_error"]["position"], bad, "{st}");
    let message = st["last_error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("was_credited"),
        "the module's message: {message}"
    );
    // Everything before the failing event is folded and served; nothing after it.
    assert_eq!(st["position"], bad - 1);
    let v = state_of(s, "/v1/projections/accounts/state/account/a1").await;
    assert_eq!(v["state"], json!({"owner": "amal", "balance": 100}));
    // A read-your-writes read past the failure answers at once, saying why.
    let started = Instant::now();
    let p = get(
        s,
        &format!("/v1/projections/accounts/state/account/a1?min_position={bad}"),
    )
    .await
    .problem(504);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("failed at position {bad}")),
        "{p}"
    );
    assert_eq!(p["reached"], bad - 1);
    // Metrics say so.
    let m = String::from_utf8(get(s, "/metrics").await.body.to_vec()).unwrap();
    assert!(m.contains("loom_projection_status{projection=\"accounts\",status=\"failed\"} 1"));

    // Resume retries the event — and fails on it again, at the same position.
    let r = post(s, "/v1/projections/accounts/resume").await;
    assert_eq!(r.status, 200);
    let st = wait_status(s, "accounts", |st| st["status"] == "failed").await;
    assert_eq!(st["last_error"]["position"], bad);
    assert_eq!(st["last_error"]["message"], message.as_str());

    // A new definition that leaves the bad stream out builds and swaps in.
    let fixed = json!({"module": bank, "selector": {"entity": "account", "keys": ["a1"]}, "partition": "stream"});
    let a = define(s, "accounts", fixed.clone()).await;
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    let st = wait_running(s, "accounts").await;
    assert_eq!(st["generation"], 2);
    assert_eq!(st["spec"]["selector"], fixed["selector"]);
    assert!(st.get("last_error").is_none());
    assert_eq!(st["events_applied"], 3);
    let v = state_of(s, "/v1/projections/accounts/state/account/a1").await;
    assert_eq!(v["state"], json!({"owner": "amal", "balance": 105}));
    get(s, "/v1/projections/accounts/state/account/b2")
        .await
        .problem(404);
}

#[tokio::test]
async fn blue_green_upgrade_serves_the_old_state_until_the_swap() {
    let t = state();
    let s = &t.state;
    let cart = upload(s, "cart").await;
    let keys: Vec<String> = (0..3).map(|i| format!("b{i}")).collect();
    append(s, &cart_history(&keys, 6)).await;
    let v1 = json!({"module": cart, "selector": {"entity": "cart"}, "partition": "stream"});
    assert_eq!(define(s, "carts", v1).await.status, 201);
    wait_running(s, "carts").await;
    let events = stored_events(s).await;
    let head = s.ledger().head();
    let old = fold_cart(of_stream(&events, "cart/b1", head));
    assert_eq!(
        state_of(s, "/v1/projections/carts/state/cart/b1").await["state"],
        old
    );

    // Pause, so that the new version cannot catch up yet, then change the definition: the
    // new one leaves removals out.
    let r = post(s, "/v1/projections/carts/pause").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "paused");
    let v2 = json!({"module": cart, "selector": {"entity": "cart", "types": ["was_created", "had_item_added"]}, "partition": "stream"});
    let a = define(s, "carts", v2.clone()).await;
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    let st = a.json();
    assert_eq!(st["next"]["generation"], 2);
    assert_eq!(st["next"]["spec"]["selector"], v2["selector"]);
    assert_eq!(st["generation"], 1);
    // While paused: status shows both; the old state is served.
    let st = get(s, "/v1/projections/carts").await.json();
    assert_eq!(st["next"]["status"], "paused");
    assert_eq!(st["next"]["position"], 0);
    assert_eq!(st["status"], "paused");
    assert_eq!(st["spec"]["selector"], json!({"entity": "cart"}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        state_of(s, "/v1/projections/carts/state/cart/b1").await["state"],
        old
    );
    // The same (pending) definition again changes nothing.
    assert_eq!(define(s, "carts", v2.clone()).await.status, 200);

    // Resume: the new generation catches up and swaps in.
    assert_eq!(post(s, "/v1/projections/carts/resume").await.status, 200);
    let st = wait_running(s, "carts").await;
    assert_eq!(st["generation"], 2);
    assert_eq!(st["spec"]["selector"], v2["selector"]);
    let new = fold_cart(
        of_stream(&events, "cart/b1", head)
            .into_iter()
            .filter(|e| e["type"] != "had_item_removed"),
    );
    assert_ne!(new, old);
    assert_eq!(
        state_of(s, "/v1/projections/carts/state/cart/b1").await["state"],
        new
    );

    // Rebuild starts over from 0 with a new generation and ends with the same state.
    let r = post(s, "/v1/projections/carts/rebuild").await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["generation"], 3);
    let st = wait_running(s, "carts").await;
    assert_eq!(st["generation"], 3);
    assert_eq!(
        state_of(s, "/v1/projections/carts/state/cart/b1").await["state"],
        new
    );
}
