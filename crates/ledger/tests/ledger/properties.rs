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

const STREAMS: [&str; 5] = ["cart/1", "cart/2", "note/a", "note/a/b", "acct/x"];
const ENTITIES: [&str; 3] = ["cart", "note", "acct"];
/// Keys selectors may name: every key in use plus one that never is.
const KEYS: [&str; 6] = ["1", "2", "a", "a/b", "x", "zz"];
const TYPES: [&str; 3] = ["opened", "changed", "closed"];
const SOURCES: [&str; 2] = ["urn:s1", "https://s2.example/x"];
/// Most positions a DCB conflict reports (the ledger's documented limit).
const MAX_REPORTED_MATCHES: usize = 10;

// ----- the operations, as proptest generates them -----

#[derive(Clone, Debug)]
struct EvSpec {
    stream: usize,
    ty: usize,
    n: i64,
    source: usize,
}

#[derive(Clone, Debug)]
enum RevSpec {
    Any,
    NoStream,
    Exists,
    /// Exact, as an offset from the stream's revision when the operation is built (0 is
    /// right unless an earlier append of the same group moved the stream).
    Exact(i8),
}

#[derive(Clone, Debug)]
struct SelSpec {
    entity: Option<usize>,
    keys: Vec<usize>,
    types: Vec<usize>,
    /// JSONPath data filter `$[?$.n > k]`.
    data_gt: Option<i64>,
}

#[derive(Clone, Debug)]
struct AppendSpec {
    events: Vec<EvSpec>,
    expected: Vec<(usize, RevSpec)>,
    /// The DCB condition, with `after` as a distance back from the head.
    dcb: Option<(SelSpec, Option<u8>)>,
}

#[derive(Clone, Debug)]
enum Variation {
    /// The same batch again (idempotent if it was stored).
    Same,
    /// One event's data changed (identity conflict if it was stored).
    ChangeData(Index),
    /// One event's type changed (identity conflict if it was stored).
    ChangeType(Index),
    /// Every event under the other source: new identities.
    OtherSource,
    /// Without its first event (a stored batch's part is still the same content).
    Subset,
    /// With a new event added (a stored batch plus a new event is not a retry).
    AddNew(EvSpec),
    /// With its first event twice: invalid before it reaches the writer.
    DuplicateInBatch,
}

#[derive(Clone, Debug)]
enum Step {
    Fresh(AppendSpec),
    /// A retry of an earlier request (picked from every request made so far).
    Retry(Index, Variation),
}

#[derive(Clone, Debug)]
enum Op {
    /// One blocking append.
    One(Step),
    /// Appends queued together (the writer usually commits them as one group).
    Group(Vec<Step>),
}

fn ev_spec() -> impl Strategy<Value = EvSpec> {
    (0..STREAMS.len(), 0..TYPES.len(), 0i64..10, 0..SOURCES.len()).prop_map(
        |(stream, ty, n, source)| EvSpec {
            stream,
            ty,
            n,
            source,
        },
    )
}

fn rev_spec() -> impl Strategy<Value = RevSpec> {
    prop_oneof![
        1 => Just(RevSpec::Any),
        1 => Just(RevSpec::NoStream),
        1 => Just(RevSpec::Exists),
        3 => (-2i8..=1).prop_map(RevSpec::Exact),
    ]
}

fn sel_spec() -> impl Strategy<Value = SelSpec> {
    (
        proptest::option::of(0..ENTITIES.len()),
        proptest::collection::vec(0..KEYS.len(), 0..3),
        proptest::collection::vec(0..TYPES.len(), 0..3),
        proptest::option::weighted(0.25, 0i64..10),
    )
        .prop_map(|(entity, keys, types, data_gt)| SelSpec {
            keys: if entity.is_some() { keys } else { Vec::new() },
            entity,
            types,
            data_gt,
        })
}

fn append_spec() -> impl Strategy<Value = AppendSpec> {
    (
        proptest::collection::vec(ev_spec(), 1..=4),
        proptest::collection::vec((0..STREAMS.len(), rev_spec()), 0..=2),
        proptest::option::weighted(0.4, (sel_spec(), proptest::option::of(0u8..6))),
    )
        .prop_map(|(events, expected, dcb)| AppendSpec {
            events,
            expected,
            dcb,
        })
}

fn variation() -> impl Strategy<Value = Variation> {
    prop_oneof![
        3 => Just(Variation::Same),
        2 => any::<Index>().prop_map(Variation::ChangeData),
        1 => any::<Index>().prop_map(Variation::ChangeType),
        1 => Just(Variation::OtherSource),
        1 => Just(Variation::Subset),
        1 => ev_spec().prop_map(Variation::AddNew),
        1 => Just(Variation::DuplicateInBatch),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => append_spec().prop_map(Step::Fresh),
        2 => (any::<Index>(), variation()).prop_map(|(i, v)| Step::Retry(i, v)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => step().prop_map(Op::One),
        1 => proptest::collection::vec(step(), 2..=4).prop_map(Op::Group),
    ]
}

// ----- the model -----

/// One stored event, as the model keeps it and as reads are compared.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    position: u64,
    revision: u64,
    source: String,
    id: String,
    subject: String,
    ty: String,
    n: i64,
}

impl Rec {
    fn from_stored(e: &StoredEvent) -> Rec {
        let data = e.event.data_json().expect("JSON data");
        Rec {
            position: e.position,
            revision: e.revision,
            source: e.event.source.clone(),
            id: e.event.id.clone(),
            subject: e.event.subject.clone(),
            ty: e.event.ty.clone(),
            n: data["n"].as_i64().expect("data.n"),
        }
    }

    fn entity_key(&self) -> (&str, &str) {
        self.subject.split_once('/').expect("a stream name")
    }
}

/// What happened to one append, comparable between ledger and model.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    Done(AppendOutcome),
    Conflict(Conflict),
    Invalid,
}

/// The ledger's answer as a [`Decision`]; identity conflicts keep only whether they are about
/// different content or a partly stored batch (the wording of `reason` is not the point).
fn decision(result: Result<AppendOutcome, AppendError>) -> Decision {
    match result {
        Ok(o) => Decision::Done(o),
        Err(AppendError::Conflict(Conflict::Identity {
            event_source,
            id,
            position,
            reason,
        })) => Decision::Conflict(Conflict::Identity {
            event_source,
            id,
            position,
            reason: if reason.contains("different content") {
                "different".into()
            } else if reason.contains("not stored") {
                "partial".into()
            } else {
                panic!("unexpected identity conflict reason {reason:?}")
            },
        }),
        Err(AppendError::Conflict(c)) => Decision::Conflict(c),
        Err(AppendError::Invalid(_)) => Decision::Invalid,
        Err(other) => panic!("unexpected append error: {other}"),
    }
}

#[derive(Debug, Default)]
struct Model {
    log: Vec<Rec>,
    ids: HashMap<(String, String), u64>,
    streams: BTreeMap<String, u64>,
}

fn n_of(e: &Event) -> i64 {
    e.data_json().expect("JSON data")["n"]
        .as_i64()
        .expect("data.n")
}

impl Model {
    fn head(&self) -> u64 {
        self.log.len() as u64
    }

    fn revision(&self, subject: &str) -> u64 {
        self.streams.get(subject).copied().unwrap_or(0)
    }

    fn at(&self, position: u64) -> &Rec {
        &self.log[position as usize - 1]
    }

    fn append(&mut self, req: &AppendRequest, selector: Option<&SelSpec>) -> Decision {
        // Validation before the writer: the same identity twice in one batch.
        let mut seen = std::collections::HashSet::new();
        if !req
            .events
            .iter()
            .all(|e| seen.insert((e.source.clone(), e.id.clone())))
        {
            return Decision::Invalid;
        }
        // Identity: a batch stored as a whole with the same content is a duplicate.
        let found: Vec<Option<u64>> = req
            .events
            .iter()
            .map(|e| self.ids.get(&(e.source.clone(), e.id.clone())).copied())
            .collect();
        if found.iter().any(Option::is_some) {
            let mut events = Vec::new();
            for (e, p) in req.events.iter().zip(&found) {
                let Some(p) = *p else {
                    let (i, p) = found
                        .iter()
                        .enumerate()
                        .find_map(|(i, f)| f.map(|p| (i, p)))
                        .unwrap();
                    return Decision::Conflict(Conflict::Identity {
                        event_source: req.events[i].source.clone(),
                        id: req.events[i].id.clone(),
                        position: p,
                        reason: "partial".into(),
                    });
                };
                let r = self.at(p);
                if r.subject != e.subject || r.ty != e.ty || r.n != n_of(e) {
                    return Decision::Conflict(Conflict::Identity {
                        event_source: e.source.clone(),
                        id: e.id.clone(),
                        position: p,
                        reason: "different".into(),
                    });
                }
                events.push(AppendedEvent {
                    source: e.source.clone(),
                    id: e.id.clone(),
                    subject: e.subject.clone(),
                    position: p,
                    revision: r.revision,
                });
            }
            let last_position = events.iter().map(|e| e.position).max().unwrap();
            return Decision::Done(AppendOutcome {
                events,
                last_position,
                duplicate: true,
            });
        }
        for (stream, expected) in &req.conditions.expected_revisions {
            let actual = self.revision(stream);
            let ok = match *expected {
                ExpectedRevision::Any => true,
                ExpectedRevision::NoStream => actual == 0,
                ExpectedRevision::Exists => actual > 0,
                ExpectedRevision::Exact(n) => actual == n,
            };
            if !ok {
                return Decision::Conflict(Conflict::Revision {
                    stream: stream.clone(),
                    expected: *expected,
                    actual,
                });
            }
        }
        if let Some(sel) = selector {
            let after = req.conditions.after.unwrap_or(0);
            let positions: Vec<u64> = self
                .log
                .iter()
                .filter(|r| r.position > after && sel.matches(r))
                .take(MAX_REPORTED_MATCHES)
                .map(|r| r.position)
                .collect();
            if !positions.is_empty() {
                return Decision::Conflict(Conflict::EventsMatched { positions });
            }
        }
        let mut events = Vec::new();
        for e in &req.events {
            let position = self.head() + 1;
            let revision = self.revision(&e.subject) + 1;
            self.streams.insert(e.subject.clone(), revision);
            self.ids.insert((e.source.clone(), e.id.clone()), position);
            self.log.push(Rec {
                position,
                revision,
                source: e.source.clone(),
                id: e.id.clone(),
                subject: e.subject.clone(),
                ty: e.ty.clone(),
                n: n_of(e),
            });
            events.push(AppendedEvent {
                source: e.source.clone(),
                id: e.id.clone(),
                subject: e.subject.clone(),
                position,
                revision,
            });
        }
        Decision::Done(AppendOutcome {
            events,
            last_position: self.head(),
            duplicate: false,
        })
    }
}

impl SelSpec {
    fn selector(&self) -> Selector {
        Selector {
            entity: self.entity.map(|e| ENTITIES[e].to_owned()),
            keys: self.keys.iter().map(|&k| KEYS[k].to_owned()).collect(),
            types: self.types.iter().map(|&t| TYPES[t].to_owned()).collect(),
            data: self.data_gt.map(|k| format!("$[?$.n > {k}]")),
            meta: None,
        }
    }

    fn matches(&self, r: &Rec) -> bool {
        let (entity, key) = r.entity_key();
        self.entity.is_none_or(|e| ENTITIES[e] == entity)
            && (self.keys.is_empty() || self.keys.iter().any(|&k| KEYS[k] == key))
            && (self.types.is_empty() || self.types.iter().any(|&t| TYPES[t] == r.ty))
            && self.data_gt.is_none_or(|k| r.n > k)
    }
}

// ----- turning specs into requests -----

/// A request as made, kept for retries.
#[derive(Clone, Debug)]
struct Made {
    req: AppendRequest,
    selector: Option<SelSpec>,
}

#[derive(Debug, Default)]
struct Builder {
    next_id: u64,
    made: Vec<Made>,
}

impl Builder {
    fn event(&mut self, spec: &EvSpec) -> Event {
        self.next_id += 1;
        Event::new(
            SOURCES[spec.source],
            format!("e{}", self.next_id),
            TYPES[spec.ty],
            STREAMS[spec.stream],
            json!({ "n": spec.n }),
        )
    }

    fn fresh(&mut self, spec: &AppendSpec, model: &Model) -> Made {
        let events = spec.events.iter().map(|e| self.event(e)).collect();
        let mut conditions = Conditions::default();
        for (stream, rev) in &spec.expected {
            let subject = STREAMS[*stream];
            let expected = match rev {
                RevSpec::Any => ExpectedRevision::Any,
                RevSpec::NoStream => ExpectedRevision::NoStream,
                RevSpec::Exists => ExpectedRevision::Exists,
                RevSpec::Exact(d) => ExpectedRevision::Exact(
                    (model.revision(subject) as i64 + i64::from(*d)).max(0) as u64,
                ),
            };
            conditions
                .expected_revisions
                .insert(subject.to_owned(), expected);
        }
        let mut selector = None;
        if let Some((sel, back)) = &spec.dcb {
            conditions.fail_if_events_match = Some(sel.selector());
            conditions.after = back.map(|b| model.head().saturating_sub(u64::from(b)));
            selector = Some(sel.clone());
        }
        Made {
            req: AppendRequest {
                events,
                conditions,
                ..AppendRequest::default()
            },
            selector,
        }
    }

    fn retry(&mut self, which: &Index, variation: &Variation) -> Option<Made> {
        if self.made.is_empty() {
            return None;
        }
        let mut m = self.made[which.index(self.made.len())].clone();
        let events = &mut m.req.events;
        let len = events.len();
        match variation {
            Variation::Same => {}
            Variation::ChangeData(i) => {
                let e = &mut events[i.index(len)];
                let n = n_of(e) + 100;
                e.data = Some(loom_ledger::Data::json(&json!({ "n": n })));
            }
            Variation::ChangeType(i) => {
                let e = &mut events[i.index(len)];
                let t = TYPES.iter().position(|t| *t == e.ty).unwrap();
                e.ty = TYPES[(t + 1) % TYPES.len()].to_owned();
            }
            Variation::OtherSource => {
                for e in events.iter_mut() {
                    e.source = SOURCES
                        .iter()
                        .find(|s| **s != e.source)
                        .unwrap()
                        .to_string();
                }
            }
            Variation::Subset => {
                if events.len() > 1 {
                    events.remove(0);
                }
            }
            Variation::AddNew(spec) => {
                let e = self.event(spec);
                m.req.events.push(e);
            }
            Variation::DuplicateInBatch => {
                let first = events[0].clone();
                events.push(first);
            }
        }
        Some(m)
    }

    fn make(&mut self, step: &Step, model: &Model) -> Made {
        let made = match step {
            Step::Fresh(spec) => self.fresh(spec, model),
            Step::Retry(which, variation) => match self.retry(which, variation) {
                Some(m) => m,
                None => self.fresh(
                    &AppendSpec {
                        events: vec![EvSpec {
                            stream: 0,
                            ty: 0,
                            n: 0,
                            source: 0,
                        }],
                        expected: Vec::new(),
                        dcb: None,
                    },
                    model,
                ),
            },
        };
        self.made.push(made.clone());
        made
    }
}

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
