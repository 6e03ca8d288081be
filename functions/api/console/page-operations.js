// Operations (decision 0089, dead letters and replays decision 0085): the
// parked dead letters (`GET /dead-letters`, paged by its cursor), one of
// them with its reason and payload (`GET /dead-letters/{id}`) and Redrive
// for crm/admin (`POST /dead-letters/{id}/redrive`), the replays' progress
// (`GET /operations/replays`), health (`GET /health`) and, locally, where
// the mail sink is.

import { badge, count, h, notice, pageButtons, pageSize, problem, query, replace, table, when } from "./ui.js";

export async function render(main, ctx) {
  if (ctx.params[0] === "dead-letters" && ctx.params[1]) return letter(main, ctx, ctx.params[1]);
  return overview(main, ctx);
}

function letterLink(id) {
  return `#/operations/dead-letters/${encodeURIComponent(id)}`;
}

async function overview(main, ctx) {
  const { api, query: params } = ctx;
  const [health, replays, config] = await Promise.all([
    api.get("/health"),
    api.get("/operations/replays"),
    fetch("/console/config.json", { cache: "no-store" })
      .then((r) => r.json())
      .catch(() => ({})),
  ]);
  const letters = h("section", { class: "panel", id: "dead-letters", "aria-labelledby": "dead-letters-title" });
  const redriven = params.get("redriven");
  await letterPage(api, letters, null, pageSize(ctx));
  replace(
    main,
    h("h1", {}, "Operations"),
    redriven ? notice(`Dead letter ${redriven} was redriven: its consumer handled it and it left the queue.`) : null,
    letters,
    h("section", { class: "panel", id: "health" }, h("h2", {}, "Health"), healthView(health)),
    h("section", { class: "panel", id: "replays" }, h("h2", {}, "Replays"), replaysView(replays)),
    config.local_link
      ? h(
          "section",
          { class: "panel", id: "mail-sink" },
          h("h2", {}, "Local mail"),
          h(
            "p",
            {},
            "What this local server sent is in its mail viewer, ",
            h("a", { href: "/_local/mail", target: "_blank", rel: "noopener" }, "/_local/mail"),
            ". It is not part of the console and has its own session: open the ",
            h("code", {}, "mail:"),
            " link `crm-local serve` printed once in this browser (or send a crm/admin bearer token); without it the viewer refuses.",
          ),
        )
      : null,
  );
}

/// One page of dead letters into `section`, with a link to the next page.
async function letterPage(api, section, after, limit) {
  const title = h("h2", { id: "dead-letters-title" }, "Dead letters");
  const answer = await api.get(`/dead-letters${query({ limit, after })}`);
  if (!answer.ok) {
    replace(section, title, problem(answer));
    return;
  }
  const page = answer.body;
  replace(
    section,
    title,
    after ? h("p", { class: "muted" }, "A later page of dead letters.") : null,
    h(
      "p",
      { class: "muted" },
      h("span", { id: "dead-letter-depth" }, count(page.depth)),
      " parked in all. A letter is an event or message a consumer could not handle after its retries; the listing never shows payloads.",
    ),
    table(
      "Parked dead letters, oldest first",
      [
        {
          label: "Letter",
          value: (l) => h("a", { href: letterLink(l.id), class: "dead-letter", "data-id": l.id, "aria-label": `Dead letter ${l.id}` }, `#${l.id}`),
        },
        { label: "Consumer", value: (l) => l.consumer },
        { label: "Event", value: (l) => l.event_type || "–" },
        { label: "Stream", value: (l) => (l.stream_id ? h("code", {}, l.stream_id) : "–") },
        { label: "Reason", value: (l) => l.reason },
        { label: "Parked", value: (l) => when(l.failed_at) },
        { label: "Attempts", value: (l) => count(l.attempts), num: true },
      ],
      page.items || [],
      "No dead letter: every consumer handled everything it was given.",
    ),
    pageButtons(after, page.next_after, (next) => letterPage(api, section, next, limit), "dead-letters-next"),
  );
}

function healthView(answer) {
  if (!answer.ok) return problem(answer);
  const hlt = answer.body;
  return [
    h(
      "p",
      {},
      "Status: ",
      h("span", { id: "health-status" }, badge(hlt.status, hlt.status === "ok" ? "good" : "bad")),
      hlt.status === "ok" ? "" : " (a consumer has dead letters or lags over a minute)",
    ),
    consumers(hlt.consumers || [], "Each consumer's lag and dead letters"),
  ];
}

function consumers(rows, caption) {
  return table(
    caption,
    [
      { label: "Consumer", value: (c) => c.name },
      { label: "Lag (events)", value: (c) => count(c.lag), num: true },
      { label: "Lag (seconds)", value: (c) => count(c.lag_seconds), num: true },
      { label: "Dead letters", value: (c) => count(c.dead_letters), num: true },
    ],
    rows,
    "No consumer reports here.",
  );
}

function replaysView(answer) {
  if (!answer.ok) return problem(answer);
  const kind = { running: "warn", done: "good", failed: "bad" };
  return table(
    "Each projection's last replay (crm-local replay)",
    [
      { label: "Projection", value: (r) => r.name },
      { label: "State", value: (r) => badge(r.state, kind[r.state] || null) },
      { label: "Started", value: (r) => when(r.started_at) },
      { label: "Updated", value: (r) => when(r.updated_at) },
      {
        label: "Events",
        value: (r) => (typeof r.total === "number" ? `${count(r.events)} of ${count(r.total)}` : count(r.events)),
        num: true,
      },
      { label: "Applied", value: (r) => count(r.applied), num: true },
      { label: "Parked", value: (r) => count(r.parked), num: true },
      { label: "Position", value: (r) => r.position || "–" },
      { label: "Error", value: (r) => r.error || "" },
    ],
    answer.body.replays || [],
    "No replay has run.",
  );
}

async function letter(main, { api, has, navigate }, id) {
  const back = h("p", {}, h("a", { href: "#/operations" }, "← Operations"));
  const answer = await api.get(`/dead-letters/${encodeURIComponent(id)}`);
  if (!answer.ok) {
    replace(main, back, h("h1", {}, `Dead letter ${id}`), problem(answer));
    return;
  }
  const l = answer.body;
  const out = h("div", { id: "redrive-result", "aria-live": "polite" });
  const redrive = async (e) => {
    e.target.disabled = true;
    replace(out, h("p", { class: "muted" }, "Redriving…"));
    const done = await api.post(`/dead-letters/${encodeURIComponent(id)}/redrive`);
    e.target.disabled = false;
    if (!done.ok) {
      replace(out, problem(done));
      return;
    }
    navigate(`#/operations?redriven=${encodeURIComponent(done.body.id || id)}`);
  };
  replace(
    main,
    back,
    h("h1", {}, `Dead letter ${l.id}`),
    h(
      "section",
      { class: "panel" },
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Consumer"),
        h("dd", {}, l.consumer),
        h("dt", {}, "Reason"),
        h("dd", { id: "dead-letter-reason" }, l.reason),
        h("dt", {}, "Parked"),
        h("dd", {}, when(l.failed_at)),
        h("dt", {}, "Attempts"),
        h("dd", {}, count(l.attempts)),
        l.event_type ? [h("dt", {}, "Event"), h("dd", {}, l.event_type)] : null,
        l.stream_id ? [h("dt", {}, "Stream"), h("dd", {}, h("code", {}, l.stream_id))] : null,
      ),
      has("crm/admin")
        ? [
            h(
              "p",
              { class: "muted" },
              "Redrive hands the letter to its consumer again; when it is handled the letter leaves the queue, when it fails again it stays parked.",
            ),
            h("div", { class: "actions" }, h("button", { type: "button", id: "redrive", onclick: redrive }, "Redrive")),
          ]
        : null,
      out,
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Payload"),
      h("p", { class: "muted" }, "Personal fields are shown decrypted while the customer's key exists, [erased] after."),
      h("pre", { id: "dead-letter-payload", tabindex: "0", "aria-label": "The parked payload as JSON" }, JSON.stringify(l.payload, null, 2)),
    ),
  );
}
