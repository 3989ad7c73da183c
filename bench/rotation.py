#!/usr/bin/env python3
"""Rotation benchmark, in one run on this machine, loopback only, time-bounded.

1. Rotation latency of the `postgres` rotator (strategy `alternating`) against a throwaway
   PostgreSQL cluster that asks for passwords (scram-sha-256): --rotations manual rotations, one
   at a time, each timed from `POST /v1/sys/rotation/rotate/dev/bench/pg-app` to the moment the
   client receives that run's `rotation.finished` event from a long poll on
   `/v1/sys/events?after=CURSOR&wait=10s` (woken by the server's commit, so no polling interval
   is added). Config: retire "consumers", grace "0s", so the previous credential is revoked
   right after finish; the next rotation starts only after that (`rotation.retired`, state
   idle), so every run is create/set/test/finish + revoke (the revoke is timed separately).
   The floor, interleaved with Steward's runs: `ALTER ROLE ... PASSWORD` on an open admin
   connection plus a fresh login (and SELECT 1) as that user, done directly with psycopg.
2. Read latency of `GET /v1/dev/data/bench/read` (wrk -t1 -c16 --latency, --duration s) on a
   server with `[rotation] concurrency = 4, jitter = "2s"`, twice: idle, and while --due
   secrets with a `random` rotator all come due at the same `schedule.next_at`. SQLite store;
   with --postgres also a PostgreSQL store (a fresh database on 127.0.0.1:5432, dropped after).

Usage: python3 bench/rotation.py [--rotations 100] [--due 1000] [--duration 10]
                                 [--skip-pg-rotator] [--postgres]
Needs: a release build (built if missing), wrk, PostgreSQL server binaries (initdb, pg_ctl),
psycopg 3; with --postgres, PostgreSQL on 127.0.0.1:5432 trusting user postgres.
BENCH_KEEP_LOGS=DIR copies the servers' logs there (the rotator server logs at info, as JSON).
"""
import argparse, concurrent.futures, datetime, http.client, json, math, os, re, secrets, shutil, signal
import statistics, string, subprocess, sys, tempfile, threading, time, uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Cleanup, free_port, loadavg  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("STEWARD_BIN", os.path.join(ROOT, "target", "release", "steward"))
PG = "postgres://postgres@127.0.0.1:5432"
ALNUM = string.ascii_letters + string.digits
WARMUP = 3  # rotations (and floor runs) before the measured ones: pools, caches, first connections


# ---------------------------------------------------------------------------------------------
# small helpers


def rand_password(n=32):
    return "".join(secrets.choice(ALNUM) for _ in range(n))


def pct(samples, p):
    """Nearest-rank percentile."""
    s = sorted(samples)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summary(samples):
    return {"n": len(samples), "median": statistics.median(samples), "p90": pct(samples, 90),
            "p99": pct(samples, 99), "max": max(samples)}


def parse_time(s):
    """RFC 3339 from the server (nanoseconds, Z) -> epoch seconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", s)
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}").timestamp()


def rfc3339(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Api:
    """One keep-alive HTTP connection to Steward (one per thread)."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.conn = None

    def call(self, method, path, body=None, ok=(200, 202, 204), timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"X-Vault-Token": self.token, "Content-Type": "application/json"}
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        if r.status not in ok:
            raise RuntimeError(f"{method} {path} -> {r.status}: {raw[:500]!r}")
        return json.loads(raw) if raw else {}

    def close(self):
        if self.conn:
            self.conn.close()


# ---------------------------------------------------------------------------------------------
# Steward


class Steward:
    def __init__(self, tmp, name, config, store_url=None, log_level="warn", json_log=False):
        self.port = free_port()
        self.data = os.path.join(tmp, f"data-{name}")
        self.config = os.path.join(tmp, f"steward-{name}.toml")
        with open(self.config, "w") as f:
            f.write(config)
        cmd = [BIN, "up", "--listen", f"127.0.0.1:{self.port}", "--data", self.data, "--config", self.config]
        if store_url:
            cmd += ["--store", store_url]
        env = dict(os.environ, STEWARD_LOG=log_level)
        env.pop("STEWARD_TOKEN", None)
        if json_log:
            env["STEWARD_LOG_FORMAT"] = "json"
        self.log = os.path.join(tmp, f"steward-{name}.log")
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=self.logf, env=env)
        self.token = self._wait_ready()
        self.api = Api(self.port, self.token)

    def _wait_ready(self, timeout=60):
        end = time.time() + timeout
        token_file = os.path.join(self.data, "root-token")
        while time.time() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"steward exited ({self.proc.returncode}); log: {self.log}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v1/sys/health")
                if c.getresponse().status == 200 and os.path.exists(token_file):
                    c.close()
                    return open(token_file).read().strip()
                c.close()
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"steward on port {self.port} did not become healthy; log: {self.log}")

    def stop(self):
        self.api.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def all_events(api, after):
    out = []
    while True:
        d = api.call("GET", f"/v1/sys/events?after={after}&limit=1000")["data"]
        out += d["events"]
        if not d["events"] or d["next"] == after:
            return out, after
        after = d["next"]


def latest_cursor(api):
    return api.call("GET", "/v1/sys/events?after=latest&limit=1")["data"]["next"]


# ---------------------------------------------------------------------------------------------
# A throwaway PostgreSQL cluster with scram-sha-256 (the shared :5432 trusts every login)


def pg_bin():
    base = "/usr/lib/postgresql"
    found = sorted((d for d in (os.listdir(base) if os.path.isdir(base) else []) if d.isdigit()
                    and os.path.exists(os.path.join(base, d, "bin", "initdb"))), key=int)
    if not found:
        raise SystemExit("no initdb under /usr/lib/postgresql/*/bin: apt-get install -y postgresql")
    return os.path.join(base, found[-1], "bin")


def as_postgres(cmd):
    """initdb and pg_ctl refuse to run as root."""
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


class PgCluster:
    def __init__(self):
        self.bin = pg_bin()
        # Not under the bench's temp dir: that one is 0700 root and the server runs as postgres.
        self.dir = tempfile.mkdtemp(prefix="steward-bench-pg-")
        self.data = os.path.join(self.dir, "data")
        self.password = rand_password(24)
        self.port = None
        self.started = False
        pwfile = os.path.join(self.dir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        run(as_postgres([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                         "--auth=scram-sha-256", "--no-sync", "-E", "UTF8", f"--pwfile={pwfile}"]))
        os.unlink(pwfile)
        for attempt in range(3):
            self.port = free_port()
            opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c max_connections=100 -c log_connections=off")
            try:
                run(as_postgres([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-w", "-t", "60", "-o", opts,
                                 "-l", os.path.join(self.dir, "server.log"), "start"]))
                self.started = True
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def connect(self, user, password):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=user, password=password, dbname="postgres",
                               connect_timeout=5, autocommit=True)

    def admin(self):
        return self.connect("postgres", self.password)

    def stop(self):
        if self.started:
            subprocess.run(as_postgres([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop"]),
                           capture_output=True, timeout=60)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)


def run(cmd, timeout=120):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


# ---------------------------------------------------------------------------------------------
# Part 1: postgres rotator latency vs the floor


def part_rotator(args, tmp, cleanup, results):
    from psycopg import sql

    cluster = PgCluster()
    cleanup.push("PostgreSQL cluster", cluster.stop)
    sfx = uuid.uuid4().hex[:8]
    app = [f"bench_app_a_{sfx}", f"bench_app_b_{sfx}"]      # rotated by Steward
    floor = [f"bench_floor_a_{sfx}", f"bench_floor_b_{sfx}"]  # changed directly (the floor)
    app_pw = rand_password()
    admin = cluster.admin()
    for u in app + floor:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(u), sql.Literal(app_pw)))

    def drop_roles():
        if cluster.started:
            with cluster.admin() as c:
                for u in app + floor:
                    c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(u)))
    cleanup.push("roles", drop_roles)
    cleanup.push("admin connection", admin.close)

    # Default rotation settings; log level info (the default) as JSON, for the step timestamps.
    st = Steward(tmp, "rotator", "[log]\nlevel = \"info\"\n", log_level="info", json_log=True)
    cleanup.push("steward (rotator)", st.stop)
    api = st.api
    api.call("PUT", "/v1/dev/data/bench/pg-admin", {"data": {"username": "postgres", "password": cluster.password}})
    api.call("PUT", "/v1/dev/data/bench/pg-app", {"data": {"username": app[0], "password": app_pw, "host": "127.0.0.1",
                                                          "port": cluster.port, "dbname": "postgres"}})
    # grace "0s": retirement right after finish. With retire "consumers" and no consumers the
    # previous credential is otherwise revoked only at finish + min(2 s consumer check, grace),
    # by the next scheduler tick after a jitter of up to [rotation] jitter (README).
    api.call("PUT", "/v1/sys/rotation/config/dev/bench/pg-app", {
        "rotator": "postgres", "admin": "bench/pg-admin",
        "settings": {"host": "127.0.0.1", "port": cluster.port, "dbname": "postgres",
                     "strategy": "alternating", "usernames": app},
        "schedule": {"manual": True}, "retire": "consumers", "grace": "0s"})
    path = "/v1/sys/rotation/rotate/dev/bench/pg-app"

    cursor = latest_cursor(api)

    def wait_for(kind, pred, deadline):
        """Long-polls events until one of `kind` on dev/bench/pg-app matches `pred`."""
        nonlocal cursor
        while time.perf_counter() < deadline:
            d = api.call("GET", f"/v1/sys/events?after={cursor}&limit=100&wait=10s")["data"]
            now = time.perf_counter()
            wall = time.time()
            cursor = d["next"]
            for ev in d["events"]:
                if ev.get("path") != "bench/pg-app":
                    continue
                if ev["kind"] == "rotation.failed":
                    raise RuntimeError(f"rotation failed: {ev}")
                if ev["kind"] == kind and pred(ev):
                    return ev, now, wall
        raise TimeoutError(f"no {kind} event in time")

    steward_ms, cycle_ms, post_ms = [], [], []
    floor_ms, floor_fresh_ms = [], []
    runs = []
    total = args.rotations + WARMUP
    print(f"[rotator] {total} rotations ({WARMUP} warm-up), floor interleaved; PostgreSQL on :{cluster.port}", flush=True)
    expected = 0
    for i in range(total):
        # Steward: POST -> rotation.finished of this run, then wait for the revoke (idle).
        posted = time.time()
        t0 = time.perf_counter()
        api.call("POST", path, ok=(202,))
        t_post = time.perf_counter()
        fin, t1, wall1 = wait_for("rotation.finished", lambda e: True, t0 + 60)
        ret, t2, _ = wait_for("rotation.retired", lambda e: e["detail"].get("current_version") == fin["detail"]["version"], t0 + 60)
        expected += 1
        s = api.call("GET", "/v1/sys/rotation/status/dev/bench/pg-app")["data"]
        if s["state"] != "idle" or s["rotations"] != expected or s["failures"]:
            raise RuntimeError(f"unexpected status after rotation {i}: {s}")
        runs.append({"run": fin["detail"]["run"], "posted": posted, "finished": parse_time(fin["time"]), "client_seen": wall1,
                     "retired": parse_time(ret["time"])})

        # Floor A: ALTER ROLE on an open admin connection + a fresh login as that user.
        user, pw = floor[i % 2], rand_password()
        f0 = time.perf_counter()
        admin.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(pw)))
        with cluster.connect(user, pw) as c:
            c.execute("SELECT 1").fetchone()
        f1 = time.perf_counter()
        # Floor B: what the rotator does per set + test: a fresh admin connection, role lookup,
        # ALTER ROLE, then a fresh login as the user.
        user, pw = floor[(i + 1) % 2], rand_password()
        g0 = time.perf_counter()
        with cluster.admin() as a:
            assert a.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (user,)).fetchone()
            a.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(pw)))
        with cluster.connect(user, pw) as c:
            c.execute("SELECT 1").fetchone()
        g1 = time.perf_counter()

        if i >= WARMUP:
            steward_ms.append((t1 - t0) * 1000)
            post_ms.append((t_post - t0) * 1000)
            cycle_ms.append((t2 - t0) * 1000)
            floor_ms.append((f1 - f0) * 1000)
            floor_fresh_ms.append((g1 - g0) * 1000)
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{total}: steward median so far {statistics.median(steward_ms or [0]):.1f} ms", flush=True)

    # The rotation really happened: the current credential logs in, the previous one does not.
    cur = api.call("GET", "/v1/dev/data/bench/pg-app")["data"]["data"]
    prev = api.call("GET", "/v1/dev/data/bench/pg-app?label=previous")["data"]["data"]
    with cluster.connect(cur["username"], cur["password"]) as c:
        c.execute("SELECT 1")
    try:
        cluster.connect(prev["username"], prev["password"]).close()
        still_works = True
    except Exception:  # noqa: BLE001 - expected: password authentication failed
        still_works = False
    if still_works:
        raise RuntimeError("the previous credential still logs in after retirement")

    st.stop()
    # Where the time goes: step start times from the server log ("rotation step", info).
    breakdown = step_breakdown(st.log, runs[WARMUP:])
    results["rotator"] = {
        "rotations": len(steward_ms), "warmup": WARMUP,
        "steward_ms": summary(steward_ms), "post_ms": summary(post_ms),
        "with_revoke_ms": summary(cycle_ms),
        "floor_ms": summary(floor_ms), "floor_fresh_admin_ms": summary(floor_fresh_ms),
        "ratio_median": statistics.median(steward_ms) / statistics.median(floor_ms),
        "ratio_median_fresh_admin": statistics.median(steward_ms) / statistics.median(floor_fresh_ms),
        "breakdown_median_ms": breakdown,
    }


def step_breakdown(log_path, runs):
    """Median time between consecutive step starts of each run, from the JSON log."""
    steps = {}
    with open(log_path) as f:
        for line in f:
            if '"rotation step"' not in line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            steps.setdefault(e.get("run"), {})[e.get("step")] = parse_time(e["timestamp"])
    segs = {"post->create": [], "create->set": [], "set->test": [], "test->finish": [],
            "finish->finished event": [], "finished event->client": [], "finished->retired": []}
    for r in runs:
        s = steps.get(r["run"], {})
        if not all(k in s for k in ("create", "set", "test", "finish")):
            continue
        segs["post->create"].append(s["create"] - r["posted"])
        segs["create->set"].append(s["set"] - s["create"])
        segs["set->test"].append(s["test"] - s["set"])
        segs["test->finish"].append(s["finish"] - s["test"])
        segs["finish->finished event"].append(r["finished"] - s["finish"])
        segs["finished event->client"].append(r["client_seen"] - r["finished"])
        segs["finished->retired"].append(r["retired"] - r["finished"])
    return {k: round(statistics.median(v) * 1000, 2) for k, v in segs.items() if v}


# ---------------------------------------------------------------------------------------------
# Part 2: read latency idle vs under a batch of due rotations


def wrk(url, token, duration):
    cmd = ["wrk", "-t1", "-c16", f"-d{duration}s", "--latency", "--timeout", "5s", "-H", f"X-Vault-Token: {token}", url]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    t1 = time.time()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk said:\n{out}")
    lat = {p: parse_latency(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in (50, 90, 99)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(m.group(1)), "p50_ms": lat[50], "p90_ms": lat[90], "p99_ms": lat[99],
            "non2xx": int(errors.group(1)) if errors else 0, "start": t0, "end": t1}


def parse_latency(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


class MetricsSampler(threading.Thread):
    """Scrapes /metrics every `interval` s: the server-side latency histogram of the KV route,
    to see when slow reads happened inside a wrk window (buckets: 2.5, 5, 10, 25 ms ...)."""

    ROUTE = 'route="/v1/{mount}/{op}/{*path}"'

    def __init__(self, port, interval=0.25):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.samples = []  # (time, {le: cumulative count}, count)
        self.halt = threading.Event()

    def run(self):
        conn = None
        while not self.halt.is_set():
            t = time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/metrics")
                text = conn.getresponse().read().decode()
            except (OSError, http.client.HTTPException):
                conn = None
                continue
            buckets, count = {}, 0
            for line in text.splitlines():
                if self.ROUTE not in line:
                    continue
                m = re.match(r'steward_http_request_duration_seconds_bucket\{.*le="([^"]+)".*\} (\S+)', line)
                if m:
                    buckets[m.group(1)] = buckets.get(m.group(1), 0) + float(m.group(2))
                m = re.match(r"steward_http_request_duration_seconds_count\{.*\} (\S+)", line)
                if m:
                    count += float(m.group(1))
            self.samples.append((t, buckets, count))
            self.halt.wait(max(0.0, self.interval - (time.time() - t)))
        if conn:
            conn.close()

    def slow_share(self, t0, t1):
        """Requests answered in [t0, t1] (to the sampling interval) and the shares slower than
        5, 10 and 25 ms, server-side."""
        inside = [s for s in self.samples if t0 - self.interval / 2 <= s[0] <= t1 + self.interval / 2]
        if len(inside) < 2:
            return None
        (_, b0, c0), (_, b1, c1) = inside[0], inside[-1]
        n = c1 - c0
        if n <= 0:
            return None
        share = lambda le: 1 - (b1.get(le, 0) - b0.get(le, 0)) / n
        return {"from": inside[0][0], "to": inside[-1][0], "requests": int(n),
                "over_5ms": share("0.005"), "over_10ms": share("0.01"), "over_25ms": share("0.025")}


def parallel(port, token, items, fn, threads=8):
    """Runs fn(api, item) for every item on `threads` keep-alive connections."""
    local = threading.local()
    apis = []

    def work(item):
        if not hasattr(local, "api"):
            local.api = Api(port, token)
            apis.append(local.api)
        return fn(local.api, item)

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        out = list(ex.map(work, items))
    for a in apis:
        a.close()
    return out


def part_reads(label, args, tmp, cleanup, results, store_url=None, after_load=None):
    config = '[rotation]\nconcurrency = 4\njitter = "2s"\n\n[log]\nlevel = "warn"\n'
    st = Steward(tmp, f"reads-{label}", config, store_url=store_url, log_level="warn")
    cleanup.push(f"steward ({label})", st.stop)
    api, n = st.api, args.due
    api.call("PUT", "/v1/dev/data/bench/read", {"data": {"password": "v" * 48}})
    names = [f"due/s{i:05d}" for i in range(n)]
    t0 = time.time()
    parallel(st.port, st.token, names, lambda a, p: a.call("PUT", f"/v1/dev/data/{p}", {"data": {"password": rand_password()}}))
    write_s = time.time() - t0
    # All due at one instant T, far enough out for the configuration and the idle measurement.
    due = time.time() + max(5.0, 3 * write_s + 3) + 3 + args.duration + 1.5
    due = math.ceil(due)
    cfg = {"rotator": "random", "settings": {"length": 32}, "schedule": {"next_at": rfc3339(due)}}
    t0 = time.time()
    parallel(st.port, st.token, names, lambda a, p: a.call("PUT", f"/v1/sys/rotation/config/dev/{p}", cfg))
    config_s = time.time() - t0
    if after_load:
        after_load()
    idle_start = due - args.duration - 1.5
    if time.time() > idle_start - 3:
        raise SystemExit(f"[{label}] configuring {n} rotations took {config_s:.1f} s, past the idle window; rerun")
    s0 = api.call("GET", f"/v1/sys/rotation/status/dev/{names[0]}")["data"]
    assert parse_time(s0["next_due"]) == due, s0
    cursor = latest_cursor(api)
    print(f"[reads {label}] {n} secrets written in {write_s:.1f} s, configured in {config_s:.1f} s; due at {rfc3339(due)}", flush=True)
    url = f"http://127.0.0.1:{st.port}/v1/dev/data/bench/read"
    sampler = MetricsSampler(st.port)
    sampler.start()
    cleanup.push("metrics sampler", sampler.halt.set)
    time.sleep(max(0.0, idle_start - 2.5 - time.time()))
    wrk(url, st.token, 2)  # warm-up, not reported
    time.sleep(max(0.0, idle_start - time.time()))
    idle = wrk(url, st.token, args.duration)
    time.sleep(max(0.0, due - time.time()))
    loaded = wrk(url, st.token, args.duration)
    sampler.halt.set()
    sampler.join()

    # Afterwards: every secret rotated once and its previous value retired (state idle), and
    # how long the batch took.
    deadline = time.time() + 600
    while True:
        rows = api.call("GET", "/v1/sys/rotation/status", timeout=120)["data"]["rotations"]
        rows = [r for r in rows if r["path"].startswith("due/")]
        done = sum(1 for r in rows if r["rotations"] >= 1 and r["state"] != "rotating")
        idle_rows = sum(1 for r in rows if r["rotations"] >= 1 and r["state"] == "idle")
        if idle_rows == n or time.time() > deadline:
            break
        time.sleep(1)
    failures = sum(r["failures"] for r in rows)
    evs, _ = all_events(api, cursor)
    evs = [e for e in evs if (e.get("path") or "").startswith("due/")]
    started = sorted(parse_time(e["time"]) for e in evs if e["kind"] == "rotation.started")
    finished = sorted(parse_time(e["time"]) for e in evs if e["kind"] == "rotation.finished")
    retired = sorted(parse_time(e["time"]) for e in evs if e["kind"] == "rotation.retired")
    early = sum(1 for t in started if t < due)
    in_window = sum(1 for t in finished if loaded["start"] <= t <= loaded["end"])
    in_idle = sum(1 for e in evs if e["kind"].startswith("rotation.") and e["kind"] != "rotation.configured"
                  and idle["start"] <= parse_time(e["time"]) <= idle["end"])
    batch_s = (finished[-1] - started[0]) if finished and started else float("nan")
    slow = {"idle": sampler.slow_share(idle["start"], idle["end"]),
            "loaded": sampler.slow_share(loaded["start"], loaded["end"])}
    if started and finished:
        slow["batch"] = sampler.slow_share(started[0], finished[-1])
        slow["after_batch"] = sampler.slow_share(finished[-1], loaded["end"])
    st.stop()
    results[f"reads_{label}"] = {
        "idle": idle, "loaded": loaded, "ratio_p99": loaded["p99_ms"] / idle["p99_ms"],
        "due": n, "rotated": done, "ended_idle": idle_rows, "failures": failures, "started_before_due": early,
        "rotation_events_in_idle_window": in_idle,
        "first_start_after_due_s": started[0] - due if started else None,
        "last_finish_after_due_s": finished[-1] - due if finished else None,
        "batch_s": batch_s, "rotations_per_s": len(finished) / batch_s if finished else 0,
        "finished_in_wrk_window": in_window, "retired": len(retired),
        "last_retire_after_due_s": retired[-1] - due if retired else None,
        "write_s": write_s, "config_s": config_s, "server_side_slow_reads": slow,
    }


def pg_db():
    name = "steward_bench_rot_" + uuid.uuid4().hex[:8]
    run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc", f"CREATE DATABASE {name}"])
    return name


def drop_db(name):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                    f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True, timeout=60)


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rotations", type=int, default=100)
    ap.add_argument("--due", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--skip-pg-rotator", action="store_true")
    ap.add_argument("--postgres", action="store_true", help="also run part 2 on a PostgreSQL store")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "-p", "steward"], cwd=ROOT, check=True)
    # SIGTERM cleans up like Ctrl-C.
    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "load_before": loadavg(),
               "binary": BIN, "wrk": f"-t1 -c16 -d{args.duration}s"}
    print(f"load average before: {results['load_before']}", flush=True)
    cleanup = Cleanup()
    tmp = tempfile.mkdtemp(prefix="steward-bench-rot-")
    cleanup.push("temp dir", lambda: shutil.rmtree(tmp, ignore_errors=True))
    try:
        if not args.skip_pg_rotator:
            part_rotator(args, tmp, cleanup, results)
        part_reads("sqlite", args, tmp, cleanup, results)
        if args.postgres:
            db = pg_db()
            cleanup.push(f"database {db}", lambda: drop_db(db))
            # ANALYZE after the bulk load: the fresh tables otherwise get their statistics from
            # autovacuum at some random moment, which changes plans mid-measurement.
            analyze = lambda: run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qc", "ANALYZE"])
            part_reads("postgres", args, tmp, cleanup, results, store_url=f"{PG}/{db}", after_load=analyze)
        results["load_after"] = loadavg()
        keep = os.environ.get("BENCH_KEEP_LOGS")  # a directory: the servers' logs are copied there
        if keep:
            os.makedirs(keep, exist_ok=True)
            for f in os.listdir(tmp):
                if f.endswith(".log"):
                    shutil.copy(os.path.join(tmp, f), keep)
    finally:
        cleanup.run()
    print(json.dumps(results, indent=2))
    print_table(results)


def print_table(results):
    print()
    r = results.get("rotator")
    if r:
        print(f"rotation latency, postgres rotator (alternating), {r['rotations']} runs   "
              f"{'median':>8}{'p90':>8}{'p99':>8}{'max':>8}  (ms)")
        for name, s in [("steward POST -> rotation.finished", r["steward_ms"]),
                        ("steward POST -> retired (idle)", r["with_revoke_ms"]),
                        ("floor: ALTER ROLE + fresh login", r["floor_ms"]),
                        ("floor, fresh admin connection", r["floor_fresh_admin_ms"])]:
            print(f"{name:<62}{s['median']:>8.1f}{s['p90']:>8.1f}{s['p99']:>8.1f}{s['max']:>8.1f}")
        print(f"steward / floor (median): {r['ratio_median']:.2f}x   (vs fresh-admin floor {r['ratio_median_fresh_admin']:.2f}x)   "
              f"goal: median < 200 ms -> {'met' if r['steward_ms']['median'] < 200 else 'NOT met'}")
        print("median per segment (ms): " + ", ".join(f"{k} {v}" for k, v in r["breakdown_median_ms"].items()))
        print()
    for label in ("sqlite", "postgres"):
        x = results.get(f"reads_{label}")
        if not x:
            continue
        print(f"reads GET /v1/dev/data/bench/read, {label} store ({results['wrk']})   {'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
        for name, w in (("idle", x["idle"]), (f"{x['due']} rotations due", x["loaded"])):
            print(f"  {name:<56}{w['rps']:>9.0f}{w['p50_ms']:>9.2f}{w['p99_ms']:>9.2f}")
        print(f"  loaded p99 / idle p99: {x['ratio_p99']:.2f}x (goal <= 2x -> {'met' if x['ratio_p99'] <= 2 else 'NOT met'}); "
              f"{x['rotated']}/{x['due']} rotated ({x['ended_idle']} idle after), {x['failures']} failures; batch {x['batch_s']:.1f} s "
              f"= {x['rotations_per_s']:.0f} rotations/s; {x['finished_in_wrk_window']} finished inside the wrk window; "
              f"last finish +{x['last_finish_after_due_s']:.1f} s, {x['retired']} retired by +{x['last_retire_after_due_s'] or 0:.1f} s after due")
        sl = x.get("server_side_slow_reads") or {}
        parts = [f"{k} {v['over_5ms'] * 100:.2f}% / {v['over_10ms'] * 100:.2f}%" for k, v in sl.items() if v]
        print("  reads slower than 5 ms / 10 ms (server-side, /metrics): " + ", ".join(parts))
    print(f"load average before {results['load_before']}, after {results.get('load_after')}")


if __name__ == "__main__":
    main()
