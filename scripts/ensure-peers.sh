#!/usr/bin/env bash
# Installs (idempotently) what the test suite talks to, and starts the local services it needs
# if they are down. Safe to run on a machine that already has everything: it then does nothing.
set -euo pipefail

need_apt=()
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v pg_dump >/dev/null 2>&1 || need_apt+=(postgresql-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "ensure-peers: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import hvac, pytest, requests' >/dev/null 2>&1; then
  echo "ensure-peers: installing Python test requirements"
  python3 -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
fi

# PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`).
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "ensure-peers: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "ensure-peers: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
