//! A reactor whose selector matches its own output does not feed itself: the events it
//! appended are skipped unless its definition opts in (`react_to_own`). Reactors that feed
//! each other stop at the longest chain of reactions allowed, with a failed status.

use crate::common;

use std::time::{Duration, Instant};

use loom_engine::ReactorSpec;
use loom_ledger::{AppendRequest, Event, Selector};
use serde_json::json;

use common::*;

/// A module whose `react` appends one `log/loop` event for every event it is given.
fn echo_module() -> Vec<u8> {
    reacting_with(r#"{"append":[{"type":"noted","subject":"log/loop"}]}"#)
}

/// A module whose `react` answers `reaction` for every event.
fn reacting_with(reaction: &str) -> Vec<u8> {
    let payload = format!("\\00{}", reaction.replace('"', "\\\""));
    let len = reaction.len() + 1;
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (data (i32.const 16) "{payload}")
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "react") (param i32 i32) (result i64) i64.const {}))"#,
        (16u64 << 32) | len as u64
    ))
    .unwrap()
}

/// Appends one `noted` event with `id` on `subject`.
fn note(ledger: &loom_ledger::Ledger, id: &str, subject: &str) {
    ledger
        .append(AppendRequest::new(vec![Event::new(
            "test",
            id,
            "noted",
            subject,
            json!({}),
        )]))
        .unwrap();
}

/// Waits (bounded) until `last_error` reports a failure of `what`.
fn failed(
    what: &str,
    last_error: impl Fn() -> Option<loom_engine::Failure>,
) -> loom_engine::Failure {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(f) = last_error() {
            return f;
        }
        assert!(Instant::now() < deadline, "{what} did not fail");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spec(module: &str, react_to_own: bool) -> ReactorSpec {
    serde_json::from_value(json!({
        "module": module,
        "selector": {"entity": "log"},
        "react_to_own": react_to_own,
    }))
    .unwrap()
}

#[test]
fn a_reactor_does_not_react_to_its_own_events_unless_it_opts_in() {
    let t = state();
    let engine = t.state.engine();
    let module = engine.modules().upload(&echo_module()).unwrap().record.id;
    let ledger = t.ledger();
    note(ledger, "1", "log/start");
    engine.reactors().put("echo", spec(&module, false)).unwrap();
    // It reacts to the first event once, then skips its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.reactors().status("echo").unwrap().position < 2 {
        assert!(Instant::now() < deadline, "the reactor did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let st = engine.reactors().status("echo").unwrap();
    assert_eq!(ledger.head(), 2, "{st:?}");
    assert_eq!(st.reacted, 1);
    assert_eq!(st.appended, 1);
    let own = ledger
        .read(
            &Selector::stream("log/loop").unwrap().compile().unwrap(),
            Default::default(),
        )
        .unwrap();
    assert_eq!(own[0].event.source, "loom/reactors/echo");

    // Opting in: it reacts to its own events too (and so feeds itself).
    engine.reactors().put("echo", spec(&module, true)).unwrap();
    note(ledger, "2", "log/start");
    std::thread::sleep(Duration::from_millis(300));
    engine.reactors().delete("echo").unwrap();
    assert!(ledger.head() > 5, "head {}", ledger.head());
}

#[test]
fn reactors_feeding_each_other_stop_at_the_longest_chain() {
    let t = state();
    let engine = t.state.engine();
    let ledger = t.ledger();
    let module = engine.modules().upload(&echo_module()).unwrap().record.id;
    // Each reacts to the other's events (not its own): ping-pong for ever, unless bounded.
    engine.reactors().put("ping", spec(&module, false)).unwrap();
    engine.reactors().put("pong", spec(&module, false)).unwrap();
    note(ledger, "1", "log/start");
    let failure = failed("ping or pong", || {
        ["ping", "pong"]
            .iter()
            .find_map(|r| engine.reactors().status(r).unwrap().last_error)
    });
    assert!(
        failure.message.contains("chain of reactions"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("16"), "{}", failure.message);
    // The chain: the client's event, then one event per hop up to the limit, each one
    // hop further than the event it reacted to; the failing reaction appended nothing.
    std::thread::sleep(Duration::from_millis(300));
    let all = ledger.read_all(Default::default()).unwrap();
    let chain: Vec<_> = all
        .iter()
        .filter(|e| e.event.subject == "log/loop")
        .collect();
    assert!(chain.len() >= 16, "{} events", chain.len());
    let hops: Vec<_> = chain
        .iter()
        .map(|e| match e.event.extensions.get("loomhops") {
            Some(loom_ledger::ExtensionValue::Integer(n)) => *n,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(hops.iter().all(|&h| (1..=16).contains(&h)), "{hops:?}");
    assert!(hops.contains(&16), "{hops:?}");
    let head = ledger.head();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ledger.head(), head, "the loop goes on");
}

/// A decider whose `decide` answers `events` events for any command.
fn flooding_decider(events: usize) -> Vec<u8> {
    let decided = format!("[{}]", vec![r#"{"type":"noted"}"#; events].join(","));
    let state_at = 16u64;
    let decided_at = 64u64;
    let escape = |s: &str| format!("\\00{}", s.replace('"', "\\\""));
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 8)
            (data (i32.const {state_at}) "{state}")
            (data (i32.const {decided_at}) "{decided}")
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 400000)
            (func (export "evolve") (param i32 i32) (result i64) i64.const {evolve})
            (func (export "decide") (param i32 i32) (result i64) i64.const {decide}))"#,
        state = escape("{}"),
        decided = escape(&decided),
        evolve = (state_at << 32) | 3,
        decide = (decided_at << 32) | (decided.len() as u64 + 1),
    ))
    .unwrap()
}

#[tokio::test]
async fn a_command_may_append_a_bounded_number_of_events() {
    let t = state();
    let s = &t.state;
    let engine = s.engine().clone();
    let module = engine
        .modules()
        .upload(&flooding_decider(loom_engine::MAX_COMMAND_EVENTS + 1))
        .unwrap()
        .record
        .id;
    let spec = serde_json::from_value(json!({ "module": module })).unwrap();
    engine.deciders().put("log", spec).unwrap();
    let p = post_json(s, "/v1/commands/log/k", &json!({"type": "flood"}))
        .await
        .problem(422);
    assert_eq!(p["type"], "urn:loom:problem:module-failed", "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("at most 10000"),
        "{p}"
    );
    assert_eq!(s.ledger().head(), 0, "nothing was appended");
}

#[tokio::test]
async fn the_command_limits_are_configurable() {
    let t = new_state_with(
        loom_server::Config::default(),
        loom_engine::EngineConfig {
            max_command_events: 5,
            ..loom_engine::EngineConfig::default()
        },
    );
    let s = &t.state;
    let engine = s.engine().clone();
    for (key, events, status) in [("a", 5, 200), ("b", 6, 422)] {
        let module = engine
            .modules()
            .upload(&flooding_decider(events))
            .unwrap()
            .record
            .id;
        let spec = serde_json::from_value(json!({ "module": module })).unwrap();
        engine.deciders().put("log", spec).unwrap();
        let r = post_json(
            s,
            &format!("/v1/commands/log/{key}"),
            &json!({"type": "flood"}),
        )
        .await;
        let body = r.json();
        assert_eq!(r.status, status, "{body}");
        if status == 422 {
            assert!(
                body["detail"].as_str().unwrap().contains("at most 5"),
                "{body}"
            );
        }
    }
    assert_eq!(
        s.ledger().head(),
        5,
        "only the command within the limit appended"
    );
}

/// A module whose `evolve` answers `state` (JSON text) for any input.
fn constant_projection(state: &str) -> Vec<u8> {
    let payload = format!("\\00{}", state.replace('\\', "\\\\").replace('"', "\\\""));
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 4)
            (data (i32.const 16) "{payload}")
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 200000)
            (func (export "evolve") (param i32 i32) (result i64) i64.const {}))"#,
        (16u64 << 32) | (state.len() as u64 + 1)
    ))
    .unwrap()
}

#[test]
fn module_output_must_be_strict_json() {
    let t = state();
    let engine = t.state.engine();
    let ledger = t.ledger();
    note(ledger, "1", "log/a");
    let deep = "[".repeat(1000) + &"]".repeat(1000);
    for (name, state, why) in [
        (
            "surrogate",
            r#"{"s":"\ud800"}"#.to_owned(),
            "lone UTF-16 surrogate",
        ),
        ("deep", deep, "deeper than 128"),
    ] {
        let module = engine
            .modules()
            .upload(&constant_projection(&state))
            .unwrap()
            .record
            .id;
        let spec = serde_json::from_value(json!({"module": module, "selector": {"entity": "log"}}))
            .unwrap();
        engine.projections().put(name, spec).unwrap();
        let failure = failed(name, || {
            engine.projections().status(name).unwrap().active.last_error
        });
        assert!(failure.message.contains(why), "{name}: {}", failure.message);
        assert_eq!(failure.position, 1);
    }
}

#[test]
fn a_reaction_with_an_unknown_member_fails_the_reactor() {
    let t = state();
    let engine = t.state.engine();
    let ledger = t.ledger();
    note(ledger, "1", "log/a");
    let typo = reacting_with(r#"{"apend":[{"type":"noted","subject":"log/x"}]}"#);
    let module = engine.modules().upload(&typo).unwrap().record.id;
    engine.reactors().put("typo", spec(&module, false)).unwrap();
    let failure = failed("typo", || {
        engine.reactors().status("typo").unwrap().last_error
    });
    assert!(
        failure.message.contains("unknown field `apend`"),
        "{}",
        failure.message
    );
    assert_eq!(ledger.head(), 1, "nothing appended");
}
