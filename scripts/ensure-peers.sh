#!/usr/bin/env bash
# Installs (idempotently) what the test suite talks to, and starts the local services it needs
# if they are down. Safe to run on a machine that already has everything: it then does nothing.
set -euo pipefail

need_apt=()
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v pg_dump >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v mysqladmin >/dev/null 2>&1 || need_apt+=(mariadb-client)
# The alerting acceptance tests run Prometheus and amtool against Steward.
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# Browser tests drive Debian's Chromium through its WebDriver.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# The backup tests check Steward's repositories with restic, and restic's with Steward.
command -v restic >/dev/null 2>&1 || need_apt+=(restic)
# The DNS check tests query a real dnsmasq.
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "ensure-peers: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import hvac, pytest, requests, psycopg, pymysql, redis, aiosmtpd, selenium, moto' >/dev/null 2>&1 || ! command -v moto_server >/dev/null 2>&1; then
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

# MariaDB on 127.0.0.1:3306 (root, empty password) and Redis on 127.0.0.1:6379: the rotators'
# tests rotate real passwords there.
if ! mysqladmin -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
  echo "ensure-peers: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  for _ in $(seq 1 30); do mysqladmin -h127.0.0.1 -uroot ping >/dev/null 2>&1 && break; sleep 1; done
fi
mysqladmin -h127.0.0.1 -uroot ping >/dev/null 2>&1 || { echo "ensure-peers: MariaDB is not reachable on 127.0.0.1:3306" >&2; exit 1; }
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "ensure-peers: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "ensure-peers: Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
