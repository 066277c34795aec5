// Policies with their schedule preview: for each wait, the range jitter may pick (a bar
// from the shortest to the longest delay) and the cumulative time, drawn as inline SVG.

import { get } from './api.js';
import { h, s, clear, span, parseDuration } from './dom.js';

export function render(main) {
  const list = h('div', { class: 'policies' });
  main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'Policies'),
    h('p', { class: 'muted' }, 'The wait before each retry: the bar spans the delays jitter may choose.')));
  main.appendChild(list);
  get('/policies').then((policies) => {
    clear(list);
    for (const p of policies) list.appendChild(card(p));
  }).catch((e) => main.appendChild(h('p', { class: 'error-box' }, e.message)));
  return null;
}

function card(view) {
  const p = view.policy;
  return h('article', { class: 'panel policy', 'data-policy': view.name },
    h('div', { class: 'panel-head' }, h('h2', {}, view.name), h('span', { class: 'pill' }, view.builtin ? 'built-in' : 'configured')),
    h('dl', { class: 'facts inline' },
      h('dt', {}, 'attempts'), h('dd', {}, p.max_attempts),
      h('dt', {}, 'first wait'), h('dd', {}, p.initial_delay),
      h('dt', {}, 'multiplier'), h('dd', {}, `×${p.multiplier}`),
      h('dt', {}, 'cap'), h('dd', {}, p.max_delay),
      h('dt', {}, 'jitter'), h('dd', {}, p.jitter),
      p.max_elapsed ? [h('dt', {}, 'budget'), h('dd', {}, p.max_elapsed)] : null,
      p.attempt_timeout ? [h('dt', {}, 'attempt timeout'), h('dd', {}, p.attempt_timeout)] : null),
    chart(view.schedule));
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
