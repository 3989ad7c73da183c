"""`steward repo` under crashes and failures, with real processes and real files.

Proven here:

* A backup killed with SIGKILL (right after its first pack, or right after its index, before or
  while its snapshot is written) records no partial snapshot: either no new snapshot is
  listed or the one listed restores completely. The repository it leaves behind passes
  `steward repo check` (the dead process's lock does not get in the way) and Debian's
  `restic --no-lock check --read-data` (restic 0.14's check refuses any lock, stale or not,
  until `restic unlock`); the next backup removes the stale lock, succeeds, and restores
  byte-identical to the source.
* A prune killed with SIGKILL while planning, while repacking, or right after writing its new
  index leaves a repository that both checks accept, every remaining snapshot restores
  byte-identical, and a second prune (which must clear the dead process's exclusive lock
  itself) completes.
* A full disk (a 40 MiB tmpfs, root only) fails the backup with exit code 1 and no panic,
  records no snapshot, leaves no temporary file or lock behind, keeps the older snapshot
  readable; a prune on the still-full disk frees the space, after which a backup succeeds.
  The message names the full disk even when the failing pack write makes the other threads
  stop mid-file (the archiver reports the worker's error, not "unbalanced directory events").
* An S3 endpoint that refuses connections makes `init` and `backup` exit 7 in bounded time,
  naming the endpoint as unreachable, without a panic or the credentials in the output.

A flipped byte in a pack found and named by `check --read-data` is already proven by
test_repo_cli.py::test_damage_wrong_password_and_bad_input and is not repeated here.

Every wait polls the file system or the process with a deadline; no sleep stands in for an
assertion.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import stat
import subprocess
import time
import uuid

import pytest

from steward_testlib import STEWARD_BIN, clean_env, free_port

RESTIC = "/usr/bin/restic"
PASSWORD = "reliability " + uuid.uuid4().hex
PANIC = b"panicked at"
KILLED = -signal.SIGKILL


# ---------------------------------------------------------------------------------------------
# Helpers


def make_env(repo: pathlib.Path | str, pw: pathlib.Path) -> dict:
    return clean_env({"STEWARD_REPO": str(repo), "STEWARD_REPO_PASSWORD_FILE": str(pw)})


def steward(env, *args, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    r = subprocess.run([STEWARD_BIN, "repo", *args], env=env, capture_output=True, timeout=timeout)
    assert PASSWORD.encode() not in r.stdout + r.stderr, "the repository password leaked into output"
    assert PANIC not in r.stdout + r.stderr, f"steward repo {args} panicked:\n{r.stderr.decode()}"
    if check:
        assert r.returncode == 0, f"steward repo {args} -> {r.returncode}\n{r.stderr.decode()}"
    return r


def restic(repo: pathlib.Path, pw: pathlib.Path, *args, no_lock: bool = False) -> bytes:
    glob = ["--no-lock"] if no_lock else []
    r = subprocess.run([RESTIC, "-r", str(repo), "--password-file", str(pw), "--no-cache", *glob, *args],
                       capture_output=True, timeout=180)
    assert r.returncode == 0, f"restic {args} -> {r.returncode}\n{r.stdout.decode()}\n{r.stderr.decode()}"
    return r.stdout


def snapshot_ids(env) -> list[str]:
    return [s["id"] for s in json.loads(steward(env, "-o", "json", "snapshots").stdout)]


def digest(root: pathlib.Path) -> dict:
    """Every entry below `root`: kind, permission bits, and content hash or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = pathlib.Path(dirpath, name)
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode & 0o7777)
            else:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                out[rel] = ("file", st.st_mode & 0o7777, st.st_size, h.hexdigest())
    return out


def assert_restores(env, snap: str, src: pathlib.Path, expected: dict, target: pathlib.Path):
    """`snap` restores to exactly `expected` (the digest of `src` when it was backed up)."""
    steward(env, "restore", snap, "--target", str(target))
    got = digest(target / str(src).lstrip("/"))
    missing = sorted(set(expected) - set(got))[:5]
    extra = sorted(set(got) - set(expected))[:5]
    differ = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])[:5]
    assert got == expected, f"snapshot {snap[:8]} restores differently: missing {missing}, extra {extra}, " \
                            f"different {differ}"
    shutil.rmtree(target)


def packs(repo: pathlib.Path) -> set[str]:
    data = repo / "data"
    return {e.name for d in os.scandir(data) if d.is_dir() for e in os.scandir(d.path)
            if not e.name.startswith(".")}


def files_in(d: pathlib.Path) -> set[str]:
    return {n for n in os.listdir(d) if not n.startswith(".")}


def temp_files(repo: pathlib.Path) -> list[str]:
    return [str(p) for p in repo.rglob(".tmp-*")]


def wait_until(pred, proc: subprocess.Popen, what: str, timeout: float = 60.0, interval: float = 0.002):
    """Polls `pred` until true; fails if `proc` ends first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}: the kill point was missed")
        if time.monotonic() > deadline:
            pytest.fail(f"no sign of {what} within {timeout:.0f} s")
        if interval:
            time.sleep(interval)


def kill9(proc: subprocess.Popen, what: str):
    os.kill(proc.pid, signal.SIGKILL)
    rc = proc.wait(timeout=30)
    assert rc == KILLED, f"{what} exited with {rc} before SIGKILL landed: the kill point was missed"


def start(env, tmp: pathlib.Path, *args) -> subprocess.Popen:
    # Output goes to files: a full pipe must not stall the process before it is killed.
    out = open(tmp / f"{args[0]}.out", "wb")
    err = open(tmp / f"{args[0]}.err", "wb")
    try:
        return subprocess.Popen([STEWARD_BIN, "repo", *args], env=env, stdout=out, stderr=err)
    finally:
        out.close()
        err.close()


@pytest.fixture
def pw(tmp_path: pathlib.Path) -> pathlib.Path:
    p = tmp_path / "password"
    p.write_text(PASSWORD + "\n")
    return p


@pytest.fixture
def reaper():
    """Kills (by pid) whatever a failed test left running."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# 1. SIGKILL during a backup


@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    """About 300 MB: three large random files and 1500 small ones, plus a symlink."""
    root = tmp_path_factory.mktemp("big") / "src"
    (root / "large").mkdir(parents=True)
    for i in range(3):
        with open(root / "large" / f"blob{i}.bin", "wb") as f:
            for _ in range(95):
                f.write(os.urandom(1 << 20))
    rnd = random.Random(7)
    for d in range(15):
        sub = root / "small" / f"d{d:02}"
        sub.mkdir(parents=True)
        for i in range(100):
            (sub / f"f{i:03}").write_bytes(os.urandom(rnd.randint(1, 16_000)))
    (root / "small" / "empty").write_bytes(b"")
    (root / "link").symlink_to("small/d00/f000")
    os.chmod(root / "small" / "d00" / "f001", 0o600)
    return root, digest(root)


@pytest.fixture
def tiny_source(tmp_path: pathlib.Path):
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "a.txt").write_text("an older snapshot that must survive\n")
    (root / "b.bin").write_bytes(os.urandom(50_000))
    return root, digest(root)


@pytest.mark.parametrize("kill_point", ["first-pack", "after-index"])
def test_sigkill_during_backup_leaves_no_partial_snapshot(tmp_path, pw, big_source, tiny_source, reaper,
                                                          kill_point):
    src, want = big_source
    tiny, tiny_want = tiny_source
    repo = tmp_path / "repo"
    env = make_env(repo, pw)
    steward(env, "init")
    older = json.loads(steward(env, "-o", "json", "backup", str(tiny)).stdout)["snapshot"]
    before = packs(repo)
    index_before = files_in(repo / "index")

    proc = start(env, tmp_path, "backup", str(src))
    reaper.append(proc)
    if kill_point == "first-pack":
        wait_until(lambda: len(packs(repo) - before) >= 1, proc, "the first new pack")
    else:
        # About 20 packs in all: most of the data is stored before the index is written.
        wait_until(lambda: len(packs(repo) - before) >= 15, proc, "the fifteenth new pack", interval=0.01)
        # From here on, poll without pausing: the snapshot follows the index within milliseconds.
        wait_until(lambda: files_in(repo / "index") - index_before, proc, "the new index file", interval=0)
    kill9(proc, "the backup")
    stale_locks = files_in(repo / "locks")
    if kill_point != "after-index":
        assert stale_locks, "the killed backup left no lock: it got further than the kill point"

    # No partial snapshot: before the index, nothing may be listed; after it, a snapshot that
    # made it to disk must be whole.
    new = [s for s in snapshot_ids(env) if s != older]
    if kill_point != "after-index":
        assert new == [], f"a snapshot from the killed backup ({kill_point}) is listed: {new}"
    for snap in new:
        assert_restores(env, snap, src, want, tmp_path / "partial")
    print(f"killed at {kill_point}: {len(new)} snapshot(s) recorded, {len(stale_locks)} stale lock(s)")

    # The dead process's lock does not stop check; what is left is consistent for both tools.
    assert files_in(repo / "locks") == stale_locks
    r = steward(env, "check", check=False)
    assert r.returncode == 0, f"steward repo check after a killed backup -> {r.returncode}\n" \
                              f"{r.stdout.decode()}\n{r.stderr.decode()}"
    restic(repo, pw, "check", "--read-data", no_lock=True)

    # The next backup clears the stale lock, completes, and restores byte-identical.
    again = json.loads(steward(env, "-o", "json", "backup", str(src)).stdout)
    assert files_in(repo / "locks") == set(), "the killed backup's stale lock was not removed"
    assert snapshot_ids(env) == [older, *new, again["snapshot"]]
    assert_restores(env, again["snapshot"], src, want, tmp_path / "restored")
    assert_restores(env, older, tiny, tiny_want, tmp_path / "older")
    restic(repo, pw, "check")  # takes an exclusive lock: fails if any lock is left
    assert temp_files(repo) == []


# ---------------------------------------------------------------------------------------------
# 2. SIGKILL during a prune


@pytest.fixture(scope="module")
def pruneable(tmp_path_factory):
    """A repository after `forget --keep-last 1` whose prune repacks and deletes for seconds.

    Group A (`a/`) is backed up three times with a third of its 1 MiB files replaced each time;
    group B (`b/`) once, holding copies of files A later drops, so their packs stay partly used.
    The template is copied for each test.
    """
    base = tmp_path_factory.mktemp("prune")
    pw = base / "password"
    pw.write_text(PASSWORD + "\n")
    repo = base / "repo"
    env = make_env(repo, pw)
    a, b = base / "a", base / "b"
    a.mkdir()
    b.mkdir()
    steward(env, "init")
    for gen in range(3):
        for i in range(90):
            if gen == 0 or i % 3 == gen:
                (a / f"f{i:03}").write_bytes(os.urandom(1 << 20))
        if gen == 0:
            for i in range(0, 90, 3):
                shutil.copyfile(a / f"f{i + 1:03}", b / f"copy{i:03}")
            (b / "own.bin").write_bytes(os.urandom(3 << 20))
            steward(env, "backup", str(b))
        steward(env, "backup", str(a))
    steward(env, "forget", "--keep-last", "1")
    snaps = json.loads(steward(env, "-o", "json", "snapshots").stdout)
    by_path = {s["paths"][0]: s["id"] for s in snaps}
    assert set(by_path) == {str(a), str(b)}, snaps
    plan = json.loads(steward(env, "-o", "json", "prune", "--dry-run", "--max-unused", "0%").stdout)
    assert plan["packs_repacked"] > 0, plan
    return repo, {by_path[str(a)]: (a, digest(a)), by_path[str(b)]: (b, digest(b))}


@pytest.mark.parametrize("kill_point", ["planning", "repacking", "after-new-index"])
def test_sigkill_during_prune_leaves_a_consistent_repository(tmp_path, pw, pruneable, reaper, kill_point):
    template, sources = pruneable
    repo = tmp_path / "repo"
    shutil.copytree(template, repo, symlinks=True)
    env = make_env(repo, pw)
    before = packs(repo)
    index_before = files_in(repo / "index")
    assert files_in(repo / "locks") == set()

    proc = start(env, tmp_path, "prune", "--max-unused", "0%")
    reaper.append(proc)
    wait_until(lambda: files_in(repo / "locks"), proc, "the prune's lock", interval=0.001)
    if kill_point == "repacking":
        wait_until(lambda: packs(repo) - before, proc, "the first repacked pack")
    elif kill_point == "after-new-index":
        wait_until(lambda: packs(repo) - before, proc, "the first repacked pack")
        wait_until(lambda: files_in(repo / "index") - index_before, proc, "the new index", interval=0)
    kill9(proc, "the prune")
    assert files_in(repo / "locks"), "the killed prune left no lock: it got further than the kill point"

    # Both tools accept what the crash left (steward's check does not lock; restic's is told not to).
    r = steward(env, "check", "--read-data", check=False)
    assert r.returncode == 0, f"steward repo check --read-data after a killed prune -> {r.returncode}\n" \
                              f"{r.stdout.decode()}\n{r.stderr.decode()}"
    restic(repo, pw, "check", "--read-data", no_lock=True)
    assert sorted(snapshot_ids(env)) == sorted(sources)
    for snap, (src, want) in sources.items():
        assert_restores(env, snap, src, want, tmp_path / f"restored-{snap[:8]}")

    # A second prune clears the dead process's exclusive lock and finishes the job.
    r = steward(env, "-o", "json", "prune", "--max-unused", "0%", check=False)
    assert r.returncode == 0, f"second prune -> {r.returncode}\n{r.stderr.decode()}"
    done = json.loads(r.stdout)
    assert done["bytes_unused_after"] == 0 and done["snapshots"] == 2, done
    assert files_in(repo / "locks") == set()
    assert temp_files(repo) == []
    for snap, (src, want) in sources.items():
        assert_restores(env, snap, src, want, tmp_path / f"after-{snap[:8]}")
    steward(env, "check")
    restic(repo, pw, "check")  # the restores above read every needed blob; this one also locks
    # Nothing is left to delete.
    again = json.loads(steward(env, "-o", "json", "prune", "--dry-run", "--max-unused", "0%").stdout)
    assert again["packs_deleted"] == 0 and again["packs_repacked"] == 0, again


# ---------------------------------------------------------------------------------------------
# 3. A full disk


@pytest.fixture
def small_fs(tmp_path: pathlib.Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a 40 MiB tmpfs to fill needs root")
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], capture_output=True,
                       timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_full_disk_fails_cleanly_and_recovers(tmp_path, pw, small_fs, tiny_source):
    tiny, tiny_want = tiny_source
    repo = small_fs / "repo"
    env = make_env(repo, pw)
    steward(env, "init")
    older = json.loads(steward(env, "-o", "json", "backup", str(tiny)).stdout)["snapshot"]
    big = tmp_path / "big"
    big.mkdir()
    for i in range(4):
        (big / f"r{i}.bin").write_bytes(os.urandom(25 << 20))

    r = steward(env, "backup", str(big), check=False)
    err = r.stderr.decode()
    assert r.returncode == 1, f"a 100 MB backup into a 40 MiB file system -> {r.returncode}\n{err}"
    # Which words name the cause is left to the next test (they do not always: a known bug).
    assert err.startswith("error: ") and "panicked" not in err and "RUST_BACKTRACE" not in err, err
    assert shutil.disk_usage(small_fs).free < 10 << 20, "the file system did not fill up"

    assert snapshot_ids(env) == [older], "the failed backup recorded a snapshot"
    assert temp_files(repo) == [], "a partial temporary file was left on the full disk"
    assert files_in(repo / "locks") == set(), "the failed backup left its lock"
    r = steward(env, "check", check=False)
    assert r.returncode == 0, f"check after disk full -> {r.returncode}\n{r.stdout.decode()}{r.stderr.decode()}"
    restic(repo, pw, "check", "--read-data")
    assert_restores(env, older, tiny, tiny_want, tmp_path / "older")

    # A prune on the still-full disk deletes what the failed backup wrote; then backups work.
    freed = json.loads(steward(env, "-o", "json", "prune").stdout)
    assert freed["bytes_freed"] > 20 << 20, freed
    assert shutil.disk_usage(small_fs).free > 30 << 20
    small = tmp_path / "small"
    small.mkdir()
    (small / "data.bin").write_bytes(os.urandom(5 << 20))
    new = json.loads(steward(env, "-o", "json", "backup", str(small)).stdout)["snapshot"]
    assert snapshot_ids(env) == [older, new]
    assert_restores(env, new, small, digest(small), tmp_path / "new")
    assert_restores(env, older, tiny, tiny_want, tmp_path / "older-again")
    restic(repo, pw, "check", "--read-data")


def test_full_disk_error_names_the_cause(tmp_path, pw, small_fs):
    repo = small_fs / "repo"
    env = make_env(repo, pw)
    steward(env, "init")
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.bin").write_bytes(random.Random(3).randbytes(30_000_000))
    # Leave 2 MiB free: the first 16 MiB pack runs out of space.
    (small_fs / "filler").write_bytes(b"\0" * (shutil.disk_usage(small_fs).free - (2 << 20)))
    for attempt in range(10):  # the race is timing-dependent: a few tries make it deterministic enough
        r = steward(env, "backup", str(src), check=False)
        err = r.stderr.decode().strip()
        assert r.returncode == 1, err
        assert snapshot_ids(env) == [] and temp_files(repo) == [] and files_in(repo / "locks") == set()
        assert "disk full" in err.lower() or "no space left" in err.lower(), \
            f"attempt {attempt + 1}: a full-disk failure does not name the cause: {err}"


# ---------------------------------------------------------------------------------------------
# 5. An S3 endpoint that is down


@pytest.mark.parametrize("command", [["init"], ["backup", "."]])
def test_unreachable_s3_endpoint_exits_7_quickly(tmp_path, pw, command):
    port = free_port()  # bound and closed again: nothing listens there
    key_id, secret = "AKIARELIABILITYTEST", "s3cr3t/" + uuid.uuid4().hex
    env = clean_env({"STEWARD_REPO": f"s3:http://127.0.0.1:{port}/bucket/x", "STEWARD_REPO_PASSWORD_FILE": str(pw),
                     "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": None,
                     "AWS_DEFAULT_REGION": "us-east-1"})
    (tmp_path / "f.txt").write_text("x\n")
    started = time.monotonic()
    r = subprocess.run([STEWARD_BIN, "repo", *command], env=env, cwd=tmp_path, capture_output=True, timeout=90)
    took = time.monotonic() - started
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 7, f"{command} -> {r.returncode}\n{out}"
    assert took < 60, f"{command} took {took:.1f} s to give up"
    assert "unreachable" in out and f"127.0.0.1:{port}" in out, out
    assert "panicked" not in out, out
    assert secret not in out and key_id not in out and PASSWORD not in out, out
