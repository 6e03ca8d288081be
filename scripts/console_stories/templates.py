"""Templates (issue 21): the list against `GET /templates`; the welcome
template's page: the preview the API renders (`POST /templates/welcome/preview`)
in the sandboxed iframe at desktop and mobile width, its subject and text
part beside it; a subject that does not parse, saved from the form, shows
the field the API names (nothing is written)."""

import re
from html.parser import HTMLParser

TEMPLATE = "welcome"


def count(n):
    return "–" if n is None else f"{n:,}"


class BodyText(HTMLParser):
    """The text of an HTML document's <body>, as `body.textContent` gives it
    (no <style>, <script> or comments)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.in_body, self.skip = [], False, 0

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.in_body = True
        elif tag in ("style", "script"):
            self.skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "script") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if self.in_body and not self.skip:
            self.parts.append(data)


def squash(text):
    return re.sub(r"\s+", " ", text).strip()


def body_text(html):
    parser = BodyText()
    parser.feed(html)
    return squash("".join(parser.parts))


def in_frame(c, script):
    """Runs `script` inside the preview's iframe."""
    c.driver.switch_to.frame(c.find("#preview-frame"))
    try:
        return c.driver.execute_script(script)
    finally:
        c.driver.switch_to.default_content()


def story(c):
    # The list equals GET /templates.
    c.go("#/templates")
    status, listed = c.api("GET", "/templates")
    assert status == 200, (status, listed)
    shown = c.driver.execute_script(
        """
        return [...document.querySelectorAll('#templates tbody tr')].map((tr) => ({
          id: tr.dataset.id,
          cells: [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()),
        }));
        """
    )
    assert [r["id"] for r in shown] == [t["id"] for t in listed["items"]], (shown, listed)
    for row, item in zip(shown, listed["items"]):
        assert row["cells"][:4] == [item["id"], item["channel"], count(item["version"]), item["source"]], (row, item)
    print(f"     templates: {len(shown)} rows equal GET /templates")

    # The welcome template: the API's preview in the iframe.
    status, template = c.api("GET", f"/templates/{TEMPLATE}")
    assert status == 200, (status, template)
    status, preview = c.api("POST", f"/templates/{TEMPLATE}/preview", {})
    assert status == 200 and preview["html"], (status, preview)
    h1 = c.go(f"#/templates/{TEMPLATE}")
    assert h1 == f"Template: {TEMPLATE}", h1
    assert c.find("#part-subject").get_attribute("value") == template["subject"]
    assert c.find("#part-mjml").get_attribute("value") == template["mjml"]
    assert c.find("#part-text").get_attribute("value") == template["text"]
    c.wait_text("#preview-subject", preview["subject"])
    assert c.text("#preview-subject") == preview["subject"], (c.text("#preview-subject"), preview["subject"])
    shown_text = c.driver.execute_script("return document.getElementById('preview-text').textContent;")
    assert shown_text == preview["text"], (shown_text, preview["text"])

    frame = c.find("#preview-frame")
    assert frame.get_attribute("sandbox") == "allow-same-origin", f"the iframe allows its origin only: {frame.get_attribute('sandbox')!r}"
    c._wait("the preview frame filled", lambda: c.find("#preview-frame").get_attribute("data-filled") == "true")
    expected = body_text(preview["html"])
    assert expected, "the API's preview has body text"
    for width, button in (("700", "#width-desktop"), ("375", "#width-mobile")):
        c.click(button)
        c._wait(f"the preview at {width} px", lambda: c.find("#preview-frame").get_attribute("width") == width)
        assert c.find(button).get_attribute("aria-pressed") == "true"
        inside = in_frame(
            c,
            "return { text: document.body.textContent, title: document.title, width: document.documentElement.clientWidth, "
            "scripts: document.scripts.length };",
        )
        assert squash(inside["text"]) == expected, (squash(inside["text"])[:300], expected[:300])
        assert str(inside["width"]) == width or abs(inside["width"] - int(width)) <= 20, inside["width"]
        print(f"     template: the iframe at {width} px holds the API's rendered body ({len(expected)} chars), title {inside['title']!r}")
    # The frame's own policy: an https: image may load (a template's remote
    # images), an http: one is refused, and no script runs in it.
    # (Nothing runs in the frame, not even a listener or a timer: the
    # browser's console reports what its policy refused.)
    c.browser_errors()  # what came before
    url = in_frame(
        c,
        """
        for (const src of ['https://images.example.invalid/logo.png', 'http://images.example.invalid/logo.png']) {
          const img = document.createElement('img');
          img.src = src;
          document.body.appendChild(img);
        }
        const s = document.createElement('script');
        s.textContent = 'document.body.dataset.ran = "yes"';
        document.body.appendChild(s);
        return document.URL;
        """,
    )
    assert url.endswith("/console/preview.html"), url
    logged = []

    def refused_http():
        logged.extend(c.browser_errors())
        return any("http://images.example.invalid/logo.png" in m and "img-src" in m for m in logged)

    c.eventually("the frame's policy to refuse the http: image", refused_http)
    assert not any("https://images.example.invalid/logo.png" in m and "violates" in m for m in logged), logged
    assert in_frame(c, "return document.body.dataset.ran || null;") is None, "a script ran in the preview"
    print("     template: the preview frame takes https: images, refuses http: ones and runs no script")
    # For the screenshot: desktop width.
    c.click("#width-desktop")
    c._wait("the preview at 700 px", lambda: c.find("#preview-frame").get_attribute("width") == "700")
    c.shot("template")
    c.axe("template")

    # A subject that does not parse: the API names the field, so does the page; nothing is written.
    body = {"channel": template["channel"], "subject": "Welcome, {{ customer.first_name", "mjml": template["mjml"],
            "text": template["text"], "sample": template["sample"]}
    status, refused = c.api("PUT", f"/templates/{TEMPLATE}", body)
    assert status == 422 and refused.get("field") == "subject", (status, refused)
    area = c.type("#part-subject", body["subject"])
    assert area.get_attribute("value") == body["subject"]
    c.click("#save")
    c.wait_text("#save-result [role=alert]", refused["title"])
    assert c.find("#part-subject").get_attribute("aria-invalid") == "true"
    assert c.text("#part-subject-error"), "the subject's error is shown under it"
    assert "subject" in c.text("#save-result [role=alert]"), c.text("#save-result")
    status, after = c.api("GET", f"/templates/{TEMPLATE}")
    assert after["current_version"] == template["current_version"], after
    print(f"     template: a broken subject is refused on the page as by the API (field {refused['field']!r})")
