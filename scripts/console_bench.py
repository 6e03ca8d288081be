#!/usr/bin/env python3
"""The console's page render times at scale (issue 21: "page render time at
10 000 customers, measured by a bench, target under 300 ms locally, never
asserted in a test"). A bench, not a test: it prints figures and asserts
none; it exits non-zero only when something fails to load.

    python3 scripts/console_bench.py [--release-binary target/release/crm-local]
                                     [--customers 10000] [--runs 5]
                                     [--concurrency 16] [--data-dir DIR]
                                     [--console-dir DIR] [--json FILE]

1. Starts `crm-local serve` on a free port over a fresh data directory (or
   `--data-dir DIR`, kept; seeded only when it holds none of the bench's
   customers yet) and seeds it through the API with `--concurrency` keep-alive
   connections: `--customers` registrations (first and last names from small
   pools, so a name search finds its 100; four locales), an order for every
   tenth customer and a product view for every fourth; then a rule segment
   (the de-DE speakers, a quarter of them). It prints how long the requests
   took and how long the bus took to settle (every consumer's lag 0).
2. Signs in with the banner's one-time link in Debian's headless Chromium
   (1280x800) and loads each page `--runs` times cold (a full page load from
   about:blank: the document, the modules from the browser's cache, the
   config, `/me`, the page's API calls) and `--runs` times warm (a hash
   navigation in the loaded console, from an empty route).
3. The time is the console's own measure (functions/api/console/app.js):
   `crm:page`, from the navigation (time origin, or the hash change) to the
   moment the page's `render` resolved, with its API data in the DOM. For
   the template page, whose preview is rendered after `render` resolves,
   the time runs until the preview's iframe is in the DOM. Of a cold load,
   "the shell" is the part until `/me` answered (the document, the modules
   revalidated, `config.json`, `/me`). The API calls are the page's `fetch`
   resource timing entries (not the console's own files); the slowest is
   named with its median time. A page that fails (its "Something failed",
   or an API call answering 4xx or 5xx) stops the bench with exit 1.

Prints a markdown table (median and p95 per page, cold and warm, the API
calls per page and the slowest). Needs /usr/bin/chromium,
/usr/bin/chromedriver and selenium (scripts/python-env).
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

from local_harness import CHROMEDRIVER, CHROMIUM, free_port, headless_chromium, start_serve, stop_serve, wait_for_port

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTH, HEIGHT = 1280, 800
TARGET_MS = 300

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Margaret", "Niklaus",
         "Radia", "Ken", "Dennis", "Leslie", "Tony", "Karen", "Butler", "Shafi", "Silvio", "Judea"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "McCarthy", "Hamilton", "Wirth",
        "Perlman", "Thompson", "Ritchie", "Lamport", "Hoare", "Jones", "Lampson", "Goldwasser", "Micali", "Pearl",
        "Backus", "Naur", "Kay", "Engelbart", "Sutherland", "Cerf", "Kahn", "Berners", "Stroustrup", "Gosling",
        "Ousterhout", "Tarjan", "Hellman", "Diffie", "Rivest", "Shamir", "Adleman", "Milner", "Floyd", "Iverson",
        "Codd", "Gray", "Stonebraker", "Hennessy", "Patterson", "Bengio", "Hinton", "LeCun", "Feigenbaum", "Reddy",
        "Karp", "Cook", "Rabin", "Scott", "Blum", "Yao", "Valiant", "Hartmanis", "Stearns", "Hamming"]
LOCALES = ["en-GB", "de-DE", "fr-FR", "nl-NL"]
SEGMENT = "bench-de-speakers"
SEARCH_NAME = LAST[3]  # a whole last name: the name index's 100 matches
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MESSAGE = re.compile(r"/msg-[0-9a-f]+")


def email_of(run, n):
    return f"bench-{run}-{n}@bench.example"


# ---------------------------------------------------------------- the API


class Api:
    """One keep-alive connection to `serve` (one per seeding thread)."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.conn = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"authorization": f"Bearer {self.token}", "accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode(errors="replace")


def registration(run, n):
    return {
        "email": email_of(run, n),
        "first_name": FIRST[n % len(FIRST)],
        "last_name": LAST[(n // len(FIRST)) % len(LAST)],
        "source": "web",
        "locale": LOCALES[n % len(LOCALES)],
        "marketing_consent": {"email": n % 3 != 2, "sms": False, "push": False},
        "terms_accepted": True,
        "ip": "198.51.100.7",
        "user_agent": "console-bench",
    }


def order(customer_id):
    return {
        "customer_id": customer_id,
        "items": [
            {"product_id": "beans", "name": "Espresso beans", "category": "consumables", "quantity": 2,
             "unit_price_minor": 1250},
            {"product_id": "jug", "name": "Milk jug", "quantity": 1, "unit_price_minor": 500},
        ],
        "subtotal_minor": 3000, "tax_minor": 570, "shipping_minor": 430, "total_minor": 4000, "currency": "EUR",
        "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
    }


def view(n):
    return {"type": "ProductViewed", "product_id": f"sku-{n % 50}", "name": f"Product {n % 50}", "category": "coffee",
            "price_minor": 1200}


def seed(port, token, customers, concurrency):
    """Registers the customers (with their orders and views) over `concurrency`
    connections; returns (the first customer's id, requests, seconds)."""
    run = secrets.token_hex(3)
    local = threading.local()
    counts = {"requests": 0}
    lock = threading.Lock()
    ids = {}

    def api():
        if not hasattr(local, "api"):
            local.api = Api(port, token)
        return local.api

    def one(n):
        a = api()
        status, body = a.call("POST", "/customers", registration(run, n))
        if status != 201:
            raise RuntimeError(f"POST /customers answered {status}: {str(body)[:300]}")
        cid = body["id"]
        made = 1
        if n % 10 == 0:
            status, body = a.call("POST", "/orders", order(cid))
            if status != 201:
                raise RuntimeError(f"POST /orders answered {status}: {str(body)[:300]}")
            made += 1
        if n % 4 == 0:
            status, body = a.call("POST", f"/customers/{cid}/activity", view(n))
            if status not in (200, 201, 202):
                raise RuntimeError(f"POST /customers/{{id}}/activity answered {status}: {str(body)[:300]}")
            made += 1
        with lock:
            counts["requests"] += made
            ids[n] = cid

    started = time.monotonic()
    last = started
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(one, n) for n in range(customers)]
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            future.result()
            if time.monotonic() - last > 10:
                last = time.monotonic()
                print(f"     seeding: {done} of {customers} customers ({done / (last - started):.0f}/s)", flush=True)
    return ids[0], counts["requests"], time.monotonic() - started


def settle(api, seconds=600):
    """Waits until every bus target's lag is 0 (twice in a row); returns the seconds waited."""
    started = time.monotonic()
    calm = 0
    while True:
        status, body = api.call("GET", "/operations/replays")
        if status != 200:
            raise RuntimeError(f"GET /operations/replays answered {status}: {str(body)[:300]}")
        lag = sum(c.get("lag", 0) for c in body.get("consumers", []))
        calm = calm + 1 if lag == 0 else 0
        if calm >= 2:
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            raise RuntimeError(f"the bus did not settle within {seconds} s (lag {lag})")
        time.sleep(0.5)


def eventually(what, check, seconds=120):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.5)


def prepare(api, first_id):
    """The segment, and the ids the pages open: a customer with an order and a
    message, one of its messages, a campaign, a template."""
    status, body = api.call("PUT", f"/segments/{SEGMENT}", {
        "id": SEGMENT,
        "name": "Speakers of de-DE (bench)",
        "description": "scripts/console_bench.py",
        "match": {"profile": "locale", "op": "equals", "value": "de-DE"},
    })
    if status not in (200, 201):
        raise RuntimeError(f"PUT /segments/{SEGMENT} answered {status}: {str(body)[:300]}")

    def sized():
        status, body = api.call("GET", f"/segments/{SEGMENT}")
        return status == 200 and (body.get("size") or 0) > 0 and body["size"]

    started = time.monotonic()
    size = eventually("the segment's members", sized)
    settle(api)
    size = sized()
    print(f"     segment {SEGMENT}: {size} members ({time.monotonic() - started:.1f} s to evaluate)")

    status, timeline = api.call("GET", f"/customers/{first_id}/timeline?limit=50")
    if status != 200:
        raise RuntimeError(f"GET /customers/{{id}}/timeline answered {status}")
    messages = [a["stream_id"][8:] for a in timeline.get("activity", []) if a["stream_id"].startswith("message-")]
    if not messages:
        raise RuntimeError(f"customer {first_id} has no message in its timeline")
    status, campaigns = api.call("GET", "/campaigns")
    if status != 200 or not campaigns.get("items"):
        raise RuntimeError(f"GET /campaigns answered {status}: {str(campaigns)[:300]}")
    status, templates = api.call("GET", "/templates")
    if status != 200 or not templates.get("items"):
        raise RuntimeError(f"GET /templates answered {status}: {str(templates)[:300]}")
    template = next((t["id"] for t in templates["items"] if t["id"] == "welcome"), templates["items"][0]["id"])
    campaign = next((c["id"] for c in campaigns["items"] if c["id"] == "abandoned-cart"), campaigns["items"][0]["id"])
    q = urllib.parse.quote
    return [
        ("overview", "#/overview", None),
        (f"customers search ({SEARCH_NAME})", f"#/customers?q={q(SEARCH_NAME)}", None),
        ("customer 360", f"#/customers/{first_id}", None),
        ("message explain", f"#/messages/{q(messages[-1])}", None),
        ("campaigns", "#/campaigns", None),
        (f"campaign {campaign}", f"#/campaigns/{q(campaign)}", None),
        ("templates", "#/templates", None),
        (f"template {template} (preview)", f"#/templates/{q(template)}", "#preview-frame, #preview .problem"),
        ("segments", "#/segments", None),
        (f"segment ({size} members)", f"#/segments/{SEGMENT}", None),
        ("operations", "#/operations", None),
    ]


# ---------------------------------------------------------------- the browser

# Resolves with the newest `crm:page` measure that began at or after
# `since` (and, with a `ready` selector, once it is in the DOM), with the
# page's fetch entries since the navigation; or with the failure.
COLLECT = """
const [since, ready, done] = arguments;
const t0 = performance.now();
function failed() {
  const h = document.querySelector('#page h1');
  return h && (h.textContent === 'Something failed' || h.textContent === 'Sign in') ? h.textContent : null;
}
function poll() {
  const bad = failed();
  if (bad) return done({ error: bad + ': ' + document.getElementById('page').textContent.slice(0, 300) });
  const m = performance.getEntriesByName('crm:page').filter((e) => e.startTime >= since).pop();
  const readyAt = ready ? (document.querySelector(ready) ? performance.now() : null) : 0;
  if (m && readyAt !== null) {
    const end = Math.max(m.startTime + m.duration, readyAt || 0);
    const calls = performance.getEntriesByType('resource')
      .filter((r) => r.initiatorType === 'fetch' && r.startTime >= m.startTime && r.startTime <= end)
      .map((r) => ({ path: new URL(r.name).pathname + new URL(r.name).search, ms: r.responseEnd - r.startTime, end: r.responseEnd, status: r.responseStatus }))
      .filter((r) => !r.path.startsWith('/console'));
    const me = calls.find((c) => c.path === '/me');
    return done({ ms: end - m.startTime, rendered_ms: m.duration, calls, route: (m.detail || {}).route,
                  shell_ms: me ? me.end - m.startTime : null });
  }
  if (performance.now() - t0 > 30000) return done({ error: 'no crm:page measure within 30 s' });
  setTimeout(poll, 5);
}
poll();
"""

WARM = """
const [route] = arguments;
performance.clearMarks(); performance.clearMeasures(); performance.clearResourceTimings();
location.hash = route;
return performance.now();
"""


def sign_in(driver, base, link, token):
    """The banner's link, or (an older binary) the token pasted into the form."""
    if link:
        driver.get(link)
    else:
        from selenium.webdriver.common.by import By

        driver.get(f"{base}/console#/overview")
        deadline = time.monotonic() + 30
        while not driver.find_elements(By.ID, "token"):
            if time.monotonic() > deadline:
                raise RuntimeError("no sign-in form")
            time.sleep(0.1)
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        h1 = driver.execute_script("const h = document.querySelector('#page h1'); return h ? h.textContent : null;")
        if h1 == "Overview" and driver.execute_script("return performance.getEntriesByName('crm:page').length > 0"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the sign-in link did not land on the overview (h1 {h1!r}; is app.js's crm:page mark served?)")


def failed(route, how, got):
    """Raises when the page failed, or one of its API calls answered an error."""
    if "error" in got:
        raise RuntimeError(f"{route} ({how}): {got['error']}")
    bad = [f"{c['path']} {c['status']}" for c in got["calls"] if (c.get("status") or 200) >= 400]
    if bad:
        raise RuntimeError(f"{route} ({how}): the API answered {', '.join(bad)}")


def measure(driver, base, route, ready, runs):
    """(cold runs, warm runs): each {ms, calls: [{path, ms}]}."""
    driver.set_script_timeout(60)
    cold, warm = [], []
    for _ in range(runs):
        driver.get("about:blank")
        driver.get(f"{base}/console{route}")
        got = driver.execute_async_script(COLLECT, 0, ready)
        failed(route, "cold", got)
        cold.append(got)
    driver.execute_script("performance.setResourceTimingBufferSize(5000);")
    for _ in range(runs):
        # From an empty route (the shell's "Not found": no API call, no measure).
        driver.execute_script("location.hash = '#/bench-idle';")
        since = driver.execute_script(WARM, route)
        got = driver.execute_async_script(COLLECT, since, ready)
        failed(route, "warm", got)
        warm.append(got)
    return cold, warm


def percentile(values, p):
    """Nearest rank."""
    ordered = sorted(values)
    rank = max(1, -(-p * len(ordered) // 100))
    return ordered[int(rank) - 1]


def median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def shape(path):
    return MESSAGE.sub("/{message_id}", UUID.sub("{id}", path.split("?")[0]))


def summary(name, route, cold, warm):
    calls = [c for run in warm for c in run["calls"]]
    per = {}
    for c in calls:
        per.setdefault(shape(c["path"]), []).append(c["ms"])
    slowest = max(per.items(), key=lambda kv: median(kv[1]), default=(None, [0]))
    cold_calls = median([len(r["calls"]) for r in cold])
    return {
        "page": name,
        "route": route,
        "cold_median_ms": median([r["ms"] for r in cold]),
        "cold_p95_ms": percentile([r["ms"] for r in cold], 95),
        "cold_shell_median_ms": median([r["shell_ms"] for r in cold if r["shell_ms"] is not None] or [0]),
        "warm_median_ms": median([r["ms"] for r in warm]),
        "warm_p95_ms": percentile([r["ms"] for r in warm], 95),
        "api_calls_cold": cold_calls,
        "api_calls_warm": median([len(r["calls"]) for r in warm]),
        "calls_warm": [MESSAGE.sub("/{message_id}", UUID.sub("{id}", c["path"])) for c in warm[0]["calls"]],
        "slowest_call": slowest[0],
        "slowest_call_median_ms": median(slowest[1]),
    }


def table(rows):
    lines = [
        "| page | cold median ms | of which the shell | cold p95 ms | warm median ms | warm p95 ms | API calls (cold / warm) | slowest call (warm median ms) | under 300 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        met = "yes" if max(r["cold_p95_ms"], r["warm_p95_ms"]) < TARGET_MS else (
            "warm only" if r["warm_p95_ms"] < TARGET_MS else "no")
        lines.append(
            f"| {r['page']} | {r['cold_median_ms']:.0f} | {r['cold_shell_median_ms']:.0f} | {r['cold_p95_ms']:.0f} | {r['warm_median_ms']:.0f} | "
            f"{r['warm_p95_ms']:.0f} | {r['api_calls_cold']:g} / {r['api_calls_warm']:g} | "
            f"`{r['slowest_call']}` {r['slowest_call_median_ms']:.1f} | {met} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- run


def console_link(log_path, serve, seconds=60):
    """The banner's one-time sign-in link (`console: …`); None from a binary
    whose banner has none (its `data:` line printed a second ago)."""
    deadline = time.monotonic() + seconds
    banner = None
    while time.monotonic() < deadline:
        with open(log_path) as f:
            for line in f:
                if line.strip().startswith("console:"):
                    return line.split()[1]
                if line.strip().startswith("data:") and banner is None:
                    banner = time.monotonic()
        if serve.poll() is not None:
            raise RuntimeError(f"crm-local serve exited with {serve.returncode}")
        if banner is not None and time.monotonic() - banner > 1:
            return None
        time.sleep(0.1)
    raise RuntimeError("crm-local serve printed no banner")


def run(args):
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="crm-console-bench.")
    data_dir = os.path.abspath(args.data_dir) if args.data_dir else os.path.join(work, "data")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    token = secrets.token_hex(16)
    log_path = os.path.join(work, "serve.log")
    serve = start_serve(args.release_binary, port, data_dir, token, log_path, args.console_dir)
    driver = None
    ok = False
    try:
        wait_for_port(port, 60, serve)
        link = console_link(log_path, serve)
        api = Api(port, token)
        print(f"     serve {base} over {data_dir} ({args.release_binary}; console from {args.console_dir or 'the binary'})")
        status, found = api.call("GET", f"/customers/search?q={SEARCH_NAME}")
        if status == 200 and found["items"] and args.data_dir:
            first_id = sorted(found["items"], key=lambda c: c["registered_at"])[0]["id"]
            print(f"     {args.data_dir} is seeded already: no seeding")
        else:
            first_id, requests, seconds = seed(port, token, args.customers, args.concurrency)
            print(f"ok   seeded {args.customers} customers: {requests} requests in {seconds:.1f} s "
                  f"({requests / seconds:.0f} requests/s, {args.concurrency} connections)", flush=True)
            waited = settle(api)
            status, body = api.call("GET", "/operations/overview")
            events = sum(m["events"] for m in body["events_per_minute"]) if status == 200 else "?"
            print(f"ok   the bus settled {waited:.1f} s after the last request; {events} events stored "
                  f"in the last hour (the overview's chart)", flush=True)
        pages = prepare(api, first_id)

        driver = headless_chromium(os.path.join(work, "profile"))
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        sign_in(driver, base, link, token)
        print(f"ok   signed in; {args.runs} cold and {args.runs} warm loads per page", flush=True)
        rows = []
        for name, route, ready in pages:
            cold, warm = measure(driver, base, route, ready, args.runs)
            row = summary(name, route, cold, warm)
            rows.append(row)
            print(f"     {name}: cold {row['cold_median_ms']:.0f} ms, warm {row['warm_median_ms']:.0f} ms "
                  f"(median), {row['api_calls_warm']:g} API calls, slowest {row['slowest_call']} "
                  f"{row['slowest_call_median_ms']:.1f} ms", flush=True)
        print()
        print(f"{args.customers} customers, {args.runs} runs per page, "
              f"{time.strftime('%Y-%m-%d', time.gmtime())}; times from the navigation to the rendered page:")
        print()
        print(table(rows))
        print()
        slow = [r["page"] for r in rows if max(r["cold_p95_ms"], r["warm_p95_ms"]) >= TARGET_MS]
        print(f"target {TARGET_MS} ms (p95, cold and warm): {'met by every page' if not slow else 'not met by ' + ', '.join(slow)}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"customers": args.customers, "runs": args.runs, "pages": rows}, f, indent=2)
        ok = True
    except Exception:
        traceback.print_exc()
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        stop_serve(serve)
        if not ok:
            with open(log_path) as f:
                sys.stderr.write("---- crm-local serve log (last lines) ----\n" + f.read()[-4000:])
        shutil.rmtree(work, ignore_errors=True)
    print(f"console bench: {'done' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return ok


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release-binary", default=os.path.join(target, "release", "crm-local"))
    parser.add_argument("--customers", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16, help="connections seeding the customers")
    parser.add_argument("--data-dir", help="serve over this directory (kept; seeded only the first time)")
    parser.add_argument("--console-dir", help="serve the console's files from this directory (CRM_CONSOLE_DIR)")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    args = parser.parse_args()
    if args.customers < 1 or args.runs < 1 or args.concurrency < 1:
        parser.error("--customers, --runs and --concurrency are at least 1")
    for path in (args.release_binary, CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            sys.exit(f"console bench: {path} is missing or not executable")
    try:
        import selenium  # noqa: F401
    except ImportError:
        sys.exit("console bench: selenium is missing (run with the Python of scripts/python-env)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(0 if run(args) else 1)


if __name__ == "__main__":
    main()
