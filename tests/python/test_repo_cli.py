"""`steward repo`: a backup repository used directly, without a server. What Steward writes,
Debian's restic reads (and the other way round); a PostgreSQL dump streamed in through stdin
comes back out through `dump` into pg_restore; damage is found and named; a wrong password
is refused with exit code 5; the password never appears in output."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import uuid

import pytest

from steward_testlib import STEWARD_BIN, clean_env, psql

RESTIC = "/usr/bin/restic"
PASSWORD = "correct horse battery staple " + uuid.uuid4().hex


@pytest.fixture
def repo(tmp_path: pathlib.Path):
    pw = tmp_path / "password"
    pw.write_text(PASSWORD + "\n")
    env = clean_env({"STEWARD_REPO": str(tmp_path / "repo"), "STEWARD_REPO_PASSWORD_FILE": str(pw)})
    return tmp_path, pw, env


def steward(env, *args, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([STEWARD_BIN, "repo", *args], env=env, input=input, capture_output=True, timeout=300)
    assert PASSWORD.encode() not in r.stdout + r.stderr, "the repository password leaked into output"
    if check:
        assert r.returncode == 0, f"steward repo {args} -> {r.returncode}\n{r.stderr.decode()}"
    return r


def restic(tmp: pathlib.Path, pw: pathlib.Path, *args) -> bytes:
    r = subprocess.run([RESTIC, "-r", str(tmp / "repo"), "--password-file", str(pw), "--no-cache", *args],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, f"restic {args} -> {r.returncode}\n{r.stderr.decode()}"
    return r.stdout


def make_tree(root: pathlib.Path):
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "big.bin").write_bytes(os.urandom(3 << 20) * 2)  # a repeated region
    (root / "a" / "notes.txt").write_text("hello\n" * 1000)
    (root / "a" / "skip.tmp").write_text("excluded")
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("a/notes.txt")
    os.chmod(root / "a" / "notes.txt", 0o640)


def tree_equal(a: pathlib.Path, b: pathlib.Path, skip=()):
    names_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.name not in skip)
    names_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*"))
    assert names_a == names_b
    for n in names_a:
        pa, pb = a / n, b / n
        if pa.is_symlink():
            assert os.readlink(pa) == os.readlink(pb)
        elif pa.is_file():
            assert pa.read_bytes() == pb.read_bytes(), n
            assert (pa.stat().st_mode & 0o7777) == (pb.stat().st_mode & 0o7777), n


def test_backup_restore_and_restic_reads_it(repo):
    tmp, pw, env = repo
    src = tmp / "src"
    make_tree(src)
    steward(env, "init")
    first = json.loads(steward(env, "-o", "json", "backup", str(src), "--exclude", "*.tmp", "--tag", "e2e").stdout)
    assert first["files_new"] == 3 and first["bytes_added"] > 0
    second = json.loads(steward(env, "-o", "json", "backup", str(src), "--exclude", "*.tmp").stdout)
    assert second["files_unchanged"] == 3 and second["bytes_read"] == 0 and second["data_blobs_added"] == 0
    assert second["parent"] == first["snapshot"]

    snaps = json.loads(steward(env, "-o", "json", "snapshots").stdout)
    assert [s["id"] for s in snaps] == [first["snapshot"], second["snapshot"]]
    assert snaps[0]["tags"] == ["e2e"]

    # restic sees the same snapshots and restores the same bytes.
    theirs = json.loads(restic(tmp, pw, "snapshots", "--json"))
    assert sorted(s["id"] for s in theirs) == sorted(s["id"] for s in snaps)
    restic(tmp, pw, "check", "--read-data")
    restic(tmp, pw, "restore", first["snapshot"], "--target", str(tmp / "by-restic"))
    tree_equal(src, tmp / "by-restic" / str(src).lstrip("/"), skip={"skip.tmp"})

    steward(env, "restore", first["snapshot"][:10], "--target", str(tmp / "by-steward"))
    tree_equal(src, tmp / "by-steward" / str(src).lstrip("/"), skip={"skip.tmp"})

    ok = json.loads(steward(env, "-o", "json", "check", "--read-data").stdout)
    assert ok["ok"] is True and ok["blobs_verified"] > 0


def test_restic_written_repository_reads_back(repo):
    tmp, pw, env = repo
    src = tmp / "src"
    make_tree(src)
    restic(tmp, pw, "init", "--repository-version", "2")
    restic(tmp, pw, "backup", str(src))
    snaps = json.loads(steward(env, "-o", "json", "snapshots").stdout)
    assert len(snaps) == 1
    steward(env, "restore", "latest", "--target", str(tmp / "out"))
    tree_equal(src, tmp / "out" / str(src).lstrip("/"))


def test_postgres_dump_streams_in_and_out(repo):
    tmp, pw, env = repo
    db = f"repo_e2e_{uuid.uuid4().hex[:8]}"
    copy = db + "_copy"
    psql(f"CREATE DATABASE {db}")
    try:
        url = f"postgres://postgres@127.0.0.1:5432/{db}"
        psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g", url)
        steward(env, "init")
        dump = subprocess.Popen(["pg_dump", "--format=custom", url], stdout=subprocess.PIPE)
        r = subprocess.run([STEWARD_BIN, "repo", "backup", "--stdin-filename", f"{db}.pgdump"], env=env,
                           stdin=dump.stdout, capture_output=True, timeout=300)
        dump.stdout.close()
        assert dump.wait() == 0 and r.returncode == 0, r.stderr.decode()
        # restic can list the dump too.
        assert f"{db}.pgdump".encode() in restic(tmp, pw, "ls", "latest")

        psql(f"CREATE DATABASE {copy}")
        out = steward(env, "dump", "latest", f"{db}.pgdump").stdout
        restore = subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "-d",
                                  f"postgres://postgres@127.0.0.1:5432/{copy}"], input=out, capture_output=True)
        assert restore.returncode == 0, restore.stderr.decode()
        n = psql("SELECT count(*), sum(length(v)) FROM t", f"postgres://postgres@127.0.0.1:5432/{copy}").stdout
        assert "50000" in n and "1600000" in n, n
    finally:
        psql(f"DROP DATABASE IF EXISTS {copy}")
        psql(f"DROP DATABASE IF EXISTS {db}")


def test_damage_wrong_password_and_bad_input(repo):
    tmp, pw, env = repo
    src = tmp / "src"
    make_tree(src)
    steward(env, "init")
    steward(env, "backup", str(src))

    bad = tmp / "bad"
    bad.write_text("not the password\n")
    r = steward(dict(env, STEWARD_REPO_PASSWORD_FILE=str(bad)), "snapshots", check=False)
    assert r.returncode == 5 and b"opens with this password" in r.stderr

    r = steward(env, "restore", "ffffffff", "--target", str(tmp / "x"), check=False)
    assert r.returncode == 4 and b"not found" in r.stderr, r.stderr
    r = steward(env, "backup", check=False)
    assert r.returncode == 2 and b"nothing to back up" in r.stderr
    r = steward(env, "backup", str(src), "--compression", "fast", check=False)
    assert r.returncode == 2 and b"--compression" in r.stderr, r.stderr
    assert steward(env, "backup", str(src), "--compression", "off").returncode == 0
    assert steward(env, "backup", str(src), "--compression", "max").returncode == 0
    r = steward(clean_env({"STEWARD_REPO_PASSWORD_FILE": str(pw)}), "snapshots", check=False)
    assert r.returncode == 2 and b"--repo" in r.stderr

    # Flip one byte in the largest pack: check --read-data names it, exit code 1.
    packs = sorted((tmp / "repo" / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    victim = packs[-1]
    os.chmod(victim, 0o600)
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0xFF
    victim.write_bytes(bytes(data))
    r = steward(env, "check", "--read-data", check=False)
    assert r.returncode == 1, r.stdout.decode() + r.stderr.decode()
    assert victim.name[:8].encode() in r.stdout, r.stdout.decode()
    # Structure alone is fine: the header still matches the index.
    assert steward(env, "check").returncode == 0


def test_forget_prune_then_restic_checks_and_restores(repo):
    tmp, pw, env = repo
    src = tmp / "src"
    make_tree(src)
    steward(env, "init")
    old = json.loads(steward(env, "-o", "json", "backup", str(src)).stdout)["snapshot"]
    (src / "a" / "b" / "big.bin").write_bytes(os.urandom(1 << 20))  # the old data becomes unused
    new = json.loads(steward(env, "-o", "json", "backup", str(src)).stdout)["snapshot"]

    plan = json.loads(steward(env, "-o", "json", "forget", "--keep-last", "1", "--dry-run").stdout)
    assert plan["dry_run"] is True and plan["policy_empty"] is False and plan["removed"] == []
    [group] = plan["groups"]
    actions = {s["id"]: (s["action"], s["reasons"]) for s in group["snapshots"]}
    assert actions == {old: ("remove", []), new: ("keep", ["last 1"])}, actions
    assert len(json.loads(steward(env, "-o", "json", "snapshots").stdout)) == 2

    # Human output: a table with the reasons; an empty policy keeps everything.
    human = steward(env, "forget", "--keep-last", "1", "--dry-run").stdout.decode()
    assert "remove" in human and "last 1" in human and old[:8] in human
    empty = steward(env, "forget").stdout.decode()
    assert "every snapshot is kept" in empty
    assert len(json.loads(steward(env, "-o", "json", "snapshots").stdout)) == 2

    done = json.loads(steward(env, "-o", "json", "forget", "--keep-last", "1", "--prune").stdout)
    assert done["removed"] == [old]
    assert done["prune"]["dry_run"] is False and done["prune"]["bytes_freed"] > 0
    theirs = json.loads(restic(tmp, pw, "snapshots", "--json"))
    assert [s["id"] for s in theirs] == [new]
    restic(tmp, pw, "check", "--read-data")
    restic(tmp, pw, "restore", "latest", "--target", str(tmp / "by-restic"))
    tree_equal(src, tmp / "by-restic" / str(src).lstrip("/"))

    again = json.loads(steward(env, "-o", "json", "prune", "--dry-run", "--max-unused", "0%").stdout)
    assert again["dry_run"] is True and again["snapshots"] == 1
    r = steward(env, "prune", "--max-unused", "lots", check=False)
    assert r.returncode == 2 and b"--max-unused" in r.stderr


def test_copy_to_a_second_repository(repo):
    tmp, pw, env = repo
    src = tmp / "src"
    make_tree(src)
    steward(env, "init")
    first = json.loads(steward(env, "-o", "json", "backup", str(src)).stdout)["snapshot"]
    pw2 = tmp / "password2"
    pw2.write_text("another password " + uuid.uuid4().hex + "\n")
    dest = tmp / "copy"
    steward(dict(env, STEWARD_REPO=str(dest), STEWARD_REPO_PASSWORD_FILE=str(pw2)), "init")

    out = json.loads(steward(env, "-o", "json", "copy", "--to", str(dest), "--to-password-file", str(pw2)).stdout)
    assert out["copied"] == 1 and out["skipped"] == 0 and out["snapshots"][0]["source"] == first
    again = json.loads(steward(env, "-o", "json", "copy", "--to", str(dest), "--to-password-file", str(pw2),
                               first[:8]).stdout)
    assert again["copied"] == 0 and again["skipped"] == 1

    r = subprocess.run([RESTIC, "-r", str(dest), "--password-file", str(pw2), "--no-cache", "restore", "latest",
                        "--target", str(tmp / "from-copy")], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    tree_equal(src, tmp / "from-copy" / str(src).lstrip("/"))


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto(tmp_path: pathlib.Path):
    import time
    import urllib.request
    port = _free_port()
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start: " + (tmp_path / "moto.log").read_text())
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_s3_repository_round_trip(repo, moto):
    tmp, pw, env = repo
    url = f"s3:http://127.0.0.1:{moto}/bucket/prefix"
    env = dict(env, STEWARD_REPO=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1")
    env.pop("AWS_SESSION_TOKEN", None)
    src = tmp / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "data.bin").write_bytes(os.urandom(200_000))
    (src / "hello.txt").write_text("hello from s3\n")
    steward(env, "init")
    snap = json.loads(steward(env, "-o", "json", "backup", str(src)).stdout)["snapshot"]
    steward(env, "restore", "latest", "--target", str(tmp / "out"))
    tree_equal(src, tmp / "out" / str(src).lstrip("/"))

    r = subprocess.run([RESTIC, "-r", url, "--password-file", str(pw), "--no-cache", "snapshots", "--json"],
                       env=env, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    assert [s["id"] for s in json.loads(r.stdout)] == [snap]


def test_s3_repository_without_credentials_is_a_usage_error(repo):
    tmp, pw, env = repo
    env = clean_env({"STEWARD_REPO": "s3:http://127.0.0.1:9/bucket/prefix", "STEWARD_REPO_PASSWORD_FILE": str(pw),
                     "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": "testing"})
    r = steward(env, "snapshots", check=False)
    assert r.returncode == 2, r.stderr.decode()
    assert b"AWS_ACCESS_KEY_ID" in r.stderr and b"testing" not in r.stderr


def test_s3_endpoint_down_is_unavailable_after_bounded_retries(repo):
    tmp, pw, env = repo
    env = clean_env({"STEWARD_REPO": "s3:http://127.0.0.1:9/bucket/prefix", "STEWARD_REPO_PASSWORD_FILE": str(pw),
                     "AWS_ACCESS_KEY_ID": "AKIASTEWARDTESTKEY", "AWS_SECRET_ACCESS_KEY": "sEcReT/not+in+output"})
    started = time.monotonic()
    r = steward(env, "snapshots", check=False)
    took = time.monotonic() - started
    err = r.stderr.decode()
    assert r.returncode == 7, err
    assert "127.0.0.1:9" in err and "attempts" in err, err
    assert "sEcReT" not in err and "AKIASTEWARDTESTKEY" not in err, err
    # The backend's own retries (about 4 s) are not retried again by the repository layer.
    assert took < 30, took
