//! Projections over a real ledger with the real example modules: queries, time travel,
//! upgrades, rebuilds.

use std::time::Duration;

use loom_engine::{
    At, DefinitionError, Engine, EngineConfig, Partition, ProjectionSpec, PutOutcome, QueryError,
    Status,
};
use loom_ledger::Selector;
use serde_json::{Value, json};

use crate::fixture::*;

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
