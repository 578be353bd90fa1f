//! POST /v1/events in every CloudEvents content mode, and reading events back in each form.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use loom_server::Config;
use serde_json::{Value, json};

fn binary(headers: &[(&str, &str)], body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post("/v1/events");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body.into()).unwrap()
}

const CE: [(&str, &str); 5] = [
    ("ce-specversion", "1.0"),
    ("ce-id", "b-1"),
    ("ce-source", "https://shop.example/carts"),
    ("ce-type", "was_created"),
    ("ce-subject", "cart/1"),
];

async fn stored(t: &TestState, position: u64) -> Value {
    let a = get(&t.state, &format!("/v1/events/{position}")).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-type"),
        Some("application/cloudevents+json")
    );
    a.json()
}

#[tokio::test]
async fn structured_mode_with_and_without_charset() {
    let t = state();
    for (i, ct) in [
        "application/cloudevents+json",
        "application/cloudevents+json; charset=utf-8",
        "Application/CloudEvents+JSON; charset=\"UTF-8\"",
    ]
    .iter()
    .enumerate()
    {
        let mut e = cart_event(&format!("s-{i}"), "1", "was_created", json!({"n": 1}));
        e["time"] = json!("2024-05-01T12:00:00+02:00");
        let a = send(
            &t.state,
            Request::post("/v1/events")
                .header("content-type", *ct)
                .body(Body::from(e.to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 201, "{ct}: {}", String::from_utf8_lossy(&a.body));
        let out = a.json();
        assert_eq!(out["events"][0]["position"], i as u64 + 1);
        assert_eq!(out["events"][0]["revision"], i as u64 + 1);
        assert_eq!(out["last_position"], i as u64 + 1);
        assert_eq!(
            a.header("location"),
            Some(format!("/v1/events/{}", i + 1).as_str())
        );
        let back = stored(&t, i as u64 + 1).await;
        // The time is kept exactly as sent, not normalised.
        assert_eq!(back["time"], "2024-05-01T12:00:00+02:00");
        assert_eq!(back["data"], json!({"n": 1}));
    }
}

#[tokio::test]
async fn structured_mode_refuses_other_charsets() {
    let t = state();
    let e = cart_event("x", "1", "was_created", json!({}));
    let a = send(
        &t.state,
        Request::post("/v1/events")
            .header(
                "content-type",
                "application/cloudevents+json; charset=iso-8859-1",
            )
            .body(Body::from(e.to_string()))
            .unwrap(),
    )
    .await;
    a.problem(415);
    assert_eq!(t.ledger().head(), 0);
}

#[tokio::test]
async fn structured_mode_keeps_extensions_and_exact_numbers() {
    let t = state();
    let body = r#"{"specversion":"1.0","id":"x-1","source":"s","type":"was_created",
        "subject":"cart/9","traceparent":"00-abc-def-01","priority":7,"urgent":true,
        "dataschema":"https://schemas.example/cart","datacontenttype":"application/json",
        "data":{"big":123456789012345678901234567890,"price":1.50}}"#;
    let a = send(
        &t.state,
        Request::post("/v1/events")
            .header("content-type", "application/cloudevents+json")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 201);
    let raw = get(&t.state, "/v1/events/1").await;
    let text = String::from_utf8_lossy(&raw.body).to_string();
    assert!(text.contains("123456789012345678901234567890"), "{text}");
    assert!(text.contains("1.50"), "{text}");
    let back = raw.json();
    assert_eq!(back["traceparent"], "00-abc-def-01");
    assert_eq!(back["priority"], 7);
    assert_eq!(back["urgent"], true);
    assert_eq!(back["dataschema"], "https://schemas.example/cart");
    assert_eq!(back["position"], 1);
    assert_eq!(back["revision"], 1);
    assert!(back["recordedtime"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn binary_mode_json_with_charset_and_extensions() {
    let t = state();
    let mut headers = CE.to_vec();
    headers.push(("content-type", "application/json; charset=utf-8"));
    headers.push(("ce-traceid", "abc%20%22quoted%22%20%E2%82%AC"));
    headers.push(("ce-time", "2024-05-01T10:00:00Z"));
    headers.push(("ce-dataschema", "https://schemas.example/created"));
    let a = send(
        &t.state,
        binary(&headers, r#"{ "owner": "amal", "n": 1.0 }"#),
    )
    .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let back = stored(&t, 1).await;
    assert_eq!(back["id"], "b-1");
    assert_eq!(back["source"], "https://shop.example/carts");
    assert_eq!(back["type"], "was_created");
    assert_eq!(back["subject"], "cart/1");
    assert_eq!(back["time"], "2024-05-01T10:00:00Z");
    assert_eq!(back["datacontenttype"], "application/json; charset=utf-8");
    assert_eq!(back["dataschema"], "https://schemas.example/created");
    assert_eq!(
        back["traceid"], "abc \"quoted\" €",
        "extensions are percent-decoded"
    );
    assert_eq!(back["data"], json!({"owner": "amal", "n": 1.0}));
}

#[tokio::test]
async fn binary_mode_text_and_bytes() {
    let t = state();
    let mut headers = CE.to_vec();
    headers.push(("content-type", "text/plain; charset=utf-8"));
    let a = send(&t.state, binary(&headers, "hello, cart")).await;
    assert_eq!(a.status, 201);
    assert_eq!(stored(&t, 1).await["data"], "hello, cart");

    let mut headers = CE.to_vec();
    headers[1] = ("ce-id", "b-2");
    headers.push(("content-type", "application/octet-stream"));
    let bytes: Vec<u8> = vec![0, 159, 146, 150, 255];
    let a = send(&t.state, binary(&headers, bytes.clone())).await;
    assert_eq!(a.status, 201);
    let back = stored(&t, 2).await;
    assert_eq!(back["data_base64"], "AJ+Slv8=");
    assert!(back.get("data").is_none());

    // Binary mode out: the same bytes and attributes as headers.
    let out = get(&t.state, "/v1/events/2?mode=binary").await;
    assert_eq!(out.status, 200);
    assert_eq!(out.body.as_ref(), bytes.as_slice());
    assert_eq!(out.header("content-type"), Some("application/octet-stream"));
    assert_eq!(out.header("ce-id"), Some("b-2"));
    assert_eq!(out.header("ce-specversion"), Some("1.0"));
    assert_eq!(out.header("ce-subject"), Some("cart/1"));
    assert_eq!(out.header("ce-position"), Some("2"));
    assert_eq!(out.header("ce-revision"), Some("2"));
    assert!(out.header("ce-recordedtime").is_some());
}

#[tokio::test]
async fn binary_mode_response_percent_encodes_headers() {
    let t = state();
    let mut e = cart_event("p-1", "1", "was_created", json!({"a": 1}));
    e["note"] = json!("50% off \"today\" ü");
    assert_eq!(post_events(&t.state, &e).await.status, 201);
    let out = get(&t.state, "/v1/events/1?mode=binary").await;
    assert_eq!(
        out.header("ce-note"),
        Some("50%25%20off%20%22today%22%20%C3%BC")
    );
    assert_eq!(out.header("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.body).unwrap(),
        json!({"a": 1})
    );
    get(&t.state, "/v1/events/1?mode=weird").await.problem(400);
}

#[tokio::test]
async fn binary_mode_missing_attribute_is_422_and_bad_json_is_400() {
    let t = state();
    let headers: Vec<_> = CE
        .iter()
        .filter(|(k, _)| *k != "ce-source")
        .cloned()
        .collect();
    let p = send(&t.state, binary(&headers, "")).await.problem(422);
    assert!(p["detail"].as_str().unwrap().contains("source"), "{p}");

    let mut headers = CE.to_vec();
    headers.push(("content-type", "application/json"));
    send(&t.state, binary(&headers, "{not json"))
        .await
        .problem(400);

    let mut headers = CE.to_vec();
    headers[0] = ("ce-specversion", "0.3");
    send(&t.state, binary(&headers, "")).await.problem(422);
    assert_eq!(t.ledger().head(), 0);
}

#[tokio::test]
async fn batch_mode_appends_all_in_order() {
    let t = state();
    let batch = json!([
        cart_event("c-1", "7", "was_created", json!({})),
        cart_event("c-2", "7", "had_item_added", item("apple", 2)),
        cart_event("c-3", "8", "was_created", json!({})),
    ]);
    let a = post_events(&t.state, &batch).await;
    assert_eq!(a.status, 201);
    let out = a.json();
    let got: Vec<(u64, u64)> = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![(1, 1), (2, 2), (3, 1)]);
    assert_eq!(out["last_position"], 3);
    assert!(
        a.header("location").is_none(),
        "Location only for one event"
    );

    // batch with charset
    let a = send(
        &t.state,
        Request::post("/v1/events")
            .header(
                "content-type",
                "application/cloudevents-batch+json; charset=utf-8",
            )
            .body(Body::from(
                json!([cart_event("c-4", "9", "was_created", json!({}))]).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 201);
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let t = state();
    let e = cart_event("w-1", "1", "was_created", json!({})).to_string();
    for ct in [
        Some("application/json"),
        Some("text/plain"),
        Some("application/cloudevents+avro"),
        None,
    ] {
        let mut req = Request::post("/v1/events");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let p = send(&t.state, req.body(Body::from(e.clone())).unwrap())
            .await
            .problem(415);
        assert_eq!(p["type"], "urn:loom:problem:unsupported-media-type");
    }
    let a = send(
        &t.state,
        Request::put("/v1/entities/y")
            .header("content-type", "text/plain")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    a.problem(415);
    assert_eq!(t.ledger().head(), 0);
}

#[tokio::test]
async fn malformed_json_is_400_in_every_json_endpoint() {
    let t = state();
    for (uri, ct) in [
        ("/v1/events", "application/cloudevents+json"),
        ("/v1/events", "application/cloudevents-batch+json"),
        ("/v1/append", "application/json"),
        ("/v1/events/query", "application/json"),
    ] {
        for body in ["{\"specversion\": ", "[1, 2", "nul", "\u{0}"] {
            let a = send(
                &t.state,
                Request::post(uri)
                    .header("content-type", ct)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
            a.problem(400);
        }
    }
    let a = send(
        &t.state,
        Request::put("/v1/entities/cart2")
            .header("content-type", "application/json")
            .body(Body::from("{\"events\": "))
            .unwrap(),
    )
    .await;
    a.problem(400);
    // A structured body that is JSON but not an object.
    post_events(&t.state, &json!("just a string"))
        .await
        .problem(400);
    // A batch read in one pass when valid is read again item by item when not, to name the
    // item: one that is not an object is a 400, one that is not a valid event a 422.
    let ok = cart_event("m-1", "1", "was_created", json!({}));
    let p = post_events(&t.state, &json!([ok.clone(), 1]))
        .await
        .problem(400);
    assert!(
        p["detail"].as_str().unwrap().contains("batch item 1"),
        "{p}"
    );
    let mut bad = cart_event("m-2", "1", "was_created", json!({}));
    bad["subject"] = json!("no-slash");
    let p = post_events(&t.state, &json!([ok, bad])).await.problem(422);
    assert!(p.to_string().contains("not a stream name"), "{p}");
    assert_eq!(t.ledger().head(), 0);
}

#[tokio::test]
async fn oversize_body_is_413_with_and_without_content_length() {
    let t = new_state(Config {
        max_body_bytes: 1024,
        ..Config::default()
    });
    let big = cart_event(
        "big",
        "1",
        "was_created",
        json!({ "pad": "x".repeat(4096) }),
    );
    let p = post_events(&t.state, &big).await.problem(413);
    assert_eq!(p["limit"], 1024);
    // Streamed body without Content-Length.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok(big.to_string()[..2000].to_owned()),
        Ok(big.to_string()[2000..].to_owned()),
    ];
    let req = Request::post("/v1/events")
        .header("content-type", "application/cloudevents+json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    send(&t.state, req).await.problem(413);
    // Same limit on /v1/append.
    let a = post_json(&t.state, "/v1/append", &json!({ "events": [big] })).await;
    a.problem(413);
    assert_eq!(t.ledger().head(), 0);
    // A small one still goes through.
    let small = cart_event("small", "1", "was_created", json!({}));
    assert_eq!(post_events(&t.state, &small).await.status, 201);
}

#[tokio::test]
async fn store_set_attributes_are_refused() {
    let t = state();
    for attr in ["position", "revision", "recordedtime"] {
        let mut e = cart_event("s-1", "1", "was_created", json!({}));
        e[attr] = json!(5);
        post_events(&t.state, &e).await.problem(422);
        let mut headers = CE.to_vec();
        let name = format!("ce-{attr}");
        headers.push((&name, "5"));
        send(&t.state, binary(&headers, "")).await.problem(422);
    }
    assert_eq!(t.ledger().head(), 0);
}

#[tokio::test]
async fn binary_mode_reads_raw_latin1_header_bytes() {
    // Some SDKs (Python's) send non-ASCII attribute values unencoded; HTTP clients then
    // write them as ISO-8859-1 bytes. They are read, not refused.
    let t = state();
    let mut req = Request::post("/v1/events");
    for (k, v) in CE {
        req = req.header(k, v);
    }
    let req = req
        .header(
            "ce-note",
            axum::http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(send(&t.state, req).await.status, 201);
    assert_eq!(stored(&t, 1).await["note"], "café");
}

#[tokio::test]
async fn binary_mode_without_content_type_round_trips() {
    let t = state();
    let a = send(&t.state, binary(&CE, r#"{"a":1}"#)).await;
    assert_eq!(a.status, 201);
    let back = stored(&t, 1).await;
    assert!(back.get("datacontenttype").is_none());
    assert_eq!(back["data"], json!({"a": 1}));
    // Read in binary mode: JSON data is `application/json` (the JSON format's default), so that
    // SDKs parse it as JSON; posting that back is a retry, not a new event.
    let out = get(&t.state, "/v1/events/1?mode=binary").await;
    assert_eq!(out.header("content-type"), Some("application/json"));
    assert_eq!(out.body.as_ref(), br#"{"a":1}"#);
    let mut headers = CE.to_vec();
    headers.push(("content-type", "application/json"));
    let again = send(&t.state, binary(&headers, r#"{"a": 1}"#)).await;
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(again.json()["duplicate"], true);
    // As the JavaScript SDK posts it: with charset=utf-8.
    let mut headers = CE.to_vec();
    headers.push(("content-type", "application/json; charset=utf-8"));
    assert_eq!(
        send(&t.state, binary(&headers, r#"{"a":1}"#)).await.status,
        200
    );
    // Another JSON-ish media type is another datacontenttype.
    let mut headers = CE.to_vec();
    headers.push(("content-type", "application/vnd.x+json"));
    assert_eq!(
        send(&t.state, binary(&headers, r#"{"a":1}"#)).await.status,
        409
    );
}

/// Bytes are bytes whichever mode carries them: a binary-mode body under a media type that is
/// not text stays bytes even when it is valid UTF-8, and a retry of it in structured mode
/// (`data_base64`, as every SDK sends bytes) is a duplicate.
#[tokio::test]
async fn bytes_that_happen_to_be_utf8_stay_bytes_across_modes() {
    let t = state();
    let mut headers = CE.to_vec();
    headers.push(("content-type", "application/octet-stream"));
    assert_eq!(send(&t.state, binary(&headers, "abc")).await.status, 201);
    let back = stored(&t, 1).await;
    assert_eq!(back["data_base64"], "YWJj", "{back}");
    assert!(back.get("data").is_none(), "{back}");
    let mut e = json!({"specversion": "1.0", "id": "b-1", "source": "https://shop.example/carts",
        "type": "was_created", "subject": "cart/1", "datacontenttype": "application/octet-stream",
        "data_base64": "YWJj"});
    let again = post_events(&t.state, &e).await;
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(again.json()["duplicate"], true);
    // The same bytes written as a JSON string under that media type: still the same data.
    e.as_object_mut().unwrap().remove("data_base64");
    e["data"] = json!("abc");
    assert_eq!(post_events(&t.state, &e).await.status, 200);
    // Other bytes, or another media type, are another event with the same identity.
    e["data"] = json!("abd");
    post_events(&t.state, &e).await.problem(409);
    let mut text = CE.to_vec();
    text.push(("content-type", "text/plain"));
    assert_eq!(send(&t.state, binary(&text, "abc")).await.status, 409);
    assert_eq!(t.ledger().head(), 1);

    // Which media types are text.
    for (i, (ct, as_text)) in [
        ("text/csv", true),
        ("application/xml", true),
        ("application/atom+xml", true),
        ("application/octet-stream; charset=utf-8", true),
        ("image/png", false),
        ("application/cbor", false),
        ("application/protobuf", false),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("ct-{i}");
        let mut headers = CE.to_vec();
        headers[1] = ("ce-id", &id);
        headers.push(("content-type", ct));
        assert_eq!(
            send(&t.state, binary(&headers, "<a/>")).await.status,
            201,
            "{ct}"
        );
        let back = stored(&t, i as u64 + 2).await;
        assert_eq!(back.get("data").is_some(), as_text, "{ct}: {back}");
        assert_eq!(back.get("data_base64").is_some(), !as_text, "{ct}: {back}");
    }
}
