#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, unit, property, conformance
# and end-to-end tests (real binary, real SQLite file, real child processes), the dashboard in a
# real headless Chromium, and doctests.
# Everything it needs is installed or started here.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s ==\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust (rustup) first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "services"
# The PostgreSQL backend's tests run against a real local server: start it when it is down,
# install it when it is missing. A test that cannot reach it fails; none is skipped.
export RETRYD_TEST_DATABASE_URL="${RETRYD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if ! command -v pg_ctlcluster >/dev/null; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
# The embedded-engine test runs the example program itself: build it explicitly.
cargo build --workspace --examples --locked
cargo nextest run --workspace --locked

step "API fuzzing: Schemathesis against the served OpenAPI document"
bash scripts/api-fuzz.sh

step "tests that restart PostgreSQL (run alone)"
cargo nextest run --workspace --locked --profile disruptive

step "dashboard in headless Chromium"
bash scripts/browser-test.sh

step "doctests"
cargo test --workspace --doc --locked
