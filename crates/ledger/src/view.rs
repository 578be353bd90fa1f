//! Stored events read without materialising them: a batch keeps the raw records in one
//! buffer and decodes a borrowed [`EventView`] on access. Catch-up reads hundreds of
//! thousands of events to hand their bytes on (to a wasm reducer); building an owned
//! [`StoredEvent`] for each — a dozen allocations and a JSON re-validation — cost more than
//! everything else in that loop.

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

/// Events read as raw records into one buffer (see the module docs).
#[derive(Debug, Default)]
pub struct EventBatch {
    buf: Vec<u8>,
    /// `(position, end offset in buf)`; an item starts where the previous one ends.
    items: Vec<(u64, usize)>,
}

impl EventBatch {
    /// A batch holding copies of owned events (e.g. for tests and tools).
    pub fn from_stored(events: &[StoredEvent]) -> EventBatch {
        let mut batch = EventBatch::default();
        let mut record = Vec::new();
        for e in events {
            codec::encode(e.revision, e.recorded_micros, &e.event, &mut record);
            batch.push(e.position, &record);
        }
        batch
    }

    pub(crate) fn push(&mut self, position: u64, record: &[u8]) {
        self.buf.extend_from_slice(record);
        self.items.push((position, self.buf.len()));
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
        self.items[i].0
    }

    /// The last event's position.
    pub fn last_position(&self) -> Option<u64> {
        self.items.last().map(|&(p, _)| p)
    }

    /// The `i`th event (records were checked when read, so this does not fail).
    pub fn get(&self, i: usize) -> EventView<'_> {
        let start = if i == 0 { 0 } else { self.items[i - 1].1 };
        let (position, end) = self.items[i];
        codec::decode_view(position, &self.buf[start..end])
            .expect("records are checked when the batch is read")
    }

    /// Every event, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventView<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Keeps the first `n` events.
    pub fn truncate(&mut self, n: usize) {
        if n < self.items.len() {
            let end = if n == 0 { 0 } else { self.items[n - 1].1 };
            self.items.truncate(n);
            self.buf.truncate(end);
        }
    }
}
