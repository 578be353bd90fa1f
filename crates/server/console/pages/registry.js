// Registry: the entities, their event types and JSON Schemas; an admin registers or changes one
// and sees the server's refusal inline.

import { api, seg } from "../api.js";
import { can, field, fill, h, heading, jsonView, muted, notice, parseField, problemBox } from "../ui.js";

const TEMPLATE = {
  events: {
    was_created: { schema: { type: "object" } },
  },
  open: false,
};

export async function render(main, ctx) {
  const entities = await api("/v1/entities", { signal: ctx.signal });
  const names = Object.keys(entities).sort();
  const list = names.length
    ? names.map((name) => {
        const spec = entities[name];
        const types = Object.keys(spec.events || {}).sort();
        return h(
          "section",
          { class: "entity", id: `entity-${name}` },
          h("h2", {}, name, spec.open ? h("span", { class: "badge" }, "open") : null),
          types.length
            ? h(
                "ul",
                { class: "types" },
                types.map((t) => {
                  const schema = spec.events[t].schema;
                  return h(
                    "li",
                    {},
                    h("details", {}, h("summary", {}, h("code", {}, t), schema ? "" : h("span", { class: "muted" }, " (any data)")), schema ? jsonView(schema) : null),
                  );
                }),
              )
            : muted(spec.open ? "Any type (open)." : "No types."),
          can(ctx, "admin") ? h("button", { type: "button", class: "link", onclick: () => edit(name, spec) }, `Change ${name}`) : null,
        );
      })
    : [muted("No entities registered yet.")];

  const name = h("input", { name: "entity", autocomplete: "off", spellcheck: "false", required: true });
  const body = h("textarea", { name: "registration", rows: "14", spellcheck: "false" }, JSON.stringify(TEMPLATE, null, 2));
  const result = h("div", { "aria-live": "polite" });
  const edit = (n, spec) => {
    name.value = n;
    body.value = JSON.stringify(spec, null, 2);
    name.focus();
  };
  const form = can(ctx, "admin")
    ? h(
        "form",
        { class: "panel", "data-testid": "register" },
        h("h2", {}, "Register or change an entity"),
        field("Entity", name, "1-128 letters, digits, _ - ."),
        field("Registration (JSON)", body, '{"events": {"TYPE": {"schema": {…}}}, "open": false}'),
        h("button", { type: "submit" }, "Save"),
        result,
      )
    : null;
  if (form) {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const json = parseField(body.value, "The registration", result);
      if (json === undefined) return;
      try {
        await api(`/v1/entities/${seg(name.value.trim())}`, { method: "PUT", json });
        fill(result, notice(`Saved ${name.value.trim()}.`));
        ctx.refresh();
      } catch (err) {
        fill(result, problemBox(err));
      }
    });
  }
  fill(main, heading("Registry"), h("div", { class: "columns" }, h("div", {}, list), form));
}
