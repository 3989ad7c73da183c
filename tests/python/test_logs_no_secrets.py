"""No secret value and no token ever reaches the logs (at debug level) or the store in the
clear. A broad workload writes distinctive "canary-<uuid>" values through every route that
touches values (writes, reads, rollbacks, references, templates, exports, failing requests),
creates and uses child tokens, then stops the server; everything it printed, every file in its
data directory and (for PostgreSQL) a data-only dump are searched for each canary."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field

import pytest

from steward_testlib import StewardServer

MAX_VALUE_BYTES = 512 * 1024


def canary() -> str:
    return f"canary-{uuid.uuid4()}"


def forms(secret: str) -> list:
    """Byte strings that would betray `secret`: itself, its unique part, and simple encodings."""
    out = [secret.encode()]
    if secret.startswith("canary-"):
        out.append(secret[len("canary-"):].encode())
    out.append(base64.b64encode(secret.encode()))
    out.append(secret.encode().hex().encode())
    return out


@dataclass
class Evidence:
    server: StewardServer
    canaries: list = field(default_factory=list)
    child_tokens: list = field(default_factory=list)
    request_ids: list = field(default_factory=list)
    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    store_blobs: dict = field(default_factory=dict)  # name -> bytes


def run_workload(s: StewardServer, ev: Evidence, tmp_path) -> None:
    def c() -> str:
        v = canary()
        ev.canaries.append(v)
        return v

    def ok(r, status=200):
        assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}"
        rid = r.headers.get("x-request-id")
        if rid:
            ev.request_ids.append(rid)
        return r

    def refused(r, status):
        assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}"
        return r

    # Strings and JSON objects, Steward-style and Vault-style bodies, several versions.
    c0, c1, c2 = c(), c(), c()
    ok(s.write("prod", "app/db_password", c0))
    ok(s.write("prod", "app/db_password", c1))
    obj = {"user": "svc", "password": c(), "nested": {"deep": c()}, "list": [c()]}
    ok(s.write("prod", "app/smtp", obj))
    vault_obj = {"api_key": c(), "region": "eu"}
    ok(s.api("POST", "/v1/secret/data/app/vault_style", json={"data": vault_obj, "options": {"cas": 0}}))
    ok(s.write("staging", "app/other", c2, metadata={"description": "plain metadata", "owner": "team"}))

    # Reads: latest, by version, raw; metadata, listings.
    assert ok(s.read("prod", "app/db_password")).json()["data"]["data"]["value"] == c1
    assert ok(s.read("prod", "app/db_password", version=1)).json()["data"]["data"]["value"] == c0
    assert ok(s.read("prod", "app/smtp")).json()["data"]["data"] == obj
    assert ok(s.read("dev", "app/vault_style")).json()["data"]["data"] == vault_obj
    ok(s.api("GET", "/v1/prod/metadata/app/db_password"))
    ok(s.api("LIST", "/v1/prod/metadata/app"))
    ok(s.api("GET", "/v1/prod/metadata/?list=true"))

    # Rollback, delete, undelete, destroy.
    ok(s.api("POST", "/v1/prod/rollback/app/db_password", json={"version": 1}))
    assert ok(s.read("prod", "app/db_password")).json()["data"]["data"]["value"] == c0
    ok(s.api("DELETE", "/v1/prod/data/app/db_password"), 204)
    ok(s.api("POST", "/v1/prod/undelete/app/db_password", json={"versions": [3]}), 204)
    ok(s.write("prod", "app/short_lived", c()))
    ok(s.api("POST", "/v1/prod/destroy/app/short_lived", json={"versions": [1]}), 204)
    ok(s.write("prod", "app/purged", c()))
    ok(s.api("DELETE", "/v1/prod/metadata/app/purged"), 204)

    # References, templates, export.
    ok(s.write("prod", "app/dsn", "postgres://svc:${secret:prod/app/db_password}@db/app"))
    ok(s.write("prod", "app/combo", {"smtp_pw": "${secret:prod/app/smtp#password}", "plain": "x"}))
    dsn = ok(s.read("prod", "app/dsn")).json()["data"]["data"]["value"]
    assert c0 in dsn
    ok(s.api("GET", "/v1/prod/data/app/dsn?resolve=false"))
    assert ok(s.read("prod", "app/combo")).json()["data"]["data"]["smtp_pw"] == obj["password"]
    tpl = "db=${secret:prod/app/db_password}\nkey=${secret:dev/app/vault_style#api_key}\n"
    rendered = ok(s.api("POST", "/v1/sys/template/render", json={"template": tpl})).json()["data"]["rendered"]
    assert c0 in rendered and vault_obj["api_key"] in rendered
    exported = ok(s.api("GET", "/v1/sys/export/prod?prefix=app/")).json()["data"]["secrets"]
    assert exported["app/db_password"] == c0

    # Failing requests that carry secret values.
    refused(s.api("PUT", "/v1/prod/data/app/db_password", json={"value": c(), "options": {"cas": 1}}), 409)
    refused(s.write("prod", "app/huge", c() + "x" * (MAX_VALUE_BYTES + 10)), 413)
    refused(s.write("prod", "app/huger", c() + "x" * (3 * MAX_VALUE_BYTES)), 413)
    refused(s.api("PUT", "/v1/prod/data/app/badjson", data=('{"value": "' + c() + '"').encode(),
                  headers={"Content-Type": "application/json"}), 400)
    refused(s.api("PUT", "/v1/prod/data/app/unknown", json={"value": c(), "valeu": "typo"}), 400)
    refused(s.api("PUT", "/v1/prod/data/app/both", json={"value": c(), "data": {"k": c()}}), 400)
    refused(s.api("PUT", "/v1/prod/data/app/array", json={"value": [c()]}), 400)
    refused(s.write("nosuchenv", "app/x", c()), 404)
    refused(s.api("PUT", "/v1/prod/data/app/%2E%2E/escape", json={"value": c()}), 400)
    refused(s.write("prod", "app/x", c(), token=c()), 403)  # the bogus token is a canary too
    refused(s.api("POST", "/v1/sys/template/render", json={"template": c() + " ${secret:prod/app/missing}"}), 404)
    refused(s.api("POST", "/v1/sys/template/render", json={"template": "${secret:" + c()}), 400)
    ok(s.write("prod", "loops/a", "${secret:prod/loops/b}"))
    ok(s.write("prod", "loops/b", c() + "${secret:prod/loops/a}"))
    refused(s.read("prod", "loops/a"), 400)
    ok(s.api("POST", "/v1/sys/audit-hash", json={"input": c()}))

    # Tokens: create, use, renew, revoke.
    pol = {"rules": [{"env": "prod", "path": "app/**", "capabilities": ["read", "list"]}]}
    ok(s.api("PUT", "/v1/sys/policies/app-read", json=pol), 204)
    for i in range(3):
        auth = ok(s.api("POST", "/v1/auth/token/create",
                        json={"policies": ["app-read"], "ttl": "1h", "display_name": f"child-{i}"})).json()["auth"]
        ev.child_tokens.append(auth)
    t0, t1, t2 = (a["client_token"] for a in ev.child_tokens)
    assert ok(s.read("prod", "app/db_password", token=t0)).json()["data"]["data"]["value"] == c0
    refused(s.write("prod", "app/db_password", c(), token=t0), 403)
    ok(s.api("GET", "/v1/auth/token/lookup-self", token=t0))
    ok(s.api("POST", "/v1/auth/token/renew-self", token=t0, json={"increment": "2h"}))
    ok(s.api("POST", "/v1/auth/token/lookup-accessor", json={"accessor": ev.child_tokens[1]["accessor"]}))
    ok(s.api("LIST", "/v1/auth/token/accessors"))
    ok(s.api("POST", "/v1/auth/token/revoke-self", token=t1), 204)
    refused(s.read("prod", "app/db_password", token=t1), 403)
    ok(s.api("POST", "/v1/auth/token/revoke-accessor", json={"accessor": ev.child_tokens[2]["accessor"]}), 204)
    refused(s.read("prod", "app/db_password", token=t2), 403)
    ok(s.api("GET", "/v1/sys/export/prod?prefix=app/", token=t0))

    # Key rotation re-wraps data keys; values must stay readable and still not leak.
    ok(s.api("POST", "/v1/sys/keys/rotate"))
    ok(s.api("GET", "/v1/sys/keys/status"))
    assert ok(s.read("prod", "app/smtp")).json()["data"]["data"] == obj

    # The CLI path too.
    cli_value = c()
    r = s.cli("secret", "put", "prod/app/from_cli", input=cli_value)
    assert r.returncode == 0, r.stderr
    r = s.cli("secret", "get", "prod/app/from_cli")
    assert r.stdout.strip() == cli_value
    r = s.cli("export", "--env", "prod", "--prefix", "app/", "--format", "json", token=t0)
    assert r.returncode == 0, r.stderr
    r = s.cli("run", "--env", "prod", "--prefix", "app/", "--", "sh", "-c", "test -n \"$FROM_CLI\"")
    assert r.returncode == 0, r.stderr

    # The audit log is intact and searchable by HMAC, never by value.
    verify = ok(s.api("POST", "/v1/sys/audit/verify")).json()["data"]
    assert verify["ok"] is True
    ok(s.api("GET", "/v1/sys/audit/export?limit=10000"))


@pytest.fixture(scope="module")
def evidence(store, module_server_factory, tmp_path_factory) -> Evidence:
    s = module_server_factory.new(store)
    ev = Evidence(server=s)
    run_workload(s, ev, tmp_path_factory.mktemp("workload"))
    ev.exit_code = s.stop()
    ev.stdout = s.stdout_bytes()
    ev.stderr = s.stderr_bytes()
    for f in sorted(s.data.rglob("*")):
        if f.is_file():
            ev.store_blobs[f"data/{f.relative_to(s.data)}"] = f.read_bytes()
    if s.pg is not None:
        ev.store_blobs["pg_dump --data-only"] = s.pg.dump_data()
    yield ev
    s.close()


def find(blob: bytes, secret: str):
    for f in forms(secret):
        if f in blob:
            i = blob.index(f)
            return blob[max(0, i - 200): i + len(f) + 100].decode(errors="replace")
    return None


def test_workload_ran_and_server_stopped_cleanly(evidence):
    assert evidence.exit_code == 0
    assert len(evidence.canaries) >= 25
    # The logs (STEWARD_LOG=debug) carry the requests we made, so we searched the right thing.
    log = evidence.stderr.decode(errors="replace")
    assert "steward is up" in log
    seen = sum(1 for rid in evidence.request_ids if rid in log)
    assert seen >= len(evidence.request_ids) * 0.9, (seen, len(evidence.request_ids))
    if evidence.server.kind == "sqlite":
        assert any(name.startswith("data/steward.db") for name in evidence.store_blobs)
    else:
        assert len(evidence.store_blobs["pg_dump --data-only"]) > 1000
    # Positive control for the store search: paths are not secret and are stored as text.
    assert any(b"app/db_password" in blob for blob in evidence.store_blobs.values())


def test_no_secret_value_in_logs(evidence):
    for stream, blob in (("stderr", evidence.stderr), ("stdout", evidence.stdout)):
        for v in evidence.canaries:
            leak = find(blob, v)
            assert leak is None, f"{v} appears in the server's {stream}: ...{leak}..."


def test_no_secret_value_in_the_store(evidence):
    assert evidence.store_blobs
    for name, blob in evidence.store_blobs.items():
        for v in evidence.canaries:
            leak = find(blob, v)
            assert leak is None, f"{v} is stored in the clear in {name}: ...{leak}..."


def test_child_tokens_never_logged_or_stored(evidence):
    assert len(evidence.child_tokens) == 3
    for auth in evidence.child_tokens:
        tok = auth["client_token"]
        assert tok.encode() not in evidence.stderr, "a child token is in the log"
        assert tok.encode() not in evidence.stdout, "a child token is on stdout"
        for name, blob in evidence.store_blobs.items():
            assert tok.encode() not in blob, f"a child token is stored in the clear in {name}"
        # Its secret part alone neither.
        secret_part = tok.split(".", 1)[-1].encode()
        assert secret_part not in evidence.stderr
        for name, blob in evidence.store_blobs.items():
            assert secret_part not in blob, name
        # The accessor is the public handle: it may appear, and does in the audit log.
        assert auth["accessor"] != tok


def test_root_token_only_in_the_first_start_banner(evidence):
    s = evidence.server
    root = s.token.encode()
    out = evidence.stdout
    # Exactly once, on the line after the banner's "Root token" heading.
    assert out.count(root) == 1, out.decode(errors="replace")
    lines = out.split(b"\n")
    i = next(i for i, l in enumerate(lines) if root in l)
    assert lines[i].strip() == root
    assert lines[i - 1].startswith(b"Root token (shown once"), lines[i - 1]
    assert root not in evidence.stderr
    secret_part = root.split(b".", 1)[-1]
    assert secret_part not in evidence.stderr
    for name, blob in evidence.store_blobs.items():
        if name == "data/root-token":
            assert blob.strip() == root  # the one place it is meant to be
            continue
        assert secret_part not in blob, f"the root token is stored in the clear in {name}"


def test_root_key_not_logged(evidence):
    key_file = evidence.store_blobs.get("data/root.key")
    assert key_file, "no key file"
    key_b64 = key_file.strip().split(b":", 1)[-1]
    assert len(key_b64) >= 40
    assert key_b64 not in evidence.stderr + evidence.stdout
    for name, blob in evidence.store_blobs.items():
        if name != "data/root.key":
            assert key_b64 not in blob, name
