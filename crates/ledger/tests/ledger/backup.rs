//! Backups and checks: a backup taken while appends go on is the ledger at one commit, it
//! opens as a ledger that goes on from there, and `verify` finds a damaged index.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use loom_ledger::{AppendRequest, Ledger, LedgerOptions, ReadOptions, Selector, StoredEvent};
use redb::{ReadableDatabase, TableDefinition};

const IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("ids");

fn small_segments() -> LedgerOptions {
    LedgerOptions {
        segment_events: 16,
        ..LedgerOptions::default()
    }
}

fn all(ledger: &Ledger) -> Vec<StoredEvent> {
    ledger
        .read(
            &Selector::all().compile().unwrap(),
            ReadOptions::after(0, 100_000),
        )
        .unwrap()
}

/// The backup file placed in a new data directory, opened.
fn restored(file: &std::path::Path) -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(file, dir.path().join("ledger.redb")).unwrap();
    let ledger = Ledger::open(dir.path(), small_segments()).unwrap();
    (dir, ledger)
}

#[test]
fn a_backup_under_load_is_the_ledger_at_one_commit_and_goes_on_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path(), small_segments()).unwrap());
    common::register(&ledger);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (ledger, stop) = (ledger.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) || i < 50 {
                    let events = (0..3)
                        .map(|j| {
                            common::note(
                                &format!("w{w}"),
                                &format!("w{w}-{i}-{j}"),
                                "was_noted",
                                serde_json::json!({"i": i}),
                            )
                        })
                        .collect();
                    ledger.append(AppendRequest::new(events)).unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    while ledger.head() < 300 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("b.redb");
    let info = ledger.backup_to(&file).unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        info.head >= 300 && info.head < ledger.head(),
        "{info:?} vs {}",
        ledger.head()
    );
    assert_eq!(info.head % 3, 0, "a backup holds whole appends: {info:?}");
    assert!(
        ledger.backup_to(&file).is_err(),
        "a backup does not overwrite a file"
    );

    let (_restored_dir, copy) = restored(&file);
    let verified = copy.verify().unwrap();
    assert_eq!((verified.events, verified.entities), (info.head, 2));
    let original = all(&ledger);
    assert_eq!(all(&copy), original[..info.head as usize]);
    assert_eq!(ledger.verify().unwrap().events, ledger.head());
    // It goes on: a retry of an event it holds is a duplicate, a new event comes next.
    let again = original[0].event.clone();
    assert!(
        copy.append(AppendRequest::new(vec![again]))
            .unwrap()
            .duplicate
    );
    let next = copy
        .append(AppendRequest::new(vec![common::note(
            "new",
            "n1",
            "was_noted",
            serde_json::json!({}),
        )]))
        .unwrap();
    assert_eq!(next.last_position, info.head + 1);
    assert_eq!(copy.verify().unwrap().events, info.head + 1);
}

#[test]
fn verify_finds_an_identity_that_does_not_point_at_its_event() {
    let (dir, ledger) = common::ledger();
    for i in 0..40 {
        let e = common::note("k", &format!("x-{i}"), "was_noted", serde_json::json!({}));
        ledger.append(AppendRequest::new(vec![e])).unwrap();
    }
    assert_eq!(ledger.verify().unwrap().events, 40);
    let file = dir.path().join("copy.redb");
    ledger.backup_to(&file).unwrap();
    {
        let db = redb::Database::open(&file).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(IDS)
            .unwrap()
            .insert(("test", "x-5"), 7)
            .unwrap();
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        assert!(read.open_table(IDS).is_ok());
    }
    let (_d, damaged) = restored(&file);
    let err = damaged.verify().unwrap_err().to_string();
    assert!(err.contains("position 6") && err.contains("x-5"), "{err}");
}
