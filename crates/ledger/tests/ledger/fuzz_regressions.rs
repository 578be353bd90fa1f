//! Regressions found by the fuzz targets in `fuzz/` (see docs/faults.md), at the ledger's
//! event model.

use loom_ledger::Event;

fn with_content_type(ct: &str) -> Result<Event, String> {
    let json = serde_json::json!({
        "specversion": "1.0", "id": "1", "source": "s", "type": "t", "subject": "note/1",
        "datacontenttype": ct, "data": "x"
    });
    Event::from_json_slice(json.to_string().as_bytes()).map_err(|e| e.message)
}

/// http_binding found an event whose `datacontenttype` ("Â") was accepted, but whose
/// binary-mode read put it in a `Content-Type` header that is not ASCII — which Loom's own
/// binding (and HTTP) refuses on the way back in. A `datacontenttype` must be a media type.
#[test]
fn datacontenttype_must_be_a_media_type() {
    for bad in [
        "Â",
        "text/plaiñ",
        "text/plain\n",
        "text/plain\r\nx-injected: 1",
        "plain",
        "/json",
        "text/",
        "te xt/plain",
        "text/pl@in",
    ] {
        let err = with_content_type(bad).expect_err(bad);
        assert!(err.contains("is not a media type"), "{bad:?}: {err}");
    }
    for good in [
        "application/json",
        "text/plain; charset=utf-8",
        "application/vnd.shop+json; charset=\"utf-8\"",
        "application/cloudevents+json",
        "image/svg+xml",
        "text/plain;format=flowed",
    ] {
        with_content_type(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
}

/// selector: serde_json_path 0.7.2 panics ("entered unreachable code: we do not use streaming
/// parsers") on a JSONPath that ends in a string's `\u` escape. Compiling such a selector —
/// what a query, a subscription, a projection definition or a DCB condition does with a
/// client's text — must give a selector error, not a panic.
#[test]
fn a_jsonpath_ending_in_an_escape_is_an_error_not_a_panic() {
    use loom_ledger::{Selector, SelectorError};
    for text in [
        "$['\\u",
        "$[?'\\u",
        "$[\"\\u",
        "$.a[?@ == '\\u",
        "$[?'\\\\\\\\\\u",
    ] {
        for (data, meta) in [(Some(text.to_owned()), None), (None, Some(text.to_owned()))] {
            let selector = Selector {
                data,
                meta,
                ..Selector::default()
            };
            match selector.compile() {
                Err(SelectorError::JsonPath { message, .. }) => {
                    assert!(message.contains("malformed"), "{text:?}: {message}")
                }
                other => panic!("{text:?}: expected a JSONPath error, got {other:?}"),
            }
        }
    }
    // Well-formed escapes still parse.
    let ok = Selector {
        data: Some("$['\\u00e9']".into()),
        ..Selector::default()
    };
    ok.compile().unwrap();
}
