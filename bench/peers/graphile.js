// graphile-worker: throughput (batching off, or on with --batch: local queue and batched
// completions) and retry lateness. Its retry delay is fixed by the library (exp(1) s after
// the first failure); lateness is measured against the job's own run_at.
'use strict';
const { run, makeWorkerUtils, Logger } = require('graphile-worker');

const quiet = new Logger(() => () => {});
const { Pool } = require('pg');
const { parseArgs, mark, result, until, paced } = require('./common');

async function main() {
  const args = parseArgs();
  const utils = await makeWorkerUtils({ connectionString: args.url, logger: quiet });
  await utils.migrate();
  const pool = new Pool({ connectionString: args.url, max: 1 });
  const task = args.mode === 'throughput' ? 'noop' : 'failonce';
  const throughput = args.mode === 'throughput';
  for (let i = 0; throughput && i < args.jobs; i += 1000) {
    const n = Math.min(1000, args.jobs - i);
    await utils.addJobs(Array.from({ length: n }, () => ({ identifier: task, payload: {}, maxAttempts: 3 })));
  }
  const late = [];
  await mark(args, 'drain-start');
  const preset = args.batch
    ? { worker: { localQueue: { size: Math.max(args.concurrency * 4, 100) }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
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
      noop: async () => {},
      failonce: async (_payload, helpers) => {
        if (helpers.job.attempts === 1) throw new Error('fails once');
        late.push(Date.now() - new Date(helpers.job.run_at).getTime());
      },
    },
  });
  if (!throughput) await paced(args.jobs, () => utils.addJob(task, {}, { maxAttempts: 3 }));
  // Done when the queue is empty: graphile-worker deletes completed jobs.
  await until(async () => (await pool.query('SELECT count(*)::int AS n FROM graphile_worker.jobs')).rows[0].n === 0);
  await mark(args, 'drain-end');
  await runner.stop();
  await pool.end();
  await utils.release();
  result({ system: args.batch ? 'graphile-worker (batching)' : 'graphile-worker', mode: args.mode, jobs: args.jobs }, args.mode === 'lateness' ? late : null);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
