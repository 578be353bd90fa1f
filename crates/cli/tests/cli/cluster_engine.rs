//! What the engine runs, in a real cluster (three `nats-server` processes, three `loom serve`
//! nodes): modules, deciders, projections and reactors defined through a follower reach
//! every node through the cluster's log; projections give the same states on every node;
//! a reactor's effects run on the sequencer only, and after the sequencer is killed the new
//! one goes on from the progress it published instead of reacting to history again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{agent, get, nats_and_nodes, sequencer, status};
use crate::common::nats;
use crate::common::{Serve, wasm};

pub(crate) fn send(
    a: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(body.unwrap_or_default())
        .unwrap();
    let resp = a.run(req).unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Uploads a module through the node at `url`. The node compiles it before it answers,
/// which can take seconds on a loaded two-core machine (a server allows a compile 60 s),
/// longer than the 10 s that [`agent`] allows other requests.
pub(crate) fn upload(url: &str, bytes: Vec<u8>) -> (u16, Value) {
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(90)))
        .build()
        .into();
    let started = Instant::now();
    let answer = send(&a, "POST", &format!("{url}/v1/modules"), Some(bytes));
    eprintln!("module uploaded through {url} in {:?}", started.elapsed());
    answer
}

/// [`send`], sent again while the answer is 503: a follower forwards writes to the sequencer
/// it last heard of; just after a failover it may still name the old one, and just after
/// the cluster starts it may know of none yet ("retry shortly", as the API tells clients).
/// Gives up after 30 s.
pub(crate) fn send_retrying(
    a: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, answer) = send(a, method, url, body.clone());
        if code != 503 || Instant::now() > deadline {
            return (code, answer);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `check` holds on every live node.
pub(crate) fn on_every_node(nodes: &[Option<Serve>], what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in nodes.iter().flatten() {
        while !check(&node.url) {
            assert!(Instant::now() < deadline, "{what} on {}", node.url);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Checks out cart `c{i}` through node `url` (create, add an item, check out).
pub(crate) fn check_out(a: &ureq::Agent, url: &str, i: usize) {
    for command in [
        json!({"type": "create"}),
        json!({"type": "add_item", "sku": "s", "name": "S", "price": i, "quantity": 1}),
        json!({"type": "check_out"}),
    ] {
        let (status, body) = send(
            a,
            "POST",
            &format!("{url}/v1/commands/cart/c{i}"),
            Some(command.to_string().into_bytes()),
        );
        assert!(status == 200 || status == 201, "{body}");
    }
}

/// Deliveries the sink received, by CloudEvents id.
fn deliveries(sink: &loom_testkit::Sink) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for body in sink.received() {
        let event: Value = serde_json::from_slice(&body).unwrap();
        *seen
            .entry(event["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    seen
}

#[test]
fn definitions_reach_every_node_and_reactors_run_once_across_a_failover() {
    if !nats::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_nats, mut nodes) = nats_and_nodes(dir.path());
    let a = agent();
    let s = sequencer(&a, &nodes);
    let follower = nodes[(s + 1) % 3].as_ref().unwrap().url.clone();

    // Everything defined through a follower (forwarded to the sequencer). The follower may
    // not have heard of the sequencer yet (503, "retry shortly").
    for (entity, example) in loom_testkit::EXAMPLE_ENTITIES {
        let spec = std::fs::read(loom_testkit::example_entity_path(example)).unwrap();
        let (code, body) = send_retrying(
            &a,
            "PUT",
            &format!("{follower}/v1/entities/{entity}"),
            Some(spec),
        );
        assert!(code == 201 || code == 200, "{body}");
    }
    let mut module = HashMap::new();
    for example in ["cart", "checkout"] {
        let bytes = std::fs::read(wasm(example)).unwrap();
        let (code, body) = upload(&follower, bytes);
        assert_eq!(code, 201, "{body}");
        module.insert(example, body["id"].as_str().unwrap().to_owned());
    }
    let put = |path: &str, spec: Value| {
        let (code, body) = send(
            &a,
            "PUT",
            &format!("{follower}{path}"),
            Some(spec.to_string().into_bytes()),
        );
        assert_eq!(code, 201, "{path}: {body}");
    };
    put("/v1/deciders/cart", json!({"module": module["cart"]}));
    put(
        "/v1/projections/carts",
        json!({"module": module["cart"], "selector": {"entity": "cart"}}),
    );
    let sink = loom_testkit::Sink::start();
    put(
        "/v1/reactors/checkout",
        json!({"module": module["checkout"], "sink": sink.url,
            "selector": {"entity": "cart", "types": ["was_checked_out"]}}),
    );
    on_every_node(&nodes, "the definitions", |url| {
        let defined = |path: &str| get(&a, &format!("{url}{path}")).is_some_and(|(c, _)| c == 200);
        defined("/v1/deciders/cart")
            && defined("/v1/projections/carts")
            && defined("/v1/reactors/checkout")
            && get(&a, &format!("{url}/v1/modules"))
                .is_some_and(|(_, m)| m.as_array().is_some_and(|m| m.len() == 2))
    });

    // Commands through every node; the reactor reacts on the sequencer only.
    for i in 0..12 {
        let url = nodes[i % 3].as_ref().unwrap().url.clone();
        check_out(&a, &url, i);
    }
    let placed = |url: &str, n: usize| {
        (0..n).all(|i| {
            get(&a, &format!("{url}/v1/streams/order/c{i}"))
                .is_some_and(|(_, events)| events.as_array().is_some_and(|e| e.len() == 1))
        })
    };
    on_every_node(&nodes, "the orders", |url| placed(url, 12));
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries(&sink).len() < 12 {
        assert!(Instant::now() < deadline, "the sink got every order");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Time for the progress to be published (at most every second) and applied everywhere.
    std::thread::sleep(Duration::from_secs(3));
    let before = deliveries(&sink);
    assert_eq!(before.len(), 12, "{before:?}");
    assert!(
        before.values().all(|&n| n == 1),
        "delivered more than once: {before:?}"
    );
    on_every_node(&nodes, "the reactor's progress", |url| {
        get(&a, &format!("{url}/v1/reactors/checkout"))
            .is_some_and(|(_, r)| r["delivered"] == 12 && r["appended"] == 12)
    });

    // Read your writes on every node: append through the sequencer, read with min_position.
    let sequencer_url = nodes[s].as_ref().unwrap().url.clone();
    let mut last = 0;
    for round in 0..20 {
        let event = json!({"specversion": "1.0", "id": format!("ryw{round}"), "source": "t",
            "type": "was_created", "subject": format!("cart/ryw{round}"), "data": {}});
        let resp = a
            .post(&format!("{sequencer_url}/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .send(event.to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let answer: Value =
            serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
        let p = answer["last_position"].as_u64().unwrap();
        last = p;
        for node in nodes.iter().flatten() {
            let (code, read) = get(
                &a,
                &format!(
                    "{}/v1/events/{p}?min_position={p}&timeout_ms=5000",
                    node.url
                ),
            )
            .unwrap();
            assert_eq!(
                (code, &read["id"]),
                (200, &json!(format!("ryw{round}"))),
                "{}",
                node.url
            );
        }
    }

    // The same projection states on every node, each read once the node's projection has
    // folded everything appended (a state's `position` is how far its projection got).
    let state = |url: &str, key: usize| {
        get(
            &a,
            &format!("{url}/v1/projections/carts/state/cart/c{key}?min_position={last}"),
        )
    };
    for key in [0, 5, 11] {
        let states: Vec<_> = nodes
            .iter()
            .flatten()
            .map(|n| state(&n.url, key).unwrap().1)
            .collect();
        assert!(states.iter().all(|s| s == &states[0]), "{states:?}");
        assert!(
            states[0].to_string().contains("checked_out"),
            "{}",
            states[0]
        );
    }

    // The sequencer dies; the new one runs the reactor from the published progress.
    nodes[s].take().unwrap().kill();
    let s2 = sequencer(&a, &nodes);
    assert_ne!(s2, s);
    let url = nodes[s2].as_ref().unwrap().url.clone();
    for i in 12..18 {
        check_out(&a, &url, i);
    }
    on_every_node(&nodes, "the orders after the failover", |url| {
        placed(url, 18)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries(&sink).len() < 18 {
        assert!(
            Instant::now() < deadline,
            "the sink got every order after the failover"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = deliveries(&sink);
    assert!(
        after.values().all(|&n| n == 1),
        "the new sequencer reacted to history again: {after:?}"
    );

    // Life-cycle changes reach every node too.
    let live = nodes
        .iter()
        .flatten()
        .map(|n| n.url.clone())
        .collect::<Vec<_>>();
    let (code, body) = send_retrying(
        &a,
        "POST",
        &format!("{}/v1/projections/carts/pause", live[1]),
        None,
    );
    assert_eq!(code, 200, "{body}");
    on_every_node(&nodes, "the pause", |url| {
        get(&a, &format!("{url}/v1/projections/carts"))
            .is_some_and(|(_, p)| p["status"] == "paused")
    });
    let (code, body) = send_retrying(
        &a,
        "DELETE",
        &format!("{}/v1/reactors/checkout", live[0]),
        None,
    );
    assert_eq!(code, 204, "{body}");
    on_every_node(&nodes, "the reactor's deletion", |url| {
        get(&a, &format!("{url}/v1/reactors/checkout")).is_some_and(|(c, _)| c == 404)
    });
    // A refused change is refused on the node that was asked and changes nothing anywhere.
    let (code, body) = send(
        &a,
        "DELETE",
        &format!("{}/v1/modules/{}", live[1], module["cart"]),
        None,
    );
    assert_eq!(code, 409, "{body}");
    for url in &live {
        let (_, modules) = get(&a, &format!("{url}/v1/modules")).unwrap();
        assert_eq!(modules.as_array().unwrap().len(), 2, "{url}: {modules}");
        assert!(status(&a, url).is_some());
    }
}
