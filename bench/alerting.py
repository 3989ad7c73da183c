#!/usr/bin/env python3
"""Alerting benchmark: Steward vs Prometheus Alertmanager (Debian), in one run on this machine,
loopback only, time-bounded.

Both sides get the same route (receiver "hook", group_by [alertname, instance], --group-wait,
group_interval 1s, repeat_interval 4h) and the same webhook receiver: a Python asyncio server in
its own process that notes, for every alert in every webhook payload, when it arrived. Each
alert carries a unique label `bench_id` that encodes when the load generator posted it, so an
alert's notification latency is its first arrival minus that time. Alerts go in as Prometheus
sends them: `POST /api/v2/alerts`, --batch alerts per request, each alert new (unique labels,
endsAt far in the future, so it stays firing). The alerts of one request share `instance`, so
each request makes one new group and its alerts are notified together.

1. Sustained ingest: steps of offered load (--steps, alerts/s), each --duration seconds against
   a fresh server, the two sides interleaved at every step. A step passes when the accepted rate
   is at least 95% of the offered one, no POST was rejected, every accepted alert was notified
   (within --drain s after the last POST), and the notification latency p99 is at most 1 s
   (alerts never notified count as infinitely late). A failed step is rerun --retries times; a
   side stops at a step that fails every time. Its sustained ingest is its highest passing step.
   Load: --gen-procs processes with --conns keep-alive connections each, on a fixed schedule (a
   request waits for its slot; a late generator sends at once, and with every connection busy
   the offered rate is not reached). Before the steps the generator runs unpaced against the
   receiver (a trivial Python server) to show its own ceiling. Per step the script reports the
   CPU seconds of the server, the generator, the receiver and everything else on the machine.
2. Memory with --alerts (100,000) active alerts: a fresh server per side, the alerts posted as
   fast as it takes them; once every one was notified and --settle seconds passed, the server's
   CPU over --idle-window seconds with nothing happening, then VmRSS and VmHWM from
   /proc/PID/status. Then the server's own count: /metrics (Alertmanager's
   `alertmanager_alerts{state="active"}`) and `GET /api/v2/alerts` (at most --get-timeout s).

Usage: python3 bench/alerting.py [--only alertmanager|steward] [--skip-ingest] [--skip-memory]
                                 [--steps 500,1000,...] [--duration 10] [--retries 1]
                                 [--alerts 100000] [--batch 64] [--gen-procs 2] [--conns 4]
                                 [--group-wait 100ms]
Needs: prometheus-alertmanager (apt), a release build of steward (built if missing).
BENCH_KEEP_LOGS=DIR copies the servers' logs there.
"""
import argparse, asyncio, json, math, multiprocessing as mp, os, re, shutil, signal, subprocess, sys
import tempfile, time, urllib.error, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Cleanup, free_port, loadavg, proc_cpu, proc_status, system_cpu  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("STEWARD_BIN", os.path.join(ROOT, "target", "release", "steward"))
AM_BIN = os.environ.get("ALERTMANAGER_BIN", "/usr/bin/prometheus-alertmanager")
DEFAULT_STEPS = ("500,1000,2000,3000,4000,5000,6000,7000,8500,10000,12000,15000,20000,25000,30000,40000,50000,"
                 "70000,100000,150000,200000")
SLO = 1.0  # s, notification latency p99


# ---------------------------------------------------------------------------------------------
# small helpers


def rfc3339(epoch):
    t = time.gmtime(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % int((epoch % 1) * 1000)


# ---------------------------------------------------------------------------------------------
# Minimal HTTP/1.1 over asyncio streams (the receiver and the load generator)


CL_RE = re.compile(rb"\r\ncontent-length:\s*(\d+)")


async def read_body(reader, head_lower):
    m = CL_RE.search(head_lower)
    if m:
        return await reader.readexactly(int(m.group(1)))
    if b"\r\ntransfer-encoding:" in head_lower and b"chunked" in head_lower:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return b""


# ---------------------------------------------------------------------------------------------
# Webhook receiver (own process): first arrival of each bench_id


ID_RE = re.compile(rb'"bench_id"\s*:\s*"(g\d+s\d+t(\d+))"')


def receiver_main(port_conn, ctl):
    asyncio.run(_receiver(port_conn, ctl))


async def _receiver(port_conn, ctl):
    loop = asyncio.get_running_loop()
    st = {"first": {}, "notifications": 0, "bytes": 0, "last": 0.0, "statuses": {}}
    done = loop.create_future()

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                hl = head.lower()
                if b"\r\nexpect: 100-continue" in hl:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await read_body(reader, hl)
                now = time.time()
                first = st["first"]
                for m in ID_RE.finditer(body):
                    k = m.group(1)
                    if k not in first:
                        first[k] = now - int(m.group(2)) / 1e6
                st["notifications"] += 1
                st["bytes"] += len(body)
                st["last"] = now
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    def on_ctl():
        cmd = ctl.recv()
        if cmd[0] == "reset":
            st.update(first={}, notifications=0, bytes=0, last=0.0)
            ctl.send(True)
        elif cmd[0] == "count":
            ctl.send((len(st["first"]), st["notifications"]))
        elif cmd[0] == "stats":
            expected = cmd[1]
            lat = sorted(st["first"].values())

            def p(q):
                rank = max(1, math.ceil(q / 100 * expected))
                return lat[rank - 1] if rank <= len(lat) else math.inf

            ctl.send({"notified": len(lat), "notifications": st["notifications"], "bytes": st["bytes"],
                      "p50": p(50), "p90": p(90), "p99": p(99), "max": lat[-1] if lat else math.inf,
                      "min": lat[0] if lat else math.inf, "last_arrival": st["last"],
                      "over_slo": sum(1 for x in lat if x > SLO)})
        elif cmd[0] == "stop":
            ctl.send(True)
            if not done.done():
                done.set_result(None)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024, limit=1 << 20)
    port_conn.send(server.sockets[0].getsockname()[1])
    loop.add_reader(ctl.fileno(), on_ctl)
    await done
    server.close()


class Receiver:
    def __init__(self):
        self.ctl, child_ctl = mp.Pipe()
        port_r, port_w = mp.Pipe(duplex=False)
        self.proc = mp.Process(target=receiver_main, args=(port_w, child_ctl), daemon=True)
        self.proc.start()
        if not port_r.poll(20):
            raise SystemExit("webhook receiver did not start")
        self.port = port_r.recv()

    def call(self, *cmd):
        self.ctl.send(cmd)
        if not self.ctl.poll(60):
            raise RuntimeError(f"receiver did not answer {cmd[0]}")
        return self.ctl.recv()

    def stop(self):
        if self.proc.is_alive():
            try:
                self.call("stop")
            except (RuntimeError, OSError):
                pass
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()


# ---------------------------------------------------------------------------------------------
# Load generator (own processes)

ALERT = ('{"labels":{"alertname":"BenchAlert","instance":"%s","job":"bench","severity":"warning",'
         '"bench_id":"g%ds%dt%d"},"annotations":{"summary":"benchmark alert %d on %s"},'
         '"startsAt":"%s","endsAt":"2099-01-01T00:00:00Z","generatorURL":"http://127.0.0.1:9090/graph?g0.expr=up"}')


def make_body(tag, gen, i, batch, now):
    inst = f"{tag}-g{gen}-b{i}"
    us = int(now * 1e6)
    starts = rfc3339(now)
    seq0 = i * batch
    return ("[" + ",".join(ALERT % (inst, gen, seq0 + j, us, seq0 + j, inst, starts) for j in range(batch)) + "]").encode()


def gen_main(gen, port, token, rate, t0, duration, total, conns, batch, tag, out):
    try:
        res = asyncio.run(_gen(gen, port, token, rate, t0, duration, total, conns, batch, tag))
    except BaseException as e:  # noqa: BLE001 - report to the parent
        res = {"fatal": repr(e)}
    res["cpu_s"] = time.process_time()
    out.send(res)


async def _gen(gen, port, token, rate, t0, duration, total, conns, batch, tag):
    """Posts batches on `conns` keep-alive connections. Paced (rate alerts/s, until t0 +
    duration) or, with rate None, as fast as the server answers until `total` alerts or t0 +
    duration."""
    end = t0 + duration
    interval = batch / rate if rate else 0.0
    nreq = math.ceil(total / batch) if total else None
    state = {"next": 0, "ok": 0, "err": 0, "statuses": {}, "max_late": 0.0, "last_done": 0.0, "resp": [],
             "errors": []}
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    prefix = (f"POST /api/v2/alerts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
              f"User-Agent: steward-bench\r\n{auth}Content-Length: ").encode()

    async def worker():
        conn = None
        while True:
            i = state["next"]
            if nreq is not None and i >= nreq:
                break
            slot = t0 + i * interval
            if (rate and slot >= end) or (not rate and time.time() >= end):
                break
            state["next"] = i + 1
            delay = slot - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                state["max_late"] = max(state["max_late"], -delay)
            n = batch if nreq is None or i < nreq - 1 else total - i * batch
            now = time.time()
            body = make_body(tag, gen, i, n, now)
            try:
                if conn is None:
                    conn = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
                r, w = conn
                w.write(prefix + str(len(body)).encode() + b"\r\n\r\n" + body)
                head = await r.readuntil(b"\r\n\r\n")
                hl = head.lower()
                resp = await read_body(r, hl)
                status = int(head[9:12])
                if b"\r\nconnection: close" in hl:
                    w.close()
                    conn = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                status, resp = 0, repr(e).encode()
                if conn:
                    conn[1].close()
                conn = None
            done = time.time()
            state["statuses"][status] = state["statuses"].get(status, 0) + 1
            if 200 <= status < 300:
                state["ok"] += n
            else:
                state["err"] += n
                if len(state["errors"]) < 5:
                    state["errors"].append(f"{status}: {resp[:300]!r}")
            state["resp"].append(done - now)
            state["last_done"] = done
        if conn:
            conn[1].close()

    await asyncio.sleep(max(0.0, t0 - time.time()))
    await asyncio.gather(*(worker() for _ in range(conns)))
    resp = sorted(state.pop("resp"))
    state["requests"] = len(resp)
    state["resp_p50"] = resp[len(resp) // 2] if resp else None
    state["resp_p99"] = resp[max(0, math.ceil(0.99 * len(resp)) - 1)] if resp else None
    return state


def generate(port, token, *, rate=None, duration=10.0, total=None, procs=2, conns=4, batch=64, tag="t"):
    """Runs `procs` generator processes; rate is the total offered alerts/s. Returns the merged
    result with t0."""
    t0 = time.time() + 0.5
    pipes, ps = [], []
    for g in range(procs):
        r, w = mp.Pipe(duplex=False)
        share = None if total is None else total // procs + (1 if g < total % procs else 0)
        p = mp.Process(target=gen_main, args=(g, port, token, rate / procs if rate else None, t0, duration, share,
                                               conns, batch, tag, w), daemon=True)
        p.start()
        pipes.append(r)
        ps.append(p)
    res = []
    limit = t0 + duration + 120
    for r, p in zip(pipes, ps):
        if not r.poll(max(1, limit - time.time())):
            p.kill()
            raise RuntimeError("load generator did not finish in time")
        res.append(r.recv())
        p.join(5)
    fatal = [x["fatal"] for x in res if "fatal" in x]
    if fatal:
        raise RuntimeError(f"load generator failed: {fatal}")
    out = {"t0": t0, "ok": sum(x["ok"] for x in res), "err": sum(x["err"] for x in res),
           "requests": sum(x["requests"] for x in res), "last_done": max(x["last_done"] for x in res),
           "max_late": max(x["max_late"] for x in res), "gen_cpu_s": sum(x["cpu_s"] for x in res),
           "resp_p99": max((x["resp_p99"] or 0) for x in res), "resp_p50": max((x["resp_p50"] or 0) for x in res),
           "errors": [e for x in res for e in x["errors"]][:5], "statuses": {}}
    for x in res:
        for k, v in x["statuses"].items():
            out["statuses"][k] = out["statuses"].get(k, 0) + v
    return out


# ---------------------------------------------------------------------------------------------
# The two servers


class Server:
    name = "?"
    token = None

    def _wait(self, path, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); log: {self.log}\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.proc.kill()  # not yet in the cleanup list
        self.proc.wait()
        raise RuntimeError(f"{self.name} on port {self.port} did not become ready; log: {self.log}\n{self.tail()}")

    def tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def get(self, path, timeout):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def active_gauge(self):
        """Active alerts as the server's own /metrics counts them, if it exports such a gauge."""
        try:
            text = self.get("/metrics", 30).decode()
        except (OSError, urllib.error.URLError):
            return None
        m = re.search(self.ACTIVE_RE, text, re.M)
        return int(float(m.group(1))) if m else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


class Alertmanager(Server):
    name = "alertmanager"
    ACTIVE_RE = r'^alertmanager_alerts\{state="active"\} (\S+)$'

    def __init__(self, tmp, label, hook_port, group_wait):
        d = tempfile.mkdtemp(prefix=f"am-{label}-", dir=tmp)
        cfg = os.path.join(d, "alertmanager.yml")
        with open(cfg, "w") as f:
            f.write(f"""route:
  receiver: hook
  group_by: [alertname, instance]
  group_wait: {group_wait}
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{hook_port}/
        send_resolved: true
""")
        self.port = free_port()
        self.log = os.path.join(tmp, f"{os.path.basename(d)}.log")
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen([AM_BIN, f"--config.file={cfg}", f"--storage.path={d}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                                      "--log.level=warn"], stdout=self.logf, stderr=self.logf)
        self._wait("/-/ready")


class Steward(Server):
    name = "steward"
    ACTIVE_RE = r'^steward_alerts\{state="active"\} (\S+)$'

    def __init__(self, tmp, label, hook_port, group_wait):
        self.port = free_port()
        d = tempfile.mkdtemp(prefix=f"steward-{label}-", dir=tmp)  # a fresh store every time
        data = os.path.join(d, "data")
        cfg = os.path.join(d, "steward.toml")
        with open(cfg, "w") as f:
            f.write(f"""[log]
level = "warn"

[alerting]
[alerting.route]
receiver = "hook"
group_by = ["alertname", "instance"]
group_wait = "{group_wait}"
group_interval = "1s"
repeat_interval = "4h"

[[alerting.receivers]]
name = "hook"
channels = ["hook"]

[[alerting.channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{hook_port}/"
""")
        self.log = os.path.join(tmp, f"{os.path.basename(d)}.log")
        self.logf = open(self.log, "w")
        env = dict(os.environ, STEWARD_LOG=os.environ.get("BENCH_STEWARD_LOG", "warn"))
        env.pop("STEWARD_TOKEN", None)
        self.proc = subprocess.Popen([BIN, "up", "--listen", f"127.0.0.1:{self.port}", "--data", data, "--config", cfg],
                                     stdout=self.logf, stderr=self.logf, env=env)
        self._wait("/v1/sys/health")
        token_file = os.path.join(data, "root-token")
        end = time.time() + 30
        while not os.path.exists(token_file) and time.time() < end:
            time.sleep(0.1)
        with open(token_file) as f:
            self.token = f.read().strip()


SIDES = {"alertmanager": Alertmanager, "steward": Steward}


# ---------------------------------------------------------------------------------------------
# Measurements


def wait_notified(recv, expected, until):
    """Polls the receiver until `expected` distinct alerts arrived or `until`."""
    while True:
        n, _ = recv.call("count")
        if n >= expected or time.time() >= until:
            return n
        time.sleep(0.2)


def warm_up(srv, recv, args):
    """One request, notified, before the measurement (connections, first group)."""
    recv.call("reset")
    g = generate(srv.port, srv.token, total=args.batch, duration=30, procs=1, conns=1, batch=args.batch, tag="warm")
    if g["err"]:
        raise RuntimeError(f"{srv.name}: warm-up POST failed: {g['statuses']} {g['errors']}\n{srv.tail()}")
    n = wait_notified(recv, args.batch, time.time() + 15)
    if n < args.batch:
        raise RuntimeError(f"{srv.name}: warm-up alerts not notified within 15 s ({n}/{args.batch}); log:\n{srv.tail()}")
    recv.call("reset")


def step(side, rate, args, tmp, recv, cleanup):
    srv = SIDES[side](tmp, f"{rate}", recv.port, args.group_wait)
    cleanup.push(f"{side} ({rate}/s)", srv.stop)
    try:
        warm_up(srv, recv, args)
        cpu0, sys0, recv0, me0 = proc_cpu(srv.proc.pid), system_cpu(), proc_cpu(recv.proc.pid), time.process_time()
        g = generate(srv.port, srv.token, rate=rate, duration=args.duration, procs=args.gen_procs, conns=args.conns,
                     batch=args.batch, tag=f"r{rate}")
        cpu_load = proc_cpu(srv.proc.pid) - cpu0
        recv_cpu = proc_cpu(recv.proc.pid) - recv0
        other = system_cpu() - sys0 - cpu_load - recv_cpu - g["gen_cpu_s"] - (time.process_time() - me0)
        notified = wait_notified(recv, g["ok"], g["last_done"] + args.drain)
        s = recv.call("stats", g["ok"])
        cpu = proc_cpu(srv.proc.pid) - cpu0
        mem = proc_status(srv.proc.pid)
        alive = srv.proc.poll() is None
    finally:
        srv.stop()
        cleanup.stack.pop()
    span = max(g["last_done"] - g["t0"], args.duration)
    accepted = g["ok"] / span
    reasons = []
    if accepted < 0.95 * rate:
        reasons.append("ingest<95%")
    if g["err"]:
        reasons.append(f"{g['err']} rejected")
    if notified < g["ok"]:
        reasons.append(f"{g['ok'] - notified} not notified")
    if s["p99"] > SLO:
        reasons.append("p99>1s")
    if not alive:
        reasons.append("server died")
    return {"offered": rate, "accepted_per_s": accepted, "posted": g["ok"] + g["err"], "accepted": g["ok"],
            "rejected": g["err"], "statuses": g["statuses"], "errors": g["errors"], "requests": g["requests"],
            "post_p50_ms": g["resp_p50"] * 1000 if g["resp_p50"] else None,
            "post_p99_ms": g["resp_p99"] * 1000 if g["resp_p99"] else None, "gen_max_late_s": g["max_late"],
            "gen_cpu_s": g["gen_cpu_s"], "span_s": span, "notified": notified, "notifications": s["notifications"],
            "lat_p50_s": s["p50"], "lat_p90_s": s["p90"], "lat_p99_s": s["p99"], "lat_max_s": s["max"],
            "over_1s": s["over_slo"], "server_cpu_s": cpu, "server_cpu_during_load_s": cpu_load,
            "receiver_cpu_s": recv_cpu, "other_cpu_s": other,
            "rss_mib": mem.get("VmRSS"), "hwm_mib": mem.get("VmHWM"), "pass": not reasons, "why": reasons}


def fmt_s(x):
    return "inf" if x == math.inf else f"{x * 1000:.0f}"


def print_step(side, r):
    if "error" in r:
        print(f"[{side}] {r['offered']:>7}/s offered  FAIL: {r['error']}", flush=True)
        return
    print(f"[{side}] {r['offered']:>7}/s offered  {r['accepted_per_s']:>9.0f}/s accepted  "
          f"notified {r['notified']}/{r['accepted']} in {r['notifications']} webhooks  "
          f"latency ms p50 {fmt_s(r['lat_p50_s'])} p99 {fmt_s(r['lat_p99_s'])} max {fmt_s(r['lat_max_s'])}  "
          f"POST p99 {r['post_p99_ms'] or 0:.0f} ms  server CPU {r['server_cpu_during_load_s']:.1f} s "
          f"gen CPU {r['gen_cpu_s']:.1f} s receiver CPU {r['receiver_cpu_s']:.1f} s other CPU {r['other_cpu_s']:.1f} s  RSS {r['rss_mib']:.0f} MiB  "
          f"{'PASS' if r['pass'] else 'FAIL: ' + ', '.join(r['why'])}", flush=True)
    if r["errors"]:
        print(f"[{side}]   errors: {r['errors']}", flush=True)


def part_ingest(sides, args, tmp, recv, cleanup):
    """Steps of offered load, the sides interleaved at each step (so both see the same
    background); a side stops at its first step that fails --retries + 1 times."""
    rows = {side: [] for side in sides}
    stopped = set()
    for rate in args.steps:
        for side in sides:
            if side in stopped:
                continue
            for attempt in range(1, args.retries + 2):
                try:
                    r = step(side, rate, args, tmp, recv, cleanup)
                except (RuntimeError, OSError) as e:  # a broken server fails its step, not the run
                    r = {"offered": rate, "pass": False, "why": [f"error: {e}"], "error": str(e)}
                r["attempt"] = attempt
                rows[side].append(r)
                print_step(side, r)
                if r["pass"]:
                    break
            if not r["pass"]:
                stopped.add(side)
        if len(stopped) == len(sides):
            break
    out = {}
    for side in sides:
        passed = [r["offered"] for r in rows[side] if r["pass"]]
        out[side] = {"steps": rows[side], "sustained": max(passed) if passed else 0,
                     "ceiling_reached": side not in stopped}
    return out


def part_memory(side, args, tmp, recv, cleanup):
    srv = SIDES[side](tmp, "memory", recv.port, args.group_wait)
    cleanup.push(f"{side} (memory)", srv.stop)
    try:
        idle = proc_status(srv.proc.pid)
        warm_up(srv, recv, args)
        t = time.time()
        g = generate(srv.port, srv.token, total=args.alerts - args.batch, duration=600, procs=args.gen_procs, conns=args.conns,
                     batch=args.batch, tag="mem")
        post_s = g["last_done"] - g["t0"]
        # The warm-up request's alerts were notified before the receiver was reset.
        n = wait_notified(recv, args.alerts - args.batch, time.time() + 300) + args.batch
        notified_s = time.time() - t
        time.sleep(args.settle)
        # What holding the alerts costs while nothing happens (timers, evaluation passes).
        c0 = proc_cpu(srv.proc.pid)
        time.sleep(args.idle_window)
        idle_cpu = (proc_cpu(srv.proc.pid) - c0) / args.idle_window
        mem = proc_status(srv.proc.pid)
        gauge = srv.active_gauge()
        t = time.time()
        try:
            listed = json.loads(srv.get("/api/v2/alerts", args.get_timeout))
            listed = len(listed) if isinstance(listed, list) else len(listed.get("alerts", listed.get("data", [])))
        except (OSError, urllib.error.URLError, ValueError) as e:
            listed = f"GET failed: {e!r}"
        get_s = time.time() - t
        after_get = proc_status(srv.proc.pid)
    finally:
        srv.stop()
        cleanup.stack.pop()
    out = {"alerts": args.alerts, "accepted": g["ok"] + args.batch, "rejected": g["err"], "errors": g["errors"], "post_s": post_s,
           "notified": n, "notified_after_s": notified_s, "rss_idle_mib": idle["VmRSS"], "rss_mib": mem["VmRSS"],
           "hwm_mib": mem["VmHWM"], "idle_cpu_cores": idle_cpu, "active_gauge": gauge, "listed": listed, "get_s": get_s, "rss_after_get_mib": after_get["VmRSS"],
           "hwm_after_get_mib": after_get["VmHWM"]}
    print(f"[{side}] memory: {out['accepted']} accepted in {post_s:.1f} s, {n} notified after {notified_s:.1f} s; "
          f"VmRSS {mem['VmRSS']:.0f} MiB (at start {idle['VmRSS']:.0f}), VmHWM {mem['VmHWM']:.0f} MiB; "
          f"CPU while holding them idle {idle_cpu * 100:.1f}% of a core; "
          f"/metrics active {gauge}; GET /api/v2/alerts listed {listed} in {get_s:.1f} s (RSS after {after_get['VmRSS']:.0f} MiB)", flush=True)
    return out


def generator_ceiling(recv, args):
    """The generator unpaced against the receiver (a trivial Python server): alerts/s."""
    recv.call("reset")
    g = generate(recv.port, None, duration=5, procs=args.gen_procs, conns=args.conns, batch=args.batch, tag="ceil")
    recv.call("reset")
    rate = g["ok"] / (g["last_done"] - g["t0"])
    print(f"generator ceiling (unpaced, {args.gen_procs} procs x {args.conns} conns, batch {args.batch}, "
          f"against the Python receiver): {rate:.0f} alerts/s", flush=True)
    return rate


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=list(SIDES))
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--steps", default=DEFAULT_STEPS, help="offered alerts/s, comma separated")
    ap.add_argument("--duration", type=float, default=10, help="seconds per step")
    ap.add_argument("--retries", type=int, default=1, help="reruns of a failed step before a side stops")
    ap.add_argument("--drain", type=float, default=5, help="seconds after the last POST to wait for notifications")
    ap.add_argument("--alerts", type=int, default=100_000, help="active alerts for the memory part")
    ap.add_argument("--settle", type=float, default=5, help="seconds after the last notification before reading memory")
    ap.add_argument("--get-timeout", type=float, default=120, help="for GET /api/v2/alerts after the memory reading")
    ap.add_argument("--idle-window", type=float, default=10, help="seconds of idle CPU measured with the alerts held")
    ap.add_argument("--batch", type=int, default=64, help="alerts per POST (Prometheus sends up to 64)")
    ap.add_argument("--gen-procs", type=int, default=2)
    ap.add_argument("--conns", type=int, default=4, help="keep-alive connections per generator process")
    ap.add_argument("--group-wait", default="100ms")
    args = ap.parse_args()
    args.steps = [int(x) for x in args.steps.split(",")]
    sides = [args.only] if args.only else list(SIDES)
    if not os.path.exists(AM_BIN) and "alertmanager" in sides:
        raise SystemExit(f"{AM_BIN} is missing: apt-get install -y prometheus-alertmanager")
    if "steward" in sides and not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "-p", "steward"], cwd=ROOT, check=True)

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpus": os.cpu_count(), "load_before": loadavg(),
               "steward": BIN, "alertmanager": AM_BIN, "group_wait": args.group_wait, "batch": args.batch,
               "generator": f"{args.gen_procs} procs x {args.conns} conns", "duration": args.duration}
    v = subprocess.run([AM_BIN, "--version"], capture_output=True, text=True)
    am_version = (v.stdout + v.stderr).strip().split("\n")[0]
    results["alertmanager_version"] = am_version
    print(f"load average before: {results['load_before']}; {am_version}", flush=True)
    cleanup = Cleanup()
    tmp = tempfile.mkdtemp(prefix="steward-bench-alert-")
    cleanup.push("temp dir", lambda: shutil.rmtree(tmp, ignore_errors=True))
    try:
        recv = Receiver()
        cleanup.push("receiver", recv.stop)
        results["generator_ceiling"] = generator_ceiling(recv, args)
        if not args.skip_ingest:
            for side, x in part_ingest(sides, args, tmp, recv, cleanup).items():
                results[f"ingest_{side}"] = x
        for side in sides:
            if not args.skip_memory:
                try:
                    results[f"memory_{side}"] = part_memory(side, args, tmp, recv, cleanup)
                except (RuntimeError, OSError) as e:
                    print(f"[{side}] memory: FAIL {e}", flush=True)
                    results[f"memory_{side}_error"] = str(e)
        results["load_after"] = loadavg()
        keep = os.environ.get("BENCH_KEEP_LOGS")
        if keep:
            os.makedirs(keep, exist_ok=True)
            for f in os.listdir(tmp):
                if f.endswith(".log"):
                    shutil.copy(os.path.join(tmp, f), keep)
    finally:
        cleanup.run()
    print(json.dumps(results, indent=2, default=str))
    print_summary(results)


def print_summary(results):
    print()
    print(f"group_wait {results['group_wait']}, group_interval 1s, batch {results['batch']} alerts/POST, "
          f"generator {results['generator']}, ceiling {results['generator_ceiling']:.0f} alerts/s")
    for side in SIDES:
        x = results.get(f"ingest_{side}")
        if not x:
            continue
        print(f"{side}: sustained ingest {x['sustained']} alerts/s"
              + (" (highest step passed: more may be possible)" if x["ceiling_reached"] else ""))
        print(f"  {'offered/s':>10}{'accepted/s':>11}{'notified':>17}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
              f"{'srv CPU s':>10}{'gen CPU s':>10}{'rcv CPU s':>10}{'other CPU':>10}{'RSS MiB':>8}  result")
        for r in x["steps"]:
            if "error" in r:
                print(f"  {r['offered']:>10}  FAIL {r['error'][:200]}")
                continue
            print(f"  {r['offered']:>10}{r['accepted_per_s']:>11.0f}{r['notified']:>9}/{r['accepted']:<7}"
                  f"{fmt_s(r['lat_p50_s']):>8}{fmt_s(r['lat_p99_s']):>8}{fmt_s(r['lat_max_s']):>8}"
                  f"{r['server_cpu_during_load_s']:>10.1f}{r['gen_cpu_s']:>10.1f}{r['receiver_cpu_s']:>10.1f}{r['other_cpu_s']:>10.1f}{r['rss_mib']:>8.0f}  "
                  f"{'pass' if r['pass'] else 'FAIL ' + ', '.join(r['why'])}"
                  + (f" (attempt {r['attempt']})" if r.get("attempt", 1) > 1 else ""))
    a, s = results.get("ingest_alertmanager"), results.get("ingest_steward")
    if a and s and a["sustained"]:
        ratio = s["sustained"] / a["sustained"]
        print(f"sustained ingest steward / alertmanager: {ratio:.2f}x (goal >= 10x -> {'met' if ratio >= 10 else 'NOT met'})")
    for side in SIDES:
        m = results.get(f"memory_{side}")
        if m:
            print(f"{side}: {m['alerts']} active alerts: VmRSS {m['rss_mib']:.0f} MiB, VmHWM {m['hwm_mib']:.0f} MiB "
                  f"idle CPU {m['idle_cpu_cores'] * 100:.1f}% of a core (notified {m['notified']}, /metrics active {m['active_gauge']}, GET listed {m['listed']} in {m['get_s']:.1f} s)")
    a, s = results.get("memory_alertmanager"), results.get("memory_steward")
    if a and s:
        ratio = s["rss_mib"] / a["rss_mib"]
        print(f"memory steward / alertmanager (VmRSS): {ratio:.2f}x (goal <= 1x -> {'met' if ratio <= 1 else 'NOT met'})")
    print(f"load average before {results['load_before']}, after {results.get('load_after')}")


if __name__ == "__main__":
    main()
