//! W5 for Loom: the 1M-event ledger it reads, the native folds over it (the scan limit) and
//! the wasm engine's catch-up of the `bank` and `bank-stats` projections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loom_engine::{At, Engine, EngineConfig, OnError, Partition, ProjectionSpec};
use loom_ledger::{
    AppendRequest, CompiledSelector, DataRef, EventRecord, EventView, Ledger, LedgerOptions,
    ReadError, ReadOptions, Selector,
};

use super::{Amount, Args, Row, STREAMS, best_of_3, catchup_row, catchup_row_of, event, temp_in};

/// Fills a ledger with `n` events (batches of 1000) and returns it with load time.
fn loom_load(args: &Args) -> (tempfile::TempDir, Ledger, Duration) {
    let dir = temp_in(&args.dir);
    let ledger = crate::open_with(
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

pub(super) fn loom_catchup(args: &Args, rows: &mut Vec<Row>) {
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
