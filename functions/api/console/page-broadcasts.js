// Broadcasts (decision 0089, broadcasts decisions 0084 and 0087). The list
// (`GET /broadcasts`, newest first, page by page), a form to schedule one
// (`POST /broadcasts`), one opened by id. One broadcast: status, progress
// and stats (`GET /broadcasts/{id}`, with a subject test's arms and
// winner), and Pause, Resume and Cancel for crm/admin.

import { badge, count, h, money, notice, pageButtons, pageSize, problem, query, replace, table, when } from "./ui.js";

export async function render(main, ctx) {
  if (ctx.params.length) return one(main, ctx, ctx.params[0]);
  return start(main, ctx);
}

/// A labelled control: `<label for=id>text control</label>`.
function field(id, text, control) {
  control.id = id;
  if (!control.name) control.name = id;
  return h("label", { for: id }, text, control);
}

function check(id, text, attrs = {}) {
  const input = h("input", { type: "checkbox", id, name: id, ...attrs });
  return { input, label: h("label", { for: id, class: "check" }, input, text) };
}

async function start(main, ctx) {
  const { api, has, navigate } = ctx;
  const opener = h("input", { required: true, autocomplete: "off", pattern: "[a-z0-9][a-z0-9_\\-]*" });
  const open = h(
    "form",
    {
      class: "inline",
      onsubmit: (e) => {
        e.preventDefault();
        navigate(`#/broadcasts/${encodeURIComponent(opener.value.trim())}`);
      },
    },
    field("open-id", "Broadcast id", opener),
    h("button", { type: "submit" }, "Open"),
  );
  const listed = h("section", { class: "panel", id: "broadcasts", "aria-labelledby": "broadcasts-title" });
  await listPage(api, listed, null, pageSize(ctx));
  replace(
    main,
    h("h1", {}, "Broadcasts"),
    h(
      "p",
      { class: "muted" },
      "One template to the members of segments, now, at a UTC time or at a local time.",
    ),
    listed,
    h("section", { class: "panel" }, h("h2", {}, "Open a broadcast"), open),
    has("crm/admin") ? await form(ctx) : null,
  );
}

/// One page of the list into `section`, with a link to the next page.
async function listPage(api, section, after, limit) {
  const answer = await api.get(`/broadcasts${query({ limit, after })}`);
  const title = h("h2", { id: "broadcasts-title" }, "All broadcasts");
  if (!answer.ok) {
    replace(section, title, problem(answer));
    return;
  }
  const page = answer.body;
  replace(
    section,
    title,
    after ? h("p", { class: "muted" }, "A later page of broadcasts.") : null,
    table(
      "Broadcasts, newest first",
      [
        { label: "Broadcast", value: (b) => h("a", { href: `#/broadcasts/${encodeURIComponent(b.id)}` }, b.id) },
        { label: "Status", value: (b) => status(b.status) },
        { label: "Template", value: (b) => b.template },
        { label: "Channel", value: (b) => b.channel },
        { label: "Scheduled", value: (b) => when(b.scheduled_at) },
        { label: "Starts", value: (b) => when(b.starts_at) },
        { label: "Audience", value: (b) => count(b.audience_size), num: true },
        { label: "Requested", value: (b) => count(b.requested), num: true },
      ],
      page.items || [],
      "No broadcast yet.",
    ),
    pageButtons(after, page.next_after, (next) => listPage(api, section, next, limit), "broadcasts-next"),
  );
}

function status(s) {
  const kind = { completed: "good", cancelled: "bad", paused: "warn", sending: "good" }[s];
  return badge(s, kind || null);
}

/// The form of `POST /broadcasts`.
async function form({ api, navigate }) {
  const [templates, segments] = await Promise.all([api.get("/templates"), api.get("/segments")]);
  const templateItems = templates.ok ? templates.body.items || [] : [];
  const segmentItems = segments.ok ? segments.body.items || [] : [];
  const out = h("div", { id: "broadcast-result", "aria-live": "polite" });

  const id = h("input", { autocomplete: "off", pattern: "[a-z0-9][a-z0-9_\\-]{0,63}", "aria-describedby": "b-id-help" });
  const channel = h("select", {}, ["email", "sms", "push"].map((c) => h("option", { value: c }, c)));
  const template = h("select", { required: true });
  const fillTemplates = () => {
    const wanted = templateItems.filter((t) => t.channel === channel.value);
    replace(
      template,
      wanted.length ? null : h("option", { value: "" }, "No template for this channel"),
      wanted.map((t) => h("option", { value: t.id }, `${t.id} (v${t.version}, ${t.source})`)),
    );
  };
  channel.addEventListener("change", fillTemplates);
  fillTemplates();

  const include = segmentItems.map((s, i) => ({ id: s.id, ...check(`b-seg-${i}`, `${s.name} (${count(s.members)})`) }));
  const exclude = segmentItems.map((s, i) => ({ id: s.id, ...check(`b-exc-${i}`, `${s.name} (${count(s.members)})`) }));

  const sendType = h(
    "select",
    {},
    h("option", { value: "now" }, "Now"),
    h("option", { value: "at" }, "At a UTC time"),
    h("option", { value: "local" }, "At a local time in each recipient's time zone"),
  );
  const at = h("input", { type: "datetime-local", "aria-describedby": "b-at-help" });
  const date = h("input", { type: "date" });
  const time = h("input", { type: "time" });
  const atBox = h("div", { class: "inline-fields", hidden: true }, field("b-at", "UTC time", at), h("span", { class: "muted", id: "b-at-help" }, "Read as UTC."));
  const localBox = h("div", { class: "inline-fields", hidden: true }, field("b-date", "Date", date), field("b-time", "Local time", time));
  sendType.addEventListener("change", () => {
    atBox.hidden = sendType.value !== "at";
    localBox.hidden = sendType.value !== "local";
  });
  const rate = h("input", { type: "number", min: 1, max: 1000, value: 50, required: true });

  const testing = check("b-test", "Test subject lines first (email or push, sent now or at a UTC time)");
  const variants = h("div", { id: "b-variants" });
  let variantCount = 0;
  const addVariant = () => {
    if (variantCount >= 5) return;
    const n = variantCount++;
    const vid = h("input", { autocomplete: "off", value: String.fromCharCode(97 + n), pattern: "[a-z][a-z0-9_\\-]{0,31}", "data-variant-id": "" });
    const subject = h("input", { autocomplete: "off", maxlength: 200, size: 60, "data-variant-subject": "" });
    variants.appendChild(
      h("div", { class: "inline-fields" }, field(`b-v${n}-id`, `Variant ${n + 1} id`, vid), field(`b-v${n}-subject`, `Variant ${n + 1} subject (Liquid)`, subject)),
    );
  };
  addVariant();
  addVariant();
  const percent = h("input", { type: "number", min: 1, max: 50, value: 20 });
  const wait = h("input", { type: "number", min: 1, max: 10080, value: 240 });
  const metric = h("select", {}, h("option", { value: "opened" }, "opened"), h("option", { value: "clicked" }, "clicked"));
  const testBox = h(
    "fieldset",
    { hidden: true },
    h("legend", {}, "Subject-line test"),
    variants,
    h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: addVariant }, "Add a variant")),
    h(
      "div",
      { class: "inline-fields" },
      field("b-percent", "Share of the audience in the test (%)", percent),
      field("b-wait", "Choose the winner after (minutes)", wait),
      field("b-metric", "Metric", metric),
    ),
  );
  testing.input.addEventListener("change", () => {
    testBox.hidden = !testing.input.checked;
  });

  const submit = async (e) => {
    e.preventDefault();
    const body = {
      template: template.value,
      channel: channel.value,
      audience: {
        segments: include.filter((s) => s.input.checked).map((s) => s.id),
        exclude: exclude.filter((s) => s.input.checked).map((s) => s.id),
      },
      send: { type: sendType.value },
      rate_per_second: Number(rate.value),
    };
    if (id.value.trim()) body.id = id.value.trim();
    if (sendType.value === "at") body.send.at = at.value ? `${at.value.length === 16 ? `${at.value}:00` : at.value}Z` : "";
    if (sendType.value === "local") {
      body.send.date = date.value;
      body.send.time = time.value;
    }
    if (testing.input.checked) {
      body.subject_test = {
        variants: [...variants.querySelectorAll("[data-variant-id]")].map((input, i) => ({
          id: input.value.trim(),
          subject: variants.querySelectorAll("[data-variant-subject]")[i].value,
        })),
        test_percent: Number(percent.value),
        decide_after_minutes: Number(wait.value),
        metric: metric.value,
      };
    }
    replace(out, h("p", { class: "muted" }, "Scheduling…"));
    const answer = await api.post("/broadcasts", body);
    if (!answer.ok) {
      replace(out, problem(answer));
      return;
    }
    navigate(`#/broadcasts/${encodeURIComponent(answer.body.id)}`);
  };

  return h(
    "section",
    { class: "panel" },
    h("h2", {}, "Schedule a broadcast"),
    templates.ok ? null : problem(templates),
    segments.ok ? null : problem(segments),
    h(
      "form",
      { id: "broadcast-form", onsubmit: submit, novalidate: true },
      h(
        "div",
        { class: "inline-fields" },
        field("b-id", "Id (optional)", id),
        field("b-channel", "Channel", channel),
        field("b-template", "Template", template),
      ),
      h("p", { class: "muted", id: "b-id-help" }, "Without an id one is generated; the same id and definition again is the same broadcast."),
      h(
        "fieldset",
        {},
        h("legend", {}, "Send to the members of"),
        h("div", { class: "checks" }, include.map((s) => s.label)),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Except the members of"),
        h("div", { class: "checks" }, exclude.map((s) => s.label)),
      ),
      h(
        "div",
        { class: "inline-fields" },
        field("b-send", "Send", sendType),
        field("b-rate", "Messages a second (1 to 1000)", rate),
      ),
      atBox,
      localBox,
      testing.label,
      testBox,
      h("div", { class: "actions" }, h("button", { type: "submit", id: "schedule" }, "Schedule")),
    ),
    out,
  );
}

async function one(main, ctx, id) {
  const { api, has } = ctx;
  const back = h("p", {}, h("a", { href: "#/broadcasts" }, "← Broadcasts"));
  const answer = await api.get(`/broadcasts/${encodeURIComponent(id)}`);
  if (!answer.ok) {
    replace(main, back, h("h1", {}, `Broadcast ${id}`), problem(answer));
    return;
  }
  const out = h("div", { id: "broadcast-action", "aria-live": "polite" });
  const b = answer.body;
  const act = async (verb) => {
    const done = await api.post(`/broadcasts/${encodeURIComponent(id)}/${verb}`);
    if (!done.ok) {
      replace(out, problem(done));
      return;
    }
    await ctx.refresh();
    const result = document.getElementById("broadcast-action");
    if (result) replace(result, notice(`${verb[0].toUpperCase()}${verb.slice(1)}: the broadcast is ${done.body.status}.`));
  };
  const open = !["completed", "cancelled"].includes(b.status);
  const p = b.progress || {};
  const s = b.stats || {};
  const d = b.definition || {};
  const audience = d.audience || {};
  const send = d.send || {};
  const sendText = send.type === "at" ? `at ${when(send.at)}` : send.type === "local" ? `on ${send.date} at ${send.time} local time` : "now";
  const known = new Set(["campaign_id", "audience_size", "suppressed_by_reason", "conversion_window_days", "conversions", "revenue_minor", "subject_test"]);
  const figures = Object.entries(s).filter(([k, v]) => !known.has(k) && typeof v === "number");
  replace(
    main,
    back,
    h("h1", {}, `Broadcast ${b.id}`),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Status"),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Status"),
        h("dd", { id: "broadcast-status" }, status(b.status)),
        h("dt", {}, "Template"),
        h("dd", {}, h("a", { href: `#/templates/${encodeURIComponent(d.template || "")}` }, d.template || "–"), ` by ${d.channel || "–"}`),
        h("dt", {}, "Audience"),
        h("dd", {}, (audience.segments || []).join(", ") || "–", audience.exclude && audience.exclude.length ? `, except ${audience.exclude.join(", ")}` : ""),
        h("dt", {}, "Send"),
        h("dd", {}, `${sendText}, at most ${count(d.rate_per_second)} a second`),
        h("dt", {}, "Scheduled"),
        h("dd", {}, when(b.scheduled_at)),
        h("dt", {}, "Starts"),
        h("dd", {}, when(b.starts_at)),
        h("dt", {}, "Started"),
        h("dd", {}, when(b.started_at)),
        h("dt", {}, "Finished"),
        h("dd", {}, when(b.finished_at)),
      ),
      has("crm/admin") && open
        ? h(
            "div",
            { class: "actions" },
            b.status === "paused"
              ? h("button", { type: "button", id: "resume", onclick: () => act("resume") }, "Resume")
              : h("button", { type: "button", id: "pause", class: "secondary", onclick: () => act("pause") }, "Pause"),
            h("button", { type: "button", id: "cancel", class: "danger", onclick: () => act("cancel") }, "Cancel the broadcast"),
          )
        : null,
      h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => ctx.refresh() }, "Refresh")),
      out,
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Progress"),
      typeof p.audience_size === "number" && p.audience_size > 0
        ? h(
            "label",
            { for: "broadcast-progress" },
            `${count(p.requested)} of ${count(p.audience_size)} messages requested`,
            h("progress", { id: "broadcast-progress", max: p.audience_size, value: Math.min(p.requested || 0, p.audience_size) }),
          )
        : h("p", { class: "muted" }, "The audience is snapshotted when the send starts."),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Audience"),
        h("dd", {}, count(p.audience_size)),
        h("dt", {}, "Audience pages"),
        h("dd", {}, count(p.audience_pages)),
        h("dt", {}, "Bucket, page"),
        h("dd", {}, `${count(p.bucket)}, ${count(p.page)}`),
        h("dt", {}, "Next step"),
        h("dd", {}, when(p.next_step_at)),
      ),
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Stats"),
      table(
        `Messages and outcomes (campaign ${s.campaign_id || "–"})`,
        [
          { label: "Figure", value: ([k]) => k.replace(/_/g, " ") },
          { label: "Count", value: ([, v]) => count(v), num: true },
        ],
        figures,
        "No figure yet.",
      ),
      h(
        "p",
        { id: "broadcast-revenue" },
        `Conversions within ${count(s.conversion_window_days)} days: ${count(s.conversions)}; revenue: `,
        revenue(s.revenue_minor),
      ),
      s.suppressed_by_reason && Object.keys(s.suppressed_by_reason).length
        ? table(
            "Suppressed by reason",
            [
              { label: "Reason", value: ([k]) => k },
              { label: "Messages", value: ([, v]) => count(v), num: true },
            ],
            Object.entries(s.suppressed_by_reason),
          )
        : null,
    ),
    s.subject_test ? subjectTest(s.subject_test) : null,
  );
}

/// Revenue in minor units: a number, or an object of amounts by currency.
function revenue(r) {
  if (typeof r === "number") return money(r);
  const entries = r && typeof r === "object" ? Object.entries(r) : [];
  return entries.length ? entries.map(([currency, minor]) => money(minor, currency)).join(", ") : "none";
}

function percent(x) {
  return typeof x === "number" ? `${(x * 100).toFixed(1)} %` : "–";
}

function subjectTest(t) {
  const arms = t.arms || [];
  return h(
    "section",
    { class: "panel", id: "subject-test" },
    h("h2", {}, "Subject-line test"),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Metric"),
      h("dd", {}, t.metric),
      h("dt", {}, "Share in the test"),
      h("dd", {}, `${count(t.test_percent)} %`),
      h("dt", {}, "Winner chosen"),
      h("dd", {}, t.decide_at ? when(t.decide_at) : `${count(t.decide_after_minutes)} minutes after the test's last message`),
      h("dt", {}, "Winner"),
      h("dd", { id: "subject-winner" }, t.winner ? badge(t.winner, "good") : "Not chosen yet"),
    ),
    table(
      `Arms by the ${t.metric} rate, with its 95 % Wilson interval`,
      [
        { label: "Variant", value: (a) => (a.variant === t.winner ? [a.variant, " ", badge("winner", "good")] : a.variant) },
        { label: "Subject", value: (a) => a.subject },
        { label: "Sent", value: (a) => count(a.sent), num: true },
        { label: "Delivered", value: (a) => count(a.delivered), num: true },
        { label: "Opened", value: (a) => count(a.opened), num: true },
        { label: "Clicked", value: (a) => count(a.clicked), num: true },
        { label: `Rate (${t.metric})`, value: (a) => percent(a.rate), num: true },
        {
          label: "95 % interval",
          value: (a) => (a.interval ? `${percent(a.interval.low)} – ${percent(a.interval.high)}` : "–"),
          num: true,
        },
      ],
      arms,
      "No arm yet.",
    ),
  );
}
