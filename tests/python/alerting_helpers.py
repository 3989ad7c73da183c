"""Helpers for the alerting end-to-end tests: the server's clock file, alerts in the
Alertmanager API v2 shape, Steward's alerting API (alerts, silences, maintenance, dead
letters, the notification log) and what webhook notifications say.

Nothing here is a pytest fixture; test_alerting*.py build theirs from these."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from steward_testlib import DEFAULT

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)

# Alertmanager's "no end time" (what a firing alert's endsAt says in a webhook).
ZERO_TIME = "0001-01-01T00:00:00Z"


def uniq(prefix: str = "al") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts(s: str) -> datetime:
    """Parses an RFC 3339 time as Steward / Alertmanager write it (Z, fractions up to ns)."""
    return datetime.fromisoformat(s)


def wait_for(fn: Callable, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    """Calls fn until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except AssertionError as e:  # a check that is not true yet
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last: {last_exc})" if last_exc else ""))
        time.sleep(interval)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def ok_json(r, *codes: int):
    codes = codes or (200,)
    assert r.status_code in codes, f"{r.request.method} {r.url} -> {r.status_code}: {r.text}"
    return r.json() if r.content else None


class Clock:
    """The server's clock (STEWARD_TEST_CLOCK_FILE): an RFC 3339 time in a file, replaced
    atomically. The server reads it on every call, so it stands still until moved."""

    def __init__(self, path, start: datetime):
        self.path = str(path)
        self.set(start)

    def set(self, t: datetime) -> datetime:
        self.now = t
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"))
        os.replace(tmp, self.path)
        return t

    def advance(self, d: timedelta) -> datetime:
        return self.set(self.now + d)

    @property
    def env(self) -> dict:
        return {"STEWARD_TEST_CLOCK_FILE": self.path}


class RealClock:
    """The same face as Clock for servers on the system time (nothing to move)."""

    @property
    def now(self) -> datetime:
        return utcnow()


# --------------------------------------------------------------------------------------------
# Alerts (Alertmanager API v2, postable)


class Alert:
    """A postable alert that keeps its startsAt, so later posts (re-fire, resolve) describe the
    same alert the way Prometheus does."""

    def __init__(self, clock, labels: dict, annotations: Optional[dict] = None,
                 generator_url: str = "http://127.0.0.1/graph"):
        self.clock = clock
        self.labels = dict(labels)
        self.annotations = dict(annotations or {})
        self.generator_url = generator_url
        self.starts_at = clock.now

    def firing(self, ends_in: Optional[timedelta] = None) -> dict:
        d = {"labels": self.labels, "annotations": self.annotations, "startsAt": iso(self.starts_at),
             "generatorURL": self.generator_url}
        if ends_in is not None:
            d["endsAt"] = iso(self.clock.now + ends_in)
        return d

    def resolved(self) -> dict:
        d = self.firing()
        end = self.clock.now - SECOND
        d["endsAt"] = iso(max(end, self.starts_at + timedelta(milliseconds=1)))
        return d


def post_alerts(s, alerts: list, token=DEFAULT, bearer: bool = False):
    """POST /api/v2/alerts; asserts 200."""
    r = raw_post_alerts(s, alerts, token=token, bearer=bearer)
    assert r.status_code == 200, f"POST /api/v2/alerts -> {r.status_code}: {r.text}"
    return r


def raw_post_alerts(s, alerts, token=DEFAULT, bearer: bool = False, **kw):
    if bearer:
        tok = s.token if token is DEFAULT else token
        return s.api("POST", "/api/v2/alerts", token=None, headers={"Authorization": f"Bearer {tok}"},
                     json=alerts, **kw)
    if "data" in kw:
        return s.api("POST", "/api/v2/alerts", token=token, headers={"Content-Type": "application/json"}, **kw)
    return s.api("POST", "/api/v2/alerts", token=token, json=alerts, **kw)


def am_alerts(s, query: str = "", token=DEFAULT) -> list:
    """GET /api/v2/alerts (gettable alerts)."""
    r = s.api("GET", "/api/v2/alerts" + (f"?{query}" if query else ""), token=token)
    return ok_json(r)


def am_alert(s, **labels) -> dict:
    """The one gettable alert whose labels include `labels`."""
    hits = [a for a in am_alerts(s) if all(a["labels"].get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, f"{labels}: {hits}"
    return hits[0]


def fingerprint_of(s, **labels) -> str:
    return am_alert(s, **labels)["fingerprint"]


def steward_alerts(s, token=DEFAULT) -> list:
    return ok_json(s.api("GET", "/v1/sys/alerting/alerts", token=token))["data"]["alerts"]


def matcher(name: str, value: str, regex: bool = False, equal: bool = True) -> dict:
    return {"name": name, "value": value, "isRegex": regex, "isEqual": equal}


def add_silence(s, clock, matchers: list, duration: timedelta = 2 * HOUR, comment: str = "test silence",
                created_by: str = "pytest", token=DEFAULT) -> str:
    body = {"matchers": matchers, "startsAt": iso(clock.now), "endsAt": iso(clock.now + duration),
            "createdBy": created_by, "comment": comment}
    d = ok_json(s.api("POST", "/api/v2/silences", token=token, json=body))
    assert isinstance(d.get("silenceID"), str) and d["silenceID"], d
    return d["silenceID"]


def data_list(body) -> list:
    """The list in a `{"data": ...}` answer: `data` itself, or the one list inside it."""
    data = body["data"] if isinstance(body, dict) and "data" in body else body
    if isinstance(data, list):
        return data
    lists = [v for v in data.values() if isinstance(v, list)]
    assert len(lists) == 1, f"expected one list in {body}"
    return lists[0]


def dead_letters(s, token=DEFAULT) -> list:
    return data_list(ok_json(s.api("GET", "/v1/sys/alerting/dead-letters", token=token)))


def letter_field(d: dict, name: str):
    """A dead letter's `id` / `channel`: on the letter itself or on its stored notification."""
    if name in d:
        return d[name]
    return (d.get("notification") or {}).get(name)


def notification_log(s, limit: int = 1000, token=DEFAULT) -> list:
    return data_list(ok_json(s.api("GET", f"/v1/sys/alerting/log?limit={limit}", token=token)))


def mentions(entry, *words: str) -> bool:
    """Whether every word appears in the entry's JSON (for records whose exact field names the
    tests do not pin down)."""
    text = json.dumps(entry)
    return all(w in text for w in words)


def start_maintenance(s, matchers: list, duration: str = "30m", comment: str = "test window",
                      token=DEFAULT) -> str:
    d = ok_json(s.api("POST", "/v1/sys/alerting/maintenance", token=token,
                      json={"matchers": matchers, "duration": duration, "comment": comment}))
    mid = d["data"]["id"]
    assert mid, d
    return str(mid)


# --------------------------------------------------------------------------------------------
# Webhook notifications (Alertmanager webhook v4)

WEBHOOK_KEYS = {"version", "groupKey", "status", "receiver", "groupLabels", "commonLabels",
                "commonAnnotations", "externalURL", "truncatedAlerts", "alerts"}
WEBHOOK_ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


def check_webhook(body: dict) -> dict:
    """Asserts the Alertmanager webhook v4 shape; returns the body."""
    missing = WEBHOOK_KEYS - set(body)
    assert not missing, f"webhook body lacks {missing}: {body}"
    assert body["version"] == "4", body
    assert body["status"] in ("firing", "resolved"), body
    assert isinstance(body["groupKey"], str) and body["groupKey"], body
    assert isinstance(body["truncatedAlerts"], int), body
    assert body["alerts"], body
    for a in body["alerts"]:
        missing = WEBHOOK_ALERT_KEYS - set(a)
        assert not missing, f"webhook alert lacks {missing}: {a}"
        assert a["status"] in ("firing", "resolved"), a
        assert isinstance(a["fingerprint"], str) and a["fingerprint"], a
        ts(a["startsAt"])
        if a["status"] == "resolved":
            assert ts(a["endsAt"]) >= ts(a["startsAt"]), a
    # Alertmanager's summary rule: the group is resolved when every alert in it is.
    want = "firing" if any(a["status"] == "firing" for a in body["alerts"]) else "resolved"
    assert body["status"] == want, body
    return body


def by_alertname(bodies: list, name: str) -> list:
    return [b for b in bodies if any(a["labels"].get("alertname") == name for a in b["alerts"])]


def steward_logs(s) -> str:
    return (s.stdout_bytes() + s.stderr_bytes()).decode(errors="replace")


def log_excerpt(s, *needles: str, limit: int = 40) -> str:
    lines = [l for l in steward_logs(s).splitlines() if any(n in l for n in needles)]
    return "\n".join(lines[-limit:])


# ---------------------------------------------------------------------------------------------
# Health-check tests: a JSON health endpoint and an alerting setup that sends every check alert
# to one webhook receiver, grouped per check, fast.

def health_replies():
    """(ok, failing) replies of a JSON health endpoint."""
    from receivers import Reply
    hdr = {"Content-Type": "application/json"}
    return Reply(200, b'{"status": "ok"}', hdr), Reply(500, b'{"status": "failing"}', hdr)


def webhook_alerting(hook_url: str) -> str:
    """steward.toml [alerting] block: no default rules, one receiver "ops" with one webhook
    channel "hook" at hook_url/hook, grouped by alertname and check, 1 s waits."""
    return f"""
[alerting]
default_rules = false
[alerting.route]
receiver = "ops"
group_by = ["alertname", "check"]
group_wait = "1s"
group_interval = "1s"
[[alerting.receivers]]
name = "ops"
channels = ["hook"]
[[alerting.channels]]
name = "hook"
type = "webhook"
url = "{hook_url}/hook"
"""
