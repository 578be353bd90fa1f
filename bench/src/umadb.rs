//! UmaDB rows for `loom-bench peers` (cargo feature `umadb`; a child module of `peers`).
//!
//! The installed `umadb` server binary (`cargo install umadb --locked`; found through
//! `UMADB_BIN`, then `PATH`, then `$CARGO_HOME/bin` or `~/.cargo/bin`) is started per workload
//! on a free loopback port with a fresh data dir (temp dir under `--dir`), with its default
//! settings (blocking writer, no page cache), and killed when the workload ends. The benchmark
//! talks to it through `umadb-client` (gRPC, async), one client (HTTP/2 connection) per writer.
//!
//! A stream is a tag: every event carries `stream:bench/N` and type `was_credited`, with the
//! same ~256-byte JSON data as the other systems. Unconditional appends (W1–W3) send no append
//! condition. Conditional appends (W4) read the stream's last event (query on the stream tag,
//! backwards, limit 1: its position, or none) and append with the DCB condition "fail if any
//! event matches the stream tag after that position"; an integrity error is a conflict.
//! Catch-up (W5) reads every event through the client (read with no query, 4096 events per
//! response, the server's maximum) and counts or decodes the data and sums `amount`.
//!
//! Durability (umadb-core 0.7.8 source, `Mvcc::commit` and the default blocking writer
//! thread): a commit writes the dirty pages, `fdatasync`s, writes the header page and
//! `fdatasync`s again, and only then are the appends in that batch acknowledged; concurrent
//! appends queued at the writer thread are committed together (up to 2048 events).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use umadb_client::{AsyncUmaDbClient, UmaDbClient};
use umadb_dcb::{
    DcbAppendCondition, DcbError, DcbEvent, DcbEventStoreAsync, DcbQuery, DcbQueryItem,
};

use super::{
    Amount, Args, Row, STREAMS, ZIPF_S, ZIPF_STREAMS, Zipf, best_of_3, catchup_row, conflict_note,
    data_text, owned_stream, temp_in,
};

const SYSTEM: &str = "UmaDB 0.7.8";
/// What an acknowledged append means (see the module docs).
const DURABLE: &str = "durable: acknowledged after the commit's fdatasync of the data pages and \
     then of the header page (group commit)";

/// Where to find the server binary and how to run the workloads.
#[derive(Debug)]
pub(super) struct Peer {
    bin: PathBuf,
    dir: Option<PathBuf>,
    seconds: f64,
    events: u64,
}

/// One running server with a fresh store, killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("UMADB_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin"));
    on_path
        .into_iter()
        .chain(cargo_bin)
        .map(|d| d.join("umadb"))
        .find(|p| p.is_file())
}

fn stream_tag(s: usize) -> String {
    format!("stream:bench/{s}")
}

fn stream_event(s: usize) -> DcbEvent {
    DcbEvent::default()
        .event_type("was_credited")
        .tags([stream_tag(s)])
        .data(data_text(s).into_bytes())
}

fn stream_query(s: usize) -> DcbQuery {
    DcbQuery::new().item(DcbQueryItem::new().tags([stream_tag(s)]))
}

impl Peer {
    /// The peer if the `umadb` binary is found, else `None` with a message on stderr.
    pub(super) fn find(args: &Args) -> Option<Peer> {
        match find_bin() {
            Some(bin) => Some(Peer {
                bin,
                dir: args.dir.clone(),
                seconds: args.seconds,
                events: args.events,
            }),
            None => {
                eprintln!(
                    "UmaDB server binary `umadb` not found (UMADB_BIN, PATH, ~/.cargo/bin); \
                     its rows are left out. Install it with `cargo install umadb --locked`."
                );
                None
            }
        }
    }

    /// Starts a server with an empty store on a free loopback port and waits until it listens.
    fn start(&self) -> Server {
        let dir = temp_in(&self.dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.path().join("umadb.log")).expect("umadb log");
        let mut cmd = Command::new(&self.bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("UMADB_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db-path")
            .arg(dir.path().join("uma.db"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("umadb.log")).unwrap_or_default();
                panic!("umadb exited ({status}) before listening: {log}");
            }
            assert!(Instant::now() < deadline, "umadb did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// W1–W3: `writers` writers, `batch` events per unconditional append, each writer
    /// appending to its own streams.
    pub(super) async fn appends(&self, workload: &str, writers: usize, batch: usize) -> Row {
        let server = self.start();
        let mut clients = Vec::new();
        for _ in 0..writers {
            clients.push(connect(&server.url).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(w, client)| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let events = (0..batch)
                            .map(|b| stream_event(owned_stream(w, writers, i * batch + b)))
                            .collect();
                        let t = Instant::now();
                        client.append(events, None, None).await.expect("append");
                        lat.push(t.elapsed());
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(self.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut lat = Vec::new();
        for h in handles {
            lat.extend(h.await.expect("writer"));
        }
        let elapsed = started.elapsed();
        let events = lat.len() as u64 * batch as u64;
        Row::from_latencies(workload, SYSTEM, events, elapsed, lat, DURABLE.into())
    }

    /// W4: `writers` writers, conditional appends on Zipf-drawn streams.
    pub(super) async fn conditional(&self, writers: usize) -> Row {
        let server = self.start();
        let mut clients = Vec::new();
        for _ in 0..writers {
            clients.push(connect(&server.url).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(w, client)| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut zipf = Zipf::new(ZIPF_STREAMS, ZIPF_S, w as u64 + 1);
                    let (mut lat, mut ok, mut conflicts) = (Vec::new(), 0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let k = zipf.sample();
                        let query = stream_query(k);
                        let t = Instant::now();
                        let mut read = client
                            .read(Some(query.clone()), None, true, Some(1))
                            .await
                            .expect("read");
                        let last = read
                            .next_batch()
                            .await
                            .expect("read")
                            .last()
                            .map(|e| e.position);
                        let condition = DcbAppendCondition::new(query).after(last);
                        match client
                            .append(vec![stream_event(k)], Some(condition), None)
                            .await
                        {
                            Ok(_) => ok += 1,
                            Err(DcbError::IntegrityError(_)) => conflicts += 1,
                            Err(e) => panic!("append: {e}"),
                        }
                        lat.push(t.elapsed());
                    }
                    (lat, ok, conflicts)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(self.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let (mut lat, mut ok, mut conflicts) = (Vec::new(), 0, 0);
        for h in handles {
            let (l, o, c) = h.await.expect("writer");
            lat.extend(l);
            ok += o;
            conflicts += c;
        }
        let elapsed = started.elapsed();
        let note = conflict_note(ok, conflicts, elapsed)
            .replace("read revision", "read stream's last position (tag query)");
        Row::from_latencies(
            "W4 conditional, 4 writers, Zipf",
            SYSTEM,
            ok,
            elapsed,
            lat,
            note,
        )
    }

    /// W5: loads `events` events (batches of 1000), then reads them all through the client,
    /// counting (W5a) and decoding the data and summing `amount` (W5b), best of 3 each.
    pub(super) fn catchup(&self, rt: &tokio::runtime::Runtime, rows: &mut Vec<Row>) {
        let server = self.start();
        let (load, reader) = rt.block_on(async {
            let client = connect(&server.url).await;
            let t = Instant::now();
            let mut written = 0u64;
            while written < self.events {
                let n = (self.events - written).min(1000);
                let events = (0..n)
                    .map(|b| stream_event(((written + b) % STREAMS as u64) as usize))
                    .collect();
                client.append(events, None, None).await.expect("load");
                written += n;
            }
            let load = t.elapsed();
            let reader = UmaDbClient::new(server.url.clone())
                .batch_size(4096)
                .connect_async()
                .await
                .expect("connect to umadb");
            (load, reader)
        });
        eprintln!(
            "umadb: loaded {} events in {:.1} s ({:.0} events/s, batches of 1000)",
            self.events,
            load.as_secs_f64(),
            self.events as f64 / load.as_secs_f64()
        );
        let count = best_of_3(|| rt.block_on(read_all(&reader, false)));
        rows.push(catchup_row(
            "W5a catch-up: count 1M",
            SYSTEM,
            count,
            "all events read through umadb-client (gRPC stream, 4096 per response), counted",
        ));
        let sum = best_of_3(|| rt.block_on(read_all(&reader, true)));
        rows.push(catchup_row(
            "W5b catch-up: decode JSON, sum amount",
            SYSTEM,
            sum,
            "all events read through umadb-client, data decoded with serde_json, summed",
        ));
        rt.block_on(async move { drop(reader) });
        drop(server);
    }
}

async fn connect(url: &str) -> AsyncUmaDbClient {
    UmaDbClient::new(url.to_string())
        .connect_async()
        .await
        .expect("connect to umadb")
}

/// Reads every event; returns (events, count or sum of `amount`).
async fn read_all(client: &AsyncUmaDbClient, decode: bool) -> (u64, i64) {
    let mut read = client.read(None, None, false, None).await.expect("read");
    let (mut n, mut sum) = (0u64, 0i64);
    loop {
        let batch = read.next_batch().await.expect("read batch");
        if batch.is_empty() {
            break;
        }
        n += batch.len() as u64;
        if decode {
            for e in &batch {
                sum += serde_json::from_slice::<Amount>(&e.event.data)
                    .expect("amount")
                    .amount;
            }
        }
    }
    (n, if decode { sum } else { n as i64 })
}
