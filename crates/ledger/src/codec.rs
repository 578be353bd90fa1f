//! The on-disk encoding of a stored event (a record in the `events` table or in a segment,
//! see `records`; also the write-ahead log's events). See docs/design.md.
//!
//! Format 2, written since segments:
//!
//! ```text
//! u8        format version (2)
//! u64       revision            (little endian)
//! i64       recorded time, µs   (little endian)
//! u8        data kind: 0 none, 1 JSON text, 2 text, 3 binary
//! u32 × 8   lengths of id, source, type, subject, time, datacontenttype, dataschema, data
//!           (u32::MAX: an absent optional attribute; 0 for data of kind none)
//! text      id, source, type, subject, time, datacontenttype, dataschema and text data,
//!           one after the other: one UTF-8 run, checked with one call
//! bytes     binary data
//! u32       extension count; each: str name, u8 kind (0 string, 1 bool, 2 integer), value
//! ```
//!
//! Format 1, read in records stored before (every string with its own length in front):
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

use loom_core::wire::{ABSENT, Reader, extension, put_extensions};
use loom_core::{Data, Event};
use loom_core::{DataRef, EventView, Extensions};

const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;

pub(crate) fn encode(revision: u64, recorded_micros: i64, e: &Event, out: &mut Vec<u8>) {
    out.clear();
    out.push(FORMAT_V2);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&recorded_micros.to_le_bytes());
    let (kind, data): (u8, &[u8]) = match &e.data {
        None => (0, &[]),
        Some(Data::Json(raw)) => (1, raw.get().as_bytes()),
        Some(Data::Text(t)) => (2, t.as_bytes()),
        Some(Data::Binary(b)) => (3, b),
    };
    out.push(kind);
    let opt = |s: &Option<String>| s.as_ref().map_or(ABSENT, |s| s.len() as u32);
    for len in [
        e.id.len() as u32,
        e.source.len() as u32,
        e.ty.len() as u32,
        e.subject.len() as u32,
        opt(&e.time),
        opt(&e.datacontenttype),
        opt(&e.dataschema),
        data.len() as u32,
    ] {
        out.extend_from_slice(&len.to_le_bytes());
    }
    for s in [&e.id, &e.source, &e.ty, &e.subject] {
        out.extend_from_slice(s.as_bytes());
    }
    for s in [&e.time, &e.datacontenttype, &e.dataschema]
        .into_iter()
        .flatten()
    {
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(data);
    put_extensions(out, &e.extensions);
}

/// The attributes a selector needs, read without decoding the rest of the record.
pub(crate) struct Header<'a> {
    pub(crate) ty: &'a str,
    pub(crate) subject: &'a str,
}

pub(crate) fn decode_header(buf: &[u8]) -> Result<Header<'_>, String> {
    let mut r = Reader::new(buf);
    match r.u8()? {
        FORMAT_V2 => {
            let layout = Layout::of(buf)?;
            Ok(Header {
                ty: layout.attribute(2)?,
                subject: layout.attribute(3)?,
            })
        }
        FORMAT_V1 => {
            r.take(16)?;
            r.bytes()?; // id
            r.bytes()?; // source
            let ty = r.str()?;
            let subject = r.str()?;
            Ok(Header { ty, subject })
        }
        version => Err(format!("unknown record format {version}")),
    }
}

/// A zero-copy view of a record; every field is checked, so iterating the view's extensions
/// later cannot fail.
pub(crate) fn decode_view(position: u64, buf: &[u8]) -> Result<EventView<'_>, String> {
    let mut r = Reader::new(buf);
    match r.u8()? {
        FORMAT_V2 => Layout::of(buf)?.view(position),
        FORMAT_V1 => decode_v1(position, r),
        version => Err(format!("unknown record format {version}")),
    }
}

/// Bytes of a format-2 record before its text.
const V2_HEADER: usize = 1 + 8 + 8 + 1 + 8 * 4;

/// Where a format-2 record's attributes are, read from its header alone: nothing in the
/// text is checked yet. Every offset is inside the record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout<'a> {
    pub(crate) revision: u64,
    pub(crate) recorded_micros: i64,
    kind: u8,
    lens: [u32; 8],
    /// End of each attribute in `text` (an absent one ends where the one before did).
    ends: [usize; 8],
    /// The attributes' text, unchecked.
    text: &'a [u8],
    /// Binary data, the extension count and the extensions.
    rest: &'a [u8],
}

impl<'a> Layout<'a> {
    /// Reads the header of `buf` (a format-2 record) and checks that what it describes fits.
    pub(crate) fn of(buf: &'a [u8]) -> Result<Layout<'a>, String> {
        let head: &[u8; V2_HEADER] = buf
            .get(..V2_HEADER)
            .and_then(|h| h.try_into().ok())
            .ok_or("record truncated in its header")?;
        if head[0] != FORMAT_V2 {
            return Err(format!("unknown record format {}", head[0]));
        }
        let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
        let len_at =
            |i: usize| u32::from_le_bytes(head[18 + 4 * i..22 + 4 * i].try_into().expect("4"));
        let kind = head[17];
        let lens: [u32; 8] = std::array::from_fn(len_at);
        if lens[..4].contains(&ABSENT) {
            return Err("a required attribute is marked absent".into());
        }
        match kind {
            0 if lens[7] != 0 => return Err("data of kind none has a length".into()),
            0..=3 => {}
            k => return Err(format!("unknown data kind {k}")),
        }
        let mut ends = [0usize; 8];
        let mut at = 0;
        for (i, &len) in lens.iter().enumerate() {
            // Binary data is not text.
            if len != ABSENT && (i < 7 || matches!(kind, 1 | 2)) {
                at += len as usize;
            }
            ends[i] = at;
        }
        let body = &buf[V2_HEADER..];
        let text = body.get(..at).ok_or("record truncated in its text")?;
        let rest = &body[at..];
        if kind == 3 && rest.len() < lens[7] as usize {
            return Err("record truncated in its binary data".into());
        }
        Ok(Layout {
            revision: u64_at(1),
            recorded_micros: u64_at(9) as i64,
            kind,
            lens,
            ends,
            text,
            rest,
        })
    }

    fn span(&self, i: usize) -> &'a [u8] {
        &self.text[if i == 0 { 0 } else { self.ends[i - 1] }..self.ends[i]]
    }

    /// Attribute `i` (0 id, 1 source, 2 type, 3 subject), checked.
    pub(crate) fn attribute(&self, i: usize) -> Result<&'a str, String> {
        std::str::from_utf8(self.span(i)).map_err(|e| format!("invalid UTF-8: {e}"))
    }

    #[cfg(feature = "bench")]
    /// The data, checked.
    pub(crate) fn data(&self) -> Result<DataRef<'a>, String> {
        Ok(match self.kind {
            1 => DataRef::Json(self.attribute(7)?),
            2 => DataRef::Text(self.attribute(7)?),
            3 => DataRef::Binary(&self.rest[..self.lens[7] as usize]),
            _ => DataRef::None,
        })
    }

    /// The whole event, checked: the text of all its string attributes as UTF-8 in one
    /// call, then cut at character boundaries. Catch-up reads every record through here, so
    /// the happy path does no more than that (errors are described only when there is one).
    pub(crate) fn view(&self, position: u64) -> Result<EventView<'a>, String> {
        let text = std::str::from_utf8(self.text).map_err(|e| format!("invalid UTF-8: {e}"))?;
        if !self.ends.iter().all(|&end| text.is_char_boundary(end)) {
            return Err("an attribute does not end on a character boundary".into());
        }
        // Every end is a character boundary in `text`, so no cut below can fail.
        let ends = &self.ends;
        let cut = |i: usize| {
            text.get(if i == 0 { 0 } else { ends[i - 1] }..ends[i])
                .unwrap_or("")
        };
        let opt = |i: usize| (self.lens[i] != ABSENT).then(|| cut(i));
        let mut r = Reader::new(self.rest);
        let data = match self.kind {
            1 => DataRef::Json(cut(7)),
            2 => DataRef::Text(cut(7)),
            3 => DataRef::Binary(r.take(self.lens[7] as usize)?),
            _ => DataRef::None,
        };
        Ok(EventView {
            position,
            revision: self.revision,
            recorded_micros: self.recorded_micros,
            id: cut(0),
            source: cut(1),
            ty: cut(2),
            subject: cut(3),
            time: opt(4),
            datacontenttype: opt(5),
            dataschema: opt(6),
            data,
            extensions: extensions(&mut r)?,
        })
    }
}

#[cfg(feature = "bench")]
/// Whether `buf` is a record of format 2 (else [`decode_view`] reads it, or says why not).
pub(crate) fn is_v2(buf: &[u8]) -> bool {
    buf.first() == Some(&FORMAT_V2)
}

/// A format-1 record after its version byte.
fn decode_v1(position: u64, mut r: Reader<'_>) -> Result<EventView<'_>, String> {
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
        extensions: extensions(&mut r)?,
    })
}

/// Reads and checks the extensions (the end of both formats), so that iterating them later
/// cannot fail.
fn extensions<'a>(r: &mut Reader<'a>) -> Result<Extensions<'a>, String> {
    let count = r.u32()?;
    let bytes = r.rest();
    for _ in 0..count {
        extension(r)?;
    }
    Ok(Extensions::encoded(count, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::EventRecord;
    use loom_core::ExtensionValue;

    fn sample() -> Event {
        let mut e = Event::new(
            "src",
            "é-1",
            "was_written",
            "note/ü",
            serde_json::json!({"amount": 5, "memo": "✓"}),
        );
        e.time = Some("2026-11-28T03:00:00Z".into());
        e.extensions
            .insert("attempt".into(), ExtensionValue::Integer(-3));
        e
    }

    fn encoded(e: &Event) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(7, 1_700_000_000_000_000, e, &mut buf);
        buf
    }

    #[test]
    fn the_size_bound_covers_a_record_and_its_place_in_a_group() {
        let mut many = sample();
        for i in 0..50 {
            let name = format!("x{i}");
            let value = match i % 3 {
                0 => ExtensionValue::Bool(true),
                1 => ExtensionValue::Integer(i),
                _ => ExtensionValue::String("v".repeat(i as usize)),
            };
            many.extensions.insert(name, value);
        }
        let mut bare = Event::new("s", "i", "t", "a/b", serde_json::Value::Null);
        bare.data = None;
        let mut binary = sample();
        binary.data = Some(Data::Binary(vec![0xff; 1000]));
        binary.datacontenttype = Some("application/octet-stream".into());
        binary.dataschema = Some("urn:schema".into());
        for e in [sample(), many, bare, binary] {
            // A group adds a stream id and a length in front of each record.
            let needed = encoded(&e).len() + 12;
            let bound = crate::log::group::record_size_bound(&e);
            assert!(bound >= needed, "{bound} < {needed} for {e:?}");
        }
    }

    #[test]
    fn a_record_reads_back_whole_and_lazily() {
        let e = sample();
        let buf = encoded(&e);
        let view = decode_view(3, &buf).unwrap();
        let stored = view.to_stored().unwrap();
        assert_eq!((stored.position, stored.revision), (3, 7));
        assert_eq!(stored.event, e);
        let r = EventRecord::new(3, &buf).unwrap();
        assert_eq!((r.position(), r.revision()), (3, 7));
        assert_eq!(r.recorded_micros(), 1_700_000_000_000_000);
        assert_eq!(
            (r.ty().unwrap(), r.subject().unwrap()),
            ("was_written", "note/ü")
        );
        assert_eq!(r.data().unwrap(), view.data);
        assert_eq!(r.view().unwrap().to_stored().unwrap(), stored);
        let header = decode_header(&buf).unwrap();
        assert_eq!((header.ty, header.subject), ("was_written", "note/ü"));
    }

    #[test]
    fn cut_or_damaged_records_are_errors_not_panics() {
        let buf = encoded(&sample());
        for n in 0..buf.len() {
            assert!(decode_view(1, &buf[..n]).is_err(), "cut at {n}");
            let _ = decode_header(&buf[..n]);
            if let Ok(r) = EventRecord::new(1, &buf[..n]) {
                let _ = (r.ty(), r.subject(), r.data());
                assert!(r.view().is_err(), "cut at {n}");
            }
        }
        for i in 0..buf.len() {
            for b in [0x00, 0x7f, 0x80, 0xc3, 0xff] {
                let mut bad = buf.clone();
                bad[i] = b;
                let _ = decode_view(1, &bad);
                let _ = decode_header(&bad);
                if let Ok(r) = EventRecord::new(1, &bad) {
                    let _ = (r.ty(), r.subject(), r.data(), r.view());
                }
            }
        }
    }

    #[test]
    fn text_is_checked_when_asked_for_and_cut_only_at_character_boundaries() {
        let mut e = sample();
        e.data = Some(Data::Json(
            serde_json::value::RawValue::from_string("\"xx\"".into()).unwrap(),
        ));
        let mut buf = encoded(&e);
        // Invalid UTF-8 in the data: a lazy record reads its type, not its data.
        let data_at = buf.windows(4).position(|w| w == b"\"xx\"").unwrap();
        buf[data_at + 1] = 0xff;
        let r = EventRecord::new(1, &buf).unwrap();
        assert_eq!(r.ty().unwrap(), "was_written");
        assert!(r.data().is_err());
        assert!(r.view().is_err());
        assert!(decode_view(1, &buf).is_err());

        // Valid text as a whole, but the id's length ends inside the 'é' ("é-1" is 4 bytes).
        let mut buf = encoded(&sample());
        buf[18..22].copy_from_slice(&1u32.to_le_bytes());
        buf[22..26].copy_from_slice(&6u32.to_le_bytes()); // "src" takes the rest of "é-1"
        let err = decode_view(1, &buf).unwrap_err();
        assert!(err.contains("character boundary"), "{err}");
        assert!(EventRecord::new(1, &buf).unwrap().view().is_err());
    }
}
