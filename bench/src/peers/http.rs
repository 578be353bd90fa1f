//! W1–W3 over HTTP: how users reach Loom. Each row starts the release `loom serve` (a child
//! process, its own empty data directory under `--dir`, loopback) and loads it from this
//! process with `writers` keep-alive HTTP/1.1 connections, every request a `POST /v1/events` —
//! structured mode for one event, batch mode for more — answered `201` only once durable.
//! Latency is the request's round trip.
//!
//! Each connection is hyper's client connection, driven by a task of its own, as
//! tokio-postgres drives each of the PostgreSQL rows' connections: client and server share
//! the machine's two cores, so a load client that spends more per request than PostgreSQL's
//! would take CPU from the server under test. (A `reqwest` client per writer, as these rows
//! used before, also parses the URL, looks its connection up in a pool and hands the request
//! between tasks on every request.)

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::{Args, Row, owned_stream, temp_in};

/// System name of the rows.
pub(super) const SYSTEM: &str = "Loom (HTTP, `loom serve`)";

/// A running `loom serve`, stopped when dropped.
pub(super) struct LoomServe {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for LoomServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release `loom` binary: `LOOM_BIN`, or the workspace's `target/release/loom`.
fn binary() -> Result<PathBuf, String> {
    let bin = std::env::var_os("LOOM_BIN").map_or_else(
        || loom_testkit::workspace_root().join("target/release/loom"),
        PathBuf::from,
    );
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: `cargo build --release -p loom-cli` (scripts/bench-peers.sh does)",
            bin.display()
        ))
    }
}

impl LoomServe {
    /// Starts a server on a free loopback port with the open entity `bench` registered.
    pub(super) async fn start(args: &Args) -> Result<LoomServe, String> {
        let dir = temp_in(&args.dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(binary()?)
            .arg("serve")
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove("LOOM_TOKENS")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting loom serve: {e}"))?;
        let server = LoomServe {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match http.get(format!("{}/healthz", server.url)).send().await {
                Ok(r) if r.status().is_success() => break,
                _ if Instant::now() > deadline => return Err("loom serve did not start".into()),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let put = http
            .put(format!("{}/v1/entities/bench", server.url))
            .header("content-type", "application/json")
            .body(r#"{"open": true}"#)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !put.status().is_success() {
            return Err(format!("registering bench: {}", put.status()));
        }
        Ok(server)
    }
}

/// One keep-alive HTTP/1.1 connection to the server.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(url: &str) -> Result<Connection, String> {
        let host = url.trim_start_matches("http://").to_owned();
        let tcp = tokio::net::TcpStream::connect(&host)
            .await
            .map_err(|e| format!("connecting to {host}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP handshake with {host}: {e}"))?;
        // Ends when `sender` is dropped, or the server closes the connection.
        tokio::spawn(connection);
        Ok(Connection { sender, host })
    }

    /// POSTs `body` to `path` and reads the whole answer; its status, or why there is none.
    async fn post(&mut self, path: &str, content_type: &str, body: String) -> Result<u16, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}

/// The in-process rows' event (`super::event`) in CloudEvents JSON: the same events both ways.
fn event_json(stream: usize, id: &str) -> String {
    serde_json::to_string(&super::event(stream, id)).expect("an event serializes")
}

/// `writers` connections appending `batch` events per request for `seconds`.
pub(super) async fn appends(
    args: &Args,
    workload: &str,
    writers: usize,
    batch: usize,
) -> Result<Row, String> {
    let server = LoomServe::start(args).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (stop, url) = (stop.clone(), server.url.clone());
            tokio::spawn(async move {
                let mut connection = Connection::open(&url).await?;
                let (mut lat, mut failed) = (Vec::new(), 0u64);
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let events: Vec<String> = (0..batch)
                        .map(|b| {
                            let s = owned_stream(w, writers, i * batch + b);
                            event_json(s, &format!("{w}-{i}-{b}"))
                        })
                        .collect();
                    let (ct, body) = if batch == 1 {
                        ("application/cloudevents+json", events.concat())
                    } else {
                        (
                            "application/cloudevents-batch+json",
                            format!("[{}]", events.join(",")),
                        )
                    };
                    let t = Instant::now();
                    match connection.post("/v1/events", ct, body).await {
                        Ok(201) => lat.push(t.elapsed()),
                        Ok(_) => failed += 1,
                        // A lost connection is opened again, and counts as a failed request.
                        Err(_) => {
                            failed += 1;
                            connection = Connection::open(&url).await?;
                        }
                    }
                    i += 1;
                }
                Ok::<_, String>((lat, failed))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await.map_err(|e| e.to_string())??;
        lat.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    let events = lat.len() as u64 * batch as u64;
    Ok(Row::from_latencies(
        workload,
        SYSTEM,
        events,
        elapsed,
        lat,
        format!(
            "{} per request, keep-alive, client and server on the same 2 cores; {failed} failed",
            if batch == 1 {
                "structured mode".to_owned()
            } else {
                format!("batch mode, {batch} events")
            }
        ),
    ))
}
