//! The operations of the property, as proptest generates them, and the append requests
//! made from them (fresh ones, retries of earlier ones, identity conflicts).

use super::reference::Model;
use super::*;

pub(super) const STREAMS: [&str; 5] = ["cart/1", "cart/2", "note/a", "note/a/b", "acct/x"];
pub(super) const ENTITIES: [&str; 3] = ["cart", "note", "acct"];
/// Keys selectors may name: every key in use plus one that never is.
pub(super) const KEYS: [&str; 6] = ["1", "2", "a", "a/b", "x", "zz"];
pub(super) const TYPES: [&str; 3] = ["opened", "changed", "closed"];
pub(super) const SOURCES: [&str; 2] = ["urn:s1", "https://s2.example/x"];
/// Most positions a DCB conflict reports (the ledger's documented limit).
pub(super) const MAX_REPORTED_MATCHES: usize = 10;

#[derive(Clone, Debug)]
pub(super) struct EvSpec {
    pub(super) stream: usize,
    pub(super) ty: usize,
    pub(super) n: i64,
    pub(super) source: usize,
}

#[derive(Clone, Debug)]
pub(super) enum RevSpec {
    Any,
    NoStream,
    Exists,
    /// Exact, as an offset from the stream's revision when the operation is built (0 is
    /// right unless an earlier append of the same group moved the stream).
    Exact(i8),
}

#[derive(Clone, Debug)]
pub(super) struct SelSpec {
    pub(super) entity: Option<usize>,
    pub(super) keys: Vec<usize>,
    pub(super) types: Vec<usize>,
    /// JSONPath data filter `$[?$.n > k]`.
    pub(super) data_gt: Option<i64>,
}

#[derive(Clone, Debug)]
pub(super) struct AppendSpec {
    pub(super) events: Vec<EvSpec>,
    pub(super) expected: Vec<(usize, RevSpec)>,
    /// The DCB condition, with `after` as a distance back from the head.
    pub(super) dcb: Option<(SelSpec, Option<u8>)>,
}

#[derive(Clone, Debug)]
pub(super) enum Variation {
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
pub(super) enum Step {
    Fresh(AppendSpec),
    /// A retry of an earlier request (picked from every request made so far).
    Retry(Index, Variation),
}

#[derive(Clone, Debug)]
pub(super) enum Op {
    /// One blocking append.
    One(Step),
    /// Appends queued together (the writer usually commits them as one group).
    Group(Vec<Step>),
}

pub(super) fn ev_spec() -> impl Strategy<Value = EvSpec> {
    (0..STREAMS.len(), 0..TYPES.len(), 0i64..10, 0..SOURCES.len()).prop_map(
        |(stream, ty, n, source)| EvSpec {
            stream,
            ty,
            n,
            source,
        },
    )
}

pub(super) fn rev_spec() -> impl Strategy<Value = RevSpec> {
    prop_oneof![
        1 => Just(RevSpec::Any),
        1 => Just(RevSpec::NoStream),
        1 => Just(RevSpec::Exists),
        3 => (-2i8..=1).prop_map(RevSpec::Exact),
    ]
}

pub(super) fn sel_spec() -> impl Strategy<Value = SelSpec> {
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

pub(super) fn append_spec() -> impl Strategy<Value = AppendSpec> {
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

pub(super) fn variation() -> impl Strategy<Value = Variation> {
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

pub(super) fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => append_spec().prop_map(Step::Fresh),
        2 => (any::<Index>(), variation()).prop_map(|(i, v)| Step::Retry(i, v)),
    ]
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => step().prop_map(Op::One),
        1 => proptest::collection::vec(step(), 2..=4).prop_map(Op::Group),
    ]
}

// ----- turning specs into requests -----

/// A request as made, kept for retries.
#[derive(Clone, Debug)]
pub(super) struct Made {
    pub(super) req: AppendRequest,
    pub(super) selector: Option<SelSpec>,
}

#[derive(Debug, Default)]
pub(super) struct Builder {
    pub(super) next_id: u64,
    pub(super) made: Vec<Made>,
}

impl Builder {
    pub(super) fn event(&mut self, spec: &EvSpec) -> Event {
        self.next_id += 1;
        Event::new(
            SOURCES[spec.source],
            format!("e{}", self.next_id),
            TYPES[spec.ty],
            STREAMS[spec.stream],
            json!({ "n": spec.n }),
        )
    }

    pub(super) fn fresh(&mut self, spec: &AppendSpec, model: &Model) -> Made {
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

    pub(super) fn retry(&mut self, which: &Index, variation: &Variation) -> Option<Made> {
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

    pub(super) fn make(&mut self, step: &Step, model: &Model) -> Made {
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
