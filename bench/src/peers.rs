//! `peers`: Loom's ledger (in-process) side by side with PostgreSQL
//! in the same run, on the same disk, with the same durability (fsync on commit).
//!
//! * **W1** durable floor: 1 writer, 1 event per append, ~256 bytes of JSON data.
//! * **W2** concurrency sweep: 1, 4, 16, 64 writers, 1 event per append, across 10k streams.
//! * **W3** batch sweep: 1, 10, 100, 1000 events per append, 1 writer.
//!
//!   W1–W3 run twice for Loom: in process (the ledger library) and over HTTP (the release
//!   `loom serve` loaded through keep-alive connections, see [`http`]).
//! * **W4** conditional appends under contention: 4 writers, each attempt reads the stream's
//!   revision and appends with that expected revision, streams drawn Zipf(s = 1.1) from 100.
//! * **W5** catch-up over 1M stored events: (a) count, (b) decode the JSON data and sum a field.
//!
//! PostgreSQL: the subcommand starts its own cluster (`initdb` + `pg_ctl`, as the `postgres`
//! user when run as root) in a temp dir on loopback with `fsync=on`, `synchronous_commit=on`,
//! and stops it at the end. Table: `position bigserial primary key, stream text, revision
//! bigint, type text, data jsonb, unique (stream, revision)`; one `tokio-postgres` connection
//! per writer. Unconditional appends (W1–W3) insert the next revision tracked by the writer
//! (each writer owns its streams, so no read is needed); conditional appends (W4) read
//! `max(revision)` and insert `revision + 1` — a unique violation is a conflict.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loom_engine::{At, Engine, EngineConfig, OnError, Partition, ProjectionSpec};
use loom_ledger::{
    AppendError, AppendRequest, CompiledSelector, DataRef, EventRecord, EventView,
    ExpectedRevision, Ledger, LedgerOptions, ReadError, ReadOptions, Selector,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use super::{event, ms, open, percentile};

mod http;
mod w6;

#[cfg(feature = "umadb")]
#[path = "umadb.rs"]
mod umadb;

const STREAMS: usize = 10_000;
const ZIPF_STREAMS: usize = 100;
const ZIPF_S: f64 = 1.1;

/// `peers` options.
#[derive(Debug)]
pub struct Args {
    seconds: f64,
    events: u64,
    dir: Option<PathBuf>,
    pg_bin: PathBuf,
    writers: Vec<usize>,
    batches: Vec<usize>,
    /// Workloads to run (`W1`…`W6`); all when empty.
    only: Vec<String>,
    /// Loom's page cache for W5 (bytes): 1 GiB unless `--cache` says otherwise, so that the
    /// 1M-event history (~570 MB) is read from memory, as PostgreSQL's (shared_buffers
    /// 512 MB plus the OS page cache) is.
    cache: usize,
    /// How many times W5 runs each wasm engine catch-up (its row gives the median): the
    /// engine rows are single runs otherwise, and this machine is noisy.
    catchup_runs: usize,
}

impl Args {
    fn runs(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w.eq_ignore_ascii_case(workload))
    }
}

/// Parses `peers` flags.
pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        seconds: 2.0,
        events: 1_000_000,
        dir: None,
        pg_bin: PathBuf::from("/usr/lib/postgresql/15/bin"),
        writers: vec![1, 4, 16, 64],
        batches: vec![1, 10, 100, 1000],
        only: Vec::new(),
        cache: 1 << 30,
        catchup_runs: 1,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value()?.parse().map_err(|_| "bad --seconds")?,
            "--events" => args.events = value()?.parse().map_err(|_| "bad --events")?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--pg-bin" => args.pg_bin = PathBuf::from(value()?),
            "--writers" => args.writers = super::parse_list(&value()?)?,
            "--batches" => args.batches = super::parse_list(&value()?)?,
            "--only" => {
                args.only = value()?.split(',').map(|w| w.trim().to_string()).collect();
                if let Some(bad) = args.only.iter().find(|w| {
                    !["w1", "w2", "w3", "w4", "w5", "w6"].contains(&w.to_lowercase().as_str())
                }) {
                    return Err(format!("--only: unknown workload {bad} (W1 … W6)"));
                }
            }
            "--catchup-runs" => {
                args.catchup_runs = value()?.parse().map_err(|_| "bad --catchup-runs")?;
                if args.catchup_runs == 0 {
                    return Err("--catchup-runs must be at least 1".into());
                }
            }
            "--cache" => {
                let mib: usize = value()?.parse().map_err(|_| "bad --cache (MiB)")?;
                args.cache = mib << 20;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// One measured line of the table.
struct Row {
    workload: String,
    system: String,
    eps: f64,
    p50: Option<Duration>,
    p99: Option<Duration>,
    note: String,
}

impl Row {
    fn from_latencies(
        workload: &str,
        system: &str,
        events: u64,
        elapsed: Duration,
        mut lat: Vec<Duration>,
        note: String,
    ) -> Row {
        lat.sort_unstable();
        Row {
            workload: workload.into(),
            system: system.into(),
            eps: events as f64 / elapsed.as_secs_f64(),
            p50: Some(percentile(&lat, 0.5)),
            p99: Some(percentile(&lat, 0.99)),
            note,
        }
    }
}

fn temp_in(dir: &Option<PathBuf>) -> tempfile::TempDir {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("create --dir");
            tempfile::tempdir_in(d).expect("temp dir in --dir")
        }
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// The ~256-byte JSON data every system stores (the same as [`super::event`]'s).
fn data_text(stream: usize) -> String {
    serde_json::json!({
        "account": format!("acct-{stream:06}"),
        "amount": 1234,
        "currency": "EUR",
        "memo": "x".repeat(180),
    })
    .to_string()
}

/// Writer `w` of `writers` owns the streams `s % writers == w`; its `i`-th append's stream.
fn owned_stream(w: usize, writers: usize, i: usize) -> usize {
    w + writers * (i % (STREAMS / writers))
}

#[derive(serde::Deserialize)]
struct Amount {
    amount: i64,
}

/// Zipf(s) over `0..n` by inverse CDF, with a small xorshift generator (no dependency).
struct Zipf {
    cdf: Vec<f64>,
    state: u64,
}

impl Zipf {
    fn new(n: usize, s: f64, seed: u64) -> Zipf {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Zipf {
            cdf,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }
    fn sample(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let u = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

// ---------------------------------------------------------------- Loom

fn loom_appends(args: &Args, workload: &str, writers: usize, batch: usize) -> Row {
    let dir = temp_in(&args.dir);
    let ledger = Arc::new(open(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let ledger = ledger.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let events = (0..batch)
                        .map(|b| {
                            let s = owned_stream(w, writers, i * batch + b);
                            event(s, &format!("{w}-{i}-{b}"))
                        })
                        .collect();
                    let t = Instant::now();
                    ledger.append(AppendRequest::new(events)).expect("append");
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    let events = lat.len() as u64 * batch as u64;
    Row::from_latencies(
        workload,
        "Loom (ledger lib)",
        events,
        elapsed,
        lat,
        String::new(),
    )
}

fn loom_conditional(args: &Args, writers: usize) -> Row {
    let dir = temp_in(&args.dir);
    let ledger = Arc::new(open(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let ledger = ledger.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut zipf = Zipf::new(ZIPF_STREAMS, ZIPF_S, w as u64 + 1);
                let (mut lat, mut ok, mut conflicts) = (Vec::new(), 0u64, 0u64);
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let k = zipf.sample();
                    let subject = format!("bench/{k}");
                    let t = Instant::now();
                    let rev = ledger.stream_revision(&subject).expect("revision");
                    let req = AppendRequest::new(vec![event(k, &format!("{w}-{i}"))])
                        .expect(subject, ExpectedRevision::Exact(rev));
                    match ledger.append(req) {
                        Ok(_) => ok += 1,
                        Err(AppendError::Conflict(_)) => conflicts += 1,
                        Err(e) => panic!("append: {e}"),
                    }
                    lat.push(t.elapsed());
                    i += 1;
                }
                (lat, ok, conflicts)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut ok, mut conflicts) = (Vec::new(), 0, 0);
    for h in handles {
        let (l, o, c) = h.join().unwrap();
        lat.extend(l);
        ok += o;
        conflicts += c;
    }
    let elapsed = started.elapsed();
    let note = conflict_note(ok, conflicts, elapsed);
    Row::from_latencies(
        "W4 conditional, 4 writers, Zipf",
        "Loom (ledger lib)",
        ok,
        elapsed,
        lat,
        note,
    )
}

fn conflict_note(ok: u64, conflicts: u64, elapsed: Duration) -> String {
    let attempts = ok + conflicts;
    format!(
        "conflicts {:.1}% of {:.0} attempts/s; latency = read revision + append",
        100.0 * conflicts as f64 / attempts.max(1) as f64,
        attempts as f64 / elapsed.as_secs_f64()
    )
}

/// Fills a ledger with `n` events (batches of 1000) and returns it with load time.
fn loom_load(args: &Args) -> (tempfile::TempDir, Ledger, Duration) {
    let dir = temp_in(&args.dir);
    let ledger = super::open_with(
        dir.path(),
        LedgerOptions {
            cache_bytes: args.cache,
            ..LedgerOptions::default()
        },
    );
    let t = Instant::now();
    let mut written = 0u64;
    while written < args.events {
        let n = (args.events - written).min(1000);
        let events = (0..n)
            .map(|b| {
                let p = written + b;
                event((p % STREAMS as u64) as usize, &format!("s-{p}"))
            })
            .collect();
        ledger.append(AppendRequest::new(events)).expect("append");
        written += n;
    }
    (dir, ledger, t.elapsed())
}

/// The median of `n` runs of `f` (which returns its time, events seen and a checksum), and
/// how the row's note describes them: "one run", or every run's events/s.
fn median_of(
    n: usize,
    events: u64,
    mut f: impl FnMut() -> (Duration, u64, i64),
) -> ((Duration, u64, i64), String) {
    let mut runs: Vec<(Duration, u64, i64)> = (0..n).map(|_| f()).collect();
    if n == 1 {
        return (runs[0], "one run".into());
    }
    let rates: Vec<String> = runs
        .iter()
        .map(|(d, _, _)| format!("{:.2}M", events as f64 / d.as_secs_f64() / 1e6))
        .collect();
    runs.sort_by_key(|(d, _, _)| *d);
    (
        runs[n / 2],
        format!("median of {n}: {} events/s", rates.join(" / ")),
    )
}

/// Best of three runs of `f`, which returns (events seen, a checksum).
fn best_of_3(mut f: impl FnMut() -> (u64, i64)) -> (Duration, u64, i64) {
    let mut best = (Duration::MAX, 0, 0);
    for _ in 0..3 {
        let t = Instant::now();
        let (n, sum) = f();
        let d = t.elapsed();
        if d < best.0 {
            best = (d, n, sum);
        }
    }
    best
}

fn catchup_row(workload: &str, system: &str, run: (Duration, u64, i64), what: &str) -> Row {
    catchup_row_of(workload, system, run, "best of 3", what)
}

fn catchup_row_of(
    workload: &str,
    system: &str,
    (d, n, sum): (Duration, u64, i64),
    runs: &str,
    what: &str,
) -> Row {
    Row {
        workload: workload.into(),
        system: system.into(),
        eps: n as f64 / d.as_secs_f64(),
        p50: None,
        p99: None,
        note: format!(
            "{n} events in {:.3} s ({runs}), result {sum}; {what}",
            d.as_secs_f64()
        ),
    }
}

/// Folds every event natively: the log split into one position range per core, each read with
/// `Ledger::scan_views` (views borrowed from the stored records, nothing copied) and folded
/// with `f`; returns (events, sum of `f`).
fn parallel_fold(ledger: &Ledger, f: impl Fn(&EventView<'_>) -> i64 + Sync) -> (u64, i64) {
    split_fold(ledger, |all, opts| {
        let (mut n, mut sum) = (0u64, 0i64);
        ledger
            .scan_views(all, opts, |e| {
                sum += f(e);
                n += 1;
                true
            })
            .expect("read");
        (n, sum)
    })
}

/// Runs `part(selector of all events, position range)` on one thread per core, the ranges
/// splitting the log evenly, and adds up the (events, sum) they return.
fn split_fold(
    ledger: &Ledger,
    part: impl Fn(&CompiledSelector, ReadOptions) -> (u64, i64) + Sync,
) -> (u64, i64) {
    let all = Selector::all().compile().expect("selector");
    let head = ledger.head();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let per = head.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (all, part) = (&all, &part);
                scope.spawn(move || {
                    let (after, end) = (t * per, ((t + 1) * per).min(head));
                    let opts = ReadOptions {
                        after,
                        before: Some(end + 1),
                        limit: usize::MAX,
                        backwards: false,
                    };
                    part(all, opts)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fold thread"))
            .fold((0, 0), |(n, s), (n2, s2)| (n + n2, s + s2))
    })
}

/// [`parallel_fold`] with [`Ledger::scan_records`]: each event's record is read lazily, and
/// `f` checks only the attributes it asks for.
fn parallel_fold_records(
    ledger: &Ledger,
    f: impl Fn(&EventRecord<'_>) -> Result<i64, ReadError> + Sync,
) -> (u64, i64) {
    split_fold(ledger, |all, opts| {
        let (mut n, mut sum) = (0u64, 0i64);
        ledger
            .scan_records(all, opts, |r| {
                sum += f(r).expect("record");
                n += 1;
                true
            })
            .expect("read");
        (n, sum)
    })
}

/// The time until a projection of the wasm example `example` over entity `bench` has folded
/// all `events`, and the sum over its states of `field` (checked against the other systems).
fn engine_fold(
    ledger: &Arc<Ledger>,
    example: &str,
    partition: Partition,
    field: &str,
    events: u64,
) -> (Duration, u64, i64) {
    let engine = Engine::open(ledger.clone(), EngineConfig::default()).expect("engine");
    let id = engine
        .modules()
        .upload(&loom_testkit::example_wasm(example))
        .expect("upload")
        .record
        .id;
    let spec = ProjectionSpec {
        module: id,
        reducer: None,
        selector: Selector {
            entity: Some("bench".into()),
            ..Selector::default()
        },
        partition,
        strict: false,
        on_error: OnError::Stop,
    };
    let p = engine.projections();
    let t = Instant::now();
    p.put("w5", spec).expect("put");
    p.wait_for("w5", ledger.head(), Duration::from_secs(3600))
        .expect("caught up");
    let took = t.elapsed();
    let applied = p.status("w5").expect("status").active.events_applied;
    assert_eq!(applied, events, "every event folded once");
    let value = |key: Option<&str>| -> i64 {
        let v = p.state("w5", key, At::Now).expect("state");
        let state: serde_json::Value = serde_json::from_slice(&v.state).expect("state JSON");
        state[field].as_i64().expect("a number")
    };
    let sum = match partition {
        Partition::Single => value(None),
        Partition::Stream => {
            let mut sum = 0;
            let mut after: Option<String> = None;
            loop {
                let keys = p.keys("w5", after.as_deref(), 1000).expect("keys");
                let Some(last) = keys.last().cloned() else {
                    break;
                };
                sum += keys.iter().map(|k| value(Some(k))).sum::<i64>();
                after = Some(last);
            }
            sum
        }
    };
    p.delete("w5").expect("delete");
    engine.shutdown();
    (took, applied, sum)
}

fn loom_catchup(args: &Args, rows: &mut Vec<Row>) {
    let (_dir, ledger, load) = loom_load(args);
    let ledger = Arc::new(ledger);
    eprintln!(
        "loom: loaded {} events in {:.1} s ({:.0} events/s, batches of 1000)",
        args.events,
        load.as_secs_f64(),
        args.events as f64 / load.as_secs_f64()
    );
    let count = best_of_3(|| parallel_fold(&ledger, |_| 1));
    rows.push(catchup_row(
        "W5a catch-up: count 1M",
        "Loom (ledger lib, views)",
        count,
        "`scan_views` (no copy, every attribute checked) over 2 position ranges on 2 threads, native count",
    ));
    let count = best_of_3(|| parallel_fold_records(&ledger, |_| Ok(1)));
    rows.push(catchup_row(
        "W5a catch-up: count 1M",
        "Loom (ledger lib, lazy records)",
        count,
        "`scan_records` (each record's header read, no attribute asked for) on 2 threads, native count",
    ));
    let amount = |data: DataRef<'_>| match data {
        DataRef::Json(text) => serde_json::from_str::<Amount>(text).expect("amount").amount,
        _ => 0,
    };
    let sum = best_of_3(|| parallel_fold(&ledger, |e| amount(e.data)));
    rows.push(catchup_row(
        "W5b catch-up: decode JSON, sum amount",
        "Loom (ledger lib, views)",
        sum,
        "`scan_views` on 2 threads, serde_json decode + sum (native)",
    ));
    let sum = best_of_3(|| parallel_fold_records(&ledger, |r| r.data().map(amount)));
    rows.push(catchup_row(
        "W5b catch-up: decode JSON, sum amount",
        "Loom (ledger lib, lazy records)",
        sum,
        "`scan_records` on 2 threads, data checked as UTF-8 and decoded with serde_json + sum (native)",
    ));
    let (stream, runs) = median_of(args.catchup_runs, args.events, || {
        engine_fold(&ledger, "bank", Partition::Stream, "balance", args.events)
    });
    rows.push(catchup_row_of(
        "W5b catch-up: decode JSON, sum amount",
        "Loom (engine, wasm `bank`, per stream)",
        stream,
        &runs,
        "projection catch-up: wasm `bank` folds each account's credits (serde in wasm), 10k states committed; result = sum of balances",
    ));
    let (single, runs) = median_of(args.catchup_runs, args.events, || {
        engine_fold(
            &ledger,
            "bank-stats",
            Partition::Single,
            "total_deposits",
            args.events,
        )
    });
    rows.push(catchup_row_of(
        "W5b catch-up: decode JSON, sum amount",
        "Loom (engine, wasm `bank-stats`, single)",
        single,
        &runs,
        "projection catch-up: wasm `bank-stats`, one state (sequential fold); result = total_deposits",
    ));
}

// ---------------------------------------------------------------- PostgreSQL

/// A PostgreSQL cluster in a temp dir, stopped on drop.
struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn as_postgres(bin: &Path, prog: &str) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(prog));
        c
    } else {
        Command::new(bin.join(prog))
    }
}

fn run_checked(mut c: Command) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{c:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Pg {
    fn start(args: &Args) -> Result<Pg, String> {
        let dir = temp_in(&args.dir);
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let mut c = as_postgres(&args.pg_bin, "initdb");
        c.args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data);
        run_checked(c)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let opts = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=200 \
             -c shared_buffers=512MB",
            dir.path().display()
        );
        let mut c = as_postgres(&args.pg_bin, "pg_ctl");
        c.arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "-o", &opts, "start"]);
        run_checked(c)?;
        Ok(Pg {
            dir,
            bin: args.pg_bin.clone(),
            port,
        })
    }

    fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    async fn connect(&self) -> Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), NoTls)
            .await
            .expect("connect to postgres");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    async fn fresh_table(&self) {
        let c = self.connect().await;
        c.batch_execute(
            "DROP TABLE IF EXISTS events;
             CREATE TABLE events (
                 position bigserial PRIMARY KEY,
                 stream text NOT NULL,
                 revision bigint NOT NULL,
                 type text NOT NULL,
                 data jsonb NOT NULL,
                 UNIQUE (stream, revision));
             CHECKPOINT;",
        )
        .await
        .expect("create table");
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        if let Err(e) = run_checked(c) {
            eprintln!("stopping postgres: {e}");
        }
    }
}

const INSERT_ONE: &str =
    "INSERT INTO events (stream, revision, type, data) VALUES ($1, $2, $3, $4::text::jsonb)";
const INSERT_MANY: &str = "INSERT INTO events (stream, revision, type, data) \
     SELECT s, r, t, d::jsonb FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[]) AS u(s, r, t, d)";

async fn pg_appends(pg: &Pg, seconds: f64, workload: &str, writers: usize, batch: usize) -> Row {
    pg.fresh_table().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..writers {
        clients.push(pg.connect().await);
    }
    let started = Instant::now();
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, client)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let one = client.prepare(INSERT_ONE).await.expect("prepare");
                let many = client.prepare(INSERT_MANY).await.expect("prepare");
                let mut revs = vec![0i64; STREAMS];
                let mut lat = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let streams: Vec<usize> = (0..batch)
                        .map(|b| owned_stream(w, writers, i * batch + b))
                        .collect();
                    let t = Instant::now();
                    if batch == 1 {
                        let s = streams[0];
                        revs[s] += 1;
                        client
                            .execute(
                                &one,
                                &[
                                    &format!("bench/{s}"),
                                    &revs[s],
                                    &"was_credited",
                                    &data_text(s),
                                ],
                            )
                            .await
                            .expect("insert");
                    } else {
                        let names: Vec<String> =
                            streams.iter().map(|s| format!("bench/{s}")).collect();
                        let rs: Vec<i64> = streams
                            .iter()
                            .map(|&s| {
                                revs[s] += 1;
                                revs[s]
                            })
                            .collect();
                        let types = vec!["was_credited"; batch];
                        let datas: Vec<String> = streams.iter().map(|&s| data_text(s)).collect();
                        client
                            .execute(&many, &[&names, &rs, &types, &datas])
                            .await
                            .expect("insert batch");
                    }
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    let elapsed = started.elapsed();
    let events = lat.len() as u64 * batch as u64;
    Row::from_latencies(
        workload,
        "PostgreSQL 15",
        events,
        elapsed,
        lat,
        String::new(),
    )
}

async fn pg_conditional(pg: &Pg, seconds: f64, writers: usize) -> Row {
    pg.fresh_table().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..writers {
        clients.push(pg.connect().await);
    }
    let started = Instant::now();
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, client)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let read = client
                    .prepare("SELECT coalesce(max(revision), 0) FROM events WHERE stream = $1")
                    .await
                    .expect("prepare");
                let insert = client.prepare(INSERT_ONE).await.expect("prepare");
                let mut zipf = Zipf::new(ZIPF_STREAMS, ZIPF_S, w as u64 + 1);
                let (mut lat, mut ok, mut conflicts) = (Vec::new(), 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let k = zipf.sample();
                    let stream = format!("bench/{k}");
                    let t = Instant::now();
                    let rev: i64 = client
                        .query_one(&read, &[&stream])
                        .await
                        .expect("read")
                        .get(0);
                    let r = client
                        .execute(
                            &insert,
                            &[&stream, &(rev + 1), &"was_credited", &data_text(k)],
                        )
                        .await;
                    match r {
                        Ok(_) => ok += 1,
                        Err(e)
                            if e.code()
                                == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                        {
                            conflicts += 1
                        }
                        Err(e) => panic!("insert: {e}"),
                    }
                    lat.push(t.elapsed());
                }
                (lat, ok, conflicts)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut ok, mut conflicts) = (Vec::new(), 0, 0);
    for h in handles {
        let (l, o, c) = h.await.unwrap();
        lat.extend(l);
        ok += o;
        conflicts += c;
    }
    let elapsed = started.elapsed();
    let note = conflict_note(ok, conflicts, elapsed);
    Row::from_latencies(
        "W4 conditional, 4 writers, Zipf",
        "PostgreSQL 15",
        ok,
        elapsed,
        lat,
        note,
    )
}

/// PostgreSQL's plan for `sql`, one node after the other ("Finalize Aggregate → Gather → …").
async fn plan(c: &Client, sql: &str) -> String {
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    match c
        .query(&format!("EXPLAIN (COSTS OFF) {sql}"), &no_params)
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                r.get::<_, String>(0)
                    .trim()
                    .trim_start_matches("-> ")
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join(" → "),
        Err(e) => format!("(EXPLAIN failed: {e})"),
    }
}

async fn pg_catchup(pg: &Pg, events: u64, rows: &mut Vec<Row>) {
    pg.fresh_table().await;
    let c = pg.connect().await;
    let many = c.prepare(INSERT_MANY).await.expect("prepare");
    let t = Instant::now();
    let mut written = 0u64;
    while written < events {
        let n = (events - written).min(1000);
        let streams: Vec<usize> = (0..n)
            .map(|b| ((written + b) % STREAMS as u64) as usize)
            .collect();
        let names: Vec<String> = streams.iter().map(|s| format!("bench/{s}")).collect();
        let revs: Vec<i64> = (0..n)
            .map(|b| ((written + b) / STREAMS as u64 + 1) as i64)
            .collect();
        let types = vec!["was_credited"; n as usize];
        let datas: Vec<String> = streams.iter().map(|&s| data_text(s)).collect();
        c.execute(&many, &[&names, &revs, &types, &datas])
            .await
            .expect("load");
        written += n;
    }
    let load = t.elapsed();
    c.batch_execute("VACUUM ANALYZE events")
        .await
        .expect("vacuum");
    eprintln!(
        "postgres: loaded {events} events in {:.1} s ({:.0} events/s, batches of 1000)",
        load.as_secs_f64(),
        events as f64 / load.as_secs_f64()
    );
    let no_params: [&(dyn ToSql + Sync); 0] = [];

    // SQL aggregates (the server folds; parallel workers as configured by default).
    let mut best = (Duration::MAX, 0i64);
    for _ in 0..3 {
        let t = Instant::now();
        let n: i64 = c
            .query_one("SELECT count(*) FROM events", &no_params)
            .await
            .unwrap()
            .get(0);
        best = best.min((t.elapsed(), n));
    }
    let count_plan = plan(&c, "SELECT count(*) FROM events").await;
    rows.push(catchup_row(
        "W5a catch-up: count 1M",
        "PostgreSQL 15",
        (best.0, best.1 as u64, best.1),
        &format!("SQL `SELECT count(*)`; plan: {count_plan}"),
    ));
    let mut best = (Duration::MAX, 0i64);
    for _ in 0..3 {
        let t = Instant::now();
        let s: i64 = c
            .query_one(
                "SELECT sum((data->>'amount')::bigint)::bigint FROM events",
                &no_params,
            )
            .await
            .unwrap()
            .get(0);
        best = best.min((t.elapsed(), s));
    }
    let sum_plan = plan(
        &c,
        "SELECT sum((data->>'amount')::bigint)::bigint FROM events",
    )
    .await;
    rows.push(catchup_row(
        "W5b catch-up: decode JSON, sum amount",
        "PostgreSQL 15",
        (best.0, events, best.1),
        &format!("SQL `SELECT sum((data->>'amount')::bigint)`; plan: {sum_plan}"),
    ));

    // Every row through the client, folded in Rust.
    let stmt = c
        .prepare(
            "SELECT position, stream, revision, type, data::text FROM events ORDER BY position",
        )
        .await
        .unwrap();
    let client_fold = async |decode: bool| {
        let mut best = (Duration::MAX, 0u64, 0i64);
        for _ in 0..3 {
            let t = Instant::now();
            let stream = c
                .query_raw(&stmt, no_params.iter().copied())
                .await
                .expect("query");
            let mut stream = std::pin::pin!(stream);
            let (mut n, mut sum) = (0u64, 0i64);
            use futures_util::TryStreamExt;
            while let Some(row) = stream.try_next().await.expect("row") {
                n += 1;
                if decode {
                    let data: &str = row.get(4);
                    sum += serde_json::from_str::<Amount>(data).expect("amount").amount;
                } else {
                    let _: i64 = row.get(0);
                }
            }
            let d = t.elapsed();
            if d < best.0 {
                best = (d, n, if decode { sum } else { n as i64 });
            }
        }
        best
    };
    let count = client_fold(false).await;
    let sum = client_fold(true).await;
    rows.push(catchup_row(
        "W5a catch-up: count 1M",
        "PostgreSQL 15, rows to client",
        count,
        "all rows (position, stream, revision, type, data) read through tokio-postgres, counted",
    ));
    rows.push(catchup_row(
        "W5b catch-up: decode JSON, sum amount",
        "PostgreSQL 15, rows to client",
        sum,
        "all rows read through tokio-postgres, data decoded with serde_json, summed",
    ));
}

// ---------------------------------------------------------------- the run

/// Runs every workload for Loom and the peers and prints one markdown table.
pub fn run(args: &Args) {
    let mut rows: Vec<Row> = Vec::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pg = match Pg::start(args) {
        Ok(pg) => Some(pg),
        Err(e) => {
            eprintln!("PostgreSQL not started, its rows are left out: {e}");
            None
        }
    };
    #[cfg(feature = "umadb")]
    let uma = umadb::Peer::find(args);

    let mut plans: Vec<(String, usize, usize)> = Vec::new();
    if args.runs("W1") {
        plans.push(("W1 durable floor, 1 writer × 1 event".into(), 1, 1));
    }
    if args.runs("W2") {
        for &w in &args.writers {
            plans.push((format!("W2 {w} writers × 1 event, 10k streams"), w, 1));
        }
    }
    if args.runs("W3") {
        for &b in &args.batches {
            plans.push((format!("W3 1 writer × {b} events/append"), 1, b));
        }
    }
    for (name, writers, batch) in &plans {
        eprintln!("{name}");
        rows.push(loom_appends(args, name, *writers, *batch));
        match rt.block_on(http::appends(args, name, *writers, *batch)) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("{name}: {} left out: {e}", http::SYSTEM),
        }
        if let Some(pg) = &pg {
            rows.push(rt.block_on(pg_appends(pg, args.seconds, name, *writers, *batch)));
        }
        #[cfg(feature = "umadb")]
        if let Some(u) = &uma {
            rows.push(rt.block_on(u.appends(name, *writers, *batch)));
        }
    }
    if args.runs("W4") {
        eprintln!("W4");
        rows.push(loom_conditional(args, 4));
        if let Some(pg) = &pg {
            rows.push(rt.block_on(pg_conditional(pg, args.seconds, 4)));
        }
        #[cfg(feature = "umadb")]
        if let Some(u) = &uma {
            rows.push(rt.block_on(u.conditional(4)));
        }
    }
    if args.runs("W5") {
        eprintln!("W5");
        loom_catchup(args, &mut rows);
        if let Some(pg) = &pg {
            rt.block_on(pg_catchup(pg, args.events, &mut rows));
        }
        #[cfg(feature = "umadb")]
        if let Some(u) = &uma {
            u.catchup(&rt, &mut rows);
        }
    }
    if args.runs("W6") {
        eprintln!("W6");
        w6::loom(args.seconds, &mut rows);
        if let Some(pg) = &pg {
            rt.block_on(w6::pg(pg, args.seconds, &mut rows));
        }
    }
    drop(pg);

    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    println!("| workload | system | events/s | p50 ms | p99 ms | Loom / peer | notes |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for r in rows {
        // Against each in-process Loom row of the workload (W5 has two ledger folds: views,
        // then lazy records) and its HTTP row (W1–W3), else against its first Loom row.
        let loom: Vec<f64> = rows
            .iter()
            .filter(|l| {
                l.workload == r.workload
                    && (l.system.starts_with("Loom (ledger lib") || l.system == http::SYSTEM)
            })
            .map(|l| l.eps)
            .collect();
        let loom = if loom.is_empty() {
            rows.iter()
                .find(|l| l.workload == r.workload && l.system.starts_with("Loom"))
                .map(|l| vec![l.eps])
                .unwrap_or_default()
        } else {
            loom
        };
        let ratio = if r.system.starts_with("Loom") || r.eps <= 0.0 {
            String::new()
        } else {
            loom.iter()
                .map(|l| format!("{:.2}×", l / r.eps))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let lat = |d: Option<Duration>| d.map(ms).unwrap_or_else(|| "—".into());
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            r.workload,
            r.system,
            r.eps,
            lat(r.p50),
            lat(r.p99),
            ratio,
            r.note
        );
    }
}
