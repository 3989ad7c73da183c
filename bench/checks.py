#!/usr/bin/env python3
"""Health-check benchmark: Steward vs Prometheus + blackbox_exporter (Debian), in one run on this
machine, loopback only, time-bounded.

Both sides probe the same --checks (10,000) distinct URLs, http://127.0.0.1:PORT/t/N, every
--interval (10 s) with a 5 s timeout, against one nginx started by this script (its own config
in a temp dir, --nginx-workers workers, access log off, `return 200 "ok\\n"` for every path,
plus a stub_status page the script reads). The two sides run one after the other, never at the
same time, against the same nginx:

- steward: `steward up` with a temp data dir and a steward.toml holding `[monitoring]
  host_checks = false` and --checks `[[monitoring.checks]]` of `type = "http"`, `interval`,
  `timeout = "5s"`, `jitter = --jitter` (0 by default, so a check runs exactly every interval as
  Prometheus scrapes; Steward's default 0.05 adds up to 5% of the interval to every run, which
  lengthens the mean period by 2.5%), the default condition (`status >= 200 && status < 400`).
- prometheus: `prometheus-blackbox-exporter` with one module `http_2xx` (prober http, timeout
  5s) and `prometheus` (temp storage) with scrape_interval = --interval, scrape_timeout 5s and
  one job whose --checks targets (file_sd) are relabelled to
  `/probe?module=http_2xx&target=URL` on the exporter: the standard blackbox setup.

Each side is started, gets --warmup seconds (from when it answers; its progress is polled), and
is then measured over --window seconds, during which nothing talks to it:

- CPU seconds: utime + stime from /proc/PID/stat, delta over the window (prometheus +
  blackbox_exporter summed on that side); also the CPU from start to the end of the warm-up.
  nginx's CPU (master + workers) and everything else on the machine (/proc/stat minus the
  processes above) over the same window, for context.
- Peak memory: VmHWM from /proc/PID/status at the end of the window (summed on the Prometheus
  side), and VmRSS.
- Work done: nginx's own counters (stub_status) over the window: requests served (the probes
  of the side) and connections accepted (blackbox_exporter opens one per probe; Steward keeps
  connections alive). Steward: `steward_check_runs` delta vs --checks x window / --interval,
  `steward_check_missed_runs`, `steward_check_schedule_lag_p50/p99_seconds` (time from when a run
  was due to when it started, over all runs since start: warm-up + window), `steward_checks`
  by state and `steward_check_up`, read from its /metrics just before and just after the
  window. Prometheus: over the window, `sum(count_over_time(up[W]))` (scrapes done),
  `count(up == 1)`, `count(probe_success == 1)` and the share of successful probes from the query
  API, and its own interval accuracy, `prometheus_target_interval_length_seconds` quantiles
  (the time between two scrapes of a target; p99 - interval is the comparable lateness).

A side "kept up" when it did at least 99.5% of the expected probes in the window and they
succeeded (Steward: no missed run and every check up at the end; Prometheus: successful
probes, i.e. the sum of probe_success over the window). When Prometheus + blackbox_exporter
does not keep up, its CPU figure is for less work, and the table says so.

Goals (from the issue): Steward uses at most half the CPU of prometheus + blackbox_exporter,
peak memory under 150 MB (10^6 bytes), schedule lag p99 under 1 s, no missed intervals (no
missed run and at least 99.5% of the expected runs in the window).

Usage: python3 bench/checks.py [--checks 10000] [--interval 10] [--warmup 30] [--window 120]
                               [--only steward|prometheus] [--jitter 0] [--nginx-workers 2]
                               [--no-keepalive] [--json]
Needs: nginx, prometheus, prometheus-blackbox-exporter (apt), a release build of steward
(`cargo build --release -p steward`; built if missing). STEWARD_BIN, PROMETHEUS_BIN,
BLACKBOX_BIN, NGINX_BIN pick other binaries; BENCH_KEEP_LOGS=DIR keeps the logs.
"""
import argparse, ctypes, json, os, re, shutil, signal, subprocess, sys, tempfile, time
import urllib.error, urllib.parse, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Cleanup, free_port, loadavg, proc_children, proc_cpu, proc_status, system_cpu  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("STEWARD_BIN", os.path.join(ROOT, "target", "release", "steward"))
PROM_BIN = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")
BB_BIN = os.environ.get("BLACKBOX_BIN", "/usr/bin/prometheus-blackbox-exporter")
NGINX_BIN = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
MEM_GOAL_MB = 150  # 10^6 bytes
LAG_GOAL_S = 1.0
RUNS_SHARE = 0.995  # runs done / expected that still count as "no missed intervals"
OUT = sys.stdout  # progress; stderr with --json


def say(msg):
    print(msg, file=OUT, flush=True)


# ---------------------------------------------------------------------------------------------
# small helpers (as in bench/alerting.py)


def version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except OSError as e:
        return f"? ({e})"
    return (r.stdout + r.stderr).strip().split("\n")[0]


def http_get(url, timeout, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup():
    # PR_SET_PDEATHSIG: a server gets SIGTERM should this script die without cleaning up.
    _libc.prctl(1, signal.SIGTERM)


class Proc:
    """A server process with its log file in the temp dir."""

    def __init__(self, name, cmd, log, env=None):
        self.name, self.log = name, log
        self.logf = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_child_setup)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def wait_http(self, url, timeout, ok=lambda body: True):
        end = time.time() + timeout
        while time.time() < end:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); log {self.log}:\n{self.tail()}")
            try:
                if ok(http_get(url, 2)):
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout} s; log {self.log}:\n{self.tail()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


# ---------------------------------------------------------------------------------------------
# The target


class Nginx:
    def __init__(self, tmp, workers, keepalive):
        d = os.path.join(tmp, "nginx")
        os.makedirs(d)
        self.port = free_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout {'75s' if keepalive else '0'};
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        location = /nginx_status {{ stub_status; }}
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
""")
        self.p = Proc("nginx", [NGINX_BIN, "-p", d, "-e", os.path.join(tmp, "nginx-error.log"), "-c", conf],
                      os.path.join(tmp, "nginx.log"))
        self.p.wait_http(f"http://127.0.0.1:{self.port}/t/0", 20)
        end = time.time() + 10
        while len(proc_children(self.p.pid)) < workers and time.time() < end:
            time.sleep(0.1)
        self.pids = [self.p.pid] + proc_children(self.p.pid)

    def cpu(self):
        return sum(proc_cpu(p) for p in self.pids)

    def status(self):
        """stub_status: accepted connections and requests served since start (this read
        included)."""
        text = http_get(f"http://127.0.0.1:{self.port}/nginx_status", 10).decode()
        accepts, handled, requests = (int(x) for x in text.split("\n")[2].split())
        return {"accepts": accepts, "requests": requests}

    def stop(self):
        self.p.stop()


# ---------------------------------------------------------------------------------------------
# Prometheus text format


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def parse_metrics(text, wanted):
    """{(name, labels-text): value} for the metric names in `wanted`."""
    out = {}
    for line in text.split("\n"):
        if not line or line[0] == "#":
            continue
        m = SAMPLE_RE.match(line)
        if m and m.group(1) in wanted:
            try:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def quantile(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))]


# ---------------------------------------------------------------------------------------------
# The two sides


class StewardSide:
    name = "steward"

    def __init__(self, tmp, args, urls):
        d = os.path.join(tmp, "steward")
        os.makedirs(d)
        data = os.path.join(d, "data")
        cfg = os.path.join(d, "steward.toml")
        self.checks = len(urls)
        self.port = free_port()
        with open(cfg, "w") as f:
            f.write('[log]\nlevel = "warn"\n\n[monitoring]\nhost_checks = false\n')
            for i, url in enumerate(urls):
                f.write(f'\n[[monitoring.checks]]\nname = "t{i:05d}"\ntype = "http"\nurl = "{url}"\n'
                        f'interval = "{args.interval:g}s"\ntimeout = "{args.timeout:g}s"\njitter = {args.jitter:.6g}\n')
        self.config_bytes = os.path.getsize(cfg)
        env = dict(os.environ, STEWARD_LOG=os.environ.get("BENCH_STEWARD_LOG", "warn"))
        env.pop("STEWARD_TOKEN", None)
        self.t_spawn = time.time()
        self.p = Proc("steward", [BIN, "up", "--listen", f"127.0.0.1:{self.port}", "--data", data, "--config", cfg],
                      os.path.join(tmp, "steward.log"), env)
        self.pids = [self.p.pid]
        self.p.wait_http(f"http://127.0.0.1:{self.port}/v1/sys/health", 300)
        token_file = os.path.join(data, "root-token")
        end = time.time() + 30
        while not os.path.exists(token_file) and time.time() < end:
            time.sleep(0.1)
        with open(token_file) as f:
            self.token = f.read().strip()
        self.t_ready = time.time()

    WANTED = {"steward_check_runs", "steward_check_missed_runs", "steward_check_schedule_lag_p50_seconds",
              "steward_check_schedule_lag_p99_seconds", "steward_checks", "steward_check_up",
              "steward_check_duration_seconds"}

    def scrape(self):
        t = time.time()
        text = http_get(f"http://127.0.0.1:{self.port}/metrics", 60, self.token).decode()
        t1 = time.time()
        m = parse_metrics(text, self.WANTED)
        get = lambda name, labels="": m.get((name, labels))  # noqa: E731
        up = [v for (n, _), v in m.items() if n == "steward_check_up"]
        dur = [v for (n, _), v in m.items() if n == "steward_check_duration_seconds"]
        return {"t": (t + t1) / 2, "scrape_s": t1 - t, "bytes": len(text),
                "runs": get("steward_check_runs"), "missed": get("steward_check_missed_runs"),
                "lag_p50_s": get("steward_check_schedule_lag_p50_seconds"),
                "lag_p99_s": get("steward_check_schedule_lag_p99_seconds"),
                "state_up": get("steward_checks", '{state="up"}'), "state_down": get("steward_checks", '{state="down"}'),
                "state_unknown": get("steward_checks", '{state="unknown"}'),
                "check_up_1": sum(1 for v in up if v == 1), "check_up_0": sum(1 for v in up if v == 0),
                "duration_p50_s": quantile(dur, 0.5), "duration_p99_s": quantile(dur, 0.99),
                "duration_max_s": max(dur) if dur else None}

    def progress(self):
        """Checks that ran at least once."""
        s = self.scrape()
        return self.checks - int(s["state_unknown"] or 0) if s["state_unknown"] is not None else 0, s

    def before(self):
        self.s0 = self.scrape()

    def after(self, args, t0, t1):
        s1 = self.scrape()
        s0 = self.s0
        span = s1["t"] - s0["t"]
        expected = self.checks * span / args.interval
        runs = s1["runs"] - s0["runs"]
        return {"runs": runs, "expected_runs": expected, "runs_span_s": span,
                "missed_in_window": s1["missed"] - s0["missed"], "missed_since_start": s1["missed"],
                "lag_p50_s": s1["lag_p50_s"], "lag_p99_s": s1["lag_p99_s"],
                "lag_p99_at_window_start_s": s0["lag_p99_s"],
                "up": s1["check_up_1"], "down": s1["check_up_0"], "state_up": s1["state_up"],
                "state_down": s1["state_down"], "state_unknown": s1["state_unknown"],
                "probe_p50_s": s1["duration_p50_s"], "probe_p99_s": s1["duration_p99_s"],
                "probe_max_s": s1["duration_max_s"], "metrics_bytes": s1["bytes"], "metrics_scrape_s": s1["scrape_s"],
                "runs_since_start": s1["runs"]}

    def stop(self):
        self.p.stop()


class PrometheusSide:
    name = "prometheus"

    def __init__(self, tmp, args, urls):
        d = os.path.join(tmp, "prometheus")
        os.makedirs(os.path.join(d, "data"))
        self.checks = len(urls)
        self.bb_port, self.port = free_port(), free_port()
        bb_cfg = os.path.join(d, "blackbox.yml")
        with open(bb_cfg, "w") as f:
            f.write(f"""modules:
  http_2xx:
    prober: http
    timeout: {args.timeout:g}s
    http:
      preferred_ip_protocol: ip4
""")
        sd = os.path.join(d, "targets.json")
        with open(sd, "w") as f:
            json.dump([{"targets": urls}], f)
        cfg = os.path.join(d, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"""global:
  scrape_interval: {args.interval:g}s
  scrape_timeout: {args.timeout:g}s
  evaluation_interval: 1m
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params:
      module: [http_2xx]
    file_sd_configs:
      - files: ["{sd}"]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:{self.bb_port}
""")
        self.t_spawn = time.time()
        self.bb = Proc("blackbox_exporter", [BB_BIN, f"--config.file={bb_cfg}",
                                             f"--web.listen-address=127.0.0.1:{self.bb_port}", "--log.level=warn"],
                       os.path.join(tmp, "blackbox.log"))
        try:
            self.bb.wait_http(f"http://127.0.0.1:{self.bb_port}/-/healthy", 60)
            self.prom = Proc("prometheus", [PROM_BIN, f"--config.file={cfg}", f"--storage.tsdb.path={d}/data",
                                            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                             os.path.join(tmp, "prometheus.log"))
        except BaseException:
            self.bb.stop()
            raise
        self.pids = [self.prom.pid, self.bb.pid]
        try:
            self.prom.wait_http(f"http://127.0.0.1:{self.port}/-/ready", 300)
        except BaseException:
            self.stop()
            raise
        self.t_ready = time.time()

    def query(self, expr, at=None, timeout=120):
        q = {"query": expr}
        if at is not None:
            q["time"] = f"{at:.3f}"
        body = json.loads(http_get(f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(q), timeout))
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr}: {body}")
        res = body["data"]["result"]
        return float(res[0]["value"][1]) if res else None  # count() of nothing is no result

    def own_metrics(self):
        text = http_get(f"http://127.0.0.1:{self.port}/metrics", 30).decode()
        m = parse_metrics(text, {"prometheus_target_interval_length_seconds", "prometheus_tsdb_head_series"})
        out = {"head_series": m.get(("prometheus_tsdb_head_series", ""))}
        for (n, labels), v in m.items():
            if n == "prometheus_target_interval_length_seconds":
                q = re.search(r'quantile="([^"]+)"', labels)
                if q:
                    out[f"interval_q{q.group(1)}_s"] = v
        return out

    def progress(self):
        """Targets scraped at least once."""
        return int(self.query("count(up)", timeout=20) or 0), None

    def before(self):
        pass

    def after(self, args, t0, t1):
        w = int(round(t1 - t0))
        at = t0 + w
        expected = self.checks * w / args.interval
        runs = self.query(f"sum(count_over_time(up[{w}s]))", at) or 0
        ok_runs = self.query(f"sum(sum_over_time(probe_success[{w}s]))", at) or 0
        own = self.own_metrics()
        q99 = own.get("interval_q0.99_s")
        return {"runs": runs, "expected_runs": expected, "runs_span_s": w, "successful_probes": ok_runs,
                "probe_success_share": ok_runs / runs if runs else None,
                "up": self.query("count(up == 1)", at) or 0, "down": self.query("count(up == 0)", at) or 0,
                "probe_success_1": self.query("count(probe_success == 1)", at) or 0,
                "probe_success_0": self.query("count(probe_success == 0)", at) or 0,
                "probe_p50_s": self.query("quantile(0.5, probe_duration_seconds)", at),
                "probe_p99_s": self.query("quantile(0.99, probe_duration_seconds)", at),
                "scrape_p99_s": self.query("quantile(0.99, scrape_duration_seconds)", at),
                "interval_p50_s": own.get("interval_q0.5_s"), "interval_p99_s": q99,
                "interval_p01_s": own.get("interval_q0.01_s"), "interval_max_s": own.get("interval_q1_s"),
                "lateness_p99_s": (q99 - args.interval) if q99 is not None else None,
                "head_series": own["head_series"]}

    def stop(self):
        for p in (getattr(self, "prom", None), self.bb):
            if p:
                p.stop()


SIDES = {"steward": StewardSide, "prometheus": PrometheusSide}


# ---------------------------------------------------------------------------------------------
# One side, measured


def measure(side_name, args, tmp, urls, nginx, cleanup):
    say(f"[{side_name}] starting with {len(urls)} checks every {args.interval:g}s (load average {loadavg()})")
    side = SIDES[side_name](tmp, args, urls)
    cleanup.push(side_name, side.stop)
    try:
        procs_alive = lambda: all(os.path.exists(f"/proc/{p}") for p in side.pids)  # noqa: E731
        ready_s = side.t_ready - side.t_spawn
        say(f"[{side_name}] answering after {ready_s:.1f} s; warm-up {args.warmup:g} s")
        all_once_s, n, last_said = None, 0, -10.0
        end = side.t_ready + args.warmup
        while True:
            if not procs_alive():
                raise RuntimeError(f"{side_name} died during the warm-up")
            if all_once_s is None:  # every 2 s until every check ran once
                try:
                    n, _ = side.progress()
                except (OSError, urllib.error.URLError, RuntimeError) as e:
                    say(f"[{side_name}]   progress read failed: {e}")
                now = time.time() - side.t_ready
                if n >= len(urls):
                    all_once_s = now
                if n >= len(urls) or now - last_said >= 5:
                    last_said = now
                    say(f"[{side_name}]   {now:5.1f} s: {n} of {len(urls)} checks ran at least once")
            if time.time() >= end:
                break
            time.sleep(max(0.0, min(2.0 if all_once_s is None else 1.0, end - time.time())))
        warm_cpu = sum(proc_cpu(p) for p in side.pids)
        side.before()
        ng0, ngs0, c0 = nginx.cpu(), nginx.status(), [proc_cpu(p) for p in side.pids]
        sys0, me0, t0 = system_cpu(), time.process_time(), time.time()
        say(f"[{side_name}] measuring {args.window:g} s (load average {loadavg()})")
        end = t0 + args.window
        while time.time() < end:
            if not procs_alive():
                raise RuntimeError(f"{side_name} died during the window")
            time.sleep(min(1.0, max(0.0, end - time.time())))
        c1 = [proc_cpu(p) for p in side.pids]
        t1, ng1, ngs1 = time.time(), nginx.cpu(), nginx.status()
        mem = [proc_status(p) for p in side.pids]
        sys1, me1 = system_cpu(), time.process_time()
        load_end = loadavg()
        x = side.after(args, t0, t1)
    finally:
        cleanup.pop()  # stops the side
    cpu = [b - a for a, b in zip(c0, c1)]
    ng_cpu = ng1 - ng0
    other = (sys1 - sys0) - sum(cpu) - ng_cpu - (me1 - me0)
    r = {"side": side_name, "window_s": t1 - t0, "ready_s": ready_s, "all_probed_once_s": all_once_s,
         "cpu_s": sum(cpu), "cpu_by_process_s": cpu, "cpu_start_to_warm_s": warm_cpu,
         "hwm_mib": sum(m["VmHWM"] for m in mem), "rss_mib": sum(m["VmRSS"] for m in mem),
         "hwm_by_process_mib": [m["VmHWM"] for m in mem],
         "nginx_cpu_s": ng_cpu, "nginx_requests": ngs1["requests"] - ngs0["requests"] - 1,  # minus our 2nd read
         "nginx_accepts": ngs1["accepts"] - ngs0["accepts"] - 1, "other_cpu_s": other,
         "load_end": load_end}
    r.update(x)
    r["expected_in_window"] = len(urls) * r["window_s"] / args.interval
    r["served_share"] = r["nginx_requests"] / r["expected_in_window"]
    if side_name == "steward":
        r["kept_up"] = (r["missed_since_start"] == 0 and r["runs"] >= RUNS_SHARE * r["expected_runs"]
                        and r["up"] == len(urls))
    else:
        r["kept_up"] = r["successful_probes"] >= RUNS_SHARE * r["expected_runs"]
    if side_name == "steward":
        r["config_bytes"] = side.config_bytes
    say(f"[{side_name}] CPU {r['cpu_s']:.1f} s, VmHWM {r['hwm_mib']:.0f} MiB, runs {r['runs']:.0f} of "
        f"{r['expected_runs']:.0f} expected, nginx served {r['nginx_requests']} requests on "
        f"{r['nginx_accepts']} new connections")
    return r


# ---------------------------------------------------------------------------------------------
# Report


def f1(x, fmt="{:.1f}", none="-"):
    return none if x is None else fmt.format(x)


def goals(res):
    s, p = res.get("steward"), res.get("prometheus")
    out = {}
    if s and p and p["cpu_s"] > 0:
        ratio = s["cpu_s"] / p["cpu_s"]
        out["cpu"] = {"value": ratio, "met": ratio <= 0.5, "text": "CPU <= 0.5x prometheus + blackbox_exporter"}
        if not p["kept_up"]:
            out["cpu"]["text"] += (f" (prometheus + blackbox did NOT keep up: {p['successful_probes']:.0f} successful "
                                   f"probes of {p['expected_runs']:.0f}, so the ratio understates the difference)")
    if s:
        mb = s["hwm_mib"] * 1.048576
        out["memory"] = {"value": mb, "met": mb < MEM_GOAL_MB, "text": f"peak memory < {MEM_GOAL_MB} MB"}
        lag = s["lag_p99_s"]
        out["lag"] = {"value": lag, "met": lag is not None and lag < LAG_GOAL_S, "text": "schedule lag p99 < 1 s"}
        ok = s["missed_since_start"] == 0 and s["runs"] >= RUNS_SHARE * s["expected_runs"]
        out["missed"] = {"value": s["missed_since_start"], "met": ok,
                         "text": f"no missed intervals (0 missed, runs >= {RUNS_SHARE:.1%} of expected)"}
    return out


def print_table(res):
    s, p = res.get("steward"), res.get("prometheus")
    say("")
    say(f"{res['checks']} HTTP checks every {res['interval']:g}s (timeout {res['timeout']:g}s) against {res['nginx_version']} "
        f"({res['nginx_workers']} workers, keep-alive {'on' if res['keepalive'] else 'off'}) on 127.0.0.1; "
        f"warm-up {res['warmup']:g} s, window {res['window']:g} s; Steward jitter {res['jitter']:g}")
    say("; ".join(x for x in (res["prometheus_version"], res["blackbox_version"], f"steward {res['steward_bin']}") if x))
    rows = []

    def row(label, sv, pv, ratio=""):
        rows.append((label, sv, pv, ratio))

    def rat(a, b):
        return f"{a / b:.2f}" if a is not None and b else ""

    sg = lambda k, fmt="{:.1f}": f1(s.get(k), fmt) if s else "-"  # noqa: E731
    pg = lambda k, fmt="{:.1f}": f1(p.get(k), fmt) if p else "-"  # noqa: E731
    row("CPU seconds in the window", sg("cpu_s", "{:.2f}"),
        (f"{p['cpu_s']:.2f} (prom {p['cpu_by_process_s'][0]:.2f} + bb {p['cpu_by_process_s'][1]:.2f})" if p else "-"),
        rat(s and s["cpu_s"], p and p["cpu_s"]))
    row("  = cores", f1(s and s["cpu_s"] / s["window_s"], "{:.3f}"), f1(p and p["cpu_s"] / p["window_s"], "{:.3f}"))
    per = lambda x: x and x["nginx_requests"] and 1000 * x["cpu_s"] / x["nginx_requests"]  # noqa: E731
    row("  CPU per request nginx served (ms)", f1(per(s), "{:.3f}"), f1(per(p), "{:.3f}"), rat(per(s), per(p)))
    row("peak memory VmHWM (MiB)", sg("hwm_mib", "{:.0f}"),
        (f"{p['hwm_mib']:.0f} (prom {p['hwm_by_process_mib'][0]:.0f} + bb {p['hwm_by_process_mib'][1]:.0f})" if p else "-"),
        rat(s and s["hwm_mib"], p and p["hwm_mib"]))
    row("VmRSS at the end (MiB)", sg("rss_mib", "{:.0f}"), pg("rss_mib", "{:.0f}"), rat(s and s["rss_mib"], p and p["rss_mib"]))
    row("probes in the window / expected", s and f"{s['runs']:.0f} / {s['expected_runs']:.0f}" or "-",
        p and f"{p['runs']:.0f} / {p['expected_runs']:.0f}" or "-")
    row("nginx: requests served / expected", s and f"{s['nginx_requests']} / {s['expected_in_window']:.0f}" or "-",
        p and f"{p['nginx_requests']} / {p['expected_in_window']:.0f}" or "-")
    row("nginx: new connections", sg("nginx_accepts", "{:.0f}"), pg("nginx_accepts", "{:.0f}"))
    row("nginx CPU seconds (context)", sg("nginx_cpu_s", "{:.2f}"), pg("nginx_cpu_s", "{:.2f}"))
    row("rest of the machine CPU s (context)", sg("other_cpu_s", "{:.1f}"), pg("other_cpu_s", "{:.1f}"))
    row("answering after (s)", sg("ready_s"), pg("ready_s"))
    row("every target probed once after (s)", sg("all_probed_once_s"), pg("all_probed_once_s"))
    row("CPU from start to end of warm-up (s)", sg("cpu_start_to_warm_s", "{:.1f}"), pg("cpu_start_to_warm_s", "{:.1f}"))
    row("schedule lag p50 / p99 (s, since start)", s and f"{f1(s['lag_p50_s'], '{:.4f}')} / {f1(s['lag_p99_s'], '{:.4f}')}" or "-",
        "n/a")
    row("interval between runs p50 / p99 (s)", "n/a",
        p and f"{f1(p['interval_p50_s'], '{:.4f}')} / {f1(p['interval_p99_s'], '{:.4f}')}" or "-")
    row("missed runs (window / since start)", s and f"{s['missed_in_window']:.0f} / {s['missed_since_start']:.0f}" or "-",
        "n/a (no counter; see probes)")
    row("kept up (every probe done, and good)", s and ("yes" if s["kept_up"] else "NO") or "-",
        p and ("yes" if p["kept_up"] else "NO") or "-")
    row("up / failing at the end", s and f"{s['up']} / {s['down']}" or "-",
        p and f"up {p['up']:.0f}/{p['down']:.0f}, probe_success {p['probe_success_1']:.0f}/{p['probe_success_0']:.0f}" or "-")
    row("probe duration p50 / p99 (ms)",
        s and f"{f1(s['probe_p50_s'] and s['probe_p50_s'] * 1000, '{:.2f}')} / {f1(s['probe_p99_s'] and s['probe_p99_s'] * 1000, '{:.2f}')}" or "-",
        p and f"{f1(p['probe_p50_s'] and p['probe_p50_s'] * 1000, '{:.2f}')} / {f1(p['probe_p99_s'] and p['probe_p99_s'] * 1000, '{:.2f}')}" or "-")
    if p:
        row("successful probes in the window", "",
            f"{p['successful_probes']:.0f} ({f1(p['probe_success_share'] and 100 * p['probe_success_share'], '{:.3f}')}% of scrapes)")
        row("TSDB head series", "", f"{p['head_series']:.0f}" if p["head_series"] is not None else "-")
    w = [max(len(r[i]) for r in rows + [("", "steward", "prometheus + blackbox", "ratio")]) for i in range(4)]
    say(f"{'':<{w[0]}}  {'steward':>{w[1]}}  {'prometheus + blackbox':>{w[2]}}  {'ratio':>{w[3]}}")
    for r in rows:
        say(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}")
    g = res["goals"]
    if g:
        say("Goals:")
        for k, fmt in (("cpu", "{:.2f}x"), ("memory", "{:.0f} MB"), ("lag", "{:.3f} s"), ("missed", "{:.0f} missed")):
            if k in g:
                say(f"  {g[k]['text']}: {f1(g[k]['value'], fmt)} -> {'met' if g[k]['met'] else 'NOT met'}")
    say(f"load average before {res['load_before']}, after {res.get('load_after')}")


# ---------------------------------------------------------------------------------------------


def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checks", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=10, help="seconds between runs of a check")
    ap.add_argument("--timeout", type=float, default=5, help="probe timeout, seconds")
    ap.add_argument("--warmup", type=float, default=30, help="seconds from when a side answers to the window")
    ap.add_argument("--window", type=float, default=120, help="measured seconds per side")
    ap.add_argument("--only", choices=list(SIDES))
    ap.add_argument("--jitter", type=float, default=0.0, help="Steward's per-check jitter (its default is 0.05)")
    ap.add_argument("--nginx-workers", type=int, default=2)
    ap.add_argument("--no-keepalive", action="store_true", help="nginx closes every connection (keepalive_timeout 0)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout (progress on stderr)")
    args = ap.parse_args()
    if args.json:
        OUT = sys.stderr
    sides = [args.only] if args.only else list(SIDES)
    missing = [b for b in [NGINX_BIN] + ([PROM_BIN, BB_BIN] if "prometheus" in sides else []) if not os.path.exists(b)]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install -y nginx prometheus prometheus-blackbox-exporter")
    if "steward" in sides and not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "-p", "steward"], cwd=ROOT, check=True)

    def on_term(*_):
        raise KeyboardInterrupt

    def on_alarm(*_):
        raise TimeoutError("benchmark deadline passed")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGALRM, on_alarm)
    # Every wait is bounded; this bounds the whole run (start-up up to 300 s per side).
    signal.alarm(int(len(sides) * (args.warmup + args.window + 600) + 60))

    res = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpus": os.cpu_count(), "load_before": loadavg(),
           "checks": args.checks, "interval": args.interval, "timeout": args.timeout, "warmup": args.warmup,
           "window": args.window, "jitter": args.jitter, "nginx_workers": args.nginx_workers,
           "keepalive": not args.no_keepalive, "steward_bin": BIN,
           "nginx_version": version([NGINX_BIN, "-v"]).replace("nginx version: ", ""),
           "prometheus_version": version([PROM_BIN, "--version"]) if "prometheus" in sides else None,
           "blackbox_version": version([BB_BIN, "--version"]) if "prometheus" in sides else None}
    say("; ".join(x for x in (f"load average before: {res['load_before']}", res["nginx_version"],
                                res["prometheus_version"], res["blackbox_version"]) if x))
    cleanup = Cleanup()
    tmp = tempfile.mkdtemp(prefix="steward-bench-checks-")
    cleanup.push("temp dir", lambda: shutil.rmtree(tmp, ignore_errors=True))
    failed = False
    try:
        nginx = Nginx(tmp, args.nginx_workers, not args.no_keepalive)
        cleanup.push("nginx", nginx.stop)
        urls = [f"http://127.0.0.1:{nginx.port}/t/{i}" for i in range(args.checks)]
        for side in sides:
            try:
                res[side] = measure(side, args, tmp, urls, nginx, cleanup)
            except (RuntimeError, OSError, urllib.error.URLError) as e:
                say(f"[{side}] FAILED: {e}")
                res[f"{side}_error"] = str(e)
                failed = True
        res["load_after"] = loadavg()
        keep = os.environ.get("BENCH_KEEP_LOGS")
        if keep:
            os.makedirs(keep, exist_ok=True)
            for f in os.listdir(tmp):
                if f.endswith(".log"):
                    shutil.copy(os.path.join(tmp, f), keep)
    finally:
        signal.alarm(0)
        cleanup.run()
    res["goals"] = goals(res)
    print_table(res)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
