// Templates (decision 0089, templates as data: decision 0077): the list
// (`GET /templates`) and one template: its parts (`GET /templates/{id}`),
// a preview (`POST /templates/{id}/preview`) in a sandboxed iframe at
// desktop or mobile width, and its parts to edit (`PUT /templates/{id}`).
//
// The preview's HTML never goes into the console's document: the iframe
// loads `/console/preview.html`, an empty page served with a policy of its
// own (images from any https: origin, inline styles, no script at all, the
// CSP `sandbox`), and the console fills it with the API's HTML parsed by
// `DOMParser` (which runs nothing). Its `sandbox` allows only its origin, so
// the console's script can fill it and nothing in it can run. An srcdoc
// frame would inherit the console's own policy (`img-src 'self' data:`),
// and a template's remote images would show broken (decision 0089).

import { badge, count, h, notice, problem, replace, table, when } from "./ui.js";

export async function render(main, ctx) {
  if (ctx.params.length) await template(main, ctx, ctx.params[0]);
  else await list(main, ctx);
}

async function list(main, { api }) {
  const answer = await api.get("/templates");
  if (!answer.ok) {
    replace(main, h("h1", {}, "Templates"), problem(answer));
    return;
  }
  const items = answer.body.items || [];
  const rows = table(
    "Every message template at its current version",
    [
      { label: "Template", value: (t) => h("a", { href: `#/templates/${encodeURIComponent(t.id)}` }, t.id) },
      { label: "Channel", value: (t) => t.channel },
      { label: "Version", value: (t) => count(t.version), num: true },
      { label: "Source", value: (t) => badge(t.source, t.source === "custom" ? "warn" : null) },
      { label: "Updated", value: (t) => (t.updated_at ? when(t.updated_at) : "as shipped") },
    ],
    items,
    "No template yet.",
  );
  if (rows.tagName === "TABLE") {
    rows.id = "templates";
    rows.querySelectorAll("tbody tr").forEach((tr, i) => tr.setAttribute("data-id", items[i].id));
  }
  replace(main, h("h1", {}, "Templates"), rows);
}

/// The parts a channel's template has, in the order they are shown.
const PARTS = {
  email: [
    { name: "subject", label: "Subject (Liquid)", rows: 2 },
    { name: "mjml", label: "Body (MJML with Liquid)", rows: 24 },
    { name: "text", label: "Text part (Liquid)", rows: 12 },
  ],
  sms: [{ name: "text", label: "Message (Liquid)", rows: 6 }],
  push: [
    { name: "subject", label: "Title (Liquid)", rows: 2 },
    { name: "text", label: "Body (Liquid)", rows: 6 },
  ],
};

const WIDTHS = { desktop: 700, mobile: 375 };

async function template(main, ctx, id, message) {
  const { api } = ctx;
  const path = `/templates/${encodeURIComponent(id)}`;
  const version = ctx.query.get("version");
  const got = await api.get(`${path}${version ? `?version=${encodeURIComponent(version)}` : ""}`);
  if (!got.ok) {
    replace(
      main,
      h("p", {}, h("a", { href: "#/templates" }, "← Templates")),
      h("h1", {}, got.status === 404 ? "Template not found" : `Template: ${id}`),
      problem(got),
    );
    return;
  }
  const t = got.body;
  const admin = ctx.has("crm/admin");
  const again = (note) => template(main, ctx, id, note);
  const versions = (t.versions || []).slice().sort((a, b) => b - a);
  const picker = h(
    "select",
    {
      id: "template-version",
      name: "version",
      onchange: (e) => {
        const v = Number(e.target.value);
        ctx.navigate(v === t.current_version ? `#/templates/${encodeURIComponent(id)}` : `#/templates/${encodeURIComponent(id)}?version=${v}`);
      },
    },
    versions.map((v) =>
      h("option", { value: v, selected: v === t.version }, `${v}${v === t.current_version ? " (current)" : ""}`),
    ),
  );
  replace(
    main,
    h("p", {}, h("a", { href: "#/templates" }, "← Templates")),
    h("h1", {}, `Template: ${id}`),
    message || null,
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Channel"),
      h("dd", { id: "channel" }, t.channel),
      h("dt", {}, "Version shown"),
      h("dd", { id: "version" }, String(t.version)),
      h("dt", {}, "Current version"),
      h("dd", { id: "current-version" }, String(t.current_version)),
      h("dt", {}, "Source"),
      h("dd", {}, t.source),
      h("dt", {}, "Published"),
      h("dd", {}, t.published_at ? when(t.published_at) : "as shipped"),
    ),
    versions.length > 1 ? h("form", { class: "inline" }, h("label", { for: "template-version" }, "Show version", picker)) : null,
    admin
      ? preview(ctx, path, t)
      : notice("The preview and editing need a token with crm/admin; this one shows the parts only."),
    admin ? editor(ctx, path, t, again) : readOnly(t),
  );
}

// ---------------------------------------------------------------- preview

/// The preview's frame, served with its own policy (console.rs).
const PREVIEW_FRAME = "/console/preview.html";

/// Puts the rendered email into the preview frame once its page loaded: a
/// copy parsed by `DOMParser` (scripts in it never run; the frame's policy
/// and sandbox forbid them too).
function fill(frame, html) {
  const doc = frame.contentDocument;
  if (!doc || !doc.URL.endsWith(PREVIEW_FRAME)) return;
  const parsed = new DOMParser().parseFromString(html, "text/html");
  doc.replaceChild(doc.importNode(parsed.documentElement, true), doc.documentElement);
  frame.dataset.filled = "true";
}

function preview(ctx, path, t) {
  let width = "desktop";
  let last = null; // the last preview answer
  const out = h("div", { id: "preview", "aria-live": "polite" });
  const data = h(
    "textarea",
    { id: "preview-data", name: "data", rows: 4, class: "variables", spellcheck: "false", "aria-describedby": "preview-data-help" },
    "",
  );
  const toggles = Object.keys(WIDTHS).map((w) =>
    h(
      "button",
      {
        type: "button",
        id: `width-${w}`,
        class: "secondary",
        "aria-pressed": w === width ? "true" : "false",
        onclick: () => {
          width = w;
          toggles.forEach((b) => b.setAttribute("aria-pressed", b.id === `width-${w}` ? "true" : "false"));
          show();
        },
      },
      `${w === "desktop" ? "Desktop" : "Mobile"} (${WIDTHS[w]} px)`,
    ),
  );

  function show() {
    if (!last) return;
    if (!last.ok) {
      replace(out, problem(last));
      return;
    }
    const p = last.body;
    replace(
      out,
      h(
        "div",
        { class: p.html ? "template-preview" : null },
        p.html
          ? h(
              "div",
              { class: "preview-frame" },
              h("iframe", {
                id: "preview-frame",
                class: `preview ${width}`,
                title: `The email as rendered, ${width} width (${WIDTHS[width]} px)`,
                sandbox: "allow-same-origin",
                referrerpolicy: "no-referrer",
                width: WIDTHS[width],
                src: PREVIEW_FRAME,
                onload: (e) => fill(e.target, p.html),
              }),
            )
          : null,
        h(
          "div",
          {},
          h(
            "dl",
            { class: "facts" },
            p.subject !== null && p.subject !== undefined
              ? [h("dt", {}, t.channel === "push" ? "Title" : "Subject"), h("dd", { id: "preview-subject" }, p.subject)]
              : null,
            h("dt", {}, "Version"),
            h("dd", {}, String(p.version)),
          ),
          h("h3", {}, t.channel === "email" ? "Text part" : "Text"),
          h("pre", { id: "preview-text", class: "preview-text", tabindex: 0 }, p.text),
        ),
      ),
    );
  }

  async function run() {
    replace(out, h("p", { class: "muted" }, "Rendering…"));
    let body = {};
    const raw = data.value.trim();
    if (raw) {
      try {
        body = { data: JSON.parse(raw) };
      } catch (e) {
        last = { ok: false, status: 0, body: { title: "The variables are not JSON", detail: String(e.message || e), field: "data" } };
        show();
        return;
      }
    }
    last = await ctx.api.post(`${path}/preview${t.version !== t.current_version ? `?version=${t.version}` : ""}`, body);
    show();
  }

  const section = h(
    "section",
    { class: "panel" },
    h("h2", {}, "Preview"),
    h(
      "form",
      {
        onsubmit: (e) => {
          e.preventDefault();
          run();
        },
      },
      h(
        "details",
        { class: "variables" },
        h("summary", {}, "Change the sample variables"),
        h("label", { for: "preview-data" }, "Changes to the sample variables (JSON, optional)"),
        h(
          "p",
          { id: "preview-data-help", class: "muted" },
          'Merged into the template\'s sample: {"customer": {"first_name": "Grace"}}; null removes a variable.',
        ),
        data,
      ),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit", id: "preview-run" }, "Preview"),
        t.channel === "email" ? h("div", { class: "actions width-toggle", role: "group", "aria-label": "Preview width" }, toggles) : null,
      ),
    ),
    out,
  );
  run();
  return section;
}

// ---------------------------------------------------------------- editing

function readOnly(t) {
  return h(
    "section",
    { class: "panel" },
    h("h2", {}, "Parts"),
    (PARTS[t.channel] || []).map((part) => [h("h3", {}, part.label), h("pre", { tabindex: 0 }, t[part.name] || "")]),
    h("h3", {}, "Sample variables"),
    h("pre", { tabindex: 0 }, JSON.stringify(t.sample || {}, null, 2)),
  );
}

function editor(ctx, path, t, again) {
  const parts = [...(PARTS[t.channel] || []), { name: "sample", label: "Sample variables (JSON)", rows: 10 }];
  const fields = new Map();
  const errors = new Map();
  const controls = parts.map((part) => {
    const value = part.name === "sample" ? JSON.stringify(t.sample || {}, null, 2) : t[part.name] || "";
    const area = h("textarea", { id: `part-${part.name}`, name: part.name, rows: part.rows, spellcheck: "false" }, value);
    const error = h("div", { id: `part-${part.name}-error`, class: "field-error" });
    fields.set(part.name, area);
    errors.set(part.name, error);
    return [h("label", { for: `part-${part.name}` }, part.label), area, error];
  });
  const result = h("div", { id: "save-result", "aria-live": "polite" });

  function fieldError(name, text) {
    for (const [n, el] of errors) {
      const area = fields.get(n);
      if (n === name) {
        replace(el, text);
        area.setAttribute("aria-invalid", "true");
        area.setAttribute("aria-describedby", el.id);
      } else {
        replace(el);
        area.removeAttribute("aria-invalid");
        area.removeAttribute("aria-describedby");
      }
    }
  }

  return h(
    "section",
    { class: "panel" },
    h("h2", {}, "Edit"),
    t.version !== t.current_version
      ? h("p", { class: "muted" }, `These are version ${t.version}'s parts; saving publishes them as a new current version.`)
      : null,
    h(
      "form",
      {
        onsubmit: async (e) => {
          e.preventDefault();
          const body = { channel: t.channel };
          for (const part of PARTS[t.channel] || []) body[part.name] = fields.get(part.name).value;
          try {
            body.sample = JSON.parse(fields.get("sample").value || "{}");
          } catch (err) {
            fieldError("sample", `Not JSON: ${err.message || err}`);
            replace(result, problem({ status: 0, body: { title: "The sample variables are not JSON", field: "sample" } }));
            return;
          }
          replace(result, h("p", { class: "muted" }, "Saving…"));
          const answer = await ctx.api.put(path, body);
          if (!answer.ok) {
            const b = answer.body && typeof answer.body === "object" ? answer.body : {};
            const field = b.field || (Array.isArray(b.errors) && b.errors[0] && (b.errors[0].path || b.errors[0].field)) || "";
            const line = Array.isArray(b.errors) && b.errors[0] && b.errors[0].line ? ` (line ${b.errors[0].line})` : "";
            const top = field.split(".")[0];
            fieldError(fields.has(top) ? top : null, fields.has(top) ? `${b.detail || b.title || "Not accepted"}${line}` : "");
            replace(result, problem(answer));
            return;
          }
          fieldError(null, "");
          const note =
            answer.body.changed === false
              ? notice(`Nothing changed: version ${answer.body.current_version} is current.`)
              : notice(`Saved: version ${answer.body.current_version} is current; the channel sends it from now on.`);
          if (ctx.query.get("version")) {
            ctx.navigate(`#/templates/${encodeURIComponent(t.id)}`);
            return;
          }
          await again(note);
        },
      },
      controls,
      h("div", { class: "actions" }, h("button", { type: "submit", id: "save" }, "Save a new version")),
      result,
    ),
  );
}
