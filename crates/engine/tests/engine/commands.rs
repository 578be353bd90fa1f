//! Deciders and reactors with the real example modules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loom_engine::{
    CommandError, DeciderSpec, DefinitionError, Engine, EngineConfig, ReactorSpec, SinkPolicy,
    Status,
};
use loom_ledger::{Ledger, LedgerOptions, ReadOptions, Selector};
use serde_json::{Value, json};

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Arc<Ledger>,
    engine: Engine,
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        sink: SinkPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            timeout: Duration::from_secs(2),
        },
        ..EngineConfig::default()
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path(), LedgerOptions::default()).unwrap());
    register_examples(&ledger);
    let engine = Engine::open(ledger.clone(), engine_config()).unwrap();
    Fixture {
        _dir: dir,
        ledger,
        engine,
    }
}

/// Registers the entities with the examples' own registration files (closed, with schemas),
/// so every event the example deciders and reactors produce is checked against them.
fn register_examples(ledger: &Ledger) {
    for (entity, example) in loom_testkit::EXAMPLE_ENTITIES {
        let spec = loom_testkit::example_entity(example);
        assert!(!spec.open);
        ledger.put_entity(entity, spec).unwrap();
    }
}

impl Fixture {
    fn bind(&self, entity: &str, example: &str) -> String {
        let id = self
            .engine
            .modules()
            .upload(&loom_testkit::example_wasm(example))
            .unwrap()
            .record
            .id;
        self.engine
            .deciders()
            .put(
                entity,
                DeciderSpec {
                    module: id.clone(),
                    reducer: None,
                },
            )
            .unwrap();
        id
    }

    fn run(
        &self,
        entity: &str,
        key: &str,
        command: Value,
    ) -> Result<loom_engine::CommandOutcome, CommandError> {
        self.engine
            .deciders()
            .run(entity, key, command.to_string().as_bytes(), None)
    }

    fn stream(&self, subject: &str) -> Vec<(String, Value)> {
        self.ledger
            .read_stream(subject, 0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| (e.event.ty.clone(), e.event.data_json().unwrap()))
            .collect()
    }
}

#[test]
fn commands_decide_append_and_reject() {
    let f = fixture();
    f.bind("cart", "cart");
    let out = f.run("cart", "1", json!({"type": "create"})).unwrap();
    assert_eq!(out.revision, 1);
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].ty, "was_created");
    assert_eq!(out.events[0].source, "loom/deciders/cart");
    assert!(!out.duplicate);
    let out = f
        .run(
            "cart",
            "1",
            json!({"type": "add_item", "sku": "a", "name": "A", "price": 5, "quantity": 2}),
        )
        .unwrap();
    assert_eq!((out.revision, out.events[0].revision), (2, 2));
    assert_eq!(
        f.stream("cart/1"),
        [
            ("was_created".to_string(), json!({})),
            (
                "had_item_added".to_string(),
                json!({"sku": "a", "name": "A", "price": 5, "quantity": 2})
            ),
        ]
    );
    // Domain rejections write nothing.
    let head = f.ledger.head();
    match f.run("cart", "1", json!({"type": "create"})) {
        Err(CommandError::Rejected(m)) => assert!(m.contains("exists already"), "{m}"),
        other => panic!("{other:?}"),
    }
    match f.run("cart", "2", json!({"type": "check_out"})) {
        Err(CommandError::Rejected(m)) => assert!(m.contains("does not exist"), "{m}"),
        other => panic!("{other:?}"),
    }
    match f.run("cart", "1", json!({"type": "teleport"})) {
        Err(CommandError::Rejected(m)) => assert!(m.contains("malformed command"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.ledger.head(), head);
    // No decider, bad JSON.
    assert!(matches!(
        f.run("order", "1", json!({})),
        Err(CommandError::NoDecider(_))
    ));
    assert!(matches!(
        f.engine.deciders().run("cart", "1", b"{nope", None),
        Err(CommandError::Invalid(_))
    ));
    // Events appended by others are folded too (the cache catches up with the tail).
    f.ledger
        .append(loom_ledger::AppendRequest::new(vec![
            loom_ledger::Event::new("elsewhere", "x", "was_checked_out", "cart/1", json!({})),
        ]))
        .unwrap();
    match f.run("cart", "1", json!({"type": "remove_item", "sku": "a"})) {
        Err(CommandError::Rejected(m)) => assert!(m.contains("checked out"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_idempotency_key_makes_a_retry_return_the_first_result() {
    let f = fixture();
    f.bind("account", "bank");
    let run = |key: &str, cmd: Value| {
        f.engine
            .deciders()
            .run("account", "a", cmd.to_string().as_bytes(), Some(key))
    };
    let first = run("open-1", json!({"type": "open", "owner": "amal"})).unwrap();
    let deposit = run("dep-1", json!({"type": "deposit", "amount": 100})).unwrap();
    let head = f.ledger.head();
    let again = run("dep-1", json!({"type": "deposit", "amount": 100})).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.events, deposit.events);
    assert_eq!(f.ledger.head(), head, "a repeated command writes nothing");
    // Even a different body under the same key returns the first result.
    let again = run("open-1", json!({"type": "open", "owner": "someone else"})).unwrap();
    assert_eq!(again.events, first.events);
    assert_eq!(f.ledger.head(), head);
    assert!(matches!(
        run("bad/key", json!({"type": "deposit", "amount": 1})),
        Err(CommandError::Invalid(_))
    ));
}

#[test]
fn concurrent_withdrawals_never_overdraw_and_never_lose_a_deposit() {
    let f = Arc::new(fixture());
    f.bind("account", "bank");
    f.run(
        "account",
        "shared",
        json!({"type": "open", "owner": "amal"}),
    )
    .unwrap();
    f.run(
        "account",
        "shared",
        json!({"type": "deposit", "amount": 1000}),
    )
    .unwrap();
    let clients = 32;
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let f = f.clone();
            std::thread::spawn(move || {
                let (mut ok, mut deposits, mut redecided) = (0, 0, 0);
                for i in 0..6 {
                    let deposit = (c + i) % 4 == 0;
                    let cmd = if deposit {
                        json!({"type": "deposit", "amount": 10})
                    } else {
                        json!({"type": "withdraw", "amount": 30})
                    };
                    match f.run("account", "shared", cmd) {
                        Ok(out) => {
                            assert_eq!(out.events.len(), 1);
                            ok += 1;
                            deposits += usize::from(deposit);
                            redecided += usize::from(out.attempts > 1);
                        }
                        Err(CommandError::Rejected(m)) => {
                            assert!(m.contains("insufficient"), "{m}");
                        }
                        // Retries ran out against the other writer: refused, nothing written.
                        Err(CommandError::Contention { .. }) => redecided += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                (ok, deposits, redecided)
            })
        })
        .collect();
    // Another writer appends to the same stream directly meanwhile (until the clients are
    // done), so decisions conflict and must be re-decided on the new state.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outside = {
        let (f, done) = (f.clone(), done.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) && i < 2_000 {
                i += 1;
                f.ledger
                    .append(loom_ledger::AppendRequest::new(vec![
                        loom_ledger::Event::new(
                            "teller",
                            format!("t{i}"),
                            "was_credited",
                            "account/shared",
                            json!({"amount": 10}),
                        ),
                    ]))
                    .unwrap();
            }
            i
        })
    };
    let (mut accepted, mut accepted_deposits, mut redecided) = (0, 0, 0);
    for h in handles {
        let (ok, deposits, r) = h.join().unwrap();
        accepted += ok;
        accepted_deposits += deposits;
        redecided += r;
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let outside_credits = outside.join().unwrap();
    assert!(
        redecided > 0,
        "no command had to be decided again: the test did not exercise contention"
    );
    // The final balance is the fold of what was accepted, and it never went below zero.
    let mut balance = 0i64;
    let mut credits = 0;
    let mut debits = 0;
    for (ty, data) in f.stream("account/shared") {
        let amount = data["amount"].as_i64().unwrap_or(0);
        match ty.as_str() {
            "was_credited" => {
                balance += amount;
                credits += 1;
            }
            "was_debited" => {
                balance -= amount;
                debits += 1;
            }
            _ => {}
        }
        assert!(balance >= 0, "overdrawn at some point: {balance}");
    }
    assert_eq!(
        credits + debits,
        accepted + 1 + outside_credits,
        "every accepted command wrote one event"
    );
    assert_eq!(
        credits,
        accepted_deposits + 1 + outside_credits,
        "no deposit is lost"
    );
    // What the decider sees is what the ledger holds.
    match f.run(
        "account",
        "shared",
        json!({"type": "withdraw", "amount": balance + 1}),
    ) {
        Err(CommandError::Rejected(m)) => {
            // The decider names the account: ABI v2 gives it the stream.
            assert!(m.contains(&format!("account shared is {balance}")), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn checkout_spec(f: &Fixture, sink: &loom_testkit::Sink) -> ReactorSpec {
    let id = f
        .engine
        .modules()
        .upload(&loom_testkit::example_wasm("checkout"))
        .unwrap()
        .record
        .id;
    ReactorSpec {
        module: id,
        reducer: None,
        selector: Selector {
            entity: Some("cart".into()),
            types: vec!["was_checked_out".into()],
            ..Selector::default()
        },
        sink: Some(sink.url.clone()),
        react_to_own: false,
    }
}

fn check_out_carts(f: &Fixture, from: usize, to: usize) {
    for c in from..to {
        let key = c.to_string();
        f.run("cart", &key, json!({"type": "create"})).unwrap();
        f.run(
            "cart",
            &key,
            json!({"type": "add_item", "sku": "s", "name": "S", "price": 1, "quantity": 1}),
        )
        .unwrap();
        f.run("cart", &key, json!({"type": "check_out"})).unwrap();
    }
}

fn orders(f: &Fixture) -> Vec<String> {
    f.ledger
        .read(
            &Selector {
                entity: Some("order".into()),
                ..Selector::default()
            }
            .compile()
            .unwrap(),
            ReadOptions::after(0, usize::MAX),
        )
        .unwrap()
        .into_iter()
        .map(|e| e.event.subject)
        .collect()
}

fn delivered_orders(sink: &loom_testkit::Sink) -> Vec<String> {
    sink.received()
        .iter()
        .map(|b| {
            let v: Value = serde_json::from_slice(b).unwrap();
            assert_eq!(v["type"], "order.placed");
            assert_eq!(v["specversion"], "1.0");
            v["data"]["order"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn the_checkout_reactor_places_orders_and_notifies_the_sink_in_order() {
    let f = fixture();
    f.bind("cart", "cart");
    let sink = loom_testkit::Sink::start();
    check_out_carts(&f, 0, 3);
    f.engine
        .reactors()
        .put("checkout", checkout_spec(&f, &sink))
        .unwrap();
    check_out_carts(&f, 3, 5);
    wait_until("five orders", || delivered_orders(&sink).len() == 5);
    let expected: Vec<String> = (0..5).map(|c| format!("order/{c}")).collect();
    assert_eq!(orders(&f), expected);
    assert_eq!(delivered_orders(&sink), expected);
    wait_until("the status to settle", || {
        let st = f.engine.reactors().status("checkout").unwrap();
        st.lag == 0 && st.status == Status::Running
    });
    let st = f.engine.reactors().status("checkout").unwrap();
    assert_eq!((st.reacted, st.appended, st.delivered), (5, 5, 5));
    assert_eq!(st.status, Status::Running);
    // Its module is in use.
    assert!(matches!(
        f.engine.delete_module(&st.spec.module),
        Err(DefinitionError::ModuleInUse { .. })
    ));
}

#[test]
fn a_sink_that_stays_down_fails_the_reactor_and_nothing_is_dropped() {
    let f = fixture();
    f.bind("cart", "cart");
    let sink = loom_testkit::Sink::start();
    sink.set_down(true);
    f.engine
        .reactors()
        .put("checkout", checkout_spec(&f, &sink))
        .unwrap();
    check_out_carts(&f, 0, 3);
    wait_until("the reactor to fail", || {
        f.engine.reactors().status("checkout").unwrap().status == Status::Failed
    });
    let st = f.engine.reactors().status("checkout").unwrap();
    let err = st.last_error.unwrap();
    assert!(err.message.contains("503"), "{}", err.message);
    assert!(sink.refused() >= 4, "retried with backoff");
    assert!(delivered_orders(&sink).is_empty());
    // The sink comes back; resume delivers everything, in order, once each.
    sink.set_down(false);
    f.engine.reactors().resume("checkout").unwrap();
    wait_until("three deliveries", || delivered_orders(&sink).len() >= 3);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(delivered_orders(&sink), ["order/0", "order/1", "order/2"]);
    assert_eq!(
        orders(&f),
        ["order/0", "order/1", "order/2"],
        "appends are not repeated"
    );
}

#[test]
fn reactions_survive_a_restart_without_duplicates_or_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let sink = loom_testkit::Sink::start();
    let open = || {
        let ledger = Arc::new(Ledger::open(dir.path(), LedgerOptions::default()).unwrap());
        register_examples(&ledger);
        let engine = Engine::open(ledger.clone(), engine_config()).unwrap();
        Fixture {
            _dir: tempfile::tempdir().unwrap(),
            ledger,
            engine,
        }
    };
    {
        let f = open();
        f.bind("cart", "cart");
        f.engine
            .reactors()
            .put("checkout", checkout_spec(&f, &sink))
            .unwrap();
        check_out_carts(&f, 0, 20);
        // Stop while it is still working through them (or just after).
        f.engine.shutdown();
    }
    let f = open();
    check_out_carts(&f, 20, 25);
    wait_until("25 orders", || orders(&f).len() == 25);
    wait_until("caught up", || {
        f.engine.reactors().status("checkout").unwrap().lag == 0
    });
    let expected: Vec<String> = (0..25).map(|c| format!("order/{c}")).collect();
    assert_eq!(
        orders(&f),
        expected,
        "no duplicate appended events, no missed events"
    );
    // Deliveries are at-least-once: every order is delivered, in order of first delivery.
    let mut seen = Vec::new();
    for o in delivered_orders(&sink) {
        if !seen.contains(&o) {
            seen.push(o);
        }
    }
    assert_eq!(seen, expected);
}

#[test]
fn modules_that_cannot_be_loaded_at_startup_fail_deciders_and_reactors_not_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let sink = loom_testkit::Sink::start();
    let open = |config: EngineConfig| {
        let ledger = Arc::new(Ledger::open(dir.path(), LedgerOptions::default()).unwrap());
        let engine = Engine::open(ledger.clone(), config).expect("the engine opens");
        Fixture {
            _dir: tempfile::tempdir().unwrap(),
            ledger,
            engine,
        }
    };
    {
        let f = open(engine_config());
        register_examples(&f.ledger);
        f.bind("cart", "cart");
        f.engine
            .reactors()
            .put("checkout", checkout_spec(&f, &sink))
            .unwrap();
        check_out_carts(&f, 0, 1);
        wait_until("one order", || orders(&f).len() == 1);
        f.engine.shutdown();
    }
    {
        // Limits the stored modules no longer fit.
        let mut strict = engine_config();
        strict.runtime.max_module_size = 1000;
        let f = open(strict);
        let err = f
            .run("cart", "9", json!({"type": "create"}))
            .expect_err("the decider's module cannot be loaded");
        assert!(err.to_string().contains("the limit is 1000"), "{err}");
        let st = f.engine.reactors().status("checkout").unwrap();
        assert_eq!(st.status, Status::Failed);
        let message = st.last_error.unwrap().message;
        assert!(message.contains("could not be loaded"), "{message}");
        f.engine.shutdown();
    }
    // With limits they fit, everything works again (the reactor starts clean: its failure
    // was about this process's limits, not about an event).
    let f = open(engine_config());
    check_out_carts(&f, 1, 3);
    wait_until("three orders", || orders(&f).len() == 3);
    assert_eq!(
        f.engine.reactors().status("checkout").unwrap().status,
        Status::Running
    );
}
