// Alerts: the health checks' feed, newest first, linked to each alert's run and step.
import { api, empty, h, href, table, when } from "../app.js";

function evidence(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 1);
  } catch {
    return text;
  }
}

export async function render(root, params) {
  const runs = params.run || "";
  const [feed, summary] = await Promise.all([api("alerts", "feed", { runs, limit: 1000 }), api("alerts", "summary", { runs })]);
  const title = h("h1", {}, `Alerts${runs ? ` · ${runs}` : ""}`);
  if (!feed.length) {
    root.replaceChildren(title, empty("No alerts. The worker raises them from the training metrics (loss, grad_norm, learning rate, reward collapse, zero-variance groups)."));
    return;
  }
  root.replaceChildren(
    title,
    table([
      ["run", (r) => r.run_id], ["rule", (r) => r.rule], ["severity", (r) => h("span", { class: `badge ${r.severity}` }, r.severity)],
      ["alerts", (r) => r.alerts, { num: true }], ["steps", (r) => `${r.first_step ?? ""}–${r.last_step ?? ""}`],
    ], summary),
    h("h2", {}, "Feed"),
    table([
      ["time", (r) => when(r.ts)],
      ["run", (r) => h("a", { href: href("run", { run: r.run_id }) }, r.run_id)],
      ["step", (r) => (r.step === null ? "" : h("a", { href: href("run", { run: r.run_id, step: r.step }) }, r.step)), { num: true }],
      ["severity", (r) => h("span", { class: `badge ${r.severity}` }, r.severity)],
      ["rule", (r) => r.rule],
      ["message", (r) => r.message],
      ["evidence", (r) => h("details", {}, h("summary", {}, "evidence"), h("div", { class: "text" }, evidence(r.evidence)))],
    ], [...feed].reverse()),
  );
}
