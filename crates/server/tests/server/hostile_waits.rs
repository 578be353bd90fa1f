//! `min_position` waits hold no thread: many open waits do not starve the blocking threads
//! that reads run on, and past `max_waits` a wait is refused with a 503 instead of queueing.

use crate::common;

use std::time::{Duration, Instant};

use loom_server::Config;
use serde_json::json;

use common::Server;

/// A server with a `carts` projection over the cart module, and one event.
async fn server_with_projection(config: Config) -> (Server, reqwest::Client) {
    let server = Server::start(config).await;
    let client = reqwest::Client::new();
    let module: serde_json::Value = client
        .post(server.url("/v1/modules"))
        .header("content-type", "application/wasm")
        .body(loom_testkit::example_wasm("cart"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = client
        .put(server.url("/v1/projections/carts"))
        .json(&json!({"module": module["id"], "selector": {"entity": "cart"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = client
        .post(server.url("/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(
            json!({"specversion": "1.0", "id": "1", "source": "t", "type": "was_created",
                   "subject": "cart/1", "data": {}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    (server, client)
}

#[test]
fn open_waits_do_not_starve_reads() {
    // Few blocking threads, many waits: each wait used to hold one of them for its whole
    // timeout, so reads queued behind the waits.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (server, client) = server_with_projection(Config::default()).await;
        let waits: Vec<_> = (0..40)
            .map(|_| {
                let client = client.clone();
                let url = server
                    .url("/v1/projections/carts/state/cart/1?min_position=1000&timeout_ms=3000");
                tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..5 {
            let started = Instant::now();
            let r = client
                .get(server.url("/v1/events?limit=1"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let took = started.elapsed();
            assert!(took < Duration::from_millis(500), "a read took {took:?}");
        }
        for w in waits {
            assert_eq!(w.await.unwrap(), 504);
        }
        server.stop().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_past_the_cap_are_refused_with_503() {
    let config = Config {
        max_waits: 2,
        ..Config::default()
    };
    let (server, client) = server_with_projection(config).await;
    let url = server.url("/v1/projections/carts/state/cart/1?min_position=1000&timeout_ms=2000");
    let waits: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("waiting"),
        "{problem}"
    );
    for w in waits {
        assert_eq!(w.await.unwrap(), 504);
    }
    // A wait that can be met answers at once.
    let r = client
        .get(server.url("/v1/projections/carts/state/cart/1?min_position=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

/// Event reads take `min_position` too (read-your-writes on any node of a cluster): a read
/// waits for the position to be appended, a wait that runs out is a 504 naming how far the
/// ledger got, and `timeout_ms` alone is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_reads_wait_for_min_position() {
    let (server, client) = server_with_projection(Config::default()).await;
    let get = |path: &str| client.get(server.url(path)).send();
    for path in [
        "/v1/events?min_position=2&timeout_ms=150",
        "/v1/events/2?min_position=2&timeout_ms=150",
        "/v1/streams/cart/2?min_position=2&timeout_ms=150",
        "/v1/events/by-id?source=t&id=2&min_position=2&timeout_ms=150",
    ] {
        let started = Instant::now();
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 504, "{path}");
        assert!(started.elapsed() >= Duration::from_millis(150), "{path}");
        let problem: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (problem["wanted"].as_u64(), problem["reached"].as_u64()),
            (Some(2), Some(1))
        );
    }
    let r = get("/v1/events?timeout_ms=10").await.unwrap();
    assert_eq!(r.status(), 400);

    // A read waiting for position 2 answers once it is appended, with it.
    let waiting = {
        let client = client.clone();
        let url = server.url("/v1/streams/cart/2?min_position=2&timeout_ms=5000");
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "answered before position 2 existed");
    let r = client
        .post(server.url("/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(
            json!({"specversion": "1.0", "id": "2", "source": "t", "type": "was_created",
                   "subject": "cart/2", "data": {}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = waiting.await.unwrap();
    assert_eq!(r.status(), 200);
    let events: serde_json::Value = r.json().await.unwrap();
    assert_eq!(events[0]["position"], 2, "{events}");
}
