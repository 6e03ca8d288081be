// Campaigns (decision 0089): the list (`GET /campaigns`, one call), and one campaign:
// its stats and experiments, its steps drawn as a flow, its definition to
// edit as YAML (`GET /campaigns/{id}` with `Accept: application/yaml`, `PUT`
// as `application/yaml`), pause, resume and roll back.

import { badge, count, h, notice, problem, replace, table } from "./ui.js";

export async function render(main, ctx) {
  if (ctx.params.length) await campaign(main, ctx, ctx.params[0]);
  else await list(main, ctx);
}

/// Revenue per currency, `154.21 EUR, 12.00 USD`.
function revenue(minor) {
  const entries = Object.entries(minor || {});
  if (!entries.length) return "–";
  return entries.map(([currency, v]) => `${(v / 100).toFixed(2)} ${currency}`).join(", ");
}

function status(paused) {
  return paused ? badge("paused", "warn") : badge("active", "good");
}

async function list(main, { api }) {
  const answer = await api.get("/campaigns");
  if (!answer.ok) {
    replace(main, h("h1", {}, "Campaigns"), problem(answer));
    return;
  }
  // One call: the list carries each campaign's entrants, sends, conversions
  // and revenue (the numbers of its stats, without the experiments).
  const items = answer.body.items || [];
  const rows = table(
    `Every campaign at its current version; conversions and revenue within ${answer.body.conversion_window_days} days of a message`,
    [
      { label: "Campaign", value: (c) => h("a", { href: `#/campaigns/${encodeURIComponent(c.id)}` }, c.name || c.id) },
      { label: "Id", value: (c) => h("code", {}, c.id) },
      { label: "Status", value: (c) => status(c.status === "paused") },
      { label: "Version", value: (c) => count(c.version), num: true },
      { label: "Entered", value: (c) => count(c.entered), num: true },
      { label: "Running", value: (c) => count(c.running_instances), num: true },
      { label: "Sent", value: (c) => count(c.sends), num: true },
      { label: "Converted", value: (c) => count(c.conversions), num: true },
      { label: "Revenue", value: (c) => revenue(c.revenue_minor), num: true },
    ],
    items,
    "No campaign yet.",
  );
  if (rows.tagName === "TABLE") {
    rows.id = "campaigns";
    rows.querySelectorAll("tbody tr").forEach((tr, i) => tr.setAttribute("data-id", items[i].id));
  }
  replace(main, h("h1", {}, "Campaigns"), rows);
}

// ---------------------------------------------------------------- one campaign

async function campaign(main, ctx, id, message) {
  const { api } = ctx;
  const path = `/campaigns/${encodeURIComponent(id)}`;
  const admin = ctx.has("crm/admin");
  const [got, yaml, stats, listed, versions] = await Promise.all([
    admin ? api.get(path) : Promise.resolve(null),
    // The definition as text to edit: YAML, which the API reads back as is.
    admin ? api.get(path, YAML_ACCEPT) : Promise.resolve(null),
    api.get(`${path}/stats`),
    // Without crm/admin, the name comes from the list (crm/read).
    admin ? Promise.resolve(null) : api.get("/campaigns"),
    // The versions a rollback can pick (crm/admin, like the definition).
    admin ? api.get(`${path}/versions`) : Promise.resolve(null),
  ]);
  if (got && got.status === 404) {
    replace(main, h("h1", {}, "Campaign not found"), problem(got), h("p", {}, h("a", { href: "#/campaigns" }, "All campaigns")));
    return;
  }
  const c = got && got.ok ? got.body : null;
  const definition = c ? c.definition : null;
  const entry = listed && listed.ok ? (listed.body.items || []).find((i) => i.id === id) : null;
  const name = (definition && definition.name) || (entry && entry.name) || id;
  const again = (note) => campaign(main, ctx, id, note);

  replace(
    main,
    h("p", {}, h("a", { href: "#/campaigns" }, "← Campaigns")),
    h("h1", {}, `Campaign: ${name}`),
    message || null,
    c
      ? h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Id"),
          h("dd", {}, h("code", {}, id)),
          h("dt", {}, "Status"),
          h("dd", { id: "status" }, status(c.paused)),
          h("dt", {}, "Version"),
          h("dd", { id: "version" }, String(c.version)),
          definition.description ? [h("dt", {}, "Description"), h("dd", {}, definition.description)] : null,
        )
      : got
        ? problem(got)
        : [
            notice("The definition, the flow and the actions need a token with crm/admin; this one shows the stats only."),
            entry
              ? h(
                  "dl",
                  { class: "facts" },
                  h("dt", {}, "Id"),
                  h("dd", {}, h("code", {}, id)),
                  h("dt", {}, "Status"),
                  h("dd", { id: "status" }, status(entry.status === "paused")),
                  h("dt", {}, "Version"),
                  h("dd", { id: "version" }, String(entry.version)),
                )
              : null,
          ],
    h(
      "div",
      { class: definition ? "campaign-columns" : null },
      definition
        ? h(
            "section",
            { class: "panel" },
            h("h2", {}, "Steps"),
            h("div", { class: "flow-wrap" }, flow(definition, stats.ok ? stats.body : null)),
          )
        : null,
      h("div", {}, c ? actions(ctx, path, c, versions, again) : null, statsSection(stats)),
    ),
    experimentsSection(stats, definition),
    c ? editor(ctx, path, c, yaml, again) : null,
  );
}

/// Pause, resume, roll back: each shows the API's answer and reloads. The
/// rollback picks one of the campaign's earlier versions (`GET
/// /campaigns/{id}/versions`), newest first.
function actions(ctx, path, c, versions, again) {
  const result = h("div", { id: "action-result", "aria-live": "polite" });
  const run = async (label, call) => {
    replace(result, h("p", { class: "muted" }, `${label}…`));
    const answer = await call();
    if (!answer.ok) {
      replace(result, problem(answer));
      return;
    }
    const b = answer.body;
    const parts = [`${label}: version ${b.version}, ${b.paused ? "paused" : "active"}`];
    if (typeof b.exited_instances === "number") parts.push(`${b.exited_instances} running journeys exited`);
    if (b.rolled_back_to) parts.push(`the definition of version ${b.rolled_back_to} is current again`);
    await again(notice(`${parts.join("; ")}.`));
  };
  return h(
    "section",
    { class: "panel" },
    h("h2", {}, "Actions"),
    h(
      "div",
      { class: "actions" },
      c.paused
        ? h("button", { type: "button", id: "resume", onclick: () => run("Resumed", () => ctx.api.post(`${path}/resume`)) }, "Resume")
        : h(
            "button",
            { type: "button", id: "pause", class: "danger", onclick: () => run("Paused", () => ctx.api.post(`${path}/pause`)) },
            "Pause",
          ),
    ),
    rollbackForm(ctx, path, versions, run),
    result,
  );
}

/// One option per earlier version: its number, when and by whom it was
/// published, and which version it repeats (a rollback's).
function versionLabel(v) {
  const when = v.published_at ? new Date(v.published_at).toISOString().slice(0, 16).replace("T", " ") : "as shipped";
  const by = v.published_by && v.published_by !== "shipped" ? ` by ${v.published_by.replace(/^api:/, "")}` : "";
  const same = v.same_as ? ` (= version ${v.same_as})` : "";
  return `Version ${v.version} · ${when}${by}${same}`;
}

function rollbackForm(ctx, path, versions, run) {
  if (!versions || !versions.ok) return versions ? problem(versions) : null;
  const earlier = (versions.body.items || []).filter((v) => v.status !== "current").reverse();
  if (!earlier.length) return h("p", { class: "muted", id: "rollback-none" }, "No earlier version to roll back to.");
  const to = h(
    "select",
    { id: "rollback-to", name: "to", required: true },
    earlier.map((v) => h("option", { value: String(v.version) }, versionLabel(v))),
  );
  return h(
    "form",
    {
      class: "inline",
      onsubmit: (e) => {
        e.preventDefault();
        run("Rolled back", () => ctx.api.post(`${path}/rollback?to=${encodeURIComponent(to.value)}`));
      },
    },
    h("label", { for: "rollback-to" }, "Version to make current again", to),
    h("button", { type: "submit", id: "rollback", class: "secondary" }, "Roll back"),
  );
}

function rate(r) {
  return typeof r === "number" ? `${(r * 100).toFixed(1)} %` : "–";
}

function interval(i) {
  return i && typeof i.low === "number" ? `${rate(i.low)} – ${rate(i.high)}` : "–";
}

function statsSection(stats) {
  if (!stats.ok) return h("section", { class: "panel" }, h("h2", {}, "Stats"), problem(stats));
  const s = stats.body;
  const m = s.messages || {};
  const card = (cid, label, value) =>
    h("div", { class: "card", id: cid }, h("div", { class: "figure" }, value), h("div", { class: "label" }, label));
  return h(
    "section",
    { class: "panel" },
    h("h2", {}, "Stats"),
    h(
      "div",
      { class: "cards" },
      card("stat-entered", "Entered", count(s.entered)),
      card("stat-requested", "Messages requested", count(m.requested)),
      card("stat-sent", "Messages sent", count(m.sent)),
      card("stat-suppressed", "Messages suppressed", count(m.suppressed)),
      card("stat-conversions", `Conversions within ${s.conversion_window_days} days`, count(s.conversions)),
      card("stat-revenue", "Revenue", revenue(s.revenue_minor)),
    ),
  );
}

/// Per arm of each split and of the holdout, when the campaign has any.
function experimentsSection(stats, definition) {
  const experiments = (stats.ok && stats.body.experiments) || [];
  const splits = definition && (definition.holdout || (definition.steps || []).some((step) => step.type === "split"));
  if (!experiments.length && !splits) return null;
  return h(
    "section",
    { class: "panel", id: "experiments" },
    h("h2", {}, "Experiments"),
          table(
            "Per arm of each split and of the holdout: a conversion is an order within the window after the journey started (decision 0081)",
            [
              { label: "Experiment", value: (a) => h("code", {}, a.experiment) },
              { label: "Arm", value: (a) => a.arm },
              { label: "Entered", value: (a) => count(a.entered), num: true },
              { label: "Sent", value: (a) => count(a.sent), num: true },
              { label: "Converted", value: (a) => count(a.converted), num: true },
              { label: "Rate", value: (a) => rate(a.conversion_rate), num: true },
              { label: "95 % interval", value: (a) => interval(a.interval), num: true },
              {
                label: "Lift over holdout",
                value: (a) =>
                  a.lift_over_holdout
                    ? `${rate(a.lift_over_holdout.difference)} (${interval(a.lift_over_holdout.interval)})`
                    : "–",
                num: true,
              },
              { label: "Revenue", value: (a) => revenue(a.revenue_minor), num: true },
            ],
            experiments,
            "No journey has reached an experiment yet.",
          ),
  );
}

// ---------------------------------------------------------------- the flow

/// One line describing a step under its id.
function describe(step) {
  const pattern = (p) => ((p && p["detail-type"]) || []).join(", ");
  switch (step.type) {
    case "wait":
      return `wait ${step.duration || step.until || ""}`.trim();
    case "wait_until":
      return `wait for ${pattern(step.pattern) || "a condition"}${step.timeout ? `, at most ${step.timeout}` : ""}`;
    case "send":
      return `send ${step.channel || ""} · ${step.template || (step.templates ? "templates" : "")}`;
    case "branch":
      return "branch on conditions";
    case "split":
      return `split · ${step.experiment || ""}`;
    case "update_segment":
      return `${step.action || "update"} segment ${step.segment || ""}`;
    case "emit":
      return `emit ${step["detail-type"] || step.detail_type || step.event || ""}`.trim();
    case "exit":
      return `exit${step.reason ? `: ${step.reason}` : ""}`;
    default:
      return step.type || "";
  }
}

/// The edges out of step `i`: `{to, label}` with `to` a step index, or
/// `steps.length` for the end. A step without `next` goes to the one after
/// it (the end after the last), as the engine does.
function edges(steps, i, index, arms) {
  const step = steps[i];
  const follow = (target) => {
    if (target === undefined || target === null) return i + 1;
    if (target === "exit") return steps.length;
    return index.has(target) ? index.get(target) : null;
  };
  const out = [];
  const add = (target, label) => {
    const to = follow(target);
    if (to !== null) out.push({ to, label });
  };
  switch (step.type) {
    case "exit":
      break;
    case "branch":
      add(step.then, "then");
      add(step.else, "else");
      break;
    case "split":
      for (const v of step.variants || []) {
        const arm = arms.get(`${step.experiment}/${v.id}`);
        add(v.next, `${v.id} (${v.weight})${arm ? ` · ${count(arm.entered)} in` : ""}`);
      }
      break;
    case "wait_until":
      add(step.next, "event");
      add(step.on_timeout, "timeout");
      break;
    default:
      add(step.next, "");
  }
  return out;
}

/// The steps as boxes top to bottom, the trigger first and the end last;
/// an edge to the box right below is a straight arrow, any other goes
/// round on the right in its own lane.
function flow(definition, stats) {
  const steps = Array.isArray(definition.steps) ? definition.steps : [];
  const index = new Map(steps.map((s, i) => [s.id, i]));
  const arms = new Map(((stats && stats.experiments) || []).map((a) => [`${a.experiment}/${a.arm}`, a]));
  const BOX_W = 300;
  const BOX_H = 46;
  const GAP = 74;
  const X = 10;
  const LABELS = 120; // room for edge labels right of the boxes
  const top = (k) => 10 + k * GAP; // k: 0 trigger, 1..n steps, n + 1 end
  const mid = X + BOX_W / 2;
  const right = X + BOX_W;

  const trigger = definition.trigger || {};
  const triggerLine = ((trigger.pattern && trigger.pattern["detail-type"]) || []).join(", ") || "trigger";
  const holdout = definition.holdout && definition.holdout.percent;
  const held = arms.get("holdout/holdout");
  const nodes = [
    {
      title: `Start${holdout ? ` · holdout ${holdout} %${held ? ` (${count(held.entered)} held out)` : ""}` : ""}`,
      line: `on ${triggerLine}`,
      kind: "start",
    },
    ...steps.map((s) => ({ title: s.id, line: describe(s), kind: s.type })),
    { title: "End", line: "the journey exits", kind: "end" },
  ];

  const parts = [];
  let lanes = 0;
  const arrowDown = (x, y) => h("path", { d: `M ${x} ${y} l -5 -8 l 10 0 z`, class: "head" });
  const arrowLeft = (x, y) => h("path", { d: `M ${x} ${y} l 8 -5 l 0 10 z`, class: "head" });
  const lines = [];

  // Edges: the trigger goes to the first step; then each step's.
  const all = [{ from: 0, to: 1, label: "" }];
  steps.forEach((_, i) => {
    for (const e of edges(steps, i, index, arms)) all.push({ from: i + 1, to: e.to + 1, label: e.label });
  });
  const outOf = new Map();
  for (const e of all) {
    const seq = outOf.get(e.from) || 0;
    outOf.set(e.from, seq + 1);
    const y0 = top(e.from);
    const y1 = top(e.to);
    if (e.to === e.from + 1 && !lines.includes(e.from)) {
      lines.push(e.from);
      parts.push(
        h("line", { x1: mid, y1: y0 + BOX_H, x2: mid, y2: y1 - 1, class: "edge" }),
        arrowDown(mid, y1),
        e.label ? h("text", { x: mid + 8, y: y0 + BOX_H + 16, class: "edge-label" }, e.label) : null,
      );
    } else {
      const lane = right + LABELS + lanes * 16;
      lanes += 1;
      const from = y0 + 14 + (seq % 3) * 9;
      const to = y1 + BOX_H / 2 + 6;
      parts.push(
        h("path", { d: `M ${right} ${from} H ${lane} V ${to} H ${right + 8}`, class: "edge" }),
        arrowLeft(right, to),
        e.label ? h("text", { x: right + 6, y: from - 3, class: "edge-label" }, e.label) : null,
      );
    }
  }

  const boxes = nodes.map((n, k) =>
    h(
      "g",
      { class: `step ${n.kind}` },
      h("title", {}, `${n.title}: ${n.line}`),
      h("rect", { x: X, y: top(k), width: BOX_W, height: BOX_H, rx: n.kind === "start" || n.kind === "end" ? 23 : 5 }),
      h("text", { x: X + 12, y: top(k) + 19, class: "step-id" }, n.title),
      h("text", { x: X + 12, y: top(k) + 36, class: "step-line" }, n.line.length > 44 ? `${n.line.slice(0, 43)}…` : n.line),
    ),
  );
  const width = right + LABELS + lanes * 16 + 10;
  const height = top(nodes.length - 1) + BOX_H + 10;
  return h(
    "svg",
    {
      class: "flow",
      id: "flow",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": `The campaign's ${steps.length} steps as a flow: ${steps.map((s) => s.id).join(", ")}`,
    },
    h("title", {}, "The campaign's steps as a flow"),
    parts,
    boxes,
  );
}

// ---------------------------------------------------------------- the editor

const YAML_ACCEPT = "application/yaml, application/problem+json";

function editor(ctx, path, c, yaml, again) {
  if (!yaml || !yaml.ok || typeof yaml.body !== "string") {
    return h("section", { class: "panel" }, h("h2", {}, "Definition"), yaml ? problem(yaml) : null);
  }
  const area = h(
    "textarea",
    { id: "definition", name: "definition", spellcheck: "false", rows: 30, "aria-describedby": "definition-help" },
    yaml.body,
  );
  const result = h("div", { id: "save-result", "aria-live": "polite" });
  return h(
    "section",
    { class: "panel" },
    h("h2", {}, "Definition"),
    h(
      "form",
      {
        onsubmit: async (e) => {
          e.preventDefault();
          replace(result, h("p", { class: "muted" }, "Saving…"));
          const answer = await ctx.api.put(path, area.value, "application/yaml");
          if (!answer.ok) {
            area.setAttribute("aria-invalid", "true");
            replace(result, problem(answer));
            return;
          }
          const v = answer.body.version;
          await again(
            notice(
              v === c.version
                ? `Nothing changed: version ${v} stays current.`
                : `Saved: version ${v} is current; new journeys start on it.`,
            ),
          );
        },
      },
      h("label", { for: "definition" }, "The definition (YAML)"),
      h(
        "p",
        { id: "definition-help", class: "muted" },
        "Saving a changed definition publishes a new version; running journeys keep theirs. Every error is listed by its path (steps[2].next), a YAML syntax error by its line.",
      ),
      area,
      h("div", { class: "actions" }, h("button", { type: "submit", id: "save" }, "Save a new version")),
      result,
    ),
  );
}
