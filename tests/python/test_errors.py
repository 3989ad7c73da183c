"""Error answers: one body shape with a stable code, request ids, limits, and an audit entry for
every refused request."""

from __future__ import annotations

import http.client
import json
import re
import time
import uuid

import pytest

MAX_VALUE_BYTES = 512 * 1024


def rid() -> str:
    return f"req-{uuid.uuid4().hex}"


def assert_error(r, status: int, code: str, request_id: str | None = None) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text[:500]}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) >= {"error"}, body
    err = body["error"]
    assert err["code"] == code, body
    assert isinstance(err["message"], str) and err["message"], body
    assert isinstance(err["request_id"], str) and err["request_id"], body
    # The id in the body is the id in the header.
    assert r.headers.get("x-request-id") == err["request_id"]
    # Vault clients read `errors`.
    assert body.get("errors") == [err["message"]]
    if request_id is not None:
        assert err["request_id"] == request_id
    return err


class Audited:
    """Counts audit entries around a block and finds the entry of a given request id.

    Each export is itself audited (after it read the log), so one refused request between two
    exports adds exactly two entries: the refused request and the first export."""

    def __init__(self, server, request_id: str, outcome: str):
        self.server = server
        self.request_id = request_id
        self.outcome = outcome

    def __enter__(self):
        self.before = len(self.server.audit_lines())
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            return False
        lines = self.server.audit_lines()
        assert len(lines) == self.before + 2, (self.before, lines[self.before :])
        mine = [l for l in lines if l.get("request_id") == self.request_id]
        assert len(mine) == 1, mine
        assert mine[0]["outcome"] == self.outcome, mine[0]
        return False


def test_invalid_json_body(server):
    r_id = rid()
    with Audited(server, r_id, "invalid_json"):
        r = server.api(
            "PUT",
            "/v1/secret/data/errors/invalid-json",
            data=b'{"value": "x"',
            headers={"Content-Type": "application/json", "X-Request-Id": r_id},
        )
        assert_error(r, 400, "invalid_json", r_id)
    assert server.read("dev", "errors/invalid-json").status_code == 404


def test_unknown_field(server):
    r_id = rid()
    with Audited(server, r_id, "invalid_json"):
        r = server.api(
            "PUT",
            "/v1/secret/data/errors/unknown-field",
            json={"value": "x", "valeu": "typo"},
            headers={"X-Request-Id": r_id},
        )
        err = assert_error(r, 400, "invalid_json", r_id)
    assert "valeu" in err["message"]
    assert server.read("dev", "errors/unknown-field").status_code == 404


def test_request_id_is_echoed_or_assigned(server):
    mine = rid()
    r = server.api("PUT", "/v1/secret/data/errors/rid", json={"value": "v"}, headers={"X-Request-Id": mine})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == mine
    assert r.json()["request_id"] == mine

    r = server.api("GET", "/v1/secret/data/errors/rid-missing", headers={"X-Request-Id": mine})
    assert_error(r, 404, "not_found", mine)

    # No id (or an unusable one): the server makes one.
    r = server.api("GET", "/v1/secret/data/errors/rid-missing")
    err = assert_error(r, 404, "not_found")
    assert len(err["request_id"]) >= 16
    r = server.api("GET", "/v1/secret/data/errors/rid-missing", headers={"X-Request-Id": "bad id with spaces"})
    err = assert_error(r, 404, "not_found")
    assert err["request_id"] != "bad id with spaces"


@pytest.mark.parametrize(
    "size,code",
    [
        (MAX_VALUE_BYTES + 1024, "value_too_large"),  # past the value limit, within the body limit
        (3 * MAX_VALUE_BYTES, "body_too_large"),  # past the body limit too
    ],
)
def test_oversize_value_is_refused_and_not_written(server, size, code):
    path = f"errors/big-{uuid.uuid4().hex[:8]}"
    r_id = rid()
    with Audited(server, r_id, code):
        r = server.api("PUT", f"/v1/secret/data/{path}", json={"value": "x" * size}, headers={"X-Request-Id": r_id})
        assert_error(r, 413, code, r_id)
    assert server.read("dev", path).status_code == 404
    assert server.api("GET", f"/v1/secret/metadata/{path}").status_code == 404

    # An existing secret keeps its value and version.
    assert server.write("dev", path, "small").status_code == 200
    r = server.api("PUT", f"/v1/secret/data/{path}", json={"value": "y" * size})
    assert r.status_code == 413
    d = server.read("dev", path).json()["data"]
    assert d["data"] == {"value": "small"}
    assert d["metadata"]["version"] == 1


def test_value_at_the_limit_is_accepted(server):
    # The limit applies to the JSON encoding of the value: a string of N bytes is N + 2.
    path = f"errors/limit-{uuid.uuid4().hex[:8]}"
    r = server.api("PUT", f"/v1/secret/data/{path}", json={"value": "z" * (MAX_VALUE_BYTES - 2)})
    assert r.status_code == 200, r.text[:300]
    assert len(server.read("dev", path).json()["data"]["data"]["value"]) == MAX_VALUE_BYTES - 2


def raw_request(server, method: str, path: str, body: dict | None, headers: dict):
    """http.client, so `..` reaches the server unnormalized."""
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        h = {"X-Vault-Token": server.token, "Content-Type": "application/json", **headers}
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        resp = c.getresponse()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), json.loads(resp.read() or b"null")
    finally:
        c.close()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/secret/data/errors/../escape",
        "/v1/secret/data/../escape",
        "/v1/secret/data/errors/%2E%2E/escape",
        "/v1/prod/data/errors/./dot",
        "/v1/secret/data/errors//double",
    ],
)
def test_invalid_path(server, path):
    r_id = rid()
    with Audited(server, r_id, "invalid_path"):
        status, headers, body = raw_request(server, "PUT", path, {"value": "x"}, {"X-Request-Id": r_id})
        assert status == 400, body
        assert body["error"]["code"] == "invalid_path", body
        assert body["error"]["request_id"] == r_id
        assert headers["x-request-id"] == r_id
    # Reads are refused the same way.
    status, _, body = raw_request(server, "GET", path, None, {})
    assert status == 400 and body["error"]["code"] == "invalid_path", body
    # Nothing was written at the normalized path.
    assert server.read("dev", "escape").status_code == 404
    assert server.read("dev", "errors/escape").status_code == 404


def test_unknown_mount(server):
    r_id = rid()
    with Audited(server, r_id, "unknown_mount"):
        r = server.api("PUT", "/v1/nosuchenv/data/errors/x", json={"value": "x"}, headers={"X-Request-Id": r_id})
        err = assert_error(r, 404, "unknown_mount", r_id)
    assert "nosuchenv" in err["message"]
    r = server.api("GET", "/v1/nosuchenv/data/errors/x")
    assert_error(r, 404, "unknown_mount")


def test_unknown_route_and_bad_token(server):
    r = server.api("GET", "/v1/secret/no-such-op/errors/x")
    assert_error(r, 404, "unknown_route")
    r = server.api("GET", "/not-an-api-route")
    assert_error(r, 404, "unknown_route")
    r_id = rid()
    with Audited(server, r_id, "invalid_token"):
        r = server.api("GET", "/v1/secret/data/errors/x", token="stw.not-a-real-token", headers={"X-Request-Id": r_id})
        assert_error(r, 403, "invalid_token", r_id)
    r = server.api("GET", "/v1/secret/data/errors/x", token=None)
    assert_error(r, 403, "missing_token")


def make_token(server, **body) -> dict:
    r = server.api("POST", "/v1/auth/token/create", json={"policies": [], **body})
    assert r.status_code == 200, r.text
    return r.json()["auth"]


def test_expired_token(server):
    auth = make_token(server, ttl="1s")
    token = auth["client_token"]
    assert server.api("GET", "/v1/auth/token/lookup-self", token=token).status_code == 200
    time.sleep(2)
    r_id = rid()
    with Audited(server, r_id, "token_expired"):
        r = server.api("GET", "/v1/secret/data/errors/x", token=token, headers={"X-Request-Id": r_id})
        assert_error(r, 403, "token_expired", r_id)
    r = server.api("PUT", "/v1/secret/data/errors/expired-write", token=token, json={"value": "x"})
    assert_error(r, 403, "token_expired")
    assert server.read("dev", "errors/expired-write").status_code == 404


def test_revoked_token(server):
    auth = make_token(server, ttl="1h")
    token = auth["client_token"]
    assert server.api("GET", "/v1/auth/token/lookup-self", token=token).status_code == 200
    r = server.api("POST", "/v1/auth/token/revoke-accessor", json={"accessor": auth["accessor"]})
    assert r.status_code == 204, r.text
    r_id = rid()
    with Audited(server, r_id, "token_revoked"):
        r = server.api("GET", "/v1/auth/token/lookup-self", token=token, headers={"X-Request-Id": r_id})
        assert_error(r, 403, "token_revoked", r_id)
    r = server.api("PUT", "/v1/prod/data/errors/revoked-write", token=token, json={"value": "x"})
    assert_error(r, 403, "token_revoked")
    assert server.read("prod", "errors/revoked-write").status_code == 404


def test_forbidden_is_audited(server):
    auth = make_token(server, ttl="1h")
    r_id = rid()
    with Audited(server, r_id, "permission_denied"):
        r = server.api(
            "PUT", "/v1/prod/data/errors/forbidden", token=auth["client_token"], json={"value": "x"},
            headers={"X-Request-Id": r_id},
        )
        assert_error(r, 403, "permission_denied", r_id)
    assert server.read("prod", "errors/forbidden").status_code == 404


def test_cas_conflict_code(server):
    path = f"errors/cas-{uuid.uuid4().hex[:8]}"
    assert server.write("dev", path, "v1").status_code == 200
    r_id = rid()
    with Audited(server, r_id, "cas_mismatch"):
        r = server.api(
            "PUT", f"/v1/secret/data/{path}", json={"value": "v2", "options": {"cas": 0}},
            headers={"X-Request-Id": r_id},
        )
        assert_error(r, 409, "cas_mismatch", r_id)
    assert server.read("dev", path).json()["data"]["data"] == {"value": "v1"}


def test_method_not_allowed(server):
    r = server.api("PATCH", "/v1/secret/data/errors/x", json={"value": "x"})
    assert_error(r, 405, "method_not_allowed")


# ---------------------------------------------------------------------------------------------
# Concurrency and tokens


def _concurrently(n, fn):
    import threading

    barrier = threading.Barrier(n)
    out = [None] * n

    def run(i):
        barrier.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_concurrent_check_and_set_has_one_winner(server):
    from steward_testlib import http_session

    path = f"errors/race-{uuid.uuid4().hex[:8]}"
    assert server.write("prod", path, "v1").status_code == 200

    def cas_write(i):
        r = http_session().put(
            f"{server.url}/v1/prod/data/{path}",
            json={"value": f"writer-{i}", "options": {"cas": 1}},
            headers={"X-Vault-Token": server.token},
            timeout=30,
        )
        return r.status_code, r.json()

    results = _concurrently(10, cas_write)
    winners = [b for st, b in results if st == 200]
    assert len(winners) == 1, results
    assert all(st == 409 and b["error"]["code"] == "cas_mismatch" for st, b in results if st != 200), results
    d = server.read("prod", path).json()["data"]
    assert d["metadata"]["version"] == 2
    assert d["data"]["value"].startswith("writer-")

    # Plain concurrent writes each get their own version.
    def plain_write(i):
        r = http_session().put(
            f"{server.url}/v1/prod/data/{path}", json={"value": f"plain-{i}"},
            headers={"X-Vault-Token": server.token}, timeout=30,
        )
        assert r.status_code == 200, r.text
        return r.json()["data"]["version"], f"plain-{i}"

    results = _concurrently(8, plain_write)
    versions = sorted(v for v, _ in results)
    assert versions == list(range(3, 11)), versions
    for v, value in results:
        assert server.read("prod", path, version=v).json()["data"]["data"] == {"value": value}


def _ts(s):
    from datetime import datetime, timezone

    # RFC 3339 with nanoseconds: keep microseconds.
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$", s)
    assert m, s
    frac = (m.group(2) or ".0")[1:7].ljust(6, "0")
    return datetime.fromisoformat(f"{m.group(1)}.{frac}").replace(tzinfo=timezone.utc)


def test_child_token_cannot_outlive_its_parent(server):
    name = f"child-ttl-{uuid.uuid4().hex[:6]}"
    pol = {"rules": [{"env": "prod", "path": "**", "capabilities": ["read"]}]}
    assert server.api("PUT", f"/v1/sys/policies/{name}", json=pol).status_code == 204
    assert server.write("prod", "errors/child-ttl", "v").status_code == 200
    parent = make_token(server, policies=[name], ttl="1m", max_ttl="2m")
    r = server.api("POST", "/v1/auth/token/create", token=parent["client_token"],
                   json={"policies": [name], "ttl": "3650d"})
    assert r.status_code in (200, 400, 403), r.text
    if r.status_code != 200:
        return  # refusing is fine
    child = r.json()["auth"]
    assert child["expire_time"], child
    assert _ts(child["expire_time"]) <= _ts(parent["expire_time"]), (child["expire_time"], parent["expire_time"])
    # Renewing cannot push it past the parent either.
    r = server.api("POST", "/v1/auth/token/renew-self", token=child["client_token"], json={"increment": "100h"})
    if r.status_code == 200:
        assert _ts(r.json()["auth"]["expire_time"]) <= _ts(parent["expire_time"]), r.text
    # Revoking the parent revokes the child (and its own children).
    grandchild = server.api("POST", "/v1/auth/token/create", token=child["client_token"],
                            json={"policies": [name], "ttl": "30s"}).json()["auth"]
    assert server.read("prod", "errors/child-ttl", token=grandchild["client_token"]).status_code == 200
    r = server.api("POST", "/v1/auth/token/revoke-accessor", json={"accessor": parent["accessor"]})
    assert r.status_code == 204, r.text
    for t in (parent, child, grandchild):
        r = server.read("prod", "errors/child-ttl", token=t["client_token"])
        assert_error(r, 403, "token_revoked")


def test_written_value_can_be_read_back(server):
    path = f"errors/literal-{uuid.uuid4().hex[:8]}"
    value = "pa$${secret:ss"
    w = server.write("prod", path, value)
    if w.status_code == 400:
        return  # refusing it at write time is consistent too
    assert w.status_code == 200, w.text
    r = server.read("prod", path)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["data"] == {"value": value}


def test_zero_ttl_is_refused_or_usable(server):
    r = server.api("POST", "/v1/auth/token/create", json={"policies": [], "ttl": "0"})
    if r.status_code == 400:
        return
    assert r.status_code == 200, r.text
    token = r.json()["auth"]["client_token"]
    assert server.api("GET", "/v1/auth/token/lookup-self", token=token).status_code == 200
