// One job: for a failed job the diagnosis comes first (why it stopped, the last output
// lines, what to do), then the countdown or current step, the actions, the timeline of
// attempts (outcome, class, deciding rule, wait before the next and why), live output and
// the events.

import { get, post, can } from './api.js';
import { h, clear, badge, classTag, time, span, describeAction, confirmInline, when, zoneLabel, slug, parseDuration } from './dom.js';
import { toast, throttle, every } from './app.js';
import { statusLine } from './jobs.js';

const TAIL = 12;
const LOG_PAGE = 1000;
// The output panel starts with a long log's last lines; the whole log is a download away.
const SHOWN = 2000;
const TERMINAL = ['succeeded', 'failed', 'cancelled', 'expired'];

export function render(main, [id]) {
  const head = h('div', { class: 'job-head' });
  const diagnosis = h('section', { class: 'diagnosis', hidden: true });
  const status = h('section', { class: 'status-line' });
  const facts = h('section', { class: 'panel facts-panel' });
  const timeline = h('section', { class: 'panel' });
  const output = h('pre', { class: 'log', tabindex: '0', 'aria-label': 'output' });
  const search = h('input', { type: 'search', id: 'log-search', placeholder: 'search the output', autocomplete: 'off' });
  const stderrOnly = h('input', { type: 'checkbox', id: 'log-stderr' });
  // One attempt's output, or every attempt's; filled in from the attempts.
  const attemptPick = h('select', { id: 'log-attempt', 'aria-label': 'Attempt', hidden: true }, h('option', { value: '' }, 'every attempt'));
  const found = h('div', { class: 'log-found', 'aria-live': 'polite' });
  const outputHead = h('div', { class: 'panel-head' }, h('h2', {}, 'Output'), h('span', { class: 'muted follow' }),
    h('form', { class: 'log-tools' },
      h('label', { for: 'log-search', class: 'sr-only' }, 'Search the output'), search,
      attemptPick,
      h('label', { class: 'check' }, stderrOnly, ' stderr only'),
      h('a', { href: `/api/v1/jobs/${id}/log?download=true`, download: `retryd-job-${id}.log`, class: 'download' }, 'Download')));
  stderrOnly.addEventListener('change', () => output.classList.toggle('only-stderr', stderrOnly.checked));
  attemptPick.addEventListener('change', () => showAttempt(attemptPick.value ? Number(attemptPick.value) : null));
  outputHead.querySelector('form').addEventListener('submit', (e) => {
    e.preventDefault();
    findLines(search.value.trim());
  });
  const events = h('section', { class: 'panel' });
  main.appendChild(h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/jobs' }, 'Jobs'), ' / ', h('code', {}, id)));
  main.appendChild(head);
  main.appendChild(diagnosis);
  main.appendChild(status);
  main.appendChild(h('div', { class: 'job-grid' },
    h('div', { class: 'job-main' }, timeline, h('section', { class: 'panel' }, outputHead, found, output)),
    h('div', { class: 'job-side' }, facts, events)));

  let job = null;
  let attempts = [];
  let logAfter = 0;
  let follow = null;
  let disposed = false;

  async function refresh() {
    let fetched;
    try {
      fetched = await Promise.all([get(`/jobs/${id}`), get(`/jobs/${id}/attempts`), get(`/jobs/${id}/events`)]);
    } catch (e) {
      if (e.status === 404) {
        // Nothing to show beside it: no empty panels under the message.
        clear(main).appendChild(h('section', { class: 'empty-page' }, h('h1', {}, 'Job not found'),
          h('p', {}, 'No job ', h('code', {}, id), ' in this organization. ', h('a', { href: '/jobs' }, 'Back to the jobs'), '.')));
        disposed = true;
        return;
      }
      clear(head).appendChild(h('p', { class: 'error-box' }, e.message));
      return;
    }
    [job, attempts] = fetched;
    drawAttemptPick();
    drawHead();
    drawStatus();
    drawFacts();
    drawTimeline();
    drawEvents(fetched[2]);
    await drawDiagnosis();
    pumpLog();
  }

  function drawHead() {
    clear(head);
    const actions = h('div', { class: 'actions' });
    if (can('operator')) {
      if (['pending', 'running', 'retrying'].includes(job.state)) {
        if (job.state === 'retrying') actions.appendChild(action('Retry now', 'primary', () => post(`/jobs/${id}/retry`, {})));
        actions.appendChild(action('Cancel', 'danger', () => post(`/jobs/${id}/cancel`, {}), 'Cancel this job?'));
      } else if (job.state !== 'succeeded') {
        // A pipeline resumes at the step that stopped it, not from the start.
        const resumeAt = job.action.type === 'pipeline' && job.step ? `Resume at step ${job.step}` : 'Requeue';
        actions.appendChild(action(resumeAt, 'primary', () => post(`/jobs/${id}/retry`, {})));
        actions.appendChild(action('Requeue with reset', '', () => post(`/jobs/${id}/retry`, { reset: true })));
        const editButton = h('button', { type: 'button', 'data-action': 'Edit and requeue', 'aria-expanded': 'false' }, 'Edit and requeue');
        editButton.addEventListener('click', () => openEditor(editButton));
        actions.appendChild(editButton);
      }
    }
    head.appendChild(h('div', { class: 'job-title' },
      badge(job.state),
      h('h1', {}, job.kind),
      job.target ? h('span', { class: 'pill' }, '→ ', job.target) : null,
      h('code', { class: 'muted id-full' }, job.id)));
    head.appendChild(actions);
  }

  // Edit and replay: change what the job runs (a command's arguments and environment), its
  // policy, then requeue it; the changes are recorded on its timeline with who made them.
  async function openEditor(button) {
    const existing = main.querySelector('.editor');
    if (existing) {
      existing.remove();
      button.setAttribute('aria-expanded', 'false');
      return;
    }
    button.setAttribute('aria-expanded', 'true');
    const command = job.action.type === 'command';
    let policies = [];
    try {
      policies = (await get('/policies')).filter((p) => p.active).map((p) => p.name);
    } catch {
      policies = [];
    }
    const args = h('textarea', { id: 'edit-args', rows: '4', spellcheck: 'false' }, (job.action.args || []).join('\n'));
    const env = h('textarea', { id: 'edit-env', rows: '3', spellcheck: 'false', placeholder: 'KEY=value to set, KEY= to remove' });
    const secret = h('input', { type: 'checkbox', id: 'edit-secret' });
    const policy = h('select', { id: 'edit-policy' },
      h('option', { value: '' }, `keep (${job.policy_name})`), policies.map((name) => h('option', { value: name }, name)));
    const reset = h('input', { type: 'checkbox', id: 'edit-reset', checked: true });
    const form = h('form', { class: 'panel editor' },
      h('h2', {}, 'Edit and requeue'),
      command ? [
        h('label', { for: 'edit-args' }, 'Arguments of ', h('code', {}, job.action.program), ', one per line'), args,
        h('label', { for: 'edit-env' }, 'Environment changes'), env,
        h('label', { class: 'check' }, secret, ' the values are secrets (never shown again)'),
      ] : h('p', { class: 'muted' }, 'Only the policy of a non-command job can change here.'),
      h('label', { for: 'edit-policy' }, 'Policy'), policy,
      h('label', { class: 'check' }, reset, ' start the attempt count again'),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Requeue with these changes'),
        h('button', { type: 'button', class: 'ghost', onclick: () => { form.remove(); button.setAttribute('aria-expanded', 'false'); button.focus(); } }, 'Close')));
    form.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        form.remove();
        button.setAttribute('aria-expanded', 'false');
        button.focus();
      }
    });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { reset: reset.checked };
      if (command) {
        const newArgs = args.value.split('\n').filter((line, i, all) => line !== '' || i < all.length - 1);
        if (JSON.stringify(newArgs) !== JSON.stringify(job.action.args || [])) body.args = newArgs;
        const changes = {};
        for (const line of env.value.split('\n').map((l) => l.trim()).filter(Boolean)) {
          const at = line.indexOf('=');
          if (at < 1) {
            toast(`Environment: write KEY=value, got “${line}”`, 'error');
            return;
          }
          const key = line.slice(0, at);
          const value = line.slice(at + 1);
          changes[key] = value === '' ? null : (secret.checked ? { value, secret: true } : value);
        }
        if (Object.keys(changes).length) body.env = changes;
      }
      if (policy.value) body.policy = policy.value;
      try {
        await post(`/jobs/${id}/retry`, body);
        toast('Requeued with the changes');
        form.remove();
        refresh();
      } catch (err) {
        toast(`Requeue: ${err.message}`, 'error');
      }
    });
    head.after(form);
    (command ? args : policy).focus();
  }

  function action(label, kind, run, confirmText) {
    const button = h('button', { type: 'button', class: kind, 'data-action': label });
    button.textContent = label;
    button.addEventListener('click', async () => {
      if (confirmText && !(await confirmInline(button, confirmText))) return;
      button.disabled = true;
      try {
        await run();
        toast(`${label}: done`);
      } catch (e) {
        toast(`${label}: ${e.message}`, 'error');
      } finally {
        button.disabled = false;
        refresh();
      }
    });
    return button;
  }

  function drawStatus() {
    clear(status);
    // A finished job that did not succeed opens with its diagnosis instead.
    status.hidden = Boolean(job.diagnosis);
    status.dataset.state = job.state;
    const line = statusLine(job);
    const parts = [h('span', { class: 'status-text', id: 'countdown' }, line)];
    if (job.state === 'retrying' && job.waiting_reason) parts.push(h('span', { class: 'muted' }, job.waiting_reason));
    if (job.state === 'running') {
      const current = attempts[attempts.length - 1];
      const step = job.step || (current && current.step);
      if (step) parts.push(h('span', { class: 'pill step' }, 'step ', step));
    }
    status.appendChild(h('span', { class: 'status-icon', 'aria-hidden': 'true' }, { retrying: '↻', running: '▶', pending: '◷', succeeded: '✓', failed: '✕', cancelled: '⊘', expired: '⊖' }[job.state] || '·'));
    status.append(...parts);
  }

  async function drawDiagnosis() {
    if (!job.diagnosis) {
      diagnosis.hidden = true;
      return;
    }
    const last = attempts[attempts.length - 1];
    let tail = [];
    if (last) {
      try {
        // The end of the log, however long it is: the failing line is there.
        const page = await get(`/jobs/${id}/log?tail=true&limit=${TAIL * 20}`);
        tail = page.lines.filter((l) => l.attempt === last.number && l.stream !== 'system').slice(-TAIL);
      } catch {
        tail = [];
      }
    }
    clear(diagnosis);
    diagnosis.hidden = false;
    diagnosis.dataset.state = job.state;
    diagnosis.appendChild(h('h2', {}, { failed: 'Why it failed', expired: 'Why it expired', cancelled: 'Why it was cancelled' }[job.state] || 'Diagnosis'));
    diagnosis.appendChild(h('p', { class: 'summary' }, job.diagnosis.summary));
    if (job.last_rule || job.last_error_class) {
      diagnosis.appendChild(h('p', { class: 'rule-line' }, classTag(job.last_error_class), ' decided by rule ', h('code', { class: 'rule' }, job.last_rule || 'none')));
    }
    if (tail.length) {
      diagnosis.appendChild(h('h3', {}, `Last output of attempt ${last.number}`));
      diagnosis.appendChild(h('pre', { class: 'log tail' }, tail.map(logLine)));
    }
    diagnosis.appendChild(h('h3', {}, 'What to do'));
    diagnosis.appendChild(h('ol', { class: 'steps' }, job.diagnosis.next_steps.map((step) => h('li', {}, step))));
  }

  function drawFacts() {
    clear(facts);
    const labels = Object.entries(job.labels || {});
    const link = (field, value) => h('a', { href: `/jobs?${field}=${encodeURIComponent(value)}`, title: `Jobs with ${field} ${value}` }, value);
    const between = (a, b) => (a && b ? span(new Date(b).getTime() - new Date(a).getTime()) : '—');
    const rows = [
      ['Queue', link('queue', job.queue)], ['Kind', link('kind', job.kind)], ['Target', job.target ? link('target', job.target) : '—'],
      ['Policy', job.action.type === 'pipeline'
        ? `per step; a step without its own gets ${job.policy_name} (${job.policy.max_attempts} attempts)`
        : `${job.policy_name} · ${job.policy.max_attempts} attempts, ${job.policy.initial_delay} ×${job.policy.multiplier} ≤ ${job.policy.max_delay}, ${job.policy.jitter} jitter`],
      job.action.type === 'pipeline'
        ? ['Attempts', `${job.attempt} in all; each step has its own count and policy`]
        : ['Attempts', `${job.attempt} of ${job.policy.max_attempts}`],
      ['Priority', job.priority],
      ['Created', [when(job.created_at), ` by ${job.created_by || '—'}`]], ['Started', when(job.started_at)], ['Finished', when(job.finished_at)],
      ['Queue wait', between(job.created_at, job.started_at)], ['Total', between(job.created_at, job.finished_at)],
      ['Deadline', when(job.deadline)],
    ];
    facts.appendChild(h('h2', {}, 'Details'));
    facts.appendChild(h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
      h('dt', {}, 'Labels'), h('dd', {}, labels.length ? labels.map(([k, v]) => h('a', { class: 'pill', href: `/jobs?label=${encodeURIComponent(`${k}=${v}`)}` }, `${k}=${v}`)) : '—'),
      h('dt', {}, 'Action'), h('dd', {}, h('code', { class: 'action' }, describeAction(job.action)))));
    facts.appendChild(h('p', { class: 'muted zone' }, `Times in ${zoneLabel()}.`));
    if (job.fingerprint) {
      facts.appendChild(h('p', {}, h('a', { href: `/dlq#g-${slug(job.fingerprint)}`, class: 'dlq-group-link' }, 'Its dead-letter group →')));
    }
  }

  // A pipeline's steps, every one in order: done (with its attempts), the current one, and
  // those that have not run yet.
  function drawSteps() {
    if (job.action.type !== 'pipeline') return null;
    const done = job.steps || [];
    const stepAttempts = (name) => attempts.filter((a) => a.step === name).length;
    const items = job.action.steps.map((step, i) => {
      let status, note;
      if (i < done.length) {
        status = done[i].status === 'failed' ? 'failed-continued' : 'succeeded';
        note = done[i].status === 'failed'
          ? `failed, the pipeline went on (continue_on_failure) · ${done[i].attempts} attempt(s)${done[i].error ? ` · ${done[i].error}` : ''}`
          : `succeeded · ${done[i].attempts} attempt(s)`;
      } else if (i === done.length && !['succeeded'].includes(job.state)) {
        status = job.state;
        const max = job.step_max_attempts ?? '?';
        note = `${status} · attempt ${job.step_attempt ?? stepAttempts(step.name)} of ${max}`;
      } else {
        status = 'not-run';
        note = 'not run yet';
      }
      const glyph = { succeeded: '✓', 'failed-continued': '⚠', failed: '✕', running: '▶', retrying: '↻', 'not-run': '○', pending: '◷', cancelled: '⊘', expired: '⊖' }[status] || '·';
      return h('li', { class: `step step-${status}`, 'data-step': step.name },
        h('span', { class: 'marker', 'aria-hidden': 'true' }, glyph),
        h('strong', {}, `${i + 1}. ${step.name}`), ' ',
        h('span', { class: 'muted' }, note));
    });
    const warned = done.some((d) => d.status === 'failed');
    return h('section', { class: 'panel steps-panel' },
      h('h2', {}, `Steps (${done.length} of ${job.action.steps.length} done)`),
      job.state === 'succeeded' && warned ? h('p', { class: 'warn-text' }, '⚠ Succeeded, but a non-blocking step failed.') : null,
      h('ol', { class: 'steps-list' }, items));
  }

  function drawTimeline() {
    clear(timeline);
    const steps = drawSteps();
    if (steps) timeline.appendChild(steps);
    timeline.appendChild(h('h2', {}, 'Attempts'));
    if (!attempts.length) {
      timeline.appendChild(h('p', { class: 'muted' }, job.waiting_reason || 'No attempt yet.'));
      return;
    }
    const list = h('ol', { class: 'timeline' });
    attempts.forEach((a, i) => {
      const outcome = a.outcome || 'running';
      const took = a.finished_at ? span(new Date(a.finished_at) - new Date(a.started_at)) : h('span', { class: 'elapsed', 'data-since': a.started_at }, 'running');
      list.appendChild(h('li', { class: `attempt out-${outcome}`, 'data-attempt': a.number },
        h('div', { class: 'attempt-head' },
          h('span', { class: 'marker', 'aria-hidden': 'true' }, { succeeded: '✓', failed: '✕', timed_out: '◔', cancelled: '⊘', lost: '?', running: '▶' }[outcome] || '·'),
          h('strong', {}, `Attempt ${a.number}`),
          a.step ? h('span', { class: 'pill step' }, a.step) : null,
          h('span', { class: `outcome out-${outcome}` }, outcome.replace('_', ' ')),
          classTag(a.class),
          h('span', { class: 'muted' }, `${time(a.started_at)} · `, took, ` · ${a.node}`)),
        a.error ? h('div', { class: 'attempt-error' }, a.error, a.exit_code !== null && !String(a.error).includes('code') ? ` (exit ${a.exit_code})` : '') : null,
        a.rule ? h('div', { class: 'attempt-rule' }, 'rule: ', h('code', { class: 'rule' }, a.rule)) : null,
        a.output_dropped_bytes ? h('div', { class: 'muted' }, `${a.output_dropped_bytes} bytes of output dropped (tail kept)`) : null));
      if (a.next_delay_ms !== null && a.next_delay_ms !== undefined) {
        const isLast = i === attempts.length - 1;
        list.appendChild(h('li', { class: 'wait' },
          h('span', { class: 'marker', 'aria-hidden': 'true' }, '⋯'),
          `waited ${span(a.next_delay_ms)}`, a.delay_reason ? ` — ${a.delay_reason}` : '',
          isLast && job.state === 'retrying' ? h('span', { class: 'muted' }, ` (next attempt at ${time(job.next_attempt_at)})`) : null));
        if (isLast && job.state === 'retrying') list.appendChild(givesUp());
      }
    });
    timeline.appendChild(list);
  }

  // When a retrying job stops trying at the latest: its remaining attempts at their longest
  // waits (the policy's schedule), unless one succeeds or fails for good first.
  function givesUp() {
    const li = h('li', { class: 'wait gives-up' }, h('span', { class: 'marker', 'aria-hidden': 'true' }, '⌛'), 'working out when it gives up…');
    post('/policies/simulate', job.policy).then((rows) => {
      const left = rows.filter((r) => r.after_attempt > job.attempt);
      const longest = left.reduce((sum, r) => sum + parseDuration(r.delay_max), 0);
      const last = new Date(new Date(job.next_attempt_at).getTime() + longest).toISOString();
      li.lastChild.replaceWith(`${job.policy.max_attempts - job.attempt} attempt(s) left; it gives up by `, when(last), ' at the latest (without the attempts\' own run time)');
    }).catch(() => li.remove());
    return li;
  }

  function drawEvents(list) {
    clear(events);
    events.appendChild(h('h2', {}, 'Events'));
    events.appendChild(h('ol', { class: 'events' }, list.slice().reverse().map((e) => h('li', {},
      h('span', { class: 'muted when' }, when(e.at)),
      h('span', { class: 'transition' }, e.from ? `${e.from} → ${e.to}` : `→ ${e.to}`),
      h('span', { class: 'reason' }, e.reason),
      h('span', { class: 'muted actor' }, e.actor)))));
  }

  // Output: a page of what is there, then the follow stream while the job runs.
  let lastAttemptShown = 0;
  // The attempt picked (null: every attempt) and the last line drawn since the output was
  // last cleared: a line the follow stream brings twice is drawn once.
  let picked = null;
  let drawnUpTo = 0;
  function appendLines(lines) {
    const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 8;
    for (const line of lines) {
      logAfter = Math.max(logAfter, line.seq);
      if (line.seq <= drawnUpTo || (picked !== null && line.attempt !== picked)) continue;
      drawnUpTo = line.seq;
      if (line.attempt !== lastAttemptShown) {
        output.appendChild(h('span', { class: 'log-sep' }, `── attempt ${line.attempt} ──\n`));
        lastAttemptShown = line.attempt;
      }
      output.appendChild(logLine(line));
    }
    if (atBottom) output.scrollTop = output.scrollHeight;
  }

  function drawAttemptPick() {
    const numbers = attempts.map((a) => a.number);
    if (attemptPick.options.length - 1 === numbers.length) return;
    const value = attemptPick.value;
    clear(attemptPick).appendChild(h('option', { value: '' }, 'every attempt'));
    for (const n of numbers) attemptPick.appendChild(h('option', { value: String(n) }, `attempt ${n}`));
    attemptPick.value = value;
    attemptPick.hidden = numbers.length < 2;
  }

  // Shows the last lines of one attempt (or of all), from the server: on a long log the
  // attempt may lie before the lines the page holds.
  async function showAttempt(n) {
    picked = n;
    let page;
    try {
      page = await get(`/jobs/${id}/log?tail=true&limit=${SHOWN}${n === null ? '' : `&attempt=${n}`}`);
    } catch (e) {
      toast(`Output: ${e.message}`, 'error');
      return;
    }
    if (picked !== n) return;
    clear(output);
    clear(found);
    lastAttemptShown = 0;
    drawnUpTo = 0;
    if (page.lines.length === SHOWN && page.lines[0].seq > 1) {
      output.appendChild(h('span', { class: 'muted log-earlier' }, `Earlier lines are not shown here: download the whole log.\n`));
    }
    appendLines(page.lines);
    if (!page.lines.length) output.appendChild(h('span', { class: 'muted log-empty' }, n === null ? 'No output yet.\n' : `Attempt ${n} wrote nothing.\n`));
    output.scrollTop = output.scrollHeight;
  }

  // Search: the last lines that contain the text, each a link to its place when shown.
  async function findLines(text) {
    clear(found);
    if (!text) return;
    let page;
    try {
      page = await get(`/jobs/${id}/log?q=${encodeURIComponent(text)}&limit=200${picked === null ? '' : `&attempt=${picked}`}`);
    } catch (e) {
      found.appendChild(h('p', { class: 'error-box' }, e.message));
      return;
    }
    if (!page.lines.length) {
      found.appendChild(h('p', { class: 'muted' }, `No line contains “${text}”.`));
      return;
    }
    found.appendChild(h('p', { class: 'muted' }, `${page.lines.length === 200 ? 'The last 200' : page.lines.length} line(s) contain “${text}”:`));
    found.appendChild(h('ol', { class: 'found-lines' }, page.lines.map((line) => h('li', {},
      h('button', { type: 'button', class: 'link', 'data-seq': String(line.seq), onclick: () => jump(line.seq) }, `#${line.seq}`), ' ',
      h('code', {}, line.line)))));
    jump(page.lines[page.lines.length - 1].seq);
  }

  function jump(seq) {
    for (const el of output.querySelectorAll('.line.hit')) el.classList.remove('hit');
    const el = output.querySelector(`.line[data-seq="${seq}"]`);
    if (!el) return;
    el.classList.add('hit');
    el.scrollIntoView({ block: 'center' });
  }

  let tailLoaded = false;
  async function pumpLog() {
    if (follow || disposed) return;
    const followText = outputHead.querySelector('.follow');
    try {
      if (!tailLoaded) {
        const page = await get(`/jobs/${id}/log?tail=true&limit=${SHOWN}`);
        tailLoaded = true;
        if (page.lines.length === SHOWN && page.lines[0].seq > 1) {
          output.appendChild(h('span', { class: 'muted log-earlier' }, `Earlier lines are not shown here: download the whole log.\n`));
        }
        appendLines(page.lines);
      }
      for (;;) {
        const page = await get(`/jobs/${id}/log?after=${logAfter}&limit=${LOG_PAGE}`);
        appendLines(page.lines);
        if (page.lines.length < LOG_PAGE) break;
      }
    } catch {
      return;
    }
    if (!output.childNodes.length) output.appendChild(h('span', { class: 'muted log-empty' }, 'No output yet.\n'));
    output.classList.toggle('done', TERMINAL.includes(job.state));
    if (TERMINAL.includes(job.state)) {
      followText.textContent = '';
      return;
    }
    followText.textContent = '● following live';
    const controller = new AbortController();
    follow = controller;
    try {
      const response = await fetch(`/api/v1/jobs/${id}/log?follow=true&after=${logAfter}`, { signal: controller.signal, credentials: 'same-origin' });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const parts = buffer.split('\n');
        buffer = parts.pop();
        const empty = output.querySelector('.log-empty');
        if (empty) empty.remove();
        appendLines(parts.filter(Boolean).map((p) => JSON.parse(p)));
      }
    } catch (e) {
      if (e.name !== 'AbortError') followText.textContent = 'output stream interrupted';
    } finally {
      follow = null;
      if (!disposed) followText.textContent = '';
    }
  }

  const live = throttle(() => refresh(), 300);
  const stopTick = every(1000, () => {
    if (!job) return;
    const el = status.querySelector('.status-text');
    if (el) el.textContent = statusLine(job);
    // A running attempt's time so far, ticking.
    for (const running of timeline.querySelectorAll('.elapsed[data-since]')) {
      running.textContent = `running for ${span(Date.now() - new Date(running.dataset.since).getTime())}`;
    }
  });
  refresh();
  return {
    onEvent(event) {
      if (event.job_id === id) live();
    },
    dispose() {
      disposed = true;
      stopTick();
      if (follow) follow.abort();
    },
  };
}

function logLine(line) {
  return h('span', { class: `line ln-${line.stream}`, 'data-seq': String(line.seq) },
    h('span', { class: 'ts' }, time(line.at)), ' ',
    h('span', { class: 'stream' }, line.stream === 'stderr' ? 'err' : line.stream === 'system' ? 'sys' : 'out'), ' ',
    h('span', { class: 'text' }, line.line), '\n');
}
