#!/usr/bin/env python3
"""Side-by-side benchmark: authenticated secret reads from Steward vs nginx serving a static
JSON file of the same size, with wrk on loopback, in one run on this machine.

Steward's read path does the full work: token check, policy, decrypt, audit entry (group
committed, fail closed). Runs against the SQLite and PostgreSQL stores and also measures writes
per second. Bounded: each wrk run lasts --duration seconds, and everything binds 127.0.0.1.

Usage: python3 bench/secrets_read.py [--duration 10] [--connections 64] [--threads 2]
Needs: wrk, nginx (apt), a release build (built if missing), PostgreSQL on 127.0.0.1:5432.
"""
import argparse, json, os, re, shutil, signal, subprocess, sys, tempfile, time, urllib.request, uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("STEWARD_BIN", os.path.join(ROOT, "target", "release", "steward"))
PG = "postgres://postgres@127.0.0.1:5432"


def http(method, url, token=None, body=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("X-Vault-Token", token)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def wait_health(base, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            http("GET", base + "/v1/sys/health")
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"server at {base} did not become healthy")


def wrk(url, args, token=None, script=None):
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "--timeout", "5s"]
    if token:
        cmd += ["-H", f"X-Vault-Token: {token}"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = parse_latency(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1))
    p50 = parse_latency(re.search(r"\s50%\s+([\d.]+\w+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non2xx": int(errors.group(1)) if errors else 0}


def parse_latency(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def start_steward(tmp, store_url=None):
    port = free_port()
    data = os.path.join(tmp, f"data-{port}")
    cmd = [BIN, "up", "--listen", f"127.0.0.1:{port}", "--data", data]
    if store_url:
        cmd += ["--store", store_url]
    env = dict(os.environ, STEWARD_LOG="warn")
    if os.environ.get("BENCH_CONFIG"):
        cmd += ["--config", os.environ["BENCH_CONFIG"]]
    log = open(os.path.join(tmp, f"steward-{port}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_health(base)
    token = open(os.path.join(data, "root-token")).read().strip()
    return proc, base, token


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_nginx(tmp, body):
    port = free_port()
    os.chmod(tmp, 0o755)  # nginx workers run unprivileged and must reach the file
    root = os.path.join(tmp, "www")
    os.makedirs(os.path.join(root, "v1", "secret", "data"), exist_ok=True)
    with open(os.path.join(root, "v1", "secret", "data", "bench"), "wb") as f:
        f.write(body)
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  default_type application/json;
  client_body_temp_path {tmp}/ncb; proxy_temp_path {tmp}/np; fastcgi_temp_path {tmp}/nf;
  uwsgi_temp_path {tmp}/nu; scgi_temp_path {tmp}/ns;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    subprocess.run(["nginx", "-c", conf, "-p", tmp], check=True)
    time.sleep(0.5)
    return port, conf


def stop_nginx(tmp, conf):
    subprocess.run(["nginx", "-c", conf, "-p", tmp, "-s", "stop"], check=False)


def pg_db():
    name = "steward_bench_" + uuid.uuid4().hex[:8]
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", f"CREATE DATABASE {name}"], check=True)
    return name


def drop_db(name):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)


def bench_store(label, tmp, args, store_url, results):
    proc, base, token = start_steward(tmp, store_url)
    try:
        value = "v" * 48
        http("PUT", base + "/v1/secret/data/bench", token, {"data": {"password": value}})
        body = http("GET", base + "/v1/secret/data/bench", token)
        results[f"{label}_body_bytes"] = len(body)
        results[f"{label}_read"] = wrk(base + "/v1/secret/data/bench", args, token)
        script = os.path.join(tmp, "put.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "PUT"\nwrk.body = \'{"data":{"password":"' + value + '"}}\'\n'
                    'wrk.headers["Content-Type"] = "application/json"\n'
                    'local n = 0\nrequest = function()\n  n = n + 1\n'
                    '  return wrk.format(nil, "/v1/secret/data/w/" .. (n % 1000))\nend\n')
        results[f"{label}_write"] = wrk(base + "/v1/secret/data/w/0", args, token, script)
        verify = json.loads(http("POST", base + "/v1/sys/audit/verify", token))["data"]
        results[f"{label}_audit_entries"] = verify["entries"]
        results[f"{label}_audit_ok"] = verify["ok"]
        return body
    finally:
        stop(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install -y wrk nginx-light")
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "-p", "steward"], cwd=ROOT, check=True)
    results = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "wrk": f"-t{args.threads} -c{args.connections} -d{args.duration}s"}
    with tempfile.TemporaryDirectory() as tmp:
        body = bench_store("sqlite", tmp, args, None, results)
        if not args.skip_postgres:
            db = pg_db()
            try:
                bench_store("postgres", tmp, args, f"{PG}/{db}", results)
            finally:
                drop_db(db)
        port, conf = start_nginx(tmp, body)
        try:
            results["nginx_read"] = wrk(f"http://127.0.0.1:{port}/v1/secret/data/bench", args)
        finally:
            stop_nginx(tmp, conf)
    n = results["nginx_read"]["rps"]
    print(json.dumps(results, indent=2))
    print()
    print(f"{'target':<22}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'vs nginx':>10}")
    rows = [("nginx static", results["nginx_read"])]
    for label in ("sqlite", "postgres"):
        if f"{label}_read" in results:
            rows += [(f"steward {label} read", results[f"{label}_read"]), (f"steward {label} write", results[f"{label}_write"])]
    for name, r in rows:
        print(f"{name:<22}{r['rps']:>12.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['rps'] / n:>10.2f}")


if __name__ == "__main__":
    main()
