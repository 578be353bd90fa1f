//! Loom guest ABI, versions 1 and 2: the constants and byte encodings shared by the host
//! (`loom-runtime`) and guests (`loom-guest`). The normative description is `docs/abi.md`.
//!
//! Version 2 keeps every layout of version 1 and adds: named reducers (entry points exported
//! as `evolve.{name}`, `decide.{name}`, …), a self-description (`loom_describe`), and a
//! context for `decide` ([`decide::encode_v2`]).
//!
//! Everything here is plain `std` with no dependencies so that it compiles to
//! `wasm32-unknown-unknown` as cheaply as for the host.
//!
//! Layouts use little-endian integers. `bytes` is a `u32` length followed by that many bytes;
//! the length [`ABSENT`] marks an absent value (no bytes follow).

#![forbid(unsafe_code)]

/// ABI version 1, which a module reports from `loom_abi_version`: one reducer per module,
/// entry points named `evolve`, `decide`, `react`, `query`.
pub const ABI_VERSION: u32 = 1;
/// ABI version 2: any number of named reducers, described by `loom_describe`.
pub const ABI_VERSION_2: u32 = 2;
/// The versions a host of this crate runs.
pub const SUPPORTED_VERSIONS: [u32; 2] = [ABI_VERSION, ABI_VERSION_2];

/// The only import module an ABI v1 module may import from.
pub const IMPORT_MODULE: &str = "loom_v1";
/// The only import module an ABI v2 module may import from (the same `log`).
pub const IMPORT_MODULE_V2: &str = "loom_v2";
/// `loom_v1.log(level: i32, ptr: i32, len: i32)`: a UTF-8 log line from the guest.
pub const IMPORT_LOG: &str = "log";

/// Export: the guest's linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// Export: `loom_abi_version() -> i32`.
pub const EXPORT_ABI_VERSION: &str = "loom_abi_version";
/// Export: `loom_alloc(len: i32) -> i32`, a guest buffer the host writes the input into.
pub const EXPORT_ALLOC: &str = "loom_alloc";
/// Entry point: fold events into a state.
pub const EXPORT_EVOLVE: &str = "evolve";
/// Entry point: a command and a state into events.
pub const EXPORT_DECIDE: &str = "decide";
/// Entry point: an event into a reaction.
pub const EXPORT_REACT: &str = "react";
/// Entry point: a state and parameters into an answer.
pub const EXPORT_QUERY: &str = "query";
/// Entry points; each is `(ptr: i32, len: i32) -> i64` returning `(out_ptr << 32) | out_len`.
pub const ENTRY_POINTS: [&str; 4] = [EXPORT_EVOLVE, EXPORT_DECIDE, EXPORT_REACT, EXPORT_QUERY];

/// Optional entry point: [`evolve`] over many independent groups in one call (see
/// [`evolve_groups`]). A module that exports it must also export `evolve`.
pub const EXPORT_EVOLVE_GROUPS: &str = "evolve_groups";

/// ABI v2 export: `loom_describe(ptr, len) -> i64`, called with an empty input; answers status
/// 0 and the module's description as JSON (`{"reducers": [...]}`, docs/abi.md §10).
pub const EXPORT_DESCRIBE: &str = "loom_describe";

/// The export name of an entry point of a named reducer (ABI v2): `evolve.books`.
pub fn reducer_export(entry: &str, reducer: &str) -> String {
    let mut name = String::with_capacity(entry.len() + 1 + reducer.len());
    name.push_str(entry);
    name.push('.');
    name.push_str(reducer);
    name
}

/// Splits an ABI v2 export name into entry point and reducer: `evolve.books` → `("evolve",
/// "books")`. `None` for any other name (the reducer may itself contain dots).
pub fn split_reducer_export(name: &str) -> Option<(&str, &str)> {
    let (entry, reducer) = name.split_once('.')?;
    let known = ENTRY_POINTS.contains(&entry) || entry == EXPORT_EVOLVE_GROUPS;
    (known && !reducer.is_empty()).then_some((entry, reducer))
}

/// Length marking an absent `bytes` value.
pub const ABSENT: u32 = u32::MAX;

/// First byte of every output: what the rest is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CallStatus {
    /// Success; the payload is the entry point's result (JSON).
    Ok = 0,
    /// A domain rejection (e.g. a command refused by `decide`); payload is JSON.
    Rejected = 1,
    /// The guest failed (bad input, a bug); payload is a UTF-8 message.
    Error = 2,
}

impl CallStatus {
    /// The status for a byte, if it is one.
    pub fn from_byte(b: u8) -> Option<CallStatus> {
        match b {
            0 => Some(CallStatus::Ok),
            1 => Some(CallStatus::Rejected),
            2 => Some(CallStatus::Error),
            _ => None,
        }
    }
}

/// Packs an output pointer and length into the `i64` an entry point returns.
pub fn pack(ptr: u32, len: u32) -> i64 {
    (((ptr as u64) << 32) | len as u64) as i64
}

/// Splits an entry point's `i64` result into pointer and length.
pub fn unpack(v: i64) -> (u32, u32) {
    let v = v as u64;
    ((v >> 32) as u32, v as u32)
}

/// How an event's data is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DataKind {
    /// No data.
    None = 0,
    /// JSON text.
    Json = 1,
    /// UTF-8 text.
    Text = 2,
    /// Raw bytes.
    Binary = 3,
}

/// An event as the guest sees it, borrowing from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Global position.
    pub position: u64,
    /// Revision in its stream.
    pub revision: u64,
    /// Commit time, µs since the Unix epoch.
    pub recorded_micros: i64,
    /// CloudEvents `type`.
    pub ty: &'a str,
    /// `subject`: `{entity}/{key}`.
    pub subject: &'a str,
    /// `id`.
    pub id: &'a str,
    /// `source`.
    pub source: &'a str,
    /// `time` as sent, if any.
    pub time: Option<&'a str>,
    /// `datacontenttype`, if any.
    pub datacontenttype: Option<&'a str>,
    /// How `data` is carried.
    pub data_kind: DataKind,
    /// The data bytes (JSON text for [`DataKind::Json`]).
    pub data: &'a [u8],
    /// Extension attributes as a JSON object text (`{}` when none).
    pub extensions: &'a str,
}

impl<'a> EventRef<'a> {
    /// The entity part of the subject.
    pub fn entity(&self) -> &'a str {
        self.subject
            .split_once('/')
            .map_or(self.subject, |(e, _)| e)
    }
    /// The key part of the subject.
    pub fn key(&self) -> &'a str {
        self.subject.split_once('/').map_or("", |(_, k)| k)
    }
}

/// Where an [`Encoder`] writes.
pub trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A [`Sink`] over a buffer sized in advance, e.g. the guest's own memory, so that an input is
/// written once, where it is read. Bytes beyond the end are not written; [`SliceSink::check`]
/// says whether the buffer was filled exactly.
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    at: usize,
    overflow: bool,
}

impl<'a> SliceSink<'a> {
    /// A sink writing `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> SliceSink<'a> {
        SliceSink {
            buf,
            at: 0,
            overflow: false,
        }
    }

    /// `Ok` when exactly the whole buffer was written.
    pub fn check(&self) -> Result<(), SizeMismatch> {
        if self.overflow || self.at != self.buf.len() {
            return Err(SizeMismatch {
                buffer: self.buf.len(),
                written: self.at,
                overflow: self.overflow,
            });
        }
        Ok(())
    }
}

impl Sink for SliceSink<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.at..self.at + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.at += bytes.len();
            }
            None => self.overflow = true,
        }
    }
}

/// An encoding did not fill the buffer sized for it: a bug in the sizing, reported instead of
/// handing the guest a truncated or padded input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeMismatch {
    /// The buffer's size.
    pub buffer: usize,
    /// Bytes written before it ended or overflowed.
    pub written: usize,
    /// Whether more was to be written than fit.
    pub overflow: bool,
}

impl std::fmt::Display for SizeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.overflow {
            write!(f, "an input overflowed its {}-byte buffer", self.buffer)
        } else {
            write!(
                f,
                "an input filled {} bytes of its {}-byte buffer",
                self.written, self.buffer
            )
        }
    }
}

impl std::error::Error for SizeMismatch {}

/// Writes ABI byte layouts, into a vector (the default) or any other [`Sink`].
#[derive(Debug, Default)]
pub struct Encoder<S = Vec<u8>> {
    buf: S,
}

impl Encoder {
    /// An empty writer.
    pub fn new() -> Encoder {
        Encoder::default()
    }
    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Encoder {
        Encoder {
            buf: Vec::with_capacity(n),
        }
    }
    /// How many bytes are written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Whether nothing is written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
    /// How many bytes [`Encoder::event`] writes for `e`.
    pub fn event_len(e: &EventRef<'_>) -> usize {
        let opt = |v: Option<&str>| v.map_or(0, str::len);
        // Three 8-byte numbers, eight lengths, the data kind, then the variable parts.
        3 * 8
            + 8 * 4
            + 1
            + e.ty.len()
            + e.subject.len()
            + e.id.len()
            + e.source.len()
            + opt(e.time)
            + opt(e.datacontenttype)
            + e.data.len()
            + e.extensions.len()
    }
}

impl<'a> Encoder<SliceSink<'a>> {
    /// A writer into `buf`, which the encoding should fill exactly ([`SliceSink::check`]).
    pub fn over(buf: &'a mut [u8]) -> Self {
        Encoder {
            buf: SliceSink::new(buf),
        }
    }
    /// `Ok` when exactly the whole buffer was written.
    pub fn check(&self) -> Result<(), SizeMismatch> {
        self.buf.check()
    }
}

impl<S: Sink> Encoder<S> {
    /// A `u8`.
    pub fn u8(&mut self, v: u8) {
        self.buf.put(&[v]);
    }
    /// A `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.put(&v.to_le_bytes());
    }
    /// A `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.put(&v.to_le_bytes());
    }
    /// An `i64`.
    pub fn i64(&mut self, v: i64) {
        self.buf.put(&v.to_le_bytes());
    }
    /// A `bytes` value.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.put(b);
    }
    /// An optional `bytes` value.
    pub fn opt_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bytes(b),
            None => self.u32(ABSENT),
        }
    }
    /// One event (layout in `docs/abi.md`).
    pub fn event(&mut self, e: &EventRef<'_>) {
        self.u64(e.position);
        self.u64(e.revision);
        self.i64(e.recorded_micros);
        self.bytes(e.ty.as_bytes());
        self.bytes(e.subject.as_bytes());
        self.bytes(e.id.as_bytes());
        self.bytes(e.source.as_bytes());
        self.opt_bytes(e.time.map(str::as_bytes));
        self.opt_bytes(e.datacontenttype.map(str::as_bytes));
        self.u8(e.data_kind as u8);
        self.bytes(e.data);
        self.bytes(e.extensions.as_bytes());
    }
}

/// Why an ABI buffer could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed ABI buffer: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

// Error construction stays out of line so the inlined readers stay small.
#[cold]
#[inline(never)]
fn too_short(wanted: usize, left: usize) -> DecodeError {
    DecodeError(format!("wanted {wanted} bytes, {left} left"))
}

#[cold]
#[inline(never)]
fn not_utf8(e: std::str::Utf8Error) -> DecodeError {
    DecodeError(e.to_string())
}

/// Reads ABI byte layouts.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// A reader over `buf`.
    #[inline]
    pub fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder { buf }
    }
    /// Bytes not read yet.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(too_short(n, self.buf.len()));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    /// A `u8`.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// A `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A `u64`.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// An `i64`.
    #[inline]
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    /// A `bytes` value (absent reads as empty).
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        Ok(self.opt_bytes()?.unwrap_or(&[]))
    }
    /// An optional `bytes` value.
    #[inline]
    pub fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let n = self.u32()?;
        if n == ABSENT {
            return Ok(None);
        }
        self.take(n as usize).map(Some)
    }
    #[inline]
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(not_utf8)
    }
    #[inline]
    fn opt_str(&mut self) -> Result<Option<&'a str>, DecodeError> {
        match self.opt_bytes()? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b).map(Some).map_err(not_utf8),
        }
    }
    /// The four attributes that follow each other, `type`, `subject`, `id` and `source`,
    /// checked as UTF-8 in one pass over all four with their length prefixes. When each
    /// prefix byte is below 0x80 (every length below 128, and many above), the prefixes are
    /// ASCII, so every field starts and ends on a character boundary of the checked text and
    /// is valid UTF-8 itself. Otherwise each field is checked alone. One longer check costs a
    /// guest less than four short ones.
    #[inline]
    fn attributes(&mut self) -> Result<[&'a str; 4], DecodeError> {
        let all = self.buf;
        let mut spans = [(0usize, 0usize); 4];
        let mut at = 0;
        for span in &mut spans {
            let prefix = match all.get(at..at + 4) {
                Some(p) if p.iter().all(u8::is_ascii) => p,
                // A prefix that is not ASCII (or too short, reported below): field by field.
                _ => return Ok([self.str()?, self.str()?, self.str()?, self.str()?]),
            };
            let n = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
            let end = at + 4 + n;
            if all.len() < end {
                return Err(too_short(end - at, all.len() - at));
            }
            *span = (at + 4, end);
            at = end;
        }
        let text = std::str::from_utf8(&all[..at]).map_err(not_utf8)?;
        self.buf = &all[at..];
        let field = |(start, end): (usize, usize)| {
            text.get(start..end)
                .ok_or_else(|| DecodeError("an attribute splits a character".into()))
        };
        Ok([
            field(spans[0])?,
            field(spans[1])?,
            field(spans[2])?,
            field(spans[3])?,
        ])
    }
    /// One event.
    #[inline]
    pub fn event(&mut self) -> Result<EventRef<'a>, DecodeError> {
        let position = self.u64()?;
        let revision = self.u64()?;
        let recorded_micros = self.i64()?;
        let [ty, subject, id, source] = self.attributes()?;
        let time = self.opt_str()?;
        let datacontenttype = self.opt_str()?;
        let data_kind = match self.u8()? {
            0 => DataKind::None,
            1 => DataKind::Json,
            2 => DataKind::Text,
            3 => DataKind::Binary,
            k => return Err(DecodeError(format!("unknown data kind {k}"))),
        };
        let data = self.bytes()?;
        let extensions = self.str()?;
        Ok(EventRef {
            position,
            revision,
            recorded_micros,
            ty,
            subject,
            id,
            source,
            time,
            datacontenttype,
            data_kind,
            data,
            extensions: if extensions.is_empty() {
                "{}"
            } else {
                extensions
            },
        })
    }
}

mod entries;
pub use entries::{decide, evolve, evolve_groups, query, react};

/// Builds an output buffer: status byte then payload.
pub fn output(status: CallStatus, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(status as u8);
    out.extend_from_slice(payload);
    out
}

/// Splits an output buffer into status and payload.
pub fn parse_output(out: &[u8]) -> Result<(CallStatus, &[u8]), DecodeError> {
    let (&first, rest) = out
        .split_first()
        .ok_or_else(|| DecodeError("empty output".into()))?;
    let status = CallStatus::from_byte(first)
        .ok_or_else(|| DecodeError(format!("unknown status {first}")))?;
    Ok((status, rest))
}

/// The old name of [`Encoder`], kept for code written against it.
#[deprecated(note = "renamed to `Encoder`")]
pub type Writer = Encoder;
/// The old name of [`Decoder`], kept for code written against it.
#[deprecated(note = "renamed to `Decoder`")]
pub type Reader<'a> = Decoder<'a>;
/// The old name of [`CallStatus`], kept for code written against it.
#[deprecated(note = "renamed to `CallStatus`")]
pub type Status = CallStatus;

#[cfg(test)]
mod tests;
