//! Grouping a step's events, against a plain group-by.

use super::*;
use loom_ledger::{Event, StoredEvent};

/// Groups of `batch` as a plain group-by would make them: the kept events' positions by
/// stream, the streams in the order of their first kept event.
fn reference(batch: &EventBatch, keep: impl Fn(&str, &str) -> bool) -> Vec<(String, Vec<u64>)> {
    let mut groups: Vec<(String, Vec<u64>)> = Vec::new();
    for e in batch.iter().filter(|e| keep(e.ty, e.subject)) {
        match groups.iter_mut().find(|(k, _)| k == e.subject) {
            Some((_, positions)) => positions.push(e.position),
            None => groups.push((e.subject.to_owned(), vec![e.position])),
        }
    }
    groups
}

fn as_made(groups: &Groups<'_>) -> Vec<(String, Vec<u64>)> {
    (0..groups.len())
        .map(|i| {
            let positions = groups.events(i).iter().map(|e| e.position).collect();
            (groups.keys[i].to_owned(), positions)
        })
        .collect()
}

#[test]
fn groups_hold_the_kept_events_by_stream_in_ledger_order() {
    // A small generator, so that the cases are the same on every run.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for case in 0..200 {
        let len = next(60);
        let streams = 1 + next(12);
        let events: Vec<StoredEvent> = (1..=len)
            .map(|position| StoredEvent {
                position,
                revision: 1,
                recorded_micros: 0,
                event: Event::new(
                    "src",
                    format!("e{position}"),
                    ["was_a", "was_b", "was_c"][next(3) as usize],
                    format!("s/{}", next(streams)),
                    serde_json::json!({}),
                ),
            })
            .collect();
        let batch = EventBatch::from_stored(&events);
        let dropped = format!("s/{}", next(streams));
        let keep = |ty: &str, subject: &str| ty != "was_c" && subject != dropped;
        let want = reference(&batch, keep);

        let Ok(groups) = Groups::new(Partition::Stream, &batch, |e| Ok(keep(e.ty, e.subject)))
        else {
            panic!("case {case}: grouping failed");
        };
        assert_eq!(as_made(&groups), want, "case {case}");

        let Ok(single) = Groups::new(Partition::Single, &batch, |e| Ok(keep(e.ty, e.subject)))
        else {
            panic!("case {case}: grouping failed");
        };
        let mut in_order: Vec<u64> = want.iter().flat_map(|(_, p)| p.clone()).collect();
        in_order.sort_unstable();
        let made = as_made(&single);
        if in_order.is_empty() {
            assert!(made.is_empty(), "case {case}");
        } else {
            assert_eq!(made, vec![(String::new(), in_order)], "case {case}");
        }
    }
}

#[test]
fn a_selection_error_is_the_grouping_error() {
    let events: Vec<StoredEvent> = (1..=3)
        .map(|position| StoredEvent {
            position,
            revision: 1,
            recorded_micros: 0,
            event: Event::new("src", "id", "was_a", "s/1", serde_json::json!({})),
        })
        .collect();
    let batch = EventBatch::from_stored(&events);
    for partition in [Partition::Stream, Partition::Single] {
        let failed = Groups::new(partition, &batch, |e| {
            if e.position == 2 {
                Err(Fault::Module {
                    position: 2,
                    error: CallError::MissingEntry(Entry::Evolve),
                })
            } else {
                Ok(true)
            }
        });
        assert!(
            matches!(failed, Err(Fault::Module { position: 2, .. })),
            "{partition:?}"
        );
    }
}
