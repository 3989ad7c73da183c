"""PostgreSQL point-in-time recovery through `steward repo`: a throwaway cluster archives its
WAL with `steward repo wal-push` (archive_command), `steward repo pg-base-backup` takes the base
backup, and `steward repo pg-restore` prepares data directories whose restore_command is
`steward repo wal-fetch`. Recovering to a time T keeps the rows committed before T and not
those after; recovering without a time keeps everything. Also: wal-push is idempotent and
refuses different content under an archived name, wal-fetch of a missing file exits 1 with a
short message, and a failing pg_basebackup leaves no snapshot.

The clusters, and every steward command that touches the repository, run as the `postgres`
OS user (the repository files are private to their owner)."""
from __future__ import annotations

import glob
import json
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from steward_testlib import STEWARD_BIN, clean_env, free_port

PASSWORD = "pitr horse battery staple " + uuid.uuid4().hex
OS_USER = "postgres"


def _pg_bin() -> str | None:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return dirs[-1] if dirs else None


PG_BIN = _pg_bin()

pytestmark = pytest.mark.skipif(
    PG_BIN is None or os.geteuid() != 0,
    reason="needs PostgreSQL server binaries under /usr/lib/postgresql and root (to run them as postgres)",
)


class Env:
    """A private directory owned by the postgres OS user, holding the repository, its
    password file and the clusters' data directories."""

    def __init__(self) -> None:
        self.pw_ent = pwd.getpwnam(OS_USER)
        self.base = pathlib.Path(tempfile.mkdtemp(prefix="steward-pitr-"))
        os.chown(self.base, self.pw_ent.pw_uid, self.pw_ent.pw_gid)
        os.chmod(self.base, 0o700)
        self.repo = self.base / "repo"
        self.pw = self.base / "repo-password"
        self.pw.write_text(PASSWORD + "\n")
        os.chown(self.pw, self.pw_ent.pw_uid, self.pw_ent.pw_gid)
        os.chmod(self.pw, 0o600)
        self.clusters: list[Cluster] = []

    def env(self) -> dict:
        return clean_env({"HOME": str(self.base), "STEWARD_REPO": str(self.repo),
                          "STEWARD_REPO_PASSWORD_FILE": str(self.pw), "PGPASSWORD": None})

    def run(self, args, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run(args, env=self.env(), user=OS_USER, cwd=self.base, capture_output=True,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, f"{args} -> {r.returncode}\n{r.stdout.decode()}\n{r.stderr.decode()}"
        return r

    def steward(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        r = self.run([STEWARD_BIN, "repo", *args], check=check)
        assert PASSWORD.encode() not in r.stdout + r.stderr, "the repository password leaked into output"
        return r

    def snapshots(self) -> list:
        return json.loads(self.steward("-o", "json", "snapshots").stdout)

    def close(self) -> None:
        for c in self.clusters:
            c.stop(mode="immediate", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


class Cluster:
    def __init__(self, env: Env, name: str) -> None:
        self.env = env
        self.data = env.base / name
        self.log = env.base / f"{name}.log"
        self.port = free_port()
        self.running = False
        env.clusters.append(self)

    def initdb(self, archive_command: str) -> None:
        self.env.run([f"{PG_BIN}/initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--locale=C"])
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\nwal_level = replica\narchive_mode = on\n"
                    f"archive_command = '{archive_command}'\nmax_wal_senders = 4\n")

    def start(self, *extra: str) -> None:
        opts = " ".join(["-c listen_addresses=127.0.0.1", f"-p {self.port}",
                         f"-c unix_socket_directories={self.env.base}", *extra])
        r = self.env.run([f"{PG_BIN}/pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                          "-t", "120", "-o", opts, "start"], check=False, timeout=180)
        assert r.returncode == 0, f"pg_ctl start failed\n{r.stderr.decode()}\n{self.logs()}"
        self.running = True

    def stop(self, mode: str = "fast", check: bool = True) -> None:
        if not self.running:
            return
        r = self.env.run([f"{PG_BIN}/pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"],
                         check=False, timeout=120)
        self.running = False
        if check:
            assert r.returncode == 0, f"pg_ctl stop failed\n{r.stderr.decode()}\n{self.logs()}"

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return "(no log)"

    def sql(self, query: str) -> str:
        r = subprocess.run([f"{PG_BIN}/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-c", query],
                           capture_output=True, timeout=60, env=clean_env({"PGPASSWORD": None}))
        assert r.returncode == 0, f"{query} -> {r.stderr.decode()}\n{self.logs()}"
        return r.stdout.decode().strip()

    def wait_promoted(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sql("SELECT pg_is_in_recovery()") == "f":
                return
            time.sleep(0.3)
        raise AssertionError(f"recovery did not finish in {timeout} s\n{self.logs()}")

    def batches(self) -> dict:
        rows = self.sql("SELECT batch, count(*) FROM t GROUP BY batch ORDER BY batch")
        return {b: int(n) for b, n in (line.split("|") for line in rows.splitlines() if line)}


@pytest.fixture
def pitr():
    env = Env()
    try:
        yield env
    finally:
        env.close()


def insert(c: Cluster, batch: str, n: int) -> None:
    c.sql(f"INSERT INTO t (batch, n) SELECT '{batch}', g FROM generate_series(1, {n}) g")


def test_point_in_time_recovery_through_the_cli(pitr: Env):
    pitr.steward("init")
    archive = (f"{STEWARD_BIN} repo --repo {pitr.repo} --password-file {pitr.pw} "
               "wal-push --source main %p")
    src = Cluster(pitr, "src")
    src.initdb(archive)
    src.start()
    src.sql("CREATE TABLE t (id bigserial PRIMARY KEY, batch text NOT NULL, n int NOT NULL)")
    insert(src, "A", 100)

    # A pg_basebackup that fails (nothing listens on that port) leaves no snapshot.
    before = len(pitr.snapshots())
    bad = pitr.steward("pg-base-backup", "--source", "main", "--host", "127.0.0.1",
                       "--port", str(free_port()), "--user", "postgres", check=False)
    assert bad.returncode != 0
    assert b"pg_basebackup" in bad.stderr and b"no snapshot" in bad.stderr, bad.stderr
    assert len(pitr.snapshots()) == before

    done = json.loads(pitr.steward("-o", "json", "pg-base-backup", "--source", "main", "--host",
                                   "127.0.0.1", "--port", str(src.port), "--user", "postgres").stdout)
    assert done["bytes"] > 1 << 20
    base = [s for s in pitr.snapshots() if "kind=pg-base" in s["tags"]]
    assert [s["id"] for s in base] == [done["snapshot"]]
    assert "source=main" in base[0]["tags"] and base[0]["paths"] == ["/base.tar"]

    insert(src, "B", 50)
    target = src.sql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    time.sleep(1.2)
    insert(src, "C", 25)
    last = src.sql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + 90
    while True:
        archived, failed = src.sql(
            "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver").split("|")
        if archived >= last:
            break
        assert time.monotonic() < deadline, f"{last} not archived (last {archived!r}, {failed} failures)\n{src.logs()}"
        time.sleep(0.3)
    assert int(failed) == 0, src.logs()
    src.stop()

    wal = {t.split("=", 1)[1] for s in pitr.snapshots() for t in s["tags"] if t.startswith("wal=")}
    assert last in wal, wal

    # Everything: A, B and C.
    full = Cluster(pitr, "full")
    out = pitr.steward("pg-restore", "--source", "main", "--target-dir", str(full.data),
                       "--restore-password-file", str(pitr.pw))
    assert b"to the end of the archive" in out.stdout
    auto = (full.data / "postgresql.auto.conf").read_text()
    assert "wal-fetch" in auto and str(pitr.pw) in auto and PASSWORD not in auto
    assert "recovery_target_time" not in auto
    assert (full.data / "recovery.signal").exists()
    assert (full.data.stat().st_mode & 0o777) == 0o700
    full.start("-c archive_mode=off")
    full.wait_promoted()
    assert full.batches() == {"A": 100, "B": 50, "C": 25}
    full.stop()

    # To T: A and B, not C.
    pit = Cluster(pitr, "pit")
    pitr.steward("pg-restore", "--source", "main", "--target-dir", str(pit.data), "--time", target,
                 "--restore-password-file", str(pitr.pw))
    auto = (pit.data / "postgresql.auto.conf").read_text()
    assert "recovery_target_time" in auto and "recovery_target_action = 'promote'" in auto
    pit.start("-c archive_mode=off")
    pit.wait_promoted()
    assert pit.batches() == {"A": 100, "B": 50}
    logs = pit.logs()
    assert "recovery stopping before commit" in logs, logs
    assert PASSWORD not in logs
    pit.stop()

    # A time before the first base backup: nothing to restore from, said plainly.
    early = pitr.steward("pg-restore", "--source", "main", "--target-dir", str(pitr.base / "early"),
                         "--time", "2000-01-01T00:00:00Z", check=False)
    assert early.returncode != 0 and b"no base backup" in early.stderr, early.stderr


def test_wal_push_is_idempotent_and_never_overwrites(pitr: Env):
    pitr.steward("init")
    seg = pitr.base / "000000010000000000000042"
    seg.write_bytes(os.urandom(64 << 10))
    os.chown(seg, pitr.pw_ent.pw_uid, pitr.pw_ent.pw_gid)
    first = json.loads(pitr.steward("-o", "json", "wal-push", "--source", "other", str(seg)).stdout)
    again = json.loads(pitr.steward("-o", "json", "wal-push", "--source", "other", str(seg)).stdout)
    assert first["stored"] is True and again["stored"] is False
    assert again["snapshot"] == first["snapshot"]
    assert len(pitr.snapshots()) == 1

    original = seg.read_bytes()
    seg.write_bytes(os.urandom(64 << 10))
    clash = pitr.steward("wal-push", "--source", "other", str(seg), check=False)
    assert clash.returncode != 0
    assert b"different content" in clash.stderr, clash.stderr
    assert len(pitr.snapshots()) == 1

    # The same name under another source is another archive.
    pitr.steward("wal-push", "--source", "elsewhere", str(seg))

    dest = pitr.base / "fetched"
    pitr.steward("wal-fetch", "--source", "other", seg.name, str(dest))
    assert dest.read_bytes() == original
    assert not [p for p in pitr.base.iterdir() if p.name.startswith(".steward-wal-")]

    missing = pitr.steward("wal-fetch", "--source", "other", "00000002.history",
                           str(pitr.base / "nothing"), check=False)
    assert missing.returncode == 1
    text = missing.stderr.decode().strip()
    assert "not in the archive" in text and len(text.splitlines()) == 1 and len(text) < 200, text
    assert missing.stdout == b""
    assert not (pitr.base / "nothing").exists()

    bad = pitr.steward("wal-fetch", "--source", "other", "../etc/passwd", str(pitr.base / "x"),
                       check=False)
    assert bad.returncode == 2 and b"not a WAL file name" in bad.stderr, bad.stderr
