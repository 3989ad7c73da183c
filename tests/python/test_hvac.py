"""The acceptance test: Steward driven by the real hvac client, as an unchanged Vault KV v2
application would drive it."""

from __future__ import annotations

import uuid

import hvac
import hvac.exceptions as hx
import pytest

# What hvac raises for a check-and-set conflict: Vault answers 400 (InvalidRequest); a 409
# becomes UnexpectedError. Either is a refused write.
CAS_ERRORS = (hx.InvalidRequest, hx.UnexpectedError)


def uniq(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def client(server) -> hvac.Client:
    c = hvac.Client(url=server.url, token=server.token, timeout=30)
    return c


@pytest.fixture(scope="module")
def kv(client):
    return client.secrets.kv.v2


def read(kv, path, mount="secret", version=None):
    return kv.read_secret_version(
        path=path, version=version, mount_point=mount, raise_on_deleted_version=True
    )["data"]


def test_is_authenticated(server, client):
    assert client.is_authenticated() is True
    assert hvac.Client(url=server.url, token="stw.bogus-token-value").is_authenticated() is False
    assert hvac.Client(url=server.url, token="").is_authenticated() is False


@pytest.mark.parametrize("mount", ["secret", "prod"])
def test_write_and_read_versions(kv, mount):
    path = f"{uniq('app')}/db"
    r1 = kv.create_or_update_secret(path=path, secret={"password": "one"}, mount_point=mount)
    r2 = kv.create_or_update_secret(path=path, secret={"password": "two", "user": "u"}, mount_point=mount)
    assert r1["data"]["version"] == 1
    assert r2["data"]["version"] == 2

    latest = read(kv, path, mount)
    assert latest["data"] == {"password": "two", "user": "u"}
    assert latest["metadata"]["version"] == 2
    assert latest["metadata"]["destroyed"] is False

    first = read(kv, path, mount, version=1)
    assert first["data"] == {"password": "one"}
    assert first["metadata"]["version"] == 1


def test_read_missing_raises_invalid_path(kv):
    with pytest.raises(hx.InvalidPath):
        read(kv, f"{uniq('missing')}/nothing")


def test_cas_conflict(kv):
    path = f"{uniq('cas')}/k"
    kv.create_or_update_secret(path=path, secret={"v": "original"}, mount_point="secret", cas=0)

    # cas=0 means "must not exist": it does.
    with pytest.raises(CAS_ERRORS):
        kv.create_or_update_secret(path=path, secret={"v": "clobber-0"}, mount_point="secret", cas=0)
    # A stale version.
    with pytest.raises(CAS_ERRORS):
        kv.create_or_update_secret(path=path, secret={"v": "clobber-7"}, mount_point="secret", cas=7)

    d = read(kv, path)
    assert d["data"] == {"v": "original"}
    assert d["metadata"]["version"] == 1
    assert kv.read_secret_metadata(path=path, mount_point="secret")["data"]["current_version"] == 1

    # The right version goes through.
    r = kv.create_or_update_secret(path=path, secret={"v": "second"}, mount_point="secret", cas=1)
    assert r["data"]["version"] == 2
    assert read(kv, path)["data"] == {"v": "second"}


def test_list_secrets(kv):
    root = uniq("list")
    for p in ("b", "c/d", "c/e/f", "z"):
        kv.create_or_update_secret(path=f"{root}/{p}", secret={"x": "1"}, mount_point="secret")

    keys = kv.list_secrets(path=root, mount_point="secret")["data"]["keys"]
    assert sorted(keys) == ["b", "c/", "z"]
    keys = kv.list_secrets(path=f"{root}/c", mount_point="secret")["data"]["keys"]
    assert sorted(keys) == ["d", "e/"]
    top = kv.list_secrets(path="", mount_point="secret")["data"]["keys"]
    assert f"{root}/" in top
    assert all(k.endswith("/") for k in top if k.startswith("list-"))
    # An empty listing is a 404, as in Vault.
    with pytest.raises(hx.InvalidPath):
        kv.list_secrets(path=uniq("nothing-here"), mount_point="secret")


def test_delete_latest_and_undelete(kv):
    path = f"{uniq('del')}/k"
    kv.create_or_update_secret(path=path, secret={"v": "1"}, mount_point="secret")
    kv.create_or_update_secret(path=path, secret={"v": "2"}, mount_point="secret")

    kv.delete_latest_version_of_secret(path=path, mount_point="secret")
    with pytest.raises(hx.InvalidPath):
        read(kv, path)
    # Older versions are untouched.
    assert read(kv, path, version=1)["data"] == {"v": "1"}
    meta = kv.read_secret_metadata(path=path, mount_point="secret")["data"]
    assert meta["versions"]["2"]["deletion_time"] != ""
    assert meta["versions"]["1"]["deletion_time"] == ""

    kv.undelete_secret_versions(path=path, versions=[2], mount_point="secret")
    d = read(kv, path)
    assert d["data"] == {"v": "2"}
    assert d["metadata"]["version"] == 2
    meta = kv.read_secret_metadata(path=path, mount_point="secret")["data"]
    assert meta["versions"]["2"]["deletion_time"] == ""


def test_read_deleted_version_without_raising(kv):
    path = f"{uniq('softdel')}/k"
    kv.create_or_update_secret(path=path, secret={"v": "1"}, mount_point="secret")
    kv.delete_latest_version_of_secret(path=path, mount_point="secret")
    r = kv.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=False)
    assert r["data"]["metadata"]["version"] == 1
    assert r["data"]["metadata"]["deletion_time"] != ""


@pytest.mark.filterwarnings("ignore:The raise_on_deleted_version parameter:DeprecationWarning")
def test_patch_and_delete_secret_versions(kv):
    path = f"{uniq('patch')}/k"
    kv.create_or_update_secret(path=path, secret={"a": "1", "b": "2"}, mount_point="secret")
    kv.patch(path=path, secret={"b": "3"}, mount_point="secret")
    assert read(kv, path)["data"] == {"a": "1", "b": "3"}
    kv.delete_secret_versions(path=path, versions=[1], mount_point="secret")
    with pytest.raises(hx.InvalidPath):
        read(kv, path, version=1)
    assert read(kv, path, version=2)["data"] == {"a": "1", "b": "3"}


def test_sys_health_and_seal_status(client):
    assert client.sys.is_sealed() is False
    health = client.sys.read_health_status(method="GET")
    assert health["initialized"] is True and health["sealed"] is False


def test_destroy_versions(kv):
    path = f"{uniq('destroy')}/k"
    kv.create_or_update_secret(path=path, secret={"v": "gone"}, mount_point="secret")
    kv.create_or_update_secret(path=path, secret={"v": "kept"}, mount_point="secret")

    kv.destroy_secret_versions(path=path, versions=[1], mount_point="secret")
    with pytest.raises(hx.InvalidPath):
        read(kv, path, version=1)
    # Undelete cannot bring a destroyed version back.
    try:
        kv.undelete_secret_versions(path=path, versions=[1], mount_point="secret")
    except hx.VaultError:
        pass
    with pytest.raises(hx.InvalidPath):
        read(kv, path, version=1)
    assert read(kv, path)["data"] == {"v": "kept"}
    meta = kv.read_secret_metadata(path=path, mount_point="secret")["data"]
    assert meta["versions"]["1"]["destroyed"] is True
    assert meta["versions"]["2"]["destroyed"] is False


def test_read_secret_metadata(kv):
    path = f"{uniq('meta')}/k"
    for i in range(3):
        kv.create_or_update_secret(path=path, secret={"i": str(i)}, mount_point="secret")
    meta = kv.read_secret_metadata(path=path, mount_point="secret")["data"]
    assert meta["current_version"] == 3
    assert meta["oldest_version"] == 1
    assert sorted(meta["versions"], key=int) == ["1", "2", "3"]
    for v in meta["versions"].values():
        assert v["destroyed"] is False
        assert v["created_time"]


def _check_max_versions(kv, path):
    meta = kv.read_secret_metadata(path=path, mount_point="secret")["data"]
    assert meta["max_versions"] == 2
    kv.create_or_update_secret(path=path, secret={"i": "4"}, mount_point="secret")
    meta = kv.read_secret_metadata(path=path, mount_point="secret")["data"]
    assert meta["current_version"] == 4
    assert sorted(meta["versions"], key=int) == ["3", "4"]
    with pytest.raises(hx.InvalidPath):
        read(kv, path, version=2)
    assert read(kv, path, version=3)["data"] == {"i": "3"}


def test_update_metadata_max_versions(kv):
    path = f"{uniq('maxv')}/k"
    for i in range(1, 4):
        kv.create_or_update_secret(path=path, secret={"i": str(i)}, mount_point="secret")
    kv.update_metadata(path=path, max_versions=2, mount_point="secret")
    _check_max_versions(kv, path)


def test_update_metadata_max_versions_plain_body(server, kv):
    """The same change with a body that leaves out Vault's delete_version_after."""
    path = f"{uniq('maxv')}/k"
    for i in range(1, 4):
        kv.create_or_update_secret(path=path, secret={"i": str(i)}, mount_point="secret")
    r = server.api("POST", f"/v1/secret/metadata/{path}", json={"max_versions": 2})
    assert r.status_code == 204, r.text
    _check_max_versions(kv, path)


def test_delete_metadata_and_all_versions(kv):
    root = uniq("purge")
    path = f"{root}/k"
    kv.create_or_update_secret(path=path, secret={"v": "1"}, mount_point="secret")
    kv.create_or_update_secret(path=path, secret={"v": "2"}, mount_point="secret")
    kv.create_or_update_secret(path=f"{root}/other", secret={"v": "x"}, mount_point="secret")

    kv.delete_metadata_and_all_versions(path=path, mount_point="secret")
    with pytest.raises(hx.InvalidPath):
        read(kv, path)
    with pytest.raises(hx.InvalidPath):
        read(kv, path, version=1)
    with pytest.raises(hx.InvalidPath):
        kv.read_secret_metadata(path=path, mount_point="secret")
    assert kv.list_secrets(path=root, mount_point="secret")["data"]["keys"] == ["other"]
    # The path can be used again from version 1.
    r = kv.create_or_update_secret(path=path, secret={"v": "new"}, mount_point="secret")
    assert r["data"]["version"] == 1


def test_secret_mount_is_dev_and_separate_from_prod(kv):
    path = f"{uniq('mounts')}/db"
    kv.create_or_update_secret(path=path, secret={"where": "default"}, mount_point="secret")
    kv.create_or_update_secret(path=path, secret={"where": "prod"}, mount_point="prod")

    assert read(kv, path, "secret")["data"] == {"where": "default"}
    assert read(kv, path, "prod")["data"] == {"where": "prod"}
    # `secret` is the default environment, dev.
    assert read(kv, path, "dev")["data"] == {"where": "default"}
    with pytest.raises(hx.InvalidPath):
        read(kv, path, "staging")

    # Each mount keeps its own versions and its own deletes.
    kv.create_or_update_secret(path=path, secret={"where": "prod2"}, mount_point="prod")
    assert kv.read_secret_metadata(path=path, mount_point="prod")["data"]["current_version"] == 2
    assert kv.read_secret_metadata(path=path, mount_point="secret")["data"]["current_version"] == 1
    kv.delete_metadata_and_all_versions(path=path, mount_point="secret")
    with pytest.raises(hx.InvalidPath):
        read(kv, path, "secret")
    assert read(kv, path, "prod")["data"] == {"where": "prod2"}


# ---------------------------------------------------------------------------------------------
# A limited token


@pytest.fixture(scope="module")
def billing_policy(server, kv):
    name = uniq("billing-read")
    r = server.api(
        "PUT",
        f"/v1/sys/policies/{name}",
        json={"rules": [{"env": "prod", "path": "billing/*", "capabilities": ["read"]}]},
    )
    assert r.status_code in (200, 204), r.text
    kv.create_or_update_secret(path="billing/x", secret={"password": "billing-x"}, mount_point="prod")
    kv.create_or_update_secret(path="billing/deep/z", secret={"v": "deep"}, mount_point="prod")
    kv.create_or_update_secret(path="other/y", secret={"v": "other-y"}, mount_point="prod")
    kv.create_or_update_secret(path="billing/x", secret={"v": "dev"}, mount_point="secret")
    return name


def check_limited_token(server, kv, token):
    limited = hvac.Client(url=server.url, token=token)
    assert limited.is_authenticated() is True
    lkv = limited.secrets.kv.v2

    assert read(lkv, "billing/x", "prod")["data"] == {"password": "billing-x"}
    with pytest.raises(hx.Forbidden):
        read(lkv, "other/y", "prod")
    with pytest.raises(hx.Forbidden):
        # `*` stays within one path segment.
        read(lkv, "billing/deep/z", "prod")
    with pytest.raises(hx.Forbidden):
        # Another environment.
        read(lkv, "billing/x", "secret")
    with pytest.raises(hx.Forbidden):
        lkv.create_or_update_secret(path="billing/x", secret={"password": "hijacked"}, mount_point="prod")
    with pytest.raises(hx.Forbidden):
        lkv.create_or_update_secret(path="billing/new", secret={"v": "1"}, mount_point="prod")
    with pytest.raises(hx.Forbidden):
        lkv.delete_metadata_and_all_versions(path="billing/x", mount_point="prod")
    # No escalation: a limited token cannot mint a root token (plain request: see the
    # hvac token-create xfail below).
    r = server.api("POST", "/v1/auth/token/create", token=token, json={"policies": ["root"]})
    assert r.status_code == 403, r.text

    # Nothing changed.
    assert read(kv, "billing/x", "prod")["data"] == {"password": "billing-x"}
    with pytest.raises(hx.InvalidPath):
        read(kv, "billing/new", "prod")


def test_limited_token_created_with_hvac(server, client, kv, billing_policy):
    created = client.auth.token.create(policies=[billing_policy], ttl="1h")
    token = created["auth"]["client_token"]
    assert created["auth"]["policies"] == [billing_policy]
    check_limited_token(server, kv, token)


def test_limited_token_created_with_plain_request(server, kv, billing_policy):
    r = server.api("POST", "/v1/auth/token/create", json={"policies": [billing_policy], "ttl": "1h"})
    assert r.status_code == 200, r.text
    auth = r.json()["auth"]
    assert auth["policies"] == [billing_policy]
    assert 3500 <= auth["lease_duration"] <= 3600
    check_limited_token(server, kv, auth["client_token"])
