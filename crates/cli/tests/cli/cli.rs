//! Runs the real `loom` binary: serve, then the client subcommands against it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

use common::{LOOM, Serve, ok};

fn event(id: usize, key: &str, ty: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": format!("e{id}"), "source": "cli-test", "type": ty,
           "subject": format!("cart/{key}"), "data": data})
}

#[test]
fn serve_append_events_stream_follow() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &[]);

    let spec = dir.path().join("cart.json");
    std::fs::write(&spec, json!({"events": {"was_created": {}, "had_item_added": {"schema": {"type": "object", "required": ["sku"]}}}}).to_string()).unwrap();
    let out = ok(&server.loom_with(&["entities", "put", "cart", spec.to_str().unwrap()], None));
    assert!(out.contains("registered entity cart"), "{out}");
    let out = ok(&server.loom_with(&["entities", "get", "--json"], None));
    let all: Value = serde_json::from_str(&out).unwrap();
    assert!(all["cart"]["events"]["had_item_added"].is_object());

    // NDJSON on stdin, in several batches.
    let mut ndjson = String::new();
    for i in 1..=2500 {
        let e = if i == 1 {
            event(i, "1", "was_created", json!({}))
        } else {
            event(
                i,
                &(i % 5).to_string(),
                "had_item_added",
                json!({"sku": format!("s{i}"), "n": 1.50}),
            )
        };
        ndjson.push_str(&e.to_string().replace("\"n\":1.5", "\"n\":1.50"));
        ndjson.push('\n');
    }
    let out = ok(&server.loom_with(&["append", "--batch-size", "1000", "-"], Some(&ndjson)));
    assert!(
        out.contains("appended 2500 events at positions 1..2500"),
        "{out}"
    );

    // A JSON array from a file, with --json.
    let file = dir.path().join("more.json");
    std::fs::write(
        &file,
        json!([event(3000, "x/y", "was_created", json!({}))]).to_string(),
    )
    .unwrap();
    let out = ok(&server.loom_with(&["append", file.to_str().unwrap(), "--json"], None));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["last_position"], 2501);

    // Read everything back (paging through Link headers), exactly.
    let out = ok(&server.loom_with(&["events", "--json"], None));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2501);
    assert_eq!(lines[1]["data"]["sku"], "s2");
    assert!(out.contains("\"n\":1.50"), "numbers come back as sent");
    let out = ok(&server.loom_with(
        &[
            "events",
            "--after",
            "10",
            "--limit",
            "5",
            "--type",
            "had_item_added",
        ],
        None,
    ));
    assert_eq!(out.lines().count(), 5);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .trim_start()
            .starts_with("11  cart/"),
        "{out}"
    );

    // One stream, key with a slash.
    let out = ok(&server.loom_with(&["stream", "cart", "x/y", "--json"], None));
    let e: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (e["subject"].as_str(), e["revision"].as_u64()),
        (Some("cart/x/y"), Some(1))
    );

    // Follow: history then a live event.
    let mut follow = Command::new(LOOM)
        .args([
            "events",
            "--follow",
            "--after",
            "2499",
            "--limit",
            "3",
            "--json",
            "--url",
            &server.url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    ok(&server.loom_with(
        &["append"],
        Some(&event(4000, "9", "was_created", json!({})).to_string()),
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while follow.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "follow ends after --limit events"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ok(&follow.wait_with_output().unwrap());
    let positions: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, vec![2500, 2501, 2502]);

    // Errors: the problem's detail, a non-zero exit, no panic.
    let bad = server.loom_with(
        &["append"],
        Some(&event(5000, "1", "had_item_added", json!({})).to_string()),
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("422") && err.contains("schema") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let bad = server.loom_with(&["append"], Some("{not json"));
    assert!(!bad.status.success());
    let bad = server.loom_with(&["stream", "cart", "missing"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("404"));

    server.stop();
}

#[test]
fn serve_takes_cache_and_log_sizes_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    // A 1 MiB cache under ~3 MiB of events: reads go back to the file, and stay exact. A
    // 256 KiB log checkpoint: the log starts over about ten times, its reserve is 1 MiB. The
    // disk kept awake between syncs: the block it reads is there.
    let server = Serve::start(
        &dir.path().join("data"),
        &[
            "--cache",
            "1m",
            "--wal-checkpoint",
            "256k",
            "--keep-disk-awake",
            "on",
        ],
    );
    let spec = dir.path().join("cart.json");
    std::fs::write(&spec, json!({"open": true}).to_string()).unwrap();
    ok(&server.loom_with(&["entities", "put", "cart", spec.to_str().unwrap()], None));
    let memo = "m".repeat(1000);
    let ndjson: String = (1..=3000)
        .map(|i| {
            let e = event(
                i,
                &(i % 7).to_string(),
                "was_noted",
                json!({"i": i, "memo": memo}),
            );
            format!("{e}\n")
        })
        .collect();
    let out = ok(&server.loom_with(&["append", "--batch-size", "500", "-"], Some(&ndjson)));
    assert!(out.contains("appended 3000 events"), "{out}");
    let out = ok(&server.loom_with(&["events", "--json"], None));
    let read: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["data"]["i"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(read, (1..=3000).collect::<Vec<u64>>());
    server.stop();
    let size = |name: &str| {
        std::fs::metadata(dir.path().join("data").join(name))
            .unwrap()
            .len()
    };
    assert_eq!(size("ledger.reserve"), 1 << 20);
    assert_eq!(size("ledger.awake"), 4096);
    // At most one checkpoint interval plus one group (a 500-event batch of ~1 KiB events,
    // ~0.55 MiB); without checkpoints the log would hold all ~3.3 MB.
    assert!(size("ledger.wal") < 2 << 20, "{}", size("ledger.wal"));

    // Each refused with the flag named and why, before anything starts.
    for (flag, value, why) in [
        ("--cache", "lots", "is not a size"),
        ("--wal-checkpoint", "0", "is not a size"),
        ("--projection-batch-bytes", "0", "is not a size"),
        ("--projection-batch", "0", "0 is not in 1.."),
        ("--projection-catch-ups", "0", "0 is not in 1.."),
        ("--keep-disk-awake", "maybe", "is not one of auto, on, off"),
    ] {
        let out = Command::new(LOOM)
            .args(["serve", "--data"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains(why), "{err}");
    }
}

#[test]
fn serve_refuses_public_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(LOOM)
        .args(["serve", "--data"])
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("LOOM_TOKENS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without tokens"),
        "{err}"
    );
}

#[test]
fn tokens_from_flags_protect_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path(), &["--token", "reader:r1", "--token", "admin:a1"]);
    let denied = server.loom_with(&["entities", "get"], None);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));
    ok(&server.loom_with(&["entities", "get", "--token", "r1"], None));
    let forbidden = server.loom_with(
        &["entities", "put", "cart", "-", "--token", "r1"],
        Some("{}"),
    );
    assert!(String::from_utf8_lossy(&forbidden.stderr).contains("403"));
    ok(&server.loom_with(
        &["entities", "put", "cart", "-", "--token", "a1"],
        Some("{}"),
    ));
    server.stop();
}
