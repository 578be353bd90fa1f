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
