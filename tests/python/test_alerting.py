"""Alerting end to end (issue 4): alerts posted through the Alertmanager API v2 and raised by
Steward's own events go through the routing tree to real local receivers (an HTTP server
standing in for webhooks, Slack and PagerDuty; aiosmtpd for mail). Alertmanager's meanings:
group_wait / group_interval / repeat_interval, resolves, silences and inhibition that suppress
only new notifications, acknowledgement and escalation, maintenance windows (ad hoc and
recurring, in a time zone), durable delivery (retries with backoff and Retry-After, dead
letters, replay, kill -9 mid-send), StewardChannelFailing, the heartbeat, the CLI, grants and
bad input.

Timers of minutes and hours are crossed by moving the server's clock
(STEWARD_TEST_CLOCK_FILE, see ARCHITECTURE.md "Test hooks"); real waits are only polls (up to
WAIT seconds for something to arrive, QUIET seconds to see that nothing does). Prometheus and
amtool against Steward are in test_alerting_prometheus.py."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from typing import Optional

import pytest

from alerting_helpers import (
    HOUR, MINUTE, SECOND, ZERO_TIME, Alert, Clock, RealClock, add_silence, am_alert, am_alerts,
    by_alertname, check_webhook, data_list, dead_letters, fingerprint_of, letter_field, matcher,
    mentions, notification_log, ok, ok_json, post_alerts, raw_post_alerts, start_maintenance,
    steward_alerts, steward_logs, ts, uniq, utcnow, wait_for,
)
from receivers import HttpReceiver, Reply, SmtpSink
from steward_testlib import DEFAULT, free_port

WAIT = 10.0    # how long something that should arrive may take (real seconds)
QUIET = 1.0    # how long we watch to see that nothing (more) arrives (the pipeline ticks every 200 ms)

# A Tuesday morning in winter: no recurring window is open, Berlin is UTC+1.
T0 = datetime(2027, 1, 12, 9, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------------------------
# helpers


def alerting_config(body: str = "", *, route_extra: str = "", receiver: str = "hook",
                    group_by: str = '["alertname"]', group_wait: str = "10s", group_interval: str = "1m",
                    repeat_interval: str = "4h", resolve_timeout: str = "24h", default_rules: bool = False,
                    external_url: Optional[str] = None) -> str:
    """steward.toml text: [alerting] and its root route, then `route_extra` (child routes,
    right under the root route), then `body` (receivers, channels, rules, other tables)."""
    head = "[alerting]\n"
    if external_url:
        head += f'external_url = "{external_url}"\n'
    head += f'resolve_timeout = "{resolve_timeout}"\ndefault_rules = {str(default_rules).lower()}\n\n'
    head += (
        "[alerting.route]\n"
        f'receiver = "{receiver}"\n'
        f"group_by = {group_by}\n"
        f'group_wait = "{group_wait}"\n'
        f'group_interval = "{group_interval}"\n'
        f'repeat_interval = "{repeat_interval}"\n'
    )
    return head + route_extra + "\n" + body


def child_route(receiver: str, matchers: list, cont: bool = False, group_by: Optional[list] = None) -> str:
    text = "\n  [[alerting.route.routes]]\n"
    text += "  matchers = [" + ", ".join(f"'{m}'" for m in matchers) + "]\n"
    text += f'  receiver = "{receiver}"\n'
    if cont:
        text += "  continue = true\n"
    if group_by is not None:
        text += "  group_by = [" + ", ".join(f'"{g}"' for g in group_by) + "]\n"
    return text


def receiver(name: str, *channels: str, escalation: str = "") -> str:
    text = f'\n[[alerting.receivers]]\nname = "{name}"\nchannels = [{", ".join(json.dumps(c) for c in channels)}]\n'
    if escalation:
        text += f"escalation = {escalation}\n"
    return text


def webhook(name: str, url: str) -> str:
    return f'\n[[alerting.channels]]\nname = "{name}"\ntype = "webhook"\nurl = "{url}"\n'


def delivery(max_attempts: int = 5, retry_base: str = "1s", retry_max: str = "5m") -> str:
    return (f'\n[alerting.delivery]\nmax_attempts = {max_attempts}\nretry_base = "{retry_base}"\n'
            f'retry_max = "{retry_max}"\n')


def new_server(server_factory, config: str, clock=None, store: str = "sqlite"):
    env = clock.env if isinstance(clock, Clock) else {}
    return server_factory.new(store, env=env, config_text=config)


class Inbox:
    """The POSTs one path of a receiver got, consumed in order: `expect(k)` waits for k new
    ones, checks that no more follow within QUIET, and returns their JSON bodies."""

    def __init__(self, rx: HttpReceiver, path: str, webhook_shape: bool = True):
        self.rx, self.path, self.n = rx, path, 0
        self.webhook_shape = webhook_shape

    def expect(self, k: int = 1, timeout: float = WAIT, quiet: float = QUIET, what: str = "") -> list:
        self.rx.wait(self.path, self.n + k, timeout, what=what)
        if quiet:
            self.rx.quiet(self.path, quiet, count=self.n + k)
        new = self.rx.requests(self.path)[self.n:self.n + k]
        self.n += k
        bodies = [r.json() for r in new]
        return [check_webhook(b) for b in bodies] if self.webhook_shape else bodies

    def nothing(self, seconds: float = QUIET) -> None:
        self.rx.quiet(self.path, seconds, count=self.n)

    def all(self) -> list:
        return [r.json() for r in self.rx.requests(self.path)]


def answered(req) -> bool:
    return req.answered is not None


def instances(body: dict) -> dict:
    return {a["labels"].get("instance"): a["status"] for a in body["alerts"]}


def make_token(s, rules: list, ttl: str = "8760h") -> str:
    name = uniq("alpol")
    r = s.api("PUT", f"/v1/sys/policies/{name}", json={"rules": rules})
    assert r.status_code in (200, 204), r.text
    r = s.api("POST", "/v1/auth/token/create", json={"policies": [name], "ttl": ttl})
    assert r.status_code == 200, r.text
    return r.json()["auth"]["client_token"]


def assert_error(r, status: int, code: Optional[str] = None) -> dict:
    """Steward's one error shape: {"error": {code, message, request_id}, "errors": [message]}."""
    assert r.status_code == status, f"{r.request.method} {r.url}: want {status}, got {r.status_code}: {r.text[:500]}"
    assert r.headers.get("content-type", "").startswith("application/json"), (r.headers, r.text[:300])
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"].strip(), r.text
    assert err.get("request_id"), r.text
    if code is not None:
        assert err["code"] == code, r.text
    return err


def cli_json(s, *args, **kw):
    return json.loads(ok(s.cli(*args, "-o", "json", **kw)).stdout)


def cli_list(s, *args) -> list:
    out = cli_json(s, *args)
    return out if isinstance(out, list) else data_list(out)


def printed_id(r) -> str:
    """The id a `... add` / `... start` command prints (alone on stdout)."""
    out = ok(r).stdout.strip()
    assert out and len(out.split()) == 1, f"expected just an id on stdout, got {out!r}"
    return out


@pytest.fixture
def rx():
    r = HttpReceiver()
    r.default("/v2/enqueue", Reply(202, b'{"status":"success","message":"Event processed"}',
                                   {"Content-Type": "application/json"}))
    yield r
    r.close()


# --------------------------------------------------------------------------------------------
# 3. grouping: group_wait, group_interval, repeat_interval, resolves, resolve_timeout


def test_grouping_waits_repeats_and_resolves(server_factory, tmp_path, rx):
    clock = Clock(tmp_path / "clock", T0)
    cfg = alerting_config(
        receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook"),
        group_wait="30s", group_interval="5m", repeat_interval="4h", resolve_timeout="24h",
        external_url="http://steward.example:8200",
    )
    s = new_server(server_factory, cfg, clock)
    hook = Inbox(rx, "/hook")

    a = Alert(clock, {"alertname": "HighLatency", "instance": "a", "severity": "page"}, {"summary": "latency on a"})
    b = Alert(clock, {"alertname": "HighLatency", "instance": "b", "severity": "page"}, {"summary": "latency on b"})
    disk = Alert(clock, {"alertname": "DiskFull", "instance": "a"})
    post_alerts(s, [a.firing(), b.firing(), disk.firing()])

    # Both groups are known at once, active, routed to `hook`...
    got = am_alerts(s)
    mine = {(x["labels"]["alertname"], x["labels"]["instance"]): x for x in got}
    assert set(mine) == {("HighLatency", "a"), ("HighLatency", "b"), ("DiskFull", "a")}, got
    for x in mine.values():
        assert x["status"]["state"] == "active", x
        assert x["status"]["silencedBy"] == [] and x["status"]["inhibitedBy"] == [], x
        assert [r["name"] for r in x["receivers"]] == ["hook"], x
        assert re.fullmatch(r"[0-9a-f]+", x["fingerprint"]), x
    assert len({x["fingerprint"] for x in mine.values()}) == 3
    assert ts(mine[("HighLatency", "a")]["startsAt"]) == a.starts_at
    groups = ok_json(s.api("GET", "/api/v2/alerts/groups"))
    glabels = sorted(g["labels"]["alertname"] for g in groups)
    assert glabels == ["DiskFull", "HighLatency"], groups
    assert all(g["receiver"]["name"] == "hook" for g in groups), groups
    assert sorted(len(g["alerts"]) for g in groups) == [1, 2], groups
    assert [r["name"] for r in ok_json(s.api("GET", "/api/v2/receivers"))] == ["hook"]

    # ...but nothing is sent before group_wait (30 s of server time) has passed.
    hook.nothing()
    clock.advance(20 * SECOND)
    hook.nothing()
    clock.advance(11 * SECOND)
    first = hook.expect(2, what="first notification of both groups")
    hl = by_alertname(first, "HighLatency")[0]
    df = by_alertname(first, "DiskFull")[0]
    assert hl["status"] == "firing" and hl["receiver"] == "hook"
    assert hl["groupLabels"] == {"alertname": "HighLatency"}
    assert hl["commonLabels"] == {"alertname": "HighLatency", "severity": "page"}
    assert hl["commonAnnotations"] == {}
    assert hl["externalURL"] == "http://steward.example:8200"
    assert hl["truncatedAlerts"] == 0
    assert instances(hl) == {"a": "firing", "b": "firing"}
    for x in hl["alerts"]:
        want = mine[("HighLatency", x["labels"]["instance"])]
        assert x["fingerprint"] == want["fingerprint"]
        assert x["annotations"] == {"summary": f"latency on {x['labels']['instance']}"}
        assert x["generatorURL"] == "http://127.0.0.1/graph"
        assert ts(x["startsAt"]) == a.starts_at
        assert x["endsAt"] == ZERO_TIME or ts(x["endsAt"]) > clock.now, x
    assert df["groupLabels"] == {"alertname": "DiskFull"}
    assert df["commonLabels"] == {"alertname": "DiskFull", "instance": "a"}
    assert hl["groupKey"] != df["groupKey"]
    assert "HighLatency" in hl["groupKey"] and "DiskFull" in df["groupKey"]
    req = rx.requests("/hook")[0]
    assert req.headers["content-type"].startswith("application/json")

    # A new alert in an existing group waits for group_interval (5 min), not group_wait.
    c = Alert(clock, {"alertname": "HighLatency", "instance": "c", "severity": "page"}, {"summary": "latency on c"})
    post_alerts(s, [c.firing()])
    clock.advance(MINUTE)
    hook.nothing()
    clock.advance(4 * MINUTE + 2 * SECOND)  # T0 + 5m33s: 5 min after the first flush
    (hl2,) = hook.expect(1, what="the group_interval flush with the new alert")
    assert hl2["groupKey"] == hl["groupKey"] and hl2["status"] == "firing"
    assert instances(hl2) == {"a": "firing", "b": "firing", "c": "firing"}

    # repeat_interval: unchanged groups are sent again once 4 h passed since their last send
    # (DiskFull: T0+31s; HighLatency: T0+5m33s), and not before.
    clock.set(T0 + 2 * HOUR)
    hook.nothing()
    clock.set(T0 + 4 * HOUR + MINUTE)
    (rep,) = hook.expect(1, what="the DiskFull repeat")
    assert rep["groupKey"] == df["groupKey"] and rep["status"] == "firing"
    assert [x["fingerprint"] for x in rep["alerts"]] == [x["fingerprint"] for x in df["alerts"]]
    clock.set(T0 + 4 * HOUR + 6 * MINUTE)
    (rep,) = hook.expect(1, what="the HighLatency repeat")
    assert rep["groupKey"] == hl["groupKey"]
    assert instances(rep) == {"a": "firing", "b": "firing", "c": "firing"}

    # One alert resolves: the next flush says so (the group still fires).
    post_alerts(s, [a.resolved()])
    assert {x["labels"]["instance"] for x in am_alerts(s) if x["labels"]["alertname"] == "HighLatency"} == {"b", "c"}
    clock.advance(5 * MINUTE + 2 * SECOND)
    (part,) = hook.expect(1, what="the partial resolve")
    assert part["groupKey"] == hl["groupKey"] and part["status"] == "firing"
    assert instances(part) == {"a": "resolved", "b": "firing", "c": "firing"}
    res_a = [x for x in part["alerts"] if x["labels"]["instance"] == "a"][0]
    assert ts(res_a["endsAt"]) <= clock.now and ts(res_a["endsAt"]) >= a.starts_at

    # All of them resolve: a resolved notification, then silence (no repeats of resolved groups).
    post_alerts(s, [b.resolved(), c.resolved()])
    clock.advance(5 * MINUTE + 2 * SECOND)
    (done,) = hook.expect(1, what="the resolved notification")
    assert done["groupKey"] == hl["groupKey"] and done["status"] == "resolved"
    assert {"b", "c"} <= set(instances(done)) and set(instances(done).values()) == {"resolved"}

    # DiskFull never got an endsAt: resolve_timeout (24 h after it was last posted) resolves it.
    clock.set(T0 + 23 * HOUR)  # a repeat of DiskFull only (HighLatency is over)
    (rep,) = hook.expect(1, what="the second DiskFull repeat")
    assert rep["groupKey"] == df["groupKey"] and rep["status"] == "firing"
    clock.set(T0 + 24 * HOUR + 10 * MINUTE)
    (gone,) = hook.expect(1, what="DiskFull resolved by resolve_timeout")
    assert gone["groupKey"] == df["groupKey"] and gone["status"] == "resolved"
    assert ts(gone["alerts"][0]["endsAt"]) <= clock.now
    assert not [x for x in am_alerts(s) if x["labels"]["alertname"] in ("DiskFull", "HighLatency")]
    clock.advance(5 * HOUR)
    hook.nothing()


def test_resolved_before_notified_and_refiring(server_factory, tmp_path, rx):
    """An alert that resolves before its group was ever flushed, or that arrives already
    resolved, is never notified (no resolve for a firing nobody heard of); an alert that
    resolved and fires again is notified again."""
    clock = Clock(tmp_path / "clock", T0)
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook"),
                          group_wait="30s", group_interval="1m", repeat_interval="4h")
    s = new_server(server_factory, cfg, clock)
    hook = Inbox(rx, "/hook")

    blip = Alert(clock, {"alertname": "Blip"})
    post_alerts(s, [blip.firing()])
    clock.advance(10 * SECOND)
    post_alerts(s, [blip.resolved()])
    old = Alert(clock, {"alertname": "AlreadyOver"})
    clock.advance(5 * SECOND)
    post_alerts(s, [old.resolved()])
    assert not [a for a in am_alerts(s) if a["labels"]["alertname"] in ("Blip", "AlreadyOver")]
    clock.advance(31 * SECOND)
    hook.nothing()
    clock.advance(2 * MINUTE)
    hook.nothing()

    # Fires, resolves (both notified), fires again: notified again, as firing.
    flap = Alert(clock, {"alertname": "Flap"})
    post_alerts(s, [flap.firing()])
    clock.advance(31 * SECOND)
    (f1,) = hook.expect(1)
    assert f1["status"] == "firing"
    post_alerts(s, [flap.resolved()])
    clock.advance(MINUTE + SECOND)
    (r1,) = hook.expect(1)
    assert r1["status"] == "resolved"
    clock.advance(MINUTE)
    flap2 = Alert(clock, {"alertname": "Flap"})
    post_alerts(s, [flap2.firing()])
    clock.advance(31 * SECOND)
    clock.advance(MINUTE)
    (f2,) = hook.expect(1, what="the second firing")
    assert f2["status"] == "firing" and [a["status"] for a in f2["alerts"]] == ["firing"]
    assert ts(f2["alerts"][0]["startsAt"]) == flap2.starts_at
    assert f2["alerts"][0]["fingerprint"] == f1["alerts"][0]["fingerprint"]


def test_nested_routes_continue_and_group_by_all(server_factory, tmp_path, rx):
    """Child routes match with =, !=, =~, !~ (regexes anchored, a missing label is ""); the
    first matching child wins unless it has `continue`; a child's group_by overrides the
    parent's; ["..."] groups by every label; what no child takes goes to the root receiver."""
    clock = Clock(tmp_path / "clock", T0)
    routes = (
        child_route("db-oncall", ['severity="critical"', 'service=~"db|api"'], cont=True,
                    group_by=["alertname", "service"])
        + child_route("noteam", ['team=""', 'severity!="critical"', 'alertname!~"Ignored.*"'])
        + child_route("everything", ['alertname!~"Ignored.*"'], group_by=["..."])
    )
    cfg = alerting_config(
        receiver("fallback", "fallback") + receiver("db-oncall", "oncall") + receiver("everything", "all")
        + receiver("noteam", "noteam")
        + webhook("fallback", f"{rx.url}/fallback") + webhook("oncall", f"{rx.url}/oncall")
        + webhook("all", f"{rx.url}/all") + webhook("noteam", f"{rx.url}/noteam"),
        route_extra=routes, receiver="fallback", group_wait="10s",
    )
    s = new_server(server_factory, cfg, clock)
    oncall, every, fallback, noteam = (Inbox(rx, "/oncall"), Inbox(rx, "/all"), Inbox(rx, "/fallback"),
                                       Inbox(rx, "/noteam"))
    alerts = {
        "h1": {"alertname": "Down", "severity": "critical", "service": "db", "host": "h1"},
        "h2": {"alertname": "Down", "severity": "critical", "service": "db", "host": "h2"},
        "web": {"alertname": "Down", "severity": "critical", "service": "web"},
        "dbx": {"alertname": "Down", "severity": "critical", "service": "dbx"},   # =~ is anchored
        "warn": {"alertname": "Warn", "severity": "warning"},                     # no team: team=""
        "warn-team": {"alertname": "Warn", "severity": "warning", "team": "x"},
        "noise": {"alertname": "IgnoredNoise", "severity": "info"},
    }
    post_alerts(s, [Alert(clock, l).firing() for l in alerts.values()])
    want = {"h1": ["db-oncall", "everything"], "h2": ["db-oncall", "everything"], "web": ["everything"],
            "dbx": ["everything"], "warn": ["noteam"], "warn-team": ["everything"], "noise": ["fallback"]}
    by_labels = {json.dumps(x["labels"], sort_keys=True): x for x in am_alerts(s)}
    got = {k: sorted(r["name"] for r in by_labels[json.dumps(l, sort_keys=True)]["receivers"])
           for k, l in alerts.items()}
    assert got == want
    clock.advance(11 * SECOND)
    (db,) = oncall.expect(1)
    assert db["receiver"] == "db-oncall"
    assert db["groupLabels"] == {"alertname": "Down", "service": "db"}
    assert sorted(x["labels"]["host"] for x in db["alerts"]) == ["h1", "h2"]
    # group_by ["..."]: every alert is its own group on `everything`.
    alls = every.expect(5)
    assert sorted(len(b["alerts"]) for b in alls) == [1, 1, 1, 1, 1]
    assert {json.dumps(b["groupLabels"], sort_keys=True) for b in alls} == {
        json.dumps(b["alerts"][0]["labels"], sort_keys=True) for b in alls}
    (nt,) = noteam.expect(1)
    assert [x["labels"] for x in nt["alerts"]] == [alerts["warn"]]
    (fb,) = fallback.expect(1)
    assert [x["labels"]["alertname"] for x in fb["alerts"]] == ["IgnoredNoise"]


def test_silence_matchers(server_factory, rx):
    """Silence matchers: =, != (isEqual false), =~ (anchored), !~; all must match."""
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook"),
                          group_wait="1s", group_interval="1s", resolve_timeout="1h")
    s = new_server(server_factory, cfg)
    clock = RealClock()
    alerts = {
        "a": {"alertname": "Lat", "env": "prod", "service": "api"},
        "b": {"alertname": "Lat", "env": "staging", "service": "api"},
        "c": {"alertname": "Lat", "env": "prod", "service": "apix"},
        "d": {"alertname": "Err", "env": "dev", "service": "db"},
    }
    post_alerts(s, [Alert(clock, l).firing() for l in alerts.values()])
    s1 = add_silence(s, clock, [matcher("alertname", "Lat"), matcher("env", "prod", equal=False)])   # b
    s2 = add_silence(s, clock, [matcher("service", "api|web", regex=True)])                           # a, b
    s3 = add_silence(s, clock, [matcher("service", "a.*", regex=True, equal=False),
                                matcher("env", "dev")])                                               # d
    s4 = add_silence(s, clock, [matcher("alertname", "Lat"), matcher("service", "nothing")])          # none
    got = {k: sorted(am_alert(s, **l)["status"]["silencedBy"]) for k, l in alerts.items()}
    assert got == {"a": [s2], "b": sorted([s1, s2]), "c": [], "d": [s3]}
    assert s4 in [x["id"] for x in ok_json(s.api("GET", "/api/v2/silences"))]
    msgs = rx.wait("/hook", 1, WAIT)
    rx.quiet("/hook", 2.0)
    sent = sorted(tuple(sorted(x["labels"].items())) for m in rx.requests("/hook") for x in m.json()["alerts"])
    assert sent == [tuple(sorted(alerts["c"].items()))], msgs


# --------------------------------------------------------------------------------------------
# 4. silences: they suppress new notifications only; a notified alert still resolves


def test_silence_after_firing_still_sends_the_resolve(server_factory, tmp_path, rx):
    clock = Clock(tmp_path / "clock", T0)
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook"),
                          group_wait="10s", group_interval="1m", repeat_interval="30m")
    s = new_server(server_factory, cfg, clock)
    hook = Inbox(rx, "/hook")

    down = Alert(clock, {"alertname": "ApiDown", "service": "api"}, {"summary": "api is down"})
    post_alerts(s, [down.firing()])
    clock.advance(11 * SECOND)
    (fired,) = hook.expect(1)
    assert fired["status"] == "firing"

    sid = add_silence(s, clock, [matcher("service", "api")], duration=2 * HOUR, comment="deploying api",
                      created_by="alice")
    sil = ok_json(s.api("GET", f"/api/v2/silence/{sid}"))
    assert sil["id"] == sid and sil["status"]["state"] == "active"
    assert sil["createdBy"] == "alice" and sil["comment"] == "deploying api"
    assert sil["matchers"] == [{"name": "service", "value": "api", "isRegex": False, "isEqual": True}]
    assert ts(sil["endsAt"]) == clock.now + 2 * HOUR
    assert sid in [x["id"] for x in ok_json(s.api("GET", "/api/v2/silences"))]
    a = am_alert(s, alertname="ApiDown")
    assert a["status"]["state"] == "suppressed" and a["status"]["silencedBy"] == [sid], a

    # Silenced: no repeat after repeat_interval, and a new matching alert is never sent, while
    # an alert the silence does not match still is.
    slow = Alert(clock, {"alertname": "ApiSlow", "service": "api"})
    db = Alert(clock, {"alertname": "DbDown", "service": "db"})
    post_alerts(s, [slow.firing(), db.firing()])
    clock.advance(31 * MINUTE)
    (dbn,) = hook.expect(1, what="the unsilenced DbDown")
    assert [x["labels"]["alertname"] for x in dbn["alerts"]] == ["DbDown"]
    clock.advance(MINUTE)
    hook.nothing()
    assert am_alert(s, alertname="ApiSlow")["status"]["silencedBy"] == [sid]

    # The notified alert resolves under the silence: the resolve still goes out.
    post_alerts(s, [down.resolved()])
    clock.advance(MINUTE + 2 * SECOND)
    (res,) = hook.expect(1, what="the resolve of the silenced ApiDown")
    assert res["groupKey"] == fired["groupKey"] and res["status"] == "resolved"
    assert [x["labels"]["alertname"] for x in res["alerts"]] == ["ApiDown"]
    assert res["alerts"][0]["fingerprint"] == fired["alerts"][0]["fingerprint"]

    # Expire the silence: ApiSlow (never notified) goes out at its group's next flush.
    r = s.api("DELETE", f"/api/v2/silence/{sid}")
    assert r.status_code == 200, r.text
    assert ok_json(s.api("GET", f"/api/v2/silence/{sid}"))["status"]["state"] == "expired"
    assert am_alert(s, alertname="ApiSlow")["status"]["state"] == "active"
    clock.advance(MINUTE + 2 * SECOND)
    (sl,) = hook.expect(1, what="ApiSlow after the silence expired")
    assert [x["labels"]["alertname"] for x in sl["alerts"]] == ["ApiSlow"] and sl["status"] == "firing"


# --------------------------------------------------------------------------------------------
# 5. inhibition


def test_inhibition_by_source_with_equal_labels(server_factory, tmp_path, rx):
    clock = Clock(tmp_path / "clock", T0)
    inhibit = (
        "\n[[alerting.inhibit_rules]]\n"
        "source_matchers = ['alertname=\"DatabaseDown\"']\n"
        "target_matchers = ['tier=\"app\"']\n"
        'equal = ["cluster"]\n'
    )
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook") + inhibit,
                          group_by='["alertname", "cluster"]', group_wait="10s", group_interval="1m")
    s = new_server(server_factory, cfg, clock)
    hook = Inbox(rx, "/hook")

    db_eu = Alert(clock, {"alertname": "DatabaseDown", "cluster": "eu", "tier": "db"})
    app_eu = Alert(clock, {"alertname": "AppErrors", "cluster": "eu", "tier": "app"})
    app_us = Alert(clock, {"alertname": "AppErrors", "cluster": "us", "tier": "app"})
    # Matches both sides of the rule: an alert never inhibits itself.
    self_ap = Alert(clock, {"alertname": "DatabaseDown", "cluster": "ap", "tier": "app"})
    post_alerts(s, [db_eu.firing(), app_eu.firing(), app_us.firing(), self_ap.firing()])

    src_fp = fingerprint_of(s, alertname="DatabaseDown", cluster="eu")
    eu = am_alert(s, alertname="AppErrors", cluster="eu")
    assert eu["status"]["state"] == "suppressed" and eu["status"]["inhibitedBy"] == [src_fp], eu
    assert eu["status"]["silencedBy"] == []
    us = am_alert(s, alertname="AppErrors", cluster="us")
    assert us["status"]["state"] == "active" and us["status"]["inhibitedBy"] == [], us
    assert am_alert(s, alertname="DatabaseDown", cluster="eu")["status"]["state"] == "active"
    ap = am_alert(s, alertname="DatabaseDown", cluster="ap")
    assert ap["status"]["state"] == "active" and ap["status"]["inhibitedBy"] == [], ap
    assert [x["labels"]["cluster"] for x in am_alerts(s, "inhibited=false") if x["labels"]["alertname"] == "AppErrors"] == ["us"]

    clock.advance(11 * SECOND)
    sent = hook.expect(3)
    assert sorted((b["groupLabels"]["alertname"], b["groupLabels"]["cluster"]) for b in sent) == [
        ("AppErrors", "us"), ("DatabaseDown", "ap"), ("DatabaseDown", "eu")]

    # The source resolves: the target is no longer inhibited and goes out.
    post_alerts(s, [db_eu.resolved()])
    clock.advance(MINUTE + 2 * SECOND)
    later = hook.expect(2)
    by = {(b["groupLabels"]["alertname"], b["groupLabels"]["cluster"]): b for b in later}
    assert set(by) == {("DatabaseDown", "eu"), ("AppErrors", "eu")}, later
    assert by[("DatabaseDown", "eu")]["status"] == "resolved"
    assert by[("AppErrors", "eu")]["status"] == "firing"
    assert am_alert(s, alertname="AppErrors", cluster="eu")["status"]["state"] == "active"
    assert not [x for x in am_alerts(s) if x["status"]["inhibitedBy"]]


# --------------------------------------------------------------------------------------------
# 6. escalation and acknowledgement (Slack at once, PagerDuty if not acked in 10 min)


def test_escalation_and_ack(server_factory, tmp_path, rx):
    clock = Clock(tmp_path / "clock", T0)
    routing_key = "R" + uniq("pdkey").replace("-", "")
    body = (
        receiver("hook", "hook")
        + receiver("oncall", "slack", escalation='[ { after = "10m", channels = ["pd"] } ]')
        + webhook("hook", f"{rx.url}/hook")
        + '\n[[alerting.channels]]\nname = "slack"\ntype = "slack"\nurl_secret = "dev/alerting/slack#url"\n'
        + ('\n[[alerting.channels]]\nname = "pd"\ntype = "pagerduty"\n'
           f'routing_key_secret = "dev/alerting/pd#key"\nurl = "{rx.url}/v2/enqueue"\n')
    )
    cfg = alerting_config(body, route_extra=child_route("oncall", ['severity="critical"']),
                          group_wait="10s", group_interval="1m", repeat_interval="1h")
    s = new_server(server_factory, cfg, clock)
    assert s.write("dev", "alerting/slack", {"url": f"{rx.url}/slack"}).status_code == 200
    assert s.write("dev", "alerting/pd", {"key": routing_key}).status_code == 200
    slack, pd, hook = Inbox(rx, "/slack", False), Inbox(rx, "/v2/enqueue", False), Inbox(rx, "/hook")

    api = Alert(clock, {"alertname": "ApiDown", "severity": "critical", "service": "api"}, {"summary": "API is down"})
    db = Alert(clock, {"alertname": "DbDown", "severity": "critical", "service": "db"}, {"summary": "DB is down"})
    warn = Alert(clock, {"alertname": "DiskSlow", "severity": "warning"})
    post_alerts(s, [api.firing(), db.firing(), warn.firing()])
    clock.advance(11 * SECOND)

    # Slack at once for both critical groups; the warning goes to the root receiver only.
    msgs = slack.expect(2)
    for m in msgs:
        assert isinstance(m["text"], str) and m["text"], m
        assert isinstance(m["blocks"], list) and m["blocks"], m
    assert sorted("ApiDown" if mentions(m, "ApiDown") else "DbDown" for m in msgs) == ["ApiDown", "DbDown"]
    assert all("FIRING" in m["text"].upper() for m in msgs), msgs
    (h,) = hook.expect(1)
    assert [x["labels"]["alertname"] for x in h["alerts"]] == ["DiskSlow"]
    pd.nothing(0.5)

    # DbDown is acknowledged within the 10 minutes (CLI); ApiDown is not.
    db_fp = fingerprint_of(s, alertname="DbDown")
    api_fp = fingerprint_of(s, alertname="ApiDown")
    clock.advance(4 * MINUTE)
    ok(s.cli("alerts", "ack", db_fp, "--comment", "db team on it"))
    # The ack (who, the comment) is on record: on the alert, or on its group.
    shown = cli_json(s, "alerts", "show", db_fp)
    groups = data_list(ok_json(s.api("GET", "/v1/sys/alerting/groups")))
    assert mentions(shown, "db team on it") or [g for g in groups if mentions(g, db_fp, "db team on it")], \
        f"the ack is nowhere: alert {shown}, groups {groups}"
    clock.advance(4 * MINUTE)
    pd.nothing()

    # 10 minutes without an ack: PagerDuty gets a trigger for ApiDown, never for DbDown.
    clock.set(T0 + 10 * MINUTE + 30 * SECOND)
    (trig,) = pd.expect(1, what="the escalation to PagerDuty")
    assert trig["routing_key"] == routing_key
    assert trig["event_action"] == "trigger"
    dedup = trig["dedup_key"]
    assert isinstance(dedup, str) and 0 < len(dedup) <= 255
    assert "ApiDown" in trig["payload"]["summary"], trig
    assert trig["payload"]["severity"] == "critical"
    assert trig["payload"]["source"]
    assert not mentions(trig, "DbDown")
    preq = rx.requests("/v2/enqueue")[0]
    assert preq.headers["content-type"].startswith("application/json")

    # Reminders (repeat_interval 1 h) for the unacknowledged group only.
    clock.set(T0 + HOUR + 2 * MINUTE)
    def firing(name):
        return [m for m in slack.all() if name in m["text"] and "FIRING" in m["text"].upper()]

    wait_for(lambda: firing("ApiDown")[1:], WAIT, what="the ApiDown reminder")
    slack.rx.quiet("/slack", QUIET)
    assert len(firing("DbDown")) == 1, slack.all()
    # (the ack itself may show as a line in Slack)
    assert {m["text"].split("]")[0] for m in slack.all() if "DbDown" in m["text"]} <= {"[FIRING:1", "[ACKNOWLEDGED"}
    assert not [b for b in pd.all() if mentions(b, "DbDown")]
    assert {b["dedup_key"] for b in pd.all()} == {dedup}

    # Acking the escalated group acknowledges the PagerDuty incident (same dedup key).
    r = s.api("POST", f"/v1/sys/alerting/alerts/{api_fp}/ack", json={"comment": "api team on it"})
    assert r.status_code in (200, 204), r.text
    clock.advance(MINUTE + 2 * SECOND)
    wait_for(lambda: [b for b in pd.all() if b["event_action"] == "acknowledge"], WAIT,
             what="a PagerDuty acknowledge")
    acks = [b for b in pd.all() if b["event_action"] == "acknowledge"]
    assert [b["dedup_key"] for b in acks] == [dedup] and acks[0]["routing_key"] == routing_key
    n_slack = rx.settle("/slack", QUIET)  # (an "acknowledged" line may have gone to Slack)
    clock.advance(2 * HOUR)  # no more reminders once acked
    rx.quiet("/slack", QUIET, count=n_slack)
    n_pd = rx.settle("/v2/enqueue", 0.5)

    # Both resolve: the resolves go out though both were acknowledged.
    post_alerts(s, [api.resolved(), db.resolved()])
    clock.advance(MINUTE + 2 * SECOND)

    def resolved_msgs():
        got = [m for m in slack.all()[n_slack:] if "RESOLVED" in m["text"].upper()]
        names = sorted("ApiDown" if mentions(m, "ApiDown") else "DbDown" for m in got)
        return names if names == ["ApiDown", "DbDown"] else None

    wait_for(resolved_msgs, WAIT, what="resolved Slack messages for ApiDown and DbDown")
    wait_for(lambda: [b for b in pd.all()[n_pd:] if b["event_action"] == "resolve"], WAIT, what="a PagerDuty resolve")
    res = [b for b in pd.all() if b["event_action"] == "resolve"]
    assert [b["dedup_key"] for b in res] == [dedup] and res[0]["routing_key"] == routing_key
    assert routing_key not in steward_logs(s)


# --------------------------------------------------------------------------------------------
# 7. maintenance windows: ad hoc (API and CLI) and recurring (cron in a time zone)


def test_maintenance_windows(server_factory, tmp_path, rx):
    clock = Clock(tmp_path / "clock", T0)
    nightly = (
        "\n[[alerting.maintenance]]\n"
        'name = "nightly"\ncron = "0 2 * * *"\nduration = "1h"\ntimezone = "Europe/Berlin"\n'
        "matchers = ['service=\"batch\"']\n"
    )
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook") + nightly,
                          group_wait="10s", group_interval="1m", repeat_interval="48h", resolve_timeout="72h")
    s = new_server(server_factory, cfg, clock)
    hook = Inbox(rx, "/hook")

    def names(bodies):
        return sorted(x["labels"]["alertname"] for b in bodies for x in b["alerts"])

    # API: a window on service="db" mutes DbSlow; ApiSlow goes out.
    mid = start_maintenance(s, ['service="db"'], "30m", "db migration")
    listed = data_list(ok_json(s.api("GET", "/v1/sys/alerting/maintenance")))
    assert [w for w in listed if str(w.get("id")) == mid and mentions(w, "db migration")], listed
    post_alerts(s, [Alert(clock, {"alertname": "DbSlow", "service": "db"}).firing(),
                    Alert(clock, {"alertname": "ApiSlow", "service": "api"}).firing()])
    clock.advance(11 * SECOND)
    assert names(hook.expect(1)) == ["ApiSlow"]
    clock.advance(5 * MINUTE)
    hook.nothing()
    # Ending it early: DbSlow goes out at its next flush.
    r = s.api("DELETE", f"/v1/sys/alerting/maintenance/{mid}")
    assert r.status_code in (200, 204), r.text
    clock.advance(MINUTE + 2 * SECOND)
    assert names(hook.expect(1)) == ["DbSlow"]

    # CLI: a window that ends by itself after its duration...
    w2 = printed_id(s.cli("maintenance", "start", 'service="cache"', "--duration", "30m", "--comment", "cache flush"))
    assert [w for w in cli_list(s, "maintenance", "list") if str(w.get("id")) == w2], "window not listed"
    post_alerts(s, [Alert(clock, {"alertname": "CacheCold", "service": "cache"}).firing()])
    clock.advance(11 * SECOND)
    clock.advance(10 * MINUTE)
    hook.nothing()
    clock.advance(21 * MINUTE)  # 31 min after it started
    assert names(hook.expect(1)) == ["CacheCold"]
    # ...and one ended with `maintenance end`.
    w3 = printed_id(s.cli("maintenance", "start", 'service=~"queue|stream"', "--duration", "2h", "--comment", "broker upgrade"))
    post_alerts(s, [Alert(clock, {"alertname": "QueueLag", "service": "queue"}).firing()])
    clock.advance(11 * SECOND)
    hook.nothing()
    ok(s.cli("maintenance", "end", w3))
    clock.advance(MINUTE + 2 * SECOND)
    assert names(hook.expect(1)) == ["QueueLag"]

    # Recurring: nightly 02:00-03:00 Europe/Berlin = 01:00-02:00 UTC in January.
    clock.set(datetime(2027, 1, 13, 1, 30, tzinfo=timezone.utc))
    post_alerts(s, [Alert(clock, {"alertname": "BatchLate", "service": "batch"}).firing()])
    clock.advance(11 * SECOND)
    clock.advance(5 * MINUTE)
    rx.quiet("/hook", QUIET)
    assert not by_alertname(hook.all(), "BatchLate"), "BatchLate was sent inside the nightly window (02:30 Berlin)"
    clock.set(datetime(2027, 1, 13, 2, 1, 30, tzinfo=timezone.utc))  # 03:01:30 in Berlin
    wait_for(lambda: by_alertname(hook.all(), "BatchLate"), WAIT, what="BatchLate after the nightly window")


def test_heartbeat_every_interval(server_factory, tmp_path, rx):
    clock = Clock(tmp_path / "clock", T0)
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook")
                          + f'\n[alerting.heartbeat]\nurl = "{rx.url}/beat"\ninterval = "1m"\n')
    s = new_server(server_factory, cfg, clock)
    rx.quiet("/beat", 1.5, count=1)  # at most one beat at start, none more while the clock stands
    n = len(rx.requests("/beat"))
    clock.advance(61 * SECOND)
    rx.wait("/beat", n + 1, WAIT, what="a heartbeat after 1 min")
    rx.quiet("/beat", QUIET, count=n + 1)
    clock.advance(61 * SECOND)
    rx.wait("/beat", n + 2, WAIT, what="the next heartbeat")
    assert all(r.method in ("GET", "POST") for r in rx.requests("/beat"))
    assert s.running


# --------------------------------------------------------------------------------------------
# 8. durable delivery: retries, Retry-After, dead letters, replay


def test_retries_dead_letters_and_replay(server_factory, rx):
    codes = ("r503", "r429", "r400", "r500")
    routes = "".join(child_route(c, [f'alertname="{c.upper()}"']) for c in codes)
    body = receiver("sink", "sink") + webhook("sink", f"{rx.url}/sink")
    for c in codes:
        body += receiver(c, c) + webhook(c, f"{rx.url}/{c}")
    body += delivery(max_attempts=3, retry_base="1s", retry_max="4s")
    cfg = alerting_config(body, route_extra=routes, receiver="sink", group_wait="1s", group_interval="1s",
                          repeat_interval="1h", resolve_timeout="1h", default_rules=True)
    s = new_server(server_factory, cfg)

    rx.script("/r503", Reply(503, b"try later"))
    rx.script("/r429", Reply(429, b"slow down", {"Retry-After": "3"}))
    rx.default("/r400", Reply(400, b'{"error": "unknown field"}', {"Content-Type": "application/json"}))
    rx.default("/r500", Reply(500, b"broken"))
    clock = RealClock()
    post_alerts(s, [Alert(clock, {"alertname": c.upper()}).firing() for c in codes])

    # 503 then 200: delivered after one retry, once.
    first, second = rx.wait("/r503", 2, WAIT, pred=answered)
    assert (first.answered, second.answered) == (503, 200)
    assert second.at - first.at >= 0.45, second.at - first.at
    assert first.json() == second.json(), "a retry sends the same notification"
    check_webhook(second.json())

    # 429 with Retry-After: 3 waits at least those 3 s (more than retry_base).
    first, second = rx.wait("/r429", 2, WAIT, pred=answered)
    assert (first.answered, second.answered) == (429, 200)
    assert second.at - first.at >= 2.8, f"Retry-After 3 not honoured: retried after {second.at - first.at:.2f}s"
    assert first.json()["groupKey"] == second.json()["groupKey"]

    # 500 every time: max_attempts (3) tries with growing waits, then a dead letter.
    tries = rx.wait("/r500", 3, WAIT + 5)
    assert tries[1].at - tries[0].at >= 0.45 and tries[2].at - tries[1].at >= 0.45, "no backoff between tries"

    def letters_for(channel):
        return [d for d in dead_letters(s) if letter_field(d, "channel") == channel]

    wait_for(lambda: letters_for("r500"), WAIT, what="the r500 dead letter")
    wait_for(lambda: letters_for("r400"), WAIT, what="the r400 dead letter")
    rx.quiet("/r500", 2.5, count=3)
    rx.quiet("/r503", 0.1, count=2)
    rx.quiet("/r429", 0.1, count=2)
    # 400 is not retried.
    assert len(rx.requests("/r400")) == 1
    assert not letters_for("r503") and not letters_for("r429")
    dl400, = letters_for("r400")
    dl500, = letters_for("r500")
    assert letter_field(dl400, "id") != letter_field(dl500, "id")
    assert mentions(dl400, "400") and mentions(dl500, "500"), (dl400, dl500)

    # Replay one by id (the receiver is fixed now): delivered, the same notification, gone
    # from the dead letters; the other stays.
    rx.default("/r400", Reply(200))
    r = s.api("POST", "/v1/sys/alerting/dead-letters/replay", json={"ids": [letter_field(dl400, "id")]})
    assert r.status_code in (200, 202), r.text
    again = rx.wait("/r400", 2, WAIT)[1]
    assert again.json()["groupKey"] == rx.requests("/r400")[0].json()["groupKey"]
    assert [x["labels"] for x in again.json()["alerts"]] == [{"alertname": "R400"}]
    wait_for(lambda: not letters_for("r400"), WAIT, what="the replayed letter to leave the dead letters")
    assert letters_for("r500")
    # Replay all (no ids).
    rx.default("/r500", Reply(200))
    r = s.api("POST", "/v1/sys/alerting/dead-letters/replay", json={})
    assert r.status_code in (200, 202), r.text
    rx.wait("/r500", 4, WAIT)
    wait_for(lambda: dead_letters(s) == [], WAIT, what="no dead letters left")
    rx.quiet("/r400", QUIET, count=2)


# --------------------------------------------------------------------------------------------
# 9. kill -9 in the middle of a delivery


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_kill_during_delivery_redelivers_with_same_keys(server_factory, rx, store):
    routing_key = "K" + uniq("pd").replace("-", "")
    body = (
        receiver("oncall", "hook", "pd") + webhook("hook", f"{rx.url}/hook")
        + ('\n[[alerting.channels]]\nname = "pd"\ntype = "pagerduty"\n'
           f'routing_key_secret = "dev/alerting/pd#key"\nurl = "{rx.url}/v2/enqueue"\n')
        + delivery(max_attempts=10, retry_base="1s", retry_max="2s")
    )
    cfg = alerting_config(body, receiver="oncall", group_wait="1s", group_interval="1s", repeat_interval="1h",
                          resolve_timeout="1h")
    s = new_server(server_factory, cfg, store=store)
    assert s.write("dev", "alerting/pd", {"key": routing_key}).status_code == 200
    # The first request to each channel hangs: Steward is killed while it waits for the answer.
    rx.script("/hook", Reply(hang=True))
    rx.script("/v2/enqueue", Reply(hang=True))

    alert = Alert(RealClock(), {"alertname": "PaymentsDown", "service": "payments"}, {"summary": "payments down"})
    post_alerts(s, [alert.firing()])
    before = rx.wait("/hook", 1, WAIT)[0]
    try:
        rx.wait("/v2/enqueue", 1, 3)
    except AssertionError:
        pass  # sent one after the other: PagerDuty's turn comes after the restart
    s.kill()
    rx.release()

    s.start()
    hooks = rx.wait("/hook", 1, WAIT + 5, pred=lambda r: r is not before and r.answered == 200,
                    what="the webhook delivered after the restart")
    pds = rx.wait("/v2/enqueue", 1, WAIT + 5, pred=lambda r: r.answered == 202,
                  what="the PagerDuty event delivered after the restart")
    rx.settle("/hook")
    for h in rx.requests("/hook"):
        assert h.json()["groupKey"] == before.json()["groupKey"]
        assert [x["fingerprint"] for x in h.json()["alerts"]] == [x["fingerprint"] for x in before.json()["alerts"]]
        assert h.json()["status"] == "firing"
    assert hooks[0].json()["alerts"][0]["labels"] == alert.labels
    # Steward's extension block names the notification: the one in flight is the one re-sent.
    ids = {h.json().get("steward", {}).get("id") for h in rx.requests("/hook")}
    assert len(ids) == 1, f"the webhook got different notifications around the kill: {ids}"
    dedups = {r.json()["dedup_key"] for r in rx.requests("/v2/enqueue")}
    assert len(dedups) == 1, f"one incident, one dedup key: {dedups}"
    assert {r.json()["event_action"] for r in pds} == {"trigger"}
    assert pds[0].json()["routing_key"] == routing_key
    assert dead_letters(s) == []

    # The resolve after the restart carries the same group key / dedup key.
    post_alerts(s, [alert.resolved()])
    res = rx.wait("/hook", 1, WAIT, pred=lambda r: r.json()["status"] == "resolved")[0]
    assert res.json()["groupKey"] == before.json()["groupKey"]
    pres = rx.wait("/v2/enqueue", 1, WAIT, pred=lambda r: r.json()["event_action"] == "resolve")[0]
    assert pres.json()["dedup_key"] in dedups


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_state_survives_a_restart(server_factory, rx, store):
    """A graceful restart keeps alerts, group state (no second firing notification), acks,
    silences and maintenance windows."""
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook"),
                          group_wait="1s", group_interval="1s", repeat_interval="4h", resolve_timeout="1h")
    s = new_server(server_factory, cfg, store=store)
    clock = RealClock()
    a = Alert(clock, {"alertname": "Before", "service": "api"})
    post_alerts(s, [a.firing()])
    first = check_webhook(rx.wait("/hook", 1, WAIT)[0].json())
    fp = fingerprint_of(s, alertname="Before")
    r = s.api("POST", f"/v1/sys/alerting/alerts/{fp}/ack", json={"comment": "seen"})
    assert r.status_code in (200, 204), r.text
    sid = add_silence(s, clock, [matcher("alertname", "SilencedLater")], comment="kept over restart")
    mid = start_maintenance(s, ['service="db"'], "30m", "kept over restart")
    n = rx.settle("/hook", 1.0)

    assert s.stop() == 0
    s.start()
    rx.quiet("/hook", 2.0, count=n)  # nothing is sent again
    assert am_alert(s, alertname="Before")["fingerprint"] == fp
    assert ok_json(s.api("GET", f"/api/v2/silence/{sid}"))["status"]["state"] == "active"
    assert [w for w in data_list(ok_json(s.api("GET", "/v1/sys/alerting/maintenance"))) if str(w.get("id")) == mid]

    post_alerts(s, [Alert(clock, {"alertname": "SilencedLater"}).firing(),
                    Alert(clock, {"alertname": "MutedLater", "service": "db"}).firing(),
                    Alert(clock, {"alertname": "After"}).firing()])
    after = rx.wait("/hook", 1, WAIT, pred=lambda r: "After" in r.body.decode())
    rx.quiet("/hook", 2.0, count=n + 1)
    assert [x["labels"]["alertname"] for x in after[0].json()["alerts"]] == ["After"]
    assert am_alert(s, alertname="SilencedLater")["status"]["silencedBy"] == [sid]

    # The acknowledged alert's resolve still goes out, on the same group.
    post_alerts(s, [a.resolved()])
    res = rx.wait("/hook", 1, WAIT, pred=lambda r: r.json()["status"] == "resolved")[0].json()
    assert res["groupKey"] == first["groupKey"]
    assert [x["fingerprint"] for x in res["alerts"]] == [fp]


def store_bytes(s) -> bytes:
    blob = b""
    for root, _, files in os.walk(s.data):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                blob += fh.read()
    if s.pg is not None and not s.pg.dropped:
        blob += s.pg.dump_data()
    return blob


def test_channel_secrets_never_leak(server_factory, rx):
    """Webhook URLs from secrets are credentials (Slack's carry the token in the path): a
    failing send must not put them in the log, the dead letters, the notification log, the
    alerts about the failure, the API or the store."""
    closed = free_port()
    slack_secret = "SLACKTOKEN" + uniq("s").replace("-", "")
    hook_secret = "HOOKTOKEN" + uniq("h").replace("-", "")
    slack_url = f"http://127.0.0.1:{closed}/services/T0123/B0456/{slack_secret}"
    hook_url = f"{rx.url}/hooks/{hook_secret}"
    body = (
        receiver("both", "slack", "hook", "ops") + webhook("ops", f"{rx.url}/ops")
        + '\n[[alerting.channels]]\nname = "slack"\ntype = "slack"\nurl_secret = "dev/alerting/leaky#url"\n'
        + '\n[[alerting.channels]]\nname = "hook"\ntype = "webhook"\nurl_secret = "dev/alerting/leaky#hook"\n'
        + delivery(max_attempts=2, retry_base="1s", retry_max="1s")
    )
    cfg = alerting_config(body, receiver="both", group_wait="1s", group_interval="1s", repeat_interval="1h",
                          resolve_timeout="1h", default_rules=True)
    s = new_server(server_factory, cfg)
    assert s.write("dev", "alerting/leaky", {"url": slack_url, "hook": hook_url}).status_code == 200
    rx.default(f"/hooks/{hook_secret}", Reply(500, b"internal error"))
    post_alerts(s, [Alert(RealClock(), {"alertname": "Leaky"}).firing()])

    wait_for(lambda: {letter_field(d, "channel") for d in dead_letters(s)} >= {"slack", "hook"}, WAIT + 5,
             what="dead letters for both channels")
    rx.wait("/ops", 1, WAIT, pred=lambda r: "StewardChannelFailing" in r.body.decode())
    seen = {
        "server log": steward_logs(s),
        "GET dead-letters": s.api("GET", "/v1/sys/alerting/dead-letters").text,
        "GET log": s.api("GET", "/v1/sys/alerting/log?limit=1000").text,
        "GET /api/v2/alerts": s.api("GET", "/api/v2/alerts").text,
        "GET /api/v2/status": s.api("GET", "/api/v2/status").text,
        "GET /v1/sys/alerting/alerts": s.api("GET", "/v1/sys/alerting/alerts").text,
        "alerts dead-letters": ok(s.cli("alerts", "dead-letters", "-o", "json")).stdout,
        "alerts log": ok(s.cli("alerts", "log", "-o", "json")).stdout,
        "notifications to ops": "\n".join(r.body.decode() for r in rx.requests("/ops")),
        "audit log": json.dumps(s.audit_lines()),
    }
    for where, text in seen.items():
        for secret in (slack_secret, hook_secret):
            assert secret not in text, f"{secret} ({'Slack' if secret == slack_secret else 'webhook'} URL) " \
                f"appears in {where}: ...{text[max(0, text.find(secret) - 300):text.find(secret) + 60]}..."
    at_rest = store_bytes(s)
    for secret in (slack_secret, hook_secret):
        assert secret.encode() not in at_rest, f"{secret} is stored in plaintext"


# --------------------------------------------------------------------------------------------
# 10. a failing channel raises StewardChannelFailing, delivered through the others


def test_failing_channel_raises_steward_channel_failing(server_factory, rx):
    body = (receiver("both", "broken", "ops") + webhook("broken", f"{rx.url}/broken")
            + webhook("ops", f"{rx.url}/ops") + delivery(max_attempts=2, retry_base="1s", retry_max="1s"))
    cfg = alerting_config(body, receiver="both", group_wait="1s", group_interval="1s", repeat_interval="1h",
                          resolve_timeout="1h", default_rules=True)
    s = new_server(server_factory, cfg)
    rx.default("/broken", Reply(400, b"no such hook"))
    post_alerts(s, [Alert(RealClock(), {"alertname": "OrdersDown", "team": "shop"}).firing()])

    rx.wait("/broken", 1, WAIT)
    rx.wait("/ops", 1, WAIT, pred=lambda r: "OrdersDown" in r.body.decode())
    failing = rx.wait("/ops", 1, WAIT + 5, pred=lambda r: "StewardChannelFailing" in r.body.decode(),
                      what="StewardChannelFailing")[0].json()
    check_webhook(failing)
    fa = [x for x in failing["alerts"] if x["labels"].get("alertname") == "StewardChannelFailing"]
    assert fa and fa[0]["labels"]["channel"] == "broken", failing
    assert failing["receiver"] == "both"
    # Routed through the tree, but never sent through the failing channel itself.
    rx.quiet("/broken", 2.0)
    assert [r.json()["alerts"][0]["labels"]["alertname"] for r in rx.requests("/broken")] == ["OrdersDown"]
    a = am_alert(s, alertname="StewardChannelFailing", channel="broken")
    assert a["status"]["state"] == "active"
    assert [d for d in dead_letters(s) if letter_field(d, "channel") == "broken"]


# --------------------------------------------------------------------------------------------
# 11. email over SMTP (plain, and STARTTLS with a self-signed certificate)


def test_email_plain_and_starttls(server_factory, tmp_path, rx):
    plain = SmtpSink()
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    secure = SmtpSink(certdir=tls_dir)
    try:
        body = (
            receiver("mail", "mail", "mail_tls")
            + ('\n[[alerting.channels]]\nname = "mail"\ntype = "email"\nhost = "127.0.0.1"\n'
               f'port = {plain.port}\ntls = "none"\nfrom = "steward@example.com"\nto = ["ops@example.com"]\n')
            + ('\n[[alerting.channels]]\nname = "mail_tls"\ntype = "email"\nhost = "127.0.0.1"\n'
               f'port = {secure.port}\ntls = "starttls"\naccept_invalid_certs = true\n'
               'from = "steward@example.com"\nto = ["ops@example.com", "dba@example.com"]\n')
        )
        cfg = alerting_config(body, receiver="mail", group_wait="1s", group_interval="1s",
                              repeat_interval="1h", resolve_timeout="1h")
        s = new_server(server_factory, cfg)
        alert = Alert(RealClock(), {"alertname": "DiskFull", "instance": "db1", "severity": "warning"},
                      {"summary": "Disk almost full on db1"})
        post_alerts(s, [alert.firing()])

        (m,) = plain.wait(1, WAIT)
        assert m.mail_from == "steward@example.com" and m.rcpt_tos == ["ops@example.com"]
        assert "DiskFull" in m.subject and "FIRING" in m.subject.upper(), m.subject
        assert "steward@example.com" in str(m.message["From"])
        assert "ops@example.com" in str(m.message["To"])
        assert m.message["Date"]
        assert "Disk almost full on db1" in m.text()
        assert not m.tls
        (t,) = secure.wait(1, WAIT)
        assert t.tls, "the starttls channel sent without STARTTLS"
        assert sorted(t.rcpt_tos) == ["dba@example.com", "ops@example.com"]
        assert "DiskFull" in t.subject

        post_alerts(s, [alert.resolved()])
        m2 = plain.wait(2, WAIT)[1]
        assert "RESOLVED" in m2.subject.upper() and "DiskFull" in m2.subject, m2.subject
        secure.wait(2, WAIT)
        # Every message carries a Message-ID (RFC 5322; large providers refuse mail without one).
        for mail in plain.snapshot() + secure.snapshot():
            assert mail.message["Message-ID"], f"no Message-ID header in:\n{mail.raw.decode(errors='replace')[:1500]}"
    finally:
        plain.close()
        secure.close()


def test_slack_min_interval_spaces_messages(server_factory, rx):
    body = (receiver("chat", "slack")
            + '\n[[alerting.channels]]\nname = "slack"\ntype = "slack"\nurl_secret = "dev/alerting/chat#url"\n'
            + 'min_interval = "2s"\n')
    cfg = alerting_config(body, receiver="chat", group_wait="1s", group_interval="1s", repeat_interval="1h",
                          resolve_timeout="1h")
    s = new_server(server_factory, cfg)
    assert s.write("dev", "alerting/chat", {"url": f"{rx.url}/chat"}).status_code == 200
    clock = RealClock()
    post_alerts(s, [Alert(clock, {"alertname": f"Noisy{i}"}).firing() for i in range(3)])
    msgs = rx.wait("/chat", 3, WAIT + 5)
    gaps = [b.at - a.at for a, b in zip(msgs, msgs[1:])]
    assert all(g >= 1.8 for g in gaps), f"min_interval 2s not kept between Slack messages: {gaps}"
    assert sorted(m.json()["text"].split("]")[1].split(":")[0].strip() for m in msgs) == ["Noisy0", "Noisy1", "Noisy2"]


# --------------------------------------------------------------------------------------------
# 12. the CLI: alerts list/show/log/dead-letters, silences, notify test


def test_cli_alerts_log_dead_letters_silences(server_factory, rx):
    routes = child_route("bad", ['alertname="GoesNowhere"'])
    body = (receiver("hook", "hook") + receiver("bad", "bad") + webhook("hook", f"{rx.url}/hook")
            + webhook("bad", f"{rx.url}/bad") + delivery(max_attempts=2, retry_base="1s", retry_max="1s"))
    cfg = alerting_config(body, route_extra=routes, group_wait="1s", group_interval="1s", repeat_interval="1h",
                          resolve_timeout="1h")
    s = new_server(server_factory, cfg)
    rx.default("/bad", Reply(404, b"gone"))

    # notify test: a test notification to the channel, now.
    ok(s.cli("notify", "test", "hook"))
    t = rx.wait("/hook", 1, WAIT)[0]
    check_webhook(t.json())
    r = s.cli("notify", "test", "no-such-channel")
    assert r.returncode != 0 and "no-such-channel" in r.stderr, (r.stdout, r.stderr)

    clock = RealClock()
    post_alerts(s, [Alert(clock, {"alertname": "CliAlert", "severity": "info"}).firing(),
                    Alert(clock, {"alertname": "GoesNowhere"}).firing()])
    rx.wait("/hook", 1, WAIT, pred=lambda r: "CliAlert" in r.body.decode())
    rx.wait("/bad", 1, WAIT)

    listed = cli_list(s, "alerts", "list")
    mine = [a for a in listed if mentions(a, "CliAlert")]
    assert len(mine) == 1, listed
    fp = fingerprint_of(s, alertname="CliAlert")
    assert mentions(mine[0], fp)
    shown = cli_json(s, "alerts", "show", fp)
    assert mentions(shown, fp, "CliAlert", "severity")
    api_list = steward_alerts(s)
    assert [a for a in api_list if mentions(a, fp, "CliAlert")]
    r = s.cli("alerts", "show", "0000000000000000")
    assert r.returncode != 0

    # The notification log: what went to which channel, when, and how it ended.
    def log_for(channel):
        return [e for e in cli_list(s, "alerts", "log") if e.get("channel") == channel]

    hook_entries = wait_for(lambda: [e for e in log_for("hook") if mentions(e, "CliAlert")], WAIT,
                            what="a log entry for CliAlert on hook")
    e = hook_entries[-1]
    assert "outcome" in e, e
    assert mentions(e, "deliver") or mentions(e, "sent") or mentions(e, "ok"), e
    wait_for(lambda: log_for("bad"), WAIT, what="a log entry for the bad channel")
    api_log = notification_log(s, limit=1)
    assert len(api_log) == 1

    # Dead letters: the 404 one; --replay re-sends it (fixed receiver) and empties the list.
    letters = wait_for(lambda: [d for d in cli_list(s, "alerts", "dead-letters") if letter_field(d, "channel") == "bad"],
                       WAIT, what="the dead letter in the CLI")
    assert len(letters) == 1 and letter_field(letters[0], "id")
    assert len(rx.requests("/bad")) == 1, "404 is not retried"
    rx.default("/bad", Reply(200))
    ok(s.cli("alerts", "dead-letters", "--replay"))
    rx.wait("/bad", 2, WAIT)
    wait_for(lambda: cli_list(s, "alerts", "dead-letters") == [], WAIT, what="no dead letters")

    # Silences from the CLI.
    sid = printed_id(s.cli("silence", "add", 'alertname="CliAlert"', 'severity=~"info|debug"', "--duration", "2h",
                           "--comment", "cli silence", "--author", "tester"))
    sil = ok_json(s.api("GET", f"/api/v2/silence/{sid}"))
    assert sil["createdBy"] == "tester" and sil["comment"] == "cli silence"
    assert sorted((m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in sil["matchers"]) == [
        ("alertname", "CliAlert", False, True), ("severity", "info|debug", True, True)]
    assert 2 * HOUR - MINUTE <= ts(sil["endsAt"]) - ts(sil["startsAt"]) <= 2 * HOUR + MINUTE
    sl = [x for x in cli_list(s, "silence", "list") if mentions(x, sid)]
    assert len(sl) == 1 and mentions(sl[0], "cli silence"), sl
    wait_for(lambda: am_alert(s, alertname="CliAlert")["status"]["silencedBy"] == [sid], WAIT,
             what="CliAlert silenced")
    ok(s.cli("silence", "expire", sid))
    assert ok_json(s.api("GET", f"/api/v2/silence/{sid}"))["status"]["state"] == "expired"
    assert am_alert(s, alertname="CliAlert")["status"]["silencedBy"] == []
    r = s.cli("silence", "add", 'alertname=~"("', "--duration", "1h", "--comment", "bad regex")
    assert r.returncode != 0 and r.stderr.strip(), (r.stdout, r.stderr)
    r = s.cli("silence", "add", "alertname", "--duration", "1h", "--comment", "no operator")
    assert r.returncode != 0 and r.stderr.strip(), (r.stdout, r.stderr)


# --------------------------------------------------------------------------------------------
# 13. Steward's own events raise alerts


FAILING_ROTATOR = r"""#!/bin/sh
req=$(cat)
if [ -e "$FAIL_FLAG" ]; then
  echo "target is down" >&2
  exit 1
fi
case "$req" in
  *'"action":"create"'*)
    printf '{"credential": {"password": "cmd-%s"}}\n' "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')" ;;
esac
exit 0
"""


def events_of(s, path: str, kind: str) -> list:
    out, after = [], 0
    while True:
        page = ok_json(s.api("GET", f"/v1/sys/events?after={after}&limit=1000"))["data"]
        out += page["events"]
        if not page["events"]:
            break
        after = page["next"]
    return [e for e in out if e["path"] == path and e["kind"] == kind]


def test_failed_rotation_raises_and_resolves_an_alert(server_factory, tmp_path, rx):
    rule = (
        "\n[[alerting.rules]]\n"
        'event = "rotation.failed"\nresolve_event = "rotation.finished"\nalertname = "RotationFailed"\n'
        'labels = { severity = "warning" }\n'
        'annotations = { summary = "Rotation of {env}/{path} failed: {detail.reason}" }\n'
        'for = "0s"\nfail_after = 1\nrecover_after = 1\n'
    )
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook") + rule
                          + '\n[rotation]\njitter = "0s"\nretry_base = "100ms"\nretry_max = "1s"\n',
                          group_wait="1s", group_interval="1s", repeat_interval="1h")
    s = new_server(server_factory, cfg)
    script = tmp_path / "rotate.sh"
    script.write_text(FAILING_ROTATOR)
    os.chmod(script, 0o755)
    flag = tmp_path / "fail"
    flag.write_text("1")
    path = f"{uniq('rot')}/db"
    assert s.write("dev", path, {"password": "initial"}).status_code == 200
    r = s.api("PUT", f"/v1/sys/rotation/config/dev/{path}", json={
        "rotator": "command", "schedule": {"manual": True}, "max_attempts": 1,
        "settings": {"command": [str(script)], "env": {"PATH": "/usr/bin:/bin", "FAIL_FLAG": str(flag)},
                     "timeout": "20s"}})
    assert r.status_code == 200, r.text

    assert s.api("POST", f"/v1/sys/rotation/rotate/dev/{path}").status_code == 202
    failed = wait_for(lambda: events_of(s, path, "rotation.failed"), WAIT, what="rotation.failed")[0]
    req = rx.wait("/hook", 1, WAIT, pred=lambda r: "RotationFailed" in r.body.decode())[0]
    n = check_webhook(req.json())
    (a,) = [x for x in n["alerts"] if x["labels"]["alertname"] == "RotationFailed"]
    assert a["status"] == "firing"
    assert a["labels"]["severity"] == "warning"
    assert a["labels"].get("env") == "dev" and a["labels"].get("path") == path, a["labels"]
    assert a["annotations"]["summary"] == f"Rotation of dev/{path} failed: {failed['detail']['reason']}"
    assert "target is down" in a["annotations"]["summary"]
    assert am_alert(s, alertname="RotationFailed")["status"]["state"] == "active"

    # The next rotation succeeds: rotation.finished resolves the alert.
    flag.unlink()
    assert s.api("POST", f"/v1/sys/rotation/rotate/dev/{path}").status_code == 202
    wait_for(lambda: events_of(s, path, "rotation.finished"), WAIT, what="rotation.finished")
    res = rx.wait("/hook", 1, WAIT, pred=lambda r: "RotationFailed" in r.body.decode()
                  and r.json()["status"] == "resolved")[0].json()
    assert res["groupKey"] == n["groupKey"]
    assert [x["fingerprint"] for x in res["alerts"]] == [a["fingerprint"]]


def rotate(s, path: str, n_events: int, kind: str) -> None:
    """POST rotate and wait until ENV dev/PATH has `n_events` events of `kind`."""
    r = s.api("POST", f"/v1/sys/rotation/rotate/dev/{path}")
    assert r.status_code == 202, r.text
    wait_for(lambda: len(events_of(s, path, kind)) >= n_events, WAIT, what=f"{kind} #{n_events}")


def rule_alert(s, alertname: str) -> Optional[dict]:
    hits = [a for a in steward_alerts(s) if a["labels"].get("alertname") == alertname]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


def test_rule_for_fail_after_and_recover_after(server_factory, tmp_path, rx):
    """A rule's flap control: `fail_after` raising events in a row raise the alert, which
    stays pending for `for` before it fires; `recover_after` resolving events resolve it."""
    clock = Clock(tmp_path / "clock", T0)
    rule = (
        "\n[[alerting.rules]]\n"
        'event = "rotation.failed"\nresolve_event = "rotation.finished"\nalertname = "RotationFlaky"\n'
        'labels = { severity = "critical" }\nannotations = { summary = "{env}/{path}: {detail.reason}" }\n'
        'for = "5m"\nfail_after = 2\nrecover_after = 2\n'
    )
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook") + rule
                          + '\n[rotation]\njitter = "0s"\n', group_wait="10s", group_interval="1m")
    s = new_server(server_factory, cfg, clock)
    hook = Inbox(rx, "/hook")
    script = tmp_path / "rotate.sh"
    script.write_text(FAILING_ROTATOR)
    os.chmod(script, 0o755)
    flag = tmp_path / "fail"
    flag.write_text("1")
    path = f"{uniq('flap')}/db"
    assert s.write("dev", path, {"password": "initial"}).status_code == 200
    r = s.api("PUT", f"/v1/sys/rotation/config/dev/{path}", json={
        "rotator": "command", "schedule": {"manual": True}, "max_attempts": 1,
        "settings": {"command": [str(script)], "env": {"PATH": "/usr/bin:/bin", "FAIL_FLAG": str(flag)},
                     "timeout": "20s"}})
    assert r.status_code == 200, r.text

    # One failure: below fail_after.
    rotate(s, path, 1, "rotation.failed")
    time.sleep(1.5)  # the pipeline follows events every 200 ms
    assert rule_alert(s, "RotationFlaky") is None
    # The second in a row raises it, pending for 5 min: nothing is sent yet.
    rotate(s, path, 2, "rotation.failed")
    a = wait_for(lambda: rule_alert(s, "RotationFlaky"), WAIT, what="the raised alert")
    assert a["state"] == "pending", a
    clock.advance(2 * MINUTE)
    hook.nothing()
    clock.advance(3 * MINUTE + SECOND)
    wait_for(lambda: (rule_alert(s, "RotationFlaky") or {}).get("state") == "firing", WAIT, what="firing after `for`")
    clock.advance(11 * SECOND)
    (n,) = hook.expect(1)
    (x,) = n["alerts"]
    assert x["status"] == "firing" and x["labels"]["alertname"] == "RotationFlaky"
    assert x["labels"]["severity"] == "critical" and x["labels"]["path"] == path
    assert x["annotations"]["summary"].startswith(f"dev/{path}: ") and "target is down" in x["annotations"]["summary"]

    # One success: below recover_after, still firing.
    flag.unlink()
    rotate(s, path, 1, "rotation.finished")
    time.sleep(1.5)
    clock.advance(MINUTE + 2 * SECOND)
    hook.nothing()
    assert rule_alert(s, "RotationFlaky")["state"] == "firing"
    # The second resolves it.
    rotate(s, path, 2, "rotation.finished")
    time.sleep(1.5)
    clock.advance(MINUTE + 2 * SECOND)
    (res,) = hook.expect(1, what="the resolve after recover_after")
    assert res["status"] == "resolved" and res["groupKey"] == n["groupKey"]


def test_expiring_secret_raises_an_alert_with_default_rules(server_factory, tmp_path, rx):
    clock = Clock(tmp_path / "clock", T0)
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook")
                          + '\n[rotation]\njitter = "0s"\nexpiry_scan = "1s"\n',
                          group_wait="10s", group_interval="1m", default_rules=True)
    s = new_server(server_factory, cfg, clock)
    path = f"{uniq('exp')}/tls-cert"
    r = s.write("dev", path, {"cert": "PEM"}, metadata={"expires_at": (clock.now + 12 * HOUR).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                       "owner": "team-pki"})
    assert r.status_code == 200, r.text
    clock.advance(2 * SECOND)  # the scan runs once per clock value
    wait_for(lambda: events_of(s, path, "secret.expiring"), WAIT, what="secret.expiring")
    # The alerting loop turns the event into an alert on its next pass: wait for the alert
    # before moving the clock past group_wait, or its group would start after the move.
    wait_for(lambda: [x for x in steward_alerts(s) if mentions(x, path)], WAIT, what="the SecretExpiring alert")
    clock.advance(11 * SECOND)
    req = rx.wait("/hook", 1, WAIT, pred=lambda r: path in r.body.decode(), what=f"an alert about {path}")[0]
    n = check_webhook(req.json())
    assert n["status"] == "firing"
    assert [x for x in am_alerts(s) if mentions(x, path)]


# --------------------------------------------------------------------------------------------
# 14. grants


def test_alerting_needs_the_grants(server_factory, rx):
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook"),
                          group_wait="1s", group_interval="1s", resolve_timeout="1h")
    s = new_server(server_factory, cfg)
    nobody = make_token(s, [{"env": "dev", "path": "app/**", "capabilities": ["read", "write"]}])
    reader = make_token(s, [{"env": "sys", "path": "alerts", "capabilities": ["read"]}])
    writer = make_token(s, [{"env": "sys", "path": "alerts", "capabilities": ["write"]}])
    silencer = make_token(s, [{"env": "sys", "path": "silences", "capabilities": ["read", "write"]}])
    admin = make_token(s, [{"env": "sys", "path": "alerting", "capabilities": ["admin"]}])
    clock = RealClock()

    def alert(name):
        return [Alert(clock, {"alertname": name}).firing()]

    for tok in (nobody, reader, silencer, admin):
        assert_error(raw_post_alerts(s, alert("Forbidden"), token=tok), 403, "permission_denied")
    assert_error(raw_post_alerts(s, alert("Forbidden"), token=None), 403, "missing_token")
    r = raw_post_alerts(s, alert("Forbidden"), token="s.not-a-token")
    assert r.status_code in (401, 403), r.text
    post_alerts(s, alert("Allowed"), token=writer)
    post_alerts(s, alert("AllowedBearer"), token=writer, bearer=True)
    post_alerts(s, alert("AllowedRoot"))
    names = sorted(a["labels"]["alertname"] for a in am_alerts(s))
    assert names == ["Allowed", "AllowedBearer", "AllowedRoot"], names

    # Reading needs `read` on sys/alerts.
    assert sorted(a["labels"]["alertname"] for a in am_alerts(s, token=reader)) == names
    assert_error(s.api("GET", "/api/v2/alerts", token=nobody), 403, "permission_denied")
    assert_error(s.api("GET", "/v1/sys/alerting/alerts", token=nobody), 403, "permission_denied")
    assert steward_alerts(s, token=reader)

    # Silences need `write` on sys/silences.
    sil = {"matchers": [matcher("alertname", "Allowed")], "startsAt": "2020-01-01T00:00:00Z",
           "endsAt": "2099-01-01T00:00:00Z", "createdBy": "x", "comment": "y"}
    for tok in (writer, reader, nobody):
        assert_error(s.api("POST", "/api/v2/silences", token=tok, json=sil), 403, "permission_denied")
    assert ok_json(s.api("POST", "/api/v2/silences", token=silencer, json=sil))["silenceID"]

    # Ack needs write on sys/alerts; replay and notify test need admin on sys/alerting.
    fp = fingerprint_of(s, alertname="Allowed")
    assert_error(s.api("POST", f"/v1/sys/alerting/alerts/{fp}/ack", token=reader, json={"comment": "x"}), 403)
    for path in ("/v1/sys/alerting/dead-letters/replay", "/v1/sys/alerting/notify-test/hook"):
        for tok in (writer, silencer, reader):
            assert_error(s.api("POST", path, token=tok, json={}), 403, "permission_denied")
    assert_error(s.api("GET", "/v1/sys/alerting/dead-letters", token=writer), 403, "permission_denied")
    n = len(rx.requests("/hook"))
    r = s.api("POST", "/v1/sys/alerting/notify-test/hook", token=admin, json={})
    assert r.status_code in (200, 202), r.text
    rx.wait("/hook", n + 1, WAIT, pred=None)
    r = s.api("POST", "/v1/sys/alerting/dead-letters/replay", token=admin, json={})
    assert r.status_code in (200, 202), r.text
    # Nothing the refused requests carried got in.
    assert not [a for a in am_alerts(s) if a["labels"]["alertname"] == "Forbidden"]


def test_alerting_changes_are_audited(server_factory, rx):
    """Every alerting request under /v1 (and every change through /api/v2) leaves exactly one
    audit entry under its request id, refused ones too."""
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", f"{rx.url}/hook"),
                          group_wait="1s", group_interval="1s", resolve_timeout="1h")
    s = new_server(server_factory, cfg)
    nobody = make_token(s, [{"env": "dev", "path": "app/**", "capabilities": ["read"]}])
    clock = RealClock()
    calls = {}

    def call(name, method, path, token=DEFAULT, **kw):
        rid = f"req-{uniq(name)}"
        r = s.api(method, path, token=token, headers={"X-Request-Id": rid}, **kw)
        calls[name] = (rid, r.status_code)
        return r

    assert call("post-alerts", "POST", "/api/v2/alerts", json=[Alert(clock, {"alertname": "Audited"}).firing()]).status_code == 200
    assert call("post-alerts-denied", "POST", "/api/v2/alerts", token=nobody,
                json=[Alert(clock, {"alertname": "Denied"}).firing()]).status_code == 403
    rx.wait("/hook", 1, WAIT)
    fp = fingerprint_of(s, alertname="Audited")
    sil = {"matchers": [matcher("alertname", "Audited")], "startsAt": iso_now(), "endsAt": "2099-01-01T00:00:00Z",
           "createdBy": "auditor", "comment": "audit me"}
    sid = call("post-silence", "POST", "/api/v2/silences", json=sil).json()["silenceID"]
    assert call("delete-silence", "DELETE", f"/api/v2/silence/{sid}").status_code == 200
    assert call("ack", "POST", f"/v1/sys/alerting/alerts/{fp}/ack", json={"comment": "x"}).status_code in (200, 204)
    mid = call("maintenance-start", "POST", "/v1/sys/alerting/maintenance",
               json={"matchers": ['service="db"'], "duration": "30m", "comment": "x"}).json()["data"]["id"]
    assert call("maintenance-end", "DELETE", f"/v1/sys/alerting/maintenance/{mid}").status_code in (200, 204)
    assert call("replay", "POST", "/v1/sys/alerting/dead-letters/replay", json={}).status_code in (200, 202)
    assert call("notify-test", "POST", "/v1/sys/alerting/notify-test/hook", json={}).status_code in (200, 202)
    assert call("list", "GET", "/v1/sys/alerting/alerts").status_code == 200
    assert call("log", "GET", "/v1/sys/alerting/log?limit=5").status_code == 200
    rid = f"req-{uniq('bad-json')}"
    r = s.api("POST", "/v1/sys/alerting/maintenance", data="{oops",
              headers={"Content-Type": "application/json", "X-Request-Id": rid})
    assert r.status_code == 400
    calls["bad-json"] = (rid, 400)

    lines = s.audit_lines()
    for name, (rid, status) in calls.items():
        mine = [l for l in lines if l.get("request_id") == rid]
        assert len(mine) == 1, f"{name} (HTTP {status}): {len(mine)} audit entries: {mine}"


def iso_now() -> str:
    return utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# 15. bad input


@pytest.mark.parametrize("payload,hint", [
    ("{not json", None),
    ('{"labels": {"alertname": "NotAList"}}', None),
    ('[{"annotations": {"summary": "no labels"}}]', "labels"),
    ('[{"labels": {}}]', "label"),
    ('[{"labels": {"": "empty name"}}]', "label"),
    ('[{"labels": {"alertname": 5}}]', None),
    ('[{"labels": {"alertname": "X"}, "startsAt": "yesterday"}]', "startsAt"),
    ('[{"labels": {"alertname": "X"}, "startsAt": "2027-01-02T00:00:00Z", "endsAt": "2027-01-01T00:00:00Z"}]', None),
], ids=["not-json", "object-not-list", "no-labels", "empty-labels", "empty-label-name", "number-value",
        "bad-startsAt", "ends-before-start"])
def test_malformed_alerts_are_refused(alert_server, payload, hint):
    s = alert_server
    before = len(am_alerts(s))
    r = raw_post_alerts(s, None, data=payload)
    err = assert_error(r, 400)
    if hint:
        assert hint.lower() in err["message"].lower(), err
    assert len(am_alerts(s)) == before


@pytest.mark.parametrize("sil,hint", [
    ({"matchers": [matcher("alertname", "(", regex=True)]}, None),
    ({"matchers": []}, "matcher"),
    ({"matchers": [matcher("", "x")]}, None),
    ({"matchers": [matcher("alertname", "X")], "endsAt": "2020-01-01T00:00:00Z"}, None),
    ({"matchers": [matcher("alertname", "X")], "startsAt": "soon"}, None),
], ids=["bad-regex", "no-matchers", "empty-name", "ends-in-the-past", "bad-startsAt"])
def test_bad_silences_are_refused(alert_server, sil, hint):
    s = alert_server
    body = {"startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "t", "comment": "c"}
    body.update(sil)
    before = ok_json(s.api("GET", "/api/v2/silences"))
    err = assert_error(s.api("POST", "/api/v2/silences", json=body), 400)
    if hint:
        assert hint in err["message"].lower(), err
    assert ok_json(s.api("GET", "/api/v2/silences")) == before


def test_bad_requests_elsewhere(alert_server):
    s = alert_server
    r = s.api("POST", "/api/v2/silences", data="{oops", headers={"Content-Type": "application/json"})
    assert_error(r, 400)
    assert_error(s.api("GET", "/api/v2/silence/00000000-0000-0000-0000-000000000000"), 404)
    assert_error(s.api("DELETE", "/api/v2/silence/00000000-0000-0000-0000-000000000000"), 404)
    assert_error(s.api("GET", "/v1/sys/alerting/alerts/ffffffffffffffff"), 404)
    assert_error(s.api("POST", "/v1/sys/alerting/alerts/ffffffffffffffff/ack", json={"comment": "x"}), 404)
    assert_error(s.api("POST", "/v1/sys/alerting/notify-test/no-such-channel", json={}), 404)
    assert_error(s.api("POST", "/v1/sys/alerting/maintenance", json={"matchers": ['service=~"("'], "duration": "30m",
                                                                   "comment": "x"}), 400)
    assert_error(s.api("POST", "/v1/sys/alerting/maintenance", json={"matchers": ['service="db"'], "duration": "a while",
                                                                   "comment": "x"}), 400)
    assert_error(s.api("DELETE", "/v1/sys/alerting/maintenance/no-such-window"), 404)
    assert_error(s.api("GET", "/v1/sys/alerting/log?limit=lots"), 400)
    assert_error(s.api("POST", "/v1/sys/alerting/dead-letters/replay", json={"ids": "all"}), 400)


@pytest.fixture(scope="module")
def alert_server(module_server_factory):
    """One server for the bad-input tests (they only read and get refused)."""
    cfg = alerting_config(receiver("hook", "hook") + webhook("hook", "http://127.0.0.1:9/hook"),
                          resolve_timeout="1h")
    s = module_server_factory.new("sqlite", config_text=cfg)
    yield s
    s.close()
