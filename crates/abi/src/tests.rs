use super::*;

fn sample(i: u64) -> EventRef<'static> {
    EventRef {
        position: i,
        revision: i + 1,
        recorded_micros: -5,
        ty: "had_item_added",
        subject: "cart/a/b",
        id: "id",
        source: "src",
        time: if i.is_multiple_of(2) {
            Some("2024-01-01T00:00:00Z")
        } else {
            None
        },
        datacontenttype: None,
        data_kind: DataKind::Json,
        data: br#"{"sku":"x"}"#,
        extensions: r#"{"trace":"t"}"#,
    }
}

#[test]
fn evolve_input_round_trips() {
    let events: Vec<_> = (0..3).map(sample).collect();
    let buf = evolve::encode(Some(b"{\"n\":1}"), events.iter().copied());
    let (state, count, mut r) = evolve::decode(&buf).unwrap();
    assert_eq!(state, Some(&b"{\"n\":1}"[..]));
    assert_eq!(count, 3);
    for e in &events {
        assert_eq!(&r.event().unwrap(), e);
    }
    assert!(r.rest().is_empty());
    assert_eq!(events[0].entity(), "cart");
    assert_eq!(events[0].key(), "a/b");
    let empty = evolve::encode(None, std::iter::empty());
    let (state, count, _) = evolve::decode(&empty).unwrap();
    assert_eq!((state, count), (None, 0));
}

#[test]
fn other_inputs_and_outputs_round_trip() {
    let buf = decide::encode(None, b"{\"type\":\"create\"}", "cart/1", 7);
    let d = decide::decode(&buf).unwrap();
    assert_eq!(
        (d.state, d.command, d.subject, d.revision),
        (None, &b"{\"type\":\"create\"}"[..], "cart/1", 7)
    );
    let e = sample(4);
    assert_eq!(react::decode(&react::encode(&e)).unwrap(), e);
    let q = query::encode(Some(b"1"), b"{}");
    assert_eq!(query::decode(&q).unwrap(), (Some(&b"1"[..]), &b"{}"[..]));
    let out = output(CallStatus::Rejected, b"{\"message\":\"no\"}");
    assert_eq!(
        parse_output(&out).unwrap(),
        (CallStatus::Rejected, &b"{\"message\":\"no\"}"[..])
    );
    assert!(parse_output(&[]).is_err());
    assert!(parse_output(&[9]).is_err());
    assert_eq!(
        unpack(pack(0x1234_5678, 0xdead_beef)),
        (0x1234_5678, 0xdead_beef)
    );
}

#[test]
fn truncated_input_is_an_error_not_a_panic() {
    let buf = evolve::encode(None, [sample(1)].into_iter());
    for cut in 0..buf.len() {
        let r = evolve::decode(&buf[..cut]).and_then(|(_, n, mut r)| {
            for _ in 0..n {
                r.event()?;
            }
            Ok(())
        });
        assert!(r.is_err(), "cut at {cut} should fail");
    }
}

#[test]
fn decide_inputs_of_both_versions_decode() {
    let v1 = decide::encode(Some(b"{}"), b"{\"type\":\"x\"}", "cart/1", 3);
    let i = decide::decode(&v1).unwrap();
    assert_eq!((i.subject, i.revision, i.context), ("cart/1", 3, None));
    let v2 = decide::encode_v2(None, b"{}", "cart/1", 0, b"{\"time\":\"t\"}");
    let i = decide::decode(&v2).unwrap();
    assert_eq!(i.state, None);
    assert_eq!(i.context, Some(&b"{\"time\":\"t\"}"[..]));
}

#[test]
fn reducer_exports_name_entry_and_reducer() {
    assert_eq!(reducer_export("evolve", "books"), "evolve.books");
    assert_eq!(
        split_reducer_export("evolve_groups.books.v2"),
        Some(("evolve_groups", "books.v2"))
    );
    assert_eq!(split_reducer_export("evolve"), None);
    assert_eq!(split_reducer_export("evolve."), None);
    assert_eq!(split_reducer_export("helper.books"), None);
}

#[test]
fn an_event_takes_exactly_the_bytes_its_size_says() {
    let mut with_everything = sample(0);
    with_everything.datacontenttype = Some("application/json");
    let without = EventRef {
        time: None,
        data_kind: DataKind::None,
        data: b"",
        extensions: "",
        ..sample(1)
    };
    for e in [sample(0), sample(1), with_everything, without] {
        let mut w = Encoder::new();
        w.event(&e);
        assert_eq!(Encoder::event_len(&e), w.len(), "{e:?}");
    }
    // The inputs built from such events are sized to the byte, state and all.
    let events: Vec<_> = (0..5).map(sample).collect();
    let one = evolve::encode(Some(b"{}"), events.iter().copied());
    let sizes: usize = events.iter().map(Encoder::event_len).sum();
    assert_eq!(one.len(), 4 + 2 + 4 + sizes);
    let groups = evolve_groups::encode(&[
        (Some(&b"{}"[..]), events[..2].iter().copied()),
        (None, events[2..].iter().copied()),
    ]);
    assert_eq!(groups.len(), 4 + (4 + 2 + 4) + (4 + 4) + sizes);
}

#[test]
fn inputs_written_in_place_equal_the_encoded_ones_and_a_wrong_size_is_refused() {
    let events: Vec<_> = (0..4).map(sample).collect();
    let groups = [
        (Some(&b"{\"n\":1}"[..]), events[..1].iter().copied()),
        (None, events[1..].iter().copied()),
    ];
    let encoded = evolve_groups::encode(&groups);
    assert_eq!(evolve_groups::encoded_len(&groups), encoded.len());
    let mut buf = vec![0xAA; encoded.len()];
    evolve_groups::encode_into(&groups, &mut buf).unwrap();
    assert_eq!(buf, encoded);

    let one = evolve::encode(Some(b"{}"), events.iter().copied());
    assert_eq!(
        evolve::input_len(Some(b"{}"), events.iter().map(Encoder::event_len).sum()),
        one.len()
    );
    let mut buf = vec![0; one.len()];
    evolve::encode_into(Some(b"{}"), events.iter().copied(), &mut buf).unwrap();
    assert_eq!(buf, one);

    // One byte short: nothing past the end is written, and the overflow is reported.
    let mut short = vec![0; encoded.len() - 1];
    let err = evolve_groups::encode_into(&groups, &mut short).unwrap_err();
    assert!(err.overflow, "{err}");
    // One byte long: the unwritten tail is reported, not handed over as padding.
    let mut long = vec![0; encoded.len() + 1];
    let err = evolve_groups::encode_into(&groups, &mut long).unwrap_err();
    assert_eq!((err.overflow, err.written), (false, encoded.len()), "{err}");
}

#[test]
fn attributes_checked_together_read_as_when_checked_alone() {
    let long = "k".repeat(200); // its length prefix (200 = 0xC8) is not ASCII
    let subjects = ["cart/1", "cart/ünïcödé/€", long.as_str(), ""];
    for subject in subjects {
        let e = EventRef {
            subject,
            id: "ид",
            ..sample(1)
        };
        let buf = react::encode(&e);
        assert_eq!(react::decode(&buf).unwrap(), e, "{subject:?}");
    }
    // A field that is not UTF-8 is refused, whichever way the attributes are checked.
    for subject in ["cart/1", long.as_str()] {
        let e = EventRef {
            subject,
            ..sample(1)
        };
        let mut buf = react::encode(&e);
        let at = buf
            .windows(2)
            .position(|w| w == b"id")
            .expect("the id is in the input");
        buf[at] = 0xFF;
        assert!(react::decode(&buf).is_err(), "{subject:?}");
    }
}
