#!/usr/bin/env python3
"""Interop check with the Python `cloudevents` 2.x API (`cloudevents.core`): events posted in
binary and structured mode, each posted again in the other mode (a retry: it must be a
duplicate), and read back in both modes with the SDK's own `from_http_event`.

The 1.x API (`cloudevents.http`, kept in 2.x as `cloudevents.v1`) is checked by
python_cloudevents.py.

Usage: python3 tests/interop/python_cloudevents_core.py --url http://127.0.0.1:7070 [--token T]
Needs: pip install 'cloudevents>=2' requests. Exits non-zero on any mismatch and ends with a
line "N passed, M failed".
"""

import argparse
import sys
import uuid
from datetime import datetime, timezone

import requests
from cloudevents.core.bindings.http import (
    HTTPMessage,
    from_http_event,
    to_binary_event,
    to_structured_event,
)
from cloudevents.core.v1.event import CloudEvent

STORE_SET = ("position", "revision", "recordedtime")
SOURCE = "https://python.example/sdk-core"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7070")
    parser.add_argument("--token")
    args = parser.parse_args()
    session = requests.Session()
    if args.token:
        session.headers["Authorization"] = f"Bearer {args.token}"
    base = args.url.rstrip("/")

    r = session.put(f"{base}/v1/entities/pycore", json={"open": True})
    assert r.status_code in (200, 201), r.text

    run = uuid.uuid4().hex[:8]
    subject = f"pycore/{run}"
    # This API sets `time` to now when it is not given, as a datetime in UTC.
    micro = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    cases = [
        ("binary, JSON data", to_binary_event, CloudEvent(
            {"type": "was_created", "source": SOURCE, "subject": subject,
             "datacontenttype": "application/json", "traceid": "abc 123 ü", "time": micro},
            {"owner": "amal", "items": [1, 2, 3], "price": 1.5})),
        ("binary, JSON data, no datacontenttype", to_binary_event, CloudEvent(
            {"type": "was_created", "source": SOURCE, "subject": subject},
            {"n": 1})),
        ("binary, text data", to_binary_event, CloudEvent(
            {"type": "had_note", "source": SOURCE, "subject": subject,
             "datacontenttype": "text/plain; charset=utf-8"},
            "hello, loom ✓")),
        ("binary, bytes data", to_binary_event, CloudEvent(
            {"type": "had_blob", "source": SOURCE, "subject": f"{subject}/blob",
             "datacontenttype": "application/octet-stream"},
            bytes([0, 1, 2, 250, 255]))),
        ("binary, bytes that are valid UTF-8", to_binary_event, CloudEvent(
            {"type": "had_blob", "source": SOURCE, "subject": f"{subject}/blob",
             "datacontenttype": "application/octet-stream"},
            b"abc")),
        ("structured, JSON data", to_structured_event, CloudEvent(
            {"type": "had_item_added", "source": SOURCE, "subject": subject,
             "datacontenttype": "application/json", "dataschema": "https://schemas.example/item",
             "priority": "high"},
            {"sku": "kiwi", "quantity": 2})),
        ("structured, bytes data", to_structured_event, CloudEvent(
            {"type": "had_blob", "source": SOURCE, "subject": f"{subject}/blob",
             "datacontenttype": "image/png"},
            bytes([137, 80, 78, 71]))),
        ("structured, no data", to_structured_event, CloudEvent(
            {"type": "was_checked_out", "source": SOURCE, "subject": subject},
            None)),
    ]

    passed = failed = 0
    for name, convert, event in cases:
        message = convert(event)
        r = session.post(f"{base}/v1/events", headers=message.headers, data=message.body)
        if r.status_code != 201:
            print(f"FAIL {name}: POST answered {r.status_code}: {r.text}")
            failed += 1
            continue
        position = r.json()["events"][0]["position"]
        other = to_structured_event if convert is to_binary_event else to_binary_event
        message = other(event)
        r = session.post(f"{base}/v1/events", headers=message.headers, data=message.body)
        if r.status_code == 200 and r.json().get("duplicate") is True:
            print(f"ok   {name}, re-posted in the other mode: a duplicate")
            passed += 1
        else:
            print(f"FAIL {name}, re-posted in the other mode: {r.status_code} {r.text}")
            failed += 1
        for mode in ("structured", "binary"):
            r = session.get(f"{base}/v1/events/{position}", params={"mode": mode})
            back = from_http_event(HTTPMessage(headers=dict(r.headers), body=r.content))
            problems = compare(event, back, binary=(mode == "binary"))
            got = back.get_attributes().get("position")
            if got is None or int(got) != position:
                problems.append(f"position {got!r} != {position}")
            if problems:
                print(f"FAIL {name}, read back {mode}: " + "; ".join(problems))
                failed += 1
            else:
                print(f"ok   {name}, read back {mode}")
                passed += 1

    print(f"python (cloudevents.core) interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


def same_value(sent, got):
    if isinstance(sent, datetime):
        return isinstance(got, datetime) and sent == got
    return str(sent) == str(got)


def same_data(sent, back, content_type):
    """The data by meaning: this API reads any binary-mode body that is valid UTF-8 and not
    JSON as text, so bytes may come back as their text."""
    if isinstance(sent, (bytes, bytearray)) and isinstance(back, str):
        return bytes(sent) == back.encode("utf-8")
    return sent == back


def compare(sent, back, binary):
    problems = []
    sent_attrs = sent.get_attributes()
    back_attrs = back.get_attributes()
    for name, value in sent_attrs.items():
        got = back_attrs.get(name)
        if got is None:
            problems.append(f"attribute {name} missing")
        elif not same_value(value, got):
            problems.append(f"attribute {name}: sent {value!r}, got {got!r}")
    for name, value in back_attrs.items():
        if (binary and name == "datacontenttype" and value == "application/json"
                and "datacontenttype" not in sent_attrs):
            continue  # JSON without a content type reads back under its default
        if name not in sent_attrs and name not in STORE_SET:
            problems.append(f"unexpected attribute {name}={value!r}")
    for name in STORE_SET:
        if back_attrs.get(name) is None:
            problems.append(f"store-set attribute {name} missing")
    if not same_data(sent.get_data(), back.get_data(), sent_attrs.get("datacontenttype")):
        problems.append(f"data: sent {sent.get_data()!r}, got {back.get_data()!r}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
