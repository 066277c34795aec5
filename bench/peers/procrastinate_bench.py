"""procrastinate on PostgreSQL: throughput and retry lateness. Its retry wait is whole
seconds, so 1 s; lateness is measured against each job's scheduled_at."""
import asyncio
import datetime
import time

import procrastinate
import psycopg

from common import RATE, mark, parse_args, result

args = parse_args()
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=args.url, min_size=2, max_size=args.concurrency + 4))
late = []
seen = set()


@app.task(name="noop")
async def noop():
    pass


@app.task(name="failonce", pass_context=True, retry=procrastinate.RetryStrategy(max_attempts=1, wait=1))
async def failonce(context):
    job = context.job
    if job.id not in seen:
        seen.add(job.id)
        raise RuntimeError("fails once")
    late.append((datetime.datetime.now(datetime.timezone.utc) - job.scheduled_at).total_seconds() * 1000)


async def main():
    completed = 0
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        task = noop if args.mode == "throughput" else failonce
        throughput = args.mode == "throughput"
        for start in range(0, args.jobs if throughput else 0, 1000):
            await task.batch_defer_async(*[{} for _ in range(min(1000, args.jobs - start))])
        mark(args, "drain-start")
        # Defaults: poll every 5 s for jobs that become due (new ones come by NOTIFY). Best (and
        # throughput): 0.1 s.
        worker = asyncio.create_task(app.run_worker_async(
            concurrency=args.concurrency, install_signal_handlers=False,
            fetch_job_polling_interval=0.1 if args.best or args.mode == "throughput" else 5.0))
        start = time.time()
        for i in range(0 if throughput else args.jobs):
            await task.defer_async()
            await asyncio.sleep(max(0.0, start + (i + 1) / RATE - time.time()))
        # A slow drain stops after CAP_S and reports the rate so far.
        cap_s, started, completed = 90, time.time(), 0
        async with await psycopg.AsyncConnection.connect(args.url, autocommit=True) as conn:
            while True:
                done, total = await (await conn.execute(
                    "SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed')), count(*) "
                    "FROM procrastinate_jobs")).fetchone()
                completed = done
                if done == total and (throughput or total == args.jobs) or time.time() - started > cap_s:
                    break
                await asyncio.sleep(0.05)
        mark(args, "drain-end")
        worker.cancel()
        try:
            await worker
        except asyncio.CancelledError:
            pass
    result({"system": "procrastinate", "mode": args.mode, "jobs": args.jobs, "completed": completed},
           late if args.mode == "lateness" else None)


asyncio.run(main())
