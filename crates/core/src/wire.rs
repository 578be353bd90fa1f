//! The little-endian, length-prefixed encoding that stored records use for their variable
//! parts (docs/design.md, "Record format"). It lives here, beside [`EventView`](crate::EventView),
//! because a view decodes its extension attributes lazily with it; the ledger encodes and
//! checks whole records with the same reader.

use std::collections::BTreeMap;

use crate::event::ExtensionValue;
use crate::view::ExtensionRef;

/// A length of `u32::MAX` marks an absent optional string.
pub const ABSENT: u32 = u32::MAX;

/// Reads fields from the front of a byte slice; every read fails with a sentence when the
/// slice is too short or a string is not UTF-8.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// What is left to read.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
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

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }

    /// A little-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, String> {
        self.array().map(i64::from_le_bytes)
    }

    /// A `u32` length, then that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A `u32` length, then that many bytes of UTF-8.
    pub fn str(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|e| format!("invalid UTF-8: {e}"))
    }

    /// Like [`str`](Self::str), with the length [`ABSENT`] meaning `None`.
    pub fn opt(&mut self) -> Result<Option<&'a str>, String> {
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

/// Appends a `u32` length and the bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends a `u32` length and the string's UTF-8.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Appends one extension attribute: its name, a kind byte (0 string, 1 bool, 2 integer) and
/// the value.
pub fn put_extension(out: &mut Vec<u8>, name: &str, value: ExtensionRef<'_>) {
    put_str(out, name);
    match value {
        ExtensionRef::String(s) => {
            out.push(0);
            put_str(out, s);
        }
        ExtensionRef::Bool(b) => {
            out.push(1);
            out.push(u8::from(b));
        }
        ExtensionRef::Integer(i) => {
            out.push(2);
            out.extend_from_slice(&i.to_le_bytes());
        }
    }
}

/// Reads one extension attribute written by [`put_extension`].
pub fn extension<'a>(r: &mut Reader<'a>) -> Result<(&'a str, ExtensionRef<'a>), String> {
    let name = r.str()?;
    let value = match r.u8()? {
        0 => ExtensionRef::String(r.str()?),
        1 => ExtensionRef::Bool(r.u8()? != 0),
        2 => ExtensionRef::Integer(r.i64()?),
        k => return Err(format!("unknown extension kind {k}")),
    };
    Ok((name, value))
}

/// Appends a list of extension attributes as records end with it: a `u32` count, then each
/// as [`put_extension`] writes it.
pub fn put_extensions(out: &mut Vec<u8>, extensions: &BTreeMap<String, ExtensionValue>) {
    out.extend_from_slice(&(extensions.len() as u32).to_le_bytes());
    for (name, value) in extensions {
        put_extension(out, name, value.as_ref());
    }
}
