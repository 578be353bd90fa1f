//! A commit group as the durable log carries it: one record of the group's accepted events
//! (with their stream ids), its recorded time and the stream-id counter after it, framed with
//! a length and a CRC-32 so that a torn or overwritten record is recognised.
//!
//! ```text
//! record  := u32 magic | u32 payload length | u32 CRC-32 of payload | payload
//! payload := u64 first position | u32 count | i64 recorded µs | u64 next stream id
//!            | count × (u64 stream id | u32 length | stored record, see `codec`)
//! ```
//!
//! Positions are gapless, so a record holds positions `first .. first + count`.

use super::wal::{WAL_FILE, WAL_FILES};

const MAGIC: u32 = 0x4C4F_4F4D; // "LOOM"
const HEADER: usize = 12;
/// Bytes of a record's header (magic, length, checksum): zeroed, they end a replay there.
pub(crate) const RECORD_HEADER: usize = HEADER;

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

    /// The record as it is written, header included (once [`finish`](Self::finish)ed).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
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

/// At least the bytes `event` takes in a group record (its stored record, the stream id and
/// length in front of it), so that a group can be kept under a log's largest message before
/// it is built.
pub(crate) fn record_size_bound(event: &loom_core::Event) -> usize {
    use loom_core::{Data, ExtensionValue};
    let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let data = match &event.data {
        Some(Data::Json(raw)) => raw.get().len(),
        Some(Data::Text(text)) => text.len(),
        Some(Data::Binary(bytes)) => bytes.len(),
        None => 0,
    };
    let extensions: usize = event
        .extensions
        .iter()
        .map(|(name, value)| {
            name.len()
                + 16
                + match value {
                    ExtensionValue::String(s) => s.len(),
                    _ => 8,
                }
        })
        .sum();
    // Fixed-size fields and length prefixes of the stored record, with room to spare.
    256 + event.id.len()
        + event.source.len()
        + event.ty.len()
        + event.subject.len()
        + optional(&event.time)
        + optional(&event.datacontenttype)
        + optional(&event.dataschema)
        + data
        + extensions
}

/// A group read back from a log.
pub(crate) struct LoggedGroup<'a> {
    pub(crate) first: u64,
    pub(crate) recorded: i64,
    pub(crate) next_stream_id: u64,
    /// (stream id, stored record) per position from `first` on.
    pub(crate) events: Vec<(u64, &'a [u8])>,
    /// The offset in the log right after this record.
    pub(crate) end: u64,
}

impl LoggedGroup<'_> {
    pub(crate) fn last(&self) -> u64 {
        self.first + self.events.len() as u64 - 1
    }
}

/// The records from the start of `log` up to the first one that is torn, overwritten or not a
/// record at all.
pub(crate) fn groups(log: &[u8]) -> Vec<LoggedGroup<'_>> {
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
fn parse(payload: &[u8], end: u64) -> Option<LoggedGroup<'_>> {
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
    b.is_empty().then_some(LoggedGroup {
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
pub(crate) fn after(
    records: Vec<LoggedGroup<'_>>,
    head: u64,
) -> Result<Vec<LoggedGroup<'_>>, String> {
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
                 log's events, move {WAL_FILE} and {} out of the directory",
                record.first,
                record.last(),
                next - 1,
                WAL_FILES[1]
            ));
        }
        next = record.last() + 1;
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A finished group of `n` events from position `first`.
    pub(crate) fn group(first: u64, n: usize) -> GroupRecord {
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

    pub(crate) fn spans(records: &[LoggedGroup<'_>]) -> Vec<(u64, u64)> {
        records.iter().map(|r| (r.first, r.last())).collect()
    }

    #[test]
    fn records_read_back_with_their_events() {
        let log = [record(1, 2), record(3, 1)].concat();
        let read = groups(&log);
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
            assert_eq!(spans(&groups(torn)), [(1, 2)], "cut {cut}");
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(spans(&groups(&flipped)), [(1, 2)]);
        assert!(groups(&[0u8; 64]).is_empty());
    }

    #[test]
    fn replay_skips_what_redb_holds_and_stale_records_after_a_restart() {
        // A restarted log: new records 11..=13 at the start, then the tail of the older
        // cycle (positions 5..=10) that they did not overwrite.
        let log = [record(11, 2), record(13, 1), record(5, 3), record(8, 3)].concat();
        assert_eq!(
            spans(&after(groups(&log), 10).unwrap()),
            [(11, 12), (13, 13)]
        );
        assert_eq!(spans(&after(groups(&log), 12).unwrap()), [(13, 13)]);
        assert!(after(groups(&log), 13).unwrap().is_empty());
        let err = after(groups(&log), 9).map(|_| ()).unwrap_err();
        assert!(
            err.contains("11..=12") && err.contains("ends at 9") && err.contains(WAL_FILE),
            "{err}"
        );
    }
}
