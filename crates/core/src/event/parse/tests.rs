//! The one-pass reader against the reference it replaced: the object read into a map of
//! owned names and boxed raw values, every attribute then taken out of the map. Both must
//! accept the same events, build the same ones, and refuse with the same message.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::value::RawValue;

use super::super::{
    Data, Event, ExtensionValue, SPEC_VERSION, STORE_SET_ATTRIBUTES, check_extension_name,
    is_json_content_type,
};
use crate::error::InvalidEvent;

fn reference_parse(bytes: &[u8]) -> Result<Event, InvalidEvent> {
    let mut m: HashMap<String, Box<RawValue>> = serde_json::from_slice(bytes)
        .map_err(|e| InvalidEvent::new(format!("not a CloudEvent JSON object: {e}")))?;
    m.retain(|_, v| v.get() != "null");
    for name in STORE_SET_ATTRIBUTES {
        if m.contains_key(name) {
            return Err(InvalidEvent::new(format!(
                "attribute {name:?} is set by the store and may not be sent by clients"
            )));
        }
    }
    match take_string(&mut m, "specversion")? {
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
    let id = require_string(&mut m, "id")?;
    let source = require_string(&mut m, "source")?;
    let ty = require_string(&mut m, "type")?;
    let subject = require_string(&mut m, "subject")?;
    let time = take_string(&mut m, "time")?;
    let datacontenttype = take_string(&mut m, "datacontenttype")?;
    let dataschema = take_string(&mut m, "dataschema")?;
    let data_raw = m.remove("data");
    let data_base64 = take_string(&mut m, "data_base64")?;
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
                let text: String = serde_json::from_str(raw.get())
                    .map_err(|e| InvalidEvent::new(format!("data: {e}")))?;
                Some(Data::Text(text))
            } else {
                Some(Data::Json(reference_compact(&raw)))
            }
        }
        (None, None) => None,
    };
    let mut extensions = BTreeMap::new();
    for (name, raw) in m {
        check_extension_name(&name)?;
        let value: serde_json::Value = serde_json::from_str(raw.get())
            .map_err(|e| InvalidEvent::new(format!("extension {name:?}: {e}")))?;
        let value = match value {
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
        };
        extensions.insert(name, value);
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

fn take_string(
    m: &mut HashMap<String, Box<RawValue>>,
    name: &str,
) -> Result<Option<String>, InvalidEvent> {
    match m.remove(name) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map(Some)
            .map_err(|_| {
                InvalidEvent::new(format!(
                    "attribute {name:?} must be a string, not {}",
                    raw.get()
                ))
            }),
    }
}

fn require_string(
    m: &mut HashMap<String, Box<RawValue>>,
    name: &str,
) -> Result<String, InvalidEvent> {
    take_string(m, name)?
        .ok_or_else(|| InvalidEvent::new(format!("missing required attribute {name:?}")))
}

fn reference_compact(raw: &RawValue) -> Box<RawValue> {
    let mut out = String::new();
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.get().chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    RawValue::from_string(out).expect("valid")
}

/// Member names: the model's attributes (some spelled with escapes), store-set ones, valid
/// and invalid extension names.
fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        r#""specversion""#,
        r#""id""#,
        r#""\u0069d""#,
        r#""source""#,
        r#""type""#,
        r#""subject""#,
        r#""subj\u0065ct""#,
        r#""time""#,
        r#""datacontenttype""#,
        r#""dataschema""#,
        r#""data""#,
        r#""data_base64""#,
        r#""position""#,
        r#""recordedtime""#,
        r#""traceparent""#,
        r#""ext1""#,
        r#""Bad-Name""#,
        r#""\u00e9t\u00e9""#,
    ])
    .prop_map(str::to_owned)
}

/// Values, with whitespace where JSON allows it.
fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        r#""1.0""#,
        r#""0.3""#,
        r#""cart/1""#,
        r#""cart/a b""#,
        r#""ca\u0072t/\"q\"""#,
        r#""no-slash""#,
        r#""""#,
        r#""é 😀 \n tab\t""#,
        r#""2024-01-01T00:00:00Z""#,
        r#""2024-13-01""#,
        r#""application/json""#,
        r#""text/plain""#,
        r#""application/cloudevents+json; charset=utf-8""#,
        r#""bad type""#,
        r#""AAEC""#,
        r#""!!""#,
        "null",
        "true",
        "12",
        "-7",
        "1.5",
        "1e400",
        "123456789012345678901234567890",
        "[]",
        "[1, 2 ,\n3]",
        r#"{ "a" : [ 1 , { "b" : "x  y" } ] ,"c":null }"#,
        r#"{"k":"v\" }{ "}"#,
        "\"\\\\\"",
    ])
    .prop_map(str::to_owned)
}

fn space() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", " ", "\n\t", "\r\n  "])
}

fn object() -> impl Strategy<Value = (String, usize)> {
    let member = (space(), name(), space(), value(), space());
    // Mostly complete events, so that the later rules are reached too.
    let base = prop::collection::vec(
        (
            prop::sample::select(vec![
                r#""specversion":"1.0""#,
                r#""id":"e1""#,
                r#""source":"/src""#,
                r#""type":"was_added""#,
                r#""subject":"cart/1""#,
            ]),
            any::<bool>(),
        ),
        5,
    );
    (base, prop::collection::vec(member, 0..8)).prop_map(|(base, members)| {
        let mut parts: Vec<String> = base
            .into_iter()
            .filter(|(_, keep)| *keep)
            .map(|(m, _)| m.to_owned())
            .collect();
        let others = members
            .iter()
            .filter(|(_, n, ..)| {
                !matches!(
                    n.as_str(),
                    r#""specversion""#
                        | r#""id""#
                        | r#""\u0069d""#
                        | r#""source""#
                        | r#""type""#
                        | r#""subject""#
                        | r#""subj\u0065ct""#
                        | r#""time""#
                        | r#""datacontenttype""#
                        | r#""dataschema""#
                        | r#""data""#
                        | r#""data_base64""#
                )
            })
            .count();
        parts.extend(
            members
                .into_iter()
                .map(|(a, n, b, v, c)| format!("{a}{n}{b}:{v}{c}")),
        );
        (format!("{{{}}}", parts.join(",")), others)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn the_one_pass_reader_agrees_with_the_reference((text, others) in object()) {
        let got = Event::from_json_slice(text.as_bytes());
        let want = reference_parse(text.as_bytes());
        match (&got, &want) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", text),
            (Err(a), Err(b)) => {
                // The reference took extensions in a hash map's order: with two or more, which
                // one it refused first is chance.
                if others <= 1 {
                    prop_assert_eq!(a.to_string(), b.to_string(), "{}", text);
                }
            }
            _ => prop_assert!(false, "{text}: one-pass {got:?}, reference {want:?}"),
        }
    }
}

#[test]
fn a_batch_reads_like_its_events_one_by_one() {
    let batch = r#"[ {"specversion":"1.0","id":"1","source":"s","type":"x","subject":"n/1",
        "data": { "a" : 1 }} , {"specversion":"1.0","id":"2","source":"s","type":"x",
        "subject":"bad"} ]"#;
    let err = Event::batch_from_json_slice(batch.as_bytes()).unwrap_err();
    assert_eq!(err.index, Some(1));
    assert!(err.to_string().contains("not a stream name"), "{err}");
    let events = Event::batch_from_json_slice(batch.replace("\"bad\"", "\"n/2\"").as_bytes())
        .expect("a valid batch");
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].data,
        Some(Data::json_from_str(r#"{"a":1}"#).unwrap())
    );
    let err = Event::batch_from_json_slice(b"{}").unwrap_err();
    assert!(err.to_string().contains("JSON array"), "{err}");
}

#[test]
fn compacting_removes_only_whitespace_outside_strings() {
    for (text, compact) in [
        (r#"{"a":1}"#, r#"{"a":1}"#),
        (" { \"a b\" : [ 1 ,\t2 ] }\n", r#"{"a b":[1,2]}"#),
        (
            r#"[ "x\" y" , "\\" , "é  😀" ]"#,
            r#"["x\" y","\\","é  😀"]"#,
        ),
        ("1.50E+3", "1.50E+3"),
    ] {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        assert_eq!(super::compact_raw(&raw).get(), compact, "{text}");
    }
}
