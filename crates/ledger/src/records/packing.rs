//! Writing the records: a group's records stored straight into full segments
//! ([`store`]), and the tail packed into segments ([`seal`]).

use redb::{AccessGuard, ReadableTable, Table};

use super::{Events, SEGMENT_BYTES, build};
use crate::error::ReadError;

/// What a [`store`] left in the tail: the last position packed into a segment, and the
/// records after it (fewer than fill a segment) as the packing rule counts them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tail {
    sealed: u64,
    packer: Packer,
}

/// Stores the records of positions `first..` (in order), leaving the tables as inserting
/// them into the tail and then [`seal`]ing would, without the round trip through the tail:
/// the records that fill segments — after the tail's records, which a first segment starts
/// with — go straight into `segments`, the rest into the tail.
///
/// `known` is what the store before it left in the tail, when nothing else wrote the two
/// tables since (the writer keeps it while it writes group after group into one
/// transaction); without it the tail is read to find out. It is set to what this store
/// leaves.
pub(crate) fn store(
    tail: &mut Table<'_, u64, &'static [u8]>,
    segments: &mut Table<'_, u64, &'static [u8]>,
    first: u64,
    records: &[&[u8]],
    max_events: usize,
    known: &mut Option<Tail>,
) -> Result<(), ReadError> {
    let was = known.take().filter(|k| {
        k.packer.max_events == max_events && k.sealed + k.packer.count as u64 + 1 == first
    });
    let (sealed, mut packer) = match was {
        Some(k) => (k.sealed, k.packer),
        None => match read_tail(tail, segments, first, max_events)? {
            Some(found) => found,
            None => {
                // A tail that fills a segment by itself (an upgrade from a format before
                // segments that was cut short): the way of the append-by-append path, which
                // packs it a bounded number of segments per group.
                for (i, record) in records.iter().enumerate() {
                    tail.insert(first + i as u64, *record)?;
                }
                seal(tail, segments, records.len() + 1, max_events)?;
                return Ok(());
            }
        },
    };
    let end = sealed + packer.count as u64;
    let mut full: Vec<usize> = Vec::new();
    for record in records {
        packer.push(record.len(), |n| full.push(n));
    }
    let packed: u64 = full.iter().map(|&n| n as u64).sum();
    // The tail's records that go into segments.
    let held_packed = end.min(sealed + packed);
    if packed > 0 {
        // Copied, as the tail changes below.
        let held: Vec<Vec<u8>> = if held_packed > sealed {
            tail.range(sealed + 1..=held_packed)?
                .map(|item| item.map(|(_, v)| v.value().to_vec()))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let mut all = held
            .iter()
            .map(Vec::as_slice)
            .chain(records.iter().copied());
        let mut start = sealed + 1;
        for n in full {
            let segment: Vec<&[u8]> = all.by_ref().take(n).collect();
            segments.insert(start, build(&segment).as_slice())?;
            start += n as u64;
        }
    }
    if held_packed > sealed {
        tail.retain_in(sealed + 1..=held_packed, |_, _| false)?;
    }
    // The records after the last full segment.
    for (i, record) in records.iter().enumerate() {
        let position = first + i as u64;
        if position > sealed + packed {
            tail.insert(position, *record)?;
        }
    }
    *known = Some(Tail {
        sealed: sealed + packed,
        packer,
    });
    Ok(())
}

/// The last position in a segment and the packing of the tail's records after it, read from
/// the tables; `None` if those records fill a segment by themselves. An error if records
/// from `first` would not follow the ledger's last.
fn read_tail(
    tail: &Table<'_, u64, &'static [u8]>,
    segments: &Table<'_, u64, &'static [u8]>,
    first: u64,
    max_events: usize,
) -> Result<Option<(u64, Packer)>, ReadError> {
    let sealed = Events { tail, segments }.sealed()?;
    // Less than a segment after every group, so the packing of the group's records
    // continues from it; their sizes are enough unless a segment fills.
    let mut packer = Packer::new(max_events);
    let mut held = 0u64;
    let mut held_fills = false;
    for item in tail.range(sealed + 1..)? {
        let (k, v) = item?;
        let expected = sealed + 1 + held;
        if k.value() != expected {
            return Err(ReadError::Corrupt {
                position: k.value(),
                message: format!(
                    "the tail skips from position {} to {}",
                    expected - 1,
                    k.value()
                ),
            });
        }
        packer.push(v.value().len(), |_| held_fills = true);
        if held_fills {
            break;
        }
        held += 1;
    }
    let end = if held_fills {
        tail.last()?.map_or(sealed, |(k, _)| k.value())
    } else {
        sealed + held
    };
    if end + 1 != first {
        return Err(ReadError::Corrupt {
            position: first,
            message: format!("records from position {first} would follow a ledger ending at {end}"),
        });
    }
    Ok((!held_fills).then_some((sealed, packer)))
}

/// The packing rule of segments: a segment is full at `max_events` records, or before a
/// record that would take it past [`SEGMENT_BYTES`] (a larger record is a segment alone).
#[derive(Clone, Copy, Debug)]
struct Packer {
    max_events: usize,
    /// Records and bytes (with the count and ends) of the segment being filled.
    count: usize,
    size: usize,
}

impl Packer {
    fn new(max_events: usize) -> Packer {
        Packer {
            max_events,
            count: 0,
            size: 4,
        }
    }

    /// Adds a record of `len` bytes; calls `full(n)` with the number of records of each
    /// segment that fills: the one before it when it does not fit there, the one it ends.
    fn push(&mut self, len: usize, mut full: impl FnMut(usize)) {
        if self.count > 0 && self.size + 4 + len > SEGMENT_BYTES {
            full(self.count);
            (self.count, self.size) = (0, 4);
        }
        self.count += 1;
        self.size += 4 + len;
        if self.count >= self.max_events || self.size >= SEGMENT_BYTES {
            full(self.count);
            (self.count, self.size) = (0, 4);
        }
    }
}

/// Moves full segments out of the tail: starting after the last sealed position, records
/// are packed until a segment is full (`max_events` records, or the next record would take
/// it past [`SEGMENT_BYTES`]); records that do not fill one yet stay in the tail. Seals at
/// most `max_segments`, and returns how many events it moved.
pub(crate) fn seal(
    tail: &mut Table<'_, u64, &'static [u8]>,
    segments: &mut Table<'_, u64, &'static [u8]>,
    max_segments: usize,
    max_events: usize,
) -> Result<u64, ReadError> {
    let mut sealed = Events {
        tail: &*tail,
        segments: &*segments,
    }
    .sealed()?;
    let mut moved = 0;
    for _ in 0..max_segments {
        let value = {
            let mut records: Vec<AccessGuard<'_, &'static [u8]>> = Vec::new();
            let mut size = 4;
            let mut full = false;
            for item in tail.range(sealed + 1..)? {
                let (k, v) = item?;
                if k.value() != sealed + 1 + records.len() as u64 {
                    return Err(ReadError::Corrupt {
                        position: k.value(),
                        message: format!(
                            "the tail skips from position {} to {}",
                            sealed + records.len() as u64,
                            k.value()
                        ),
                    });
                }
                let grown = size + 4 + v.value().len();
                if !records.is_empty() && grown > SEGMENT_BYTES {
                    full = true;
                    break;
                }
                size = grown;
                records.push(v);
                if records.len() >= max_events || size >= SEGMENT_BYTES {
                    full = true;
                    break;
                }
            }
            if !full {
                break;
            }
            let slices: Vec<&[u8]> = records.iter().map(|v| v.value()).collect();
            build(&slices)
        };
        let count = u32::from_le_bytes(value[..4].try_into().expect("4 bytes")) as u64;
        segments.insert(sealed + 1, value.as_slice())?;
        // One pass of a cursor over the range, not a descent per key.
        tail.retain_in(sealed + 1..=sealed + count, |_, _| false)?;
        sealed += count;
        moved += count;
    }
    Ok(moved)
}
