//! The reference model the ledger is compared with: a few lines of obviously-correct
//! in-memory code that decides each append and answers each read.

use super::ops::*;
use super::*;

/// One stored event, as the model keeps it and as reads are compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rec {
    pub(super) position: u64,
    pub(super) revision: u64,
    pub(super) source: String,
    pub(super) id: String,
    pub(super) subject: String,
    pub(super) ty: String,
    pub(super) n: i64,
}

impl Rec {
    pub(super) fn from_stored(e: &StoredEvent) -> Rec {
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

    pub(super) fn entity_key(&self) -> (&str, &str) {
        self.subject.split_once('/').expect("a stream name")
    }
}

/// What happened to one append, comparable between ledger and model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Done(AppendOutcome),
    Conflict(Conflict),
    Invalid,
}

/// The ledger's answer as a [`Decision`]; identity conflicts keep only whether they are about
/// different content or a partly stored batch (the wording of `reason` is not the point).
pub(super) fn decision(result: Result<AppendOutcome, AppendError>) -> Decision {
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
pub(super) struct Model {
    pub(super) log: Vec<Rec>,
    pub(super) ids: HashMap<(String, String), u64>,
    pub(super) streams: BTreeMap<String, u64>,
}

pub(super) fn n_of(e: &Event) -> i64 {
    e.data_json().expect("JSON data")["n"]
        .as_i64()
        .expect("data.n")
}

impl Model {
    pub(super) fn head(&self) -> u64 {
        self.log.len() as u64
    }

    pub(super) fn revision(&self, subject: &str) -> u64 {
        self.streams.get(subject).copied().unwrap_or(0)
    }

    pub(super) fn at(&self, position: u64) -> &Rec {
        &self.log[position as usize - 1]
    }

    pub(super) fn append(&mut self, req: &AppendRequest, selector: Option<&SelSpec>) -> Decision {
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
    pub(super) fn selector(&self) -> Selector {
        Selector {
            entity: self.entity.map(|e| ENTITIES[e].to_owned()),
            keys: self.keys.iter().map(|&k| KEYS[k].to_owned()).collect(),
            types: self.types.iter().map(|&t| TYPES[t].to_owned()).collect(),
            data: self.data_gt.map(|k| format!("$[?$.n > {k}]")),
            meta: None,
        }
    }

    pub(super) fn matches(&self, r: &Rec) -> bool {
        let (entity, key) = r.entity_key();
        self.entity.is_none_or(|e| ENTITIES[e] == entity)
            && (self.keys.is_empty() || self.keys.iter().any(|&k| KEYS[k] == key))
            && (self.types.is_empty() || self.types.iter().any(|&t| TYPES[t] == r.ty))
            && self.data_gt.is_none_or(|k| r.n > k)
    }
}
