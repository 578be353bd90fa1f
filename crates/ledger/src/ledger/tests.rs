//! A group committed ahead of its sync (`crate::store`'s window), as readers and the other
//! writers see it: its log record's sync is held by the test, then let go or failed.

use std::path::PathBuf;
use std::thread;
use std::time::Instant;

use loom_core::Event;
use serde_json::json;

use super::*;
use crate::log::hold;

fn note(id: &str) -> AppendRequest {
    AppendRequest::new(vec![Event::new(
        "ahead",
        id,
        "noted",
        "note/1",
        json!({ "id": id }),
    )])
}

fn open_note_ledger(dir: &Path) -> Arc<Ledger> {
    let ledger = Ledger::open(dir, LedgerOptions::default()).expect("open");
    ledger
        .put_entity(
            "note",
            EntitySpec {
                open: true,
                ..EntitySpec::default()
            },
        )
        .expect("entity");
    Arc::new(ledger)
}

/// Holds the next sync of the ledger's log.
fn hold_next_sync(dir: &Path) -> hold::Held {
    let files: Vec<PathBuf> = WAL_FILES
        .iter()
        .map(|f| dir.join(f))
        .filter(|f| f.exists())
        .collect();
    hold::next(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>())
}

/// Waits until the event at `position` is committed to the tables, as the writer sees them.
fn wait_committed(ledger: &Ledger, position: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let txn = ledger.store.begin_read_own().expect("read");
        if txn
            .open_table(EVENTS)
            .expect("events")
            .get(position)
            .expect("get")
            .is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group was not committed while its sync was held"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// While the sync is held: the group is committed, and nobody else sees it or writes.
/// Returns the other writer's registration, waiting.
fn assert_unseen_while_held(ledger: &Arc<Ledger>) -> thread::JoinHandle<Result<(), RegistryError>> {
    wait_committed(ledger, 2);
    assert!(
        ledger.event_at(2).expect("read").is_none(),
        "seen by position"
    );
    assert!(
        ledger
            .event_by_id("ahead", "second")
            .expect("read")
            .is_none(),
        "seen by id"
    );
    assert_eq!(
        ledger
            .read_all(ReadOptions::after(0, 10))
            .expect("read")
            .len(),
        1
    );
    assert_eq!(ledger.head(), 1);
    let registering = {
        let ledger = ledger.clone();
        thread::spawn(move || ledger.put_entity("other", EntitySpec::default()))
    };
    thread::sleep(Duration::from_millis(50));
    assert!(
        !registering.is_finished(),
        "another writer went ahead while a group was committed ahead of its sync"
    );
    registering
}

/// What a test has while the second append's sync is held.
struct Held {
    ledger: Arc<Ledger>,
    sync: hold::Held,
    appending: thread::JoinHandle<Result<AppendOutcome, AppendError>>,
    registering: thread::JoinHandle<Result<(), RegistryError>>,
}

/// A ledger with one event, a second being appended with its sync held, and another writer
/// waiting; checks that nobody sees the second meanwhile.
fn second_append_held(dir: &Path) -> Held {
    let ledger = open_note_ledger(dir);
    ledger.append(note("first")).expect("first");
    let sync = hold_next_sync(dir);
    let appending = {
        let ledger = ledger.clone();
        thread::spawn(move || ledger.append(note("second")))
    };
    sync.began();
    let registering = assert_unseen_while_held(&ledger);
    Held {
        ledger,
        sync,
        appending,
        registering,
    }
}

#[test]
fn a_group_committed_ahead_of_its_sync_is_seen_once_the_sync_is_done() {
    let dir = tempfile::tempdir().expect("dir");
    let held = second_append_held(dir.path());
    let ledger = held.ledger;
    held.sync.release(false);
    let second = held
        .appending
        .join()
        .expect("append thread")
        .expect("appended");
    assert_eq!(second.events[0].position, 2);
    held.registering
        .join()
        .expect("thread")
        .expect("registered");
    assert_eq!(
        ledger.event_at(2).expect("read").expect("seen").event.id,
        "second"
    );
}

#[test]
fn a_group_committed_ahead_of_a_sync_that_fails_is_never_seen_and_is_undone() {
    let dir = tempfile::tempdir().expect("dir");
    let held = second_append_held(dir.path());
    let ledger = held.ledger;
    held.sync.release(true);
    let failed = held.appending.join().expect("append thread");
    assert!(matches!(failed, Err(AppendError::Storage(_))), "{failed:?}");
    held.registering
        .join()
        .expect("thread")
        .expect("registered");
    assert!(
        ledger
            .event_by_id("ahead", "second")
            .expect("read")
            .is_none()
    );
    assert_eq!(ledger.head(), 1);
    let third = ledger.append(note("third")).expect("third");
    assert_eq!(third.events[0].position, 2);

    drop(ledger);
    let ledger = Ledger::open(dir.path(), LedgerOptions::default()).expect("reopen");
    assert!(
        ledger
            .event_by_id("ahead", "second")
            .expect("read")
            .is_none()
    );
    assert_eq!(
        ledger.event_at(2).expect("read").expect("third").event.id,
        "third"
    );
    assert_eq!(ledger.head(), 2);
}
