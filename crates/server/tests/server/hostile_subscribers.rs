//! Stalled subscribers hold a bounded number of bytes: a subscription's page, and a
//! streamed read's step, stop at about 1 MiB of events, and resume after the last one. A JSON
//! page of a list read ends at `max_page_bytes` and links to the rest.

use crate::common;

use std::time::Duration;

use loom_ledger::{AppendRequest, Event};
use loom_server::Config;
use serde_json::json;

use common::Server;

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `n` events of about 100 KB each on `log/big`.
fn big_history(server: &Server, n: usize) {
    let pad = "x".repeat(100_000);
    for chunk in 0..n.div_ceil(10) {
        let events = (0..10)
            .map(|i| {
                let k = chunk * 10 + i;
                Event::new(
                    "big",
                    format!("{k}"),
                    "noted",
                    "log/big",
                    json!({"k": k, "pad": pad}),
                )
            })
            .collect();
        server
            .state
            .ledger()
            .append(AppendRequest::new(events))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_every_large_event_across_byte_bounded_pages() {
    let server = Server::start(Config::default()).await;
    big_history(&server, 30);
    let text = reqwest::Client::new()
        .get(server.url("/v1/events?subject=log/big&limit=1000"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let positions: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, (1..=30).collect::<Vec<u64>>(), "streamed read");

    let mut response = reqwest::Client::new()
        .get(server.url("/v1/subscribe?subject=log/big"))
        .send()
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = String::new();
    while seen.len() < 30 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("the subscription went quiet")
            .unwrap()
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            if let Some(id) = message.lines().find_map(|l| l.strip_prefix("id:")) {
                seen.push(id.trim().parse::<u64>().unwrap());
            }
        }
    }
    assert_eq!(seen, (1..=30).collect::<Vec<u64>>(), "subscription");
    server.stop().await;
}

/// Walks `GET /v1/events` by its `Link` headers; the positions of every page.
async fn walk_pages(server: &Server, first: &str) -> Vec<Vec<u64>> {
    let client = reqwest::Client::new();
    let mut pages = Vec::new();
    let mut next = Some(server.url(first));
    while let Some(url) = next.take() {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        next = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned())
            .map(|l| server.url(l.trim_start_matches('<').split('>').next().unwrap()));
        let page: Vec<serde_json::Value> = r.json().await.unwrap();
        pages.push(
            page.iter()
                .map(|e| e["position"].as_u64().unwrap())
                .collect(),
        );
        assert!(pages.len() <= 100, "the links never end");
    }
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_page_of_large_events_ends_at_the_byte_bound_and_links_to_the_rest() {
    let server = Server::start(Config {
        max_page_bytes: 1 << 20,
        ..Config::default()
    })
    .await;
    big_history(&server, 30); // 30 events of ~100 KB: ~3 MB
    let pages = walk_pages(&server, "/v1/events?limit=1000").await;
    assert!(pages.len() >= 3, "{pages:?}");
    for page in &pages[..pages.len() - 1] {
        // Cut once the page holds 1 MiB: about ten of these events, never all 30.
        assert!((8..=12).contains(&page.len()), "{pages:?}");
    }
    let all: Vec<u64> = pages.concat();
    assert_eq!(all, (1..=30).collect::<Vec<_>>());
    // Backwards too, from the newest.
    let back = walk_pages(&server, "/v1/events?limit=1000&backwards=true").await;
    assert_eq!(back.concat(), (1..=30).rev().collect::<Vec<_>>());
    // A page bound by its limit still ends there.
    let small = walk_pages(&server, "/v1/events?limit=4").await;
    assert_eq!(small[0], [1, 2, 3, 4]);
    server.stop().await;
}

/// Set in the child process that measures memory on its own.
const ISOLATED: &str = "LOOM_TEST_ISOLATED";

/// RSS is the whole process's: tests running beside this one would count too. Outside the
/// isolated child, runs this test alone in a child process of the same binary and checks it
/// passed; returns true in the child, which then does the measuring.
fn in_own_process(test: &str) -> bool {
    if std::env::var_os(ISOLATED).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(ISOLATED, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{test} failed alone:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run alone:\n{stdout}"
    );
    eprint!("{stderr}");
    false
}

#[test]
fn twenty_stalled_subscribers_hold_a_bounded_amount_of_memory() {
    if in_own_process(
        "hostile_subscribers::twenty_stalled_subscribers_hold_a_bounded_amount_of_memory",
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(stalled_subscribers());
    }
}

async fn stalled_subscribers() {
    let server = Server::start(Config::default()).await;
    big_history(&server, 100); // ~10 MB
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let mut held = Vec::new();
    for _ in 0..20 {
        // Opened, never read: each server stream fills its page and waits.
        let r = reqwest::Client::new()
            .get(server.url("/v1/subscribe?subject=log/big"))
            .send()
            .await
            .unwrap();
        held.push(r);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = rss_kib().saturating_sub(before);
    eprintln!("20 stalled subscribers over ~10 MB of history: RSS +{grown} KiB");
    // A page of 500 such events would be ~50 MB per subscriber; pages are 1 MiB now.
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    drop(held);
    server.stop().await;
}
