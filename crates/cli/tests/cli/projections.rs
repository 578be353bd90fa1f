//! The real `loom` binary with the real cart module: modules and projections through the CLI,
//! and a `kill -9` of the server in the middle of a projection's catch-up, after which the
//! restarted server's state equals a clean fold with no event applied twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

use common::{Serve, ok, wasm};

/// The cart reducer, written again: the state a clean fold of `events` gives.
fn fold_cart<'a>(events: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut items: Vec<Value> = Vec::new();
    let mut status = "missing";
    for e in events {
        let d = &e["data"];
        match e["type"].as_str().unwrap() {
            "was_created" => status = "active",
            "had_item_added" => match items.iter_mut().find(|i| i["sku"] == d["sku"]) {
                Some(i) => {
                    let q = i["quantity"].as_i64().unwrap() + d["quantity"].as_i64().unwrap();
                    i["quantity"] = json!(q);
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

const CARTS: usize = 200;
const CART_EVENTS: usize = 20_000;

/// 20 000 cart events over 200 carts (created, items added, some removed, some checked
/// out), with events of another entity in between.
fn history() -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..CART_EVENTS {
        let c = i % CARTS;
        let round = i / CARTS;
        let (ty, data) = if round == 0 {
            ("was_created", json!({}))
        } else if round == 99 && c.is_multiple_of(4) {
            ("was_checked_out", json!({}))
        } else if round % 10 == 5 {
            (
                "had_item_removed",
                json!({"sku": format!("s{}", (round + c) % 7)}),
            )
        } else {
            let sku = format!("s{}", (round + c) % 7);
            (
                "had_item_added",
                json!({"sku": sku, "name": format!("thing {sku}"), "price": 100 + (round % 13) as i64, "quantity": 1 + (c % 3) as i64}),
            )
        };
        out.push(
            json!({"specversion": "1.0", "id": format!("e{i}"), "source": "cli-kill-test",
            "type": ty, "subject": format!("cart/{c}"), "data": data}),
        );
        if i.is_multiple_of(40) {
            out.push(
                json!({"specversion": "1.0", "id": format!("l{i}"), "source": "cli-kill-test",
                "type": "noted", "subject": format!("log/{i}"), "data": {"i": i}}),
            );
        }
    }
    out
}

fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, value.to_string()).unwrap();
    file
}

#[test]
fn kill_9_during_catch_up_then_restart_gives_a_clean_fold_with_nothing_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Small projection batches: catch-up takes many transactions, so the kill lands mid-way.
    let server = Serve::start(&data, &["--projection-batch", "20"]);

    let open = write_json(dir.path(), "open.json", &json!({"open": true}));
    ok(&server.loom(&["entities", "put", "cart", open.to_str().unwrap()]));
    ok(&server.loom(&["entities", "put", "log", open.to_str().unwrap()]));
    let module = server.json(&["modules", "push", wasm("cart").to_str().unwrap()]);
    let id = module["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sha256:"));
    let events = history();
    let mut ndjson = String::new();
    for e in &events {
        ndjson.push_str(&e.to_string());
        ndjson.push('\n');
    }
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, ndjson).unwrap();
    let out = ok(&server.loom(&["append", file.to_str().unwrap(), "--batch-size", "2000"]));
    assert!(
        out.contains(&format!("appended {} events", events.len())),
        "{out}"
    );
    let head = events.len() as u64;

    let st = server.json(&[
        "projections",
        "put",
        "carts",
        "--module",
        &id,
        "--entity",
        "cart",
    ]);
    assert_eq!(st["name"], "carts");
    // Kill -9 once the projection has folded a good part, but not all, of the history.
    let started = Instant::now();
    let seen = loop {
        let st = server.json(&["projections", "get", "carts"]);
        let position = st["position"].as_u64().unwrap();
        if position > head / 5 {
            break position;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "catch-up never started: {st}"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    server.kill();
    assert!(
        seen < head,
        "the server was killed during catch-up (position {seen} of {head})"
    );

    // Restart: the projection resumes from its last committed checkpoint.
    let server = Serve::start(&data, &[]);
    let st = server.json(&["projections", "get", "carts"]);
    let restarted_at = st["position"].as_u64().unwrap();
    assert!(restarted_at <= head);
    eprintln!(
        "killed at position {seen} of {head} after {:?}; restarted from {restarted_at}",
        started.elapsed()
    );
    for c in [0usize, 1, 7, 42, 99, 123, 199] {
        let subject = format!("cart/{c}");
        let mine: Vec<&Value> = events.iter().filter(|e| e["subject"] == subject).collect();
        let v = server.json(&[
            "projections",
            "state",
            "carts",
            "cart",
            &c.to_string(),
            "--min-position",
            &head.to_string(),
            "--timeout-ms",
            "9000",
        ]);
        assert_eq!(v["state"], fold_cart(mine.iter().copied()), "{subject}");
        assert_eq!(
            v["events_applied"],
            mine.len(),
            "{subject}: every event applied exactly once"
        );
        assert!(v["position"].as_u64().unwrap() >= head);
    }
    let st = server.json(&["projections", "get", "carts"]);
    assert_eq!(st["status"], "running");
    assert_eq!(
        st["events_applied"], CART_EVENTS,
        "the projection applied exactly the matching events, none twice: {st}"
    );
    assert_eq!(st["keys"], CARTS);
    let keys = server.json(&["projections", "keys", "carts"]);
    assert_eq!(keys.as_array().unwrap().len(), CARTS);
    // The query export through the CLI.
    let total = server.json(&["projections", "query", "carts", "cart", "7"]);
    let expected = fold_cart(events.iter().filter(|e| e["subject"] == "cart/7"));
    let sum: i64 = expected["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["price"].as_i64().unwrap() * i["quantity"].as_i64().unwrap())
        .sum();
    assert_eq!(total["total"], sum);
    server.stop();
}

#[test]
fn modules_and_projections_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &[]);
    let open = write_json(dir.path(), "open.json", &json!({"open": true}));
    ok(&server.loom(&["entities", "put", "account", open.to_str().unwrap()]));
    let events: Vec<Value> = [
        ("a", "was_opened", json!({"owner": "amal"})),
        ("a", "was_credited", json!({"amount": 700})),
        ("b", "was_opened", json!({"owner": "bo"})),
        ("b", "was_credited", json!({"amount": 300})),
        ("a", "was_debited", json!({"amount": 500})),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (k, ty, d))| {
        json!({"specversion": "1.0", "id": format!("b{i}"), "source": "cli", "type": ty,
               "subject": format!("account/{k}"), "data": d})
    })
    .collect();
    let file = write_json(dir.path(), "bank.json", &Value::from(events));
    ok(&server.loom(&["append", file.to_str().unwrap()]));

    // Push and use in one go, waiting until caught up.
    let out = ok(&server.loom(&[
        "projections",
        "put",
        "stats",
        "--wasm",
        wasm("bank_stats").to_str().unwrap(),
        "--entity",
        "account",
        "--partition",
        "single",
        "--wait",
    ]));
    assert!(
        out.starts_with("created: stats  running  position 5/5"),
        "{out}"
    );
    let v = server.json(&["projections", "state", "stats"]);
    assert_eq!(v["state"]["total_deposits"], 1000);
    assert_eq!(v["state"]["largest_balance"], 300);
    let v = server.json(&["projections", "state", "stats", "--at-position", "2"]);
    assert_eq!(v["state"]["total_deposits"], 700);
    assert_eq!(v["state"]["largest_balance"], 700);
    assert_eq!(v["position"], 2);
    let top = server.json(&["projections", "query", "stats", "--params", r#"{"n":1}"#]);
    assert_eq!(top, json!([["b", 300]]));
    let out = ok(&server.loom(&["projections", "state", "stats"]));
    assert!(out.contains("stats at position 5: 5 events"), "{out}");
    assert!(out.contains("\"total_deposits\": 1000"), "{out}");

    // Modules: listed, and deletion refused while used, with the server's reason.
    let modules = server.json(&["modules", "list"]);
    let id = modules[0]["id"].as_str().unwrap().to_owned();
    let out = ok(&server.loom(&["modules", "get", &id]));
    assert!(out.contains("exports evolve, query"), "{out}");
    let refused = server.loom(&["modules", "delete", &id]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("409") && err.contains("projection stats"),
        "{err}"
    );

    // Pause, resume, rebuild with --wait, list, delete.
    let out = ok(&server.loom(&["projections", "pause", "stats"]));
    assert!(out.starts_with("paused: stats  paused"), "{out}");
    let out = ok(&server.loom(&["projections", "resume", "stats", "--wait"]));
    assert!(out.contains("running"), "{out}");
    let st = server.json(&["projections", "rebuild", "stats", "--wait"]);
    assert_eq!(
        (st["generation"].as_u64(), st["status"].as_str()),
        (Some(2), Some("running"))
    );
    assert_eq!(st["events_applied"], 5);
    let out = ok(&server.loom(&["projections", "list"]));
    assert!(
        out.contains("stats  running  position 5/5 (lag 0)"),
        "{out}"
    );
    ok(&server.loom(&["projections", "delete", "stats"]));
    ok(&server.loom(&["modules", "delete", &id]));
    assert_eq!(server.json(&["modules", "list"]), json!([]));
    let missing = server.loom(&["projections", "get", "stats"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    server.stop();
}
