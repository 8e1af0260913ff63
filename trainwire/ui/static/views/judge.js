// Judge: the LLM judge against the rule reward.
import { api, chart, empty, h, href, num, table } from "../app.js";

export async function render(root, params) {
  const runs = params.run || "";
  const fn = params.fn || "total";
  const [agreement, byStep, stepAgreement, grid, disagreements] = await Promise.all([
    api("judge", "agreement", { runs, reward_fn: fn }),
    api("judge", "by_step", { runs }),
    api("judge", "agreement_by_step", { runs, reward_fn: fn }),
    api("judge", "confusion", { runs, reward_fn: fn }),
    api("judge", "disagreements", { runs, reward_fn: fn }),
  ]);
  const title = h("h1", {}, `Judge vs rule reward${runs ? ` · ${runs}` : ""}${fn !== "total" ? ` (${fn})` : ""}`);
  if (!agreement.length) {
    root.replaceChildren(title, empty("No judge scores yet: run ", h("code", {}, "trainwire judge run"), " (or ", h("code", {}, "trainwire demo"), ") and a worker."));
    return;
  }
  root.replaceChildren(
    title,
    table([
      ["run", (r) => r.run_id], ["judged", (r) => r.judged, { num: true }], ["failed", (r) => r.failed, { num: true }], ["pairs", (r) => r.pairs, { num: true }],
      ["mean judge (0–1)", (r) => num(r.mean_score_normalized), { num: true }], ["mean reward", (r) => num(r.mean_reward), { num: true }],
      ["pearson", (r) => num(r.pearson, 3), { num: true }], ["spearman", (r) => num(r.spearman, 3), { num: true }], ["median agreement", (r) => num(r.median_agreement, 3), { num: true }],
    ], agreement),
    h("div", { class: "charts", style: "margin-top:12px" }, h("div", { id: "chart-judge-steps", class: "chart" }),
      h("div", { id: "chart-judge-agreement", class: "chart" }), h("div", { id: "chart-judge-grid", class: "chart" })),
    h("h2", {}, "Largest disagreements (judge score vs reward scaled to 0–1, gap ≥ 0.5)"),
    disagreements.length
      ? table([
          ["run", (r) => r.run_id], ["step", (r) => r.step, { num: true }], ["judge", (r) => num(r.score, 3), { num: true }], ["judge (0–1)", (r) => num(r.score_normalized, 3), { num: true }], ["reward", (r) => num(r.reward), { num: true }],
          ["gap", (r) => num(r.gap, 3), { num: true }], ["reasoning", (r) => r.reasoning || ""],
          ["", (r) => h("a", { href: href("samples", { id: r.interaction_id, rrun: r.run_id }) }, "read")],
        ], disagreements)
      : h("p", { class: "muted" }, "None: judge and reward agree on every pair."),
  );
  const steps = [...new Set(byStep.map((r) => r.run_id))].flatMap((run) => {
    const rows = byStep.filter((r) => r.run_id === run);
    return [
      { name: `${run} · judge`, x: rows.map((r) => r.step), y: rows.map((r) => r.mean_score_normalized), mode: "lines+markers" },
      { name: `${run} · reward`, x: rows.map((r) => r.step), y: rows.map((r) => r.mean_reward), mode: "lines", line: { dash: "dot" }, yaxis: "y2" },
    ];
  });
  await chart(document.getElementById("chart-judge-steps"), steps, { title: { text: "Per step" }, xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "judge (0–1)" } }, yaxis2: { overlaying: "y", side: "right", title: { text: "reward" } } });
  const agreementTraces = [...new Set(stepAgreement.map((r) => r.run_id))].map((run) => {
    const rows = stepAgreement.filter((r) => r.run_id === run);
    return { name: `${run} · pearson`, x: rows.map((r) => r.step), y: rows.map((r) => r.pearson), mode: "lines+markers",
      text: rows.map((r) => `${r.pairs} pairs`) };
  });
  await chart(document.getElementById("chart-judge-agreement"), agreementTraces, {
    title: { text: "Agreement per step (Pearson, judge score vs reward)" }, xaxis: { title: { text: "step" } }, yaxis: { range: [-1.05, 1.05] } });
  const label = (a, b) => `${num(a, 3)}–${num(b, 3)}`;
  const xs = [...new Map(grid.map((r) => [r.reward_bin, label(r.reward_start, r.reward_end)])).entries()].sort((a, b) => a[0] - b[0]);
  const ys = [...new Map(grid.map((r) => [r.judge_bin, label(r.judge_start, r.judge_end)])).entries()].sort((a, b) => a[0] - b[0]);
  const z = ys.map(([jb]) => xs.map(([rb]) => grid.find((r) => r.judge_bin === jb && r.reward_bin === rb)?.pairs ?? 0));
  await chart(document.getElementById("chart-judge-grid"), [{ type: "heatmap", x: xs.map(([, t]) => t), y: ys.map(([, t]) => t), z, colorscale: "Blues", texttemplate: "%{z}" }],
    { title: { text: "Judge score by reward (pairs)" }, xaxis: { title: { text: "reward" }, type: "category" }, yaxis: { title: { text: "judge score" }, type: "category" } });
}
