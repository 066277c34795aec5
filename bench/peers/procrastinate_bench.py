"""procrastinate on PostgreSQL: throughput, bulk enqueue (`batch_defer_async`) and retry
lateness. Its retry wait is whole seconds, so 1 s; lateness is measured against each job's
scheduled_at.

Throughput runs the worker at the documented settings for a busy queue: `concurrency` jobs in
parallel (async tasks), new jobs announced by LISTEN/NOTIFY (the default) and a fetch polling
interval of 0.1 s instead of 5 s."""
import asyncio
import datetime
import time

import procrastinate
import psycopg

from common import RATE, Completions, batches, mark, parse_args, result

args = parse_args()
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=args.url, min_size=2, max_size=args.concurrency + 4))
late = []
seen = set()
counter = Completions(args.jobs)


@app.task(name="noop")
async def noop():
    counter.done()


@app.task(name="failonce", pass_context=True, retry=procrastinate.RetryStrategy(max_attempts=1, wait=1))
async def failonce(context):
    job = context.job
    if job.id not in seen:
        seen.add(job.id)
        raise RuntimeError("fails once")
    late.append((datetime.datetime.now(datetime.timezone.utc) - job.scheduled_at).total_seconds() * 1000)
    counter.done()


async def settled(conn):
    """Whether every job is stored as finished: procrastinate records a job's end after its
    task returned."""
    done, total = await (await conn.execute(
        "SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed')), count(*) FROM procrastinate_jobs")).fetchone()
    return done, done == total and total >= args.jobs


async def main():
    completed = 0
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        task = failonce if args.mode == "lateness" else noop
        if args.mode == "enqueue":
            mark(args, "enqueue-start")
            for n in batches(args):
                await task.batch_defer_async(*[{} for _ in range(n)])
            mark(args, "enqueue-end")
            result({"system": "procrastinate", "mode": args.mode, "jobs": args.jobs, "batch_size": args.batch_size})
            return
        throughput = args.mode == "throughput"
        for n in batches(args) if throughput else []:
            await task.batch_defer_async(*[{} for _ in range(n)])
        mark(args, "drain-start")
        # Defaults: poll every 5 s for jobs that become due (new ones come by NOTIFY). Best (and
        # throughput): 0.1 s.
        worker = asyncio.create_task(app.run_worker_async(
            concurrency=args.concurrency, install_signal_handlers=False,
            fetch_job_polling_interval=0.1 if args.best or throughput else 5.0))
        start = time.time()
        for i in range(0 if throughput else args.jobs):
            await task.defer_async()
            await asyncio.sleep(max(0.0, start + (i + 1) / RATE - time.time()))
        # The handlers count the finished jobs; the database is asked only once they all ran
        # (or the cap passed).
        deadline = time.time() + args.cap_s
        while not counter.finished.is_set() and time.time() < deadline:
            await asyncio.sleep(0.002)
        async with await psycopg.AsyncConnection.connect(args.url, autocommit=True) as conn:
            completed, all_done = await settled(conn)
            while counter.finished.is_set() and not all_done:
                await asyncio.sleep(0.002)
                completed, all_done = await settled(conn)
        mark(args, "drain-end")
        worker.cancel()
        try:
            await worker
        except asyncio.CancelledError:
            pass
    result({"system": "procrastinate", "mode": args.mode, "jobs": args.jobs, "completed": completed},
           late if args.mode == "lateness" else None)


asyncio.run(main())
