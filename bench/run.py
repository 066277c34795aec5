"""The benchmark driver (see bench/run.sh and BENCHMARKS.md). Runs every row in one go on the
local PostgreSQL, Redis and a SQLite file, prints one table and writes bench/results/latest.md.

Each harness prints `MARK <step>-start` / `MARK <step>-end` (step: drain or enqueue) and
waits for a line on stdin after each, so that this driver reads the counters at exactly those
points: wall time, CPU of the harness's process tree and of the database server's processes
(/proc), PostgreSQL commits (pg_stat_database.xact_commit) and, on SQLite, fsync calls
(`perf stat` on the kernel's syscall tracepoints, attached between the marks). Several
processes of one row (the several-node row) are released together, once every one of them
has reached the mark.
"""
import argparse
import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
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
# Jobs per bulk enqueue call, for every system (retryd's HTTP batch takes up to 10,000).
ENQUEUE_BATCH = 10_000
# The drain-at-scale rows stop after this many seconds and report the rate so far.
SCALE_CAP_S = 600
# Interleaved rounds of the head-to-head rows (see rounds_rows).
ROUNDS = 5
SECTIONS = ["rounds", "throughput", "enqueue", "scale-n", "nodes", "lateness", "library", "command", "scale"]


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


def snapshot(point, procs, backend, db):
    """The counters at a mark, over all `procs`. The clock is read last at a start mark and
    first at an end mark, so that reading the other counters (a scan of /proc, psql) is not
    part of the measured time: it took ~0.3 s on a busy machine, a third of a fast drain."""
    start = point.endswith("-start")
    if start and db:
        # Backends flush their statistics when idle for 10 s: let the setup's land.
        time.sleep(11)
    snap = {} if start else {"t": time.time()}
    snap["cpu"] = sum(tree_cpu(p.pid) for p in procs)
    if backend != "SQLite":
        snap["db_cpu"] = {p: proc_cpu(p) for p in server_pids(backend, db)}
    if db and start:
        snap["commits"] = commits(db)
    if start:
        snap["t"] = time.time()
    return snap


FSYNC_EVENTS = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync"


class FsyncCount:
    """The fsync and fdatasync calls of some processes (and the threads they start) from its
    creation to `stop`: `perf stat` counting the kernel's syscall tracepoints. It costs the
    harness nothing, where `strace -f` stopped it at every call and every new thread and
    halved a SQLite drain (and so shrank its commit groups: 7.8 jobs per fsync under strace,
    about 80 without)."""

    def __init__(self, procs, out):
        self.out = out
        # Without perf there is no count rather than no row: the table shows "–".
        try:
            self.perf = subprocess.Popen(["perf", "stat", "-e", FSYNC_EVENTS, "-x", ",", "-o", out,
                                          "-p", ",".join(str(p.pid) for p in procs)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        except OSError as e:
            log(f"   perf is not available, fsyncs not counted: {e}")
            self.perf = None
            return
        # Counting starts once perf has opened its counters; the harnesses wait at the mark.
        time.sleep(0.5)
        if self.perf.poll() is not None:
            log(f"   perf stat did not start, fsyncs not counted: {self.perf.stderr.read().strip()}")
            self.perf = None

    def stop(self):
        """The calls counted, or None when perf could not count them."""
        if self.perf is None:
            return None
        self.perf.send_signal(signal.SIGINT)
        self.perf.wait(timeout=30)
        counts = [int(line.split(",")[0]) for line in open(self.out)
                  if not line.startswith("#") and line.split(",")[0].isdigit()]
        return sum(counts) if counts else None


def run_group(name, backend, cmds, db=None, fsync_out=None, timeout=1800):
    """Runs the processes of one row through their marks: each mark is taken once every
    process has reached it, then all are released. Returns the marks and each one's RESULT;
    with `fsync_out`, the end mark also holds the fsync calls since the start mark."""
    for cmd in cmds:
        log(f"-- {name} on {backend}: {' '.join(map(str, cmd))}")
    env = dict(os.environ, NODE_PATH=str(PEERS / "node" / "node_modules"), PYTHONPATH=str(BENCH / "peers"))
    procs, fsyncs = [], None
    for cmd in cmds:
        procs.append(subprocess.Popen([str(c) for c in cmd] + ["--marks"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env, cwd=BENCH / "peers"))
    lines, errors = queue.Queue(), [[] for _ in procs]

    def pump(i, proc):
        for line in proc.stdout:
            lines.put((i, line))
        lines.put((i, None))

    def keep_stderr(i, proc):
        # Read as it comes, so that a chatty harness never blocks on a full pipe.
        for line in proc.stderr:
            errors[i] = (errors[i] + [line])[-40:]

    for i, proc in enumerate(procs):
        threading.Thread(target=pump, args=(i, proc), daemon=True).start()
        threading.Thread(target=keep_stderr, args=(i, proc), daemon=True).start()
    marks, reached, results, running = {}, {}, [None] * len(procs), len(procs)
    deadline = time.time() + timeout
    while running:
        try:
            i, line = lines.get(timeout=max(0.1, deadline - time.time()))
        except queue.Empty:
            line = ""
        if time.time() > deadline:
            for proc in procs:
                proc.kill()
            raise RuntimeError(f"{name}: timed out")
        if line is None:
            running -= 1
            continue
        m = re.search(r"MARK (\S+)", line)
        if m:
            point = m.group(1)
            reached.setdefault(point, set()).add(i)
            if len(reached[point]) == len(procs):
                if fsync_out and point.endswith("-start"):
                    fsyncs = FsyncCount(procs, fsync_out)
                marks[point] = snapshot(point, procs, backend, db)
                if fsyncs and point.endswith("-end"):
                    marks[point]["fsyncs"] = fsyncs.stop()
                for proc in procs:
                    proc.stdin.write("\n")
                    proc.stdin.flush()
                    if point.endswith("-end"):
                        # Nothing more to say: a harness that reads stdin would wait for its end.
                        proc.stdin.close()
            continue
        m = re.search(r"RESULT (\{.*\})", line)
        if m:
            results[i] = json.loads(m.group(1))
    for proc, result, error in zip(procs, results, errors):
        proc.wait()
        if proc.returncode != 0 or result is None:
            time.sleep(0.1)
            raise RuntimeError(f"{name}: exit {proc.returncode}: {''.join(error)[-2000:]}")
    return marks, results


def step(marks):
    """The start and end marks of the measured step (drain or enqueue)."""
    start = next(v for k, v in marks.items() if k.endswith("-start"))
    end = next(v for k, v in marks.items() if k.endswith("-end"))
    return start, end


def counters(out, start, end, done, db):
    """Adds the per-job CPU and commit figures between two marks to `out`."""
    out["worker_cpu_per_1k"] = (end["cpu"] - start["cpu"]) / done * 1000
    if "db_cpu" in end:
        db_cpu = sum((c or 0) - (start["db_cpu"].get(p) or 0) for p, c in end["db_cpu"].items())
        out["db_cpu_per_1k"] = db_cpu / done * 1000
    if db:
        # After the harness exited: its backends flushed their statistics on the way out.
        time.sleep(1)
        out["commits_per_job"] = (commits(db) - start["commits"]) / done
    return out


def run_harness(name, backend, cmd, db=None, fsync_out=None, timeout=1800):
    """Runs one harness through its marks; returns its RESULT plus the driver's counters."""
    marks, (result,) = run_group(name, backend, [cmd], db, fsync_out, timeout)
    start, end = step(marks)
    done = result.get("completed", result["jobs"]) or 0
    out = dict(result, name=name, backend=backend, drain_s=end["t"] - start["t"], done=done)
    out["jobs_per_s"] = done / out["drain_s"]
    if done:
        counters(out, start, end, done, db)
    if fsync_out:
        n = end.get("fsyncs")
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


def pg_rows(systems, args, db_prefix, backend="PostgreSQL"):
    """Runs each (name, cmd) with a fresh database in place of None in its command."""
    rows = []
    for i, (name, cmd) in enumerate(systems):
        db = f"{db_prefix}_{i}"
        url = fresh_pg(db)
        rows.append(run_harness(name, backend, [url if c is None else c for c in cmd] + args, db=db))
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return rows


def throughput_rows(n, tmp):
    args = ["--jobs", n, "--concurrency", CONCURRENCY, "--batch-size", ENQUEUE_BATCH]
    rows = []
    sqlite = tmp / "throughput.db"
    rows.append(run_harness("retryd embedded", "SQLite", [HARNESS, "throughput", sqlite] + args,
                            fsync_out=str(tmp / "fsync.csv")))
    if apalis_built():
        rows.append(run_harness("apalis", "SQLite", [APALIS, "throughput", tmp / "apalis-throughput.db"] + args,
                                fsync_out=str(tmp / "apalis-fsync.csv")))
    peers_pg = [
        ("retryd embedded", [HARNESS, "throughput", None]),
        ("graphile-worker", node("graphile.js") + ["throughput", None]),
        ("graphile-worker (batching)", node("graphile.js") + ["throughput", None, "--batch"]),
        ("pg-boss", node("pgboss.js") + ["throughput", None]),
        ("procrastinate", py("procrastinate_bench.py") + ["throughput", None]),
    ]
    if apalis_built():
        peers_pg.append(("apalis", [APALIS, "throughput", None]))
    rows += pg_rows(peers_pg, args, "bench_tp")
    rows.append(run_harness("BullMQ", "Redis", node("bullmq.js") + ["throughput", REDIS] + args))
    rows.append(run_harness("Celery", "Redis", py("celery_bench.py") + ["throughput", REDIS] + args))
    return rows


def enqueue_rows(n, tmp):
    """N no-op jobs enqueued in bulk calls of ENQUEUE_BATCH (retryd also one at a time)."""
    args = ["--jobs", n, "--concurrency", CONCURRENCY, "--batch-size", ENQUEUE_BATCH]
    one = ["--one-at-a-time"]
    rows = [
        run_harness("retryd embedded (enqueue_many)", "SQLite", [HARNESS, "enqueue", tmp / "enqueue.db"] + args),
        run_harness("retryd embedded (enqueue, 16 tasks)", "SQLite", [HARNESS, "enqueue", tmp / "enqueue-one.db"] + args + one),
    ]
    if apalis_built():
        rows.append(run_harness("apalis (push_bulk)", "SQLite", [APALIS, "enqueue", tmp / "apalis-enqueue.db"] + args))
    peers_pg = [
        ("retryd embedded (enqueue_many)", [HARNESS, "enqueue", None]),
        ("retryd embedded (enqueue, 16 tasks)", [HARNESS, "enqueue", None] + one),
        ("graphile-worker (addJobs)", node("graphile.js") + ["enqueue", None]),
        ("pg-boss (insert)", node("pgboss.js") + ["enqueue", None]),
        ("procrastinate (batch_defer_async)", py("procrastinate_bench.py") + ["enqueue", None]),
    ]
    if apalis_built():
        peers_pg.append(("apalis (push_bulk)", [APALIS, "enqueue", None]))
    rows += pg_rows(peers_pg, args, "bench_enq")
    rows.append(run_harness("BullMQ (addBulk)", "Redis", node("bullmq.js") + ["enqueue", REDIS] + args))
    rows.append(run_harness("Celery (apply_async, one producer)", "Redis", py("celery_bench.py") + ["enqueue", REDIS] + args))
    return rows


def rounds_rows(n, tmp, rounds):
    """The rows the targets compare, run in `rounds` interleaved rounds (each system once per
    round, in turn), so that a peer and retryd meet the same moments of a shared machine; the
    table gives each system's median and range. One reading per row swung a peer's rate by
    up to 1.8× between runs of one day on this machine."""
    drain = ["--jobs", n, "--concurrency", CONCURRENCY, "--batch-size", ENQUEUE_BATCH]
    systems = [
        ("drain", "retryd embedded", "SQLite", lambda r: [HARNESS, "throughput", tmp / f"rounds-{r}.db"]),
        ("drain", "retryd embedded", "PostgreSQL", lambda r: [HARNESS, "throughput", None]),
        ("drain", "graphile-worker (batching)", "PostgreSQL", lambda r: node("graphile.js") + ["throughput", None, "--batch"]),
        ("enqueue", "retryd embedded (enqueue_many)", "SQLite", lambda r: [HARNESS, "enqueue", tmp / f"rounds-enq-{r}.db"]),
        ("enqueue", "retryd embedded (enqueue_many)", "PostgreSQL", lambda r: [HARNESS, "enqueue", None]),
        ("enqueue", "graphile-worker (addJobs)", "PostgreSQL", lambda r: node("graphile.js") + ["enqueue", None]),
    ]
    readings = {i: [] for i in range(len(systems))}
    for r in range(rounds):
        for i, (_, name, backend, cmd) in enumerate(systems):
            if backend == "SQLite":
                readings[i].append(run_harness(name, backend, cmd(r) + drain)["jobs_per_s"])
            else:
                readings[i] += [row["jobs_per_s"] for row in pg_rows([(name, cmd(r))], drain, f"bench_rounds_{i}")]
    return [{"section": section, "name": name, "backend": backend, "jobs": int(n), "rounds": rounds,
             "median": statistics.median(readings[i]), "min": min(readings[i]), "max": max(readings[i]),
             "readings": readings[i]}
            for i, (section, name, backend, _) in enumerate(systems)]


def scale_n_rows(small, big, tmp, cap_s):
    """The drain rate at `small` and at `big` jobs: retryd on both backends and
    graphile-worker with batching. Each drain stops after `cap_s` and reports the rate so far."""
    rows = []
    for n in (small, big):
        args = ["--jobs", n, "--concurrency", CONCURRENCY, "--batch-size", ENQUEUE_BATCH, "--cap-s", cap_s]
        rows.append(run_harness("retryd embedded", "SQLite", [HARNESS, "throughput", tmp / f"scale-n-{n}.db"] + args))
        rows += pg_rows([("retryd embedded", [HARNESS, "throughput", None]),
                         ("graphile-worker (batching)", node("graphile.js") + ["throughput", None, "--batch"])],
                        args, f"bench_scale_n_{n}")
    return rows


def nodes_rows(n, cap_s):
    """retryd draining N jobs on one PostgreSQL from 1 and from 3 processes (nodes): one
    process enqueues, then every node drains until the database has N finished jobs. The
    drain lasts from the nodes' common start to the last completion on any node."""
    rows = []
    for nodes in (1, 3):
        db = f"bench_nodes_{nodes}"
        url = fresh_pg(db)
        log(f"-- {nodes} node(s): enqueueing {n} jobs")
        subprocess.run([str(c) for c in [HARNESS, "enqueue", url, "--jobs", n, "--batch-size", ENQUEUE_BATCH]],
                       check=True, capture_output=True)
        cmds = [[HARNESS, "drain", url, "--jobs", n, "--concurrency", CONCURRENCY, "--node", f"bench-{k + 1}",
                 "--cap-s", cap_s] for k in range(nodes)]
        name = f"retryd embedded, {nodes} node{'s' if nodes > 1 else ''}"
        marks, results = run_group(name, "PostgreSQL", cmds, db=db)
        start, end = step(marks)
        done = max(r["completed"] for r in results)
        last = max(r["last_done_unix"] or start["t"] for r in results)
        out = {"name": name, "backend": "PostgreSQL", "nodes": nodes, "jobs": n, "done": done,
               "drain_s": last - start["t"], "per_node": [r["completed_here"] for r in results]}
        out["jobs_per_s"] = done / out["drain_s"]
        rows.append(counters(out, start, end, done, db))
        log(f"   {json.dumps(out)}")
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
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


def render(res, meta):
    """The tables of the sections that ran, numbered in SECTIONS order."""
    out = [f"# Benchmark results ({meta['date']})", "", f"Machine: {meta['machine']}", "",
           f"Command: `{meta['command']}`", ""]
    number = iter(range(1, len(SECTIONS) + 1))
    rounds, tp, enq, scale_n, nodes = res["rounds"], res["throughput"], res["enqueue"], res["scale-n"], res["nodes"]
    late, lib, cmd, scale = res["lateness"], res["library"], res["command"], res["scale"]

    def partial(r):
        return f" ({r['done']:,} of {r['jobs']:,} in {r['drain_s']:.0f} s)" if r["done"] < r["jobs"] else ""

    if rounds:
        out += [f"## {next(number)}. Head to head, {rounds[0]['rounds']} interleaved rounds", "",
                f"{rounds[0]['jobs']:,} no-op jobs: drained with concurrency {CONCURRENCY}, or enqueued in calls of "
                f"{ENQUEUE_BATCH:,}. Each round runs every row once, in turn; the median of the rounds, and the "
                "ratio of medians against graphile-worker's row of the same kind.", "",
                "| what | system | backend | median jobs/s | min – max | against graphile-worker |",
                "|---|---|---|---:|---:|---:|"]
        for r in rounds:
            peer = next(p for p in rounds if p["section"] == r["section"] and p["name"].startswith("graphile-worker"))
            out.append(f"| {r['section']} | {r['name']} | {r['backend']} | {fmt(r['median'], 0)} | "
                       f"{fmt(r['min'], 0)} – {fmt(r['max'], 0)} | {fmt(r['median'] / peer['median'], 2)}× |")
        out.append("")
    if tp:
        out += [f"## {next(number)}. Throughput", "",
                f"{tp[0]['jobs']:,} no-op jobs enqueued, then drained with concurrency {CONCURRENCY}.", "",
                "| system | backend | jobs/s | worker CPU s / 1k jobs | DB server CPU s / 1k jobs | commits / job | jobs / fsync |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for r in tp:
            out.append(f"| {r['name']}{partial(r)} | {r['backend']} | {fmt(r['jobs_per_s'], 0)} | {fmt(r['worker_cpu_per_1k'], 2)} | "
                       f"{fmt(r.get('db_cpu_per_1k'), 2)} | {fmt(r.get('commits_per_job'), 2)} | {fmt(r.get('jobs_per_fsync'), 2)} |")
        out.append("")
    if enq:
        out += [f"## {next(number)}. Bulk enqueue", "",
                f"{enq[0]['jobs']:,} no-op jobs enqueued in calls of {ENQUEUE_BATCH:,} (rows that say otherwise: one job "
                "per call), nothing draining.", "",
                "| system | backend | jobs/s | client CPU s / 1k jobs | DB server CPU s / 1k jobs | commits / job |",
                "|---|---|---:|---:|---:|---:|"]
        for r in enq:
            out.append(f"| {r['name']} | {r['backend']} | {fmt(r['jobs_per_s'], 0)} | {fmt(r['worker_cpu_per_1k'], 2)} | "
                       f"{fmt(r.get('db_cpu_per_1k'), 2)} | {fmt(r.get('commits_per_job'), 2)} |")
        out.append("")
    if scale_n:
        sizes = sorted({r["jobs"] for r in scale_n})
        out += [f"## {next(number)}. Drain rate against N", "",
                f"The throughput row at {sizes[0]:,} and at {sizes[-1]:,} jobs (each drain stopped after "
                f"{scale_n[-1]['cap_s']} s at most); the target: the larger drain within 20 % of the smaller's rate.", "",
                f"| system | backend | jobs/s at {sizes[0]:,} | jobs/s at {sizes[-1]:,} | ratio | DB server CPU s / 1k jobs at {sizes[-1]:,} |",
                "|---|---|---:|---:|---:|---:|"]
        for r in [r for r in scale_n if r["jobs"] == sizes[0]]:
            big = next(b for b in scale_n if b["jobs"] == sizes[-1] and (b["name"], b["backend"]) == (r["name"], r["backend"]))
            out.append(f"| {r['name']}{partial(big)} | {r['backend']} | {fmt(r['jobs_per_s'], 0)} | {fmt(big['jobs_per_s'], 0)} | "
                       f"{fmt(big['jobs_per_s'] / r['jobs_per_s'], 2)} | {fmt(big.get('db_cpu_per_1k'), 2)} |")
        out.append("")
    if nodes:
        out += [f"## {next(number)}. Several nodes on one PostgreSQL", "",
                f"{nodes[0]['jobs']:,} no-op jobs enqueued by one process, then drained by 1 or 3 processes (nodes) "
                f"with concurrency {CONCURRENCY} each; from their common start to the last completion.", "",
                "| system | jobs/s | jobs per node | worker CPU s / 1k jobs (all nodes) | DB server CPU s / 1k jobs | commits / job |",
                "|---|---:|---|---:|---:|---:|"]
        for r in nodes:
            out.append(f"| {r['name']}{partial(r)} | {fmt(r['jobs_per_s'], 0)} | {' / '.join(f'{k:,}' for k in r['per_node'])} | "
                       f"{fmt(r['worker_cpu_per_1k'], 2)} | {fmt(r.get('db_cpu_per_1k'), 2)} | {fmt(r.get('commits_per_job'), 2)} |")
        out.append("")
    if late:
        out += [f"## {next(number)}. Retry wake-up lateness", "",
                f"{late[0]['jobs']:,} jobs arriving at 100/s, each failing its first attempt; lateness = start of the "
                "second attempt − its due time.", "",
                "| system | backend | settings | retry delay | p50 ms | p99 ms |", "|---|---|---|---|---:|---:|"]
        delays = {"retryd embedded": "100 ms", "graphile-worker": "e¹ s (fixed by the library)", "pg-boss": "1 s (whole seconds)",
                  "procrastinate": "1 s (whole seconds)", "BullMQ": "100 ms", "Celery": "100 ms",
                  "apalis": "100 ms (in-process timer; the job stays claimed)"}
        for r in late:
            out.append(f"| {r['name']} | {r['backend']} | {r['settings']} | {delays[r['name']]} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} |")
        out.append("")
    if lib:
        out += [f"## {next(number)}. Library overhead (criterion, zero-delay policy)", "", "| benchmark | time |", "|---|---:|"]
        for r in lib:
            out.append(f"| {r['bench']} | {fmt(r['ns'], 1)} ns |")
        out.append("")
    if cmd:
        out += [f"## {next(number)}. Command attempt overhead", "",
                f"Median of {cmd['runs']} runs: `true` {fmt(cmd['direct_ms'], 2)} ms, `retryd run -- true` "
                f"{fmt(cmd['retryd_ms'], 2)} ms: **{fmt(cmd['overhead_ms'], 2)} ms** added.", ""]
    if scale:
        out += [f"## {next(number)}. Scale: list API with stored jobs", "",
                "| backend | jobs | requests | p50 ms | p99 ms | RSS at start MiB | RSS after MiB | peak RSS MiB |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in scale:
            out.append(f"| {r['backend']} | {r['jobs']:,} | {r['requests']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                       f"{fmt(r['rss_start_mib'])} | {fmt(r['rss_end_mib'])} | {fmt(r['rss_peak_mib'])} |")
    return "\n".join(out).rstrip("\n") + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N: a few minutes instead of ~40")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run this section only (repeatable); the table is printed, bench/results is left alone")
    args = parser.parse_args()
    if args.quick:
        n_tp, n_big, n_late, n_scale, cap_s = 2000, 20_000, 200, 100_000, 120
    else:
        n_tp, n_big, n_late, n_scale, cap_s = 20_000, 200_000, 1000, 1_000_000, SCALE_CAP_S
    only = set(args.only or SECTIONS)
    tmp = Path(tempfile.mkdtemp(prefix="retryd-bench-"))
    versions = subprocess.run([NODE, "-e", "for (const p of ['graphile-worker','pg-boss','bullmq']) "
                               "console.log(p + ' ' + require(p + '/package.json').version)"],
                              capture_output=True, text=True, env=dict(os.environ, NODE_PATH=str(PEERS / "node" / "node_modules"))).stdout.split("\n")
    pyv = subprocess.run([PYTHON, "-c", "import importlib.metadata as m; print('procrastinate', m.version('procrastinate')); "
                          "print('celery', m.version('celery'))"], capture_output=True, text=True).stdout.split("\n")
    mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "bash bench/run.sh" + (" --quick" if args.quick else "")
                   + "".join(f" --only {o}" for o in args.only or []),
        "machine": f"{os.cpu_count()} CPUs, {int(mem) // 1024 // 1024} GiB RAM; "
                   f"{psql('SHOW server_version')} PostgreSQL, Redis "
                   f"{subprocess.run(['redis-cli', 'INFO', 'server'], capture_output=True, text=True).stdout.split('redis_version:')[1].split()[0]}, "
                   f"node {subprocess.run([NODE, '--version'], capture_output=True, text=True).stdout.strip()}; "
                   + ", ".join(v for v in versions + pyv + apalis_versions() if v),
    }
    run = {
        "rounds": lambda: rounds_rows(n_tp, tmp, 2 if args.quick else ROUNDS),
        "throughput": lambda: throughput_rows(n_tp, tmp),
        "enqueue": lambda: enqueue_rows(n_tp, tmp),
        "scale-n": lambda: [dict(r, cap_s=cap_s) for r in scale_n_rows(n_tp, n_big, tmp, cap_s)],
        "nodes": lambda: nodes_rows(n_tp, cap_s),
        "lateness": lambda: lateness_rows(n_late, tmp),
        "library": library_rows,
        "command": lambda: command_rows(50 if args.quick else 200),
        "scale": lambda: scale_rows(n_scale, tmp, 200 if args.quick else 1000),
    }
    res = {section: run[section]() if section in only else [] for section in SECTIONS}
    table = render(res, meta)
    if only == set(SECTIONS):
        results = BENCH / "results"
        results.mkdir(exist_ok=True)
        (results / "latest.md").write_text(table)
        (results / "latest.json").write_text(json.dumps(dict(res, meta=meta), indent=1))
    print(table)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
