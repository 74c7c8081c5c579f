// @ts-check
// Watched folders in the ingest panel (GET/POST/DELETE /api/v1/folders): folders the library keeps
// up to date by itself. A folder added with "Keep watching" checked is ingested now and its new,
// changed, moved or deleted files are picked up within seconds afterwards.

import { ApiError, api, messageOf } from './api.js';
import { byId, h } from './dom.js';

/**
 * A watched folder (GET /api/v1/folders).
 * @typedef {object} Folder
 * @property {number | string} id
 * @property {string} path
 * @property {string} [state] watching | scanning | missing | idle
 * @property {import('./jobs.js').Job | null} [last_job]
 */

/** @type {Record<string, string>} */
const STATE_TEXT = {
  watching: 'watching',
  scanning: 'scanning…',
  missing: 'missing (not mounted?)',
  idle: 'not watched (re-scanned periodically)',
};

/**
 * Wire the list. `onJob(job)` is called with the ingest job of a folder just added (the gallery
 * follows it). Returns `{ refresh, add(path, recursive) }`.
 * @param {(job: import('./jobs.js').Job) => void} onJob
 */
export function initFolders(onJob) {
  const list = byId('folders', HTMLElement);
  const empty = byId('folders-empty', HTMLElement);
  const error = byId('folders-error', HTMLElement);
  const hint = byId('ingest-hint', HTMLElement);
  const submit = byId('ingest-submit', HTMLButtonElement);
  let generation = 0;

  // Which folders may be added, said before anyone types one (GET /api/v1/folders/allowed)
  async function explainRoots() {
    let allowed;
    try {
      allowed = await api('/folders/allowed', { ask: false });
    } catch {
      return; // not signed in yet, or an older server: the static hint stays
    }
    /** @type {string[]} */
    const roots = Array.isArray(allowed?.roots) ? allowed.roots.map(String) : [];
    const text = String(allowed?.hint ?? '');
    hint.dataset.roots = String(roots.length);
    if (roots.length) {
      hint.replaceChildren(
        'Folders inside these may be added: ',
        ...roots.flatMap((root, i) => [i ? ', ' : '', h('code', { text: root })]),
        text ? ` (${text}).` : '.',
      );
    } else {
      hint.replaceChildren(text ? text.charAt(0).toUpperCase() + text.slice(1) + '.' : 'No folder may be added from here.');
    }
    hint.classList.toggle('form-error', roots.length === 0);
    submit.disabled = roots.length === 0;
  }

  /** @param {Folder} folder */
  function row(folder) {
    const stop = h('button', { type: 'button', class: 'chip-clear', text: '×' });
    stop.setAttribute('aria-label', `Stop watching ${folder.path}`);
    stop.title = 'Stop watching (its images stay in the library)';
    stop.addEventListener('click', async () => {
      stop.disabled = true;
      try {
        await api(`/folders/${encodeURIComponent(String(folder.id))}`, { method: 'DELETE' });
        await refresh();
      } catch (err) {
        stop.disabled = false;
        error.textContent = messageOf(err);
        error.hidden = false;
      }
    });
    const state = String(folder.state || 'idle');
    return h(
      'li',
      { class: 'folder', 'data-id': String(folder.id), 'data-state': state },
      h('span', { class: 'folder-path', text: folder.path, title: folder.path }),
      h('span', { class: 'folder-state', text: STATE_TEXT[state] || state }),
      stop,
    );
  }

  async function refresh() {
    explainRoots();
    const mine = ++generation;
    try {
      /** @type {Folder[]} */
      const folders = await api('/folders', { ask: false });
      if (mine !== generation) return;
      list.replaceChildren(...folders.map(row));
      empty.hidden = folders.length > 0;
      error.hidden = true;
    } catch (err) {
      if (mine !== generation) return;
      if (err instanceof ApiError && err.status === 401) return; // not signed in yet: the jobs list asks for the token
      error.textContent = messageOf(err);
      error.hidden = false;
    }
  }

  /**
   * Watch a folder (and ingest it now).
   * @param {string} path
   * @param {boolean} recursive
   * @returns {Promise<Folder>}
   */
  async function add(path, recursive) {
    /** @type {Folder} */
    const folder = await api('/folders', { method: 'POST', json: { path, recursive } });
    if (folder && folder.last_job) onJob(folder.last_job);
    await refresh();
    return folder;
  }

  return { refresh, add };
}
