//! A real cluster: three `nats-server` processes with JetStream (R3) and three `loom serve`
//! nodes on loopback. Appends go through every node (followers forward them) while the
//! sequencer is killed with SIGKILL again and again; afterwards every event that got a 201
//! is on every node at the position it was acknowledged with, positions are gapless, and
//! there are no duplicates.
//!
//! `LOOM_CLUSTER_ROUNDS` sets the number of kills (default 10).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Serve;
use crate::common::nats::{self, Nats};

const LEASE_MS: &str = "1000";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn get(a: &ureq::Agent, url: &str) -> Option<(u16, Value)> {
    let resp = a.get(url).call().ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().read_to_string().unwrap_or_default();
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

fn start_node(dir: &std::path::Path, nats: &Nats, i: usize) -> Serve {
    Serve::start(
        &dir.join(format!("node{i}")),
        &[
            "--cluster",
            &nats.urls(),
            "--node",
            &format!("loom{i}"),
            "--lease-ms",
            LEASE_MS,
        ],
    )
}

/// The cluster status of a node (`None`: it does not answer).
fn status(a: &ureq::Agent, url: &str) -> Option<Value> {
    get(a, &format!("{url}/v1/cluster")).map(|(_, v)| v)
}

/// Waits until some node is the sequencer; returns its index.
fn sequencer(a: &ureq::Agent, nodes: &[Option<Serve>]) -> usize {
    let started = Instant::now();
    loop {
        for (i, node) in nodes.iter().enumerate() {
            if let Some(node) = node
                && status(a, &node.url).is_some_and(|s| s["role"] == "sequencer")
            {
                return i;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no sequencer after 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every event a node holds, in position order.
fn events(a: &ureq::Agent, url: &str) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let after = all.len();
        let (status, page) = get(a, &format!("{url}/v1/events?after={after}&limit=1000")).unwrap();
        assert_eq!(status, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

type Acked = Arc<Mutex<HashMap<String, u64>>>;

/// Clients appending single events through every node in turn until stopped; records what
/// got a 201, and when.
fn load(
    urls: &Arc<Mutex<Vec<String>>>,
    clients: usize,
    acked: &Acked,
    last_ack: &Arc<Mutex<Instant>>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let (urls, acked, last_ack, stop) =
                (urls.clone(), acked.clone(), last_ack.clone(), stop.clone());
            std::thread::spawn(move || {
                let a = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(3)))
                    .build()
                    .into();
                let a: ureq::Agent = a;
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let url = {
                        let urls = urls.lock().unwrap();
                        urls[(c + i) % urls.len()].clone()
                    };
                    let id = format!("c{c}-{i}");
                    let event = json!({"specversion": "1.0", "id": id, "source": "cluster-test",
                        "type": "was_seen", "subject": format!("thing/c{c}"), "data": {"i": i}});
                    let sent = a
                        .post(&format!("{url}/v1/events"))
                        .header("content-type", "application/cloudevents+json")
                        .send(event.to_string());
                    i += 1;
                    let Ok(resp) = sent else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let status = resp.status().as_u16();
                    let body: Value = serde_json::from_str(
                        &resp.into_body().read_to_string().unwrap_or_default(),
                    )
                    .unwrap_or(Value::Null);
                    match status {
                        201 | 200 => {
                            let position = body["events"][0]["position"]
                                .as_u64()
                                .or_else(|| body["position"].as_u64())
                                .unwrap_or_else(|| panic!("no position in {body}"));
                            acked.lock().unwrap().insert(id, position);
                            *last_ack.lock().unwrap() = Instant::now();
                        }
                        503 => std::thread::sleep(Duration::from_millis(20)),
                        other => panic!("append answered {other}: {body}"),
                    }
                }
            })
        })
        .collect()
}

#[test]
fn appends_through_every_node_survive_repeated_kill_9_of_the_sequencer() {
    if !nats::available() {
        return;
    }
    let rounds: usize = std::env::var("LOOM_CLUSTER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"), 3);
    let mut nodes: Vec<Option<Serve>> = (0..3)
        .map(|i| Some(start_node(dir.path(), &nats, i)))
        .collect();
    let a = agent();
    let first = sequencer(&a, &nodes);
    // Registered on one node, through the log to all.
    let put = a
        .put(&format!(
            "{}/v1/entities/thing",
            nodes[(first + 1) % 3].as_ref().unwrap().url
        ))
        .header("content-type", "application/json")
        .send(json!({"open": true}).to_string())
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);

    let urls = Arc::new(Mutex::new(
        nodes
            .iter()
            .map(|n| n.as_ref().unwrap().url.clone())
            .collect::<Vec<_>>(),
    ));
    let acked: Acked = Arc::default();
    let last_ack = Arc::new(Mutex::new(Instant::now()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&urls, 8, &acked, &last_ack, &stop);
    let mut failovers = Vec::new();
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(400));
        let victim = sequencer(&a, &nodes);
        let before = acked.lock().unwrap().len();
        let killed = Instant::now();
        nodes[victim].take().unwrap().kill();
        // The next acknowledged append after the kill.
        loop {
            let at = *last_ack.lock().unwrap();
            if at > killed && acked.lock().unwrap().len() > before {
                failovers.push(at - killed);
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(20),
                "round {round}: no append acknowledged 20 s after the sequencer was killed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let node = start_node(dir.path(), &nats, victim);
        urls.lock().unwrap()[victim] = node.url.clone();
        nodes[victim] = Some(node);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    failovers.sort();
    eprintln!(
        "{rounds} failovers; time to the next acknowledged append: median {:?}, max {:?}; {} events acknowledged",
        failovers[failovers.len() / 2],
        failovers.last().unwrap(),
        acked.lock().unwrap().len()
    );

    let acked = acked.lock().unwrap().clone();
    let head = *acked.values().max().unwrap();
    let mut reference: Option<Vec<Value>> = None;
    for node in nodes.iter().flatten() {
        let started = Instant::now();
        while status(&a, &node.url)
            .and_then(|s| get(&a, &format!("{}/healthz", node.url)).map(|h| (s, h.1)))
            .is_none_or(|(_, h)| h["head"].as_u64().unwrap_or(0) < head)
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "node {} did not catch up",
                node.url
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let events = events(&a, &node.url);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e["position"].as_u64(),
                Some(i as u64 + 1),
                "positions gapless"
            );
        }
        let mut ids = std::collections::HashSet::new();
        for e in &events {
            assert!(
                ids.insert(e["id"].as_str().unwrap().to_owned()),
                "duplicate {e}"
            );
        }
        for (id, position) in &acked {
            assert_eq!(
                events[*position as usize - 1]["id"].as_str(),
                Some(id.as_str()),
                "acknowledged at {position} on {}",
                node.url
            );
        }
        match &reference {
            None => reference = Some(events),
            Some(r) => assert_eq!(r, &events, "nodes hold the same events"),
        }
    }
}
