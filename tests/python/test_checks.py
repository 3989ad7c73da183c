"""Health checks end to end, with the real binary in real time (1 s intervals): an HTTP check
against a local server goes down and up again, its alert reaches a webhook through the
alerting pipeline and resolves; heartbeats; the CLI listings with -o json; /metrics passes
`promtool check metrics`; config mistakes are reported with file and line."""

from __future__ import annotations

import json
import subprocess

import pytest

from alerting_helpers import health_replies, wait_for, webhook_alerting
from receivers import HttpReceiver
from steward_testlib import clean_env, run_cli

PROMTOOL = "/usr/bin/promtool"

OK_BODY, BAD_BODY = health_replies()


def config(target: HttpReceiver, hook: HttpReceiver, closed_port: int) -> str:
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
condition = 'status == 200 && body.json.status == "ok" && response_time < 900ms'
fail_after = 2
recover_after = 2
labels = {{ team = "e2e" }}
status_page = "Public API"

[[monitoring.checks]]
name = "closed"
type = "tcp"
host = "127.0.0.1"
port = {closed_port}
interval = "1s"
timeout = "1s"
depends_on = ["api"]

[[monitoring.checks]]
name = "nightly"
type = "heartbeat"
interval = "1s"
grace = "1h"
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


def checks_json(s) -> dict:
    r = s.cli("checks", "list", "-o", "json")
    assert r.returncode == 0, r.stderr
    return {c["name"]: c for c in json.loads(r.stdout)}


def health(s, name: str) -> str:
    return checks_json(s)[name]["health"]


def alerts_for(hook: HttpReceiver, check: str, status: str) -> list:
    out = []
    for b in hook.bodies("/hook"):
        for a in b["alerts"]:
            if a["labels"].get("check") == check and a["status"] == status:
                out.append(a)
    return out


def test_http_check_goes_down_alerts_and_recovers(server_factory, target, hook):
    from steward_testlib import free_port

    s = server_factory.new("sqlite", config_text=config(target, hook, free_port()))
    wait_for(lambda: health(s, "api") == "up", timeout=20, what="api up")
    c = checks_json(s)["api"]
    assert c["type"] == "http" and c["last"]["ok"] is True
    assert c["last"]["facts"]["status"] == 200
    assert c["last"]["facts"]["body.json"]["status"] == "ok"

    # The target fails: down after two failed runs, and the alert reaches the webhook.
    target.default("/health", BAD_BODY)
    wait_for(lambda: health(s, "api") == "down", timeout=20, what="api down")
    firing = wait_for(lambda: alerts_for(hook, "api", "firing"), timeout=20, what="CheckDown firing")
    a = firing[0]
    assert a["labels"]["alertname"] == "CheckDown"
    assert a["labels"]["team"] == "e2e" and a["labels"]["check_type"] == "http"
    assert "status=500" in a["annotations"]["description"], a

    # The tcp check depends on api: its alert is inhibited while api is down.
    wait_for(lambda: health(s, "closed") == "down", timeout=20, what="closed down")
    r = s.cli("alerts", "list", 'check="closed"', "-o", "json")
    assert r.returncode == 0, r.stderr
    closed = json.loads(r.stdout)
    assert closed and closed[0]["mute"]["inhibited_by"], closed

    # Recovery: two good runs, then the resolve.
    target.default("/health", OK_BODY)
    wait_for(lambda: health(s, "api") == "up", timeout=20, what="api up again")
    wait_for(lambda: alerts_for(hook, "api", "resolved"), timeout=20, what="CheckDown resolved")

    # show: latest runs (failures with their reason) and roll-up buckets; run now.
    r = s.cli("checks", "show", "api", "--res", "minute", "--buckets", "5", "-o", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    errors = [x["error"] for x in d["latest"] if not x["ok"]]
    assert errors and all("condition" in e for e in errors), d["latest"]
    r = s.cli("checks", "show", "api")
    assert r.returncode == 0 and "condition:" in r.stdout and "latest runs:" in r.stdout, r.stdout
    r = s.cli("checks", "run", "api")
    assert r.returncode == 0 and r.stdout.startswith("api: ok"), (r.stdout, r.stderr)
    r = s.cli("checks", "run", "closed")
    assert r.returncode == 1 and "FAIL" in r.stdout, (r.stdout, r.stderr)
    r = s.cli("checks", "show", "nope")
    assert r.returncode != 0 and "no check is named" in r.stderr, r.stderr


def test_heartbeat_and_metrics(server_factory, target, hook):
    from steward_testlib import free_port

    s = server_factory.new("sqlite", config_text=config(target, hook, free_port()))
    wait_for(lambda: health(s, "nightly") == "down", timeout=20, what="no beat yet: down")
    r = s.cli("beat", "nightly")
    assert r.returncode == 0, r.stderr
    assert health(s, "nightly") == "up"
    r = s.cli("beat", "nightly", "--fail", "--message", "exit 3")
    assert r.returncode == 0, r.stderr
    c = checks_json(s)["nightly"]
    assert c["health"] == "down" and "exit 3" in c["last"]["error"], c
    r = s.cli("beat", "api")
    assert r.returncode != 0 and "not a heartbeat" in r.stderr, r.stderr

    wait_for(lambda: health(s, "api") == "up", timeout=20, what="api up")
    text = s.api("GET", "/metrics").text
    assert 'steward_check_up{check="api",check_type="http"} 1' in text, text[-3000:]
    assert "steward_check_duration_seconds" in text and "steward_checks{state=" in text
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (p.stdout, p.stderr)
    # OpenMetrics by content negotiation: counters' families without _total, and # EOF.
    r = s.api("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text"), r.headers
    assert r.text.rstrip().endswith("# EOF") and "# TYPE steward_http_requests counter" in r.text


@pytest.mark.parametrize(
    "snippet, line, words",
    [
        ('[[monitoring.checks]]\nname = "a"\ntype = "http"\nurl = "http://127.0.0.1:1/"\ncondition = "status =="\n',
         5, ["monitoring.checks[0].condition"]),
        ('[[monitoring.checks]]\nname = "a"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 1\ncondition = "status == 200"\n',
         6, ["does not report", "connected"]),
        ('[[monitoring.checks]]\nname = "a"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 1\ndepends_on = ["b"]\n',
         6, ['no check is named "b"']),
        ('[[monitoring.checks]]\nname = "a"\ntype = "nosuch"\n', 3, ["unknown check type", "http"]),
    ],
)
def test_config_mistakes_name_file_and_line(tmp_path, snippet, line, words):
    (tmp_path / "steward.toml").write_text("[monitoring]\nhost_checks = false\n\n" + snippet)
    r = run_cli(["config", "check"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert f"steward.toml:{line + 3}" in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def test_grafana_dashboard_uses_only_metrics_steward_exports(server_factory, target, hook):
    """deploy/grafana/steward.json: valid JSON, and every steward_* series its queries read is
    in a live /metrics (after the checks ran), so a renamed metric breaks this test."""
    import pathlib
    import re

    from steward_testlib import free_port

    dash = json.loads((pathlib.Path(__file__).parents[2] / "deploy/grafana/steward.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs and dash["uid"] == "steward-overview"
    names = {n for e in exprs for n in re.findall(r"\bsteward_[a-z0-9_]+", e)}
    s = server_factory.new("sqlite", config_text=config(target, hook, free_port()))
    wait_for(lambda: health(s, "api") == "up" and health(s, "closed") == "down", timeout=20, what="checks ran")
    s.cli("secret", "list", "dev")
    text = s.api("GET", "/metrics").text
    # Sample lines, and families declared without samples yet (cert expiry needs a TLS check).
    exported = set(re.findall(r"^(steward_[a-z0-9_]+)", text, re.M))
    exported |= set(re.findall(r"^# TYPE (steward_[a-z0-9_]+)", text, re.M))
    exported |= {n.removesuffix("_bucket") for n in exported}
    missing = sorted(n for n in names if n not in exported and n + "_bucket" not in exported)
    assert not missing, f"the dashboard reads series /metrics does not export: {missing}"


def test_public_status_page_follows_the_checks(server_factory, target, hook):
    """/status needs no token, shows only components (checks with status_page), their state,
    and 90 uptime bars each; never check names of unpublished checks, URLs or errors."""
    from steward_testlib import free_port

    s = server_factory.new("sqlite", config_text=config(target, hook, free_port()))
    wait_for(lambda: health(s, "api") == "up", timeout=20, what="api up")
    r = s.http.get(s.url + "/status", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r
    page = r.text
    assert "All systems operational" in page and "Public API" in page, page[:2000]
    assert page.count("<rect ") == 90, "90 daily bars for the one component"
    assert 'name="viewport"' in page and 'lang="en"' in page
    for private in ("closed", "nightly", target.url, "/health"):
        assert private not in page, f"{private!r} leaked onto the public page"

    target.default("/health", BAD_BODY)
    wait_for(lambda: health(s, "api") == "down", timeout=20, what="api down")
    page = s.http.get(s.url + "/status", timeout=10).text
    assert "1 of 1 components have an outage" in page and "Open incidents" in page, page[:2000]
    assert "status=500" not in page, "errors stay private"


def test_status_page_in_chromium_on_a_phone_and_a_desktop(server_factory, target, hook):
    """Debian's Chromium renders /status: the banner, the component and its 90 bars, each bar
    with a readable label; at a phone's width nothing overflows sideways. Screenshots go to
    tests/python/artifacts/."""
    from browser import chromium, screenshot
    from selenium.webdriver.common.by import By
    from steward_testlib import free_port

    s = server_factory.new("sqlite", config_text=config(target, hook, free_port()))
    wait_for(lambda: health(s, "api") == "up", timeout=20, what="api up")
    for name, (w, h) in {"status-desktop": (1280, 900), "status-phone": (390, 844)}.items():
        d = chromium(w, h)
        try:
            d.get(s.url + "/status")
            assert d.find_element(By.CSS_SELECTOR, ".banner").text == "All systems operational"
            assert d.find_element(By.CSS_SELECTOR, ".component h3").text == "Public API"
            bars = d.find_elements(By.CSS_SELECTOR, "svg.bars rect")
            assert len(bars) == 90
            assert d.find_element(By.CSS_SELECTOR, "svg.bars").get_attribute("aria-label").startswith("Public API uptime")
            overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
            assert screenshot(d, name).stat().st_size > 1000
        finally:
            d.quit()
