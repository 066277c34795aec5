// The dead-letter queue, grouped by failure fingerprint (class + normalised message): one
// row per cause with its count and first/last seen, bulk requeue and purge per group, and
// the dead jobs themselves with the rule that stopped them and their last output lines.

import { get, post, can } from './api.js';
import { h, clear, badge, classTag, time, ago, shortId, num, confirmInline, slug } from './dom.js';
import { toast, throttle } from './app.js';

const TAIL = 4;

export function render(main) {
  const summary = h('p', { class: 'muted' });
  const groups = h('div', { class: 'groups' });
  const jobs = h('div', { class: 'dead-jobs' });
  main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'Dead letters'), summary));
  main.appendChild(groups);
  main.appendChild(h('h2', { class: 'section-title' }, 'Latest dead jobs'));
  main.appendChild(jobs);

  async function refresh() {
    const dlq = await get('/dlq?limit=20');
    summary.textContent = dlq.total ? `${num(dlq.total)} failed job${dlq.total > 1 ? 's' : ''} in ${dlq.groups.length} group${dlq.groups.length > 1 ? 's' : ''}` : '';
    clear(groups);
    if (!dlq.groups.length) groups.appendChild(h('div', { class: 'panel empty-state' }, h('span', { class: 'big-icon', 'aria-hidden': 'true' }, '✓'), 'The dead-letter queue is empty.'));
    for (const g of dlq.groups) groups.appendChild(group(g));
    clear(jobs);
    const tails = await Promise.all(dlq.jobs.map((j) => lastLines(j).catch(() => [])));
    dlq.jobs.forEach((j, i) => jobs.appendChild(deadJob(j, tails[i])));
  }

  function group(g) {
    const actions = h('div', { class: 'actions' });
    // A permanent error fails again until it is fixed: its group leads with the fix, and
    // requeuing is not the primary action.
    const permanent = g.class === 'permanent';
    if (can('operator')) {
      actions.appendChild(bulk('Requeue all', permanent ? '' : 'primary', '/dlq/requeue', { fingerprint: g.fingerprint }));
      actions.appendChild(bulk('Requeue with reset', '', '/dlq/requeue', { fingerprint: g.fingerprint, reset: true }));
    }
    if (can('admin')) actions.appendChild(bulk('Purge', 'danger', '/dlq/purge', { fingerprint: g.fingerprint }, `Delete these ${g.count} jobs for good?`));
    return h('article', { class: 'panel group', id: `g-${slug(g.fingerprint)}`, 'data-fingerprint': g.fingerprint },
      h('div', { class: 'group-head' },
        h('span', { class: 'group-count' }, num(g.count), h('small', {}, g.count > 1 ? 'jobs' : 'job')),
        h('div', { class: 'group-what' },
          h('div', { class: 'group-msg', title: g.message }, classTag(g.class), ' ', g.message),
          g.rule ? h('div', { class: 'attempt-rule' }, 'rule: ', h('code', { class: 'rule' }, g.rule)) : null,
          (g.advice || []).length ? h('ol', { class: 'advice' }, g.advice.map((step, i) => h('li', { class: i ? 'muted' : 'first' }, step))) : null,
          h('div', { class: 'muted' },
            `first ${time(g.first_seen)} · last ${ago(g.last_seen)}`,
            ` · ${[...g.kinds, ...g.targets.map((t) => `→ ${t}`)].join(', ')}`,
            ' · ', g.sample_job_ids.map((id, i) => [i ? ' ' : '', h('a', { href: `/jobs/${id}` }, h('code', {}, shortId(id)))]))),
        actions));
  }

  function bulk(label, kind, path, body, confirmText) {
    return h('button', { type: 'button', class: kind, 'data-action': label, onclick: async (e) => {
      const button = e.currentTarget;
      if (confirmText && !(await confirmInline(button, confirmText))) return;
      button.disabled = true;
      try {
        const result = await post(path, body);
        toast(`${label}: ${result.count} job${result.count === 1 ? '' : 's'}`);
      } catch (err) {
        toast(`${label}: ${err.message}`, 'error');
      }
      button.disabled = false;
      refresh();
    } }, label);
  }

  const live = throttle(() => refresh().catch(() => {}), 800);
  refresh().then(() => {
    // Opened from a job's "Its dead-letter group": show that group.
    const target = location.hash && document.getElementById(location.hash.slice(1));
    if (target) {
      target.classList.add('focused');
      target.scrollIntoView({ block: 'start' });
    }
  }).catch((e) => main.appendChild(h('p', { class: 'error-box' }, e.message)));
  return { onEvent: (event) => (event.to === 'failed' || event.from === 'failed') && live() };
}

async function lastLines(job) {
  const page = await get(`/jobs/${job.id}/log?limit=1000`);
  return page.lines.filter((l) => l.attempt === job.attempt && l.stream !== 'system').slice(-TAIL);
}

function deadJob(job, tail) {
  const actions = h('div', { class: 'actions' });
  if (can('operator')) {
    const requeue = h('button', { type: 'button', class: 'primary small', 'data-action': 'Requeue', onclick: async () => {
      requeue.disabled = true;
      try {
        await post(`/jobs/${job.id}/retry`, {});
        toast('Requeued');
      } catch (e) {
        toast(`Requeue: ${e.message}`, 'error');
        requeue.disabled = false;
      }
    } }, 'Requeue');
    actions.appendChild(requeue);
  }
  return h('article', { class: 'panel dead', 'data-job': job.id },
    h('div', { class: 'dead-head' },
      badge(job.state),
      h('a', { href: `/jobs/${job.id}`, class: 'dead-kind' }, job.kind),
      job.target ? h('span', { class: 'pill' }, '→ ', job.target) : null,
      h('span', { class: 'muted' }, `attempt ${job.attempt} of ${job.policy.max_attempts} · ${ago(job.finished_at)}`),
      h('code', { class: 'muted id' }, shortId(job.id)),
      actions),
    h('div', { class: 'dead-why' }, classTag(job.last_error_class), ' ', h('span', { class: 'msg' }, job.last_error || job.finish_reason || '')),
    h('div', { class: 'attempt-rule' }, 'rule: ', h('code', { class: 'rule' }, job.last_rule || 'none')),
    tail.length ? h('pre', { class: 'log tail' }, tail.map((l) => h('span', { class: `line ln-${l.stream}` }, h('span', { class: 'text' }, l.line), '\n'))) : null);
}
