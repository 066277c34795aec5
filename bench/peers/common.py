"""Shared by the Python harnesses: arguments, marks (see bench/retryd_bench.rs), results."""
import argparse
import json
import math
import sys


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["throughput", "lateness", "enqueue"])
    parser.add_argument("url")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    # Jobs per bulk enqueue call.
    parser.add_argument("--batch-size", type=int, default=1000)
    # A drain that takes longer stops and reports the rate so far.
    parser.add_argument("--cap-s", type=int, default=90)
    parser.add_argument("--best", action="store_true")
    parser.add_argument("--marks", action="store_true")
    return parser.parse_args()


def mark(args, name):
    print(f"MARK {name}", flush=True)
    if args.marks:
        sys.stdin.readline()


def batches(args):
    """The sizes of the bulk enqueue calls for `args.jobs` jobs."""
    return [min(args.batch_size, args.jobs - start) for start in range(0, args.jobs, args.batch_size)]


class Completions:
    """The end of a drain, counted in-process (as bench/retryd_bench.rs counts its events):
    handlers call `done()` for each finished job. A count query every few milliseconds would
    cost the database and add up to its interval to the drain. Thread-safe."""

    def __init__(self, n):
        import threading
        self.n, self.count = n, 0
        self._lock = threading.Lock()
        self.finished = threading.Event()

    def done(self):
        with self._lock:
            self.count += 1
            if self.count >= self.n:
                self.finished.set()


def percentile(values, p):
    values = sorted(values)
    rank = math.ceil(p / 100 * len(values))
    return values[min(max(rank, 1), len(values)) - 1]


def result(fields, late=None):
    if late is not None:
        fields.update(retried=len(late), p50_ms=percentile(late, 50), p99_ms=percentile(late, 99))
    print("RESULT " + json.dumps(fields), flush=True)


# Lateness rows enqueue while the workers run, at RATE jobs/s, so that retries measure the
# scheduler rather than a backlog.
RATE = 100


def pace(i, start):
    """Sleeps until job i + 1 is due."""
    import time
    wait = start + (i + 1) / RATE - time.time()
    if wait > 0:
        time.sleep(wait)
