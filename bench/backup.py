#!/usr/bin/env python3
"""Backup benchmark: Steward's backup repository (`steward repo ...`) against restic and, for
PostgreSQL, against pg_dump to /dev/null (the floor) and pgBackRest, all from Debian, in one run
on this machine. Both sides run one after the other on the same data, nothing runs at the same
time as a measured command, loopback only, every wait bounded, everything in one temp dir that
is removed at the end (--keep keeps it).

Part 1, files ("Steward against restic from Debian on a generated 2 GB data set"):
  The data set is made once by bench/gen_backup_data.py (--size, default 2G, seed --seed) in the
  temp dir, or --data DIR reuses an existing one. Nothing is dropped from the page cache (that
  needs root and a quiet machine to mean anything); instead the whole data set is read before
  each side (before Steward's: a SHA-256 of every file, which is also the reference for the
  restore check; before restic's: a plain read), so both sides read it from the cache.
  `sync` runs (untimed) before every timed command, so no side pays for the other's write-back.
  Per side, with a password file (0600) and default settings (all cores, compression auto):
  - steward: `steward repo init`, `steward repo backup DATA -o json` twice, `steward repo
    restore FIRST --target DIR -o json` (STEWARD_REPO_PASSWORD_FILE);
  - restic (/usr/bin/restic, 0.14 on Debian 12): `restic init --repository-version 2`, `restic
    backup --json DATA` twice, `restic restore FIRST --target DIR` (--password-file, its cache
    in the temp dir via --cache-dir, as users run it; RESTIC_PROGRESS_FPS=0.2 so --json prints a
    status line every 5 s, not 60 a second: from cron restic prints none).
  Figures: wall time of each command (first backup and restore also as MiB/s of the data set),
  CPU seconds (user + sys) and peak memory (ru_maxrss: the largest single process) from wait4's
  rusage of the command, the repository's size on disk (sum of file sizes: apparent bytes), and
  a check that the restored tree equals the source (every path, size and SHA-256; the run fails
  if not). The second backup is of the unchanged data set.

Part 2, PostgreSQL ("a pgbench database at scale 50: Steward's dump-to-repository time against
pg_dump to /dev/null (the floor) and against pgBackRest from Debian"):
  A throwaway cluster (the newest /usr/lib/postgresql/*/bin; initdb in the temp dir, run as the
  `postgres` OS user when this script runs as root; 127.0.0.1 on a free port, its socket in the
  temp dir, wal_level = replica, archive_mode = on, archive_command = pgBackRest's archive-push,
  or `true` with --skip-pgbackrest). `pgbench -i -s --pg-scale` (default 50: about 750 MB of
  tables), then, after the WAL archiver has caught up:
  (a) `pg_dump --format=custom bench > /dev/null`: the floor;
  (b) `pg_dump --format=custom bench | steward repo backup --stdin-filename bench.pgdump` into a
      fresh repository (wall time of the pipeline; CPU and peak memory per process); afterwards,
      untimed, `steward repo dump` of it must give a custom-format dump of the same size;
  (c) pgBackRest (`apt-get install -y pgbackrest` when missing): `--type=full backup` with
      compress-type=zst, process-max=2, repo1-cipher-type=aes-256-cbc (both sides encrypt),
      start-fast=y, repo1-retention-full=1 (its automatic expire then drops the WAL archived
      before the backup), its repository in the temp dir; run as the cluster's OS user.
  pg_dump is a logical backup (table data; indexes as definitions only); pgBackRest is physical
  (every file of the cluster, indexes included, plus the WAL to make it consistent). The
  server's CPU (postmaster and all its processes, exited ones included) during each is shown too.

Goals (from the issues), printed as met / NOT met: Steward faster than restic on every figure,
at least 2x on the first backup and on the restore; a repository no larger than restic's; peak
memory no higher than restic's (each command); PostgreSQL: Steward's pipeline within 1.3x of the
pg_dump floor. Steward / pgBackRest is reported without a goal.

Usage: python3 bench/backup.py [--size 2G] [--data DIR] [--seed 1] [--pg-scale 50]
                               [--skip-files] [--skip-postgres] [--skip-pgbackrest]
                               [--json] [--keep] [--deadline SECONDS]
Needs: restic (apt), PostgreSQL server binaries and pgbench (apt postgresql, postgresql-contrib),
pgbackrest (installed with apt-get when missing), a release build of steward
(`cargo build --release -p steward`). STEWARD_BIN, RESTIC_BIN and PGBACKREST_BIN pick other
binaries. About 3x --size of free disk in the temp dir (TMPDIR) plus 3x the database.
"""
import argparse, ctypes, hashlib, json, os, pwd, secrets, shutil, signal, subprocess, sys, tempfile
import threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Cleanup, free_port, loadavg, proc_children, proc_cpu  # noqa: E402
from gen_backup_data import parse_size  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("STEWARD_BIN", os.path.join(ROOT, "target", "release", "steward"))
RESTIC_BIN = os.environ.get("RESTIC_BIN", "/usr/bin/restic")
PGBACKREST_BIN = os.environ.get("PGBACKREST_BIN", "/usr/bin/pgbackrest")
GEN = os.path.join(ROOT, "bench", "gen_backup_data.py")
MiB = 1 << 20
DB = "bench"
STANZA = "bench"
PG_GOAL = 1.3  # Steward's pg_dump pipeline / pg_dump > /dev/null
OUT = sys.stdout  # progress; stderr with --json


def say(msg):
    print(msg, file=OUT, flush=True)


def version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    return (r.stdout + r.stderr).strip().split("\n")[0]


def tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Running commands: wall time, and CPU and peak memory from wait4's rusage


_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup():
    # PR_SET_PDEATHSIG: a child gets SIGTERM should this script die without cleaning up.
    _libc.prctl(1, signal.SIGTERM)


def spawn(cmd, *, stdin=subprocess.DEVNULL, stdout=None, stderr=None, env=None, cwd=None, user=None):
    """A child in its own session (so a kill reaches its helpers too); `user` (a pwd entry)
    runs it as that OS user (needs root)."""
    kw = {}
    if user is not None:
        kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    return subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
                            start_new_session=True, preexec_fn=_child_setup, **kw)


def killgroup(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def reap(procs, timeout, what):
    """Waits for every process with wait4 (so the rusage is the command's own, its waited-for
    children included). Kills them all after `timeout` s. Returns [(exit code, rusage,
    perf_counter at exit)]."""
    fired = threading.Event()

    def kill():
        fired.set()
        for p in procs:
            killgroup(p)

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    out = []
    try:
        for p in procs:
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            out.append((p.returncode, ru, time.perf_counter()))
    finally:
        timer.cancel()
        for p in procs:
            if p.returncode is None:  # interrupted (deadline, Ctrl-C): do not leave it running
                killgroup(p)
                try:
                    _, status, _ = os.wait4(p.pid, 0)
                    p.returncode = os.waitstatus_to_exitcode(status)
                except ChildProcessError:
                    p.returncode = -9
    if fired.is_set():
        raise RuntimeError(f"{what} took longer than {timeout:.0f} s and was killed")
    return out


def usage(ru):
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
            "peak_mib": ru.ru_maxrss / 1024}


class Runner:
    """Runs commands with their stdout and stderr in files under LOGS."""

    def __init__(self, logs):
        self.logs = logs
        self.n = 0

    def paths(self, label):
        self.n += 1
        base = os.path.join(self.logs, f"{self.n:02d}-{label.replace(' ', '_').replace('/', '_')}")
        return base + ".out", base + ".err"

    def timed(self, label, cmd, *, timeout, env=None, cwd=None, user=None, stdout=None, sync=True):
        """One command, timed from spawn to exit. Fails (RuntimeError) on a non-zero exit."""
        out_p, err_p = self.paths(label)
        if sync:
            os.sync()  # the previous step's write-back is not this step's cost
        with open(out_p, "wb") as fo, open(err_p, "wb") as fe:
            t0 = time.perf_counter()
            p = spawn(cmd, stdout=stdout if stdout is not None else fo, stderr=fe, env=env, cwd=cwd, user=user)
            [(rc, ru, t1)] = reap([p], timeout, label)
        if rc != 0:
            raise RuntimeError(f"{label} failed (exit {rc}): {' '.join(cmd)}\n{tail(err_p)}{tail(out_p, 5)}")
        r = {"wall_s": t1 - t0}
        r.update(usage(ru))
        with open(out_p, errors="replace") as f:
            r["stdout"] = f.read()
        return r

    def pipeline(self, label, cmd1, cmd2, *, timeout, env1=None, env2=None, cwd=None):
        """cmd1 | cmd2, timed from the first spawn to the last exit."""
        out_p, err_p = self.paths(label)
        err1_p = err_p.replace(".err", ".1.err")
        os.sync()
        with open(out_p, "wb") as fo, open(err_p, "wb") as fe, open(err1_p, "wb") as fe1:
            t0 = time.perf_counter()
            p1 = spawn(cmd1, stdout=subprocess.PIPE, stderr=fe1, env=env1, cwd=cwd)
            try:
                p2 = spawn(cmd2, stdin=p1.stdout, stdout=fo, stderr=fe, env=env2, cwd=cwd)
            except BaseException:
                killgroup(p1)
                p1.wait()
                raise
            p1.stdout.close()  # only the second command holds the pipe's read end
            (rc2, ru2, t2), (rc1, ru1, t1) = reap([p2, p1], timeout, label)
        if rc1 != 0 or rc2 != 0:
            raise RuntimeError(f"{label} failed (exit {rc1} | {rc2})\n{tail(err1_p)}{tail(err_p)}")
        with open(out_p, errors="replace") as f:
            stdout = f.read()
        return {"wall_s": max(t1, t2) - t0, "first": usage(ru1), "second": usage(ru2), "stdout": stdout,
                "first_exit_after_s": t1 - t0}

    def run(self, label, cmd, *, timeout, env=None, cwd=None, user=None, check=True):
        """An untimed helper command (no sync); returns (exit code, stdout)."""
        out_p, err_p = self.paths(label)
        with open(out_p, "wb") as fo, open(err_p, "wb") as fe:
            p = spawn(cmd, stdout=fo, stderr=fe, env=env, cwd=cwd, user=user)
            [(rc, _, _)] = reap([p], timeout, label)
        with open(out_p, errors="replace") as f:
            stdout = f.read()
        if check and rc != 0:
            raise RuntimeError(f"{label} failed (exit {rc}): {' '.join(cmd)}\n{tail(err_p)}{stdout[-2000:]}")
        return rc, stdout


def last_json(text, pred=lambda o: True):
    """The last line of `text` that is a JSON object matching `pred`."""
    for line in reversed(text.strip().split("\n")):
        line = line.strip()
        if line.startswith("{"):
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if pred(o):
                return o
    return None


# ---------------------------------------------------------------------------------------------
# Trees: size on disk, reading, hashing


def du(path):
    """(apparent bytes: sum of file sizes, allocated bytes, files) under `path`."""
    apparent = allocated = files = 0
    for d, _, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(d, n))
            except OSError:
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
            files += 1
    return apparent, allocated, files


def manifest(root, hash_files=True):
    """{relative path: ("f", size, sha256) | ("d",) | ("l", target)} of every entry under
    `root`; hash_files=False only reads every file (a warm-up). Also returns the bytes read."""
    out, total = {}, 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    for d, dirs, names in os.walk(root):
        dirs.sort()
        rel_d = os.path.relpath(d, root)
        if rel_d != ".":
            out[rel_d] = ("d",)
        for n in sorted(names):
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("l", os.readlink(p))
                continue
            h = hashlib.sha256() if hash_files else None
            size = 0
            with open(p, "rb", buffering=0) as f:
                while True:
                    k = f.readinto(buf)
                    if not k:
                        break
                    size += k
                    if h:
                        h.update(view[:k])
            total += size
            out[rel] = ("f", size, h.hexdigest() if h else None)
        for n in dirs:  # symlinks to directories are listed in dirs, and not followed
            p = os.path.join(d, n)
            if os.path.islink(p):
                out[os.path.relpath(p, root)] = ("l", os.readlink(p))
    return out, total


def compare(src, got):
    """Differences between two manifests, as text lines (empty when equal)."""
    diffs = []
    for k in sorted(set(src) | set(got)):
        a, b = src.get(k), got.get(k)
        if a != b:
            diffs.append(f"{k}: source {a}, restored {b}")
    return diffs


def restored_root(target, data):
    """Where the data set landed under a restore target: restic and Steward keep the backed-up
    directory's absolute path inside the snapshot."""
    nested = os.path.join(target, os.path.abspath(data).lstrip("/"))
    if os.path.isdir(nested):
        return nested
    if os.path.isdir(target) and set(os.listdir(target)) == set(os.listdir(data)):
        return target
    raise RuntimeError(f"cannot find the restored data set under {target}: it holds "
                       f"{sorted(os.listdir(target))[:10] if os.path.isdir(target) else 'nothing'}")


def write_secret(path, value, owner=None):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


# ---------------------------------------------------------------------------------------------
# Part 1: files


class StewardFiles:
    name = "steward"

    def __init__(self, tmp, pwfile):
        self.repo = os.path.join(tmp, "steward-repo")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
        self.env["STEWARD_REPO_PASSWORD_FILE"] = pwfile
        self.cwd = tmp  # no ./steward.toml gets picked up

    def cmd(self, *args):
        return [BIN, "-o", "json", "repo", "--repo", self.repo] + list(args)

    def init(self, rn, timeout):
        return rn.timed("steward init", self.cmd("init"), timeout=timeout, env=self.env, cwd=self.cwd)

    def backup(self, rn, label, data, timeout):
        r = rn.timed(f"steward {label}", self.cmd("backup", data), timeout=timeout, env=self.env, cwd=self.cwd)
        j = last_json(r["stdout"], lambda o: "snapshot" in o)
        if not j:
            raise RuntimeError(f"steward {label}: no JSON summary in its output:\n{r['stdout'][-2000:]}")
        r.update(snapshot=j["snapshot"], bytes_read=j.get("bytes_read"), bytes_added=j.get("bytes_added"),
                 files_new=j.get("files_new"), files_changed=j.get("files_changed"),
                 files_unchanged=j.get("files_unchanged"), reported_s=j.get("seconds"),
                 warnings=len(j.get("warnings") or []))
        return r

    def restore(self, rn, snapshot, target, timeout):
        r = rn.timed("steward restore", self.cmd("restore", snapshot, "--target", target), timeout=timeout,
                     env=self.env, cwd=self.cwd)
        j = last_json(r["stdout"], lambda o: "bytes" in o) or {}
        r.update(bytes_written=j.get("bytes"), reported_s=j.get("seconds"), warnings=len(j.get("warnings") or []))
        return r


class ResticFiles:
    name = "restic"

    def __init__(self, tmp, pwfile):
        self.repo = os.path.join(tmp, "restic-repo")
        self.cache = os.path.join(tmp, "restic-cache")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        # --json makes restic print a status line up to 60 times a second; from cron (no terminal,
        # no --json) it prints none. One every 5 s keeps the summary at almost no cost.
        self.env["RESTIC_PROGRESS_FPS"] = "0.2"
        self.pwfile = pwfile
        self.cwd = tmp

    def cmd(self, *args):
        return [RESTIC_BIN, "--repo", self.repo, "--password-file", self.pwfile, "--cache-dir", self.cache] + list(args)

    def init(self, rn, timeout):
        return rn.timed("restic init", self.cmd("init", "--repository-version", "2"), timeout=timeout,
                        env=self.env, cwd=self.cwd)

    def backup(self, rn, label, data, timeout):
        r = rn.timed(f"restic {label}", self.cmd("backup", "--json", data), timeout=timeout, env=self.env, cwd=self.cwd)
        j = last_json(r["stdout"], lambda o: o.get("message_type") == "summary")
        if not j:
            raise RuntimeError(f"restic {label}: no summary in its --json output:\n{r['stdout'][-2000:]}")
        snap = j.get("snapshot_id")
        if not snap:
            _, out = rn.run("restic snapshots", self.cmd("snapshots", "--json", "latest"), timeout=300,
                            env=self.env, cwd=self.cwd)
            snap = json.loads(out)[-1]["id"]
        r.update(snapshot=snap, bytes_read=j.get("total_bytes_processed"), bytes_added=j.get("data_added"),
                 files_new=j.get("files_new"), files_changed=j.get("files_changed"),
                 files_unchanged=j.get("files_unmodified"), reported_s=j.get("total_duration"), warnings=0)
        return r

    def restore(self, rn, snapshot, target, timeout):
        r = rn.timed("restic restore", self.cmd("restore", snapshot, "--target", target), timeout=timeout,
                     env=self.env, cwd=self.cwd)
        r.update(bytes_written=None, reported_s=None, warnings=0)
        return r


def files_side(side, rn, data, data_bytes, src_manifest, tmp, timeout):
    n = side.name
    res = {}
    res["init"] = side.init(rn, 300)
    say(f"[{n}] init {res['init']['wall_s']:.2f} s")
    mib = data_bytes / MiB
    for label in ("first backup", "second backup"):
        r = side.backup(rn, label, data, timeout)
        r["mib_s"] = mib / r["wall_s"]
        res[label.replace(" ", "_")] = r
        say(f"[{n}] {label}: {r['wall_s']:.2f} s ({r['mib_s']:.1f} MiB/s), CPU {r['cpu_s']:.2f} s, "
            f"peak {r['peak_mib']:.0f} MiB; read {fmt_mib(r['bytes_read'])}, added {fmt_mib(r['bytes_added'])} MiB, "
            f"files new/changed/unchanged {r['files_new']}/{r['files_changed']}/{r['files_unchanged']}")
    apparent, allocated, nfiles = du(side.repo)
    res["repo_bytes"], res["repo_allocated_bytes"], res["repo_files"] = apparent, allocated, nfiles
    if isinstance(side, ResticFiles):
        res["cache_bytes"] = du(side.cache)[0]
    say(f"[{n}] repository after two backups: {fmt_mib(apparent)} MiB in {nfiles} files"
        f" ({fmt_mib(allocated)} MiB allocated)")
    target = os.path.join(tmp, f"{n}-restore")
    r = side.restore(rn, res["first_backup"]["snapshot"], target, timeout)
    r["mib_s"] = mib / r["wall_s"]
    res["restore"] = r
    say(f"[{n}] restore of the first snapshot: {r['wall_s']:.2f} s ({r['mib_s']:.1f} MiB/s), CPU {r['cpu_s']:.2f} s, "
        f"peak {r['peak_mib']:.0f} MiB")
    t0 = time.perf_counter()
    got, _ = manifest(restored_root(target, data))
    diffs = compare(src_manifest, got)
    res["verify_s"] = time.perf_counter() - t0
    if diffs:
        raise RuntimeError(f"{n}: the restored tree differs from the source in {len(diffs)} entries:\n  "
                           + "\n  ".join(diffs[:20]))
    res["verified_entries"] = len(got)
    say(f"[{n}] restored tree equals the source: {len(got)} entries, every file's size and SHA-256 "
        f"({res['verify_s']:.1f} s)")
    shutil.rmtree(target, ignore_errors=True)
    for k in ("init", "first_backup", "second_backup", "restore"):
        res[k].pop("stdout", None)
    return res


def fmt_mib(b):
    """Bytes as MiB with a precision that shows small figures too."""
    if b is None:
        return "-"
    x = b / MiB
    return f"{x:.0f}" if x >= 1000 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 0.1 else f"{x:.4f}"


def part_files(args, tmp, rn, res):
    say("")
    say("== Part 1: files, Steward against restic ==")
    if args.data:
        data = os.path.abspath(args.data)
        if not os.path.isdir(data):
            raise SystemExit(f"--data {data}: not a directory")
        say(f"data set: {data} (given with --data)")
        res["data"] = {"dir": data, "generated": False}
    else:
        data = os.path.join(tmp, "data")
        say(f"generating the data set: {args.size} with seed {args.seed} in {data} ...")
        t0 = time.perf_counter()
        _, out = rn.run("generate", [sys.executable, GEN, data, "--size", args.size, "--seed", str(args.seed)],
                        timeout=600 + parse_size(args.size) / MiB * 2)
        gen = last_json(out) or {}
        res["data"] = {"dir": data, "generated": True, "seed": args.seed, "by_kind": gen.get("by_kind"),
                       "generate_s": time.perf_counter() - t0}
        say(f"  done in {res['data']['generate_s']:.1f} s: {gen.get('files')} files, "
            f"{fmt_mib((gen.get('bytes') or 0))} MiB")
    t0 = time.perf_counter()
    src, total = manifest(data)
    nfiles = sum(1 for v in src.values() if v[0] == "f")
    res["data"].update(bytes=total, files=nfiles, entries=len(src))
    say(f"warm-up read before steward: SHA-256 of all {nfiles} files, {fmt_mib(total)} MiB in "
        f"{time.perf_counter() - t0:.1f} s (nothing is dropped from the page cache: both sides read the "
        f"data set from the cache)")
    timeout = 300 + total / MiB * 2  # no command may be slower than 0.5 MiB/s
    pwfile = os.path.join(tmp, "repo-password")
    write_secret(pwfile, secrets.token_urlsafe(24))
    sides = [StewardFiles(tmp, pwfile), ResticFiles(tmp, pwfile)]
    for side in sides:
        if side.name == "restic":
            t0 = time.perf_counter()
            manifest(data, hash_files=False)
            say(f"warm-up read before restic: {fmt_mib(total)} MiB in {time.perf_counter() - t0:.1f} s")
        say(f"[{side.name}] starting (load average {loadavg()})")
        try:
            res["files"][side.name] = files_side(side, rn, data, total, src, tmp, timeout)
        except RuntimeError as e:
            say(f"[{side.name}] FAILED: {e}")
            res["files"][f"{side.name}_error"] = str(e)
            res["failed"] = True
        # The next side gets the disk space and an empty write-back queue.
        shutil.rmtree(os.path.join(tmp, f"{side.name}-restore"), ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Part 2: PostgreSQL


def pg_bindir():
    base = "/usr/lib/postgresql"
    vers = [d for d in (os.listdir(base) if os.path.isdir(base) else [])
            if os.path.exists(os.path.join(base, d, "bin", "initdb"))]
    if not vers:
        raise RuntimeError("no initdb under /usr/lib/postgresql/*/bin: apt-get install -y postgresql postgresql-contrib")

    def key(v):
        try:
            return float(v)
        except ValueError:
            return -1.0
    return os.path.join(base, max(vers, key=key), "bin")


def ensure_pgbackrest():
    global PGBACKREST_BIN
    if os.path.exists(PGBACKREST_BIN):
        return True
    found = shutil.which("pgbackrest")
    if found:
        PGBACKREST_BIN = found
        return True
    if os.geteuid() != 0:
        say("pgbackrest is missing and this is not root: apt-get install -y pgbackrest")
        return False
    say("installing pgbackrest: apt-get install -y pgbackrest ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "pgbackrest"], ["apt-get", "update"],
                ["apt-get", "install", "-y", "pgbackrest"]):
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            continue
        if cmd[1] == "install" and r.returncode == 0:
            break
    found = shutil.which("pgbackrest") or (PGBACKREST_BIN if os.path.exists(PGBACKREST_BIN) else None)
    if not found:
        say("  could not install pgbackrest; its part is skipped")
        return False
    PGBACKREST_BIN = found
    return True


class Cluster:
    """A throwaway PostgreSQL cluster in TMP/pg, run as the `postgres` OS user when we are root
    (initdb and postgres refuse to run as root)."""

    def __init__(self, tmp, rn):
        self.rn = rn
        self.bin = pg_bindir()
        self.dir = os.path.join(tmp, "pg")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "postgres.log")
        self.port = free_port()
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.user:
            self.env.update(HOME=self.dir, USER="postgres", LOGNAME="postgres")
        self.proc = self.logf = None
        self.version = None
        os.makedirs(self.sock)
        if self.user:
            os.chmod(tmp, 0o711)  # the postgres user passes through to TMP/pg

    def chown(self):
        """TMP/pg and everything in it to the postgres user (when we are root)."""
        if not self.user:
            return
        for d, dirs, files in os.walk(self.dir):
            for n in [d] + [os.path.join(d, x) for x in dirs + files]:
                os.chown(n, self.user.pw_uid, self.user.pw_gid)

    def start(self, archive_command):
        self.chown()
        self.rn.run("initdb", [os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--locale=C"], timeout=300, env=self.env, cwd=self.dir, user=self.user)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"""
# bench/backup.py
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.sock}'
wal_level = replica
archive_mode = on
archive_command = '{archive_command}'
""")
        self.logf = open(self.log, "wb")
        self.proc = spawn([os.path.join(self.bin, "postgres"), "-D", self.data], stdout=self.logf,
                          stderr=subprocess.STDOUT, env=self.env, cwd=self.dir, user=self.user)
        end = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}):\n{tail(self.log)}")
            r = subprocess.run([os.path.join(self.bin, "pg_isready"), "-h", self.sock, "-p", str(self.port),
                                "-U", "postgres", "-q"], env=self.env, timeout=30)
            if r.returncode == 0:
                break
            if time.time() > end:
                raise RuntimeError(f"postgres did not answer within 120 s:\n{tail(self.log)}")
            time.sleep(0.2)
        self.version = self.psql("SHOW server_version", db="postgres")

    def conn_args(self):
        return ["-h", self.sock, "-p", str(self.port), "-U", "postgres"]

    def psql(self, sql, db=DB, timeout=600):
        _, out = self.rn.run("psql", [os.path.join(self.bin, "psql")] + self.conn_args()
                             + ["-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], timeout=timeout, env=self.env)
        return out.strip()

    def server_cpu(self):
        """CPU seconds of the postmaster and all its processes, exited ones included."""
        pm = self.proc.pid
        t = proc_cpu(pm, children=True)
        for c in proc_children(pm):
            try:
                t += proc_cpu(c, children=True)
            except (OSError, ValueError, IndexError):
                pass
        return t

    def wait_archived(self, timeout):
        """Until no WAL segment waits for archiving (bounded)."""
        end = time.time() + timeout
        while True:
            ready = int(self.psql("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
                                  db="postgres"))
            if ready == 0:
                return self.psql("SELECT archived_count || ' archived, ' || failed_count || ' failed' "
                                 "FROM pg_stat_archiver", db="postgres")
            if time.time() > end:
                raise RuntimeError(f"{ready} WAL segments still wait for archiving after {timeout:.0f} s:\n"
                                   f"{tail(self.log)}")
            time.sleep(0.5)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                killgroup(self.proc)
                self.proc.wait()
        if self.logf:
            self.logf.close()


class PgBackRest:
    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "pg", "pgbackrest")
        self.repo = os.path.join(self.dir, "repo")
        self.conf = os.path.join(self.dir, "pgbackrest.conf")
        for d in (self.dir, self.repo, os.path.join(self.dir, "log"), os.path.join(self.dir, "lock"),
                  os.path.join(self.dir, "spool")):
            os.makedirs(d, exist_ok=True)

    def write_conf(self, cluster_data, port, sock):
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"""[global]
repo1-path={self.repo}
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass={secrets.token_urlsafe(32)}
repo1-retention-full=1
compress-type=zst
process-max=2
start-fast=y
log-path={self.dir}/log
lock-path={self.dir}/lock
spool-path={self.dir}/spool
log-level-console=info
log-level-file=detail

[{STANZA}]
pg1-path={cluster_data}
pg1-port={port}
pg1-socket-path={sock}
pg1-user=postgres
""")

    def cmd(self, *args):
        return [PGBACKREST_BIN, f"--config={self.conf}", f"--stanza={STANZA}"] + list(args)


def part_postgres(args, tmp, rn, res, cleanup):
    say("")
    say("== Part 2: PostgreSQL, Steward's pg_dump pipeline against pg_dump > /dev/null and pgBackRest ==")
    pg = res["postgres"]
    use_pgbr = not args.skip_pgbackrest and ensure_pgbackrest()
    pg["pgbackrest_measured"] = use_pgbr
    cluster = Cluster(tmp, rn)
    bindir, user = cluster.bin, cluster.user
    pg["bindir"] = bindir
    pgbr = None
    if use_pgbr:
        pg["pgbackrest_version"] = version([PGBACKREST_BIN, "version"])
        pgbr = PgBackRest(tmp)
        pgbr.write_conf(cluster.data, cluster.port, cluster.sock)
    cleanup.push("postgres", cluster.stop)
    cluster.start(f"{PGBACKREST_BIN} --config={pgbr.conf} --stanza={STANZA} archive-push %p" if pgbr else "true")
    pg["server_version"] = cluster.version
    say(f"PostgreSQL {cluster.version} ({bindir}) on 127.0.0.1:{cluster.port}, socket in {cluster.sock}, "
        f"running as {'postgres' if user else pwd.getpwuid(os.geteuid()).pw_name}; archive_command "
        f"{'pgBackRest archive-push' if pgbr else 'true (pgBackRest not measured)'}")
    scale_timeout = 300 + 30 * args.pg_scale
    if pgbr:
        rn.run("pgbackrest stanza-create", pgbr.cmd("stanza-create"), timeout=300, env=cluster.env,
               cwd=cluster.dir, user=user)
        say("pgBackRest stanza created (zst, process-max 2, aes-256-cbc, start-fast)")
    cluster.psql(f"CREATE DATABASE {DB}", db="postgres")
    t0 = time.perf_counter()
    rn.run("pgbench init", [os.path.join(bindir, "pgbench"), "-i", "-q", "-s", str(args.pg_scale)]
           + cluster.conn_args() + [DB], timeout=scale_timeout, env=cluster.env)
    pg["pgbench_init_s"] = time.perf_counter() - t0
    cluster.psql("CHECKPOINT")
    archived = cluster.wait_archived(scale_timeout)
    pg["db_bytes"] = int(cluster.psql(f"SELECT pg_database_size('{DB}')"))
    pg["tables_bytes"] = int(cluster.psql("SELECT sum(pg_table_size(oid)) FROM pg_class WHERE relname LIKE 'pgbench_%' "
                                          "AND relkind = 'r'"))
    pg["indexes_bytes"] = int(cluster.psql("SELECT sum(pg_relation_size(oid)) FROM pg_class WHERE relname LIKE "
                                           "'pgbench_%' AND relkind = 'i'"))
    pg["cluster_bytes"] = du(cluster.data)[0]
    say(f"pgbench -i -s {args.pg_scale}: {pg['pgbench_init_s']:.1f} s; database {pg['db_bytes'] / MiB:.0f} MiB "
        f"(tables {pg['tables_bytes'] / MiB:.0f}, indexes {pg['indexes_bytes'] / MiB:.0f}), cluster directory "
        f"{pg['cluster_bytes'] / MiB:.0f} MiB; WAL archiver: {archived}")
    dump = [os.path.join(bindir, "pg_dump"), "--format=custom"] + cluster.conn_args() + [DB]
    dump_timeout = 300 + 20 * args.pg_scale

    # (a) the floor
    say(f"[pg_dump] pg_dump --format=custom {DB} > /dev/null (load average {loadavg()})")
    try:
        c0 = cluster.server_cpu()
        with open(os.devnull, "wb") as null:
            r = rn.timed("pg_dump floor", dump, timeout=dump_timeout, env=cluster.env, stdout=null)
        r["server_cpu_s"] = cluster.server_cpu() - c0
        r.pop("stdout", None)
        pg["floor"] = r
        say(f"[pg_dump] {r['wall_s']:.2f} s, pg_dump CPU {r['cpu_s']:.2f} s, peak {r['peak_mib']:.0f} MiB; "
            f"server CPU {r['server_cpu_s']:.2f} s")
    except RuntimeError as e:
        say(f"[pg_dump] FAILED: {e}")
        pg["floor_error"] = str(e)
        res["failed"] = True

    # (b) Steward
    say(f"[steward] pg_dump --format=custom {DB} | steward repo backup --stdin-filename {DB}.pgdump "
        f"(load average {loadavg()})")
    try:
        pw = os.path.join(tmp, "pg-repo-password")
        write_secret(pw, secrets.token_urlsafe(24))
        repo = os.path.join(tmp, "pg-steward-repo")
        senv = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
        senv["STEWARD_REPO_PASSWORD_FILE"] = pw
        scmd = [BIN, "-o", "json", "repo", "--repo", repo]
        rn.run("steward pg init", scmd + ["init"], timeout=300, env=senv, cwd=tmp)
        c0 = cluster.server_cpu()
        r = rn.pipeline("steward pg backup", dump, scmd + ["backup", "--stdin-filename", f"{DB}.pgdump"],
                        timeout=dump_timeout + 300, env1=cluster.env, env2=senv, cwd=tmp)
        r["server_cpu_s"] = cluster.server_cpu() - c0
        j = last_json(r.pop("stdout"), lambda o: "snapshot" in o)
        if not j:
            raise RuntimeError("steward printed no JSON summary")
        r.update(snapshot=j["snapshot"], bytes_read=j.get("bytes_read"), bytes_added=j.get("bytes_added"),
                 reported_s=j.get("seconds"))
        r["repo_bytes"] = du(repo)[0]
        pg["steward"] = r
        say(f"[steward] {r['wall_s']:.2f} s (pg_dump exited after {r['first_exit_after_s']:.2f} s); CPU pg_dump "
            f"{r['first']['cpu_s']:.2f} s + steward {r['second']['cpu_s']:.2f} s; peak steward "
            f"{r['second']['peak_mib']:.0f} MiB, pg_dump {r['first']['peak_mib']:.0f} MiB; server CPU "
            f"{r['server_cpu_s']:.2f} s; dump {fmt_mib(r['bytes_read'])} MiB, repository {fmt_mib(r['repo_bytes'])} MiB")
        # Untimed: the stored dump comes back whole and is a custom-format dump.
        t0 = time.perf_counter()
        p = spawn(scmd + ["dump", r["snapshot"], f"{DB}.pgdump"], stdout=subprocess.PIPE,
                  stderr=subprocess.DEVNULL, env=senv, cwd=tmp)
        timer = threading.Timer(dump_timeout, killgroup, (p,))
        timer.daemon = True
        timer.start()
        head, n = b"", 0
        try:
            while True:
                chunk = p.stdout.read(1 << 20)
                if not chunk:
                    break
                if len(head) < 5:
                    head += chunk[:5]
                n += len(chunk)
            p.stdout.close()
            rc = p.wait(timeout=60)
        finally:
            timer.cancel()
        if rc != 0 or not head.startswith(b"PGDMP") or n != r["bytes_read"]:
            raise RuntimeError(f"steward repo dump gave {n} bytes starting {head!r} (exit {rc}); the backup read "
                               f"{r['bytes_read']} bytes")
        r["verified"] = True
        say(f"[steward] `steward repo dump` gives back the {fmt_mib(n)} MiB custom-format dump "
            f"({time.perf_counter() - t0:.1f} s)")
    except RuntimeError as e:
        say(f"[steward] FAILED: {e}")
        pg["steward_error"] = str(e)
        res["failed"] = True

    # (c) pgBackRest
    if pgbr:
        say(f"[pgbackrest] pgbackrest --stanza={STANZA} --type=full backup (load average {loadavg()})")
        try:
            c0 = cluster.server_cpu()
            r = rn.timed("pgbackrest backup", pgbr.cmd("--type=full", "backup"), timeout=dump_timeout + 300,
                         env=cluster.env, cwd=cluster.dir, user=user)
            r["server_cpu_s"] = cluster.server_cpu() - c0
            r.pop("stdout", None)
            _, out = rn.run("pgbackrest info", pgbr.cmd("--output=json", "info"), timeout=120, env=cluster.env,
                            cwd=cluster.dir, user=user)
            try:
                b = json.loads(out)[0]["backup"][-1]
                r["backup_db_bytes"] = b["info"]["size"]
                r["backup_repo_bytes"] = b["info"]["repository"]["delta"]
            except (ValueError, LookupError, TypeError):
                pass
            r["repo_bytes"] = du(pgbr.repo)[0]
            r["repo_backup_bytes"] = du(os.path.join(pgbr.repo, "backup"))[0]
            r["repo_archive_bytes"] = du(os.path.join(pgbr.repo, "archive"))[0]
            pg["pgbackrest"] = r
            say(f"[pgbackrest] {r['wall_s']:.2f} s, CPU {r['cpu_s']:.2f} s, peak {r['peak_mib']:.0f} MiB (largest "
                f"process); server CPU {r['server_cpu_s']:.2f} s; repository {fmt_mib(r['repo_bytes'])} MiB "
                f"(backup {fmt_mib(r['repo_backup_bytes'])}, WAL archive {fmt_mib(r['repo_archive_bytes'])})")
        except RuntimeError as e:
            say(f"[pgbackrest] FAILED: {e}\n{tail(os.path.join(pgbr.dir, 'log', f'{STANZA}-backup.log'))}")
            pg["pgbackrest_error"] = str(e)
            res["failed"] = True
    cleanup.pop()  # stops the cluster


# ---------------------------------------------------------------------------------------------
# Report


def ratio(a, b):
    return a / b if a is not None and b else None


def f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def table(header, rows):
    w = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    say("  ".join(f"{header[i]:<{w[i]}}" if i == 0 else f"{header[i]:>{w[i]}}" for i in range(len(header))))
    for r in rows:
        say("  ".join(f"{str(r[i]):<{w[i]}}" if i == 0 else f"{str(r[i]):>{w[i]}}" for i in range(len(r))))


def files_goals(s, r):
    g = []
    if not (s and r):
        return g
    t1 = ratio(s["first_backup"]["wall_s"], r["first_backup"]["wall_s"])
    t2 = ratio(s["second_backup"]["wall_s"], r["second_backup"]["wall_s"])
    t3 = ratio(s["restore"]["wall_s"], r["restore"]["wall_s"])
    g.append(("first backup at least 2x faster than restic (time ratio <= 0.50)", t1, t1 <= 0.5))
    g.append(("second backup faster than restic (time ratio < 1)", t2, t2 < 1))
    g.append(("restore at least 2x faster than restic (time ratio <= 0.50)", t3, t3 <= 0.5))
    rr = ratio(s["repo_bytes"], r["repo_bytes"])
    g.append(("repository no larger than restic's (size ratio <= 1)", rr, rr <= 1))
    mem = max(ratio(s[k]["peak_mib"], r[k]["peak_mib"]) for k in ("first_backup", "second_backup", "restore"))
    g.append(("peak memory no higher than restic's, every command (largest ratio <= 1)", mem, mem <= 1))
    return g


def print_files(res):
    fr = res.get("files") or {}
    s, r = fr.get("steward"), fr.get("restic")
    d = res.get("data") or {}
    if not (s or r):
        for k in ("steward_error", "restic_error"):
            if k in fr:
                say(f"{k}: {fr[k].splitlines()[0]}")
        return
    say("")
    say(f"Part 1, files: data set {fmt_mib(d.get('bytes', 0))} MiB in {d.get('files')} files "
        f"({'generated, seed %s' % d.get('seed') if d.get('generated') else d.get('dir')}); read from the page cache "
        f"by both sides (warm-up read before each, nothing dropped); sync before every command")
    say(f"{res['steward_version']} ({BIN}); {res.get('restic_version')}; both with default settings on "
        f"{res['cpus']} cores")
    rows = []

    def g(side, *keys):
        x = side
        for k in keys:
            if x is None:
                return None
            x = x.get(k)
        return x

    def row(label, key, field, fmt="{:.2f}", rat=True):
        a, b = g(s, key, field) if key else g(s, field), g(r, key, field) if key else g(r, field)
        rows.append((label, f(a, fmt), f(b, fmt), f(ratio(a, b)) if rat else ""))

    for key, label in (("first_backup", "first backup"), ("second_backup", "second backup (unchanged)"),
                       ("restore", "restore of the first snapshot")):
        row(f"{label}: wall s", key, "wall_s")
        row("  its own report of the time, s", key, "reported_s", rat=False)
        if key != "second_backup":
            row("  MiB/s of the data set", key, "mib_s", "{:.1f}")
        row("  CPU s (user + sys)", key, "cpu_s")
        row("    user (the program's own work)", key, "user_s")
        row("    sys (the kernel: page cache, files)", key, "sys_s")
        row("  peak memory MiB (ru_maxrss)", key, "peak_mib", "{:.0f}")
    rows.append(("repository size MiB (apparent)", fmt_mib(g(s, "repo_bytes")), fmt_mib(g(r, "repo_bytes")),
                 f(ratio(g(s, "repo_bytes"), g(r, "repo_bytes")))))
    rows.append(("  / data set", f(g(s, "repo_bytes") and s["repo_bytes"] / d["bytes"], "{:.3f}"),
                 f(g(r, "repo_bytes") and r["repo_bytes"] / d["bytes"], "{:.3f}"), ""))
    rows.append(("  restic's cache (not in the repository) MiB", "", fmt_mib(g(r, "cache_bytes")), ""))
    rows.append(("first backup: added MiB (own report; restic 0.14's is before compression)",
                 fmt_mib(g(s, "first_backup", "bytes_added")), fmt_mib(g(r, "first_backup", "bytes_added")), ""))
    rows.append(("second backup: files unchanged / added MiB",
                 s and f"{s['second_backup']['files_unchanged']} / {fmt_mib(s['second_backup']['bytes_added'])}" or "-",
                 r and f"{r['second_backup']['files_unchanged']} / {fmt_mib(r['second_backup']['bytes_added'])}" or "-", ""))
    row("init: wall s", "init", "wall_s")
    rows.append(("restored tree equals the source", s and f"yes ({s['verified_entries']} entries)" or "-",
                 r and f"yes ({r['verified_entries']} entries)" or "-", ""))
    table(("", "steward", "restic", "steward/restic"), rows)
    for k in ("steward_error", "restic_error"):
        if k in fr:
            say(f"{k}: {fr[k].splitlines()[0]}")
    goals = files_goals(s, r)
    res["files_goals"] = [{"goal": t, "value": v, "met": m} for t, v, m in goals]
    if goals:
        say("Goals (files):")
        for t, v, m in goals:
            say(f"  {t}: {v:.2f} -> {'met' if m else 'NOT met'}")


def print_postgres(res):
    pg = res.get("postgres") or {}
    if "db_bytes" not in pg:
        return
    fl, st, br = pg.get("floor"), pg.get("steward"), pg.get("pgbackrest")
    say("")
    say(f"Part 2, PostgreSQL {pg.get('server_version')}: pgbench scale {res['pg_scale']}, database "
        f"{pg['db_bytes'] / MiB:.0f} MiB (tables {pg['tables_bytes'] / MiB:.0f}, indexes {pg['indexes_bytes'] / MiB:.0f}), "
        f"cluster directory {pg['cluster_bytes'] / MiB:.0f} MiB")
    say("pg_dump is logical (table data; indexes as definitions only, rebuilt on restore); pgBackRest is physical "
        "(every file of the cluster, indexes and all databases included, plus the WAL of the backup)"
        + (f"; {pg['pgbackrest_version']}" if pg.get("pgbackrest_version") else ""))
    rows = []
    floor = fl and fl["wall_s"]
    if fl:
        rows.append(("pg_dump -Fc > /dev/null (floor)", f(fl["wall_s"]), f"{fl['cpu_s']:.2f}", f"{fl['peak_mib']:.0f}",
                     f(fl["server_cpu_s"]), "-", "1.00"))
    if st:
        rows.append(("pg_dump -Fc | steward repo backup --stdin", f(st["wall_s"]),
                     f"{st['first']['cpu_s']:.2f} + {st['second']['cpu_s']:.2f}",
                     f"{st['first']['peak_mib']:.0f} / {st['second']['peak_mib']:.0f}", f(st["server_cpu_s"]),
                     f"{fmt_mib(st['repo_bytes'])}", f(ratio(st["wall_s"], floor))))
    if br:
        rows.append(("pgBackRest full (zst, process-max 2)", f(br["wall_s"]), f"{br['cpu_s']:.2f}",
                     f"{br['peak_mib']:.0f}", f(br["server_cpu_s"]),
                     f"{fmt_mib(br['repo_bytes'])}", f(ratio(br["wall_s"], floor))))
    if rows:
        table(("", "wall s", "CPU s", "peak MiB", "server CPU s", "repository MiB", "time / floor"), rows)
    if st:
        say(f"  steward: dump of {fmt_mib(st['bytes_read'])} MiB (pg_dump's compressed custom format), "
            f"{fmt_mib(st['bytes_added'])} MiB added; CPU and peak memory are pg_dump + steward")
    if br:
        say(f"  pgBackRest: repository {fmt_mib(br['repo_bytes'])} MiB = backup {fmt_mib(br['repo_backup_bytes'])} + "
            f"WAL archive {fmt_mib(br['repo_archive_bytes'])} (repo1-retention-full=1: the backup's own expire step "
            f"drops the WAL archived before it); "
            f"backed-up cluster {fmt_mib(br.get('backup_db_bytes'))} MiB; peak memory is the largest process")
    if st and br:
        say(f"  Steward / pgBackRest (time): {st['wall_s'] / br['wall_s']:.2f}")
    for k in ("floor_error", "steward_error", "pgbackrest_error"):
        if k in pg:
            say(f"{k}: {pg[k].splitlines()[0]}")
    goals = []
    if st and fl:
        v = st["wall_s"] / fl["wall_s"]
        goals.append((f"Steward's pg_dump pipeline within {PG_GOAL}x of pg_dump > /dev/null", v, v <= PG_GOAL))
    res["postgres_goals"] = [{"goal": t, "value": v, "met": m} for t, v, m in goals]
    if goals:
        say("Goals (PostgreSQL):")
        for t, v, m in goals:
            say(f"  {t}: {v:.2f} -> {'met' if m else 'NOT met'}")


# ---------------------------------------------------------------------------------------------


def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2G", help="data set size for gen_backup_data.py (default 2G)")
    ap.add_argument("--data", help="use this existing data set instead of generating one")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pg-scale", type=int, default=50, help="pgbench scale (default 50, about 750 MB of tables)")
    ap.add_argument("--skip-files", action="store_true", help="skip part 1 (files, restic)")
    ap.add_argument("--skip-postgres", action="store_true", help="skip part 2 (PostgreSQL)")
    ap.add_argument("--skip-pgbackrest", action="store_true", help="part 2 without pgBackRest")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout (progress on stderr)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (data, repositories, logs)")
    ap.add_argument("--deadline", type=float, help="seconds for the whole run (default from --size and --pg-scale)")
    args = ap.parse_args()
    if args.json:
        OUT = sys.stderr
    if args.skip_files and args.skip_postgres:
        raise SystemExit("nothing to do: --skip-files and --skip-postgres")
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} is missing: cargo build --release -p steward (or set STEWARD_BIN)")
    if not args.skip_files and not os.path.exists(RESTIC_BIN):
        raise SystemExit(f"{RESTIC_BIN} is missing: apt-get install -y restic")
    size_mib = (0 if args.skip_files else
                (du(args.data)[0] if args.data else parse_size(args.size)) / MiB)
    deadline = args.deadline or (1800 + 12 * size_mib + (0 if args.skip_postgres else 120 * args.pg_scale))

    def on_term(*_):
        raise KeyboardInterrupt

    def on_alarm(*_):
        raise TimeoutError(f"benchmark deadline ({deadline:.0f} s) passed")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(deadline))

    res = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpus": os.cpu_count(), "load_before": loadavg(),
           "steward_bin": BIN, "steward_version": version([BIN, "--version"]), "pg_scale": args.pg_scale,
           "size": args.size, "files": {}, "postgres": {}, "failed": False}
    if not args.skip_files:
        res["restic_version"] = version([RESTIC_BIN, "version"])
    say(f"load average before: {res['load_before']}; {res['steward_version']} ({BIN}); "
        f"{res.get('restic_version', 'restic not used')}; deadline {deadline:.0f} s")
    cleanup = Cleanup()
    tmp = tempfile.mkdtemp(prefix="steward-bench-backup-")
    if args.keep:
        say(f"temp dir (kept): {tmp}")
    else:
        cleanup.push("temp dir", lambda: shutil.rmtree(tmp, ignore_errors=True))
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    rn = Runner(logs)
    try:
        if not args.skip_files:
            part_files(args, tmp, rn, res)
        if not args.skip_postgres:
            try:
                part_postgres(args, tmp, rn, res, cleanup)
            except RuntimeError as e:
                say(f"[postgres] FAILED: {e}")
                res["postgres"]["error"] = str(e)
                res["failed"] = True
        res["load_after"] = loadavg()
    except (TimeoutError, KeyboardInterrupt) as e:
        say(f"STOPPED: {e!r}; the tables below show what finished")
        res["stopped"] = repr(e)
        res["failed"] = True
    finally:
        signal.alarm(0)
        cleanup.run()
    if not args.skip_files:
        print_files(res)
    if not args.skip_postgres:
        print_postgres(res)
    say(f"load average before {res['load_before']}, after {res.get('load_after')}")
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    sys.exit(1 if res["failed"] else 0)


if __name__ == "__main__":
    main()
