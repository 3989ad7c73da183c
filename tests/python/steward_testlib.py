"""Helpers for the end-to-end tests: a managed `steward up` process, the CLI, and throwaway
PostgreSQL databases. Fixtures live in conftest.py; this module holds the plumbing."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import uuid
from typing import Iterable, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

import requests

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
STEWARD_BIN = os.environ.get("STEWARD_BIN") or str(REPO_ROOT / "target" / "debug" / "steward")

# Admin connection used to create and drop the per-test databases.
PG_ADMIN_URL = os.environ.get("STEWARD_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")

HEALTH_TIMEOUT = 20.0
DEFAULT = object()  # "use the server's root token"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: Optional[dict] = None) -> dict:
    """The test process environment without any STEWARD_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    for var in ("NO_PROXY", "no_proxy"):
        cur = env.get(var, "")
        env[var] = ",".join(x for x in (cur, "127.0.0.1", "localhost") if x)
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
    return env


def http_session() -> requests.Session:
    """A session that ignores proxy settings (everything here is on 127.0.0.1)."""
    s = requests.Session()
    s.trust_env = False
    return s


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _with_db(url: str, db: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + db, p.query, p.fragment))


def psql(sql: str, url: str = PG_ADMIN_URL, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-At", "-c", sql],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )


_pg_ok: Optional[bool] = None


def postgres_available() -> bool:
    global _pg_ok
    if _pg_ok is None:
        try:
            _pg_ok = psql("SELECT 1").returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _pg_ok = False
    return _pg_ok


class PgDatabase:
    """A fresh database `steward_py_<hex>`, dropped WITH (FORCE) on `drop()`."""

    def __init__(self) -> None:
        self.name = f"steward_py_{uuid.uuid4().hex[:16]}"
        r = psql(f'CREATE DATABASE "{self.name}"')
        if r.returncode != 0:
            raise RuntimeError(f"cannot create database {self.name}: {r.stderr}")
        self.url = _with_db(PG_ADMIN_URL, self.name)
        self.dropped = False

    def dump_data(self) -> bytes:
        r = subprocess.run(
            ["pg_dump", "--data-only", self.url],
            capture_output=True,
            timeout=60,
            env=clean_env(),
        )
        if r.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {r.stderr.decode(errors='replace')}")
        return r.stdout

    def drop(self) -> None:
        if not self.dropped:
            psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.dropped = True


# --------------------------------------------------------------------------------------------
# The server


class ServerDied(RuntimeError):
    pass


NO_HOST_CHECKS = "\n[monitoring]\nhost_checks = false\n"


class StewardServer:
    """One `steward up` on 127.0.0.1:<free port>. `start()` may be called again after `stop()`
    or `kill()` (a restart on the same data directory / database, on a new port). Each start
    writes stdout.N.log / stderr.N.log in the work directory."""

    def __init__(
        self,
        workdir: pathlib.Path,
        store_url: Optional[str] = None,
        env: Optional[dict] = None,
        config_text: Optional[str] = None,
        pg: Optional[PgDatabase] = None,
    ) -> None:
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data = self.workdir / "data"
        self.store_url = store_url
        self.pg = pg
        self.extra_env = dict(env or {})
        self.config_path: Optional[pathlib.Path] = None
        # The built-in host checks (load, memory, disk) would raise alerts on a loaded test
        # machine into tests that count notifications: off unless a test configures them.
        if config_text is None:
            config_text = NO_HOST_CHECKS
        elif "[monitoring]" not in config_text:
            config_text += NO_HOST_CHECKS
        if config_text is not None:
            self.config_path = self.workdir / "server.toml"
            self.config_path.write_text(config_text)
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.starts = 0
        self.token: Optional[str] = None
        self.http = http_session()
        self.cli_cwd = self.workdir / "cli-cwd"
        self.cli_cwd.mkdir(exist_ok=True)

    # -- process control ---------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return "postgres" if self.store_url else "sqlite"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up_command(self) -> list:
        cmd = [STEWARD_BIN, "up", "--listen", f"127.0.0.1:{self.port}", "--data", str(self.data)]
        if self.store_url:
            cmd += ["--store", self.store_url]
        return cmd

    def server_env(self) -> dict:
        extra = {"STEWARD_LOG": "debug"}
        if self.config_path:
            extra["STEWARD_CONFIG"] = str(self.config_path)
        extra.update(self.extra_env)
        return clean_env(extra)

    def log_path(self, stream: str, n: Optional[int] = None) -> pathlib.Path:
        return self.workdir / f"{stream}.{n or self.starts}.log"

    def start(self, wait: bool = True, expect: Iterable[int] = (200,), timeout: float = HEALTH_TIMEOUT):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.port = free_port()
        self.starts += 1
        with open(self.log_path("stdout"), "wb") as out, open(self.log_path("stderr"), "wb") as err:
            self.proc = subprocess.Popen(
                self.up_command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.server_env(),
                cwd=str(self.workdir),
            )
        if wait:
            self.wait_health(expect, timeout)
        return self

    def wait_health(self, expect: Iterable[int] = (200,), timeout: float = HEALTH_TIMEOUT) -> requests.Response:
        expect = tuple(expect)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerDied(
                    f"steward up exited with {self.proc.returncode} before it was healthy\n"
                    + self.describe_logs()
                )
            try:
                r = self.http.get(self.url + "/v1/sys/health", timeout=2)
                last = r.status_code
                if r.status_code in expect:
                    self._read_token()
                    return r
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.05)
        raise TimeoutError(
            f"/v1/sys/health did not answer {expect} within {timeout}s (last: {last})\n"
            + self.describe_logs()
        )

    def _read_token(self) -> None:
        f = self.data / "root-token"
        if f.exists():
            self.token = f.read_text().strip()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> Optional[int]:
        """SIGTERM and wait; returns the exit code (None if it never ran)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def up_expect_failure(self, env: Optional[dict] = None, timeout: float = 20) -> subprocess.CompletedProcess:
        """Runs `steward up` that is expected to refuse to start; fails if it starts serving."""
        assert not self.running
        self.port = free_port()
        e = self.server_env()
        e.update({k: str(v) for k, v in (env or {}).items()})
        try:
            r = subprocess.run(
                self.up_command(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                env=e, cwd=str(self.workdir), timeout=timeout,
            )
        except subprocess.TimeoutExpired as ex:
            raise AssertionError(f"steward up kept running (it should have refused to start): {ex.stderr}")
        return r

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        try:
            if self.running:
                self.stop()
        finally:
            self.kill()
            if self.pg is not None:
                self.pg.drop()

    # -- logs --------------------------------------------------------------------------------

    def stdout_bytes(self, n: Optional[int] = None) -> bytes:
        ns = [n] if n else range(1, self.starts + 1)
        return b"".join(self.log_path("stdout", i).read_bytes() for i in ns if self.log_path("stdout", i).exists())

    def stderr_bytes(self, n: Optional[int] = None) -> bytes:
        ns = [n] if n else range(1, self.starts + 1)
        return b"".join(self.log_path("stderr", i).read_bytes() for i in ns if self.log_path("stderr", i).exists())

    def describe_logs(self, tail: int = 4000) -> str:
        out = self.stdout_bytes().decode(errors="replace")[-tail:]
        err = self.stderr_bytes().decode(errors="replace")[-tail:]
        return f"--- stdout ---\n{out}\n--- stderr ---\n{err}"

    # -- API and CLI -------------------------------------------------------------------------

    def api(self, method: str, path: str, token=DEFAULT, headers: Optional[dict] = None, timeout: float = 30, **kw) -> requests.Response:
        h = dict(headers or {})
        tok = self.token if token is DEFAULT else token
        if tok is not None:
            h["X-Vault-Token"] = tok
        return self.http.request(method, self.url + path, headers=h, timeout=timeout, **kw)

    def write(self, env: str, path: str, value, token=DEFAULT, **extra) -> requests.Response:
        body = {"value": value}
        body.update(extra)
        return self.api("PUT", f"/v1/{env}/data/{path}", token=token, json=body)

    def read(self, env: str, path: str, version: Optional[int] = None, token=DEFAULT) -> requests.Response:
        q = f"?version={version}" if version else ""
        return self.api("GET", f"/v1/{env}/data/{path}{q}", token=token)

    def audit_lines(self) -> list:
        r = self.api("GET", "/v1/sys/audit/export?limit=10000")
        assert r.status_code == 200, r.text
        return [json.loads(l) for l in r.text.splitlines() if l.strip()]

    def cli_env(self, token=DEFAULT, addr: Optional[str] = None, env: Optional[dict] = None) -> dict:
        tok = self.token if token is DEFAULT else token
        extra = {"STEWARD_ADDR": addr or self.url, "STEWARD_TOKEN": tok}
        extra.update(env or {})
        return clean_env(extra)

    def cli(self, *args: str, input=None, token=DEFAULT, addr: Optional[str] = None, env: Optional[dict] = None,
            timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
        return run_cli(
            list(args),
            input=input,
            env=self.cli_env(token, addr, env),
            timeout=timeout,
            cwd=cwd or self.cli_cwd,
        )


def run_cli(args: Sequence[str], input=None, env: Optional[dict] = None, timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    """Runs the steward binary; stdout/stderr as text."""
    return subprocess.run(
        [STEWARD_BIN, *args],
        input=input,
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        timeout=timeout,
        cwd=cwd,
    )


class ServerPool:
    """Creates servers (with their PostgreSQL databases) and cleans all of them up."""

    def __init__(self, base: pathlib.Path) -> None:
        self.base = pathlib.Path(base)
        self.servers: list = []
        self.n = 0

    def new(self, store: str = "sqlite", start: bool = True, **kw) -> StewardServer:
        import pytest  # local: this module is also usable outside pytest

        self.n += 1
        workdir = self.base / f"server{self.n}-{store}"
        pg = None
        store_url = None
        if store == "postgres":
            if not postgres_available():
                pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
            pg = PgDatabase()
            store_url = pg.url
        elif store != "sqlite":
            raise ValueError(store)
        s = StewardServer(workdir, store_url=store_url, pg=pg, **kw)
        self.servers.append(s)
        if start:
            s.start()
        return s

    def close(self) -> None:
        errors = []
        for s in self.servers:
            try:
                s.close()
            except Exception as e:  # keep cleaning up the others
                errors.append(e)
        if errors:
            raise errors[0]


# --------------------------------------------------------------------------------------------
# The dashboard


def make_token(s, rules: list, name: str) -> str:
    """A one-hour token whose only policy (named `name`) has `rules`."""
    r = s.api("PUT", f"/v1/sys/policies/{name}", json={"rules": rules})
    assert r.status_code in (200, 204), r.text
    r = s.api("POST", "/v1/auth/token/create", json={"policies": [name], "ttl": "1h", "display_name": name})
    assert r.status_code == 200, r.text
    return r.json()["auth"]["client_token"]


def signed_in(s, token: str):
    """A requests session signed in to the dashboard, and the sign-in answer."""
    http = requests.Session()
    r = http.post(s.url + "/ui/sign-in", data={"token": token, "next": "/ui/"}, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"] == "/ui/", (r.status_code, r.text[:500])
    return http, r
