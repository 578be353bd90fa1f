//! `POST /v1/events` decoding in all three CloudEvents HTTP content modes — binary (`ce-*`
//! headers), structured and batch — through the server's binding
//! (`loom_server::fuzzing::events_from_parts`).
//!
//! No request may panic. Every event that parses is valid; its structured form parses back to
//! the same event (a re-post in another content mode is recognised as the same event); and
//! an event whose attributes binary mode can carry (string extensions; a content type when it
//! has binary data) survives a binary-mode read and re-post unchanged.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use loom_ledger::{Data, Event, ExtensionValue};
use loom_server::fuzzing::{binary_parts, events_from_parts};

#[derive(Arbitrary, Debug)]
enum Mode<'a> {
    Binary { content_type: Option<&'a str> },
    Structured { charset: Option<&'a str> },
    Batch,
    Other(&'a str),
}

#[derive(Arbitrary, Debug)]
enum Name<'a> {
    SpecVersion,
    Id,
    Source,
    Type,
    Subject,
    Time,
    DataSchema,
    DataContentType,
    Extension(&'a str),
    Other(&'a str),
}

#[derive(Arbitrary, Debug)]
struct Request<'a> {
    mode: Mode<'a>,
    /// Start from a valid set of binary-mode attributes.
    defaults: bool,
    headers: Vec<(Name<'a>, &'a [u8])>,
    body: &'a [u8],
}

fn set(headers: &mut Vec<(String, Vec<u8>)>, name: String, value: &[u8]) {
    match headers.iter_mut().find(|(n, _)| *n == name) {
        Some(h) => h.1 = value.to_vec(),
        None => headers.push((name, value.to_vec())),
    }
}

fn parse(headers: &[(String, Vec<u8>)], body: &[u8]) -> Result<Vec<Event>, String> {
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    events_from_parts(&pairs, body)
}

fn binary_mode_can_carry(e: &Event) -> bool {
    e.extensions
        .values()
        .all(|v| matches!(v, ExtensionValue::String(_)))
        && !(e.datacontenttype.is_none() && matches!(e.data, Some(Data::Binary(_))))
}

fuzz_target!(|req: Request<'_>| {
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    if req.defaults {
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "fuzz"),
            ("ce-type", "t"),
            ("ce-subject", "note/1"),
        ] {
            set(&mut headers, name.into(), value.as_bytes());
        }
    }
    for (name, value) in &req.headers {
        let name = match name {
            Name::SpecVersion => "ce-specversion".to_owned(),
            Name::Id => "ce-id".to_owned(),
            Name::Source => "ce-source".to_owned(),
            Name::Type => "ce-type".to_owned(),
            Name::Subject => "ce-subject".to_owned(),
            Name::Time => "ce-time".to_owned(),
            Name::DataSchema => "ce-dataschema".to_owned(),
            Name::DataContentType => "ce-datacontenttype".to_owned(),
            Name::Extension(n) => format!("ce-{n}"),
            Name::Other(n) => n.to_string(),
        };
        set(&mut headers, name, value);
    }
    let content_type = match &req.mode {
        Mode::Binary { content_type } => content_type.map(str::to_owned),
        Mode::Structured { charset: None } => Some("application/cloudevents+json".to_owned()),
        Mode::Structured { charset: Some(c) } => {
            Some(format!("application/cloudevents+json; charset={c}"))
        }
        Mode::Batch => Some("application/cloudevents-batch+json".to_owned()),
        Mode::Other(ct) => Some(ct.to_string()),
    };
    if let Some(ct) = content_type {
        set(&mut headers, "content-type".into(), ct.as_bytes());
    }
    let Ok(events) = parse(&headers, req.body) else {
        return;
    };
    for event in &events {
        event.validate().expect("a parsed event is valid");

        let json = serde_json::to_vec(event).expect("an event serializes");
        let structured = vec![(
            "content-type".to_owned(),
            b"application/cloudevents+json".to_vec(),
        )];
        let again = parse(&structured, &json).unwrap_or_else(|e| {
            panic!(
                "the structured form {} does not parse: {e}",
                String::from_utf8_lossy(&json)
            )
        });
        assert!(
            again.len() == 1 && again[0].same_content(event),
            "structured round trip changed {event:?} into {again:?}"
        );

        if binary_mode_can_carry(event) {
            let (headers, body) = binary_parts(event);
            let again = parse(&headers, &body).unwrap_or_else(|e| {
                panic!("the binary form {headers:?} / {body:?} of {event:?} does not parse: {e}")
            });
            assert!(
                again.len() == 1 && again[0].same_content(event),
                "binary round trip changed {event:?} into {again:?}"
            );
        }
    }
});
