#!/usr/bin/env python3
"""The console (issue 21, decision 0089) in a real browser: Debian's
headless Chromium at 1280x800, driven through chromedriver by selenium.

    python3 scripts/console_test.py [path/to/crm-local] [--only NAME ...]
                                    [--update-docs] [--console-dir DIR]

Starts `crm-local serve` on a free port over a fresh data directory, opens
the one-time sign-in link of its banner (`console: …/console#sign-in=<code>`),
checks that the sign-in worked (the overview's heading, the navigation, the
token's scopes, the page's Content-Security-Policy), then runs the stories
of scripts/console_stories (STORIES, in order; `story(c)` with the `Console`
below). A story whose module does not exist yet is reported as skipped.
Then the scoped-token check: a token without crm/privacy, pasted into the
sign-in form, sees no Erase button on a customer's page (where the all-scopes
token is offered one) and the API refuses the erasure (403).

`--only NAME` runs only the named stories (repeatable; `scoped-token` names
the last check). `--console-dir DIR` serves the console's files from DIR
(CRM_CONSOLE_DIR: edit and re-run, no rebuild). Screenshots go to a temporary
folder (printed, kept); with `--update-docs` they are also copied to
docs/console/<name>.png.

axe-core (scripts/console_axe, pinned by its package-lock.json, `npm ci` at
start) is injected through WebDriver, whose script execution is not subject
to the page's CSP; `c.axe(name)` fails on serious or critical violations.

Exits non-zero when a story or a check fails. Needs /usr/bin/chromium,
/usr/bin/chromedriver, selenium (scripts/python-env), node and npm.
"""

import argparse
import importlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

from local_harness import (  # noqa: E402
    CHROMEDRIVER,
    CHROMIUM,
    console_link,
    free_port,
    headless_chromium,
    start_serve,
    stop_serve,
    wait_for_port,
)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
AXE_DIR = os.path.join(HERE, "console_axe")
DOCS = os.path.join(REPO, "docs", "console")
NPM = os.environ.get("NPM", "npm")
WIDTH, HEIGHT = 1280, 800
WAIT = 10  # seconds an element may take to appear
SCOPED = "scoped-token"

sys.path.insert(0, HERE)
from console_stories import STORIES  # noqa: E402


def registration(email, first_name, last_name):
    """A registration body for `POST /customers` (as scripts/browser_test.py sends it)."""
    return {
        "email": email,
        "first_name": first_name,
        "last_name": last_name,
        "source": "web",
        "marketing_consent": {"email": True, "sms": False, "push": False},
        "terms_accepted": True,
        "ip": "198.51.100.7",
        "user_agent": "console-test",
    }


class Console:
    """What a story drives: see scripts/console_stories/__init__.py."""

    def __init__(self, driver, base, token, shots, update_docs, axe_source):
        self.driver = driver
        self.base = base
        self.token = token
        self.data = {}
        self.shots = shots
        self.update_docs = update_docs
        self._axe_source = axe_source

    # ------------------------------------------------------------ waiting

    def _wait(self, what, check, seconds=WAIT):
        """Polls `check` (exceptions count as not yet); raises an AssertionError naming `what`."""
        deadline = time.monotonic() + seconds
        last = None
        while True:
            try:
                value = check()
                if value:
                    return value
            except AssertionError:
                raise
            except Exception as e:  # stale element, not yet there, ...
                last = e
            if time.monotonic() > deadline:
                detail = f" (last error: {type(last).__name__}: {str(last).splitlines()[0] if str(last) else ''})" if last else ""
                raise AssertionError(f"timed out after {seconds} s waiting for {what} on {self._where()}{detail}")
            time.sleep(0.1)

    def _where(self):
        try:
            h1 = self.driver.execute_script("const h = document.querySelector('#page h1'); return h ? h.textContent : null;")
            return f"{self.driver.current_url} (h1: {h1!r})"
        except Exception:
            return "the page"

    def eventually(self, what, check, seconds=10):
        """Polls until `check()` is truthy (the projections are eventually consistent); returns it."""
        deadline = time.monotonic() + seconds
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {seconds} s waiting for {what}")
            time.sleep(0.2)

    def _settled(self):
        """No fetch of the page in flight (the wrapper `go` installs counts them)."""
        return self.driver.execute_script("return (window.__consoleTestInflight || 0) === 0;")

    def _count_fetches(self):
        self.driver.execute_script(
            """
            if (!window.__consoleTestFetch) {
              const original = window.fetch.bind(window);
              window.__consoleTestInflight = 0;
              window.__consoleTestFetch = true;
              window.fetch = (...args) => {
                window.__consoleTestInflight += 1;
                return original(...args).finally(() => { window.__consoleTestInflight -= 1; });
              };
            }
            """
        )

    # ------------------------------------------------------------ navigation

    def go(self, route):
        """Navigates to `route` (`#/customers`) and waits for the page's <h1>
        (a new one, not the previous page's, nor "Loading…") and for its
        requests to finish."""
        if not route.startswith("#"):
            route = "#" + route
        on_console = self.driver.execute_script("return location.pathname === '/console';")
        if on_console:
            self._count_fetches()
            self.driver.execute_script(
                """
                window.__consoleTestOld = document.querySelector('#page h1');
                if (location.hash === arguments[0]) window.dispatchEvent(new HashChangeEvent('hashchange'));
                else location.hash = arguments[0];
                """,
                route,
            )
        else:
            self.driver.get(f"{self.base}/console{route}")
            self._count_fetches()
        return self._wait_page(route)

    def _wait_page(self, what):
        def ready():
            return self.driver.execute_script(
                """
                const h = document.querySelector('#page h1');
                if (!h || h === window.__consoleTestOld) return null;
                if ((window.__consoleTestInflight || 0) !== 0) return null;
                return h.textContent;
                """
            )

        h1 = self._wait(f"the page {what} to render its <h1>", ready)
        if h1 == "Something failed":
            raise AssertionError(f"the page {what} failed: {self.text('#page')}")
        return h1

    def find(self, css, seconds=WAIT):
        from selenium.webdriver.common.by import By

        return self._wait(f"an element {css!r}", lambda: self.driver.find_element(By.CSS_SELECTOR, css), seconds)

    def find_all(self, css, seconds=WAIT):
        from selenium.webdriver.common.by import By

        return self._wait(f"elements {css!r}", lambda: self.driver.find_elements(By.CSS_SELECTOR, css), seconds)

    def click(self, css, seconds=WAIT):
        def clicked():
            element = self.find(css, seconds)
            if not (element.is_displayed() and element.is_enabled()):
                return False
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
            element.click()
            return True

        self._wait(f"{css!r} to be clickable", clicked, seconds)

    def type(self, css, text, clear=True):
        element = self.find(css)
        if clear:
            element.clear()
        element.send_keys(text)
        return element

    def select(self, css, visible_text):
        from selenium.webdriver.support.ui import Select

        Select(self.find(css)).select_by_visible_text(visible_text)

    def text(self, css):
        return self.find(css).text

    def wait_text(self, css, text, seconds=WAIT):
        return self._wait(f"{css!r} to contain {text!r}", lambda: (lambda t: t if text in t else None)(self.find(css).text), seconds)

    # ------------------------------------------------------------ API

    def api(self, method, path, body=None, token=None):
        """The JSON API: (status, parsed body, or the text when not JSON, or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("authorization", f"Bearer {token or self.token}")
        request.add_header("accept", "application/json")
        if data is not None:
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    # ------------------------------------------------------------ evidence

    def shot(self, name):
        path = os.path.join(self.shots, f"{name}.png")
        assert self.driver.save_screenshot(path), f"screenshot {name} failed"
        if self.update_docs:
            os.makedirs(DOCS, exist_ok=True)
            shutil.copyfile(path, os.path.join(DOCS, f"{name}.png"))
        print(f"     shot {name}.png")
        return path

    def axe(self, name):
        """axe-core on the current page; fails on serious or critical violations."""
        if not self.driver.execute_script("return typeof window.axe === 'object';"):
            self.driver.execute_script(self._axe_source)
        self.driver.set_script_timeout(60)
        result = self.driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            axe.run(document, { resultTypes: ['violations'] })
              .then((r) => done({ version: axe.version, violations: r.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help, url: v.helpUrl,
                nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })) })) }))
              .catch((e) => done({ error: String(e) }));
            """
        )
        assert "error" not in result, f"axe-core failed on {name}: {result['error']}"
        bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
        for v in result["violations"]:
            print(f"     axe {name}: {v['impact']} {v['id']}: {v['help']} ({len(v['nodes'])} nodes)")
            if v in bad:
                for n in v["nodes"][:8]:
                    print(f"         {n['target']}: {(n['summary'] or '').replace(chr(10), ' / ')}")
        assert not bad, f"axe-core {result['version']} on {name}: {len(bad)} serious or critical violation(s): {', '.join(v['id'] for v in bad)}"
        print(f"     axe {name}: no serious or critical violation (axe-core {result['version']}, {len(result['violations'])} lesser)")

    # ------------------------------------------------------------ helpers for the checks

    def button(self, contains, visible=True):
        """The buttons (the visible ones, unless `visible=False`) whose text contains `contains`."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('button, [role=button], input[type=submit], input[type=button]')]"
            ".filter((b) => (b.textContent || b.value || '').includes(arguments[0]) && (!arguments[1] || b.offsetParent !== null));",
            contains,
            visible,
        )

    def browser_errors(self):
        try:
            return [e["message"] for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]
        except Exception:
            return []


# ---------------------------------------------------------------- setup


def npm_ci():
    """Installs exactly the axe-core that package-lock.json pins; returns axe.min.js."""
    proc = subprocess.run([NPM, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=AXE_DIR,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"npm ci in {AXE_DIR} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    with open(os.path.join(AXE_DIR, "node_modules", "axe-core", "axe.min.js")) as f:
        return f.read()


def sign_in_check(c, link):
    """The one-time link signs in: the overview, the navigation, every scope, the CSP."""
    c.driver.get(link)
    c._count_fetches()
    h1 = c._wait_page("after the sign-in link")
    assert h1 == "Overview", f"the sign-in link landed on {h1!r}, not the overview"
    assert "#sign-in=" not in c.driver.current_url, "the code stays out of the address bar"
    nav = [a.text for a in c.find_all("#nav a")]
    for label in ("Overview", "Customers", "Campaigns", "Templates", "Segments", "Operations"):
        assert label in nav, f"the navigation lacks {label}: {nav}"
    scopes = c.text("#scopes").split()
    for scope in ("crm/read", "crm/write", "crm/privacy"):
        assert scope in scopes, f"the all-scopes token shows {scopes}"
    with urllib.request.urlopen(c.base + "/console", timeout=10) as response:
        csp = response.headers.get("content-security-policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives.get("script-src") == ["'self'"], f"scripts from the console's origin only: {csp}"
    # The policy holds in the page: an inline script added to the DOM does not run. WebDriver's own
    # script execution (this, and axe-core's injection) is the DevTools protocol, outside the CSP.
    ran_inline = c.driver.execute_script(
        """
        window.__inlineRan = false;
        const s = document.createElement('script');
        s.textContent = 'window.__inlineRan = true;';
        document.head.appendChild(s);
        return window.__inlineRan;
        """
    )
    assert ran_inline is False, "an inline script ran: the console's CSP is not in force"
    size = c.driver.execute_script("return [window.innerWidth, window.innerHeight];")
    assert size == [WIDTH, HEIGHT], f"the viewport is {size}, not {WIDTH}x{HEIGHT}"
    print(f"ok   sign-in: the one-time link opened the overview; nav {' '.join(nav)}; scopes {' '.join(scopes)}; CSP {csp.split(';')[0]}; ...")
    # The link works once: a second use lands on the sign-in form.
    c.driver.execute_script("sessionStorage.clear();")
    c.driver.get("about:blank")
    c.driver.get(link)
    c.wait_text("#page h1", "Sign in")
    c.wait_text("#page [role=alert]", "used already")
    c.shot("sign-in")
    c.axe("sign-in")
    # The check can fail: a button without a name (axe's button-name, critical) is caught.
    c.driver.execute_script("const b = document.createElement('button'); b.id = 'axe-control'; document.getElementById('page').append(b);")
    try:
        c.axe("a button without a name (negative control)")
    except AssertionError as e:
        assert "button-name" in str(e), e
    else:
        raise AssertionError("axe-core passed a page with a nameless button")
    finally:
        c.driver.execute_script("document.getElementById('axe-control').remove();")
    print("ok   axe: the negative control (a nameless button) fails the check")
    print("ok   sign-in: a second use of the link is refused (the sign-in form says so)")
    # Back in, with the token (the form).
    paste_token(c, c.token)


def paste_token(c, token):
    label = c.driver.execute_script("const i = document.getElementById('token'); return i && i.labels.length ? i.labels[0].textContent : null;")
    assert label and label.startswith("Bearer token"), f"the token field's label is {label!r}"
    c.type("#token", token)
    c._count_fetches()
    c.driver.execute_script("window.__consoleTestOld = document.querySelector('#page h1');")
    c.click("form button[type=submit]")
    h1 = c._wait_page("after pasting a token")
    assert h1 == "Overview", f"pasting the token landed on {h1!r}"


def sign_out(c):
    buttons = c.button("Sign out")
    assert buttons, "no Sign out button"
    buttons[0].click()
    c.wait_text("#page h1", "Sign in")
    assert c.driver.execute_script("return sessionStorage.length") == 0, "signing out clears the tab's token"


def scoped_token_check(c, crm_local, data_dir):
    """A token without crm/privacy: no Erase button, and the API refuses the erasure."""
    minted = subprocess.run(
        [crm_local, "token", "--scope", "crm/read", "--scope", "crm/write", "--data-dir", data_dir, "--token", c.token],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout.strip().split()[-1]
    customer_id = c.data.get("customer_id")
    if customer_id and (lambda a: a[0] != 200 or a[1].get("status") == "erased")(c.api("GET", f"/customers/{customer_id}")):
        customer_id = None  # erased by a story: another one
    if not customer_id:
        status, customer = c.api("POST", "/customers", registration("scoped@example.com", "Grace", "Hopper"))
        assert status == 201, (status, customer)
        customer_id = customer["id"]
        c.eventually("the customer to be readable", lambda: c.api("GET", f"/customers/{customer_id}")[0] == 200)
    # The control: the all-scopes token is offered the erasure on that page.
    h1 = c.go(f"#/customers/{customer_id}")
    offered = c.eventually("the Erase button for the all-scopes token", lambda: c.button("Erase"))
    print(f"ok   {SCOPED}: the all-scopes token is offered {offered[0].text!r} on {h1!r}")
    c.go("#/overview")
    sign_out(c)
    paste_token(c, minted)
    scopes = c.text("#scopes").split()
    assert "crm/privacy" not in scopes and "crm/read" in scopes, scopes
    h1 = c.go(f"#/customers/{customer_id}")
    assert h1 not in ("Not found", "Sign in"), f"#/customers/{customer_id} shows {h1!r}"
    erase = c.driver.execute_script("return arguments[0].map((b) => b.textContent || b.value);", c.button("Erase", visible=False))
    assert not erase, f"a token without crm/privacy is offered {erase} on {h1!r}"
    status, body = c.api("DELETE", f"/customers/{customer_id}", token=minted)
    assert status == 403, (status, body)
    status, body = c.api("GET", f"/customers/{customer_id}", token=minted)
    assert status == 200, (status, body)
    print(f"ok   {SCOPED}: crm/read+crm/write pasted into the form; no Erase button on {h1!r}; DELETE /customers/{{id}} answers 403")
    sign_out(c)
    paste_token(c, c.token)


# ---------------------------------------------------------------- run


def run(args):
    axe_source = npm_ci()
    print(f"ok   npm ci: axe-core {json.load(open(os.path.join(AXE_DIR, 'node_modules', 'axe-core', 'package.json')))['version']}")
    work = tempfile.mkdtemp(prefix="crm-console.")
    shots = tempfile.mkdtemp(prefix="crm-console-shots.")
    data_dir = os.path.join(work, "data")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    token = secrets.token_hex(16)
    log_path = os.path.join(work, "serve.log")
    serve = start_serve(args.crm_local, port, data_dir, token, log_path, args.console_dir)
    driver = None
    ran, skipped, failed = [], [], []
    try:
        wait_for_port(port, 60, serve)
        link = console_link(log_path, serve)
        driver = headless_chromium(os.path.join(work, "profile"), logs=True)
        # The viewport itself is 1280x800 (the screenshots' size), whatever the window's frame.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        c = Console(driver, base, token, shots, args.update_docs, axe_source)
        print(f"     serve {base} (console from {args.console_dir or 'the binary'}); screenshots in {shots}")
        try:
            sign_in_check(c, link)
            c.browser_errors()  # the refused second use of the link is expected there
        except Exception:
            traceback.print_exc()
            failed.append("sign-in")
            raise
        for name in STORIES:
            if args.only and name not in args.only:
                continue
            if not os.path.exists(os.path.join(HERE, "console_stories", f"{name}.py")):
                skipped.append(name)
                print(f"skip {name}: scripts/console_stories/{name}.py does not exist yet")
                continue
            print(f"---- {name}")
            started = time.monotonic()
            try:
                module = importlib.import_module(f"console_stories.{name}")
                module.story(c)
                ran.append(name)
                print(f"ok   {name} ({time.monotonic() - started:.1f} s)")
            except Exception:
                failed.append(name)
                traceback.print_exc()
                print(f"FAIL {name} on {c._where()}")
                try:
                    path = os.path.join(shots, f"FAILED-{name}.png")
                    driver.save_screenshot(path)
                    print(f"     the page then: {path}")
                except Exception:
                    pass
            for message in c.browser_errors():
                print(f"     browser console: {message[:300]}")
        if not args.only or SCOPED in args.only:
            print(f"---- {SCOPED}")
            try:
                scoped_token_check(c, args.crm_local, data_dir)
                ran.append(SCOPED)
            except Exception:
                failed.append(SCOPED)
                traceback.print_exc()
                print(f"FAIL {SCOPED} on {c._where()}")
    except Exception:
        if not failed:
            failed.append("harness")
            traceback.print_exc()
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        stop_serve(serve)
        if failed:
            with open(log_path) as f:
                sys.stderr.write("---- crm-local serve log (last lines) ----\n" + f.read()[-4000:])
        shutil.rmtree(work, ignore_errors=True)
    print(f"console: ran {', '.join(ran) or 'nothing'}; skipped {', '.join(skipped) or 'none'}; "
          f"failed {', '.join(failed) or 'none'}; screenshots in {shots}"
          + (f" (copied to {os.path.relpath(DOCS, REPO)}/)" if args.update_docs else ""))
    return not failed


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("crm_local", nargs="?", default=os.path.join(target, "debug", "crm-local"))
    parser.add_argument("--only", action="append", nargs="+", default=[], metavar="NAME",
                        help=f"run only these stories ({', '.join(STORIES)}, {SCOPED})")
    parser.add_argument("--update-docs", action="store_true", help="copy the screenshots to docs/console/")
    parser.add_argument("--console-dir", help="serve the console's files from this directory (CRM_CONSOLE_DIR)")
    args = parser.parse_args()
    args.only = [name for group in args.only for name in group]
    unknown = [name for name in args.only if name not in STORIES and name != SCOPED]
    if unknown:
        parser.error(f"unknown stories {unknown}: the stories are {STORIES} and {SCOPED}")
    for path in (args.crm_local, CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            sys.exit(f"console test: {path} is missing or not executable")
    try:
        import selenium  # noqa: F401
    except ImportError:
        sys.exit("console test: selenium is missing (run with the Python of scripts/python-env)")
    if shutil.which(NPM) is None:
        sys.exit(f"console test: {NPM} is not on PATH (Node 20 and npm install axe-core)")
    # SIGTERM (scripts/test's cleanup) unwinds like Ctrl-C: serve and Chromium are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(0 if run(args) else 1)


if __name__ == "__main__":
    main()
