//! Appends: atomic batches, optimistic conditions, idempotency and the registry.

use crate::common;

use loom_ledger::{
    AppendError, AppendRequest, Conditions, Conflict, EntitySpec, EventTypeSpec, ExpectedRevision,
    ReadOptions, RegistryError, Rejection, Selector,
};
use serde_json::json;

use common::{added, created, note};

#[test]
fn positions_and_revisions_are_assigned_per_batch_and_stream() {
    let (_dir, ledger) = common::ledger();
    let out = ledger
        .append(AppendRequest::new(vec![
            created("1", "a"),
            created("2", "b"),
            added("1", "c", "x", 1),
        ]))
        .unwrap();
    let got: Vec<_> = out
        .events
        .iter()
        .map(|e| (e.position, e.revision))
        .collect();
    assert_eq!(got, [(1, 1), (2, 1), (3, 2)]);
    assert_eq!(out.last_position, 3);
    assert!(!out.duplicate);
    assert_eq!(ledger.head(), 3);
    assert_eq!(ledger.stream_revision("cart/1").unwrap(), 2);
    assert_eq!(ledger.stream_revision("cart/2").unwrap(), 1);
    assert_eq!(ledger.stream_revision("cart/3").unwrap(), 0);
    // What was stored (written from the group's log record while it was synced) is what was
    // answered, and the stream goes on from there.
    let stored: Vec<_> = ledger
        .read_all(ReadOptions::after(0, 10))
        .unwrap()
        .iter()
        .map(|e| (e.position, e.event.subject.clone(), e.revision))
        .collect();
    assert_eq!(
        stored,
        [
            (1, "cart/1".to_owned(), 1),
            (2, "cart/2".to_owned(), 1),
            (3, "cart/1".to_owned(), 2)
        ]
    );
    let next = ledger
        .append(AppendRequest::new(vec![added("1", "d", "y", 1)]))
        .unwrap();
    assert_eq!((next.events[0].position, next.events[0].revision), (4, 3));
    let by_stream = ledger.read_stream("cart/1", 0, 10).unwrap();
    assert_eq!(
        by_stream.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[test]
fn each_expected_revision_kind_is_enforced() {
    let (_dir, ledger) = common::ledger();
    let conflict = |r: Result<_, AppendError>| match r {
        Err(AppendError::Conflict(c)) => c,
        other => panic!("expected a conflict, got {other:?}"),
    };
    // NoStream on a new stream passes; then fails.
    ledger
        .append(
            AppendRequest::new(vec![created("1", "a")])
                .expect("cart/1", ExpectedRevision::NoStream),
        )
        .unwrap();
    let c = conflict(
        ledger.append(
            AppendRequest::new(vec![added("1", "b", "x", 1)])
                .expect("cart/1", ExpectedRevision::NoStream),
        ),
    );
    assert_eq!(
        c,
        Conflict::Revision {
            stream: "cart/1".into(),
            expected: ExpectedRevision::NoStream,
            actual: 1
        }
    );
    // Exists fails on a missing stream, passes on an existing one.
    let c = conflict(ledger.append(
        AppendRequest::new(vec![created("2", "c")]).expect("cart/2", ExpectedRevision::Exists),
    ));
    assert!(matches!(c, Conflict::Revision { actual: 0, .. }), "{c:?}");
    ledger
        .append(
            AppendRequest::new(vec![added("1", "d", "x", 1)])
                .expect("cart/1", ExpectedRevision::Exists),
        )
        .unwrap();
    // Exact: wrong then right.
    let c = conflict(
        ledger.append(
            AppendRequest::new(vec![added("1", "e", "x", 1)])
                .expect("cart/1", ExpectedRevision::Exact(1)),
        ),
    );
    assert_eq!(
        c.to_string(),
        "stream \"cart/1\" is at revision 2, expected 1"
    );
    ledger
        .append(
            AppendRequest::new(vec![added("1", "e", "x", 1)])
                .expect("cart/1", ExpectedRevision::Exact(2)),
        )
        .unwrap();
    // Exact(0) means no stream.
    ledger
        .append(
            AppendRequest::new(vec![created("3", "f")])
                .expect("cart/3", ExpectedRevision::Exact(0)),
        )
        .unwrap();
    // Any always passes.
    ledger
        .append(
            AppendRequest::new(vec![added("3", "g", "x", 1)])
                .expect("cart/3", ExpectedRevision::Any),
        )
        .unwrap();
    // A condition on a stream the batch does not write is still checked.
    let c = conflict(ledger.append(
        AppendRequest::new(vec![created("4", "h")]).expect("cart/1", ExpectedRevision::Exact(9)),
    ));
    assert!(matches!(c, Conflict::Revision { actual: 3, .. }), "{c:?}");
    // Refused appends wrote nothing.
    let ids: Vec<_> = ledger
        .read_all(ReadOptions::default())
        .unwrap()
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(ids, ["a", "d", "e", "f", "g"]);
}

#[test]
fn expected_revision_parses_from_text_and_json() {
    assert_eq!(
        "any".parse::<ExpectedRevision>().unwrap(),
        ExpectedRevision::Any
    );
    assert_eq!(
        "none".parse::<ExpectedRevision>().unwrap(),
        ExpectedRevision::NoStream
    );
    assert_eq!(
        "exists".parse::<ExpectedRevision>().unwrap(),
        ExpectedRevision::Exists
    );
    assert_eq!(
        "17".parse::<ExpectedRevision>().unwrap(),
        ExpectedRevision::Exact(17)
    );
    assert!("-1".parse::<ExpectedRevision>().is_err());
    let c: Conditions = serde_json::from_value(json!({
        "expected_revisions": {"cart/1": 3, "cart/2": "none", "cart/3": "exists"},
        "fail_if_events_match": {"entity": "cart", "types": ["was_checked_out"]},
        "after": 12
    }))
    .unwrap();
    assert_eq!(c.expected_revisions["cart/1"], ExpectedRevision::Exact(3));
    assert_eq!(c.expected_revisions["cart/2"], ExpectedRevision::NoStream);
    assert_eq!(c.after, Some(12));
    assert!(
        serde_json::from_value::<Conditions>(json!({"expected_revisions": {"a/b": "maybe"}}))
            .is_err()
    );
    assert!(serde_json::from_value::<Conditions>(json!({"unknown": 1})).is_err());
}

#[test]
fn dcb_condition_with_and_without_after() {
    let (_dir, ledger) = common::ledger();
    ledger
        .append(AppendRequest::new(vec![
            note("u1", "1", "username_claimed", json!({"name": "amal"})),
            note("u2", "2", "username_claimed", json!({"name": "bo"})),
            note("u3", "3", "other", json!({"name": "amal"})),
        ]))
        .unwrap();
    let claim = |id: &str, name: &str, after: Option<u64>| {
        let mut req = AppendRequest::new(vec![note(
            &format!("u-{id}"),
            id,
            "username_claimed",
            json!({"name": name}),
        )]);
        req.conditions.fail_if_events_match = Some(Selector {
            types: vec!["username_claimed".into()],
            data: Some(format!("$[?$.name == '{name}']")),
            ..Selector::default()
        });
        req.conditions.after = after;
        ledger.append(req)
    };
    // "amal" is claimed at position 1 (position 3 has another type).
    match claim("4", "amal", None) {
        Err(AppendError::Conflict(Conflict::EventsMatched { positions })) => {
            assert_eq!(positions, [1])
        }
        other => panic!("expected a DCB conflict, got {other:?}"),
    }
    // With after = 1 the claim at position 1 is outside the condition.
    claim("5", "amal", Some(1)).unwrap();
    // Now position 4 holds a new claim of amal; after = 1 sees it.
    match claim("6", "amal", Some(1)) {
        Err(AppendError::Conflict(Conflict::EventsMatched { positions })) => {
            assert_eq!(positions, [4])
        }
        other => panic!("expected a DCB conflict, got {other:?}"),
    }
    claim("7", "cy", None).unwrap();
    assert_eq!(ledger.head(), 5);
    // A malformed JSONPath is a selector error, nothing written.
    let mut req = AppendRequest::new(vec![note("z", "z", "t", json!(1))]);
    req.conditions.fail_if_events_match = Some(Selector {
        data: Some("$[?".into()),
        ..Selector::default()
    });
    assert!(matches!(ledger.append(req), Err(AppendError::Selector(_))));
    assert_eq!(ledger.head(), 5);
}

#[test]
fn identical_reappend_is_idempotent_and_different_content_conflicts() {
    let (_dir, ledger) = common::ledger();
    let batch = vec![created("1", "a"), added("1", "b", "x", 2)];
    let first = ledger.append(AppendRequest::new(batch.clone())).unwrap();
    ledger
        .append(AppendRequest::new(vec![added("1", "c", "y", 1)]))
        .unwrap();
    // Retried with a condition that would now fail: still idempotent, original positions.
    let again = ledger
        .append(AppendRequest::new(batch.clone()).expect("cart/1", ExpectedRevision::NoStream))
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.events, first.events);
    assert_eq!(again.last_position, 2);
    assert_eq!(ledger.head(), 3);
    // JSON data that differs only in key order and whitespace is the same content.
    let mut same = added("1", "b", "x", 2);
    same.data = Some(loom_ledger::Data::json_from_str(r#"{ "quantity": 2, "sku": "x" }"#).unwrap());
    let single = ledger.append(AppendRequest::new(vec![same])).unwrap();
    assert!(single.duplicate);
    assert_eq!(single.events[0].position, 2);
    // Same identity, different content.
    match ledger.append(AppendRequest::new(vec![added("1", "b", "x", 3)])) {
        Err(AppendError::Conflict(Conflict::Identity { position, id, .. })) => {
            assert_eq!((position, id.as_str()), (2, "b"))
        }
        other => panic!("expected an identity conflict, got {other:?}"),
    }
    // Part of the batch stored, part new: not a retry.
    match ledger.append(AppendRequest::new(vec![
        created("1", "a"),
        created("9", "new"),
    ])) {
        Err(AppendError::Conflict(Conflict::Identity { position: 1, .. })) => {}
        other => panic!("expected an identity conflict, got {other:?}"),
    }
    // The same identity twice in one batch is malformed.
    let err = ledger
        .append(AppendRequest::new(vec![
            created("7", "q"),
            created("8", "q"),
        ]))
        .unwrap_err();
    assert!(matches!(err, AppendError::Invalid(_)), "{err}");
    // Identity is (source, id): the same id from another source is a different event.
    let mut other_source = created("5", "a");
    other_source.source = "elsewhere".into();
    ledger
        .append(AppendRequest::new(vec![other_source]))
        .unwrap();
    assert_eq!(ledger.head(), 4);
    assert_eq!(
        ledger
            .event_by_id("elsewhere", "a")
            .unwrap()
            .unwrap()
            .position,
        4
    );
    assert_eq!(
        ledger.event_by_id("test", "a").unwrap().unwrap().position,
        1
    );
    assert!(ledger.event_by_id("test", "nope").unwrap().is_none());
}

#[test]
fn registry_rejections_name_what_failed_and_write_nothing() {
    let (_dir, ledger) = common::ledger();
    let mut unknown_entity = note("1", "a", "t", json!({}));
    unknown_entity.subject = "ghost/1".into();
    match ledger.append(AppendRequest::new(vec![created("1", "ok"), unknown_entity])) {
        Err(AppendError::Rejected(Rejection::UnknownEntity { index: 1, entity })) => {
            assert_eq!(entity, "ghost")
        }
        other => panic!("{other:?}"),
    }
    let mut unknown_type = created("1", "b");
    unknown_type.ty = "was_exploded".into();
    match ledger.append(AppendRequest::new(vec![unknown_type])) {
        Err(AppendError::Rejected(Rejection::UnknownType { entity, ty, .. })) => {
            assert_eq!((entity.as_str(), ty.as_str()), ("cart", "was_exploded"))
        }
        other => panic!("{other:?}"),
    }
    match ledger.append(AppendRequest::new(vec![added("1", "c", "x", 0)])) {
        Err(AppendError::Rejected(Rejection::Schema { ty, message, .. })) => {
            assert_eq!(ty, "had_item_added");
            assert!(message.contains("/quantity"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let mut text = created("1", "d");
    text.data = Some(loom_ledger::Data::Text("hi".into()));
    text.datacontenttype = Some("text/plain".into());
    assert!(matches!(
        ledger.append(AppendRequest::new(vec![text])),
        Err(AppendError::Rejected(Rejection::Schema { .. }))
    ));
    // A type without schema takes any data; an open entity takes any type.
    let mut checkout = created("1", "e");
    checkout.ty = "was_checked_out".into();
    checkout.data = Some(loom_ledger::Data::Text("whatever".into()));
    ledger.append(AppendRequest::new(vec![checkout])).unwrap();
    ledger
        .append(AppendRequest::new(vec![note(
            "1",
            "f",
            "anything_at_all",
            json!(null),
        )]))
        .unwrap();
    assert_eq!(ledger.head(), 2);
}

#[test]
fn registry_put_validates_and_replaces() {
    let (_dir, ledger) = common::ledger();
    let bad = EntitySpec {
        events: [(
            "t".to_string(),
            EventTypeSpec {
                schema: Some(json!({"type": "no-such-type"})),
            },
        )]
        .into(),
        ..EntitySpec::default()
    };
    assert!(matches!(
        ledger.put_entity("thing", bad),
        Err(RegistryError::InvalidSchema { .. })
    ));
    assert!(ledger.entity("thing").is_none());
    assert!(matches!(
        ledger.put_entity("bad/name", EntitySpec::default()),
        Err(RegistryError::InvalidName(_))
    ));
    assert!(matches!(
        ledger.put_entity("", EntitySpec::default()),
        Err(RegistryError::InvalidName(_))
    ));
    // Replacing a registration takes effect at once.
    let mut e = note("1", "a", "t", json!(1));
    e.subject = "thing/1".into();
    assert!(ledger.append(AppendRequest::new(vec![e.clone()])).is_err());
    ledger
        .put_entity(
            "thing",
            EntitySpec {
                events: [("t".to_string(), EventTypeSpec::default())].into(),
                ..EntitySpec::default()
            },
        )
        .unwrap();
    ledger.append(AppendRequest::new(vec![e])).unwrap();
    let names: Vec<_> = ledger.entities().into_keys().collect();
    assert_eq!(names, ["cart", "note", "thing"]);
    let spec: EntitySpec = serde_json::from_value(json!({
        "events": {"a": {"schema": {"type": "object"}}, "b": {}}, "open": false
    }))
    .unwrap();
    assert_eq!(spec.events.len(), 2);
    assert!(serde_json::from_value::<EntitySpec>(json!({"evnts": {}})).is_err());
}

#[test]
fn json_schema_formats_are_checked() {
    let (_dir, ledger) = common::ledger();
    let spec: EntitySpec = serde_json::from_value(json!({"events": {"was_seen": {"schema": {
        "type": "object",
        "properties": {
            "on": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "by": {"type": "string", "format": "email"},
            "page": {"type": "string", "format": "uri"},
            "ref": {"type": "string", "format": "uuid"}
        }
    }}}}))
    .unwrap();
    ledger.put_entity("visit", spec).unwrap();
    let event = |id: &str, data: serde_json::Value| {
        AppendRequest::new(vec![loom_ledger::Event::new(
            "t", id, "was_seen", "visit/1", data,
        )])
    };
    let good = json!({
        "on": "2026-12-05", "at": "2026-12-05T10:00:00Z", "by": "amal@example.com",
        "page": "https://example.com/a", "ref": "550e8400-e29b-41d4-a716-446655440000"
    });
    ledger.append(event("good", good)).unwrap();
    for (field, value) in [
        ("on", "05/12/2026"),
        ("at", "yesterday"),
        ("by", "not an address"),
        ("page", "not a uri"),
        ("ref", "not-a-uuid"),
    ] {
        let mut data = json!({});
        data[field] = json!(value);
        match ledger.append(event(field, data)) {
            Err(AppendError::Rejected(Rejection::Schema { message, .. })) => {
                assert!(message.contains(field), "{field}: {message}")
            }
            other => panic!("{field} {value:?}: {other:?}"),
        }
    }
    assert_eq!(ledger.head(), 1);
}
