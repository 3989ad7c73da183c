"""Fixtures for the Steward end-to-end suite.

* `server`: one `steward up` per test module and store (parametrized: sqlite, postgres),
  STEWARD_LOG=debug, logs captured in its work directory, root token read from
  <data>/root-token. Stopped with SIGTERM at the end of the module; its PostgreSQL database
  (steward_py_<hex>) is dropped WITH (FORCE).
* `server_factory` / `module_server_factory`: make more servers (custom env, config,
  store, restarts) that are cleaned up after the test / module.

STEWARD_BIN overrides the binary (default: target/debug/steward);
STEWARD_TEST_PG_URL the PostgreSQL admin connection (default
postgres://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import os
import pathlib

import pytest

from steward_testlib import STEWARD_BIN, ServerPool

STORES = ["sqlite", "postgres"]


def pytest_configure(config):
    for var in ("NO_PROXY", "no_proxy"):
        cur = os.environ.get(var, "")
        os.environ[var] = ",".join(x for x in (cur, "127.0.0.1", "localhost") if x)


def pytest_sessionstart(session):
    if not os.access(STEWARD_BIN, os.X_OK):
        raise pytest.UsageError(
            f"steward binary not found at {STEWARD_BIN}: run `cargo build -p steward` "
            "or set STEWARD_BIN"
        )


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory, request):
    pool = ServerPool(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield pool
    pool.close()


@pytest.fixture
def server_factory(tmp_path):
    pool = ServerPool(tmp_path)
    yield pool
    pool.close()


@pytest.fixture(scope="module", params=STORES)
def store(request) -> str:
    """The store kind of the module's main server."""
    return request.param


@pytest.fixture(scope="module")
def server(store, module_server_factory):
    """The module's shared server (started, healthy, root token loaded)."""
    s = module_server_factory.new(store)
    yield s
    s.close()


@pytest.fixture
def bin_path() -> pathlib.Path:
    return pathlib.Path(STEWARD_BIN)
