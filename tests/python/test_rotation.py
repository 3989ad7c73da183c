"""Secret rotation end to end, with the `random` rotator (and the `command` rotator where a
slow or failing target is needed): the rotation API and its errors, version labels, the event
log (cursor, long poll, SSE), watching a secret, consumer-aware retirement, expiry and overdue
warnings with an injected clock (STEWARD_TEST_CLOCK_FILE), the webhook sink, the CLI
(`rotate`, `events`, `secret expiring`, `agent`, `run --watch`), the scheduler after a restart
and a crash, and that no generated value is ever stored or logged in plaintext."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

import pytest

from steward_testlib import DEFAULT, STEWARD_BIN

# --------------------------------------------------------------------------------------------
# helpers

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

# Values generated or seen during this module, per server work directory: the leak checks
# look for each of them in the server's log and raw store.
GENERATED: dict = {}

# A server for the CLI tests: scheduled rotations start without jitter, retries come fast.
FAST_CONFIG = '[rotation]\njitter = "0s"\nretry_base = "100ms"\nretry_max = "1s"\n'


def uniq(prefix: str = "rot") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def remember(s, *values: str) -> None:
    GENERATED.setdefault(str(s.workdir), set()).update(v for v in values if v)


def data_of(r) -> dict:
    assert r.status_code == 200, f"{r.status_code}: {r.text}"
    return r.json()["data"]


def err_code(r) -> str:
    return r.json()["error"]["code"]


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_for(fn: Callable, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    """Calls fn until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def rot_url(op: str, env: str, path: str) -> str:
    return f"/v1/sys/rotation/{op}/{env}/{path}"


def configure(s, env: str, path: str, token=DEFAULT, **cfg):
    body = {"rotator": "random", "schedule": {"manual": True}}
    body.update(cfg)
    return s.api("PUT", rot_url("config", env, path), token=token, json=body)


def status(s, env: str, path: str, token=DEFAULT) -> dict:
    return data_of(s.api("GET", rot_url("status", env, path), token=token))


def wait_runs(s, env: str, path: str, n: int, timeout: float = 20.0) -> dict:
    """Waits until `n` runs (rotations + failures) have ended and none is running."""

    def done():
        d = status(s, env, path)
        return d if d["rotations"] + d["failures"] >= n and d["state"] != "rotating" else None

    return wait_for(done, timeout, what=f"{env}/{path} to finish run {n}")


def rotate_and_wait(s, env: str, path: str, op: str = "rotate") -> dict:
    before = status(s, env, path)
    n = before["rotations"] + before["failures"] + 1
    r = s.api("POST", rot_url(op, env, path))
    assert r.status_code == 202, r.text
    return wait_runs(s, env, path, n)


def read_value(s, env: str, path: str, token=DEFAULT, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    r = s.api("GET", f"/v1/{env}/data/{path}" + (f"?{q}" if q else ""), token=token)
    assert r.status_code == 200, r.text
    return r.json()["data"], r.headers.get("ETag")


def all_events(s, after: int = 0, token=DEFAULT) -> list:
    out = []
    while True:
        page = data_of(s.api("GET", f"/v1/sys/events?after={after}&limit=1000", token=token))
        out += page["events"]
        if not page["events"]:
            return out
        after = page["next"]


def events_of(s, env: str, path: str, kind: Optional[str] = None) -> list:
    return [
        e for e in all_events(s)
        if e["env"] == env and e["path"] == path and (kind is None or e["kind"] == kind)
    ]


def wait_event(s, env: str, path: str, kind: str, pred=lambda e: True, timeout: float = 15.0) -> dict:
    def find():
        hits = [e for e in events_of(s, env, path, kind) if pred(e)]
        return hits[-1] if hits else None

    return wait_for(find, timeout, 0.2, what=f"{kind} event on {env}/{path}")


def make_token(s, rules: list, ttl: str = "2h"):
    """A token whose one policy has `rules`; returns (token, accessor)."""
    name = uniq("pol")
    r = s.api("PUT", f"/v1/sys/policies/{name}", json={"rules": rules})
    assert r.status_code in (200, 204), r.text
    r = s.api("POST", "/v1/auth/token/create", json={"policies": [name], "ttl": ttl})
    assert r.status_code == 200, r.text
    auth = r.json()["auth"]
    return auth["client_token"], auth["accessor"]


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_lines(s) -> list:
    """The server's log lines (all starts), without terminal colours."""
    return ANSI.sub("", (s.stdout_bytes() + s.stderr_bytes()).decode(errors="replace")).splitlines()


def store_bytes(s) -> bytes:
    """Everything the server keeps at rest: the data directory, and the PostgreSQL data."""
    blob = b""
    for root, _, files in os.walk(s.data):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                blob += fh.read()
    if s.pg is not None and not s.pg.dropped:
        blob += s.pg.dump_data()
    return blob


def assert_not_in_plaintext(s, values) -> None:
    values = [v for v in values if v]
    assert values
    logs = s.stdout_bytes() + s.stderr_bytes()
    at_rest = store_bytes(s)
    for v in values:
        assert v.encode() not in logs, f"{v!r} is in the server log"
        assert v.encode() not in at_rest, f"{v!r} is stored in plaintext ({s.kind})"


def write_script(path, text: str) -> str:
    path.write_text(text)
    os.chmod(path, 0o755)
    return str(path)


# The `command` rotator's program: issues "cmd-<random>" on create; sleeps SLOW_TEST seconds
# on test (so a run can be caught between create and finish); FAIL=1 makes every step fail.
COMMAND_SCRIPT = r"""#!/bin/sh
req=$(cat)
if [ "${FAIL:-0}" = 1 ]; then
  echo "target is down" >&2
  exit 1
fi
case "$req" in
  *'"action":"create"'*)
    printf '{"credential": {"user": "app", "password": "cmd-%s"}}\n' "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')" ;;
  *'"action":"test"'*)
    sleep "${SLOW_TEST:-0}" ;;
esac
exit 0
"""


def command_settings(script: str, **env) -> dict:
    e = {"PATH": "/usr/bin:/bin"}
    e.update({k: str(v) for k, v in env.items()})
    return {"command": [script], "env": e, "timeout": "20s"}


class Clock:
    """The server's clock: an RFC 3339 time in a file (replaced atomically)."""

    def __init__(self, path, start: datetime):
        self.path = str(path)
        self.set(start)

    def set(self, t: datetime) -> None:
        self.now = t
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(t.isoformat().replace("+00:00", "Z"))
        os.replace(tmp, self.path)

    def advance(self, d: timedelta) -> datetime:
        self.set(self.now + d)
        return self.now


class HookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST (headers lower-cased, raw body)."""

    def __init__(self) -> None:
        self.received: list = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with outer.lock:
                    outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body, self.path))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def snapshot(self) -> list:
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hook():
    h = HookReceiver()
    yield h
    h.close()


@pytest.fixture(scope="module")
def cli_server(module_server_factory):
    """A SQLite server for the CLI, agent and run --watch tests."""
    s = module_server_factory.new("sqlite", config_text=FAST_CONFIG)
    yield s
    s.close()


@pytest.fixture(scope="module")
def command_script(tmp_path_factory) -> str:
    return write_script(tmp_path_factory.mktemp("rotator") / "rotate.sh", COMMAND_SCRIPT)


# --------------------------------------------------------------------------------------------
# 1. lifecycle through the API


def test_configure_rotate_labels_rollback_remove(server):
    s = server
    path = f"{uniq('life')}/db"
    assert s.write("dev", path, {"user": "app", "password": "initial-pw-1"}).status_code == 200

    # No config yet: 404 everywhere.
    for method, op in (("GET", "status"), ("GET", "config"), ("POST", "rotate"),
                       ("POST", "rollback"), ("DELETE", "config")):
        r = s.api(method, rot_url(op, "dev", path))
        assert r.status_code == 404, (op, r.text)
        assert err_code(r) == "not_found"
    assert "rotate configure" in s.api("GET", rot_url("status", "dev", path)).json()["error"]["message"]

    before = datetime.now(timezone.utc)
    r = configure(s, "dev", path, settings={"length": 24}, schedule={"every": "30d"}, grace="1h")
    after = datetime.now(timezone.utc)
    d = data_of(r)
    assert (d["env"], d["path"], d["rotator"], d["state"]) == ("dev", path, "random", "idle")
    assert d["config"]["schedule"]["every"] == "30d"
    assert d["config"]["settings"] == {"length": 24}
    assert d["config"]["grace"] == "1h" and d["config"]["retire"] == "consumers"
    assert d["config"]["max_attempts"] == 5
    assert before + timedelta(days=30) - timedelta(seconds=1) <= ts(d["next_due"]) <= after + timedelta(days=30, seconds=1)
    assert d["last_rotated_at"] is None and d["last"] is None
    assert d["current_version"] is None and d["previous_version"] is None
    assert d["pending"] is False and d["laggards"] == []
    assert (d["rotations"], d["failures"]) == (0, 0)
    assert "step" not in d and "retire_deadline" not in d
    assert status(s, "dev", path) == d
    assert data_of(s.api("GET", rot_url("config", "dev", path))) == d
    assert [e["detail"] for e in events_of(s, "dev", path, "rotation.configured")] == [{"rotator": "random"}]

    # Rotate now: 202, then a new version 2 with a fresh 24-character value, the other fields kept.
    r = s.api("POST", rot_url("rotate", "dev", path))
    assert r.status_code == 202, r.text
    assert r.json()["data"]["state"] in ("rotating", "retiring", "idle")
    d = wait_runs(s, "dev", path, 1)
    assert (d["current_version"], d["previous_version"], d["rotations"], d["failures"]) == (2, 1, 1, 0)
    assert d["last"]["outcome"] == "rotated" and d["last"]["version"] == 2 and d["last"]["attempts"] == 1
    assert ts(d["next_due"]) == ts(d["last_rotated_at"]) + timedelta(days=30)
    assert d["pending"] is False

    cur, etag = read_value(s, "dev", path, label="current")
    new_pw = cur["data"]["password"]
    remember(s, new_pw)
    assert etag == '"2"' and cur["metadata"]["version"] == 2
    assert cur["data"]["user"] == "app"
    assert re.fullmatch(r"[A-Za-z0-9]{24}", new_pw), new_pw
    prev, etag = read_value(s, "dev", path, label="previous")
    assert etag == '"1"' and prev["data"] == {"user": "app", "password": "initial-pw-1"}
    assert read_value(s, "dev", path)[0]["data"]["password"] == new_pw
    r = s.api("GET", f"/v1/dev/data/{path}?label=pending")
    assert r.status_code == 404, r.text
    r = s.api("GET", f"/v1/dev/data/{path}?label=newest")
    assert r.status_code == 400 and err_code(r) == "invalid_label"

    started = events_of(s, "dev", path, "rotation.started")
    finished = events_of(s, "dev", path, "rotation.finished")
    assert [e["detail"]["reason"] for e in started] == ["manual"]
    assert finished[0]["detail"]["run"] == started[0]["detail"]["run"]
    assert {k: finished[0]["detail"][k] for k in ("outcome", "version", "previous_version")} == \
        {"outcome": "rotated", "version": 2, "previous_version": 1}
    assert [e["detail"]["version"] for e in events_of(s, "dev", path, "secret.written")] == [1, 2]
    assert started[0]["seq"] < finished[0]["seq"]

    # Rollback: the previous value comes back as a NEW current version.
    r = s.api("POST", rot_url("rollback", "dev", path))
    assert r.status_code == 202, r.text
    d = wait_runs(s, "dev", path, 2)
    assert (d["current_version"], d["previous_version"], d["rotations"]) == (3, 2, 2)
    assert d["last"]["outcome"] == "rolled_back" and d["last"]["version"] == 3
    cur, etag = read_value(s, "dev", path, label="current")
    assert etag == '"3"' and cur["data"] == {"user": "app", "password": "initial-pw-1"}
    assert read_value(s, "dev", path, label="previous")[0]["data"]["password"] == new_pw
    assert read_value(s, "dev", path, version=2)[0]["data"]["password"] == new_pw
    assert [e["detail"]["reason"] for e in events_of(s, "dev", path, "rotation.started")] == ["manual", "rollback"]
    fin = events_of(s, "dev", path, "rotation.finished")[-1]["detail"]
    assert (fin["outcome"], fin["version"], fin["previous_version"]) == ("rolled_back", 3, 2)

    # The list shows it.
    listed = data_of(s.api("GET", "/v1/sys/rotation/status"))["rotations"]
    assert [x["current_version"] for x in listed if x["env"] == "dev" and x["path"] == path] == [3]

    # Remove: 204, then 404; the secret itself stays.
    r = s.api("DELETE", rot_url("config", "dev", path))
    assert r.status_code == 204, r.text
    r = s.api("GET", rot_url("status", "dev", path))
    assert r.status_code == 404 and err_code(r) == "not_found"
    assert s.api("POST", rot_url("rotate", "dev", path)).status_code == 404
    assert read_value(s, "dev", path)[0]["data"]["password"] == "initial-pw-1"
    assert not [x for x in data_of(s.api("GET", "/v1/sys/rotation/status"))["rotations"] if x["path"] == path]


def test_conflicts_while_running_and_pending_label(server, command_script):
    s = server
    path = f"{uniq('busy')}/api"
    assert s.write("dev", path, {"user": "app", "password": "busy-initial"}).status_code == 200
    configure(s, "dev", path, rotator="command", settings=command_settings(command_script, SLOW_TEST=3))

    # Never rotated: nothing to roll back to.
    r = s.api("POST", rot_url("rollback", "dev", path))
    assert r.status_code == 409 and err_code(r) == "no_previous_version", r.text
    assert status(s, "dev", path)["state"] == "idle"

    r = s.api("POST", rot_url("rotate", "dev", path))
    assert r.status_code == 202, r.text
    # The test step sleeps 3 s: the run sits between create and finish.
    d = wait_for(lambda: (lambda x: x if x.get("step") == "test" else None)(status(s, "dev", path)),
                 timeout=10, what="the test step")
    assert d["state"] == "rotating" and d["pending"] is True and d["attempt"] == 1
    r = s.api("GET", f"/v1/dev/data/{path}?label=pending")
    assert r.status_code == 200, r.text
    pend = r.json()["data"]
    assert pend["label"] == "pending" and pend["value_type"] == "object"
    pending_pw = pend["data"]["password"]
    assert pending_pw.startswith("cmd-") and len(pending_pw) == 28
    remember(s, pending_pw)
    # The pending value is sealed in the rotation row, not in plaintext at rest.
    assert pending_pw.encode() not in store_bytes(s)
    # Current is still the old value.
    assert read_value(s, "dev", path)[0]["data"]["password"] == "busy-initial"

    for method, op in (("POST", "rotate"), ("POST", "rollback"), ("DELETE", "config")):
        r = s.api(method, rot_url(op, "dev", path))
        assert r.status_code == 409, (op, r.text)
        assert err_code(r) == "rotation_in_progress", (op, r.text)

    d = wait_runs(s, "dev", path, 1)
    assert d["current_version"] == 2 and d["last"]["outcome"] == "rotated"
    # What was pending is what became current.
    assert read_value(s, "dev", path)[0]["data"] == {"user": "app", "password": pending_pw}
    assert s.api("GET", f"/v1/dev/data/{path}?label=pending").status_code == 404
    assert s.api("DELETE", rot_url("config", "dev", path)).status_code == 204


@pytest.mark.parametrize("cfg,field", [
    ({"rotator": "no-such-rotator"}, "no-such-rotator"),
    ({"schedule": {"every": "10s"}}, "schedule.every"),
    ({"schedule": {"every": "monthly"}}, "schedule.every"),
    ({"schedule": {"every": "1d", "cron": "0 3 * * 1"}}, "cron"),
    ({"schedule": {"cron": "not a cron"}}, "schedule.cron"),
    ({"schedule": {"every": "1d", "window": "2-4"}}, "schedule.window"),
    ({"schedule": {"every": "1d", "window": "02:00-02:00"}}, "schedule.window"),
    ({"schedule": {"manual": True, "every": "1d"}}, "manual"),
    ({"grace": "a while"}, "grace"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": 21}, "max_attempts"),
    ({"settings": {"length": 4}}, "length"),
    ({"settings": {"lenght": 10}}, "lenght"),
])
def test_invalid_rotation_config(server, cfg, field):
    s = server
    path = f"{uniq('bad')}/x"
    r = configure(s, "dev", path, **cfg)
    assert r.status_code == 400, r.text
    assert err_code(r) == "invalid_rotation", r.text
    assert field in r.json()["error"]["message"], r.text
    assert s.api("GET", rot_url("status", "dev", path)).status_code == 404


def test_invalid_rotation_body(server):
    """Values the JSON shape already refuses (an unknown `retire` mode, an unknown field):
    400, and the message says what is accepted."""
    s = server
    path = f"{uniq('bad')}/x"
    r = configure(s, "dev", path, retire="never")
    assert r.status_code == 400, r.text
    assert "`consumers` or `grace`" in r.json()["error"]["message"], r.text
    r = configure(s, "dev", path, graec="1h")
    assert r.status_code == 400, r.text
    assert "graec" in r.json()["error"]["message"], r.text
    assert s.api("GET", rot_url("status", "dev", path)).status_code == 404


def test_rotate_needs_the_rotate_capability(server):
    s = server
    prefix = uniq("cap")
    path = f"{prefix}/db"
    assert s.write("dev", path, {"password": "cap-initial"}).status_code == 200
    reader, _ = make_token(s, [{"env": "dev", "path": f"{prefix}/**", "capabilities": ["read", "write"]}])
    rotator, _ = make_token(s, [{"env": "dev", "path": f"{prefix}/**", "capabilities": ["read", "rotate"]}])
    other, _ = make_token(s, [{"env": "dev", "path": "elsewhere/**", "capabilities": ["admin"]}])

    r = configure(s, "dev", path, token=reader)
    assert r.status_code == 403 and err_code(r) == "permission_denied", r.text
    assert s.api("GET", rot_url("status", "dev", path)).status_code == 404  # nothing was stored

    assert configure(s, "dev", path, token=rotator).status_code == 200
    for method, op in (("POST", "rotate"), ("POST", "rollback"), ("DELETE", "config"), ("PUT", "config")):
        r = s.api(method, rot_url(op, "dev", path), token=reader,
                  json={"rotator": "random"} if method == "PUT" else None)
        assert r.status_code == 403, (op, r.text)
        assert err_code(r) == "permission_denied"
    # Reading the status needs read only; a token without it sees nothing.
    assert status(s, "dev", path, token=reader)["state"] == "idle"
    assert s.api("GET", rot_url("status", "dev", path), token=other).status_code == 403
    listed = data_of(s.api("GET", "/v1/sys/rotation/status", token=other))["rotations"]
    assert not [x for x in listed if x["path"] == path]
    listed = data_of(s.api("GET", "/v1/sys/rotation/status", token=reader))["rotations"]
    assert [x["path"] for x in listed] == [path]

    # With `rotate` it works end to end.
    r = s.api("POST", rot_url("rotate", "dev", path), token=rotator)
    assert r.status_code == 202, r.text
    d = wait_runs(s, "dev", path, 1)
    assert d["current_version"] == 2
    remember(s, read_value(s, "dev", path, token=rotator)[0]["data"]["password"])
    assert s.api("DELETE", rot_url("config", "dev", path), token=rotator).status_code == 204


# --------------------------------------------------------------------------------------------
# 2. events


def test_event_cursor(server):
    s = server
    prefix = uniq("cur")
    latest = data_of(s.api("GET", "/v1/sys/events?after=latest"))
    assert latest["events"] == []
    start = latest["next"]
    assert start >= 1  # earlier tests wrote events

    for p, v in (("a", "1"), ("a", "2"), ("b", "1")):
        assert s.write("dev", f"{prefix}/{p}", v).status_code == 200
    page = data_of(s.api("GET", f"/v1/sys/events?after={start}"))
    assert page["events"] and all(e["seq"] > start for e in page["events"])
    seqs = [e["seq"] for e in page["events"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert page["next"] == seqs[-1]
    mine = [(e["kind"], e["path"], e["detail"]) for e in page["events"] if e["path"].startswith(prefix)]
    assert mine == [
        ("secret.written", f"{prefix}/a", {"version": 1}),
        ("secret.written", f"{prefix}/a", {"version": 2}),
        ("secret.written", f"{prefix}/b", {"version": 1}),
    ]
    for e in page["events"]:
        assert set(e) == {"seq", "time", "kind", "env", "path", "detail"}
        ts(e["time"])

    # limit pages through them; `next` is the last seq handed out.
    one = data_of(s.api("GET", f"/v1/sys/events?after={start}&limit=1"))
    assert [e["seq"] for e in one["events"]] == [seqs[0]] and one["next"] == seqs[0]
    two = data_of(s.api("GET", f"/v1/sys/events?after={one['next']}&limit=1"))
    assert [e["seq"] for e in two["events"]] == [seqs[1]] and two["next"] == seqs[1]

    # Nothing newer than `next` yet (no wait: answers at once).
    t0 = time.monotonic()
    rest = data_of(s.api("GET", f"/v1/sys/events?after={page['next']}"))
    assert time.monotonic() - t0 < 2
    assert not [e for e in rest["events"] if e["path"].startswith(prefix)]
    assert all(e["seq"] > page["next"] for e in rest["events"])
    latest = data_of(s.api("GET", "/v1/sys/events?after=latest"))
    assert latest["events"] == [] and latest["next"] >= seqs[-1]

    r = s.api("GET", "/v1/sys/events?after=soon")
    assert r.status_code == 400 and err_code(r) == "invalid_query"
    r = s.api("GET", "/v1/sys/events?wait=forever")
    assert r.status_code == 400 and err_code(r) == "invalid_query"


def test_event_long_poll_and_visibility(server):
    s = server
    prefix, hidden = uniq("lp"), uniq("hidden")
    token, _ = make_token(s, [{"env": "dev", "path": f"{prefix}/**", "capabilities": ["read"]}])
    cursor = data_of(s.api("GET", "/v1/sys/events?after=latest", token=token))["next"]

    box = {}

    def poll():
        t0 = time.monotonic()
        r = s.api("GET", f"/v1/sys/events?after={cursor}&wait=20s", token=token, timeout=40)
        box["elapsed"] = time.monotonic() - t0
        box["resp"] = r

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(1.0)
    # A change the token may not see does not end its wait...
    assert s.write("dev", f"{hidden}/x", "not for you").status_code == 200
    time.sleep(1.0)
    assert th.is_alive(), "the long poll returned for an event the token cannot see"
    # ...a visible one does, at once.
    t_write = time.monotonic()
    assert s.write("dev", f"{prefix}/svc", "visible").status_code == 200
    th.join(25)
    assert not th.is_alive()
    page = data_of(box["resp"])
    assert 1.8 < box["elapsed"] < 8, box["elapsed"]
    assert time.monotonic() - t_write < 5
    assert [(e["kind"], e["path"]) for e in page["events"]] == [("secret.written", f"{prefix}/svc")]
    assert page["next"] == page["events"][0]["seq"]

    # The hidden event is skipped, not re-sent: `next` moved past it; root sees both.
    root_page = all_events(s, after=cursor)
    paths = [e["path"] for e in root_page]
    assert f"{hidden}/x" in paths and f"{prefix}/svc" in paths
    hidden_seq = [e["seq"] for e in root_page if e["path"] == f"{hidden}/x"][0]
    assert hidden_seq < page["next"]
    assert not [e for e in all_events(s, after=0, token=token) if e["path"] != f"{prefix}/svc"]
    # `list` on the path is enough to see its events.
    lister, _ = make_token(s, [{"env": "dev", "path": f"{prefix}/**", "capabilities": ["list"]}])
    assert [(e["kind"], e["path"]) for e in all_events(s, after=cursor, token=lister)] == \
        [("secret.written", f"{prefix}/svc")]

    # A wait with nothing visible arriving ends after the wait, empty.
    t0 = time.monotonic()
    empty = data_of(s.api("GET", f"/v1/sys/events?after={page['next']}&wait=1500ms", token=token))
    assert empty["events"] == [] and 1.3 < time.monotonic() - t0 < 5


class SSE:
    """Reads server-sent events from a streamed response: [{id, event, data}]."""

    def __init__(self, resp):
        self.lines = resp.iter_lines(decode_unicode=True)
        self.events: list = []

    def until(self, want: Callable[[list], bool]) -> list:
        cur: dict = {}
        for line in self.lines:
            if line is None:
                continue
            if line == "":
                if "data" in cur:
                    self.events.append(cur)
                    if want(self.events):
                        return self.events
                cur = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(":")
                cur[k] = v[1:] if v.startswith(" ") else v
        raise AssertionError(f"the SSE stream ended; got {self.events}")


def test_event_stream_sse(server):
    s = server
    prefix = uniq("sse")
    start = data_of(s.api("GET", "/v1/sys/events?after=latest"))["next"]
    assert s.write("dev", f"{prefix}/one", "1").status_code == 200
    hdr = {"X-Vault-Token": s.token}

    def mine(evs):
        return [json.loads(e["data"]) for e in evs if (json.loads(e["data"])["path"] or "").startswith(prefix)]

    # read timeout 15 s: keep-alive comments arrive meanwhile; events are what we wait for.
    with s.http.get(s.url + f"/v1/sys/events/stream?after={start}", headers=hdr, stream=True, timeout=(5, 15)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        sse = SSE(r)
        sse.until(lambda evs: len(mine(evs)) >= 1)
        # A write while the stream is open arrives on it.
        t0 = time.monotonic()
        assert s.write("dev", f"{prefix}/two", "2").status_code == 200
        evs = sse.until(lambda evs: len(mine(evs)) >= 2)
        assert time.monotonic() - t0 < 5
    for e in evs:
        body = json.loads(e["data"])
        assert e["id"] == str(body["seq"])
        assert e["event"] == body["kind"]
        assert body["seq"] > start
    ids = [int(e["id"]) for e in evs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    m = mine(evs)
    assert [(x["kind"], x["path"], x["detail"]) for x in m] == [
        ("secret.written", f"{prefix}/one", {"version": 1}),
        ("secret.written", f"{prefix}/two", {"version": 1}),
    ]

    # Last-Event-ID resumes after that id (it wins over ?after=).
    first_id = m[0]["seq"]
    with s.http.get(s.url + "/v1/sys/events/stream?after=0", stream=True, timeout=(5, 15),
                    headers={**hdr, "Last-Event-ID": str(first_id)}) as r:
        evs = SSE(r).until(lambda evs: len(mine(evs)) >= 1)
    assert int(evs[0]["id"]) > first_id
    assert [x["path"] for x in mine(evs)] == [f"{prefix}/two"]

    # Without a token: refused before the stream opens.
    r = s.http.get(s.url + "/v1/sys/events/stream", timeout=5)
    assert r.status_code in (401, 403), r.text


# --------------------------------------------------------------------------------------------
# 3. watching a secret


def test_watch_secret_with_etag(server):
    s = server
    path = f"{uniq('watch')}/cfg"
    assert s.write("dev", path, {"password": "w1"}).status_code == 200
    _, etag = read_value(s, "dev", path)
    assert etag == '"1"'

    # Unchanged: 304 after the wait, same ETag, no body.
    t0 = time.monotonic()
    r = s.api("GET", f"/v1/dev/data/{path}?wait=2s", headers={"If-None-Match": etag})
    took = time.monotonic() - t0
    assert r.status_code == 304, r.text
    assert r.headers["ETag"] == '"1"' and r.content == b""
    assert 1.8 < took < 6, took
    # known=N does the same.
    r = s.api("GET", f"/v1/dev/data/{path}?wait=1s&known=1")
    assert r.status_code == 304
    # A stale version answers at once with the current one.
    t0 = time.monotonic()
    r = s.api("GET", f"/v1/dev/data/{path}?wait=10s", headers={"If-None-Match": '"0"'})
    assert r.status_code == 200 and time.monotonic() - t0 < 3
    assert r.headers["ETag"] == '"1"'
    # wait= without the version the client has is a client error.
    r = s.api("GET", f"/v1/dev/data/{path}?wait=1s")
    assert r.status_code == 400 and err_code(r) == "invalid_query"

    def watch_while(change, known):
        box = {}

        def poll():
            t0 = time.monotonic()
            box["resp"] = s.api("GET", f"/v1/dev/data/{path}?wait=20s", headers={"If-None-Match": f'"{known}"'}, timeout=40)
            box["elapsed"] = time.monotonic() - t0

        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.7)
        assert th.is_alive()
        change()
        th.join(25)
        assert not th.is_alive()
        assert box["elapsed"] < 6, box["elapsed"]
        return box["resp"]

    # A write in between: 200 with the new version and its ETag.
    r = watch_while(lambda: s.write("dev", path, {"password": "w2"}), 1)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"2"'
    d = r.json()["data"]
    assert d["data"] == {"password": "w2"} and d["metadata"]["version"] == 2

    # A rotation wakes a watcher the same way.
    configure(s, "dev", path)
    r = watch_while(lambda: s.api("POST", rot_url("rotate", "dev", path)), 2)
    assert r.status_code == 200 and r.headers["ETag"] == '"3"'
    new = r.json()["data"]["data"]["password"]
    remember(s, new)
    assert new != "w2" and len(new) == 32
    wait_runs(s, "dev", path, 1)
    assert s.api("DELETE", rot_url("config", "dev", path)).status_code == 204


# --------------------------------------------------------------------------------------------
# 4. consumer-aware retirement


def test_retire_when_consumers_moved(server):
    s = server
    prefix = uniq("cons")
    path = f"{prefix}/db"
    token, accessor = make_token(s, [{"env": "dev", "path": f"{prefix}/**", "capabilities": ["read"]}])
    assert s.write("dev", path, {"user": "svc", "password": "consumer-v1"}).status_code == 200
    assert configure(s, "dev", path, grace="60s", retire="consumers").status_code == 200

    # Consumer A reads v1 (only A reads this secret: root never does here).
    assert read_value(s, "dev", path, token=token)[0]["metadata"]["version"] == 1
    r = s.api("POST", rot_url("rotate", "dev", path))
    assert r.status_code == 202
    d = wait_runs(s, "dev", path, 1)
    t_finish = time.monotonic()
    assert d["state"] == "retiring" and d["current_version"] == 2
    assert ts(d["retire_deadline"]) == ts(d["last_rotated_at"]) + timedelta(seconds=60)
    d = wait_for(lambda: (lambda x: x if x["laggards"] else None)(status(s, "dev", path)), 5, what="laggards")
    assert d["laggards"] == [accessor]
    assert token not in json.dumps(d)

    # While A lags, the previous credential is kept (consumer checks run every 2 s).
    time.sleep(max(0.0, 4.5 - (time.monotonic() - t_finish)))
    d = status(s, "dev", path)
    assert d["state"] == "retiring" and d["laggards"] == [accessor]
    assert events_of(s, "dev", path, "rotation.retired") == []
    # (No read of label=previous here: reading the old version makes the reader a laggard.)

    # A reads the new version: retired within a few seconds, reason consumers_moved.
    new_pw = read_value(s, "dev", path, token=token)[0]["data"]["password"]
    remember(s, new_pw)
    t0 = time.monotonic()
    d = wait_for(lambda: (lambda x: x if x["state"] == "idle" else None)(status(s, "dev", path)), 8, what="idle")
    assert time.monotonic() - t0 < 7
    assert d["laggards"] == [] and "retire_deadline" not in d
    ev = wait_event(s, "dev", path, "rotation.retired")
    assert ev["detail"] == {"current_version": 2, "retired_version": 1, "reason": "consumers_moved", "laggards": []}
    assert len(events_of(s, "dev", path, "rotation.retired")) == 1


def test_retire_at_grace_end(server):
    s = server
    prefix = uniq("grace")
    token, accessor = make_token(s, [{"env": "dev", "path": f"{prefix}/**", "capabilities": ["read"]}])
    by_grace, lagging = f"{prefix}/by-grace", f"{prefix}/lagging"
    for p in (by_grace, lagging):
        assert s.write("dev", p, {"password": "grace-v1"}).status_code == 200
        read_value(s, "dev", p, token=token)
    assert configure(s, "dev", by_grace, grace="3s", retire="grace").status_code == 200
    assert configure(s, "dev", lagging, grace="3s", retire="consumers").status_code == 200
    for p in (by_grace, lagging):
        assert s.api("POST", rot_url("rotate", "dev", p)).status_code == 202
    for p in (by_grace, lagging):
        d = wait_runs(s, "dev", p, 1)
        assert ts(d["retire_deadline"]) == ts(d["last_rotated_at"]) + timedelta(seconds=3)
    t_finish = time.monotonic()
    # retire=grace: A moving to the new version does not matter; only the grace period does.
    remember(s, read_value(s, "dev", by_grace, token=token)[0]["data"]["password"])
    time.sleep(1.0)
    assert status(s, "dev", by_grace)["state"] == "retiring"

    ev = wait_event(s, "dev", by_grace, "rotation.retired", timeout=10)
    assert ev["detail"]["reason"] == "grace_ended" and ev["detail"]["current_version"] == 2
    assert time.monotonic() - t_finish > 1.5
    # retire=consumers with a consumer that never moves: retired when the grace ends, and the
    # event names who was left behind.
    ev = wait_event(s, "dev", lagging, "rotation.retired", timeout=10)
    assert ev["detail"] == {"current_version": 2, "retired_version": 1, "reason": "grace_ended", "laggards": [accessor]}
    for p in (by_grace, lagging):
        assert status(s, "dev", p)["state"] == "idle"
        assert len(events_of(s, "dev", p, "rotation.retired")) == 1
    remember(s, read_value(s, "dev", lagging)[0]["data"]["password"])


# --------------------------------------------------------------------------------------------
# 5. expiry warnings with an injected clock, the webhook sink and its signature


def expiry_events(s, path):
    return [e for e in events_of(s, "dev", path) if e["kind"] in ("secret.expiring", "secret.expired")]


def scan_barrier(s, clock: Clock) -> None:
    """Returns once an expiry scan ran at (or after) the clock's current time: a probe secret
    that expires 12 h from now gets its warning in the same scan as every other secret."""
    probe = f"probes/{uniq('probe')}"
    assert s.write("dev", probe, "probe", metadata={"expires_at": iso(clock.now + 12 * HOUR)}).status_code == 200
    # The scan runs at most once per clock value per `expiry_scan`: move the clock a little.
    clock.advance(timedelta(seconds=2))
    wait_for(lambda: expiry_events(s, probe), 10, 0.1, what="the probe's expiry warning")


def test_expiry_warnings_once_per_threshold(server_factory, tmp_path, hook):
    T = datetime(2027, 3, 1, 12, 0, tzinfo=timezone.utc)
    clock = Clock(tmp_path / "clock", T - 8 * DAY)
    config = (
        '[rotation]\njitter = "0s"\nexpiry_scan = "1s"\n'
        f'[events]\nwebhook_url = "{hook.url}"\nsigning_secret = "dev/hooks/key#key"\n'
    )
    s = server_factory.new("sqlite", env={"STEWARD_TEST_CLOCK_FILE": clock.path}, config_text=config)
    signing_key = "hook-signing-" + uuid.uuid4().hex
    remember(s, signing_key)
    assert s.write("dev", "hooks/key", {"key": signing_key}).status_code == 200
    path = f"{uniq('exp')}/tls-cert"
    r = s.write("dev", path, {"cert": "PEM"}, metadata={"expires_at": iso(T), "owner": "team-pki"})
    assert r.status_code == 200, r.text

    def warnings():
        return [(e["kind"], e["detail"]["threshold"]) for e in expiry_events(s, path)]

    def settle_sink():
        # Delivery is at least once: a stop between a POST and the stored sink cursor would
        # send that warning again. Let the sink catch up before stopping the server.
        want = {e["seq"] for e in all_events(s) if e["kind"] in ("secret.expiring", "secret.expired")}
        wait_for(lambda: {int(h["x-steward-event-seq"]) for h, _, _ in hook.snapshot()} >= want,
                 15, 0.2, what="the webhook to catch up")
        time.sleep(0.5)

    # 8 days before: nothing.
    scan_barrier(s, clock)
    assert warnings() == []

    # 7 days (less an hour) before: exactly one warning, threshold 7 days.
    clock.set(T - 7 * DAY + HOUR)
    scan_barrier(s, clock)
    evs = expiry_events(s, path)
    assert warnings() == [("secret.expiring", "7days")]
    det = evs[0]["detail"]
    assert det["owner"] == "team-pki" and ts(det["expires_at"]) == T
    assert 7 * 86400 - 3600 - 10 <= det["seconds_left"] <= 7 * 86400 - 3600

    # The CLI lists it (the server's clock decides what is "within").
    out = ok(s.cli("secret", "expiring", "--within", "30d")).stdout
    line = [l for l in out.splitlines() if path in l]
    assert len(line) == 1 and "owner=team-pki" in line[0] and "expires 2027-03-01T12:00:00" in line[0], out
    assert "EXPIRED" not in line[0] and "(in 6days 22h" in line[0], line[0]
    listed = json.loads(ok(s.cli("secret", "expiring", "--within", "30d", "-o", "json")).stdout)
    mine = [x for x in listed if x["path"] == path]
    assert len(mine) == 1 and mine[0]["env"] == "dev" and mine[0]["expired"] is False
    assert mine[0]["owner"] == "team-pki" and ts(mine[0]["expires_at"]) == T
    assert 0 < mine[0]["seconds_left"] <= 7 * 86400 - 3600
    assert path not in ok(s.cli("secret", "expiring", "--within", "1d")).stdout
    r = s.cli("secret", "expiring", "--within", "soon")
    assert r.returncode == 2 and "--within" in r.stderr

    # A restart (same data, same clock) does not send it again.
    settle_sink()
    assert s.stop() == 0
    s.start()
    scan_barrier(s, clock)
    assert warnings() == [("secret.expiring", "7days")]

    clock.set(T - 3 * DAY + HOUR)
    scan_barrier(s, clock)
    assert warnings() == [("secret.expiring", "7days"), ("secret.expiring", "3days")]
    clock.set(T - DAY + HOUR)
    scan_barrier(s, clock)
    assert warnings()[2:] == [("secret.expiring", "1day")]
    clock.set(T + timedelta(minutes=1))
    scan_barrier(s, clock)
    assert warnings()[3:] == [("secret.expired", "expired")]
    exp = expiry_events(s, path)[-1]["detail"]
    assert -70 <= exp["seconds_left"] <= -60
    listed = json.loads(ok(s.cli("secret", "expiring", "-o", "json")).stdout)
    assert [x["expired"] for x in listed if x["path"] == path] == [True]
    assert "EXPIRED" in [l for l in ok(s.cli("secret", "expiring")).stdout.splitlines() if path in l][0]

    # A secret first seen 12 h before it expires: one warning, the tightest threshold only.
    fresh = f"{uniq('exp')}/api-key"
    assert s.write("dev", fresh, "k", metadata={"expires_at": iso(clock.now + 12 * HOUR)}).status_code == 200
    scan_barrier(s, clock)
    assert [(e["kind"], e["detail"]["threshold"]) for e in expiry_events(s, fresh)] == [("secret.expiring", "1day")]
    settle_sink()
    assert s.stop() == 0
    s.start()
    scan_barrier(s, clock)
    assert [e["detail"]["threshold"] for e in expiry_events(s, fresh)] == ["1day"]
    assert len(warnings()) == 4

    # Changing expires_at arms the warnings again.
    r = s.api("POST", f"/v1/dev/metadata/{fresh}", json={"expires_at": iso(clock.now + 2 * DAY)})
    assert r.status_code in (200, 204), r.text
    scan_barrier(s, clock)
    assert [e["detail"]["threshold"] for e in expiry_events(s, fresh)] == ["1day", "3days"]

    # The webhook got every warning exactly once, signed; the log has a line for each.
    notable = [e for e in all_events(s) if e["kind"] in ("secret.expiring", "secret.expired")]
    assert len(notable) >= 10

    def delivered():
        seqs = [int(h["x-steward-event-seq"]) for h, _, _ in hook.snapshot()]
        return seqs if set(seqs) >= {e["seq"] for e in notable} else None

    wait_for(delivered, 15, 0.2, what="webhook deliveries")
    time.sleep(1.5)  # anything sent twice would arrive by now
    got = hook.snapshot()
    seqs = [int(h["x-steward-event-seq"]) for h, _, _ in got]
    assert sorted(seqs) == sorted(e["seq"] for e in notable), "each warning is POSTed exactly once"
    by_seq = {e["seq"]: e for e in notable}
    for headers, body, urlpath in got:
        assert urlpath == "/hook"
        assert headers["content-type"] == "application/json"
        ev = json.loads(body)
        want = by_seq[ev["seq"]]
        assert ev == want
        assert headers["x-steward-event"] == ev["kind"]
        stamp = headers["x-steward-timestamp"]
        assert stamp.isdigit()
        mac = hmac.new(signing_key.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["x-steward-signature"] == f"v1={mac}"
        assert signing_key.encode() not in body
    lines = [l for l in log_lines(s) if "steward event" in l]
    for e in notable:
        assert [l for l in lines if re.search(rf"\bseq={e['seq']}\b", l) and f"event={e['kind']} " in l], \
            f"no 'steward event' log line for {e['kind']} seq {e['seq']}"
    assert_not_in_plaintext(s, [signing_key])


# --------------------------------------------------------------------------------------------
# 6. overdue rotations


def test_overdue_reported_once_per_due_time(server_factory, tmp_path, command_script):
    C0 = datetime(2027, 1, 10, 0, 0, tzinfo=timezone.utc)
    clock = Clock(tmp_path / "clock", C0)
    config = '[rotation]\njitter = "0s"\noverdue_after = "1h"\nexpiry_scan = "1s"\n'
    s = server_factory.new("sqlite", env={"STEWARD_TEST_CLOCK_FILE": clock.path}, config_text=config)
    path = f"{uniq('late')}/api"
    assert s.write("dev", path, {"token": "still-the-original"}).status_code == 200
    r = configure(s, "dev", path, rotator="command", settings=command_settings(command_script, FAIL=1),
                  schedule={"every": "1d"}, max_attempts=1)
    d = data_of(r)
    assert ts(d["next_due"]) == C0 + DAY

    # The target is down: `rotate now --wait` ends failed and exits 1; the value is untouched.
    r = s.cli("rotate", "now", f"dev/{path}", "--wait")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "state=idle" in r.stdout and "last=failed" in r.stdout and "target is down" in r.stdout
    d = status(s, "dev", path)
    assert (d["failures"], d["rotations"], d["last"]["outcome"], d["last"]["attempts"]) == (1, 0, "failed", 1)
    assert "exited with code 1" in d["last"]["error"]
    assert ts(d["next_due"]) == C0 + DAY
    failed = wait_event(s, "dev", path, "rotation.failed")
    assert failed["detail"]["attempts"] == 1 and "target is down" in failed["detail"]["reason"]
    assert read_value(s, "dev", path)[0]["data"] == {"token": "still-the-original"}
    assert events_of(s, "dev", path, "rotation.retrying") == []

    def overdue():
        return [ts(e["detail"]["due_at"]) for e in events_of(s, "dev", path, "rotation.overdue")]

    # Two hours past due (overdue_after = 1h): reported once; the scheduler tries (and fails).
    clock.set(C0 + DAY + 2 * HOUR)
    d = wait_runs(s, "dev", path, 2)
    assert d["failures"] == 2
    assert ts(d["next_due"]) == C0 + 2 * DAY + 2 * HOUR
    time.sleep(2.5)  # more scheduler ticks at the same clock
    assert overdue() == [C0 + DAY]
    assert [e["detail"]["reason"] for e in events_of(s, "dev", path, "rotation.started")] == ["manual", "schedule"]

    # The next due time passes too: one more report, for that due time.
    clock.set(C0 + 2 * DAY + 4 * HOUR)
    wait_runs(s, "dev", path, 3)
    time.sleep(2.5)
    assert overdue() == [C0 + DAY, C0 + 2 * DAY + 2 * HOUR]

    # Due only 30 minutes ago: it runs, but that is not overdue.
    clock.set(C0 + 3 * DAY + 4 * HOUR + 30 * timedelta(minutes=1))
    d = wait_runs(s, "dev", path, 4)
    time.sleep(2.0)
    assert len(overdue()) == 2
    assert d["failures"] == 4 and d["rotations"] == 0
    assert read_value(s, "dev", path)[0]["data"] == {"token": "still-the-original"}
    lines = [l for l in log_lines(s) if "steward event" in l]
    assert len([l for l in lines if "event=rotation.overdue " in l and path in l]) >= 2
    assert len([l for l in lines if "event=rotation.failed " in l and path in l]) >= 4


# --------------------------------------------------------------------------------------------
# 7. the CLI


def test_cli_rotate(cli_server, command_script):
    s = cli_server
    target = f"dev/{uniq('cli')}/db"
    env, path = target.split("/", 1)
    assert s.write(env, path, {"user": "app", "password": "cli-original"}).status_code == 200

    r = ok(s.cli("rotate", "configure", target, "--rotator", "random", "--settings", '{"length": 20, "charset": "hex"}',
                 "--every", "30d", "--grace", "10m"))
    assert f"{target}  rotator=random state=idle" in r.stdout and "current=- previous=-" in r.stdout
    d = json.loads(ok(s.cli("rotate", "status", target, "-o", "json")).stdout)
    assert d["config"]["schedule"]["every"] == "30d" and d["config"]["grace"] == "10m"
    assert d["config"]["settings"] == {"length": 20, "charset": "hex"} and d["config"]["retire"] == "consumers"

    r = ok(s.cli("rotate", "now", target, "--wait"))
    assert "current=v2 previous=v1" in r.stdout and "last=rotated" in r.stdout
    new = s.read(env, path).json()["data"]["data"]["password"]
    remember(s, new)
    assert re.fullmatch(r"[0-9a-f]{20}", new)
    d = json.loads(ok(s.cli("rotate", "status", target, "-o", "json")).stdout)
    assert (d["current_version"], d["previous_version"], d["rotations"]) == (2, 1, 1)

    # Without --wait it returns at once.
    r = ok(s.cli("rotate", "now", target))
    assert "started" in r.stdout
    wait_runs(s, env, path, 2)
    remember(s, s.read(env, path).json()["data"]["data"]["password"])

    allst = ok(s.cli("rotate", "status")).stdout
    assert [l for l in allst.splitlines() if l.startswith(target + " ")]
    alljson = json.loads(ok(s.cli("rotate", "status", "-o", "json")).stdout)
    assert [x["current_version"] for x in alljson if x["path"] == path] == [3]

    r = ok(s.cli("rotate", "rollback", target, "--wait", "-o", "json"))
    d = json.loads(r.stdout)
    assert d["last"]["outcome"] == "rolled_back" and d["current_version"] == 4
    assert s.read(env, path).json()["data"]["data"]["password"] == \
        s.read(env, path, version=2).json()["data"]["data"]["password"]

    r = ok(s.cli("rotate", "remove", target))
    assert "removed" in r.stdout
    r = s.cli("rotate", "status", target)
    assert r.returncode == 4 and "no rotation config" in r.stderr, (r.stdout, r.stderr)
    r = s.cli("rotate", "now", target, "--wait")
    assert r.returncode == 4 and "rotate configure" in r.stderr

    # Bad input: non-zero with a message that says what is wrong; nothing stored.
    cases = [
        (["--rotator", "random", "--every", "10s"], "one minute"),
        (["--rotator", "random", "--every", "1d", "--window", "25:00-26:00"], "window"),
        (["--rotator", "nope"], "unknown rotator"),
        (["--rotator", "random", "--settings", "{bad json"], "--settings is not JSON"),
        (["--rotator", "random", "--settings", "@/nonexistent/settings.json"], "/nonexistent/settings.json"),
        (["--rotator", "random", "--every", "1d", "--cron", "0 3 * * 1"], "cannot be used with"),
        (["--rotator", "random", "--max-attempts", "0"], "max_attempts"),
        (["--rotator", "random", "--retire", "never"], "`consumers` or `grace`"),
    ]
    for args, msg in cases:
        r = s.cli("rotate", "configure", target, *args)
        assert r.returncode != 0, args
        assert msg in r.stderr, (args, r.stderr)
    assert s.cli("rotate", "status", target).returncode == 4
    r = s.cli("rotate", "configure", "no-slash", "--rotator", "random")
    assert r.returncode == 2

    # Never rotated: rollback refuses (a conflict).
    ok(s.cli("rotate", "configure", target, "--rotator", "random", "--manual"))
    r = s.cli("rotate", "rollback", target, "--wait")
    assert r.returncode == 6 and "no previous" in r.stderr, (r.returncode, r.stderr)

    # A rotation that fails: --wait exits 1 and says why.
    failing = f"dev/{uniq('clifail')}/tok"
    assert s.write("dev", failing.split("/", 1)[1], {"password": "x-original"}).status_code == 200
    ok(s.cli("rotate", "configure", failing, "--rotator", "command", "--max-attempts", "2",
             "--settings", json.dumps(command_settings(command_script, FAIL=1))))
    r = s.cli("rotate", "now", failing, "--wait")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "last=failed" in r.stdout and "target is down" in r.stdout
    d = status(s, "dev", failing.split("/", 1)[1])
    assert d["last"]["attempts"] == 2 and d["failures"] == 1
    assert len(events_of(s, "dev", failing.split("/", 1)[1], "rotation.retrying")) == 1
    r = s.cli("rotate", "now", failing, "--wait", "-o", "json")
    assert r.returncode == 1 and json.loads(r.stdout)["last"]["outcome"] == "failed"


def test_cli_events(cli_server):
    s = cli_server
    prefix = uniq("clievt")
    start = data_of(s.api("GET", "/v1/sys/events?after=latest"))["next"]
    for p in ("a", "b"):
        assert s.write("dev", f"{prefix}/{p}", "v").status_code == 200

    lines = ok(s.cli("events", "--after", str(start), "-o", "json")).stdout.splitlines()
    evs = [json.loads(l) for l in lines]
    assert all(e["seq"] > start for e in evs)
    mine = [(e["kind"], e["path"], e["detail"]) for e in evs if e["path"].startswith(prefix)]
    assert mine == [("secret.written", f"{prefix}/a", {"version": 1}), ("secret.written", f"{prefix}/b", {"version": 1})]

    human = ok(s.cli("events", "--after", str(start))).stdout
    hl = [l for l in human.splitlines() if prefix in l]
    assert len(hl) == 2
    assert re.match(r"^\s*\d+\s+\S+\s+secret\.written\s+dev/" + re.escape(prefix) + "/a\\s", hl[0]), hl[0]
    # The whole log from 0 includes them too; --after latest prints nothing.
    assert prefix in ok(s.cli("events")).stdout
    assert ok(s.cli("events", "--after", "latest")).stdout == ""
    r = s.cli("events", "--after", "yesterday")
    assert r.returncode == 2 and "--after" in r.stderr

    # --follow keeps printing new events.
    p = subprocess.Popen([STEWARD_BIN, "events", "--after", "latest", "--follow", "-o", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=s.cli_env())
    try:
        time.sleep(1.0)
        assert s.write("dev", f"{prefix}/c", "v").status_code == 200
        box = {}
        reader = threading.Thread(target=lambda: box.update(line=p.stdout.readline()), daemon=True)
        reader.start()
        reader.join(10)
        e = json.loads(box["line"])
        assert (e["kind"], e["path"]) == ("secret.written", f"{prefix}/c")
    finally:
        p.terminate()
        p.wait(10)


def test_agent_once_and_on_change(cli_server, tmp_path):
    s = cli_server
    path = f"{uniq('agent')}/db"
    assert s.write("dev", path, {"user": "app", "password": "agent-initial"}).status_code == 200
    configure(s, "dev", path)
    src = tmp_path / "db.conf.tmpl"
    src.write_text(f"user=${{secret:dev/{path}#user}}\npassword=${{secret:dev/{path}#password}}\n")

    dest = tmp_path / "once" / "db.conf"
    dest.parent.mkdir()
    ok(s.cli("agent", "--once", "--template", f"{src}:{dest}"))
    assert dest.read_text() == "user=app\npassword=agent-initial\n"
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600

    dest = tmp_path / "live" / "db.conf"
    dest.parent.mkdir()
    reloads = tmp_path / "reloads.log"
    err = open(tmp_path / "agent.err", "w")
    agent = subprocess.Popen(
        [STEWARD_BIN, "agent", "--template", f"{src}:{dest}", "--command", f"echo reload >> {reloads}"],
        stdout=subprocess.DEVNULL, stderr=err, env=s.cli_env(), cwd=str(tmp_path),
    )

    def reload_count():
        return len(reloads.read_text().splitlines()) if reloads.exists() else 0

    try:
        # First render: the file appears, the command runs once.
        wait_for(lambda: reload_count() == 1, 10, what="the first render")
        assert dest.read_text() == "user=app\npassword=agent-initial\n"
        assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600

        seen = []
        for i in range(2):
            rotate_and_wait(s, "dev", path)
            pw = s.read("dev", path).json()["data"]["data"]["password"]
            remember(s, pw)
            seen.append(pw)
            wait_for(lambda: dest.exists() and f"password={pw}\n" in dest.read_text(), 10, what="re-render")
            wait_for(lambda: reload_count() == 2 + i, 5, what="the reload command")
            assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
            if i == 0:
                # A change that does not alter the rendered file: no reload.
                assert s.write("dev", f"{uniq('unrelated')}/x", "v").status_code == 200
                time.sleep(1.0)
        time.sleep(1.0)
        assert reload_count() == 3, "the command runs exactly once per change of the file"
        assert dest.read_text() == f"user=app\npassword={seen[-1]}\n"
        assert agent.poll() is None
    finally:
        agent.terminate()
        agent.wait(10)
        err.close()
    # Atomic writes leave nothing else next to the destinations.
    assert sorted(p.name for p in (tmp_path / "live").iterdir()) == ["db.conf"]
    assert sorted(p.name for p in (tmp_path / "once").iterdir()) == ["db.conf"]


def _run_watch(s, tmp_path, *extra):
    prefix = uniq("runw")
    assert s.write("dev", f"{prefix}/db", {"password": "run-initial"}).status_code == 200
    configure(s, "dev", f"{prefix}/db")
    out, sig = tmp_path / "out.txt", tmp_path / "sig.txt"
    script = (f'trap "echo USR1 $$ >> {sig}" USR1; echo "$$ $DB_PASSWORD" >> {out}; '
              "while true; do sleep 0.1; done")
    err = open(tmp_path / "run.err", "w")
    p = subprocess.Popen(
        [STEWARD_BIN, "run", "--env", "dev", "--prefix", f"{prefix}/", "--watch", *extra, "--", "sh", "-c", script],
        stdout=subprocess.DEVNULL, stderr=err, env=s.cli_env(), cwd=str(tmp_path),
    )
    return prefix, p, out, sig, err


def lines_of(f):
    return f.read_text().splitlines() if f.exists() else []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill 0: look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_run_watch_restarts_on_change(cli_server, tmp_path):
    s = cli_server
    prefix, p, out, sig, err = _run_watch(s, tmp_path, "--restart-grace", "3s")
    try:
        wait_for(lambda: len(lines_of(out)) == 1, 10, what="the child to start")
        pid1, pw1 = lines_of(out)[0].split(" ", 1)
        assert pw1 == "run-initial"
        rotate_and_wait(s, "dev", f"{prefix}/db")
        new = s.read("dev", f"{prefix}/db").json()["data"]["data"]["password"]
        remember(s, new)
        wait_for(lambda: len(lines_of(out)) == 2, 10, what="the restarted child")
        pid2, pw2 = lines_of(out)[1].split(" ", 1)
        assert pw2 == new and pid2 != pid1
        wait_for(lambda: not pid_alive(int(pid1)), 5, what="the old child to be gone")
        assert not lines_of(sig)
        # An unrelated write does not restart it.
        assert s.write("dev", f"{uniq('other')}/x", "v").status_code == 200
        time.sleep(1.5)
        assert len(lines_of(out)) == 2 and p.poll() is None
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        finally:
            p.kill()
            err.close()
    assert not pid_alive(int(lines_of(out)[-1].split(" ", 1)[0]))


def test_run_watch_signals_on_change(cli_server, tmp_path):
    s = cli_server
    prefix, p, out, sig, err = _run_watch(s, tmp_path, "--on-change", "signal:SIGUSR1")
    try:
        wait_for(lambda: len(lines_of(out)) == 1, 10, what="the child to start")
        pid1 = lines_of(out)[0].split(" ", 1)[0]
        rotate_and_wait(s, "dev", f"{prefix}/db")
        remember(s, s.read("dev", f"{prefix}/db").json()["data"]["data"]["password"])
        wait_for(lambda: lines_of(sig), 10, what="SIGUSR1 in the child")
        time.sleep(1.0)
        assert lines_of(sig) == [f"USR1 {pid1}"]
        assert len(lines_of(out)) == 1, "the child was restarted"
        assert pid_alive(int(pid1)) and p.poll() is None
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        finally:
            p.kill()
            err.close()
    r = s.cli("run", "--env", "dev", "--watch", "--on-change", "signal:SIGNOPE", "--", "true")
    assert r.returncode == 2 and "SIGNOPE" in r.stderr


# --------------------------------------------------------------------------------------------
# 8. the scheduler: catch-up after downtime, resume after a crash


def test_scheduler_runs_due_rotations_after_restart_and_crash(server_factory, tmp_path):
    C0 = datetime(2027, 2, 1, 8, 0, tzinfo=timezone.utc)
    clock = Clock(tmp_path / "clock", C0)
    s = server_factory.new("sqlite", env={"STEWARD_TEST_CLOCK_FILE": clock.path},
                           config_text='[rotation]\njitter = "0s"\n')
    path = f"{uniq('sched')}/db"
    assert s.write("dev", path, {"password": "sched-initial"}).status_code == 200
    d = data_of(configure(s, "dev", path, schedule={"every": "1d"}, grace="1m"))
    assert ts(d["next_due"]) == C0 + DAY

    # Not due yet: nothing happens.
    clock.set(C0 + DAY - timedelta(minutes=1))
    time.sleep(2.0)
    assert status(s, "dev", path)["rotations"] == 0

    # Due while the server is down: it runs by itself after the start.
    assert s.stop() == 0
    clock.set(C0 + DAY + timedelta(minutes=1))
    s.start()
    d = wait_runs(s, "dev", path, 1)
    assert d["current_version"] == 2 and d["last"]["outcome"] == "rotated"
    assert ts(d["last_rotated_at"]) == C0 + DAY + timedelta(minutes=1)
    assert ts(d["next_due"]) == C0 + 2 * DAY + timedelta(minutes=1)
    assert [e["detail"]["reason"] for e in events_of(s, "dev", path, "rotation.started")] == ["schedule"]
    assert events_of(s, "dev", path, "rotation.overdue") == []  # 1 minute late is not overdue
    v2 = s.read("dev", path).json()["data"]["data"]["password"]
    remember(s, v2)

    # A crash right after the test step is stored: the restarted server finishes that run.
    assert s.stop() == 0
    s.extra_env["STEWARD_TEST_CRASH_AFTER"] = "test"
    s.start()
    clock.set(C0 + 2 * DAY + timedelta(minutes=2))
    assert s.proc.wait(20) == -signal.SIGKILL
    del s.extra_env["STEWARD_TEST_CRASH_AFTER"]
    s.start()
    d = wait_runs(s, "dev", path, 2)
    assert d["current_version"] == 3 and d["rotations"] == 2 and d["failures"] == 0
    started = events_of(s, "dev", path, "rotation.started")
    finished = events_of(s, "dev", path, "rotation.finished")
    assert [e["detail"]["reason"] for e in started] == ["schedule", "schedule"]
    assert [e["detail"]["run"] for e in finished] == [e["detail"]["run"] for e in started]
    assert [e["detail"]["version"] for e in events_of(s, "dev", path, "secret.written")] == [1, 2, 3]
    v3 = s.read("dev", path).json()["data"]["data"]["password"]
    remember(s, v3)
    assert v3 != v2
    assert_not_in_plaintext(s, [v2, v3])


# --------------------------------------------------------------------------------------------
# 9. no generated value in logs or at rest (last: covers everything this module did)


def test_zz_no_generated_value_in_logs_or_store(server):
    """The module's shared server (each store): its log and its raw store never hold a value
    a rotation generated (pending ones included)."""
    values = GENERATED.get(str(server.workdir), set())
    assert len(values) >= 5
    assert_not_in_plaintext(server, values)


def test_zz_cli_server_no_generated_value_in_logs_or_store(cli_server):
    values = GENERATED.get(str(cli_server.workdir), set())
    assert len(values) >= 5
    assert_not_in_plaintext(cli_server, values)
