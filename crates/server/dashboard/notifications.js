// The notification log: every delivery to a webhook, Slack or e-mail, with each of its
// tries (node, answer, error), newest first; refreshed as jobs change.

import { get } from './api.js';
import { throttle, every } from './app.js';
import { h, clear, when, shortId } from './dom.js';

const STATE = { pending: '◷ pending', delivering: '▶ delivering', delivered: '✓ delivered', failed: '✕ failed' };

export function render(main) {
  const list = h('div', { class: 'notification-list' });
  main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'Notifications'),
    h('p', { class: 'muted' }, 'Every delivery of a job\'s change to a sink or channel, and each try.')));
  main.appendChild(list);
  async function load() {
    try {
      const deliveries = await get('/notifications?limit=100');
      clear(list);
      if (!deliveries.length) {
        list.appendChild(h('div', { class: 'panel empty-state' }, 'No notification yet. Sinks come from the configuration; an organization\'s admins add channels (retryd channel set).'));
        return;
      }
      list.appendChild(h('div', { class: 'table-wrap' }, h('table', { class: 'table notifications' },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'job'), h('th', { scope: 'col' }, 'event'), h('th', { scope: 'col' }, 'sink'),
          h('th', { scope: 'col' }, 'state'), h('th', { scope: 'col', class: 'c-when' }, 'created'), h('th', { scope: 'col' }, 'tries'))),
        h('tbody', {}, deliveries.flatMap((n) => rows(n))))));
    } catch (e) {
      clear(list).appendChild(h('p', { class: 'error-box' }, e.message));
    }
  }
  load();
  // Tries happen without a job changing state: look again while deliveries are under way.
  const stop = every(2000, () => {
    if (list.querySelector('tr[data-state="pending"], tr[data-state="delivering"]')) load();
  });
  return { onEvent: throttle(load, 1000), dispose: stop };
}

function rows(n) {
  const head = h('tr', { 'data-notification': String(n.id), 'data-state': n.state },
    h('td', {}, h('a', { href: `/jobs/${n.job_id}` }, h('code', {}, shortId(n.job_id)))),
    h('td', {}, n.event),
    h('td', {}, n.sink),
    h('td', { class: `delivery-${n.state}` }, STATE[n.state] || n.state),
    h('td', { class: 'c-when' }, when(n.created_at)),
    h('td', {}, String(n.attempts)));
  const tries = (n.log || []).map((t) => h('tr', { class: 'try' },
    h('td', {}), h('td', { colspan: 5 },
      h('span', { class: 'muted' }, `try ${t.number} on ${t.node} · `), when(t.started_at), ' · ',
      t.ok === true ? h('span', { class: 'good-text' }, `ok${t.status ? ` (${t.status})` : ''}`)
        : t.ok === false ? h('span', { class: 'bad-text' }, `failed${t.status ? ` (${t.status})` : ''}: ${t.error || ''}`)
          : h('span', { class: 'muted' }, 'running'))));
  return [head, ...tries];
}
