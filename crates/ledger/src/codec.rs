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

use crate::event::{Data, Event, ExtensionValue};
use crate::view::{DataRef, EventView, ExtensionRef, Extensions};

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

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }
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
    fn opt(&mut self) -> Result<Option<&'a str>, String> {
        let n = self.u32()?;
        if n == ABSENT {
            return Ok(None);
        }
        let b = self.take(n as usize)?;
        std::str::from_utf8(b)
            .map(Some)
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

/// A zero-copy view of a record; every field is checked, so iterating the view's extensions
/// later cannot fail.
pub(crate) fn decode_view(position: u64, buf: &[u8]) -> Result<EventView<'_>, String> {
    let mut r = Reader { buf };
    let version = r.u8()?;
    if version != FORMAT_V1 {
        return Err(format!("unknown record format {version}"));
    }
    let revision = r.u64()?;
    let recorded_micros = r.i64()?;
    let id = r.str()?;
    let source = r.str()?;
    let ty = r.str()?;
    let subject = r.str()?;
    let time = r.opt()?;
    let datacontenttype = r.opt()?;
    let dataschema = r.opt()?;
    let data = match r.u8()? {
        0 => DataRef::None,
        1 => DataRef::Json(r.str()?),
        2 => DataRef::Text(r.str()?),
        3 => DataRef::Binary(r.bytes()?),
        k => return Err(format!("unknown data kind {k}")),
    };
    let count = r.u32()?;
    let bytes = r.buf;
    for _ in 0..count {
        extension(&mut r)?;
    }
    Ok(EventView {
        position,
        revision,
        recorded_micros,
        id,
        source,
        ty,
        subject,
        time,
        datacontenttype,
        dataschema,
        data,
        extensions: Extensions { count, bytes },
    })
}

/// One extension attribute: name and value.
pub(crate) fn extension<'a>(r: &mut Reader<'a>) -> Result<(&'a str, ExtensionRef<'a>), String> {
    let name = r.str()?;
    let value = match r.u8()? {
        0 => ExtensionRef::String(r.str()?),
        1 => ExtensionRef::Bool(r.u8()? != 0),
        2 => ExtensionRef::Integer(r.i64()?),
        k => return Err(format!("unknown extension kind {k}")),
    };
    Ok((name, value))
}
