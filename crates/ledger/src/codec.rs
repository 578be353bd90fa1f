//! The on-disk encoding of a stored event (value of the `events` table). See docs/design.md.
//!
//! ```text
//! u8   format version (1)
//! u64  revision            (little endian)
//! i64  recorded time, µs   (little endian)
//! str  id, source, type, subject
//! ostr time, datacontenttype, dataschema
//! u8   data kind: 0 none, 1 JSON text, 2 text, 3 binary; then bytes (u32 length + bytes)
//! u32  extension count; each: str name, u8 kind (0 string, 1 bool, 2 integer), value
//! ```
//! `str` is a u32 little-endian length and UTF-8 bytes; `ostr` uses length `u32::MAX` for
//! "absent".

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::event::{Data, Event, ExtensionValue, StoredEvent};

const FORMAT_V1: u8 = 1;
const ABSENT: u32 = u32::MAX;

pub(crate) fn encode(revision: u64, recorded_micros: i64, e: &Event, out: &mut Vec<u8>) {
    out.clear();
    out.push(FORMAT_V1);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&recorded_micros.to_le_bytes());
    put_str(out, &e.id);
    put_str(out, &e.source);
    put_str(out, &e.ty);
    put_str(out, &e.subject);
    put_opt(out, e.time.as_deref());
    put_opt(out, e.datacontenttype.as_deref());
    put_opt(out, e.dataschema.as_deref());
    match &e.data {
        None => out.push(0),
        Some(Data::Json(raw)) => {
            out.push(1);
            put_bytes(out, raw.get().as_bytes());
        }
        Some(Data::Text(t)) => {
            out.push(2);
            put_bytes(out, t.as_bytes());
        }
        Some(Data::Binary(b)) => {
            out.push(3);
            put_bytes(out, b);
        }
    }
    out.extend_from_slice(&(e.extensions.len() as u32).to_le_bytes());
    for (name, value) in &e.extensions {
        put_str(out, name);
        match value {
            ExtensionValue::String(s) => {
                out.push(0);
                put_str(out, s);
            }
            ExtensionValue::Bool(b) => {
                out.push(1);
                out.push(u8::from(*b));
            }
            ExtensionValue::Integer(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "record truncated: wanted {n} bytes, {} left",
                self.buf.len()
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|e| format!("invalid UTF-8: {e}"))
    }
    fn string(&mut self) -> Result<String, String> {
        self.str().map(str::to_owned)
    }
    fn opt(&mut self) -> Result<Option<String>, String> {
        let n = self.u32()?;
        if n == ABSENT {
            return Ok(None);
        }
        let b = self.take(n as usize)?;
        std::str::from_utf8(b)
            .map(|s| Some(s.to_owned()))
            .map_err(|e| format!("invalid UTF-8: {e}"))
    }
}

/// The attributes a selector needs, read without decoding the rest of the record.
pub(crate) struct Header<'a> {
    pub(crate) ty: &'a str,
    pub(crate) subject: &'a str,
}

pub(crate) fn decode_header(buf: &[u8]) -> Result<Header<'_>, String> {
    let mut r = Reader { buf };
    if r.u8()? != FORMAT_V1 {
        return Err("unknown record format".into());
    }
    r.take(16)?;
    r.bytes()?; // id
    r.bytes()?; // source
    let ty = r.str()?;
    let subject = r.str()?;
    Ok(Header { ty, subject })
}

pub(crate) fn decode(position: u64, buf: &[u8]) -> Result<StoredEvent, String> {
    let mut r = Reader { buf };
    let version = r.u8()?;
    if version != FORMAT_V1 {
        return Err(format!("unknown record format {version}"));
    }
    let revision = r.u64()?;
    let recorded_micros = r.i64()?;
    let id = r.string()?;
    let source = r.string()?;
    let ty = r.string()?;
    let subject = r.string()?;
    let time = r.opt()?;
    let datacontenttype = r.opt()?;
    let dataschema = r.opt()?;
    let data = match r.u8()? {
        0 => None,
        1 => {
            let text = r.string()?;
            Some(Data::Json(
                RawValue::from_string(text).map_err(|e| format!("stored JSON data: {e}"))?,
            ))
        }
        2 => Some(Data::Text(r.string()?)),
        3 => Some(Data::Binary(r.bytes()?.to_vec())),
        k => return Err(format!("unknown data kind {k}")),
    };
    let n = r.u32()?;
    let mut extensions = BTreeMap::new();
    for _ in 0..n {
        let name = r.string()?;
        let value = match r.u8()? {
            0 => ExtensionValue::String(r.string()?),
            1 => ExtensionValue::Bool(r.u8()? != 0),
            2 => ExtensionValue::Integer(r.i64()?),
            k => return Err(format!("unknown extension kind {k}")),
        };
        extensions.insert(name, value);
    }
    Ok(StoredEvent {
        position,
        revision,
        recorded_micros,
        event: Event {
            id,
            source,
            ty,
            subject,
            time,
            datacontenttype,
            dataschema,
            data,
            extensions,
        },
    })
}
