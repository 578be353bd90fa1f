// Modules: what is stored, with its exports; an admin uploads one (file picker or drag and
// drop) or deletes one no definition uses.

import { api, seg } from "../api.js";
import { actionButton, can, fill, h, heading, muted, notice, problemBox, table, time } from "../ui.js";

function short(id) {
  return id.length > 20 ? `${id.slice(0, 19)}…` : id;
}

export async function render(main, ctx) {
  const modules = await api("/v1/modules", { signal: ctx.signal });
  const admin = can(ctx, "admin");
  const rows = modules.map((m) => [
    h("code", { title: m.id }, short(m.id)),
    `${(m.size / 1024).toFixed(1)} KiB`,
    String(m.abi),
    (m.exports || []).join(", "),
    m.reducers ? m.reducers.map((r) => `${r.name} (${r.kind})`).join(", ") : "–",
    time(m.uploaded_at),
    admin
      ? actionButton("Delete", async () => {
          await api(`/v1/modules/${seg(m.id)}`, { method: "DELETE" });
          ctx.refresh();
        }, { danger: true, confirm: `Delete module ${m.id}?` })
      : "",
  ]);
  const result = h("div", { "aria-live": "polite", "data-testid": "upload-result" });
  const upload = async (file) => {
    fill(result, notice(`Uploading ${file.name}…`));
    try {
      const res = await api("/v1/modules", {
        method: "POST",
        body: await file.arrayBuffer(),
        headers: { "Content-Type": "application/wasm" },
        raw: true,
      });
      const m = await res.json();
      fill(result, notice(`${res.status === 201 ? "Stored" : "Already stored:"} ${m.id} (exports ${m.exports.join(", ")})`));
      setTimeout(() => ctx.refresh(), 600);
    } catch (e) {
      fill(result, problemBox(e));
    }
  };
  const picker = h("input", { type: "file", id: "module-file", accept: ".wasm,application/wasm" });
  picker.addEventListener("change", () => picker.files[0] && upload(picker.files[0]));
  const drop = h(
    "div",
    { class: "drop", "data-testid": "drop" },
    h("label", { for: "module-file" }, "Upload a module: choose a .wasm file, or drop one here"),
    picker,
  );
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) upload(f);
  });
  fill(
    main,
    heading("Modules"),
    admin ? [drop, result] : null,
    modules.length
      ? table(["Id", "Size", "ABI", "Exports", "Reducers", "Uploaded", admin ? "" : null].filter((c) => c !== null), admin ? rows : rows.map((r) => r.slice(0, 6)), { "data-testid": "modules" })
      : muted("No modules stored yet."),
  );
}
