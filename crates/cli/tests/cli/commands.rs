//! The real `loom` binary with the real bank, cart and checkout modules: `loom deciders`,
//! `loom command` (with an idempotency key and a domain rejection) and `loom reactors`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;

use common::{Serve, ok, wasm};

fn entity_file(example: &str) -> String {
    loom_testkit::example_entity_path(example)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn deciders_commands_and_reactors_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &[]);
    for (entity, example) in loom_testkit::EXAMPLE_ENTITIES {
        ok(&server.loom(&["entities", "put", entity, &entity_file(example)]));
    }
    let bank = wasm("bank");
    let out = ok(&server.loom(&[
        "deciders",
        "put",
        "account",
        "--wasm",
        bank.to_str().unwrap(),
    ]));
    assert!(out.starts_with("bound: account  module sha256:"), "{out}");
    let list = server.json(&["deciders", "list"]);
    assert_eq!(list[0]["entity"], "account");
    let id = list[0]["module"].as_str().unwrap().to_owned();
    let out = ok(&server.loom(&["deciders", "put", "account", "--module", &id]));
    assert!(out.starts_with("rebound: account"), "{out}");
    assert_eq!(
        server.json(&["deciders", "get", "account"])["module"],
        id.as_str()
    );

    let out = ok(&server.loom(&[
        "command",
        "account",
        "eu/7",
        r#"{"type":"open","owner":"amal"}"#,
    ]));
    assert!(
        out.starts_with("account/eu/7 at revision 1: 1 event\n  was_opened "),
        "{out}"
    );
    let deposit = [
        "command",
        "account",
        "eu/7",
        r#"{"type":"deposit","amount":40}"#,
        "--idempotency-key",
        "d1",
    ];
    let first = server.json(&deposit);
    assert_eq!(first["revision"], 2);
    assert_eq!(first["duplicate"], false);
    let again = server.json(&deposit);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["events"], first["events"]);
    let out = ok(&server.loom(&deposit));
    assert!(out.contains("(a repeat: nothing written)"), "{out}");
    // A domain rejection fails with the module's message.
    let out = server.loom(&[
        "command",
        "account",
        "eu/7",
        r#"{"type":"withdraw","amount":41}"#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("422") && err.contains("insufficient"), "{err}");
    let out = server.loom(&["command", "account", "eu/7", "{nope"]);
    assert!(!out.status.success());
    let text = ok(&server.loom(&["stream", "account", "eu/7", "--json"]));
    assert_eq!(text.lines().count(), 2, "{text}");
    assert_eq!(text.matches("was_credited").count(), 1, "{text}");
    assert!(!text.contains("was_debited"), "{text}");

    // Reactors.
    let cart = wasm("cart");
    ok(&server.loom(&["deciders", "put", "cart", "--wasm", cart.to_str().unwrap()]));
    let sink = loom_testkit::Sink::start();
    let checkout = wasm("checkout");
    let out = ok(&server.loom(&[
        "reactors",
        "put",
        "checkout",
        "--wasm",
        checkout.to_str().unwrap(),
        "--selector",
        r#"{"entity":"cart","types":["was_checked_out"]}"#,
        "--sink",
        &sink.url,
    ]));
    assert!(out.starts_with("created: checkout  "), "{out}");
    assert!(out.contains("sink http://127.0.0.1:"), "{out}");
    for cmd in [
        r#"{"type":"create"}"#,
        r#"{"type":"add_item","sku":"s","name":"S","price":2,"quantity":1}"#,
        r#"{"type":"check_out"}"#,
    ] {
        ok(&server.loom(&["command", "cart", "c1", cmd]));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.received().is_empty() {
        assert!(Instant::now() < deadline, "the sink got the order");
        std::thread::sleep(Duration::from_millis(20));
    }
    let delivered: Value = serde_json::from_slice(&sink.received()[0]).unwrap();
    assert_eq!(delivered["data"]["order"], "order/c1");
    let st = server.json(&["reactors", "get", "checkout"]);
    assert_eq!(st["spec"]["sink"], sink.url.as_str());
    assert_eq!(
        server.json(&["reactors", "list"]).as_array().unwrap().len(),
        1
    );
    let out = ok(&server.loom(&["reactors", "pause", "checkout"]));
    assert!(out.starts_with("paused: checkout  paused"), "{out}");
    let out = ok(&server.loom(&["reactors", "resume", "checkout"]));
    assert!(out.starts_with("resumed: checkout"), "{out}");
    let out = ok(&server.loom(&["reactors", "delete", "checkout"]));
    assert!(out.contains("deleted reactor checkout"), "{out}");
    let out = server.loom(&["reactors", "get", "checkout"]);
    assert!(!out.status.success());
    ok(&server.loom(&["deciders", "delete", "account"]));
    let out = server.loom(&[
        "command",
        "account",
        "eu/7",
        r#"{"type":"open","owner":"x"}"#,
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

/// The checkout reactor across a `kill -9` of the server while its sink is down (so a reaction
/// is in flight): after a restart and a resume, every order is appended exactly once and
/// every notification reaches the sink, in order (at-least-once: a repeat is allowed only for
/// the reaction that was in flight).
#[test]
fn the_checkout_reactor_survives_kill_9_without_duplicates_or_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Serve::start(&data, &[]);
    for (entity, example) in [("cart", "cart"), ("order", "checkout")] {
        ok(&server.loom(&["entities", "put", entity, &entity_file(example)]));
    }
    let cart = wasm("cart");
    ok(&server.loom(&["deciders", "put", "cart", "--wasm", cart.to_str().unwrap()]));
    let sink = loom_testkit::Sink::start();
    sink.set_down(true);
    let checkout = wasm("checkout");
    ok(&server.loom(&[
        "reactors",
        "put",
        "checkout",
        "--wasm",
        checkout.to_str().unwrap(),
        "--selector",
        r#"{"entity":"cart","types":["was_checked_out"]}"#,
        "--sink",
        &sink.url,
    ]));
    let carts = 12;
    for c in 0..carts {
        let key = format!("k{c}");
        for cmd in [
            r#"{"type":"create"}"#,
            r#"{"type":"add_item","sku":"s","name":"S","price":2,"quantity":1}"#,
            r#"{"type":"check_out"}"#,
        ] {
            ok(&server.loom(&["command", "cart", &key, cmd]));
        }
    }
    // The reactor is retrying its first delivery against the 503 sink: kill it there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.refused() == 0 {
        assert!(Instant::now() < deadline, "the reactor tried the sink");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(server); // SIGKILL
    sink.set_down(false);
    let server = Serve::start(&data, &[]);
    let st = server.json(&["reactors", "get", "checkout"]);
    if st["status"] != "running" {
        ok(&server.loom(&["reactors", "resume", "checkout"]));
    }
    let expected: Vec<String> = (0..carts).map(|c| format!("order/k{c}")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let mut got: Vec<String> = sink
            .received()
            .iter()
            .map(|b| {
                let v: Value = serde_json::from_slice(b).unwrap();
                v["data"]["order"].as_str().unwrap().to_owned()
            })
            .collect();
        got.dedup(); // a repeat of the in-flight reaction is allowed, adjacent only
        if got.len() >= carts {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "every order delivered after the restart: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(delivered, expected, "in order, none missing");
    // Every order appended exactly once.
    let events = ok(&server.loom(&["events", "--json"]));
    let mut orders = Vec::new();
    for line in events.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        for e in v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]) {
            if e["type"] == "was_placed" {
                orders.push(e["subject"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(orders, expected, "no order appended twice or missed");
}
