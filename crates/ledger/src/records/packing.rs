//! Writing the records: a group's records stored straight into full segments
//! ([`store`]), and the tail packed into segments ([`seal`]).

use redb::{AccessGuard, ReadableTable, Table};

use super::{Events, SEGMENT_BYTES, build};
use crate::error::ReadError;

/// Stores the records of positions `first..` (in order), leaving the tables as inserting
/// them into the tail and then [`seal`]ing would, without the round trip through the tail:
/// the records that fill segments — after the tail's records, which a first segment starts
/// with — go straight into `segments`, the rest into the tail.
pub(crate) fn store(
    tail: &mut Table<'_, u64, &'static [u8]>,
    segments: &mut Table<'_, u64, &'static [u8]>,
    first: u64,
    records: &[&[u8]],
    max_events: usize,
) -> Result<(), ReadError> {
    let sealed = Events {
        tail: &*tail,
        segments: &*segments,
    }
    .sealed()?;
    let end = match tail.last()? {
        Some((k, _)) => k.value(),
        None => sealed,
    };
    if end + 1 != first {
        return Err(ReadError::Corrupt {
            position: first,
            message: format!("records from position {first} would follow a ledger ending at {end}"),
        });
    }
    // Less than a segment after every group: their sizes first, as most groups (a few small
    // events) fill no segment and then need no more of the tail.
    let mut held_lens: Vec<usize> = Vec::new();
    let (mut count, mut size, mut held_fills) = (0, 4, false);
    for item in tail.range(sealed + 1..)? {
        let (k, v) = item?;
        let expected = sealed + 1 + held_lens.len() as u64;
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
        let len = v.value().len();
        size += 4 + len;
        count += 1;
        if (count > 1 && size > SEGMENT_BYTES) || count >= max_events || size >= SEGMENT_BYTES {
            held_fills = true;
            break;
        }
        held_lens.push(len);
    }
    if held_fills {
        // A tail that fills a segment by itself (an upgrade from a format before segments
        // that was cut short): the way of the append-by-append path, which packs it a
        // bounded number of segments per group.
        for (i, record) in records.iter().enumerate() {
            tail.insert(first + i as u64, *record)?;
        }
        seal(tail, segments, records.len() + 1, max_events)?;
        return Ok(());
    }
    let lens = held_lens.iter().copied();
    let full = pack(lens.chain(records.iter().map(|r| r.len())), max_events);
    let packed: u64 = full.iter().map(|&n| n as u64).sum();
    if packed > 0 {
        // The tail's records that go into segments, copied, as the tail changes below.
        let held_packed = end.min(sealed + packed);
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
    // The first position not in a segment.
    let start = sealed + 1 + packed;
    let packed_held = end.min(sealed + packed);
    if packed_held > sealed {
        tail.retain_in(sealed + 1..=packed_held, |_, _| false)?;
    }
    for (i, record) in records.iter().enumerate() {
        let position = first + i as u64;
        if position >= start {
            tail.insert(position, *record)?;
        }
    }
    Ok(())
}

/// How records of lengths `lens` fill segments, by the rule of [`seal`]: a segment is full
/// at `max_events` records, or before a record that would take it past [`SEGMENT_BYTES`] (a
/// larger record is a segment alone). The number of records of each full segment, in order.
fn pack(lens: impl Iterator<Item = usize>, max_events: usize) -> Vec<usize> {
    let mut full = Vec::new();
    let (mut count, mut size) = (0, 4);
    for len in lens {
        let grown = size + 4 + len;
        if count > 0 && grown > SEGMENT_BYTES {
            full.push(count);
            (count, size) = (0, 4 + 4 + len);
        } else {
            size = grown;
        }
        count += 1;
        if count >= max_events || size >= SEGMENT_BYTES {
            full.push(count);
            (count, size) = (0, 4);
        }
    }
    full
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
