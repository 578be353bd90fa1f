//! `wasm`: batched `evolve` through a wasm example module vs the same reducer compiled natively.
//!
//! Both paths get the *same ABI input bytes* (state JSON + encoded events, built once before
//! timing): the wasm path through [`Runtime::call`] (fresh instance, fuel, memory cap and epoch
//! deadline, as in production), the native path through
//! `loom_guest::__export::run_evolve::<T>` linked into this binary from the example's rlib. So
//! both include the same JSON decoding of the state and of every event, the fold and the JSON
//! encoding of the new state; the difference is the wasm boundary and wasm code quality.
//!
//! Workloads (deterministic, generated here):
//!
//! * `cart`: one long-lived cart stream (`was_created`, then `had_item_added` /
//!   `had_item_removed` over a catalogue of 12 products, so the state stays bounded at ≤ 12
//!   lines); a batch of `B` events is the next `B` events of the stream folded into the state
//!   the previous events produced (what a projection worker catching up does).
//! * `cart lifecycle`: many carts of 20 events each (created, 15 adds over 8 products, 3
//!   removes, checked out), one `evolve` call per cart from the initial state.
//! * `bank`: one account stream (`was_opened`, then `was_credited` / `was_debited`), batched
//!   like `cart`; once with `{"amount"}` as the data, once with the ~256 bytes of the peers
//!   benchmark's events (W5b), of which `bank` reads only `amount`.
//!
//! Every measurement is repeated `--runs` times, wasm and native interleaved, and medians are
//! printed. Before timing, every input's wasm output is checked to equal the native output.
//!
//! Time is the CPU time of the measuring thread (`/proc/thread-self/schedstat`: user + kernel
//! time, so page faults and `mprotect` of the wasm path count), because the machine is shared
//! and wall-clock time also counts time other processes had the CPU. The wall-clock ratio is
//! printed next to it; on a quiet machine the two agree.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use loom_ledger::StoredEvent;
use loom_runtime::{Entry, Module, Outcome, Runtime, RuntimeConfig};

mod workloads;
use workloads::{BankData, Stream, bank_stream, cart_lifecycles, cart_stream};

/// Options of the `wasm` benchmark.
#[derive(Debug)]
pub struct WasmArgs {
    /// Repetitions of every measurement (medians are reported).
    pub runs: usize,
    /// Minimum time of one measurement, seconds.
    pub seconds: f64,
    /// Batch sizes (events per `evolve` call).
    pub batches: Vec<usize>,
    /// Events in each generated stream.
    pub stream_events: usize,
    /// Directory with `cart.wasm` and `bank.wasm`; built from `examples/` when absent.
    pub wasm_dir: Option<PathBuf>,
    /// For profiling: run only this path (`wasm`, `encode` = wasm incl. encoding, or `native`)
    /// on the cart stream; no report.
    pub only: Option<String>,
}

impl Default for WasmArgs {
    fn default() -> Self {
        WasmArgs {
            runs: 7,
            seconds: 0.3,
            batches: vec![1, 10, 100, 1000],
            stream_events: 10_000,
            wasm_dir: None,
            only: None,
        }
    }
}

/// Parses the flags after `wasm`.
pub fn parse(mut it: impl Iterator<Item = String>) -> Result<WasmArgs, String> {
    let mut args = WasmArgs::default();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => args.runs = value()?.parse().map_err(|_| "bad --runs")?,
            "--seconds" => args.seconds = value()?.parse().map_err(|_| "bad --seconds")?,
            "--batches" => args.batches = crate::parse_list(&value()?)?,
            "--stream-events" => {
                args.stream_events = value()?.parse().map_err(|_| "bad --stream-events")?
            }
            "--wasm-dir" => args.wasm_dir = Some(PathBuf::from(value()?)),
            "--only" => args.only = Some(value()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.runs == 0 || args.batches.contains(&0) {
        return Err("--runs and batch sizes must be positive".into());
    }
    Ok(args)
}

/// One `evolve` call: the state before it and the events it folds.
struct Call<'a> {
    state: Option<Vec<u8>>,
    events: &'a [StoredEvent],
    input: Vec<u8>,
}

type Native = fn(&[u8]) -> Vec<u8>;

fn encode(state: Option<&[u8]>, events: &[StoredEvent]) -> Vec<u8> {
    let ext: Vec<String> = events.iter().map(|_| String::new()).collect();
    loom_abi::evolve::encode(
        state,
        events
            .iter()
            .zip(&ext)
            .map(|(e, x)| loom_runtime::event_ref(e, x)),
    )
}

fn native_state(native: Native, input: &[u8]) -> Vec<u8> {
    let out = native(input);
    match loom_abi::parse_output(&out) {
        Ok((loom_abi::CallStatus::Ok, payload)) => payload.to_vec(),
        other => panic!("native evolve failed: {other:?}"),
    }
}

/// Splits one stream into consecutive batches, each starting from the state the previous
/// batches produced (computed natively).
fn batched_calls(native: Native, stream: &Stream, batch: usize) -> Vec<Call<'_>> {
    let mut state: Option<Vec<u8>> = None;
    let usable = stream.events.len() - stream.events.len() % batch;
    stream.events[..usable]
        .chunks(batch)
        .map(|events| {
            let input = encode(state.as_deref(), events);
            let next = native_state(native, &input);
            Call {
                state: state.replace(next),
                events,
                input,
            }
        })
        .collect()
}

/// Per-stream calls from the initial state.
fn per_stream_calls(streams: &[Stream]) -> Vec<Call<'_>> {
    streams
        .iter()
        .map(|s| Call {
            state: None,
            events: &s.events,
            input: encode(None, &s.events),
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Wasm,
    WasmEncode,
    Native,
}

/// CPU time this thread has run (user + system), if the kernel reports it.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// A stopwatch over thread CPU time (wall time where that is unavailable), and wall time.
struct Clock {
    wall: Instant,
    cpu: Option<Duration>,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            cpu: thread_cpu(),
            wall: Instant::now(),
        }
    }
    /// (CPU or wall seconds, wall seconds) since the start.
    fn elapsed(&self) -> (f64, f64) {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = match (self.cpu, thread_cpu()) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => wall,
        };
        (cpu, wall)
    }
}

/// Events per second of one measurement: by thread CPU time, and by wall-clock time.
#[derive(Clone, Copy)]
struct Rate {
    cpu: f64,
    wall: f64,
}

/// Runs `calls` round-robin for at least `seconds` of CPU time; returns events per second.
fn measure(
    rt: &Runtime,
    module: &Module,
    native: Native,
    calls: &[Call<'_>],
    path: Path,
    seconds: f64,
) -> Rate {
    let clock = Clock::start();
    let mut events = 0usize;
    let mut sink = 0usize;
    loop {
        for call in calls {
            match path {
                Path::Wasm => match rt.call(module, Entry::Evolve, &call.input) {
                    Ok(Outcome::Ok(state)) => sink ^= state.len(),
                    other => panic!("wasm evolve failed: {other:?}"),
                },
                Path::WasmEncode => {
                    let state = rt
                        .evolve(module, call.state.as_deref(), call.events)
                        .expect("wasm evolve");
                    sink ^= state.len();
                }
                Path::Native => sink ^= std::hint::black_box(native(&call.input)).len(),
            }
            events += call.events.len();
        }
        if clock.elapsed().0 >= seconds {
            break;
        }
    }
    std::hint::black_box(sink);
    let (cpu, wall) = clock.elapsed();
    Rate {
        cpu: events as f64 / cpu,
        wall: events as f64 / wall,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| {
        (lo.min(x), hi.max(x))
    })
}

struct Row {
    label: String,
    wasm: Vec<f64>,
    native: Vec<f64>,
    wasm_encode: Vec<f64>,
    ratios: Vec<f64>,
    wall_ratios: Vec<f64>,
}

fn run_case(
    rt: &Runtime,
    module: &Module,
    native: Native,
    label: String,
    calls: &[Call<'_>],
    args: &WasmArgs,
) -> Row {
    // Identical results first: the two paths compute the same thing.
    for call in calls {
        let wasm = match rt.call(module, Entry::Evolve, &call.input) {
            Ok(Outcome::Ok(state)) => state,
            other => panic!("wasm evolve failed: {other:?}"),
        };
        assert_eq!(
            wasm,
            native_state(native, &call.input),
            "wasm and native disagree"
        );
    }
    // Warm up both paths.
    measure(rt, module, native, calls, Path::Wasm, args.seconds / 3.0);
    measure(rt, module, native, calls, Path::Native, args.seconds / 3.0);
    let mut row = Row {
        label,
        wasm: Vec::new(),
        native: Vec::new(),
        wasm_encode: Vec::new(),
        ratios: Vec::new(),
        wall_ratios: Vec::new(),
    };
    for run in 0..args.runs {
        let order = if run % 2 == 0 {
            [Path::Wasm, Path::Native, Path::WasmEncode]
        } else {
            [Path::Native, Path::Wasm, Path::WasmEncode]
        };
        let zero = Rate {
            cpu: 0.0,
            wall: 0.0,
        };
        let (mut w, mut n) = (zero, zero);
        for path in order {
            let rate = measure(rt, module, native, calls, path, args.seconds);
            match path {
                Path::Wasm => w = rate,
                Path::Native => n = rate,
                Path::WasmEncode => row.wasm_encode.push(rate.cpu),
            }
        }
        row.wasm.push(w.cpu);
        row.native.push(n.cpu);
        row.ratios.push(w.cpu / n.cpu);
        row.wall_ratios.push(w.wall / n.wall);
    }
    row
}

fn us(eps: f64) -> f64 {
    1e6 / eps
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("### {title}\n");
    println!(
        "| batch | wasm events/s | native events/s | wasm/native | wasm µs/event | overhead µs/event (wasm − native) | wasm incl. encode events/s | wasm/native range | wall-clock wasm/native |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---:|");
    for r in rows {
        let (w, n) = (median(r.wasm.clone()), median(r.native.clone()));
        let (lo, hi) = min_max(&r.ratios);
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.3} | {:.3} | {:.0} | {:.2}–{:.2} | {:.2} |",
            r.label,
            w,
            n,
            median(r.ratios.clone()),
            us(w),
            us(w) - us(n),
            median(r.wasm_encode.clone()),
            lo,
            hi,
            median(r.wall_ratios.clone())
        );
    }
    println!();
}

/// Fixed cost of one call: `evolve` with no events and no state, per call.
fn empty_call_cost(rt: &Runtime, module: &Module, args: &WasmArgs) -> (f64, f64) {
    let input = loom_abi::evolve::encode(None, std::iter::empty());
    let mut per_call = Vec::new();
    let mut native = Vec::new();
    for _ in 0..args.runs {
        let t = Clock::start();
        let mut n = 0u32;
        while t.elapsed().0 < args.seconds / 3.0 {
            for _ in 0..10 {
                rt.call(module, Entry::Evolve, &input)
                    .expect("empty evolve");
            }
            n += 10;
        }
        per_call.push(t.elapsed().0 * 1e6 / f64::from(n));
        let t = Clock::start();
        let mut n = 0u32;
        while t.elapsed().0 < args.seconds / 3.0 {
            for _ in 0..1000 {
                std::hint::black_box(loom_guest::__export::run_evolve::<cart::Cart>(
                    std::hint::black_box(&input),
                ));
            }
            n += 1000;
        }
        native.push(t.elapsed().0 * 1e6 / f64::from(n));
    }
    (median(per_call), median(native))
}

fn wasm_bytes(args: &WasmArgs, name: &str) -> Vec<u8> {
    match &args.wasm_dir {
        Some(dir) => {
            let file = dir.join(format!("{name}.wasm"));
            std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
        }
        None => loom_testkit::example_wasm(name),
    }
}

/// Runs the benchmark and prints markdown tables.
pub fn run(args: &WasmArgs) {
    let rt = Runtime::new(RuntimeConfig::default());
    let cart_wasm = wasm_bytes(args, "cart");
    let bank_wasm = wasm_bytes(args, "bank");
    // Each module's one reducer (an ABI v2 module is called through a reducer).
    let cart_module = rt
        .compile(&cart_wasm)
        .expect("cart compiles")
        .bind("cart")
        .expect("cart has the reducer cart");
    let bank_module = rt
        .compile(&bank_wasm)
        .expect("bank compiles")
        .bind("bank")
        .expect("bank has the reducer bank");
    let cart_native: Native = loom_guest::__export::run_evolve::<cart::Cart>;
    let bank_native: Native = loom_guest::__export::run_evolve::<bank::Account>;
    if let Some(only) = &args.only {
        let path = match only.as_str() {
            "wasm" => Path::Wasm,
            "native" => Path::Native,
            "encode" => Path::WasmEncode,
            other => panic!("--only takes wasm, encode or native, not {other:?}"),
        };
        let stream = cart_stream(args.stream_events);
        for &b in &args.batches {
            let calls = batched_calls(cart_native, &stream, b);
            let rate = measure(&rt, &cart_module, cart_native, &calls, path, args.seconds);
            println!(
                "{only} cart batch {b}: {:.0} events/s (CPU time), {:.0} (wall)",
                rate.cpu, rate.wall
            );
        }
        return;
    }
    let config = rt.config();
    println!("## Wasm evolve vs native (same ABI input bytes)\n");
    println!(
        "limits on: fuel {} per call, memory cap {} MiB, epoch deadline {:?}; cart.wasm {} bytes, bank.wasm {} bytes; {} runs × ≥{} s CPU time per cell, medians; events/s per CPU-second of the calling thread{}\n",
        config.fuel_per_call,
        config.memory_limit / (1024 * 1024),
        config.call_timeout,
        cart_wasm.len(),
        bank_wasm.len(),
        args.runs,
        args.seconds,
        if thread_cpu().is_some() {
            ""
        } else {
            " (thread CPU time unavailable: wall-clock time)"
        }
    );

    let (wasm_call, native_call) = empty_call_cost(&rt, &cart_module, args);
    println!(
        "Fixed cost of one `evolve` call with no events (cart): wasm {wasm_call:.2} µs, native {native_call:.3} µs\n"
    );

    let stream = cart_stream(args.stream_events);
    let mut rows = Vec::new();
    for &b in &args.batches {
        let calls = batched_calls(cart_native, &stream, b);
        rows.push(run_case(
            &rt,
            &cart_module,
            cart_native,
            b.to_string(),
            &calls,
            args,
        ));
    }
    let carts = cart_lifecycles(args.stream_events);
    let calls = per_stream_calls(&carts);
    rows.push(run_case(
        &rt,
        &cart_module,
        cart_native,
        "20 (one call per cart lifecycle)".into(),
        &calls,
        args,
    ));
    print_rows("cart", &rows);

    let mut rows = Vec::new();
    for data in [BankData::Small, BankData::Peers] {
        let stream = bank_stream(args.stream_events, data);
        for &b in &args.batches {
            let calls = batched_calls(bank_native, &stream, b);
            let label = match data {
                BankData::Small => b.to_string(),
                BankData::Peers => format!("{b}, the peers' 256-byte data"),
            };
            rows.push(run_case(
                &rt,
                &bank_module,
                bank_native,
                label,
                &calls,
                args,
            ));
        }
    }
    print_rows("bank", &rows);
}
