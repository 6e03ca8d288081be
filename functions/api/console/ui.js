// Small DOM helpers (decision 0089): every value goes in as text, never as
// HTML, so nothing a customer typed can become markup.

/// An element: `h("a", {href: "#/x", class: "y"}, "text", child, ...)`.
/// Attributes starting with `on` are listeners; `null`/`false` are skipped.
export function h(tag, attrs, ...children) {
  const svg = ["svg", "rect", "text", "g", "line", "path", "title", "circle", "polyline"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/// Replaces the children of `el`.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/// A table: `columns` are `{label, value: row => text|Node, num?: bool}`.
export function table(caption, columns, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    h("caption", { class: "muted" }, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
    h(
      "tbody",
      {},
      rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.value(row))))),
    ),
  );
}

/// A problem+json answer as the page shows it: its title, detail, and
/// each field error by path (`steps[2].wait`).
export function problem(answer) {
  const body = answer && typeof answer.body === "object" && answer.body ? answer.body : {};
  const errors = Array.isArray(body.errors) ? body.errors : [];
  return h(
    "div",
    { class: "problem", role: "alert" },
    h("strong", {}, body.title || `The API answered ${answer ? answer.status : "nothing"}`),
    body.detail ? h("div", {}, body.detail) : null,
    body.field && !errors.length ? h("div", {}, "Field: ", h("code", {}, body.field)) : null,
    errors.length
      ? h("ul", {}, errors.map((e) => h("li", {}, h("code", {}, e.path || e.field || ""), " ", e.message || "")))
      : null,
  );
}

export function notice(text) {
  return h("div", { class: "notice", role: "status" }, text);
}

export function badge(text, kind) {
  return h("span", { class: kind ? `badge ${kind}` : "badge" }, text);
}

/// A count with thousands separators.
export function count(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : n === null || n === undefined ? "–" : String(n);
}

/// An instant as `2026-12-07 13:05 UTC`.
export function when(value) {
  if (!value) return "–";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/// Money in minor units.
export function money(minor, currency = "") {
  if (typeof minor !== "number") return "–";
  return `${(minor / 100).toFixed(2)}${currency ? ` ${currency}` : ""}`;
}

/// `?a=1&b=2` of an object, skipping empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/// The page size a listing asks for: `?limit=` of the route (1 to 500), else 50.
export function pageSize(ctx) {
  const n = Number(ctx.query.get("limit"));
  return Number.isInteger(n) && n >= 1 && n <= 500 ? n : 50;
}

/// The buttons under one page of a listing: "First page" when this is a later
/// page, "Next page" (with `nextId`) when there is one; `go(after)` shows the
/// page after `after` (`null`: the first).
export function pageButtons(after, nextAfter, go, nextId) {
  return h(
    "div",
    { class: "actions" },
    after ? h("button", { type: "button", class: "secondary", onclick: () => go(null) }, "First page") : null,
    nextAfter ? h("button", { type: "button", id: nextId, onclick: () => go(nextAfter) }, "Next page") : null,
  );
}
