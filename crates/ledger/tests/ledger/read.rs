//! Reads: by position, by stream, by identity, by selector; paging; the time index; head
//! notifications.

use crate::common;

use std::time::{Duration, Instant};

use loom_ledger::{AppendRequest, Ledger, ReadOptions, Selector, SelectorError, StoredEvent};
use serde_json::json;

use common::{added, created, note};

fn positions(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// 1 cart/1 created, 2 cart/2 created, 3 cart/1 added a, 4 note/x, 5 cart/2 added b,
/// 6 cart/1 added c, 7 note/y, 8 cart/10 created.
fn fixture() -> (tempfile::TempDir, Ledger) {
    let (dir, ledger) = common::ledger();
    let events = vec![
        created("1", "e1"),
        created("2", "e2"),
        added("1", "e3", "apple", 1),
        note(
            "x",
            "e4",
            "memo",
            json!({"players": ["Amal_Hussein", "bo"], "n": 1}),
        ),
        added("2", "e5", "pear", 3),
        added("1", "e6", "fig", 5),
        note("y", "e7", "memo", json!({"players": ["cy"], "n": 2})),
        created("10", "e8"),
    ];
    for e in events {
        ledger.append(AppendRequest::new(vec![e])).unwrap();
    }
    (dir, ledger)
}

fn select(ledger: &Ledger, sel: Selector, opts: ReadOptions) -> Vec<u64> {
    positions(&ledger.read(&sel.compile().unwrap(), opts).unwrap())
}

#[test]
fn read_all_pages_in_both_directions() {
    let (_dir, ledger) = fixture();
    assert_eq!(
        positions(&ledger.read_all(ReadOptions::after(0, 3)).unwrap()),
        [1, 2, 3]
    );
    assert_eq!(
        positions(&ledger.read_all(ReadOptions::after(3, 3)).unwrap()),
        [4, 5, 6]
    );
    assert_eq!(
        positions(&ledger.read_all(ReadOptions::after(6, 3)).unwrap()),
        [7, 8]
    );
    assert!(
        ledger
            .read_all(ReadOptions::after(8, 3))
            .unwrap()
            .is_empty()
    );
    assert!(
        ledger
            .read_all(ReadOptions::after(0, 0))
            .unwrap()
            .is_empty()
    );
    let back = |before: Option<u64>, limit| ReadOptions {
        before,
        limit,
        backwards: true,
        ..ReadOptions::default()
    };
    assert_eq!(
        positions(&ledger.read_all(back(None, 3)).unwrap()),
        [8, 7, 6]
    );
    assert_eq!(
        positions(&ledger.read_all(back(Some(6), 3)).unwrap()),
        [5, 4, 3]
    );
    assert_eq!(
        positions(&ledger.read_all(back(Some(3), 3)).unwrap()),
        [2, 1]
    );
    assert!(ledger.read_all(back(Some(1), 3)).unwrap().is_empty());
    // Backwards with a lower bound.
    let opts = ReadOptions {
        after: 5,
        ..back(None, 10)
    };
    assert_eq!(positions(&ledger.read_all(opts).unwrap()), [8, 7, 6]);
}

#[test]
fn stream_reads_use_revisions() {
    let (_dir, ledger) = fixture();
    let s = ledger.read_stream("cart/1", 0, 100).unwrap();
    assert_eq!(positions(&s), [1, 3, 6]);
    assert_eq!(s.iter().map(|e| e.revision).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(positions(&ledger.read_stream("cart/1", 1, 1).unwrap()), [3]);
    assert!(ledger.read_stream("cart/1", 3, 10).unwrap().is_empty());
    assert!(ledger.read_stream("cart/404", 0, 10).unwrap().is_empty());
    // "cart/1" must not pick up "cart/10".
    assert_eq!(
        positions(&ledger.read_stream("cart/10", 0, 10).unwrap()),
        [8]
    );
    assert_eq!(ledger.event_at(4).unwrap().unwrap().event.id, "e4");
    assert!(ledger.event_at(9).unwrap().is_none());
    assert!(ledger.event_at(0).unwrap().is_none());
}

#[test]
fn replay_selectors_by_entity_keys_and_types() {
    let (_dir, ledger) = fixture();
    let all = ReadOptions::default();
    let sel = |entity: Option<&str>, keys: &[&str], types: &[&str]| Selector {
        entity: entity.map(Into::into),
        keys: keys.iter().map(|s| s.to_string()).collect(),
        types: types.iter().map(|s| s.to_string()).collect(),
        ..Selector::default()
    };
    assert_eq!(
        select(&ledger, sel(Some("cart"), &[], &[]), all),
        [1, 2, 3, 5, 6, 8]
    );
    assert_eq!(select(&ledger, sel(Some("note"), &[], &[]), all), [4, 7]);
    assert_eq!(
        select(&ledger, sel(Some("cart"), &["1"], &[]), all),
        [1, 3, 6]
    );
    assert_eq!(
        select(&ledger, sel(Some("cart"), &["2", "1"], &[]), all),
        [1, 2, 3, 5, 6]
    );
    assert_eq!(
        select(
            &ledger,
            sel(Some("cart"), &["1", "2"], &["had_item_added"]),
            all
        ),
        [3, 5, 6]
    );
    assert_eq!(
        select(&ledger, sel(Some("cart"), &[], &["was_created"]), all),
        [1, 2, 8]
    );
    assert_eq!(
        select(
            &ledger,
            sel(Some("cart"), &[], &["was_created", "had_item_added"]),
            all
        ),
        [1, 2, 3, 5, 6, 8]
    );
    // Types without entity search every registered entity.
    assert_eq!(
        select(&ledger, sel(None, &[], &["memo", "was_created"]), all),
        [1, 2, 4, 7, 8]
    );
    assert!(select(&ledger, sel(Some("cart"), &["404"], &[]), all).is_empty());
    assert!(select(&ledger, sel(Some("nothing"), &[], &[]), all).is_empty());

    // Paging through a merged index read, forwards and backwards.
    let s = sel(Some("cart"), &["1", "2"], &[]);
    assert_eq!(select(&ledger, s.clone(), ReadOptions::after(0, 2)), [1, 2]);
    assert_eq!(select(&ledger, s.clone(), ReadOptions::after(2, 2)), [3, 5]);
    assert_eq!(select(&ledger, s.clone(), ReadOptions::after(5, 2)), [6]);
    let back = ReadOptions {
        before: Some(6),
        limit: 2,
        backwards: true,
        ..ReadOptions::default()
    };
    assert_eq!(select(&ledger, s.clone(), back), [5, 3]);
    let t = sel(Some("cart"), &[], &["was_created", "had_item_added"]);
    assert_eq!(select(&ledger, t.clone(), back), [5, 3]);
    assert_eq!(select(&ledger, t, ReadOptions::after(3, 2)), [5, 6]);
}

#[test]
fn jsonpath_filters_over_data_and_metadata() {
    let (_dir, ledger) = fixture();
    let all = ReadOptions::default();
    let data = |p: &str| Selector {
        data: Some(p.into()),
        ..Selector::default()
    };
    assert_eq!(
        select(&ledger, data(r#"$.players[?@ == "Amal_Hussein"]"#), all),
        [4]
    );
    assert_eq!(select(&ledger, data("$[?$.quantity > 2]"), all), [5, 6]);
    assert_eq!(select(&ledger, data("$.sku"), all), [3, 5, 6]);
    let meta = Selector {
        meta: Some("$[?$.subject == 'cart/1' && $.revision >= 2]".into()),
        ..Selector::default()
    };
    assert_eq!(select(&ledger, meta, all), [3, 6]);
    // Combined with a replay part.
    let both = Selector {
        entity: Some("cart".into()),
        types: vec!["had_item_added".into()],
        data: Some("$[?$.sku == 'fig' || $.sku == 'apple']".into()),
        ..Selector::default()
    };
    assert_eq!(select(&ledger, both.clone(), all), [3, 6]);
    assert_eq!(select(&ledger, both, ReadOptions::after(0, 1)), [3]);

    // Malformed selectors are refused with a reason.
    let bad = Selector {
        data: Some("$.[".into()),
        ..Selector::default()
    };
    assert!(matches!(
        bad.compile(),
        Err(SelectorError::JsonPath { field: "data", .. })
    ));
    let keys_alone = Selector {
        keys: vec!["1".into()],
        ..Selector::default()
    };
    assert_eq!(
        keys_alone.compile().unwrap_err(),
        SelectorError::KeysWithoutEntity
    );
    let sel: Selector =
        serde_json::from_value(json!({"entity": "game", "keys": ["1"], "types": ["t"]})).unwrap();
    assert_eq!(sel.entity.as_deref(), Some("game"));
    assert!(serde_json::from_value::<Selector>(json!({"entty": "game"})).is_err());
}

#[test]
fn scan_visits_in_order_and_stops_when_asked() {
    let (_dir, ledger) = fixture();
    let sel = Selector::all().compile().unwrap();
    let mut seen = Vec::new();
    ledger
        .scan(&sel, ReadOptions::after(2, usize::MAX), |e| {
            seen.push(e.position);
            e.position < 5
        })
        .unwrap();
    assert_eq!(seen, [3, 4, 5]);
}

#[test]
fn time_index_finds_the_position_at_a_time() {
    let (_dir, ledger) = common::ledger();
    ledger
        .append(AppendRequest::new(vec![created("1", "a")]))
        .unwrap();
    let first = ledger.event_at(1).unwrap().unwrap().recorded_micros;
    std::thread::sleep(Duration::from_millis(5));
    ledger
        .append(AppendRequest::new(vec![
            created("2", "b"),
            created("3", "c"),
        ]))
        .unwrap();
    let second = ledger.event_at(3).unwrap().unwrap().recorded_micros;
    assert!(second > first);
    assert_eq!(ledger.position_at_time(first - 1).unwrap(), 0);
    assert_eq!(ledger.position_at_time(first).unwrap(), 1);
    assert_eq!(ledger.position_at_time(second - 1).unwrap(), 1);
    assert_eq!(ledger.position_at_time(second).unwrap(), 3);
    assert_eq!(ledger.position_at_time(i64::MAX).unwrap(), 3);
    // recordedtime is the commit time, shared by the batch.
    assert_eq!(ledger.event_at(2).unwrap().unwrap().recorded_micros, second);
}

#[test]
fn head_waiters_wake_on_commit() {
    let (_dir, ledger) = common::ledger();
    let ledger = std::sync::Arc::new(ledger);
    // Times out when nothing comes.
    let t = Instant::now();
    assert_eq!(ledger.wait_for(1, Duration::from_millis(50)), 0);
    assert!(t.elapsed() >= Duration::from_millis(50));
    let waiter = {
        let ledger = ledger.clone();
        std::thread::spawn(move || ledger.wait_for(2, Duration::from_secs(10)))
    };
    std::thread::sleep(Duration::from_millis(20));
    ledger
        .append(AppendRequest::new(vec![created("1", "a")]))
        .unwrap();
    ledger
        .append(AppendRequest::new(vec![created("2", "b")]))
        .unwrap();
    assert_eq!(waiter.join().unwrap(), 2);
}

/// Index reads step a cursor over the events table when the next position is near and seek
/// when it is far; both, and the raw batch path, return exactly the matching events.
#[test]
fn index_reads_over_dense_and_sparse_entities_match_a_filtered_log() {
    let (_dir, ledger) = common::ledger();
    // Carts on most positions; a note every 40th (gaps far beyond the cursor's step limit).
    let mut events = Vec::new();
    for i in 0..400u64 {
        events.push(if i % 40 == 7 {
            note(&format!("n{i}"), &format!("e{i}"), "memo", json!({"n": i}))
        } else if i % 3 == 0 {
            created(&format!("{}", i % 17), &format!("e{i}"))
        } else {
            added(&format!("{}", i % 17), &format!("e{i}"), "kiwi", i as i64)
        });
    }
    for chunk in events.chunks(50) {
        ledger.append(AppendRequest::new(chunk.to_vec())).unwrap();
    }
    let log = ledger.read_all(ReadOptions::after(0, 1000)).unwrap();
    type Matches = Box<dyn Fn(&StoredEvent) -> bool>;
    let cases: Vec<(Selector, Matches)> = vec![
        (
            Selector {
                entity: Some("note".into()),
                ..Selector::default()
            },
            Box::new(|e| e.event.subject.starts_with("note/")),
        ),
        (
            Selector {
                entity: Some("cart".into()),
                ..Selector::default()
            },
            Box::new(|e| e.event.subject.starts_with("cart/")),
        ),
        (
            Selector {
                entity: Some("cart".into()),
                types: vec!["was_created".into()],
                ..Selector::default()
            },
            Box::new(|e| e.event.ty == "was_created"),
        ),
        (
            Selector {
                entity: Some("cart".into()),
                keys: vec!["3".into(), "5".into()],
                ..Selector::default()
            },
            Box::new(|e| e.event.subject == "cart/3" || e.event.subject == "cart/5"),
        ),
    ];
    for (sel, matches) in cases {
        let want = check_windows(
            &ledger,
            &log,
            &sel,
            &matches,
            &[(0, 1000), (0, 7), (123, 30), (399, 10)],
        );
        let compiled = sel.compile().unwrap();
        // Backwards reads seek position by position.
        let mut back = want.clone();
        back.reverse();
        let opts = ReadOptions {
            backwards: true,
            ..ReadOptions::after(0, 1000)
        };
        assert_eq!(positions(&ledger.read(&compiled, opts).unwrap()), back);
    }
}

/// Forward reads by entity walk the records where the entity's events are most of the log
/// and go back to the index where they thin out: every stretch here is long enough for a
/// switch (1 024 candidates), and each way returns exactly the matching events.
#[test]
fn entity_reads_over_stretches_of_changing_density_match_a_filtered_log() {
    let (_dir, ledger) = common::ledger();
    // Carts on 9 of 10 positions, then on 1 of 50, then on every one, then 1 of 50 again.
    let stretches: [(u64, u64); 4] = [(3000, 10), (6000, 50), (3000, 1), (3000, 50)];
    let mut events = Vec::new();
    let mut i = 0u64;
    for (len, every) in stretches {
        for j in 0..len {
            let cart = every == 1 || (every == 10 && j % 10 != 0) || (every == 50 && j % 50 == 0);
            events.push(if !cart {
                note(
                    &format!("{}", i % 5),
                    &format!("e{i}"),
                    "memo",
                    json!({"n": i}),
                )
            } else if i.is_multiple_of(3) {
                created(&format!("{}", i % 17), &format!("e{i}"))
            } else {
                added(
                    &format!("{}", i % 17),
                    &format!("e{i}"),
                    "kiwi",
                    1 + (i % 7) as i64,
                )
            });
            i += 1;
        }
    }
    for chunk in events.chunks(1000) {
        ledger.append(AppendRequest::new(chunk.to_vec())).unwrap();
    }
    let log = ledger.read_all(ReadOptions::after(0, 20_000)).unwrap();
    type Matches = Box<dyn Fn(&StoredEvent) -> bool>;
    let cases: Vec<(Selector, Matches)> = vec![
        (
            Selector {
                entity: Some("cart".into()),
                ..Selector::default()
            },
            Box::new(|e| e.event.subject.starts_with("cart/")),
        ),
        (
            Selector {
                entity: Some("note".into()),
                ..Selector::default()
            },
            Box::new(|e| e.event.subject.starts_with("note/")),
        ),
        (
            Selector {
                entity: Some("cart".into()),
                types: vec!["had_item_added".into()],
                ..Selector::default()
            },
            Box::new(|e| e.event.ty == "had_item_added"),
        ),
        (
            Selector {
                entity: Some("cart".into()),
                keys: vec!["3".into()],
                ..Selector::default()
            },
            Box::new(|e| e.event.subject == "cart/3"),
        ),
        (
            Selector {
                entity: Some("cart".into()),
                data: Some("$[?$.quantity == 2]".into()),
                ..Selector::default()
            },
            Box::new(
                |e| matches!(&e.event.data, Some(loom_ledger::Data::Json(raw)) if raw.get().contains("\"quantity\":2")),
            ),
        ),
    ];
    for (sel, matches) in cases {
        check_windows(
            &ledger,
            &log,
            &sel,
            &matches,
            &[
                (0, 20_000),
                (0, 2500),
                (2500, 700),
                (4000, 3000),
                (8990, 5000),
            ],
        );
    }
}

/// Reads `sel` in each window `(after, limit)`, as owned events and as a batch, and checks
/// both against the events of `log` that `matches`; returns the positions of those.
fn check_windows(
    ledger: &Ledger,
    log: &[StoredEvent],
    sel: &Selector,
    matches: &dyn Fn(&StoredEvent) -> bool,
    windows: &[(u64, usize)],
) -> Vec<u64> {
    let want: Vec<u64> = log
        .iter()
        .filter(|e| matches(e))
        .map(|e| e.position)
        .collect();
    let compiled = sel.compile().unwrap();
    for &(after, limit) in windows {
        let expect: Vec<u64> = want
            .iter()
            .copied()
            .filter(|&p| p > after)
            .take(limit)
            .collect();
        let owned = ledger
            .read(&compiled, ReadOptions::after(after, limit))
            .unwrap();
        assert_eq!(
            positions(&owned),
            expect,
            "{sel:?} after {after} limit {limit}"
        );
        for e in &owned {
            assert_eq!(e, &log[(e.position - 1) as usize]);
        }
        let batch = ledger
            .read_batch(&compiled, ReadOptions::after(after, limit))
            .unwrap();
        let raw: Vec<u64> = batch.iter().map(|v| v.position).collect();
        assert_eq!(raw, expect, "batch {sel:?} after {after} limit {limit}");
        // Views carry the same events as the owned read.
        for v in batch.iter() {
            assert_eq!(v.to_stored().unwrap(), log[(v.position - 1) as usize]);
        }
    }
    want
}

#[test]
fn streams_are_listed_by_subject_prefix_in_pages() {
    let (_dir, ledger) = fixture();
    let all = ledger.streams("", None, 100).unwrap();
    assert_eq!(
        all,
        [
            ("cart/1".to_owned(), 3),
            ("cart/10".to_owned(), 1),
            ("cart/2".to_owned(), 2),
            ("note/x".to_owned(), 1),
            ("note/y".to_owned(), 1),
        ]
    );
    let carts = |after, limit| {
        ledger
            .streams("cart/", after, limit)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>()
    };
    assert_eq!(carts(None, 2), ["cart/1", "cart/10"]);
    assert_eq!(carts(Some("cart/10"), 2), ["cart/2"]);
    assert_eq!(carts(Some("cart/2"), 2), Vec::<String>::new());
    // `after` before the prefix starts at the prefix; a prefix matching nothing is empty.
    assert_eq!(carts(Some("a"), 1), ["cart/1"]);
    assert!(ledger.streams("cart/3", None, 10).unwrap().is_empty());
    assert_eq!(
        ledger.streams("note/", Some("note/x"), 10).unwrap().len(),
        1
    );
}
