// Overview (decision 0089): events per minute over the last hour, messages
// per channel and outcome over 24 hours, the consumers' lag, the
// dead-letter depth and the running journeys (`GET /operations/overview`).

import { count, h, problem, replace, table, when } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  el.append(...children);
  return el;
}

/// Events per minute as bars. The SVG holds only the bars and grid lines and
/// fills the panel's width (`preserveAspectRatio="none"`: a bar may stretch,
/// a 1-pixel line stays 1 pixel); the axis labels are HTML around it, so no
/// text is distorted at any width. Positions are set through the CSSOM
/// (`el.style`), which the CSP's `style-src 'self'` allows.
function timeline(title, points) {
  if (!points.length) return h("p", { class: "muted" }, "No count yet.");
  const n = points.length;
  const max = Math.max(1, ...points.map((p) => p.value));
  const top = max <= 4 ? max : Math.ceil(max / 4) * 4;
  const peak = points.reduce((best, p) => (p.value > best.value ? p : best), points[0]);
  const plot = svg(
    "svg",
    { viewBox: `0 0 ${n} ${top}`, preserveAspectRatio: "none", role: "img", "aria-label": title },
    svg("title", {}, title),
    [0.5, 1].map((f) =>
      svg("line", { x1: 0, x2: n, y1: top * (1 - f), y2: top * (1 - f), "vector-effect": "non-scaling-stroke" }),
    ),
    ...points.map((p, i) =>
      svg("rect", { x: i + 0.12, width: 0.76, y: top - p.value, height: p.value }, svg("title", {}, `${p.label} UTC: ${count(p.value)} events`)),
    ),
  );
  const ticks = [...new Set([0, Math.floor(n / 4), Math.floor(n / 2), Math.floor((3 * n) / 4), n - 1])];
  const x = h(
    "div",
    { class: "x", "aria-hidden": "true" },
    ticks.map((i) => {
      const label = h("span", { class: i === 0 ? "first" : i === n - 1 ? "last" : null }, points[i].label);
      label.style.left = `${((i + 0.5) / n) * 100}%`;
      return label;
    }),
  );
  return h(
    "figure",
    { class: "timeline", id: "events-chart" },
    h("div", { class: "y", "aria-hidden": "true" }, h("span", {}, count(top)), h("span", {}, count(top / 2)), h("span", {}, "0")),
    plot,
    x,
    h(
      "figcaption",
      { class: "muted" },
      peak.value
        ? `Minutes in UTC; the busiest, ${peak.label}, had ${count(peak.value)} events.`
        : "Minutes in UTC; no event in the last hour.",
    ),
  );
}

export async function render(main, { api }) {
  const answer = await api.get("/operations/overview");
  if (!answer.ok) {
    replace(main, h("h1", {}, "Overview"), problem(answer));
    return;
  }
  const o = answer.body;
  const perMinute = o.events_per_minute || [];
  const lastHour = perMinute.reduce((sum, m) => sum + m.events, 0);
  const messages = o.messages_24h || [];
  const sent = messages.filter((m) => m.outcome === "sent").reduce((sum, m) => sum + m.count, 0);
  const consumers = o.consumers || [];
  const lag = consumers.reduce((max, c) => Math.max(max, c.lag || 0), 0);
  const card = (id, label, value) =>
    h("div", { class: "card", id }, h("div", { class: "figure" }, count(value)), h("div", { class: "label" }, label));
  replace(
    main,
    h("h1", {}, "Overview"),
    h("p", { class: "muted" }, `As of ${when(o.at)}.`),
    h(
      "div",
      { class: "cards" },
      card("events-last-hour", "Events in the last hour", lastHour),
      card("sent-24h", "Messages sent in 24 h", sent),
      card("running-journeys", "Running journeys", o.running_journeys),
      card("dead-letters", "Dead letters", o.dead_letters),
      card("max-lag", "Largest consumer lag (events)", lag),
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Events per minute"),
      timeline(
        "Events per minute over the last hour",
        perMinute.map((m) => ({ label: when(m.minute).slice(11, 16), value: m.events })),
      ),
    ),
    h(
      "section",
      { class: "panel", id: "messages" },
      h("h2", {}, "Messages in the last 24 hours"),
      table(
        "Messages by channel and outcome",
        [
          { label: "Channel", value: (m) => m.channel },
          { label: "Outcome", value: (m) => m.outcome },
          { label: "Messages", value: (m) => count(m.count), num: true },
        ],
        messages,
        "No message in the last 24 hours.",
      ),
    ),
    h(
      "section",
      { class: "panel", id: "consumers" },
      h("h2", {}, "Consumers"),
      table(
        "Each consumer's position",
        [
          { label: "Consumer", value: (c) => c.name },
          { label: "Lag (events)", value: (c) => count(c.lag), num: true },
          { label: "Lag (seconds)", value: (c) => count(c.lag_seconds), num: true },
          { label: "Dead letters", value: (c) => count(c.dead_letters), num: true },
        ],
        consumers,
        "No consumer reports here.",
      ),
    ),
  );
}
