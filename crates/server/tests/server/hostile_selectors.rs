//! Hostile selectors: an expression that would take seconds to parse or hours to evaluate
//! is refused at once with a 422 naming the limit, and a conditional append that reads a
//! large history does not hold up the appends beside it (the writer checks only the events
//! after the snapshot the caller checked).

use crate::common;

use std::time::{Duration, Instant};

use loom_server::Config;
use serde_json::{Value, json};

use common::Server;

/// `/healthz` and an unrelated append both answer; returns how long the two took.
async fn others_are_served(client: &reqwest::Client, server: &Server, id: &str) -> Duration {
    let started = Instant::now();
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert!(health.status().is_success());
    let append = client
        .post(server.url("/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(
            json!({"specversion": "1.0", "id": id, "source": "bystander", "type": "noted",
                   "subject": "log/bystander", "data": {}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(append.status(), 201);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_over_the_cost_limits_are_refused_at_once() {
    let server = Server::start(Config::default()).await;
    let client = reqwest::Client::new();
    // 20 nested filters (81 characters): 4.6-8.1 s of parsing on an async worker before.
    let nested = format!("${}", "[?@".repeat(20)) + &"]".repeat(20);
    let started = Instant::now();
    let answer = client
        .get(server.url("/v1/events"))
        .query(&[("data", nested.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 422);
    let problem: Value = answer.json().await.unwrap();
    assert_eq!(problem["type"], "urn:loom:problem:selector-too-complex");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("nest more than"),
        "{problem}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));

    // Absolute descendant queries nested in filters: hours of evaluation per event before.
    let append = client
        .post(server.url("/v1/append"))
        .json(&json!({
            "events": [{"specversion": "1.0", "id": "a1", "source": "attacker",
                        "type": "noted", "subject": "log/a", "data": {}}],
            "conditions": {"fail_if_events_match": {"data": "$..[?$..[?$..[?$..[?@ == 'zz']]]]"}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(append.status(), 422);
    let problem: Value = append.json().await.unwrap();
    assert_eq!(problem["type"], "urn:loom:problem:selector-too-complex");
    // Nothing was written.
    assert_eq!(server.state.ledger().head(), 0);
    let took = others_are_served(&client, &server, "b1").await;
    assert!(
        took < Duration::from_secs(1),
        "/healthz and an append took {took:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_append_over_a_long_history_does_not_hold_up_other_appends() {
    let server = Server::start(Config::default()).await;
    let client = reqwest::Client::new();
    // A history that a condition within the limits must read in full: ~4 000 JSON nodes
    // per event, 4 million in all (about a second per scan here in a debug build).
    let nested = (0..20).fold(
        json!({"zz": 1}),
        |v, i| json!({"a": v, "b": (0..200).map(|j| json!({"c": i * j})).collect::<Vec<_>>()}),
    );
    let ledger = server.state.ledger().clone();
    for chunk in 0..10 {
        let events = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                loom_ledger::Event::new(
                    "history",
                    format!("h{n}"),
                    "noted",
                    format!("log/{}", n % 50),
                    nested.clone(),
                )
            })
            .collect();
        ledger
            .append(loom_ledger::AppendRequest::new(events))
            .unwrap();
    }
    // Conditions that read every event and match none, from several clients at once.
    let conditional = |n: usize| {
        let client = client.clone();
        let url = server.url("/v1/append");
        async move {
            let body = json!({
                "events": [{"specversion": "1.0", "id": format!("c{n}"), "source": "checker",
                            "type": "noted", "subject": "log/checked", "data": {}}],
                "conditions": {"fail_if_events_match": {"data": "$..[?@.zz == 2]"}}
            });
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
    };
    let started = Instant::now();
    let checks = tokio::spawn(futures_util::future::join_all((0..4).map(conditional)));
    // Meanwhile plain appends keep committing, for as long as the checks run: the writer
    // never runs those scans. Were it to run them, one round would wait for the scans and
    // take about as long as all the checks; the bound is relative so that a loaded machine
    // (the whole suite runs at once) slows both sides alike.
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    while !checks.is_finished() {
        slowest = slowest.max(others_are_served(&client, &server, &format!("p{served}")).await);
        served += 1;
    }
    checks.await.unwrap();
    let checking = started.elapsed();
    // Served behind the scans, at most one round would fit in each of the four.
    assert!(
        served >= 8,
        "only {served} rounds of /healthz and an append in {checking:?} of checks"
    );
    assert!(
        slowest * 3 < checking,
        "one round of /healthz and an append took {slowest:?}, the checks {checking:?}"
    );
    // A condition that matches reports the matching positions.
    let r = client
        .post(server.url("/v1/append"))
        .json(&json!({
            "events": [{"specversion": "1.0", "id": "m1", "source": "checker",
                        "type": "noted", "subject": "log/checked", "data": {}}],
            "conditions": {"fail_if_events_match": {"data": "$..[?@.zz == 1]"}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["positions"][0], 1);
    server.stop().await;
}
