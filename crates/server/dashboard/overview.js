// Overview: counts per state, success rate after retries against the target line,
// attempts and failures over time, top errors, per kind/target, queues, open circuits.

import { get } from './api.js';
import { h, s, clear, badge, classTag, STATES, pct, num, time, ago, shortId, span, parseDuration } from './dom.js';
import { throttle } from './app.js';
import { circuitsPanel } from './circuits.js';

const WINDOWS = ['1h', '24h', '7d'];
// Rows of "By kind" and "By target"; the rest are counted below them.
const BREAKDOWN_ROWS = 8;

export function render(main, _params, query) {
  let windowName = WINDOWS.includes(query.get('window')) ? query.get('window') : '24h';
  const cards = h('div', { class: 'state-cards' });
  const rate = h('div', { class: 'panel rate-panel' });
  const chart = h('div', { class: 'panel chart-panel' });
  const errors = h('div', { class: 'panel' });
  const kinds = h('div', { class: 'panel' });
  const targets = h('div', { class: 'panel' });
  const recent = h('div', { class: 'panel' });
  const queues = h('div', { class: 'panel' });
  const circuits = h('div', { class: 'panel circuits', hidden: true });
  const windowPicker = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Window' },
    WINDOWS.map((w) => h('button', { type: 'button', 'data-window': w, class: w === windowName ? 'on' : '', onclick: () => {
      windowName = w;
      history.replaceState(null, '', `/?window=${w}`);
      for (const b of windowPicker.children) b.classList.toggle('on', b.dataset.window === w);
      refresh();
    } }, w)));

  main.appendChild(h('div', { class: 'page-head' },
    h('div', {}, h('h1', {}, 'Overview'), h('p', { class: 'muted subtitle' }, 'Jobs created in the window, by their state now')), windowPicker));
  main.appendChild(cards);
  main.appendChild(circuits);
  main.appendChild(h('div', { class: 'grid-2' }, rate, chart));
  main.appendChild(h('div', { class: 'grid-2' }, recent, errors));
  main.appendChild(h('div', { class: 'grid-3' }, kinds, targets, queues));

  // Reserve the cards' space before the first answer: no jump when it arrives.
  drawCards(cards, null);

  async function refresh() {
    const [stats, failed, queueList] = await Promise.all([
      get(`/stats?window=${windowName}&bucket=${fineBucket(windowName)}`),
      get('/jobs?state=failed&limit=6'),
      get('/queues'),
    ]);
    drawCards(cards, stats.totals);
    drawRate(rate, stats);
    drawChart(chart, await chartStats(stats));
    drawErrors(errors, stats.top_errors || []);
    drawBreakdown(kinds, 'By kind', 'kind', stats.by_kind || []);
    drawBreakdown(targets, 'By target', 'target', stats.by_target || []);
    drawRecent(recent, failed.jobs);
    drawQueues(queues, queueList);
    await circuitsPanel(circuits);
  }
  const live = throttle(() => refresh().catch(() => {}), 1000);
  refresh().catch((e) => main.appendChild(h('p', { class: 'error-box' }, e.message)));
  return { onEvent: live };
}

function drawCards(el, totals) {
  clear(el);
  for (const state of Object.keys(STATES)) {
    el.appendChild(h('a', { class: `state-card st-${state}`, href: `/jobs?state=${state}`, 'data-count-for': state },
      badge(state),
      h('span', { class: 'count' }, totals ? num(totals[state] ?? 0) : '…')));
  }
}

function drawRate(el, stats) {
  clear(el);
  const rateAfter = stats.success_rate_after_retries;
  const target = stats.target_rate ?? 0.8;
  const meets = stats.meets_target;
  el.appendChild(h('h2', {}, 'Success rate after retries'));
  el.appendChild(h('div', { class: 'big-rate' },
    h('span', { class: 'big' }, pct(rateAfter)),
    rateAfter === null || rateAfter === undefined
      ? h('span', { class: 'muted' }, 'no finished jobs in this window')
      : h('span', { class: `verdict ${meets ? 'good' : 'bad'}` }, meets ? '✓ meets' : '✕ below', ` the ${Math.round(target * 100)} % target`)));
  // A bar with the target line drawn across it.
  const w = 400, hgt = 26;
  const fill = Math.max(0, Math.min(1, rateAfter ?? 0)) * w;
  el.appendChild(s('svg', { class: 'rate-bar', viewBox: `0 0 ${w} ${hgt + 16}`, role: 'img', 'aria-label': `success rate ${pct(rateAfter)} against target ${pct(target)}` },
    s('rect', { x: 0, y: 0, width: w, height: hgt, rx: 6, class: 'bar-bg' }),
    s('rect', { x: 0, y: 0, width: fill, height: hgt, rx: 6, class: meets ? 'bar-good' : 'bar-bad' }),
    s('line', { x1: target * w, x2: target * w, y1: -2, y2: hgt + 2, class: 'target-line' }),
    s('text', { x: target * w, y: hgt + 14, 'text-anchor': 'middle', class: 'axis' }, `target ${Math.round(target * 100)} %`)));
  el.appendChild(h('dl', { class: 'facts' },
    h('dt', {}, 'First-attempt success'), h('dd', {}, pct(stats.first_attempt_success_rate)),
    h('dt', {}, 'Mean attempts'), h('dd', {}, stats.mean_attempts == null ? '—' : stats.mean_attempts.toFixed(2)),
    h('dt', {}, 'Retries waiting'), h('dd', {}, num(stats.pending_retries)),
    h('dt', {}, 'Window'), h('dd', {}, `${time(stats.since)} → ${time(stats.until)}`)));
}

// The series is asked for in fine points (the window / 240) and drawn as about 40 bars from
// the window's first attempt to now. When the attempts all fall in the last tenth of the
// window, the chart asks for that stretch alone: a burst of work in a 24 h window is still a
// chart, not one bar.
const FINE_POINTS = 240;
const BARS = 40;

function fineBucket(windowName) {
  return `${Math.max(1, Math.round(parseDuration(windowName) / 1000 / FINE_POINTS))}s`;
}

/** The stats to draw the chart from: `stats` itself, or a closer look at its recent part. */
async function chartStats(stats) {
  const series = stats.series || [];
  if (!series.length) return stats;
  const since = new Date(stats.since).getTime(), until = new Date(stats.until).getTime();
  const active = until - new Date(series[0].start).getTime();
  if (active * 10 > until - since) return stats;
  const secs = Math.max(BARS, Math.ceil(active / 1000));
  return get(`/stats?window=${secs}s&bucket=${Math.max(1, Math.ceil(secs / BARS))}s`);
}

// A clock time for an axis tick: minutes (seconds for a short stretch), and the day as well
// when the range spans days.
function tick(ms, days, seconds) {
  const d = new Date(ms);
  const t = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: seconds ? '2-digit' : undefined, hour12: false });
  return days ? `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${t}` : t;
}

function drawChart(el, stats) {
  clear(el);
  el.appendChild(h('div', { class: 'panel-head' }, h('h2', {}, 'Attempts and failures'),
    h('span', { class: 'legend' }, h('span', { class: 'key key-attempts' }), 'attempts ', h('span', { class: 'key key-failures' }), 'failures')));
  const series = stats.series || [];
  const fine = Math.max(1, (stats.bucket_secs || 1) * 1000);
  const since = new Date(stats.since).getTime(), until = new Date(stats.until).getTime();
  // Bars are whole fine points on the series' own grid (it starts at `since`), from the
  // bar that holds the first attempt to now.
  const first = series.length ? new Date(series[0].start).getTime() : since;
  const width = Math.max(1, Math.ceil((until - first) / BARS / fine)) * fine;
  const from = since + Math.floor((first - since) / width) * width;
  const bars = [];
  for (let at = from; at < until; at += width) bars.push({ start: at, attempts: 0, failures: 0 });
  for (const p of series) {
    const bar = bars[Math.min(bars.length - 1, Math.max(0, Math.floor((new Date(p.start).getTime() - from) / width)))];
    bar.attempts += p.attempts;
    bar.failures += p.failures;
  }
  const W = 560, H = 180, left = 36, bottom = 22;
  const max = Math.max(1, ...bars.map((b) => b.attempts));
  const x = (t) => left + ((t - from) / Math.max(1, until - from)) * (W - left);
  const bw = Math.max(1, x(from + width) - x(from) - 1);
  const y = (v) => H - bottom - (v / max) * (H - bottom - 8);
  const days = until - from > 24 * 3600 * 1000;
  const seconds = until - from < 10 * 60 * 1000;
  const total = (key) => num(bars.reduce((n, b) => n + b[key], 0));
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `attempts and failures from ${tick(from, true, seconds)} to now, ${span(width)} a bar: ${total('attempts')} attempts, ${total('failures')} failures` });
  for (const frac of [0, 0.5, 1]) {
    const v = Math.round(max * frac);
    svg.appendChild(s('line', { x1: left, x2: W, y1: y(v), y2: y(v), class: 'grid' }));
    svg.appendChild(s('text', { x: left - 4, y: y(v) + 3, 'text-anchor': 'end', class: 'axis' }, num(v)));
  }
  for (const b of bars) {
    if (!b.attempts) continue;
    const title = s('title', {}, `${time(new Date(b.start).toISOString())} – ${time(new Date(Math.min(until, b.start + width)).toISOString())}: ${b.attempts} attempts, ${b.failures} failures`);
    svg.appendChild(s('rect', { x: x(b.start), y: y(b.attempts), width: bw, height: H - bottom - y(b.attempts), class: 'bar-attempts' }, title));
    if (b.failures) svg.appendChild(s('rect', { x: x(b.start), y: y(b.failures), width: bw, height: H - bottom - y(b.failures), class: 'bar-failures' }, title.cloneNode(true)));
  }
  // Five ticks along the time axis.
  for (let i = 0; i <= 4; i++) {
    const at = from + ((until - from) * i) / 4;
    const anchor = i === 0 ? 'start' : i === 4 ? 'end' : 'middle';
    svg.appendChild(s('line', { x1: x(at), x2: x(at), y1: H - bottom, y2: H - bottom + 4, class: 'grid' }));
    svg.appendChild(s('text', { x: x(at), y: H - 6, 'text-anchor': anchor, class: 'axis' }, i === 4 ? 'now' : tick(at, days, seconds)));
  }
  if (!series.length) svg.appendChild(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'axis' }, 'no attempts in this window'));
  el.appendChild(svg);
  el.appendChild(h('p', { class: 'muted chart-note' }, series.length
    ? `Each bar is ${span(width)}, from the window's first attempt at ${tick(first, days, seconds)}.`
    : `Each bar is ${span(width)}.`));
}

function drawErrors(el, top) {
  clear(el);
  el.appendChild(h('h2', {}, 'Top errors'));
  if (!top.length) {
    el.appendChild(h('p', { class: 'muted' }, 'No failed attempts in this window.'));
    return;
  }
  // Six rows, ranked by jobs; a permanent error below them is shown anyway: it stops jobs
  // at once and needs a person.
  const shown = top.filter((e, i) => i < 6 || e.class === 'permanent');
  el.appendChild(h('table', { class: 'table compact errors' },
    h('colgroup', {}, h('col', { class: 'w-count' }), h('col', { class: 'w-class' }), h('col', {})),
    h('tbody', {}, shown.map((e) => h('tr', {},
      h('td', { class: 'num', title: `${e.count} job${e.count === 1 ? '' : 's'}, ${e.attempts} failed attempt${e.attempts === 1 ? '' : 's'}` }, num(e.count)),
      h('td', {}, classTag(e.class)),
      // A row opens the jobs whose error reads so (the search takes its first words).
      h('td', { class: 'msg', title: e.message }, h('a', { href: `/jobs?q=${encodeURIComponent(e.message.slice(0, 60))}` }, e.message)))))));
  if (shown.length < top.length) el.appendChild(h('p', { class: 'muted more' }, `and ${top.length - shown.length} more`));
}

function drawBreakdown(el, title, key, rows) {
  clear(el);
  el.appendChild(h('h2', {}, title));
  if (!rows.length) {
    el.appendChild(h('p', { class: 'muted' }, 'Nothing finished in this window.'));
    return;
  }
  el.appendChild(h('table', { class: 'table compact' },
    h('thead', {}, h('tr', {}, h('th', {}, key), h('th', { class: 'num' }, 'finished'), h('th', { class: 'num' }, 'after retries'))),
    h('tbody', {}, rows.slice(0, BREAKDOWN_ROWS).map((r) => h('tr', {},
      // Jobs without a target are grouped as "(none)", which no filter can name.
      h('td', {}, r.name === '(none)' ? h('span', { class: 'muted' }, r.name) : h('a', { href: `/jobs?${key}=${encodeURIComponent(r.name)}` }, r.name)),
      h('td', { class: 'num' }, num(r.finished)),
      h('td', { class: `num ${r.success_rate_after_retries != null && r.success_rate_after_retries < 0.8 ? 'bad-text' : ''}` }, pct(r.success_rate_after_retries)))))));
  // Not silently cut: the rest are named by count, and the job list has them all.
  if (rows.length > BREAKDOWN_ROWS) {
    el.appendChild(h('p', { class: 'muted more' }, `and ${rows.length - BREAKDOWN_ROWS} more ${key === 'kind' ? 'kinds' : 'targets'} (`, h('a', { href: '/jobs' }, 'all jobs'), ')'));
  }
}


function drawRecent(el, jobs) {
  clear(el);
  el.appendChild(h('div', { class: 'panel-head' }, h('h2', {}, 'Latest failures'), h('a', { href: '/dlq' }, 'Dead letters →')));
  if (!jobs.length) {
    el.appendChild(h('p', { class: 'muted' }, 'Nothing in the dead-letter queue.'));
    return;
  }
  el.appendChild(h('ul', { class: 'recent' }, jobs.map((j) => h('li', {},
    h('a', { href: `/jobs/${j.id}`, class: 'recent-link' },
      badge(j.state),
      h('span', { class: 'kind' }, j.kind),
      h('span', { class: 'msg', title: j.last_error || j.finish_reason || '' }, j.last_error || j.finish_reason || ''),
      h('span', { class: 'muted when', title: j.finished_at }, ago(j.finished_at)),
      h('code', { class: 'id muted' }, shortId(j.id)))))));
}

function drawQueues(el, queues) {
  clear(el);
  el.appendChild(h('h2', {}, 'Queues'));
  if (!queues.length) {
    el.appendChild(h('p', { class: 'muted' }, 'No job is waiting.'));
    return;
  }
  el.appendChild(h('table', { class: 'table compact' },
    h('thead', {}, h('tr', {}, h('th', {}, 'queue'), h('th', { class: 'num' }, 'waiting'), h('th', {}, ''))),
    h('tbody', {}, queues.map((q) => h('tr', {},
      h('td', {}, h('a', { href: `/jobs?queue=${encodeURIComponent(q.name)}` }, q.name)),
      h('td', { class: 'num' }, num(q.waiting)),
      h('td', {}, q.paused ? h('span', { class: 'paused' }, '‖ paused') : h('span', { class: 'muted' }, 'active')))))));
}
