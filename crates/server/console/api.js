// The console talks to Loom only through its public HTTP API, with the token the user entered
// (kept in sessionStorage: gone when the tab closes).

const TOKEN_KEY = "loom-token";

/** A refusal from the server: an RFC 9457 problem. */
export class Problem extends Error {
  constructor(status, body) {
    const detail = (body && (body.detail || body.title)) || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.type = (body && body.type) || "about:blank";
    this.title = (body && body.title) || "";
    this.detail = detail;
    this.body = body || {};
  }

  /** Whether it is the Loom problem type `kind` ("command-rejected", …). */
  is(kind) {
    return this.type === `urn:loom:problem:${kind}`;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headersWith(extra) {
  const h = new Headers(extra || {});
  const t = token();
  if (t) h.set("Authorization", `Bearer ${t}`);
  return h;
}

async function refusal(res) {
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { detail: text.trim() || res.statusText };
  }
  return new Problem(res.status, body);
}

/**
 * A request. `json` sends a JSON body; `body` any other. Answers parsed JSON, text, or the
 * Response itself with `raw`. Non-success answers throw a Problem.
 */
export async function api(path, { method = "GET", json, body, headers, raw = false, text = false, signal } = {}) {
  const h = headersWith(headers);
  let payload = body;
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    payload = JSON.stringify(json);
  }
  const res = await fetch(path, { method, headers: h, body: payload, signal });
  if (!res.ok) throw await refusal(res);
  if (raw) return res;
  if (res.status === 204) return null;
  if (text) return res.text();
  const ct = res.headers.get("content-type") || "";
  return ct.includes("json") ? res.json() : res.text();
}

/** A JSON list read and whether the server said there is a next page (`Link`). */
export async function page(path, options) {
  const res = await api(path, { ...options, raw: true });
  return { items: await res.json(), more: res.headers.has("link") };
}

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.append(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** A path segment, encoded. */
export const seg = encodeURIComponent;

/** A stream's path below /v1/streams/: every slash of the key encoded (a key may end in
 * /revision). */
export function streamPath(subject) {
  const i = subject.indexOf("/");
  return `${seg(subject.slice(0, i))}/${seg(subject.slice(i + 1))}`;
}

/** A stream's key as path segments, its slashes kept (projection state paths). */
export function keyPath(subject) {
  const i = subject.indexOf("/");
  return `${seg(subject.slice(0, i))}/${subject.slice(i + 1).split("/").map(seg).join("/")}`;
}

/**
 * Server-Sent Events over fetch (EventSource cannot send a token): calls `onMessage({id,
 * event, data})` for each message until `signal` aborts. Resolves when the stream ends.
 */
export async function subscribe(path, onMessage, signal) {
  const res = await fetch(path, { headers: headersWith({ Accept: "text/event-stream" }), signal });
  if (!res.ok) throw await refusal(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const message = { id: "", event: "message", data: "" };
        const data = [];
        for (const line of block.split(/\r?\n/)) {
          if (!line || line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (field === "data") data.push(v);
          else if (field === "id") message.id = v;
          else if (field === "event") message.event = v;
        }
        if (data.length) {
          message.data = data.join("\n");
          onMessage(message);
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") throw e;
  }
}
