// Entry point: session, client-side routing, theme, and the one live event stream that
// every page listens to.

import { session, loadSession, logout, setUnauthorizedHandler, can, get, switchOrg } from './api.js';
import { clear, h } from './dom.js';
import * as overview from './overview.js';
import * as jobs from './jobs.js';
import * as job from './job.js';
import * as dlq from './dlq.js';
import * as policies from './policies.js';
import * as schedules from './schedules.js';
import * as queues from './queues.js';
import * as tokens from './tokens.js';
import * as circuits from './circuits.js';
import * as notifications from './notifications.js';
import * as loginPage from './login.js';

const main = document.getElementById('main');
let current = null;

const ROUTES = [
  [/^\/$/, overview, 'overview', 'Overview'],
  [/^\/jobs\/?$/, jobs, 'jobs', 'Jobs'],
  [/^\/jobs\/([^/]+)$/, job, 'jobs', 'Job'],
  [/^\/dlq\/?$/, dlq, 'dlq', 'Dead letters'],
  [/^\/policies\/?$/, policies, 'policies', 'Policies'],
  [/^\/schedules\/?$/, schedules, 'schedules', 'Schedules'],
  [/^\/queues\/?$/, queues, 'queues', 'Queues'],
  [/^\/circuits\/?$/, circuits, 'circuits', 'Circuits'],
  [/^\/notifications\/?$/, notifications, 'notifications', 'Notifications'],
  [/^\/tokens\/?$/, tokens, 'tokens', 'Tokens'],
  [/^\/login\/?$/, loginPage, null, 'Log in'],
];

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  shown = location.pathname + location.search;
  route();
}

async function route() {
  if (current && current.dispose) current.dispose();
  current = null;
  const path = location.pathname;
  const found = ROUTES.find(([re]) => re.test(path));
  clear(main);
  if (!found) {
    document.title = 'Not found · retryd';
    main.appendChild(h('section', { class: 'empty-page' }, h('h1', {}, 'Not found'), h('p', {}, 'No page at ', h('code', {}, path), '. ', h('a', { href: '/' }, 'Go to the overview'), '.')));
    return;
  }
  const [re, page, nav, title] = found;
  document.title = `${title} · retryd`;
  if (page !== loginPage && !session.loaded) {
    let ok = false;
    try {
      ok = await loadSession();
    } catch (e) {
      main.appendChild(h('p', { class: 'error-box' }, `Cannot reach the server: ${e.message}`));
      return;
    }
    if (!ok) {
      navigate('/login', { replace: true });
      return;
    }
    startLive();
  }
  showWho();
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === nav);
  document.body.dataset.page = nav || 'login';
  const params = path.match(re).slice(1).map(decodeURIComponent);
  current = page.render(main, params, new URLSearchParams(location.search)) || null;
}

function showWho() {
  const who = document.getElementById('who');
  clear(who);
  document.getElementById('logout').hidden = !(session.loaded && session.auth);
  if (!session.loaded) return;
  who.appendChild(orgControl());
  who.appendChild(h('span', { class: `role role-${session.role}`, title: session.auth ? 'Logged in' : 'Authentication is disabled on this server' },
    session.auth ? session.role : `${session.role} · no auth`));
  document.body.classList.toggle('can-operate', can('operator'));
  document.querySelector('#nav a[data-nav="tokens"]').hidden = !can('admin');
}

// The organization the dashboard shows: a switcher for instance tokens (every organization),
// a label for an organization's own tokens (theirs only).
function orgControl() {
  if (!session.instance) {
    return h('span', { class: 'org', id: 'org-name', title: 'Your organization' }, session.org);
  }
  const select = h('select', { id: 'org-switch', 'aria-label': 'Organization', title: 'Organization' },
    h('option', { value: session.org, selected: true }, session.org));
  select.addEventListener('change', () => {
    switchOrg(select.value);
    location.reload();
  });
  get('/orgs').then((orgs) => {
    clear(select);
    for (const org of orgs) select.appendChild(h('option', { value: org.name, selected: org.name === session.org }, org.name));
  }).catch(() => {});
  return select;
}

// Links inside the app navigate without a reload.
document.addEventListener('click', (e) => {
  const a = e.target.closest('a');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
  // Anchors within the page (the skip link) keep the browser's behaviour: scroll and focus.
  if ((a.getAttribute('href') || '').startsWith('#')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || a.target || url.pathname.startsWith('/api/')) return;
  e.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search + url.hash);
});
// Back and forward re-render; a change of the fragment alone (the skip link) does not.
let shown = location.pathname + location.search;
window.addEventListener('popstate', () => {
  const now = location.pathname + location.search;
  if (now === shown) return;
  shown = now;
  route();
});

// Theme: follows the system unless the toggle chose one (remembered).
const root = document.documentElement;
const saved = localStorage.getItem('retryd-theme');
if (saved) root.dataset.theme = saved;
document.getElementById('theme').addEventListener('click', () => {
  const dark = root.dataset.theme ? root.dataset.theme === 'dark' : matchMedia('(prefers-color-scheme: dark)').matches;
  root.dataset.theme = dark ? 'light' : 'dark';
  localStorage.setItem('retryd-theme', root.dataset.theme);
});

document.getElementById('logout').addEventListener('click', async () => {
  await logout();
  stopLive();
  navigate('/login');
});

setUnauthorizedHandler(() => {
  session.loaded = false;
  stopLive();
  if (location.pathname !== '/login') navigate('/login', { replace: true });
});

// The live stream: one EventSource for the whole app; it resumes with Last-Event-ID.
let source = null;
function setLive(state, text) {
  const live = document.getElementById('live');
  live.dataset.state = state;
  document.getElementById('live-text').textContent = text;
}
function startLive() {
  if (source) return;
  source = new EventSource('/api/v1/events');
  source.addEventListener('open', () => setLive('open', 'live'));
  source.addEventListener('error', () => setLive('down', 'reconnecting'));
  source.addEventListener('state', (msg) => {
    let event;
    try {
      event = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (current && current.onEvent) current.onEvent(event);
  });
}
function stopLive() {
  if (source) source.close();
  source = null;
  setLive('connecting', 'offline');
}

export function toast(text, kind = 'ok') {
  const el = document.getElementById('toast');
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), 4000);
}

/** Runs at most once per `ms`, trailing call included: live events come in bursts. */
export function throttle(f, ms = 400) {
  let timer = null, pending = false;
  return () => {
    if (timer) {
      pending = true;
      return;
    }
    f();
    timer = setTimeout(function tick() {
      timer = null;
      if (pending) {
        pending = false;
        f();
        timer = setTimeout(tick, ms);
      }
    }, ms);
  };
}

/** Starts a per-second ticker; returns its stop function. */
export function every(ms, f) {
  const id = setInterval(f, ms);
  return () => clearInterval(id);
}

route();
