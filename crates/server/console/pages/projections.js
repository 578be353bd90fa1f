// Projections: status, lag and catch-up progress, life cycle (admin), the last error with a
// link to its event, a key browser, and a key's state with a time-travel slider over that
// stream's positions and a diff between two positions.

import { api, keyPath, page, qs, seg, streamPath } from "../api.js";
import {
  actionButton,
  badge,
  can,
  diff,
  diffView,
  field,
  fill,
  h,
  heading,
  jsonView,
  link,
  muted,
  problemBox,
  progress,
  table,
  time,
} from "../ui.js";

const base = (name) => `/v1/projections/${seg(name)}`;
const view = (name) => `/console/projections/${seg(name)}`;

function lastError(err) {
  if (!err) return null;
  return h(
    "p",
    { class: "problem", role: "alert" },
    "Failed at ",
    link(`/console/events/${err.position}`, `position ${err.position}`),
    ": ",
    h("span", { class: "detail" }, err.message),
  );
}

function actions(ctx, p, after) {
  if (!can(ctx, "admin")) return null;
  const post = (verb) => () => api(`${base(p.name)}/${verb}`, { method: "POST" }).then(after);
  return h(
    "span",
    { class: "actions" },
    p.status === "paused" || p.status === "failed"
      ? actionButton("Resume", post("resume"))
      : actionButton("Pause", post("pause")),
    actionButton("Rebuild", post("rebuild"), { confirm: `Rebuild ${p.name} from position 0?` }),
    actionButton("Delete", () => api(base(p.name), { method: "DELETE" }).then(() => ctx.navigate("/console/projections")), {
      danger: true,
      confirm: `Delete ${p.name} and all its state?`,
    }),
  );
}

export async function list(main, ctx) {
  const all = await api("/v1/projections", { signal: ctx.signal });
  fill(
    main,
    heading("Projections"),
    all.length
      ? table(
          ["Name", "Status", "Catch-up", "Lag", "Keys", "Generation", "Module", ""],
          all.map((p) => [
            link(view(p.name), p.name),
            [badge(p.status), p.next ? h("span", { class: "muted" }, ` next: ${p.next.status.replace("_", " ")}`) : null],
            [progress(p.position, p.head, `${p.name} catch-up`), p.next ? progress(p.next.position, p.next.head, `${p.name} next generation`) : null],
            String(p.lag),
            String(p.keys),
            String(p.generation),
            h("code", { title: p.spec.module }, p.spec.module.slice(0, 15) + "…"),
            [lastError(p.last_error), actions(ctx, p, ctx.refresh)],
          ]),
          { "data-testid": "projections" },
        )
      : muted("No projections yet. Define one with PUT /v1/projections/{name} or `loom projections put`."),
  );
}

export async function detail(main, ctx) {
  const name = ctx.params.name;
  const p = await api(base(name), { signal: ctx.signal });
  const stream = p.spec.partition !== "single";
  const keysBox = h("div");
  fill(
    main,
    heading(name, badge(p.status), actions(ctx, p, ctx.refresh)),
    lastError(p.last_error),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Catch-up"),
      h("dd", {}, progress(p.position, p.head, "catch-up")),
      h("dt", {}, "Events folded"),
      h("dd", {}, String(p.events_applied)),
      h("dt", {}, "Partition"),
      h("dd", {}, p.spec.partition),
      h("dt", {}, "Selector"),
      h("dd", {}, h("code", {}, JSON.stringify(p.spec.selector))),
      h("dt", {}, "Module"),
      h("dd", {}, h("code", {}, p.spec.module)),
      h("dt", {}, "Generation"),
      h("dd", {}, String(p.generation)),
      p.next
        ? [
            h("dt", {}, "Next generation"),
            h("dd", {}, badge(p.next.status), " ", progress(p.next.position, p.next.head, "next generation"), lastError(p.next.last_error)),
          ]
        : null,
    ),
    stream ? h("section", {}, h("h2", {}, "Keys"), keysBox) : h("p", {}, link(`${view(name)}/state`, "Its state, and how it changed")),
  );
  if (!stream) return;
  const after = ctx.query.get("after") || "";
  try {
    const { items, more } = await page(`${base(name)}/keys${qs({ after, limit: 100 })}`, { signal: ctx.signal });
    fill(
      keysBox,
      items.length
        ? h("ul", { class: "keys", "data-testid": "keys" }, items.map((k) => h("li", {}, link(`${view(name)}/state/${keyPath(k)}`, k))))
        : muted("No state yet."),
      h(
        "nav",
        { class: "pager", "aria-label": "Pages of keys" },
        after ? link(view(name), "First page") : null,
        more ? link(`${view(name)}${qs({ after: items[items.length - 1] })}`, "Next →") : null,
      ),
    );
  } catch (e) {
    fill(keysBox, problemBox(e));
  }
}

/** Every position of a stream (up to 10 000 events), for the slider. */
async function streamPositions(subject, signal) {
  const positions = [];
  let after = 0;
  for (let i = 0; i < 10; i++) {
    const { items, more } = await page(`/v1/streams/${streamPath(subject)}${qs({ after_revision: after, limit: 1000 })}`, { signal });
    positions.push(...items.map((e) => e.position));
    if (!more || !items.length) break;
    after = items[items.length - 1].revision;
  }
  return positions;
}

export async function state(main, ctx) {
  const name = ctx.params.name;
  const subject = ctx.params.entity ? `${ctx.params.entity}/${ctx.params.key}` : null;
  const url = `${base(name)}/state${subject ? `/${keyPath(subject)}` : ""}`;
  const at = (p) => api(`${url}${qs({ at_position: p })}`, { signal: ctx.signal });
  const live = await api(url, { signal: ctx.signal });
  // The positions to travel over: the stream's own events, or every position of a single
  // projection up to what it has folded.
  let positions;
  if (subject) positions = await streamPositions(subject, ctx.signal);
  else positions = [...Array(Math.min(live.position, 10000)).keys()].map((i) => live.position - Math.min(live.position, 10000) + i + 1);
  if (!positions.length) positions = [live.position];

  const stateBox = h("div", { "data-testid": "state" });
  const caption = h("p", { class: "muted", "aria-live": "polite", "data-testid": "state-position" });
  const show = (answer, label) => {
    caption.textContent = `${label}: position ${answer.position}, ${answer.events_applied} events folded, updated ${answer.updated_at || "–"}`;
    fill(stateBox, jsonView(answer.state));
  };
  show(live, "Now");

  const slider = h("input", {
    type: "range",
    id: "travel",
    min: "0",
    max: String(positions.length - 1),
    step: "1",
    value: String(positions.length - 1),
    "aria-valuetext": `position ${positions[positions.length - 1]}`,
  });
  const sliderLabel = h("output", { for: "travel", "data-testid": "travel-position" }, `position ${positions[positions.length - 1]}`);
  let pending = 0;
  slider.addEventListener("input", async () => {
    const p = positions[Number(slider.value)];
    sliderLabel.textContent = `position ${p}`;
    slider.setAttribute("aria-valuetext", `position ${p}`);
    const mine = ++pending;
    try {
      const answer = await at(p);
      if (mine === pending) show(answer, Number(slider.value) === positions.length - 1 ? "At the newest position" : "Travelled back");
    } catch (e) {
      if (mine === pending) fill(stateBox, problemBox(e));
    }
  });

  const option = (p, i) => h("option", { value: String(p) }, subject ? `position ${p} (revision ${i + 1})` : `position ${p}`);
  const fromSel = h("select", { id: "diff-from" }, positions.map(option));
  const toSel = h("select", { id: "diff-to" }, positions.map(option));
  fromSel.value = String(positions[Math.max(0, positions.length - 2)]);
  toSel.value = String(positions[positions.length - 1]);
  const diffBox = h("div", { "aria-live": "polite" });
  const compare = h("form", { class: "filters" }, field("From", fromSel), field("To", toSel), h("div", { class: "field" }, h("button", { type: "submit" }, "Compare")));
  compare.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const [a, b] = await Promise.all([at(fromSel.value), at(toSel.value)]);
      fill(diffBox, diffView(diff(a.state, b.state)));
    } catch (err) {
      fill(diffBox, problemBox(err));
    }
  });

  fill(
    main,
    heading(subject || name, h("span", { class: "muted" }, subject ? `in ${name}` : "single state")),
    h("p", {}, link(view(name), `← ${name}`), subject ? [" · ", link(`/console/streams/${keyPath(subject)}`, "its events")] : null),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Time travel"),
      h("div", { class: "field travel" }, h("label", { for: "travel" }, subject ? "Position in the stream" : "Position"), slider, sliderLabel),
      caption,
      stateBox,
    ),
    h("section", { class: "panel" }, h("h2", {}, "What changed between two positions"), compare, diffBox),
    h("p", { class: "muted" }, "Created ", time(live.created_at), ", updated ", time(live.updated_at), "."),
  );
}
