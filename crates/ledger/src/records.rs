//! Where the event records live: packed into **segments** of consecutive positions once
//! there are enough of them, one per key in the **tail** until then.
//!
//! A catch-up reads the whole history in position order, and with one B-tree entry per event
//! most of that read was redb's cost per entry (descending into the leaf, a page handle and
//! two guards per event), not the record bytes. A segment holds up to [`SEGMENT_EVENTS`]
//! records in at most [`SEGMENT_BYTES`], so a scan pays that cost once per segment. Appends
//! still insert one tail entry per event — conditions and identity checks later in the same
//! group see them at once — and the writer moves full segments out of the tail at the end
//! of each group, inside the group's transaction ([`seal`]). Positions up to the last sealed
//! one are in segments, the rest in the tail: the two never overlap, and the boundary is
//! where the last segment ends.
//!
//! A segment (the value of the `segments` table; its key is its first position):
//!
//! ```text
//! u32           count of records (at least 1)
//! u32 × count   end of each record, counted from the start of the records
//! records       the records, each encoded as in `codec`
//! ```

use redb::{AccessGuard, ReadableTable};

use crate::error::ReadError;

mod packing;
pub(crate) use packing::{Tail, seal, store};

/// Most records in one segment, by default ([`crate::LedgerOptions::segment_events`]).
pub(crate) const SEGMENT_EVENTS: usize = 64;
/// Most records in one segment, whatever the options say.
pub(crate) const SEGMENT_EVENTS_MAX: usize = 4096;
/// Largest segment value (a record larger than this makes a segment of its own). redb keeps
/// a value this size alone in a leaf of 16 KiB (four pages) with room for the leaf's header,
/// so little of the leaf is wasted; small enough that a point lookup reads four pages, large
/// enough that a scan pays redb's cost per entry once for dozens of events.
pub(crate) const SEGMENT_BYTES: usize = 16 * 1024 - 128;

/// One segment's records, borrowed from its stored value.
#[derive(Clone, Copy)]
pub(crate) struct Segment<'a> {
    first: u64,
    ends: &'a [u8],
    records: &'a [u8],
}

impl<'a> Segment<'a> {
    /// Reads a segment's header; the records are checked as they are taken.
    pub(crate) fn parse(first: u64, bytes: &'a [u8]) -> Result<Segment<'a>, ReadError> {
        let corrupt = |message: &str| ReadError::Corrupt {
            position: first,
            message: format!("segment starting at position {first}: {message}"),
        };
        let count = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corrupt("shorter than its header"))?;
        if count == 0 {
            return Err(corrupt("holds no records"));
        }
        let table_end = 4 + count * 4;
        if bytes.len() < table_end {
            return Err(corrupt("shorter than its table of record ends"));
        }
        Ok(Segment {
            first,
            ends: &bytes[4..table_end],
            records: &bytes[table_end..],
        })
    }

    /// How many records it holds.
    pub(crate) fn len(&self) -> u64 {
        (self.ends.len() / 4) as u64
    }

    /// Its first position.
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// Its last position.
    pub(crate) fn last(&self) -> u64 {
        self.first + self.len() - 1
    }

    /// Whether `position` is in it.
    pub(crate) fn covers(&self, position: u64) -> bool {
        position >= self.first && position <= self.last()
    }

    fn end(&self, i: usize) -> usize {
        u32::from_le_bytes(self.ends[i * 4..i * 4 + 4].try_into().expect("4 bytes")) as usize
    }

    /// The record at `position` (which it must cover).
    pub(crate) fn record(&self, position: u64) -> Result<&'a [u8], ReadError> {
        let i = (position - self.first) as usize;
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        self.records
            .get(start..self.end(i))
            .ok_or_else(|| ReadError::Corrupt {
                position,
                message: format!(
                    "the segment starting at position {} has a record outside its bytes",
                    self.first
                ),
            })
    }
}

/// Builds a segment's value from its records, in position order.
pub(crate) fn build(records: &[&[u8]]) -> Vec<u8> {
    let total: usize = records.iter().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(4 + 4 * records.len() + total);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    let mut end = 0usize;
    for r in records {
        end += r.len();
        out.extend_from_slice(&(end as u32).to_le_bytes());
    }
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

/// A stored value held with its key: a segment and its first position, or a tail record and
/// its position.
type Held<'t> = (u64, AccessGuard<'t, &'static [u8]>);

/// The two tables that hold the records, borrowed from a read or write transaction.
pub(crate) struct Events<'t, Tl, Sg> {
    pub(crate) tail: &'t Tl,
    pub(crate) segments: &'t Sg,
}

impl<Tl, Sg> Clone for Events<'_, Tl, Sg> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Tl, Sg> Copy for Events<'_, Tl, Sg> {}

impl<'t, Tl, Sg> Events<'t, Tl, Sg>
where
    Tl: ReadableTable<u64, &'static [u8]>,
    Sg: ReadableTable<u64, &'static [u8]>,
{
    /// The last position in a segment (0: none is sealed).
    pub(crate) fn sealed(&self) -> Result<u64, ReadError> {
        match self.segments.last()? {
            None => Ok(0),
            Some((k, v)) => Ok(Segment::parse(k.value(), v.value())?.last()),
        }
    }

    /// The last position stored (0: none).
    pub(crate) fn head(&self) -> Result<u64, ReadError> {
        match self.tail.last()? {
            Some((k, _)) => Ok(k.value()),
            None => self.sealed(),
        }
    }

    /// The segment holding `position`, if one does.
    fn segment_of(&self, position: u64) -> Result<Option<Held<'t>>, ReadError> {
        let Some(item) = self.segments.range(..=position)?.next_back() else {
            return Ok(None);
        };
        let (k, v) = item?;
        let first = k.value();
        if !Segment::parse(first, v.value())?.covers(position) {
            return Ok(None);
        }
        Ok(Some((first, v)))
    }

    /// Calls `f` with the record at `position`, if there is one.
    pub(crate) fn with<R>(
        &self,
        position: u64,
        f: impl FnOnce(&[u8]) -> Result<R, ReadError>,
    ) -> Result<Option<R>, ReadError> {
        if let Some(v) = self.tail.get(position)? {
            return f(v.value()).map(Some);
        }
        match self.segment_of(position)? {
            None => Ok(None),
            Some((first, v)) => f(Segment::parse(first, v.value())?.record(position)?).map(Some),
        }
    }

    /// Calls `f(position, record)` for each position in `lo..=hi`, in increasing order (or
    /// decreasing when `backwards`), until it returns `false`. With `ahead`, each segment's
    /// successor is loaded into the CPU cache while it is read (see [`touch`]): for callers
    /// that read only a few bytes of each record.
    pub(crate) fn scan(
        &self,
        lo: u64,
        hi: u64,
        backwards: bool,
        ahead: bool,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, ReadError>,
    ) -> Result<(), ReadError> {
        if lo > hi {
            return Ok(());
        }
        let sealed = self.sealed()?;
        let (tail_lo, sealed_hi) = (lo.max(sealed.saturating_add(1)), hi.min(sealed));
        if backwards {
            if self.scan_tail(tail_lo, hi, true, &mut f)? {
                self.scan_segments(lo, sealed_hi, true, ahead, &mut f)?;
            }
        } else if self.scan_segments(lo, sealed_hi, false, ahead, &mut f)? {
            self.scan_tail(tail_lo, hi, false, &mut f)?;
        }
        Ok(())
    }

    /// [`Events::scan`] over the tail; `false` when `f` asked to stop.
    fn scan_tail<F>(&self, lo: u64, hi: u64, backwards: bool, f: &mut F) -> Result<bool, ReadError>
    where
        F: FnMut(u64, &[u8]) -> Result<bool, ReadError>,
    {
        if lo > hi {
            return Ok(true);
        }
        let range = self.tail.range(lo..=hi)?;
        let iter: Box<dyn Iterator<Item = _>> = if backwards {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        for item in iter {
            let (k, v) = item?;
            if !f(k.value(), v.value())? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// [`Events::scan`] over the segments, for positions in `lo..=hi` (all sealed); `false`
    /// when `f` asked to stop.
    fn scan_segments<F>(
        &self,
        lo: u64,
        hi: u64,
        backwards: bool,
        ahead: bool,
        f: &mut F,
    ) -> Result<bool, ReadError>
    where
        F: FnMut(u64, &[u8]) -> Result<bool, ReadError>,
    {
        if lo > hi {
            return Ok(true);
        }
        // Start at the segment that holds `lo`.
        let start = match self.segments.range(..=lo)?.next_back() {
            Some(item) => item?.0.value(),
            None => lo,
        };
        let range = self.segments.range(start..=hi)?;
        let iter: Box<dyn Iterator<Item = _>> = if backwards {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut iter = iter.peekable();
        while let Some(item) = iter.next() {
            let (k, v) = item?;
            let s = Segment::parse(k.value(), v.value())?;
            let (from, to) = (s.first().max(lo), s.last().min(hi));
            if from > to {
                // Only a damaged table has a segment here that misses the window.
                return Err(ReadError::Corrupt {
                    position: s.first(),
                    message: format!(
                        "the segment starting at position {} ends at {}, before position {from}",
                        s.first(),
                        s.last()
                    ),
                });
            }
            // While this segment's records are read, its successor's bytes are loaded a
            // slice per record (see `touch`).
            let ahead = match iter.peek() {
                Some(Ok((_, next))) if ahead => next.value(),
                _ => &[],
            };
            let n = (to - from + 1) as usize;
            let chunk = ahead.len().div_ceil(n);
            for k in 0..=to - from {
                let at = k as usize * chunk;
                touch(ahead.get(at..(at + chunk).min(ahead.len())).unwrap_or(&[]));
                let p = if backwards { to - k } else { from + k };
                if !f(p, s.record(p)?)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Reads one byte of every cache line of `bytes`. A sparse scan calls it on the next
/// segment's bytes, a slice per record of the current one: then those lines are loaded while
/// the current records are read, instead of the scan waiting for memory at each record it
/// comes to. A fold that reads only a few attributes of each record (a count, say) otherwise
/// waits once per record, and was 1.4× slower than a fold that checks every byte (whose check
/// walks each record's lines in order, which the hardware prefetcher follows). A full read
/// goes without: these are plain loads, which hold up the instructions behind them until they
/// are done, and they made it slower (docs/design.md, "Sparse reads").
fn touch(bytes: &[u8]) {
    let x = bytes.iter().step_by(64).fold(0u8, |x, b| x ^ b);
    std::hint::black_box(x);
}

/// Looks records up by increasing position, as an index walk names them. Positions close
/// together are mostly in the segment the cursor already holds; in the tail, stepping one
/// range iterator forward over the few records in between costs much less than a B-tree
/// descent (`get`) for each.
pub(crate) struct Cursor<'t, Tl, Sg> {
    events: Events<'t, Tl, Sg>,
    sealed: u64,
    hi: u64,
    backwards: bool,
    /// The segment looked at last, and the positions it holds.
    segment: Option<Held<'t>>,
    span: std::ops::RangeInclusive<u64>,
    range: Option<redb::Range<'t, u64, &'static [u8]>>,
    /// The tail entry the range stands on.
    current: Option<Held<'t>>,
}

/// The span of no segment: position 0, which no event has.
const NO_SPAN: std::ops::RangeInclusive<u64> = 0..=0;

/// How many tail records the cursor steps over before it seeks instead.
const MAX_STEPS: usize = 16;

impl<'t, Tl, Sg> Cursor<'t, Tl, Sg>
where
    Tl: ReadableTable<u64, &'static [u8]>,
    Sg: ReadableTable<u64, &'static [u8]>,
{
    pub(crate) fn new(
        events: Events<'t, Tl, Sg>,
        hi: u64,
        backwards: bool,
    ) -> Result<Self, ReadError> {
        Ok(Cursor {
            sealed: events.sealed()?,
            events,
            hi,
            backwards,
            segment: None,
            span: NO_SPAN,
            range: None,
            current: None,
        })
    }

    /// The record at `position`, if there is one.
    pub(crate) fn get(&mut self, position: u64) -> Result<Option<&[u8]>, ReadError> {
        if position <= self.sealed {
            // The held segment's bounds were read when it was taken: no parse to test them.
            if !self.span.contains(&position) {
                self.segment = self.events.segment_of(position)?;
                self.span = match &self.segment {
                    Some((first, v)) => *first..=Segment::parse(*first, v.value())?.last(),
                    None => NO_SPAN,
                };
            }
            return match &self.segment {
                None => Ok(None),
                Some((first, v)) => Segment::parse(*first, v.value())?
                    .record(position)
                    .map(Some),
            };
        }
        if self.backwards {
            self.current = self.events.tail.get(position)?.map(|v| (position, v));
            return Ok(self.current.as_ref().map(|(_, v)| v.value()));
        }
        let mut steps = 0;
        loop {
            match &self.current {
                Some((p, _)) if *p == position => break,
                // Already past it (positions asked for out of order): look it up.
                Some((p, _)) if *p > position => {
                    self.range = None;
                    self.current = self.events.tail.get(position)?.map(|v| (position, v));
                    break;
                }
                _ => {}
            }
            if self.range.is_none() || steps >= MAX_STEPS {
                self.range = Some(self.events.tail.range(position..=self.hi)?);
                steps = 0;
            }
            match self.range.as_mut().and_then(Iterator::next) {
                None => {
                    self.range = None;
                    self.current = None;
                    break;
                }
                Some(item) => {
                    let (k, v) = item?;
                    self.current = Some((k.value(), v));
                    steps += 1;
                }
            }
        }
        Ok(self
            .current
            .as_ref()
            .filter(|(p, _)| *p == position)
            .map(|(_, v)| v.value()))
    }
}

#[cfg(test)]
mod tests;
