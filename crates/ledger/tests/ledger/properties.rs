//! Property tests of the ledger against a model.
//!
//! Random sequences of operations — appends of 1-4 events to a handful of streams with random
//! conditions (every `ExpectedRevision` kind, right and wrong; DCB `fail_if_events_match`
//! selectors by entity, keys, types and a JSONPath data filter, with and without `after`),
//! re-appends of earlier batches (idempotent), re-appends of earlier identities with other
//! content (identity conflicts), and groups of appends queued together so that the writer
//! commits them in one transaction — run against a real [`Ledger`] in a temporary directory
//! and against [`Model`], a few lines of obviously-correct in-memory code. For every
//! operation both must make the same decision (the same positions and revisions, or the same
//! conflict), and afterwards every read must agree: all events by position in both
//! directions with paging, each stream by revision, each stream's revision, events by
//! position and by identity, and selector reads with paging. The reads are checked again on
//! a crash image (the database file and the write-ahead log copied while the ledger runs;
//! the log checkpoints every 2 KiB, so it starts over several times in a run) and after the
//! ledger is reopened.
//!
//! 64 cases by default; more with `PROPTEST_CASES=1000 cargo test -p loom-ledger --test
//! properties`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use loom_ledger::{
    AppendError, AppendOutcome, AppendRequest, AppendedEvent, Conditions, Conflict, EntitySpec,
    Event, ExpectedRevision, Ledger, LedgerOptions, ReadOptions, Selector, StoredEvent,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

mod ops;
mod reference;

use ops::*;
use reference::*;

// ----- running appends -----

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls the futures in order (so each queues its append before the next one does) until
/// all are done, parking the thread in between.
fn run_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    loop {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(&mut cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if !pending {
            return out.into_iter().map(Option::unwrap).collect();
        }
        std::thread::park_timeout(std::time::Duration::from_millis(50));
    }
}

fn open(dir: &std::path::Path) -> Ledger {
    let options = LedgerOptions {
        cache_bytes: 4 << 20,
        wal_checkpoint_bytes: 2 << 10,
        // Segments of three events: every case reads across segment boundaries and the tail.
        segment_events: 3,
        ..LedgerOptions::default()
    };
    Ledger::open(dir, options).expect("open ledger")
}

// ----- comparing reads -----

fn recs(events: &[StoredEvent]) -> Vec<Rec> {
    events.iter().map(Rec::from_stored).collect()
}

/// Pages through `read` forwards and backwards with `limit`, checking page sizes, and
/// compares with `expected` (in position order).
fn check_paged(
    what: &str,
    limit: usize,
    expected: &[Rec],
    read: impl Fn(ReadOptions) -> Vec<StoredEvent>,
) {
    let mut got = Vec::new();
    let mut after = 0;
    loop {
        let page = read(ReadOptions {
            after,
            before: None,
            limit,
            backwards: false,
        });
        assert!(page.len() <= limit, "{what}: page longer than {limit}");
        let Some(last) = page.last() else { break };
        after = last.position;
        got.extend(recs(&page));
        assert!(got.len() <= expected.len(), "{what}: too many events");
    }
    assert_eq!(got, expected, "{what}: forwards, limit {limit}");

    let mut got = Vec::new();
    let mut before = None;
    loop {
        let page = read(ReadOptions {
            after: 0,
            before,
            limit,
            backwards: true,
        });
        assert!(page.len() <= limit, "{what}: page longer than {limit}");
        let Some(last) = page.last() else { break };
        before = Some(last.position);
        got.extend(recs(&page));
        assert!(got.len() <= expected.len(), "{what}: too many events");
    }
    got.reverse();
    assert_eq!(got, expected, "{what}: backwards, limit {limit}");
}

fn check_reads(ledger: &Ledger, model: &Model, selectors: &[SelSpec]) {
    assert_eq!(ledger.head(), model.head(), "head");
    assert_eq!(
        ledger.counts().unwrap(),
        (model.streams.len() as u64, model.head()),
        "counts"
    );
    for limit in [1, 3, 1000] {
        check_paged("read_all", limit, &model.log, |o| {
            ledger.read_all(o).unwrap()
        });
    }
    for p in 0..=model.head() + 1 {
        let got = ledger.event_at(p).unwrap().map(|e| Rec::from_stored(&e));
        let want = (1..=model.head()).contains(&p).then(|| model.at(p).clone());
        assert_eq!(got, want, "event_at({p})");
    }
    for r in &model.log {
        let got = ledger.event_by_id(&r.source, &r.id).unwrap();
        assert_eq!(got.map(|e| Rec::from_stored(&e)).as_ref(), Some(r), "by id");
    }
    assert!(ledger.event_by_id(SOURCES[0], "missing").unwrap().is_none());
    for subject in STREAMS.iter().chain(&["cart/zz"]) {
        let want: Vec<Rec> = model
            .log
            .iter()
            .filter(|r| r.subject == *subject)
            .cloned()
            .collect();
        assert_eq!(
            ledger.stream_revision(subject).unwrap(),
            model.revision(subject),
            "revision of {subject}"
        );
        assert_eq!(want.len() as u64, model.revision(subject));
        let mut got = Vec::new();
        let mut after = 0;
        loop {
            let page = ledger.read_stream(subject, after, 2).unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = last.revision;
            got.extend(recs(&page));
            assert!(got.len() <= want.len(), "read_stream({subject}): too many");
        }
        assert_eq!(got, want, "read_stream({subject})");
        for (i, r) in want.iter().enumerate() {
            assert_eq!(
                r.revision,
                i as u64 + 1,
                "revisions of {subject} are gapless"
            );
        }
    }
    let fixed = ENTITIES
        .iter()
        .enumerate()
        .flat_map(|(e, _)| {
            [
                SelSpec {
                    entity: Some(e),
                    keys: vec![],
                    types: vec![],
                    data_gt: None,
                },
                SelSpec {
                    entity: Some(e),
                    keys: vec![0, 2, 3],
                    types: vec![],
                    data_gt: None,
                },
                SelSpec {
                    entity: Some(e),
                    keys: vec![],
                    types: vec![1, 2],
                    data_gt: None,
                },
            ]
        })
        .chain([SelSpec {
            entity: None,
            keys: vec![],
            types: vec![0],
            data_gt: None,
        }]);
    for sel in fixed.chain(selectors.iter().cloned()) {
        let compiled = sel.selector().compile().unwrap();
        let want: Vec<Rec> = model
            .log
            .iter()
            .filter(|r| sel.matches(r))
            .cloned()
            .collect();
        for limit in [2, 1000] {
            check_paged(&format!("{sel:?}"), limit, &want, |o| {
                ledger.read(&compiled, o).unwrap()
            });
            // The raw batch path (catch-up) reads the same events.
            check_paged(&format!("batch {sel:?}"), limit, &want, |o| {
                let batch = ledger.read_batch(&compiled, o).unwrap();
                batch.iter().map(|v| v.to_stored().unwrap()).collect()
            });
        }
    }
}

// ----- the property -----

/// A temporary directory, in memory where the system has `/dev/shm`: this test is about
/// decisions and reads, not durability (tests/crash.rs is), and an fsync per append on a real
/// disk makes it ten times slower.
fn temp_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("loom-properties")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

fn run(ops: &[Op], selectors: &[SelSpec]) {
    let dir = temp_dir();
    let ledger = open(dir.path());
    for entity in ENTITIES {
        let spec = EntitySpec {
            open: true,
            ..EntitySpec::default()
        };
        ledger.put_entity(entity, spec).unwrap();
    }
    let mut model = Model::default();
    let mut builder = Builder::default();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::One(step) => {
                let made = builder.make(step, &model);
                let want = model.append(&made.req, made.selector.as_ref());
                let got = decision(ledger.append(made.req.clone()));
                assert_eq!(got, want, "operation {i}: {:?}", made.req);
            }
            Op::Group(steps) => {
                // Every request of the group is built against the state before it.
                let made: Vec<Made> = steps.iter().map(|s| builder.make(s, &model)).collect();
                let got = run_in_order(
                    made.iter()
                        .map(|m| ledger.append_async(m.req.clone()))
                        .collect(),
                );
                for (j, (m, got)) in made.iter().zip(got).enumerate() {
                    let want = model.append(&m.req, m.selector.as_ref());
                    assert_eq!(decision(got), want, "operation {i}.{j}: {:?}", m.req);
                }
            }
        }
    }
    check_reads(&ledger, &model, selectors);
    // What a crash now would leave: the database file as of its last durable commit, and the
    // log. Opened, it replays the log and must hold everything acknowledged.
    let image = temp_dir();
    for file in [["ledger.redb"].as_slice(), &loom_ledger::WAL_FILES].concat() {
        std::fs::copy(dir.path().join(file), image.path().join(file)).unwrap();
    }
    let crashed = open(image.path());
    check_reads(&crashed, &model, selectors);
    drop(crashed);
    drop(ledger);
    let ledger = open(dir.path());
    check_reads(&ledger, &model, selectors);
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ledger_agrees_with_the_model(
        ops in proptest::collection::vec(op(), 1..40),
        selectors in proptest::collection::vec(sel_spec(), 4),
    ) {
        run(&ops, &selectors);
    }
}

/// The model itself is checked on a hand-written sequence, so that a model bug that
/// happens to match a ledger bug is less likely to go unnoticed.
#[test]
fn the_model_decides_as_documented() {
    let mut m = Model::default();
    let ev =
        |id: &str, subject: &str, n: i64| Event::new("s", id, "opened", subject, json!({ "n": n }));
    let req = |events: Vec<Event>| AppendRequest::new(events);
    let Decision::Done(o) = m.append(&req(vec![ev("a", "cart/1", 1), ev("b", "cart/1", 2)]), None)
    else {
        panic!()
    };
    assert_eq!(
        (o.last_position, o.events[1].revision, o.duplicate),
        (2, 2, false)
    );
    // The same batch again: a duplicate with the original positions.
    let Decision::Done(o) = m.append(&req(vec![ev("a", "cart/1", 1), ev("b", "cart/1", 2)]), None)
    else {
        panic!()
    };
    assert_eq!((o.last_position, o.duplicate), (2, true));
    // Different content: conflict.
    assert!(matches!(
        m.append(&req(vec![ev("a", "cart/1", 9)]), None),
        Decision::Conflict(Conflict::Identity { position: 1, .. })
    ));
    // Part of the batch new: conflict.
    assert!(matches!(
        m.append(&req(vec![ev("c", "cart/1", 1), ev("a", "cart/1", 1)]), None),
        Decision::Conflict(Conflict::Identity { position: 1, .. })
    ));
    // Wrong expected revision.
    assert_eq!(
        m.append(
            &req(vec![ev("c", "cart/1", 1)]).expect("cart/1", ExpectedRevision::Exact(1)),
            None
        ),
        Decision::Conflict(Conflict::Revision {
            stream: "cart/1".into(),
            expected: ExpectedRevision::Exact(1),
            actual: 2
        })
    );
    // DCB: a matching event after `after` refuses; none after it passes.
    let sel = SelSpec {
        entity: Some(0),
        keys: vec![0],
        types: vec![],
        data_gt: Some(1),
    };
    let mut r = req(vec![ev("c", "cart/2", 1)]);
    assert_eq!(
        m.append(&r, Some(&sel)),
        Decision::Conflict(Conflict::EventsMatched { positions: vec![2] })
    );
    r.conditions.after = Some(2);
    assert!(matches!(m.append(&r, Some(&sel)), Decision::Done(_)));
    assert_eq!(m.head(), 3);
    assert_eq!(m.revision("cart/2"), 1);
}
