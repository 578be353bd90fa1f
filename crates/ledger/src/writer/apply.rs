//! One append inside the group's transaction: identity, expected revisions, the DCB
//! condition, then the events written and indexed.

use std::collections::HashMap;

use super::*;
use loom_core::Event;

/// Checks one append's identity and conditions against the transaction's current state and,
/// if they hold, writes it. A refusal writes nothing; a storage error aborts the group.
pub(crate) fn apply_one(
    t: &mut Tables<'_>,
    g: &mut Group,
    p: &Pending,
) -> Result<Result<AppendOutcome, AppendError>, StorageError> {
    if let Some(answer) = check_one(t, g, p)? {
        return Ok(answer);
    }
    let req = &p.req;
    // Every check passed: write.
    let mut appended = Vec::with_capacity(req.events.len());
    for e in &req.events {
        let position = g.head + 1;
        let (stream_id, revision) =
            next_in_stream(t, &mut g.next_stream_id, &HashMap::new(), &e.subject)?;
        codec::encode(revision, g.recorded, e, &mut g.buf);
        let keys = Keys {
            source: &e.source,
            id: &e.id,
            subject: &e.subject,
            ty: &e.ty,
        };
        index(t, position, stream_id, revision, keys, &g.buf)?;
        if let Some(log) = &mut g.log {
            log.push(stream_id, &g.buf);
        }
        g.head = position;
        appended.push(appended_event(e, position, revision));
    }
    Ok(Ok(AppendOutcome {
        events: appended,
        last_position: g.head,
        duplicate: false,
    }))
}

/// An append's checks, in the order the docs promise (identity first): `Some(answer)` when it
/// is answered without writing (an idempotent retry, or a refusal), `None` when it may write.
fn check_one(
    t: &mut Tables<'_>,
    g: &Group,
    p: &Pending,
) -> Result<Option<Result<AppendOutcome, AppendError>>, StorageError> {
    let req = &p.req;
    // Identity: a batch stored before as a whole is an idempotent success.
    match check_identity(t, req) {
        Ok(Some(outcome)) => return Ok(Some(Ok(outcome))),
        Ok(None) => {}
        Err(Refusal::Conflict(c)) => return Ok(Some(Err(AppendError::Conflict(c)))),
        Err(Refusal::Read(e)) => return read_failure(e),
        Err(Refusal::Storage(e)) => return Err(e),
    }
    if let Some(refused) = check_revisions(t, req, &HashMap::new())? {
        return Ok(Some(refused));
    }
    if let Some((selector, pre)) = &p.condition {
        let mut positions = pre.matched.clone();
        let wanted = MAX_REPORTED_MATCHES - positions.len().min(MAX_REPORTED_MATCHES);
        if wanted > 0 {
            let view = View {
                events: t.records(),
                streams: &t.streams,
                stream_index: &t.stream_index,
                entity_index: &t.entity_index,
                type_index: &t.type_index,
            };
            let window = Window {
                after: pre.through,
                before: u64::MAX,
                limit: wanted,
                backwards: false,
            };
            match view.select(selector, window, &g.entities) {
                Ok(found) => positions.extend(found.iter().map(|e| e.position)),
                Err(e) => return read_failure(e),
            }
        }
        if !positions.is_empty() {
            return Ok(Some(Err(AppendError::Conflict(Conflict::EventsMatched {
                positions,
            }))));
        }
    }
    Ok(None)
}

/// Whether a group can be planned ([`plan_group`]): no append after the first has a DCB
/// condition (its selector would have to be matched against the earlier appends' events
/// before they are written; expected revisions are checked against the plan's streams).
pub(crate) fn plannable(group: &[Pending]) -> bool {
    group
        .iter()
        .skip(1)
        .all(|p| p.condition.is_none() && p.req.conditions.fail_if_events_match.is_none())
}

/// The first part of a [`plannable`] group: each append's checks, then its events numbered
/// and encoded into the group's log record, without writing them — the writer makes the
/// record durable while it writes them from the record (`replay::index_logged`). The
/// answers are [`apply_one`]'s: later appends see the earlier ones' identities and stream
/// revisions through `planned` and `streams`.
pub(crate) fn plan_group<'p>(
    t: &mut Tables<'_>,
    g: &mut Group,
    group: &'p [Pending],
) -> Result<Vec<Result<AppendOutcome, AppendError>>, StorageError> {
    let mut planned = Planned::new();
    // Streams the group met so far: their id and last revision.
    let mut streams: HashMap<&'p str, (u64, u64)> = HashMap::new();
    let mut results = Vec::with_capacity(group.len());
    for (i, p) in group.iter().enumerate() {
        let answered = if i == 0 {
            check_one(t, g, p)?
        } else {
            match check_identity_with(t, &p.req, &planned) {
                Ok(None) => check_revisions(t, &p.req, &streams)?,
                Ok(Some(outcome)) => Some(Ok(outcome)),
                Err(Refusal::Conflict(c)) => Some(Err(AppendError::Conflict(c))),
                Err(Refusal::Read(e)) => return read_failure(e),
                Err(Refusal::Storage(e)) => return Err(e),
            }
        };
        if let Some(answer) = answered {
            results.push(answer);
            continue;
        }
        let log = g.log.as_mut().expect("a planned group is logged");
        let mut appended = Vec::with_capacity(p.req.events.len());
        for e in &p.req.events {
            let position = g.head + 1;
            let (stream_id, revision) =
                next_in_stream(t, &mut g.next_stream_id, &streams, &e.subject)?;
            streams.insert(&e.subject, (stream_id, revision));
            // Only appends after this one look identities up in the plan.
            if i + 1 < group.len() {
                planned.insert((&e.source, &e.id), (position, revision, e));
            }
            codec::encode(revision, g.recorded, e, &mut g.buf);
            log.push(stream_id, &g.buf);
            g.head = position;
            appended.push(appended_event(e, position, revision));
        }
        results.push(Ok(AppendOutcome {
            events: appended,
            last_position: g.head,
            duplicate: false,
        }));
    }
    Ok(results)
}

/// The stream id and revision the next event of `subject` gets: after what the group's plan
/// gave it (`streams`), else after what the table holds, else a new stream's first.
fn next_in_stream(
    t: &Tables<'_>,
    next_stream_id: &mut u64,
    streams: &HashMap<&str, (u64, u64)>,
    subject: &str,
) -> Result<(u64, u64), StorageError> {
    if let Some(&(id, revision)) = streams.get(subject) {
        return Ok((id, revision + 1));
    }
    Ok(match t.streams.get(subject)? {
        Some(v) => {
            let (id, revision) = v.value();
            (id, revision + 1)
        }
        None => {
            let id = *next_stream_id;
            *next_stream_id += 1;
            (id, 1)
        }
    })
}

/// What an append's answer says of one of its events.
fn appended_event(e: &Event, position: u64, revision: u64) -> AppendedEvent {
    AppendedEvent {
        source: e.source.clone(),
        id: e.id.clone(),
        subject: e.subject.clone(),
        position,
        revision,
    }
}

/// An append's expected revisions against the streams as the group's plan left them
/// (`streams`) or, for the others, as stored: the refusal of the first that does not hold.
fn check_revisions(
    t: &Tables<'_>,
    req: &AppendRequest,
    streams: &HashMap<&str, (u64, u64)>,
) -> Result<Option<Result<AppendOutcome, AppendError>>, StorageError> {
    for (subject, expected) in &req.conditions.expected_revisions {
        let actual = match streams.get(subject.as_str()) {
            Some(&(_, revision)) => revision,
            None => t.streams.get(subject.as_str())?.map_or(0, |v| v.value().1),
        };
        if !expected.admits(actual) {
            return Ok(Some(Err(AppendError::Conflict(Conflict::Revision {
                stream: subject.clone(),
                expected: *expected,
                actual,
            }))));
        }
    }
    Ok(None)
}

/// Writes one event (`record`, its stored encoding) and its index entries.
pub(crate) fn index(
    t: &mut Tables<'_>,
    position: u64,
    stream_id: u64,
    revision: u64,
    keys: Keys<'_>,
    record: &[u8],
) -> Result<(), redb::StorageError> {
    t.tail = None;
    t.events.insert(position, record)?;
    index_keys(t, position, stream_id, revision, keys)
}

/// The index entries of the event at `position` (its record stored elsewhere).
fn index_keys(
    t: &mut Tables<'_>,
    position: u64,
    stream_id: u64,
    revision: u64,
    keys: Keys<'_>,
) -> Result<(), redb::StorageError> {
    let mut entries = Entries::with_capacity(1);
    entries.push(position, stream_id, revision, keys);
    entries.write_stream_index(&mut t.stream_index)?;
    entries.write_others(
        &mut t.ids,
        &mut t.streams,
        &mut t.entity_index,
        &mut t.type_index,
    )
}

/// The index entries of some events, the single place that says which entries an event has.
pub(crate) struct Entries<'a> {
    ids: Vec<((&'a str, &'a str), u64)>,
    /// Each stream's (id, revision); once [`sort`](Self::sort)ed, only its last revision.
    streams: Vec<(&'a str, (u64, u64))>,
    stream_index: Vec<((u64, u64), u64)>,
    entity_index: Vec<(&'a str, u64)>,
    type_index: Vec<(&'a str, &'a str, u64)>,
}

impl<'a> Entries<'a> {
    pub(crate) fn with_capacity(n: usize) -> Entries<'a> {
        Entries {
            ids: Vec::with_capacity(n),
            streams: Vec::with_capacity(n),
            stream_index: Vec::with_capacity(n),
            entity_index: Vec::with_capacity(n),
            type_index: Vec::with_capacity(n),
        }
    }

    /// The entries of the event at `position`, revision `revision` of stream `stream_id`.
    pub(crate) fn push(&mut self, position: u64, stream_id: u64, revision: u64, keys: Keys<'a>) {
        let entity = split_subject(keys.subject).map_or("", |(entity, _)| entity);
        self.ids.push(((keys.source, keys.id), position));
        self.streams.push((keys.subject, (stream_id, revision)));
        self.stream_index.push(((stream_id, revision), position));
        self.entity_index.push((entity, position));
        self.type_index.push((entity, keys.ty, position));
    }

    /// Each table's entries in its key order (a B-tree takes them faster so: each leaf is
    /// visited once, while it is hot), and each stream's last revision alone.
    pub(crate) fn sort(&mut self) {
        self.ids.sort_unstable();
        self.streams
            .sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.1.cmp(&a.1.1)));
        self.streams.dedup_by_key(|(subject, _)| *subject);
        self.stream_index.sort_unstable();
        self.entity_index.sort_unstable();
        self.type_index.sort_unstable();
    }

    pub(crate) fn write_stream_index(
        &self,
        table: &mut Table<'_, (u64, u64), u64>,
    ) -> Result<(), redb::StorageError> {
        for (key, position) in &self.stream_index {
            table.insert(key, position)?;
        }
        Ok(())
    }

    /// The entries of every index but the stream index.
    pub(crate) fn write_others(
        &self,
        ids: &mut Table<'_, (&'static str, &'static str), u64>,
        streams: &mut Table<'_, &'static str, (u64, u64)>,
        entity_index: &mut Table<'_, (&'static str, u64), ()>,
        type_index: &mut Table<'_, (&'static str, &'static str, u64), ()>,
    ) -> Result<(), redb::StorageError> {
        for (key, position) in &self.ids {
            ids.insert(key, position)?;
        }
        for (subject, at) in &self.streams {
            streams.insert(subject, at)?;
        }
        for key in &self.entity_index {
            entity_index.insert(key, ())?;
        }
        for key in &self.type_index {
            type_index.insert(key, ())?;
        }
        Ok(())
    }
}

/// A read error met while writing, as a storage error (a record that does not decode is
/// corruption).
pub(crate) fn corrupt(e: ReadError) -> StorageError {
    match e {
        ReadError::Storage(e) => e,
        other => StorageError(Box::new(redb::Error::Corrupted(other.to_string()))),
    }
}

/// A stored record that does not decode is reported as a storage failure of the group.
pub(crate) fn read_failure<T>(e: ReadError) -> Result<T, StorageError> {
    match e {
        ReadError::Storage(s) => Err(s),
        other => Err(StorageError(Box::new(redb::Error::Io(
            std::io::Error::other(other.to_string()),
        )))),
    }
}

/// `Ok(Some(outcome))` when the whole batch is stored already with the same content;
/// `Ok(None)` when none of it is; a conflict otherwise.
pub(crate) fn check_identity(
    t: &Tables<'_>,
    req: &AppendRequest,
) -> Result<Option<AppendOutcome>, Refusal> {
    check_identity_with(t, req, &Planned::new())
}

/// Events earlier appends of the group were numbered for but are not written yet, by
/// identity: their position, revision and the event.
pub(crate) type Planned<'p> = HashMap<(&'p str, &'p str), (u64, u64, &'p Event)>;

/// [`check_identity`], with the events of the group's earlier appends in `planned` counted as
/// stored.
fn check_identity_with(
    t: &Tables<'_>,
    req: &AppendRequest,
    planned: &Planned<'_>,
) -> Result<Option<AppendOutcome>, Refusal> {
    /// Where an identity was found.
    enum Found<'a> {
        Stored(u64),
        Planned(u64, u64, &'a Event),
    }
    impl Found<'_> {
        fn position(&self) -> u64 {
            match self {
                Found::Stored(p) | Found::Planned(p, ..) => *p,
            }
        }
    }
    let mut found = Vec::with_capacity(req.events.len());
    for e in &req.events {
        let key = (e.source.as_str(), e.id.as_str());
        if let Some(&(position, revision, event)) = planned.get(&key) {
            found.push(Some(Found::Planned(position, revision, event)));
        } else if let Some(p) = t.ids.get(key)? {
            found.push(Some(Found::Stored(p.value())));
        } else {
            found.push(None);
        }
    }
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut appended = Vec::with_capacity(req.events.len());
    for (e, found_at) in req.events.iter().zip(&found) {
        let Some(found_at) = found_at else {
            // Part of the batch is new: the batch as a whole was not stored before.
            let (i, p) = found
                .iter()
                .enumerate()
                .find_map(|(i, f)| f.as_ref().map(|f| (i, f.position())))
                .expect("at least one stored");
            let other = &req.events[i];
            return Err(Refusal::Conflict(Conflict::Identity {
                event_source: other.source.clone(),
                id: other.id.clone(),
                position: p,
                reason: "the rest of this batch is not stored, so it is not a retry of the \
                         same append"
                    .into(),
            }));
        };
        let position = found_at.position();
        let (same, revision) = match found_at {
            Found::Planned(_, revision, event) => (event.same_content(e), *revision),
            Found::Stored(_) => {
                let Some(existing) = t
                    .records()
                    .with(position, |bytes| decode(position, bytes))
                    .map_err(Refusal::Read)?
                else {
                    return Err(Refusal::Read(ReadError::Corrupt {
                        position,
                        message: "the identity index names a position with no event".into(),
                    }));
                };
                (existing.event.same_content(e), existing.revision)
            }
        };
        if !same {
            return Err(Refusal::Conflict(Conflict::Identity {
                event_source: e.source.clone(),
                id: e.id.clone(),
                position,
                reason: "the stored event has different content".into(),
            }));
        }
        appended.push(appended_event(e, position, revision));
    }
    let last_position = appended.iter().map(|a| a.position).max().unwrap_or(0);
    Ok(Some(AppendOutcome {
        events: appended,
        last_position,
        duplicate: true,
    }))
}
