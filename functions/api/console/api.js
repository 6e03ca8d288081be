// The JSON API with the caller's token (decision 0089). The token lives in
// this tab's sessionStorage only: never a cookie, so a page of another
// origin cannot make the browser send it (no CSRF).

const TOKEN = "crm.console.token";

export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN, value);
}

export function signOut() {
  sessionStorage.removeItem(TOKEN);
}

/// One call: `{status, ok, body, headers}`; `body` is the parsed JSON (a
/// problem+json on errors), or the text when it is not JSON or is YAML.
/// `accept` replaces the JSON `Accept` (e.g. YAML for a campaign).
export async function call(method, path, body, contentType, accept) {
  const headers = { Accept: accept || "application/json, application/problem+json" };
  const current = token();
  if (current) headers.Authorization = `Bearer ${current}`;
  let payload;
  if (body !== undefined) {
    payload = typeof body === "string" ? body : JSON.stringify(body);
    headers["Content-Type"] = contentType || "application/json";
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: "omit", cache: "no-store" });
  } catch (e) {
    return { status: 0, ok: false, body: { title: "The API cannot be reached", detail: String(e) }, headers: new Headers() };
  }
  const text = await response.text();
  let parsed = null;
  if (text && /yaml/i.test(response.headers.get("content-type") || "")) {
    parsed = text;
  } else if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  return { status: response.status, ok: response.ok, body: parsed, headers: response.headers };
}

export const api = {
  get: (path, accept) => call("GET", path, undefined, undefined, accept),
  post: (path, body) => call("POST", path, body === undefined ? {} : body),
  put: (path, body, contentType) => call("PUT", path, body, contentType),
  patch: (path, body) => call("PATCH", path, body),
  del: (path) => call("DELETE", path),
};
