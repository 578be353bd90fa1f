//! One append inside the group's transaction: identity, expected revisions, the DCB
//! condition, then the events written and indexed.

use super::*;

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
        let (stream_id, revision) = match t.streams.get(e.subject.as_str())? {
            Some(v) => {
                let (id, rev) = v.value();
                (id, rev + 1)
            }
            None => {
                let id = g.next_stream_id;
                g.next_stream_id += 1;
                (id, 1)
            }
        };
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
        appended.push(AppendedEvent {
            source: e.source.clone(),
            id: e.id.clone(),
            subject: e.subject.clone(),
            position,
            revision,
        });
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
    for (subject, expected) in &req.conditions.expected_revisions {
        let actual = t.streams.get(subject.as_str())?.map_or(0, |v| v.value().1);
        if !expected.admits(actual) {
            return Ok(Some(Err(AppendError::Conflict(Conflict::Revision {
                stream: subject.clone(),
                expected: *expected,
                actual,
            }))));
        }
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

/// The first part of an append that is alone in its group: its checks, then its events
/// numbered and encoded into the group's log record, without writing them — the writer
/// makes the record durable while it writes them from the record ([`super::replay`]'s
/// `apply_logged`). Same answers as [`apply_one`].
pub(crate) fn plan_one(
    t: &mut Tables<'_>,
    g: &mut Group,
    p: &Pending,
) -> Result<Result<AppendOutcome, AppendError>, StorageError> {
    if let Some(answer) = check_one(t, g, p)? {
        return Ok(answer);
    }
    let log = g.log.as_mut().expect("a planned group is logged");
    // Streams this append met so far: their id and last revision (the table does not have
    // them yet).
    let mut seen: Vec<(&str, u64, u64)> = Vec::new();
    let mut appended = Vec::with_capacity(p.req.events.len());
    for e in &p.req.events {
        let position = g.head + 1;
        let subject = e.subject.as_str();
        let (stream_id, revision) = match seen.iter_mut().find(|(s, ..)| *s == subject) {
            Some((_, id, rev)) => {
                *rev += 1;
                (*id, *rev)
            }
            None => {
                let (id, rev) = match t.streams.get(subject)? {
                    Some(v) => {
                        let (id, rev) = v.value();
                        (id, rev + 1)
                    }
                    None => {
                        let id = g.next_stream_id;
                        g.next_stream_id += 1;
                        (id, 1)
                    }
                };
                seen.push((subject, id, rev));
                (id, rev)
            }
        };
        codec::encode(revision, g.recorded, e, &mut g.buf);
        log.push(stream_id, &g.buf);
        g.head = position;
        appended.push(AppendedEvent {
            source: e.source.clone(),
            id: e.id.clone(),
            subject: e.subject.clone(),
            position,
            revision,
        });
    }
    Ok(Ok(AppendOutcome {
        events: appended,
        last_position: g.head,
        duplicate: false,
    }))
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
    t.events.insert(position, record)?;
    t.ids.insert((keys.source, keys.id), position)?;
    t.streams.insert(keys.subject, (stream_id, revision))?;
    t.stream_index.insert((stream_id, revision), position)?;
    let entity = split_subject(keys.subject).map_or("", |(entity, _)| entity);
    t.entity_index.insert((entity, position), ())?;
    t.type_index.insert((entity, keys.ty, position), ())?;
    Ok(())
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
    let mut found = Vec::new();
    for e in &req.events {
        if let Some(p) = t.ids.get((e.source.as_str(), e.id.as_str()))? {
            found.push(Some(p.value()));
        } else {
            found.push(None);
        }
    }
    let stored = found.iter().filter(|f| f.is_some()).count();
    if stored == 0 {
        return Ok(None);
    }
    let mut appended = Vec::with_capacity(req.events.len());
    for (e, position) in req.events.iter().zip(&found) {
        let Some(position) = *position else {
            // Part of the batch is new: the batch as a whole was not stored before.
            let (i, p) = found
                .iter()
                .enumerate()
                .find_map(|(i, f)| f.map(|p| (i, p)))
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
        if !existing.event.same_content(e) {
            return Err(Refusal::Conflict(Conflict::Identity {
                event_source: e.source.clone(),
                id: e.id.clone(),
                position,
                reason: "the stored event has different content".into(),
            }));
        }
        appended.push(AppendedEvent {
            source: e.source.clone(),
            id: e.id.clone(),
            subject: e.subject.clone(),
            position,
            revision: existing.revision,
        });
    }
    let last_position = appended.iter().map(|a| a.position).max().unwrap_or(0);
    Ok(Some(AppendOutcome {
        events: appended,
        last_position,
        duplicate: true,
    }))
}
