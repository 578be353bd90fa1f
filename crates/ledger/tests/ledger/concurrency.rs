//! Many threads appending at once: positions gapless and unique, revisions gapless per stream,
//! conditions decided one append at a time inside a group.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use loom_ledger::{AppendError, AppendRequest, Conflict, ExpectedRevision, ReadOptions};
use serde_json::json;

use common::note;

#[test]
fn concurrent_appends_get_gapless_unique_positions_and_revisions() {
    let (_dir, ledger) = common::ledger();
    let ledger = Arc::new(ledger);
    let threads = 16;
    let per_thread = 60;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..per_thread {
                    // Half the threads share two hot streams, the rest write their own.
                    let key = if t % 2 == 0 {
                        format!("hot{}", i % 2)
                    } else {
                        format!("own{t}")
                    };
                    let batch = 1 + (i % 3);
                    let events = (0..batch)
                        .map(|b| note(&key, &format!("{t}-{i}-{b}"), "t", json!({"t": t, "i": i})))
                        .collect();
                    let out = ledger.append(AppendRequest::new(events)).expect("append");
                    got.extend(out.events);
                }
                got
            })
        })
        .collect();
    let mut acked = Vec::new();
    for h in handles {
        acked.extend(h.join().unwrap());
    }
    let total: usize = (0..per_thread).map(|i| 1 + (i % 3)).sum::<usize>() * threads;
    assert_eq!(acked.len(), total);
    let mut positions: Vec<u64> = acked.iter().map(|a| a.position).collect();
    positions.sort_unstable();
    assert_eq!(
        positions,
        (1..=total as u64).collect::<Vec<_>>(),
        "positions gapless and unique"
    );
    assert_eq!(ledger.head(), total as u64);

    // Every stream's revisions are 1..=n in position order.
    let stored = ledger.read_all(ReadOptions::after(0, usize::MAX)).unwrap();
    let mut per_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &stored {
        per_stream
            .entry(e.event.subject.clone())
            .or_default()
            .push(e.revision);
    }
    for (stream, revs) in &per_stream {
        assert_eq!(
            revs,
            &(1..=revs.len() as u64).collect::<Vec<_>>(),
            "{stream}"
        );
        assert_eq!(ledger.stream_revision(stream).unwrap(), revs.len() as u64);
    }
    // What each caller was told is what is stored.
    let ids: HashSet<_> = stored
        .iter()
        .map(|e| (e.position, e.event.id.clone()))
        .collect();
    for a in &acked {
        assert!(ids.contains(&(a.position, a.id.clone())));
    }
    // A batch stays contiguous: event b of a batch directly follows event b-1.
    for e in &stored {
        let (prefix, b) = e.event.id.rsplit_once('-').unwrap();
        let b: u64 = b.parse().unwrap();
        if b > 0 {
            let prev = &stored[(e.position - 2) as usize];
            assert_eq!(prev.event.id, format!("{prefix}-{}", b - 1));
        }
    }
}

#[test]
fn racing_conditional_appends_admit_exactly_one_per_revision() {
    let (_dir, ledger) = common::ledger();
    let ledger = Arc::new(ledger);
    ledger
        .append(AppendRequest::new(vec![note(
            "acct",
            "seed",
            "t",
            json!(0),
        )]))
        .unwrap();
    let threads = 8;
    let rounds = 25;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let mut wins = 0;
                let mut conflicts = 0;
                for i in 0..rounds {
                    loop {
                        let rev = ledger.stream_revision("note/acct").unwrap();
                        let req = AppendRequest::new(vec![note(
                            "acct",
                            &format!("{t}-{i}"),
                            "t",
                            json!(1),
                        )])
                        .expect("note/acct", ExpectedRevision::Exact(rev));
                        match ledger.append(req) {
                            Ok(_) => {
                                wins += 1;
                                break;
                            }
                            Err(AppendError::Conflict(Conflict::Revision { .. })) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                (wins, conflicts)
            })
        })
        .collect();
    let mut wins = 0;
    for h in handles {
        wins += h.join().unwrap().0;
    }
    assert_eq!(wins, threads * rounds);
    assert_eq!(
        ledger.stream_revision("note/acct").unwrap(),
        (threads * rounds + 1) as u64
    );
    assert_eq!(ledger.head(), (threads * rounds + 1) as u64);
}

#[test]
fn group_commit_batches_concurrent_appends() {
    let (_dir, ledger) = common::ledger();
    let ledger = Arc::new(ledger);
    let threads = 32;
    let per_thread = 20;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    ledger
                        .append(AppendRequest::new(vec![note(
                            &format!("k{t}"),
                            &format!("{t}/{i}"),
                            "t",
                            json!(i),
                        )]))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = ledger.stats();
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    let appends = stats.appends.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(appends, (threads * per_thread) as u64);
    // With 32 writers waiting on each commit, commits must be shared. (Registration commits
    // are not counted: they do not go through the writer.)
    assert!(
        commits < appends,
        "expected fewer commits ({commits}) than appends ({appends}): group commit"
    );
}

#[test]
fn async_appends_wait_for_room_in_a_full_queue() {
    let dir = tempfile::tempdir().unwrap();
    let options = loom_ledger::LedgerOptions {
        queue_capacity: 1,
        max_group_events: 1,
        ..loom_ledger::LedgerOptions::default()
    };
    let ledger = Arc::new(loom_ledger::Ledger::open(dir.path(), options).unwrap());
    common::register(&ledger);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                for i in 0..15 {
                    let e = note(&format!("k{t}"), &format!("{t}-{i}"), "t", json!(i));
                    pollster::block_on(ledger.append_async(AppendRequest::new(vec![e])))
                        .expect("append_async");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(ledger.head(), 8 * 15);
    for t in 0..8 {
        assert_eq!(ledger.stream_revision(&format!("note/k{t}")).unwrap(), 15);
    }
    assert!(
        ledger
            .stats()
            .queue_full_waits
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the queue was never full: the test did not exercise waiting for room"
    );
}
