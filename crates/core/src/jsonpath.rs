//! Limits on the JSONPath expressions of selectors, checked before the expression is parsed.
//!
//! Both the parser and the evaluation can cost far more than the expression's length: the
//! parser (serde_json_path) takes about 2.5 times longer per nested filter, and a filter
//! that runs an absolute query with a descendant segment (`$..[?$..x]`) visits the whole
//! document once per node it is tried on. The rules below bound both. They are checked on
//! the text, so an over-limit expression is refused in microseconds, before any parsing:
//!
//! * at most [`MAX_LEN`] bytes;
//! * brackets and parentheses nested at most [`MAX_NESTING`] deep;
//! * filters (`[?…]`) nested at most [`MAX_FILTER_DEPTH`] deep;
//! * at most [`MAX_DESCENDANTS`] descendant segments (`..`) in the whole expression;
//! * a filter that holds an absolute query (`$…`) holds no descendant segment, wildcard or
//!   filter of its own: such a query reads the whole document every time the filter runs.
//!
//! With JSON nested at most 128 deep (serde_json's limit, which Loom's JSON data obeys),
//! these keep an evaluation within a small multiple of `128 × nodes` node visits.

use std::fmt;

/// Longest expression, in bytes.
pub const MAX_LEN: usize = 1024;
/// Deepest nesting of brackets and parentheses.
pub const MAX_NESTING: usize = 8;
/// Deepest nesting of filter selectors.
pub const MAX_FILTER_DEPTH: usize = 3;
/// Most descendant segments (`..`).
pub const MAX_DESCENDANTS: usize = 2;

/// Which limit an expression exceeds, as a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooComplex(String);

impl fmt::Display for TooComplex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Default)]
struct Frame {
    filter: bool,
    absolute: bool,
    costly: bool,
}

/// Checks `text` against the limits above (not whether it is valid JSONPath).
// Long by design: one arm per JSONPath construct of RFC 9535.
pub fn check(text: &str) -> Result<(), TooComplex> {
    if text.len() > MAX_LEN {
        return Err(TooComplex(format!(
            "the expression is {} bytes long; at most {MAX_LEN} are allowed",
            text.len()
        )));
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut descendants = 0;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    let mut previous_dot = false;
    for &b in text.as_bytes() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == q {
                quote = None;
            }
            continue;
        }
        let dot = b == b'.';
        match b {
            b'\'' | b'"' => quote = Some(b),
            b'[' | b'(' => {
                stack.push(Frame::default());
                if stack.len() > MAX_NESTING {
                    return Err(TooComplex(format!(
                        "brackets and parentheses nest more than {MAX_NESTING} deep"
                    )));
                }
            }
            b']' | b')' => {
                if let Some(frame) = stack.pop()
                    && frame.filter
                    && frame.absolute
                    && frame.costly
                {
                    return Err(TooComplex(
                        "a filter that runs an absolute query ($…) may not hold a descendant \
                         segment (..), a wildcard (*) or another filter: it would read the \
                         whole document for every node it is tried on; use a relative \
                         query (@…)"
                            .into(),
                    ));
                }
            }
            b'?' => {
                mark_costly(&mut stack);
                if let Some(frame) = stack.last_mut() {
                    frame.filter = true;
                }
                let depth = stack.iter().filter(|f| f.filter).count();
                if depth > MAX_FILTER_DEPTH {
                    return Err(TooComplex(format!(
                        "filters nest more than {MAX_FILTER_DEPTH} deep"
                    )));
                }
            }
            b'$' => {
                if let Some(frame) = stack.iter_mut().rev().find(|f| f.filter) {
                    frame.absolute = true;
                }
            }
            b'*' => mark_costly(&mut stack),
            b'.' if previous_dot => {
                descendants += 1;
                if descendants > MAX_DESCENDANTS {
                    return Err(TooComplex(format!(
                        "the expression has more than {MAX_DESCENDANTS} descendant segments (..)"
                    )));
                }
                mark_costly(&mut stack);
            }
            _ => {}
        }
        // `...` is one descendant segment and a dot, not two segments.
        previous_dot = dot && !previous_dot;
    }
    Ok(())
}

/// A wildcard, descendant segment or filter makes every enclosing filter costly.
fn mark_costly(stack: &mut [Frame]) {
    for frame in stack.iter_mut().filter(|f| f.filter) {
        frame.costly = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_expressions_pass() {
        for ok in [
            "$.items[?@.price > 10]",
            "$..name",
            "$.players[?@ == \"Amal_Hussein\"]",
            "$..[?@.a..b]",
            "$[?$.limit > @.n]",
            "$.a[?@.b[?@.c[?@ == 1]]]",
            "$['..', '$..[?']",
            "$[?match(@.name, '[a-z]+')]",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn costly_expressions_are_refused_with_the_limit() {
        let nested = format!("${}", "[?@".repeat(20)) + &"]".repeat(20);
        let refused = [
            (nested.as_str(), "nest more than"),
            ("$..[?$..[?$..[?$..[?@ == 'zz']]]]", "descendant"),
            ("$[?$..x]", "absolute query"),
            ("$[?$.*]", "absolute query"),
            ("$..a..b..c", "more than 2 descendant"),
            ("$[?@[?@[?@[?@]]]]", "filters nest more than 3"),
            ("$((((((((((1))))))))))", "nest more than 8"),
        ];
        for (text, wanted) in refused {
            let err = check(text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text}: {err}");
        }
        let long = format!("$.{}", "a".repeat(MAX_LEN));
        assert!(check(&long).unwrap_err().to_string().contains("bytes long"));
    }
}
