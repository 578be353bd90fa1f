// Reactors: status, progress, counters and the last error; pause, resume and delete (admin).

import { api, seg } from "../api.js";
import { actionButton, badge, can, fill, h, heading, link, muted, progress, table } from "../ui.js";

export async function render(main, ctx) {
  const reactors = await api("/v1/reactors", { signal: ctx.signal });
  const admin = can(ctx, "admin");
  const post = (name, verb) => () => api(`/v1/reactors/${seg(name)}/${verb}`, { method: "POST" }).then(ctx.refresh);
  fill(
    main,
    heading("Reactors"),
    reactors.length
      ? table(
          ["Name", "Status", "Progress", "Reacted", "Appended", "Commands", "Delivered", "Sink", "Last error", ""],
          reactors.map((r) => [
            r.name,
            badge(r.status),
            progress(r.position, r.head, `${r.name} progress`),
            String(r.reacted),
            String(r.appended),
            String(r.commands),
            String(r.delivered),
            r.spec.sink ? h("code", {}, r.spec.sink) : "–",
            r.last_error
              ? h("span", { class: "problem-inline" }, link(`/console/events/${r.last_error.position}`, `at ${r.last_error.position}`), ": ", r.last_error.message)
              : "–",
            admin
              ? h(
                  "span",
                  { class: "actions" },
                  r.status === "paused" || r.status === "failed" ? actionButton("Resume", post(r.name, "resume")) : actionButton("Pause", post(r.name, "pause")),
                  actionButton("Delete", () => api(`/v1/reactors/${seg(r.name)}`, { method: "DELETE" }).then(ctx.refresh), {
                    danger: true,
                    confirm: `Delete reactor ${r.name} and its checkpoint?`,
                  }),
                )
              : "",
          ]),
          { "data-testid": "reactors" },
        )
      : muted("No reactors yet."),
  );
}
