//! Replaying the durable log into the database when it is opened.

use super::*;

/// What a replay did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Replayed {
    /// Events applied again.
    pub(crate) events: u64,
    /// Where the log's next record goes: after the last record applied, 0 if none was.
    pub(crate) end: u64,
}

/// Applies the groups of the durable log that `db` does not hold yet and commits them
/// durably. Runs every time the database is opened, before anyone else uses it.
pub(crate) fn replay(
    db: &Database,
    log: &dyn LogReplay,
    segment_events: usize,
) -> Result<Replayed, StorageError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut replayed = Replayed::default();
    {
        let mut t = Tables::open(&txn)?;
        let head = t.records().head().map_err(corrupt)?;
        let mut next_stream_id = t.meta.get(META_NEXT_STREAM_ID)?.map_or(1, |v| v.value());
        let mut last_recorded = t.time_index.last()?.map_or(i64::MIN, |(k, _)| k.value());
        let end = log.replay_after(head, &mut |record| {
            for (i, (stream_id, bytes)) in record.events.iter().enumerate() {
                let position = record.first + i as u64;
                let e = codec::decode_view(position, bytes).map_err(|message| {
                    StorageError(Box::new(redb::Error::Corrupted(format!(
                        "the write-ahead log's event at position {position}: {message}"
                    ))))
                })?;
                let keys = Keys {
                    source: e.source,
                    id: e.id,
                    subject: e.subject,
                    ty: e.ty,
                };
                index(&mut t, position, *stream_id, e.revision, keys, bytes)?;
                replayed.events += 1;
            }
            last_recorded = last_recorded.max(record.recorded);
            t.time_index.insert(last_recorded, record.last())?;
            next_stream_id = next_stream_id.max(record.next_stream_id);
            Ok(())
        })?;
        let Some(end) = end else {
            return Ok(Replayed::default());
        };
        replayed.end = end;
        t.meta.insert(META_NEXT_STREAM_ID, next_stream_id)?;
        t.seal(replayed.events, segment_events)?;
    }
    txn.commit()?;
    Ok(replayed)
}
