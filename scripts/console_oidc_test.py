#!/usr/bin/env python3
"""The console's OIDC sign-in in a real browser (issue 21, decision 0089),
against a small issuer this test starts itself (scripts/oidc_issuer.py,
standing in for Cognito): discovery, authorize with PKCE (S256), token,
JWKS.

    python3 scripts/console_oidc_test.py [path/to/crm-local]

`crm-local serve --jwt-issuer <issuer> --jwt-audience console-test` checks
the issuer's JWTs as the HTTP API's authorizer does on AWS. The test first
calls the API with the issuer's tokens (valid; another key, expired, another
client, another issuer: all 401; a missing scope: 403), then, in headless
Chromium, opens /console, signs in with the issuer (the console's own PKCE
code, the issuer checks the verifier), lands on the overview with the
token's scopes, and finds no Erase button on a customer (the token has no
crm/privacy).
"""

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

from cryptography.hazmat.primitives.asymmetric import rsa
from local_harness import api_call, free_port, headless_chromium, start_serve, stop_serve, wait_for_port
from oidc_issuer import Issuer
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

TOKEN = "console-oidc-test-token"
CLIENT = "console-test"


def call(base, method, path, token, body=None):
    return api_call(base, token, method, path, body)


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print(f"ok: {message}")


def run(crm_local):
    work = tempfile.mkdtemp(prefix="crm-oidc.")
    issuer = Issuer(client_id=CLIENT, scope="openid crm/read crm/write crm/admin").start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = os.path.join(work, "serve.log")
    serve = start_serve(
        crm_local, port, os.path.join(work, "data"), TOKEN, log_path,
        extra=("--jwt-issuer", issuer.url, "--jwt-audience", CLIENT),
    )
    driver = None
    try:
        wait_for_port(port, 60, serve)
        # The API takes the issuer's tokens as the authorizer would.
        status, me = call(base, "GET", "/me", issuer.token())
        check(status == 200 and me["principal"] == "marketer-1", f"a JWT of the issuer is taken: {status} {me}")
        check(sorted(me["scopes"]) == ["crm/admin", "crm/read", "crm/write"], f"its scopes: {me['scopes']}")
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        refused = {
            "signed by another key": issuer.token(key=other_key),
            "expired": issuer.token(exp=int(time.time()) - 60, iat=int(time.time()) - 3700),
            "for another client": issuer.token(client_id="someone-else"),
            "of another issuer": issuer.token(iss="http://127.0.0.1:1"),
            "not a JWT": "nonsense",
        }
        for what, token in refused.items():
            status, _ = call(base, "GET", "/me", token)
            check(status == 401, f"a token {what} is refused: {status}")
        status, customer = call(base, "POST", "/customers", TOKEN, {
            "email": "oidc@example.com", "first_name": "Olga", "last_name": "Ide", "phone": "+12025550123",
            "source": "web", "marketing_consent": {"email": True, "sms": False, "push": False},
            "terms_accepted": True, "ip": "198.51.100.4", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "timezone": "Europe/Berlin", "locale": "de-DE",
        })
        check(status == 201, f"a customer registered with the local token: {status}")
        status, _ = call(base, "DELETE", f"/customers/{customer['id']}", issuer.token())
        check(status == 403, f"erasing needs crm/privacy, which the JWT lacks: {status}")
        with urllib.request.urlopen(base + "/console/config.json", timeout=10) as r:
            config = json.loads(r.read())
        check(config.get("oidc", {}).get("issuer") == issuer.url and config["oidc"]["client_id"] == CLIENT,
              f"the console is told the issuer and its client: {config}")

        # The browser signs in through the issuer.
        driver = headless_chromium(os.path.join(work, "profile"), logs=True)
        driver.set_window_size(1280, 800)
        # The shell re-renders the page: an element read mid-render goes stale.
        wait = WebDriverWait(driver, 20, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        driver.get(base + "/console")
        wait.until(expected_conditions.element_to_be_clickable((By.ID, "oidc"))).click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "h1").text == "Overview")
        check(issuer.exchanged == 1 and not issuer.refused,
              f"the console exchanged its code with a matching PKCE verifier ({issuer.exchanged}, refused {issuer.refused})")
        check(driver.current_url.startswith(base + "/console") and "code=" not in driver.current_url,
              f"back on the console, the code gone from the address: {driver.current_url}")
        scopes = driver.find_element(By.ID, "scopes").text.split()
        check(sorted(scopes) == ["crm/admin", "crm/read", "crm/write"], f"the shell shows the JWT's scopes: {scopes}")
        stored = driver.execute_script("return sessionStorage.getItem('crm.console.token')")
        check(stored and stored.count(".") == 2, "the access token is kept in sessionStorage")
        check(not driver.get_cookies(), "no cookie carries it")
        driver.get(f"{base}/console#/customers/{customer['id']}")
        wait.until(lambda d: "Olga" in d.find_element(By.TAG_NAME, "main").text)
        buttons = [b.text for b in driver.find_elements(By.TAG_NAME, "button")]
        check(not any("Erase" in b for b in buttons), f"no Erase button without crm/privacy: {buttons}")
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        check(not severe, f"no browser errors: {severe}")
        print("console OIDC sign-in: passed")
    except Exception:
        with open(log_path) as f:
            print("---- crm-local serve's log ----\n" + f.read()[-4000:], file=sys.stderr)
        raise
    finally:
        if driver is not None:
            driver.quit()
        stop_serve(serve)
        issuer.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "target/debug/crm-local")
