//! Catching up: over history and live appends, in many batches, after a restart, and where
//! a module fails on an event.

use std::time::Duration;

use loom_engine::{At, Engine, Partition, ProjectionSpec, PutOutcome, QueryError, Status};
use loom_ledger::Selector;
use serde_json::{Value, json};

use crate::fixture::*;

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
    catches_up_while_appends_go_on(7, 60, 150);
}

/// `carts` carts with `items` items each stored, then a per-stream projection defined in
/// batches of 16 while `late` more items (and some events of another entity) are appended:
/// it folds every event once, and each cart's state is the clean fold of its stream.
fn catches_up_while_appends_go_on(carts: usize, items: usize, late: usize) {
    let f = fixture(16);
    let module = f.upload("cart");
    let history = cart_history(carts, items);
    for chunk in history.chunks(50) {
        f.append(chunk.to_vec());
    }
    f.engine
        .projections()
        .put("carts", cart_spec(&module))
        .unwrap();
    for i in 0..late {
        f.append(vec![ev(
            &format!("cart/{}", i % carts),
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
    assert_eq!(st.active.keys, carts as u64);
    let head = f.ledger.head();
    for c in 0..carts {
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
    // Batches of 8: the failing event (position 64) is in the eighth; the batch read beside
    // that step's fold is not used (the projection stops before it) and `resume` reads it
    // again.
    fails_in_a_later_batch(60, 3);
}

#[test]
fn a_module_error_first_in_its_batch_keeps_the_steps_before_it_that_were_not_committed_yet() {
    // Batches of 8, the failing event the first of the sixth (position 41): the fifth step
    // was kept for a later commit (a catch-up commits every few steps), and nothing of the
    // sixth folds, so what the fifth folded is committed on its own before the projection
    // stops.
    fails_in_a_later_batch(37, 3);
}

#[test]
fn a_module_error_in_a_larger_batch_of_a_catch_up_over_many_streams_keeps_what_came_before() {
    // Eight accounts in batches of 8: every step folds more streams than half a batch, so
    // the reads from the third step on ask for 16 events; the failing event (position 69) is in
    // one of those, and the events before it in that larger step are kept.
    fails_in_a_later_batch(60, 8);
}

#[test]
fn a_catch_up_over_many_streams_reads_larger_batches_and_folds_every_event_once() {
    // 40 carts, one event each in turn, in batches of 16: each step folds 16 streams (more
    // than half a batch), so the reads after the first steps ask for 32 events; the appends
    // meanwhile move the head between those reads, and the last steps are short again.
    catches_up_while_appends_go_on(40, 12, 200);
}

/// `accounts` accounts opened, then 100 credits spread over them, the one at `bad_credit`
/// not a number; the per-stream projection, in batches of 8, stops right before it, with
/// every state folded up to there, and again after `resume`.
fn fails_in_a_later_batch(bad_credit: usize, accounts: usize) {
    let f = fixture(8);
    let module = f.upload("bank");
    for a in 0..accounts {
        f.append(vec![ev(
            &format!("account/{a}"),
            &format!("o{a}"),
            "was_opened",
            json!({"owner": "x"}),
        )]);
    }
    let mut bad = 0;
    for i in 0..100 {
        let amount = if i == bad_credit {
            json!("lots")
        } else {
            json!(i)
        };
        let p = f.append(vec![ev(
            &format!("account/{}", i % accounts),
            &format!("c{i}"),
            "was_credited",
            json!({ "amount": amount }),
        )]);
        if i == bad_credit {
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
        for a in 0..accounts {
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
fn a_step_of_many_calls_folded_on_several_threads_gives_each_stream_its_own_state() {
    // 3 000 accounts × 6 credits in one step: the groups pack into several `evolve_groups`
    // calls (at most 5 000 events each), which the fold threads take in turn. Account `a` is
    // credited `a + 1` each time, so a state that landed on another stream's key shows.
    let f = fixture(100_000);
    let module = f.upload("bank");
    let (accounts, credits) = (3_000u64, 6u64);
    let mut events = Vec::new();
    for round in 0..credits {
        for a in 0..accounts {
            events.push(ev(
                &format!("account/{a}"),
                &format!("{round}-{a}"),
                "was_credited",
                json!({"amount": a + 1}),
            ));
        }
    }
    for chunk in events.chunks(1_000) {
        f.append(chunk.to_vec());
    }
    let st = fold_accounts(&f, &module);
    assert_eq!(st.active.events_applied, accounts * credits);
    assert_eq!(st.active.keys, accounts);
    for a in [0, 1, 999, 1_000, 1_717, 2_500, 2_999] {
        assert_eq!(
            f.state("accounts", Some(&format!("account/{a}")), At::Now)["balance"],
            json!(credits * (a + 1)),
            "account/{a}"
        );
    }
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

/// `n` events of account 1: opened, then credits of 1, 2, 3, … cents with `memo` bytes of
/// padding each; and the balance they add up to.
fn credits(n: usize, memo: usize) -> (Vec<loom_ledger::Event>, i64) {
    let mut events = vec![ev("account/1", "o", "was_opened", json!({"owner": "x"}))];
    let mut balance = 0;
    for i in 1..n as i64 {
        balance += i;
        events.push(ev(
            "account/1",
            &format!("c{i}"),
            "was_credited",
            json!({"amount": i, "memo": "m".repeat(memo)}),
        ));
    }
    (events, balance)
}

#[test]
fn a_large_group_folds_in_large_calls_split_by_size() {
    // 60 000 events of ~450 bytes in one `single` group: more than one call of 5 000 events,
    // and more bytes than one large call takes (12 MiB), so the group is folded in several
    // calls whose bounds come from the bytes.
    let f = fixture(100_000);
    let module = f.upload("bank");
    let (events, balance) = credits(60_000, 320);
    for chunk in events.chunks(10_000) {
        f.append(chunk.to_vec());
    }
    f.engine
        .projections()
        .put("all", account_spec(&module, Partition::Single))
        .unwrap();
    f.wait("all");
    let st = f.engine.projections().status("all").unwrap().active;
    assert_eq!(st.status, Status::Running, "{st:?}");
    assert_eq!(st.events_applied, 60_000);
    assert_eq!(f.state("all", None, At::Now)["balance"], balance);
}

#[test]
fn a_large_group_that_one_call_cannot_fold_within_the_fuel_budget_folds_in_smaller_calls() {
    // A fuel budget that folds 5 000 of these events in one call (the most a call took before
    // calls for large groups grew) but not 20 000.
    let mut tight = config(100_000);
    tight.runtime.fuel_per_call = 25_000_000;
    let f = fixture_with(tight);
    let module = f.upload("bank");
    let (events, balance) = credits(20_000, 0);
    f.append(events);
    let m = f
        .engine
        .modules()
        .load_with(&module, None, &[loom_engine::Entry::Evolve])
        .unwrap();
    let stored = f.ledger.read_stream("account/1", 0, usize::MAX).unwrap();
    let runtime = f.engine.runtime();
    assert!(
        runtime.evolve(&m, None, &stored[..5_000]).is_ok(),
        "the budget must fold 5 000 of these events in one call"
    );
    let whole = runtime.evolve(&m, None, &stored).unwrap_err();
    assert!(
        whole.to_string().contains("fuel"),
        "the budget must not fold all 20 000 in one call: {whole}"
    );

    let p = f.engine.projections();
    p.put("all", account_spec(&module, Partition::Single))
        .unwrap();
    f.wait("all");
    let st = p.status("all").unwrap().active;
    assert_eq!(st.status, Status::Running, "{st:?}");
    assert_eq!(st.events_applied, 20_000);
    assert_eq!(f.state("all", None, At::Now)["balance"], balance);

    // Later steps fold in calls of 5 000 from the start.
    let more: Vec<_> = (0..12_000)
        .map(|i| {
            ev(
                "account/1",
                &format!("d{i}"),
                "was_debited",
                json!({"amount": 1}),
            )
        })
        .collect();
    f.append(more);
    f.wait("all");
    let st = p.status("all").unwrap().active;
    assert_eq!(st.status, Status::Running, "{st:?}");
    assert_eq!(st.events_applied, 32_000);
    assert_eq!(f.state("all", None, At::Now)["balance"], balance - 12_000);
}
