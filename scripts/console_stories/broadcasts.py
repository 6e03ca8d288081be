"""Broadcasts (issue 21): the list shows what GET /broadcasts answers,
newest first, page by page by the API's cursor; each row opens the
broadcast. Two broadcasts to the segments story's rule segment: one sent
now, one at a UTC time tomorrow."""

import datetime
import uuid

from console_stories.segments import SEGMENT


def _rows(c):
    """(id, status, template) of each row of the list the page shows."""
    return c.driver.execute_script(
        "return [...document.querySelectorAll('#broadcasts tbody tr')].map((tr) => "
        "[...tr.querySelectorAll('td')].slice(0, 3).map((td) => td.textContent.trim()));"
    )


def _expected(items):
    return [[b["id"], b["status"], b["template"]] for b in items]


def story(c):
    run = uuid.uuid4().hex[:6]
    now_id, later_id = f"story-now-{run}", f"story-later-{run}"
    tomorrow = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).replace(microsecond=0)
    for body in (
        {"id": now_id, "template": "welcome", "channel": "email",
         "audience": {"segments": [SEGMENT]}, "send": {"type": "now"}},
        {"id": later_id, "template": "welcome", "channel": "email",
         "audience": {"segments": [SEGMENT]},
         "send": {"type": "at", "at": tomorrow.isoformat().replace("+00:00", "Z")}},
    ):
        status, answer = c.api("POST", "/broadcasts", body)
        assert status == 201, (status, answer)

    # The list (the projector lists a broadcast once it has its event): the
    # page's rows are the API's items, newest first.
    def listed():
        status, answer = c.api("GET", "/broadcasts")
        assert status == 200, (status, answer)
        ids = [b["id"] for b in answer["items"]]
        return later_id in ids and now_id in ids and answer

    answer = c.eventually("both broadcasts in GET /broadcasts", listed, seconds=30)
    assert [b["id"] for b in answer["items"]][:2] == [later_id, now_id], answer["items"][:2]

    def same():
        c.go("#/broadcasts")
        status, answer = c.api("GET", "/broadcasts")
        shown = _rows(c)
        return shown == _expected(answer["items"]) and shown

    shown = c.eventually("the broadcasts page to show GET /broadcasts", same, seconds=20)
    print(f"     broadcasts: {len(shown)} rows equal GET /broadcasts, newest first")
    c.shot("broadcasts")
    c.axe("broadcasts")

    # Page by page by the API's cursor: one, then the next.
    c.go("#/broadcasts?limit=1")
    first = _rows(c)
    status, page = c.api("GET", "/broadcasts?limit=1")
    assert first == _expected(page["items"]), (first, page)
    c.click("#broadcasts-next")
    c.wait_text("#broadcasts", "A later page")
    second = _rows(c)
    status, page2 = c.api("GET", f"/broadcasts?limit=1&after={page['next_after'].replace('#', '%23')}")
    assert second == _expected(page2["items"]), (second, page2)
    assert first[0][0] == later_id and second[0][0] == now_id, (first, second)
    print("     broadcasts: paged one at a time by next_after")

    # A row opens the broadcast.
    c.click(f'#broadcasts a[href="#/broadcasts/{now_id}"]')
    c.wait_text("#page h1", now_id)
