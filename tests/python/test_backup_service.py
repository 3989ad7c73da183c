"""The backup service run by `steward up` from `[backup]`, driven through the CLI: a real
PostgreSQL database is backed up into a repository whose password is a Steward secret, the
snapshot is read back by Debian's restic, a restore drill restores it into a scratch
database and checks it (row counts, an assertion), `steward dr report` shows the measured
RTO and RPO against their targets, a restore goes into a new database, a directory and
Steward's own store are backed up, a failing backup is an alert delivered to a webhook, and
the repository password never reaches logs, output or the store's files."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import uuid

import pytest

from receivers import HttpReceiver
from steward_testlib import PG_ADMIN_URL, STEWARD_BIN, _with_db, postgres_available, psql

RESTIC = "/usr/bin/restic"
PASSWORD = "backup-repo-password-" + uuid.uuid4().hex


@pytest.fixture
def appdb():
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable")
    name = "bk_" + uuid.uuid4().hex[:12]
    assert psql(f'CREATE DATABASE "{name}"').returncode == 0
    url = _with_db(PG_ADMIN_URL, name)
    r = psql("CREATE TABLE users (id int primary key, name text);"
             "INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 100) g;"
             "CREATE TABLE orders (id int, user_id int REFERENCES users(id));"
             "INSERT INTO orders SELECT g, 1 + g % 100 FROM generate_series(1, 500) g;", url=url)
    assert r.returncode == 0, r.stderr
    yield name
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def rx():
    r = HttpReceiver()
    yield r
    r.close()


def config(tmp: pathlib.Path, db: str, hook: str) -> str:
    (tmp / "files").mkdir()
    (tmp / "files" / "a.txt").write_text("hello\n" * 1000)
    return f"""
[alerting]
default_rules = true
[alerting.route]
receiver = "hook"
group_by = ["alertname", "source"]
group_wait = "1s"
group_interval = "1s"
[[alerting.receivers]]
name = "hook"
channels = ["hook"]
[[alerting.channels]]
name = "hook"
type = "webhook"
url = "{hook}"

[[backup.repositories]]
name = "main"
location = "{tmp / 'repo'}"
password_secret = "dev/backup/main#password"

[[backup.sources]]
name = "appdb"
type = "postgres"
host = "127.0.0.1"
database = "{db}"
rpo_target = "1d"
rto_target = "10m"
[backup.sources.drill]
assertions = [{{ sql = "SELECT count(*) FROM orders", expect = "500" }},
              {{ sql = "SELECT id FROM users", expect = "rows >= 100" }}]

[[backup.sources]]
name = "files"
type = "directory"
paths = ["{tmp / 'files'}"]

[[backup.sources]]
name = "self"
type = "steward"

[[backup.sources]]
name = "broken"
type = "postgres"
host = "127.0.0.1"
database = "no_such_db_{uuid.uuid4().hex[:8]}"
"""


def cli_json(server, *args, ok: bool = True):
    r = server.cli(*args, "-o", "json", timeout=120)
    out = r.stdout + r.stderr
    assert PASSWORD not in out, "the repository password leaked into CLI output"
    if ok:
        assert r.returncode == 0, f"{args} -> {r.returncode}\n{out}"
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None)


def test_backup_drill_report_restore_and_alert(server_factory, tmp_path, appdb, rx):
    s = server_factory.new("sqlite", config_text=config(tmp_path, appdb, f"{rx.url}/hook"))
    r = s.write("dev", "backup/main", {"password": PASSWORD})
    assert r.status_code in (200, 204), r.text

    # Back up the database: a snapshot in a restic repository, with row counts as facts.
    _, run = cli_json(s, "backup", "run", "appdb")
    assert run["ok"] is True and run["op"] == "backup", run
    counts = {t["table"]: t["rows"] for t in run["facts"]["row_counts"]}
    assert counts == {"users": 100, "orders": 500}, counts
    _, snaps = cli_json(s, "backup", "snapshots", "appdb")
    assert [x["id"] for x in snaps] == [run["snapshot"]]
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    listed = subprocess.run([RESTIC, "-r", str(tmp_path / "repo"), "--password-file", str(pw), "--no-cache",
                             "snapshots", "--json"], capture_output=True, timeout=120)
    assert listed.returncode == 0, listed.stderr.decode()
    assert run["snapshot"] in {x["id"] for x in json.loads(listed.stdout)}

    # The drill: restored into a scratch database, checked, dropped; the restore is timed.
    _, drill = cli_json(s, "drill", "run", "appdb")
    assert drill["ok"] is True, drill
    assert drill["snapshot"] == run["snapshot"]
    checks = {c["name"]: c["passed"] for c in drill["drill"]["checks"]}
    assert checks.get("rows in public.users") is True, checks
    assert checks.get("assertion SELECT count(*) FROM orders") is True, checks
    assert drill["restore_s"] > 0
    scratch = drill["drill"]["scratch_database"]
    left = psql(f"SELECT 1 FROM pg_database WHERE datname = '{scratch}'")
    assert left.stdout.strip() == "", "the scratch database was not dropped"

    # The DR report: RPO proven by the drill, RTO measured by it, both within target.
    code, rep = cli_json(s, "dr", "report")
    assert code == 0
    src = {x["name"]: x for x in rep["sources"]}
    a = src["appdb"]
    assert a["rpo_basis"] == "drill" and a["rpo_met"] is True, a
    assert a["rto_s"] == drill["restore_s"] and a["rto_met"] is True, a
    assert a["status"] == "ok", a
    human = s.cli("dr", "report")
    assert "appdb" in human.stdout and "RTO (measured)" in human.stdout, human.stdout

    # A restore into a new database keeps it, with the data.
    target = "restored_" + uuid.uuid4().hex[:8]
    try:
        _, rest = cli_json(s, "backup", "restore", "appdb", "--database", target)
        assert rest["ok"] is True, rest
        n = psql("SELECT count(*) FROM orders", url=_with_db(PG_ADMIN_URL, target))
        assert n.stdout.strip() == "500", n
        # A second restore into the same name is refused: it never overwrites.
        code, again = cli_json(s, "backup", "restore", "appdb", "--database", target, ok=False)
        assert code == 1 and again["ok"] is False and "create" in again["error"], again
    finally:
        psql(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')

    # A directory and Steward's own store back up too; the files restore byte for byte.
    _, f = cli_json(s, "backup", "run", "files")
    assert f["ok"] is True, f
    out = tmp_path / "restore-files"
    _, fr = cli_json(s, "backup", "restore", "files", "--target-dir", str(out))
    assert fr["ok"] is True, fr
    restored = list(out.rglob("a.txt"))
    assert len(restored) == 1 and restored[0].read_text() == "hello\n" * 1000
    # Never over existing files: a second restore into the same directory is refused.
    r = s.cli("backup", "restore", "files", "--target-dir", str(out))
    assert r.returncode != 0 and "not empty" in r.stderr, r.stderr
    _, own = cli_json(s, "backup", "run", "self")
    assert own["ok"] is True and own["facts"]["kind"] == "sqlite", own

    # A failing backup: exit 1, a clear error, an alert through the webhook, no snapshot.
    code, bad = cli_json(s, "backup", "run", "broken", ok=False)
    assert code == 1 and bad["ok"] is False, bad
    assert "no_such_db" in bad["error"], bad["error"]
    rx.wait("/hook", 1, timeout=30, pred=lambda req: "BackupFailed" in req.body.decode(),
            what="the BackupFailed alert")
    body = next(json.loads(r.body) for r in rx.requests("/hook") if b"BackupFailed" in r.body)
    alert = body["alerts"][0]
    assert alert["labels"]["source"] == "broken" and alert["status"] == "firing", alert
    _, snaps = cli_json(s, "backup", "snapshots", "broken")
    assert snaps == []

    # Check the whole repository; list the runs.
    _, chk = cli_json(s, "backup", "check", "main", "--read-data", "all")
    assert chk["ok"] is True and chk["detail"]["problems"] == [], chk
    _, runs = cli_json(s, "backup", "list")
    ops = {(r["target"], r["op"]) for r in runs}
    assert {("appdb", "backup"), ("appdb", "drill"), ("appdb", "restore"), ("main", "check")} <= ops, ops
    _, drills = cli_json(s, "drill", "list")
    assert all(r["op"] == "drill" for r in drills) and drills

    # Unknown names are clear errors.
    r = s.cli("backup", "run", "nope")
    assert r.returncode != 0 and "no backup source is named" in r.stderr, r.stderr

    # The password never reached the logs or the store's files.
    s.stop()
    for p in [*s.workdir.glob("*.log"), *s.data.rglob("*")]:
        if p.is_file():
            assert PASSWORD.encode() not in p.read_bytes(), f"the repository password is in {p}"


def test_a_running_backup_mutes_the_checks_it_names(server_factory, tmp_path):
    """A backup with `maintenance` matchers opens its own maintenance window while it runs
    (the checks it would disturb stay quiet) and closes it when it ends."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):
        (big / f"f{i}.bin").write_bytes(os.urandom(80 << 20))
    # A 2 s request timeout: the run outlasts its request (202), and the CLI follows it to
    # its end, showing the bytes read so far.
    cfg = f"""
[server]
request_timeout = "2s"

[[backup.repositories]]
name = "main"
location = "{tmp_path / 'repo'}"
password_secret = "dev/backup/main#password"

[[backup.sources]]
name = "big"
type = "directory"
paths = ["{big}"]
maintenance = ['check="app-db"', 'severity!="critical"']
"""
    s = server_factory.new("sqlite", config_text=cfg)
    assert s.write("dev", "backup/main", {"password": PASSWORD}).status_code in (200, 204)
    proc = subprocess.Popen([STEWARD_BIN, "backup", "run", "big", "-o", "json"], env=s.cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        ws = s.api("GET", "/v1/sys/alerting/maintenance").json()["data"]["windows"]
        mine = [w for w in ws if w.get("name") == "backup of big"]
        if mine:
            seen = mine[0]
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert seen is not None, "no maintenance window was seen while the backup ran"
    assert seen["active"] is True, seen
    assert seen["matchers"] == ['check="app-db"', 'severity!="critical"'], seen
    ws = s.api("GET", "/v1/sys/alerting/maintenance").json()["data"]["windows"]
    assert not [w for w in ws if w.get("name") == "backup of big"], f"the window stayed open: {ws}"
    run = json.loads(out)
    assert run["ok"] is True and run["bytes"] == 3 * (80 << 20), run
    assert "backup of big: " in err.decode() and " read, " in err.decode(), err.decode()
