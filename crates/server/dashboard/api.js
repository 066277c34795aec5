// The dashboard is a thin client of the public JSON API: every read and action goes
// through here, with the session cookie and, on state changes, the CSRF token.

export const session = { role: 'viewer', csrf: '', auth: true, loaded: false, org: 'default', instance: false };

const RANK = { viewer: 0, operator: 1, admin: 2 };

/** Whether the logged-in role may do what `role` may. */
export function can(role) {
  return (RANK[session.role] ?? -1) >= RANK[role];
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

async function call(method, path, body, { quiet404 = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const err = data && data.error ? data.error : { code: String(response.status), message: text || response.statusText };
    if (response.status === 401 && path !== '/session') onUnauthorized();
    if (!(quiet404 && response.status === 404)) console.warn(`${method} ${path}: ${response.status} ${err.message}`);
    throw new ApiError(response.status, err.code, err.message);
  }
  return data;
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, body = {}) => call('POST', path, body);
export const del = (path) => call('DELETE', path);
export const put = (path, body) => call('PUT', path, body);
export const patch = (path, body) => call('PATCH', path, body);

/** Loads who we are. A server without the session endpoint has no auth: admin. */
export async function loadSession() {
  try {
    const s = await get('/session', { quiet404: true });
    Object.assign(session, { role: s.role, csrf: s.csrf_token || '', auth: s.auth !== false, loaded: true, org: s.org, instance: s.instance });
    return true;
  } catch (e) {
    if (e.status === 404) {
      Object.assign(session, { role: 'admin', csrf: '', auth: false, loaded: true, org: 'default', instance: true });
      return true;
    }
    if (e.status === 401) return false;
    throw e;
  }
}

export async function login(token) {
  const s = await post('/session', { token });
  Object.assign(session, { role: s.role, csrf: s.csrf_token || '', auth: true, loaded: true, org: s.org, instance: s.instance });
}

/** Acts in another organization from now on (instance tokens): the server reads the cookie. */
export function switchOrg(name) {
  document.cookie = `retryd_org=${encodeURIComponent(name)}; Path=/; SameSite=Strict`;
}

export async function logout() {
  try {
    await del('/session');
  } finally {
    Object.assign(session, { role: 'viewer', csrf: '', loaded: false });
  }
}
