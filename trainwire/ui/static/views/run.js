// Run: a run's charts on one step axis, redrawn as the worker stores more (polls run_progress).
import { api, by, chart, empty, every, failure, h, href, num, showLive, table, when } from "../app.js";

const STANDARD_METRICS = ["loss", "learning_rate", "grad_norm", "kl", "entropy", "completions/mean_length"];
const SEVERITY_COLOR = { critical: "#b91c1c", warning: "#d97706", info: "#2563eb" };
const PALETTE = ["#2563eb", "#dc2626", "#059669", "#7c3aed", "#d97706", "#0891b2", "#db2777", "#4b5563"];

function color(i, alpha = 1) {
  const hex = PALETTE[i % PALETTE.length];
  const [r, g, b] = [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
  return alpha === 1 ? hex : `rgba(${r},${g},${b},${alpha})`;
}

/** Vertical lines at the alerts' steps (and the step in the URL), for every chart of the page. */
function markers(alerts, step) {
  const shapes = alerts
    .filter((a) => a.step !== null)
    .map((a) => ({ type: "line", xref: "x", yref: "paper", x0: a.step, x1: a.step, y0: 0, y1: 1,
      line: { color: SEVERITY_COLOR[a.severity] || "#6b7280", width: 1, dash: "dot" } }));
  if (step !== undefined && step !== "") {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: Number(step), x1: Number(step), y0: 0, y1: 1, line: { color: "#111", width: 2, dash: "dash" } });
  }
  return shapes;
}

function rewardTraces(runs, stats, perStep) {
  const traces = [];
  let i = 0;
  for (const run of runs) {
    const steps = perStep.filter((r) => r.run_id === run && r.mean !== null);
    traces.push({ name: `${run} · total, per step`, x: steps.map((r) => r.step), y: steps.map((r) => r.mean), mode: "lines+markers",
      line: { color: color(i), width: 1.5 }, marker: { size: 4 } });
    i += 1;
    for (const [fn, rows] of by(stats.filter((r) => r.run_id === run && r.mean !== null), "reward_fn")) {
      const x = rows.map((r) => r.step_end - 1);
      const band = rows.filter((r) => r.p10 !== null && r.p90 !== null);
      traces.push({ x: band.map((r) => r.step_end - 1), y: band.map((r) => r.p90), mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false });
      traces.push({ name: `${run} · ${fn} p10–p90`, x: band.map((r) => r.step_end - 1), y: band.map((r) => r.p10), mode: "lines", line: { width: 0 },
        fill: "tonexty", fillcolor: color(i, 0.15), hoverinfo: "skip" });
      traces.push({ name: `${run} · ${fn}, window mean`, x, y: rows.map((r) => r.mean), mode: "lines", line: { color: color(i), dash: "dash" },
        text: rows.map((r) => `steps ${r.step_start}–${r.step_end - 1}, n=${r.count}`) });
      i += 1;
    }
  }
  return traces;
}

function metricNames(metrics) {
  const present = new Set(metrics.map((r) => r.metric));
  const named = STANDARD_METRICS.filter((m) => present.has(m));
  const lengths = [...present].filter((m) => !named.includes(m) && /length/.test(m) && /completion/.test(m)).slice(0, 1);
  const chosen = [...named, ...lengths];
  return chosen.length ? chosen : [...present].slice(0, 6);
}

export async function render(root, params) {
  const runs = (params.run || "").split(",").filter(Boolean);
  if (!runs.length) {
    const overview = await api("runs", "overview");
    root.replaceChildren(h("h1", {}, "Run"), overview.length
      ? h("p", {}, "Pick a run: ", ...overview.map((r) => h("a", { href: href("run", { run: r.run_id }), style: "margin-right:10px" }, r.run_id)))
      : empty("Nothing is stored yet: run ", h("code", {}, "trainwire demo --ui"), " or a worker."));
    return;
  }
  const progress = h("span", { id: "progress", class: "muted" }, "loading…");
  const charts = h("div", { class: "charts" },
    h("div", { id: "chart-reward", class: "chart wide" }),
    h("div", { id: "chart-groups", class: "chart" }),
    h("div", { id: "chart-judge", class: "chart" }),
    h("div", { id: "metric-charts", style: "display:contents" }));
  const alertsBox = h("div", { id: "run-alerts" });
  root.replaceChildren(
    h("h1", {}, runs.length > 1 ? `Runs ${runs.join(", ")}` : `Run ${runs[0]}`),
    h("div", { class: "bar" }, progress, h("a", { href: href("groups", { run: runs[0] }) }, "groups"),
      h("a", { href: href("samples", { run: runs[0] }) }, "samples"), h("a", { href: href("judge", { run: runs.join(",") }) }, "judge"),
      h("a", { href: href("alerts", { run: runs.join(",") }) }, "alerts")),
    charts,
    h("h2", {}, "Alerts"),
    alertsBox,
  );

  const list = runs.join(",");
  async function load() {
    const fetched = {
      alerts: api("run", "alerts", { runs: list }),
      stats: api("run", "reward_stats", { runs: list }),
      perStep: api("run", "reward_by_step", { runs: list }),
      groups: api("run", "group_stats", { runs: list }),
      judge: api("run", "judge_by_step", { runs: list }),
      metrics: api("run", "train_metrics", { runs: list }),
    };
    const alerts = await fetched.alerts;
    const shapes = markers(alerts, params.step);
    const xaxis = { title: { text: "step" } };
    alertsBox.replaceChildren(alerts.length
      ? table([
          ["time", (a) => when(a.ts)], ["run", (a) => a.run_id], ["step", (a) => a.step, { num: true }],
          ["severity", (a) => h("span", { class: `badge ${a.severity}` }, a.severity)], ["rule", (a) => a.rule], ["message", (a) => a.message],
        ], alerts)
      : h("p", { class: "muted" }, "No alerts."));
    // each chart as soon as its data is in
    await Promise.all([
      Promise.all([fetched.stats, fetched.perStep]).then(([stats, perStep]) => chart(document.getElementById("chart-reward"),
        rewardTraces(runs, stats, perStep), { title: { text: "Reward per reward function (window mean, p10–p90 band; dotted: alerts)" }, xaxis, shapes })),
      fetched.groups.then((groups) => chart(document.getElementById("chart-groups"), runs.flatMap((run, i) => {
        const rows = groups.filter((r) => r.run_id === run);
        return [
          { name: `${run} · zero-variance share`, x: rows.map((r) => r.step), y: rows.map((r) => r.zero_variance_share), mode: "lines+markers", line: { color: color(i) } },
          { name: `${run} · length–reward corr`, x: rows.map((r) => r.step), y: rows.map((r) => r.length_reward_corr), mode: "lines", line: { color: color(i), dash: "dot" }, yaxis: "y2" },
        ];
      }), { title: { text: "GRPO groups" }, xaxis, shapes, yaxis: { title: { text: "zero-variance share" }, range: [0, 1.05] },
        yaxis2: { overlaying: "y", side: "right", range: [-1, 1], title: { text: "corr" } } })),
      fetched.judge.then((judge) => chart(document.getElementById("chart-judge"), runs.flatMap((run, i) => {
        const rows = judge.filter((r) => r.run_id === run);
        return [
          { name: `${run} · judge score`, x: rows.map((r) => r.step), y: rows.map((r) => r.mean_score_normalized), mode: "lines+markers", line: { color: color(i) } },
          { name: `${run} · rule reward`, x: rows.map((r) => r.step), y: rows.map((r) => r.mean_reward), mode: "lines", line: { color: color(i), dash: "dot" }, yaxis: "y2" },
        ];
      }), { title: { text: judge.length ? "Judge score next to rule reward" : "Judge score (none yet)" }, xaxis, shapes,
        yaxis: { title: { text: "judge (0–1)" } }, yaxis2: { overlaying: "y", side: "right", title: { text: "reward" } } })),
      fetched.metrics.then((metrics) => drawMetrics(metrics, xaxis, shapes)),
    ]);
  }

  async function drawMetrics(metrics, xaxis, shapes) {
    const holder = document.getElementById("metric-charts");
    const names = metricNames(metrics);
    for (const name of names) {
      const id = `chart-metric-${name.replace(/[^a-z0-9]+/gi, "-")}`;
      let node = document.getElementById(id);
      if (!node) {
        node = h("div", { id, class: "chart" });
        holder.append(node);
      }
      const traces = runs.map((run, i) => {
        const rows = metrics.filter((r) => r.run_id === run && r.metric === name);
        return { name: run, x: rows.map((r) => r.step), y: rows.map((r) => r.value), mode: "lines", line: { color: color(i) } };
      });
      await chart(node, traces, { title: { text: name }, xaxis, shapes, showlegend: runs.length > 1 });
    }
    if (!names.length && !holder.children.length) holder.append(h("p", { class: "muted" }, "No training metrics yet (train_steps)."));
  }

  let seen = "";
  function showProgress(rows) {
    const last = Math.max(...rows.map((r) => (r.last_step === null ? -1 : r.last_step)), -1);
    progress.dataset.lastStep = String(last);
    progress.textContent = rows.length
      ? `last step ${last} · ${rows.reduce((n, r) => n + r.rows, 0)} rows stored · updated ${new Date().toLocaleTimeString()}`
      : "nothing stored for this run yet";
    showLive("live");
  }

  /** Redraw when the run's stored rows changed (the first time: fetch everything at once). */
  async function poll(first = false) {
    const progressRows = Promise.all(runs.map((run) => api("run", "progress", { run }))).then((rows) => rows.flat());
    if (first) {
      const [rows] = await Promise.all([progressRows, load()]);
      seen = JSON.stringify(rows);
      showProgress(rows);
      return;
    }
    const rows = await progressRows;
    const fingerprint = JSON.stringify(rows);
    if (fingerprint === seen) return;
    seen = fingerprint;
    await load();
    showProgress(rows);
  }

  try {
    await poll(true);
  } catch (error) {
    root.append(failure(error));
    return;
  }
  every(1500, poll);
}
