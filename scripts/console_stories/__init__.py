"""Browser stories of the console (issue 21, decision 0089), run in order by
scripts/console_test.py in one headless Chromium session against one
`crm-local serve`.

Each module defines `story(c)`, where `c` is the harness's `Console`:

    c.go("#/customers")            navigate; waits for the page's <h1> (not "Loading…")
    c.find(css) / c.find_all(css)  wait for and return element(s)
    c.click(css)                   wait until clickable, click
    c.type(css, text, clear=True)  type into an input/textarea
    c.select(css, visible_text)    choose an <option> by its text
    c.text(css)                    the element's visible text
    c.wait_text(css, text)         wait until the element's text contains `text`
    c.api(method, path, body=None, token=None) -> (status, json)   the JSON API (all-scopes token by default)
    c.eventually(what, check, seconds=10)   poll until check() is truthy; returns it
    c.shot(name)                   a 1280x800 screenshot <name>.png (docs/console/ with --update-docs)
    c.axe(name)                    axe-core on the page: fails on serious or critical violations
    c.data                         a dict shared by the stories (e.g. c.data["customer_id"])
    c.base, c.driver, c.token      the server's URL, the selenium driver, the all-scopes token

Assert what the page shows against what the API answers.
"""

# The order the harness runs them in.
STORIES = ["overview", "customers", "campaigns", "templates", "segments", "broadcasts", "operations"]
