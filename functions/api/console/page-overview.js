// Overview (decision 0089): events per minute over the last hour, messages
// per channel and outcome over 24 hours, the consumers' lag, the
// dead-letter depth and the running journeys (`GET /operations/overview`).

import { bars, count, h, problem, replace, table, when } from "./ui.js";

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
      bars(
        "Events per minute over the last hour",
        perMinute.map((m) => ({ label: when(m.minute).slice(11, 16), value: m.events })),
      ),
    ),
    h(
      "section",
      { class: "panel" },
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
      { class: "panel" },
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
