//! The write-ahead log: what makes a group commit durable (docs/design.md, "Write-ahead log").
//!
//! The writer applies a group to redb in a transaction that commits with `Durability::None`
//! (visible, not yet on disk), and before that commit appends the group's accepted events to
//! this file as one record and `fdatasync`s it: one sequential write instead of the
//! ~100 scattered pages a durable redb commit of the same group writes. Every
//! [`wal_checkpoint_bytes`](crate::LedgerOptions::wal_checkpoint_bytes) or so of log, one group
//! commits with `Durability::Immediate` instead (a checkpoint: everything before it is in the
//! redb file), and the log starts again at offset 0, overwriting itself.
//!
//! Whenever the database is opened (at start and after an I/O error) the records that redb
//! does not hold yet are applied again and committed durably (`writer::replay`) before anyone
//! reads. That needs room in the redb file, also when the disk is full (a full disk is what
//! makes redb fail and the ledger reopen it): a [`Reserve`] file of allocated space sits
//! beside the log, is given back for such a replay, and while it cannot be allocated again
//! appends are refused as "disk full" before they touch anything.
//!
//! ```text
//! record  := u32 magic | u32 payload length | u32 CRC-32 of payload | payload
//! payload := u64 first position | u32 count | i64 recorded µs | u64 next stream id
//!            | count × (u64 stream id | u32 length | stored record, see `codec`)
//! ```
//!
//! Positions are gapless, so a record holds positions `first .. first + count`. After a
//! restart at offset 0 the file still holds older records further on; they are told apart by
//! their positions, which are all below the checkpoint's, and a torn or overwritten record by
//! its checksum.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const MAGIC: u32 = 0x4C4F_4F4D; // "LOOM"
const HEADER: usize = 12;

/// File name of the log inside the data directory.
pub const WAL_FILE: &str = "ledger.wal";
/// File name of the space reserved for replaying the log on a full disk.
pub const RESERVE_FILE: &str = "ledger.reserve";

/// Allocated disk space, given back to the file system when a replay on a full disk needs it.
#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    bytes: u64,
    present: AtomicBool,
}

impl Reserve {
    /// The reserve at `path`, of `bytes`; [`ensure`](Self::ensure) allocates it.
    pub(crate) fn new(path: PathBuf, bytes: u64) -> Reserve {
        Reserve {
            path,
            bytes,
            present: AtomicBool::new(false),
        }
    }

    /// Makes sure the space is allocated; an error (the disk is full) when it cannot be.
    pub(crate) fn ensure(&self) -> std::io::Result<()> {
        if self.present.load(Ordering::Acquire) {
            return Ok(());
        }
        let allocate = || -> std::io::Result<()> {
            let file = File::options()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, self.bytes) {
                Ok(()) => {}
                // A file system without fallocate: write the space out instead.
                Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                    let zeros = vec![0u8; 1 << 20];
                    let mut at = 0;
                    while at < self.bytes {
                        let n = (self.bytes - at).min(zeros.len() as u64) as usize;
                        file.write_all_at(&zeros[..n], at)?;
                        at += n as u64;
                    }
                }
                Err(e) => return Err(e.into()),
            }
            file.sync_all()
        };
        match allocate() {
            Ok(()) => {
                self.present.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                // Same kind (a full disk stays recognisable), and the reason.
                Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot set aside {} KiB for replaying the write-ahead log ({}): {e}; \
                         appends are refused until there is room (free disk space, or lower \
                         the checkpoint interval, `loom serve --wal-checkpoint`)",
                        self.bytes >> 10,
                        self.path.display()
                    ),
                ))
            }
        }
    }

    /// Gives the space back; whether there was any to give.
    pub(crate) fn release(&self) -> bool {
        self.present.store(false, Ordering::Release);
        std::fs::remove_file(&self.path).is_ok()
    }
}

/// The open log and where the next record goes.
pub(crate) struct Wal {
    file: File,
    reserve: Arc<Reserve>,
    offset: u64,
    checkpoint_bytes: u64,
    /// The last append failed, so the bytes at `offset` may hold a whole record of a group
    /// that was refused (the write can have completed before its fsync failed). Until an
    /// append overwrites them the log must not start over: after a restart they could be
    /// read back behind newer records, with positions those records reuse.
    tail_dirty: bool,
}

impl Wal {
    /// Opens (creating if needed) the log at `path`; the next record goes to `offset`: right
    /// after the last record that opening the database replayed, or 0 if it replayed none.
    pub(crate) fn open(
        path: &Path,
        offset: u64,
        checkpoint_bytes: u64,
        reserve: Arc<Reserve>,
    ) -> std::io::Result<Wal> {
        let existed = path.exists();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed {
            // The new name must survive a crash too.
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(Wal {
            file,
            reserve,
            offset,
            checkpoint_bytes,
            tail_dirty: false,
        })
    }

    /// Whether the next group should commit durably to redb (and restart the log).
    pub(crate) fn wants_checkpoint(&self) -> bool {
        self.offset >= self.checkpoint_bytes && !self.tail_dirty
    }

    /// Before a group touches the database: an error (the disk is full) when the reserve for a
    /// replay is not there and cannot be allocated again.
    pub(crate) fn ready(&self) -> std::io::Result<()> {
        self.reserve.ensure()
    }

    /// Appends one group's record and waits until it is on disk. On error the offset does not
    /// move, so the next record overwrites whatever part of this one was written.
    /// `group` must be [`finish`](GroupRecord::finish)ed.
    pub(crate) fn append(&mut self, group: &GroupRecord) -> std::io::Result<()> {
        let written = self
            .file
            .write_all_at(&group.bytes, self.offset)
            .and_then(|()| self.file.sync_data());
        self.tail_dirty = written.is_err();
        written?;
        self.offset += group.bytes.len() as u64;
        Ok(())
    }

    /// After a durable redb commit that holds everything logged so far: the next record goes
    /// to offset 0 (not while a failed append's bytes are still at the offset).
    pub(crate) fn restart(&mut self) {
        if !self.tail_dirty {
            self.offset = 0;
        }
    }

    /// Whether records were appended since the last restart.
    pub(crate) fn has_records(&self) -> bool {
        self.offset > 0
    }
}

/// One group's accepted events, built by the writer while it applies them: the whole record,
/// header included, so that it is written as it stands.
pub(crate) struct GroupRecord {
    bytes: Vec<u8>,
    count: u32,
}

/// Where the payload's count and next stream id sit in a [`GroupRecord`]'s bytes.
const COUNT_AT: usize = HEADER + 8;
const NEXT_STREAM_ID_AT: usize = HEADER + 20;

impl GroupRecord {
    pub(crate) fn new(first: u64, recorded: i64) -> GroupRecord {
        let mut bytes = Vec::with_capacity(4096);
        bytes.extend_from_slice(&[0; HEADER]); // magic, length, checksum: `finish`
        bytes.extend_from_slice(&first.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&recorded.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        GroupRecord { bytes, count: 0 }
    }

    /// Adds the next position's event.
    pub(crate) fn push(&mut self, stream_id: u64, record: &[u8]) {
        self.bytes.extend_from_slice(&stream_id.to_le_bytes());
        self.bytes
            .extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(record);
        self.count += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Fills in the count and the stream-id counter after the group, then the header.
    pub(crate) fn finish(&mut self, next_stream_id: u64) {
        self.bytes[COUNT_AT..COUNT_AT + 4].copy_from_slice(&self.count.to_le_bytes());
        self.bytes[NEXT_STREAM_ID_AT..NEXT_STREAM_ID_AT + 8]
            .copy_from_slice(&next_stream_id.to_le_bytes());
        let (header, payload) = self.bytes.split_at_mut(HEADER);
        header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[8..12].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    }
}

/// A record read back.
pub(crate) struct Record<'a> {
    pub(crate) first: u64,
    pub(crate) recorded: i64,
    pub(crate) next_stream_id: u64,
    /// (stream id, stored record) per position from `first` on.
    pub(crate) events: Vec<(u64, &'a [u8])>,
    /// The offset in the log right after this record.
    pub(crate) end: u64,
}

impl Record<'_> {
    pub(crate) fn last(&self) -> u64 {
        self.first + self.events.len() as u64 - 1
    }
}

/// The records from the start of `log` up to the first one that is torn, overwritten or not a
/// record at all.
pub(crate) fn records(log: &[u8]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    let mut rest = log;
    while rest.len() >= HEADER {
        let word = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().expect("4 bytes"));
        let (magic, len, crc) = (word(0), word(4) as usize, word(8));
        if magic != MAGIC || rest.len() - HEADER < len {
            break;
        }
        let payload = &rest[HEADER..HEADER + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        rest = &rest[HEADER + len..];
        let Some(record) = parse(payload, (log.len() - rest.len()) as u64) else {
            break;
        };
        out.push(record);
    }
    out
}

/// A record's payload; `end` is the offset right after the record.
fn parse(payload: &[u8], end: u64) -> Option<Record<'_>> {
    fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
        let (head, tail) = b.split_first_chunk::<N>()?;
        *b = tail;
        Some(*head)
    }
    let mut b = payload;
    let first = u64::from_le_bytes(take(&mut b)?);
    let count = u32::from_le_bytes(take(&mut b)?);
    let recorded = i64::from_le_bytes(take(&mut b)?);
    let next_stream_id = u64::from_le_bytes(take(&mut b)?);
    if count == 0 || first == 0 {
        return None;
    }
    let mut events = Vec::with_capacity((count as usize).min(b.len() / 12));
    for _ in 0..count {
        let stream_id = u64::from_le_bytes(take(&mut b)?);
        let len = u32::from_le_bytes(take(&mut b)?) as usize;
        let record = b.get(..len)?;
        b = &b[len..];
        events.push((stream_id, record));
    }
    b.is_empty().then_some(Record {
        first,
        recorded,
        next_stream_id,
        events,
        end,
    })
}

/// The `records` (of a log, in order) that come after `head` (the last position redb holds), in order.
/// Records at or below `head` are skipped: older ones the log was overwriting, or ones a
/// durable commit of someone else already carried into redb. A record that starts beyond the
/// next position means a gap — events that were acknowledged and are nowhere — and is an
/// error rather than something to skip.
pub(crate) fn after(records: Vec<Record<'_>>, head: u64) -> Result<Vec<Record<'_>>, String> {
    let mut next = head + 1;
    let mut out = Vec::new();
    for record in records {
        if record.last() < next {
            continue;
        }
        if record.first != next {
            return Err(format!(
                "the write-ahead log holds positions {}..={} but the database ends at {}: \
                 acknowledged events between them are missing from both. Restore the data \
                 directory from a backup; or, to open what the database holds and lose the \
                 log's events, move {WAL_FILE} out of the directory",
                record.first,
                record.last(),
                next - 1
            ));
        }
        next = record.last() + 1;
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished group of `n` events from position `first`.
    fn group(first: u64, n: usize) -> GroupRecord {
        let mut g = GroupRecord::new(first, 42);
        for i in 0..n {
            g.push(
                i as u64 + 1,
                format!("event {}", first + i as u64).as_bytes(),
            );
        }
        g.finish(9);
        g
    }

    /// Its bytes, as the log holds them.
    fn record(first: u64, n: usize) -> Vec<u8> {
        group(first, n).bytes
    }

    fn spans(records: &[Record<'_>]) -> Vec<(u64, u64)> {
        records.iter().map(|r| (r.first, r.last())).collect()
    }

    #[test]
    fn records_read_back_with_their_events() {
        let log = [record(1, 2), record(3, 1)].concat();
        let read = records(&log);
        assert_eq!(spans(&read), [(1, 2), (3, 3)]);
        assert_eq!(read[1].end as usize, log.len());
        assert_eq!(read[0].events, [(1, &b"event 1"[..]), (2, &b"event 2"[..])]);
        assert_eq!((read[1].recorded, read[1].next_stream_id), (42, 9));
    }

    #[test]
    fn a_torn_or_corrupt_record_ends_the_log() {
        let whole = [record(1, 2), record(3, 2)].concat();
        for cut in 1..record(3, 2).len() {
            let torn = &whole[..whole.len() - cut];
            assert_eq!(spans(&records(torn)), [(1, 2)], "cut {cut}");
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(spans(&records(&flipped)), [(1, 2)]);
        assert!(records(&[0u8; 64]).is_empty());
    }

    #[test]
    fn replay_skips_what_redb_holds_and_stale_records_after_a_restart() {
        // A restarted log: new records 11..=13 at the start, then the tail of the older
        // cycle (positions 5..=10) that they did not overwrite.
        let log = [record(11, 2), record(13, 1), record(5, 3), record(8, 3)].concat();
        assert_eq!(
            spans(&after(records(&log), 10).unwrap()),
            [(11, 12), (13, 13)]
        );
        assert_eq!(spans(&after(records(&log), 12).unwrap()), [(13, 13)]);
        assert!(after(records(&log), 13).unwrap().is_empty());
        let err = after(records(&log), 9).map(|_| ()).unwrap_err();
        assert!(
            err.contains("11..=12") && err.contains("ends at 9") && err.contains(WAL_FILE),
            "{err}"
        );
    }

    #[test]
    fn the_reserve_is_allocated_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESERVE_FILE);
        let reserve = Reserve::new(path.clone(), 1 << 20);
        reserve.ensure().unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        assert!(meta.blocks() * 512 >= 1 << 20, "allocated, not sparse");
        assert!(reserve.release());
        assert!(!path.exists());
        assert!(!reserve.release(), "nothing left to give");
        reserve.ensure().unwrap();
        assert!(path.exists());
    }

    /// A log in `dir` that wants a checkpoint after every byte, with a small reserve.
    fn small_log(dir: &Path) -> Wal {
        let reserve = Arc::new(Reserve::new(dir.join(RESERVE_FILE), 4096));
        Wal::open(&dir.join(WAL_FILE), 0, 1, reserve).unwrap()
    }

    #[test]
    fn appends_land_at_the_offset_and_restart_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WAL_FILE);
        let mut wal = small_log(dir.path());
        wal.ready().unwrap();
        assert!(!wal.wants_checkpoint());
        for first in [1, 3] {
            wal.append(&group(first, 2)).unwrap();
        }
        assert!(wal.wants_checkpoint());
        let log = std::fs::read(&path).unwrap();
        assert_eq!(spans(&after(records(&log), 0).unwrap()), [(1, 2), (3, 4)]);
        wal.restart();
        wal.append(&group(5, 1)).unwrap();
        let log = std::fs::read(&path).unwrap();
        assert_eq!(spans(&after(records(&log), 4).unwrap()), [(5, 5)]);
    }

    #[test]
    fn after_a_failed_append_the_log_does_not_start_over_until_it_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WAL_FILE);
        let mut wal = small_log(dir.path());
        wal.append(&group(1, 1)).unwrap();
        // The file goes read-only under the log: the next append fails.
        let writable = std::mem::replace(&mut wal.file, File::open(&path).unwrap());
        assert!(wal.append(&group(2, 1)).is_err());
        assert!(!wal.wants_checkpoint(), "no checkpoint over a dirty tail");
        wal.restart();
        assert!(wal.has_records(), "no restart over a dirty tail");
        // The next append goes to the same offset and cleans the tail.
        wal.file = writable;
        wal.append(&group(2, 1)).unwrap();
        assert!(wal.wants_checkpoint());
        wal.restart();
        assert!(!wal.has_records());
        let log = std::fs::read(&path).unwrap();
        assert_eq!(spans(&after(records(&log), 0).unwrap()), [(1, 1), (2, 2)]);
    }
}
