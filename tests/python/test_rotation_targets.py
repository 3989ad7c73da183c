"""Rotation against real targets: a throwaway PostgreSQL cluster that asks for passwords
(scram-sha-256), the local MariaDB (127.0.0.1:3306) and Redis (127.0.0.1:6379).

1. Zero downtime: while 20 rotations run back to back, a load client opens new connections
   (>= 50 per second) with the credential it reads from Steward, following the client contract
   (on a failed login, re-read the secret once and retry); no login may fail.
2. Crash safety: the server SIGKILLs itself right after each rotation step is stored; after a
   restart the rotation completes with exactly one new version, which logs in, and the old
   credential is revoked after the grace period.
3. A target that rejects the new credential: the rotation fails after max_attempts, the current
   credential keeps working, nothing is pending, the failure is audited and no password reaches
   the reason, the audit log or the server's log.

Helpers (the PostgreSQL cluster, users, the load client, rotation API calls) are in peers.py.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest

import peers
from peers import (
    PEER_HOST,
    configure,
    events,
    kinds,
    ok_json,
    rand_name,
    rand_password,
    read_label,
    reader_token,
    rotate_and_wait,
    status,
    wait_event,
    wait_for,
)

ENV, PATH, ADMIN = "dev", "db/app", "db/admin"
ROTATIONS = 20
MIN_RATE = 50.0

# Scheduled rotations start at once; a failed step is retried after ~100 ms.
SERVER_CONFIG = '[rotation]\njitter = "0s"\nretry_base = "100ms"\n'


@pytest.fixture(scope="module")
def pg_cluster():
    c = peers.PgCluster().start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def shared_peers():
    peers.ensure_peers()


@pytest.fixture
def pg_roles(pg_cluster):
    """Two LOGIN roles with random names and known passwords; dropped afterwards."""
    a, b = rand_name("app_a"), rand_name("app_b")
    pw = {a: rand_password(), b: rand_password()}
    pg_cluster.create_roles((a, pw[a]), (b, pw[b]))
    yield a, b, pw
    pg_cluster.drop_roles(a, b)


def new_server(server_factory, env=None):
    return server_factory.new("sqlite", config_text=SERVER_CONFIG, env=env)


def store_secret(s, path, value) -> int:
    r = s.write(ENV, path, value)
    return ok_json(r)["data"]["version"]


def read_current(s, token=None) -> tuple:
    r = read_label(s, ENV, PATH, "current", token=token)
    body = ok_json(r)
    return int(r.headers["ETag"].strip('"')), body["data"]["data"]


def setup_pg(s, cluster, a, pw):
    """dev/db/app = a's credential (version 1), dev/db/admin = the cluster's superuser."""
    initial = {"username": a, "password": pw[a], "host": PEER_HOST, "port": cluster.port, "dbname": "postgres"}
    assert store_secret(s, PATH, initial) == 1
    store_secret(s, ADMIN, cluster.admin_credential())
    return initial


def pg_rotation(cluster, a, b, **kw):
    cfg = dict(
        rotator="postgres",
        settings={"host": PEER_HOST, "port": cluster.port, "dbname": "postgres",
                  "strategy": "alternating", "usernames": [a, b]},
        admin=f"{ENV}/{ADMIN}",
        schedule={"manual": True},
        grace="30s",
        retire="consumers",
    )
    cfg.update(kw)
    return cfg


# --------------------------------------------------------------------------------------------
# 1. Zero downtime


def run_zero_downtime(s, login, threads: int, *, alternating: bool, watch: bool = False) -> dict:
    """Runs the load client through ROTATIONS back-to-back rotations and checks the outcome.
    Returns what the caller needs for target-specific checks."""
    token = reader_token(s, ENV, PATH)
    load = peers.LoadClient(s, token["client_token"], ENV, PATH, login, threads=threads, watch=watch).start()
    seen = {}  # version -> credential, read by root after each rotation
    try:
        time.sleep(0.5)
        t_rot = time.monotonic()
        for i in range(ROTATIONS):
            st = rotate_and_wait(s, ENV, PATH, timeout=30)
            assert st["last"]["outcome"] == "rotated", st
            assert st["current_version"] == i + 2, st
            v, cred = read_current(s)
            seen[v] = cred
        rotations_done = time.monotonic()
        time.sleep(0.5)
    finally:
        stats = load.stop()
    rotation_secs = rotations_done - t_rot
    report = (f"{stats.ok} logins in {stats.elapsed:.1f}s = {stats.rate:.0f}/s; re-reads {stats.rereads}, "
              f"recovered {stats.recovered}; {len(stats.versions_used)} versions used"
              + (f" ({load.watched} seen by the watcher)" if watch else "")
              + f"; {ROTATIONS} rotations in {rotation_secs:.1f}s")
    print(report)
    assert not load.errors, load.errors
    assert stats.failures == [], f"failed logins after the re-read: {stats.failures[:5]} ({report})"
    assert stats.recovered == stats.rereads, report
    assert stats.rate >= MIN_RATE, f"load client too slow to prove anything: {report}"
    # The client really moved through the versions (it did not keep one credential): each
    # rotation made it re-read (alternating), or the watcher brought it each new version.
    assert len(stats.versions_used) >= ROTATIONS // 2, (sorted(stats.versions_used), report)
    if alternating:
        # The old user's password is replaced by the next rotation: the client hit that and
        # recovered by re-reading, every time.
        assert stats.rereads > 0, report

    st = status(s, ENV, PATH)
    assert st["rotations"] == ROTATIONS and st["failures"] == 0, st
    assert st["current_version"] == ROTATIONS + 1, st
    evs = events(s, 0, ENV, PATH)
    assert len(kinds(evs, "rotation.finished")) == ROTATIONS
    assert kinds(evs, "rotation.failed") == []
    assert kinds(evs, "rotation.retrying") == [], kinds(evs, "rotation.retrying")

    # Retirement: once every consumer (the load client's token, root) has read the current
    # version, the previous credential is revoked without waiting for the 30 s grace period.
    prev = ok_json(read_label(s, ENV, PATH, "previous"))["data"]["data"]
    v_cur, cur = read_current(s, token=token["client_token"])
    assert v_cur == ROTATIONS + 1
    assert read_current(s)[1] == cur
    assert cur == seen[v_cur]
    retired = wait_for(
        lambda: [e for e in kinds(events(s, 0, ENV, PATH), "rotation.retired") if peers.retired_for(e) == v_cur],
        timeout=15, interval=0.2, what="rotation.retired of the last rotation")[0]
    assert retired["detail"]["reason"] == "consumers_moved", retired
    assert status(s, ENV, PATH)["state"] == "idle"
    assert login(cur) is None, "the current credential must log in"
    return {"current": cur, "previous": prev, "seen": seen, "stats": stats}


def test_zero_downtime_postgres_alternating(server_factory, pg_cluster, pg_roles):
    a, b, pw = pg_roles
    s = new_server(server_factory)
    setup_pg(s, pg_cluster, a, pw)
    configure(s, ENV, PATH, **pg_rotation(pg_cluster, a, b))
    out = run_zero_downtime(s, peers.pg_login, threads=6, alternating=True)
    cur, prev = out["current"], out["previous"]
    assert {cur["username"], prev["username"]} == {a, b}
    err = pg_cluster.login_error(prev["username"], prev["password"])
    assert err is not None and "password authentication failed" in err, err
    # No credential other than the current one still works.
    for v, c in out["seen"].items():
        if c != cur:
            assert not pg_cluster.can_login(c["username"], c["password"]), v
    assert not pg_cluster.can_login(a, pw[a]) and not pg_cluster.can_login(b, pw[b])


def test_zero_downtime_mariadb_alternating(server_factory, shared_peers):
    a, b = rand_name("app_a"), rand_name("app_b")
    pw = {a: rand_password(), b: rand_password()}
    peers.mysql_create_users((a, pw[a]), (b, pw[b]))
    try:
        s = new_server(server_factory)
        store_secret(s, PATH, {"username": a, "password": pw[a], "host": PEER_HOST, "port": peers.MARIADB_PORT})
        # root with an empty password: the rotator connects without one.
        store_secret(s, ADMIN, {"username": "root", "password": ""})
        configure(s, ENV, PATH, rotator="mysql",
                  settings={"host": PEER_HOST, "port": peers.MARIADB_PORT, "strategy": "alternating", "usernames": [a, b]},
                  admin=f"{ENV}/{ADMIN}", schedule={"manual": True}, grace="30s", retire="consumers")
        out = run_zero_downtime(s, peers.mysql_login, threads=8, alternating=True)
        cur, prev = out["current"], out["previous"]
        assert {cur["username"], prev["username"]} == {a, b}
        err = peers.mysql_login_error(prev["username"], prev["password"])
        assert err is not None and "1045" in err, err
        for v, c in out["seen"].items():
            if c != cur:
                assert peers.mysql_login_error(c["username"], c["password"]) is not None, v
        assert peers.mysql_login_error(a, pw[a]) is not None and peers.mysql_login_error(b, pw[b]) is not None
    finally:
        peers.mysql_drop_users(a, b)


def test_zero_downtime_redis(server_factory, shared_peers):
    user, pw0 = rand_name("app"), rand_password()
    peers.redis_create_user(user, pw0)
    try:
        s = new_server(server_factory)
        store_secret(s, PATH, {"username": user, "password": pw0, "host": PEER_HOST, "port": peers.REDIS_PORT})
        # The default user without a password (the server runs without authentication).
        store_secret(s, ADMIN, {"username": "default", "password": ""})
        configure(s, ENV, PATH, rotator="redis",
                  settings={"host": PEER_HOST, "port": peers.REDIS_PORT, "username": user},
                  admin=f"{ENV}/{ADMIN}", schedule={"manual": True}, grace="30s", retire="consumers")
        # A redis user keeps its previous password until retirement, so logins with a stale
        # credential succeed: the client follows the secret (long poll) to log in with each new
        # password while the rotations run.
        out = run_zero_downtime(s, peers.redis_login, threads=4, alternating=False, watch=True)
        cur, prev = out["current"], out["previous"]
        assert cur["username"] == prev["username"] == user
        err = peers.redis_login_error(user, prev["password"])
        assert err is not None and ("WRONGPASS" in err or "invalid username-password" in err), err
    finally:
        peers.redis_drop_user(user)


def test_manual_rotation_supersedes_a_pending_retirement_redis(server_factory, shared_peers):
    """Two manual rotations, the second during the first one's grace period: the credential the
    first one replaced can no longer be kept (Steward only tracks one previous credential), so
    it must be revoked ("superseded"), not forgotten."""
    user, pw0 = rand_name("app"), rand_password()
    peers.redis_create_user(user, pw0)
    try:
        s = new_server(server_factory)
        store_secret(s, PATH, {"username": user, "password": pw0, "host": PEER_HOST, "port": peers.REDIS_PORT})
        store_secret(s, ADMIN, {"username": "default", "password": ""})
        configure(s, ENV, PATH, rotator="redis",
                  settings={"host": PEER_HOST, "port": peers.REDIS_PORT, "username": user},
                  admin=f"{ENV}/{ADMIN}", schedule={"manual": True}, grace="1h", retire="grace")
        st = rotate_and_wait(s, ENV, PATH)
        assert st["state"] == "retiring", st
        _, v2 = read_current(s)
        # During the grace period both passwords work (redis keeps several per user).
        assert peers.redis_login_error(user, pw0) is None
        assert peers.redis_login_error(user, v2["password"]) is None
        rotate_and_wait(s, ENV, PATH)
        _, v3 = read_current(s)
        assert peers.redis_login_error(user, v3["password"]) is None
        # v2's password is the one in its grace period now; pw0 has nothing protecting it.
        assert peers.redis_login_error(user, v2["password"]) is None
        deadline = time.monotonic() + 8
        while peers.redis_login_error(user, pw0) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert peers.redis_login_error(user, pw0) is not None, (
            "the password of version 1 still works: the second rotation replaced its pending "
            "retirement without revoking it")
        retired = kinds(events(s, 0, ENV, PATH), "rotation.retired")
        assert [peers.retired_for(e) for e in retired] == [2], retired
        assert peers.redis_password_count(user) == 2
    finally:
        peers.redis_drop_user(user)


# --------------------------------------------------------------------------------------------
# 2. Crash safety

STEPS = ["create", "set", "test", "finish"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STEP_LINE = re.compile(r'rotation step .*?run=(\w+) step="(\w+)"')


def step_log(s, start: int) -> list:
    """(run, step) of each "rotation step" line the server wrote in its `start`-th run."""
    text = ANSI.sub("", (s.stderr_bytes(start) + s.stdout_bytes(start)).decode(errors="replace"))
    return STEP_LINE.findall(text)


@pytest.mark.parametrize("step", STEPS)
def test_crash_after_step_resumes_with_one_new_version(server_factory, pg_cluster, pg_roles, step):
    a, b, pw = pg_roles
    s = new_server(server_factory, env={"STEWARD_TEST_CRASH_AFTER": step})
    setup_pg(s, pg_cluster, a, pw)
    configure(s, ENV, PATH, **pg_rotation(pg_cluster, a, b, grace="3s", retire="grace"))
    assert pg_cluster.can_login(a, pw[a])

    r = s.cli("rotate", "now", f"{ENV}/{PATH}")
    # The crash may come before the answer is on the wire; the run is stored before either.
    assert r.returncode == 0 or "connect" in r.stderr.lower() or "error sending request" in r.stderr.lower(), (r.stdout, r.stderr)
    try:
        s.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not kill itself after {step}\n{s.describe_logs()}")
    assert s.proc.returncode == -signal.SIGKILL, s.proc.returncode
    assert b"TEST HOOK" in s.stderr_bytes(1) + s.stdout_bytes(1)

    # Restart without the hook: the rotation resumes from the stored step.
    del s.extra_env["STEWARD_TEST_CRASH_AFTER"]
    s.start()
    st = wait_for(lambda: (lambda st: st if st["rotations"] >= 1 and st["state"] != "rotating" else None)(status(s, ENV, PATH)),
                  timeout=30, interval=0.1, what="the rotation to complete after the restart")
    assert st["rotations"] == 1 and st["failures"] == 0, st
    assert st["last"]["outcome"] == "rotated", st
    assert st["current_version"] == 2 and st["previous_version"] == 1, st
    v, cur = read_current(s)
    assert v == 2
    assert s.read(ENV, PATH, version=3).status_code == 404
    assert cur["username"] == b and cur["password"] not in (pw[a], pw[b])
    assert read_label(s, ENV, PATH, "pending").status_code == 404

    evs = events(s, 0, ENV, PATH)
    assert len(kinds(evs, "rotation.started")) == 1, kinds(evs, "rotation.started")
    finished = kinds(evs, "rotation.finished")
    assert len(finished) == 1, finished
    assert finished[0]["detail"]["version"] == 2 and finished[0]["detail"]["previous_version"] == 1
    assert [e["detail"]["version"] for e in kinds(evs, "secret.written")] == [1, 2]
    assert kinds(evs, "rotation.failed") == [] and kinds(evs, "rotation.retrying") == []
    audit = [l for l in s.audit_lines() if l.get("path") == PATH and l.get("env") == ENV]
    finishes = [l for l in audit if l["action"] == "rotation.finish"]
    assert len(finishes) == 1 and finishes[0]["outcome"] == "ok", finishes
    # Every step completed exactly once: none was redone after the restart.
    actions = [l["action"] for l in audit if l["action"].startswith("rotation.")]
    for a_ in ("rotation.create", "rotation.set", "rotation.test", "rotation.finish"):
        assert actions.count(a_) == 1, (a_, actions)
    assert not [a_ for a_ in actions if a_.endswith(".failed") or a_ == "rotation.discard"], actions
    # The first process ran up to the crash step; the second went on with the next one, in the
    # same run.
    before, after = step_log(s, 1), step_log(s, 2)
    assert before and before[-1][1] == step, before
    assert [st_ for _, st_ in after] == STEPS[STEPS.index(step) + 1:], after
    assert {run for run, _ in before + after} == {before[0][0]}

    # The new credential logs in; the old one keeps working until the grace period ends
    # (retire = grace, 3 s), then it is revoked.
    assert pg_cluster.login_error(cur["username"], cur["password"]) is None
    retired = wait_event(s, ENV, PATH, "rotation.retired", timeout=20)
    assert peers.retired_for(retired) == 2 and retired["detail"]["reason"] == "grace_ended", retired
    err = pg_cluster.login_error(a, pw[a])
    assert err is not None and "password authentication failed" in err, err
    assert pg_cluster.login_error(cur["username"], cur["password"]) is None


def test_old_credential_works_until_the_grace_period_ends(server_factory, pg_cluster, pg_roles):
    """The companion of the crash tests without a crash: between finish and the end of the
    grace period both credentials log in; after it only the new one."""
    a, b, pw = pg_roles
    s = new_server(server_factory)
    setup_pg(s, pg_cluster, a, pw)
    configure(s, ENV, PATH, **pg_rotation(pg_cluster, a, b, grace="4s", retire="grace"))
    st = rotate_and_wait(s, ENV, PATH)
    _, cur = read_current(s)
    assert st["state"] == "retiring", st
    assert pg_cluster.login_error(a, pw[a]) is None, "the old credential must work during the grace period"
    assert pg_cluster.login_error(cur["username"], cur["password"]) is None
    wait_event(s, ENV, PATH, "rotation.retired", timeout=20)
    assert not pg_cluster.can_login(a, pw[a])
    assert pg_cluster.login_error(cur["username"], cur["password"]) is None


# --------------------------------------------------------------------------------------------
# 3. The target rejects the new credential


def test_rejected_new_credential_fails_cleanly(server_factory, pg_cluster, pg_roles):
    a, b, pw = pg_roles
    # b may not log in from 127.0.0.1 at all: the test step of every attempt fails.
    pg_cluster.hba_reject(b)
    wait_for(lambda: "pg_hba.conf rejects" in (pg_cluster.login_error(b, pw[b]) or ""), 10, what="pg_hba reload")
    # The admin's statements go to the PostgreSQL log: the plain password must not.
    pg_cluster.exec("ALTER ROLE postgres SET log_statement = 'all'")
    try:
        s = new_server(server_factory)
        initial = setup_pg(s, pg_cluster, a, pw)
        configure(s, ENV, PATH, **pg_rotation(pg_cluster, a, b, max_attempts=2))

        # A SHARE lock on pg_authid makes each attempt's `set` (ALTER ROLE) wait without failing
        # it (logins still work): meanwhile the pending value is read by label, to look for it
        # in the logs afterwards.
        gate = pg_cluster.connect(pg_cluster.admin_user, pg_cluster.admin_password)
        gate.autocommit = False
        lock_b = "LOCK TABLE pg_catalog.pg_authid IN SHARE MODE"
        gate.execute(lock_b)
        locked = True
        pendings = {}
        r = s.api("POST", f"/v1/sys/rotation/rotate/{ENV}/{PATH}")
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 40
        while True:
            assert time.monotonic() < deadline, f"the rotation did not fail in time: {status(s, ENV, PATH)}"
            st = status(s, ENV, PATH)
            if st["state"] != "rotating":
                break
            attempt = st.get("attempt")
            if st.get("pending") and attempt not in pendings:
                rp = read_label(s, ENV, PATH, "pending")
                if rp.status_code == 200:
                    p = rp.json()["data"]
                    assert p["label"] == "pending"
                    pendings[attempt] = p["data"]
                    assert p["data"]["username"] == b
            if locked and (attempt in pendings or st.get("step") not in ("create", "set")):
                gate.commit()
                locked = False
            elif not locked and st.get("step") == "create" and attempt not in pendings:
                gate.execute(lock_b)
                locked = True
            time.sleep(0.01)
        if locked:
            gate.commit()
        gate.close()
        assert 1 in pendings, "the first attempt's pending value was never seen"

        st = status(s, ENV, PATH)
        assert st["last"]["outcome"] == "failed", st
        assert st["last"]["attempts"] == 2, st
        assert st["failures"] == 1 and st["rotations"] == 0, st
        assert st["pending"] is False and st["state"] == "idle", st
        assert read_label(s, ENV, PATH, "pending").status_code == 404

        # Current unchanged, and it still logs in.
        v, cur = read_current(s)
        assert v == 1 and cur == initial
        assert s.read(ENV, PATH, version=2).status_code == 404
        assert pg_cluster.login_error(a, pw[a]) is None

        evs = events(s, 0, ENV, PATH)
        failed = kinds(evs, "rotation.failed")
        assert len(failed) == 1, failed
        reason = failed[0]["detail"]["reason"]
        assert failed[0]["detail"]["attempts"] == 2
        assert "pg_hba.conf" in reason and b in reason, reason
        assert len(kinds(evs, "rotation.retrying")) == 1
        assert kinds(evs, "rotation.finished") == []

        # Audited: both attempts' failed test step, and their undo.
        audit = [l for l in s.audit_lines() if l.get("env") == ENV and l.get("path") == PATH]
        actions = [l["action"] for l in audit]
        assert actions.count("rotation.test.failed") == 2, actions
        assert actions.count("rotation.discard") == 2, actions
        cli = s.cli("audit", "export")
        assert cli.returncode == 0, cli.stderr
        assert "rotation.test.failed" in cli.stdout

        # No password anywhere: the event stream, status, audit export, the server's log, and
        # the PostgreSQL log (which logged the admin's statements).
        passwords = [pw[a], pw[b], pg_cluster.admin_password] + [p["password"] for p in pendings.values()]
        places = {
            "events": json.dumps(events(s, 0)),
            "status": json.dumps(status(s, ENV, PATH)),
            "audit export": s.api("GET", "/v1/sys/audit/export?limit=10000").text + cli.stdout,
            "server log": peers.logs_text(s),
            "postgresql log": pg_cluster.server_log(),
        }
        assert "ALTER ROLE" in places["postgresql log"], "log_statement did not take effect"
        for where, text in places.items():
            for p in passwords:
                assert p not in text, f"a password is in the {where}"
        print(f"pending values captured for attempts {sorted(pendings)}")
    finally:
        pg_cluster.exec("ALTER ROLE postgres RESET log_statement")
