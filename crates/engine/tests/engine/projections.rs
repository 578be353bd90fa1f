//! Projections over a real ledger with the real example modules.

use std::sync::Arc;
use std::time::Duration;

use loom_engine::{
    At, DefinitionError, Engine, EngineConfig, Entry, OnError, Partition, ProjectionSpec,
    PutOutcome, QueryError, Status,
};
use loom_ledger::{AppendRequest, EntitySpec, Event, Ledger, LedgerOptions, Selector};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    dir: tempfile::TempDir,
    ledger: Arc<Ledger>,
    engine: Engine,
}

fn config(batch: usize) -> EngineConfig {
    EngineConfig {
        batch_events: batch,
        ..EngineConfig::default()
    }
}

fn fixture(batch: usize) -> Fixture {
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
    let engine = Engine::open(ledger.clone(), config(batch)).unwrap();
    Fixture {
        dir,
        ledger,
        engine,
    }
}

impl Fixture {
    fn upload(&self, example: &str) -> String {
        let bytes = loom_testkit::example_wasm(example);
        self.engine.modules().upload(&bytes).unwrap().record.id
    }

    fn append(&self, events: Vec<Event>) -> u64 {
        self.ledger
            .append(AppendRequest::new(events))
            .unwrap()
            .last_position
    }

    fn state(&self, name: &str, key: Option<&str>, at: At) -> Value {
        let v = self.engine.projections().state(name, key, at).unwrap();
        serde_json::from_slice(&v.state).unwrap()
    }

    fn wait(&self, name: &str) {
        let head = self.ledger.head();
        self.engine
            .projections()
            .wait_for(name, head, WAIT)
            .unwrap();
    }
}

fn ev(subject: &str, id: &str, ty: &str, data: Value) -> Event {
    Event::new("test", id, ty, subject, data)
}

/// `carts` carts with `items` items each, interleaved across carts.
fn cart_history(carts: usize, items: usize) -> Vec<Event> {
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

fn cart_spec(module: &str) -> ProjectionSpec {
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
fn account_spec(module: &str, partition: Partition) -> ProjectionSpec {
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
fn clean_fold(f: &Fixture, module: &str, subject: &str, upto: u64) -> Value {
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

#[test]
fn catches_up_over_history_then_follows_live_appends() {
    let f = fixture(64);
    let module = f.upload("cart");
    let history = cart_history(5, 40);
    let n = history.len() as u64;
    for chunk in history.chunks(50) {
        f.append(chunk.to_vec());
    }
    // Events of another entity are not selected.
    f.append(vec![ev(
        "account/1",
        "a1",
        "was_opened",
        json!({"owner": "x"}),
    )]);
    assert_eq!(
        f.engine
            .projections()
            .put("carts", cart_spec(&module))
            .unwrap(),
        PutOutcome::Created
    );
    f.wait("carts");
    let st = f.engine.projections().status("carts").unwrap();
    assert_eq!(st.active.status, Status::Running);
    assert_eq!(
        st.active.events_applied, n,
        "every cart event folded exactly once"
    );
    assert_eq!(st.active.keys, 5);
    assert_eq!(st.active.lag, 0);
    let head = f.ledger.head();
    for c in 0..5 {
        let subject = format!("cart/{c}");
        assert_eq!(
            f.state("carts", Some(&subject), At::Now),
            clean_fold(&f, &module, &subject, head)
        );
    }
    let s0 = f.state("carts", Some("cart/0"), At::Now);
    assert_eq!(s0["status"], "active");
    assert_eq!(s0["items"].as_array().unwrap().len(), 3);

    // Live: an append is folded promptly; min_position gives read-your-writes.
    let p = f.append(vec![ev("cart/0", "co", "was_checked_out", json!({}))]);
    f.engine.projections().wait_for("carts", p, WAIT).unwrap();
    let view = f
        .engine
        .projections()
        .state("carts", Some("cart/0"), At::Now)
        .unwrap();
    assert!(view.position >= p);
    assert_eq!(view.events_applied, 42);
    let s0: Value = serde_json::from_slice(&view.state).unwrap();
    assert_eq!(s0["status"], "checked_out");
    assert_eq!(
        f.engine
            .projections()
            .status("carts")
            .unwrap()
            .active
            .events_applied,
        n + 1
    );
    // Putting the same definition again changes nothing.
    assert_eq!(
        f.engine
            .projections()
            .put("carts", cart_spec(&module))
            .unwrap(),
        PutOutcome::Unchanged
    );
    // Unknown keys and the wrong addressing are errors.
    assert!(matches!(
        f.engine
            .projections()
            .state("carts", Some("cart/404"), At::Now),
        Err(QueryError::KeyNotFound { .. })
    ));
    assert!(matches!(
        f.engine.projections().state("carts", None, At::Now),
        Err(QueryError::WrongPartition(_))
    ));
    let keys = f.engine.projections().keys("carts", None, 3).unwrap();
    assert_eq!(keys, ["cart/0", "cart/1", "cart/2"]);
    let keys = f
        .engine
        .projections()
        .keys("carts", Some("cart/2"), 10)
        .unwrap();
    assert_eq!(keys, ["cart/3", "cart/4"]);
}

#[test]
fn a_catch_up_over_many_batches_while_appends_go_on_folds_every_event_once() {
    // Batches of 16: every step of the catch-up but the last is full, so each reads the
    // batch after it beside its fold; the appends meanwhile (some of another entity) move
    // the head between those reads.
    let f = fixture(16);
    let module = f.upload("cart");
    let history = cart_history(7, 60);
    for chunk in history.chunks(50) {
        f.append(chunk.to_vec());
    }
    f.engine
        .projections()
        .put("carts", cart_spec(&module))
        .unwrap();
    let late = 150;
    for i in 0..late {
        f.append(vec![ev(
            &format!("cart/{}", i % 7),
            &format!("late{i}"),
            "had_item_added",
            json!({"sku": format!("late-{i}"), "name": "thing", "price": 1, "quantity": 1}),
        )]);
        if i % 10 == 0 {
            f.append(vec![ev(
                "account/1",
                &format!("a{i}"),
                "was_opened",
                json!({"owner": "x"}),
            )]);
        }
    }
    f.wait("carts");
    let st = f.engine.projections().status("carts").unwrap();
    assert_eq!(st.active.events_applied, (history.len() + late) as u64);
    assert_eq!(st.active.keys, 7);
    let head = f.ledger.head();
    for c in 0..7 {
        let subject = format!("cart/{c}");
        assert_eq!(
            f.state("carts", Some(&subject), At::Now),
            clean_fold(&f, &module, &subject, head),
            "{subject}"
        );
    }
}

#[test]
fn a_module_error_in_a_later_batch_of_a_catch_up_keeps_what_came_before() {
    // Batches of 8: the failing event is in the eighth; the batch read beside that step's
    // fold is not used (the projection stops before it) and `resume` reads it again.
    let f = fixture(8);
    let module = f.upload("bank");
    for a in 0..3 {
        f.append(vec![ev(
            &format!("account/{a}"),
            &format!("o{a}"),
            "was_opened",
            json!({"owner": "x"}),
        )]);
    }
    let mut bad = 0;
    for i in 0..100 {
        let amount = if i == 60 { json!("lots") } else { json!(i) };
        let p = f.append(vec![ev(
            &format!("account/{}", i % 3),
            &format!("c{i}"),
            "was_credited",
            json!({ "amount": amount }),
        )]);
        if i == 60 {
            bad = p;
        }
    }
    let spec = account_spec(&module, Partition::Stream);
    f.engine.projections().put("accounts", spec).unwrap();
    for round in 0..2 {
        let st = wait_status(&f, "accounts", Status::Failed);
        assert_eq!(st.active.last_error.unwrap().position, bad, "round {round}");
        assert_eq!(st.active.position, bad - 1);
        assert_eq!(st.active.events_applied, bad - 1);
        for a in 0..3 {
            let subject = format!("account/{a}");
            assert_eq!(
                f.state("accounts", Some(&subject), At::Now),
                clean_fold(&f, &module, &subject, bad - 1),
                "{subject}"
            );
        }
        f.engine.projections().resume("accounts").unwrap();
    }
}

#[test]
fn min_position_waits_and_times_out() {
    let f = fixture(100);
    let module = f.upload("cart");
    f.engine
        .projections()
        .put("carts", cart_spec(&module))
        .unwrap();
    let p = f.append(cart_history(1, 1));
    assert!(f.engine.projections().wait_for("carts", p, WAIT).unwrap() >= p);
    match f
        .engine
        .projections()
        .wait_for("carts", p + 100, Duration::from_millis(150))
    {
        Err(QueryError::Timeout {
            wanted, reached, ..
        }) => {
            assert_eq!(wanted, p + 100);
            assert!(reached >= p);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn time_travel_equals_a_fresh_fold_up_to_that_point() {
    let f = fixture(32);
    let module = f.upload("cart");
    let mut marks = Vec::new();
    for (i, chunk) in cart_history(2, 12).chunks(5).enumerate() {
        let p = f.append(chunk.to_vec());
        marks.push((p, f.ledger.event_at(p).unwrap().unwrap().recorded_micros));
        if i % 2 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    f.engine
        .projections()
        .put("carts", cart_spec(&module))
        .unwrap();
    f.wait("carts");
    for &(p, t) in &marks {
        for subject in ["cart/0", "cart/1"] {
            let expected = clean_fold(&f, &module, subject, p);
            assert_eq!(
                f.state("carts", Some(subject), At::Position(p)),
                expected,
                "{subject} at {p}"
            );
            assert_eq!(
                f.state("carts", Some(subject), At::Time(t)),
                expected,
                "{subject} at time of {p}"
            );
        }
    }
    let view = f
        .engine
        .projections()
        .state("carts", Some("cart/1"), At::Position(3))
        .unwrap();
    assert_eq!(view.position, 3);
    assert_eq!(view.events_applied, 1);
    // Before the cart existed.
    assert!(matches!(
        f.engine
            .projections()
            .state("carts", Some("cart/1"), At::Position(1)),
        Err(QueryError::KeyNotFound { .. })
    ));
    assert!(matches!(
        f.engine
            .projections()
            .state("carts", Some("cart/1"), At::Time(0)),
        Err(QueryError::KeyNotFound { .. })
    ));
}

#[test]
fn single_projection_with_query() {
    let f = fixture(1000);
    let module = f.upload("bank-stats");
    let spec = account_spec(&module, Partition::Single);
    f.engine.projections().put("bank", spec).unwrap();
    // Empty: the initial state.
    f.wait("bank");
    assert_eq!(f.state("bank", None, At::Now)["accounts"], 0);
    f.append(vec![
        ev("account/a", "1", "was_opened", json!({"owner": "amal"})),
        ev("account/b", "2", "was_opened", json!({"owner": "bo"})),
        ev("account/a", "3", "was_credited", json!({"amount": 700})),
        ev("account/b", "4", "was_credited", json!({"amount": 300})),
        ev("account/a", "5", "was_debited", json!({"amount": 500})),
        ev("cart/x", "6", "was_created", json!({})),
    ]);
    f.wait("bank");
    let s = f.state("bank", None, At::Now);
    assert_eq!(s["accounts"], 2);
    assert_eq!(s["total_deposits"], 1000);
    assert_eq!(s["largest_balance"], 300);
    assert_eq!(
        f.state("bank", None, At::Position(4))["largest_balance"],
        700
    );
    let top = f
        .engine
        .projections()
        .query("bank", None, br#"{"n": 1}"#)
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&top).unwrap(),
        json!([["b", 300]])
    );
    match f
        .engine
        .projections()
        .query("bank", None, br#"{"n": "many"}"#)
    {
        Err(QueryError::Rejected(m)) => assert!(m.contains("malformed"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The module is in use: it cannot be deleted.
    match f.engine.delete_module(&module) {
        Err(DefinitionError::ModuleInUse { users, .. }) => assert_eq!(users, ["projection bank"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn restart_mid_catch_up_resumes_without_applying_anything_twice() {
    let f = fixture(25);
    let module = f.upload("cart");
    let history = cart_history(10, 60);
    let n = history.len() as u64;
    for chunk in history.chunks(200) {
        f.append(chunk.to_vec());
    }
    f.engine
        .projections()
        .put("carts", cart_spec(&module))
        .unwrap();
    // Stop while it is part-way.
    loop {
        let applied = f
            .engine
            .projections()
            .status("carts")
            .unwrap()
            .active
            .events_applied;
        if applied > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let Fixture {
        dir,
        ledger,
        engine,
    } = f;
    engine.shutdown();
    let partway = engine
        .projections()
        .status("carts")
        .unwrap()
        .active
        .events_applied;
    drop(engine);
    assert!(
        partway < n,
        "the test needs to stop part-way ({partway} of {n})"
    );
    let engine = Engine::open(ledger.clone(), config(25)).unwrap();
    let f = Fixture {
        dir,
        ledger,
        engine,
    };
    f.wait("carts");
    let st = f.engine.projections().status("carts").unwrap();
    assert_eq!(st.active.events_applied, n, "exact count after the restart");
    let head = f.ledger.head();
    for c in 0..10 {
        let subject = format!("cart/{c}");
        assert_eq!(
            f.state("carts", Some(&subject), At::Now),
            clean_fold(&f, &module, &subject, head)
        );
        let v = f
            .engine
            .projections()
            .state("carts", Some(&subject), At::Now)
            .unwrap();
        assert_eq!(v.events_applied, 61);
    }
}

#[test]
fn a_module_error_fails_the_projection_at_the_event_and_an_upgrade_recovers() {
    let f = fixture(100);
    let module = f.upload("bank");
    let spec = account_spec(&module, Partition::Stream);
    f.append(vec![
        ev("account/1", "1", "was_opened", json!({"owner": "amal"})),
        ev("account/1", "2", "was_credited", json!({"amount": 100})),
    ]);
    let bad = f.append(vec![ev(
        "account/1",
        "3",
        "was_credited",
        json!({"amount": "lots"}),
    )]);
    f.append(vec![ev(
        "account/1",
        "4",
        "was_credited",
        json!({"amount": 5}),
    )]);
    f.engine
        .projections()
        .put("accounts", spec.clone())
        .unwrap();
    let st = wait_status(&f, "accounts", Status::Failed);
    let err = st.active.last_error.unwrap();
    assert_eq!(err.position, bad);
    assert!(err.message.contains("was_credited"), "{}", err.message);
    // Everything before the failing event is folded and served.
    assert_eq!(st.active.position, bad - 1);
    assert_eq!(
        f.state("accounts", Some("account/1"), At::Now)["balance"],
        100
    );
    // Resume retries — and fails again on the same event.
    f.engine.projections().resume("accounts").unwrap();
    let st = wait_status(&f, "accounts", Status::Failed);
    assert_eq!(st.active.last_error.unwrap().position, bad);
    // A new definition (here: a filter that leaves the bad event out) builds and swaps in.
    let fixed = ProjectionSpec {
        selector: Selector {
            data: Some("$[?$.amount >= 0]".into()),
            ..spec.selector.clone()
        },
        ..spec
    };
    f.engine
        .projections()
        .put("accounts", fixed.clone())
        .unwrap();
    let st = wait_status(&f, "accounts", Status::Running);
    // The status names the reducer the definition left to the module.
    assert_eq!(
        st.spec,
        ProjectionSpec {
            reducer: Some("bank".into()),
            ..fixed
        }
    );
    assert!(st.next.is_none());
    // was_opened has no amount, so the filter also drops it: owner stays null.
    assert_eq!(
        f.state("accounts", Some("account/1"), At::Now)["balance"],
        105
    );
}

#[test]
fn a_failing_event_among_many_streams_is_located_and_the_rest_before_it_is_kept() {
    // One batch of 40 accounts folds in one `evolve_groups` call; the bad event is in the
    // middle of it.
    let f = fixture(10_000);
    let module = f.upload("bank");
    let mut events = Vec::new();
    for round in 0..3 {
        for a in 0..40 {
            let (ty, data) = match round {
                0 => ("was_opened", json!({"owner": format!("o{a}")})),
                _ => ("was_credited", json!({"amount": 10 * round})),
            };
            events.push(ev(
                &format!("account/{a}"),
                &format!("{round}-{a}"),
                ty,
                data,
            ));
        }
    }
    // Account 17's second credit is malformed: position 40 + 40 + 18 = 98.
    events[97].data = Some(loom_ledger::Data::json(&json!({"amount": "lots"})));
    let last = f.append(events);
    assert_eq!(last, 120);
    f.engine
        .projections()
        .put("accounts", account_spec(&module, Partition::Stream))
        .unwrap();
    let st = wait_status(&f, "accounts", Status::Failed);
    let err = st.active.last_error.unwrap();
    assert_eq!(err.position, 98, "{}", err.message);
    assert_eq!(st.active.position, 97);
    assert_eq!(st.active.events_applied, 97);
    let balance =
        |a: u32| f.state("accounts", Some(&format!("account/{a}")), At::Now)["balance"].clone();
    // Accounts 0..17 got both credits (positions up to 97), the rest only the first.
    assert_eq!(balance(0), 30);
    assert_eq!(balance(16), 30);
    assert_eq!(balance(17), 10);
    assert_eq!(balance(39), 10);
}

#[test]
fn a_step_that_fails_in_every_stream_is_located_in_few_calls() {
    // 400 accounts, each with a malformed credit: the batch's `evolve_groups` call fails,
    // and so would every group folded alone. Bisection finds the first failing group and
    // event in O(log n) calls (one call per group before: 400+).
    let f = fixture(10_000);
    let module = f.upload("bank");
    let accounts = 400;
    let mut events = Vec::new();
    for a in 0..accounts {
        events.push(ev(
            &format!("account/{a}"),
            &format!("o{a}"),
            "was_opened",
            json!({"owner": "x"}),
        ));
    }
    for a in 0..accounts {
        events.push(ev(
            &format!("account/{a}"),
            &format!("c{a}"),
            "was_credited",
            json!({"amount": "lots"}),
        ));
    }
    f.append(events);
    let before = f.engine.runtime().calls();
    f.engine
        .projections()
        .put("accounts", account_spec(&module, Partition::Stream))
        .unwrap();
    let st = wait_status(&f, "accounts", Status::Failed);
    let calls = f.engine.runtime().calls() - before;
    let err = st.active.last_error.unwrap();
    // Account 0's credit, the first failing event in position order.
    assert_eq!(err.position, accounts + 1, "{}", err.message);
    assert_eq!(st.active.position, accounts);
    eprintln!("located in {calls} calls");
    assert!(calls < 40, "{calls} calls to locate the failure");
}

#[test]
fn a_module_that_cannot_be_loaded_at_startup_fails_its_projection_not_the_server() {
    let f = fixture(100);
    let module = f.upload("bank");
    f.append(vec![
        ev("account/1", "1", "was_opened", json!({"owner": "amal"})),
        ev("account/1", "2", "was_credited", json!({"amount": 100})),
    ]);
    let spec = account_spec(&module, Partition::Stream);
    f.engine.projections().put("accounts", spec).unwrap();
    f.wait("accounts");
    let Fixture {
        dir,
        ledger,
        engine,
    } = f;
    engine.shutdown();
    drop(engine);
    // Restart with limits the stored module no longer fits.
    let strict = EngineConfig {
        runtime: loom_runtime::RuntimeConfig {
            max_module_size: 1000,
            ..loom_runtime::RuntimeConfig::default()
        },
        ..config(100)
    };
    let engine = Engine::open(ledger.clone(), strict.clone()).expect("the engine still opens");
    let st = engine.projections().status("accounts").unwrap();
    assert_eq!(st.active.status, Status::Failed);
    let err = st.active.last_error.unwrap();
    assert!(
        err.message.contains("could not be loaded"),
        "{}",
        err.message
    );
    // What was folded before is still served.
    let v = engine
        .projections()
        .state("accounts", Some("account/1"), At::Now)
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&v.state).unwrap()["balance"],
        100
    );
    // Resume tries again: caught up, it runs until an event needs the module, then fails
    // again under the same limits.
    engine.projections().resume("accounts").unwrap();
    ledger
        .append(loom_ledger::AppendRequest::new(vec![ev(
            "account/1",
            "3",
            "was_credited",
            json!({"amount": 5}),
        )]))
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let st = engine.projections().status("accounts").unwrap().active;
        if st.status == Status::Failed {
            let message = st.last_error.unwrap().message;
            assert!(message.contains("the limit is 1000"), "{message}");
            break;
        }
        assert!(started.elapsed() < WAIT, "{st:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    engine.shutdown();
    drop(engine);
    // With limits it fits again, a resume brings the projection back and it follows on.
    let engine = Engine::open(ledger.clone(), config(100)).unwrap();
    engine.projections().resume("accounts").unwrap();
    let f = Fixture {
        dir,
        ledger,
        engine,
    };
    f.append(vec![ev(
        "account/1",
        "3",
        "was_credited",
        json!({"amount": 5}),
    )]);
    f.wait("accounts");
    assert_eq!(
        f.state("accounts", Some("account/1"), At::Now)["balance"],
        105
    );
    assert_eq!(
        f.engine
            .projections()
            .status("accounts")
            .unwrap()
            .active
            .status,
        Status::Running
    );
}

fn wait_status(f: &Fixture, name: &str, want: Status) -> loom_engine::ProjectionStatus {
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

#[test]
fn blue_green_upgrade_serves_the_old_version_until_the_swap() {
    let f = fixture(50);
    let cart = f.upload("cart");
    f.append(cart_history(3, 10));
    f.engine
        .projections()
        .put("carts", cart_spec(&cart))
        .unwrap();
    f.wait("carts");
    let before = f.state("carts", Some("cart/1"), At::Now);
    assert_eq!(before["items"].as_array().unwrap().len(), 3);
    // Pause so the new generation cannot catch up yet.
    f.engine.projections().pause("carts").unwrap();
    let upgraded = ProjectionSpec {
        selector: Selector {
            entity: Some("cart".into()),
            types: vec!["was_created".into()],
            ..Selector::default()
        },
        ..cart_spec(&cart)
    };
    assert_eq!(
        f.engine
            .projections()
            .put("carts", upgraded.clone())
            .unwrap(),
        PutOutcome::Upgrading
    );
    let st = f.engine.projections().status("carts").unwrap();
    let next = st.next.expect("the building generation is shown");
    assert_eq!(
        next.spec,
        ProjectionSpec {
            reducer: Some("cart".into()),
            ..upgraded.clone()
        }
    );
    assert_eq!(next.progress.generation, st.active.generation + 1);
    assert_eq!(next.progress.status, Status::Paused);
    // The old version answers meanwhile.
    assert_eq!(f.state("carts", Some("cart/1"), At::Now), before);
    // Resume: the new generation catches up and takes over.
    f.engine.projections().resume("carts").unwrap();
    let st = wait_status(&f, "carts", Status::Running);
    assert_eq!(st.spec.reducer.as_deref(), Some("cart"));
    assert_eq!(st.spec.selector, upgraded.selector);
    let after = f.state("carts", Some("cart/1"), At::Now);
    assert_eq!(after, json!({"items": [], "status": "active"}));
    // Only the new generation's state rows remain.
    assert_eq!(state_rows(&f), 3);
}

fn state_rows(f: &Fixture) -> u64 {
    f.ledger
        .catalog()
        .read()
        .unwrap()
        .state_count("carts")
        .unwrap()
}

#[test]
fn rebuild_and_delete() {
    let f = fixture(100);
    let cart = f.upload("cart");
    f.append(cart_history(4, 5));
    f.engine
        .projections()
        .put("carts", cart_spec(&cart))
        .unwrap();
    f.wait("carts");
    let before = f.state("carts", Some("cart/2"), At::Now);
    f.engine.projections().rebuild("carts").unwrap();
    f.wait("carts");
    let st = f.engine.projections().status("carts").unwrap();
    assert_eq!(st.active.generation, 2);
    assert_eq!(st.active.events_applied, 24);
    assert_eq!(f.state("carts", Some("cart/2"), At::Now), before);
    assert_eq!(state_rows(&f), 4);
    f.engine.projections().delete("carts").unwrap();
    assert_eq!(state_rows(&f), 0, "deleting a projection frees its state");
    assert!(matches!(
        f.engine.projections().status("carts"),
        Err(QueryError::NotFound(_))
    ));
    // Now the module can go.
    f.engine.delete_module(&cart).unwrap();
    assert!(f.engine.modules().get(&cart).unwrap().is_none());
    // Bad definitions are refused.
    assert!(matches!(
        f.engine.projections().put("x", cart_spec("sha256:nope")),
        Err(DefinitionError::ModuleNotFound(_))
    ));
    assert!(matches!(
        f.engine.projections().put("bad name!", cart_spec(&cart)),
        Err(DefinitionError::InvalidName(_))
    ));
}
