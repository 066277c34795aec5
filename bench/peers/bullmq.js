// BullMQ on Redis: throughput (addBulk, one Worker with the concurrency), bulk enqueue
// (`addBulk`) and retry lateness (fixed 100 ms backoff; due time = when the first attempt
// failed + 100 ms). BullMQ has no polling to tune for retries (delayed jobs wake the worker),
// so defaults are its best.
'use strict';
const { Queue, Worker } = require('bullmq');
const { parseArgs, mark, result, paced, inBatches, completions, settledAfter } = require('./common');

async function main() {
  const args = parseArgs();
  const url = new URL(args.url);
  const connection = { host: url.hostname, port: Number(url.port || 6379), db: Number(url.pathname.slice(1) || 0) };
  const name = args.mode === 'lateness' ? 'failonce' : 'noop';
  const queue = new Queue(name, { connection });
  await queue.obliterate({ force: true });
  const opts = args.mode === 'lateness'
    ? { removeOnComplete: true, attempts: 2, backoff: { type: 'fixed', delay: 100 } }
    : { removeOnComplete: true };
  const addBatch = (n) => queue.addBulk(Array.from({ length: n }, () => ({ name, data: {}, opts })));
  if (args.mode === 'enqueue') {
    await mark(args, 'enqueue-start');
    await inBatches(args, addBatch);
    await mark(args, 'enqueue-end');
    await queue.close();
    result({ system: 'BullMQ', mode: args.mode, jobs: args.jobs, batch_size: args.batchSize });
    return;
  }
  const throughput = args.mode === 'throughput';
  if (throughput) await inBatches(args, addBatch);
  const failedAt = new Map();
  const late = [];
  const counter = completions(args.jobs, args.capS);
  await mark(args, 'drain-start');
  const worker = new Worker(name, async (job) => {
    if (name === 'noop') { counter.done(); return; }
    const at = failedAt.get(job.id);
    if (at === undefined) { failedAt.set(job.id, Date.now()); throw new Error('fails once'); }
    late.push(Date.now() - (at + 100));
    counter.done();
  }, { connection, concurrency: args.concurrency });
  if (!throughput) await paced(args.jobs, () => queue.add(name, {}, opts));
  // A job is moved to completed (here: removed) after its handler returned.
  await settledAfter(counter, async () => {
    const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'waiting-children');
    return Object.values(counts).every((n) => n === 0);
  });
  await mark(args, 'drain-end');
  await worker.close();
  await queue.close();
  result({ system: 'BullMQ', mode: args.mode, jobs: args.jobs, completed: counter.count }, args.mode === 'lateness' ? late : null);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
