"""The public status page (/status) end to end, with the real binary in real time (1 s check
intervals): an outage opens an incident that survives a restart (no duplicate, same start)
and moves to "Past incidents" when the check recovers; maintenance windows marked public (in
the config or through the API) are listed and mark the components they cover "under
maintenance", private ones never show; nothing internal (check names, URLs, errors, labels,
matchers, authors) reaches the page; the page is well-formed HTML and, in Chromium at a
phone's width, does not scroll sideways and can be used with the keyboard."""

from __future__ import annotations

import datetime
import html.parser
import json
import re

import pytest

from alerting_helpers import wait_for
from receivers import HttpReceiver, Reply

OK_BODY = Reply(200, b'{"status": "ok"}', {"Content-Type": "application/json"})
BAD_BODY = Reply(500, b'{"status": "failing"}', {"Content-Type": "application/json"})

# Check names, labels, matchers and comments that must never reach the public page.
PRIVATE = ("edge-probe-7", "site-probe-9", "edge-team", "internal-only", "config-private-window",
           "secret-db-work", "do-not-publish", 'service="', "service=&quot;", "status=500", "/health")


def config(target: HttpReceiver) -> str:
    # The public config window starts in three days (a date, so it is never in progress while
    # the test runs, whatever the time of day).
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)
    cron = f"{at.minute} {at.hour} {at.day} {at.month} *"
    return f"""
[alerting]
default_rules = false

[[alerting.maintenance]]
name = "config-private-window"
cron = "0 3 * * *"
duration = "1h"
matchers = ['service="edge"']
comment = "internal-only"

[[alerting.maintenance]]
name = "Database vacuum"
cron = "{cron}"
duration = "30m"
matchers = ['service="site"']
comment = "Search may be slow for a few minutes."
public = true

[monitoring]
host_checks = false

[[monitoring.checks]]
name = "edge-probe-7"
type = "http"
url = "{target.url}/health"
interval = "1s"
timeout = "1s"
jitter = 0.0
condition = 'status == 200'
fail_after = 2
recover_after = 2
labels = {{ service = "edge", team = "edge-team" }}
status_page = "Public API"

[[monitoring.checks]]
name = "site-probe-9"
type = "http"
url = "{target.url}/site"
interval = "1s"
timeout = "1s"
jitter = 0.0
labels = {{ service = "site" }}
status_page = "Website"
"""


@pytest.fixture
def target():
    rx = HttpReceiver()
    rx.default("/health", OK_BODY)
    rx.default("/site", OK_BODY)
    yield rx
    rx.close()


def status(s) -> str:
    r = s.http.get(s.url + "/status", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r
    return r.text


def page_when(s, pred, what: str) -> str:
    """The page once `pred(page)` holds (checks run every second)."""
    def ready():
        page = status(s)
        return page if pred(page) else None
    return wait_for(ready, timeout=20, what=what)


def all_up(page: str) -> bool:
    return "All systems operational" in page and page.count('<span class="state ok">operational</span>') == 2


def section(page: str, sid: str) -> str:
    """The HTML of the page's section labelled by `sid` ("" when it is absent)."""
    m = re.search(rf'<section aria-labelledby="{sid}">(.*?)</section>', page, re.S)
    return m.group(1) if m else ""


def items(html_text: str) -> list:
    return re.findall(r"<li>(.*?)</li>", html_text, re.S)


def component(page: str, name: str) -> str:
    m = re.search(rf'<li class="component"><div class="head"><h3>{re.escape(name)}</h3>(.*?)</li>', page, re.S)
    assert m, f"component {name!r} not on the page"
    return m.group(1)


def health(s, check: str) -> str:
    r = s.cli("checks", "list", "-o", "json")
    assert r.returncode == 0, r.stderr
    return next(c["health"] for c in json.loads(r.stdout) if c["name"] == check)


def datetimes(html_text: str) -> list:
    return re.findall(r'<time datetime="([^"]+)">', html_text)


def assert_private(page: str, *extra: str) -> None:
    for secret in PRIVATE + extra:
        assert secret not in page, f"{secret!r} leaked onto the public page"


class Balance(html.parser.HTMLParser):
    """Well-formedness: every element closed in order, ids unique."""

    VOID = {"meta", "br", "link", "img", "input", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list = []
        self.ids: list = []
        self.errors: list = []

    def handle_starttag(self, tag, attrs):
        self.ids += [v for k, v in attrs if k == "id"]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.ids += [v for k, v in attrs if k == "id"]

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def assert_well_formed(page: str) -> None:
    assert page.startswith("<!doctype html>")
    b = Balance()
    b.feed(page)
    b.close()
    assert not b.errors and not b.stack, (b.errors, b.stack)
    assert len(b.ids) == len(set(b.ids)), b.ids


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_an_outage_is_an_incident_that_survives_a_restart_and_closes_on_recovery(server_factory, target, store):
    s = server_factory.new(store, config_text=config(target))
    page = page_when(s, all_up, "both components up")
    assert "No incidents in the last 90 days." in section(page, "past")
    assert not section(page, "inc")
    assert_well_formed(page)

    # Down after two failed runs: an open incident for the component, since when and for how long.
    target.default("/health", BAD_BODY)
    page = page_when(s, lambda p: "Public API" in section(p, "inc"), "an open incident")
    open_items = items(section(page, "inc"))
    assert len(open_items) == 1 and "outage since" in open_items[0] and ", for " in open_items[0], open_items
    since = datetimes(open_items[0])
    assert len(since) == 1
    assert "1 of 2 components have an outage" in page
    assert '<span class="state down">outage</span>' in component(page, "Public API")
    assert "1 incident" in component(page, "Public API"), "today's bar mentions it"
    assert_private(page, target.url)
    assert_well_formed(page)

    # A restart while it is open (and the check still failing): the same incident, not a second.
    s.stop()
    s.start()
    page = status(s)
    open_items = items(section(page, "inc"))
    assert len(open_items) == 1 and datetimes(open_items[0]) == since, (open_items, since)
    wait_for(lambda: health(s, "edge-probe-7") == "down", timeout=20, what="down again after the restart")
    page = status(s)
    open_items = items(section(page, "inc"))
    assert len(open_items) == 1 and datetimes(open_items[0]) == since, (open_items, since)

    # Recovery: it moves to the past incidents with its start and end.
    target.default("/health", OK_BODY)
    page = page_when(s, lambda p: not section(p, "inc"), "the incident closed")
    past = items(section(page, "past"))
    assert len(past) == 1, past
    assert "Public API" in past[0] and "lasted" in past[0], past
    start, end = datetimes(past[0])
    assert start == since[0] and end > start, (start, end)
    assert "All systems operational" in page
    assert_private(page, target.url)
    assert_well_formed(page)


def _windows(s) -> list:
    r = s.api("GET", "/v1/sys/alerting/maintenance")
    assert r.status_code == 200, r.text
    return r.json()["data"]["windows"]


def test_public_maintenance_is_shown_and_private_windows_are_not(server_factory, target):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from browser import chromium, screenshot

    s = server_factory.new("sqlite", config_text=config(target))
    page_when(s, all_up, "both components up")
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)).replace(microsecond=0)
    for body in (
        {"name": "API deploy", "matchers": ['service="edge"'], "duration": "30m",
         "comment": "Rolling out version 2.", "public": True},
        {"name": "secret-db-work", "matchers": ['service="edge"'], "duration": "30m",
         "comment": "do-not-publish"},
        {"name": "Network upgrade", "starts_at": later.isoformat().replace("+00:00", "Z"),
         "duration": "1h", "public": True},
        {"name": "far-future-window", "starts_at": (later + datetime.timedelta(days=20)).isoformat(),
         "duration": "1h", "public": True},
    ):
        r = s.api("POST", "/v1/sys/alerting/maintenance", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["public"] is body.get("public", False)
    r = s.cli("maintenance", "start", 'service="cache"', "--duration", "10m", "--name", "Cache resize", "--public")
    assert r.returncode == 0, r.stderr
    windows = _windows(s)
    assert next(w for w in windows if w["name"] == "Cache resize")["public"] is True
    deploy_id = next(w["id"] for w in windows if w["name"] == "API deploy")
    authors = {w["created_by"] for w in windows if len(w.get("created_by", "")) > 4}

    page = status(s)
    maint = section(page, "maint")
    titles = re.findall(r"<strong>(.*?)</strong>", maint)
    assert "API deploy" in titles and "Network upgrade" in titles and "Cache resize" in titles, titles
    assert "Database vacuum" in titles, "the public config window, within 7 days"
    assert "far-future-window" not in page, "more than 7 days ahead"
    deploy = next(i for i in items(maint) if "API deploy" in i)
    assert "in progress" in deploy and "Rolling out version 2." in deploy and "Affects: Public API" in deploy, deploy
    assert "upcoming" in next(i for i in items(maint) if "Network upgrade" in i)
    vacuum = next(i for i in items(maint) if "Database vacuum" in i)
    assert "Affects: Website" in vacuum and "upcoming" in vacuum and "recurring" in vacuum, vacuum
    assert '<span class="state maint">under maintenance</span>' in component(page, "Public API")
    assert '<span class="state ok">operational</span>' in component(page, "Website")
    assert "Scheduled maintenance in progress" in page
    assert_private(page, target.url, *authors)
    assert_well_formed(page)

    # The API fails during its window: an incident, but no outage banner.
    target.default("/health", BAD_BODY)
    page = page_when(s, lambda p: "Public API" in section(p, "inc"), "an open incident")
    assert "during scheduled maintenance" in section(page, "inc")
    assert "have an outage" not in page and "Scheduled maintenance in progress" in page
    assert_private(page, target.url, *authors)

    # At a phone's width: nothing scrolls sideways, and the keyboard reaches the text list of
    # the day with the incident.
    d = chromium(390, 844)
    try:
        d.get(s.url + "/status")
        assert d.find_element(By.CSS_SELECTOR, ".banner").text == "Scheduled maintenance in progress"
        overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        focused = d.switch_to.active_element
        assert focused.tag_name == "summary" and "Days with downtime" in focused.text, focused.text
        focused.send_keys(Keys.ENTER)
        day = d.find_element(By.CSS_SELECTOR, ".days li")
        assert day.is_displayed() and "1 incident" in day.text, day.text
        assert screenshot(d, "status-maintenance-phone").stat().st_size > 1000
    finally:
        d.quit()

    # Ending the window early: the component is an outage again.
    r = s.api("DELETE", f"/v1/sys/alerting/maintenance/{deploy_id}")
    assert r.status_code in (200, 204), r.text
    page = status(s)
    assert "API deploy" not in page
    assert '<span class="state down">outage</span>' in component(page, "Public API")
    assert "1 of 2 components have an outage" in page
    assert_private(page, target.url, *authors)
