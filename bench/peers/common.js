// Shared by the Node harnesses: arguments, marks (see bench/retryd_bench.rs) and results.
'use strict';
const readline = require('readline');

function parseArgs() {
  const [mode, url, ...rest] = process.argv.slice(2);
  if (!['throughput', 'lateness'].includes(mode) || !url) {
    throw new Error('usage: MODE(throughput|lateness) URL [--jobs N] [--concurrency C] [--best] [--batch] [--marks]');
  }
  const args = { mode, url, jobs: 1000, concurrency: 16, best: false, batch: false, marks: false };
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i];
    if (flag === '--best' || flag === '--batch' || flag === '--marks') { args[flag.slice(2)] = true; continue; }
    const value = Number(rest[++i]);
    if (!Number.isInteger(value) || value <= 0) throw new Error(`${flag}: must be a positive whole number`);
    if (flag === '--jobs') args.jobs = value;
    else if (flag === '--concurrency') args.concurrency = value;
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

module.exports = { parseArgs, mark, result, until, paced };
