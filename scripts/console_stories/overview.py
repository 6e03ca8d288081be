"""The overview (issue 21): a little traffic through the API (two
registrations, so two welcome journeys and their emails), then the page's
figures against `GET /operations/overview`: the cards, the messages by channel
and outcome, the consumers, one bar per minute of the last hour."""

REGISTRATIONS = [("ada.overview@example.com", "Ada", "Lovelace"), ("alan.overview@example.com", "Alan", "Turing")]


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


def count(n):
    """As the page writes a count (ui.js `count`: en-US thousands separators)."""
    return "–" if n is None else f"{n:,}"


def overview(c):
    status, body = c.api("GET", "/operations/overview")
    assert status == 200, (status, body)
    return body


def sent(o, channel="email"):
    return sum(m["count"] for m in o["messages_24h"] if m["channel"] == channel and m["outcome"] == "sent")


def page_figures(c):
    """What the page shows, read in one script (the DOM of one render)."""
    return c.driver.execute_script(
        """
        const figure = (id) => { const e = document.querySelector(`#${id} .figure`); return e ? e.textContent : null; };
        const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr`)]
          .map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent));
        return {
          cards: Object.fromEntries(['events-last-hour', 'sent-24h', 'running-journeys', 'dead-letters', 'max-lag']
            .map((id) => [id, figure(id)])),
          messages: rows('messages'),
          consumers: rows('consumers'),
          bars: document.querySelectorAll('#events-chart rect').length,
        };
        """
    )


def story(c):
    ids = []
    for email, first, last in REGISTRATIONS:
        status, customer = c.api("POST", "/customers", registration(email, first, last))
        assert status == 201, (status, customer)
        ids.append(customer["id"])
    c.data["overview_customers"] = ids

    # The welcome journeys run and their emails go out (eventually consistent).
    c.eventually(
        "two running journeys and two welcome emails sent in the overview",
        lambda: (lambda o: o["running_journeys"] >= 2 and sent(o) >= 2)(overview(c)),
        seconds=30,
    )

    # The page against the API, read when the API holds still around one render.
    def consistent():
        before = overview(c)
        c.go("#/overview")
        shown = page_figures(c)
        after = overview(c)
        strip = lambda o: {k: v for k, v in o.items() if k != "at"}  # noqa: E731
        return strip(before) == strip(after) and (before, shown)

    o, shown = c.eventually("the overview to hold still for one render", consistent, seconds=30)
    lag = max([x.get("lag") or 0 for x in o["consumers"]], default=0)
    expected = {
        "events-last-hour": count(sum(m["events"] for m in o["events_per_minute"])),
        "sent-24h": count(sum(m["count"] for m in o["messages_24h"] if m["outcome"] == "sent")),
        "running-journeys": count(o["running_journeys"]),
        "dead-letters": count(o["dead_letters"]),
        "max-lag": count(lag),
    }
    assert shown["cards"] == expected, (shown["cards"], expected)
    assert o["running_journeys"] >= 2 and shown["cards"]["running-journeys"] == count(o["running_journeys"])
    messages = [[m["channel"], m["outcome"], count(m["count"])] for m in o["messages_24h"]]
    assert sorted(shown["messages"]) == sorted(messages), (shown["messages"], messages)
    assert ["email", "sent", count(sent(o))] in shown["messages"], shown["messages"]
    consumers = [[x["name"], count(x["lag"]), count(x["lag_seconds"]), count(x["dead_letters"])] for x in o["consumers"]]
    assert sorted(shown["consumers"]) == sorted(consumers), (shown["consumers"], consumers)
    assert shown["bars"] == len(o["events_per_minute"]), (shown["bars"], len(o["events_per_minute"]))
    print(f"ok   overview: cards {shown['cards']}; {len(messages)} message rows (email sent {count(sent(o))}); "
          f"{len(consumers)} consumers; {shown['bars']} bars, as GET /operations/overview says")

    c.shot("overview")
    c.axe("overview")
