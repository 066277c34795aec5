// The browser tests' harness: the real `retryd serve` on a free loopback port with its own
// SQLite file (as tests/e2e/helpers.rs does), a small API client, and Debian's Chromium.

import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = process.env.RETRYD_BIN || join(ROOT, 'target/debug/retryd');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export class Server {
  static async start(extra = []) {
    const dir = mkdtempSync(join(tmpdir(), 'retryd-browser-'));
    const log = openSync(join(dir, 'server.log'), 'a');
    const env = { ...process.env, NO_COLOR: '1' };
    delete env.RETRYD_CONFIG;
    const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--database', join(dir, 'retryd.db'), '--shutdown-grace', '1s', ...extra], {
      cwd: dir,
      env,
      stdio: ['ignore', 'pipe', log],
    });
    const server = new Server(child, dir);
    server.url = await new Promise((done, fail) => {
      const timer = setTimeout(() => fail(new Error(`retryd serve did not print its address; log:\n${server.log()}`)), 20000);
      child.on('exit', (code) => fail(new Error(`retryd serve exited with ${code}; log:\n${server.log()}`)));
      createInterface({ input: child.stdout }).on('line', (line) => {
        server.stdout.push(line);
        // The first start prints the admin token and the dashboard link that logs in.
        const token = line.match(/^\s*token:\s+(\S+)/);
        if (token) server.token = token[1];
        const link = line.match(/^\s*dashboard:\s+(\S+)/);
        if (link) server.loginLink = link[1];
        const found = line.match(/listening on (\S+)/);
        if (found) {
          clearTimeout(timer);
          done(found[1]);
        }
      });
    });
    const authOff = extra.some((arg, i) => arg === '--auth' && extra[i + 1] === 'false');
    if (authOff) return server;
    if (!server.token) throw new Error(`retryd serve printed no admin token:\n${server.stdout.join('\n')}`);
    server.headers = { authorization: `Bearer ${server.token}` };
    return server;
  }

  constructor(child, dir) {
    this.child = child;
    this.dir = dir;
    this.stdout = [];
    this.headers = {};
  }

  log() {
    try {
      return readFileSync(join(this.dir, 'server.log'), 'utf8');
    } catch {
      return '';
    }
  }

  async request(method, path, body, headers = {}) {
    const response = await fetch(`${this.url}/api/v1${path}`, {
      method,
      headers: { ...this.headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: response.status, body: json };
  }

  get(path) {
    return this.request('GET', path);
  }

  post(path, body = {}) {
    return this.request('POST', path, body);
  }

  /** Creates an API token with `role`; returns its plain text. */
  async createToken(name, role) {
    const { status, body } = await this.post('/tokens', { name, role });
    if (status !== 201) throw new Error(`token create refused (${status}): ${JSON.stringify(body)}`);
    return body.token;
  }

  /** Submits a command job; returns its view. */
  async submit(program, args, extra = {}) {
    const { status, body } = await this.post('/jobs', { action: { type: 'command', program, args }, ...extra });
    if (status !== 201) throw new Error(`submit refused (${status}): ${JSON.stringify(body)}`);
    return body;
  }

  async job(id) {
    const { status, body } = await this.get(`/jobs/${id}`);
    if (status !== 200) throw new Error(`GET job ${id}: ${status} ${JSON.stringify(body)}`);
    return body;
  }

  /** Polls the API until `done(job)`; throws with the job after `timeout` ms. */
  async waitFor(id, done, timeout = 20000) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const job = await this.job(id);
      if (done(job)) return job;
      if (Date.now() > deadline) throw new Error(`job ${id} did not get there: ${JSON.stringify(job)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop() {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A page that records every console error, uncaught exception and dialog, so that a test
 * can fail on any. Failed API responses the test provokes on purpose are listed in `allow`
 * (URL substrings) — Chromium logs those as console errors too.
 */
export async function watchedPage(context, allow = []) {
  const page = await context.newPage();
  const problems = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const where = msg.location().url || '';
    if (msg.text().startsWith('Failed to load resource') && allow.some((a) => where.includes(a))) return;
    problems.push(`console error: ${msg.text()} (${where})`);
  });
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
  page.on('dialog', async (dialog) => {
    problems.push(`dialog ${dialog.type()}: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.problems = problems;
  return page;
}
