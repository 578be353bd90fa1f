// Overview: the head, appends and events per second over the last minutes (from /metrics),
// projections and reactors at a glance, the cluster if there is one, and events arriving live.

import { api, qs, subscribe } from "../api.js";
import { badge, chart, fill, h, heading, link, muted, preview, problemBox, progress, table } from "../ui.js";

const WINDOW_MS = 5 * 60 * 1000;
const EVERY_MS = 2000;
// Kept across visits of the page, so that coming back shows the minutes already seen.
const samples = [];

function counter(text, name) {
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, "m"));
  return m ? Number(m[1]) : null;
}

async function sample() {
  const text = await api("/metrics", { text: true });
  const now = Date.now();
  samples.push({
    t: now,
    appends: counter(text, "loom_appends_total"),
    events: counter(text, "loom_events_appended_total"),
    head: counter(text, "loom_head_position"),
  });
  while (samples.length && samples[0].t < now - WINDOW_MS) samples.shift();
}

function rates(key) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    if (a[key] === null || b[key] === null || b[key] < a[key]) continue;
    out.push([b.t, ((b[key] - a[key]) * 1000) / Math.max(1, b.t - a.t)]);
  }
  return out;
}

export async function render(main, ctx) {
  const head = h("span", { "data-testid": "head" }, "…");
  const rateText = h("span", { class: "muted" });
  const chartBox = h("div", { class: "chart-box" });
  const projBox = h("div");
  const reactBox = h("div");
  const clusterBox = h("div");
  const live = h("ol", { class: "live", "aria-live": "polite", "data-testid": "live" });
  fill(
    main,
    heading("Overview"),
    h(
      "section",
      { class: "cards" },
      h("div", { class: "card" }, h("h2", {}, "Head position"), h("p", { class: "big" }, head)),
      h(
        "div",
        { class: "card wide" },
        h("h2", {}, "Appends and events per second, last 5 minutes"),
        chartBox,
        h("p", {}, h("span", { class: "key key-0" }, "appends"), " ", h("span", { class: "key key-1" }, "events"), " ", rateText),
      ),
    ),
    clusterBox,
    h("section", {}, h("h2", {}, "Projections"), projBox),
    h("section", {}, h("h2", {}, "Reactors"), reactBox),
    h("section", {}, h("h2", {}, "Arriving now"), live),
  );

  const tick = async () => {
    try {
      await sample();
      const last = samples[samples.length - 1];
      head.textContent = last.head === null ? "–" : last.head.toLocaleString();
      const a = rates("appends");
      const e = rates("events");
      fill(chartBox, chart([{ points: a }, { points: e }], { label: "appends and events per second" }));
      if (e.length) rateText.textContent = `now ${Math.round(a[a.length - 1][1])} appends/s, ${Math.round(e[e.length - 1][1])} events/s`;
      else rateText.textContent = "measuring…";
    } catch (err) {
      fill(chartBox, problemBox(err));
    }
  };
  await tick();
  const timer = setInterval(tick, EVERY_MS);
  ctx.signal.addEventListener("abort", () => clearInterval(timer));

  const [projections, reactors] = await Promise.all([api("/v1/projections"), api("/v1/reactors")]);
  fill(
    projBox,
    projections.length
      ? table(
          ["Name", "Status", "Progress", "Lag", "Keys"],
          projections.map((p) => [
            link(`/console/projections/${encodeURIComponent(p.name)}`, p.name),
            badge(p.status),
            progress(p.position, p.head, `${p.name} position`),
            String(p.lag),
            String(p.keys),
          ]),
        )
      : muted("No projections yet."),
  );
  fill(
    reactBox,
    reactors.length
      ? table(
          ["Name", "Status", "Lag", "Reacted", "Delivered"],
          reactors.map((r) => [
            link("/console/reactors", r.name),
            badge(r.status),
            String(r.lag),
            String(r.reacted),
            String(r.delivered),
          ]),
        )
      : muted("No reactors yet."),
  );

  // A cluster node says its role in /healthz; a single node has no cluster to show.
  const health = await api("/healthz");
  if (health.role) {
    const c = await api("/v1/cluster");
    fill(
      clusterBox,
      h(
        "section",
        {},
        h("h2", {}, `Cluster: ${c.node} is ${c.role}`),
        table(
          ["Node", "Role", "Applied", "Behind"],
          (c.nodes || []).map((n) => [n.url ? h("a", { href: `${n.url}/console` }, n.node) : n.node, n.role, String(n.applied), String(n.behind)]),
        ),
      ),
    );
  }

  // The last few events, then each as it is committed.
  const start = Math.max(0, (samples[samples.length - 1]?.head || 0) - 10);
  const add = (e) => {
    live.prepend(
      h(
        "li",
        {},
        link(`/console/events/${e.position}`, `#${e.position}`),
        " ",
        h("code", {}, `${e.subject}@${e.revision}`),
        " ",
        h("strong", {}, e.type),
        " ",
        h("span", { class: "muted" }, preview(e)),
      ),
    );
    while (live.children.length > 20) live.lastChild.remove();
  };
  subscribe(`/v1/subscribe${qs({ after: start })}`, (m) => add(JSON.parse(m.data)), ctx.signal).catch((err) => {
    if (!ctx.signal.aborted) live.after(problemBox(err));
  });
}
