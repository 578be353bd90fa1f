//! The write-ahead log: what a crash leaves behind (the redb file as of its last durable
//! commit, plus the log) opens with every acknowledged event, and with a torn last record
//! it opens with everything before it.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use loom_ledger::{
    AppendRequest, ExpectedRevision, Ledger, LedgerOptions, ReadOptions, Selector, StoredEvent,
    WAL_FILE, WAL_FILES,
};
use serde_json::json;

use common::note;

/// Copies the ledger's files as they are on disk right now: what a power cut would leave.
fn crash_image(from: &Path, to: &Path, with_log: bool) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("ledger.redb"), to.join("ledger.redb")).unwrap();
    if with_log {
        for name in WAL_FILES {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
}

fn all(ledger: &Ledger) -> Vec<StoredEvent> {
    ledger.read_all(ReadOptions::after(0, usize::MAX)).unwrap()
}

/// Appends from several threads (one event or a few per append), returns how many events.
fn load(ledger: &Arc<Ledger>) -> u64 {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                for i in 0..50 {
                    let events: Vec<_> = (0..1 + i % 3)
                        .map(|b| {
                            note(
                                &format!("s{}", i % 7),
                                &format!("{t}-{i}-{b}"),
                                "t",
                                json!({"t": t, "i": i, "pad": "x".repeat(100)}),
                            )
                        })
                        .collect();
                    n += events.len() as u64;
                    ledger.append(AppendRequest::new(events)).unwrap();
                }
                n
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn a_crash_image_opens_with_every_acknowledged_event() {
    let (dir, ledger) = common::ledger();
    let ledger = Arc::new(ledger);
    let n = load(&ledger);
    assert_eq!(ledger.head(), n);
    let live = all(&ledger);
    let revision = ledger.stream_revision("note/s3").unwrap();

    let images = tempfile::tempdir().unwrap();
    let (with_log, without) = (images.path().join("a"), images.path().join("b"));
    crash_image(dir.path(), &with_log, true);
    crash_image(dir.path(), &without, false);

    // Without its log the redb file alone is behind: the log is what made the groups durable.
    let bare = Ledger::open(&without, LedgerOptions::default()).unwrap();
    assert!(
        bare.head() < n,
        "redb alone holds {} of {n} events",
        bare.head()
    );
    drop(bare);

    let restored = Ledger::open(&with_log, LedgerOptions::default()).unwrap();
    assert_eq!(restored.head(), n);
    assert_eq!(all(&restored), live, "every event, byte for byte");
    assert_eq!(restored.stream_revision("note/s3").unwrap(), revision);
    let some = &live[live.len() / 2];
    assert_eq!(
        restored
            .event_by_id(&some.event.source, &some.event.id)
            .unwrap()
            .as_ref(),
        Some(some)
    );
    // The indexes were rebuilt too: the stream goes on at the next revision, and a condition
    // on the old revision is refused.
    let next = restored
        .append(
            AppendRequest::new(vec![note("s3", "after", "t", json!({}))])
                .expect("note/s3", ExpectedRevision::Exact(revision)),
        )
        .unwrap();
    assert_eq!(next.events[0].position, n + 1);
    assert_eq!(next.events[0].revision, revision + 1);
    assert!(
        restored
            .append(
                AppendRequest::new(vec![note("s3", "late", "t", json!({}))])
                    .expect("note/s3", ExpectedRevision::Exact(revision)),
            )
            .is_err()
    );
    drop(restored);
    let again = Ledger::open(&with_log, LedgerOptions::default()).unwrap();
    assert_eq!(again.head(), n + 1);

    // A clean close carries the log into the redb file: then the file alone has everything.
    drop(Arc::into_inner(ledger).expect("the only reference"));
    let closed = images.path().join("closed");
    crash_image(dir.path(), &closed, false);
    let bare = Ledger::open(&closed, LedgerOptions::default()).unwrap();
    assert_eq!(bare.head(), n);
    assert_eq!(all(&bare), live);
}

#[test]
fn a_torn_last_record_is_left_out_and_the_rest_opens() {
    let (dir, ledger) = common::ledger();
    let ledger = Arc::new(ledger);
    let n = load(&ledger);
    let live = all(&ledger);
    let images = tempfile::tempdir().unwrap();
    let image = images.path().join("torn");
    crash_image(dir.path(), &image, true);
    // One more group after the image, written to the image's log only partly.
    let last = ledger
        .append(AppendRequest::new(vec![note(
            "torn",
            "torn-1",
            "t",
            json!({"pad": "y".repeat(500)}),
        )]))
        .unwrap();
    assert_eq!(last.last_position, n + 1);
    let log = std::fs::read(dir.path().join(WAL_FILE)).unwrap();
    let image_log = std::fs::read(image.join(WAL_FILE)).unwrap();
    let new_record = find_new_tail(&image_log, &log);
    let mut torn = log[..new_record.start + (new_record.end - new_record.start) / 2].to_vec();
    torn.extend_from_slice(&image_log[torn.len().min(image_log.len())..]);
    std::fs::write(image.join(WAL_FILE), &torn).unwrap();

    let restored = Ledger::open(&image, LedgerOptions::default()).unwrap();
    assert_eq!(
        restored.head(),
        n,
        "the torn group is not there, the rest is"
    );
    assert_eq!(all(&restored), live);
    // The log goes on where the good records end.
    let out = restored
        .append(AppendRequest::new(vec![note(
            "torn",
            "torn-2",
            "t",
            json!({}),
        )]))
        .unwrap();
    assert_eq!(out.last_position, n + 1);
    drop(restored);
    assert_eq!(
        Ledger::open(&image, LedgerOptions::default())
            .unwrap()
            .head(),
        n + 1
    );
}

/// The byte range `log` has beyond `before` (the record appended after the image).
/// The record `log` has where `before` has not: from the first byte that differs to the end
/// its header gives (magic, payload length, checksum; the log is filled with zeros beyond).
fn find_new_tail(before: &[u8], log: &[u8]) -> std::ops::Range<usize> {
    let start = before
        .iter()
        .zip(log)
        .position(|(a, b)| a != b)
        .unwrap_or(before.len().min(log.len()));
    let len = u32::from_le_bytes(log[start + 4..start + 8].try_into().unwrap()) as usize;
    start..start + 12 + len
}

#[test]
fn a_log_that_restarted_many_times_still_replays_exactly_its_tail() {
    // A checkpoint every 8 KiB: the load below restarts the log about ten times, each time
    // overwriting the start of the file and leaving older records after the new ones.
    let dir = tempfile::tempdir().unwrap();
    let options = || LedgerOptions {
        wal_checkpoint_bytes: 8 << 10,
        ..LedgerOptions::default()
    };
    let ledger = Arc::new(Ledger::open(dir.path(), options()).unwrap());
    common::register(&ledger);
    let mut n = load(&ledger);
    // Small groups until one goes to the log only (not a checkpoint), so that the crash image
    // below has something to replay. The writer checkpoints after it answers a group, so a
    // group that leads to one is told apart only after a moment; and the images are taken
    // again if a checkpoint began around the copy.
    let checkpoints = || ledger.stats().checkpoints.load(Ordering::Relaxed);
    let settle = || std::thread::sleep(std::time::Duration::from_millis(50));
    let images = tempfile::tempdir().unwrap();
    let (image, bare) = (images.path().join("cycled"), images.path().join("bare"));
    for i in 0.. {
        let before = checkpoints();
        ledger
            .append(AppendRequest::new(vec![note(
                "tail",
                &format!("tail-{i}"),
                "t",
                json!({}),
            )]))
            .unwrap();
        n += 1;
        settle();
        if checkpoints() != before {
            continue;
        }
        crash_image(dir.path(), &image, true);
        crash_image(dir.path(), &bare, false);
        settle();
        if checkpoints() == before {
            break;
        }
    }
    let live = all(&ledger);
    let log_len = std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();
    assert!(
        log_len < 64 << 10,
        "the log stays near its checkpoint size: {log_len}"
    );
    let checkpoints = checkpoints();
    assert!(checkpoints >= 5, "{checkpoints} checkpoints");
    assert!(
        ledger.stats().checkpoint_micros_sum.load(Ordering::Relaxed) > 0,
        "the time spent in checkpoints is counted"
    );

    assert!(Ledger::open(&bare, options()).unwrap().head() < n);
    let restored = Ledger::open(&image, options()).unwrap();
    assert_eq!(restored.head(), n);
    assert_eq!(all(&restored), live);
}

#[test]
fn a_checkpoint_whose_sync_did_not_finish_opens_from_the_one_before() {
    // A checkpoint's sync runs beside the groups after it: a crash before it finishes leaves
    // the redb file as of the checkpoint before, and the log must still hold everything since
    // then, across its two files.
    let dir = tempfile::tempdir().unwrap();
    let options = || LedgerOptions {
        wal_checkpoint_bytes: 8 << 10,
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open(dir.path(), options()).unwrap();
    common::register(&ledger);
    let checkpoints = || ledger.stats().checkpoints.load(Ordering::Relaxed);
    let mut n = 0;
    let append = |n: &mut u64| {
        *n += 1;
        ledger
            .append(AppendRequest::new(vec![note(
                &format!("s{}", *n % 5),
                &format!("e-{n}"),
                "t",
                json!({"pad": "x".repeat(200)}),
            )]))
            .unwrap();
    };
    while checkpoints() < 2 {
        append(&mut n);
    }
    // A durable commit of the registry waits for the checkpoint's sync and carries the
    // groups since into the file: the redb file is then as a crash would leave it.
    common::register(&ledger);
    let older = std::fs::read(dir.path().join("ledger.redb")).unwrap();
    // Exactly one more checkpoint, then a few groups after it.
    let before = checkpoints();
    while checkpoints() == before {
        append(&mut n);
    }
    for _ in 0..3 {
        append(&mut n);
    }
    assert_eq!(checkpoints(), before + 1);
    let live = all(&ledger);
    assert_eq!(live.len() as u64, n);

    let images = tempfile::tempdir().unwrap();
    let image = images.path().join("behind");
    crash_image(dir.path(), &image, true);
    std::fs::write(image.join("ledger.redb"), &older).unwrap();
    let bare = Ledger::open_unlogged(&image, options()).unwrap();
    let behind = bare.head();
    assert!(
        behind < n,
        "the older file alone holds {behind} of {n} events"
    );
    drop(bare);
    std::fs::write(image.join("ledger.redb"), &older).unwrap();
    let restored = Ledger::open(&image, options()).unwrap();
    assert_eq!(restored.head(), n);
    assert_eq!(all(&restored), live, "every event, byte for byte");
}

#[test]
fn a_directory_from_before_the_log_is_upgraded_and_a_newer_format_is_refused() {
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let set_format = |dir: &Path, format: u64| {
        let db = redb::Database::create(dir.join("ledger.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format", format)
            .unwrap();
        txn.commit().unwrap();
    };
    let format_of = |dir: &Path| {
        let db = redb::Database::create(dir.join("ledger.redb")).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get("format").unwrap().unwrap().value()
    };
    let (dir, ledger) = common::ledger();
    ledger
        .append(AppendRequest::new(vec![note("old", "o-1", "t", json!({}))]))
        .unwrap();
    drop(ledger);
    assert_eq!(format_of(dir.path()), 3);

    // Format 2 is upgraded too: tests/segments.rs opens one its own build wrote.
    set_format(dir.path(), 1);
    let ledger = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
    assert_eq!(ledger.head(), 1);
    drop(ledger);
    assert_eq!(format_of(dir.path()), 3, "upgraded when opened");

    set_format(dir.path(), 4);
    let err = Ledger::open(dir.path(), LedgerOptions::default()).unwrap_err();
    assert!(err.to_string().contains("format 4"), "{err}");
}

#[test]
fn groups_planned_behind_a_syncing_group_answer_and_replay_like_any_group() {
    use std::collections::{BTreeMap, HashMap};
    let (dir, ledger) = common::ledger();
    let ledger = Arc::new(ledger);
    // Pairs of threads append the same events at once, to one stream per pair: one of each
    // pair writes an event and the other is told it is a duplicate, often from the group
    // planned behind the one that wrote it, before that one committed.
    let mut told: Vec<(String, u64, u64)> = Vec::new();
    let mut rounds = 0;
    while rounds < 2 || ledger.stats().groups_behind.load(Ordering::Relaxed) == 0 {
        assert!(
            rounds < 50,
            "no group was planned behind another in 50 rounds"
        );
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let ledger = ledger.clone();
                std::thread::spawn(move || {
                    (0..40)
                        .map(|i| {
                            let id = format!("{rounds}-{}-{i}", t / 2);
                            let event = note(&format!("p{}", t / 2), &id, "t", json!({"i": i}));
                            let out = ledger.append(AppendRequest::new(vec![event])).unwrap();
                            (id, out.events[0].position, out.events[0].revision)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            told.extend(h.join().unwrap());
        }
        rounds += 1;
    }
    let stored = all(&ledger);
    // Each event once, at the position and revision both of its pair were told.
    assert_eq!(stored.len() * 2, told.len());
    let by_id: HashMap<&str, &StoredEvent> =
        stored.iter().map(|e| (e.event.id.as_str(), e)).collect();
    assert_eq!(by_id.len(), stored.len(), "no event stored twice");
    for (id, position, revision) in &told {
        let e = by_id[id.as_str()];
        assert_eq!((e.position, e.revision), (*position, *revision), "{id}");
    }
    // Positions gapless, and each stream's revisions gapless in position order.
    let positions: Vec<u64> = stored.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=stored.len() as u64).collect::<Vec<_>>());
    let mut revisions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in &stored {
        revisions
            .entry(&e.event.subject)
            .or_default()
            .push(e.revision);
    }
    for (stream, revs) in revisions {
        assert_eq!(
            revs,
            (1..=revs.len() as u64).collect::<Vec<_>>(),
            "{stream}"
        );
    }
    // What a crash leaves (the log with the groups written behind others) replays to the
    // same history.
    let images = tempfile::tempdir().unwrap();
    crash_image(dir.path(), images.path(), true);
    let restored = Ledger::open(images.path(), LedgerOptions::default()).unwrap();
    assert_eq!(all(&restored), stored, "every event, byte for byte");
}

/// Checks what a batch of `streams` streams × 3 events (made by `large_batch`) left in every
/// index: each stream's events in order, its revision, each event by id, and the selectors by
/// entity key and by type.
fn check_large_batch(ledger: &Ledger, streams: usize, first: u64) {
    for s in 0..streams {
        let subject = format!("note/s{s}");
        let positions: Vec<u64> = (0..3).map(|r| first + (r * streams + s) as u64).collect();
        let stream = ledger.read_stream(&subject, 0, 10).unwrap();
        assert_eq!(
            stream
                .iter()
                .map(|e| (e.position, e.revision))
                .collect::<Vec<_>>(),
            positions.iter().copied().zip(1..).collect::<Vec<_>>(),
            "{subject}"
        );
        assert_eq!(ledger.stream_revision(&subject).unwrap(), 3, "{subject}");
        for (r, position) in positions.iter().enumerate() {
            let by_id = ledger.event_by_id("test", &format!("big-{s}-{r}")).unwrap();
            assert_eq!(by_id.map(|e| e.position), Some(*position));
        }
    }
    let select = |selector: Selector| -> Vec<u64> {
        let read = ledger.read(
            &selector.compile().unwrap(),
            ReadOptions::after(0, usize::MAX),
        );
        read.unwrap().iter().map(|e| e.position).collect()
    };
    let of_type = |ty: &str| Selector {
        entity: Some("note".into()),
        types: vec![ty.into()],
        ..Selector::default()
    };
    for r in 0..3 {
        let expected: Vec<u64> = (0..streams)
            .map(|s| first + (r * streams + s) as u64)
            .collect();
        assert_eq!(select(of_type(&format!("t{r}"))), expected, "type t{r}");
    }
    let key = Selector {
        entity: Some("note".into()),
        keys: vec!["s7".into()],
        ..Selector::default()
    };
    assert_eq!(
        select(key),
        (0..3)
            .map(|r| first + (r * streams + 7) as u64)
            .collect::<Vec<_>>()
    );
}

/// One append of `streams` streams × 3 events, stream after stream for each revision: the
/// events of a stream are far apart in the batch.
fn large_batch(streams: usize) -> AppendRequest {
    let events = (0..3)
        .flat_map(|r| {
            (0..streams).map(move |s| {
                note(
                    &format!("s{s}"),
                    &format!("big-{s}-{r}"),
                    &format!("t{r}"),
                    json!({"r": r}),
                )
            })
        })
        .collect();
    AppendRequest::new(events)
}

#[test]
fn a_large_batch_over_many_streams_is_indexed_exactly_and_replays_so() {
    // 600 events: a group this large is indexed on two threads where there are two CPUs.
    let streams = 200;
    let (dir, ledger) = common::ledger();
    let first = note("first", "before", "t", json!({}));
    ledger.append(AppendRequest::new(vec![first])).unwrap();
    let out = ledger.append(large_batch(streams)).unwrap();
    assert_eq!((out.events[0].position, out.last_position), (2, 601));
    check_large_batch(&ledger, streams, 2);

    // The same batch replayed from the log by the next open.
    let images = tempfile::tempdir().unwrap();
    let image = images.path().join("image");
    crash_image(dir.path(), &image, true);
    let restored = Ledger::open(&image, LedgerOptions::default()).unwrap();
    assert_eq!(restored.head(), 601);
    assert_eq!(all(&restored), all(&ledger));
    check_large_batch(&restored, streams, 2);

    // A stream's revision is its last event's, in both: an append expecting it goes on, one
    // expecting an earlier one is refused.
    for ledger in [&ledger, &restored] {
        let expecting = |s: &str, id: &str, revision| {
            let event = note(s, id, "t", json!({}));
            let subject = format!("note/{s}");
            ledger.append(
                AppendRequest::new(vec![event]).expect(&subject, ExpectedRevision::Exact(revision)),
            )
        };
        assert!(
            expecting("s1", "late", 2).is_err(),
            "note/s1 is at revision 3"
        );
        let next = expecting("s0", "after", 3).unwrap();
        assert_eq!((next.events[0].position, next.events[0].revision), (602, 4));
    }
}

/// Appends spaced out as a client over HTTP spaces them (~150 µs apart), `n` of them with ids
/// `{name}{i}`.
fn spaced_appends(ledger: &Ledger, name: &str, n: usize) {
    for i in 0..n {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_micros(150) {
            std::hint::spin_loop();
        }
        let event = note("spaced", &format!("{name}{i}"), "t", json!({"i": i}));
        ledger.append(AppendRequest::new(vec![event])).unwrap();
    }
}

#[test]
fn a_disk_kept_awake_is_read_between_syncs_and_the_log_is_as_without() {
    let reads = |ledger: &Ledger| ledger.stats().disk_awake_reads.load(Ordering::Relaxed);
    let awake = tempfile::tempdir().unwrap();
    let options = |keep_disk_awake| LedgerOptions {
        keep_disk_awake,
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open(awake.path(), options(loom_ledger::KeepAwake::On)).unwrap();
    common::register(&ledger);
    spaced_appends(&ledger, "a", 300);
    assert!(reads(&ledger) > 0, "no read between syncs ~150 µs apart");
    assert_eq!(all(&ledger).len(), 300);
    drop(ledger);
    let block = std::fs::read(awake.path().join(loom_ledger::AWAKE_FILE)).unwrap();
    assert!(block.len() == 4096 && block.iter().all(|&b| b == 0));
    // The log replays the same with or without it.
    let reopened = Ledger::open(awake.path(), options(loom_ledger::KeepAwake::Off)).unwrap();
    assert_eq!(all(&reopened).len(), 300);
    spaced_appends(&reopened, "b", 50);
    assert_eq!(reads(&reopened), 0, "read with the disk not kept awake");
    assert_eq!(all(&reopened).len(), 350);

    let off = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(off.path(), options(loom_ledger::KeepAwake::Off)).unwrap();
    common::register(&ledger);
    spaced_appends(&ledger, "c", 50);
    assert_eq!(reads(&ledger), 0);
    assert!(!off.path().join(loom_ledger::AWAKE_FILE).exists());
}
