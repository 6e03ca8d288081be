"""What the scripts that drive `crm-local serve` from outside share: a free
loopback port, waiting for the server to listen, and Debian's headless
Chromium through chromedriver (never downloaded: the driver path is given,
so Selenium Manager is not used). Used by scripts/browser_test.py,
scripts/segment_clients.py and the console's tests."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def api_call(base, token, method, path, body=None):
    """One call of the JSON API with a bearer token: (status, parsed body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def eventually(what, check, seconds=10):
    """The projections are eventually consistent: poll until `check` holds."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, seconds, proc):
    """Waits until `crm-local serve` (the process `proc`) listens on `port`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"crm-local serve exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"crm-local serve did not listen on {port} within {seconds} s")


def start_serve(crm_local, port, data_dir, token, log_path, console_dir=None, extra=()):
    """Starts `crm-local serve` on 127.0.0.1:`port` in its own process group,
    its output in `log_path`; with `console_dir`, the console's files come
    from there (CRM_CONSOLE_DIR), else from the binary. Returns the process."""
    env = dict(os.environ)
    if console_dir:
        env["CRM_CONSOLE_DIR"] = os.path.abspath(console_dir)
    else:
        env.pop("CRM_CONSOLE_DIR", None)
    log = open(log_path, "w")
    return subprocess.Popen(
        [crm_local, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", data_dir, "--token", token, *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )


def console_link(log_path, serve, seconds=60):
    """The banner's `console:` line: the one-time sign-in link."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(log_path) as f:
            for line in f:
                if line.strip().startswith("console:"):
                    return line.split()[1]
        if serve.poll() is not None:
            raise RuntimeError(f"crm-local serve exited with {serve.returncode}")
        time.sleep(0.1)
    raise RuntimeError("crm-local serve printed no console: line")


def stop_serve(serve):
    """Stops `crm-local serve` (started in its own process group): SIGTERM
    to the group, SIGKILL after 10 s."""
    try:
        os.killpg(serve.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        serve.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(serve.pid, signal.SIGKILL)
        serve.wait()


def headless_chromium(profile, logs=False):
    """A headless Chromium with its own profile directory, quiet (no sync,
    no component updates, no background requests); with `logs`, the
    browser console and the DevTools performance log (network) are kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ]:
        options.add_argument(flag)
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
