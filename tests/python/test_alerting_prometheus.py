"""Acceptance against the real Alertmanager ecosystem (Debian's packages): Prometheus sends
its alerts to Steward as to an Alertmanager (API v2, bearer token), Steward routes them to a
local webhook and the resolution follows when the metric recovers; amtool (Alertmanager's own
CLI) adds, lists and expires silences and posts and queries alerts in Steward.

Real time here (Prometheus has its own clock): Prometheus scrapes and evaluates every second,
Steward groups with group_wait / group_interval of 1 s."""

from __future__ import annotations

import json
import pathlib
import subprocess
import time

import pytest

from alerting_helpers import SECOND, am_alert, check_webhook, iso, ok_json, post_alerts, ts, utcnow, wait_for
from receivers import HttpReceiver, MetricsTarget
from steward_testlib import clean_env, free_port, http_session

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
AMTOOL = "/usr/bin/amtool"


def need(binary: str) -> None:
    if not pathlib.Path(binary).exists():
        raise RuntimeError(f"{binary} is missing: run scripts/ensure-peers.sh (apt prometheus prometheus-alertmanager)")


def steward_config(rx: HttpReceiver) -> str:
    return f"""
[alerting]
external_url = "http://steward.example:8200"
resolve_timeout = "5m"
default_rules = false

[alerting.route]
receiver = "fallback"
group_by = ["alertname", "job"]
group_wait = "1s"
group_interval = "1s"
repeat_interval = "4h"

  [[alerting.route.routes]]
  matchers = ['team="steward-e2e"', 'severity=~"page|critical"']
  receiver = "e2e-oncall"

[[alerting.receivers]]
name = "fallback"
channels = ["fallback"]

[[alerting.receivers]]
name = "e2e-oncall"
channels = ["hook"]

[[alerting.channels]]
name = "fallback"
type = "webhook"
url = "{rx.url}/fallback"

[[alerting.channels]]
name = "hook"
type = "webhook"
url = "{rx.url}/hook"
"""


def grant_token(s, rules: list) -> str:
    name = "am-" + str(int(time.time() * 1000))
    r = s.api("PUT", f"/v1/sys/policies/{name}", json={"rules": rules})
    assert r.status_code in (200, 204), r.text
    r = s.api("POST", "/v1/auth/token/create", json={"policies": [name], "ttl": "2h"})
    assert r.status_code == 200, r.text
    return r.json()["auth"]["client_token"]


class Prometheus:
    """/usr/bin/prometheus on 127.0.0.1:<free port> with its own data directory."""

    def __init__(self, workdir: pathlib.Path, config: str, rules: str):
        need(PROMETHEUS)
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(config)
        (self.dir / "rules.yml").write_text(rules)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "prometheus.log"
        self.proc = None
        self.http = http_session()

    def check(self) -> None:
        need(PROMTOOL)
        r = subprocess.run([PROMTOOL, "check", "config", str(self.config)], capture_output=True, text=True,
                           timeout=60, env=clean_env(), cwd=str(self.dir))
        assert r.returncode == 0, f"promtool check config:\n{r.stdout}\n{r.stderr}"

    def start(self) -> "Prometheus":
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", f"--web.external-url={self.url}/",
                 "--rules.alert.resend-delay=1s", "--log.level=debug"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=str(self.dir),
            )

        def ready():
            assert self.proc.poll() is None, f"prometheus exited {self.proc.returncode}:\n{self.logs()}"
            try:
                return self.http.get(self.url + "/-/ready", timeout=2).status_code == 200
            except OSError:
                return False

        wait_for(ready, 30, 0.2, what="prometheus /-/ready")
        return self

    def api(self, path: str) -> dict:
        r = self.http.get(self.url + path, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def metric(self, name: str) -> float:
        """Sum of a metric on Prometheus's own /metrics (all label sets)."""
        text = self.http.get(self.url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def rx():
    r = HttpReceiver()
    yield r
    r.close()


# --------------------------------------------------------------------------------------------
# 1. Prometheus -> Steward -> webhook, then the resolution


def test_prometheus_alert_routes_through_steward_and_resolves(server_factory, tmp_path, rx):
    s = server_factory.new("sqlite", config_text=steward_config(rx))
    token = grant_token(s, [{"env": "sys", "path": "alerts", "capabilities": ["write"]}])
    target = MetricsTarget(value=1)
    prom_config = f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - rules.yml
scrape_configs:
  - job_name: e2e
    static_configs:
      - targets: ["127.0.0.1:{target.port}"]
alerting:
  alertmanagers:
    - api_version: v2
      timeout: 5s
      authorization:
        credentials: "{token}"
      static_configs:
        - targets: ["127.0.0.1:{s.port}"]
"""
    rules = """
groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: E2EServiceDown
        expr: test_up == 0
        for: 0s
        labels:
          severity: page
          team: steward-e2e
        annotations:
          summary: "Service {{ $labels.instance }} is down"
          runbook: "https://runbooks.example/e2e"
"""
    prom = Prometheus(tmp_path / "prometheus", prom_config, rules)
    prom.check()
    try:
        prom.start()
        # Prometheus scrapes the target and knows Steward as its Alertmanager.
        wait_for(lambda: target.scrapes() >= 2, 20, 0.2, what="two scrapes")
        ams = wait_for(lambda: prom.api("/api/v1/alertmanagers")["activeAlertmanagers"], 20, 0.2,
                       what="Steward among Prometheus's alertmanagers")
        assert [a["url"] for a in ams] == [f"http://127.0.0.1:{s.port}/api/v2/alerts"]
        time.sleep(1.0)
        assert rx.requests() == [], "nothing fires while test_up is 1"

        # The service goes down: the alert fires in Prometheus, Steward routes it to `hook`.
        target.set(0)
        req = rx.wait("/hook", 1, 30, what="the firing E2EServiceDown")[0]
        n = check_webhook(req.json())
        assert n["status"] == "firing" and n["receiver"] == "e2e-oncall"
        assert n["groupLabels"] == {"alertname": "E2EServiceDown", "job": "e2e"}
        assert n["externalURL"] == "http://steward.example:8200"
        (a,) = n["alerts"]
        instance = f"127.0.0.1:{target.port}"
        assert a["labels"] == {"alertname": "E2EServiceDown", "instance": instance, "job": "e2e",
                               "severity": "page", "team": "steward-e2e"}, a
        assert a["annotations"] == {"summary": f"Service {instance} is down",
                                    "runbook": "https://runbooks.example/e2e"}
        assert a["generatorURL"].startswith(prom.url + "/graph?"), a["generatorURL"]
        assert a["status"] == "firing"
        prom_alerts = prom.api("/api/v1/alerts")["alerts"]
        assert [x["state"] for x in prom_alerts if x["labels"]["alertname"] == "E2EServiceDown"] == ["firing"]
        # Steward's Alertmanager API shows what Prometheus sent.
        got = am_alert(s, alertname="E2EServiceDown")
        assert got["fingerprint"] == a["fingerprint"]
        assert [r["name"] for r in got["receivers"]] == ["e2e-oncall"]
        assert got["status"]["state"] == "active"
        assert abs((ts(got["startsAt"]) - ts(a["startsAt"])).total_seconds()) < 1
        # Prometheus re-sends every second: still one notification (repeat_interval is 4 h).
        rx.quiet("/hook", 2.0, count=1)
        assert rx.requests("/fallback") == []
        assert prom.metric("prometheus_notifications_sent_total") >= 2
        assert prom.metric("prometheus_notifications_errors_total") == 0, prom.logs()

        # The service recovers: Prometheus sends the resolved alert, Steward the resolution.
        target.set(1)
        res = rx.wait("/hook", 2, 30, what="the resolved E2EServiceDown")[1].json()
        check_webhook(res)
        assert res["status"] == "resolved" and res["groupKey"] == n["groupKey"]
        (r,) = res["alerts"]
        assert r["status"] == "resolved" and r["fingerprint"] == a["fingerprint"]
        assert ts(r["endsAt"]) > ts(r["startsAt"])
        rx.quiet("/hook", 2.0, count=2)
        assert rx.requests("/fallback") == []
        assert not [x for x in ok_json(s.api("GET", "/api/v2/alerts")) if x["labels"]["alertname"] == "E2EServiceDown"]
        assert prom.metric("prometheus_notifications_errors_total") == 0, prom.logs()
    finally:
        prom.stop()
        target.close()


# --------------------------------------------------------------------------------------------
# 2. amtool: silences and alerts


class Amtool:
    """amtool against one Steward, with a token in --http.config.file and its own HOME (no
    ~/.config/prometheus/amtool.yml of the machine's)."""

    def __init__(self, s, tmp_path: pathlib.Path, token: str):
        need(AMTOOL)
        self.s = s
        self.http_config = tmp_path / "amtool-http.yml"
        self.http_config.write_text(f"authorization:\n  credentials: \"{token}\"\n")
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)

    def run(self, *args, check: bool = True, auth: bool = True) -> subprocess.CompletedProcess:
        cmd = [AMTOOL, f"--alertmanager.url={self.s.url}"]
        if auth:
            cmd.append(f"--http.config.file={self.http_config}")
        r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60,
                           env=clean_env({"HOME": str(self.home)}))
        if check:
            assert r.returncode == 0, f"amtool {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def json(self, *args):
        return json.loads(self.run(*args, "-o", "json").stdout)


def amtool_token(s) -> str:
    return grant_token(s, [
        {"env": "sys", "path": "alerts", "capabilities": ["read", "write"]},
        {"env": "sys", "path": "silences", "capabilities": ["read", "write"]},
    ])


def test_amtool_alert_add_reaches_the_webhook(server_factory, tmp_path, rx):
    """amtool (like other Go clients) sends startsAt/endsAt as 0001-01-01T00:00:00Z when unset;
    Alertmanager reads that as "not given": the alert starts now and fires."""
    s = server_factory.new("sqlite", config_text=steward_config(rx))
    am = Amtool(s, tmp_path, amtool_token(s))
    am.run("alert", "add", "alertname=AmtoolAlert", "severity=critical", "team=steward-e2e",
           "--annotation=summary=posted by amtool")
    n = check_webhook(rx.wait("/hook", 1, 10, what="AmtoolAlert")[0].json())
    assert n["status"] == "firing"
    (a,) = n["alerts"]
    assert a["labels"] == {"alertname": "AmtoolAlert", "severity": "critical", "team": "steward-e2e"}
    assert a["annotations"] == {"summary": "posted by amtool"}
    assert a["status"] == "firing" and abs((ts(a["startsAt"]) - utcnow()).total_seconds()) < 30, a
    q = am.json("alert", "query")
    assert [x["labels"]["alertname"] for x in q] == ["AmtoolAlert"]


def test_amtool_silences_and_alert_queries(server_factory, tmp_path, rx):
    s = server_factory.new("sqlite", config_text=steward_config(rx))
    am = Amtool(s, tmp_path, amtool_token(s))

    def amtool(*args, check: bool = True):
        return am.run(*args, check=check)

    # /api/v2/status in Alertmanager's shape (amtool's version check and `config show` read it).
    st = ok_json(s.api("GET", "/api/v2/status"))
    assert {"cluster", "versionInfo", "config", "uptime"} <= set(st), st
    assert st["cluster"]["status"] and st["versionInfo"]["version"] and isinstance(st["config"]["original"], str)
    ts(st["uptime"])
    amtool("config", "show")

    # Two alerts, posted as Prometheus does.
    now = utcnow()
    post_alerts(s, [
        {"labels": {"alertname": "AmtoolAlert", "severity": "critical", "team": "steward-e2e"},
         "annotations": {"summary": "posted for amtool"}, "startsAt": iso(now), "endsAt": iso(now + 600 * SECOND)},
        {"labels": {"alertname": "OtherAlert", "service": "db"}, "startsAt": iso(now), "endsAt": iso(now + 600 * SECOND)},
    ])
    rx.wait("/hook", 1, 10, what="AmtoolAlert")
    rx.wait("/fallback", 1, 10, what="OtherAlert")

    q = json.loads(amtool("alert", "query", "-o", "json").stdout)
    assert sorted(a["labels"]["alertname"] for a in q) == ["AmtoolAlert", "OtherAlert"]
    q = json.loads(amtool("alert", "query", "alertname=AmtoolAlert", "-o", "json").stdout)
    assert [a["labels"]["alertname"] for a in q] == ["AmtoolAlert"]
    q = json.loads(amtool("alert", "query", 'service=~"d.*"', "-o", "json").stdout)
    assert [a["labels"]["alertname"] for a in q] == ["OtherAlert"]

    # Silences: add (equality and regex), query, the alert shows as silenced, expire.
    sid = amtool("silence", "add", "alertname=AmtoolAlert", "--duration=1h", "--comment=amtool maintenance",
                 "--author=amtool-user").stdout.strip()
    assert sid and len(sid.split()) == 1, sid
    sid2 = amtool("silence", "add", 'service=~"db|cache"', "--duration=2h", "--comment=regex silence",
                  "--author=amtool-user").stdout.strip()
    sil = ok_json(s.api("GET", f"/api/v2/silence/{sid}"))
    assert sil["status"]["state"] == "active" and sil["createdBy"] == "amtool-user"
    assert sil["comment"] == "amtool maintenance"
    assert sil["matchers"] == [{"name": "alertname", "value": "AmtoolAlert", "isRegex": False, "isEqual": True}]
    assert 3500 <= (ts(sil["endsAt"]) - ts(sil["startsAt"])).total_seconds() <= 3700

    listed = json.loads(amtool("silence", "query", "-o", "json").stdout)
    by_id = {x["id"]: x for x in listed}
    assert set(by_id) == {sid, sid2}, listed
    assert by_id[sid2]["matchers"] == [{"name": "service", "value": "db|cache", "isRegex": True, "isEqual": True}]
    assert amtool("silence", "query", "-q").stdout.split() != []
    assert set(amtool("silence", "query", "-q").stdout.split()) == {sid, sid2}
    assert [x["id"] for x in json.loads(amtool("silence", "query", "alertname=AmtoolAlert", "-o", "json").stdout)] == [sid]

    wait_for(lambda: am_alert(s, alertname="AmtoolAlert")["status"]["silencedBy"] == [sid], 10,
             what="AmtoolAlert silenced")
    assert am_alert(s, alertname="OtherAlert")["status"]["silencedBy"] == [sid2]
    q = json.loads(amtool("alert", "query", "-o", "json").stdout)
    assert q == [], f"amtool alert query hides silenced alerts by default: {q}"
    q = json.loads(amtool("alert", "query", "--silenced", "-o", "json").stdout)
    assert sorted(a["labels"]["alertname"] for a in q) == ["AmtoolAlert", "OtherAlert"]

    amtool("silence", "expire", sid, sid2)
    assert amtool("silence", "query", "-q").stdout.split() == []
    expired = json.loads(amtool("silence", "query", "--expired", "-o", "json").stdout)
    assert {x["id"]: x["status"]["state"] for x in expired} == {sid: "expired", sid2: "expired"}
    assert ok_json(s.api("GET", f"/api/v2/silence/{sid}"))["status"]["state"] == "expired"
    assert am_alert(s, alertname="AmtoolAlert")["status"]["state"] == "active"

    # What amtool refuses to send, and what Steward refuses.
    r = amtool("silence", "add", "alertname=X", "--duration=1h", check=False)  # no comment
    assert r.returncode != 0
    r = amtool("silence", "expire", "00000000-0000-0000-0000-000000000000", check=False)
    assert r.returncode != 0
    # Without the token file: refused.
    r = am.run("silence", "query", "-o", "json", check=False, auth=False)
    assert r.returncode != 0, r.stdout
