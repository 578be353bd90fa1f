//! The stored history in segments (docs/design.md, "Segments"): reads that cross segment
//! boundaries and the tail (also read lazily, record by record) agree with what was
//! appended, large records make segments of their own, and a data directory of the format
//! before segments — written by that build, with records of the format before — opens,
//! reads the same and is packed.

use crate::common;

use std::path::Path;

use loom_ledger::{
    AppendRequest, Data, Event, ExtensionValue, Ledger, LedgerOptions, ReadOptions, Selector,
    StoredEvent,
};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const SEGMENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("segments");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The events of `tests/fixtures/format2.redb`, written by the build before segments
/// (format 2, records of format 1); `examples/` of that build had the same function.
fn old_events() -> Vec<Event> {
    (0..300u32)
        .map(|i| {
            let mut e = Event::new(
                "fixture",
                format!("f-{i}"),
                ["was_written", "was_edited", "was_read"][i as usize % 3],
                format!("note/k{}", i % 7),
                serde_json::json!({"i": i, "memo": "é✓ ".repeat(i as usize % 11)}),
            );
            match i % 4 {
                0 if i == 148 => {
                    e.data = Some(Data::Text("ü".repeat(12_000)));
                    e.datacontenttype = Some("text/plain".into());
                }
                1 => {
                    e.data = Some(Data::Text(format!("plain text {i} ✓")));
                    e.datacontenttype = Some("text/plain".into());
                }
                2 => {
                    e.data = Some(Data::Binary(
                        (0..(i % 50) as u8).map(|b| b.wrapping_mul(37)).collect(),
                    ));
                    e.datacontenttype = Some("application/octet-stream".into());
                }
                3 => e.data = None,
                _ => {}
            }
            if i % 5 == 0 {
                e.time = Some("2026-11-28T03:00:00Z".into());
                e.dataschema = Some(format!("https://example.com/schema/{i}"));
                e.extensions.insert(
                    "traceparent".into(),
                    ExtensionValue::String(format!("t-{i}")),
                );
                e.extensions
                    .insert("sampled".into(), ExtensionValue::Bool(i % 2 == 0));
                e.extensions
                    .insert("attempt".into(), ExtensionValue::Integer(i as i64 - 100));
            }
            e
        })
        .collect()
}

/// (events in the tail, segments, largest segment value in bytes, format) of a closed ledger.
fn layout(dir: &Path) -> (u64, u64, usize, u64) {
    let db = redb::Database::create(dir.join("ledger.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let tail = txn.open_table(EVENTS).unwrap().len().unwrap();
    let format = txn
        .open_table(META)
        .unwrap()
        .get("format")
        .unwrap()
        .unwrap()
        .value();
    let Ok(segments) = txn.open_table(SEGMENTS) else {
        return (tail, 0, 0, format); // before segments
    };
    let largest = segments
        .iter()
        .unwrap()
        .map(|item| item.unwrap().1.value().len())
        .max()
        .unwrap_or(0);
    (tail, segments.len().unwrap(), largest, format)
}

/// Appends `events` in batches of 1, 2, … 7 events, in turn.
fn append_all(ledger: &Ledger, events: &[Event]) {
    let (mut i, mut size) = (0, 1);
    while i < events.len() {
        let n = size.min(events.len() - i);
        ledger
            .append(AppendRequest::new(events[i..i + n].to_vec()))
            .unwrap();
        i += n;
        size = size % 7 + 1;
    }
}

fn open(dir: &Path, segment_events: usize) -> Ledger {
    let ledger = Ledger::open(
        dir,
        LedgerOptions {
            segment_events,
            ..LedgerOptions::default()
        },
    )
    .unwrap();
    common::register(&ledger);
    ledger
}

/// Every way to read the history gives `expected` (the appended events, in order).
fn check_reads(ledger: &Ledger, expected: &[Event]) {
    let n = expected.len() as u64;
    assert_eq!(ledger.head(), n);
    assert_eq!(ledger.counts().unwrap().1, n);
    let all = ledger.read_all(ReadOptions::after(0, usize::MAX)).unwrap();
    let got: Vec<&Event> = all.iter().map(|e| &e.event).collect();
    assert_eq!(got, expected.iter().collect::<Vec<_>>());
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.position == i as u64 + 1)
    );
    // Windows that start and end anywhere, both ways.
    for after in (0..n).step_by(7) {
        for limit in [1, 5, 64, 200] {
            let page = ledger.read_all(ReadOptions::after(after, limit)).unwrap();
            let want = &all[after as usize..(after as usize + limit).min(n as usize)];
            assert_eq!(page, want, "forwards after {after}, limit {limit}");
            let before = after + 1;
            let back = ledger
                .read_all(ReadOptions {
                    after: 0,
                    before: Some(before + 1),
                    limit,
                    backwards: true,
                })
                .unwrap();
            let want: Vec<StoredEvent> = all[..before as usize]
                .iter()
                .rev()
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(back, want, "backwards before {}, limit {limit}", before + 1);
        }
    }
    // Lookups by position and identity, streams, and index walks (entity and type).
    for e in &all {
        assert_eq!(ledger.event_at(e.position).unwrap().as_ref(), Some(e));
        let by_id = ledger.event_by_id(&e.event.source, &e.event.id).unwrap();
        assert_eq!(by_id.as_ref(), Some(e));
    }
    assert_eq!(ledger.event_at(n + 1).unwrap(), None);
    for k in 0..7 {
        let subject = format!("note/k{k}");
        let stream = ledger.read_stream(&subject, 0, usize::MAX).unwrap();
        let want: Vec<&StoredEvent> = all.iter().filter(|e| e.event.subject == subject).collect();
        assert_eq!(stream.iter().collect::<Vec<_>>(), want, "{subject}");
        assert!(
            stream
                .iter()
                .enumerate()
                .all(|(i, e)| e.revision == i as u64 + 1)
        );
    }
    for ty in ["was_written", "was_edited", "was_read"] {
        let sel = Selector {
            entity: Some("note".into()),
            types: vec![ty.into()],
            ..Selector::default()
        };
        let got = ledger
            .read(&sel.compile().unwrap(), ReadOptions::after(0, usize::MAX))
            .unwrap();
        let want: Vec<StoredEvent> = all.iter().filter(|e| e.event.ty == ty).cloned().collect();
        assert_eq!(got, want, "{ty}");
    }
    // The zero-copy fold sees the same events.
    let mut seen = Vec::new();
    ledger
        .scan_views(
            &Selector::all().compile().unwrap(),
            ReadOptions::after(0, usize::MAX),
            |v| {
                seen.push(v.to_stored().unwrap());
                true
            },
        )
        .unwrap();
    assert_eq!(seen, all);
    // So does the lazy fold, attribute by attribute.
    let mut seen = 0;
    ledger
        .scan_records(
            &Selector::all().compile().unwrap(),
            ReadOptions::after(0, usize::MAX),
            |r| {
                let e = &all[seen];
                seen += 1;
                assert_eq!((r.position(), r.revision()), (e.position, e.revision));
                assert_eq!(r.recorded_micros(), e.recorded_micros);
                assert_eq!(r.ty().unwrap(), e.event.ty);
                assert_eq!(r.subject().unwrap(), e.event.subject);
                let view = r.view().unwrap();
                assert_eq!(r.data().unwrap(), view.data);
                assert_eq!(&view.to_stored().unwrap(), e);
                true
            },
        )
        .unwrap();
    assert_eq!(seen, all.len());
}

#[test]
fn reads_across_segments_and_the_tail_agree_with_what_was_appended() {
    let events = old_events();
    for segment_events in [1, 5, 64] {
        let dir = tempfile::tempdir().unwrap();
        let ledger = open(dir.path(), segment_events);
        append_all(&ledger, &events);
        check_reads(&ledger, &events);
        drop(ledger);
        let (tail, segments, largest, format) = layout(dir.path());
        assert_eq!(format, 3);
        assert!(segments > 0, "segments of {segment_events}");
        assert!(
            tail < segment_events as u64,
            "{tail} events left in the tail"
        );
        // Event 148 (24 KB of text) is larger than a segment may be: alone in one; every
        // other segment stays within 16 KiB.
        assert!(largest > 16 << 10, "the large record is in a segment");
        check_reads(&open(dir.path(), segment_events), &events);
    }
}

#[test]
fn a_segment_holds_at_most_16_kib_unless_one_record_is_larger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 64);
    // ~5 KB each: three fit in a segment, the fourth would not.
    let events: Vec<Event> = (0..40)
        .map(|i| {
            Event::new(
                "t",
                format!("e-{i}"),
                "was_written",
                "note/big",
                serde_json::json!({ "text": "y".repeat(5_000) }),
            )
        })
        .collect();
    append_all(&ledger, &events);
    drop(ledger);
    let (tail, segments, largest, _) = layout(dir.path());
    assert_eq!(segments, 13, "40 records of 5 KB pack three to a segment");
    assert_eq!(tail, 1);
    assert!(largest <= 16 << 10, "largest segment {largest} bytes");
    let ledger = open(dir.path(), 64);
    let all = ledger.read_all(ReadOptions::after(0, usize::MAX)).unwrap();
    assert_eq!(all.into_iter().map(|e| e.event).collect::<Vec<_>>(), events);
}

#[test]
fn a_directory_of_the_format_before_segments_opens_reads_the_same_and_is_packed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format2.redb"),
        dir.path().join("ledger.redb"),
    )
    .unwrap();
    let (tail, segments, _, format) = layout(dir.path());
    assert_eq!(
        (tail, segments, format),
        (300, 0, 2),
        "the fixture is of format 2"
    );

    let expected = old_events();
    let ledger = open(dir.path(), 64);
    check_reads(&ledger, &expected);
    // Appends go on after the old history, in the new record format.
    let more: Vec<Event> = (0..100)
        .map(|i| {
            Event::new(
                "later",
                format!("l-{i}"),
                "was_read",
                format!("note/k{}", i % 7),
                serde_json::json!({ "after": i }),
            )
        })
        .collect();
    append_all(&ledger, &more);
    let both: Vec<Event> = expected.iter().chain(&more).cloned().collect();
    check_reads(&ledger, &both);
    drop(ledger);

    let (tail, segments, _, format) = layout(dir.path());
    assert_eq!(format, 3, "upgraded when opened");
    assert!(
        segments > 0 && tail < 64,
        "packed: {segments} segments, {tail} in the tail"
    );
    check_reads(&open(dir.path(), 64), &both);
}
