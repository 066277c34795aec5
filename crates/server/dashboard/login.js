// Login with a token. The first-start link is /login#token=…: the fragment never reaches
// the server's logs; it is read here, exchanged for the session cookie, and cleared.

import { login } from './api.js';
import { h } from './dom.js';
import { navigate } from './app.js';

export function render(main) {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const error = h('p', { class: 'error-box', hidden: true });
  const input = h('input', { type: 'password', name: 'token', id: 'token', autocomplete: 'off', required: true, placeholder: 'rtd_…', spellcheck: 'false' });
  const submit = async (token) => {
    error.hidden = true;
    try {
      await login(token);
      navigate('/', { replace: true });
    } catch (e) {
      error.textContent = e.status === 401 ? 'This token is not valid (or was revoked).' : e.message;
      error.hidden = false;
    }
  };
  main.appendChild(h('section', { class: 'login' },
    h('h1', {}, 'Log in to retryd'),
    h('p', { class: 'muted' }, 'Paste an API token. retryd prints an admin token and a login link at first start; ',
      h('code', {}, 'retryd token create'), ' makes more.'),
    h('form', { onsubmit: (e) => { e.preventDefault(); submit(input.value.trim()); } },
      h('label', { for: 'token' }, 'Token'), input,
      h('button', { type: 'submit', class: 'primary' }, 'Log in')),
    error));
  if (fragment.get('token')) {
    const token = fragment.get('token');
    history.replaceState(null, '', '/login');
    submit(token);
  } else {
    input.focus();
  }
}
