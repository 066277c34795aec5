// Circuits (SPEC §4): the overview's panel shows the open ones; the Circuits page shows each
// with why it opened, how many jobs it holds and when it lets a probe through, and admins
// close one by hand once its target is fixed; below, the history of outages.

import { get, post, can } from './api.js';
import { toast, throttle } from './app.js';
import { h, clear, time, ago, span, confirmInline } from './dom.js';

async function open() {
  let rows = [];
  try {
    rows = await get('/circuits', { quiet404: true });
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  return (rows || []).filter((c) => c.state !== 'closed');
}

const stateText = (c) => (c.state === 'half_open' ? (c.probing ? '◐ half open, probing' : '◐ half open') : '● open');

export async function circuitsPanel(el) {
  const circuits = await open();
  el.hidden = circuits.length === 0;
  clear(el);
  if (!circuits.length) return;
  el.appendChild(h('h2', {}, h('a', { href: '/circuits' }, `⚡ Open circuits (${circuits.length})`)));
  el.appendChild(h('table', { class: 'table compact' },
    h('thead', {}, h('tr', {}, h('th', {}, 'target'), h('th', {}, 'state'), h('th', {}, 'opened'), h('th', {}, 'retries wait until'))),
    h('tbody', {}, circuits.map((c) => h('tr', {},
      h('td', {}, h('a', { href: `/jobs?target=${encodeURIComponent(c.target)}` }, c.target)),
      h('td', {}, h('span', { class: 'circuit' }, stateText(c))),
      h('td', { title: c.opened_at }, ago(c.opened_at)),
      h('td', {}, time(c.open_until)))))));
}

export function render(main) {
  const list = h('div', { class: 'circuit-list' });
  const history = h('section', { class: 'panel circuit-history' });
  main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'Circuits'),
    h('p', { class: 'muted' }, 'A target whose attempts keep failing is left alone for a cool-down; then one probe decides.')));
  main.appendChild(list);
  main.appendChild(history);
  async function load() {
    try {
      const [circuits, outages] = await Promise.all([open(), get('/circuits/history?limit=50')]);
      drawHistory(history, outages);
      clear(list);
      if (!circuits.length) {
        list.appendChild(h('div', { class: 'panel empty-state' }, h('span', { class: 'big-icon', 'aria-hidden': 'true' }, '✓'), 'Every circuit is closed: no target is being held.'));
        return;
      }
      for (const c of circuits) list.appendChild(card(c, load));
    } catch (e) {
      clear(list).appendChild(h('p', { class: 'error-box' }, e.message));
    }
  }
  load();
  return { onEvent: throttle(load, 1000) };
}

function card(c, reload) {
  const actions = h('div', { class: 'actions' });
  if (can('admin')) {
    actions.appendChild(h('button', { type: 'button', class: 'small', 'data-action': 'Close circuit', onclick: async (e) => {
      if (!(await confirmInline(e.currentTarget, `Close it? The jobs it holds against ${c.target} start now.`))) return;
      try {
        await post(`/circuits/${encodeURIComponent(c.target)}/close`, {});
        toast(`Closed the circuit of ${c.target}`);
      } catch (err) {
        toast(`Close: ${err.message}`, 'error');
      }
      reload();
    } }, 'Close circuit'));
  }
  return h('article', { class: 'panel circuit-card', 'data-target': c.target },
    h('div', { class: 'panel-head' }, h('h2', {}, c.target), h('span', { class: 'circuit' }, stateText(c)), actions),
    h('p', { class: 'reason' }, c.reason),
    h('dl', { class: 'facts inline' },
      h('dt', {}, 'opened'), h('dd', { title: c.opened_at }, `${time(c.opened_at)} (${ago(c.opened_at)})`),
      h('dt', {}, 'probe from'), h('dd', { title: c.open_until }, time(c.open_until)),
      h('dt', {}, 'holding'), h('dd', {}, h('a', { href: `/jobs?target=${encodeURIComponent(c.target)}&state=pending,retrying` }, `${c.held} job${c.held === 1 ? '' : 's'}`))));
}

// Every outage, open ones first in time order: when, how long, how often a failed probe
// opened it again, and how it closed.
function drawHistory(el, outages) {
  clear(el);
  el.appendChild(h('h2', {}, 'History'));
  if (!outages.length) {
    el.appendChild(h('p', { class: 'muted' }, 'No circuit has opened in the last 90 days.'));
    return;
  }
  el.appendChild(h('table', { class: 'table compact' },
    h('thead', {}, h('tr', {}, h('th', {}, 'target'), h('th', {}, 'opened'), h('th', {}, 'lasted'),
      h('th', { class: 'num h-counts' }, 'failed / attempts'), h('th', { class: 'num h-counts' }, 'probes failed'), h('th', { class: 'c-closed' }, 'closed'))),
    h('tbody', {}, outages.map((o) => h('tr', { 'data-target': o.target },
      h('td', {}, h('a', { href: `/jobs?target=${encodeURIComponent(o.target)}` }, o.target)),
      h('td', { title: o.opened_at }, time(o.opened_at)),
      h('td', {}, o.closed_at ? span(new Date(o.closed_at) - new Date(o.opened_at)) : `open for ${span(Date.now() - new Date(o.opened_at))}`),
      h('td', { class: 'num h-counts' }, `${o.failures} / ${o.attempts}`),
      h('td', { class: 'num h-counts' }, String(o.reopened)),
      h('td', { title: o.closed_at || '' }, o.closed_at ? `${time(o.closed_at)}: ${o.closed_by}` : '● still open'))))));
}
