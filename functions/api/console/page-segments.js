// Segments (decision 0089): every segment with its kind and size (`GET
// /segments`); one segment's definition and members, paged by the API's
// cursor; for a rule segment (decision 0082) a draft editor whose Preview
// counts what the draft matches now (`POST /segments/{id}/preview`) and
// whose Save publishes it as a new version (`PUT /segments/{id}`).

import { badge, count, h, notice, pageButtons, pageSize, problem, query, replace, table, when } from "./ui.js";

export async function render(main, ctx) {
  if (ctx.params.length) return one(main, ctx, ctx.params[0]);
  return list(main, ctx);
}

async function list(main, { api, has, navigate }) {
  const answer = await api.get("/segments");
  if (!answer.ok) {
    replace(main, h("h1", {}, "Segments"), problem(answer));
    return;
  }
  const items = answer.body.items || [];
  const input = h("input", {
    id: "new-segment-id",
    name: "id",
    required: true,
    pattern: "[a-z0-9]+(-[a-z0-9]+)*",
    autocomplete: "off",
    "aria-describedby": "new-segment-help",
  });
  replace(
    main,
    h("h1", {}, "Segments"),
    h(
      "p",
      { class: "muted" },
      "Computed segments (RFM, value, affinity) and manual ones are kept by the system; segments defined by rules are yours to edit.",
    ),
    table(
      "Segments with their kind and member count",
      [
        { label: "Segment", value: (s) => h("a", { href: `#/segments/${encodeURIComponent(s.id)}`, class: "segment-name" }, s.name) },
        { label: "Id", value: (s) => h("code", {}, s.id) },
        { label: "Kind", value: (s) => badge(s.kind, s.kind === "rules" ? "good" : null) },
        { label: "Rule", value: (s) => s.rule },
        { label: "Version", value: (s) => (s.version ? String(s.version) : "–"), num: true },
        { label: "Members", value: (s) => h("span", { class: "segment-size" }, count(s.members)), num: true },
      ],
      items,
      "No segment yet.",
    ),
    has("crm/admin")
      ? h(
          "section",
          { class: "panel" },
          h("h2", {}, "Define a segment by rules"),
          h(
            "form",
            {
              class: "inline",
              onsubmit: (e) => {
                e.preventDefault();
                navigate(`#/segments/${encodeURIComponent(input.value.trim())}`);
              },
            },
            h("label", { for: "new-segment-id" }, "New segment id", input),
            h("button", { type: "submit" }, "Open the editor"),
          ),
          h("p", { class: "muted", id: "new-segment-help" }, "Lower-case letters and digits, words joined by -; the editor opens with a draft."),
        )
      : null,
  );
}

/// A draft for a segment that is not defined yet.
function blank(id) {
  return { id, name: id, description: "", match: { profile: "locale", op: "equals", value: "de-DE" } };
}

async function one(main, ctx, id) {
  const { api, has } = ctx;
  const answer = await api.get(`/segments/${encodeURIComponent(id)}`);
  const back = h("p", {}, h("a", { href: "#/segments" }, "← All segments"));
  if (!answer.ok && answer.status !== 404) {
    replace(main, back, h("h1", {}, `Segment ${id}`), problem(answer));
    return;
  }
  const segment = answer.ok ? answer.body : null;
  const editable = has("crm/admin") && (!segment || segment.kind === "rules");
  const members = h("section", { class: "panel", id: "members", "aria-labelledby": "members-title" });
  replace(
    main,
    back,
    h("h1", {}, segment ? segment.name : `New segment ${id}`),
    segment
      ? h(
          "section",
          { class: "panel" },
          h("h2", {}, "Definition"),
          h(
            "dl",
            { class: "facts" },
            h("dt", {}, "Id"),
            h("dd", {}, h("code", {}, segment.id)),
            h("dt", {}, "Kind"),
            h("dd", {}, badge(segment.kind, segment.kind === "rules" ? "good" : null)),
            h("dt", {}, "Members now"),
            h("dd", { id: "segment-size" }, count(segment.size)),
            segment.description ? [h("dt", {}, "Description"), h("dd", {}, segment.description)] : null,
            segment.rule ? [h("dt", {}, "Rule"), h("dd", {}, segment.rule)] : null,
            segment.version ? [h("dt", {}, "Version"), h("dd", {}, `${segment.version}, defined ${when(segment.defined_at)}`)] : null,
          ),
          segment.definition ? h("pre", { id: "definition" }, JSON.stringify(segment.definition, null, 2)) : null,
        )
      : h("p", { class: "muted" }, `No segment ${id} is defined yet: write its definition below, preview it and save it.`),
    segment ? members : null,
    editable ? editor(ctx, id, segment ? segment.definition || blank(id) : blank(id)) : null,
  );
  if (segment) await memberPage(api, id, members, null, pageSize(ctx));
}

/// One page of members into `section`, with a link to the next page.
async function memberPage(api, id, section, after, limit) {
  const answer = await api.get(`/segments/${encodeURIComponent(id)}/members${query({ limit, after })}`);
  const title = h("h2", { id: "members-title" }, "Members");
  if (!answer.ok) {
    replace(section, title, problem(answer));
    return;
  }
  const page = answer.body;
  replace(
    section,
    title,
    after ? h("p", { class: "muted" }, "A later page of members.") : null,
    table(
      "Members by customer id",
      [
        { label: "Customer", value: (m) => h("a", { href: `#/customers/${encodeURIComponent(m.customer_id)}` }, m.customer_id) },
        { label: "Member since", value: (m) => when(m.since) },
        { label: "Reason", value: (m) => m.reason },
      ],
      page.items || [],
      "No member.",
    ),
    pageButtons(after, page.next_after, (next) => memberPage(api, id, section, next, limit), "members-next"),
  );
}

/// The draft editor: a JSON definition, Preview and Save.
function editor({ api, refresh }, id, definition) {
  const area = h("textarea", { id: "draft", name: "draft", spellcheck: "false", "aria-describedby": "draft-help" });
  area.value = JSON.stringify(definition, null, 2);
  const out = h("div", { id: "draft-result", "aria-live": "polite" });
  const parsed = () => {
    try {
      return { body: JSON.parse(area.value) };
    } catch (e) {
      replace(out, problem({ status: 400, body: { title: "The draft is not JSON", detail: String(e.message || e) } }));
      return null;
    }
  };
  const preview = async () => {
    const draft = parsed();
    if (!draft) return;
    replace(out, h("p", { class: "muted" }, "Previewing…"));
    const answer = await api.post(`/segments/${encodeURIComponent(id)}/preview${query({ sample: 10 })}`, draft.body);
    if (!answer.ok) {
      replace(out, problem(answer));
      return;
    }
    const p = answer.body;
    replace(
      out,
      h(
        "div",
        { class: "notice", role: "status" },
        "The draft matches ",
        h("strong", { id: "preview-count" }, count(p.count)),
        ` of ${count(p.evaluated)} active customers (as of ${when(p.at)}).`,
      ),
      p.sample && p.sample.length
        ? [
            h("h3", {}, "Sample"),
            h(
              "ul",
              { id: "preview-sample" },
              p.sample.map((c) => h("li", {}, h("a", { href: `#/customers/${encodeURIComponent(c)}` }, c))),
            ),
          ]
        : null,
    );
  };
  const save = async () => {
    const draft = parsed();
    if (!draft) return;
    replace(out, h("p", { class: "muted" }, "Saving…"));
    const answer = await api.put(`/segments/${encodeURIComponent(id)}`, draft.body);
    if (!answer.ok) {
      replace(out, problem(answer));
      return;
    }
    if (!answer.body.changed) {
      replace(out, notice(`Unchanged: version ${answer.body.version} is this definition already.`));
      return;
    }
    await refresh();
    const main = document.getElementById("page");
    const result = main.querySelector("#draft-result");
    if (result) replace(result, notice(`Saved as version ${answer.body.version}.`));
  };
  return h(
    "section",
    { class: "panel", "aria-labelledby": "draft-title" },
    h("h2", { id: "draft-title" }, "Draft"),
    h(
      "p",
      { class: "muted", id: "draft-help" },
      "The definition as JSON: {id, name, description?, match} (schemas/segment.schema.json); its id must be ",
      h("code", {}, id),
      ". Preview counts what it matches now without saving; Save publishes it as a new version.",
    ),
    h("label", { for: "draft" }, "Definition (JSON)", area),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", id: "preview", onclick: preview }, "Preview"),
      h("button", { type: "button", id: "save", class: "secondary", onclick: save }, "Save"),
    ),
    out,
  );
}
