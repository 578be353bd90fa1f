//! Reactors over HTTP on a real loopback server: the `checkout` example reacts to checked-out
//! carts by appending orders and notifying a real HTTP sink (with pause, resume, the same
//! definition again, deletion and bad definitions), and a sink that is down and comes back
//! gets every notification in order.
//!
//! Expectations come from the events the ledger holds and what the sink received, not from
//! the server's own answers.

use std::time::Duration;

use common::*;
use loom_server::Config;
use serde_json::{Value, json};

use crate::commands::{Client, Reply, server, wait_until};
use crate::common;

async fn check_out_carts(c: &Client, from: usize, to: usize) {
    for n in from..to {
        let key = n.to_string();
        for cmd in [
            json!({"type": "create"}),
            json!({"type": "add_item", "sku": "s", "name": "S", "price": 3, "quantity": 1}),
            json!({"type": "check_out"}),
        ] {
            let r = c.command("cart", &key, cmd).await;
            assert_eq!(r.status, 200, "{r:?}");
        }
    }
}

/// The subjects of stored `order` events, in ledger order.
fn orders(s: &Server) -> Vec<String> {
    let selector = loom_ledger::Selector {
        entity: Some("order".into()),
        ..Default::default()
    }
    .compile()
    .unwrap();
    s.state
        .ledger()
        .read(&selector, loom_ledger::ReadOptions::after(0, usize::MAX))
        .unwrap()
        .into_iter()
        .map(|e| {
            assert_eq!(e.event.ty, "was_placed");
            e.event.subject
        })
        .collect()
}

fn delivered(sink: &loom_testkit::Sink) -> Vec<String> {
    sink.received()
        .iter()
        .map(|b| {
            let v: Value = serde_json::from_slice(b).unwrap();
            assert_eq!(v["specversion"], "1.0");
            assert_eq!(v["type"], "order.placed");
            v["data"]["order"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn put_checkout(c: &Client, sink: &loom_testkit::Sink) -> Reply {
    let id = c.upload("checkout").await;
    c.put(
        "/v1/reactors/checkout",
        json!({
            "module": id,
            "selector": {"entity": "cart", "types": ["was_checked_out"]},
            "sink": sink.url,
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checkout_reactor_places_orders_and_notifies_the_sink() {
    let s = server(Config::default()).await;
    let c = Client::new(&s);
    c.bind("cart", "cart").await;
    let sink = loom_testkit::Sink::start();
    check_out_carts(&c, 0, 2).await;
    let r = put_checkout(&c, &sink).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["name"], "checkout");
    check_out_carts(&c, 2, 4).await;
    wait_until("four deliveries", || async { delivered(&sink).len() >= 4 }).await;
    let expected: Vec<String> = (0..4).map(|n| format!("order/{n}")).collect();
    assert_eq!(delivered(&sink), expected);
    assert_eq!(orders(&s), expected);
    wait_until("the status to settle", || async {
        let st = c.get("/v1/reactors/checkout").await.body;
        st["lag"] == 0 && st["status"] == "running"
    })
    .await;
    let st = c.get("/v1/reactors/checkout").await.body;
    assert_eq!(
        (&st["reacted"], &st["appended"], &st["delivered"]),
        (&json!(4), &json!(4), &json!(4)),
        "{st}"
    );
    let list = c.get("/v1/reactors").await.body;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // The same definition again: 200, nothing reacted twice.
    let r = put_checkout(&c, &sink).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Pause: new checkouts wait; resume: they are delivered.
    let r = c.post("/v1/reactors/checkout/pause").await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (200, &json!("paused")),
        "{r:?}"
    );
    check_out_carts(&c, 4, 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(delivered(&sink).len(), 4, "a paused reactor does nothing");
    let r = c.post("/v1/reactors/checkout/resume").await;
    assert_eq!(r.status, 200, "{r:?}");
    wait_until("the fifth delivery", || async {
        delivered(&sink).len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let expected: Vec<String> = (0..5).map(|n| format!("order/{n}")).collect();
    assert_eq!(delivered(&sink), expected);
    assert_eq!(orders(&s), expected, "nothing appended twice");
    // Delete.
    let r = c
        .send(reqwest::Method::DELETE, "/v1/reactors/checkout", None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    c.get("/v1/reactors/checkout").await.problem(404);
    c.post("/v1/reactors/checkout/resume").await.problem(404);
    // Bad definitions are problems.
    c.put("/v1/reactors/bad", json!({"module": "sha256:00"}))
        .await
        .problem(422);
    c.put("/v1/reactors/bad", json!({"nope": 1}))
        .await
        .problem(400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_down_then_up_gets_everything_in_order() {
    let s = server(Config::default()).await;
    let c = Client::new(&s);
    c.bind("cart", "cart").await;
    let sink = loom_testkit::Sink::start();
    sink.set_down(true);
    let r = put_checkout(&c, &sink).await;
    assert_eq!(r.status, 201, "{r:?}");
    check_out_carts(&c, 0, 3).await;
    wait_until("the reactor to fail", || async {
        c.get("/v1/reactors/checkout").await.body["status"] == "failed"
    })
    .await;
    let st = c.get("/v1/reactors/checkout").await.body;
    let message = st["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("503"), "a clear message: {message}");
    assert!(sink.refused() >= 3, "retried with backoff");
    assert!(delivered(&sink).is_empty());
    // The sink comes back; resume delivers everything, in order, once each.
    sink.set_down(false);
    let r = c.post("/v1/reactors/checkout/resume").await;
    assert_eq!(r.status, 200, "{r:?}");
    wait_until("three deliveries", || async { delivered(&sink).len() >= 3 }).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(delivered(&sink), ["order/0", "order/1", "order/2"]);
    assert_eq!(
        orders(&s),
        ["order/0", "order/1", "order/2"],
        "appends are not repeated"
    );
    wait_until("running again", || async {
        c.get("/v1/reactors/checkout").await.body["status"] == "running"
    })
    .await;
    s.stop().await;
}
