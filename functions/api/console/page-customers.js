// Customers (decision 0089): the search (`GET /customers/search`), the
// customer 360 composed from the API's read routes, the actions the token's
// scopes allow (export, erase, resend the verification) and, at
// `#/messages/<id>`, why a message was sent (`GET /messages/{id}/explain`).

import { badge, count, h, money, notice, pageButtons, problem, query, replace, table, when } from "./ui.js";

export async function render(main, ctx) {
  if (ctx.route === "messages") return explain(main, ctx, ctx.params[0] || "");
  if (ctx.params[0]) return customer(main, ctx, ctx.params[0]);
  return search(main, ctx);
}

const enc = encodeURIComponent;

const ERASED = "[erased]";

function fullName(c) {
  return [c.first_name, c.last_name].filter((v) => v && v !== ERASED).join(" ");
}

/// The address that confirms an erasure: the email, or the id when there is none.
function confirmation(c) {
  return c.email && c.email !== ERASED ? c.email : null;
}

function statusBadge(status) {
  const kind = { active: "good", erased: "bad", deactivated: "warn", "pending-verification": "warn" }[status];
  return badge(status || "–", kind);
}

/// An instant to the second (events of one request share the minute).
function exact(value) {
  if (!value) return "–";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : `${d.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

/// A value as the page shows it: `–` for nothing, JSON for objects.
function shown(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/// A definition list of `[label, value, field]`; `field` names the `<dd>`
/// (`data-field`) so a test can read the value the page shows.
function facts(rows) {
  return h(
    "dl",
    { class: "facts" },
    rows.map(([label, value, field]) => [
      h("dt", {}, label),
      h("dd", { "data-field": field || null }, value instanceof Node ? value : shown(value)),
    ]),
  );
}

function panel(title, id, ...children) {
  return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

// --- #/customers: the search --------------------------------------------

async function search(main, ctx) {
  const input = h("input", {
    id: "customer-q",
    name: "q",
    type: "search",
    required: true,
    maxlength: 320,
    autocomplete: "off",
    value: ctx.query.get("q") || "",
  });
  const results = h("div", { id: "customer-results", "aria-live": "polite" });
  const run = async (q) => {
    replace(results, h("p", { class: "muted" }, "Searching…"));
    const answer = await ctx.api.get(`/customers/search?q=${enc(q)}`);
    if (!answer.ok) {
      replace(results, problem(answer));
      return;
    }
    const items = answer.body.items || [];
    replace(
      results,
      h("h2", {}, "Results"),
      h("p", { class: "muted" }, `${count(items.length)} found by ${answer.body.matched_by}.`),
      table(
        `Customers matching “${q}”`,
        [
          { label: "Name", value: (c) => h("a", { href: `#/customers/${enc(c.id)}` }, fullName(c) || c.email || c.id) },
          { label: "Email", value: (c) => shown(c.email) },
          { label: "Status", value: (c) => statusBadge(c.status) },
          { label: "Registered", value: (c) => when(c.registered_at) },
          { label: "Id", value: (c) => h("code", {}, c.id) },
        ],
        items,
        "Nobody matches. Names match whole first or last names only.",
      ),
    );
  };
  const form = h(
    "form",
    {
      class: "inline",
      role: "search",
      onsubmit: async (e) => {
        e.preventDefault();
        const q = input.value.trim();
        history.replaceState(null, "", `#/customers?q=${enc(q)}`);
        await run(q);
      },
    },
    h("label", { for: "customer-q" }, "Email, name or id", input),
    h("button", { type: "submit", id: "customer-search" }, "Search"),
  );
  replace(
    main,
    h("h1", {}, "Customers"),
    h("p", { class: "muted" }, "Find a customer by email address, customer id, or one whole first or last name."),
    form,
    results,
  );
  if (ctx.query.get("q")) await run(ctx.query.get("q"));
}

// --- #/customers/<id>: the 360 ------------------------------------------

async function customer(main, ctx, id) {
  const base = `/customers/${enc(id)}`;
  // `#/customers/<id>?limit=N`: the timeline's page size (the API's default is 50).
  const limit = Math.min(500, Math.max(1, Number.parseInt(ctx.query.get("limit"), 10) || 50));
  const [profile, consents, segments, journeys, timeline, messages] = await Promise.all([
    ctx.api.get(base),
    ctx.api.get(`${base}/consents`),
    ctx.api.get(`${base}/segments`),
    ctx.api.get(`${base}/journeys`),
    ctx.api.get(`${base}/timeline?limit=${limit}`),
    ctx.api.get(`${base}/messages`),
  ]);
  if (!profile.ok) {
    replace(
      main,
      h("h1", {}, profile.status === 404 ? "Customer not found" : "Customer"),
      problem(profile),
      h("p", {}, h("a", { href: "#/customers" }, "Search customers")),
    );
    return;
  }
  const c = profile.body;
  replace(
    main,
    h("p", { class: "muted" }, h("a", { href: "#/customers" }, "Customers"), " / ", h("code", {}, c.id)),
    h("h1", {}, c.status === "erased" ? "Erased customer" : fullName(c) || confirmation(c) || `Customer ${c.id}`),
    actions(ctx, c),
    h(
      "div",
      { class: "columns" },
      h("div", {}, profilePanel(c), preferencesPanel(c)),
      h("div", {}, segmentsPanel(segments), c.metrics ? metricsPanel(c.metrics) : null),
    ),
    consentsPanel(consents),
    journeysPanel(journeys),
    messagesPanel(ctx, base, messages),
    timelinePanel(ctx, base, timeline, limit),
  );
}

function profilePanel(c) {
  const address = c.address
    ? [c.address.line1, c.address.line2, c.address.postal_code, c.address.city, c.address.region, c.address.country]
        .filter(Boolean)
        .join(", ")
    : null;
  const counts = Object.entries(c.event_counts || {})
    .map(([type, n]) => `${type} ${n}`)
    .join(", ");
  return panel(
    "Profile",
    "profile",
    facts([
      ["Id", h("code", {}, c.id), "id"],
      ["Status", statusBadge(c.status), "status"],
      ["Email", c.email, "email"],
      ["Email verified", c.email_verified, "email_verified"],
      ["Email invalidated", c.email_invalidated, "email_invalidated"],
      ["First name", c.first_name, "first_name"],
      ["Last name", c.last_name, "last_name"],
      ["Phone", c.phone, "phone"],
      ["Address", address, "address"],
      ["Date of birth", c.date_of_birth, "date_of_birth"],
      ["Locale", c.locale, "locale"],
      ["Source", c.source, "source"],
      ["Registered", when(c.registered_at), "registered_at"],
      ["Updated", when(c.updated_at), "updated_at"],
      ["Last activity", when(c.last_activity_at), "last_activity_at"],
      ["Erasure requested", c.erasure_requested, "erasure_requested"],
      ["Push devices", count((c.push_devices || []).length), "push_devices"],
      ["Events", counts || "–", "event_counts"],
      ["Version", c.version, "version"],
    ]),
  );
}

function consentsPanel(answer) {
  if (!answer.ok) return panel("Consents", "consents", problem(answer));
  const current = answer.body.current || [];
  const history = answer.body.history || [];
  const proof = (p) =>
    p
      ? h(
          "span",
          {},
          `${shown(p.method)} by ${shown(p.actor)}`,
          p.ip ? `, IP ${p.ip}` : "",
          p.user_agent ? `, ${p.user_agent}` : "",
          p.gdpr ? `, ${shown(p.gdpr.legal_basis)}${p.gdpr.explicit ? " (explicit)" : ""}` : "",
          p.event_id ? [" · event ", h("code", {}, p.event_id)] : "",
        )
      : "–";
  return panel(
    "Consents",
    "consents",
    h(
      "div",
      { id: "consents-current" },
      table(
        "The consent ledger's current state, with the proof of each grant",
        [
          { label: "Purpose", value: (r) => r.purpose },
          { label: "Channel", value: (r) => r.channel },
          { label: "Status", value: (r) => badge(r.status, r.active ? "good" : "bad") },
          { label: "Granted", value: (r) => when(r.granted_at) },
          { label: "Expires", value: (r) => when(r.expires_at) },
          { label: "Revoked", value: (r) => (r.revoked_at ? `${when(r.revoked_at)} ${shown(r.revocation_reason)}` : "–") },
          { label: "Proof", value: (r) => proof(r.proof) },
        ],
        current,
        "No consent recorded.",
      ),
    ),
    h("h3", {}, "Consent history"),
    table(
      "Every grant and revocation, oldest first",
      [
        { label: "Time", value: (r) => exact(r.at) },
        { label: "Change", value: (r) => r.change },
        { label: "Purpose", value: (r) => r.purpose },
        { label: "Channel", value: (r) => r.channel },
        { label: "Method", value: (r) => shown(r.method) },
        { label: "Actor", value: (r) => shown(r.actor) },
        { label: "IP", value: (r) => shown(r.ip) },
        { label: "User agent", value: (r) => shown(r.user_agent) },
        { label: "Reason", value: (r) => shown(r.reason) },
        { label: "Version", value: (r) => shown(r.version), num: true },
      ],
      history,
      "No consent change recorded.",
    ),
  );
}

function preferencesPanel(c) {
  const p = c.preferences || {};
  const quiet = p.quiet_hours ? `${shown(p.quiet_hours.start)}–${shown(p.quiet_hours.end)}` : null;
  return panel(
    "Preferences",
    "preferences",
    facts([
      ["Email frequency", p.email_frequency, "email_frequency"],
      ["Categories", (p.categories || []).join(", "), "categories"],
      ["Timezone", p.timezone, "timezone"],
      ["Quiet hours", quiet, "quiet_hours"],
      ["SMS for promotions", p.sms_for_promotions, "sms_for_promotions"],
      ["Push categories", (p.push_categories || []).join(", "), "push_categories"],
    ]),
  );
}

function segmentsPanel(answer) {
  if (!answer.ok) return panel("Segments", "segments", problem(answer));
  const rfm = answer.body.rfm;
  return panel(
    "Segments",
    "segments",
    table(
      "The segments the customer is in",
      [
        { label: "Segment", value: (s) => h("a", { href: `#/segments/${enc(s.segment)}` }, s.segment) },
        { label: "Since", value: (s) => when(s.since) },
        { label: "Why", value: (s) => shown(s.reason) },
      ],
      answer.body.items || [],
      "In no segment.",
    ),
    rfm
      ? h(
          "p",
          {},
          `RFM: ${shown(rfm.segment)} (recency ${shown(rfm.recency)}, frequency ${shown(rfm.frequency)}, monetary ${shown(rfm.monetary)})`,
        )
      : h("p", { class: "muted" }, "No RFM score yet."),
  );
}

function metricsPanel(m) {
  const cur = m.currency || "";
  const affinity = Object.entries(m.category_affinity || {})
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
  return panel(
    "Metrics",
    "metrics",
    facts([
      ["Orders", count(m.orders), "orders"],
      ["Delivered orders", count(m.delivered_orders), "delivered_orders"],
      ["Total spent", money(m.total_spent_minor, cur), "total_spent_minor"],
      ["Lifetime value", money(m.lifetime_value_minor, cur), "lifetime_value_minor"],
      ["Average order value", money(m.average_order_value_minor, cur), "average_order_value_minor"],
      ["Refunded", money(m.refunded_minor, cur), "refunded_minor"],
      ["Transactions in 30 days", count(m.transactions_30d), "transactions_30d"],
      ["Value in 30 days", money(m.transaction_value_30d_minor, cur), "transaction_value_30d_minor"],
      ["Orders per month", shown(m.order_frequency_per_month), "order_frequency_per_month"],
      ["First transaction", when(m.first_transaction_at), "first_transaction_at"],
      ["Last transaction", when(m.last_transaction_at), "last_transaction_at"],
      ["Logins in 7 days", count(m.logins_7d), "logins_7d"],
      ["Last login", when(m.last_login_at), "last_login_at"],
      ["Category affinity", affinity || "–", "category_affinity"],
      ["As of", when(m.as_of), "as_of"],
    ]),
  );
}

function journeysPanel(answer) {
  if (!answer.ok) return panel("Journeys", "journeys", problem(answer));
  return panel(
    "Journeys",
    "journeys",
    table(
      "The customer's journey instances",
      [
        { label: "Campaign", value: (j) => `${j.campaign_id}@${j.campaign_version}` },
        { label: "Status", value: (j) => badge(j.status, j.status === "exited" ? null : "good") },
        { label: "Current step", value: (j) => shown(j.current_step) },
        {
          label: "Next timer",
          value: (j) =>
            j.next_timer
              ? `${exact(j.next_timer.due_at)} (${j.next_timer.step_id}${j.next_timer.waiting_for_event ? ", or an event before" : ""})`
              : "–",
        },
        { label: "Started", value: (j) => when(j.started_at) },
        { label: "Updated", value: (j) => when(j.updated_at) },
        { label: "Instance", value: (j) => h("code", {}, j.instance_id) },
      ],
      answer.body.items || [],
      "In no journey.",
    ),
  );
}

/// A message's status (`GET /customers/{id}/messages`): that of its newest event.
function messageStatus(status) {
  if (!status) return "–";
  const kind = /sent|delivered|opened|clicked/.test(status)
    ? "good"
    : /fail|bounc|rejected|suppress|complain/.test(status)
      ? "bad"
      : null;
  return badge(status, kind);
}

/// The messages (`GET /customers/{id}/messages`), newest first, a page at a
/// time by the API's cursor.
function messagesPanel(ctx, base, first) {
  const list = h("div", { id: "messages-list" });
  const show = async (answer, after) => {
    if (!answer.ok) {
      replace(list, problem(answer));
      return;
    }
    const page = answer.body;
    const more = (next) => ctx.api.get(`${base}/messages${query({ after: next })}`).then((a) => show(a, next));
    replace(
      list,
      after ? h("p", { class: "muted" }, "A later page of messages.") : null,
      table(
        "The customer's messages, newest first, each with its latest status",
        [
          { label: "Message", value: (m) => h("a", { href: `#/messages/${enc(m.message_id)}` }, h("code", {}, m.message_id)) },
          { label: "Status", value: (m) => messageStatus(m.status) },
          { label: "Channel", value: (m) => m.channel || "–" },
          { label: "Campaign", value: (m) => m.campaign_id || "–" },
          { label: "Template", value: (m) => (m.template ? `${m.template}${m.template_version ? ` v${m.template_version}` : ""}` : "–") },
          { label: "First event", value: (m) => exact(m.first_at) },
          { label: "Last change", value: (m) => exact(m.status_at) },
        ],
        page.items || [],
        "No message yet.",
      ),
      pageButtons(after, page.next_after, more, "messages-next"),
    );
  };
  show(first, null);
  return panel("Messages", "messages", list);
}

function changes(list) {
  if (!list || !list.length) return "–";
  return h(
    "ul",
    {},
    list.map((c) => h("li", {}, h("code", {}, c.field), ": ", shown(c.old), " → ", shown(c.new))),
  );
}

function timelineRows(items) {
  return items.map((e) =>
    h(
      "tr",
      {},
      h("td", { class: "num" }, shown(e.version)),
      h("td", {}, exact(e.occurred_at)),
      h("td", {}, e.type),
      h("td", {}, shown(e.actor)),
      h("td", {}, changes(e.changes)),
      h("td", {}, [e.ip, e.user_agent].filter(Boolean).join(" · ") || "–"),
    ),
  );
}

function timelinePanel(ctx, base, timeline, limit) {
  if (!timeline.ok) return panel("Timeline", "timeline", problem(timeline));
  const body = h("tbody", {}, timelineRows(timeline.body.items || []));
  const status = h("div", { "aria-live": "polite" });
  let after = timeline.body.next_after;
  const more = h(
    "button",
    {
      type: "button",
      class: "secondary",
      id: "timeline-more",
      onclick: async () => {
        const page = await ctx.api.get(`${base}/timeline?limit=${limit}&after=${after}`);
        if (!page.ok) {
          replace(status, problem(page));
          return;
        }
        for (const row of timelineRows(page.body.items || [])) body.appendChild(row);
        after = page.body.next_after;
        replace(status, h("p", { class: "muted" }, `${count((page.body.items || []).length)} more shown.`));
        if (after === null || after === undefined || !(page.body.items || []).length) more.remove();
      },
    },
    "Show older changes",
  );
  const activity = timeline.body.activity || [];
  return panel(
    "Timeline",
    "timeline",
    h(
      "table",
      { id: "timeline-table" },
      h("caption", { class: "muted" }, "Each change to the customer, oldest first, with old and new values"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Version", "Time", "Event", "Actor", "Changes", "IP · user agent"].map((l) =>
            h("th", { scope: "col", class: l === "Version" ? "num" : null }, l),
          ),
        ),
      ),
      body,
    ),
    after === null || after === undefined ? null : h("p", {}, more),
    status,
    h("h3", {}, "Recent activity"),
    table(
      "The newest events of the customer's other streams (activity, carts, orders, journeys, messages)",
      [
        { label: "Time", value: (a) => exact(a.occurred_at) },
        { label: "Event", value: (a) => a.type },
        {
          label: "Stream",
          value: (a) =>
            a.stream_id.startsWith("message-")
              ? h("a", { href: `#/messages/${enc(a.stream_id.slice(8))}` }, h("code", {}, a.stream_id))
              : h("code", {}, a.stream_id),
        },
        { label: "Version", value: (a) => shown(a.version), num: true },
      ],
      activity,
      "No activity.",
    ),
  );
}

// --- Actions -------------------------------------------------------------

function actions(ctx, c) {
  const privacy = ctx.has("crm/privacy");
  const write = ctx.has("crm/write");
  const erased = c.status === "erased";
  if (!privacy && !write) return null;
  const result = h("div", { id: "action-result", "aria-live": "polite" });
  const buttons = [];
  let blobUrl = null;
  if (privacy) {
    buttons.push(
      h(
        "button",
        {
          type: "button",
          id: "export",
          class: "secondary",
          onclick: async () => {
            replace(result, h("p", { class: "muted" }, "Exporting…"));
            const answer = await ctx.api.get(`/customers/${enc(c.id)}/export`);
            if (!answer.ok) {
              replace(result, problem(answer));
              return;
            }
            if (blobUrl) URL.revokeObjectURL(blobUrl);
            const text = typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body, null, 2);
            blobUrl = URL.createObjectURL(new Blob([text], { type: "application/json" }));
            const name = `customer-${c.id}.json`;
            const link = h("a", { href: blobUrl, download: name, id: "export-link" }, `Download ${name}`);
            const events = answer.body && typeof answer.body === "object" ? answer.body.event_count : null;
            replace(
              result,
              h("div", { class: "notice", role: "status" }, `The export is ready (${count(events)} events): `, link),
            );
            link.click();
          },
        },
        "Export (JSON)",
      ),
    );
  }
  if (write && !erased && !c.erasure_requested && !c.email_verified && confirmation(c)) {
    buttons.push(
      h(
        "button",
        {
          type: "button",
          id: "resend-verification",
          class: "secondary",
          onclick: async () => {
            const answer = await ctx.api.post(`/customers/${enc(c.id)}/email/verification`);
            replace(
              result,
              answer.ok
                ? notice(`The verification email to ${c.email} is being sent again (${answer.status}).`)
                : problem(answer),
            );
          },
        },
        "Resend verification email",
      ),
    );
  }
  let erase = null;
  if (privacy && !erased) {
    const confirm = h("input", { id: "erase-confirm", name: "erase-confirm", type: "text", autocomplete: "off", required: true });
    erase = h(
      "form",
      {
        class: "inline",
        id: "erase-form",
        onsubmit: async (e) => {
          e.preventDefault();
          const expected = confirmation(c) || c.id;
          if (confirm.value.trim() !== expected) {
            replace(
              result,
              problem({ status: 0, body: { title: "Not erased", detail: `Type ${confirmation(c) ? "the customer's email address" : "the customer's id"} exactly to confirm.` } }),
            );
            confirm.focus();
            return;
          }
          const answer = await ctx.api.del(`/customers/${enc(c.id)}`);
          if (!answer.ok) {
            replace(result, problem(answer));
            return;
          }
          // The 360 is a projection: wait (a little) until it says erased.
          replace(result, h("p", { class: "muted" }, "Erasing…"));
          for (let i = 0; i < 20; i += 1) {
            const now = await ctx.api.get(`/customers/${enc(c.id)}`);
            if (!now.ok || now.body.status === "erased") break;
            await new Promise((done) => setTimeout(done, 250));
          }
          await customer(document.getElementById("page"), ctx, c.id);
          const again = document.getElementById("action-result");
          const note = notice(`The customer was erased (${answer.status}, status ${shown(answer.body && answer.body.status)}).`);
          if (again) replace(again, note);
          else document.querySelector("#page h1").after(note);
        },
      },
      h(
        "label",
        { for: "erase-confirm" },
        confirmation(c) ? "To erase, type the customer's email address" : "To erase, type the customer's id",
        confirm,
      ),
      h("button", { type: "submit", class: "danger", id: "erase" }, "Erase this customer"),
    );
  }
  return panel(
    "Actions",
    "actions",
    buttons.length ? h("div", { class: "actions" }, buttons) : null,
    erase,
    erased ? h("p", { class: "muted" }, "This customer is erased: only the export remains.") : null,
    result,
  );
}

// --- #/messages/<id>: the explain chain -----------------------------------

async function explain(main, ctx, messageId) {
  const answer = await ctx.api.get(`/messages/${enc(messageId)}/explain`);
  if (!answer.ok) {
    replace(main, h("h1", {}, `Message ${messageId}`), problem(answer));
    return;
  }
  const x = answer.body;
  const known = new Set(["message_id", "instance_id", "campaign", "customer_id", "chain", "variants", "channel_choice"]);
  const extra = Object.entries(x).filter(([k, v]) => !known.has(k) && v !== null && typeof v !== "object");
  const chain = x.chain || [];
  const choice = x.channel_choice;
  replace(
    main,
    h(
      "p",
      { class: "muted" },
      h("a", { href: "#/customers" }, "Customers"),
      " / ",
      x.customer_id ? h("a", { href: `#/customers/${enc(x.customer_id)}` }, x.customer_id) : "–",
    ),
    h("h1", {}, "Why this message was sent"),
    panel(
      "Message",
      "message",
      facts([
        ["Message", h("code", {}, x.message_id), "message_id"],
        ["Campaign", x.campaign, "campaign"],
        ["Journey instance", x.instance_id ? h("code", {}, x.instance_id) : "–", "instance_id"],
        [
          "Customer",
          x.customer_id ? h("a", { href: `#/customers/${enc(x.customer_id)}` }, x.customer_id) : "–",
          "customer_id",
        ],
        ...(x.variants || []).map((v) => ["Variant", `${v.experiment}: ${v.variant}`, "variant"]),
        ...extra.map(([k, v]) => [k.replace(/_/g, " "), v, k]),
      ]),
    ),
    choice
      ? panel(
          "Channel choice",
          "channel-choice",
          h("p", {}, `Chosen: ${shown(choice.chosen)}; preferred: ${shown(choice.preferred)}.`),
          table(
            "Each channel considered, in order",
            [
              { label: "Channel", value: (r) => r.channel },
              { label: "Taken", value: (r) => (r.taken ? "yes" : "no") },
              { label: "Why", value: (r) => r.reason },
            ],
            choice.considered || [],
          ),
        )
      : null,
    panel(
      "The chain of events",
      "chain-heading",
      h("p", { class: "muted" }, "From the message back to what caused it: the message, its journey, the trigger, the history before."),
      chain.length
        ? h(
            "ol",
            { id: "chain", class: "chain" },
            chain.map((e) =>
              h(
                "li",
                { "data-type": e.type, "data-role": e.role },
                badge(e.role, e.role === "trigger" ? "warn" : e.role === "message" ? "good" : null),
                " ",
                h("strong", {}, e.type),
                e.step_id ? [" at step ", h("strong", {}, e.step_id)] : null,
                e.variant ? ` (variant ${e.variant.experiment}: ${e.variant.variant})` : null,
                h(
                  "div",
                  { class: "muted" },
                  h("code", {}, e.stream_id),
                  ` version ${shown(e.version)} · ${exact(e.occurred_at)} · by ${shown(e.actor)} · event `,
                  h("code", {}, shown(e.event_id)),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "The chain is empty."),
    ),
  );
}
