//! Stored events borrowed from their encoded record, without materialising them. Catch-up
//! reads hundreds of thousands of events only to hand their bytes on (to a wasm reducer);
//! building an owned [`StoredEvent`] for each would cost a dozen allocations and a JSON
//! re-validation per event.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::error::CorruptEvent;
use crate::event::{Data, Event, ExtensionValue, StoredEvent};
use crate::wire;

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
    count: u32,
    bytes: &'a [u8],
}

impl<'a> Extensions<'a> {
    /// Extensions encoded as [`wire::extension`] reads them, `count` of them at the start of
    /// `bytes`. Iteration stops at the first one that does not decode, so the encoder should
    /// have checked them (as the ledger does when it makes a view).
    pub fn encoded(count: u32, bytes: &'a [u8]) -> Extensions<'a> {
        Extensions { count, bytes }
    }

    /// The encoded form: the count and the bytes that start with them (and may go on past
    /// them).
    pub fn raw(&self) -> (u32, &'a [u8]) {
        (self.count, self.bytes)
    }

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
        let mut r = wire::Reader::new(self.bytes);
        (0..self.count).map_while(move |_| wire::extension(&mut r).ok())
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

impl<'a> EventView<'a> {
    /// A view of an owned event; `extensions` holds its extensions as
    /// [`wire::put_extensions`] encodes them.
    pub fn of(e: &'a StoredEvent, extensions: &'a [u8]) -> EventView<'a> {
        let mut r = wire::Reader::new(extensions);
        let count = r.u32().unwrap_or(0);
        let data = match &e.event.data {
            None => DataRef::None,
            Some(Data::Json(raw)) => DataRef::Json(raw.get()),
            Some(Data::Text(t)) => DataRef::Text(t),
            Some(Data::Binary(b)) => DataRef::Binary(b),
        };
        EventView {
            position: e.position,
            revision: e.revision,
            recorded_micros: e.recorded_micros,
            id: &e.event.id,
            source: &e.event.source,
            ty: &e.event.ty,
            subject: &e.event.subject,
            time: e.event.time.as_deref(),
            datacontenttype: e.event.datacontenttype.as_deref(),
            dataschema: e.event.dataschema.as_deref(),
            data,
            extensions: Extensions::encoded(count, r.rest()),
        }
    }

    /// The owned event.
    pub fn to_stored(&self) -> Result<StoredEvent, CorruptEvent> {
        let data = match self.data {
            DataRef::None => None,
            DataRef::Json(text) => Some(Data::Json(
                RawValue::from_string(text.to_owned()).map_err(|e| CorruptEvent {
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
