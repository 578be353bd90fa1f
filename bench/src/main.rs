//! Loom benchmarks. Run in release mode on a real disk:
//!
//! ```text
//! cargo run --release -p loom-bench -- ledger [--seconds 3] [--dir /path/on/disk]
//! cargo run --release -p loom-bench -- catchup [--events 1000000] [--streams 10000]
//! cargo run --release -p loom-bench -- peers [--seconds 2] [--events 1000000] [--only W5] [--cache 2048] [--catchup-runs 5]
//! cargo run --release -p loom-bench -- wasm [--runs 7] [--seconds 0.3] [--batches 1,10,100,1000]
//! cargo run --release -p loom-bench -- cluster-lag --sequencer URL --follower URL [--appends N]
//! ```
//!
//! `ledger`: durable appends with 1, 4, 16 and 64 concurrent writers × batches of 1, 10 and
//! 100 events, then a full read scan; prints a markdown table of events/s, commits/s and
//! append latency percentiles.
//!
//! `wasm`: batched `evolve` through the wasm `cart` and `bank` examples vs the same reducers
//! linked natively, on the same input bytes (see [`wasm`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod catchup;
mod cluster;
mod peers;
mod wasm;

use loom_ledger::{
    AppendRequest, EntitySpec, Event, EventBatch, Ledger, LedgerOptions, ReadOptions, Selector,
};

struct Args {
    seconds: f64,
    dir: Option<PathBuf>,
    writers: Vec<usize>,
    batches: Vec<usize>,
    scan_events: u64,
    /// The ledger's write-ahead log checkpoint interval; the default when `None`.
    wal_checkpoint: Option<u64>,
}

fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| format!("{x:?} is not a number"))
        })
        .collect()
}

fn parse_args() -> Result<(String, Args), String> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_else(|| "ledger".into());
    let mut args = Args {
        seconds: 3.0,
        dir: None,
        writers: vec![1, 4, 16, 64],
        batches: vec![1, 10, 100],
        scan_events: 1_000_000,
        wal_checkpoint: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value()?.parse().map_err(|_| "bad --seconds")?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--writers" => args.writers = parse_list(&value()?)?,
            "--batches" => args.batches = parse_list(&value()?)?,
            "--scan-events" => {
                args.scan_events = value()?.parse().map_err(|_| "bad --scan-events")?
            }
            "--wal-checkpoint" => {
                let mib: u64 = value()?.parse().map_err(|_| "bad --wal-checkpoint (MiB)")?;
                args.wal_checkpoint = Some(mib << 20);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok((cmd, args))
}

/// The allocator the `loom` binary uses, so that in-process rows run Loom as shipped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("catchup") {
        return match catchup::parse(std::env::args().skip(2)) {
            Ok(args) => {
                catchup::run(&args);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: {e}\nusage: loom-bench catchup [--events N] [--streams N] [--batch N] [--clients N] [--commands N] [--dir DIR]"
                );
                ExitCode::from(2)
            }
        };
    }
    if std::env::args().nth(1).as_deref() == Some("peers") {
        return match peers::parse(std::env::args().skip(2)) {
            Ok(args) => {
                peers::run(&args);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: {e}\nusage: loom-bench peers [--seconds S] [--events N] [--dir DIR] [--pg-bin DIR] [--writers 1,4,16,64] [--batches 1,10,100,1000] [--only W1,…,W6] [--cache MiB] [--catchup-runs N]"
                );
                ExitCode::from(2)
            }
        };
    }
    if std::env::args().nth(1).as_deref() == Some("cluster-lag") {
        return match cluster::parse(std::env::args().skip(2)) {
            Ok(args) => {
                cluster::run(&args);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: {e}\nusage: loom-bench cluster-lag --sequencer URL --follower URL [--appends N]"
                );
                ExitCode::from(2)
            }
        };
    }
    if std::env::args().nth(1).as_deref() == Some("wasm") {
        return match wasm::parse(std::env::args().skip(2)) {
            Ok(args) => {
                wasm::run(&args);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "error: {e}\nusage: loom-bench wasm [--runs N] [--seconds S] [--batches 1,10,100,1000] [--stream-events N] [--wasm-dir DIR]"
                );
                ExitCode::from(2)
            }
        };
    }
    let (cmd, args) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!(
                "error: {e}\nusage: loom-bench ledger [--seconds S] [--dir DIR] [--writers 1,4] [--batches 1,10] [--scan-events N] [--wal-checkpoint MiB]"
            );
            return ExitCode::from(2);
        }
    };
    match cmd.as_str() {
        "ledger" => ledger_bench(&args),
        other => {
            eprintln!("error: unknown benchmark {other:?}; try `ledger` or `wasm`");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn temp_dir(args: &Args) -> tempfile::TempDir {
    match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("create --dir");
            tempfile::tempdir_in(d).expect("temp dir in --dir")
        }
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn open(dir: &std::path::Path) -> Ledger {
    open_with(dir, LedgerOptions::default())
}

fn open_with(dir: &std::path::Path, options: LedgerOptions) -> Ledger {
    let ledger = Ledger::open(dir, options).expect("open ledger");
    ledger
        .put_entity(
            "bench",
            EntitySpec {
                open: true,
                ..EntitySpec::default()
            },
        )
        .expect("register");
    ledger
}

/// A small event with ~256 bytes of JSON data.
fn event(stream: usize, id: &str) -> Event {
    let data = serde_json::json!({
        "account": format!("acct-{stream:06}"),
        "amount": 1234,
        "currency": "EUR",
        "memo": "x".repeat(180),
    });
    Event::new("bench", id, "was_credited", format!("bench/{stream}"), data)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn ledger_bench(args: &Args) {
    println!("## Ledger: durable appends (group commit through the write-ahead log)\n");
    println!(
        "| writers | batch | events/s | appends/s | commits/s | events/commit | p50 ms | p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut single_floor = None;
    for &batch in &args.batches {
        for &writers in &args.writers {
            let dir = temp_dir(args);
            let mut options = LedgerOptions::default();
            if let Some(bytes) = args.wal_checkpoint {
                options.wal_checkpoint_bytes = bytes;
            }
            let ledger = Arc::new(open_with(dir.path(), options));
            let stop = Arc::new(AtomicBool::new(false));
            let commits_before = ledger.stats().commits.load(Ordering::Relaxed);
            let started = Instant::now();
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    let ledger = ledger.clone();
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut latencies = Vec::new();
                        let mut i = 0usize;
                        while !stop.load(Ordering::Relaxed) {
                            let events = (0..batch)
                                .map(|b| {
                                    event((w * 7919 + i + b) % 10_000, &format!("{w}-{i}-{b}"))
                                })
                                .collect();
                            let t = Instant::now();
                            ledger.append(AppendRequest::new(events)).expect("append");
                            latencies.push(t.elapsed());
                            i += 1;
                        }
                        latencies
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs_f64(args.seconds));
            stop.store(true, Ordering::Relaxed);
            let mut latencies: Vec<Duration> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            let elapsed = started.elapsed().as_secs_f64();
            latencies.sort_unstable();
            let appends = latencies.len() as f64;
            let events = appends * batch as f64;
            let commits = (ledger.stats().commits.load(Ordering::Relaxed) - commits_before) as f64;
            let eps = events / elapsed;
            if writers == 1 && batch == 1 {
                single_floor = Some(eps);
            }
            {
                // The far tail, beside the table: on a virtual machine a few slow syncs move
                // the mean far from the p50.
                let total: Duration = latencies.iter().sum();
                let slow: Duration = latencies
                    .iter()
                    .filter(|d| **d > Duration::from_millis(1))
                    .sum();
                eprintln!(
                    "{writers} × {batch}: p90 {} ms, p99.9 {} ms, max {} ms, mean {} ms; {:.1} % of the time in appends over 1 ms",
                    ms(percentile(&latencies, 0.9)),
                    ms(percentile(&latencies, 0.999)),
                    ms(latencies.last().copied().unwrap_or_default()),
                    ms(total / latencies.len().max(1) as u32),
                    100.0 * slow.as_secs_f64() / total.as_secs_f64().max(1e-9),
                );
            }
            println!(
                "| {writers} | {batch} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {} |",
                eps,
                appends / elapsed,
                commits / elapsed,
                events / commits.max(1.0),
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99)),
            );
        }
    }
    if let Some(floor) = single_floor {
        println!("\n(1 writer × batch 1 is the one-event-per-commit floor: {floor:.0} events/s)");
    }

    println!("\n## Ledger: full read scan\n");
    let dir = temp_dir(args);
    let ledger = open(dir.path());
    let total = args.scan_events;
    let mut written = 0u64;
    while written < total {
        let n = (total - written).min(1000);
        let events = (0..n)
            .map(|b| {
                event(
                    ((written + b) % 10_000) as usize,
                    &format!("s-{}", written + b),
                )
            })
            .collect();
        ledger.append(AppendRequest::new(events)).expect("append");
        written += n;
    }
    let all = Selector::all().compile().unwrap();
    println!("| events | seconds | events/s | what |");
    println!("|---:|---:|---:|---|");
    for round in 0..3 {
        let t = Instant::now();
        let mut seen = 0u64;
        ledger
            .scan(&all, ReadOptions::after(0, usize::MAX), |_| {
                seen += 1;
                true
            })
            .expect("scan");
        let s = t.elapsed().as_secs_f64();
        assert_eq!(seen, total, "scan saw every event");
        println!(
            "| {seen} | {s:.3} | {:.0} | decode every event (run {}) |",
            seen as f64 / s,
            round + 1
        );
    }
    for round in 0..3 {
        let t = Instant::now();
        let mut seen = 0u64;
        let mut bytes = 0usize;
        let mut batch = EventBatch::default();
        let mut after = 0;
        loop {
            ledger
                .read_batch_into(&all, ReadOptions::after(after, 10_000), &mut batch)
                .expect("read");
            let Some(last) = batch.last_position() else {
                break;
            };
            for e in batch.iter() {
                seen += 1;
                bytes += e.id.len();
            }
            after = last;
        }
        let s = t.elapsed().as_secs_f64();
        assert_eq!(seen, total, "batches saw every event");
        assert!(bytes > 0);
        println!(
            "| {seen} | {s:.3} | {:.0} | batches of 10 000 checked views (run {}) |",
            seen as f64 / s,
            round + 1
        );
    }
    drop(ledger);
    replay_bench(args);
}

/// Opening after a crash: the redb file as of its last durable commit plus a write-ahead log
/// of almost one checkpoint interval (copied while the ledger runs), replayed at open.
fn replay_bench(args: &Args) {
    println!("\n## Ledger: opening after a crash (write-ahead log replay)\n");
    let dir = temp_dir(args);
    let ledger = open(dir.path());
    let limit = LedgerOptions::default().wal_checkpoint_bytes;
    let log = dir.path().join(loom_ledger::WAL_FILE);
    let mut written = 0u64;
    // Stop one batch short of the checkpoint, so that all of it is in the log only.
    while std::fs::metadata(&log).map_or(0, |m| m.len()) + 64 * 1024 < limit {
        let events = (0..100)
            .map(|b| {
                let p = written + b;
                event((p % 10_000) as usize, &format!("r-{p}"))
            })
            .collect();
        ledger.append(AppendRequest::new(events)).expect("append");
        written += 100;
    }
    let image = temp_dir(args);
    for file in [["ledger.redb"].as_slice(), &loom_ledger::WAL_FILES].concat() {
        std::fs::copy(dir.path().join(file), image.path().join(file)).expect("copy");
    }
    let log_bytes = std::fs::metadata(image.path().join(loom_ledger::WAL_FILE))
        .expect("log")
        .len();
    drop(ledger);
    let t = Instant::now();
    let restored = Ledger::open(image.path(), LedgerOptions::default()).expect("reopen");
    let s = t.elapsed().as_secs_f64();
    assert_eq!(restored.head(), written, "every event after the replay");
    println!("| events | log MiB | open s | replayed events/s |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {written} | {:.1} | {s:.3} | {:.0} |",
        log_bytes as f64 / (1 << 20) as f64,
        written as f64 / s
    );
}
