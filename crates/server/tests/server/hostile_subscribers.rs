//! Stalled subscribers hold a bounded number of bytes: a subscription's page, and a
//! streamed read's step, stop at about 1 MiB of events, and resume after the last one.

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
