// @ts-check
// The signed-in account in the top bar: who you are, your role, your API keys and signing out.
// What a role may not do is hidden (a viewer has no "Add folder", "Duplicates" or "Removed": the
// server refuses them anyway). Only for a server that asks who is calling.

import { api, describeDetail } from './api.js';
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
    const res = await fetch('api/session', { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    return res.ok ? /** @type {SessionInfo} */ (await res.json()) : null;
  } catch {
    return null;
  }
}

async function signOut() {
  try {
    await fetch('api/session', { method: 'DELETE', credentials: 'same-origin' });
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
    const made = await api('api/keys', { method: 'POST', json: { name, scopes } });
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
