//! Fault suite: `kill -9` of the real `loom serve` under concurrent HTTP load, many times on
//! the same data directory. After every kill: every event that got a 201 is stored at the
//! position it was acknowledged with, positions are gapless, every batch is whole, and the
//! projection (the real cart module) catches up again; at the end its live state equals a
//! clean fold of the ledger.
//!
//! `LOOM_KILL_ROUNDS` sets the number of kills (default 5 here; `scripts/kill9.sh` runs 25).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loom_engine::{At, Engine, EngineConfig};
use loom_ledger::{Ledger, LedgerOptions, ReadOptions};
use serde_json::{Value, json};

const LOOM: &str = env!("CARGO_BIN_EXE_loom");

fn start(data: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(LOOM)
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("LOOM_TOKENS")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start loom serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loom serve did not print its address");
        };
        if let Some(rest) = line.strip_prefix("loom listening on ") {
            return (child, rest.split_whitespace().next().unwrap().to_owned());
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn json_of(resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.into_body().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn put(a: &ureq::Agent, url: &str, body: Value) -> (u16, Value) {
    json_of(
        a.put(url)
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap(),
    )
}

/// One acknowledged event: id → position.
type Acked = Arc<Mutex<HashMap<String, u64>>>;

/// Clients posting batches of 1-3 cart events until stopped; records what got a 201.
fn load(
    url: &str,
    round: usize,
    clients: usize,
    acked: &Acked,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let url = format!("{url}/v1/events");
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let a = agent();
                let key = format!("r{round}c{c}");
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let n = 1 + i % 3;
                    let batch: Vec<Value> = (0..n)
                        .map(|b| {
                            let (ty, data) = if i == 0 && b == 0 {
                                ("was_created", json!({}))
                            } else {
                                (
                                    "had_item_added",
                                    json!({"sku": format!("s{}", (i + b) % 4), "name": "x", "price": 3, "quantity": 1}),
                                )
                            };
                            json!({"specversion": "1.0", "id": format!("{key}-{i}-{b}"), "source": "kill9",
                                   "type": ty, "subject": format!("cart/{key}"), "data": data})
                        })
                        .collect();
                    let sent = a
                        .post(&url)
                        .header("content-type", "application/cloudevents-batch+json")
                        .send(Value::Array(batch).to_string());
                    // A killed server: connection errors end this client.
                    let Ok(resp) = sent else { return };
                    let (status, body) = json_of(resp);
                    if status == 201 {
                        let mut acked = acked.lock().unwrap();
                        for e in body["events"].as_array().unwrap() {
                            acked.insert(
                                e["id"].as_str().unwrap().to_owned(),
                                e["position"].as_u64().unwrap(),
                            );
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

fn wait_caught_up(a: &ureq::Agent, url: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = json_of(
            a.get(&format!("{url}/v1/projections/carts"))
                .call()
                .unwrap(),
        );
        assert_eq!(status, 200, "{body}");
        if body["lag"] == 0 && body["status"] == "running" {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "projection stuck: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_under_http_load_loses_no_acknowledged_event() {
    let rounds: usize = std::env::var("LOOM_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acked: Acked = Arc::default();
    // Per round where the file alone was behind: events only the log had.
    let mut from_log = Vec::new();
    let a = agent();
    let wasm = loom_testkit::example_wasm("cart");
    for round in 0..rounds {
        let (mut child, url) = start(&data);
        if round == 0 {
            assert_eq!(
                put(
                    &a,
                    &format!("{url}/v1/entities/cart"),
                    json!({"open": true})
                )
                .0,
                201
            );
            let (status, module) = json_of(
                a.post(&format!("{url}/v1/modules"))
                    .header("content-type", "application/wasm")
                    .send(&wasm[..])
                    .unwrap(),
            );
            assert!(status == 201 || status == 200, "{module}");
            let spec = json!({"module": module["id"], "selector": {"entity": "cart"}, "partition": "stream"});
            assert_eq!(put(&a, &format!("{url}/v1/projections/carts"), spec).0, 201);
        } else {
            // The projection restarts from its checkpoint and reaches the head again.
            wait_caught_up(&a, &url);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(&url, round, 16, &acked, &stop);
        std::thread::sleep(Duration::from_millis(250 + 97 * (round as u64 % 5)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }

        // How far the database file alone goes (what the write-ahead log must make up for).
        let bare = tempfile::tempdir().unwrap();
        std::fs::copy(data.join("ledger.redb"), bare.path().join("ledger.redb")).unwrap();
        let file_head = Ledger::open(bare.path(), LedgerOptions::default())
            .unwrap()
            .head();

        // Check the ledger directly (the server is dead, so the file is free).
        let ledger = Ledger::open(&data, LedgerOptions::default()).unwrap();
        if file_head < ledger.head() {
            from_log.push(ledger.head() - file_head);
        }
        let all = ledger.read_all(ReadOptions::after(0, usize::MAX)).unwrap();
        assert_eq!(
            all.len() as u64,
            ledger.head(),
            "round {round}: gapless positions"
        );
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.position, i as u64 + 1);
        }
        let stored: HashMap<&str, u64> = all
            .iter()
            .map(|e| (e.event.id.as_str(), e.position))
            .collect();
        let acked_now = acked.lock().unwrap().clone();
        assert!(!acked_now.is_empty());
        for (id, position) in &acked_now {
            assert_eq!(
                stored.get(id.as_str()),
                Some(position),
                "round {round}: acknowledged {id} lost"
            );
        }
        // Batches are whole: a batch's last event is there iff its first is.
        for e in &all {
            if let Some(prefix) = e.event.id.strip_suffix("-0") {
                let i: usize = prefix.rsplit('-').next().unwrap().parse().unwrap();
                for b in 1..1 + i % 3 {
                    assert!(
                        stored.contains_key(format!("{prefix}-{b}").as_str()),
                        "round {round}: partial batch {prefix}"
                    );
                }
            }
        }
    }
    eprintln!(
        "{rounds} kills, {} acknowledged events, none lost; the write-ahead log supplied \
         events in {} rounds (up to {} events)",
        acked.lock().unwrap().len(),
        from_log.len(),
        from_log.iter().max().unwrap_or(&0)
    );
    assert!(!from_log.is_empty(), "no kill left events only in the log");
    // Finally: the live projection equals a clean fold of the ledger.
    let (mut child, url) = start(&data);
    wait_caught_up(&a, &url);
    child.kill().unwrap();
    child.wait().unwrap();
    let ledger = Arc::new(Ledger::open(&data, LedgerOptions::default()).unwrap());
    let engine = Engine::open(ledger.clone(), EngineConfig::default()).unwrap();
    engine
        .projections()
        .wait_for("carts", ledger.head(), Duration::from_secs(60))
        .unwrap();
    let keys = engine
        .projections()
        .keys("carts", None, usize::MAX)
        .unwrap();
    assert!(keys.len() >= 16, "{keys:?}");
    let head = ledger.head();
    for key in &keys {
        let live = engine
            .projections()
            .state("carts", Some(key), At::Now)
            .unwrap();
        let fold = engine
            .projections()
            .state("carts", Some(key), At::Position(head))
            .unwrap();
        assert_eq!(
            live.state, fold.state,
            "{key}: live state differs from a clean fold"
        );
        assert_eq!(
            live.events_applied, fold.events_applied,
            "{key}: events applied twice or missed"
        );
    }
    let st = engine.projections().status("carts").unwrap();
    assert_eq!(
        st.active.events_applied, head,
        "every event folded exactly once"
    );
    engine.shutdown();
}
