// pg-boss 12: throughput, bulk enqueue (`insert`) and retry lateness (retryDelay is whole
// seconds, so 1 s; measured against each job's startAfter).
//
// Throughput runs pg-boss at its documented best for a backlog (pgboss.io/api/workers, the
// `work()` options): one worker fetching `batchSize` = concurrency jobs per query (the handler
// gets them all at once and returning completes the whole batch in one statement: no
// `perJobResults`, no `includeMetadata`), and `burstWhenBatchFull`, which fetches again at
// once while fetches come back full instead of waiting the polling interval; the interval is
// 0.5 s, the minimum pg-boss accepts, for the short fetch at the end.
'use strict';
const { PgBoss } = require('pg-boss');
const { parseArgs, mark, result, paced, inBatches, completions, settledAfter } = require('./common');

async function main() {
  const args = parseArgs();
  const throughput = args.mode !== 'lateness';
  const boss = new PgBoss({ connectionString: args.url, max: args.concurrency + 2 });
  boss.on('error', (e) => console.error(e));
  await boss.start();
  const queue = throughput ? 'noop' : 'failonce';
  // Since pg-boss 10 a queue must be created before use; its retry options are the defaults
  // of the jobs sent to it (retryDelay in whole seconds, retryBackoff off).
  await boss.createQueue(queue, throughput ? {} : { retryLimit: 1, retryDelay: 1, retryBackoff: false });
  const addBatch = (n) => boss.insert(queue, Array.from({ length: n }, () => ({ data: {} })));
  if (args.mode === 'enqueue') {
    await mark(args, 'enqueue-start');
    await inBatches(args, addBatch);
    await mark(args, 'enqueue-end');
    await boss.stop({ graceful: false });
    result({ system: 'pg-boss', mode: args.mode, jobs: args.jobs, batch_size: args.batchSize });
    return;
  }
  if (throughput) await inBatches(args, addBatch);
  const late = [];
  const seen = new Set();
  const counter = completions(args.jobs, args.capS);
  await mark(args, 'drain-start');
  // A pg-boss worker waits its polling interval after each fetch. Defaults: 2 s. Best: 0.5 s,
  // the minimum it accepts, and burstWhenBatchFull; throughput uses the best.
  const best = args.best || throughput;
  const polling = best ? { pollingIntervalSeconds: 0.5, burstWhenBatchFull: true } : { pollingIntervalSeconds: 2 };
  if (throughput) {
    await boss.work(queue, { batchSize: args.concurrency, ...polling }, async (jobs) => { counter.done(jobs.length); });
  } else {
    await boss.work(queue, { batchSize: args.concurrency, includeMetadata: true, perJobResults: true, ...polling }, async (jobs) =>
      jobs.map((job) => {
        if (!seen.has(job.id)) {
          seen.add(job.id);
          return { id: job.id, status: 'failed', output: { message: 'fails once' } };
        }
        late.push(Date.now() - new Date(job.startAfter).getTime());
        counter.done();
        return { id: job.id, status: 'completed' };
      }));
  }
  if (!throughput) await paced(args.jobs, () => boss.send(queue, {}));
  // pg-boss completes a batch after its handler returned: the drain is over once every job is
  // stored as completed.
  const db = boss.getDb();
  let completed = 0;
  await settledAfter(counter, async () => {
    const { rows } = await db.executeSql("SELECT count(*) FILTER (WHERE state = 'completed')::int AS done FROM pgboss.job WHERE name = $1", [queue]);
    completed = rows[0].done;
    return completed >= args.jobs;
  });
  if (completed < args.jobs) completed = counter.count;
  await mark(args, 'drain-end');
  await boss.stop({ graceful: false });
  result({ system: 'pg-boss', mode: args.mode, jobs: args.jobs, completed }, args.mode === 'lateness' ? late : null);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
