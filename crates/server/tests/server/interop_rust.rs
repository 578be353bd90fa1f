//! The Rust `cloudevents-sdk` (0.9, its reqwest binding) against a real server: events with
//! JSON, text and bytes data and with none, posted in binary mode (the SDK's `event`) and in
//! structured mode (the SDK's own JSON), each posted again in the other mode (a retry: a
//! duplicate), and read back in both modes with the SDK's `into_event`.

use crate::common;

use cloudevents::binding::reqwest::{RequestBuilderExt, ResponseExt};
use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use common::Server;
use loom_server::Config;
use serde_json::{Value, json};

fn cases(run: &str) -> Vec<(&'static str, Event)> {
    let base = |id: &str, ty: &str| {
        EventBuilderV10::new()
            .id(format!("{run}-{id}"))
            .source("https://rust.example/sdk")
            .ty(ty)
            .subject(format!("rsinterop/{run}"))
    };
    let time = chrono::DateTime::parse_from_rfc3339("2026-05-06T07:08:09.123456Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    vec![
        (
            "JSON data with a time",
            base("json", "had_item_added")
                .time(time)
                .extension("priority", "high")
                .data(
                    "application/json",
                    json!({"sku": "kiwi", "quantity": 2, "price": 1.5}),
                )
                .build()
                .unwrap(),
        ),
        (
            "text data",
            base("text", "had_note")
                .data("text/plain", "hello, loom ✓".to_owned())
                .build()
                .unwrap(),
        ),
        (
            "bytes",
            base("bytes", "had_blob")
                .data("application/octet-stream", vec![0u8, 1, 2, 250, 255])
                .build()
                .unwrap(),
        ),
        (
            "bytes that are valid UTF-8",
            base("utf8-bytes", "had_blob")
                .data("application/octet-stream", b"abc".to_vec())
                .build()
                .unwrap(),
        ),
        ("no data", base("none", "was_checked_out").build().unwrap()),
    ]
}

/// The data as bytes or JSON, whichever form a mode carried it in.
fn meaning(data: Option<&Data>) -> Value {
    match data {
        None => Value::Null,
        Some(Data::Json(v)) => json!({"json": v}),
        Some(Data::String(s)) => json!({"bytes": s.as_bytes()}),
        Some(Data::Binary(b)) => json!({"bytes": b}),
    }
}

fn problems(sent: &Event, back: &Event) -> Vec<String> {
    let mut out = Vec::new();
    let pairs = [
        ("id", sent.id().to_owned(), back.id().to_owned()),
        (
            "source",
            sent.source().to_string(),
            back.source().to_string(),
        ),
        ("type", sent.ty().to_owned(), back.ty().to_owned()),
        (
            "subject",
            format!("{:?}", sent.subject()),
            format!("{:?}", back.subject()),
        ),
        (
            "time",
            format!("{:?}", sent.time()),
            format!("{:?}", back.time()),
        ),
    ];
    for (name, a, b) in pairs {
        if a != b {
            out.push(format!("{name}: sent {a}, got {b}"));
        }
    }
    if sent.datacontenttype().is_some() && sent.datacontenttype() != back.datacontenttype() {
        out.push(format!(
            "datacontenttype: sent {:?}, got {:?}",
            sent.datacontenttype(),
            back.datacontenttype()
        ));
    }
    // This SDK reads a binary-mode body as bytes whatever its Content-Type: JSON data comes
    // back as the JSON's bytes, the same data.
    let back_data = match (sent.data(), back.data()) {
        (Some(Data::Json(_)), Some(Data::Binary(b))) => {
            serde_json::from_slice(b).ok().map(Data::Json)
        }
        _ => back.data().cloned(),
    };
    if meaning(sent.data()) != meaning(back_data.as_ref()) {
        out.push(format!(
            "data: sent {:?}, got {:?}",
            sent.data(),
            back.data()
        ));
    }
    for name in ["position", "revision", "recordedtime"] {
        if back.extension(name).is_none() {
            out.push(format!("{name} missing"));
        }
    }
    if sent.extension("priority").is_some()
        && back.extension("priority") != sent.extension("priority")
    {
        out.push("extension priority lost".into());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_cloudevents_sdk_round_trips_every_mode_and_data_kind() {
    let server = Server::start(Config::default()).await;
    let client = reqwest::Client::new();
    let put = client
        .put(server.url("/v1/entities/rsinterop"))
        .json(&json!({"open": true}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let structured = |e: &Event| {
        client
            .post(server.url("/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .body(serde_json::to_vec(e).unwrap())
    };
    let binary = |e: &Event| {
        client
            .post(server.url("/v1/events"))
            .event(e.clone())
            .unwrap()
    };
    let mut failures = Vec::new();
    let mut passed = 0;
    for first_binary in [true, false] {
        let run = if first_binary { "b" } else { "s" };
        for (name, event) in cases(run) {
            let (first, again) = if first_binary {
                (binary(&event), structured(&event))
            } else {
                (structured(&event), binary(&event))
            };
            let what = format!(
                "{name}, posted {}",
                if first_binary { "binary" } else { "structured" }
            );
            let resp = first.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status != 201 {
                failures.push(format!("{what}: {status} {body}"));
                continue;
            }
            let position = body["events"][0]["position"].as_u64().unwrap();
            let resp = again.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status == 200 && body["duplicate"] == true {
                passed += 1;
            } else {
                failures.push(format!(
                    "{what}, re-posted in the other mode: {status} {body}"
                ));
            }
            for mode in ["structured", "binary"] {
                let resp = client
                    .get(server.url(&format!("/v1/events/{position}?mode={mode}")))
                    .send()
                    .await
                    .unwrap();
                match resp.into_event().await {
                    Ok(back) => match problems(&event, &back) {
                        p if p.is_empty() => passed += 1,
                        p => failures.push(format!("{what}, read back {mode}: {}", p.join("; "))),
                    },
                    Err(e) => failures.push(format!("{what}, read back {mode}: the SDK says {e}")),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{passed} passed; failed:\n{}",
        failures.join("\n")
    );
    assert_eq!(passed, 30);
    server.stop().await;
}
