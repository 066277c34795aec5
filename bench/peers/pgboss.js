// pg-boss 12: throughput (workers fetch and settle in batches of the concurrency) and retry
// lateness (retryDelay is whole seconds, so 1 s; measured against each job's startAfter).
'use strict';
const { PgBoss } = require('pg-boss');
const { parseArgs, mark, result, until, paced } = require('./common');

async function main() {
  const args = parseArgs();
  const throughput = args.mode === 'throughput';
  const boss = new PgBoss({ connectionString: args.url, max: args.concurrency + 2 });
  boss.on('error', (e) => console.error(e));
  await boss.start();
  const queue = throughput ? 'noop' : 'failonce';
  // Since pg-boss 10 a queue must be created before use; its retry options are the defaults
  // of the jobs sent to it (retryDelay in whole seconds, retryBackoff off).
  await boss.createQueue(queue, throughput ? {} : { retryLimit: 1, retryDelay: 1, retryBackoff: false });
  for (let i = 0; throughput && i < args.jobs; i += 1000) {
    const n = Math.min(1000, args.jobs - i);
    await boss.insert(queue, Array.from({ length: n }, () => ({ data: {} })));
  }
  const late = [];
  const seen = new Set();
  await mark(args, 'drain-start');
  // A pg-boss worker waits its polling interval after each fetch. Defaults: 2 s. Best: 0.5 s,
  // the minimum it accepts, and burstWhenBatchFull (since 12: fetch again at once while each
  // fetch comes back full); throughput uses the best.
  const best = args.best || throughput;
  const polling = best ? { pollingIntervalSeconds: 0.5, burstWhenBatchFull: true } : { pollingIntervalSeconds: 2 };
  await boss.work(queue, { batchSize: args.concurrency, includeMetadata: true, perJobResults: true, ...polling }, async (jobs) =>
    jobs.map((job) => {
      if (throughput) return { id: job.id, status: 'completed' };
      if (!seen.has(job.id)) {
        seen.add(job.id);
        return { id: job.id, status: 'failed', output: { message: 'fails once' } };
      }
      late.push(Date.now() - new Date(job.startAfter).getTime());
      return { id: job.id, status: 'completed' };
    }));
  if (!throughput) await paced(args.jobs, () => boss.send(queue, {}));
  const db = boss.getDb();
  // A slow drain stops after CAP_S and reports the rate so far.
  const CAP_S = 90;
  const started = Date.now();
  let completed = 0;
  await until(async () => {
    const { rows } = await db.executeSql("SELECT count(*) FILTER (WHERE state = 'completed')::int AS done, count(*)::int AS n FROM pgboss.job WHERE name = $1", [queue]);
    completed = rows[0].done;
    return completed === rows[0].n || Date.now() - started > CAP_S * 1000;
  });
  await mark(args, 'drain-end');
  await boss.stop({ graceful: false });
  result({ system: 'pg-boss', mode: args.mode, jobs: args.jobs, completed }, args.mode === 'lateness' ? late : null);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
