// Small DOM helpers shared by the pages: elements, JSON views, diffs, tables, charts. Text is
// always set as text, never parsed as HTML.

/** An element: h("a", { href, class: "x", onclick }, "text", child…). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link inside the console (navigates without reloading). */
export function link(href, ...children) {
  return h("a", { href, "data-nav": true }, ...children);
}

export function heading(text, ...extra) {
  return h("div", { class: "heading" }, h("h1", {}, text), ...extra);
}

/** A problem (or any error) shown where it happened, with the server's detail. */
export function problemBox(err) {
  const status = err && err.status ? `${err.status}${err.title ? " " + err.title : ""}` : "Error";
  return h(
    "div",
    { class: "problem", role: "alert" },
    h("strong", {}, status),
    " ",
    h("span", { class: "detail" }, err && err.detail ? err.detail : String(err && err.message ? err.message : err)),
    err && err.type && err.type !== "about:blank" ? h("code", { class: "ptype" }, err.type) : null,
  );
}

export function notice(text) {
  return h("p", { class: "notice", role: "status" }, text);
}

export function muted(text) {
  return h("p", { class: "muted" }, text);
}

/**
 * JSON with syntax colours, re-indented from its text so that numbers keep every digit (a
 * value is turned into text first).
 */
export function jsonView(value, attrs = {}) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  const pre = h("pre", { class: "json", tabindex: "0", ...attrs });
  for (const [kind, t] of tokens(pretty(text))) {
    pre.append(kind ? h("span", { class: `j-${kind}` }, t) : document.createTextNode(t));
  }
  return pre;
}

/** Re-indents JSON text without parsing its numbers. */
export function pretty(text) {
  let out = "";
  let depth = 0;
  let inString = false;
  const nl = () => "\n" + "  ".repeat(depth);
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === "\\") out += text[++i];
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') {
      inString = true;
      out += c;
    } else if (c === "{" || c === "[") {
      const close = c === "{" ? "}" : "]";
      let j = i + 1;
      while (/\s/.test(text[j] || "")) j++;
      if (text[j] === close) {
        out += c + close;
        i = j;
      } else {
        depth++;
        out += c + nl();
      }
    } else if (c === "}" || c === "]") {
      depth--;
      out += nl() + c;
    } else if (c === ",") {
      out += "," + nl();
    } else if (c === ":") {
      out += ": ";
    } else if (!/\s/.test(c)) {
      out += c;
    }
  }
  return out;
}

function* tokens(text) {
  const re = /("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b/g;
  let last = 0;
  let m;
  while ((m = re.exec(text))) {
    if (m.index > last) yield [null, text.slice(last, m.index)];
    if (m[1]) {
      yield [m[2] ? "key" : "str", m[1]];
      if (m[2]) yield [null, m[2]];
    } else if (m[3]) yield ["num", m[3]];
    else yield ["lit", m[4]];
    last = re.lastIndex;
  }
  if (last < text.length) yield [null, text.slice(last)];
}

/**
 * What changed from `a` to `b`, as JSON paths: [{ path, kind: "added" | "removed" |
 * "changed", from, to }]. Objects are compared member by member; arrays by their longest
 * common subsequence, so that an item taken out of a list reads as removed, not as every later
 * item changed.
 */
export function diff(a, b, path = "$") {
  const isObj = (v) => v !== null && typeof v === "object";
  if (Array.isArray(a) && Array.isArray(b)) return diffArrays(a, b, path);
  if (isObj(a) && isObj(b) && !Array.isArray(a) && !Array.isArray(b)) {
    const out = [];
    for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])]) {
      const p = /^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? `${path}.${k}` : `${path}[${JSON.stringify(k)}]`;
      const inA = Object.prototype.hasOwnProperty.call(a, k);
      const inB = Object.prototype.hasOwnProperty.call(b, k);
      if (inA && !inB) out.push({ path: p, kind: "removed", from: a[k] });
      else if (!inA && inB) out.push({ path: p, kind: "added", to: b[k] });
      else out.push(...diff(a[k], b[k], p));
    }
    return out;
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [{ path, kind: "changed", from: a, to: b }];
}

function diffArrays(a, b, path) {
  const out = [];
  const n = a.length;
  const m = b.length;
  if (n * m > 1_000_000) {
    // Too long to align: index by index.
    for (let i = 0; i < Math.max(n, m); i++) {
      if (i >= m) out.push({ path: `${path}[${i}]`, kind: "removed", from: a[i] });
      else if (i >= n) out.push({ path: `${path}[${i}]`, kind: "added", to: b[i] });
      else out.push(...diff(a[i], b[i], `${path}[${i}]`));
    }
    return out;
  }
  const sa = a.map((x) => JSON.stringify(x));
  const sb = b.map((x) => JSON.stringify(x));
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i][j] = sa[i] === sb[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  let gapA = [];
  let gapB = [];
  // Unmatched runs: paired up as changes, the rest removed (from a) or added (to b).
  const flush = () => {
    const k = Math.min(gapA.length, gapB.length);
    for (let x = 0; x < k; x++) out.push(...diff(a[gapA[x]], b[gapB[x]], `${path}[${gapB[x]}]`));
    for (const i of gapA.slice(k)) out.push({ path: `${path}[${i}]`, kind: "removed", from: a[i] });
    for (const j of gapB.slice(k)) out.push({ path: `${path}[${j}]`, kind: "added", to: b[j] });
    gapA = [];
    gapB = [];
  };
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && sa[i] === sb[j]) {
      flush();
      i++;
      j++;
    } else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) gapB.push(j++);
    else gapA.push(i++);
  }
  flush();
  return out;
}

export function diffView(changes) {
  if (!changes.length) return h("p", { class: "muted", "data-testid": "diff" }, "No difference.");
  const show = (v) => (v === undefined ? "" : JSON.stringify(v));
  return table(
    ["Path", "Change", "Before", "After"],
    changes.map((c) => [
      h("code", {}, c.path),
      h("span", { class: `chg chg-${c.kind}` }, c.kind),
      h("code", { class: "before" }, show(c.from)),
      h("code", { class: "after" }, show(c.to)),
    ]),
    { "data-testid": "diff", caption: "What changed between the two positions" },
  );
}

/** A table in a scrolling wrapper: rows are arrays of cells (nodes or text). */
export function table(columns, rows, attrs = {}) {
  const { caption, ...rest } = attrs;
  return h(
    "div",
    { class: "table-wrap", ...rest },
    h(
      "table",
      {},
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => (r instanceof Node ? r : h("tr", {}, r.map((c) => h("td", {}, c)))))),
    ),
  );
}

export function progress(value, max, label) {
  const pct = max > 0 ? Math.min(100, Math.round((100 * value) / max)) : 100;
  return h(
    "span",
    { class: "progress" },
    h("progress", { value: String(value), max: String(Math.max(max, 1)), "aria-label": label }),
    h("span", { class: "muted" }, ` ${value}/${max} (${pct} %)`),
  );
}

export function badge(status) {
  return h("span", { class: `badge badge-${status}` }, (status || "").replace("_", " "));
}

/** A line chart of one or more series of [time, value] points, as SVG. */
export function chart(series, { width = 560, height = 120, label = "" } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const all = series.flatMap((s) => s.points);
  if (all.length < 2) return svg;
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(1, ...all.map((p) => p[1]));
  const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * (width - 4) + 2;
  const y = (v) => height - 14 - (v / vmax) * (height - 24);
  series.forEach((s, i) => {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
    line.setAttribute("class", `series series-${i}`);
    svg.append(line);
  });
  const top = document.createElementNS(ns, "text");
  top.setAttribute("x", "4");
  top.setAttribute("y", "10");
  top.setAttribute("class", "axis");
  top.textContent = `max ${Math.round(vmax).toLocaleString()}/s`;
  svg.append(top);
  return svg;
}

export function time(iso) {
  if (!iso) return "–";
  return h("time", { datetime: iso, title: iso }, iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC"));
}

/** Whether the console's user may do something needing `role`. */
export function can(ctx, role) {
  const rank = { reader: 1, writer: 2, admin: 3 };
  return (rank[ctx.role] || 0) >= rank[role];
}

/** A button that runs `action`, shows "…" while it runs, and reports a failure inline. */
export function actionButton(label, action, { danger = false, confirm: ask } = {}) {
  const btn = h("button", { type: "button", class: danger ? "danger" : "" }, label);
  btn.addEventListener("click", async () => {
    if (ask && !window.confirm(ask)) return;
    btn.disabled = true;
    const was = btn.textContent;
    btn.textContent = `${label}…`;
    try {
      await action();
    } catch (e) {
      btn.after(problemBox(e));
    } finally {
      btn.disabled = false;
      btn.textContent = was;
    }
  });
  return btn;
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    hint ? h("small", { class: "muted" }, hint) : null,
  );
}

/** A short event data preview. */
export function preview(event) {
  let d = "";
  if (event.data !== undefined) d = typeof event.data === "string" ? event.data : JSON.stringify(event.data);
  else if (event.data_base64 !== undefined) d = `base64:${event.data_base64}`;
  return d.length > 80 ? `${d.slice(0, 80)}…` : d;
}

/** Parses a JSON text field; shows what is wrong in `box` and answers undefined otherwise. */
export function parseField(text, what, box) {
  try {
    return JSON.parse(text);
  } catch (err) {
    fill(box, problemBox({ detail: `${what} is not JSON: ${err.message}` }));
    return undefined;
  }
}
