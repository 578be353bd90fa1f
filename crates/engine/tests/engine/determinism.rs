//! Determinism: every example projection, followed live while events arrive (some before the
//! projection is defined, some after), has byte-for-byte the state that a replay at the head
//! (`At::Position(head)`) and a rebuild from position 0 give.
//!
//! Projections: `cart` per stream, `bank` per stream and `bank-stats` single, over a few
//! hundred generated events (a fixed pseudo-random sequence). The folds run in small batches
//! (so live folding, replay and rebuild cut the history at different places), and the states
//! are checked against balances computed here, so that a projection folding nothing (or
//! everything twice) cannot pass by being consistently wrong.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use loom_engine::{At, Engine, EngineConfig, OnError, Partition, ProjectionSpec, StateView};
use loom_ledger::{AppendRequest, EntitySpec, Event, Ledger, LedgerOptions, Selector};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const CARTS: usize = 12;
const ACCOUNTS: usize = 9;

/// xorshift64*: a fixed, dependency-free sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The history, and what the bank projections must end with.
struct History {
    events: Vec<Event>,
    /// account subject → (owner, balance).
    accounts: BTreeMap<String, (String, i64)>,
    total_deposits: i64,
}

fn history(n: usize) -> History {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut events = Vec::with_capacity(n);
    let mut accounts: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let mut total_deposits = 0;
    for i in 0..n {
        let id = format!("ev-{i}");
        let event = if rng.below(2) == 0 {
            let subject = format!("cart/{}", rng.below(CARTS));
            let sku = format!("sku-{}", rng.below(5));
            let (ty, data) = match rng.below(10) {
                0 => ("was_created", json!({})),
                1 | 2 => ("had_item_removed", json!({ "sku": sku })),
                3 => ("was_checked_out", json!({})),
                _ => (
                    "had_item_added",
                    json!({
                        "sku": sku,
                        "name": format!("thing «{}»", rng.below(100)),
                        "price": 100 + rng.below(900) as i64,
                        "quantity": 1 + rng.below(3) as i64,
                    }),
                ),
            };
            Event::new("determinism", id, ty, subject, data)
        } else {
            let subject = format!("account/{}", rng.below(ACCOUNTS));
            let amount = 1 + rng.below(5_000) as i64;
            let entry = accounts.entry(subject.clone()).or_default();
            let (ty, data) = match rng.below(6) {
                0 => {
                    let owner = format!("owner-{}", rng.below(1000));
                    entry.0 = owner.clone();
                    ("was_opened", json!({ "owner": owner }))
                }
                1 | 2 => {
                    entry.1 -= amount;
                    ("was_debited", json!({ "amount": amount }))
                }
                _ => {
                    entry.1 += amount;
                    total_deposits += amount;
                    ("was_credited", json!({ "amount": amount }))
                }
            };
            Event::new("determinism", id, ty, subject, data)
        };
        events.push(event);
    }
    History {
        events,
        accounts,
        total_deposits,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Arc<Ledger>,
    engine: Engine,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(dir.path(), LedgerOptions::default()).unwrap());
        for entity in ["cart", "account"] {
            let spec = EntitySpec {
                open: true,
                ..EntitySpec::default()
            };
            ledger.put_entity(entity, spec).unwrap();
        }
        // Small batches: live folding, replay and rebuild cut the history in different places.
        let config = EngineConfig {
            batch_events: 16,
            ..EngineConfig::default()
        };
        let engine = Engine::open(ledger.clone(), config).unwrap();
        Fixture {
            _dir: dir,
            ledger,
            engine,
        }
    }

    /// Appends in batches of 1-7 events.
    fn append(&self, events: &[Event], rng: &mut Rng) {
        let mut rest = events;
        while !rest.is_empty() {
            let n = (1 + rng.below(7)).min(rest.len());
            let (batch, tail) = rest.split_at(n);
            self.ledger
                .append(AppendRequest::new(batch.to_vec()))
                .unwrap();
            rest = tail;
        }
    }

    fn define(&self, name: &str, example: &str, entity: &str, partition: Partition) {
        let bytes = loom_testkit::example_wasm(example);
        let module = self.engine.modules().upload(&bytes).unwrap().record.id;
        let spec = ProjectionSpec {
            module,
            reducer: None,
            selector: Selector {
                entity: Some(entity.into()),
                ..Selector::default()
            },
            partition,
            strict: false,
            on_error: OnError::Stop,
        };
        self.engine.projections().put(name, spec).unwrap();
    }

    fn wait(&self, name: &str) {
        let head = self.ledger.head();
        self.engine
            .projections()
            .wait_for(name, head, WAIT)
            .unwrap();
    }

    /// Every key's state (`""` for a single projection) at `at`.
    fn states(&self, name: &str, partition: Partition, at: At) -> BTreeMap<String, StateView> {
        let p = self.engine.projections();
        match partition {
            Partition::Single => [(String::new(), p.state(name, None, at).unwrap())].into(),
            Partition::Stream => p
                .keys(name, None, 10_000)
                .unwrap()
                .into_iter()
                .map(|k| {
                    let v = p.state(name, Some(&k), at).unwrap();
                    (k, v)
                })
                .collect(),
        }
    }
}

fn json(v: &StateView) -> Value {
    serde_json::from_slice(&v.state).unwrap()
}

/// Checks that two sets of states are byte-identical, with the same event counts.
fn assert_identical(what: &str, a: &BTreeMap<String, StateView>, b: &BTreeMap<String, StateView>) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: keys"
    );
    for (key, va) in a {
        let vb = &b[key];
        assert!(
            va.state == vb.state,
            "{what}: state of {key:?} differs:\n{}\n{}",
            String::from_utf8_lossy(&va.state),
            String::from_utf8_lossy(&vb.state)
        );
        assert_eq!(
            va.events_applied, vb.events_applied,
            "{what}: events of {key:?}"
        );
    }
}

#[test]
fn live_replayed_and_rebuilt_states_are_byte_identical() {
    let f = Fixture::new();
    let h = history(600);
    let mut rng = Rng(42);
    let (before, after) = h.events.split_at(h.events.len() / 2);

    // Half the history exists before the projections are defined; they catch up over it and
    // then follow the other half live, appended while they run.
    f.append(before, &mut rng);
    let projections = [
        ("carts", "cart", "cart", Partition::Stream),
        ("accounts", "bank", "account", Partition::Stream),
        ("stats", "bank-stats", "account", Partition::Single),
    ];
    for (name, example, entity, partition) in projections {
        f.define(name, example, entity, partition);
    }
    f.append(after, &mut rng);
    let head = f.ledger.head();
    assert_eq!(head, h.events.len() as u64);

    for (name, _, entity, partition) in projections {
        f.wait(name);
        let live = f.states(name, partition, At::Now);
        let selected = h.events.iter().filter(|e| e.entity() == entity).count() as u64;
        assert_eq!(
            live.values().map(|v| v.events_applied).sum::<u64>(),
            selected,
            "{name}: every selected event folded exactly once"
        );
        if partition == Partition::Stream {
            let streams: std::collections::BTreeSet<&str> = h
                .events
                .iter()
                .filter(|e| e.entity() == entity)
                .map(|e| e.subject.as_str())
                .collect();
            assert_eq!(
                live.keys()
                    .map(String::as_str)
                    .collect::<std::collections::BTreeSet<_>>(),
                streams,
                "{name}: one state per stream"
            );
        }

        // Replay at the head, from the ledger, without the stored states.
        let replayed = f.states(name, partition, At::Position(head));
        assert_identical(&format!("{name}: live vs replay"), &live, &replayed);

        // Rebuild from zero, in the background, through the same worker path.
        f.engine.projections().rebuild(name).unwrap();
        f.wait(name);
        let rebuilt = f.states(name, partition, At::Now);
        assert_identical(&format!("{name}: live vs rebuilt"), &live, &rebuilt);
    }

    // The states are the right ones, not just the same ones.
    let accounts = f.states("accounts", Partition::Stream, At::Now);
    for (subject, (owner, balance)) in &h.accounts {
        let s = json(&accounts[subject]);
        assert_eq!(s["balance"], *balance, "{subject}");
        if owner.is_empty() {
            assert!(s["owner"].is_null(), "{subject}");
        } else {
            assert_eq!(s["owner"], owner.as_str(), "{subject}");
        }
    }
    let stats = json(&f.states("stats", Partition::Single, At::Now)[""]);
    assert_eq!(stats["total_deposits"], h.total_deposits);
    assert_eq!(
        stats["balances"].as_object().unwrap().len(),
        h.accounts.len()
    );
    let carts = f.states("carts", Partition::Stream, At::Now);
    assert!(
        carts
            .values()
            .any(|v| !json(v)["items"].as_array().unwrap().is_empty()),
        "some cart has items"
    );

    f.engine.shutdown();
    f.ledger.shutdown();
}
