//! The event model: CloudEvents v1.0 as Loom stores them.
//!
//! [`Event`] is what a client appends; [`StoredEvent`] is what the ledger gives back, with the
//! store-set attributes `position`, `revision` and `recordedtime`. Both map losslessly to the
//! CloudEvents JSON format: every context attribute, every extension and `data` (JSON, text or
//! binary) round-trip exactly. JSON `data` is kept as its original text with insignificant
//! whitespace removed, so numbers of any size or precision come back as they were sent.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::error::InvalidEvent;
use crate::names::split_subject;
use crate::time::{format_time, parse_time};
use crate::view::ExtensionRef;

mod parse;

use parse::compact_raw;

/// The only CloudEvents spec version Loom accepts.
pub const SPEC_VERSION: &str = "1.0";

/// Attribute names the store sets itself; clients may not send them.
pub const STORE_SET_ATTRIBUTES: [&str; 3] = ["position", "revision", "recordedtime"];

/// Longest accepted `id`, `source`, `type` or `subject`, in bytes.
pub const MAX_ATTRIBUTE_LEN: usize = 4096;

/// The payload of an event, as the CloudEvents JSON format distinguishes it.
#[derive(Clone, Debug)]
pub enum Data {
    /// JSON data (`data` member with a JSON content type or none), kept as compact JSON text.
    Json(Box<RawValue>),
    /// Text data (`data` holding a string under a non-JSON content type).
    Text(String),
    /// Binary data (`data_base64`).
    Binary(Vec<u8>),
}

impl Data {
    /// JSON data from any valid JSON text; insignificant whitespace is removed, nothing else
    /// changes.
    pub fn json_from_str(text: &str) -> Result<Data, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_str(text)?;
        Ok(Data::Json(compact_raw(&raw)))
    }

    /// JSON data from a value.
    pub fn json(value: &serde_json::Value) -> Data {
        let text = serde_json::to_string(value).expect("a Value always serializes");
        Data::Json(RawValue::from_string(text).expect("serde_json output is valid JSON"))
    }

    /// The data parsed as a JSON value, if it is JSON.
    pub fn to_json_value(&self) -> Option<serde_json::Value> {
        match self {
            Data::Json(raw) => serde_json::from_str(raw.get()).ok(),
            _ => None,
        }
    }

    /// Semantic equality: JSON compares as values (key order and spelling of numbers aside).
    pub fn same_content(&self, other: &Data) -> bool {
        match (self, other) {
            (Data::Json(a), Data::Json(b)) => {
                a.get() == b.get()
                    || serde_json::from_str::<serde_json::Value>(a.get()).ok()
                        == serde_json::from_str::<serde_json::Value>(b.get()).ok()
            }
            (Data::Text(a), Data::Text(b)) => a == b,
            (Data::Binary(a), Data::Binary(b)) => a == b,
            // The same bytes, carried as text by one mode and as bytes by another (or stored
            // as text before bytes stayed bytes): the same data.
            (Data::Text(t), Data::Binary(b)) | (Data::Binary(b), Data::Text(t)) => {
                t.as_bytes() == b.as_slice()
            }
            _ => false,
        }
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Data::Json(a), Data::Json(b)) => a.get() == b.get(),
            (Data::Text(a), Data::Text(b)) => a == b,
            (Data::Binary(a), Data::Binary(b)) => a == b,
            _ => false,
        }
    }
}

/// A CloudEvents extension attribute value. The JSON format carries three kinds; the others
/// of the type system (URI, timestamp, binary) travel as strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtensionValue {
    /// A string (also URI, URI-reference, timestamp and base64 binary values).
    String(String),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Integer(i64),
}

impl ExtensionValue {
    /// The value, borrowed.
    pub fn as_ref(&self) -> ExtensionRef<'_> {
        match self {
            ExtensionValue::String(s) => ExtensionRef::String(s),
            ExtensionValue::Bool(b) => ExtensionRef::Bool(*b),
            ExtensionValue::Integer(i) => ExtensionRef::Integer(*i),
        }
    }
}

impl fmt::Display for ExtensionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionValue::String(s) => f.write_str(s),
            ExtensionValue::Bool(b) => write!(f, "{b}"),
            ExtensionValue::Integer(i) => write!(f, "{i}"),
        }
    }
}

impl Serialize for ExtensionValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ExtensionValue::String(v) => s.serialize_str(v),
            ExtensionValue::Bool(v) => s.serialize_bool(*v),
            ExtensionValue::Integer(v) => s.serialize_i64(*v),
        }
    }
}

/// A CloudEvent as a client appends it. `subject` is required: it names the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `id`: with `source`, the event's identity; unique in the ledger.
    pub id: String,
    /// `source`: a URI-reference naming the producer.
    pub source: String,
    /// `type`: the event type, registered for the subject's entity.
    pub ty: String,
    /// `subject`: the stream, `{entity}/{key}`.
    pub subject: String,
    /// `time`: as the client sent it (RFC 3339), never invented.
    pub time: Option<String>,
    /// `datacontenttype`.
    pub datacontenttype: Option<String>,
    /// `dataschema`.
    pub dataschema: Option<String>,
    /// `data` or `data_base64`.
    pub data: Option<Data>,
    /// Extension attributes, by name.
    pub extensions: BTreeMap<String, ExtensionValue>,
}

impl Event {
    /// A minimal event with JSON data; convenient for tests and tools.
    pub fn new(
        source: impl Into<String>,
        id: impl Into<String>,
        ty: impl Into<String>,
        subject: impl Into<String>,
        data: serde_json::Value,
    ) -> Event {
        Event {
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            subject: subject.into(),
            time: None,
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            data: Some(Data::json(&data)),
            extensions: BTreeMap::new(),
        }
    }

    /// The entity part of the subject (before the first `/`).
    pub fn entity(&self) -> &str {
        split_subject(&self.subject).map_or("", |(e, _)| e)
    }

    /// Checks every rule of the event model that does not need the registry.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        check_required("id", &self.id)?;
        check_required("source", &self.source)?;
        check_required("type", &self.ty)?;
        check_required("subject", &self.subject)?;
        if split_subject(&self.subject).is_none() {
            return Err(InvalidEvent::new(format!(
                "subject {:?} is not a stream name: expected \"{{entity}}/{{key}}\" with a \
                 non-empty entity and key",
                self.subject
            )));
        }
        if let Some(time) = &self.time {
            parse_time(time).map_err(|e| {
                InvalidEvent::new(format!("time {time:?} is not an RFC 3339 timestamp: {e}"))
            })?;
        }
        if let Some(ct) = &self.datacontenttype {
            if ct.trim().is_empty() {
                return Err(InvalidEvent::new("datacontenttype must not be empty"));
            }
            check_media_type(ct)?;
        }
        if let Some(ds) = &self.dataschema
            && ds.trim().is_empty()
        {
            return Err(InvalidEvent::new("dataschema must not be empty"));
        }
        for (name, value) in &self.extensions {
            check_extension_name(name)?;
            if let ExtensionValue::String(s) = value
                && s.len() > MAX_ATTRIBUTE_LEN * 4
            {
                return Err(InvalidEvent::new(format!(
                    "extension attribute {name:?} is longer than {} bytes",
                    MAX_ATTRIBUTE_LEN * 4
                )));
            }
        }
        Ok(())
    }

    /// Same content as `other`: attributes equal (`time` as the same instant, however it is
    /// written), data equal as JSON values where JSON.
    pub fn same_content(&self, other: &Event) -> bool {
        self.id == other.id
            && self.source == other.source
            && self.ty == other.ty
            && self.subject == other.subject
            && same_instant(self.time.as_deref(), other.time.as_deref())
            && same_content_type(self, other)
            && self.dataschema == other.dataschema
            && self.extensions == other.extensions
            && match (&self.data, &other.data) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same_content(b),
                _ => false,
            }
    }

    /// The data as a JSON value (`null` when absent); `None` when the data is text or binary.
    pub fn data_json(&self) -> Option<serde_json::Value> {
        match &self.data {
            None => Some(serde_json::Value::Null),
            Some(d) => d.to_json_value(),
        }
    }
}

/// Whether a media type says its content is text (not JSON): `text/*`, XML
/// (`application/xml`, `*/*+xml`), `application/javascript`, `application/ecmascript`,
/// `application/yaml`, `application/x-yaml`, `application/x-ndjson`,
/// `application/x-www-form-urlencoded`, or any media type with a `charset` parameter. Any other
/// (`application/octet-stream`, `image/png`, `application/cbor`, …) is bytes, even when the
/// bytes happen to be valid UTF-8.
pub fn is_text_content_type(ct: &str) -> bool {
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let has_charset = parts.any(|p| {
        p.split_once('=')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
    });
    has_charset
        || essence.starts_with("text/")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/xml"
                | "application/javascript"
                | "application/ecmascript"
                | "application/yaml"
                | "application/x-yaml"
                | "application/x-ndjson"
                | "application/x-www-form-urlencoded"
        )
}

/// Whether a media type is JSON (`application/json`, `text/json`, `*/*+json`), ignoring
/// parameters such as `charset`.
pub fn is_json_content_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// `datacontenttype` must be a media type (RFC 2046, as in HTTP's `Content-Type`): the binary
/// content mode carries it in the `Content-Type` header, which holds only visible ASCII. So:
/// `type/subtype` of token characters, then optional `; name=value` parameters, all in
/// printable ASCII.
fn check_media_type(ct: &str) -> Result<(), InvalidEvent> {
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let printable = ct.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    let essence = ct.split(';').next().unwrap_or("").trim();
    let well_formed = essence
        .split_once('/')
        .is_some_and(|(t, sub)| is_token(t) && is_token(sub));
    if printable && well_formed {
        Ok(())
    } else {
        Err(InvalidEvent::new(format!(
            "datacontenttype {ct:?} is not a media type: expected \"type/subtype\" with \
             optional parameters, in printable ASCII (e.g. \"application/json\")"
        )))
    }
}

fn check_required(name: &str, value: &str) -> Result<(), InvalidEvent> {
    if value.is_empty() {
        return Err(InvalidEvent::new(format!(
            "attribute {name:?} must be a non-empty string"
        )));
    }
    if value.len() > MAX_ATTRIBUTE_LEN {
        return Err(InvalidEvent::new(format!(
            "attribute {name:?} is longer than {MAX_ATTRIBUTE_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_extension_name(name: &str) -> Result<(), InvalidEvent> {
    if STORE_SET_ATTRIBUTES.contains(&name) {
        return Err(InvalidEvent::new(format!(
            "attribute {name:?} is set by the store and may not be sent by clients"
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !matches!(name, "data" | "data_base64");
    if !ok {
        return Err(InvalidEvent::new(format!(
            "{name:?} is not a valid CloudEvents attribute name: extension names are 1-64 \
             lower-case letters or digits"
        )));
    }
    Ok(())
}

/// An event as stored: the appended event plus the attributes the store set.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Global, gapless position in the ledger, from 1.
    pub position: u64,
    /// Gapless revision in the event's stream, from 1.
    pub revision: u64,
    /// Commit time, microseconds since the Unix epoch.
    pub recorded_micros: i64,
    /// The event as appended.
    pub event: Event,
}

impl StoredEvent {
    /// `recordedtime` as RFC 3339.
    pub fn recordedtime(&self) -> String {
        format_time(self.recorded_micros)
    }

    /// The whole event as a CloudEvents JSON value (for JSONPath filters over metadata).
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a stored event always serializes")
    }
}

impl Serialize for StoredEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_event(s, &self.event, Some(self))
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_event(s, self, None)
    }
}

/// Writes the CloudEvents JSON form of `e`, with the store-set attributes when stored.
fn serialize_event<S: Serializer>(
    s: S,
    e: &Event,
    stored: Option<&StoredEvent>,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(None)?;
    map.serialize_entry("specversion", SPEC_VERSION)?;
    map.serialize_entry("id", &e.id)?;
    map.serialize_entry("source", &e.source)?;
    map.serialize_entry("type", &e.ty)?;
    map.serialize_entry("subject", &e.subject)?;
    if let Some(t) = &e.time {
        map.serialize_entry("time", t)?;
    }
    if let Some(ct) = &e.datacontenttype {
        map.serialize_entry("datacontenttype", ct)?;
    }
    if let Some(ds) = &e.dataschema {
        map.serialize_entry("dataschema", ds)?;
    }
    for (name, value) in &e.extensions {
        map.serialize_entry(name, value)?;
    }
    if let Some(stored) = stored {
        map.serialize_entry("position", &stored.position)?;
        map.serialize_entry("revision", &stored.revision)?;
        map.serialize_entry("recordedtime", &stored.recordedtime())?;
    }
    match &e.data {
        None => {}
        Some(Data::Json(raw)) => map.serialize_entry("data", raw)?,
        Some(Data::Text(t)) => map.serialize_entry("data", t)?,
        Some(Data::Binary(b)) => map.serialize_entry(
            "data_base64",
            &base64::engine::general_purpose::STANDARD.encode(b),
        )?,
    }
    map.end()
}

/// Whether two events' `datacontenttype`s say the same: equal, or one absent and the other
/// `application/json` (with `charset=utf-8` or not) while both carry JSON data or none (the CloudEvents JSON format's default, which
/// a binary-mode read writes out as `Content-Type: application/json`).
fn same_content_type(a: &Event, b: &Event) -> bool {
    match (a.datacontenttype.as_deref(), b.datacontenttype.as_deref()) {
        (x, y) if x == y => true,
        (None, Some(ct)) | (Some(ct), None) => {
            is_default_json_type(ct)
                && matches!(a.data, None | Some(Data::Json(_)))
                && matches!(b.data, None | Some(Data::Json(_)))
        }
        _ => false,
    }
}

/// `application/json`, alone or with `charset=utf-8` (which SDKs add in binary mode).
fn is_default_json_type(ct: &str) -> bool {
    let mut parts = ct.split(';');
    parts
        .next()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("application/json"))
        && parts.all(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

/// Whether two `time` attributes name the same instant: `2026-05-06T07:08:09.5Z` and
/// `2026-05-06T09:08:09.500+02:00` do (SDKs write UTC both ways, and a retry in another
/// content mode must stay a duplicate). The stored text is kept as the producer wrote it.
fn same_instant(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) if a == b => true,
        (Some(a), Some(b)) => match (
            chrono::DateTime::parse_from_rfc3339(a),
            chrono::DateTime::parse_from_rfc3339(b),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        },
        _ => false,
    }
}
