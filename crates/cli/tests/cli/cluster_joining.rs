//! Nodes that join or come back to a real cluster (three `nats-server` processes, `loom
//! serve` nodes): a restarted follower, a node restored from a follower's backup and nodes
//! started on empty directories (from the cluster's snapshot) catch up and hold the same
//! states; a node started after the stream was trimmed joins from a snapshot, and one left
//! behind the trim says so instead of following.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{agent, get, nats_and_nodes, sequencer};
use crate::cluster_engine::{check_out, on_every_node, send, send_retrying, upload};
use crate::common::nats;
use crate::common::{ok, wasm};

/// The body of a GET, as text.
fn text(a: &ureq::Agent, url: &str) -> String {
    let resp = a.get(url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    resp.into_body().read_to_string().unwrap()
}

#[test]
fn restarted_and_new_nodes_catch_up_and_hold_the_same_states() {
    if !nats::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (nats, mut nodes) = nats_and_nodes(dir.path());
    let a = agent();
    let s = sequencer(&a, &nodes);
    let follower = nodes[(s + 1) % 3].as_ref().unwrap().url.clone();
    let spec = std::fs::read(loom_testkit::example_entity_path("cart")).unwrap();
    // The follower may not have heard of the sequencer yet (503, "retry shortly").
    let (code, body) = send_retrying(
        &a,
        "PUT",
        &format!("{follower}/v1/entities/cart"),
        Some(spec),
    );
    assert_eq!(code, 201, "{body}");
    let bytes = std::fs::read(wasm("cart")).unwrap();
    let (code, module) = upload(&follower, bytes);
    assert_eq!(code, 201, "{module}");
    let spec = json!({"module": module["id"], "selector": {"entity": "cart"}});
    let (code, body) = send(
        &a,
        "PUT",
        &format!("{follower}/v1/deciders/cart"),
        Some(json!({"module": module["id"]}).to_string().into_bytes()),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = send(
        &a,
        "PUT",
        &format!("{follower}/v1/projections/carts"),
        Some(spec.to_string().into_bytes()),
    );
    assert_eq!(code, 201, "{body}");
    for i in 0..10 {
        check_out(&a, &follower, i);
    }
    // A backup of a follower, taken while it runs; then more history after it.
    let file = dir.path().join("follower.redb");
    ok(&std::process::Command::new(crate::common::LOOM)
        .args(["backup", "--to", file.to_str().unwrap(), "--url", &follower])
        .output()
        .unwrap());
    // The other follower is killed meanwhile, and restarted after.
    let killed = (s + 2) % 3;
    nodes[killed].take().unwrap().kill();
    for i in 10..20 {
        check_out(&a, &follower, i);
    }
    nodes[killed] = Some(crate::cluster::start_node(dir.path(), &nats, killed));
    let out = std::process::Command::new(crate::common::LOOM)
        .args(["restore", "--from", file.to_str().unwrap(), "--data"])
        .arg(dir.path().join("node3"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("goes on after log sequence"),
        "{said}"
    );
    nodes.push(Some(crate::cluster::start_node(dir.path(), &nats, 3)));
    nodes.push(Some(crate::cluster::start_node(dir.path(), &nats, 4)));
    // A snapshot in the cluster's object store, taken by a follower; a node started on an
    // empty directory afterwards starts from it.
    let loom_cluster = |args: &[&str]| {
        ok(&std::process::Command::new(crate::common::LOOM)
            .arg("cluster")
            .args(args)
            .args(["--url", &follower])
            .output()
            .unwrap())
    };
    let stored = loom_cluster(&["snapshot"]);
    assert!(stored.starts_with("stored seq-"), "{stored}");
    let listed = loom_cluster(&["snapshots", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let snapshot_sequence = listed[0]["log_sequence"].as_u64().unwrap();
    assert!(snapshot_sequence > 0, "{listed}");
    nodes.push(Some(crate::cluster::start_node(dir.path(), &nats, 5)));

    let head = get(&a, &format!("{follower}/healthz")).unwrap().1["head"]
        .as_u64()
        .unwrap();
    on_every_node(&nodes, "the whole history and the projection", |url| {
        get(&a, &format!("{url}/v1/projections/carts"))
            .is_some_and(|(c, p)| c == 200 && p["position"].as_u64() >= Some(head))
    });
    let reference = nodes[s].as_ref().unwrap().url.clone();
    // What operators see: health, metrics and `loom cluster` on the sequencer and a follower.
    let (_, health) = get(&a, &format!("{reference}/healthz")).unwrap();
    assert_eq!(
        (&health["role"], &health["behind"]),
        (&json!("sequencer"), &json!(0)),
        "{health}"
    );
    let metrics = text(&a, &format!("{follower}/metrics"));
    for line in ["loom_cluster_sequencer 0", "loom_cluster_behind_messages 0"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let applied = metrics
        .lines()
        .find_map(|l| l.strip_prefix("loom_cluster_applied_sequence "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(applied > 20, "{metrics}");
    assert!(
        text(&a, &format!("{reference}/metrics"))
            .lines()
            .any(|l| l == "loom_cluster_sequencer 1")
    );
    let out = std::process::Command::new(crate::common::LOOM)
        .args(["cluster", "status", "--url", &follower])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && said.contains(": follower (terms 0); applied ")
            && said.contains("; sequencer loom"),
        "{said}"
    );
    let events = |url: &str| text(&a, &format!("{url}/v1/events?limit=10000"));
    let states = |url: &str| {
        (0..20)
            .map(|i| text(&a, &format!("{url}/v1/projections/carts/state/cart/c{i}")))
            .collect::<Vec<_>>()
    };
    let (want_events, want_states) = (events(&reference), states(&reference));
    for node in [killed, 3, 4, 5].map(|i| &nodes[i]) {
        let url = &node.as_ref().unwrap().url;
        assert_eq!(events(url), want_events, "{url}");
        assert_eq!(states(url), want_states, "{url}");
        let (_, st) = get(&a, &format!("{url}/v1/cluster")).unwrap();
        assert_eq!(st["role"], "follower", "{st}");
    }
    let url = &nodes[5].as_ref().unwrap().url;
    let (_, st) = get(&a, &format!("{url}/v1/cluster")).unwrap();
    assert_eq!(st["restored_from"], snapshot_sequence, "{st}");
    let (_, st) = get(
        &a,
        &format!("{}/v1/cluster", nodes[4].as_ref().unwrap().url),
    )
    .unwrap();
    assert!(
        st.get("restored_from").is_none(),
        "started before any snapshot: {st}"
    );
    // Every node's status lists every node, with how far each is behind.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, st) = get(&a, &format!("{follower}/v1/cluster")).unwrap();
        let listed = st["nodes"].as_array().cloned().unwrap_or_default();
        let caught_up = listed
            .iter()
            .filter(|n| n["applied"].as_u64() == st["applied"].as_u64() && n["behind"] == 0)
            .count();
        if listed.len() == 6 && caught_up == 6 {
            let names: Vec<_> = listed.iter().map(|n| n["node"].as_str().unwrap()).collect();
            assert_eq!(
                names,
                ["loom0", "loom1", "loom2", "loom3", "loom4", "loom5"]
            );
            assert_eq!(
                listed.iter().filter(|n| n["role"] == "sequencer").count(),
                1,
                "{st}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "every node in the status: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Appends `n` events to `thing/{key}` through `url`.
fn things(a: &ureq::Agent, url: &str, key: &str, n: usize) {
    for i in 0..n {
        let event = json!({"specversion": "1.0", "id": format!("{key}-{i}"), "source": "t",
            "type": "was_seen", "subject": format!("thing/{key}"), "data": {"i": i}});
        let resp = a
            .post(&format!("{url}/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .send(event.to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
}

#[test]
fn a_trimmed_stream_is_joined_from_a_snapshot_and_a_node_left_behind_says_so() {
    if !nats::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (nats, mut nodes, a) = crate::cluster::three_nodes(dir.path());
    let s = sequencer(&a, &nodes);
    let url = nodes[s].as_ref().unwrap().url.clone();
    let loom_cluster = |args: &[&str]| {
        std::process::Command::new(crate::common::LOOM)
            .arg("cluster")
            .args(args)
            .args(["--url", &url])
            .output()
            .unwrap()
    };
    // No snapshot yet: nothing to trim below.
    let refused = loom_cluster(&["trim", "--keep", "1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("409"));

    things(&a, &url, "a", 30);
    let behind = (s + 1) % 3;
    let behind_head = {
        let url = nodes[behind].as_ref().unwrap().url.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let head = get(&a, &format!("{url}/healthz")).unwrap().1["head"]
                .as_u64()
                .unwrap();
            if head >= 30 {
                break head;
            }
            assert!(Instant::now() < deadline, "the follower caught up");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Every node has said where it is before one goes down.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&a, &format!("{url}/v1/cluster")).unwrap().1["nodes"]
        .as_array()
        .is_none_or(|n| n.len() < 3 || n.iter().any(|n| n["applied"].as_u64() < Some(30)))
    {
        assert!(
            Instant::now() < deadline,
            "every node in the sequencer's status"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    nodes[behind].take().unwrap().kill();
    things(&a, &url, "b", 30);
    assert!(loom_cluster(&["snapshot"]).status.success());
    // The killed node still shows in the nodes' list (for 10 s), behind the snapshot: a
    // trim is refused, naming it, unless forced.
    let refused = loom_cluster(&["trim", "--keep", "1"]);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{why}");
    assert!(
        why.contains("409") && why.contains(&format!("loom{behind} (applied ")),
        "{why}"
    );
    let out = loom_cluster(&["trim", "--keep", "1", "--force"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.starts_with("trimmed: the stream begins at sequence "),
        "{said}"
    );
    assert!(!said.contains("(0 messages removed)"), "{said}");
    things(&a, &url, "c", 5);

    // A new node starts from the snapshot and reads the rest.
    nodes.push(Some(crate::cluster::start_node(dir.path(), &nats, 3)));
    let joined = nodes[3].as_ref().unwrap().url.clone();
    let events = |url: &str| {
        text(
            &a,
            &format!("{url}/v1/events?limit=10000&min_position=65&timeout_ms=20000"),
        )
    };
    assert_eq!(events(&joined), events(&url));
    // The node that was down since before the trimmed point cannot follow, says why, and
    // changes nothing.
    nodes[behind] = Some(crate::cluster::start_node(dir.path(), &nats, behind));
    let left = nodes[behind].as_ref().unwrap().url.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, st) = get(&a, &format!("{left}/v1/cluster")).unwrap();
        if st["last_error"].is_string() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the node left behind says so: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("behind the trimmed stream"),
        "{status}"
    );
    assert_eq!(status["role"], "follower", "{status}");
    // Killed, it restarted from its last durable checkpoint (at most where it was), and it
    // stays there.
    let head = || {
        get(&a, &format!("{left}/healthz")).unwrap().1["head"]
            .as_u64()
            .unwrap()
    };
    let stuck = head();
    assert!(stuck <= behind_head, "{stuck} > {behind_head}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(head(), stuck);
}
