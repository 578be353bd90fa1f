#!/usr/bin/env python3
"""Interop check: the Python `cloudevents` SDK posts events to Loom in binary and structured
mode, posts each again in the other mode (a retry: it must be a duplicate), and reads them back
(structured and binary) attribute-for-attribute.

Usage: python3 tests/interop/python_cloudevents.py --url http://127.0.0.1:7070 [--token T]
Needs: pip install cloudevents requests. Exits non-zero on any mismatch and ends with a line
"N passed, M failed".
"""

import argparse
import base64
import sys
import uuid
import warnings
from urllib.parse import unquote

import requests

warnings.filterwarnings("ignore")

try:  # cloudevents 1.x
    from cloudevents.http import CloudEvent, from_http, to_binary, to_structured
except ImportError:  # cloudevents 2.x keeps the 1.x API under cloudevents.v1
    from cloudevents.v1.http import CloudEvent, from_http, to_binary, to_structured

STORE_SET = ("position", "revision", "recordedtime")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7070")
    parser.add_argument("--token")
    args = parser.parse_args()
    session = requests.Session()
    if args.token:
        session.headers["Authorization"] = f"Bearer {args.token}"
    base = args.url.rstrip("/")

    r = session.put(f"{base}/v1/entities/pyinterop", json={"open": True})
    assert r.status_code in (200, 201), r.text

    run = uuid.uuid4().hex[:8]
    cases = [
        ("binary, JSON data", to_binary, CloudEvent(
            {"type": "was_created", "source": "https://python.example/sdk", "subject": f"pyinterop/{run}",
             "datacontenttype": "application/json", "traceid": "abc 123 ü", "time": "2024-05-01T12:00:00+02:00"},
            {"owner": "amal", "items": [1, 2, 3], "price": 1.5})),
        ("binary, JSON data, no datacontenttype", to_binary, CloudEvent(
            {"type": "was_created", "source": "https://python.example/sdk", "subject": f"pyinterop/{run}"},
            {"n": 1})),
        ("binary, text data", to_binary_text, CloudEvent(
            {"type": "had_note", "source": "https://python.example/sdk", "subject": f"pyinterop/{run}",
             "datacontenttype": "text/plain; charset=utf-8"},
            "hello, loom")),
        ("binary, bytes data", to_binary, CloudEvent(
            {"type": "had_blob", "source": "https://python.example/sdk", "subject": f"pyinterop/{run}/blob",
             "datacontenttype": "application/octet-stream"},
            bytes([0, 1, 2, 250, 255]))),
        ("structured, JSON data", to_structured, CloudEvent(
            {"type": "had_item_added", "source": "https://python.example/sdk", "subject": f"pyinterop/{run}",
             "datacontenttype": "application/json", "dataschema": "https://schemas.example/item",
             "priority": "high"},
            {"sku": "kiwi", "quantity": 2})),
        ("structured, no data", to_structured, CloudEvent(
            {"type": "was_checked_out", "source": "https://python.example/sdk", "subject": f"pyinterop/{run}"},
            None)),
    ]

    passed = failed = 0
    for name, convert, event in cases:
        headers, body = convert(event)
        r = session.post(f"{base}/v1/events", headers=headers, data=body)
        if r.status_code != 201:
            print(f"FAIL {name}: POST answered {r.status_code}: {r.text}")
            failed += 1
            continue
        position = r.json()["events"][0]["position"]
        # The same event again in the other mode is a retry: a duplicate, nothing written.
        other = to_structured if convert in (to_binary, to_binary_text) else to_binary
        headers, body = other(event)
        r = session.post(f"{base}/v1/events", headers=headers, data=body)
        if r.status_code == 200 and r.json().get("duplicate") is True:
            print(f"ok   {name}, re-posted in the other mode: a duplicate")
            passed += 1
        else:
            print(f"FAIL {name}, re-posted in the other mode: {r.status_code} {r.text}")
            failed += 1
        for mode in ("structured", "binary"):
            r = session.get(f"{base}/v1/events/{position}", params={"mode": mode})
            back = from_http(dict(r.headers), r.content)
            problems = compare(event, back, binary=(mode == "binary"))
            if back.get("position") is None or int(back["position"]) != position:
                problems.append(f"position {back.get('position')!r} != {position}")
            if problems:
                print(f"FAIL {name}, read back {mode}: " + "; ".join(problems))
                failed += 1
            else:
                print(f"ok   {name}, read back {mode}")
                passed += 1

    # by-id finds the SDK's generated id.
    event = cases[0][2]
    r = session.get(f"{base}/v1/events/by-id", params={"source": event["source"], "id": event["id"]})
    if r.status_code == 200 and r.json()["id"] == event["id"]:
        passed += 1
        print("ok   by-id lookup of an SDK-generated id")
    else:
        failed += 1
        print(f"FAIL by-id: {r.status_code} {r.text}")

    print(f"python interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


def to_binary_text(event):
    """Binary mode with the text as the body (the SDK's default marshaller would JSON-encode
    a str, quotes included, whatever the content type)."""
    return to_binary(event, data_marshaller=lambda d: d.encode("utf-8"))


def normalize(value):
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    return value


def compare(sent, back, binary):
    problems = []
    for name, value in sent.get_attributes().items():
        got = back.get(name)
        if got is None:
            problems.append(f"attribute {name} missing")
        elif binary and isinstance(got, str) and unquote(got) == str(value):
            # The binding percent-encodes header values; this SDK does not decode them.
            pass
        elif str(got) != str(value):
            problems.append(f"attribute {name}: sent {value!r}, got {got!r}")
    for name, value in back.get_attributes().items():
        if (binary and name == "datacontenttype" and value == "application/json"
                and "datacontenttype" not in sent.get_attributes()):
            # JSON data without a datacontenttype is read back in binary mode under its
            # default, application/json, so that SDKs parse the body as JSON.
            continue
        if name not in sent.get_attributes() and name not in STORE_SET:
            problems.append(f"unexpected attribute {name}={value!r}")
    for name in STORE_SET:
        if back.get(name) is None:
            problems.append(f"store-set attribute {name} missing")
    data = back.data
    if isinstance(sent.data, str) and isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8")  # the SDK gives text bodies back as bytes
    if normalize(sent.data) != normalize(data):
        problems.append(f"data: sent {sent.data!r}, got {back.data!r}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
