#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust tests (SQLite and PostgreSQL), and the
# end-to-end Python suite (hvac, CLI, lifecycle, logs). Installs missing test peers first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-peers.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== end-to-end (pytest)"
cargo build -p steward --locked
python3 -m pytest tests/python -q -p no:cacheprovider
