// The live job list: filters (state, queue, kind, target, label), search by id, cursor
// pagination. Rows have a fixed height and are updated in place when events arrive; new
// jobs are announced in reserved space instead of pushing rows down.

import { get, post, can } from './api.js';
import { h, clear, badge, STATES, ago, shortId, span, describeAction, confirmInline, num } from './dom.js';
import { navigate, throttle, every, toast } from './app.js';

const PAGE = 50;
const FIELDS = ['queue', 'kind', 'target', 'label'];
// "Problems first" lists these states before the others.
const PROBLEMS = ['failed', 'expired', 'retrying'];
const ORDERS = { newest: 'Newest first', oldest: 'Oldest first', problems: 'Problems first' };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The one-line status of a job: countdown for a retry, else the server's reason. */
export function statusLine(job, now = Date.now()) {
  if (job.state === 'retrying' && job.next_attempt_at) {
    const wait = new Date(job.next_attempt_at).getTime() - now;
    const next = `attempt ${job.attempt + 1} of ${job.policy.max_attempts}`;
    // Held by its target's circuit or retry budget: that, not a countdown, is why it waits.
    if (job.hold_reason) return `${next} waits: ${job.hold_reason}`;
    if (wait > 0) return `${next} in ${span(Math.ceil(wait / 1000) * 1000)}`;
    return `${next} due, waiting for a worker`;
  }
  if (job.state === 'running') {
    const step = job.step ? `step ${job.step}, ` : '';
    return job.waiting_reason || `running: ${step}attempt ${job.attempt} of ${job.policy.max_attempts}`;
  }
  if (job.state === 'succeeded') return job.attempt > 1 ? `succeeded after ${job.attempt} attempts` : 'succeeded on the first attempt';
  if (job.state === 'failed') return job.last_error || job.waiting_reason || '';
  return job.waiting_reason || '';
}

export function render(main, _params, query) {
  const filter = {
    state: (query.get('state') || '').split(',').filter((st) => st in STATES),
    queue: query.get('queue') || '', kind: query.get('kind') || '', target: query.get('target') || '', label: query.get('label') || '',
    q: query.get('q') || '',
    order: query.get('order') in ORDERS ? query.get('order') : 'newest',
  };
  const cursors = [];
  let cursor = query.get('cursor') || null;
  let rows = new Map();

  const chips = h('div', { class: 'chips', role: 'group', 'aria-label': 'States' },
    Object.keys(STATES).map((st) => h('button', {
      type: 'button', class: `chip ${filter.state.includes(st) ? 'on' : ''}`, 'data-state': st, 'aria-pressed': String(filter.state.includes(st)),
      onclick: () => {
        filter.state = filter.state.includes(st) ? filter.state.filter((x) => x !== st) : [...filter.state, st];
        apply();
      },
    }, badge(st), h('span', { class: 'chip-count', 'data-count': st }, ''))));
  // How many jobs of the organization are in each state, beside its chip; and how many the
  // list holds, when only states filter it (other filters would need a count of their own).
  const total = h('span', { class: 'muted list-total', 'aria-live': 'polite' });
  let counts = null;
  function drawTotal() {
    if (!counts || filter.q || FIELDS.some((f) => filter[f])) {
      total.textContent = '';
      return;
    }
    const states = filter.state.length ? filter.state : Object.keys(STATES);
    const n = states.reduce((sum, st) => sum + (counts[st] ?? 0), 0);
    total.textContent = `${num(n)} job${n === 1 ? '' : 's'}`;
  }
  async function drawCounts() {
    try {
      counts = await get('/jobs/counts');
      for (const el of chips.querySelectorAll('.chip-count')) el.textContent = num(counts[el.dataset.count] ?? 0);
      drawTotal();
    } catch {
      // The chips work without their counts.
    }
  }
  const recount = throttle(drawCounts, 1500);
  // Filters match whole names: each field offers the names it knows (queues with work or
  // paused, kinds and targets of the last 7 days).
  const known = Object.fromEntries(['queue', 'kind', 'target'].map((f) => [f, h('datalist', { id: `known-${f}` })]));
  const inputs = Object.fromEntries(FIELDS.map((f) => [f, h('input', {
    name: f, value: filter[f], placeholder: f === 'label' ? 'label key=value' : f, 'aria-label': f, autocomplete: 'off', spellcheck: 'false',
    list: known[f] ? `known-${f}` : null,
  })]));
  async function loadKnown() {
    try {
      const [stats, queues] = await Promise.all([get('/stats?window=7d'), get('/queues')]);
      const names = {
        queue: queues.map((q) => q.name),
        kind: (stats.by_kind || []).map((k) => k.name),
        target: (stats.by_target || []).map((t) => t.name).filter((n) => n !== '(none)'),
      };
      for (const [f, list] of Object.entries(names)) {
        clear(known[f]);
        for (const name of [...new Set(list)].sort()) known[f].appendChild(h('option', { value: name }));
      }
    } catch {
      // Suggestions only: the filters work without them.
    }
  }
  const search = h('input', { name: 'q', value: filter.q, placeholder: 'Search: id, short id, kind, target, error, label', 'aria-label': 'search jobs', autocomplete: 'off', spellcheck: 'false', class: 'search', type: 'search' });
  const order = h('select', { name: 'order', 'aria-label': 'Order', onchange: () => { filter.order = order.value; apply(); } },
    Object.entries(ORDERS).map(([value, label]) => h('option', { value, selected: value === filter.order }, label)));
  const message = h('p', { class: 'error-box', hidden: true });
  const fresh = h('div', { class: 'fresh' });
  const tbody = h('tbody', {});
  const pager = h('div', { class: 'pager' });
  // Bulk actions on the rows ticked (operators): requeue, requeue with reset, cancel; purge
  // the failed ones (admins). Each job goes through the same API call as on its own page.
  const selected = new Set();
  const operate = can('operator');
  const count = h('span', { class: 'muted', id: 'selected-count' }, '');
  const bulkBar = h('div', { class: 'bulk-bar', hidden: true, role: 'region', 'aria-label': 'Selected jobs' }, count);
  const allBox = h('input', { type: 'checkbox', id: 'select-all', 'aria-label': 'Select every job on this page' });
  function drawBulk() {
    count.textContent = `${selected.size} selected`;
    bulkBar.hidden = !selected.size;
    allBox.checked = selected.size > 0 && selected.size === rows.size;
  }
  async function bulk(label, path, body, only) {
    const ids = [...selected].filter((id) => only(rows.get(id)?.job));
    let done = 0;
    const errors = [];
    for (const id of ids) {
      try {
        await post(path(id), body);
        done += 1;
      } catch (e) {
        errors.push(e.message);
      }
    }
    toast(`${label}: ${done} job${done === 1 ? '' : 's'}${errors.length ? `, ${errors.length} refused (${errors[0]})` : ''}`, errors.length ? 'error' : 'ok');
    selected.clear();
    load();
  }
  const finished = (job) => job && ['failed', 'cancelled', 'expired'].includes(job.state);
  const live = (job) => job && ['pending', 'running', 'retrying'].includes(job.state);
  if (operate) {
    bulkBar.append(
      h('button', { type: 'button', class: 'small', 'data-action': 'Requeue selected', onclick: () => bulk('Requeue', (id) => `/jobs/${id}/retry`, {}, finished) }, 'Requeue'),
      h('button', { type: 'button', class: 'small', 'data-action': 'Requeue selected with reset', onclick: () => bulk('Requeue with reset', (id) => `/jobs/${id}/retry`, { reset: true }, finished) }, 'Requeue with reset'),
      h('button', { type: 'button', class: 'small danger', 'data-action': 'Cancel selected', onclick: async (e) => {
        if (await confirmInline(e.currentTarget, 'Cancel the selected live jobs?')) bulk('Cancel', (id) => `/jobs/${id}/cancel`, {}, live);
      } }, 'Cancel'));
    if (can('admin')) {
      bulkBar.append(h('button', { type: 'button', class: 'small danger', 'data-action': 'Purge selected', onclick: async (e) => {
        const ids = [...selected].filter((id) => rows.get(id)?.job.state === 'failed');
        if (!(await confirmInline(e.currentTarget, `Delete ${ids.length} failed job(s) for good?`))) return;
        try {
          const result = await post('/dlq/purge', { ids });
          toast(`Purge: ${result.count} job${result.count === 1 ? '' : 's'}`);
        } catch (err) {
          toast(`Purge: ${err.message}`, 'error');
        }
        selected.clear();
        load();
      } }, 'Purge failed'));
    }
    allBox.addEventListener('change', () => {
      for (const id of rows.keys()) {
        if (allBox.checked) selected.add(id);
        else selected.delete(id);
      }
      for (const box of tbody.querySelectorAll('input.pick')) box.checked = allBox.checked;
      drawBulk();
    });
  }
  function row(job) {
    const tr = jobRow(job);
    if (operate) {
      const box = h('input', { type: 'checkbox', class: 'pick', checked: selected.has(job.id), 'aria-label': `Select job ${shortId(job.id)}` });
      box.addEventListener('change', () => {
        if (box.checked) selected.add(job.id);
        else selected.delete(job.id);
        drawBulk();
      });
      tr.prepend(h('td', { class: 'c-pick' }, box));
    }
    return tr;
  }

  main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'Jobs'),
    h('form', { class: 'search-form', onsubmit: (e) => {
      e.preventDefault();
      const id = search.value.trim();
      // A whole id opens the job; anything else (a short id, a word of an error) searches.
      if (UUID.test(id)) {
        navigate(`/jobs/${id}`);
        return;
      }
      filter.q = id;
      apply();
    } }, search, h('button', { type: 'submit' }, 'Search'))));
  main.appendChild(h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); apply(); } },
    chips, h('div', { class: 'filter-inputs' }, FIELDS.map((f) => inputs[f]), Object.values(known), order,
      h('button', { type: 'submit' }, 'Filter'),
      h('button', { type: 'button', class: 'ghost', onclick: () => {
        filter.state = [];
        for (const f of FIELDS) inputs[f].value = '';
        filter.q = '';
        search.value = '';
        filter.order = order.value = 'newest';
        apply();
      } }, 'Clear'))));
  main.appendChild(message);
  main.appendChild(fresh);
  main.appendChild(bulkBar);
  main.appendChild(h('div', { class: 'table-wrap' }, h('table', { class: 'table jobs' },
    h('thead', {}, h('tr', {},
      operate ? h('th', { class: 'c-pick' }, allBox) : null,
      h('th', { class: 'c-state' }, 'state'), h('th', { class: 'c-id' }, 'job'), h('th', { class: 'c-kind' }, 'kind'),
      h('th', { class: 'c-queue' }, 'queue'), h('th', { class: 'c-target' }, 'target'), h('th', { class: 'c-att num' }, 'attempts'),
      h('th', { class: 'c-status' }, 'status'), h('th', { class: 'c-when' }, 'updated'))),
    tbody)));
  main.appendChild(pager);

  function show(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  function params() {
    const p = new URLSearchParams();
    if (filter.state.length) p.set('state', filter.state.join(','));
    for (const f of FIELDS) if (filter[f]) p.set(f, filter[f]);
    if (filter.q) p.set('q', filter.q);
    if (filter.order !== 'newest') p.set('order', filter.order);
    return p;
  }

  // One page in the chosen order: `jobs`, the `next` cursor and, for "problems first", the
  // row where the other jobs begin (`split`). That order is two lists one after the other,
  // failed, expired and retrying jobs first, each newest first; its cursor says which list
  // it continues ("0:ID", "1:ID", "1:" for the start of the second).
  async function fetchPage() {
    const p = params();
    p.set('limit', PAGE);
    if (filter.order !== 'problems') {
      if (cursor) p.set('cursor', cursor);
      const page = await get(`/jobs?${p}`);
      return { jobs: page.jobs, next: page.next_cursor, split: -1 };
    }
    p.delete('order');
    const chosen = filter.state.length ? filter.state : Object.keys(STATES);
    const lists = [chosen.filter((st) => PROBLEMS.includes(st)), chosen.filter((st) => !PROBLEMS.includes(st))];
    let [list, from] = cursor ? [Number(cursor[0]) === 1 ? 1 : 0, cursor.slice(2) || null] : [0, null];
    const jobs = [];
    let split = -1;
    for (; list < 2; list += 1, from = null) {
      if (!lists[list].length) continue;
      if (list === 1) split = jobs.length;
      p.set('state', lists[list].join(','));
      p.set('limit', PAGE - jobs.length);
      if (from) p.set('cursor', from);
      else p.delete('cursor');
      const page = await get(`/jobs?${p}`);
      jobs.push(...page.jobs);
      if (page.next_cursor) return { jobs, next: `${list}:${page.next_cursor}`, split };
      if (jobs.length >= PAGE) return { jobs, next: list === 0 && lists[1].length ? '1:' : null, split };
    }
    return { jobs, next: null, split };
  }

  function apply() {
    for (const f of FIELDS) filter[f] = inputs[f].value.trim();
    cursors.length = 0;
    cursor = null;
    const p = params();
    history.replaceState(null, '', `/jobs${p.toString() ? `?${p}` : ''}`);
    for (const c of chips.children) {
      const on = filter.state.includes(c.dataset.state);
      c.classList.toggle('on', on);
      c.setAttribute('aria-pressed', String(on));
    }
    load();
  }

  let next = null;
  // Loads may overlap (a reload on a new job while the previous one is in flight); only the
  // latest one started may draw, so an older answer never replaces a newer page.
  let loads = 0;
  async function load() {
    // The page is in the address: a reload or a shared link shows the same jobs.
    const shown = params();
    if (cursor) shown.set('cursor', cursor);
    history.replaceState(null, '', `/jobs${shown.toString() ? `?${shown}` : ''}`);
    const mine = ++loads;
    let page;
    try {
      page = await fetchPage();
    } catch (e) {
      if (mine === loads) show(e.message);
      return;
    }
    if (mine !== loads) return;
    show('');
    clear(fresh);
    next = page.next;
    rows = new Map();
    // A selection holds on the page it was made on.
    for (const id of [...selected]) if (!page.jobs.some((j) => j.id === id)) selected.delete(id);
    drawBulk();
    clear(tbody);
    if (!page.jobs.length) {
      tbody.appendChild(h('tr', { class: 'empty' }, h('td', { colspan: operate ? 9 : 8 }, 'No job matches these filters.')));
    }
    page.jobs.forEach((job, i) => {
      if (i === page.split && i > 0) {
        tbody.appendChild(h('tr', { class: 'divider' }, h('td', { colspan: operate ? 9 : 8 }, 'Other jobs, newest first')));
      }
      const tr = row(job);
      rows.set(job.id, { tr, job });
      tbody.appendChild(tr);
    });
    clear(pager);
    pager.appendChild(h('button', { type: 'button', disabled: !cursors.length, onclick: () => { cursor = cursors.pop() || null; load(); } }, '← Previous'));
    pager.appendChild(h('span', { class: 'muted' }, `page ${cursors.length + 1}`, total));
    drawTotal();
    pager.appendChild(h('button', { type: 'button', disabled: !next, onclick: () => { cursors.push(cursor); cursor = next; load(); } }, 'Next →'));
  }

  async function updateRow(id) {
    if (!rows.has(id)) return;
    let job;
    try {
      job = await get(`/jobs/${id}`);
    } catch {
      return;
    }
    // Looked up again: a reload during the request drew a new row for this job.
    const entry = rows.get(id);
    if (!entry) return;
    const tr = row(job);
    entry.tr.replaceWith(tr);
    rows.set(id, { tr, job });
  }

  let newJobs = 0;
  const reloadFirst = throttle(() => load(), 800);
  function onEvent(event) {
    recount();
    if (rows.has(event.job_id)) {
      updateRow(event.job_id);
    } else if (event.from === null && !cursor && filter.order !== 'oldest') {
      // A new job: on an unfiltered first page it slides in; otherwise say so in place.
      if (!filter.state.length && !filter.q && !FIELDS.some((f) => filter[f])) {
        reloadFirst();
      } else {
        newJobs += 1;
        clear(fresh).appendChild(h('button', { type: 'button', class: 'link', onclick: () => { newJobs = 0; load(); } }, `${newJobs} new job${newJobs > 1 ? 's' : ''} — show`));
      }
    }
  }

  const stop = every(1000, () => {
    for (const { tr, job } of rows.values()) {
      if (job.state === 'retrying' || job.state === 'pending') {
        tr.querySelector('.c-status').textContent = statusLine(job);
        tr.querySelector('.c-when').textContent = ago(job.updated_at);
      }
    }
  });

  load();
  drawCounts();
  loadKnown();
  return { onEvent, dispose: stop };
}

function jobRow(job) {
  return h('tr', { 'data-job': job.id, 'data-state': job.state },
    h('td', { class: 'c-state' }, badge(job.state)),
    h('td', { class: 'c-id' }, h('a', { href: `/jobs/${job.id}`, title: job.id }, h('code', {}, shortId(job.id)))),
    h('td', { class: 'c-kind', title: describeAction(job.action) }, job.kind),
    h('td', { class: 'c-queue' }, job.queue),
    h('td', { class: 'c-target' }, job.target || '—'),
    h('td', { class: 'c-att num' }, `${job.attempt}/${job.policy.max_attempts}`),
    h('td', { class: `c-status ${job.state === 'failed' ? 'bad-text' : ''}`, title: job.waiting_reason || statusLine(job) }, statusLine(job)),
    h('td', { class: 'c-when', title: job.updated_at }, ago(job.updated_at)));
}
