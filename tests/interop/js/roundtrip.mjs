// Interop check: the JavaScript `cloudevents` SDK (10.x) posts events to Loom in binary and
// structured mode, posts each again in the other mode (a retry: it must be a duplicate), and
// reads every event back in both modes with the SDK's own HTTP.toEvent, attribute for
// attribute and data for data.
//
// Usage: node tests/interop/js/roundtrip.mjs http://127.0.0.1:7070
// Ends with a line "js interop: N passed, M failed"; exits 1 on any failure.
import { CloudEvent, HTTP } from "cloudevents";

const base = (process.argv[2] || "http://127.0.0.1:7070").replace(/\/$/, "");
const STORE_SET = ["position", "revision", "recordedtime"];
const run = Math.random().toString(16).slice(2, 10);
let passed = 0;
let failed = 0;
const ok = (what) => { passed++; console.log(`ok   ${what}`); };
const fail = (what, why) => { failed++; console.log(`FAIL ${what}: ${why}`); };

const put = await fetch(`${base}/v1/entities/jsinterop`, {
  method: "PUT",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ open: true }),
});
if (![200, 201].includes(put.status)) throw new Error(`registering: ${put.status}`);

const source = "https://js.example/sdk";
const subject = `jsinterop/${run}`;
const cases = [
  ["JSON data", new CloudEvent({ type: "had_item_added", source, subject,
    datacontenttype: "application/json", dataschema: "https://schemas.example/item",
    priority: "high", time: "2024-05-01T12:00:00.123Z", data: { sku: "kiwi", quantity: 2, price: 1.5 } })],
  ["JSON data, no datacontenttype", new CloudEvent({ type: "was_created", source, subject, data: { n: 1 } })],
  ["text data", new CloudEvent({ type: "had_note", source, subject,
    datacontenttype: "text/plain", data: "hello, loom ✓" })],
  ["bytes data", new CloudEvent({ type: "had_blob", source, subject: `${subject}/blob`,
    datacontenttype: "application/octet-stream", data: new Uint8Array([0, 1, 2, 250, 255]) })],
  ["bytes that are valid UTF-8", new CloudEvent({ type: "had_blob", source, subject: `${subject}/blob`,
    datacontenttype: "application/octet-stream", data: new Uint8Array([97, 98, 99]) })],
  ["no data", new CloudEvent({ type: "was_checked_out", source, subject })],
];

function post(message) {
  return fetch(`${base}/v1/events`, { method: "POST", headers: message.headers, body: message.body });
}

function normalize(data) {
  // An empty body (an event without data, read in binary mode) is no data.
  if (data === "" || (ArrayBuffer.isView(data) && data.byteLength === 0)) return "null";
  if (ArrayBuffer.isView(data)) {
    // By element: this SDK decodes a structured event's data_base64 into a Uint32Array of
    // byte values, not a Uint8Array.
    return `bytes:${Buffer.from(Array.from(data)).toString("base64")}`;
  }
  if (typeof data === "string") return `text:${data}`;
  return JSON.stringify(data ?? null);
}

function compare(sent, back) {
  const problems = [];
  for (const [name, value] of Object.entries(sent.toJSON())) {
    if (name === "data" || name === "data_base64") continue;
    if (value === undefined) continue;
    const got = back[name];
    if (got === undefined) problems.push(`attribute ${name} missing`);
    else if (name === "time" ? Date.parse(got) !== Date.parse(value) : String(got) !== String(value)) {
      problems.push(`attribute ${name}: sent ${JSON.stringify(value)}, got ${JSON.stringify(got)}`);
    }
  }
  for (const name of STORE_SET) if (back[name] === undefined) problems.push(`${name} missing`);
  const sentData = sent.data_base64 !== undefined && sent.data === undefined
    ? new Uint8Array(Buffer.from(sent.data_base64, "base64")) : sent.data;
  let gotData = back.data;
  if (gotData === undefined && back.data_base64 !== undefined) {
    gotData = new Uint8Array(Buffer.from(back.data_base64, "base64"));
  }
  if (normalize(sentData) !== normalize(gotData)) {
    problems.push(`data: sent ${normalize(sentData)}, got ${normalize(gotData)}`);
  }
  return problems;
}

for (const [name, event] of cases) {
  for (const [mode, serialize, other] of [["binary", HTTP.binary, HTTP.structured],
                                          ["structured", HTTP.structured, HTTP.binary]]) {
    const what = `${name}, posted ${mode}`;
    const e = event.cloneWith({ id: `${event.id}-${mode}` });
    const r = await post(serialize(e));
    if (r.status !== 201) { fail(what, `POST answered ${r.status}: ${await r.text()}`); continue; }
    const position = (await r.json()).events[0].position;
    const again = await post(other(e));
    const answer = await again.json().catch(() => ({}));
    if (again.status === 200 && answer.duplicate === true) ok(`${what}, re-posted in the other mode: a duplicate`);
    else fail(`${what}, re-posted in the other mode`, `${again.status} ${JSON.stringify(answer)}`);
    for (const readMode of ["structured", "binary"]) {
      const got = await fetch(`${base}/v1/events/${position}?mode=${readMode}`);
      const headers = Object.fromEntries(got.headers.entries());
      const bytes = Buffer.from(await got.arrayBuffer());
      const ct = headers["content-type"] || "";
      const isText = ct.includes("json") || ct.startsWith("text/");
      let back;
      try {
        back = HTTP.toEvent({ headers, body: isText ? bytes.toString("utf8") : bytes });
      } catch (err) {
        fail(`${what}, read back ${readMode}`, `the SDK could not read it: ${err}`);
        continue;
      }
      const problems = compare(e, back);
      if (Number(back.position) !== position) problems.push(`position ${back.position} != ${position}`);
      if (problems.length) fail(`${what}, read back ${readMode}`, problems.join("; "));
      else ok(`${what}, read back ${readMode}`);
    }
  }
}

console.log(`js interop: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
