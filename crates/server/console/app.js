// The console's shell: sign-in, navigation between views with URLs of their own, and the
// choice of page for each URL.

import { api, Problem, setToken } from "./api.js";
import { fill, h, problemBox } from "./ui.js";
import * as overview from "./pages/overview.js";
import * as events from "./pages/events.js";
import * as streams from "./pages/streams.js";
import * as registry from "./pages/registry.js";
import * as modules from "./pages/modules.js";
import * as projections from "./pages/projections.js";
import * as commands from "./pages/commands.js";
import * as reactors from "./pages/reactors.js";

const BASE = "/console";

// Each route: a pattern over the path below /console (`*` takes the rest, slashes and all),
// its section in the navigation, and the page function.
const ROUTES = [
  ["", "overview", overview.render],
  ["events", "events", events.list],
  ["events/:position", "events", events.detail],
  ["streams", "streams", streams.list],
  ["streams/:entity/*key", "streams", streams.detail],
  ["registry", "registry", registry.render],
  ["modules", "modules", modules.render],
  ["projections", "projections", projections.list],
  ["projections/:name", "projections", projections.detail],
  ["projections/:name/state", "projections", projections.state],
  ["projections/:name/state/:entity/*key", "projections", projections.state],
  ["commands", "commands", commands.render],
  ["reactors", "reactors", reactors.render],
];

function match(pattern, path) {
  const want = pattern ? pattern.split("/") : [];
  const got = path ? path.split("/") : [];
  const params = {};
  for (let i = 0; i < want.length; i++) {
    const w = want[i];
    if (w.startsWith("*")) {
      if (i >= got.length) return null;
      params[w.slice(1)] = got.slice(i).map(decodeURIComponent).join("/");
      return params;
    }
    if (i >= got.length) return null;
    if (w.startsWith(":")) params[w.slice(1)] = decodeURIComponent(got[i]);
    else if (w !== got[i]) return null;
  }
  return want.length === got.length ? params : null;
}

const main = () => document.getElementById("main");
let current = null; // the running page's AbortController
const session = { role: null, open: false };

async function render() {
  if (current) current.abort();
  current = new AbortController();
  const signal = current.signal;
  const path = location.pathname.replace(/^\/console\/?/, "").replace(/\/$/, "");
  const query = new URLSearchParams(location.search);
  const found = ROUTES.map(([p, section, page]) => [match(p, path), section, page]).find(([m]) => m);
  document.querySelectorAll("#nav a").forEach((a) => {
    if (found && a.dataset.section === found[1]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  const el = main();
  if (!session.role) {
    return signIn(el);
  }
  if (!found) {
    fill(el, h("h1", {}, "Not found"), h("p", {}, "The console has no page at this address."));
    return;
  }
  const [params, , page] = found;
  fill(el, h("p", { class: "muted" }, "Loading…"));
  const ctx = { params, query, role: session.role, signal, navigate, refresh: render };
  try {
    await page(el, ctx);
  } catch (e) {
    if (signal.aborted) return;
    if (e instanceof Problem && e.status === 401) {
      session.role = null;
      setToken("");
      return signIn(el, e);
    }
    fill(el, problemBox(e));
  }
}

/** Goes to a console URL without reloading. */
export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
  main().focus({ preventScroll: true });
}

async function whoAmI() {
  try {
    const me = await api("/v1/whoami");
    session.role = me.role;
    session.open = me.open;
  } catch (e) {
    // A token that is no longer valid: ask again.
    session.role = null;
    if (!(e instanceof Problem && e.status === 401)) throw e;
    setToken("");
  }
  showWho();
}

function showWho() {
  const who = document.getElementById("who");
  if (!session.role) return fill(who);
  const out = h(
    "button",
    {
      type: "button",
      class: "link",
      onclick: () => {
        setToken("");
        session.role = null;
        showWho();
        render();
      },
    },
    "Sign out",
  );
  fill(who, h("span", { class: "role", "data-testid": "role" }, session.open ? "open server" : session.role), session.open ? null : out);
}

function signIn(el, err) {
  const input = h("input", { type: "password", id: "token", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    { class: "signin" },
    h("h1", {}, "Sign in"),
    h("p", {}, "This server asks for a token. It is kept in this tab only (sessionStorage)."),
    h("div", { class: "field" }, h("label", { for: "token" }, "Token"), input),
    h("button", { type: "submit" }, "Sign in"),
    err ? problemBox(err) : null,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    try {
      await whoAmI();
      if (!session.role) throw new Problem(401, { detail: "the token is not valid" });
      render();
    } catch (e2) {
      setToken("");
      signIn(el, e2);
    }
  });
  fill(el, form);
  input.focus();
  return form;
}

function theme() {
  const saved = localStorage.getItem("loom-theme");
  if (saved) document.documentElement.dataset.theme = saved;
  document.getElementById("theme").addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : matchMedia("(prefers-color-scheme: dark)").matches;
    const next = dark ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("loom-theme", next);
  });
}

// Links marked data-nav navigate in place; modified clicks (new tab) are the browser's.
document.addEventListener("click", (e) => {
  const a = e.target.closest && e.target.closest("a[data-nav]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(BASE)) return;
  e.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});
window.addEventListener("popstate", render);

theme();
whoAmI().then(render, (e) => fill(main(), problemBox(e)));
