// Queues: what waits in each, and pausing and resuming them (operators). A paused queue's
// running attempts finish; nothing new starts from it until it is resumed.

import { get, post, can } from './api.js';
import { throttle, toast } from './app.js';
import { h, clear, num } from './dom.js';

export function render(main) {
  const table = h('div', { class: 'table-wrap' });
  main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'Queues'),
    h('p', { class: 'muted' }, 'Queues with waiting jobs, and paused ones. A pause lets running attempts finish and starts nothing new.')));
  if (can('operator')) main.appendChild(pauseForm(() => load()));
  main.appendChild(table);

  async function load() {
    try {
      const queues = await get('/queues');
      clear(table);
      if (!queues.length) {
        table.appendChild(h('p', { class: 'muted empty' }, 'No queue has waiting jobs, and none is paused.'));
        return;
      }
      table.appendChild(h('table', { class: 'table' },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'queue'), h('th', { scope: 'col', class: 'num' }, 'waiting'),
          h('th', { scope: 'col' }, 'state'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'actions')))),
        h('tbody', {}, ...queues.map((q) => row(q, load)))));
    } catch (e) {
      clear(table).appendChild(h('p', { class: 'error-box' }, e.message));
    }
  }
  load();
  return { onEvent: throttle(load, 800) };
}

function row(q, reload) {
  const cell = h('td', { class: 'actions-cell' });
  if (can('operator')) cell.appendChild(toggle(q.name, q.paused, reload));
  return h('tr', { 'data-queue': q.name },
    h('td', {}, h('a', { href: `/jobs?queue=${encodeURIComponent(q.name)}` }, q.name)),
    h('td', { class: 'num' }, num(q.waiting)),
    h('td', {}, q.paused ? h('span', { class: 'pill paused' }, '⏸ paused') : h('span', { class: 'pill active' }, '● running')),
    cell);
}

function toggle(name, paused, reload) {
  const label = paused ? 'Resume' : 'Pause';
  return h('button', { type: 'button', class: 'small', 'data-action': label, onclick: async (e) => {
    const button = e.currentTarget;
    button.disabled = true;
    try {
      await post(`/queues/${encodeURIComponent(name)}/${paused ? 'resume' : 'pause'}`, {});
      toast(`${paused ? 'Resumed' : 'Paused'} queue ${name}`);
    } catch (err) {
      toast(`${label}: ${err.message}`, 'error');
    }
    await reload();
  } }, label);
}

// A queue with no waiting job is not listed: pausing one ahead of time goes by name.
function pauseForm(reload) {
  const input = h('input', { id: 'pause-queue', name: 'queue', placeholder: 'queue name', autocomplete: 'off' });
  const form = h('form', { class: 'search-form pause-form' },
    h('label', { for: 'pause-queue', class: 'sr-only' }, 'Queue to pause'), input,
    h('button', { type: 'submit' }, 'Pause queue'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = input.value.trim();
    if (!name) return;
    try {
      await post(`/queues/${encodeURIComponent(name)}/pause`, {});
      toast(`Paused queue ${name}`);
      input.value = '';
    } catch (err) {
      toast(`Pause: ${err.message}`, 'error');
    }
    await reload();
  });
  return form;
}
