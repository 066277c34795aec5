// API tokens of the organization (admins): who may call, with which role; create one (its
// secret is shown once, here) and revoke one (it stops working at once).

import { get, post, del, session } from './api.js';
import { toast } from './app.js';
import { h, clear, time, confirmInline } from './dom.js';

export function render(main) {
  const list = h('div', { class: 'table-wrap' });
  const created = h('div', { class: 'created-token', 'aria-live': 'polite' });
  main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'Tokens'),
    h('p', { class: 'muted' }, `API tokens of organization ${session.org}. Their secrets are never shown again after creation.`)));
  main.appendChild(createForm(created, () => load()));
  main.appendChild(created);
  main.appendChild(list);

  async function load() {
    try {
      const tokens = await get('/tokens');
      clear(list).appendChild(h('table', { class: 'table tokens' },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'name'), h('th', { scope: 'col' }, 'role'), h('th', { scope: 'col', class: 'c-when' }, 'created'),
          h('th', { scope: 'col', class: 'c-queue' }, 'by'), h('th', { scope: 'col' }, 'status'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'actions')))),
        h('tbody', {}, ...tokens.map((t) => row(t, load)))));
    } catch (e) {
      clear(list).appendChild(h('p', { class: 'error-box' }, e.status === 403 ? 'Tokens are for admins.' : e.message));
    }
  }
  load();
  return {};
}

function row(t, reload) {
  const cell = h('td', { class: 'actions-cell' });
  if (!t.revoked_at) {
    cell.appendChild(h('button', { type: 'button', class: 'danger small', 'data-action': 'Revoke', onclick: async (e) => {
      const button = e.currentTarget;
      if (!(await confirmInline(button, `Revoke ${t.name}? It stops working at once.`))) return;
      try {
        await del(`/tokens/${encodeURIComponent(t.id)}`);
        toast(`Revoked ${t.name}`);
      } catch (err) {
        toast(`Revoke: ${err.message}`, 'error');
      }
      await reload();
    } }, 'Revoke'));
  }
  return h('tr', { 'data-token': t.name },
    h('td', {}, t.name), h('td', {}, t.instance ? `${t.role} (instance)` : t.role),
    h('td', { class: 'c-when' }, time(t.created_at)), h('td', { class: 'c-queue' }, t.created_by),
    h('td', {}, t.revoked_at ? h('span', { class: 'bad-text' }, `revoked ${time(t.revoked_at)}`) : 'active'),
    cell);
}

function createForm(created, reload) {
  const name = h('input', { id: 'token-name', name: 'name', placeholder: 'name, e.g. ci', autocomplete: 'off', required: true });
  const role = h('select', { id: 'token-role', name: 'role' },
    ['viewer', 'operator', 'admin'].map((r) => h('option', { value: r }, r)));
  const form = h('form', { class: 'search-form token-form' },
    h('label', { for: 'token-name', class: 'sr-only' }, 'Token name'), name,
    h('label', { for: 'token-role', class: 'sr-only' }, 'Role'), role,
    h('button', { type: 'submit', class: 'primary' }, 'Create token'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const made = await post('/tokens', { name: name.value.trim(), role: role.value });
      clear(created).appendChild(h('div', { class: 'panel' },
        h('p', {}, `Token ${made.name} (${made.role}). Copy it now: it is shown only once.`),
        h('code', { class: 'secret', id: 'new-token' }, made.token)));
      name.value = '';
    } catch (err) {
      toast(`Create: ${err.message}`, 'error');
    }
    await reload();
  });
  return form;
}
