// @ts-check
// The signed-in account in the top bar: who you are, your role, your API keys and signing out.
// What a role may not do is hidden (a viewer has no "Add folder", "Duplicates" or "Removed": the
// server refuses them anyway). Only for a server that asks who is calling.

import { api, apiUrl, describeDetail } from './api.js';
import { h } from './dom.js';

/**
 * @typedef {object} SessionInfo
 * @property {boolean} token_required
 * @property {boolean} accounts
 * @property {boolean} signed_in
 * @property {string | null} user
 * @property {string | null} role
 */

const EDITOR_ONLY = ['ingest-toggle', 'duplicates-toggle', 'removed-toggle'];

/** @returns {Promise<SessionInfo | null>} */
async function session() {
  try {
    const res = await fetch(apiUrl('/session'), { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    return res.ok ? /** @type {SessionInfo} */ (await res.json()) : null;
  } catch {
    return null;
  }
}

async function signOut() {
  try {
    await fetch(apiUrl('/session'), { method: 'DELETE', credentials: 'same-origin' });
  } finally {
    window.location.replace('signin.html');
  }
}

/**
 * A new API key, shown once in the panel.
 * @param {HTMLElement} out where to show it
 * @param {string} role the account's role: the widest scope offered
 */
async function newKey(out, role) {
  const name = window.prompt('What is the key for? (a name you will recognise)');
  if (!name) return;
  const scopes = role === 'viewer' ? ['read'] : ['read', 'write'];
  try {
    /** @type {{ key: string, scopes: string[] }} */
    const made = await api('/keys', { method: 'POST', json: { name, scopes } });
    out.replaceChildren(
      h('span', { text: `Your key (${made.scopes.join(', ')}), shown this once:` }),
      h('code', { class: 'account-key', text: made.key }),
    );
  } catch (err) {
    out.replaceChildren(h('span', { class: 'signin-error', text: err instanceof Error ? err.message : describeDetail(null, 0) }));
  }
}

/** Show the account menu when signed in with an account (or the token). */
export async function initAccount() {
  const info = await session();
  if (!info || !info.token_required || !info.signed_in || !info.user) return;
  const role = info.role || 'viewer';
  if (role === 'viewer') {
    for (const id of EDITOR_ONLY) {
      const el = document.getElementById(id);
      if (el) el.hidden = true;
    }
  }
  const out = h('div', { class: 'account-out' });
  const panel = h(
    'div',
    { class: 'account-panel', id: 'account-panel', hidden: true },
    h('strong', { text: info.user === 'token' ? 'Signed in with the API token' : info.user }),
    h('span', { class: 'account-role', text: `Role: ${role}` }),
    info.user === 'token' ? null : h('button', { class: 'button ghost', type: 'button', onclick: () => newKey(out, role), text: 'New API key' }),
    role === 'admin' ? h('button', { class: 'button ghost', type: 'button', id: 'admin-open', onclick: openAdmin, text: 'People and sharing' }) : null,
    out,
    h('button', { class: 'button', type: 'button', id: 'sign-out', onclick: signOut, text: 'Sign out' }),
  );
  const toggle = h('button', {
    class: 'button ghost',
    type: 'button',
    id: 'account-toggle',
    'aria-expanded': 'false',
    'aria-controls': 'account-panel',
    title: `Signed in as ${info.user} (${role})`,
    onclick: () => {
      panel.hidden = !panel.hidden;
      toggle.setAttribute('aria-expanded', String(!panel.hidden));
    },
    text: info.user === 'token' ? 'Token' : info.user,
  });
  const menu = h('div', { class: 'account-menu' }, toggle, panel);
  (document.getElementById('actions') || document.body).append(menu);
}

// --- the admin page: accounts, folder sharing, the audit trail (admins only) -------------------

/** @type {HTMLDialogElement | null} */
let adminDialog = null;

/**
 * @param {string} label
 * @param {HTMLElement} control
 */
const field = (label, control) => h('label', { class: 'admin-field' }, h('span', { text: label }), control);

/** @param {unknown} err */
const problem = (err) => h('p', { class: 'signin-error', role: 'alert', text: err instanceof Error ? err.message : String(err) });

/** Fill the admin dialog from the API (again after each change). */
async function renderAdmin() {
  if (!adminDialog) return;
  const body = /** @type {HTMLElement} */ (adminDialog.querySelector('.admin-body'));
  try {
    /** @type {[any[], any[], any[]]} */
    const [users, shares, trail] = await Promise.all([api('/users'), api('/shares'), api('/audit?limit=15')]);
    const name = h('input', { id: 'admin-user-name', maxlength: '64', autocomplete: 'off', required: true });
    const pass = h('input', { id: 'admin-user-password', type: 'password', minlength: '12', maxlength: '256', autocomplete: 'new-password', required: true });
    const roleSel = h('select', { id: 'admin-user-role' }, ...['viewer', 'editor', 'admin'].map((r) => h('option', { value: r, text: r })));
    const folder = h('input', { id: 'admin-share-folder', maxlength: '4096', placeholder: '/path/to/photos', required: true });
    const who = h('select', { id: 'admin-share-user' }, h('option', { value: '', text: 'everyone' }), ...users.map((u) => h('option', { value: u.name, text: u.name })));
    const errors = h('div', { class: 'admin-errors' });
    /** @param {() => Promise<unknown>} change */
    const act = async (change) => {
      try {
        await change();
        await renderAdmin();
      } catch (err) {
        errors.replaceChildren(problem(err));
      }
    };
    body.replaceChildren(
      errors,
      h('h3', { text: 'People' }),
      h('ul', { class: 'admin-list', id: 'admin-users' }, ...users.map((u) => h('li', {},
        h('span', { text: `${u.name} · ${u.role}${u.disabled ? ' · disabled' : ''}` }),
        h('button', { class: 'button ghost small', type: 'button', text: u.disabled ? 'Enable' : 'Disable',
          onclick: () => act(() => api(`/users/${encodeURIComponent(u.name)}`, { method: 'PATCH', json: { disabled: !u.disabled } })) }),
      ))),
      h('form', { class: 'admin-form', id: 'admin-add-user', onsubmit: (/** @type {Event} */ e) => {
        e.preventDefault();
        act(() => api('/users', { method: 'POST', json: { name: name.value.trim(), role: roleSel.value, password: pass.value } }));
      } }, field('Name', name), field('Role', roleSel), field('Password', pass), h('button', { class: 'button', type: 'submit', text: 'Add' })),
      h('h3', { text: 'Shared folders' }),
      h('ul', { class: 'admin-list', id: 'admin-shares' }, ...shares.map((s) => h('li', {},
        h('span', { text: `${s.folder} → ${s.user === '*' ? 'everyone' : s.user}` }),
        h('button', { class: 'button ghost small', type: 'button', text: 'Stop',
          onclick: () => act(() => api('/shares', { method: 'DELETE', json: { folder: s.folder, user: s.user === '*' ? null : s.user } })) }),
      ))),
      h('form', { class: 'admin-form', id: 'admin-share', onsubmit: (/** @type {Event} */ e) => {
        e.preventDefault();
        act(() => api('/shares', { method: 'POST', json: { folder: folder.value.trim(), user: who.value || null } }));
      } }, field('Folder', folder), field('With', who), h('button', { class: 'button', type: 'submit', text: 'Share' })),
      h('h3', { text: 'Audit trail' }),
      h('ol', { class: 'admin-list', id: 'admin-audit' }, ...trail.map((e) => h('li', {
        text: `${new Date(e.at).toLocaleString()} · ${e.actor} · ${e.action}${e.target ? ` · ${e.target}` : ''}${e.outcome === 'ok' ? '' : ` · ${e.outcome}`}`,
      }))),
    );
  } catch (err) {
    body.replaceChildren(problem(err));
  }
}

function openAdmin() {
  if (!adminDialog) {
    adminDialog = h('dialog', { class: 'admin-dialog', id: 'admin-dialog', 'aria-label': 'People and sharing' },
      h('div', { class: 'admin-head' }, h('h2', { text: 'People and sharing' }),
        h('button', { class: 'button ghost', type: 'button', text: 'Close', onclick: () => adminDialog?.close() })),
      h('div', { class: 'admin-body' }));
    document.body.append(adminDialog);
  }
  adminDialog.showModal();
  renderAdmin();
}

