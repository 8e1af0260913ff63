// Groups: a step's GRPO groups, and one group's completions side by side.
import { api, empty, h, href, num, table, update } from "../app.js";

function prompt(text, limit = 140) {
  return text.length > limit ? text.slice(0, limit) + "…" : text;
}

function completionCard(row) {
  const rewards = Object.entries(row.rewards || {}).sort(([a], [b]) => a.localeCompare(b));
  return h("div", { class: "card completion", dataset: { event: row.event_id } },
    h("h3", {}, h("span", {}, `#${row.group_index ?? "?"}`), h("a", { href: href("samples", { id: row.event_id }) }, "record")),
    h("div", { class: "text" }, row.completion),
    h("dl", { class: "kv" },
      h("dt", {}, "total reward"), h("dd", { class: "reward" }, num(row.reward)),
      ...rewards.flatMap(([fn, value]) => [h("dt", {}, fn), h("dd", { dataset: { fn } }, num(value))]),
      h("dt", {}, "advantage"), h("dd", {}, num(row.advantage)),
      h("dt", {}, "length"), h("dd", {}, row.completion_tokens === null ? `${row.completion_chars} chars` : `${row.completion_tokens} tokens, ${row.completion_chars} chars`),
      h("dt", {}, "judge"), h("dd", { class: "judge" }, row.judge_score === null ? "not judged" : `${num(row.judge_score, 3)} (normalized ${num(row.judge_score_normalized, 3)})`),
    ),
    row.judge_reasoning ? h("details", {}, h("summary", {}, "judge's reasoning"), h("div", { class: "text" }, row.judge_reasoning)) : null,
  );
}

export async function render(root, params) {
  const run = (params.run || "").split(",")[0];
  if (!run) {
    const overview = await api("runs", "overview");
    root.replaceChildren(h("h1", {}, "Groups"), overview.length
      ? h("p", {}, "Pick a run: ", ...overview.map((r) => h("a", { href: href("groups", { run: r.run_id }), style: "margin-right:10px" }, r.run_id)))
      : empty("Nothing is stored yet: run ", h("code", {}, "trainwire demo --ui"), " or a worker."));
    return;
  }
  const steps = (await api("groups", "steps", { runs: run })).map((r) => r.step);
  if (!steps.length) {
    root.replaceChildren(h("h1", {}, `Groups of ${run}`), empty("No interactions with a step in this run yet."));
    return;
  }
  const step = params.step !== undefined && params.step !== "" ? Number(params.step) : steps[steps.length - 1];
  const zeroOnly = params.zv === "1";
  const order = params.order || "group";
  const search = params.q || "";
  const searchBox = h("input", { type: "text", id: "group-search", value: search, placeholder: "text in prompt or completion" });
  const controls = h("div", { class: "bar" },
    h("label", {}, "step ", h("select", { id: "step-select", onchange: (e) => update({ step: e.target.value, group: "" }) },
      steps.map((s) => h("option", { value: s, selected: s === step }, s)))),
    h("label", {}, h("input", { type: "checkbox", id: "zero-only", checked: zeroOnly, onchange: (e) => update({ zv: e.target.checked ? "1" : "", group: "" }) }), " zero-variance only"),
    h("label", {}, "order ", h("select", { id: "order-select", onchange: (e) => update({ order: e.target.value }) },
      [["group", "by group"], ["best", "best first"], ["worst", "worst first"]].map(([v, t]) => h("option", { value: v, selected: v === order }, t)))),
    h("form", { onsubmit: (e) => { e.preventDefault(); update({ q: searchBox.value, group: "" }); } }, searchBox, h("button", {}, "search")),
  );
  const groups = await api("groups", "groups", { run, step, zero_variance_only: zeroOnly, search, order });
  const list = groups.length
    ? table([
        ["group", (g) => g.group_id],
        ["prompt", (g) => prompt(g.prompt)],
        ["size", (g) => g.size, { num: true }],
        ["mean", (g) => num(g.reward_mean), { num: true }],
        ["std", (g) => num(g.reward_std), { num: true }],
        ["", (g) => (g.zero_variance ? h("span", { class: "badge zero" }, "zero variance") : "")],
      ], groups, (g) => ({ class: `clickable${g.group_id === params.group ? " selected" : ""}`, dataset: { group: g.group_id }, onclick: () => update({ group: g.group_id }) }))
    : h("p", { class: "muted" }, "No group matches.");
  const detail = h("div", { id: "group-detail" });
  root.replaceChildren(h("h1", {}, `Groups of ${run}, step ${step}`), controls,
    h("div", { class: "split" }, h("div", { id: "group-list" }, list), detail));
  if (!params.group) {
    detail.append(h("p", { class: "muted" }, "Open a group to read its completions side by side."));
    return;
  }
  const completions = await api("groups", "group", { run, step, group: params.group });
  const first = completions[0];
  const summary = groups.find((g) => g.group_id === params.group);
  detail.replaceChildren(
    h("h2", {}, `Group ${params.group}`, summary?.zero_variance ? h("span", { class: "badge zero", style: "margin-left:8px" }, "zero variance") : ""),
    first ? h("div", { class: "text", id: "group-prompt" }, first.prompt || first.prompt_messages) : h("p", { class: "muted" }, "No such group at this step."),
    h("div", { class: "cards" }, completions.map(completionCard)),
  );
}
