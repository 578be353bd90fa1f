//! Graceful shutdown under load: requests in flight finish, every acknowledged append is
//! stored, and the server stops in bounded time.

use crate::common;

use std::time::Duration;

use common::*;
use loom_server::Config;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_appends_in_flight() {
    let server = Server::start(Config::default()).await;
    let state = server.state.clone();
    let mut tasks = Vec::new();
    for c in 0..32 {
        let url = server.url("/v1/events");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            let mut statuses = Vec::new();
            for i in 0..200 {
                let id = format!("{c}-{i}");
                let body = cart_event(&id, &c.to_string(), "was_created", json!({}));
                match client
                    .post(&url)
                    .header("content-type", "application/cloudevents+json")
                    .body(body.to_string())
                    .send()
                    .await
                {
                    Ok(r) => {
                        statuses.push(r.status().as_u16());
                        if r.status() == 201 {
                            acknowledged.push(id);
                        }
                    }
                    // The server stopped taking connections: this request never started.
                    Err(_) => break,
                }
            }
            (acknowledged, statuses)
        }));
    }
    // Let the load run, then shut down in the middle of it.
    while state.ledger().head() < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.stop().await; // panics unless graceful shutdown ends within 10 s
    let mut total = 0;
    for t in tasks {
        let (acknowledged, statuses) = t.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 201),
            "requests in flight are answered normally, not cut: {statuses:?}"
        );
        for id in &acknowledged {
            assert!(
                state
                    .ledger()
                    .event_by_id("https://shop.example/carts", id)
                    .unwrap()
                    .is_some(),
                "acknowledged event {id} is stored"
            );
        }
        total += acknowledged.len();
    }
    assert!(total >= 200);
    assert_eq!(
        state.ledger().head() as usize,
        total,
        "nothing unacknowledged was half-written"
    );
}
