//! Selectors cannot cost more than a bounded amount of work: random nested JSONPath
//! expressions are either refused by the limits (at once) or parse and run over a large,
//! deeply nested event within a bound. Without the limits, 20 nested filters took seconds
//! to parse and `$..[?$..[?$..[?@ == 'zz']]]` hours to evaluate.

use std::time::{Duration, Instant};

use loom_core::{Data, Event, Selector, SelectorError, StoredEvent};
use proptest::prelude::*;
use serde_json::json;

/// An event whose data is large and nested: 64 levels deep, wide at every level.
fn heavy_event() -> StoredEvent {
    let mut v = json!({"zz": "zz", "list": (0..200).collect::<Vec<_>>()});
    for i in 0..64 {
        v = json!({"a": v, "b": [i, i + 1, {"c": "zz"}], "d": (0..20).map(|j| json!({"e": j})).collect::<Vec<_>>()});
    }
    let mut e = Event::new("cost", "1", "t", "x/1", json!({}));
    e.data = Some(Data::json(&v));
    StoredEvent {
        position: 1,
        revision: 1,
        recorded_micros: 0,
        event: e,
    }
}

/// A JSONPath expression from a small grammar that nests filters, descendant segments,
/// wildcards and absolute queries.
fn path() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("@".to_owned()),
        Just("@.a".to_owned()),
        Just("@..c".to_owned()),
        Just("@.*".to_owned()),
        Just("$".to_owned()),
        Just("$..zz".to_owned()),
        Just("@ == 'zz'".to_owned()),
        Just("length(@) > 3".to_owned()),
    ];
    let filter = leaf.prop_recursive(24, 64, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|f| format!("@[?{f}]")),
            inner.clone().prop_map(|f| format!("@..[?{f}]")),
            inner.clone().prop_map(|f| format!("$..[?{f}]")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
            inner.prop_map(|f| format!("({f})")),
        ]
    });
    (prop_oneof![Just("$"), Just("$.."), Just("$.a")], filter)
        .prop_map(|(root, f)| format!("{root}[?{f}]"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_selector_is_refused_or_runs_within_a_bound(text in path()) {
        // On a thread, so that an expression that would run for hours fails the test
        // instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = text.clone();
        std::thread::spawn(move || {
            let event = heavy_event();
            let selector = Selector { data: Some(probe), ..Selector::default() };
            let outcome = match selector.compile() {
                Ok(compiled) => Ok(compiled.matches(&event)),
                Err(e) => Err(e),
            };
            let _ = tx.send(outcome);
        });
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(Ok(_)) | Ok(Err(SelectorError::TooComplex { .. } | SelectorError::JsonPath { .. })) => {}
            Ok(Err(other)) => prop_assert!(false, "{text}: {other}"),
            Err(_) => prop_assert!(false, "{text} ran for more than 2 s"),
        }
    }
}

#[test]
fn the_reported_attacks_are_refused_at_once() {
    let nested20 = format!("${}", "[?@".repeat(20)) + &"]".repeat(20);
    for text in [nested20.as_str(), "$..[?$..[?$..[?$..[?@ == 'zz']]]]"] {
        let started = Instant::now();
        let err = Selector {
            data: Some(text.into()),
            ..Selector::default()
        }
        .compile()
        .unwrap_err();
        assert!(matches!(err, SelectorError::TooComplex { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_millis(50));
    }
}
