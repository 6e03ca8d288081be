"""The Customers section (issue 21): search by email, the customer 360
against the API's answers, a message's explain chain, the resend of the
email verification, the export, and an erasure confirmed by typing the
customer's email address (on a second customer: the first one stays for
the scoped-token check)."""

import secrets

from selenium.webdriver.common.keys import Keys


def registration(email, first_name, last_name):
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


def register(c, email, first, last):
    status, created = c.api("POST", "/customers", registration(email, first, last))
    assert status == 201, (status, created)
    customer_id = created["id"]

    def found():
        status, body = c.api("GET", f"/customers/search?q={email}")
        return status == 200 and any(i["id"] == customer_id for i in body["items"])

    c.eventually(f"the search to find {email}", found)
    return customer_id


def message_list(c, customer_id):
    """GET /customers/{id}/messages: the customer's messages, newest first."""
    status, answer = c.api("GET", f"/customers/{customer_id}/messages")
    assert status == 200, (status, answer)
    return answer["items"]


def messages(c, customer_id):
    """The message ids of GET /customers/{id}/messages, newest first (as the page lists them)."""
    return [m["message_id"] for m in message_list(c, customer_id)]


def rows(c, css):
    return [[td.text for td in tr.find_elements("css selector", "td")] for tr in c.find_all(css)]


def story(c):
    tag = secrets.token_hex(3)
    email = f"ada.{tag}@example.com"
    customer_id = register(c, email, "Ada", "Lovelace")
    c.data["customer_id"] = customer_id
    c.data["customer_email"] = email

    # Bad input: the API's 422 problem, naming the field.
    c.go("#/customers")
    label = c.text("label[for=customer-q]")
    assert "Email, name or id" in label, label
    c.type("#customer-q", " ")
    c.driver.execute_script("document.getElementById('customer-q').required = false;")
    c.click("#customer-search")
    c.wait_text("#customer-results [role=alert]", "Validation failed")
    assert "q" in c.text("#customer-results [role=alert]")
    print("ok   customers: an empty search shows the API's 422 problem")

    # Search by email; the result links to the customer.
    c.type("#customer-q", email)
    c.find("#customer-q").send_keys(Keys.ENTER)
    link = c.find(f'#customer-results a[href="#/customers/{customer_id}"]')
    assert link.text == "Ada Lovelace", link.text
    assert "found by email" in c.text("#customer-results")
    print(f"ok   customers: the search by email lists {email} with a link to its page")

    # By id, and by one whole last name (the name index is keyed, decision 0046).
    c.type("#customer-q", customer_id)
    c.click("#customer-search")
    c.wait_text("#customer-results", "found by id")
    assert c.find(f'#customer-results a[href="#/customers/{customer_id}"]')
    c.type("#customer-q", "lovelace")
    c.click("#customer-search")
    c.wait_text("#customer-results", "found by name")
    link = c.find(f'#customer-results a[href="#/customers/{customer_id}"]')
    assert f"q=lovelace" in c.driver.current_url, c.driver.current_url
    print("ok   customers: the search by id and by a whole last name find it too; the query stays in the address")

    # Open it with the keyboard.
    link.send_keys(Keys.ENTER)
    c.wait_text("#page h1", "Ada Lovelace")
    c.eventually("the page's requests to finish", c._settled)
    status, profile = c.api("GET", f"/customers/{customer_id}")
    assert status == 200, (status, profile)
    for field in ("id", "email", "first_name", "last_name", "status", "source"):
        shown = c.text(f'section[aria-labelledby=profile] dd[data-field="{field}"]')
        assert shown == str(profile[field]), (field, shown, profile[field])
    shown = c.text('dd[data-field="email_frequency"]')
    assert shown == profile["preferences"]["email_frequency"], shown
    status, consents = c.api("GET", f"/customers/{customer_id}/consents")
    assert status == 200, (status, consents)
    page = [r[:3] for r in rows(c, "#consents-current tbody tr")]
    api = [[e["purpose"], e["channel"], e["status"]] for e in consents["current"]]
    assert page == api and api, (page, api)
    proof = rows(c, "#consents-current tbody tr")[0][6]
    assert consents["current"][0]["proof"]["ip"] in proof and consents["current"][0]["proof"]["method"] in proof, proof
    assert len(c.find_all("section[aria-labelledby=consents] table")) == 2, "the consent history table"
    assert len(c.find_all("#page h1")) == 1
    print(f"ok   customers: the 360 shows the profile and the consents ({api}) as the API has them, with proof and history")

    # Registration starts the email verification journey, which sends a message.
    ids = c.eventually("the verification message in the timeline", lambda: messages(c, customer_id))
    c.go(f"#/customers/{customer_id}")
    shown_ids = [a.text for a in c.find_all("#messages-list a")]
    assert shown_ids == ids, (shown_ids, ids)
    # Each row's status, channel and campaign as the API has them.
    listed = message_list(c, customer_id)
    shown = [r[:4] for r in rows(c, "#messages-list tbody tr")]
    assert shown == [[m["message_id"], m["status"] or "–", m["channel"] or "–", m["campaign_id"] or "–"] for m in listed], (shown, listed)
    journeys = [r[0] for r in rows(c, "section[aria-labelledby=journeys] tbody tr")]
    status, api_journeys = c.api("GET", f"/customers/{customer_id}/journeys")
    assert sorted(journeys) == sorted(f"{j['campaign_id']}@{j['campaign_version']}" for j in api_journeys["items"]), journeys
    waiting = [j for j in api_journeys["items"] if j.get("next_timer")]
    assert waiting, api_journeys
    timers = [r[3] for r in rows(c, "section[aria-labelledby=journeys] tbody tr") if r[3] != "–"]
    due = waiting[0]["next_timer"]["due_at"][:19].replace("T", " ")
    assert any(due in t and waiting[0]["next_timer"]["step_id"] in t for t in timers), (timers, waiting)
    print(f"ok   customers: messages {ids} and journeys {journeys} listed")

    # Resend the verification: the API's answer as a notice, a second message.
    c.click("#resend-verification")
    c.wait_text("#action-result [role=status]", "being sent again")
    c.eventually("a second verification message", lambda: len(messages(c, customer_id)) >= len(ids) + 1)
    print("ok   customers: Resend verification shows the notice; a second message follows")

    # The timeline, paged (`?limit=2` sets the page size): every change, oldest first.
    status, whole = c.api("GET", f"/customers/{customer_id}/timeline?limit=500")
    assert status == 200 and len(whole["items"]) > 2, (status, whole)
    c.go(f"#/customers/{customer_id}?limit=2")
    assert len(c.find_all("#timeline-table tbody tr")) == 2
    pages = 1
    while c.driver.find_elements("css selector", "#timeline-more"):
        before = len(c.find_all("#timeline-table tbody tr"))
        c.click("#timeline-more")
        c.eventually("the next page of the timeline", lambda: len(c.find_all("#timeline-table tbody tr")) > before)
        pages += 1
        assert pages < 20, "the timeline never ends"
    types = [r[2] for r in rows(c, "#timeline-table tbody tr")]
    assert types == [e["type"] for e in whole["items"]], (types, whole["items"])
    print(f"ok   customers: the timeline in {pages} pages of 2 shows the API's {len(types)} changes in order")

    # Export: a Blob URL behind an <a download>.
    c.click("#export")
    export = c.find("#export-link")
    assert export.get_attribute("href").startswith("blob:"), export.get_attribute("href")
    assert export.get_attribute("download") == f"customer-{customer_id}.json"
    # (The page's CSP keeps even the test from fetching the blob: connect-src 'self'.)
    assert "events" in c.text("#action-result [role=status]"), c.text("#action-result")
    print("ok   customers: Export offers the customer's JSON document as a download")

    c.go(f"#/customers/{customer_id}")
    c.shot("customer")
    c.axe("customer")

    # One message's explain chain, opened from the customer's page.
    message_id = ids[-1]
    c.click(f'#messages-list a[href="#/messages/{message_id}"]')
    c.wait_text("#page h1", "Why this message was sent")
    c.eventually("the page's requests to finish", c._settled)
    status, explained = c.api("GET", f"/messages/{message_id}/explain")
    assert status == 200, (status, explained)
    page_types = [li.get_attribute("data-type") for li in c.find_all("#chain > li")]
    api_types = [e["type"] for e in explained["chain"]]
    assert page_types == api_types, (page_types, api_types)
    first = c.text("#chain > li:first-child")
    link = explained["chain"][0]
    for value in (link["role"], link["stream_id"], link["actor"], str(link["version"])):
        assert value in first, (value, first)
    c.shot("explain")
    c.axe("explain")
    print(f"ok   customers: the explain chain of {message_id} shows {' <- '.join(api_types)}")

    # A second customer, erased from the page after typing its email.
    other = f"grace.{tag}@example.com"
    other_id = register(c, other, "Grace", "Hopper")
    c.go(f"#/customers/{other_id}")
    assert c.button("Erase"), "no Erase button for the all-scopes token"
    assert "email" in c.text("label[for=erase-confirm]")
    c.type("#erase-confirm", "someone@example.com")
    c.click("#erase")
    c.wait_text("#action-result [role=alert]", "Not erased")
    status, still = c.api("GET", f"/customers/{other_id}")
    assert status == 200 and still["status"] != "erased", (status, still)
    c.type("#erase-confirm", other)
    c.click("#erase")
    c.wait_text("#action-result [role=status]", "erased")
    status, gone = c.api("GET", f"/customers/{other_id}")
    assert status == 404 or (status == 200 and gone["status"] == "erased"), (status, gone)
    c.wait_text('dd[data-field="status"]', "erased")
    assert not c.button("Erase"), "an erased customer offers no second erasure"
    print(f"ok   customers: a wrong confirmation erases nothing; typing {other} erases the customer (GET says {status} {gone and gone.get('status')})")
