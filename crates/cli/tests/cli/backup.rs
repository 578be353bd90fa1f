//! `loom backup`, `loom restore`, `loom verify` against a real server: a backup taken while
//! the server runs restores into a directory that a new server opens with the same events,
//! modules, definitions and projection states; bad input changes nothing.

use serde_json::json;

use crate::common::{Serve, ok, wasm};

fn loom(args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::common::LOOM)
        .args(args)
        .output()
        .unwrap()
}

fn failed(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_backup_restores_into_a_server_with_the_same_history_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &[]);
    let open = dir.path().join("open.json");
    std::fs::write(&open, json!({"open": true}).to_string()).unwrap();
    ok(&server.loom(&["entities", "put", "cart", open.to_str().unwrap()]));
    let module = server.json(&["modules", "push", wasm("cart").to_str().unwrap()]);
    let id = module["id"].as_str().unwrap().to_owned();
    server.json(&[
        "projections",
        "put",
        "carts",
        "--module",
        &id,
        "--entity",
        "cart",
    ]);
    let mut ndjson = String::new();
    for i in 0..300 {
        let (ty, data) = if i < 30 {
            ("was_created", json!({}))
        } else {
            (
                "had_item_added",
                json!({"sku": format!("s{i}"), "name": "S", "price": i, "quantity": 1}),
            )
        };
        let e = json!({"specversion": "1.0", "id": format!("e{i}"), "source": "test",
            "type": ty, "subject": format!("cart/{}", i % 30), "data": data});
        ndjson.push_str(&e.to_string());
        ndjson.push('\n');
    }
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, ndjson).unwrap();
    ok(&server.loom(&["append", events.to_str().unwrap()]));
    let state = |s: &Serve| {
        s.json(&[
            "projections",
            "state",
            "carts",
            "cart",
            "7",
            "--min-position",
            "300",
            "--timeout-ms",
            "9000",
        ])
    };
    let before = state(&server);

    let file = dir.path().join("backup.redb");
    let out = ok(&server.loom(&["backup", "--to", file.to_str().unwrap()]));
    assert!(out.starts_with("backup of positions 1..=300: "), "{out}");
    let again = failed(&server.loom(&["backup", "--to", file.to_str().unwrap()]));
    assert!(again.contains("exists already"), "{again}");

    let restored = dir.path().join("restored");
    let out = ok(&loom(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--data",
        restored.to_str().unwrap(),
    ]));
    assert!(out.starts_with("restored 300 events (30 streams)"), "{out}");
    let into_full = failed(&loom(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--data",
        restored.to_str().unwrap(),
    ]));
    assert!(into_full.contains("is not empty"), "{into_full}");
    let out = ok(&loom(&["verify", "--data", restored.to_str().unwrap()]));
    assert_eq!(out.trim(), "ok: 300 events, 30 streams, 1 entities");

    // Not a backup: refused, and nothing is left where it would have gone.
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, b"not a database").unwrap();
    let elsewhere = dir.path().join("elsewhere");
    let err = failed(&loom(&[
        "restore",
        "--from",
        junk.to_str().unwrap(),
        "--data",
        elsewhere.to_str().unwrap(),
    ]));
    assert!(err.contains("is not a usable backup"), "{err}");
    assert!(!elsewhere.exists());

    // A server on the restored directory has it all.
    let copy = Serve::start(&restored, &[]);
    assert_eq!(state(&copy), before);
    let modules = copy.json(&["modules", "list"]);
    assert_eq!(modules[0]["id"], id.as_str());
    let tail = |s: &Serve| ok(&s.loom(&["events", "--after", "295", "--json"]));
    assert_eq!(tail(&copy), tail(&server));
    // It goes on from there, and a retry of a backed-up event is a duplicate.
    let one = dir.path().join("one.json");
    std::fs::write(
        &one,
        json!({"specversion": "1.0", "id": "e3", "source": "test",
        "type": "was_created", "subject": "cart/3", "data": {}})
        .to_string(),
    )
    .unwrap();
    let out = ok(&copy.loom(&["append", one.to_str().unwrap()]));
    assert!(out.contains("stored before with the same content"), "{out}");
    let new = json!({"specversion": "1.0", "id": "new", "source": "test",
        "type": "was_created", "subject": "cart/new", "data": {}});
    std::fs::write(&one, new.to_string()).unwrap();
    let out = ok(&copy.loom(&["append", one.to_str().unwrap()]));
    assert!(out.contains("at position 301"), "{out}");
    drop(copy);
    drop(server);
    let out = ok(&loom(&[
        "verify",
        "--data",
        dir.path().join("data").to_str().unwrap(),
    ]));
    assert!(out.starts_with("ok: 300 events"), "{out}");
}
