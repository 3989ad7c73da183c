"""The signed-in web dashboard (/ui/), end to end with the real binary.

* Debian's headless Chromium signs in with a token, finds a failing check on the overview,
  opens it (uptime bars, latency chart), silences its alert from the alerts page, expires the
  silence, reads the public status page, and does it again at a phone's width; screenshots go
  to tests/python/artifacts/.
* Over plain HTTP: sign-in and sign-out, the session cookie's flags, CSRF and origin checks,
  security headers, a revoked token ending the session, an audited secret reveal that a token
  without read cannot do, the audit viewer's filters, and no token or secret in the logs.
"""

from __future__ import annotations

import re
import uuid

import pytest

from alerting_helpers import health_replies, wait_for, webhook_alerting
from receivers import HttpReceiver
from steward_testlib import free_port, make_token, signed_in

OK_BODY, BAD_BODY = health_replies()


def config(target: HttpReceiver, hook: HttpReceiver) -> str:
    return f"""
{webhook_alerting(hook.url)}
[monitoring]
host_checks = false

[[monitoring.checks]]
name = "api"
type = "http"
url = "{target.url}/health"
interval = "1s"
timeout = "1s"
jitter = 0.0
condition = 'status == 200 && body.json.status == "ok"'
fail_after = 2
recover_after = 2
status_page = "Public API"

[[monitoring.checks]]
name = "db-port"
type = "tcp"
host = "127.0.0.1"
port = {free_port()}
interval = "1s"
timeout = "1s"
"""


@pytest.fixture
def target():
    rx = HttpReceiver()
    rx.default("/health", OK_BODY)
    yield rx
    rx.close()


@pytest.fixture
def hook():
    rx = HttpReceiver()
    yield rx
    rx.close()


def health(s, name: str) -> str:
    r = s.api("GET", "/v1/checks")
    return {c["name"]: c["health"] for c in r.json()["data"]["checks"]}[name]


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


# ---------------------------------------------------------------------------------------------
# Chromium


def test_sign_in_see_a_failing_check_silence_it_and_read_the_status_page(server_factory, target, hook):
    from browser import chromium, screenshot
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    s = server_factory.new("sqlite", config_text=config(target, hook))
    wait_for(lambda: health(s, "api") == "up", timeout=20, what="api up")
    target.default("/health", BAD_BODY)
    wait_for(lambda: health(s, "api") == "down", timeout=20, what="api down")
    wait_for(
        lambda: any(a["labels"].get("check") == "api" for a in s.api("GET", "/api/v2/alerts").json()),
        timeout=20, what="CheckDown alert for api",
    )

    # Roll-ups cover whole minutes from the server's start, and the roll-up job runs every 10 s:
    # the first appears within about 70 s of the start. Wait for it, so the charts have data.
    wait_for(
        lambda: s.api("GET", "/v1/checks/api?res=hour&buckets=2").json()["data"]["rollups"],
        timeout=90, what="the first roll-up of api",
    )

    d = chromium(1280, 900)
    try:
        # Not signed in: every page leads to the sign-in form, which remembers where to go.
        d.get(s.url + "/ui/checks")
        assert d.current_url.startswith(s.url + "/ui/sign-in?next="), d.current_url
        # The token box has the focus: type and press Enter.
        assert d.switch_to.active_element.get_attribute("id") == "token"
        box = d.find_element(By.ID, "token")
        box.send_keys("s.not-a-real-token" + Keys.ENTER)
        assert "was not accepted" in d.find_element(By.CSS_SELECTOR, ".flash.bad").text
        screenshot(d, "dashboard-sign-in-refused")
        d.find_element(By.ID, "token").send_keys(s.token + Keys.ENTER)
        # The form's submit navigates asynchronously: wait for it to land (bounded).
        wait_for(lambda: d.current_url == s.url + "/ui/checks", timeout=10,
                 what="the sign-in to lead to /ui/checks")
        assert "Signed in as" in d.find_element(By.CSS_SELECTOR, ".who").text

        # Overview: api is down. The first Tab reaches the skip link, which moves to the content.
        d.get(s.url + "/ui/")
        ActionChains(d).send_keys(Keys.TAB).perform()
        assert d.switch_to.active_element.text == "Skip to content"
        ActionChains(d).send_keys(Keys.ENTER).perform()
        assert d.switch_to.active_element.get_attribute("id") == "main"
        down = d.find_element(By.XPATH, "//h2[text()='Down now']/following-sibling::div[1]")
        assert "api" in down.text and "down" in down.text, down.text
        screenshot(d, "dashboard-overview")

        # The check's page: state, 90 daily bars with labels, the latency chart.
        d.find_element(By.LINK_TEXT, "api").click()
        assert d.find_element(By.TAG_NAME, "h1").text.startswith("Check api")
        assert "down" in d.find_element(By.CSS_SELECTOR, "h1 .pill").text
        bars = d.find_elements(By.CSS_SELECTOR, "svg.bars rect")
        assert len(bars) == 90
        assert bars[-1].get_attribute("fill") != "#8a8f98", "today's bar has data"
        assert "% up" in bars[-1].find_element(By.TAG_NAME, "title").get_attribute("textContent")
        assert d.find_elements(By.CSS_SELECTOR, "svg.chart polyline"), "the latency chart draws a line"
        assert d.find_element(By.CSS_SELECTOR, "svg.chart").get_attribute("aria-label").startswith("api latency")
        rows = d.find_elements(By.XPATH, "//h2[text()='Latest runs']/following-sibling::div[1]//tbody/tr")
        assert rows and "failed" in rows[0].text, [r.text for r in rows[:3]]
        screenshot(d, "dashboard-check-failing")

        # "Run now" runs it and says how it went.
        d.find_element(By.XPATH, "//button[text()='Run now']").click()
        assert "The check ran and failed" in d.find_element(By.CSS_SELECTOR, ".flash").text

        # Alerts: the CheckDown alert, silenced from its row (the form is pre-filled).
        d.find_element(By.LINK_TEXT, "Alerts").click()
        d.find_element(
            By.XPATH, "//tr[td[1][text()='CheckDown'] and .//code[text()='check=api']]//a[text()='Silence']"
        ).click()
        matchers = d.find_element(By.ID, "matchers").get_attribute("value")
        assert 'alertname="CheckDown"' in matchers and 'check="api"' in matchers, matchers
        d.find_element(By.ID, "duration").clear()
        d.find_element(By.ID, "duration").send_keys("1h")
        d.find_element(By.ID, "comment").send_keys("fixing the api, from the dashboard")
        d.find_element(By.XPATH, "//button[text()='Create silence']").click()
        assert d.find_element(By.CSS_SELECTOR, ".flash.ok").text == "Silence created."
        screenshot(d, "dashboard-silence-created")
        sil = [x for x in s.api("GET", "/api/v2/silences").json() if x["status"]["state"] == "active"]
        assert len(sil) == 1 and sil[0]["comment"] == "fixing the api, from the dashboard", sil
        assert sil[0]["createdBy"] == "root", sil
        wait_for(
            lambda: all(a["status"]["state"] == "suppressed"
                        for a in s.api("GET", "/api/v2/alerts").json() if a["labels"].get("check") == "api"),
            timeout=10, what="the api alert silenced",
        )

        # Expire it again (the page asks first).
        d.find_element(By.XPATH, "//button[text()='Expire']").click()
        d.switch_to.alert.accept()
        assert d.find_element(By.CSS_SELECTOR, ".flash.ok").text == "Silence expired."
        assert not [x for x in s.api("GET", "/api/v2/silences").json() if x["status"]["state"] == "active"]

        # The public status page, no sign-in needed.
        d.get(s.url + "/status")
        assert "outage" in d.find_element(By.CSS_SELECTOR, ".banner").text
        screenshot(d, "dashboard-status-page")
    finally:
        d.quit()

    # A phone-sized screen: nothing scrolls sideways, the navigation is all there.
    d = chromium(390, 844)
    try:
        d.get(s.url + "/ui/sign-in")
        d.find_element(By.ID, "token").send_keys(s.token + Keys.ENTER)
        for page in ("/ui/", "/ui/checks", "/ui/checks/api", "/ui/alerts", "/ui/audit", "/ui/secrets"):
            d.get(s.url + page)
            overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{page} scrolls sideways by {overflow}px on a phone"
        assert len(d.find_elements(By.CSS_SELECTOR, "header nav a")) == 6
        d.get(s.url + "/ui/")
        screenshot(d, "dashboard-overview-phone")
        # Keyboard shortcuts: g then c goes to the checks.
        d.find_element(By.TAG_NAME, "body").send_keys("g")
        d.find_element(By.TAG_NAME, "body").send_keys("c")
        wait_for(lambda: d.current_url.endswith("/ui/checks"), timeout=5, what="g c shortcut")
    finally:
        d.quit()


# ---------------------------------------------------------------------------------------------
# HTTP


def test_sessions_cookies_csrf_and_headers(server_factory, target, hook):
    s = server_factory.new("sqlite", config_text=config(target, hook))

    # Without a session: to the sign-in page, keeping the way back; the form itself is public.
    r = s.http.get(s.url + "/ui/checks?q=api", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"] == "/ui/sign-in?next=%2Fui%2Fchecks%3Fq%3Dapi"
    r = s.http.get(s.url + "/ui/sign-in?next=https://evil.example/", timeout=10)
    assert r.status_code == 200 and "evil.example" not in r.text
    # Every dashboard page: strict CSP, no caching, no framing.
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY"

    import requests

    bad = requests.post(s.url + "/ui/sign-in", data={"token": "s.wrong"}, allow_redirects=False, timeout=10)
    assert bad.status_code == 401 and "not accepted" in bad.text and "set-cookie" not in bad.headers

    http, r = signed_in(s, s.token)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie, cookie
    assert s.token not in cookie
    page = http.get(s.url + "/ui/", timeout=10)
    assert page.status_code == 200 and "Signed in as" in page.text
    csrf = csrf_of(page.text)

    # Forms need the session's CSRF token, and a cross-site Origin is refused.
    form = {"matchers": 'alertname="X"', "duration": "1h", "comment": "c"}
    r = http.post(s.url + "/ui/silences", data=form, allow_redirects=False, timeout=10)
    assert r.status_code == 403 and "out of date" in r.text
    r = http.post(s.url + "/ui/silences", data={**form, "csrf": csrf},
                  headers={"Origin": "https://evil.example"}, allow_redirects=False, timeout=10)
    assert r.status_code == 403 and "another site" in r.text
    assert s.api("GET", "/api/v2/silences").json() == []
    # A bad matcher re-shows the form with the reason and keeps what was typed.
    r = http.post(s.url + "/ui/silences", data={**form, "matchers": "not a matcher", "csrf": csrf}, timeout=10)
    assert r.status_code == 400 and "not created" in r.text and "not a matcher" in r.text
    r = http.post(s.url + "/ui/silences", data={**form, "csrf": csrf}, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"] == "/ui/alerts?done=silenced"
    assert len(s.api("GET", "/api/v2/silences").json()) == 1

    # Sign-out ends the session for good.
    r = http.post(s.url + "/ui/sign-out", data={"csrf": csrf}, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]
    stale = requests.get(s.url + "/ui/", cookies={"steward_session": cookie.split(";")[0].split("=", 1)[1]},
                         allow_redirects=False, timeout=10)
    assert stale.status_code == 303 and stale.headers["location"].startswith("/ui/sign-in")

    # A revoked token ends its dashboard session at the next page.
    tok = make_token(s, [{"env": "*", "path": "*", "capabilities": ["read", "list"]},
                         {"env": "sys", "path": "checks", "capabilities": ["read"]}], "viewer-" + uuid.uuid4().hex[:6])
    http2, _ = signed_in(s, tok)
    assert http2.get(s.url + "/ui/checks", timeout=10).status_code == 200
    r = s.api("POST", "/v1/auth/token/revoke-self", token=tok)
    assert r.status_code in (200, 204), r.text
    r = http2.get(s.url + "/ui/checks", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/sign-in"), (r.status_code, r.text[:300])


def test_secret_reveal_is_a_post_needs_read_and_is_audited(server_factory, target, hook):
    s = server_factory.new("sqlite", config_text=config(target, hook))
    value = "dash-" + uuid.uuid4().hex
    assert s.write("dev", "app/db", {"password": value}).status_code == 200
    assert s.write("dev", "app/db", {"password": value + "-v2"}).status_code == 200

    http, _ = signed_in(s, s.token)
    listing = http.get(s.url + "/ui/secrets?env=dev&prefix=app/", timeout=10)
    assert listing.status_code == 200 and 'href="/ui/secrets/dev/app/db"' in listing.text
    page = http.get(s.url + "/ui/secrets/dev/app/db", timeout=10)
    assert page.status_code == 200 and "Current version" in page.text
    assert value not in page.text, "metadata pages never carry values"
    assert page.text.count("Reveal version") == 2
    r = http.post(s.url + "/ui/secrets/dev/app/db", data={"csrf": csrf_of(page.text), "version": "1"}, timeout=10)
    assert r.status_code == 200 and value in r.text and value + "-v2" not in r.text
    assert "recorded in the audit log" in r.text and r.headers["cache-control"] == "no-store"

    # A token that may list but not read sees neither the metadata nor the value.
    name = "lister-" + uuid.uuid4().hex[:6]
    tok = make_token(s, [{"env": "dev", "path": "app/*", "capabilities": ["list"]}], name)
    lister, _ = signed_in(s, tok)
    r = lister.get(s.url + "/ui/secrets?env=dev&prefix=app/", timeout=10)
    assert r.status_code == 200 and "db" in r.text
    r = lister.get(s.url + "/ui/secrets/dev/app/db", timeout=10)
    assert r.status_code == 403 and "Not allowed" in r.text
    csrf = csrf_of(lister.get(s.url + "/ui/", timeout=10).text)
    r = lister.post(s.url + "/ui/secrets/dev/app/db", data={"csrf": csrf, "version": "1"}, timeout=10)
    assert r.status_code == 403 and value not in r.text
    # Nor the audit log (admin on sys/audit).
    r = lister.get(s.url + "/ui/audit", timeout=10)
    assert r.status_code == 403 and "permission denied" in r.text

    # The audit viewer finds the reveal (root's read of version 1) and the lister's refusal;
    # actors are token accessors.
    root_acc = s.api("GET", "/v1/auth/token/lookup-self").json()["data"]["accessor"]
    acc = s.api("GET", "/v1/auth/token/lookup-self", token=tok).json()["data"]["accessor"]
    r = http.get(s.url + "/ui/audit", params={"action": "secret.read", "path": "app/"}, timeout=10)
    assert r.status_code == 200
    rows = re.findall(r"<tr><td class=\"num\">\d+</td>.*?</tr>", r.text)
    assert any(root_acc in x and ">ok<" in x for x in rows), rows
    assert any(acc in x and "permission_denied" in x for x in rows), rows
    r = http.get(s.url + "/ui/audit", params={"actor": acc, "outcome": "failed"}, timeout=10)
    rows = re.findall(r"<tr><td class=\"num\">\d+</td>.*?</tr>", r.text)
    assert rows and all(acc in x for x in rows), rows
    r = http.get(s.url + "/ui/audit", params={"since": "yesterday"}, timeout=10)
    assert r.status_code == 400 and "is not a date" in r.text

    # The signed-in token and the revealed value never reach the server's logs (the root
    # token is printed once, at init, by design).
    logs = s.stdout_bytes() + s.stderr_bytes()
    for secret in (value, tok):
        assert secret.encode() not in logs, "a secret reached the logs"
