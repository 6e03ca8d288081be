#!/usr/bin/env python3
"""The preference centre in a real browser: Debian's headless Chromium,
driven through chromedriver by selenium.

    python3 scripts/browser_test.py [path/to/crm-local]

Starts `crm-local serve` on a free port over a fresh data directory,
registers a customer with marketing email consent through the API, asks
`crm-local unsubscribe-link` for the customer's signed link (same data
directory, so the same secret), opens it, unticks marketing email, picks
email frequency "never" by its label, submits, sees "Saved", then checks
through the API that the consent ledger recorded the revocation (method
preference-centre) and that the preferences changed.

Needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium
chromium-driver; scripts/test installs them) and selenium (scripts/python-env).
Nothing is downloaded: the driver path is given, so Selenium Manager is not used.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from local_harness import (
    CHROMEDRIVER,
    CHROMIUM,
    api_call,
    eventually,
    free_port,
    headless_chromium,
    stop_serve,
    wait_for_port,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

TOKEN = "browser-test-token"


def api(base, method, path, body=None):
    return api_call(base, TOKEN, method, path, body)


def run(crm_local):
    work = tempfile.mkdtemp(prefix="crm-browser.")
    data_dir = os.path.join(work, "data")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(work, "serve.log"), "w")
    serve = subprocess.Popen(
        [crm_local, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", data_dir, "--token", TOKEN],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    driver = None
    try:
        wait_for_port(port, 60, serve)
        status, customer = api(base, "POST", "/customers", {
            "email": "browser@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "source": "web",
            "marketing_consent": {"email": True, "sms": False, "push": False},
            "terms_accepted": True,
            "ip": "198.51.100.7",
            "user_agent": "browser-test",
        })
        assert status == 201, (status, customer)
        customer_id = customer["id"]
        link = subprocess.run(
            [crm_local, "unsubscribe-link", customer_id, "--data-dir", data_dir, "--base-url", base],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.strip()
        assert link.startswith(f"{base}/u/"), link
        print(f"ok   link: {link[:60]}...")

        driver = headless_chromium(os.path.join(work, "profile"))
        driver.get(link)
        assert driver.title == "Your communication preferences", driver.title
        page = driver.find_element(By.TAG_NAME, "body").text
        assert "Ada" in page and "Lovelace" not in page and "browser@example.com" not in page, page
        # Every visible control has a label; the page needs no script.
        unlabelled = driver.execute_script(
            "return [...document.querySelectorAll('input:not([type=hidden])')]"
            ".filter(i => i.labels.length === 0).map(i => i.name);"
        )
        assert unlabelled == [], unlabelled
        assert driver.execute_script("return document.scripts.length") == 0
        email = driver.find_element(By.ID, "marketing_email")
        assert email.is_selected(), "marketing email consent is shown as given"
        assert driver.find_element(By.ID, "email_frequency_weekly").is_selected()
        print("ok   page: consents and frequency shown, every control labelled, no script")

        email.click()
        assert not email.is_selected()
        driver.find_element(By.CSS_SELECTOR, "label[for=email_frequency_never]").click()
        assert driver.find_element(By.ID, "email_frequency_never").is_selected(), "the label selects its radio"
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(driver, 15).until(expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "p[role=status]"), "Saved"))
        assert not driver.find_element(By.ID, "marketing_email").is_selected()
        assert driver.find_element(By.ID, "email_frequency_never").is_selected()
        print("ok   submit: the page says Saved and shows the new state")

        def revoked():
            status, ledger = api(base, "GET", f"/customers/{customer_id}/consents")
            assert status == 200, (status, ledger)
            entries = [e for e in ledger["history"] if e["change"] == "revoked" and e["channel"] == "email"]
            return entries and (entries, ledger)
        entries, ledger = eventually("the ledger to record the revocation", revoked)
        assert entries[0]["purpose"] == "marketing", entries
        assert entries[0]["method"] == "preference-centre", entries
        current = [c for c in ledger["current"] if c["channel"] == "email"]
        assert current and current[0]["status"] == "revoked" and current[0]["active"] is False, current

        def never():
            status, got = api(base, "GET", f"/customers/{customer_id}")
            return status == 200 and got["preferences"]["email_frequency"] == "never" and got
        got = eventually("the email frequency to be never", never)
        assert not any(c["channel"] == "email" for c in got["consents"]), got["consents"]
        print("ok   api: the ledger shows marketing email revoked (preference-centre), frequency never")
    except Exception:
        log.flush()
        with open(os.path.join(work, "serve.log")) as f:
            sys.stderr.write("---- crm-local serve log ----\n" + f.read()[-4000:])
        raise
    finally:
        if driver is not None:
            driver.quit()
        stop_serve(serve)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    crm_local = sys.argv[1] if len(sys.argv) > 1 else os.path.join(target, "debug", "crm-local")
    for path in (crm_local, CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            sys.exit(f"browser test: {path} is missing or not executable")
    run(crm_local)
    print("browser: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
