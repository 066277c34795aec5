// Issue 16: a page served from another origin (another port of 127.0.0.1, so the same site:
// the SameSite=Strict session cookie goes along) can neither open the live WebSocket nor make
// a change, whether authentication is on (a logged-in user visits the page) or off.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Server, launch } from './harness.mjs';

let browser, attacker, attackerUrl;

// The attacker's page: tries the WebSocket, a no-cors text/plain POST and a form POST against
// `target`, and reports what happened in `window.report`.
const attackPage = (target) => `<!doctype html><meta charset="utf-8"><title>attacker</title>
<iframe name="sink"></iframe>
<form id="f" method="POST" action="${target}/api/v1/queues/forms/pause" target="sink"><input name="x" value="1"></form>
<script>
window.report = { ws: 'pending', fetch: 'pending' };
const ws = new WebSocket('${target.replace('http://', 'ws://')}/api/v1/ws');
ws.onopen = () => { window.report.ws = 'open'; };
ws.onmessage = () => { window.report.ws = 'read'; };
ws.onerror = () => { if (window.report.ws === 'pending') window.report.ws = 'refused'; };
ws.onclose = () => { if (window.report.ws === 'pending') window.report.ws = 'refused'; };
fetch('${target}/api/v1/queues/default/pause', {
  method: 'POST', mode: 'no-cors', credentials: 'include',
  headers: { 'content-type': 'text/plain' }, body: '{}',
}).then(() => { window.report.fetch = 'sent'; }, () => { window.report.fetch = 'failed'; });
document.getElementById('f').submit();
</script>`;

before(async () => {
  browser = await launch();
  let target = '';
  attacker = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(attackPage(target));
  });
  await new Promise((r) => attacker.listen(0, '127.0.0.1', r));
  attackerUrl = `http://127.0.0.1:${attacker.address().port}/`;
  attacker.setTarget = (t) => { target = t; };
});

after(async () => {
  await browser?.close();
  attacker?.close();
});

async function attack(server, context) {
  attacker.setTarget(server.url);
  const page = await context.newPage();
  await page.goto(attackerUrl);
  await page.waitForFunction(() => window.report.ws !== 'pending' && window.report.fetch !== 'pending', null, { timeout: 10000 });
  // The form's navigation lands in the frame; give it its answer.
  await page.waitForTimeout(500);
  const report = await page.evaluate(() => window.report);
  await page.close();
  return report;
}

async function assertNothingChanged(server) {
  const { status, body } = await server.get('/queues');
  assert.equal(status, 200);
  const paused = body.filter((q) => q.paused).map((q) => q.name);
  assert.deepEqual(paused, [], `no queue was paused: ${JSON.stringify(body)}`);
}

test('a logged-in user visiting a page on another port: no WebSocket, no change', async () => {
  const server = await Server.start();
  try {
    const context = await browser.newContext();
    const login = await context.newPage();
    await login.goto(server.loginLink);
    await login.waitForURL(`${server.url}/`);
    await login.close();
    // A queue to pause exists once a job was submitted to it.
    await server.submit('true', [], { queue: 'forms' });
    const report = await attack(server, context);
    assert.equal(report.ws, 'refused', 'the WebSocket did not open');
    await assertNothingChanged(server);
    // The same user on the server's own page may do both.
    const own = await context.newPage();
    await own.goto(`${server.url}/`);
    const opened = await own.evaluate(() => new Promise((done) => {
      const ws = new WebSocket(`ws://${location.host}/api/v1/ws`);
      ws.onopen = () => done(true);
      ws.onerror = () => done(false);
    }));
    assert.equal(opened, true, 'the dashboard itself opens the WebSocket');
    await context.close();
  } finally {
    await server.stop();
  }
});

test('with authentication off, a page on another port: no WebSocket, no change', async () => {
  const server = await Server.start(['--auth', 'false']);
  try {
    const context = await browser.newContext();
    await server.submit('true', [], { queue: 'forms' });
    const report = await attack(server, context);
    assert.equal(report.ws, 'refused', 'the WebSocket did not open');
    await assertNothingChanged(server);
    await context.close();
  } finally {
    await server.stop();
  }
});
