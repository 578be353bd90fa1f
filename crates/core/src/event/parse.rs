//! Reading events in the CloudEvents JSON format (structured and batch mode).
//!
//! An event's members are read in one pass, borrowed from the input: names as `&str` where
//! they hold no escapes, values as raw JSON text. Only what the event keeps is copied out
//! (a string without escapes is the text between its quotes), and JSON `data` is compacted
//! byte by byte, or copied as it is when it has no whitespace to remove. Appending a batch
//! spends its time here, once per event, on the request's thread.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    Data, Event, ExtensionValue, SPEC_VERSION, STORE_SET_ATTRIBUTES, check_extension_name,
    is_json_content_type,
};
use crate::error::InvalidEvent;

impl Event {
    /// Parses one event in the CloudEvents JSON format (structured mode).
    pub fn from_json_slice(bytes: &[u8]) -> Result<Event, InvalidEvent> {
        let members: Members<'_> = serde_json::from_slice(bytes)
            .map_err(|e| InvalidEvent::new(format!("not a CloudEvent JSON object: {e}")))?;
        members.into_event()
    }

    /// Parses a JSON array of events (the CloudEvents batch format).
    pub fn batch_from_json_slice(bytes: &[u8]) -> Result<Vec<Event>, InvalidEvent> {
        let items: Vec<Members<'_>> = serde_json::from_slice(bytes).map_err(|e| {
            InvalidEvent::new(format!(
                "not a CloudEvents batch (JSON array of events): {e}"
            ))
        })?;
        items
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.into_event().map_err(|e| e.at_index(i)))
            .collect()
    }

    /// Parses one event from an already-parsed JSON value.
    pub fn from_json_value(value: &serde_json::Value) -> Result<Event, InvalidEvent> {
        let text = serde_json::to_string(value).expect("a Value always serializes");
        Event::from_json_slice(text.as_bytes())
    }
}

/// The attributes the event model names, in the order of [`Members::known`].
const KNOWN: [&str; 10] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

/// One JSON object's members. A name that occurs twice keeps its last value, and a member
/// whose value is `null` counts as absent (after that), as a map of the object would have it.
#[derive(Default)]
struct Members<'a> {
    /// Values of the attributes in [`KNOWN`], by index.
    known: [Option<&'a RawValue>; KNOWN.len()],
    /// Every other member: extensions, and store-set attributes (refused).
    others: BTreeMap<Cow<'a, str>, &'a RawValue>,
}

impl<'a> Members<'a> {
    fn take(&mut self, name: &str) -> Option<&'a RawValue> {
        let i = KNOWN
            .iter()
            .position(|k| *k == name)
            .expect("a known attribute");
        self.known[i].take().filter(|v| !is_null(v))
    }

    fn take_string(&mut self, name: &str) -> Result<Option<String>, InvalidEvent> {
        self.take(name).map(|raw| string(name, raw)).transpose()
    }

    fn require_string(&mut self, name: &str) -> Result<String, InvalidEvent> {
        self.take_string(name)?
            .ok_or_else(|| InvalidEvent::new(format!("missing required attribute {name:?}")))
    }

    // Long by design: one CloudEvents attribute after another, each with its own rule.
    fn into_event(mut self) -> Result<Event, InvalidEvent> {
        self.others.retain(|_, v| !is_null(v));
        for name in STORE_SET_ATTRIBUTES {
            if self.others.contains_key(name) {
                return Err(InvalidEvent::new(format!(
                    "attribute {name:?} is set by the store and may not be sent by clients"
                )));
            }
        }
        match self.take_string("specversion")? {
            None => {
                return Err(InvalidEvent::new(
                    "missing required attribute \"specversion\"",
                ));
            }
            Some(v) if v != SPEC_VERSION => {
                return Err(InvalidEvent::new(format!(
                    "specversion {v:?} is not supported; Loom accepts \"1.0\""
                )));
            }
            Some(_) => {}
        }
        let id = self.require_string("id")?;
        let source = self.require_string("source")?;
        let ty = self.require_string("type")?;
        let subject = self.require_string("subject")?;
        let time = self.take_string("time")?;
        let datacontenttype = self.take_string("datacontenttype")?;
        let dataschema = self.take_string("dataschema")?;
        let data_raw = self.take("data");
        let data_base64 = self.take_string("data_base64")?;
        let data = match (data_raw, data_base64) {
            (Some(_), Some(_)) => {
                return Err(InvalidEvent::new(
                    "an event may carry \"data\" or \"data_base64\", not both",
                ));
            }
            (None, Some(b64)) => Some(Data::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| InvalidEvent::new(format!("data_base64 is not base64: {e}")))?,
            )),
            (Some(raw), None) => {
                let is_json = datacontenttype.as_deref().is_none_or(is_json_content_type);
                if !is_json && raw.get().starts_with('"') {
                    Some(Data::Text(string("data", raw)?))
                } else {
                    Some(Data::Json(compact_raw(raw)))
                }
            }
            (None, None) => None,
        };
        let mut extensions = BTreeMap::new();
        for (name, raw) in self.others {
            check_extension_name(&name)?;
            let value = extension(&name, raw)?;
            extensions.insert(name.into_owned(), value);
        }
        let event = Event {
            id,
            source,
            ty,
            subject,
            time,
            datacontenttype,
            dataschema,
            data,
            extensions,
        };
        event.validate()?;
        Ok(event)
    }
}

fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// The string a raw JSON value holds; an error naming the attribute when it is not a string.
fn string(name: &str, raw: &RawValue) -> Result<String, InvalidEvent> {
    let text = raw.get();
    // The parser checked the literal: without a backslash, what is between the quotes is the
    // string itself (a JSON string cannot hold raw control characters).
    if let Some(inner) = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|inner| !inner.contains('\\'))
    {
        return Ok(inner.to_owned());
    }
    serde_json::from_str::<String>(text)
        .map_err(|_| InvalidEvent::new(format!("attribute {name:?} must be a string, not {text}")))
}

fn extension(name: &str, raw: &RawValue) -> Result<ExtensionValue, InvalidEvent> {
    let value: serde_json::Value = serde_json::from_str(raw.get())
        .map_err(|e| InvalidEvent::new(format!("extension {name:?}: {e}")))?;
    Ok(match value {
        serde_json::Value::String(s) => ExtensionValue::String(s),
        serde_json::Value::Bool(b) => ExtensionValue::Bool(b),
        serde_json::Value::Number(n) if n.is_i64() => {
            ExtensionValue::Integer(n.as_i64().expect("checked is_i64"))
        }
        other => {
            return Err(InvalidEvent::new(format!(
                "extension attribute {name:?} must be a string, boolean or integer, not {other}"
            )));
        }
    })
}

/// Removes insignificant whitespace from valid JSON text without touching anything else
/// (numbers keep their exact spelling, strings are untouched). Works on bytes: JSON's
/// structure and whitespace are ASCII, which never occurs inside a multi-byte UTF-8 sequence.
pub(super) fn compact_raw(raw: &RawValue) -> Box<RawValue> {
    let text = raw.get().as_bytes();
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < text.len() {
        let start = i;
        if text[i] == b'"' {
            i += 1;
            while text[i] != b'"' {
                i += if text[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if is_space(text[i]) {
            // The first whitespace to remove: from here on, copy what stays.
            out.get_or_insert_with(|| {
                let mut v = Vec::with_capacity(text.len());
                v.extend_from_slice(&text[..start]);
                v
            });
            while i < text.len() && is_space(text[i]) {
                i += 1;
            }
            continue;
        } else {
            while i < text.len() && text[i] != b'"' && !is_space(text[i]) {
                i += 1;
            }
        }
        if let Some(out) = out.as_mut() {
            out.extend_from_slice(&text[start..i]);
        }
    }
    match out {
        // Nothing removed: the text is already compact, and known to be valid JSON.
        None => raw.to_owned(),
        Some(out) => {
            let out = String::from_utf8(out).expect("removing ASCII whitespace keeps UTF-8");
            RawValue::from_string(out).expect("compacting valid JSON keeps it valid")
        }
    }
}

impl<'de> de::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        let mut members = Members::default();
        while let Some(name) = map.next_key_seed(Name)? {
            let value: &'de RawValue = map.next_value()?;
            match KNOWN.iter().position(|k| *k == name) {
                Some(i) => members.known[i] = Some(value),
                None => {
                    members.others.insert(name, value);
                }
            }
        }
        Ok(members)
    }
}

/// A member's name, borrowed from the input unless it holds escapes.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests;
