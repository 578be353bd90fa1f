// Commands: pick an entity with a decider, a key and a command body; see the outcome with the
// appended events, or the decider's rejection.

import { api, keyPath, qs } from "../api.js";
import { can, field, fill, h, heading, link, muted, notice, parseField, problemBox, table } from "../ui.js";

export async function render(main, ctx) {
  const deciders = await api("/v1/deciders", { signal: ctx.signal });
  if (!deciders.length) {
    fill(main, heading("Commands"), muted("No entity has a decider. Bind one with PUT /v1/deciders/{entity} or `loom deciders put`."));
    return;
  }
  const entity = h(
    "select",
    { name: "entity" },
    deciders.map((d) => h("option", { value: d.entity }, d.entity)),
  );
  entity.value = ctx.query.get("entity") || deciders[0].entity;
  const key = h("input", { name: "key", required: true, autocomplete: "off", spellcheck: "false", value: ctx.query.get("key") || "" });
  const body = h("textarea", { name: "command", rows: "8", spellcheck: "false" }, ctx.query.get("command") || '{"type": ""}');
  const idem = h("input", { name: "idempotency", autocomplete: "off", spellcheck: "false" });
  const result = h("div", { "aria-live": "polite", "data-testid": "command-result" });
  const writer = can(ctx, "writer");
  const form = h(
    "form",
    { class: "panel" },
    field("Entity", entity),
    field("Key", key, "the stream is {entity}/{key}"),
    field("Command (JSON)", body),
    field("Idempotency key (optional)", idem, "the same key again answers the first outcome and writes nothing"),
    writer ? h("button", { type: "submit" }, "Send") : muted("Sending commands needs a writer or admin token."),
    result,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const json = parseField(body.value, "The command", result);
    if (json === undefined) return;
    const subject = `${entity.value}/${key.value.trim()}`;
    history.replaceState(null, "", `/console/commands${qs({ entity: entity.value, key: key.value.trim() })}`);
    try {
      const out = await api(`/v1/commands/${keyPath(subject)}`, {
        method: "POST",
        json,
        headers: idem.value.trim() ? { "Idempotency-Key": idem.value.trim() } : {},
      });
      fill(
        result,
        notice(
          `${out.subject} is at revision ${out.revision}` +
            (out.duplicate ? " (a repeat: nothing written)" : `; ${out.events.length} event(s) appended`),
        ),
        out.events.length
          ? table(
              ["Type", "Id", "Revision", "Position"],
              out.events.map((ev) => [ev.type, h("code", {}, ev.id), String(ev.revision), link(`/console/events/${ev.position}`, String(ev.position))]),
              { "data-testid": "command-events" },
            )
          : null,
        h("p", {}, link(`/console/streams/${keyPath(out.subject)}`, `The stream ${out.subject}`)),
      );
    } catch (err) {
      const rejected = err.is && err.is("command-rejected");
      fill(result, rejected ? h("p", { class: "rejected" }, h("strong", {}, "Rejected by the decider: ")) : null, problemBox(err));
    }
  });
  fill(main, heading("Commands"), form);
}
