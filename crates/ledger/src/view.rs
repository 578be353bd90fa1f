//! Stored events read without materialising them: a batch checks each record once, keeps
//! its fields in two shared buffers and hands out borrowed [`EventView`]s. Catch-up reads
//! hundreds of thousands of events to hand their bytes on (to a wasm reducer); building an
//! owned [`StoredEvent`] for each — a dozen allocations and a JSON re-validation — cost more
//! than everything else in that loop.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::codec;
use crate::error::ReadError;
use crate::event::{Data, Event, ExtensionValue, StoredEvent};

/// A stored event borrowed from its record.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    /// Global position.
    pub position: u64,
    /// Revision in its stream.
    pub revision: u64,
    /// Commit time, microseconds since the Unix epoch.
    pub recorded_micros: i64,
    /// `id`.
    pub id: &'a str,
    /// `source`.
    pub source: &'a str,
    /// `type`.
    pub ty: &'a str,
    /// `subject` (`{entity}/{key}`).
    pub subject: &'a str,
    /// `time` as sent.
    pub time: Option<&'a str>,
    /// `datacontenttype`.
    pub datacontenttype: Option<&'a str>,
    /// `dataschema`.
    pub dataschema: Option<&'a str>,
    /// The payload.
    pub data: DataRef<'a>,
    /// Extension attributes, in name order.
    pub extensions: Extensions<'a>,
}

/// An event's payload, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataRef<'a> {
    /// No data.
    None,
    /// Compact JSON text (validated when it was appended).
    Json(&'a str),
    /// Text data.
    Text(&'a str),
    /// Binary data.
    Binary(&'a [u8]),
}

/// One extension attribute's value, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionRef<'a> {
    /// A string.
    String(&'a str),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Integer(i64),
}

impl ExtensionRef<'_> {
    /// The owned value.
    pub fn to_owned_value(self) -> ExtensionValue {
        match self {
            ExtensionRef::String(s) => ExtensionValue::String(s.to_owned()),
            ExtensionRef::Bool(b) => ExtensionValue::Bool(b),
            ExtensionRef::Integer(i) => ExtensionValue::Integer(i),
        }
    }
}

/// The extension attributes of an [`EventView`]: still encoded, decoded while iterating.
#[derive(Clone, Copy, Debug)]
pub struct Extensions<'a> {
    pub(crate) count: u32,
    pub(crate) bytes: &'a [u8],
}

impl<'a> Extensions<'a> {
    /// How many there are.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(name, value)` pairs in name order. The record was checked when the view was made,
    /// so iterating cannot fail.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, ExtensionRef<'a>)> + 'a {
        let mut r = codec::Reader::new(self.bytes);
        (0..self.count).map_while(move |_| codec::extension(&mut r).ok())
    }

    /// The extensions as one JSON object text (`{}` when there are none).
    pub fn to_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    ExtensionRef::String(s) => serde_json::Value::from(s),
                    ExtensionRef::Bool(b) => serde_json::Value::from(b),
                    ExtensionRef::Integer(i) => serde_json::Value::from(i),
                };
                (k.to_owned(), v)
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

impl EventView<'_> {
    /// The owned event.
    pub fn to_stored(&self) -> Result<StoredEvent, ReadError> {
        let data = match self.data {
            DataRef::None => None,
            DataRef::Json(text) => Some(Data::Json(
                RawValue::from_string(text.to_owned()).map_err(|e| ReadError::Corrupt {
                    position: self.position,
                    message: format!("stored JSON data: {e}"),
                })?,
            )),
            DataRef::Text(t) => Some(Data::Text(t.to_owned())),
            DataRef::Binary(b) => Some(Data::Binary(b.to_vec())),
        };
        let extensions: BTreeMap<String, ExtensionValue> = self
            .extensions
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned_value()))
            .collect();
        Ok(StoredEvent {
            position: self.position,
            revision: self.revision,
            recorded_micros: self.recorded_micros,
            event: Event {
                id: self.id.to_owned(),
                source: self.source.to_owned(),
                ty: self.ty.to_owned(),
                subject: self.subject.to_owned(),
                time: self.time.map(str::to_owned),
                datacontenttype: self.datacontenttype.map(str::to_owned),
                dataschema: self.dataschema.map(str::to_owned),
                data,
                extensions,
            },
        })
    }
}

/// A stored event read lazily, for folds that look at a few attributes of many events: only
/// the record's header is read when it is made, and each attribute is checked when it is
/// asked for (a count checks nothing, a sum over the data checks the data). Records stored
/// before format 2 of the record encoding are checked in full when made.
#[derive(Clone, Copy, Debug)]
pub struct EventRecord<'a> {
    position: u64,
    inner: Inner<'a>,
}

#[derive(Clone, Copy, Debug)]
enum Inner<'a> {
    Lazy(codec::Layout<'a>),
    Checked(EventView<'a>),
}

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
        self.bin.extend_from_slice(v.extensions.bytes);
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
            extension_count: v.extensions.count,
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
            extensions: Extensions {
                count: item.extension_count,
                bytes: bin(item.extensions),
            },
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
