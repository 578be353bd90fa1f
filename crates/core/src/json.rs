//! Strict JSON for what modules return (states, query answers): the text must be UTF-8,
//! nest at most [`MAX_DEPTH`] deep and have no lone UTF-16 surrogate escape (`"\ud800"`),
//! on top of being JSON. serde_json skims a value it is only asked to skip without these
//! checks, and such text is no JSON that clients (or Loom's CLI) can read back.

/// Deepest nesting of arrays and objects.
pub const MAX_DEPTH: usize = 128;

/// Checks `bytes` is strict JSON (see the module docs); the error is a sentence.
pub fn check_strict(bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("it is not UTF-8: {e}"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| e.to_string())?;
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    let mut in_string = false;
    // A high surrogate escape waits for its low half right after it.
    let mut pending_high = false;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'"' => {
                    if pending_high {
                        return Err(lone());
                    }
                    in_string = false;
                }
                b'\\' => {
                    let e = b.get(i + 1).copied().unwrap_or(0);
                    if e == b'u' {
                        let hex = text.get(i + 2..i + 6).unwrap_or("");
                        let unit = u16::from_str_radix(hex, 16).unwrap_or(0);
                        match unit {
                            0xD800..=0xDBFF if !pending_high => pending_high = true,
                            0xDC00..=0xDFFF if pending_high => pending_high = false,
                            0xD800..=0xDFFF => return Err(lone()),
                            _ if pending_high => return Err(lone()),
                            _ => {}
                        }
                        i += 6;
                        continue;
                    }
                    if pending_high {
                        return Err(lone());
                    }
                    i += 2;
                    continue;
                }
                _ if pending_high => return Err(lone()),
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(format!("it nests deeper than {MAX_DEPTH} levels"));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    Ok(())
}

fn lone() -> String {
    "it holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF without its pair)".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_json_passes_and_the_rest_is_refused_with_a_reason() {
        for ok in [
            r#"{"a":[1,2,{"b":"\ud83d\ude00 é"}],"c":null}"#,
            r#""\u0041\n\"""#,
            "[]",
        ] {
            assert_eq!(check_strict(ok.as_bytes()), Ok(()), "{ok}");
        }
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        for (bad, why) in [
            (br#"{"a":"\ud800"}"#.to_vec(), "lone"),
            (br#""\udc00x""#.to_vec(), "lone"),
            (br#""\ud800\u0041""#.to_vec(), "lone"),
            (b"\"\xff\"".to_vec(), "UTF-8"),
            (deep.into_bytes(), "deeper than 128"),
            (b"{nope".to_vec(), "key must be a string"),
        ] {
            let err = check_strict(&bad).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
