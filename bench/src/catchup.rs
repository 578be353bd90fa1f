//! `catchup`: a projection catching up over stored history, and commands through deciders.
//!
//! Catch-up: `--events` small bank events (`was_opened` then `was_credited` / `was_debited`)
//! spread over `--streams` accounts are stored first. Then, side by side in one run:
//!
//! * **engine, wasm** — the product: `PUT` a per-stream projection with the wasm `bank`
//!   example and time until it has folded everything (reads through the ledger's indexes,
//!   batched `evolve` calls, states + checkpoint committed per batch);
//! * **engine, wasm, single** — the same with the `bank-stats` example as one global state;
//! * **pipeline, wasm** and **pipeline, native** — the same read → group by stream → fold loop
//!   done here without storing states, once through the wasm runtime and once with the same
//!   reducer linked natively (`loom_guest::__export::run_evolve::<bank::Account>` on the same
//!   ABI input bytes). Their ratio is the cost of the wasm boundary in a catch-up.
//!
//! * **read only** — the reads alone, by the projections' entity selector and of every event.
//!
//! Commands: `--clients` threads each run `--commands` deposits on accounts of their own
//! (distinct streams) through the `bank` decider (fold from cache + tail, `decide`, durable
//! append), then the same on one shared account.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loom_engine::{DeciderSpec, Engine, EngineConfig, OnError, Partition, ProjectionSpec};
use loom_ledger::{
    AppendRequest, EntitySpec, Event, EventBatch, EventView, Ledger, LedgerOptions, ReadOptions,
    Selector,
};
use loom_runtime::{Runtime, RuntimeConfig};

/// Options of the `catchup` benchmark.
#[derive(Debug)]
pub struct CatchupArgs {
    /// Events stored before the projection starts.
    pub events: u64,
    /// Accounts they are spread over.
    pub streams: u64,
    /// Events per projection batch.
    pub batch: usize,
    /// Command clients.
    pub clients: usize,
    /// Commands per client.
    pub commands: usize,
    /// Where the data directory goes (a real disk).
    pub dir: Option<std::path::PathBuf>,
}

impl Default for CatchupArgs {
    fn default() -> Self {
        CatchupArgs {
            events: 1_000_000,
            streams: 10_000,
            batch: 100_000,
            clients: 32,
            commands: 200,
            dir: None,
        }
    }
}

/// Parses `catchup` flags.
pub fn parse(mut it: impl Iterator<Item = String>) -> Result<CatchupArgs, String> {
    let mut a = CatchupArgs::default();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => a.events = value()?.parse().map_err(|_| "bad --events")?,
            "--streams" => a.streams = value()?.parse().map_err(|_| "bad --streams")?,
            "--batch" => a.batch = value()?.parse().map_err(|_| "bad --batch")?,
            "--clients" => a.clients = value()?.parse().map_err(|_| "bad --clients")?,
            "--commands" => a.commands = value()?.parse().map_err(|_| "bad --commands")?,
            "--dir" => a.dir = Some(value()?.into()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.streams == 0 || a.events < a.streams {
        return Err("--events must be at least --streams (> 0)".into());
    }
    Ok(a)
}

fn temp_dir(args: &CatchupArgs) -> tempfile::TempDir {
    match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("create --dir");
            tempfile::tempdir_in(d).expect("temp dir")
        }
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn open_ledger(dir: &std::path::Path) -> Arc<Ledger> {
    let ledger = Arc::new(Ledger::open(dir, LedgerOptions::default()).expect("open ledger"));
    ledger
        .put_entity(
            "account",
            EntitySpec {
                open: true,
                ..EntitySpec::default()
            },
        )
        .expect("register");
    ledger
}

fn fill(ledger: &Ledger, events: u64, streams: u64) {
    let mut written = 0u64;
    let mut batch = Vec::with_capacity(1000);
    while written < events {
        let i = written;
        let s = i % streams;
        let (ty, data) = if i < streams {
            (
                "was_opened",
                serde_json::json!({ "owner": format!("owner-{s}") }),
            )
        } else if i.is_multiple_of(7) {
            ("was_debited", serde_json::json!({ "amount": 1 }))
        } else {
            ("was_credited", serde_json::json!({ "amount": 1 + i % 50 }))
        };
        batch.push(Event::new(
            "bench",
            format!("e{i}"),
            ty,
            format!("account/{s}"),
            data,
        ));
        written += 1;
        if batch.len() == 1000 || written == events {
            ledger
                .append(AppendRequest::new(std::mem::take(&mut batch)))
                .expect("append");
        }
    }
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:.0}", n as f64 / d.as_secs_f64())
}

/// Events per `evolve_groups` call, as the engine packs them.
const CALL_EVENTS: usize = 5_000;

/// Groups folded in one call: `(state, events)` each.
type Groups<'a, 'e> = [(Option<&'a [u8]>, &'a [EventView<'e>])];

/// Runs the read → group by stream → fold loop without storing states, packing groups into
/// calls of up to `CALL_EVENTS` events as the engine does; returns the elapsed time.
fn pipeline(
    ledger: &Ledger,
    batch: usize,
    mut fold: impl FnMut(&Groups<'_, '_>) -> Vec<Vec<u8>>,
) -> (Duration, u64) {
    let selector = Selector {
        entity: Some("account".into()),
        ..Selector::default()
    }
    .compile()
    .expect("selector");
    let started = Instant::now();
    let mut states: HashMap<String, Vec<u8>> = HashMap::new();
    let mut after = 0;
    let mut folded = 0u64;
    let mut events = EventBatch::default();
    loop {
        ledger
            .read_batch_into(&selector, ReadOptions::after(after, batch), &mut events)
            .expect("read");
        let Some(last) = events.last_position() else {
            break;
        };
        after = last;
        folded += events.len() as u64;
        let mut order: Vec<&str> = Vec::new();
        let mut groups: HashMap<&str, Vec<EventView<'_>>> = HashMap::new();
        for e in events.iter() {
            groups
                .entry(e.subject)
                .or_insert_with(|| {
                    order.push(e.subject);
                    Vec::new()
                })
                .push(e);
        }
        let mut next: Vec<Vec<u8>> = Vec::with_capacity(order.len());
        let mut call: Vec<(Option<&[u8]>, &[EventView<'_>])> = Vec::new();
        let mut in_call = 0;
        for key in &order {
            let evs = groups[key].as_slice();
            if in_call > 0 && in_call + evs.len() > CALL_EVENTS {
                next.extend(fold(&call));
                call.clear();
                in_call = 0;
            }
            call.push((states.get(*key).map(Vec::as_slice), evs));
            in_call += evs.len();
        }
        next.extend(fold(&call));
        drop(call);
        for (key, state) in order.iter().zip(next) {
            states.insert((*key).to_owned(), state);
        }
    }
    (started.elapsed(), folded)
}

/// Prints the catch-up and command tables.
pub fn run(args: &CatchupArgs) {
    let dir = temp_dir(args);
    let ledger = open_ledger(dir.path());
    let t = Instant::now();
    fill(&ledger, args.events, args.streams);
    println!(
        "## Catch-up over {} stored events ({} accounts)\n\n(stored in {:.1} s)\n",
        args.events,
        args.streams,
        t.elapsed().as_secs_f64()
    );
    let bank = loom_testkit::example_wasm("bank");
    let stats = loom_testkit::example_wasm("bank-stats");
    println!("| path | seconds | events/s |");
    println!("|---|---:|---:|");

    // Reading alone, as a projection's steps do: the entity's events, and every event (each
    // read once before, so that both find redb's cache as warm).
    for (label, selector) in [
        (
            "read only, entity `account` (every event here), batches",
            Selector {
                entity: Some("account".into()),
                ..Selector::default()
            },
        ),
        ("read only, every event, batches", Selector::all()),
    ] {
        let selector = selector.compile().expect("selector");
        let read_all = || {
            let (mut after, mut n) = (0, 0u64);
            let mut events = EventBatch::default();
            loop {
                ledger
                    .read_batch_into(
                        &selector,
                        ReadOptions::after(after, args.batch),
                        &mut events,
                    )
                    .expect("read");
                let Some(last) = events.last_position() else {
                    break;
                };
                after = last;
                n += events.len() as u64;
            }
            n
        };
        read_all();
        let t = Instant::now();
        let n = read_all();
        let took = t.elapsed();
        println!(
            "| {label} | {:.2} | {} |",
            took.as_secs_f64(),
            rate(n, took)
        );
    }

    // The pipeline, wasm vs native, on the same reads.
    let rt = Runtime::new(RuntimeConfig::default());
    // The module's one reducer, `bank` (an ABI v2 module is called through a reducer).
    let module = rt
        .compile(&bank)
        .expect("bank compiles")
        .bind("bank")
        .expect("bank has the reducer bank");
    let (wasm_time, n) = pipeline(&ledger, args.batch, |groups| {
        rt.evolve_groups(&module, groups)
            .expect("wasm evolve_groups")
    });
    println!(
        "| pipeline, wasm (bank, per stream, no state writes) | {:.2} | {} |",
        wasm_time.as_secs_f64(),
        rate(n, wasm_time)
    );
    let (native_time, n2) = pipeline(&ledger, args.batch, |groups| {
        let ext: Vec<Vec<String>> = groups
            .iter()
            .map(|(_, evs)| evs.iter().map(loom_runtime::view_extensions_json).collect())
            .collect();
        let refs: Vec<_> = groups
            .iter()
            .zip(&ext)
            .map(|((state, evs), ext)| {
                (
                    *state,
                    evs.iter()
                        .zip(ext)
                        .map(|(e, x)| loom_runtime::view_ref(e, x)),
                )
            })
            .collect();
        let input = loom_abi::evolve_groups::encode(&refs);
        let out = loom_guest::__export::run_evolve_groups::<bank::Account>(&input);
        loom_abi::evolve_groups::decode_states(&out[1..], groups.len())
            .expect("native states")
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    });
    assert_eq!(n, n2);
    println!(
        "| pipeline, native (same reducer, same input bytes) | {:.2} | {} |",
        native_time.as_secs_f64(),
        rate(n2, native_time)
    );
    println!(
        "| ratio wasm / native | | {:.2} |",
        native_time.as_secs_f64() / wasm_time.as_secs_f64()
    );

    // The product: the engine's projection workers.
    let engine = Engine::open(
        ledger.clone(),
        EngineConfig {
            batch_events: args.batch,
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    let head = ledger.head();
    // `bank` both ways compares the partitions for the same reducer; `bank-stats` is the
    // global state one would write (a map of 10 000 balances).
    for (name, module, wasm, partition) in [
        ("accounts", "bank", &bank, Partition::Stream),
        ("accounts-single", "bank", &bank, Partition::Single),
        ("bank-stats", "bank-stats", &stats, Partition::Single),
    ] {
        let id = engine.modules().upload(wasm).expect("upload").record.id;
        let t = Instant::now();
        engine
            .projections()
            .put(
                name,
                ProjectionSpec {
                    module: id,
                    reducer: None,
                    selector: Selector {
                        entity: Some("account".into()),
                        ..Selector::default()
                    },
                    partition,
                    strict: false,
                    on_error: OnError::Stop,
                },
            )
            .expect("put");
        engine
            .projections()
            .wait_for(name, head, Duration::from_secs(3600))
            .expect("catch up");
        let took = t.elapsed();
        let st = engine.projections().status(name).expect("status");
        assert_eq!(
            st.active.events_applied, args.events,
            "every event folded once"
        );
        println!(
            "| engine, wasm `{module}`, `{}` partition ({} states committed) | {:.2} | {} |",
            match partition {
                Partition::Stream => "stream",
                Partition::Single => "single",
            },
            st.active.keys,
            took.as_secs_f64(),
            rate(args.events, took)
        );
        engine.projections().delete(name).expect("delete");
    }

    // Commands.
    println!("\n## Commands through the bank decider\n");
    let id = engine.modules().upload(&bank).expect("upload").record.id;
    engine
        .deciders()
        .put(
            "account",
            DeciderSpec {
                module: id,
                reducer: None,
            },
        )
        .expect("bind");
    println!("| workload | clients | commands | seconds | commands/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let engine = Arc::new(engine);
    for shared in [false, true] {
        // Open the accounts first.
        for c in 0..args.clients {
            let key = if shared {
                "shared".to_string()
            } else {
                format!("c{c}")
            };
            let _ =
                engine
                    .deciders()
                    .run("account", &key, br#"{"type":"open","owner":"bench"}"#, None);
        }
        let t = Instant::now();
        let handles: Vec<_> = (0..args.clients)
            .map(|c| {
                let engine = engine.clone();
                let n = args.commands;
                std::thread::spawn(move || {
                    let key = if shared {
                        "shared".to_string()
                    } else {
                        format!("c{c}")
                    };
                    let mut lat = Vec::with_capacity(n);
                    for _ in 0..n {
                        let s = Instant::now();
                        engine
                            .deciders()
                            .run("account", &key, br#"{"type":"deposit","amount":5}"#, None)
                            .expect("command");
                        lat.push(s.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let mut lat: Vec<Duration> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let took = t.elapsed();
        lat.sort_unstable();
        let total = (args.clients * args.commands) as u64;
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
        println!(
            "| {} | {} | {} | {:.2} | {} | {:.2} | {:.2} |",
            if shared {
                "one shared account"
            } else {
                "distinct accounts"
            },
            args.clients,
            total,
            took.as_secs_f64(),
            rate(total, took),
            p(0.5),
            p(0.99)
        );
    }
    engine.shutdown();
}
