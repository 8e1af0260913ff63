// Runs: every run side by side; pick several to compare in the run view.
import { api, empty, every, h, href, num, showLive, table, when } from "../app.js";

const NOTHING = () =>
  empty(
    h("p", {}, "Nothing is stored yet."),
    h("p", {}, "Run ", h("code", {}, "trainwire demo --ui"), ", or train with the hook and run ", h("code", {}, "trainwire worker"),
      " with the same --data-dir (or --kafka/--clickhouse); runs appear here as the worker stores them."),
  );

export async function render(root) {
  root.replaceChildren(h("h1", {}, "Runs"), h("div", { id: "runs-body" }, h("p", { class: "muted" }, "loading…")));
  const selected = new Set();
  const compare = h("a", { id: "compare", href: "#", class: "muted" }, "compare the selected runs");

  async function refresh() {
    const body = document.getElementById("runs-body");
    // status first (a few ms): a store without the schema yet has no tables for the other two
    const status = await api("runs", "status");
    if (status.length === 0) {
      body.replaceChildren(NOTHING());
      return;
    }
    const [overview, latest] = await Promise.all([api("runs", "overview"), api("runs", "latest")]);
    const newest = new Map(latest.map((r) => [r.run_id, r]));
    const rows = overview.map((r) => ({ ...r, ...(newest.get(r.run_id) || {}) }));
    const columns = [
      ["", (r) => h("input", { type: "checkbox", checked: selected.has(r.run_id), onchange: (e) => toggle(r.run_id, e.target.checked) })],
      ["run", (r) => h("a", { href: href("run", { run: r.run_id }) }, r.run_id)],
      ["first event", (r) => when(r.first_ts)],
      ["last event", (r) => when(r.last_ts)],
      ["steps", (r) => (r.max_step === null ? "" : `${r.min_step}–${r.max_step}`), { num: true }],
      ["interactions", (r) => num(r.interactions), { num: true }],
      ["mean reward", (r) => num(r.mean_reward), { num: true }],
      ["latest window mean", (r) => (r.latest_window_mean === null || r.latest_window_mean === undefined ? "" :
        `${num(r.latest_window_mean)} (steps ${r.latest_window_step_start}–${r.latest_window_step_end - 1})`), { num: true }],
      ["alerts", (r) => (r.alerts ? h("a", { href: href("alerts", { run: r.run_id }) }, num(r.alerts)) : "0"), { num: true }],
      ["mean judge (0–1)", (r) => (r.judged ? `${num(r.mean_score_normalized, 3)} (${r.judged})` : ""), { num: true }],
      ["", (r) => h("span", {}, h("a", { href: href("groups", { run: r.run_id }) }, "groups"), " · ",
        h("a", { href: href("samples", { run: r.run_id }) }, "samples"), " · ", h("a", { href: href("judge", { run: r.run_id }) }, "judge"),
        r.logits ? [" · ", h("a", { href: href("logits", { run: r.run_id }) }, "logits")] : null)],
    ];
    body.replaceChildren(
      table(columns, rows, (r) => ({ dataset: { run: r.run_id } })),
      h("p", {}, compare, h("span", { class: "muted" }, " (tick two or more)")),
    );
    showLive(`${rows.length} run${rows.length === 1 ? "" : "s"}`);
  }

  function toggle(run, on) {
    if (on) selected.add(run);
    else selected.delete(run);
    compare.href = selected.size ? href("run", { run: [...selected].join(",") }) : "#";
    compare.className = selected.size > 1 ? "" : "muted";
  }

  await refresh();
  every(3000, refresh);
}
