"""Campaigns (issue 21): the list against `GET /campaigns` (its numbers those
of each campaign's stats); the abandoned-cart
campaign's page: its definition is the YAML `GET /campaigns/{id}` answers;
edited as YAML in the textarea, a step pointing to an unknown step shows the
error paths the API gives for that YAML, a syntax error its line, the fixed
one publishes a new version, saving it unchanged publishes nothing, Pause
pauses it (then Resume, so later stories find it running), the rollback
picks an earlier version from `GET /campaigns/{id}/versions`; a campaign with a
holdout and a split, a few registrations through the API, and its page: the
experiments table equals the stats' arms, the flow's variant arrows carry
each arm's entrants."""

import json
import urllib.error
import urllib.request

import yaml

CAMPAIGN = "abandoned-cart"
SPLIT = "console-split"
SPLIT_DEFINITION = {
    "id": SPLIT,
    "name": "Console split test",
    "trigger": {"pattern": {"source": ["crm.customer"], "detail-type": ["CustomerRegistered"]}},
    "entry": {"reentry": "once"},
    "holdout": {"percent": 20},
    "steps": [
        {"id": "test", "type": "split", "experiment": "console-subject",
         "variants": [{"id": "a", "weight": 50, "next": "send-a"}, {"id": "b", "weight": 50, "next": "send-b"}]},
        {"id": "send-a", "type": "send", "channel": "email", "template": "welcome", "category": "transactional", "next": "exit"},
        {"id": "send-b", "type": "send", "channel": "email", "template": "welcome", "category": "transactional"},
    ],
}
REGISTRATIONS = 8


def registration(i):
    return {
        "email": f"split{i}.campaigns@example.com",
        "first_name": "Split",
        "last_name": f"Test{i}",
        "source": "web",
        "marketing_consent": {"email": True, "sms": False, "push": False},
        "terms_accepted": True,
        "ip": "198.51.100.7",
        "user_agent": "console-test",
    }


def count(n):
    """As the page writes a count (ui.js `count`: en-US thousands separators)."""
    return "–" if n is None else f"{n:,}"


def rows(c):
    """The list's rows as the page shows them, read in one script."""
    return c.driver.execute_script(
        """
        const head = [...document.querySelectorAll('#campaigns thead th')].map((th) => th.textContent);
        return [...document.querySelectorAll('#campaigns tbody tr')].map((tr) => {
          const cells = [...tr.querySelectorAll('td')].map((td) => td.textContent.trim());
          const row = { id: tr.dataset.id, href: tr.querySelector('a').getAttribute('href') };
          head.forEach((h, i) => { row[h] = cells[i]; });
          return row;
        });
        """
    )


def yaml_api(c, method, path, text=None):
    """The campaign routes as YAML: (status, headers, body text); GET asks
    for YAML, PUT sends `text` as application/yaml."""
    data = None if text is None else text.encode()
    request = urllib.request.Request(c.base + path, data=data, method=method)
    request.add_header("authorization", f"Bearer {c.token}")
    request.add_header("accept", "application/yaml, application/problem+json")
    if data is not None:
        request.add_header("content-type", "application/yaml")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def set_definition(c, text):
    """Replaces the textarea's text as a person would: select all, type."""
    from selenium.webdriver.common.keys import Keys

    area = c.find("#definition")
    area.send_keys(Keys.CONTROL, "a")
    area.send_keys(Keys.DELETE)
    assert area.get_attribute("value") == "", "the textarea was not emptied"
    area.send_keys(text)
    assert area.get_attribute("value") == text, "the textarea holds what was typed"


def first_step_edit(text, step, old, new):
    """`text` with the line `old` of the first step (`- id: <step>`) replaced by `new`."""
    start = text.index(f"\n- id: {step}\n") + 1
    at = text.index(old, start)
    return text[:at] + new + text[at + len(old):]


def saved_paths(c):
    return c.driver.execute_script(
        "return [...document.querySelectorAll('#save-result [role=alert] li code')].map((e) => e.textContent);"
    )


def story(c):
    # The list equals GET /campaigns.
    c.go("#/campaigns")
    status, listed = c.api("GET", "/campaigns")
    assert status == 200, (status, listed)
    shown = rows(c)
    assert [r["id"] for r in shown] == [i["id"] for i in listed["items"]], (shown, listed)
    for row, item in zip(shown, listed["items"]):
        assert row["href"] == f"#/campaigns/{item['id']}", row
        assert row["Campaign"] == item["name"], (row, item)
        assert row["Status"] == item["status"], (row, item)
        assert row["Version"] == count(item["version"]), (row, item)
        assert row["Sent"] == count(item["sends"]), (row, item)
        assert row["Converted"] == count(item["conversions"]), (row, item)
        assert row["Running"] == count(item["running_instances"]), (row, item)
        assert row["Entered"] == count(item["entered"]), (row, item)
        # The list's numbers are the stats route's.
        _, stats = c.api("GET", f"/campaigns/{item['id']}/stats")
        assert (item["entered"], item["sends"], item["conversions"], item["revenue_minor"]) == (
            stats["entered"], stats["messages"]["sent"], stats["conversions"], stats["revenue_minor"]), (item, stats)
    assert CAMPAIGN in [i["id"] for i in listed["items"]], listed
    print(f"     campaigns: {len(shown)} rows equal GET /campaigns")

    # The campaign's page.
    status, before = c.api("GET", f"/campaigns/{CAMPAIGN}")
    assert status == 200, (status, before)
    h1 = c.go(f"#/campaigns/{CAMPAIGN}")
    assert h1 == f"Campaign: {before['definition']['name']}", h1
    assert c.text("#version") == str(before["version"]), c.text("#version")
    boxes = c.driver.execute_script("return [...document.querySelectorAll('#flow .step .step-id')].map((t) => t.textContent);")
    assert boxes == ["Start"] + [s["id"] for s in before["definition"]["steps"]] + ["End"], boxes
    # The editor holds the YAML the API answers: the definition, as text.
    status, headers, text = yaml_api(c, "GET", f"/campaigns/{CAMPAIGN}")
    assert status == 200 and headers["content-type"] == "application/yaml", (status, headers)
    assert headers["x-campaign-version"] == str(before["version"]), headers
    assert c.find("#definition").get_attribute("value") == text
    assert yaml.safe_load(text) == before["definition"], text
    first = before["definition"]["steps"][0]

    # A step pointing to a step that does not exist: the page lists the API's error paths.
    broken = first_step_edit(text, first["id"], f"  type: {first['type']}\n", f"  type: {first['type']}\n  next: no-such-step\n")
    status, _, refused = yaml_api(c, "PUT", f"/campaigns/{CAMPAIGN}", broken)
    refused = json.loads(refused)
    assert status == 422, (status, refused)
    expected = [e["path"] for e in refused["errors"]]
    assert "steps[0].next" in expected, refused
    set_definition(c, broken)
    c.click("#save")
    c.wait_text("#save-result [role=alert]", refused["title"])
    assert saved_paths(c) == expected, (saved_paths(c), expected)
    status, unchanged = c.api("GET", f"/campaigns/{CAMPAIGN}")
    assert unchanged["version"] == before["version"], unchanged
    print(f"     campaign: the refused YAML shows {expected}, as the API answers")

    # A YAML syntax error (line 2: a second `:` in the name): the page names the line.
    name_line = text.split("\n")[1]
    assert name_line.startswith("name: "), text
    garbled = text.replace(name_line + "\n", name_line + ": draft\n", 1)
    status, _, refused = yaml_api(c, "PUT", f"/campaigns/{CAMPAIGN}", garbled)
    refused = json.loads(refused)
    assert status == 422 and refused["field"] == "body" and "line 2" in refused["detail"], (status, refused)
    set_definition(c, garbled)
    c.click("#save")
    c.wait_text("#save-result [role=alert]", "line 2")
    assert saved_paths(c) == ["body"], saved_paths(c)
    print(f"     campaign: the YAML syntax error shows body: {refused['detail']}")

    # Fixed (and changed: the first wait is longer): a new version.
    assert first["type"] == "wait" and first["duration"] != "2h", first
    fixed = first_step_edit(text, first["id"], f"  duration: {first['duration']}\n", "  duration: 2h\n")
    set_definition(c, fixed)
    c.click("#save")
    c.wait_text("#page .notice", "Saved")
    status, after = c.api("GET", f"/campaigns/{CAMPAIGN}")
    assert status == 200 and after["version"] == before["version"] + 1, (before["version"], after)
    assert after["definition"]["steps"][0]["duration"] == "2h", after
    c.wait_text("#version", str(after["version"]))
    assert c.find("#definition").get_attribute("value") == fixed, "the editor shows the saved YAML as typed"
    print(f"     campaign: saved, version {before['version']} -> {after['version']}")

    # Saved again unchanged: nothing published.
    c.click("#save")
    c.wait_text("#page .notice", "Nothing changed")
    status, same = c.api("GET", f"/campaigns/{CAMPAIGN}")
    assert status == 200 and same["version"] == after["version"], (after["version"], same)
    print(f"     campaign: saved unchanged, version {same['version']} stays current")

    # Pause: the API says paused.
    c.click("#pause")
    c.wait_text("#status", "paused")
    c.find("#resume")
    status, paused = c.api("GET", f"/campaigns/{CAMPAIGN}")
    assert status == 200 and paused["paused"] is True, paused
    assert "Paused" in c.text("#page .notice"), c.text("#page .notice")
    c.shot("campaign")
    c.axe("campaign")

    # Resume, so the campaign runs for the stories after this one.
    c.click("#resume")
    c.wait_text("#status", "active")
    status, resumed = c.api("GET", f"/campaigns/{CAMPAIGN}")
    assert status == 200 and resumed["paused"] is False, resumed
    print("     campaign: paused (GET says paused), then resumed")

    # Roll back to the shipped definition, picked from the versions the API
    # lists (the earlier ones, newest first): a new version carrying its definition.
    status, versions = c.api("GET", f"/campaigns/{CAMPAIGN}/versions")
    assert status == 200, (status, versions)
    earlier = [v["version"] for v in reversed(versions["items"]) if v["status"] != "current"]
    offered = c.driver.execute_script(
        "return [...document.querySelectorAll('#rollback-to option')].map((o) => [o.value, o.textContent]);")
    assert [int(v) for v, _ in offered] == earlier, (offered, versions)
    label = next(text for v, text in offered if int(v) == before["version"])
    assert label.startswith(f"Version {before['version']} · "), label
    c.select("#rollback-to", label)
    c.click("#rollback")
    c.wait_text("#page .notice", "Rolled back")
    status, rolled = c.api("GET", f"/campaigns/{CAMPAIGN}")
    # A version is the stream position of its publish: pause and resume take positions too.
    assert status == 200 and rolled["version"] > after["version"], (after["version"], rolled)
    assert rolled["definition"] == before["definition"], rolled
    c.wait_text("#version", str(rolled["version"]))
    assert yaml.safe_load(c.find("#definition").get_attribute("value")) == before["definition"]
    print(f"     campaign: rolled back to version {before['version']}'s definition as version {rolled['version']}")

    experiments(c)


def experiments(c):
    status, body = c.api("PUT", f"/campaigns/{SPLIT}", SPLIT_DEFINITION)
    assert status == 200, (status, body)
    for i in range(REGISTRATIONS):
        status, body = c.api("POST", "/customers", registration(i))
        assert status == 201, (status, body)

    def settled():
        status, stats = c.api("GET", f"/campaigns/{SPLIT}/stats")
        arms = stats.get("experiments") or []
        # The arms hash the generated customer ids: the holdout may have taken
        # nobody (then its arm is listed with 0 entered).
        held = sum(a["entered"] for a in arms if a["experiment"] == "holdout" and a["arm"] == "holdout")
        split = sum(a["entered"] for a in arms if a["experiment"] == "console-subject")
        done = status == 200 and stats["entered"] == REGISTRATIONS and held + split == REGISTRATIONS
        return stats if done else None

    try:
        stats = c.eventually(f"{REGISTRATIONS} journeys of {SPLIT} in its arms", settled, seconds=30)
    except AssertionError as e:
        raise AssertionError(f"{e}: the stats say {c.api('GET', f'/campaigns/{SPLIT}/stats')}") from None
    c.go(f"#/campaigns/{SPLIT}")
    shown = c.driver.execute_script(
        "return [...document.querySelectorAll('#experiments tbody tr')]"
        ".map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()));"
    )
    expected = [[a["experiment"], a["arm"], count(a["entered"]), count(a["sent"]), count(a["converted"])] for a in stats["experiments"]]
    assert [row[:5] for row in shown] == expected, (shown, expected)
    labels = c.driver.execute_script("return [...document.querySelectorAll('#flow .edge-label')].map((t) => t.textContent);")
    arms = {a["arm"]: a for a in stats["experiments"] if a["experiment"] == "console-subject"}
    for variant in SPLIT_DEFINITION["steps"][0]["variants"]:
        label = f"{variant['id']} ({variant['weight']})"
        if variant["id"] in arms:
            label += f" · {count(arms[variant['id']]['entered'])} in"
        assert label in labels, (label, labels)
    held = next((a for a in stats["experiments"] if a["experiment"] == "holdout" and a["arm"] == "holdout"), None)
    start = c.driver.execute_script("return document.querySelector('#flow .step.start title').textContent;")
    assert ("holdout 20 %" + (f" ({count(held['entered'])} held out)" if held else ":")) in start, start
    print(f"     campaign {SPLIT}: experiments table = the stats' {len(expected)} arms; flow labels {sorted(l for l in labels if l)}")
    # Paused again, so the stories after this one see no more of its sends.
    status, body = c.api("POST", f"/campaigns/{SPLIT}/pause")
    assert status == 200, (status, body)
