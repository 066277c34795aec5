// Open circuits (SPEC §4): shown when the server has the endpoint and a circuit is open,
// hidden otherwise (a server without circuit breaking answers 404).

import { get } from './api.js';
import { h, clear, time, ago } from './dom.js';

export async function circuitsPanel(el) {
  let rows = [];
  try {
    rows = await get('/circuits', { quiet404: true });
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  const open = (rows || []).filter((c) => c.state !== 'closed');
  el.hidden = open.length === 0;
  clear(el);
  if (!open.length) return;
  el.appendChild(h('h2', {}, `⚡ Open circuits (${open.length})`));
  el.appendChild(h('table', { class: 'table compact' },
    h('thead', {}, h('tr', {}, h('th', {}, 'target'), h('th', {}, 'state'), h('th', {}, 'opened'), h('th', {}, 'retries wait until'))),
    h('tbody', {}, open.map((c) => h('tr', {},
      h('td', {}, h('a', { href: `/jobs?target=${encodeURIComponent(c.target)}` }, c.target)),
      h('td', {}, h('span', { class: 'circuit' }, c.state === 'half_open' ? '◐ half open' : '● open')),
      h('td', { title: c.opened_at }, ago(c.opened_at)),
      h('td', {}, time(c.open_until)))))));
}
