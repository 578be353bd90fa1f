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

/// A batch too large to share a commit with the groups after it (`SHARED_COMMIT_EVENTS`):
/// its group is committed ahead of its sync, where a window opens.
fn large_note(id: &str) -> AppendRequest {
    let mut req = note(id);
    for i in 1..=crate::writer::SHARED_COMMIT_EVENTS {
        req.events.push(Event::new(
            "ahead",
            format!("{id}-{i}"),
            "noted",
            "note/1",
            json!({ "id": id }),
        ));
    }
    req
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

/// Waits until the event with `id` is committed to the tables, as the writer sees them.
fn wait_committed(ledger: &Ledger, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let txn = ledger.store.begin_read_own().expect("read");
        if txn
            .open_table(IDS)
            .expect("ids")
            .get(("ahead", id))
            .expect("get")
            .is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group of {id:?} was not committed within 10 s"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// While the sync is held: the group is committed, and nobody else sees it or writes.
/// Returns the other writer's registration, waiting.
fn assert_unseen_while_held(ledger: &Arc<Ledger>) -> thread::JoinHandle<Result<(), RegistryError>> {
    wait_committed(ledger, "second");
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
    // Committed before the second is queued: a group that finds answered groups in its
    // transaction commits after its sync, without a window.
    wait_committed(&ledger, "first");
    let sync = hold_next_sync(dir);
    let appending = {
        let ledger = ledger.clone();
        thread::spawn(move || ledger.append(large_note("second")))
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

/// What a test has once `second` is answered but not committed: its transaction kept open for
/// `third`, whose sync is held.
struct Shared {
    ledger: Arc<Ledger>,
    third_sync: hold::Held,
    third: thread::JoinHandle<Result<AppendOutcome, AppendError>>,
}

/// Whether the event with `id` is committed, as the writer sees the database.
fn committed(ledger: &Ledger, id: &str) -> bool {
    let txn = ledger.store.begin_read_own().expect("read");
    let ids = txn.open_table(IDS).expect("ids");
    ids.get(("ahead", id)).expect("get").is_some()
}

/// A ledger with one event; `second` appended with its sync held while `third` queues
/// behind it, then let go: `second` is answered, and its transaction stays open for `third`.
fn second_answered_uncommitted(dir: &Path) -> Shared {
    let ledger = open_note_ledger(dir);
    ledger.append(note("first")).expect("first");
    let second_sync = hold_next_sync(dir);
    let third_sync = hold_next_sync(dir);
    let second = {
        let ledger = ledger.clone();
        thread::spawn(move || ledger.append(note("second")))
    };
    second_sync.began();
    let third = {
        let ledger = ledger.clone();
        thread::spawn(move || ledger.append(note("third")))
    };
    // Queued while the second's record syncs (nothing tells the test when it is).
    thread::sleep(Duration::from_millis(200));
    second_sync.release(false);
    let answered = second
        .join()
        .expect("append thread")
        .expect("second appended");
    assert_eq!(answered.events[0].position, 2);
    third_sync.began();
    assert!(
        !committed(&ledger, "second"),
        "the answered group was committed on its own, not kept for the next one"
    );
    assert!(
        ledger
            .stats()
            .groups_sharing_a_commit
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    Shared {
        ledger,
        third_sync,
        third,
    }
}

/// A read that begins after `second` was answered, run on a thread; checks that it waits
/// while `second` is not committed.
fn read_second_waits(ledger: &Arc<Ledger>) -> thread::JoinHandle<Option<String>> {
    let reading = {
        let ledger = ledger.clone();
        thread::spawn(move || {
            ledger
                .event_by_id("ahead", "second")
                .expect("read")
                .map(|e| e.event.id)
        })
    };
    thread::sleep(Duration::from_millis(50));
    assert!(
        !reading.is_finished(),
        "a read returned without an answered append's group being committed"
    );
    reading
}

#[test]
fn an_answered_group_left_uncommitted_for_the_next_is_read_once_committed() {
    let dir = tempfile::tempdir().expect("dir");
    let shared = second_answered_uncommitted(dir.path());
    let ledger = shared.ledger;
    let reading = read_second_waits(&ledger);
    shared.third_sync.release(false);
    assert_eq!(
        reading.join().expect("read thread").as_deref(),
        Some("second")
    );
    let third = shared.third.join().expect("append thread").expect("third");
    assert_eq!(third.events[0].position, 3);
    assert!(
        ledger
            .event_by_id("ahead", "third")
            .expect("read")
            .is_some()
    );
}

#[test]
fn appends_sent_one_after_another_share_commits_and_each_is_read_at_once() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().expect("dir");
    let ledger = open_note_ledger(dir.path());
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    // One appender that sends each append once the last is answered: nothing is ever queued
    // behind a group, so only the writer's poll for the next append lets two groups share a
    // commit. A busy machine can hold the appender up past most polls; up to five tries.
    let mut seen = Vec::new();
    for round in 0..5 {
        let stats = ledger.stats();
        let (groups, commits) = (
            load(&stats.groups_sharing_a_commit),
            load(&stats.shared_commits),
        );
        for i in 0..200 {
            let id = format!("{round}-{i}");
            ledger.append(note(&id)).expect("append");
            if i % 50 == 0 {
                assert!(
                    ledger.event_by_id("ahead", &id).expect("read").is_some(),
                    "an answered append is read at once"
                );
            }
        }
        let groups = load(&stats.groups_sharing_a_commit) - groups;
        let commits = load(&stats.shared_commits) - commits;
        // Unshared, every group commits alone; quiet, 32 share one. A tenth is what a busy
        // machine still shows, and committing alone never does.
        if commits * 10 <= groups * 9 {
            return;
        }
        seen.push((groups, commits));
    }
    panic!("each group got a commit of its own (groups, commits per try: {seen:?})");
}

#[test]
fn an_answered_group_whose_next_group_fails_is_restored_from_the_log() {
    let dir = tempfile::tempdir().expect("dir");
    let shared = second_answered_uncommitted(dir.path());
    let ledger = shared.ledger;
    let reading = read_second_waits(&ledger);
    shared.third_sync.release(true);
    // Planned behind the second while it synced, the third is tried again on its own after
    // its record failed; else its append fails.
    let third = shared.third.join().expect("append thread");
    let mut expected = vec!["first", "second"];
    match &third {
        Ok(outcome) => {
            assert_eq!(outcome.events[0].position, 3);
            expected.push("third");
        }
        Err(e) => assert!(matches!(e, AppendError::Storage(_)), "{e:?}"),
    }
    assert_eq!(
        reading.join().expect("read thread").as_deref(),
        Some("second")
    );
    assert_eq!(ledger.head(), expected.len() as u64);
    ledger.append(note("fourth")).expect("fourth");
    expected.push("fourth");

    drop(ledger);
    let ledger = Ledger::open(dir.path(), LedgerOptions::default()).expect("reopen");
    let ids: Vec<String> = ledger
        .read_all(ReadOptions::after(0, 10))
        .expect("read")
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(ids, expected);
}
