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

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub(crate) fn get(a: &ureq::Agent, url: &str) -> Option<(u16, Value)> {
    let resp = a.get(url).call().ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().read_to_string().unwrap_or_default();
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

pub(crate) fn start_node(dir: &std::path::Path, nats: &Nats, i: usize) -> Serve {
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

/// Three NATS servers (R3) and three Loom nodes on them, under `dir`.
pub(crate) fn nats_and_nodes(dir: &std::path::Path) -> (Nats, Vec<Option<Serve>>) {
    let nats = Nats::start(&dir.join("nats"), 3);
    let nodes = (0..3).map(|i| Some(start_node(dir, &nats, i))).collect();
    (nats, nodes)
}

/// The cluster status of a node (`None`: it does not answer).
pub(crate) fn status(a: &ureq::Agent, url: &str) -> Option<Value> {
    get(a, &format!("{url}/v1/cluster")).map(|(_, v)| v)
}

/// Each live node's address and cluster status, for a failing wait's message (each node's
/// recent log follows when the test's `Serve`s are dropped).
pub(crate) fn describe(a: &ureq::Agent, nodes: &[Option<Serve>]) -> String {
    let mut out = String::new();
    for node in nodes.iter().flatten() {
        let status = status(a, &node.url);
        out += &format!("\n-- node {}: {status:?}", node.url);
    }
    out
}

/// Waits until some node is the sequencer; returns its index.
pub(crate) fn sequencer(a: &ureq::Agent, nodes: &[Option<Serve>]) -> usize {
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
            "no sequencer after 30 s; the nodes:{}",
            describe(a, nodes)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every event a node holds, in position order.
pub(crate) fn events(a: &ureq::Agent, url: &str) -> Vec<Value> {
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
                // A failed append (503, a timeout, a killed node) is retried with the same
                // id, on the next node, until it is acknowledged: a retry of a group whose
                // outcome was unknown must be a duplicate, not a second copy.
                let (mut i, mut attempt) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let url = {
                        let urls = urls.lock().unwrap();
                        urls[(c + attempt) % urls.len()].clone()
                    };
                    attempt += 1;
                    let id = format!("c{c}-{i}");
                    let event = json!({"specversion": "1.0", "id": id, "source": "cluster-test",
                        "type": "was_seen", "subject": format!("thing/c{c}"), "data": {"i": i}});
                    let sent = a
                        .post(&format!("{url}/v1/events"))
                        .header("content-type", "application/cloudevents+json")
                        .send(event.to_string());
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
                                .unwrap_or_else(|| panic!("no position in {body}"));
                            acked.lock().unwrap().insert(id, position);
                            *last_ack.lock().unwrap() = Instant::now();
                            i += 1;
                        }
                        503 | 408 => std::thread::sleep(Duration::from_millis(20)),
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
    let (nats, mut nodes) = nats_and_nodes(dir.path());
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

    check_consistent(&a, &nodes, &acked.lock().unwrap());
}

/// Every node holds the same events, gapless, without duplicates, each acknowledged event at
/// the position it was acknowledged with.
fn check_consistent(a: &ureq::Agent, nodes: &[Option<Serve>], acked: &HashMap<String, u64>) {
    let head = acked.values().copied().max().unwrap_or(0);
    let mut reference: Option<Vec<Value>> = None;
    for node in nodes.iter().flatten() {
        let started = Instant::now();
        while get(a, &format!("{}/healthz", node.url))
            .is_none_or(|(_, h)| h["head"].as_u64().unwrap_or(0) < head)
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "node {} did not catch up to {head}; the nodes:{}",
                node.url,
                describe(a, nodes)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let events = events(a, &node.url);
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
        for (id, position) in acked {
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

/// Three NATS servers, three Loom nodes with the entity `thing` registered.
pub(crate) fn three_nodes(dir: &std::path::Path) -> (Nats, Vec<Option<Serve>>, ureq::Agent) {
    let (nats, nodes) = nats_and_nodes(dir);
    let a = agent();
    let first = sequencer(&a, &nodes);
    let put = a
        .put(&format!(
            "{}/v1/entities/thing",
            nodes[first].as_ref().unwrap().url
        ))
        .header("content-type", "application/json")
        .send(json!({"open": true}).to_string())
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    (nats, nodes, a)
}

fn signal(node: &Serve, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_sequencer_paused_past_its_lease_appends_nothing_and_steps_down() {
    if !nats::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_nats, nodes, a) = three_nodes(dir.path());
    let urls = Arc::new(Mutex::new(
        nodes
            .iter()
            .flatten()
            .map(|n| n.url.clone())
            .collect::<Vec<_>>(),
    ));
    let acked: Acked = Arc::default();
    let last_ack = Arc::new(Mutex::new(Instant::now()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&urls, 4, &acked, &last_ack, &stop);
    std::thread::sleep(Duration::from_millis(500));

    let old = sequencer(&a, &nodes);
    let paused = nodes[old].as_ref().unwrap();
    let old_status = status(&a, &paused.url).unwrap();
    signal(paused, "-STOP");
    let stopped = Instant::now();
    // Another node takes the lease once it expires, and appends.
    let new = loop {
        let other = (0..3).filter(|i| *i != old).find(|i| {
            status(&a, &nodes[*i].as_ref().unwrap().url).is_some_and(|s| s["role"] == "sequencer")
        });
        if let Some(i) = other {
            break i;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "no new sequencer"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took_over = stopped.elapsed();
    let before = acked.lock().unwrap().len();
    while acked.lock().unwrap().len() < before + 20 {
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "no appends after the takeover"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // An append sent to the paused node waits in its socket; it is answered after SIGCONT.
    let request = {
        let url = paused.url.clone();
        std::thread::spawn(move || {
            let event = json!({"specversion": "1.0", "id": "to-the-paused-one", "source": "cluster-test",
                "type": "was_seen", "subject": "thing/paused"});
            let resp = agent()
                .post(&format!("{url}/v1/events"))
                .header("content-type", "application/cloudevents+json")
                .send(event.to_string())
                .unwrap();
            let status = resp.status().as_u16();
            (
                status,
                resp.into_body().read_to_string().unwrap_or_default(),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    signal(paused, "-CONT");
    let (answer, body) = request.join().unwrap();
    // Either its stale publish was refused (503), or it had stepped down already and
    // forwarded the append to the new sequencer (201): never a group of its own.
    assert!(answer == 503 || answer == 201, "{answer}: {body}");
    let started = Instant::now();
    loop {
        let s = status(&a, &paused.url).unwrap();
        if s["role"] == "follower" && s["sequencer"]["node"] == format!("loom{new}") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the old sequencer did not step down: {s}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let mut acked = acked.lock().unwrap().clone();
    if answer == 201 {
        let body: Value = serde_json::from_str(&body).unwrap();
        acked.insert(
            "to-the-paused-one".into(),
            body["events"][0]["position"].as_u64().unwrap(),
        );
    }
    eprintln!(
        "paused sequencer (at log {}) replaced after {took_over:?}; its append after SIGCONT: {answer}",
        old_status["applied"]
    );
    check_consistent(&a, &nodes, &acked);
    // The term the paused node held ended: it sequenced once.
    assert_eq!(status(&a, &paused.url).unwrap()["terms"], 1);
}

#[test]
fn losing_one_nats_server_of_three_is_survived_and_losing_two_stops_writes_cleanly() {
    if !nats::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut nats, nodes, a) = three_nodes(dir.path());
    let urls = Arc::new(Mutex::new(
        nodes
            .iter()
            .flatten()
            .map(|n| n.url.clone())
            .collect::<Vec<_>>(),
    ));
    let acked: Acked = Arc::default();
    let last_ack = Arc::new(Mutex::new(Instant::now()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&urls, 4, &acked, &last_ack, &stop);
    let acks_within = |count: usize, within: Duration| {
        let started = Instant::now();
        let before = acked.lock().unwrap().len();
        while acked.lock().unwrap().len() < before + count {
            if started.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(started.elapsed())
    };
    acks_within(50, Duration::from_secs(20)).expect("appends before any fault");

    nats.kill(0);
    // Usually well under a second; when the killed server led the stream, JetStream elects
    // another leader first, which has taken over 20 s on this two-core machine under the full
    // test suite's load.
    let one_down = acks_within(50, Duration::from_secs(60)).unwrap_or_else(|| {
        panic!(
            "no 50 appends within 60 s with one NATS server down; the nodes:{}",
            describe(&a, &nodes)
        )
    });

    nats.kill(1);
    // In-flight appends end (503 or a client timeout); then nothing is acknowledged.
    std::thread::sleep(Duration::from_secs(6));
    let frozen = acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        acked.lock().unwrap().len(),
        frozen,
        "acknowledged without a quorum"
    );
    // And a write is refused cleanly, not hung: 503 within the request bounds.
    let started = Instant::now();
    let resp = agent()
        .post(&format!("{}/v1/events", nodes[0].as_ref().unwrap().url))
        .header("content-type", "application/cloudevents+json")
        .send(
            json!({"specversion": "1.0", "id": "no-quorum", "source": "cluster-test",
                   "type": "was_seen", "subject": "thing/q"})
            .to_string(),
        );
    if let Ok(resp) = resp {
        assert_eq!(resp.status().as_u16(), 503, "without a quorum");
    }
    let refused_in = started.elapsed();

    nats.start_server(0);
    nats.start_server(1);
    let resumed = acks_within(50, Duration::from_secs(60)).unwrap_or_else(|| {
        panic!(
            "no 50 appends within 60 s once the quorum was back; the nodes:{}",
            describe(&a, &nodes)
        )
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    eprintln!(
        "one NATS server down: 50 appends in {one_down:?}; two down: refused in {refused_in:?}; \
         quorum back: 50 appends in {resumed:?}"
    );
    let mut acked = acked.lock().unwrap().clone();
    acked.remove("no-quorum");
    check_consistent(&a, &nodes, &acked);
}

#[test]
fn groups_stay_under_the_largest_nats_message_and_a_larger_append_is_refused() {
    if !nats::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&dir.path().join("nats"), 1);
    let node = Serve::start(
        &dir.path().join("node"),
        &[
            "--cluster",
            &nats.urls(),
            "--replicas",
            "1",
            "--lease-ms",
            LEASE_MS,
        ],
    );
    let nodes = vec![Some(node)];
    let a = agent();
    sequencer(&a, &nodes);
    let url = nodes[0].as_ref().unwrap().url.clone();
    let put = a
        .put(&format!("{url}/v1/entities/thing"))
        .header("content-type", "application/json")
        .send(json!({"open": true}).to_string())
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let post = move |id: &str, bytes: usize| {
        let event = json!({"specversion": "1.0", "id": id, "source": "cluster-test",
            "type": "was_seen", "subject": "thing/big", "data": "x".repeat(bytes)});
        let resp = agent()
            .post(&format!("{url}/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .send(event.to_string())
            .unwrap();
        let status = resp.status().as_u16();
        (
            status,
            resp.into_body().read_to_string().unwrap_or_default(),
        )
    };
    // Eight appends of 3 MB at once: together far over NATS's 8 MB, so several groups.
    let posts: Vec<_> = (0..8)
        .map(|i| {
            let post = post.clone();
            std::thread::spawn(move || post(&format!("big{i}"), 3 << 20))
        })
        .collect();
    let mut acked = HashMap::new();
    for (i, p) in posts.into_iter().enumerate() {
        let (status, body) = p.join().unwrap();
        assert_eq!(status, 201, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        acked.insert(
            format!("big{i}"),
            body["events"][0]["position"].as_u64().unwrap(),
        );
    }
    // One append larger than a message alone: refused, and the node stays the sequencer.
    let (answer, body) = post("huge", (8 << 20) - 600);
    let url = nodes[0].as_ref().unwrap().url.clone();
    assert_eq!(answer, 422, "{body}");
    assert!(body.contains("largest message"), "{body}");
    let s = status(&a, &url).unwrap();
    assert_eq!(
        (s["role"].as_str(), s["terms"].as_u64()),
        (Some("sequencer"), Some(1)),
        "{s}"
    );
    check_consistent(&a, &nodes, &acked);
}
