// Policies with their schedule preview: for each wait, the range jitter may pick (a bar
// from the shortest to the longest delay) and the cumulative time, drawn as inline SVG.
// Admins create and edit the organization's own policies (the chart follows the form as it
// is filled in), choose its default, and deactivate them.

import { get, post, put, patch, del, can, session } from './api.js';
import { toast } from './app.js';
import { h, s, clear, span, parseDuration, confirmInline } from './dom.js';

const SOURCE = { builtin: 'built-in', config: 'configured', api: 'this organization' };

export function render(main) {
  const list = h('div', { class: 'policies' });
  const editor = h('div', { class: 'policy-editor-slot' });
  const head = h('div', { class: 'page-head' }, h('h1', {}, 'Policies'),
    h('p', { class: 'muted' }, 'The wait before each retry: the bar spans the delays jitter may choose.'));
  if (can('admin')) {
    head.appendChild(h('button', { type: 'button', class: 'primary', 'data-action': 'New policy', onclick: () => open(null) }, 'New policy'));
  }
  main.appendChild(head);
  main.appendChild(editor);
  main.appendChild(list);

  async function load() {
    try {
      const policies = await get('/policies');
      clear(list);
      for (const p of policies) list.appendChild(card(p, { edit: open, reload: load }));
    } catch (e) {
      clear(list).appendChild(h('p', { class: 'error-box' }, e.message));
    }
  }

  function open(view) {
    clear(editor).appendChild(policyForm(view, () => {
      clear(editor);
      load();
    }));
    editor.querySelector('input').focus();
  }

  load();
  return null;
}

function card(view, { edit, reload }) {
  const p = view.policy;
  const actions = h('div', { class: 'actions' });
  if (can('admin')) {
    if (view.source === 'api' && view.active) {
      actions.appendChild(h('button', { type: 'button', class: 'small', 'data-action': 'Edit', onclick: () => edit(view) }, 'Edit'));
    }
    if (view.active && !view.default) {
      actions.appendChild(h('button', { type: 'button', class: 'small', 'data-action': 'Make default', onclick: async () => {
        try {
          await put('/policies/active', { name: view.name });
          toast(`${view.name} is the default of ${session.org}`);
        } catch (e) {
          toast(`Default: ${e.message}`, 'error');
        }
        reload();
      } }, 'Make default'));
    }
    if (view.source === 'api' && view.active) {
      actions.appendChild(h('button', { type: 'button', class: 'small danger', 'data-action': 'Deactivate', onclick: async (e) => {
        if (!(await confirmInline(e.currentTarget, `Deactivate ${view.name}? Jobs using it keep it.`))) return;
        try {
          await del(`/policies/${encodeURIComponent(view.name)}`);
          toast(`Deactivated ${view.name}`);
        } catch (err) {
          toast(`Deactivate: ${err.message}`, 'error');
        }
        reload();
      } }, 'Deactivate'));
    }
  }
  return h('article', { class: `panel policy ${view.active ? '' : 'inactive'}`, 'data-policy': view.name },
    h('div', { class: 'panel-head' }, h('h2', {}, view.name),
      h('span', { class: 'pill' }, SOURCE[view.source] || view.source),
      view.default ? h('span', { class: 'pill default' }, 'default') : null,
      view.active ? null : h('span', { class: 'pill' }, 'inactive'),
      actions),
    facts(p),
    chart(view.schedule));
}

function facts(p) {
  return h('dl', { class: 'facts inline' },
    h('dt', {}, 'attempts'), h('dd', {}, p.max_attempts),
    h('dt', {}, 'first wait'), h('dd', {}, p.initial_delay),
    h('dt', {}, 'multiplier'), h('dd', {}, `×${p.multiplier}`),
    h('dt', {}, 'cap'), h('dd', {}, p.max_delay),
    h('dt', {}, 'jitter'), h('dd', {}, p.jitter),
    p.max_elapsed ? [h('dt', {}, 'budget'), h('dd', {}, p.max_elapsed)] : null,
    p.attempt_timeout ? [h('dt', {}, 'attempt timeout'), h('dd', {}, p.attempt_timeout)] : null);
}

// The form of a new policy (view null) or of one to change; the chart is the server's
// simulation of what is typed, so it is the schedule the policy will really give.
function policyForm(view, done) {
  const p = view ? view.policy : { max_attempts: 5, initial_delay: '1s', multiplier: 2, max_delay: '1m', jitter: 'full' };
  const field = (name, label, value, attrs = {}) => {
    const input = h('input', { id: `policy-${name}`, name, value: value ?? '', autocomplete: 'off', ...attrs });
    return h('div', { class: 'field' }, h('label', { for: `policy-${name}` }, label), input);
  };
  const jitter = h('select', { id: 'policy-jitter', name: 'jitter' },
    ['full', 'equal', 'none', 'decorrelated'].map((j) => h('option', { value: j, selected: p.jitter === j }, j)));
  const preview = h('div', { class: 'policy-preview', 'aria-live': 'polite' });
  const problem = h('p', { class: 'error-inline', hidden: true });
  const form = h('form', { class: 'panel policy-editor' },
    h('h2', {}, view ? `Edit ${view.name}` : 'New policy'),
    h('div', { class: 'policy-fields' },
      view ? null : field('name', 'Name', '', { required: true, placeholder: 'e.g. rpc' }),
      field('max_attempts', 'Attempts', p.max_attempts, { type: 'number', min: 1, max: 1000 }),
      field('initial_delay', 'First wait', p.initial_delay),
      field('multiplier', 'Multiplier', p.multiplier, { type: 'number', step: '0.1', min: 1 }),
      field('max_delay', 'Longest wait', p.max_delay),
      h('div', { class: 'field' }, h('label', { for: 'policy-jitter' }, 'Jitter'), jitter),
      field('max_elapsed', 'Give up after (optional)', p.max_elapsed || '', { placeholder: 'e.g. 1h' }),
      field('attempt_timeout', 'Attempt timeout (optional)', p.attempt_timeout || '', { placeholder: 'e.g. 5m' })),
    problem,
    preview,
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, view ? 'Save changes' : 'Create policy'),
      h('button', { type: 'button', class: 'ghost', onclick: done }, 'Close')));

  const read = () => {
    const value = (name) => form.querySelector(`[name="${name}"]`).value.trim();
    const policy = {
      max_attempts: Number(value('max_attempts')),
      initial_delay: value('initial_delay'),
      multiplier: Number(value('multiplier')),
      max_delay: value('max_delay'),
      jitter: value('jitter'),
    };
    if (value('max_elapsed')) policy.max_elapsed = value('max_elapsed');
    if (value('attempt_timeout')) policy.attempt_timeout = value('attempt_timeout');
    return policy;
  };
  let drawn = 0;
  const simulate = async () => {
    const mine = ++drawn;
    try {
      const schedule = await post('/policies/simulate', read());
      if (mine !== drawn) return;
      problem.hidden = true;
      clear(preview).appendChild(chart(schedule));
    } catch (e) {
      if (mine !== drawn) return;
      problem.textContent = e.message;
      problem.hidden = false;
    }
  };
  form.addEventListener('input', simulate);
  form.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') done();
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      if (view) {
        const changes = read();
        if (!changes.max_elapsed) changes.max_elapsed = null;
        if (!changes.attempt_timeout) changes.attempt_timeout = null;
        await patch(`/policies/${encodeURIComponent(view.name)}`, changes);
        toast(`Saved ${view.name}`);
      } else {
        const name = form.querySelector('[name="name"]').value.trim();
        await post('/policies', { name, policy: read() });
        toast(`Created ${name}`);
      }
      done();
    } catch (err) {
      problem.textContent = err.message;
      problem.hidden = false;
    }
  });
  simulate();
  return form;
}

function chart(schedule) {
  if (!schedule.length) return h('p', { class: 'muted' }, 'One attempt only: no retry.');
  const rows = schedule.map((r) => ({ n: r.after_attempt, lo: parseDuration(r.delay_min), hi: parseDuration(r.delay_max), cumLo: parseDuration(r.cumulative_min), cumHi: parseDuration(r.cumulative_max) }));
  const max = Math.max(1, ...rows.map((r) => r.hi));
  const W = 520, label = 92, right = 150, rowH = 22;
  const plot = W - label - right;
  const H = rows.length * rowH + 22;
  const x = (ms) => label + (ms / max) * plot;
  const svg = s('svg', { class: 'schedule', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'delay ranges per retry' });
  rows.forEach((r, i) => {
    const y = i * rowH + 4;
    svg.appendChild(s('text', { x: 0, y: y + 13, class: 'axis' }, `before #${r.n + 1}`));
    svg.appendChild(s('rect', { x: label, y: y + 6, width: plot, height: 4, rx: 2, class: 'track' }));
    svg.appendChild(s('rect', { x: x(r.lo), y: y + 2, width: Math.max(3, x(r.hi) - x(r.lo)), height: 12, rx: 4, class: 'range' },
      s('title', {}, `${span(r.lo)} – ${span(r.hi)}`)));
    svg.appendChild(s('text', { x: label + plot + 8, y: y + 13, class: 'axis' }, r.lo === r.hi ? span(r.hi) : `${span(r.lo)} – ${span(r.hi)}`));
  });
  const last = rows[rows.length - 1];
  svg.appendChild(s('text', { x: label, y: H - 4, class: 'axis' }, '0'));
  svg.appendChild(s('text', { x: label + plot, y: H - 4, 'text-anchor': 'end', class: 'axis' }, span(max)));
  return h('div', {}, svg,
    h('p', { class: 'muted total' }, `All ${rows.length + 1} attempts within ${last.cumLo === last.cumHi ? span(last.cumHi) : `${span(last.cumLo)} – ${span(last.cumHi)}`} of waiting.`));
}
