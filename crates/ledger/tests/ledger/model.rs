//! The event model: parsing, validation and exact round-trips through the ledger.

use crate::common;

use loom_ledger::{
    AppendError, AppendRequest, Data, Event, ExtensionValue, Ledger, LedgerOptions, ReadOptions,
};
use serde_json::{Value, json};

fn append_json(ledger: &Ledger, text: &str) -> Result<u64, AppendError> {
    let event = Event::from_json_slice(text.as_bytes()).map_err(AppendError::Invalid)?;
    Ok(ledger
        .append(AppendRequest::new(vec![event]))?
        .last_position)
}

#[test]
fn every_attribute_kind_round_trips_exactly() {
    let (_dir, ledger) = common::ledger();
    let input = r#"{
        "specversion": "1.0",
        "id": "evt-1",
        "source": "https://shop.example/carts",
        "type": "anything",
        "subject": "note/a/b/c",
        "time": "2024-03-01T10:20:30.123456+02:00",
        "datacontenttype": "application/vnd.shop+json; charset=utf-8",
        "dataschema": "https://shop.example/schemas/anything.json",
        "traceparent": "00-abc-def-01",
        "flag": true,
        "count": -42,
        "big": 9007199254740993,
        "data": { "price": 12.50, "huge": 123456789012345678901234567890, "list": [1, 2.0, "x"],
                  "nested": {"a": null, "s": "with \"quotes\" and spaces  "} }
    }"#;
    let position = append_json(&ledger, input).expect("append");
    let stored = ledger.event_at(position).unwrap().expect("stored");
    let e = &stored.event;
    assert_eq!(e.id, "evt-1");
    assert_eq!(e.source, "https://shop.example/carts");
    assert_eq!(e.subject, "note/a/b/c");
    assert_eq!(e.entity(), "note");
    // time is kept as sent, offset included.
    assert_eq!(e.time.as_deref(), Some("2024-03-01T10:20:30.123456+02:00"));
    assert_eq!(
        e.datacontenttype.as_deref(),
        Some("application/vnd.shop+json; charset=utf-8")
    );
    assert_eq!(
        e.extensions["traceparent"],
        ExtensionValue::String("00-abc-def-01".into())
    );
    assert_eq!(e.extensions["flag"], ExtensionValue::Bool(true));
    assert_eq!(e.extensions["count"], ExtensionValue::Integer(-42));
    assert_eq!(
        e.extensions["big"],
        ExtensionValue::Integer(9007199254740993)
    );
    // JSON data keeps the exact spelling of numbers, whitespace removed outside strings.
    let Some(Data::Json(raw)) = &e.data else {
        panic!("expected JSON data, got {:?}", e.data)
    };
    assert_eq!(
        raw.get(),
        r#"{"price":12.50,"huge":123456789012345678901234567890,"list":[1,2.0,"x"],"nested":{"a":null,"s":"with \"quotes\" and spaces  "}}"#
    );

    // The stored JSON form carries the store-set attributes and parses back to the same event.
    let out = serde_json::to_value(&stored).unwrap();
    assert_eq!(out["position"], json!(position));
    assert_eq!(out["revision"], json!(1));
    assert!(out["recordedtime"].as_str().unwrap().ends_with('Z'));
    // Raw members keep the data's exact text (a `Value` would round numbers).
    let text = serde_json::to_string(&stored).unwrap();
    let mut obj: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(&text).unwrap();
    for k in ["position", "revision", "recordedtime"] {
        obj.remove(k);
    }
    let again = Event::from_json_slice(serde_json::to_string(&obj).unwrap().as_bytes()).unwrap();
    assert_eq!(&again, e);
}

#[test]
fn text_and_binary_data_round_trip() {
    let (_dir, ledger) = common::ledger();
    let text = r#"{"specversion":"1.0","id":"t","source":"s","type":"x","subject":"note/1",
                  "datacontenttype":"text/plain","data":"héllo\nworld"}"#;
    let p = append_json(&ledger, text).unwrap();
    let e = ledger.event_at(p).unwrap().unwrap();
    assert_eq!(e.event.data, Some(Data::Text("héllo\nworld".into())));
    assert_eq!(
        serde_json::to_value(&e).unwrap()["data"],
        json!("héllo\nworld")
    );

    let bin = r#"{"specversion":"1.0","id":"b","source":"s","type":"x","subject":"note/1",
                 "datacontenttype":"application/octet-stream","data_base64":"AAEC/w=="}"#;
    let p = append_json(&ledger, bin).unwrap();
    let e = ledger.event_at(p).unwrap().unwrap();
    assert_eq!(e.event.data, Some(Data::Binary(vec![0, 1, 2, 255])));
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["data_base64"], json!("AAEC/w=="));
    assert!(v.get("data").is_none());

    // No data at all, no time: nothing is invented.
    let bare = r#"{"specversion":"1.0","id":"n","source":"s","type":"x","subject":"note/1"}"#;
    let p = append_json(&ledger, bare).unwrap();
    let e = ledger.event_at(p).unwrap().unwrap();
    assert_eq!(e.event.data, None);
    assert_eq!(e.event.time, None);
    let v = serde_json::to_value(&e).unwrap();
    assert!(v.get("time").is_none() && v.get("data").is_none());
    assert_eq!(e.revision, 3);
}

#[test]
fn batches_carry_every_attribute_and_data_kind_and_can_be_refilled_and_cut() {
    let (_dir, ledger) = common::ledger();
    let texts = [
        r#"{"specversion":"1.0","id":"t","source":"s","type":"x","subject":"note/1",
            "time":"2026-11-27T10:00:00Z","datacontenttype":"text/plain",
            "dataschema":"https://example.com/s","data":"héllo\nworld","traceparent":"00-1"}"#,
        r#"{"specversion":"1.0","id":"b","source":"s","type":"x","subject":"note/1",
            "datacontenttype":"application/octet-stream","data_base64":"AAEC/w==","n":7,"flag":true}"#,
        r#"{"specversion":"1.0","id":"n","source":"s","type":"x","subject":"note/2"}"#,
        r#"{"specversion":"1.0","id":"j","source":"s","type":"x","subject":"note/2",
            "data":{"ünï":"cödé","n":[1,2.50]},"zeta":"last"}"#,
    ];
    for t in texts {
        append_json(&ledger, t).unwrap();
    }
    let owned = ledger.read_all(ReadOptions::after(0, 100)).unwrap();
    assert_eq!(owned.len(), 4);
    let all = loom_ledger::Selector::all().compile().unwrap();
    let mut batch = loom_ledger::EventBatch::default();
    // Refilled: each read replaces what the batch held.
    for (after, limit) in [(0, 100), (1, 2), (0, 100)] {
        ledger
            .read_batch_into(&all, ReadOptions::after(after, limit), &mut batch)
            .unwrap();
        let got: Vec<_> = batch.iter().map(|v| v.to_stored().unwrap()).collect();
        assert_eq!(got, owned[after as usize..(after as usize + limit).min(4)]);
        // What a fold selects and groups by, without a whole view.
        for (i, e) in got.iter().enumerate() {
            let head = batch.head(i);
            assert_eq!(
                (head.position, head.ty, head.subject),
                (e.position, e.event.ty.as_str(), e.event.subject.as_str())
            );
        }
    }
    assert_eq!(
        batch.get(1).data,
        loom_ledger::DataRef::Binary(&[0, 1, 2, 255])
    );
    assert_eq!(batch.get(2).time, None);
    assert_eq!(batch.get(0).dataschema, Some("https://example.com/s"));
    // Cut after each count: what is kept is unchanged, and the batch can grow again.
    for keep in (0..4).rev() {
        batch.truncate(keep);
        let got: Vec<_> = batch.iter().map(|v| v.to_stored().unwrap()).collect();
        assert_eq!(got, owned[..keep]);
    }
    ledger
        .read_batch_into(&all, ReadOptions::after(2, 100), &mut batch)
        .unwrap();
    assert_eq!(batch.last_position(), Some(owned[3].position));
    assert_eq!(batch.get(1).to_stored().unwrap(), owned[3]);

    // The same events as views borrowed from the stored records: equal, in order, within the
    // window, for a narrower selector, and stopping when the callback says so.
    let views = |selector: &loom_ledger::CompiledSelector, opts| {
        let mut seen = Vec::new();
        ledger
            .scan_views(selector, opts, |v| {
                seen.push(v.to_stored().unwrap());
                true
            })
            .unwrap();
        seen
    };
    assert_eq!(views(&all, ReadOptions::after(0, 100)), owned);
    assert_eq!(views(&all, ReadOptions::after(1, 2)), owned[1..3]);
    let stream_2 = loom_ledger::Selector {
        entity: Some("note".into()),
        keys: vec!["2".into()],
        ..loom_ledger::Selector::default()
    }
    .compile()
    .unwrap();
    assert_eq!(views(&stream_2, ReadOptions::after(0, 100)), owned[2..]);
    let mut calls = 0;
    ledger
        .scan_views(&all, ReadOptions::after(0, 100), |_| {
            calls += 1;
            calls < 2
        })
        .unwrap();
    assert_eq!(calls, 2, "stopped when told");
}

#[test]
fn malformed_events_are_refused_with_a_reason_and_nothing_is_written() {
    let (_dir, ledger) = common::ledger();
    let cases: &[(&str, &str)] = &[
        (
            r#"{"id":"1","source":"s","type":"x","subject":"note/1"}"#,
            "specversion",
        ),
        (
            r#"{"specversion":"0.3","id":"1","source":"s","type":"x","subject":"note/1"}"#,
            "1.0",
        ),
        (
            r#"{"specversion":"1.0","source":"s","type":"x","subject":"note/1"}"#,
            "\"id\"",
        ),
        (
            r#"{"specversion":"1.0","id":"","source":"s","type":"x","subject":"note/1"}"#,
            "non-empty",
        ),
        (
            r#"{"specversion":"1.0","id":"1","type":"x","subject":"note/1"}"#,
            "\"source\"",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","subject":"note/1"}"#,
            "\"type\"",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x"}"#,
            "\"subject\"",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"nokey"}"#,
            "stream name",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/"}"#,
            "stream name",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"/k"}"#,
            "stream name",
        ),
        (
            r#"{"specversion":"1.0","id":1,"source":"s","type":"x","subject":"note/1"}"#,
            "must be a string",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/1","time":"yesterday"}"#,
            "RFC 3339",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/1","position":5}"#,
            "set by the store",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/1","revision":5}"#,
            "set by the store",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/1","recordedtime":"2024-01-01T00:00:00Z"}"#,
            "set by the store",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/1","Bad-Name":"v"}"#,
            "attribute name",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/1","ext":1.5}"#,
            "string, boolean or integer",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/1","data":1,"data_base64":"AA=="}"#,
            "not both",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/1","data_base64":"!!"}"#,
            "base64",
        ),
        (r#"[1,2]"#, "JSON object"),
        (r#"{"specversion":"1.0","id":"1""#, "JSON object"),
    ];
    for (input, expected) in cases {
        let err = Event::from_json_slice(input.as_bytes())
            .expect_err(&format!("{input} should be refused"));
        assert!(
            err.to_string().contains(expected),
            "refusal of {input} should mention {expected:?}, got: {err}"
        );
    }
    assert_eq!(ledger.head(), 0);

    // An event built in code is checked too (the binary HTTP mode builds events this way).
    let mut e = common::note("1", "x", "t", json!(1));
    e.subject = "missing-slash".into();
    let err = ledger.append(AppendRequest::new(vec![e])).unwrap_err();
    assert!(matches!(err, AppendError::Invalid(_)), "{err}");
    assert_eq!(ledger.head(), 0);
    let err = ledger.append(AppendRequest::new(vec![])).unwrap_err();
    assert!(matches!(err, AppendError::Invalid(_)), "{err}");
}

#[test]
fn batch_format_parses_and_names_the_bad_event() {
    let batch = r#"[
        {"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/1"},
        {"specversion":"1.0","id":"2","source":"s","type":"x","subject":"bad"}
    ]"#;
    let err = Event::batch_from_json_slice(batch.as_bytes()).unwrap_err();
    assert_eq!(err.index, Some(1));
    let ok =
        r#"[{"specversion":"1.0","id":"1","source":"s","type":"x","subject":"note/1","data":[1]}]"#;
    let events = Event::batch_from_json_slice(ok.as_bytes()).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data_json(), Some(json!([1])));
}

#[test]
fn events_survive_reopening_with_head_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
        common::register(&ledger);
        ledger
            .append(AppendRequest::new(vec![
                common::created("1", "a"),
                common::added("1", "b", "sku-1", 2),
            ]))
            .unwrap();
    }
    let ledger = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
    assert_eq!(ledger.head(), 2);
    assert_eq!(ledger.stream_revision("cart/1").unwrap(), 2);
    // The registry came back too: a schema still applies.
    let err = ledger
        .append(AppendRequest::new(vec![common::added("1", "c", "sku", 0)]))
        .unwrap_err();
    assert!(matches!(err, AppendError::Rejected(_)), "{err}");
    let next = ledger
        .append(AppendRequest::new(vec![common::added(
            "1", "d", "sku-2", 1,
        )]))
        .unwrap();
    assert_eq!((next.last_position, next.events[0].revision), (3, 3));
    let all = ledger.read_all(ReadOptions::default()).unwrap();
    let ids: Vec<_> = all.iter().map(|e| e.event.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "d"]);
    let v: Value = serde_json::to_value(&all[1]).unwrap();
    assert_eq!(v["data"], json!({"sku": "sku-1", "quantity": 2}));
}
