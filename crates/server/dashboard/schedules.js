// Recurring jobs: each schedule with its cron, next fire times and last runs (linked to their
// jobs); operators pause, resume and trigger. Refreshed when a run changes state.

import { get, post, can } from './api.js';
import { throttle, every } from './app.js';
import { h, clear, badge, time, ago, shortId, describeAction } from './dom.js';

export function render(main) {
  const list = h('div', { class: 'schedules' });
  main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'Schedules'),
    h('p', { class: 'muted' }, 'Recurring jobs: each fire time runs once, on whichever node fires it first.')));
  main.appendChild(list);
  const load = async () => {
    try {
      const schedules = await get('/schedules');
      const detailed = await Promise.all(schedules.map((s) => get(`/schedules/${encodeURIComponent(s.name)}`)));
      clear(list);
      if (!detailed.length) {
        list.appendChild(h('p', { class: 'muted empty' }, 'No schedules yet. Create one with ',
          h('code', {}, "retryd schedule create NAME --cron '*/5 * * * *' -- COMMAND"), '.'));
      }
      for (const s of detailed) list.appendChild(card(s, load));
    } catch (e) {
      clear(list);
      list.appendChild(h('p', { class: 'error-box' }, e.message));
    }
  };
  load();
  const onEvent = throttle(load, 500);
  // Fire times come without events of their own while nothing runs: look again now and then.
  const stop = every(5000, load);
  return { onEvent, dispose: stop };
}

function card(s, reload) {
  const actions = h('div', { class: 'actions' });
  if (can('operator')) {
    actions.appendChild(action(s.paused ? 'Resume' : 'Pause', 'small', `/schedules/${encodeURIComponent(s.name)}/${s.paused ? 'resume' : 'pause'}`, reload));
    actions.appendChild(action('Run now', 'primary small', `/schedules/${encodeURIComponent(s.name)}/trigger`, reload));
  }
  const state = s.paused
    ? h('span', { class: 'pill paused' }, '⏸ paused')
    : h('span', { class: 'pill active' }, '● active');
  return h('article', { class: 'panel schedule-card', 'data-schedule': s.name },
    h('div', { class: 'panel-head' }, h('h2', {}, s.name), state, actions),
    h('dl', { class: 'facts schedule-facts' },
      h('dt', {}, 'cron'), h('dd', {}, h('code', {}, s.cron), ` (${s.tz})`),
      h('dt', {}, 'runs'), h('dd', {}, h('code', {}, describeAction(s.job.action))),
      h('dt', {}, 'queue'), h('dd', {}, s.job.queue),
      h('dt', {}, 'overlap'), h('dd', {}, s.overlap),
      h('dt', {}, 'misfire'), h('dd', {}, s.misfire),
      s.deadline ? [h('dt', {}, 'deadline'), h('dd', {}, `${s.deadline} after each fire time`)] : null),
    h('div', { class: 'schedule-cols' },
      h('section', { class: 'next-fires' }, h('h3', {}, 'Next fire times ', h('span', { class: 'muted' }, `(your time, ${Intl.DateTimeFormat().resolvedOptions().timeZone})`)),
        s.next_fires.length
          ? h('ol', {}, ...s.next_fires.map((t) => h('li', {}, h('time', { datetime: t, title: t }, time(t)))))
          : h('p', { class: 'muted' }, 'None while paused.')),
      h('section', { class: 'last-runs' }, h('h3', {}, 'Last runs'),
        s.runs.length ? runs(s.runs) : h('p', { class: 'muted' }, 'No runs yet.'))),
    s.last_skip ? h('p', { class: 'muted skip' }, `Skipped: ${s.last_skip}`) : null);
}

function runs(list) {
  return h('table', { class: 'runs' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Job'), h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col' }, 'Fired'), h('th', { scope: 'col' }, 'Error'))),
    h('tbody', {}, ...list.map((r) => h('tr', {},
      h('td', {}, h('a', { href: `/jobs/${r.job_id}`, class: 'mono' }, shortId(r.job_id))),
      h('td', {}, badge(r.state)),
      h('td', {}, h('time', { datetime: r.run_at, title: r.run_at }, ago(r.run_at))),
      h('td', { class: 'error-cell' }, r.last_error || '')))));
}

function action(label, kind, path, reload) {
  return h('button', { type: 'button', class: kind, 'data-action': label, onclick: async (e) => {
    const button = e.currentTarget;
    button.disabled = true;
    try {
      await post(path, {});
      await reload();
    } catch (err) {
      button.disabled = false;
      button.after(h('span', { class: 'error-inline' }, err.message));
    }
  } }, label);
}
