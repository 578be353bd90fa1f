// Streams: find streams by subject prefix (GET /v1/streams), and one stream's events by
// revision.

import { keyPath, page, qs, streamPath } from "../api.js";
import { field, fill, h, heading, link, muted, preview, problemBox, table, time } from "../ui.js";

const PAGE = 100;

export async function list(main, ctx) {
  const prefix = ctx.query.get("prefix") || "";
  const after = ctx.query.get("after") || "";
  const input = h("input", { name: "prefix", value: prefix, autocomplete: "off", spellcheck: "false", placeholder: "cart/" });
  const form = h(
    "form",
    { class: "filters", role: "search" },
    field("Subject starts with", input, "an entity and the start of a key: cart/, cart/eu-"),
    h("div", { class: "field" }, h("button", { type: "submit" }, "Find")),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    ctx.navigate(`/console/streams${qs({ prefix: input.value.trim() })}`);
  });
  const out = h("div");
  fill(main, heading("Streams"), form, out);
  try {
    const { items, more } = await page(`/v1/streams${qs({ prefix, after, limit: PAGE })}`, { signal: ctx.signal });
    const last = items.length ? items[items.length - 1].subject : null;
    fill(
      out,
      items.length
        ? table(
            ["Stream", "Revision"],
            items.map((s) => [link(`/console/streams/${keyPath(s.subject)}`, s.subject), String(s.revision)]),
            { "data-testid": "streams" },
          )
        : muted(prefix ? `No stream starts with ${prefix}.` : "No streams yet."),
      h(
        "nav",
        { class: "pager", "aria-label": "Pages of streams" },
        after ? link(`/console/streams${qs({ prefix })}`, "First page") : null,
        more && last ? link(`/console/streams${qs({ prefix, after: last })}`, "Next →") : null,
      ),
    );
  } catch (e) {
    fill(out, problemBox(e));
  }
}

export async function detail(main, ctx) {
  const subject = `${ctx.params.entity}/${ctx.params.key}`;
  const afterRevision = Number(ctx.query.get("after_revision") || 0);
  const out = h("div");
  fill(main, heading(subject, h("span", { class: "muted" }, "stream")), out);
  try {
    const { items, more } = await page(
      `/v1/streams/${streamPath(subject)}${qs({ after_revision: afterRevision, limit: PAGE })}`,
      { signal: ctx.signal },
    );
    const last = items.length ? items[items.length - 1].revision : null;
    const here = `/console/streams/${keyPath(subject)}`;
    fill(
      out,
      table(
        ["Revision", "Position", "Type", "Recorded", "Data"],
        items.map((e) => [
          String(e.revision),
          link(`/console/events/${e.position}`, String(e.position)),
          e.type,
          time(e.recordedtime),
          h("code", {}, preview(e)),
        ]),
        { "data-testid": "stream-events" },
      ),
      h(
        "nav",
        { class: "pager", "aria-label": "Pages of the stream" },
        afterRevision > 0 ? link(here, "From revision 1") : null,
        afterRevision > 0 ? link(`${here}${qs({ after_revision: Math.max(0, afterRevision - PAGE) })}`, "← Earlier") : null,
        more && last ? link(`${here}${qs({ after_revision: last })}`, "Later →") : null,
      ),
    );
  } catch (e) {
    fill(out, e.status === 404 ? muted(`The stream ${subject} has no events.`) : problemBox(e));
  }
}
