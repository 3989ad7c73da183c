"""Server lifecycle: first start and restarts, Shamir sealing, key file problems, configuration
checks, graceful shutdown, crash recovery, and the operational endpoints."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import stat
import threading
import time
import uuid
from collections import defaultdict

import pytest
import requests

from steward_testlib import clean_env, http_session, run_cli

STORES = ["sqlite", "postgres"]


def mode_of(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# --------------------------------------------------------------------------------------------
# (a) first start and restart


@pytest.mark.parametrize("store", STORES)
def test_first_start_creates_key_and_token_then_restart_keeps_data(server_factory, store):
    s = server_factory.new(store)
    key, token_file = s.data / "root.key", s.data / "root-token"
    assert key.exists() and token_file.exists()
    assert mode_of(key) == 0o600
    assert mode_of(token_file) == 0o600
    assert mode_of(s.data) & 0o077 == 0, oct(mode_of(s.data))

    token = token_file.read_text().strip()
    assert token and token == s.token
    first_out = s.stdout_bytes(1).decode()
    assert token in first_out
    assert "Root token" in first_out
    # The token is not in the log stream.
    assert token not in s.stderr_bytes(1).decode()

    assert s.write("prod", "lifecycle/kept", "still-here").status_code == 200
    assert s.stop() == 0

    key_before = key.read_bytes()
    s.start()
    second_out = s.stdout_bytes(2).decode()
    assert "Root token" not in second_out
    assert token not in second_out
    assert not re.search(r"stw\.[A-Za-z0-9_-]{20,}", second_out + s.stderr_bytes(2).decode())
    # Same key, same token.
    assert key.read_bytes() == key_before
    assert token_file.read_text().strip() == token
    r = s.read("prod", "lifecycle/kept", token=token)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["data"] == {"value": "still-here"}
    if store == "sqlite":
        # The embedded store has one owner: a second server on the same directory is refused.
        second = server_factory.new("sqlite", start=False)
        second.data = s.data
        r = second.up_expect_failure()
        assert r.returncode != 0
        assert str(s.data) in r.stderr, r.stderr
        assert s.http.get(s.url + "/v1/sys/health").status_code == 200

    # `steward init` on an initialized store refuses.
    assert s.stop() == 0
    r = run_cli(["init", "--data", str(s.data)] + (["--store", s.store_url] if s.store_url else []),
                env=clean_env(), cwd=s.cli_cwd)
    assert r.returncode != 0
    assert "already initialized" in r.stderr, r.stderr
    assert token_file.read_text().strip() == token
    assert key.read_bytes() == key_before


# --------------------------------------------------------------------------------------------
# (b) Shamir shares


def parse_init(stdout: str):
    shares = re.findall(r"share \d+: (\S+)", stdout)
    tokens = re.findall(r"^\s+(stw\.\S+)\s*$", stdout, re.M)
    return shares, tokens


def mistype(share: str) -> str:
    # Change one character in the middle of the encoded share.
    i = len(share) // 2
    c = share[i]
    return share[:i] + ("B" if c != "B" else "C") + share[i + 1 :]


@pytest.mark.parametrize("store", STORES)
def test_shamir_init_sealed_start_and_unseal(server_factory, store):
    s = server_factory.new(store, start=False)
    args = ["init", "--shares", "5", "--threshold", "3", "--data", str(s.data)]
    if s.store_url:
        args += ["--store", s.store_url]
    r = run_cli(args, env=clean_env(), cwd=s.cli_cwd)
    assert r.returncode == 0, r.stderr
    shares, tokens = parse_init(r.stdout)
    assert len(shares) == 5 and len(set(shares)) == 5, r.stdout
    assert len(tokens) == 1, r.stdout
    root = tokens[0]
    assert (s.data / "root-token").read_text().strip() == root
    assert not (s.data / "root.key").exists()
    # Shares are shown, never stored.
    for f in s.data.iterdir():
        for sh in shares:
            assert sh.encode() not in f.read_bytes(), f

    s.start(expect=(503,))
    h = s.http.get(s.url + "/v1/sys/health")
    assert h.status_code == 503
    assert h.json()["sealed"] is True and h.json()["initialized"] is True
    r = s.read("dev", "x", token=root)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "sealed"
    r = s.write("dev", "x", "v", token=root)
    assert r.status_code == 503 and r.json()["error"]["code"] == "sealed"
    assert s.http.get(s.url + "/readyz").status_code == 503

    # A mistyped share: a clear error, still sealed.
    r = s.cli("unseal", token=None, input=mistype(shares[0]) + "\n")
    assert r.returncode != 0
    assert "share" in r.stderr and ("mistyped" in r.stderr or "invalid" in r.stderr), r.stderr
    assert s.http.get(s.url + "/v1/sys/health").status_code == 503

    # Two shares are not enough.
    r = s.cli("unseal", token=None, input=f"{shares[0]}\n{shares[3]}\n")
    assert r.returncode == 0, r.stderr
    assert "still sealed" in r.stdout and "2" in r.stdout
    assert s.http.get(s.url + "/v1/sys/health").status_code == 503
    assert s.read("dev", "x", token=root).status_code == 503

    # The third one unseals.
    r = s.cli("unseal", token=None, input=f"{shares[4]}\n")
    assert r.returncode == 0, r.stderr
    assert "unsealed" in r.stdout and "still" not in r.stdout
    assert s.http.get(s.url + "/v1/sys/health").status_code == 200
    assert s.http.get(s.url + "/readyz").status_code == 200
    assert s.write("dev", "shamir/x", "after-unseal", token=root).status_code == 200
    assert s.read("dev", "shamir/x", token=root).json()["data"]["data"] == {"value": "after-unseal"}
    assert s.read("dev", "missing", token=root).status_code == 404

    # Restart: sealed again; another three shares open it and the data is there.
    assert s.stop() == 0
    s.start(expect=(503,))
    r = s.cli("unseal", token=None, input="\n".join([shares[1], shares[2], shares[3]]) + "\n")
    assert r.returncode == 0 and "unsealed" in r.stdout, (r.stdout, r.stderr)
    assert s.read("dev", "shamir/x", token=root).json()["data"]["data"] == {"value": "after-unseal"}


def test_sealed_readyz_does_not_claim_a_timeout(server_factory):
    s = server_factory.new("sqlite", start=False)
    r = run_cli(["init", "--shares", "2", "--threshold", "2", "--data", str(s.data)], env=clean_env(), cwd=s.cli_cwd)
    assert r.returncode == 0, r.stderr
    s.start(expect=(503,))
    r = s.http.get(s.url + "/readyz")
    assert r.status_code == 503
    # (Once rewritten by the error middleware into a JSON "timeout" error.)
    assert "timeout" not in r.text and "request_timeout" not in r.text, r.text
    assert "sealed" in r.text


# --------------------------------------------------------------------------------------------
# (c) the root key


@pytest.fixture
def stopped_keyed_server(server_factory):
    """An initialized (key file) sqlite store with one secret, stopped."""
    s = server_factory.new("sqlite")
    assert s.write("prod", "keys/kept", "key-test-value").status_code == 200
    assert s.stop() == 0
    return s


def test_corrupt_key_file_is_refused(stopped_keyed_server):
    s = stopped_keyed_server
    key = s.data / "root.key"
    key.write_bytes(b"this is garbage, not a key\n")
    os.chmod(key, 0o600)
    r = s.up_expect_failure()
    assert r.returncode != 0
    assert str(key) in r.stderr, r.stderr
    assert "corrupt" in r.stderr or "invalid" in r.stderr


def test_truncated_key_file_is_refused(stopped_keyed_server):
    s = stopped_keyed_server
    key = s.data / "root.key"
    key.write_bytes(key.read_bytes()[:30])
    r = s.up_expect_failure()
    assert r.returncode != 0
    assert str(key) in r.stderr, r.stderr


def test_missing_key_file_is_refused(stopped_keyed_server):
    s = stopped_keyed_server
    key = s.data / "root.key"
    key.unlink()
    r = s.up_expect_failure()
    assert r.returncode != 0
    assert str(key) in r.stderr, r.stderr
    # It must not quietly make a new key for an initialized store.
    assert not key.exists()


def test_world_readable_key_file_is_refused(stopped_keyed_server):
    s = stopped_keyed_server
    key = s.data / "root.key"
    os.chmod(key, 0o644)
    r = s.up_expect_failure()
    assert r.returncode != 0
    assert str(key) in r.stderr, r.stderr
    assert "chmod 600" in r.stderr, r.stderr
    assert mode_of(key) == 0o644  # it tells you; it does not change it for you
    os.chmod(key, 0o600)
    s.start()
    assert s.read("prod", "keys/kept").json()["data"]["data"] == {"value": "key-test-value"}


def test_wrong_key_is_refused(stopped_keyed_server):
    s = stopped_keyed_server
    wrong = base64.b64encode(os.urandom(32)).decode()
    r = s.up_expect_failure(env={"STEWARD_ROOT_KEY": wrong})
    assert r.returncode != 0
    assert r.stderr.strip()


def test_root_key_from_environment(stopped_keyed_server):
    s = stopped_keyed_server
    key = s.data / "root.key"
    line = key.read_text().strip()
    b64 = line.split(":", 1)[1] if ":" in line else line
    assert len(base64.b64decode(b64)) == 32
    key.rename(s.workdir / "root.key.moved")
    s.extra_env["STEWARD_ROOT_KEY"] = b64
    s.start()
    assert s.read("prod", "keys/kept").json()["data"]["data"] == {"value": "key-test-value"}
    assert not key.exists()
    # The key is not logged.
    assert b64.encode() not in s.stderr_bytes() + s.stdout_bytes()
    assert s.stop() == 0
    # A bad value in the variable is refused and named.
    s.extra_env["STEWARD_ROOT_KEY"] = "not-a-key"
    r = s.up_expect_failure()
    assert r.returncode != 0 and "STEWARD_ROOT_KEY" in r.stderr


# --------------------------------------------------------------------------------------------
# (d) steward config check


def test_config_check(tmp_path):
    bad = (
        "# Steward test configuration\n"
        "[server]\n"
        'listen = "127.0.0.1:9999"\n'
        "\n"
        "[secrets]\n"
        'environments = ["dev", "prod"]\n'
        "max_versoins = 3\n"
    )
    (tmp_path / "steward.toml").write_text(bad)
    # ./steward.toml is picked up.
    r = run_cli(["config", "check"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "steward.toml:7" in r.stderr, r.stderr
    assert "max_versoins" in r.stderr
    # The same via --config and STEWARD_CONFIG.
    r = run_cli(["config", "check", "--config", str(tmp_path / "steward.toml")], env=clean_env(), cwd="/")
    assert r.returncode == 3 and "steward.toml:7" in r.stderr and "max_versoins" in r.stderr
    r = run_cli(["config", "check"], env=clean_env({"STEWARD_CONFIG": str(tmp_path / "steward.toml")}), cwd="/")
    assert r.returncode == 3 and "max_versoins" in r.stderr
    # Other commands refuse the file too.
    r = run_cli(["up", "--data", str(tmp_path / "data")], env=clean_env(), cwd=tmp_path, timeout=20)
    assert r.returncode == 3, r.stderr
    assert not (tmp_path / "data").exists()

    # A bad value and an unknown section, located.
    (tmp_path / "steward.toml").write_text('[server]\nrequest_timeout = "ten"\n')
    r = run_cli(["config", "check"], env=clean_env(), cwd=tmp_path)
    # (The message names the line and the bad value; it does not name the key.)
    assert r.returncode == 3 and "steward.toml:2" in r.stderr and '"ten"' in r.stderr, r.stderr
    (tmp_path / "steward.toml").write_text('[server]\nlisten = "127.0.0.1:9999"\n\n[sever]\nx = 1\n')
    r = run_cli(["config", "check"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 3 and "steward.toml:4" in r.stderr and "sever" in r.stderr, r.stderr

    good = (
        "[server]\n"
        'listen = "127.0.0.1:9999"\n'
        'shutdown_grace = "5s"\n'
        "[secrets]\n"
        'environments = ["dev", "prod"]\n'
        'default_environment = "prod"\n'
        "max_versions = 3\n"
        "[log]\n"
        'level = "debug"\n'
    )
    (tmp_path / "steward.toml").write_text(good)
    r = run_cli(["config", "check"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    # No file at all: the defaults, ok.
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli(["config", "check"], env=clean_env(), cwd=empty)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------------------------
# (e) SIGTERM with requests in flight

GRACE = 15
SLOW_READ_SECONDS = 0.1  # target time of one read alone; 50 of them take a few seconds


MAX_FANOUT = 1000  # Steward bounds substitutions per request (refs::MAX_SUBSTITUTIONS = 1024)


def slow_fan(s, base: str, fanout: int) -> float:
    """Writes prod/slow/fan: an object of `fanout` references to distinct secrets
    prod/slow/b<i> (each read and decrypted on every read of the fan: Steward memoizes only
    repeats within one request, so distinct targets keep reads slow). Returns the time one
    read takes."""
    from concurrent.futures import ThreadPoolExecutor

    def put(i):
        path = f"slow/b{i}"
        if s.read("prod", path).status_code != 200:
            assert s.write("prod", path, f"{base}-{i}").status_code == 200

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(fanout)))
    fan = {f"f{i}": f"${{secret:prod/slow/b{i}}}" for i in range(fanout)}
    assert s.write("prod", "slow/fan", fan).status_code == 200
    times = []
    for _ in range(3):
        t = time.monotonic()
        r = s.read("prod", "slow/fan")
        times.append(time.monotonic() - t)
        assert r.status_code == 200, r.text
    return sorted(times)[1]


def tcp_server_sockets(port: int):
    """(established connections to 127.0.0.1:port, length of its listener's accept queue), from
    /proc/net/tcp (for a LISTEN socket, rx_queue is the accept backlog)."""
    established = queued = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, state, queues = parts[1], parts[3], parts[4]
            if int(local.split(":")[1], 16) != port:
                continue
            if state == "01":
                established += 1
            elif state == "0A":
                queued += int(queues.split(":")[1], 16)
    return established, queued


@pytest.mark.parametrize("store", STORES)
def test_sigterm_finishes_in_flight_requests(server_factory, store):
    s = server_factory.new(store, config_text=f'[server]\nshutdown_grace = "{GRACE}s"\n')
    base = f"slow-base-{uuid.uuid4().hex[:8]}"
    assert s.write("prod", "slow/base", base).status_code == 200
    # Calibrate, so a faster binary (release build via STEWARD_BIN) is still slow enough.
    fanout = 400
    one = slow_fan(s, base, fanout)
    if not 0.7 < one / SLOW_READ_SECONDS < 1.5:
        fanout = max(100, min(MAX_FANOUT, int(fanout * SLOW_READ_SECONDS / max(one, 1e-4))))
        one = slow_fan(s, base, fanout)
    expected = {f"f{i}": f"{base}-{i}" for i in range(fanout)}

    n = 50
    results: list = [None] * n
    barrier = threading.Barrier(n + 1)

    def reader(i: int) -> None:
        sess = http_session()
        barrier.wait()
        try:
            r = sess.get(s.url + "/v1/prod/data/slow/fan",
                         headers={"X-Vault-Token": s.token, "X-Request-Id": f"sigterm-reader-{i:02d}"}, timeout=60)
            try:
                body = r.json()
            except ValueError:
                body = None
            results[i] = ("response", r.status_code, body, time.monotonic())
        except requests.ConnectionError as e:
            refused = isinstance(getattr(e, "__context__", None), ConnectionRefusedError) or "refused" in str(e).lower()
            results[i] = ("refused" if refused else "broken", repr(e), None, time.monotonic())
        except requests.RequestException as e:
            results[i] = ("broken", repr(e), None, time.monotonic())

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(n)]
    s.http.close()  # so the only connections to the server are the readers'
    for t in threads:
        t.start()
    barrier.wait()
    # SIGTERM only once the server has accept()ed all 50 connections (none left in the kernel's
    # accept queue, which a closing listener resets): from then on every one is in flight.
    deadline = time.monotonic() + 15
    seen = []
    while time.monotonic() < deadline:
        established, queued = tcp_server_sockets(s.port)
        finished = sum(1 for r in results if r is not None)
        if not seen or seen[-1][1:] != (established, queued, finished):
            seen.append((round(time.monotonic() - deadline + 15, 3), established, queued, finished))
        if established + finished >= n and queued == 0:
            break
        time.sleep(0.005)
    else:
        pytest.fail(f"the server did not accept {n} connections in time: {seen}")
    t_term = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)

    # Once the server has taken the signal in, new connections are no longer accepted.
    deadline = time.monotonic() + GRACE
    while b"shutting down" not in s.stderr_bytes() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert b"shutting down" in s.stderr_bytes(), s.describe_logs()
    time.sleep(0.2)
    if s.proc.poll() is None:
        with pytest.raises(requests.ConnectionError):
            http_session().get(s.url + "/livez", timeout=10)

    rc = s.proc.wait(timeout=GRACE + 10)
    elapsed = time.monotonic() - t_term
    for t in threads:
        t.join(timeout=30)

    assert rc == 0, s.describe_logs()
    assert elapsed < GRACE + 1, f"exit took {elapsed:.1f}s, grace is {GRACE}s"
    kinds = defaultdict(int)
    for res in results:
        assert res is not None
        kinds[res[0]] += 1
    for res in results:
        if res[0] == "response":
            assert res[1] == 200, res
            assert res[2]["data"]["data"] == expected  # complete, not truncated
    log = s.stderr_bytes().decode(errors="replace")
    assert "shutting down" in log
    assert "grace period over" not in log
    # The workload really was in flight when the signal came, and was answered after it.
    after_term = sum(1 for res in results if res[0] == "response" and res[3] > t_term)
    print(f"sigterm: fanout {fanout}, one read {one:.3f}s, {dict(kinds)}, "
          f"{after_term} answered after SIGTERM, exit after {elapsed:.2f}s")
    broken = [i for i, res in enumerate(results) if res[0] != "response"]
    assert after_term + len(broken) >= 10, (
        f"only {after_term} responses came after SIGTERM: the workload was not slow enough"
    )
    # Every request the server had started on finished with a complete answer. Requests already
    # sent are also served during the 500 ms lame-duck period (crates/steward/src/server.rs); one
    # a client sends on a kept-alive connection just as it is closed can still be reset (HTTP/1.1
    # keep-alive race; clients retry idempotent requests), so those are counted, not failed.
    handled = [i for i in broken if f"sigterm-reader-{i:02d}" in log]
    assert not handled, (
        f"{len(handled)} requests the server had started on were cut off: "
        f"{results[handled[0]][1] if handled else ''}"
    )
    assert len(broken) <= n // 10, f"{len(broken)} of {n} requests were reset ({dict(kinds)})"


# --------------------------------------------------------------------------------------------
# (f) kill -9 during a burst of writes


@pytest.mark.parametrize("store", STORES)
def test_kill_9_during_writes_then_restart(server_factory, store):
    s = server_factory.new(store, config_text="[secrets]\nmax_versions = 0\n")
    paths = [f"burst/p{i}" for i in range(6)]
    successes = []  # (path, version, value)
    lock = threading.Lock()
    stop = threading.Event()
    url, token = s.url, s.token

    def writer(w: int) -> None:
        sess = http_session()
        i = 0
        while not stop.is_set():
            path = paths[(w + i) % len(paths)]
            value = f"w{w}-{i}-{uuid.uuid4().hex[:6]}"
            i += 1
            try:
                r = sess.put(f"{url}/v1/prod/data/{path}", json={"value": value},
                             headers={"X-Vault-Token": token}, timeout=10)
            except requests.RequestException:
                return  # the server died under us
            if r.status_code == 200:
                with lock:
                    successes.append((path, r.json()["data"]["version"], value))
            else:
                assert r.status_code in (503,), r.text

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(successes) < 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    s.kill()  # SIGKILL mid-burst
    stop.set()
    for t in threads:
        t.join(timeout=15)
    assert len(successes) >= 60, "the burst never got going"

    s.start()
    r = s.cli("audit", "verify")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "intact" in r.stdout

    seen = set()
    for path, version, value in successes:
        assert (path, version) not in seen, f"version {version} of {path} was handed out twice"
        seen.add((path, version))
    for path, version, value in successes:
        rr = s.read("prod", path, version=version)
        assert rr.status_code == 200, rr.text
        assert rr.json()["data"]["data"] == {"value": value}, (path, version)
    # Every version that exists is whole and numbered without gaps.
    for path in paths:
        meta = s.api("GET", f"/v1/prod/metadata/{path}").json()["data"]
        nums = sorted(int(v) for v in meta["versions"])
        assert nums == list(range(1, meta["current_version"] + 1))
        acked = [v for p, v, _ in successes if p == path]
        assert meta["current_version"] >= max(acked, default=0)
        for v in nums:
            assert s.read("prod", path, version=v).status_code == 200
    # And it keeps working.
    r = s.write("prod", paths[0], "after-restart")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["version"] == s.api("GET", f"/v1/prod/metadata/{paths[0]}").json()["data"]["current_version"]


# --------------------------------------------------------------------------------------------
# (g) operational endpoints


def test_openapi_metrics_and_probes(server_factory):
    s = server_factory.new("sqlite")
    r = s.http.get(s.url + "/v1/openapi.json")
    assert r.status_code == 200
    doc = json.loads(r.text)
    assert str(doc["openapi"]).startswith("3.1")
    assert doc["paths"], "no paths documented"
    assert any("/v1/sys/health" in p for p in doc["paths"])

    s.read("dev", "nothing")  # a 404 to count
    m = s.http.get(s.url + "/metrics")
    assert m.status_code == 200
    assert m.headers["content-type"].startswith("text/plain")
    assert "steward_http_requests_total" in m.text
    assert re.search(r'^steward_http_requests_total\{.*status="404".*\} \d+$', m.text, re.M), m.text[:2000]
    assert "steward_http_request_duration_seconds" in m.text
    assert re.search(r"^steward_sealed 0$", m.text, re.M), m.text[-1000:]

    r = s.http.get(s.url + "/livez")
    assert r.status_code == 200
    r = s.http.get(s.url + "/readyz")
    assert r.status_code == 200
    # Probes need no token and leave no audit entries.
    before = len(s.audit_lines())
    for p in ("/livez", "/readyz", "/metrics", "/v1/sys/health", "/v1/openapi.json"):
        assert s.http.get(s.url + p).status_code == 200
    assert len(s.audit_lines()) == before + 1  # only the first export itself


# --------------------------------------------------------------------------------------------
# Tampering with the store is detected (audit chain, ciphertexts)


def test_tampering_is_detected(server_factory):
    import sqlite3

    s = server_factory.new("sqlite")
    for i in range(3):
        assert s.write("prod", f"tamper/s{i}", f"tamper-value-{i}").status_code == 200
    assert s.write("prod", "tamper/s0", "tamper-value-0b").status_code == 200
    r = s.cli("audit", "verify")
    assert r.returncode == 0 and "intact" in r.stdout, (r.stdout, r.stderr)
    assert s.stop() == 0
    db = s.data / "steward.db"

    def sql(q, *args):
        con = sqlite3.connect(db)
        try:
            with con:
                return con.execute(q, args).fetchall()
        finally:
            con.close()

    def verify():
        s.start()
        try:
            return s.cli("audit", "verify")
        finally:
            assert s.stop() == 0

    # 1. An edited entry.
    seq, entry = sql("SELECT seq, entry FROM audit_log WHERE entry LIKE '%secret.write%' ORDER BY seq LIMIT 1")[0]
    forged = entry.replace('"outcome":"ok"', '"outcome":"denied"')
    assert forged != entry
    sql("UPDATE audit_log SET entry = ? WHERE seq = ?", forged, seq)
    r = verify()
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "BROKEN" in r.stdout and str(seq) in r.stdout, r.stdout
    sql("UPDATE audit_log SET entry = ? WHERE seq = ?", entry, seq)
    r = verify()
    assert r.returncode == 0 and "intact" in r.stdout, (r.stdout, r.stderr)

    # 2. A deleted entry in the middle.
    row = sql("SELECT seq, entry, hash FROM audit_log WHERE seq = ?", seq)[0]
    sql("DELETE FROM audit_log WHERE seq = ?", seq)
    r = verify()
    assert r.returncode == 1 and "BROKEN" in r.stdout, (r.stdout, r.stderr)
    sql("INSERT INTO audit_log (seq, entry, hash) VALUES (?, ?, ?)", *row)

    # 3. The newest entries cut off.
    r = verify()
    assert r.returncode == 0, (r.stdout, r.stderr)
    last = sql("SELECT max(seq) FROM audit_log")[0][0]
    sql("DELETE FROM audit_log WHERE seq > ?", last - 2)
    r = verify()
    assert r.returncode == 1 and "BROKEN" in r.stdout, (r.stdout, r.stderr)

    # 4. A ciphertext moved to another secret, or to another version, does not decrypt.
    (env1,) = sql("SELECT envelope FROM secret_versions WHERE env='prod' AND path='tamper/s1' AND version=1")[0]
    sql("UPDATE secret_versions SET envelope = ? WHERE env='prod' AND path='tamper/s2' AND version=1", env1)
    (v2,) = sql("SELECT envelope FROM secret_versions WHERE env='prod' AND path='tamper/s0' AND version=2")[0]
    sql("UPDATE secret_versions SET envelope = ? WHERE env='prod' AND path='tamper/s0' AND version=1", v2)
    s.start()
    for path, version in (("tamper/s2", 1), ("tamper/s0", 1)):
        r = s.read("prod", path, version=version)
        assert r.status_code == 500, r.text
        assert "tamper-value" not in r.text
        assert r.json()["error"]["request_id"]
    assert s.read("prod", "tamper/s1").json()["data"]["data"] == {"value": "tamper-value-1"}
    assert s.read("prod", "tamper/s0", version=2).json()["data"]["data"] == {"value": "tamper-value-0b"}
    assert "tamper" in s.stderr_bytes(s.starts).decode()  # the log says what is wrong


# --------------------------------------------------------------------------------------------
# Key rotation survives a restart; two replicas share one PostgreSQL store


@pytest.mark.parametrize("store", STORES)
def test_key_rotation_then_restart(server_factory, store):
    s = server_factory.new(store)
    for i in range(5):
        assert s.write("prod", f"rot/s{i}", f"before-rotation-{i}").status_code == 200
    before = s.api("GET", "/v1/sys/keys/status").json()["data"]
    r = s.api("POST", "/v1/sys/keys/rotate")
    assert r.status_code == 200, r.text
    new_id = r.json()["data"]["active_key_id"]
    assert new_id != before["active_key_id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = s.api("GET", "/v1/sys/keys/status").json()["data"]
        if st["pending_rewrap"] == 0:
            break
        time.sleep(0.1)
    assert st["pending_rewrap"] == 0, st
    assert st["active_key_id"] == new_id
    assert s.write("prod", "rot/after", "after-rotation").status_code == 200
    r = s.cli("keys", "status", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["active_key_id"] == new_id, r.stderr

    assert s.stop() == 0
    s.start()
    for i in range(5):
        assert s.read("prod", f"rot/s{i}").json()["data"]["data"] == {"value": f"before-rotation-{i}"}
    assert s.read("prod", "rot/after").json()["data"]["data"] == {"value": "after-rotation"}
    r = s.cli("audit", "verify")
    assert r.returncode == 0 and "intact" in r.stdout, (r.stdout, r.stderr)


def test_two_replicas_share_a_postgres_store(server_factory):
    a = server_factory.new("postgres")
    b = server_factory.new("postgres", start=False)
    b.pg.drop()  # b uses a's database instead of its own
    b.store_url, b.pg = a.store_url, None
    b.data.mkdir(mode=0o700)
    (b.data / "root.key").write_bytes((a.data / "root.key").read_bytes())
    os.chmod(b.data / "root.key", 0o600)
    b.start()
    b.token = a.token
    assert not (b.data / "root-token").exists()  # b did not initialize anything

    # Writes on one are reads on the other, with one version sequence.
    assert a.write("prod", "rep/x", "from-a").status_code == 200
    assert b.read("prod", "rep/x").json()["data"]["data"] == {"value": "from-a"}
    r = b.write("prod", "rep/x", "from-b")
    assert r.json()["data"]["version"] == 2
    assert a.read("prod", "rep/x").json()["data"]["data"] == {"value": "from-b"}
    r = a.api("PUT", "/v1/prod/data/rep/x", json={"value": "stale", "options": {"cas": 1}})
    assert r.status_code == 409

    # A revocation through one replica is honoured by the other (within its token cache time).
    auth = a.api("POST", "/v1/auth/token/create", json={"policies": [], "ttl": "1h"}).json()["auth"]
    assert b.api("GET", "/v1/auth/token/lookup-self", token=auth["client_token"]).status_code == 200
    assert a.api("POST", "/v1/auth/token/revoke-accessor", json={"accessor": auth["accessor"]}).status_code == 204
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = b.api("GET", "/v1/auth/token/lookup-self", token=auth["client_token"])
        if r.status_code == 403:
            break
        time.sleep(0.1)
    assert r.status_code == 403 and r.json()["error"]["code"] == "token_revoked", r.text

    # A key rotated on one replica: the other reads the new envelopes and writes with the new key.
    r = a.api("POST", "/v1/sys/keys/rotate")
    assert r.status_code == 200, r.text
    new_id = r.json()["data"]["active_key_id"]
    assert a.write("prod", "rep/after-rotation", "sealed-with-new-key").status_code == 200
    assert b.read("prod", "rep/after-rotation").json()["data"]["data"] == {"value": "sealed-with-new-key"}
    assert b.write("prod", "rep/from-b-after", "b-after").status_code == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if a.api("GET", "/v1/sys/keys/status").json()["data"]["pending_rewrap"] == 0:
            break
        time.sleep(0.1)
    assert b.api("GET", "/v1/sys/keys/status").json()["data"]["active_key_id"] == new_id
    for srv in (a, b):
        for p, v in (("rep/x", "from-b"), ("rep/after-rotation", "sealed-with-new-key"), ("rep/from-b-after", "b-after")):
            assert srv.read("prod", p).json()["data"]["data"] == {"value": v}
    # One audit chain, intact, written by both.
    r = b.cli("audit", "verify")
    assert r.returncode == 0 and "intact" in r.stdout, (r.stdout, r.stderr)
    b.stop()
    a.stop()


# --------------------------------------------------------------------------------------------
# probes when the database goes away


def test_probes_report_a_lost_database(server_factory):
    s = server_factory.new("postgres")
    assert requests.get(s.url + "/readyz", timeout=10).status_code == 200
    h = requests.get(s.url + "/v1/sys/health", timeout=10)
    assert h.status_code == 200 and h.json()["storage_ok"] is True, h.text
    s.pg.drop()  # DROP DATABASE ... WITH (FORCE): every connection of the server dies
    r = requests.get(s.url + "/readyz", timeout=30)
    assert r.status_code == 503, r.text
    h = requests.get(s.url + "/v1/sys/health", timeout=30)
    assert h.status_code == 503, h.text
    body = h.json()
    assert body["storage_ok"] is False and body["initialized"] is True, body
    r = s.read("prod", "anything")
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
