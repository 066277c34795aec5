#!/usr/bin/env python3
"""The job list at scale: GET /api/v1/jobs (first page, filters, a deep cursor) against a
SQLite database of 1,000,000 stored jobs, through the real `retryd serve`.

    python3 bench/list_scale.py [--jobs 1000000] [--bin target/release/retryd] [--requests 200]

The database is made by the server itself (so that its migrations apply), then filled in one
SQL statement (a recursive CTE: about ten seconds for a million rows) with jobs spread over
five queues, twenty kinds, fifty targets, two labels and every finished state, plus waiting
jobs scheduled months ahead (so that the server's workers leave them alone). It is kept in
target/bench/ and reused by later runs with the same --jobs.

Prints p50/p99/max per query in milliseconds, measured over keep-alive HTTP on loopback, with
the admin token the database's first start printed (kept beside it).
"""

import argparse
import http.client
import json
import os
import re
import sqlite3
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SEED = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :jobs),
r AS (
  SELECT i,
         :start + i * :step AS t,
         CASE WHEN i % 100 < 88 THEN 'succeeded' WHEN i % 100 < 94 THEN 'failed'
              WHEN i % 100 < 96 THEN 'cancelled' WHEN i % 100 < 97 THEN 'expired'
              WHEN i % 100 < 99 THEN 'pending' ELSE 'retrying' END AS state
  FROM n
)
INSERT INTO jobs (id, queue, kind, target, action, policy_name, policy, priority, run_at, labels,
                  created_by, state, attempt, next_attempt_at, last_error, last_error_class, last_rule,
                  finish_reason, created_at, started_at, finished_at, updated_at)
SELECT substr(printf('%012x', t), 1, 8) || '-' || substr(printf('%012x', t), 9, 4) || '-7' ||
         printf('%03x', i % 4096) || '-' || printf('%04x', 32768 + (i / 4096) % 16384) || '-' || printf('%012x', i),
       -- Divisors keep queue, kind, target, labels and state independent of each other.
       'q' || ((i / 7) % 5), 'kind-' || ((i / 100) % 20), 'target-' || ((i / 3) % 50),
       '{"type":"command","program":"sh","args":["-c","deploy ' || i || '"]}',
       'default',
       '{"max_attempts":3,"initial_delay":"2s","multiplier":2.0,"max_delay":"1m","jitter":"full","respect_retry_after_beyond_cap":false,"retry_unknown":true}',
       50,
       CASE WHEN state IN ('pending', 'retrying') THEN :future ELSE t END,
       '{"env":"' || CASE WHEN (i / 11) % 10 = 0 THEN 'staging' ELSE 'prod' END || '","team":"team-' || ((i / 13) % 7) || '"}',
       'bench', state,
       CASE WHEN state = 'pending' THEN 0 WHEN state = 'succeeded' THEN 1 + i % 2 ELSE 1 + i % 3 END,
       CASE WHEN state IN ('pending', 'retrying') THEN :future END,
       CASE WHEN state IN ('failed', 'retrying') THEN 'connect to 10.0.' || (i % 250) || '.7:22 failed: Connection refused' END,
       CASE WHEN state IN ('failed', 'retrying') THEN 'transient' END,
       CASE WHEN state IN ('failed', 'retrying') THEN 'output: connection refused' END,
       CASE WHEN state IN ('failed', 'cancelled', 'expired') THEN state || ' (bench)' END,
       t,
       CASE WHEN state = 'pending' THEN NULL ELSE t + 10 END,
       CASE WHEN state IN ('succeeded', 'failed', 'cancelled', 'expired') THEN t + 500 END,
       t + 500
FROM r
"""

QUERIES = [
    ("first page", "/api/v1/jobs"),
    ("state=failed", "/api/v1/jobs?state=failed"),
    ("state=running (none stored)", "/api/v1/jobs?state=running"),
    ("state=retrying,pending", "/api/v1/jobs?state=retrying,pending"),
    ("queue=q3", "/api/v1/jobs?queue=q3"),
    ("kind=kind-7", "/api/v1/jobs?kind=kind-7"),
    ("target=target-42", "/api/v1/jobs?target=target-42"),
    ("label=env=staging", "/api/v1/jobs?label=env%3Dstaging"),
    ("label=env=nowhere (none)", "/api/v1/jobs?label=env%3Dnowhere"),
    ("state=failed&kind=kind-7", "/api/v1/jobs?state=failed&kind=kind-7"),
    ("state=expired&target=target-9", "/api/v1/jobs?state=expired&target=target-9"),
    ("state=failed&label=env=staging", "/api/v1/jobs?state=failed&label=env%3Dstaging"),
    ("deep cursor (middle)", None),
]


def start_server(binary, database):
    env = dict(os.environ, NO_COLOR="1")
    env.pop("RETRYD_CONFIG", None)
    server = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--database", database, "--log-level", "warn"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True, cwd=os.path.dirname(database))
    token = None
    for line in server.stdout:
        # A database's first start prints its admin token once.
        printed = re.match(r"\s*token:\s+(\S+)", line)
        if printed:
            token = printed.group(1)
        found = re.search(r"listening on http://([\d.]+):(\d+)", line)
        if found:
            return server, found.group(1), int(found.group(2)), token
    raise SystemExit("retryd serve did not start")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target/release/retryd"))
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    args.bin = os.path.abspath(args.bin)
    if not 1 <= args.jobs <= 100_000_000:
        raise SystemExit("--jobs: must be between 1 and 100000000")
    if not 10 <= args.requests <= 100_000:
        raise SystemExit("--requests: must be between 10 and 100000")
    if not os.access(args.bin, os.X_OK):
        raise SystemExit(f"--bin: {args.bin} is not an executable; build it with cargo build --release --bin retryd")

    folder = os.path.join(ROOT, "target/bench")
    os.makedirs(folder, exist_ok=True)
    database = os.path.join(folder, f"list-{args.jobs}.db")
    token_file = database + ".token"
    if os.path.exists(database) and not os.path.exists(token_file):
        raise SystemExit(f"{database} has no saved admin token: delete it to seed again")
    if not os.path.exists(database):
        server, _, _, token = start_server(args.bin, database)  # applies the migrations
        server.terminate()
        server.wait()
        with open(token_file, "w") as f:
            f.write(token)
        began = time.monotonic()
        now = int(time.time() * 1000)
        step = max(1, 14 * 86_400_000 // args.jobs)  # spread over the last two weeks
        with sqlite3.connect(database) as db:
            db.execute(SEED, {"jobs": args.jobs, "start": now - args.jobs * step, "step": step,
                              "future": now + 300 * 86_400_000})
        print(f"seeded {args.jobs:,} jobs in {time.monotonic() - began:.1f} s ({database})")

    server, host, port, _ = start_server(args.bin, database)
    with open(token_file) as f:
        headers = {"Authorization": f"Bearer {f.read().strip()}"}
    try:
        conn = http.client.HTTPConnection(host, port)

        def get(path):
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise SystemExit(f"{path}: {response.status} {body[:300]!r}")
            return json.loads(body)

        # A cursor half-way down the list (a cursor is the id of the last job seen).
        with sqlite3.connect(database) as db:
            (cursor,) = db.execute("SELECT id FROM jobs ORDER BY id LIMIT 1 OFFSET ?", (args.jobs // 2,)).fetchone()
        print(f"{'query (50 per page)':34} {'rows':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        worst = 0.0
        for name, path in QUERIES:
            path = path or f"/api/v1/jobs?cursor={cursor}"
            rows = len(get(path)["jobs"])
            for _ in range(5):  # warm-up: page cache, prepared statement
                get(path)
            timings = []
            for _ in range(args.requests):
                began = time.perf_counter()
                get(path)
                timings.append((time.perf_counter() - began) * 1000)
            timings.sort()
            p50 = timings[len(timings) // 2]
            p99 = timings[max(0, -(-99 * len(timings) // 100) - 1)]
            worst = max(worst, p99)
            print(f"{name:34} {rows:5} {p50:8.2f} {p99:8.2f} {timings[-1]:8.2f}")
        print(f"worst p99: {worst:.2f} ms over {args.jobs:,} stored jobs")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
