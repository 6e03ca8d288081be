"""Segments (issue 21): the list shows what GET /segments answers (names and
sizes); a rule segment's page shows its definition and members; a draft
previewed in the editor shows the count POST /segments/{id}/preview
answers for the same draft; a draft with a mistake shows the API's 422 by
path."""

import json
import uuid

SEGMENT = "console-liechtenstein"
# Locales no other story registers: the counts are this story's own.
MEMBERS, OTHERS = "de-LI", "fr-LU"


def _register(c, locale, n):
    email = f"segment-{n}-{uuid.uuid4().hex[:8]}@console.example"
    status, body = c.api("POST", "/customers", {
        "email": email,
        "first_name": "Segment",
        "last_name": f"Story{n}",
        "source": "web",
        "locale": locale,
        "marketing_consent": {"email": True, "sms": False, "push": False},
        "terms_accepted": True,
        "ip": "198.51.100.7",
        "user_agent": "console-test",
    })
    assert status == 201, (status, body)
    return body["id"]


def _definition(segment_id, locale):
    return {
        "id": segment_id,
        "name": f"Customers speaking {locale}",
        "description": "Defined by the console story",
        "match": {"profile": "locale", "op": "equals", "value": locale},
    }


def _rows(c):
    """(name, size text) of each row the page shows."""
    return c.driver.execute_script(
        "return [...document.querySelectorAll('#page tbody tr')].map((tr) => "
        "[tr.querySelector('.segment-name').textContent, tr.querySelector('.segment-size').textContent]);"
    )


def story(c):
    members_ids = [_register(c, MEMBERS, n) for n in range(3)]
    _register(c, OTHERS, 3)
    status, body = c.api("PUT", f"/segments/{SEGMENT}", _definition(SEGMENT, MEMBERS))
    assert status == 201, (status, body)
    # The rule evaluator keeps the members index: wait for all three.
    c.eventually(
        "the defined segment's three members",
        lambda: c.api("GET", f"/segments/{SEGMENT}")[1].get("size") == len(members_ids),
        seconds=30,
    )

    # The list: every segment's name and size as the API has them.
    def same():
        c.go("#/segments")
        status, answer = c.api("GET", "/segments")
        assert status == 200, (status, answer)
        expected = [[s["name"], f"{s['members']:,}"] for s in answer["items"]]
        shown = _rows(c)
        return shown == expected and shown

    shown = c.eventually("the segments page to show GET /segments", same, seconds=20)
    assert any(name == f"Customers speaking {MEMBERS}" and size == "3" for name, size in shown), shown
    assert c.driver.execute_script("return document.querySelectorAll('h1').length") == 1

    # One segment: its definition, size and members.
    c.click(f'a[href="#/segments/{SEGMENT}"]')
    c.wait_text("#page h1", f"Customers speaking {MEMBERS}")
    c.find("#members tbody tr")
    assert c.text("#segment-size") == "3", c.text("#segment-size")
    members = c.driver.execute_script(
        "return [...document.querySelectorAll('#members tbody tr td:first-child')].map((td) => td.textContent);"
    )
    status, page = c.api("GET", f"/segments/{SEGMENT}/members")
    assert sorted(members) == sorted(m["customer_id"] for m in page["items"]) == sorted(members_ids), (members, page)

    # Paged by the API's cursor: two, then the third.
    c.go(f"#/segments/{SEGMENT}?limit=2")
    first = c.driver.execute_script(
        "return [...document.querySelectorAll('#members tbody tr td:first-child')].map((td) => td.textContent);"
    )
    assert len(first) == 2, first
    c.click("#members-next")
    c.wait_text("#members", "A later page")
    second = c.driver.execute_script(
        "return [...document.querySelectorAll('#members tbody tr td:first-child')].map((td) => td.textContent);"
    )
    assert first + second == [m["customer_id"] for m in page["items"]], (first, second, page)
    assert not c.driver.find_elements("css selector", "#members-next")

    # A draft: the other locale's speakers, previewed (not saved).
    draft = _definition(SEGMENT, OTHERS)
    c.type("#draft", json.dumps(draft, indent=2))
    c.click("#preview")
    shown = c.find("#preview-count").text
    status, preview = c.api("POST", f"/segments/{SEGMENT}/preview", draft)
    assert status == 200, (status, preview)
    assert shown == f"{preview['count']:,}", (shown, preview)
    assert preview["count"] == 1, preview
    sample = c.driver.execute_script(
        "return [...document.querySelectorAll('#preview-sample li')].map((li) => li.textContent);"
    )
    assert sample == preview["sample"], (sample, preview)
    # Previewing saved nothing: still version 1, three members.
    status, still = c.api("GET", f"/segments/{SEGMENT}")
    assert still["version"] == 1 and still["size"] == 3, still
    c.shot("segments")
    c.axe("segments")

    # A mistake: the API's 422, by path, on the page.
    broken = dict(draft, match={"all": [{"profile": "locale", "op": "equals", "value": MEMBERS},
                                        {"metric": "orders", "op": "gte", "value": "many"}]})
    status, problem = c.api("POST", f"/segments/{SEGMENT}/preview", broken)
    assert status == 422, (status, problem)
    c.type("#draft", json.dumps(broken, indent=2))
    c.click("#preview")
    c.find("#draft-result .problem")
    paths = c.driver.execute_script(
        "return [...document.querySelectorAll('#draft-result .problem li code')].map((e) => e.textContent);"
    )
    assert paths == [e["path"] for e in problem["errors"]], (paths, problem)

    # Save: a new version, published from the editor.
    renamed = _definition(SEGMENT, MEMBERS)
    renamed["name"] = "Liechtenstein German speakers"
    c.type("#draft", json.dumps(renamed, indent=2))
    c.click("#save")
    c.wait_text("#draft-result", "Saved as version 2")
    status, saved = c.api("GET", f"/segments/{SEGMENT}")
    assert saved["version"] == 2 and saved["name"] == renamed["name"], saved
    assert c.text("#page h1") == renamed["name"], c.text("#page h1")
