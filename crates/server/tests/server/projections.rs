//! Projections end to end over HTTP with the real example modules (`cart`, `bank`,
//! `bank-stats`): catch-up over history, live updates, read-your-writes with `min_position`,
//! time travel equal to a fresh fold, failures with position and message, resume, blue/green
//! upgrades, keys paging, the `query` export, deletion freeing state, parameter errors.
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

async fn upload(state: &AppState, example: &str) -> String {
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

async fn put_json(state: &AppState, uri: &str, body: &Value) -> Answer {
    send(
        state,
        Request::put(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

async fn post(state: &AppState, uri: &str) -> Answer {
    send(state, Request::post(uri).body(Body::empty()).unwrap()).await
}

async fn delete(state: &AppState, uri: &str) -> Answer {
    send(state, Request::delete(uri).body(Body::empty()).unwrap()).await
}

/// Appends events (batch mode) and returns the last position.
async fn append(state: &AppState, events: &[Value]) -> u64 {
    let a = post_events(state, &Value::from(events.to_vec())).await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    a.json()["last_position"].as_u64().unwrap()
}

fn line(sku: &str, price: i64, quantity: i64) -> Value {
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
async fn wait_running(state: &AppState, name: &str) -> Value {
    let head = state.ledger().head();
    wait_status(state, name, |st| {
        st["status"] == "running"
            && st.get("next").is_none()
            && st["position"].as_u64() >= Some(head)
    })
    .await
}

async fn state_of(state: &AppState, uri: &str) -> Value {
    let a = get(state, uri).await;
    assert_eq!(a.status, 200, "{uri}: {}", String::from_utf8_lossy(&a.body));
    a.json()
}

/// `n` carts, each created, then `items` additions round-robin (repeating SKUs), then one
/// removal per cart; appended in batches of 7 (separate commits).
fn cart_history(keys: &[String], items: usize) -> Vec<Value> {
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

async fn define(state: &AppState, name: &str, spec: Value) -> Answer {
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
