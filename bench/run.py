"""The benchmark driver (see bench/run.sh and BENCHMARKS.md). Runs every row in one go on the
local PostgreSQL, Redis and a SQLite file, prints one table and writes bench/results/latest.md.

Each harness prints `MARK drain-start` / `MARK drain-end` and waits for a line on stdin
after each, so that this driver reads the counters at exactly those points: wall time, CPU
of the harness's process tree and of the database server's processes (/proc), PostgreSQL
commits (pg_stat_database.xact_commit) and, on SQLite, fsync calls (strace).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / ".peers"
NODE = PEERS / "node" / "node_modules" / ".bin" / "node"
PYTHON = PEERS / "venv" / "bin" / "python"
RETRYD = ROOT / "target" / "release" / "retryd"
HARNESS = ROOT / "target" / "release" / "examples" / "retryd-bench"
# Built by bench/run.sh from bench/peers/apalis; missing when that build failed (its rows are skipped).
APALIS = PEERS / "apalis-target" / "release" / "apalis-bench"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
# Redis database 9: the harnesses flush it, so it is kept apart from anything else.
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/9")
TICKS = os.sysconf("SC_CLK_TCK")
CONCURRENCY = 16


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def psql(sql, db="postgres"):
    out = subprocess.run(["psql", f"{PG}/{db}", "-qAtX", "-c", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def fresh_pg(name):
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(f"CREATE DATABASE {name}")
    return f"{PG}/{name}"


def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError):
        return None


def tree_cpu(root):
    """CPU seconds of `root` and all its descendants."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                pass
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(proc_cpu(p) or 0 for p in tree)


def server_pids(backend, db):
    if backend == "PostgreSQL":
        rows = psql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{db}'")
        return [int(p) for p in rows.split()]
    if backend == "Redis":
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and _comm(p) == "redis-server"]
    return []


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def commits(db):
    return int(psql(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{db}'"))


def run_harness(name, backend, cmd, db=None, fsync_log=None, timeout=1800):
    """Runs one harness through its marks; returns its RESULT plus the driver's counters."""
    log(f"-- {name} on {backend}: {' '.join(map(str, cmd))}")
    env = dict(os.environ, NODE_PATH=str(PEERS / "node" / "node_modules"), PYTHONPATH=str(BENCH / "peers"))
    if fsync_log:
        cmd = ["strace", "-f", "--seccomp-bpf", "-e", "trace=fsync,fdatasync", "-ttt", "-o", fsync_log] + cmd
    proc = subprocess.Popen([str(c) for c in cmd] + ["--marks"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=BENCH / "peers")
    marks, result = {}, None
    deadline = time.time() + timeout
    for line in proc.stdout:
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"{name}: timed out")
        m = re.search(r"MARK (\S+)", line)
        if m:
            point = m.group(1)
            if point == "drain-start" and db:
                # Backends flush their statistics when idle for 10 s: let the enqueue's land.
                time.sleep(11)
            snapshot = {"t": time.time(), "cpu": tree_cpu(proc.pid)}
            if backend != "SQLite":
                pids = server_pids(backend, db)
                snapshot["db_cpu"] = {p: proc_cpu(p) for p in pids}
            if db and point == "drain-start":
                snapshot["commits"] = commits(db)
            marks[point] = snapshot
            proc.stdin.write("\n")
            proc.stdin.flush()
            if point == "drain-end":
                # Nothing more to say: a harness that reads stdin would wait for its end.
                proc.stdin.close()
            continue
        m = re.search(r"RESULT (\{.*\})", line)
        if m:
            result = json.loads(m.group(1))
    proc.wait()
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"{name}: exit {proc.returncode}: {proc.stderr.read()[-2000:]}")
    start, end = marks["drain-start"], marks["drain-end"]
    done = result.get("completed", result["jobs"])
    out = dict(result, name=name, backend=backend, drain_s=end["t"] - start["t"], done=done)
    out["jobs_per_s"] = done / out["drain_s"]
    out["worker_cpu_per_1k"] = (end["cpu"] - start["cpu"]) / done * 1000
    if "db_cpu" in end:
        db_cpu = sum((c or 0) - (start["db_cpu"].get(p) or 0) for p, c in end["db_cpu"].items())
        out["db_cpu_per_1k"] = db_cpu / done * 1000
    if db:
        # After the harness exited: its backends flushed their statistics on the way out.
        time.sleep(1)
        out["commits_per_job"] = (commits(db) - start["commits"]) / done
    if fsync_log:
        stamps = [float(l.split()[1]) for l in open(fsync_log) if re.match(r"\d+\s+[\d.]+ f(data)?sync\(", l)]
        n = sum(1 for s in stamps if start["t"] <= s <= end["t"])
        out["fsyncs"] = n
        out["jobs_per_fsync"] = done / n if n else None
    log(f"   {json.dumps(out)}")
    return out


def node(script):
    return [NODE, BENCH / "peers" / script]


def py(script):
    return [PYTHON, BENCH / "peers" / script]


def apalis_built():
    if not APALIS.exists():
        log(f"-- apalis: skipped, {APALIS} was not built (see bench/run.sh's output)")
    return APALIS.exists()


def apalis_versions():
    """apalis and its storage crates as locked in bench/.peers/apalis/Cargo.lock."""
    lock = PEERS / "apalis" / "Cargo.lock"
    if not APALIS.exists() or not lock.exists():
        return ["apalis not built"]
    found = re.findall(r'name = "(apalis(?:-postgres|-sqlite)?)"\nversion = "([^"]+)"', lock.read_text())
    return [f"{name} {version}" for name, version in found]


def throughput_rows(n, tmp):
    args = ["--jobs", n, "--concurrency", CONCURRENCY]
    rows = []
    sqlite = tmp / "throughput.db"
    rows.append(run_harness("retryd embedded", "SQLite", [HARNESS, "throughput", sqlite] + args,
                            fsync_log=str(tmp / "fsync.log")))
    if apalis_built():
        rows.append(run_harness("apalis", "SQLite", [APALIS, "throughput", tmp / "apalis-throughput.db"] + args,
                                fsync_log=str(tmp / "apalis-fsync.log")))
    peers_pg = [
        ("retryd embedded", [HARNESS, "throughput", None]),
        ("graphile-worker", node("graphile.js") + ["throughput", None]),
        ("graphile-worker (batching)", node("graphile.js") + ["throughput", None, "--batch"]),
        ("pg-boss", node("pgboss.js") + ["throughput", None]),
        ("procrastinate", py("procrastinate_bench.py") + ["throughput", None]),
    ]
    if apalis_built():
        peers_pg.append(("apalis", [APALIS, "throughput", None]))
    for i, (name, cmd) in enumerate(peers_pg):
        db = f"bench_tp_{i}"
        url = fresh_pg(db)
        cmd = [url if c is None else c for c in cmd]
        rows.append(run_harness(name, "PostgreSQL", cmd + args, db=db))
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    rows.append(run_harness("BullMQ", "Redis", node("bullmq.js") + ["throughput", REDIS] + args))
    rows.append(run_harness("Celery", "Redis", py("celery_bench.py") + ["throughput", REDIS] + args))
    return rows


def lateness_rows(n, tmp):
    args = ["--jobs", n, "--concurrency", CONCURRENCY]
    rows = []
    rows.append(dict(run_harness("retryd embedded", "SQLite", [HARNESS, "lateness", tmp / "lateness.db"] + args),
                     settings="defaults (no polling)"))
    # apalis retries in the worker's process (a timer), so its polling only finds new jobs.
    apalis_settings = [("defaults (no poll strategy)", []), ("best (hook/NOTIFY + poll 100 ms)", ["--best"])]
    if apalis_built():
        for j, (label, extra) in enumerate(apalis_settings):
            rows.append(dict(run_harness("apalis", "SQLite", [APALIS, "lateness", tmp / f"apalis-lateness-{j}.db"] + args + extra),
                             settings=label))
    systems = [
        ("retryd embedded", [HARNESS, "lateness", None], [("defaults (no polling)", [])]),
        ("graphile-worker", node("graphile.js") + ["lateness", None],
         [("defaults (poll 2 s)", []), ("best (poll 100 ms)", ["--best"])]),
        ("pg-boss", node("pgboss.js") + ["lateness", None],
         [("defaults (poll 2 s)", []), ("best (poll 0.5 s, burst)", ["--best"])]),
        ("procrastinate", py("procrastinate_bench.py") + ["lateness", None],
         [("defaults (poll 5 s)", []), ("best (poll 100 ms)", ["--best"])]),
    ]
    if apalis_built():
        systems.append(("apalis", [APALIS, "lateness", None], apalis_settings))
    for i, (name, cmd, settings) in enumerate(systems):
        for j, (label, extra) in enumerate(settings):
            db = f"bench_late_{i}_{j}"
            url = fresh_pg(db)
            full = [url if c is None else c for c in cmd] + args + extra
            rows.append(dict(run_harness(name, "PostgreSQL", full), settings=label))
            psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    rows.append(dict(run_harness("BullMQ", "Redis", node("bullmq.js") + ["lateness", REDIS] + args),
                     settings="defaults (timer, no polling)"))
    rows.append(dict(run_harness("Celery", "Redis", py("celery_bench.py") + ["lateness", REDIS] + args),
                     settings="defaults (ETA timer, no polling)"))
    return rows


def library_rows():
    """Criterion: retry() against backon and tokio-retry (crates/core/benches/retry.rs)."""
    log("-- criterion: cargo bench -p retryd-core --bench retry")
    out = subprocess.run(["cargo", "bench", "-p", "retryd-core", "--bench", "retry", "--", "--noplot"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = []
    for m in re.finditer(r"^(\S+/\S+)\s*\n?\s*time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", out, re.M):
        value, unit = float(m.group(2)), m.group(3)
        ns = value * {"ps": 1e-3, "ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6}[unit]
        rows.append({"bench": m.group(1), "ns": ns})
    log(f"   {rows}")
    return rows


def command_rows(runs):
    """`retryd run -- true` against `true`, each run `runs` times."""
    def times(cmd):
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            samples.append((time.perf_counter() - t) * 1000)
        return samples
    true = shutil.which("true")
    direct = times([true])
    wrapped = times([RETRYD, "run", "--no-color", "--", true])
    return {"runs": runs, "direct_ms": statistics.median(direct), "retryd_ms": statistics.median(wrapped),
            "overhead_ms": statistics.median(wrapped) - statistics.median(direct)}


def start_server(database, dirpath, first_start=False):
    """Starts `retryd serve`; on a database's first start also returns the admin token it
    prints once."""
    proc = subprocess.Popen([RETRYD, "serve", "--listen", "127.0.0.1:0", "--database", database, "--log-level", "warn"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=dirpath)
    # The first start prints the token before the listening line.
    url, token = None, None
    for line in proc.stdout:
        m = re.match(r"\s*token:\s+(\S+)", line)
        if m:
            token = m.group(1)
        m = re.search(r"listening on (\S+)", line)
        if m:
            url = m.group(1)
        if url and (token or not first_start):
            return proc, url, token
    raise RuntimeError("retryd serve did not start")


def http(method, url, token, body=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def fill(backend, database, n):
    """Copies the one job the server stored n times: 1/10 failed, the rest succeeded, ten
    queues and kinds, created over the last day."""
    cols = {
        "id": None, "state": "CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'succeeded' END",
        "queue": "'q' || (g % 10)", "kind": "'k' || (g % 7)", "idempotency_key": "NULL",
        "next_attempt_at": "NULL", "lease_owner": "NULL", "lease_expires_at": "NULL", "current_attempt_id": "NULL",
    }
    if backend == "PostgreSQL":
        db = database.rsplit("/", 1)[1]
        names = psql("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns "
                     "WHERE table_name = 'jobs' AND table_schema = 'public'", db).split(",")
        exprs = dict(cols, id="gen_random_uuid()", created_at="now() - (g % 86400) * interval '1 second'",
                     finished_at="now()", updated_at="now()")
        select = ",".join(exprs.get(c, c) for c in names)
        psql(f"INSERT INTO jobs ({','.join(names)}) SELECT {select} FROM (SELECT * FROM jobs LIMIT 1) t, "
             f"generate_series(1, {n}) g; ANALYZE jobs;", db)
    else:
        names = [r.split("|")[1] for r in subprocess.run(["sqlite3", database, "PRAGMA table_info(jobs)"],
                                                          capture_output=True, text=True, check=True).stdout.split()]
        now = int(time.time() * 1000)
        exprs = dict(cols, id="printf('01900000-0000-7000-8000-%012x', g.value)", state=cols["state"].replace("g %", "g.value %"),
                     queue="'q' || (g.value % 10)", kind="'k' || (g.value % 7)",
                     created_at=f"{now} - (g.value % 86400) * 1000", finished_at=str(now), updated_at=str(now))
        select = ",".join(exprs.get(c, c) for c in names)
        subprocess.run(["sqlite3", database, f"INSERT INTO jobs ({','.join(names)}) SELECT {select} FROM "
                        f"(SELECT * FROM jobs LIMIT 1) t, generate_series(1, {n}) g; ANALYZE;"], check=True)


def scale_rows(n, tmp, requests):
    rows = []
    for backend in ["SQLite", "PostgreSQL"]:
        if backend == "SQLite":
            database = str(tmp / "scale.db")
        else:
            database = fresh_pg("bench_scale")
        proc, url, token = start_server(database, tmp, first_start=True)
        http("POST", f"{url}/api/v1/jobs", token, {"action": {"type": "command", "program": "true"}})
        time.sleep(1)
        proc.terminate()
        proc.wait()
        log(f"-- scale on {backend}: inserting {n} jobs")
        fill(backend, database, n)
        proc, url, _ = start_server(database, tmp)
        rss_start, _ = rss_kib(proc.pid)
        queries = ["/jobs?limit=50", "/jobs?state=failed&limit=50", "/jobs?queue=q3&limit=50",
                   "/jobs?kind=k5&state=succeeded&limit=50", "/jobs?queue=q7&kind=k2&limit=50"]
        samples = []
        for i in range(requests):
            # Paced under the per-token rate limit (100 requests/s): this measures latency.
            time.sleep(0.025)
            q = queries[i % len(queries)]
            t = time.perf_counter()
            page = http("GET", f"{url}/api/v1{q}", token)
            if page.get("next_cursor") and i % 2:
                http("GET", f"{url}/api/v1{q}&cursor={page['next_cursor']}", token)
            samples.append((time.perf_counter() - t) * 1000)
        rss_end, hwm = rss_kib(proc.pid)
        proc.terminate()
        proc.wait()
        samples.sort()
        rows.append({"backend": backend, "jobs": n, "requests": requests,
                     "p50_ms": samples[len(samples) // 2], "p99_ms": samples[int(len(samples) * 0.99) - 1],
                     "rss_start_mib": rss_start / 1024, "rss_end_mib": rss_end / 1024, "rss_peak_mib": hwm / 1024})
        log(f"   {rows[-1]}")
        if backend == "PostgreSQL":
            psql("DROP DATABASE IF EXISTS bench_scale WITH (FORCE)")
    return rows


def fmt(v, digits=1):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def render(tp, late, lib, cmd, scale, meta):
    out = [f"# Benchmark results ({meta['date']})", "", f"Machine: {meta['machine']}", "",
           f"Command: `{meta['command']}`", ""]
    out += ["## 1. Throughput", "",
            f"{tp[0]['jobs']:,} no-op jobs enqueued, then drained with concurrency {CONCURRENCY}.", "",
            "| system | backend | jobs/s | worker CPU s / 1k jobs | DB server CPU s / 1k jobs | commits / job | jobs / fsync |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for r in tp:
        note = f" ({r['done']:,} of {r['jobs']:,} in {r['drain_s']:.0f} s)" if r["done"] < r["jobs"] else ""
        out.append(f"| {r['name']}{note} | {r['backend']} | {fmt(r['jobs_per_s'], 0)} | {fmt(r['worker_cpu_per_1k'], 2)} | "
                   f"{fmt(r.get('db_cpu_per_1k'), 2)} | {fmt(r.get('commits_per_job'), 2)} | {fmt(r.get('jobs_per_fsync'), 2)} |")
    out += ["", "## 2. Retry wake-up lateness", "",
            f"{late[0]['jobs']:,} jobs arriving at 100/s, each failing its first attempt; lateness = start of the "
            "second attempt − its due time.", "",
            "| system | backend | settings | retry delay | p50 ms | p99 ms |", "|---|---|---|---|---:|---:|"]
    delays = {"retryd embedded": "100 ms", "graphile-worker": "e¹ s (fixed by the library)", "pg-boss": "1 s (whole seconds)",
              "procrastinate": "1 s (whole seconds)", "BullMQ": "100 ms", "Celery": "100 ms",
              "apalis": "100 ms (in-process timer; the job stays claimed)"}
    for r in late:
        out.append(f"| {r['name']} | {r['backend']} | {r['settings']} | {delays[r['name']]} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} |")
    out += ["", "## 3. Library overhead (criterion, zero-delay policy)", "", "| benchmark | time |", "|---|---:|"]
    for r in lib:
        out.append(f"| {r['bench']} | {fmt(r['ns'], 1)} ns |")
    out += ["", "## 4. Command attempt overhead", "",
            f"Median of {cmd['runs']} runs: `true` {fmt(cmd['direct_ms'], 2)} ms, `retryd run -- true` "
            f"{fmt(cmd['retryd_ms'], 2)} ms: **{fmt(cmd['overhead_ms'], 2)} ms** added.", ""]
    out += ["## 5. Scale: list API with stored jobs", "",
            "| backend | jobs | requests | p50 ms | p99 ms | RSS at start MiB | RSS after MiB | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in scale:
        out.append(f"| {r['backend']} | {r['jobs']:,} | {r['requests']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                   f"{fmt(r['rss_start_mib'])} | {fmt(r['rss_end_mib'])} | {fmt(r['rss_peak_mib'])} |")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N: a few minutes instead of ~20")
    parser.add_argument("--only", choices=["throughput", "lateness", "library", "command", "scale"], action="append")
    args = parser.parse_args()
    n_tp, n_late, n_scale = (2000, 200, 100_000) if args.quick else (20_000, 1000, 1_000_000)
    only = set(args.only or ["throughput", "lateness", "library", "command", "scale"])
    tmp = Path(tempfile.mkdtemp(prefix="retryd-bench-"))
    versions = subprocess.run([NODE, "-e", "for (const p of ['graphile-worker','pg-boss','bullmq']) "
                               "console.log(p + ' ' + require(p + '/package.json').version)"],
                              capture_output=True, text=True, env=dict(os.environ, NODE_PATH=str(PEERS / "node" / "node_modules"))).stdout.split("\n")
    pyv = subprocess.run([PYTHON, "-c", "import importlib.metadata as m; print('procrastinate', m.version('procrastinate')); "
                          "print('celery', m.version('celery'))"], capture_output=True, text=True).stdout.split("\n")
    mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "bash bench/run.sh" + (" --quick" if args.quick else ""),
        "machine": f"{os.cpu_count()} CPUs, {int(mem) // 1024 // 1024} GiB RAM; "
                   f"{psql('SHOW server_version')} PostgreSQL, Redis "
                   f"{subprocess.run(['redis-cli', 'INFO', 'server'], capture_output=True, text=True).stdout.split('redis_version:')[1].split()[0]}, "
                   f"node {subprocess.run([NODE, '--version'], capture_output=True, text=True).stdout.strip()}; "
                   + ", ".join(v for v in versions + pyv + apalis_versions() if v),
    }
    tp = throughput_rows(n_tp, tmp) if "throughput" in only else []
    late = lateness_rows(n_late, tmp) if "lateness" in only else []
    lib = library_rows() if "library" in only else []
    cmd = command_rows(50 if args.quick else 200) if "command" in only else None
    scale = scale_rows(n_scale, tmp, 200 if args.quick else 1000) if "scale" in only else []
    if only != {"throughput", "lateness", "library", "command", "scale"}:
        print(json.dumps({"throughput": tp, "lateness": late, "library": lib, "command": cmd, "scale": scale}, indent=1))
        shutil.rmtree(tmp, ignore_errors=True)
        return
    table = render(tp, late, lib, cmd, scale, meta)
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / "latest.md").write_text(table)
    (results / "latest.json").write_text(json.dumps({"meta": meta, "throughput": tp, "lateness": late,
                                                     "library": lib, "command": cmd, "scale": scale}, indent=1))
    print(table)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
