// Logits: the logits probe's target-word probabilities (seed 004's views).
import { api, by, chart, empty, h, tokenLabel, update } from "../app.js";

export async function render(root, params) {
  const runs = params.run || "";
  const byModel = await api("logits", "by_model", { runs });
  const title = h("h1", {}, `Logits${runs ? ` · ${runs}` : ""}`);
  if (!byModel.length) {
    root.replaceChildren(title, empty("No logits yet: run ", h("code", {}, "trainwire probe logits --model base=PATH --model rl=PATH --data problems.jsonl"),
      " and a worker to store them."));
    return;
  }
  const models = [...new Set(byModel.map((r) => r.model))];
  const model = params.model && models.includes(params.model) ? params.model : models[0];
  const [levels, correctness, positions] = await Promise.all([
    api("logits", "by_level", { runs, model }),
    api("logits", "by_correctness", { runs, model }),
    api("logits", "by_position", { runs, model, bucket: 1 }),
  ]);
  root.replaceChildren(
    title,
    h("div", { class: "bar" }, h("label", {}, "model ", h("select", { id: "model-select", onchange: (e) => update({ model: e.target.value }) },
      models.map((m) => h("option", { value: m, selected: m === model }, m))))),
    h("div", { class: "charts" },
      h("div", { id: "chart-logits-models", class: "chart" }), h("div", { id: "chart-logits-levels", class: "chart" }),
      h("div", { id: "chart-logits-correct", class: "chart" }), h("div", { id: "chart-logits-position", class: "chart" }),
      h("div", { id: "chart-logits-heatmap", class: "chart wide" })),
  );
  const words = [...new Set(byModel.map((r) => r.target_token))];
  await chart(document.getElementById("chart-logits-models"),
    [...by(byModel, "model")].map(([m, rows]) => ({ type: "bar", name: m, x: rows.map((r) => tokenLabel(r.target_token)), y: rows.map((r) => r.mean_probability) })),
    { title: { text: "Mean probability by model" }, barmode: "group", yaxis: { title: { text: "probability" } } });
  await chart(document.getElementById("chart-logits-levels"),
    [...by(levels, "target_token")].map(([w, rows]) => ({ name: tokenLabel(w), x: rows.map((r) => r.level), y: rows.map((r) => r.mean_probability), mode: "lines+markers" })),
    { title: { text: `By level · ${model}` }, xaxis: { title: { text: "level" } } });
  await chart(document.getElementById("chart-logits-correct"),
    [true, false].map((ok) => {
      const rows = correctness.filter((r) => r.correct === ok);
      return { type: "bar", name: ok ? "right" : "wrong", x: rows.map((r) => tokenLabel(r.target_token)), y: rows.map((r) => r.mean_probability) };
    }),
    { title: { text: `Right vs wrong answers · ${model}` }, barmode: "group" });
  await chart(document.getElementById("chart-logits-position"),
    [...by(positions, "target_token")].map(([w, rows]) => ({ name: tokenLabel(w), x: rows.map((r) => r.position_start), y: rows.map((r) => r.mean_probability), mode: "lines" })),
    { title: { text: `Along the answer · ${model}` }, xaxis: { title: { text: "position" } } });
  const xs = [...new Set(positions.map((r) => r.position_start))].sort((a, b) => a - b);
  const z = words.map((w) => xs.map((x) => positions.find((r) => r.target_token === w && r.position_start === x)?.mean_probability ?? null));
  await chart(document.getElementById("chart-logits-heatmap"), [{ type: "heatmap", x: xs, y: words.map(tokenLabel), z, colorscale: "Viridis" }],
    { title: { text: `Heatmap: word × position · ${model}` }, xaxis: { title: { text: "position" } } });
}
