"""Celery on Redis: throughput, bulk enqueue (one producer connection; Celery has no bulk
call) and retry lateness (self.retry(countdown=0.1); due time = when
the first attempt failed + 100 ms). One worker process with a thread pool of the
concurrency, so that the harness sees every attempt. Celery holds countdown tasks in the
worker's timer: there is no polling to tune, so defaults are its best."""
import threading
import time

import redis
from celery import Celery

from common import Completions, mark, pace, parse_args, result

args = parse_args()
app = Celery("bench", broker=args.url)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, worker_redirect_stdouts=False, worker_prefetch_multiplier=4,
                broker_connection_retry_on_startup=True)
store = redis.Redis.from_url(args.url)
failed_at = {}
late = []
# Counted in the worker's threads (this process), not with a Redis command per job.
counter = Completions(args.jobs)


@app.task(name="noop")
def noop():
    counter.done()


@app.task(name="failonce", bind=True, max_retries=1)
def failonce(self):
    key = self.request.id
    if key not in failed_at:
        failed_at[key] = time.time()
        raise self.retry(countdown=0.1)
    late.append((time.time() - (failed_at[key] + 0.1)) * 1000)
    counter.done()


def main():
    store.flushdb()
    task = failonce if args.mode == "lateness" else noop
    if args.mode == "enqueue":
        mark(args, "enqueue-start")
        with app.producer_or_acquire() as producer:
            for _ in range(args.jobs):
                task.apply_async(producer=producer)
        mark(args, "enqueue-end")
        result({"system": "Celery", "mode": args.mode, "jobs": args.jobs, "batch_size": 1})
        return
    throughput = args.mode == "throughput"
    with app.producer_or_acquire() as producer:
        for _ in range(args.jobs if throughput else 0):
            task.apply_async(producer=producer)
    mark(args, "drain-start")
    worker = app.Worker(pool="threads", concurrency=args.concurrency, loglevel="WARNING", quiet=True,
                        without_heartbeat=True, without_gossip=True, without_mingle=True)
    threading.Thread(target=worker.start, daemon=True).start()
    start = time.time()
    for i in range(0 if throughput else args.jobs):
        task.apply_async()
        pace(i, start)
    # Celery acknowledges a message before its task runs (acks_late is off): a task that
    # returned is done.
    counter.finished.wait(args.cap_s)
    mark(args, "drain-end")
    result({"system": "Celery", "mode": args.mode, "jobs": args.jobs, "completed": counter.count},
           late if args.mode == "lateness" else None)


main()
