"""Real peers for the rotation end-to-end tests: a throwaway PostgreSQL cluster that asks for
passwords (scram-sha-256), the shared MariaDB and Redis, random app users on each, a load client
that logs in again and again with the credential it reads from Steward, and small helpers for
Steward's rotation API (status, events, rotate and wait).

Nothing here is a pytest fixture; test_rotation_targets.py builds its fixtures from these.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import shutil
import string
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import requests

from steward_testlib import REPO_ROOT, clean_env, free_port, http_session

PEER_HOST = "127.0.0.1"
MARIADB_PORT = int(os.environ.get("STEWARD_TEST_MARIADB_PORT", "3306"))
REDIS_PORT = int(os.environ.get("STEWARD_TEST_REDIS_PORT", "6379"))

_ALNUM = string.ascii_letters + string.digits


def rand_suffix(n: int = 10) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def rand_name(prefix: str) -> str:
    """A user name nobody else uses (lower case, SQL-identifier safe)."""
    return f"{prefix}_{rand_suffix()}"


def rand_password(n: int = 24) -> str:
    return "Pw" + "".join(secrets.choice(_ALNUM) for _ in range(n))


def wait_for(pred: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Calls `pred` until it returns something truthy; returns that. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Making sure the shared peers run (no silent skips)


def _mariadb_up() -> bool:
    import pymysql

    try:
        pymysql.connect(host=PEER_HOST, port=MARIADB_PORT, user="root", password="", connect_timeout=3,
                        ssl_disabled=True).close()
        return True
    except Exception:  # noqa: BLE001
        return False


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis(host=PEER_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping())
    except Exception:  # noqa: BLE001
        return False


def ensure_peers() -> None:
    """Starts MariaDB / Redis with scripts/ensure-peers.sh when they are down; fails (never
    skips) when they still are not reachable."""
    if _mariadb_up() and _redis_up():
        return
    r = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "ensure-peers.sh")],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=300,
    )
    problems = []
    if not _mariadb_up():
        problems.append(f"MariaDB is not reachable on {PEER_HOST}:{MARIADB_PORT} as root with an empty password")
    if not _redis_up():
        problems.append(f"Redis is not reachable on {PEER_HOST}:{REDIS_PORT}")
    if problems:
        raise RuntimeError("; ".join(problems) + f"\nscripts/ensure-peers.sh said:\n{r.stdout}\n{r.stderr}")


# --------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway cluster with scram-sha-256 (the shared :5432 trusts every login)


def _pg_bin() -> pathlib.Path:
    base = pathlib.Path("/usr/lib/postgresql")
    versions = sorted(
        (p / "bin" for p in base.iterdir() if (p / "bin" / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    ) if base.is_dir() else []
    if not versions:
        raise RuntimeError("no initdb under /usr/lib/postgresql/*/bin: install postgresql")
    return versions[-1]


def _as_postgres(cmd: list) -> list:
    """initdb and pg_ctl refuse to run as root: run them as the `postgres` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


class PgCluster:
    """initdb + pg_ctl start on 127.0.0.1:<free port>, `--auth=scram-sha-256`, superuser
    `postgres` with a random password. `stop()` stops it (immediate) and deletes its files."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        # Not under pytest's tmp dir: that one is 0700 root, and the server runs as postgres.
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="steward-pgcluster-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.admin_user = "postgres"
        self.admin_password = rand_password()
        self.port: Optional[int] = None
        self.started = False

    def _run(self, cmd: list, timeout: float = 120) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env())
        if r.returncode != 0:
            raise RuntimeError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")

    def start(self) -> "PgCluster":
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.admin_password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(_as_postgres([
            str(self.bin / "initdb"), "-D", str(self.data), "-U", self.admin_user,
            "--auth=scram-sha-256", "--no-sync", "-E", "UTF8", f"--pwfile={pwfile}",
        ]))
        pwfile.unlink()
        for attempt in range(3):
            self.port = free_port()
            opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c max_connections=200 -c log_connections=off")
            try:
                self._run(_as_postgres([
                    str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                    "-o", opts, "-l", str(self.log), "start",
                ]))
                break
            except RuntimeError:
                if attempt == 2:
                    raise RuntimeError("pg_ctl start failed:\n" + self.server_log())
        self.started = True
        return self

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.started:
            subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                           capture_output=True, timeout=60, env=clean_env())
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- connections ---------------------------------------------------------------------------

    def connect(self, user: str, password: str, dbname: str = "postgres", timeout: int = 5):
        import psycopg

        return psycopg.connect(host=PEER_HOST, port=self.port, user=user, password=password,
                               dbname=dbname, connect_timeout=timeout, autocommit=True)

    def admin(self):
        return self.connect(self.admin_user, self.admin_password)

    def exec(self, sql: str, params=None) -> None:
        with self.admin() as c:
            c.execute(sql, params)

    def admin_credential(self) -> dict:
        return {"username": self.admin_user, "password": self.admin_password}

    def login_error(self, user: str, password: str, dbname: str = "postgres") -> Optional[str]:
        """None if `user` logs in with `password` (and SELECT 1 works), else the error text."""
        try:
            with self.connect(user, password, dbname) as c:
                c.execute("SELECT 1").fetchone()
            return None
        except Exception as e:  # noqa: BLE001
            return str(e) or repr(e)

    def can_login(self, user: str, password: str) -> bool:
        return self.login_error(user, password) is None

    def create_roles(self, *users_passwords) -> None:
        """CREATE ROLE ... LOGIN PASSWORD for (user, password) pairs (passwords are sent as
        literals: they are ours and alphanumeric)."""
        from psycopg import sql

        with self.admin() as c:
            for user, pw in users_passwords:
                c.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(pw)))

    def drop_roles(self, *users) -> None:
        from psycopg import sql

        if not self.started:
            return
        with self.admin() as c:
            for u in users:
                c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(u)))

    def hba_reject(self, user: str) -> None:
        """Puts `host all USER 127.0.0.1/32 reject` before every other rule and reloads."""
        hba = self.data / "pg_hba.conf"
        text = hba.read_text()
        hba.write_text(f"host all {user} 127.0.0.1/32 reject\n" + text)
        with self.admin() as c:
            assert c.execute("SELECT pg_reload_conf()").fetchone()[0] is True


# --------------------------------------------------------------------------------------------
# MariaDB and Redis users


def mysql_root():
    import pymysql

    return pymysql.connect(host=PEER_HOST, port=MARIADB_PORT, user="root", password="", connect_timeout=5,
                           autocommit=True, ssl_disabled=True)


def mysql_create_users(*users_passwords) -> None:
    with mysql_root() as c, c.cursor() as cur:
        for user, pw in users_passwords:
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, pw))
            cur.execute("GRANT USAGE ON *.* TO %s@'%%'", (user,))


def mysql_drop_users(*users) -> None:
    with mysql_root() as c, c.cursor() as cur:
        for user in users:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))


def mysql_login_error(user: str, password: str, port: int = MARIADB_PORT) -> Optional[str]:
    import pymysql

    try:
        # Without TLS, as the rotator connects. (With TLS "preferred", PyMySQL builds an SSL context
        # per connection, ~40 ms of CPU under the GIL: the load client would crawl.)
        c = pymysql.connect(host=PEER_HOST, port=port, user=user, password=password, connect_timeout=5,
                            ssl_disabled=True)
        try:
            with c.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone()[0] == 1
        finally:
            c.close()
        return None
    except Exception as e:  # noqa: BLE001
        return str(e) or repr(e)


def redis_admin():
    import redis

    return redis.Redis(host=PEER_HOST, port=REDIS_PORT, socket_connect_timeout=5, socket_timeout=10)


def redis_create_user(user: str, password: str) -> None:
    r = redis_admin()
    r.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", f"~{user}:*", "+@connection", "+ping", "+get", "+set")
    r.close()


def redis_drop_user(user: str) -> None:
    r = redis_admin()
    r.execute_command("ACL", "DELUSER", user)
    r.close()


def redis_password_count(user: str) -> int:
    r = redis_admin()
    info = r.execute_command("ACL", "GETUSER", user)
    r.close()
    if isinstance(info, list):
        info = dict(zip(info[::2], info[1::2]))
    pw = info.get(b"passwords", info.get("passwords"))
    return len(pw or [])


def redis_login_error(user: str, password: str, port: int = REDIS_PORT) -> Optional[str]:
    import redis

    c = redis.Redis(host=PEER_HOST, port=port, username=user, password=password,
                    socket_connect_timeout=5, socket_timeout=5)
    try:
        assert c.ping() is True
        return None
    except Exception as e:  # noqa: BLE001
        return str(e) or repr(e)
    finally:
        c.close()


# --------------------------------------------------------------------------------------------
# The load client


@dataclass
class LoadStats:
    attempts: int = 0           # logins tried (first tries and retries)
    ok: int = 0                 # logins that worked
    rereads: int = 0            # failures that made the client read Steward again
    recovered: int = 0          # ... after which the retry worked
    failures: list = field(default_factory=list)   # (time, first error, retry error, versions)
    versions_used: set = field(default_factory=set)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0


class LoadClient:
    """Threads that each open a NEW connection to the target again and again with the
    credential read from Steward (cached). The client contract: on a failed login, read the
    secret again once and retry with what comes back; only a failed retry counts as a failed
    login. `login(cred)` returns None on success or the error text."""

    def __init__(self, server, token: str, env: str, path: str, login: Callable[[dict], Optional[str]],
                 threads: int = 4, watch: bool = False) -> None:
        self.server, self.token, self.env, self.path = server, token, env, path
        self.login = login
        self.nthreads = threads
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list = []
        self._cache: Optional[tuple] = None  # (version, credential)
        self.errors: list = []  # exceptions that escaped a thread (a test bug)
        # watch: one more thread long-polls the secret (?wait= with If-None-Match) and puts each
        # new version in the cache at once, as a client following the secret would.
        self.watch = watch
        self.watched = 0  # new versions the watcher saw

    def read(self, http: requests.Session) -> tuple:
        r = http.get(f"{self.server.url}/v1/{self.env}/data/{self.path}",
                     headers={"X-Vault-Token": self.token}, timeout=10)
        r.raise_for_status()
        version = int(r.headers["ETag"].strip('"'))
        cred = r.json()["data"]["data"]
        with self._lock:
            if self._cache is None or version >= self._cache[0]:
                self._cache = (version, cred)
            return self._cache

    def _worker(self) -> None:
        http = http_session()
        try:
            while not self._stop.is_set():
                with self._lock:
                    cached = self._cache
                if cached is None:
                    cached = self.read(http)
                version, cred = cached
                err = self.login(cred)
                with self._lock:
                    self.stats.attempts += 1
                    if err is None:
                        self.stats.ok += 1
                        self.stats.versions_used.add(version)
                        continue
                    self.stats.rereads += 1
                # The contract: re-read once, retry once.
                version2, cred2 = self.read(http)
                err2 = self.login(cred2)
                with self._lock:
                    self.stats.attempts += 1
                    if err2 is None:
                        self.stats.ok += 1
                        self.stats.recovered += 1
                        self.stats.versions_used.add(version2)
                    else:
                        self.stats.failures.append((time.time(), version, err, version2, err2))
        except Exception as e:  # noqa: BLE001
            self.errors.append(repr(e))
            raise

    def _watcher(self) -> None:
        http = http_session()
        try:
            while not self._stop.is_set():
                with self._lock:
                    known = self._cache[0]
                r = http.get(f"{self.server.url}/v1/{self.env}/data/{self.path}?wait=1s",
                             headers={"X-Vault-Token": self.token, "If-None-Match": f'"{known}"'}, timeout=10)
                if r.status_code == 304:
                    continue
                r.raise_for_status()
                version = int(r.headers["ETag"].strip('"'))
                with self._lock:
                    if version > self._cache[0]:
                        self._cache = (version, r.json()["data"]["data"])
                        self.watched += 1
        except Exception as e:  # noqa: BLE001
            self.errors.append("watcher: " + repr(e))
            raise

    def start(self) -> "LoadClient":
        self.read(http_session())
        self._t0 = time.monotonic()
        targets = [self._worker] * self.nthreads + ([self._watcher] if self.watch else [])
        for i, target in enumerate(targets):
            t = threading.Thread(target=target, name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> LoadStats:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.stats.elapsed = time.monotonic() - self._t0
        return self.stats


def pg_login(cred: dict) -> Optional[str]:
    import psycopg

    try:
        with psycopg.connect(host=cred["host"], port=cred["port"], user=cred["username"], password=cred["password"],
                             dbname=cred.get("dbname", "postgres"), connect_timeout=5, autocommit=True) as c:
            c.execute("SELECT 1").fetchone()
        return None
    except Exception as e:  # noqa: BLE001
        return str(e) or repr(e)


def mysql_login(cred: dict) -> Optional[str]:
    return mysql_login_error(cred["username"], cred["password"], int(cred["port"]))


def redis_login(cred: dict) -> Optional[str]:
    return redis_login_error(cred["username"], cred["password"], int(cred["port"]))


# --------------------------------------------------------------------------------------------
# Steward's rotation API


def ok_json(r: requests.Response, *codes: int) -> dict:
    codes = codes or (200,)
    assert r.status_code in codes, f"{r.request.method} {r.url} -> {r.status_code}: {r.text}"
    return r.json() if r.content else {}


def reader_token(server, env: str, path: str) -> dict:
    """A token whose only right is reading ENV/PATH (a policy made for it)."""
    name = "rot-read-" + rand_suffix(8)
    pol = {"rules": [{"env": env, "path": path, "capabilities": ["read"]}]}
    ok_json(server.api("PUT", f"/v1/sys/policies/{name}", json=pol), 200, 204)
    return ok_json(server.api("POST", "/v1/auth/token/create", json={"policies": [name], "ttl": "1h"}))["auth"]


def configure(server, env: str, path: str, **cfg) -> dict:
    return ok_json(server.api("PUT", f"/v1/sys/rotation/config/{env}/{path}", json=cfg))["data"]


def status(server, env: str, path: str) -> dict:
    return ok_json(server.api("GET", f"/v1/sys/rotation/status/{env}/{path}"))["data"]


def events(server, after: int = 0, env: Optional[str] = None, path: Optional[str] = None) -> list:
    """Every event after `after` (paged), optionally only those of ENV/PATH."""
    out = []
    while True:
        data = ok_json(server.api("GET", f"/v1/sys/events?after={after}&limit=1000"))["data"]
        out += data["events"]
        if not data["events"] or data["next"] == after:
            break
        after = data["next"]
    if env is not None:
        out = [e for e in out if e.get("env") == env and e.get("path") == path]
    return out


def kinds(evs: list, kind: str) -> list:
    return [e for e in evs if e["kind"] == kind]


def retired_for(ev: dict) -> int:
    """The version whose rotation a rotation.retired event closes (the version that became
    current): `detail.version` in the contract, `detail.current_version` in newer builds."""
    d = ev["detail"]
    return d["current_version"] if "current_version" in d else d["version"]


def rotate_and_wait(server, env: str, path: str, timeout: float = 30) -> dict:
    """POST rotate, then wait until the count of rotations went up and no run is in flight.
    Returns the final status; raises if the rotation failed or timed out."""
    before = status(server, env, path)
    r = server.api("POST", f"/v1/sys/rotation/rotate/{env}/{path}")
    assert r.status_code == 202, r.text

    def done():
        st = status(server, env, path)
        if st["failures"] > before["failures"]:
            raise AssertionError(f"rotation failed: {json.dumps(st['last'])}")
        if st["rotations"] > before["rotations"] and st["state"] != "rotating":
            return st
        return None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = done()
        if st:
            return st
        time.sleep(0.02)
    raise TimeoutError(f"rotation of {env}/{path} did not finish in {timeout}s: {status(server, env, path)}")


def wait_event(server, env: str, path: str, kind: str, after: int = 0, timeout: float = 20) -> dict:
    return wait_for(lambda: (kinds(events(server, after, env, path), kind) or [None])[-1], timeout,
                    interval=0.1, what=f"event {kind} on {env}/{path}")


def read_label(server, env: str, path: str, label: str, token=None) -> requests.Response:
    kw = {} if token is None else {"token": token}
    return server.api("GET", f"/v1/{env}/data/{path}?label={label}", **kw)


def logs_text(server) -> str:
    return (server.stdout_bytes() + server.stderr_bytes()).decode(errors="replace")
