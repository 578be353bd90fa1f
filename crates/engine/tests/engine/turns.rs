//! Projections beyond `EngineConfig::catch_ups` catch up in turns.

use std::time::{Duration, Instant};

use loom_engine::{At, EngineConfig, Partition};
use serde_json::json;

use crate::fixture::*;

const ACCOUNTS: usize = 20;

/// One engine that lets one projection catch up at a time, in steps of 20 events, over
/// 20 accounts of `credits` credits each (150: 3 020 events, ~150 steps per catch-up;
/// 1 500: 30 020 events).
fn one_at_a_time(slice: Duration, credits: usize) -> (Fixture, String) {
    let f = fixture_with(EngineConfig {
        catch_ups: 1,
        catch_up_slice: slice,
        ..config(20)
    });
    let module = f.upload("bank");
    for a in 0..ACCOUNTS {
        let subject = format!("account/{a}");
        let mut events = vec![ev(
            &subject,
            &format!("{a}-open"),
            "was_opened",
            json!({"owner": "x"}),
        )];
        events.extend((0..credits).map(|c| {
            ev(
                &subject,
                &format!("{a}-{c}"),
                "was_credited",
                json!({"amount": a + 1}),
            )
        }));
        f.append(events);
    }
    (f, module)
}

fn define(f: &Fixture, name: &str, module: &str) {
    f.engine
        .projections()
        .put(name, account_spec(module, Partition::Stream))
        .unwrap();
}

/// Whether `name` has folded some of the history but not all of it.
fn midway(f: &Fixture, name: &str, head: u64) -> bool {
    let p = f.engine.projections().status(name).unwrap().active.position;
    p > 0 && p < head
}

fn assert_folded_exactly(f: &Fixture, name: &str, credits: usize) {
    f.wait(name);
    let st = f.engine.projections().status(name).unwrap();
    assert!(!st.active.queued, "{st:?}");
    assert_eq!(
        st.active.events_applied,
        (ACCOUNTS * (credits + 1)) as u64,
        "{st:?}"
    );
    for a in 0..ACCOUNTS {
        assert_eq!(
            f.state(name, Some(&format!("account/{a}")), At::Now)["balance"],
            json!(credits * (a + 1)),
            "{name}, account/{a}"
        );
    }
}

#[test]
fn no_more_projections_catch_up_at_once_than_allowed() {
    let (f, module) = one_at_a_time(Duration::from_secs(3600), 150);
    let head = f.ledger.head();
    let names = ["p0", "p1", "p2"];
    for name in names {
        define(&f, name, &module);
    }
    // Until all are done, at most one has started without finishing.
    let started = Instant::now();
    let (mut samples, mut queued) = (0, 0);
    while names
        .iter()
        .any(|n| f.engine.projections().status(n).unwrap().active.position < head)
    {
        let busy = names.iter().filter(|n| midway(&f, n, head)).count();
        assert!(busy <= 1, "{busy} projections catching up at once");
        queued += names
            .iter()
            .filter(|n| f.engine.projections().status(n).unwrap().active.queued)
            .count();
        samples += 1;
        assert!(started.elapsed() < WAIT, "the catch-ups did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(queued > 0, "no status said it waited in line");
    assert!(
        samples > 10,
        "the catch-ups were too quick to watch ({samples} samples)"
    );
    for name in names {
        assert_folded_exactly(&f, name, 150);
    }
}

#[test]
fn projections_waiting_for_a_turn_get_one_within_a_slice() {
    let (f, module) = one_at_a_time(Duration::from_millis(20), 1_500);
    let head = f.ledger.head();
    define(&f, "first", &module);
    while f
        .engine
        .projections()
        .status("first")
        .unwrap()
        .active
        .position
        == 0
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    define(&f, "second", &module);
    // The first gives its turn up once its slice is over: the second starts before the
    // first has finished.
    let started = Instant::now();
    loop {
        if midway(&f, "second", head)
            || f.engine
                .projections()
                .status("second")
                .unwrap()
                .active
                .position
                >= head
        {
            break;
        }
        assert!(started.elapsed() < WAIT, "the second never got a turn");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        f.engine
            .projections()
            .status("first")
            .unwrap()
            .active
            .position
            < head,
        "the first finished before the second started"
    );
    assert_folded_exactly(&f, "first", 1_500);
    assert_folded_exactly(&f, "second", 1_500);
}

#[test]
fn a_projection_deleted_while_in_line_lets_the_next_one_through() {
    // A longer history (30 020 events), so that the first is still catching up while the
    // others queue.
    let (f, module) = one_at_a_time(Duration::from_secs(3600), 1_500);
    let head = f.ledger.head();
    define(&f, "first", &module);
    let started = Instant::now();
    while !midway(&f, "first", head) {
        assert!(started.elapsed() < WAIT, "the first did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    define(&f, "gone", &module);
    while !f.engine.projections().status("gone").unwrap().active.queued {
        assert!(started.elapsed() < WAIT, "the second never queued");
        std::thread::sleep(Duration::from_millis(1));
    }
    f.engine.projections().delete("gone").unwrap();
    // Whether or not the first has finished by now: a place left in the line would stand
    // before the third's for good.
    define(&f, "third", &module);
    assert_folded_exactly(&f, "first", 1_500);
    assert_folded_exactly(&f, "third", 1_500);
}
