// Samples: search the interactions, and read one in full.
import { api, h, href, num, table, update, when } from "../app.js";

const FILTERS = ["run", "q", "step_min", "step_max", "reward_min", "reward_max", "success", "judged"];

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 1);
  } catch {
    return text;
  }
}

async function record(id, run) {
  const [row] = await api("samples", "record", { event_id: id, run });
  if (!row) return h("p", { class: "muted" }, `No interaction ${id}.`);
  const field = (name, value) => [h("dt", {}, name), h("dd", {}, value === null || value === undefined ? "" : value)];
  const rewards = Object.entries(row.rewards || {});
  return h("div", { id: "record" },
    h("h2", {}, `Interaction ${row.event_id}`),
    h("dl", { class: "kv" },
      ...field("run", h("a", { href: href("run", { run: row.run_id, step: row.step }) }, row.run_id)), ...field("time", when(row.ts)),
      ...field("step", row.step), ...field("group", row.group_id === null ? "" : h("a", { href: href("groups", { run: row.run_id, step: row.step, group: row.group_id }) }, row.group_id)),
      ...field("model", row.model), ...field("success", String(row.success)), ...field("error", row.error),
      ...field("reward", num(row.reward)), ...rewards.flatMap(([k, v]) => field(`reward ${k}`, num(v))), ...field("advantage", num(row.advantage)),
      ...field("tokens", `${row.prompt_tokens ?? "?"} prompt, ${row.completion_tokens ?? "?"} completion`), ...field("latency", row.latency_ms === null ? "" : `${num(row.latency_ms)} ms`),
      ...field("judge", row.judge_score === null ? `not judged${row.judge_failures ? ` (${row.judge_failures} failed)` : ""}` : `${num(row.judge_score, 3)} (normalized ${num(row.judge_score_normalized, 3)}, ${row.judge_model})`),
    ),
    h("h2", {}, row.prompt ? "Prompt" : "Messages"), h("div", { class: "text" }, row.prompt || pretty(row.prompt_messages)),
    h("h2", {}, "Completion"), h("div", { class: "text" }, row.completion),
    row.judge_reasoning ? [h("h2", {}, "Judge's reasoning"), h("div", { class: "text" }, row.judge_reasoning)] : null,
    h("h2", {}, "Metadata (token stats when stored)"), h("div", { class: "text" }, pretty(row.metadata)),
  );
}

export async function render(root, params) {
  const inputs = {};
  const input = (name, attrs) => (inputs[name] = h("input", { name, value: params[name] || "", ...attrs }));
  const select = (name, options) => (inputs[name] = h("select", { name }, options.map((o) => h("option", { value: o, selected: (params[name] || "any") === o }, o))));
  const form = h("form", { class: "bar", id: "sample-filters", onsubmit: (e) => {
      e.preventDefault();
      update({ ...Object.fromEntries(FILTERS.map((f) => [f, inputs[f].value === "any" ? "" : inputs[f].value])), offset: "", id: "" });
    } },
    h("label", {}, "text ", input("q", { type: "text", placeholder: "in prompt or completion" })),
    h("label", {}, "runs ", input("run", { type: "text", size: 14, placeholder: "all" })),
    h("label", {}, "steps ", input("step_min", { type: "number", style: "width:70px" }), "–", input("step_max", { type: "number", style: "width:70px" })),
    h("label", {}, "reward ", input("reward_min", { type: "number", step: "any", style: "width:70px" }), "–", input("reward_max", { type: "number", step: "any", style: "width:70px" })),
    h("label", {}, "success ", select("success", ["any", "true", "false"])),
    h("label", {}, "judged ", select("judged", ["any", "yes", "no"])),
    h("button", {}, "search"));
  const offset = Number(params.offset || 0);
  const rows = await api("samples", "search", {
    runs: params.run, text: params.q, step_min: params.step_min, step_max: params.step_max,
    reward_min: params.reward_min, reward_max: params.reward_max, success: params.success, judged: params.judged, offset, limit: 50,
  });
  const list = table([
    ["time", (r) => when(r.ts)], ["run", (r) => r.run_id], ["step", (r) => r.step, { num: true }], ["reward", (r) => num(r.reward), { num: true }],
    ["ok", (r) => (r.success ? "" : "failed")], ["judged", (r) => (r.judged ? "yes" : "")], ["prompt", (r) => r.prompt_start], ["completion", (r) => r.completion_start],
  ], rows, (r) => ({ class: `clickable${r.event_id === params.id ? " selected" : ""}`, dataset: { event: r.event_id }, onclick: () => update({ id: r.event_id, rrun: r.run_id }) }));
  const pager = h("p", {},
    offset > 0 ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); update({ offset: Math.max(0, offset - 50) }); } }, "← newer") : null, " ",
    rows.length === 50 ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); update({ offset: offset + 50 }); } }, "older →") : null);
  const detail = params.id ? await record(params.id, params.rrun || "") : h("p", { class: "muted" }, "Open an interaction to read it in full.");
  root.replaceChildren(h("h1", {}, "Samples"), form,
    h("div", { class: "split" }, h("div", {}, rows.length ? list : h("p", { class: "muted" }, "No interaction matches."), pager), detail));
}
