// DOM building and formatting. Every value from a job goes through text nodes (h() turns
// strings into Text, never markup), so output such as "<script>" shows as text.

/** h('div', {class: 'x', onclick: f}, 'text', child, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element; attributes only (no markup). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child instanceof Node) el.appendChild(child);
    else if (child !== null && child !== undefined) el.appendChild(document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// Each state has a colour AND a distinct glyph, so that the badge reads without colour.
export const STATES = {
  pending: { icon: '◷', label: 'pending' },
  running: { icon: '▶', label: 'running' },
  retrying: { icon: '↻', label: 'retrying' },
  succeeded: { icon: '✓', label: 'succeeded' },
  failed: { icon: '✕', label: 'failed' },
  cancelled: { icon: '⊘', label: 'cancelled' },
  expired: { icon: '⊖', label: 'expired' },
};

export function badge(state) {
  const known = STATES[state] || { icon: '?', label: String(state) };
  return h('span', { class: `badge st-${known.label}`, 'data-state': known.label },
    h('span', { class: 'icon', 'aria-hidden': 'true' }, known.icon), known.label);
}

export function classTag(cls) {
  if (!cls) return null;
  const icon = { transient: '↻', permanent: '■', unknown: '?' }[cls] || '·';
  return h('span', { class: `cls cls-${cls}` }, h('span', { 'aria-hidden': 'true' }, icon), ' ', cls);
}

export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  // Milliseconds: several events of one job often fall in the same second.
  const t = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3, hour12: false });
  return sameDay ? t : `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${t}`;
}

/** A short stable name for a text (FNV-1a), for element ids: `g-1a2b3c4d`. */
export function slug(text) {
  let hash = 0x811c9dc5;
  for (const ch of String(text)) {
    hash ^= ch.codePointAt(0);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/** The viewer's time zone, as times are shown in it: "Europe/Berlin (UTC+01:00)". */
export function zoneLabel(at = new Date()) {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const minutes = -at.getTimezoneOffset();
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${zone} (UTC${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')})`;
}

/** A time as text, with the full instant and how long ago in its tooltip. */
export function when(iso) {
  if (!iso) return '—';
  return h('time', { datetime: iso, title: `${iso} (${ago(iso)})` }, time(iso));
}

export function ago(iso, now = Date.now()) {
  if (!iso) return '—';
  const secs = Math.round((now - new Date(iso).getTime()) / 1000);
  if (secs < 0) return `in ${span(-secs * 1000)}`;
  if (secs < 5) return 'just now';
  return `${span(secs * 1000)} ago`;
}

/** 1234 ms → "1.2 s", 75000 → "1 m 15 s". */
export function span(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms === 0) return '0';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const secs = ms / 1000;
  if (secs < 10) return `${secs.toFixed(1).replace(/\.0$/, '')} s`;
  if (secs < 60) return `${Math.round(secs)} s`;
  const m = Math.floor(secs / 60), r = Math.round(secs % 60);
  if (m < 60) return r ? `${m} m ${r} s` : `${m} m`;
  const hr = Math.floor(m / 60), rm = m % 60;
  return rm ? `${hr} h ${rm} m` : `${hr} h`;
}

const UNITS = { ns: 1e-6, us: 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000,
  day: 86400000, days: 86400000, month: 2630016000, months: 2630016000, year: 31557600000,
  years: 31557600000, y: 31557600000, min: 60000 };

/** The server's durations ("2s", "1m 30s", "250ms") in milliseconds. */
export function parseDuration(text) {
  if (typeof text === 'number') return text * 1000;
  let total = 0;
  for (const [, n, unit] of String(text).matchAll(/([\d.]+)\s*([a-z]+)/g)) total += Number(n) * (UNITS[unit] ?? 0);
  return total;
}

export function shortId(id) {
  return String(id).slice(-12);
}

export function pct(rate) {
  return rate === null || rate === undefined ? '—' : `${(rate * 100).toFixed(1)} %`;
}

export function num(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
}

/** "sh -c 'echo hi'" for a command, "GET https://…" for http. */
export function describeAction(action) {
  if (!action) return '';
  if (action.type === 'command') {
    const quote = (a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
    return [action.program, ...(action.args || [])].map(quote).join(' ');
  }
  if (action.type === 'http') return `${action.method || 'POST'} ${action.url}`;
  if (action.type === 'pipeline') return `pipeline (${(action.steps || []).length} steps)`;
  return action.type;
}

/** A confirmation in the page (no window.confirm dialog): the button asks once more. */
export function confirmInline(button, question) {
  return new Promise((resolve) => {
    const original = button.textContent;
    const yes = h('button', { type: 'button', class: 'danger' }, 'Yes');
    const no = h('button', { type: 'button', class: 'ghost' }, 'No');
    const box = h('span', { class: 'confirm' }, question, ' ', yes, no);
    button.hidden = true;
    button.after(box);
    no.focus();
    const done = (answer) => {
      box.remove();
      button.hidden = false;
      button.textContent = original;
      // Focus goes back where it was, not to the page's top.
      button.focus();
      resolve(answer);
    };
    yes.addEventListener('click', () => done(true));
    no.addEventListener('click', () => done(false));
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') done(false);
    });
  });
}

