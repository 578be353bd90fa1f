//! The CloudEvents HTTP protocol binding (v1.0), both ways.
//!
//! Requests: binary mode (attributes in `ce-*` headers, data in the body with its own
//! `Content-Type`), structured mode (`application/cloudevents+json`) and batch mode
//! (`application/cloudevents-batch+json`). Responses: a stored event in binary mode.
//!
//! This is written here rather than taken from `cloudevents-sdk` (whose 0.9 release does
//! support axum 0.8): its extractor answers plain-text errors and a 500 for an oversized body,
//! has no batch mode, and converts events into its own model, which rewrites `time` in UTC
//! and parses JSON `data` into a `serde_json::Value` (losing the exact numbers). Loom keeps
//! events exactly as sent, so that an idempotent re-post in another content mode is still
//! recognised as the same event.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use loom_ledger::{Data, Event, ExtensionValue, InvalidEvent, StoredEvent, is_json_content_type};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde_json::value::RawValue;

use crate::problem::ApiError;
use crate::{charset_is_utf8, media_type};

/// Structured content mode.
pub(crate) const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// Batch content mode.
pub(crate) const CLOUDEVENTS_BATCH_JSON: &str = "application/cloudevents-batch+json";

/// Characters the binding requires to be percent-encoded in header values: space, `"`, `%`
/// and everything outside printable ASCII (non-ASCII is always encoded).
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// Parses the events of a `POST /v1/events` request in whichever content mode it uses.
pub(crate) fn events_from_request(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Vec<Event>, ApiError> {
    let media = media_type(headers)?;
    match &media {
        Some((essence, params)) if essence == CLOUDEVENTS_JSON => {
            require_utf8(params)?;
            structured(body).map(|e| vec![e])
        }
        Some((essence, params)) if essence == CLOUDEVENTS_BATCH_JSON => {
            require_utf8(params)?;
            batch(body)
        }
        _ if headers.contains_key("ce-specversion") => binary(headers, body).map(|e| vec![e]),
        Some((essence, _)) if essence.starts_with("application/cloudevents") => {
            Err(ApiError::UnsupportedMediaType(format!(
                "{essence} is not supported: Loom takes the JSON event format \
                 ({CLOUDEVENTS_JSON}, {CLOUDEVENTS_BATCH_JSON}) or binary mode"
            )))
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "POST /v1/events takes CloudEvents in one of three content modes: binary (ce-* \
             headers, including ce-specversion, with the data as the body), structured \
             (Content-Type: {CLOUDEVENTS_JSON}) or batch (Content-Type: \
             {CLOUDEVENTS_BATCH_JSON}); this request has {} and no ce-specversion header",
            media.as_ref().map_or_else(
                || "no Content-Type".to_owned(),
                |(e, _)| format!("Content-Type {e}")
            )
        ))),
    }
}

fn require_utf8(params: &[(String, String)]) -> Result<(), ApiError> {
    if charset_is_utf8(params) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "the JSON event format is UTF-8; use charset=utf-8 or no charset".into(),
        ))
    }
}

fn structured(body: &[u8]) -> Result<Event, ApiError> {
    // A valid event is read in one pass; a body that is refused is read again below, to say
    // whether it is not JSON, not an object, or not a valid event.
    if let Ok(event) = Event::from_json_slice(body) {
        return Ok(event);
    }
    let raw: &RawValue = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    if !raw.get().starts_with('{') {
        return Err(ApiError::BadRequest(
            "a structured-mode body must be one CloudEvent JSON object".into(),
        ));
    }
    Event::from_json_slice(raw.get().as_bytes()).map_err(ApiError::InvalidEvent)
}

fn batch(body: &[u8]) -> Result<Vec<Event>, ApiError> {
    // A well-formed batch is read in one pass. A body that is not an array of objects is read
    // again, item by item, to say which item is wrong and how.
    match Event::batch_from_json_slice(body) {
        Ok(events) => return Ok(events),
        Err(e) if e.index.is_some() => return Err(ApiError::InvalidEvent(e)),
        Err(_) => {}
    }
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "a batch-mode body must be a JSON array of CloudEvent objects: {e}"
        ))
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            if !raw.get().starts_with('{') {
                return Err(ApiError::BadRequest(format!(
                    "batch item {i} is not a JSON object"
                )));
            }
            Event::from_json_slice(raw.get().as_bytes())
                .map_err(|e| ApiError::InvalidEvent(e.at_index(i)))
        })
        .collect()
}

/// The text of a `ce-*` header: percent-decoded UTF-8. The binding requires senders to
/// percent-encode non-ASCII, but some SDKs send raw bytes; those are read as UTF-8 when they
/// are, else as ISO-8859-1 (what HTTP/1.1 header bytes historically mean).
fn header_text(name: &HeaderName, value: &HeaderValue) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    let latin1;
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) => {
            latin1 = bytes.iter().map(|&b| char::from(b)).collect::<String>();
            latin1.as_str()
        }
    };
    percent_decode_str(text)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "header {name} does not percent-decode to UTF-8 text"
            ))
        })
}

fn binary(headers: &HeaderMap, body: &[u8]) -> Result<Event, ApiError> {
    let mut attrs = std::collections::BTreeMap::new();
    for name in headers.keys() {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let mut values = headers.get_all(name).iter();
        let value = values.next().expect("a present header has a value");
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "header {name} appears more than once"
            )));
        }
        attrs.insert(attr.to_owned(), header_text(name, value)?);
    }
    let invalid = |m: String| ApiError::InvalidEvent(InvalidEvent::new(m));
    match attrs.remove("specversion").as_deref() {
        Some(loom_ledger::SPEC_VERSION) => {}
        Some(v) => {
            return Err(invalid(format!(
                "specversion {v:?} is not supported; Loom accepts \"1.0\""
            )));
        }
        None => return Err(invalid("missing required attribute \"specversion\"".into())),
    }
    let mut required = |name: &str| {
        attrs.remove(name).ok_or_else(|| {
            invalid(format!(
                "missing required attribute {name:?} (header ce-{name})"
            ))
        })
    };
    let id = required("id")?;
    let source = required("source")?;
    let ty = required("type")?;
    let subject = required("subject")?;
    let time = attrs.remove("time");
    let dataschema = attrs.remove("dataschema");
    let header_ct = match headers.get(header::CONTENT_TYPE) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("the Content-Type header is not ASCII".into()))?
                .to_owned(),
        ),
        None => None,
    };
    // The binding carries datacontenttype in Content-Type; accept ce-datacontenttype too
    // when there is no Content-Type.
    let attr_ct = attrs.remove("datacontenttype");
    let datacontenttype = header_ct.or(attr_ct);
    let data = binary_data(datacontenttype.as_deref(), body)?;
    let extensions = attrs
        .into_iter()
        .map(|(k, v)| (k, ExtensionValue::String(v)))
        .collect();
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
    event.validate().map_err(ApiError::InvalidEvent)?;
    Ok(event)
}

/// The data of a binary-mode body: JSON under a JSON media type (or under none, when the body
/// is valid JSON), text under a text media type (see `is_text_content_type`) when it is UTF-8
/// and the charset allows, bytes otherwise — bytes under a non-text media type stay bytes even
/// when they happen to be valid UTF-8, as structured mode's `data_base64` carries them.
fn binary_data(content_type: Option<&str>, body: &[u8]) -> Result<Option<Data>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    match content_type {
        Some(ct) if is_json_content_type(ct) => {
            let text = std::str::from_utf8(body).map_err(|_| {
                ApiError::BadRequest("the body is not UTF-8, but its Content-Type is JSON".into())
            })?;
            Data::json_from_str(text).map(Some).map_err(|e| {
                ApiError::BadRequest(format!(
                    "the body is not valid JSON, but its Content-Type is JSON: {e}"
                ))
            })
        }
        Some(ct) => {
            let charset_ok = ct.split(';').skip(1).all(|p| {
                p.split_once('=').is_none_or(|(k, v)| {
                    !k.trim().eq_ignore_ascii_case("charset") || {
                        let v = v.trim().trim_matches('"');
                        v.eq_ignore_ascii_case("utf-8")
                            || v.eq_ignore_ascii_case("utf8")
                            || v.eq_ignore_ascii_case("us-ascii")
                    }
                })
            });
            match std::str::from_utf8(body) {
                Ok(text) if charset_ok && loom_core::is_text_content_type(ct) => {
                    Ok(Some(Data::Text(text.to_owned())))
                }
                _ => Ok(Some(Data::Binary(body.to_vec()))),
            }
        }
        None => match std::str::from_utf8(body).ok().map(Data::json_from_str) {
            Some(Ok(data)) => Ok(Some(data)),
            _ => Ok(Some(Data::Binary(body.to_vec()))),
        },
    }
}

fn put_attr(headers: &mut HeaderMap, name: &str, value: &str) {
    let encoded = utf8_percent_encode(value, HEADER_VALUE).to_string();
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(format!("ce-{name}").as_bytes()),
        HeaderValue::from_str(&encoded),
    ) {
        headers.insert(name, value);
    }
}

/// A stored event in binary mode: attributes as `ce-*` headers, data as the body.
pub(crate) fn binary_response(stored: &StoredEvent) -> (HeaderMap, axum::body::Body) {
    let (headers, body) = binary_parts(stored);
    (headers, axum::body::Body::from(body))
}

fn binary_parts(stored: &StoredEvent) -> (HeaderMap, Vec<u8>) {
    let e = &stored.event;
    let mut headers = HeaderMap::new();
    put_attr(&mut headers, "specversion", loom_ledger::SPEC_VERSION);
    put_attr(&mut headers, "id", &e.id);
    put_attr(&mut headers, "source", &e.source);
    put_attr(&mut headers, "type", &e.ty);
    put_attr(&mut headers, "subject", &e.subject);
    if let Some(t) = &e.time {
        put_attr(&mut headers, "time", t);
    }
    if let Some(ds) = &e.dataschema {
        put_attr(&mut headers, "dataschema", ds);
    }
    for (name, value) in &e.extensions {
        put_attr(&mut headers, name, &value.to_string());
    }
    put_attr(&mut headers, "position", &stored.position.to_string());
    put_attr(&mut headers, "revision", &stored.revision.to_string());
    put_attr(&mut headers, "recordedtime", &stored.recordedtime());
    // JSON data without a datacontenttype is `application/json` (the JSON format's default),
    // so that SDKs parse the body as JSON; posting it back is a duplicate (identity treats the
    // two as the same).
    let content_type = match (&e.datacontenttype, &e.data) {
        (Some(ct), _) => Some(ct.clone()),
        (None, Some(Data::Text(_))) => Some("text/plain; charset=utf-8".to_owned()),
        (None, Some(Data::Binary(_))) => Some("application/octet-stream".to_owned()),
        (None, Some(Data::Json(_))) => Some("application/json".to_owned()),
        (None, None) => None,
    };
    if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(&ct).ok()) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    let body = match &e.data {
        None => Vec::new(),
        Some(Data::Json(raw)) => raw.get().as_bytes().to_vec(),
        Some(Data::Text(t)) => t.as_bytes().to_vec(),
        Some(Data::Binary(b)) => b.clone(),
    };
    (headers, body)
}

/// Entry points for the fuzz targets in `fuzz/`; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Parses the events of a `POST /v1/events` request given as header pairs and a body,
    /// in whichever content mode it uses. Pairs that are not valid HTTP headers are skipped
    /// (no client can send them).
    pub fn events_from_parts(headers: &[(&str, &[u8])], body: &[u8]) -> Result<Vec<Event>, String> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                map.append(name, value);
            }
        }
        events_from_request(&map, &Bytes::copy_from_slice(body)).map_err(|e| e.to_string())
    }

    /// An event as a binary-mode read answers it (header pairs and body), without the
    /// store-set attributes.
    pub fn binary_parts(event: &Event) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
        let stored = StoredEvent {
            position: 1,
            revision: 1,
            recorded_micros: 0,
            event: event.clone(),
        };
        let (headers, body) = super::binary_parts(&stored);
        let pairs = headers
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    "ce-position" | "ce-revision" | "ce-recordedtime"
                )
            })
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        (pairs, body)
    }
}
