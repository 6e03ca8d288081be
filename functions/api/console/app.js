// The console's shell (decision 0089): sign-in, the sections the token's
// scopes allow, and a hash router (`#/customers/<id>`) that hands each
// page its `main` element and a context.

import { api, call, setToken, signOut, token } from "./api.js";
import { h, problem, replace } from "./ui.js";

/// Sections: their route, label, page module and the scope they need.
const SECTIONS = [
  { route: "overview", label: "Overview", module: "./page-overview.js", scope: "crm/read" },
  { route: "customers", label: "Customers", module: "./page-customers.js", scope: "crm/read" },
  { route: "campaigns", label: "Campaigns", module: "./page-campaigns.js", scope: "crm/read" },
  { route: "templates", label: "Templates", module: "./page-templates.js", scope: "crm/read" },
  { route: "segments", label: "Segments", module: "./page-segments.js", scope: "crm/read" },
  { route: "broadcasts", label: "Broadcasts", module: "./page-broadcasts.js", scope: "crm/read" },
  { route: "operations", label: "Operations", module: "./page-operations.js", scope: "crm/read" },
];
/// Routes reached from a section's pages, not shown in the navigation.
const EXTRA = { messages: "./page-customers.js" };

const PKCE = "crm.console.pkce";

let session = null; // { principal, scopes: Set }

/// When the current navigation began (`performance.now()`): 0 for the
/// document's load, moved by a hash change or a page's refresh. `show()`
/// marks `crm:rendered` once a page's render resolves and measures
/// `crm:page` from here (detail: the route); scripts/console_bench.py reads them.
let navStart = 0;

function b64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function redirectUri() {
  return `${location.origin}/console`;
}

/// OIDC authorization code with PKCE (S256) against the deployment's issuer.
async function oidcStart(oidc) {
  const discovery = await fetch(`${oidc.issuer}/.well-known/openid-configuration`).then((r) => r.json());
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  const state = b64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem(PKCE, JSON.stringify({ verifier, state, token_endpoint: discovery.token_endpoint }));
  const url = new URL(discovery.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: oidc.client_id,
    redirect_uri: redirectUri(),
    scope: oidc.scope,
    state,
    code_challenge: b64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

/// The issuer sent us back with `?code=&state=`: the token for the code.
async function oidcFinish(config, params) {
  const pending = JSON.parse(sessionStorage.getItem(PKCE) || "null");
  sessionStorage.removeItem(PKCE);
  history.replaceState(null, "", "/console#/overview");
  if (!pending || pending.state !== params.get("state") || !config.oidc) {
    return "The sign-in did not come back from the sign-in we started; try again.";
  }
  const form = new URLSearchParams({
    grant_type: "authorization_code",
    code: params.get("code"),
    redirect_uri: redirectUri(),
    client_id: config.oidc.client_id,
    code_verifier: pending.verifier,
  });
  const response = await fetch(pending.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: form.toString(),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok || !answer.access_token) return `The issuer refused the code (${response.status}).`;
  setToken(answer.access_token);
  return null;
}

/// The local one-time link (`crm-local serve`'s banner): `#sign-in=<code>`.
async function localFinish(code) {
  history.replaceState(null, "", "/console#/overview");
  const answer = await call("POST", "/console/sign-in", { code });
  if (!answer.ok || !answer.body || !answer.body.token) {
    return "That sign-in link was used already or is not this server's; paste a token, or restart `crm-local serve` for a new link.";
  }
  setToken(answer.body.token);
  return null;
}

function signInView(config, message) {
  const main = document.getElementById("page");
  replace(document.getElementById("nav"));
  replace(document.getElementById("session"));
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true });
  const form = h(
    "form",
    {
      class: "inline",
      onsubmit: async (e) => {
        e.preventDefault();
        setToken(input.value.trim());
        await start();
      },
    },
    h("label", { for: "token" }, "Bearer token", input),
    h("button", { type: "submit" }, "Sign in with the token"),
  );
  replace(
    main,
    h(
      "section",
      { class: "signin panel" },
      h("h1", {}, "Sign in"),
      message ? h("div", { class: "problem", role: "alert" }, message) : null,
      config.oidc
        ? h("p", {}, h("button", { type: "button", id: "oidc", onclick: () => oidcStart(config.oidc) }, "Sign in with your organisation"))
        : null,
      config.local_link
        ? h("p", { class: "muted" }, "Locally, open the console link `crm-local serve` printed, or paste a token (`crm-local token --scope crm/read` mints narrower ones).")
        : null,
      form,
    ),
  );
  document.title = "Sign in · CRM console";
}

function navigation(current) {
  replace(
    document.getElementById("nav"),
    SECTIONS.filter((s) => session.scopes.has(s.scope)).map((s) =>
      h("a", { href: `#/${s.route}`, "aria-current": s.route === current ? "page" : null }, s.label),
    ),
  );
  replace(
    document.getElementById("session"),
    h("span", { id: "scopes", title: "The token's scopes" }, [...session.scopes].sort().join(" ")),
    h(
      "button",
      {
        type: "button",
        onclick: () => {
          signOut();
          session = null; // the hash change below must not render a page
          location.hash = "#/overview";
          start();
        },
      },
      "Sign out",
    ),
  );
}

/// The current route: `["customers", "<id>", ...]`.
function route() {
  const path = location.hash.replace(/^#\/?/, "").split("?")[0];
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return parts.length ? parts : ["overview"];
}

async function show() {
  if (!session) return;
  const [name, ...params] = route();
  const section = SECTIONS.find((s) => s.route === name);
  const module = section ? section.module : EXTRA[name];
  const main = document.getElementById("page");
  navigation(section ? section.route : name === "messages" ? "customers" : null);
  if (!module) {
    replace(main, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/overview" }, "Overview")));
    return;
  }
  replace(main, h("p", { class: "muted" }, "Loading…"));
  const ctx = {
    api,
    scopes: session.scopes,
    has: (scope) => session.scopes.has(scope),
    route: name,
    params,
    query: new URLSearchParams(location.hash.split("?")[1] || ""),
    navigate: (hash) => {
      location.hash = hash;
    },
    refresh: () => {
      navStart = performance.now();
      return show();
    },
  };
  try {
    const page = await import(module);
    await page.render(main, ctx);
    document.title = `${(main.querySelector("h1") || {}).textContent || "Console"} · CRM console`;
    performance.mark("crm:rendered");
    performance.measure("crm:page", { start: navStart, end: "crm:rendered", detail: { route: location.hash } });
    main.focus({ preventScroll: true });
  } catch (e) {
    replace(main, h("h1", {}, "Something failed"), problem({ status: 0, body: { title: "The page failed", detail: String(e) } }));
  }
}

async function start() {
  const config = await fetch("/console/config.json", { cache: "no-store" })
    .then((r) => r.json())
    .catch(() => ({}));
  let message = null;
  const params = new URLSearchParams(location.search);
  if (params.get("code") && params.get("state")) {
    message = await oidcFinish(config, params);
  } else if (location.hash.startsWith("#sign-in=")) {
    message = await localFinish(decodeURIComponent(location.hash.slice("#sign-in=".length)));
  }
  if (!token()) {
    session = null;
    signInView(config, message);
    return;
  }
  const me = await call("GET", "/me");
  if (!me.ok) {
    signOut();
    session = null;
    signInView(config, me.status === 401 ? "That token is not valid here." : `The API answered ${me.status}.`);
    return;
  }
  session = { principal: me.body.principal, scopes: new Set(me.body.scopes || []) };
  await show();
}

window.addEventListener("hashchange", () => {
  navStart = performance.now();
  if (location.hash.startsWith("#sign-in=")) start();
  else show();
});
start();
