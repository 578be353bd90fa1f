//! What the projection tests share: a ledger with an engine over it, the example modules,
//! events and specs, and a clean fold to compare states with.

use std::sync::Arc;
use std::time::Duration;

use loom_engine::{At, Engine, EngineConfig, Entry, OnError, Partition, ProjectionSpec, Status};
use loom_ledger::{AppendRequest, EntitySpec, Event, Ledger, LedgerOptions, Selector};
use serde_json::{Value, json};

pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) engine: Engine,
}

pub(crate) fn config(batch: usize) -> EngineConfig {
    EngineConfig {
        batch_events: batch,
        ..EngineConfig::default()
    }
}

pub(crate) fn fixture(batch: usize) -> Fixture {
    fixture_with(config(batch))
}

pub(crate) fn fixture_with(config: EngineConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path(), LedgerOptions::default()).unwrap());
    for entity in ["cart", "account"] {
        ledger
            .put_entity(
                entity,
                EntitySpec {
                    open: true,
                    ..EntitySpec::default()
                },
            )
            .unwrap();
    }
    let engine = Engine::open(ledger.clone(), config).unwrap();
    Fixture {
        dir,
        ledger,
        engine,
    }
}

impl Fixture {
    pub(crate) fn upload(&self, example: &str) -> String {
        let bytes = loom_testkit::example_wasm(example);
        self.engine.modules().upload(&bytes).unwrap().record.id
    }

    pub(crate) fn append(&self, events: Vec<Event>) -> u64 {
        self.ledger
            .append(AppendRequest::new(events))
            .unwrap()
            .last_position
    }

    pub(crate) fn state(&self, name: &str, key: Option<&str>, at: At) -> Value {
        let v = self.engine.projections().state(name, key, at).unwrap();
        serde_json::from_slice(&v.state).unwrap()
    }

    pub(crate) fn wait(&self, name: &str) {
        let head = self.ledger.head();
        self.engine
            .projections()
            .wait_for(name, head, WAIT)
            .unwrap();
    }
}

pub(crate) fn ev(subject: &str, id: &str, ty: &str, data: Value) -> Event {
    Event::new("test", id, ty, subject, data)
}

/// `carts` carts with `items` items each, interleaved across carts.
pub(crate) fn cart_history(carts: usize, items: usize) -> Vec<Event> {
    let mut out = Vec::new();
    for c in 0..carts {
        out.push(ev(
            &format!("cart/{c}"),
            &format!("c{c}"),
            "was_created",
            json!({}),
        ));
    }
    for i in 0..items {
        for c in 0..carts {
            out.push(ev(
                &format!("cart/{c}"),
                &format!("c{c}-i{i}"),
                "had_item_added",
                json!({"sku": format!("sku-{}", i % 3), "name": "thing", "price": 10 + i as i64, "quantity": 1}),
            ));
        }
    }
    out
}

pub(crate) fn cart_spec(module: &str) -> ProjectionSpec {
    ProjectionSpec {
        module: module.to_owned(),
        reducer: None,
        selector: Selector {
            entity: Some("cart".into()),
            ..Selector::default()
        },
        partition: Partition::Stream,
        strict: false,
        on_error: OnError::Stop,
    }
}

/// The whole `account` entity, folded by `module`'s reducer, stopping at an error.
pub(crate) fn account_spec(module: &str, partition: Partition) -> ProjectionSpec {
    ProjectionSpec {
        module: module.to_owned(),
        reducer: None,
        selector: Selector {
            entity: Some("account".into()),
            ..Selector::default()
        },
        partition,
        strict: false,
        on_error: OnError::Stop,
    }
}

/// The state a clean fold of the stream gives, computed directly through the runtime.
pub(crate) fn clean_fold(f: &Fixture, module: &str, subject: &str, upto: u64) -> Value {
    let m = f
        .engine
        .modules()
        .load_with(module, None, &[Entry::Evolve])
        .unwrap();
    let events: Vec<_> = f
        .ledger
        .read_stream(subject, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.position <= upto)
        .collect();
    serde_json::from_slice(&f.engine.runtime().evolve(&m, None, &events).unwrap()).unwrap()
}

pub(crate) fn wait_status(f: &Fixture, name: &str, want: Status) -> loom_engine::ProjectionStatus {
    let started = std::time::Instant::now();
    loop {
        let st = f.engine.projections().status(name).unwrap();
        if st.active.status == want && st.next.is_none() {
            return st;
        }
        assert!(
            started.elapsed() < WAIT,
            "status stayed {st:?}, wanted {want:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Defines the per-stream `accounts` projection over `module` (the bank example), waits
/// until it has folded up to the head and returns its status.
pub(crate) fn fold_accounts(f: &Fixture, module: &str) -> loom_engine::ProjectionStatus {
    f.engine
        .projections()
        .put("accounts", account_spec(module, Partition::Stream))
        .unwrap();
    f.wait("accounts");
    f.engine.projections().status("accounts").unwrap()
}
