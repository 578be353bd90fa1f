//! Server-Sent Events over a real server: catch-up then live, resume, heartbeats, slow
//! consumers, shutdown.

use crate::common;

use std::time::Duration;

use common::*;
use eventsource_stream::{Event as SseEvent, EventStream, Eventsource};
use futures_util::{Stream, StreamExt};
use loom_server::Config;
use serde_json::{Value, json};

async fn append(server: &Server, client: &reqwest::Client, body: Value) {
    let ct = if body.is_array() {
        "application/cloudevents-batch+json"
    } else {
        "application/cloudevents+json"
    };
    let r = client
        .post(server.url("/v1/events"))
        .header("content-type", ct)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn subscribe(
    client: &reqwest::Client,
    url: &str,
    last_event_id: Option<&str>,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, String>> + Send>> {
    let mut req = client.get(url).header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    Box::pin(
        r.bytes_stream()
            .eventsource()
            .map(|m| m.map_err(|e| e.to_string())),
    )
}

async fn next_event<S, E>(stream: &mut S) -> (u64, Value)
where
    S: Stream<Item = Result<SseEvent, E>> + Unpin,
    E: std::fmt::Debug,
{
    let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("a well-formed message");
    let data: Value = serde_json::from_str(&message.data).unwrap();
    let id: u64 = message.id.parse().unwrap();
    assert_eq!(data["position"], id, "the SSE id is the position");
    (id, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_then_live_then_resume() {
    let server = Server::start(Config::default()).await;
    let client = reqwest::Client::new();
    let history: Vec<Value> = (1..=1200)
        .map(|i| {
            cart_event(
                &format!("h{i}"),
                &format!("{}", i % 3),
                "was_created",
                json!({"i": i}),
            )
        })
        .collect();
    append(&server, &client, Value::Array(history)).await;

    let mut stream = subscribe(&client, &server.url("/v1/subscribe?after=0"), None).await;
    for expected in 1..=1200 {
        let (id, data) = next_event(&mut stream).await;
        assert_eq!(id, expected);
        assert_eq!(data["id"], format!("h{expected}"));
    }
    // Live: appended after the subscriber caught up.
    for i in 1..=3 {
        append(
            &server,
            &client,
            cart_event(&format!("live{i}"), "1", "was_created", json!({})),
        )
        .await;
        let (id, data) = next_event(&mut stream).await;
        assert_eq!(id, 1200 + i);
        assert_eq!(data["id"], format!("live{i}"));
    }
    drop(stream);

    // Resume with Last-Event-ID (takes precedence over after).
    let mut resumed = subscribe(&client, &server.url("/v1/subscribe?after=5"), Some("1201")).await;
    let (id, _) = next_event(&mut resumed).await;
    assert_eq!(id, 1202);
    let (id, _) = next_event(&mut resumed).await;
    assert_eq!(id, 1203);
    drop(resumed);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_parameters_filter_history_and_live() {
    let server = Server::start(Config::default()).await;
    let client = reqwest::Client::new();
    append(
        &server,
        &client,
        json!([
            cart_event("1", "a", "was_created", json!({})),
            cart_event("2", "b", "was_created", json!({})),
            cart_event("3", "a", "had_item_added", item("kiwi", 1)),
        ]),
    )
    .await;
    let mut stream = subscribe(
        &client,
        &server.url("/v1/subscribe?subject=cart/a&type=had_item_added,was_checked_out"),
        None,
    )
    .await;
    assert_eq!(next_event(&mut stream).await.0, 3);
    append(
        &server,
        &client,
        json!([
            cart_event("4", "b", "was_checked_out", json!({})),
            cart_event("5", "a", "was_created", json!({})),
            cart_event("6", "a", "was_checked_out", json!({})),
        ]),
    )
    .await;
    assert_eq!(next_event(&mut stream).await.0, 6);
    drop(stream);
    // A bad selector is refused before the stream starts.
    let r = client
        .get(server.url("/v1/subscribe?data=$[?"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = client
        .get(server.url("/v1/subscribe"))
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_while_idle() {
    let server = Server::start(Config {
        heartbeat: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let client = reqwest::Client::new();
    let r = client
        .get(server.url("/v1/subscribe"))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !text.contains(": heartbeat") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("a heartbeat within 5 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_never_blocks_appends() {
    let server = Server::start(Config::default()).await;
    let client = reqwest::Client::new();
    // A subscriber that never reads its stream.
    let stalled = client
        .get(server.url("/v1/subscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    let pad = "x".repeat(2000);
    let started = std::time::Instant::now();
    for b in 0..20 {
        let batch: Vec<Value> = (0..250)
            .map(|i| cart_event(&format!("{b}-{i}"), "s", "was_created", json!({"pad": pad})))
            .collect();
        tokio::time::timeout(
            Duration::from_secs(10),
            append(&server, &client, Value::Array(batch)),
        )
        .await
        .expect("appends go on while a subscriber stalls");
    }
    assert_eq!(server.state.ledger().head(), 5000);
    assert!(started.elapsed() < Duration::from_secs(60));
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("loom_subscriptions 1"), "{metrics}");
    drop(stalled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_subscriptions_and_finishes() {
    let server = Server::start(Config::default()).await;
    let client = reqwest::Client::new();
    let r = client
        .get(server.url("/v1/subscribe"))
        .send()
        .await
        .unwrap();
    let mut stream: EventStream<_> = r.bytes_stream().eventsource();
    server.stop().await; // bounded: panics if graceful shutdown hangs
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends");
    assert!(end.is_none() || end.unwrap().is_err());
}
