// graphile-worker: throughput (batching off, or on with --batch), bulk enqueue (`addJobs`) and
// retry lateness. Its retry delay is fixed by the library (exp(1) s after the first failure);
// lateness is measured against the job's own run_at.
//
// --batch is graphile-worker at its documented best, the configuration of its own performance
// page (worker.graphile.org/docs/performance, "Quick stats" and "perfTest results: With
// batching", the 183,895 jobs/s run):
// - `localQueue: { size: 500 }`: the pool fetches and locks 500 jobs in one query and hands
//   them to its workers without a database round trip each (the page's figure; its starting
//   point for ordinary setups is concurrency + 1, which it says suits slow or rare jobs, not a
//   drain of no-op jobs);
// - `completeJobBatchDelay: 0`, `failJobBatchDelay: 0`: completions and failures that happen
//   in the same tick of the event loop are released in one statement ("even setting this to 0
//   can be impactful"; a larger delay only makes a drain wait);
// - `maxPoolSize` concurrency + 1 (the page: 25 for 24 concurrent jobs). The default pool of
//   10 is below a concurrency of 16, which graphile-worker itself warns about ("having
//   maxPoolSize smaller than concurrency may lead to non-optimal performance").
// Without --batch the row is graphile-worker's defaults (pool 10, no local queue, no batching)
// at the same concurrency.
'use strict';
const { run, makeWorkerUtils, Logger } = require('graphile-worker');

const quiet = new Logger(() => () => {});
const { Pool } = require('pg');
const { parseArgs, mark, result, paced, inBatches, completions, settledAfter } = require('./common');

async function main() {
  const args = parseArgs();
  const utils = await makeWorkerUtils({ connectionString: args.url, logger: quiet });
  await utils.migrate();
  const task = args.mode === 'lateness' ? 'failonce' : 'noop';
  const addBatch = (n) => utils.addJobs(Array.from({ length: n }, () => ({ identifier: task, payload: {}, maxAttempts: 3 })));
  if (args.mode === 'enqueue') {
    await mark(args, 'enqueue-start');
    await inBatches(args, addBatch);
    await mark(args, 'enqueue-end');
    await utils.release();
    result({ system: 'graphile-worker', mode: args.mode, jobs: args.jobs, batch_size: args.batchSize });
    return;
  }
  const throughput = args.mode === 'throughput';
  if (throughput) await inBatches(args, addBatch);
  const late = [];
  const counter = completions(args.jobs, args.capS);
  await mark(args, 'drain-start');
  const preset = args.batch
    ? {
      worker: {
        localQueue: { size: 500 },
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
        maxPoolSize: args.concurrency + 1,
      },
    }
    : undefined;
  const runner = await run({
    connectionString: args.url,
    concurrency: args.concurrency,
    noHandleSignals: true,
    logger: quiet,
    // Defaults: 2 s. Best: 100 ms (new jobs are announced by NOTIFY; retries are found by polling).
    pollInterval: args.best ? 100 : 2000,
    preset,
    taskList: {
      noop: async () => { counter.done(); },
      failonce: async (_payload, helpers) => {
        if (helpers.job.attempts === 1) throw new Error('fails once');
        late.push(Date.now() - new Date(helpers.job.run_at).getTime());
        counter.done();
      },
    },
  });
  if (!throughput) await paced(args.jobs, () => utils.addJob(task, {}, { maxAttempts: 3 }));
  // graphile-worker deletes a completed job: the drain is over once the handlers ran every job
  // and the (possibly batched) completions left the table empty.
  const pool = new Pool({ connectionString: args.url, max: 1 });
  await settledAfter(counter, async () => (await pool.query('SELECT count(*)::int AS n FROM graphile_worker.jobs')).rows[0].n === 0);
  await mark(args, 'drain-end');
  await runner.stop();
  await pool.end();
  await utils.release();
  result({ system: args.batch ? 'graphile-worker (batching)' : 'graphile-worker', mode: args.mode, jobs: args.jobs, completed: counter.count },
    args.mode === 'lateness' ? late : null);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
