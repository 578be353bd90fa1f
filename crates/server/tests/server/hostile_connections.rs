//! Connection hygiene: a client that sends nothing, or trickles its headers, is let go after
//! the header timeout; connections beyond the cap are closed at once and counted.

use crate::common;

use std::time::{Duration, Instant};

use loom_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::Server;

/// Waits until the server closes `stream` (EOF or reset), at most `bound`; how long it took.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(bound, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was still open after {bound:?}"),
        }
    }
}

fn config() -> Config {
    Config {
        header_timeout: Duration::from_millis(300),
        max_connections: 4,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_clients_are_let_go_after_the_header_timeout() {
    let server = Server::start(config()).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut trickling = TcpStream::connect(server.addr).await.unwrap();
    trickling
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let slow = tokio::spawn(async move {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trickling.write_all(b"x-a: b\r\n").await.is_err() {
                break;
            }
        }
        closed_within(&mut trickling, Duration::from_secs(3)).await
    });
    let took = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    let took = slow.await.unwrap();
    assert!(took < Duration::from_secs(3));
    // A client that sends its request is served, and its kept-alive connection is let go
    // once it sits idle for the header timeout.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: loom\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let took = closed_within(&mut kept, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let server = Server::start(config()).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    let took = closed_within(&mut over, Duration::from_millis(250)).await;
    assert!(took < Duration::from_millis(250));
    // Once the idle ones are let go, new clients are served again, and the refusal counted.
    for mut c in held {
        closed_within(&mut c, Duration::from_secs(3)).await;
    }
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("loom_connections_refused_total "))
        .unwrap();
    assert!(refused.parse::<u64>().unwrap() >= 1, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_and_silent_connections_at_once() {
    let server = Server::start(Config::default()).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert!(
            client
                .get(server.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
    }
    // The client keeps its connection alive (idle, in its pool) while the server stops, and
    // another has connected without sending anything yet.
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    server.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    drop(client);
}
