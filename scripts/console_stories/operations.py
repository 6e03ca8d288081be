"""Operations (issue 21): a dead letter parked by a real fault, listed as
GET /dead-letters lists it, shown, redriven in vain while its cause is
there (the page shows the 409), and redriven for good from the page once
the operator has repaired the cause: it leaves the page and the API.

The fault: a customer's customer-360 document is lost (the story deletes
that one read-model row in the server's SQLite file, as a lost or damaged
read-model item would be; nothing else is touched). The customer's next
change, made through the API, reaches the customer-360 projection, which
cannot apply a change to a profile it does not have ("before
CustomerRegistered") and parks the event. The repair is the operator's
tool: `crm-local replay --consumer customer-360` rebuilds the projection
from the event store (the page's Replays section shows it); the redrive
then finds the event applied and the letter leaves the queue.

The server's data directory and binary come from the harness (`c.data_dir`,
`c.crm_local`) when it gives them, else from the `crm-local serve` process
listening on the harness's port (its command line)."""

import os
import sqlite3
import subprocess
import uuid
from urllib.parse import urlparse


def _serve_process(c):
    """(crm-local binary, data directory) of the server under test."""
    data_dir, binary = getattr(c, "data_dir", None), getattr(c, "crm_local", None)
    if data_dir and binary:
        return binary, data_dir
    port = urlparse(c.base).port
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if "serve" in argv and "--data-dir" in argv and any(a.endswith(f":{port}") for a in argv):
            # The binary as it was started (its file may have been rebuilt since).
            cwd = os.path.realpath(f"/proc/{pid}/cwd")
            exe = os.path.join(cwd, argv[0]) if os.sep in argv[0] else argv[0]
            data = argv[argv.index("--data-dir") + 1]
            return binary or exe, data_dir or os.path.join(cwd, data)
    raise AssertionError(f"no crm-local serve process listens on port {port}")


def _letters(c):
    status, body = c.api("GET", "/dead-letters?limit=50")
    assert status == 200, (status, body)
    return body["items"]


def _shown_letters(c):
    """(id, consumer, reason) of each letter the page lists."""
    return c.driver.execute_script(
        "return [...document.querySelectorAll('#dead-letters tbody tr')].map((tr) => "
        "[tr.querySelector('a.dead-letter').dataset.id, tr.children[1].textContent, tr.children[4].textContent]);"
    )


def _page_equals_api(c):
    def same():
        c.go("#/operations")
        expected = [[l["id"], l["consumer"], l["reason"]] for l in _letters(c)]
        shown = _shown_letters(c)
        return shown == expected and shown

    return c.eventually("the operations page to list GET /dead-letters", same, seconds=20)


def story(c):
    binary, data_dir = _serve_process(c)
    database = os.path.join(data_dir, "crm.db")
    assert os.path.exists(database), database

    email = f"operations-{uuid.uuid4().hex[:8]}@console.example"
    status, body = c.api("POST", "/customers", {
        "email": email, "first_name": "Opal", "last_name": "Operator", "source": "web",
        "marketing_consent": {"email": True, "sms": False, "push": False},
        "terms_accepted": True, "ip": "198.51.100.7", "user_agent": "console-test",
    })
    assert status == 201, (status, body)
    customer = body["id"]
    c.eventually("the customer 360", lambda: c.api("GET", f"/customers/{customer}")[0] == 200)

    # The fault: the customer's customer-360 document is lost.
    with sqlite3.connect(database, timeout=30) as db:
        lost = db.execute(
            "DELETE FROM read_models WHERE consumer = 'customer-360' AND partition = ?", (customer,)
        ).rowcount
    assert lost == 1, lost
    # Their next changes, through the API, are parked by customer-360.
    for change in ({"first_name": "Opaline"}, {"last_name": "Operand"}):
        status, body = c.api("PATCH", f"/customers/{customer}", change)
        assert status == 200, (status, body)
    stream = f"customer-{customer}"

    def parked():
        return [l for l in _letters(c) if l.get("stream_id") == stream and l["consumer"] == "customer-360"]

    letter = c.eventually("customer-360 to park both changes", lambda: len(parked()) == 2 and parked(), seconds=20)[0]
    assert letter["event_type"] == "CustomerNameChanged", letter
    assert "before CustomerRegistered" in letter["reason"], letter

    # The page lists what the API lists; health as /health has it.
    shown = _page_equals_api(c)
    assert letter["id"] in [row[0] for row in shown], shown
    status, health = c.api("GET", "/health")
    assert c.text("#health-status") == health["status"], (c.text("#health-status"), health)
    assert c.driver.execute_script("return document.querySelectorAll('h1').length") == 1
    c.shot("operations")
    c.axe("operations")

    # One letter: its reason and payload.
    c.click(f'a.dead-letter[data-id="{letter["id"]}"]')
    c.wait_text("#page h1", f"Dead letter {letter['id']}")
    assert c.text("#dead-letter-reason") == letter["reason"]
    status, full = c.api("GET", f"/dead-letters/{letter['id']}")
    assert status == 200, (status, full)
    assert full["payload"]["event_id"] in c.text("#dead-letter-payload")
    c.axe("operations-letter")

    # Redriven while the profile is still lost: 409, shown; it stays parked.
    c.click("#redrive")
    c.find("#redrive-result .problem")
    assert "Redrive failed" in c.text("#redrive-result"), c.text("#redrive-result")
    assert letter["id"] in [l["id"] for l in _letters(c)]

    # Paged by the API's cursor.
    letters = _letters(c)
    assert len(letters) >= 2, letters
    c.go("#/operations?limit=1")
    assert [row[0] for row in _shown_letters(c)] == [letters[0]["id"]]
    c.click("#dead-letters-next")
    c.wait_text("#dead-letters", "A later page")
    assert [row[0] for row in _shown_letters(c)] == [letters[1]["id"]], (_shown_letters(c), letters)

    # The operator's repair: rebuild customer-360 from the event store.
    subprocess.run(
        [binary, "replay", "--consumer", "customer-360", "--data-dir", data_dir, "--quiet"],
        check=True, capture_output=True, timeout=300,
    )
    c.eventually("the customer 360 rebuilt", lambda: c.api("GET", f"/customers/{customer}")[1].get("first_name") == "Opaline")
    c.go("#/operations")
    status, replays = c.api("GET", "/operations/replays")
    rebuilt = [r for r in replays["replays"] if r["name"] == "customer-360"]
    assert rebuilt and rebuilt[0]["state"] == "done", replays
    shown_replays = c.driver.execute_script(
        "return [...document.querySelectorAll('#replays tbody tr')].map((tr) => "
        "[tr.children[0].textContent, tr.children[1].textContent]);"
    )
    assert shown_replays == [[r["name"], r["state"]] for r in replays["replays"]], (shown_replays, replays)

    # Redriven now: handled, it leaves the page and the API.
    c.go(f"#/operations/dead-letters/{letter['id']}")
    c.click("#redrive")
    c.wait_text("#page .notice", f"Dead letter {letter['id']} was redriven")
    assert letter["id"] not in [row[0] for row in _shown_letters(c)]
    assert letter["id"] not in [l["id"] for l in _letters(c)]
    _page_equals_api(c)
