//! Reading: by position, stream, identity, selector and time, from a snapshot.

use super::*;

impl Ledger {
    pub(crate) fn read_txn(&self) -> Result<Snapshot, StorageError> {
        Ok(self.store.begin_read()?)
    }

    /// Runs `f` with a view of the index tables in one read transaction (one snapshot).
    pub(crate) fn with_view<R>(
        &self,
        f: impl FnOnce(
            &View<
                '_,
                redb::ReadOnlyTable<u64, &'static [u8]>,
                redb::ReadOnlyTable<u64, &'static [u8]>,
                redb::ReadOnlyTable<&'static str, (u64, u64)>,
                redb::ReadOnlyTable<(u64, u64), u64>,
                redb::ReadOnlyTable<(&'static str, u64), ()>,
                redb::ReadOnlyTable<(&'static str, &'static str, u64), ()>,
            >,
        ) -> Result<R, ReadError>,
    ) -> Result<R, ReadError> {
        let txn = self.read_txn()?;
        let tail = txn.open_table(EVENTS)?;
        let segments = txn.open_table(SEGMENTS)?;
        let streams = txn.open_table(STREAMS)?;
        let stream_index = txn.open_table(STREAM_INDEX)?;
        let entity_index = txn.open_table(ENTITY_INDEX)?;
        let type_index = txn.open_table(TYPE_INDEX)?;
        f(&View {
            events: Events {
                tail: &tail,
                segments: &segments,
            },
            streams: &streams,
            stream_index: &stream_index,
            entity_index: &entity_index,
            type_index: &type_index,
        })
    }

    /// Events by position, in either direction.
    pub fn read_all(&self, opts: ReadOptions) -> Result<Vec<StoredEvent>, ReadError> {
        self.read(&Selector::all().compile()?, opts)
    }

    /// Events matching a selector, in either direction, using indexes where the selector
    /// names entity, keys or types.
    pub fn read(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| v.select(selector, opts.window(), &entities))
    }

    /// Like [`Ledger::read`], but stops once the events read hold about `max_bytes` (their
    /// stored records' size; at least one event is returned when any matches). The flag
    /// says whether it stopped for the bytes, so that a reader resumes after the last event
    /// instead of assuming the window was done. Bounds the memory a page of large events
    /// holds (subscriptions, streamed reads).
    pub fn read_bounded(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
        max_bytes: usize,
    ) -> Result<(Vec<StoredEvent>, bool), ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| {
            let mut out = Vec::new();
            let mut bytes = 0usize;
            let mut cut = false;
            v.select_each(selector, opts.window(), &entities, |e| {
                bytes += stored_size(&e);
                out.push(e);
                cut = bytes >= max_bytes;
                !cut
            })?;
            Ok((out, cut))
        })
    }

    /// Like [`Ledger::read`], but the events come as raw records in one buffer, viewed
    /// without allocating per event: the fast path for long reads (catch-up, replays).
    pub fn read_batch(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
    ) -> Result<EventBatch, ReadError> {
        let mut batch = EventBatch::default();
        self.read_batch_into(selector, opts, &mut batch)?;
        Ok(batch)
    }

    /// [`Ledger::read_batch`] into `batch`, which is emptied first and keeps its buffers: a
    /// loop reading batch after batch (catch-up) allocates once.
    pub fn read_batch_into(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
        batch: &mut EventBatch,
    ) -> Result<(), ReadError> {
        self.read_batch_bounded_into(selector, opts, usize::MAX, batch)
    }

    /// [`Ledger::read_batch_into`] that also stops once the batch holds `max_bytes` of event
    /// fields ([`EventBatch::bytes`]; at least one event): a batch of large events is bounded
    /// in memory, not only in number. Whoever reads on must tell a batch cut short this way
    /// (`batch.bytes() >= max_bytes`) from one that holds every match.
    pub fn read_batch_bounded_into(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
        max_bytes: usize,
        batch: &mut EventBatch,
    ) -> Result<(), ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| {
            v.select_batch(selector, opts.window(), &entities, max_bytes, &mut *batch)
        })
    }

    #[cfg(feature = "bench")]
    /// Calls `f` on each event matching `selector` in `opts`' window, in one snapshot, until
    /// `f` returns `false`. For long reads (catch-up) without building a vector.
    pub fn scan(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
        f: impl FnMut(StoredEvent) -> bool,
    ) -> Result<(), ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| v.select_each(selector, opts.window(), &entities, f))
    }

    #[cfg(feature = "bench")]
    /// Calls `f` with a view of each event matching `selector` in `opts`' window, in one
    /// snapshot, until `f` returns `false`. The views borrow the stored records (nothing is
    /// copied or allocated per event; every record is checked before `f` sees it), so `f`
    /// must not keep them: the fastest way to fold over a long history in Rust. Keep `f`
    /// short — the read transaction stays open while it runs.
    pub fn scan_views(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
        f: impl FnMut(&EventView<'_>) -> bool,
    ) -> Result<(), ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| v.select_views(selector, opts.window(), &entities, f))
    }

    #[cfg(feature = "bench")]
    /// Like [`Ledger::scan_views`], with each event's record read lazily: an attribute is
    /// checked only when `f` asks for it (see [`EventRecord`]). For folds that read a few
    /// attributes of many events, such as counts and sums over the data.
    pub fn scan_records(
        &self,
        selector: &CompiledSelector,
        opts: ReadOptions,
        f: impl FnMut(&EventRecord<'_>) -> bool,
    ) -> Result<(), ReadError> {
        let entities = self.entity_names();
        self.with_view(|v| v.select_lazy(selector, opts.window(), &entities, f))
    }

    /// One stream's events by revision: revisions greater than `after_revision`, at most
    /// `limit`.
    pub fn read_stream(
        &self,
        subject: &str,
        after_revision: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let txn = self.read_txn()?;
        let streams = txn.open_table(STREAMS)?;
        let Some(stream) = streams.get(subject)? else {
            return Ok(Vec::new());
        };
        let (id, _) = stream.value();
        let index = txn.open_table(STREAM_INDEX)?;
        let (tail, segments) = (txn.open_table(EVENTS)?, txn.open_table(SEGMENTS)?);
        let events = Events {
            tail: &tail,
            segments: &segments,
        };
        let mut out = Vec::new();
        let start = after_revision.saturating_add(1);
        for item in index.range((id, start)..=(id, u64::MAX))?.take(limit) {
            let (_, p) = item?;
            let position = p.value();
            let Some(e) = events.with(position, |bytes| decode(position, bytes))? else {
                return Err(ReadError::Corrupt {
                    position,
                    message: "the stream index names a position with no event".into(),
                });
            };
            out.push(e);
        }
        Ok(out)
    }

    /// A stream's current revision (0: no such stream). One index lookup.
    pub fn stream_revision(&self, subject: &str) -> Result<u64, ReadError> {
        let txn = self.read_txn()?;
        let streams = txn.open_table(STREAMS)?;
        Ok(streams.get(subject)?.map_or(0, |v| v.value().1))
    }

    /// The event at `position`.
    pub fn event_at(&self, position: u64) -> Result<Option<StoredEvent>, ReadError> {
        let txn = self.read_txn()?;
        let (tail, segments) = (txn.open_table(EVENTS)?, txn.open_table(SEGMENTS)?);
        Events {
            tail: &tail,
            segments: &segments,
        }
        .with(position, |bytes| decode(position, bytes))
    }

    /// The event with identity `(source, id)`.
    pub fn event_by_id(&self, source: &str, id: &str) -> Result<Option<StoredEvent>, ReadError> {
        let txn = self.read_txn()?;
        let ids = txn.open_table(IDS)?;
        let Some(p) = ids.get((source, id))? else {
            return Ok(None);
        };
        let position = p.value();
        let (tail, segments) = (txn.open_table(EVENTS)?, txn.open_table(SEGMENTS)?);
        let events = Events {
            tail: &tail,
            segments: &segments,
        };
        match events.with(position, |bytes| decode(position, bytes))? {
            None => Err(ReadError::Corrupt {
                position,
                message: "the identity index names a position with no event".into(),
            }),
            Some(e) => Ok(Some(e)),
        }
    }

    /// The last position recorded at or before `micros` (µs since the Unix epoch); 0 if none.
    pub fn position_at_time(&self, micros: i64) -> Result<u64, ReadError> {
        let txn = self.read_txn()?;
        let t = txn.open_table(TIME_INDEX)?;
        let last = t.range(..=micros)?.next_back().transpose()?;
        Ok(last.map_or(0, |(_, p)| p.value()))
    }

    /// Streams whose subject starts with `prefix`, in subject order after `after` (exclusive),
    /// at most `limit`: each subject with its current revision. One range of the stream table.
    pub fn streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, ReadError> {
        let txn = self.read_txn()?;
        let streams = txn.open_table(STREAMS)?;
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let mut out = Vec::new();
        for entry in streams.range(start..)? {
            let (subject, value) = entry?;
            let subject = subject.value();
            if after == Some(subject) {
                continue;
            }
            if !subject.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((subject.to_owned(), value.value().1));
        }
        Ok(out)
    }

    /// Number of streams and events, for status pages.
    pub fn counts(&self) -> Result<(u64, u64), ReadError> {
        let txn = self.read_txn()?;
        let streams = txn.open_table(STREAMS)?.len()?;
        // Positions are gapless from 1: the last one is the number of events.
        let (tail, segments) = (txn.open_table(EVENTS)?, txn.open_table(SEGMENTS)?);
        let events = Events {
            tail: &tail,
            segments: &segments,
        }
        .head()?;
        Ok((streams, events))
    }
}

/// About how many bytes an event takes: its attributes and data.
fn stored_size(e: &StoredEvent) -> usize {
    let ev = &e.event;
    let data = match &ev.data {
        None => 0,
        Some(loom_core::Data::Json(raw)) => raw.get().len(),
        Some(loom_core::Data::Text(t)) => t.len(),
        Some(loom_core::Data::Binary(b)) => b.len(),
    };
    64 + ev.id.len() + ev.source.len() + ev.ty.len() + ev.subject.len() + data
}
