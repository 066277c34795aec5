// Shared by the Node harnesses: arguments, marks (see bench/retryd_bench.rs) and results.
'use strict';
const readline = require('readline');

function parseArgs() {
  const [mode, url, ...rest] = process.argv.slice(2);
  if (!['throughput', 'lateness', 'enqueue'].includes(mode) || !url) {
    throw new Error('usage: MODE(throughput|lateness|enqueue) URL [--jobs N] [--concurrency C] [--batch-size B] [--cap-s S] [--best] [--batch] [--marks]');
  }
  // batchSize: jobs per bulk enqueue call. capS: a drain that takes longer stops and reports
  // the rate so far.
  const args = { mode, url, jobs: 1000, concurrency: 16, batchSize: 1000, capS: 90, best: false, batch: false, marks: false };
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i];
    if (flag === '--best' || flag === '--batch' || flag === '--marks') { args[flag.slice(2)] = true; continue; }
    const value = Number(rest[++i]);
    if (!Number.isInteger(value) || value <= 0) throw new Error(`${flag}: must be a positive whole number`);
    if (flag === '--jobs') args.jobs = value;
    else if (flag === '--concurrency') args.concurrency = value;
    else if (flag === '--batch-size') args.batchSize = value;
    else if (flag === '--cap-s') args.capS = value;
    else throw new Error(`${flag}: unknown flag`);
  }
  return args;
}

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function mark(args, name) {
  console.log(`MARK ${name}`);
  if (args.marks) await lines.next();
}

function percentile(sorted, p) {
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1];
}

function result(fields, late) {
  if (late) {
    late.sort((a, b) => a - b);
    Object.assign(fields, { retried: late.length, p50_ms: percentile(late, 50), p99_ms: percentile(late, 99) });
  }
  console.log(`RESULT ${JSON.stringify(fields)}`);
}

// Lateness rows enqueue while the workers run, at RATE jobs/s, so that retries measure the
// scheduler rather than a backlog.
const RATE = 100;
async function paced(n, add) {
  const start = Date.now();
  for (let i = 0; i < n; i++) {
    await add(i);
    const wait = start + ((i + 1) * 1000) / RATE - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
}

async function until(check, everyMs = 50) {
  while (!(await check())) await new Promise((r) => setTimeout(r, everyMs));
}

// Enqueues `args.jobs` jobs in calls of `args.batchSize`: `addBatch(n)` adds n of them.
async function inBatches(args, addBatch) {
  for (let i = 0; i < args.jobs; i += args.batchSize) await addBatch(Math.min(args.batchSize, args.jobs - i));
}

// The end of a drain, counted in-process (as bench/retryd_bench.rs counts its events): the
// harness calls `done()` when its handler finished a job; `finished` resolves once `n` did,
// or when `capS` passed. A count query every few milliseconds would cost the database and
// add up to its interval to the drain.
function completions(n, capS) {
  let count = 0;
  let resolve;
  const finished = new Promise((r) => { resolve = r; });
  const timer = setTimeout(() => resolve(), capS * 1000);
  return {
    n,
    done(k = 1) {
      count += k;
      if (count >= n) { clearTimeout(timer); resolve(); }
    },
    get count() { return count; },
    finished,
  };
}

// After the handlers finished every job, polls `settled()` (one query, usually true at once)
// until the system has stored the last results: completions may be committed after the
// handler returned (batched, or after the handler's promise resolved). A drain stopped by its
// cap does not wait.
async function settledAfter(counter, settled) {
  await counter.finished;
  if (counter.count >= counter.n) await until(settled, 2);
}

module.exports = { parseArgs, mark, result, until, paced, inBatches, completions, settledAfter };
