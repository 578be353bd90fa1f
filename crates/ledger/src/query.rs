//! Running selectors over the index tables, inside a read or a write transaction.

use std::iter::Peekable;

use redb::{ReadableTable, StorageError as RedbStorageError};

use crate::codec;
use crate::error::{ReadError, StorageError};
use crate::records::{Cursor, Events};
use crate::view::EventBatch;
#[cfg(feature = "bench")]
use crate::view::EventRecord;
use loom_core::CompiledSelector;
use loom_core::EventView;
use loom_core::StoredEvent;

type PosIter<'a> = Box<dyn Iterator<Item = Result<u64, RedbStorageError>> + 'a>;

/// Bounds and direction of a read: positions in `(after, before)`, at most `limit` events.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) after: u64,
    pub(crate) before: u64,
    pub(crate) limit: usize,
    pub(crate) backwards: bool,
}

impl Window {
    fn lo(&self) -> u64 {
        self.after.saturating_add(1)
    }
    fn hi(&self) -> u64 {
        self.before.saturating_sub(1)
    }
    fn is_empty(&self) -> bool {
        self.lo() > self.hi() || self.limit == 0
    }
}

/// How much of each record a read looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Every byte (decoding or checking it).
    Whole,
    /// A few attributes ([`EventRecord`]): a scan loads the records' memory ahead of time
    /// (see `records::Events::scan`).
    Sparse,
}

/// The tables a selector reads, borrowed from a read or write transaction.
pub(crate) struct View<'t, Ev, Sg, St, Si, En, Ty> {
    pub(crate) events: Events<'t, Ev, Sg>,
    pub(crate) streams: &'t St,
    pub(crate) stream_index: &'t Si,
    pub(crate) entity_index: &'t En,
    pub(crate) type_index: &'t Ty,
}

impl<'t, Ev, Sg, St, Si, En, Ty> View<'t, Ev, Sg, St, Si, En, Ty>
where
    Ev: ReadableTable<u64, &'static [u8]>,
    Sg: ReadableTable<u64, &'static [u8]>,
    St: ReadableTable<&'static str, (u64, u64)>,
    Si: ReadableTable<(u64, u64), u64>,
    En: ReadableTable<(&'static str, u64), ()>,
    Ty: ReadableTable<(&'static str, &'static str, u64), ()>,
{
    /// Events matching `sel` inside `w`, in `w`'s direction. `entities` lists every
    /// registered entity (used when a selector names types but no entity).
    pub(crate) fn select(
        &self,
        sel: &CompiledSelector,
        w: Window,
        entities: &[String],
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let mut out = Vec::new();
        self.select_each(sel, w, entities, |e| {
            out.push(e);
            true
        })?;
        Ok(out)
    }

    /// Calls `f` for each matching event until it returns `false` or the window is done.
    pub(crate) fn select_each(
        &self,
        sel: &CompiledSelector,
        w: Window,
        entities: &[String],
        mut f: impl FnMut(StoredEvent) -> bool,
    ) -> Result<(), ReadError> {
        self.select_records(
            sel,
            w,
            entities,
            Reading::Whole,
            |position, bytes, decoded| {
                let e = match decoded {
                    Some(e) => e,
                    None => decode(position, bytes)?,
                };
                Ok(f(e))
            },
        )
    }

    #[cfg(feature = "bench")]
    /// Calls `f` with a view of each matching event, borrowed from the stored record (no copy).
    pub(crate) fn select_views(
        &self,
        sel: &CompiledSelector,
        w: Window,
        entities: &[String],
        mut f: impl FnMut(&EventView<'_>) -> bool,
    ) -> Result<(), ReadError> {
        self.select_records(sel, w, entities, Reading::Whole, |position, bytes, _| {
            let view = codec::decode_view(position, bytes)
                .map_err(|message| ReadError::Corrupt { position, message })?;
            Ok(f(&view))
        })
    }

    #[cfg(feature = "bench")]
    /// Calls `f` with each matching event's record, read lazily (see [`EventRecord`]).
    pub(crate) fn select_lazy(
        &self,
        sel: &CompiledSelector,
        w: Window,
        entities: &[String],
        mut f: impl FnMut(&EventRecord<'_>) -> bool,
    ) -> Result<(), ReadError> {
        self.select_records(sel, w, entities, Reading::Sparse, |position, bytes, _| {
            Ok(f(&EventRecord::new(position, bytes)?))
        })
    }

    /// The matching events, checked and copied into `batch` (emptied first).
    /// Reads the matches into `batch`, stopping once it holds `max_bytes` (after at least
    /// one event).
    pub(crate) fn select_batch(
        &self,
        sel: &CompiledSelector,
        w: Window,
        entities: &[String],
        max_bytes: usize,
        batch: &mut EventBatch,
    ) -> Result<(), ReadError> {
        batch.clear();
        self.select_records(sel, w, entities, Reading::Whole, |position, bytes, _| {
            // Checked here, so that views of the batch cannot fail later.
            batch.push(position, bytes)?;
            Ok(batch.bytes() < max_bytes)
        })
    }

    /// The core of every selector read: calls `f(position, record, decoded)` for each match
    /// (`decoded` is the event when a filter had to decode it anyway) until `f` returns
    /// `false` or the window is done.
    fn select_records(
        &self,
        sel: &CompiledSelector,
        w: Window,
        entities: &[String],
        reading: Reading,
        mut f: impl FnMut(u64, &[u8], Option<StoredEvent>) -> Result<bool, ReadError>,
    ) -> Result<(), ReadError> {
        if w.is_empty() {
            return Ok(());
        }
        let mut taken = 0;
        // Filters (JSONPath) need the decoded event; `None` means "matches, not decoded".
        let filter =
            |position: u64, bytes: &[u8]| -> Result<Option<Option<StoredEvent>>, ReadError> {
                if !sel.has_filters() {
                    return Ok(Some(None));
                }
                let e = decode(position, bytes)?;
                Ok(sel.matches_filters(&e).then_some(Some(e)))
            };
        let plain = sel.entity().is_none() && sel.types().is_empty();
        if plain {
            // Every event: walk the records themselves.
            let ahead = reading == Reading::Sparse;
            return self
                .events
                .scan(w.lo(), w.hi(), w.backwards, ahead, |position, bytes| {
                    let Some(decoded) = filter(position, bytes)? else {
                        return Ok(true);
                    };
                    taken += 1;
                    Ok(f(position, bytes, decoded)? && taken < w.limit)
                });
        }
        // Each candidate: its header checked (keys and types the index does not cover), then
        // the filters, then `f`.
        let mut visit = |position: u64, bytes: &[u8]| -> Result<Visit, ReadError> {
            let header = codec::decode_header(bytes)
                .map_err(|message| ReadError::Corrupt { position, message })?;
            if !sel.matches_header(header.ty, header.subject) {
                return Ok(Visit::Passed);
            }
            let Some(decoded) = filter(position, bytes)? else {
                return Ok(Visit::Passed);
            };
            taken += 1;
            Ok(if f(position, bytes, decoded)? && taken < w.limit {
                Visit::Taken
            } else {
                Visit::Done
            })
        };
        if w.backwards || sel.entity().is_none() {
            let positions = self.positions(sel, w, entities)?;
            self.visit_positions(positions, w, &mut visit, |_| false)?;
            return Ok(());
        }
        // Forwards, the index is read until its candidates turn out dense (most records of
        // the stretch they span), and then the records themselves are walked, which costs
        // half of looking each one up through the index (docs/design.md, "Reading in
        // bulk"); the walk goes back to the index where matches thin out again.
        let mut lo = w.lo();
        loop {
            let from = Window { after: lo - 1, ..w };
            let mut probe = Density::default();
            let positions = self.positions(sel, from, entities)?;
            let Some(at) = self.visit_positions(positions, from, &mut visit, |p| probe.dense(p))?
            else {
                return Ok(());
            };
            lo = at;
            let (mut done, mut sparse_at) = (false, None);
            let mut probe = Density::default();
            let ahead = reading == Reading::Sparse;
            self.events
                .scan(lo, w.hi(), false, ahead, |position, bytes| {
                    let visited = visit(position, bytes)?;
                    if visited == Visit::Done {
                        done = true;
                        return Ok(false);
                    }
                    if probe.sparse(visited == Visit::Taken) {
                        sparse_at = Some(position + 1);
                        return Ok(false);
                    }
                    Ok(true)
                })?;
            match sparse_at {
                Some(at) if !done => lo = at,
                _ => return Ok(()),
            }
        }
    }

    /// Visits the records at `positions` in turn until `visit` says the read is done
    /// (`Ok(None)`) or `switch(position)` says the rest is to be walked (`Ok(Some(next))`).
    fn visit_positions(
        &self,
        positions: Merge<'_>,
        w: Window,
        visit: &mut impl FnMut(u64, &[u8]) -> Result<Visit, ReadError>,
        mut switch: impl FnMut(u64) -> bool,
    ) -> Result<Option<u64>, ReadError> {
        let mut cursor = Cursor::new(self.events, w.hi(), w.backwards)?;
        for p in positions {
            let position = p?;
            let Some(bytes) = cursor.get(position)? else {
                return Err(ReadError::Corrupt {
                    position,
                    message: "an index names a position with no event".into(),
                });
            };
            if visit(position, bytes)? == Visit::Done {
                return Ok(None);
            }
            if switch(position) {
                return Ok(Some(position + 1));
            }
        }
        Ok(None)
    }

    /// Positions (in window order) of the candidates for `sel`, from the best index.
    fn positions(
        &self,
        sel: &CompiledSelector,
        w: Window,
        entities: &[String],
    ) -> Result<Merge<'_>, StorageError> {
        let (lo, hi) = (w.lo(), w.hi());
        let mut sources: Vec<PosIter<'_>> = Vec::new();
        match sel.entity() {
            Some(entity) if !sel.keys().is_empty() => {
                for key in sel.keys() {
                    let subject = format!("{entity}/{key}");
                    let Some(stream) = self.streams.get(subject.as_str())? else {
                        continue;
                    };
                    let (id, _) = stream.value();
                    let range = self.stream_index.range((id, 0)..=(id, u64::MAX))?;
                    let it = range.map(|r| r.map(|(_, v)| v.value()));
                    let it: PosIter<'_> = if w.backwards {
                        Box::new(it.rev())
                    } else {
                        Box::new(it)
                    };
                    // Stream positions grow with revision: skip to the window, stop after it.
                    let backwards = w.backwards;
                    let it = it
                        .skip_while(move |p| {
                            p.as_ref()
                                .is_ok_and(|&p| if backwards { p > hi } else { p < lo })
                        })
                        .take_while(move |p| p.as_ref().map_or(true, |&p| p >= lo && p <= hi));
                    sources.push(Box::new(it));
                }
            }
            Some(entity) if !sel.types().is_empty() => {
                for ty in sel.types() {
                    sources.push(self.type_source(entity, ty, lo, hi, w.backwards)?);
                }
            }
            Some(entity) => {
                let range = self.entity_index.range((entity, lo)..=(entity, hi))?;
                let it = range.map(|r| r.map(|(k, _)| k.value().1));
                sources.push(if w.backwards {
                    Box::new(it.rev())
                } else {
                    Box::new(it)
                });
            }
            None => {
                for entity in entities {
                    for ty in sel.types() {
                        sources.push(self.type_source(entity, ty, lo, hi, w.backwards)?);
                    }
                }
            }
        }
        Ok(Merge {
            sources: sources.into_iter().map(Iterator::peekable).collect(),
            backwards: w.backwards,
        })
    }

    fn type_source(
        &self,
        entity: &str,
        ty: &str,
        lo: u64,
        hi: u64,
        backwards: bool,
    ) -> Result<PosIter<'_>, StorageError> {
        let range = self.type_index.range((entity, ty, lo)..=(entity, ty, hi))?;
        let it = range.map(|r| r.map(|(k, _)| k.value().2));
        Ok(if backwards {
            Box::new(it.rev())
        } else {
            Box::new(it)
        })
    }
}

pub(crate) fn decode(position: u64, bytes: &[u8]) -> Result<StoredEvent, ReadError> {
    Ok(decode_view(position, bytes)?.to_stored()?)
}

pub(crate) fn decode_view(position: u64, bytes: &[u8]) -> Result<EventView<'_>, ReadError> {
    codec::decode_view(position, bytes).map_err(|message| ReadError::Corrupt { position, message })
}

/// What became of a candidate record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    /// Not a match.
    Passed,
    /// A match, and the read goes on.
    Taken,
    /// The read is done (the limit, or the caller stopped it).
    Done,
}

/// Whether a forward read's candidates are dense enough to walk the records instead of
/// looking them up through an index, judged over the last [`Density::SPAN`] candidates
/// (index) or records (walk).
#[derive(Default)]
struct Density {
    first: Option<u64>,
    seen: u64,
    matched: u64,
}

impl Density {
    /// Candidates (index) or records (walk) per judgement.
    const SPAN: u64 = 1024;

    /// Index: after `SPAN` candidates, whether they were at least half the positions they
    /// span.
    fn dense(&mut self, position: u64) -> bool {
        let first = *self.first.get_or_insert(position);
        self.seen += 1;
        if self.seen < Self::SPAN {
            return false;
        }
        let dense = position - first < 2 * self.seen;
        *self = Density::default();
        dense
    }

    /// Walk: after `SPAN` records, whether fewer than a quarter matched.
    fn sparse(&mut self, matched: bool) -> bool {
        self.seen += 1;
        self.matched += u64::from(matched);
        if self.seen < Self::SPAN {
            return false;
        }
        let sparse = self.matched * 4 < self.seen;
        *self = Density::default();
        sparse
    }
}

/// Merges position iterators that are each sorted in the same direction.
pub(crate) struct Merge<'a> {
    sources: Vec<Peekable<PosIter<'a>>>,
    backwards: bool,
}

impl Iterator for Merge<'_> {
    type Item = Result<u64, RedbStorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, u64)> = None;
        for (i, s) in self.sources.iter_mut().enumerate() {
            match s.peek() {
                None => {}
                Some(Err(_)) => return s.next(),
                Some(Ok(p)) => {
                    let better = match best {
                        None => true,
                        Some((_, b)) => {
                            if self.backwards {
                                *p > b
                            } else {
                                *p < b
                            }
                        }
                    };
                    if better {
                        best = Some((i, *p));
                    }
                }
            }
        }
        let (i, _) = best?;
        self.sources[i].next()
    }
}
