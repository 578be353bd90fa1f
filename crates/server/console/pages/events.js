// Events: the ledger by position in either direction, a page at a time, filtered by entity,
// type, subject and JSONPath; optionally following new events live. One event: its CloudEvents
// JSON, its binary-mode headers, its stream and revision.

import { api, keyPath, page, qs, seg, streamPath, subscribe } from "../api.js";
import { field, fill, h, heading, jsonView, link, muted, preview, problemBox, table, time } from "../ui.js";

const PAGE = 50;
const FILTERS = ["entity", "type", "subject", "data", "meta"];

function row(e, fresh) {
  return h(
    "tr",
    { class: fresh ? "fresh" : "", dataset: { position: String(e.position) } },
    h("td", {}, link(`/console/events/${e.position}`, String(e.position))),
    h("td", {}, link(`/console/streams/${keyPath(e.subject)}`, e.subject), h("span", { class: "muted" }, `@${e.revision}`)),
    h("td", { class: "type" }, e.type),
    h("td", {}, h("code", {}, e.id)),
    h("td", {}, time(e.recordedtime)),
    h("td", { class: "data" }, h("code", {}, preview(e))),
  );
}

function eventsTable(rows) {
  const body = h("tbody", {}, rows);
  const t = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { "data-testid": "events" },
      h("caption", { class: "sr-only" }, "Events"),
      h("thead", {}, h("tr", {}, ["Position", "Stream", "Type", "Id", "Recorded", "Data"].map((c) => h("th", { scope: "col" }, c)))),
      body,
    ),
  );
  return { t, body };
}

export async function list(main, ctx) {
  const q = ctx.query;
  const filters = Object.fromEntries(FILTERS.map((k) => [k, q.get(k) || ""]));
  const inputs = Object.fromEntries(
    FILTERS.map((k) => [k, h("input", { name: k, value: filters[k], autocomplete: "off", spellcheck: "false" })]),
  );
  const follow = h("input", { type: "checkbox", id: "follow", checked: q.get("live") === "1" });
  const form = h(
    "form",
    { class: "filters", role: "search" },
    field("Entity", inputs.entity),
    field("Type", inputs.type, "comma-separated"),
    field("Subject", inputs.subject, "{entity}/{key}"),
    field("Data JSONPath", inputs.data, "e.g. $.items[?@.sku == 'apple']"),
    field("Meta JSONPath", inputs.meta),
    h("div", { class: "field check" }, follow, h("label", { for: "follow" }, "Follow live")),
    h("div", { class: "field" }, h("button", { type: "submit" }, "Apply")),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = Object.fromEntries(FILTERS.map((k) => [k, inputs[k].value.trim()]));
    ctx.navigate(`/console/events${qs({ ...next, live: follow.checked ? "1" : "" })}`);
  });
  follow.addEventListener("change", () => form.requestSubmit());

  const after = q.get("after");
  const before = q.get("before");
  const forward = after !== null;
  const read = {
    ...filters,
    limit: PAGE,
    after: forward ? after : undefined,
    before: before || undefined,
    backwards: forward ? undefined : "true",
  };
  const status = h("div");
  fill(main, heading("Events"), form, status);
  let items;
  let more;
  try {
    ({ items, more } = await page(`/v1/events${qs(read)}`, { signal: ctx.signal }));
  } catch (e) {
    fill(status, problemBox(e));
    return;
  }
  // Newest first on screen, whichever way the page was read.
  if (forward) items.reverse();
  const { t, body } = eventsTable(items.map((e) => row(e, false)));
  const here = { ...filters, live: q.get("live") || "" };
  const newest = items.length ? items[0].position : null;
  const oldest = items.length ? items[items.length - 1].position : null;
  const olderExists = forward ? oldest > 1 : more;
  const newerExists = forward ? more : Boolean(before);
  const nav = h(
    "nav",
    { class: "pager", "aria-label": "Pages of events" },
    link(`/console/events${qs(here)}`, "Newest"),
    newerExists && newest !== null ? link(`/console/events${qs({ ...here, after: newest })}`, "← Newer") : null,
    olderExists && oldest !== null ? link(`/console/events${qs({ ...here, before: oldest })}`, "Older →") : null,
    link(`/console/events${qs({ ...here, after: 0 })}`, "Oldest"),
  );
  fill(status, items.length ? null : muted("No events match."), t, nav);

  if (follow.checked) {
    // Live: everything after the newest shown (or the head), prepended as it arrives.
    const from = newest !== null && !newerExists ? newest : (await api("/healthz")).head;
    const live = h("p", { class: "notice", role: "status" }, "Following new events…");
    status.prepend(live);
    const f = { ...filters, type: filters.type || undefined };
    subscribe(
      `/v1/subscribe${qs({ ...f, after: from })}`,
      (m) => {
        body.prepend(row(JSON.parse(m.data), true));
        while (body.children.length > 500) body.lastChild.remove();
      },
      ctx.signal,
    ).catch((e) => {
      if (!ctx.signal.aborted) fill(live, problemBox(e));
    });
  }
}

export async function detail(main, ctx) {
  const position = ctx.params.position;
  const [text, binary] = await Promise.all([
    api(`/v1/events/${seg(position)}`, { text: true, signal: ctx.signal }),
    api(`/v1/events/${seg(position)}?mode=binary`, { raw: true, signal: ctx.signal }),
  ]);
  const e = JSON.parse(text);
  const headers = [];
  binary.headers.forEach((v, k) => {
    if (k.startsWith("ce-") || k === "content-type") headers.push([k, v]);
  });
  headers.sort((a, b) => a[0].localeCompare(b[0]));
  const bodyBytes = new Uint8Array(await binary.arrayBuffer());
  let bodyText;
  try {
    bodyText = new TextDecoder("utf-8", { fatal: true }).decode(bodyBytes);
  } catch {
    bodyText = `(${bodyBytes.length} bytes of binary data)`;
  }
  const n = Number(position);
  fill(
    main,
    heading(
      `Event ${position}`,
      h(
        "nav",
        { class: "pager", "aria-label": "Neighbouring events" },
        n > 1 ? link(`/console/events/${n - 1}`, "← Previous") : null,
        link(`/console/events/${n + 1}`, "Next →"),
      ),
    ),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Stream"),
      h("dd", {}, link(`/console/streams/${keyPath(e.subject)}?after_revision=${e.revision - 1}`, e.subject)),
      h("dt", {}, "Revision"),
      h("dd", { "data-testid": "revision" }, String(e.revision)),
      h("dt", {}, "Type"),
      h("dd", {}, e.type),
      h("dt", {}, "Identity"),
      h("dd", {}, h("code", {}, e.source), " ", h("code", {}, e.id)),
      h("dt", {}, "Recorded"),
      h("dd", {}, time(e.recordedtime)),
      e.time ? [h("dt", {}, "Time (producer's)"), h("dd", {}, e.time)] : null,
    ),
    h(
      "div",
      { class: "columns" },
      h("section", {}, h("h2", {}, "Structured mode (CloudEvents JSON)"), jsonView(text, { "data-testid": "event-json" })),
      h(
        "section",
        {},
        h("h2", {}, "Binary mode"),
        table(["Header", "Value"], headers.map(([k, v]) => [h("code", {}, k), h("code", {}, v)]), { "data-testid": "binary-headers" }),
        h("h3", {}, "Body"),
        h("pre", { class: "body" }, bodyText || "(no data)"),
      ),
    ),
    h("p", {}, link(`/console/streams/${keyPath(e.subject)}`, `All events of ${e.subject}`), " · ", h("a", { href: `/v1/streams/${streamPath(e.subject)}` }, "as JSON")),
  );
}
