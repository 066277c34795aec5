// pg-boss: throughput (workers fetch and complete in batches of the concurrency) and retry
// lateness (retryDelay is whole seconds, so 1 s; measured against each job's startAfter).
'use strict';
const PgBoss = require('pg-boss');
const { parseArgs, mark, result, until, paced } = require('./common');

async function main() {
  const args = parseArgs();
  const boss = new PgBoss({ connectionString: args.url, max: args.concurrency + 2 });
  boss.on('error', (e) => console.error(e));
  await boss.start();
  const queue = args.mode === 'throughput' ? 'noop' : 'failonce';
  await boss.createQueue(queue);
  const options = args.mode === 'throughput' ? {} : { retryLimit: 1, retryDelay: 1 };
  const throughput = args.mode === 'throughput';
  for (let i = 0; throughput && i < args.jobs; i += 1000) {
    const n = Math.min(1000, args.jobs - i);
    await boss.insert(Array.from({ length: n }, () => ({ name: queue, data: {}, ...options })));
  }
  const late = [];
  const seen = new Set();
  await mark(args, 'drain-start');
  // A pg-boss worker waits its polling interval after every batch, found work or not.
  // Defaults: 2 s. Best: 0.5 s, the minimum it accepts; throughput uses the best.
  const pollingIntervalSeconds = args.best || args.mode === 'throughput' ? 0.5 : 2;
  await boss.work(queue, { batchSize: args.concurrency, pollingIntervalSeconds, includeMetadata: true }, async (jobs) => {
    if (queue === 'noop') return;
    const first = jobs.filter((job) => !seen.has(job.id));
    for (const job of jobs) {
      if (seen.has(job.id)) late.push(Date.now() - new Date(job.startAfter).getTime());
      else seen.add(job.id);
    }
    // The rest complete when the handler returns.
    if (first.length) await boss.fail(queue, first.map((j) => j.id), { message: 'fails once' });
  });
  if (!throughput) await paced(args.jobs, () => boss.send(queue, {}, options));
  const db = boss.getDb();
  // pg-boss drains slowly: the row stops after CAP_S and reports the rate so far.
  const CAP_S = 90;
  const started = Date.now();
  let completed = 0;
  await until(async () => {
    const { rows } = await db.executeSql("SELECT count(*) FILTER (WHERE state = 'completed')::int AS done, count(*)::int AS n FROM pgboss.job WHERE name = $1", [queue]);
    completed = rows[0].done;
    return completed === rows[0].n || Date.now() - started > CAP_S * 1000;
  });
  await mark(args, 'drain-end');
  await boss.stop({ graceful: false, wait: true });
  result({ system: 'pg-boss', mode: args.mode, jobs: args.jobs, completed }, args.mode === 'lateness' ? late : null);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
