//! Backups and checks of a ledger's database.
//!
//! [`Ledger::backup_to`] writes a consistent copy of everything the database holds (events,
//! indexes, registry, the engine's catalog and projection states, the cluster's log sequence)
//! into a new redb file, from one read snapshot: writers go on meanwhile, and the copy is the
//! ledger exactly as it was at one commit. Every acknowledged event up to the snapshot's head
//! is in it. The copy is a ledger file like any other: placed as `ledger.redb` in an empty data
//! directory it opens as a single node, or as a cluster node that goes on with the cluster's log
//! after the copy's log sequence.
//!
//! [`Ledger::verify`] reads the whole database and checks what must hold: positions gapless,
//! every record readable, and the identity, stream and index tables in agreement with the
//! events.

use std::collections::HashMap;

use redb::{Durability, Key, TableDefinition, Value, WriteTransaction};

use super::*;

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackupInfo {
    /// The last position in it.
    pub head: u64,
    /// The cluster's log sequence it has applied (0 for a single node).
    pub log_sequence: u64,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// What a check found (when it found nothing wrong).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// Events read, positions 1..=head.
    pub events: u64,
    /// Streams.
    pub streams: u64,
    /// Entities registered.
    pub entities: u64,
    /// The cluster's log sequence applied (0 for a single node).
    pub log_sequence: u64,
}

fn copy<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<(), StorageError> {
    let source = from.open_table(table)?;
    let mut target = to.open_table(table)?;
    for row in source.iter()? {
        let (k, v) = row?;
        target.insert(k.value(), v.value())?;
    }
    Ok(())
}

fn corrupt(message: String) -> ReadError {
    ReadError::Corrupt {
        position: 0,
        message,
    }
}

impl Ledger {
    /// Writes a consistent copy of the database to `file`, which must not exist; returns what
    /// it holds. Appends and other writes go on while it runs.
    pub fn backup_to(&self, file: &Path) -> Result<BackupInfo, StorageError> {
        let io = |e: std::io::Error| StorageError(Box::new(redb::Error::Io(e)));
        if file.exists() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists already", file.display()),
            )));
        }
        let snapshot = self.store.begin_read()?;
        let copy_result = (|| {
            let db = Database::builder()
                .create(file)
                .map_err(|e| StorageError(Box::new(e.into())))?;
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            copy(&snapshot, &txn, EVENTS)?;
            copy(&snapshot, &txn, SEGMENTS)?;
            copy(&snapshot, &txn, IDS)?;
            copy(&snapshot, &txn, STREAMS)?;
            copy(&snapshot, &txn, STREAM_INDEX)?;
            copy(&snapshot, &txn, ENTITY_INDEX)?;
            copy(&snapshot, &txn, TYPE_INDEX)?;
            copy(&snapshot, &txn, TIME_INDEX)?;
            copy(&snapshot, &txn, ENTITIES)?;
            copy(&snapshot, &txn, META)?;
            copy(&snapshot, &txn, ENGINE_INBOX)?;
            for table in CATALOG_TABLES {
                copy(&snapshot, &txn, named(table))?;
            }
            copy(&snapshot, &txn, PROJECTION_STATES)?;
            copy(&snapshot, &txn, PROJECTION_CHECKPOINTS)?;
            copy(&snapshot, &txn, PROJECTION_NOTES)?;
            copy(&snapshot, &txn, REACTOR_CHECKPOINTS)?;
            txn.commit()?;
            Ok::<_, StorageError>(())
        })();
        if let Err(e) = copy_result {
            let _ = std::fs::remove_file(file);
            return Err(e);
        }
        let (head, log_sequence) = {
            let tail = snapshot.open_table(EVENTS)?;
            let segments = snapshot.open_table(SEGMENTS)?;
            let head = Events {
                tail: &tail,
                segments: &segments,
            }
            .head()
            .map_err(|e| StorageError(Box::new(redb::Error::Corrupted(e.to_string()))))?;
            let meta = snapshot.open_table(META)?;
            let log_sequence = meta.get(META_LOG_SEQUENCE)?.map_or(0, |v| v.value());
            (head, log_sequence)
        };
        let bytes = std::fs::metadata(file).map_err(io)?.len();
        Ok(BackupInfo {
            head,
            log_sequence,
            bytes,
        })
    }

    /// Reads every event and index from one snapshot and checks that they agree: positions
    /// 1..=head all present and readable, each event's identity, stream revision and index
    /// rows pointing back at it, and no index row more than there are events.
    pub fn verify(&self) -> Result<Verified, ReadError> {
        let txn = self.store.begin_read()?;
        let tail = txn.open_table(EVENTS)?;
        let segments = txn.open_table(SEGMENTS)?;
        let events = Events {
            tail: &tail,
            segments: &segments,
        };
        let ids = txn.open_table(IDS)?;
        let streams = txn.open_table(STREAMS)?;
        let stream_index = txn.open_table(STREAM_INDEX)?;
        let head = events.head()?;
        let mut expected = 1;
        let mut revisions: HashMap<String, u64> = HashMap::new();
        let mut failure = None;
        events.scan(1, head, false, false, |position, record| {
            let fail = |message: String| ReadError::Corrupt { position, message };
            if position != expected {
                return Err(fail(format!(
                    "position {expected} is missing (the next record is at {position})"
                )));
            }
            expected += 1;
            let e = crate::codec::decode_view(position, record).map_err(fail)?;
            match ids.get((e.source, e.id))? {
                Some(p) if p.value() == position => {}
                other => {
                    return Err(fail(format!(
                        "the identity ({:?}, {:?}) points at {:?}, not at this event",
                        e.source,
                        e.id,
                        other.map(|p| p.value())
                    )));
                }
            }
            let revision = revisions.entry(e.subject.to_owned()).or_insert(0);
            *revision += 1;
            if e.revision != *revision {
                return Err(fail(format!(
                    "revision {} in stream {:?}, which had {} events before it",
                    e.revision,
                    e.subject,
                    *revision - 1
                )));
            }
            let Some(stream) = streams.get(e.subject)? else {
                return Err(fail(format!(
                    "stream {:?} is not in the streams table",
                    e.subject
                )));
            };
            let (stream_id, _) = stream.value();
            match stream_index.get((stream_id, e.revision))? {
                Some(p) if p.value() == position => Ok(true),
                other => {
                    failure = Some(fail(format!(
                        "the stream index of {:?} at revision {} points at {:?}",
                        e.subject,
                        e.revision,
                        other.map(|p| p.value())
                    )));
                    Ok(false)
                }
            }
        })?;
        if let Some(f) = failure {
            return Err(f);
        }
        if expected != head + 1 {
            return Err(corrupt(format!(
                "the head is {head} but only positions up to {} were found",
                expected - 1
            )));
        }
        for row in streams.iter()? {
            let (subject, value) = row?;
            let (_, current) = value.value();
            let seen = revisions.get(subject.value()).copied().unwrap_or(0);
            if current != seen {
                return Err(corrupt(format!(
                    "stream {:?} says revision {current}, but it has {seen} events",
                    subject.value()
                )));
            }
        }
        let counted = [
            ("identity", ids.len()?),
            ("stream index", stream_index.len()?),
            ("entity index", txn.open_table(ENTITY_INDEX)?.len()?),
            ("type index", txn.open_table(TYPE_INDEX)?.len()?),
        ];
        for (table, rows) in counted {
            if rows != head {
                return Err(corrupt(format!(
                    "the {table} has {rows} rows for {head} events"
                )));
            }
        }
        let meta = txn.open_table(META)?;
        Ok(Verified {
            events: head,
            streams: streams.len()?,
            entities: txn.open_table(ENTITIES)?.len()?,
            log_sequence: meta.get(META_LOG_SEQUENCE)?.map_or(0, |v| v.value()),
        })
    }
}
