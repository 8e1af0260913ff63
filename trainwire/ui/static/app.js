// The page shell: navigation, the state in the URL, data fetching, polling and charts shared by the views.
import * as alerts from "./views/alerts.js";
import * as groups from "./views/groups.js";
import * as judge from "./views/judge.js";
import * as logits from "./views/logits.js";
import * as run from "./views/run.js";
import * as runs from "./views/runs.js";
import * as samples from "./views/samples.js";

const VIEWS = { runs, run, groups, samples, judge, alerts, logits };
const TITLES = { runs: "Runs", run: "Run", groups: "Groups", samples: "Samples", judge: "Judge", alerts: "Alerts", logits: "Logits" };
const KEPT = ["run"]; // state that the navigation bar carries from view to view
let timers = [];
let generation = 0;

/** The page's state: the URL's query parameters. */
export function state() {
  return Object.fromEntries(new URLSearchParams(location.search));
}

/** A URL for `view` with `params` (empty values left out). */
export function href(view, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, value);
  }
  const text = query.toString();
  return `/${view}${text ? "?" + text : ""}`;
}

/** Change the state (merged into the URL, a history entry) and draw the view again, without a reload. */
export function update(patch, { replace = false } = {}) {
  const next = { ...state(), ...patch };
  const url = href(currentView(), next);
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  draw();
}

/** Rows of a data route: GET /api/{view}/{route}; an Error with the server's message otherwise. */
export async function api(view, route, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, value);
  }
  const response = await fetch(`/api/${view}/${route}?${query}`);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body.rows;
}

/** Run `fn` every `ms` while this view is shown (a view drawn again stops the earlier timers). */
export function every(ms, fn) {
  const mine = generation;
  let busy = false;
  const timer = setInterval(async () => {
    if (busy || mine !== generation) return;
    busy = true;
    try {
      await fn();
    } catch (error) {
      showLive(`update failed: ${error.message}`);
    } finally {
      busy = false;
    }
  }, ms);
  timers.push(timer);
}

export function showLive(text) {
  document.getElementById("live").textContent = text;
}

/** An element: h("td", {class: "num"}, "1.0", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A number for reading: up to 4 significant digits; empty for null. */
export function num(value, digits = 4) {
  if (value === null || value === undefined) return "";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return Number(value.toPrecision(digits)).toString();
}

export function when(ts) {
  return ts ? ts.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", " UTC") : "";
}

/** A table: columns are [title, row => cell, {num: true}]; rows get `rowAttrs(row)`. */
export function table(columns, rows, rowAttrs = () => ({})) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
    h(
      "tbody",
      {},
      rows.map((row) => h("tr", rowAttrs(row), columns.map(([, cell, opts]) => h("td", opts?.num ? { class: "num" } : {}, cell(row))))),
    ),
  );
}

export function empty(...children) {
  return h("div", { class: "empty" }, ...children);
}

export function failure(error) {
  return h("p", { class: "error" }, String(error.message || error));
}

// plotly.js loads after this module (a view starts fetching its data meanwhile)
const plotlyLoaded = new Promise((resolve) => {
  if (window.Plotly) resolve();
  else document.getElementById("plotly").addEventListener("load", resolve);
});

/** Draw or update a chart in place: Plotly.react, with a uirevision so the user's zoom survives updates.
 *  A right axis (yaxis2) gets the margin its tick labels and title need (automargin). */
export async function chart(node, traces, layout = {}) {
  await plotlyLoaded;
  if (layout.yaxis2) {
    const { title = {} } = layout.yaxis2;
    layout = { ...layout, yaxis2: { automargin: true, ...layout.yaxis2, title: { standoff: 10, ...title } } };
  }
  const base = {
    margin: { l: 52, r: 16, t: 34, b: 38 },
    legend: { orientation: "h", y: -0.18 },
    font: { size: 11 },
    uirevision: node.id,
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
  };
  return Plotly.react(node, traces, { ...base, ...layout }, { displaylogo: false, responsive: true });
}

/** A token as a chart label, its whitespace visible (" Actually" -> "␣Actually"), as the report's token_label. */
export function tokenLabel(token) {
  return String(token).replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
}

/** Rows grouped by `key`, in first-seen order. */
export function by(rows, key) {
  const out = new Map();
  for (const row of rows) {
    const k = typeof key === "function" ? key(row) : row[key];
    if (!out.has(k)) out.set(k, []);
    out.get(k).push(row);
  }
  return out;
}

function currentView() {
  const name = location.pathname.replace(/^\/+|\/+$/g, "") || "runs";
  return name in VIEWS ? name : "runs";
}

function drawNav() {
  const current = currentView();
  const kept = Object.fromEntries(Object.entries(state()).filter(([key]) => KEPT.includes(key)));
  const nav = document.getElementById("nav");
  nav.replaceChildren(
    ...Object.keys(VIEWS).map((name) => h("a", { href: href(name, kept), class: name === current ? "active" : null }, TITLES[name])),
  );
}

async function draw() {
  generation += 1;
  timers.forEach(clearInterval);
  timers = [];
  drawNav();
  const view = currentView();
  document.title = `${TITLES[view]} · trainwire`;
  const root = document.getElementById("view");
  try {
    await VIEWS[view].render(root, state());
  } catch (error) {
    root.replaceChildren(failure(error));
  }
}

window.addEventListener("popstate", draw);
draw(); // a module runs once the document is parsed
