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

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loom_ledger::{AppendError, AppendRequest, ExpectedRevision};

use super::{event, ms, open, percentile};

mod http;
mod pg;
mod w5;
mod w6;

use pg::{INSERT_MANY, INSERT_ONE, Pg, pg_appends, pg_catchup, pg_conditional};
use w5::loom_catchup;

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
    data(stream, 1234).to_string()
}

/// The data of [`data_text`], with another amount.
pub(crate) fn data(stream: usize, amount: i64) -> serde_json::Value {
    serde_json::json!({
        "account": format!("acct-{stream:06}"),
        "amount": amount,
        "currency": "EUR",
        "memo": "x".repeat(180),
    })
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
    let results = handles.into_iter().map(|h| h.join().unwrap()).collect();
    conditional_row("Loom (ledger lib)", results, started.elapsed())
}

/// The W4 row of `system`, from each writer's latencies, appends and conflicts over
/// `elapsed`.
fn conditional_row(
    system: &str,
    results: Vec<(Vec<Duration>, u64, u64)>,
    elapsed: Duration,
) -> Row {
    let (mut lat, mut ok, mut conflicts) = (Vec::new(), 0, 0);
    for (l, o, c) in results {
        lat.extend(l);
        ok += o;
        conflicts += c;
    }
    let note = conflict_note(ok, conflicts, elapsed);
    Row::from_latencies(
        "W4 conditional, 4 writers, Zipf",
        system,
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
