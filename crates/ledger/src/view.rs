//! Stored events read without materialising them: a batch checks each record once, keeps
//! its fields in two shared buffers and hands out borrowed [`EventView`]s; an
//! [`EventRecord`] reads a record's attributes only when asked.

use loom_core::{DataRef, EventView, Extensions, StoredEvent};

use crate::codec;
use crate::error::ReadError;

#[cfg(feature = "bench")]
/// A stored event read lazily, for folds that look at a few attributes of many events: only
/// the record's header is read when it is made, and each attribute is checked when it is
/// asked for (a count checks nothing, a sum over the data checks the data). Records stored
/// before format 2 of the record encoding are checked in full when made.
#[derive(Clone, Copy, Debug)]
pub struct EventRecord<'a> {
    position: u64,
    inner: Inner<'a>,
}

#[cfg(feature = "bench")]
#[derive(Clone, Copy, Debug)]
enum Inner<'a> {
    Lazy(codec::Layout<'a>),
    Checked(EventView<'a>),
}

#[cfg(feature = "bench")]
impl<'a> EventRecord<'a> {
    /// Reads the header of `record`, the stored encoding of the event at `position`.
    pub(crate) fn new(position: u64, record: &'a [u8]) -> Result<EventRecord<'a>, ReadError> {
        let corrupt = |message| ReadError::Corrupt { position, message };
        let inner = if codec::is_v2(record) {
            Inner::Lazy(codec::Layout::of(record).map_err(corrupt)?)
        } else {
            Inner::Checked(codec::decode_view(position, record).map_err(corrupt)?)
        };
        Ok(EventRecord { position, inner })
    }

    fn corrupt(&self, message: String) -> ReadError {
        ReadError::Corrupt {
            position: self.position,
            message,
        }
    }

    /// Global position.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Revision in its stream.
    pub fn revision(&self) -> u64 {
        match &self.inner {
            Inner::Lazy(l) => l.revision,
            Inner::Checked(v) => v.revision,
        }
    }

    /// Commit time, microseconds since the Unix epoch.
    pub fn recorded_micros(&self) -> i64 {
        match &self.inner {
            Inner::Lazy(l) => l.recorded_micros,
            Inner::Checked(v) => v.recorded_micros,
        }
    }

    /// `type`.
    pub fn ty(&self) -> Result<&'a str, ReadError> {
        match &self.inner {
            Inner::Lazy(l) => l.attribute(2).map_err(|m| self.corrupt(m)),
            Inner::Checked(v) => Ok(v.ty),
        }
    }

    /// `subject`.
    pub fn subject(&self) -> Result<&'a str, ReadError> {
        match &self.inner {
            Inner::Lazy(l) => l.attribute(3).map_err(|m| self.corrupt(m)),
            Inner::Checked(v) => Ok(v.subject),
        }
    }

    /// The payload.
    pub fn data(&self) -> Result<DataRef<'a>, ReadError> {
        match &self.inner {
            Inner::Lazy(l) => l.data().map_err(|m| self.corrupt(m)),
            Inner::Checked(v) => Ok(v.data),
        }
    }

    /// Every attribute, checked.
    pub fn view(&self) -> Result<EventView<'a>, ReadError> {
        match &self.inner {
            Inner::Lazy(l) => l.view(self.position).map_err(|m| self.corrupt(m)),
            Inner::Checked(v) => Ok(*v),
        }
    }
}

/// Events read as raw records, checked once and kept in two buffers (see the module docs):
/// every text field in one `String`, binary data and encoded extensions in one byte buffer,
/// and per event the spans of its fields. Views are rebuilt from the spans without checking
/// the text again; [`Ledger::read_batch_into`](crate::Ledger::read_batch_into) refills a batch
/// without allocating again.
#[derive(Debug, Default)]
pub struct EventBatch {
    text: String,
    bin: Vec<u8>,
    items: Vec<Item>,
}

/// An event's position, type and subject, from [`EventBatch::head`].
#[derive(Clone, Copy, Debug)]
pub struct EventHead<'a> {
    /// Global position.
    pub position: u64,
    /// CloudEvents `type`.
    pub ty: &'a str,
    /// `subject`.
    pub subject: &'a str,
}

impl<'a> From<&EventView<'a>> for EventHead<'a> {
    fn from(e: &EventView<'a>) -> Self {
        EventHead {
            position: e.position,
            ty: e.ty,
            subject: e.subject,
        }
    }
}

/// `start..end` in one of the batch's buffers.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    end: u32,
}

/// An absent optional attribute.
const NO_SPAN: Span = Span {
    start: u32::MAX,
    end: u32::MAX,
};

#[derive(Clone, Copy, Debug)]
struct Item {
    position: u64,
    revision: u64,
    recorded_micros: i64,
    id: Span,
    source: Span,
    ty: Span,
    subject: Span,
    time: Span,
    datacontenttype: Span,
    dataschema: Span,
    /// 0 none, 1 JSON, 2 text (both in `text`), 3 binary (in `bin`).
    data_kind: u8,
    data: Span,
    extension_count: u32,
    /// Encoded extensions, in `bin`.
    extensions: Span,
}

impl EventBatch {
    /// A batch holding copies of owned events (e.g. for tests and tools).
    pub fn from_stored(events: &[StoredEvent]) -> EventBatch {
        let mut batch = EventBatch::default();
        let mut record = Vec::new();
        for e in events {
            record.clear();
            codec::encode(e.revision, e.recorded_micros, &e.event, &mut record);
            batch
                .push(e.position, &record)
                .expect("a record just encoded decodes");
        }
        batch
    }

    /// Empties the batch, keeping its buffers for the next read.
    pub fn clear(&mut self) {
        self.text.clear();
        self.bin.clear();
        self.items.clear();
    }

    /// Checks `record` (the stored encoding of the event at `position`) and appends it.
    pub(crate) fn push(&mut self, position: u64, record: &[u8]) -> Result<(), ReadError> {
        let v = codec::decode_view(position, record)
            .map_err(|message| ReadError::Corrupt { position, message })?;
        let text = &mut self.text;
        let mut put = |s: &str| {
            let start = text.len();
            text.push_str(s);
            span(start, text.len())
        };
        let id = put(v.id);
        let source = put(v.source);
        let ty = put(v.ty);
        let subject = put(v.subject);
        let time = v.time.map_or(NO_SPAN, &mut put);
        let datacontenttype = v.datacontenttype.map_or(NO_SPAN, &mut put);
        let dataschema = v.dataschema.map_or(NO_SPAN, &mut put);
        let (data_kind, data) = match v.data {
            DataRef::None => (0, Span::default()),
            DataRef::Json(t) => (1, put(t)),
            DataRef::Text(t) => (2, put(t)),
            DataRef::Binary(b) => {
                let start = self.bin.len();
                self.bin.extend_from_slice(b);
                (3, span(start, self.bin.len()))
            }
        };
        let start = self.bin.len();
        self.bin.extend_from_slice(v.extensions.raw().1);
        let extensions = span(start, self.bin.len());
        self.items.push(Item {
            position: v.position,
            revision: v.revision,
            recorded_micros: v.recorded_micros,
            id,
            source,
            ty,
            subject,
            time,
            datacontenttype,
            dataschema,
            data_kind,
            data,
            extension_count: v.extensions.raw().0,
            extensions,
        });
        Ok(())
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The bytes of the events' fields it holds (text and binary), without its per-event
    /// bookkeeping.
    pub fn bytes(&self) -> usize {
        self.text.len() + self.bin.len()
    }

    /// The position of the `i`th event.
    pub fn position(&self, i: usize) -> u64 {
        self.items[i].position
    }

    /// The last event's position.
    pub fn last_position(&self) -> Option<u64> {
        self.items.last().map(|item| item.position)
    }

    /// The `i`th event (records were checked when read, so this does not fail).
    pub fn get(&self, i: usize) -> EventView<'_> {
        let item = &self.items[i];
        let text = |s: Span| &self.text[s.start as usize..s.end as usize];
        let opt = |s: Span| (s.start != u32::MAX).then(|| text(s));
        let bin = |s: Span| &self.bin[s.start as usize..s.end as usize];
        EventView {
            position: item.position,
            revision: item.revision,
            recorded_micros: item.recorded_micros,
            id: text(item.id),
            source: text(item.source),
            ty: text(item.ty),
            subject: text(item.subject),
            time: opt(item.time),
            datacontenttype: opt(item.datacontenttype),
            dataschema: opt(item.dataschema),
            data: match item.data_kind {
                0 => DataRef::None,
                1 => DataRef::Json(text(item.data)),
                2 => DataRef::Text(text(item.data)),
                _ => DataRef::Binary(bin(item.data)),
            },
            extensions: Extensions::encoded(item.extension_count, bin(item.extensions)),
        }
    }

    /// What a fold selects and groups event `i` by — its position, type and subject —
    /// without making its whole view: a step asks this of every event of a batch far larger
    /// than the caches, and a view would read every field's bounds.
    pub fn head(&self, i: usize) -> EventHead<'_> {
        let item = &self.items[i];
        let text = |s: Span| &self.text[s.start as usize..s.end as usize];
        EventHead {
            position: item.position,
            ty: text(item.ty),
            subject: text(item.subject),
        }
    }

    /// Every event, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventView<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Keeps the first `n` events.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.items.len() {
            return;
        }
        // Buffers hold the events in order, so the first dropped event's first field marks
        // where each buffer's kept part ends.
        let first = self.items[n];
        self.text.truncate(first.id.start as usize);
        self.bin.truncate(if first.data_kind == 3 {
            first.data.start
        } else {
            first.extensions.start
        } as usize);
        self.items.truncate(n);
    }
}

fn span(start: usize, end: usize) -> Span {
    // A batch is bounded by the read's limit; 4 GiB of text in one batch is a caller's error.
    Span {
        start: u32::try_from(start).expect("an event batch holds less than 4 GiB"),
        end: u32::try_from(end).expect("an event batch holds less than 4 GiB"),
    }
}
