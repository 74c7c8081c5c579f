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

/**
 * A watched folder's current problems (GET /api/v1/folders/{id}/problems): its files that are
 * not in the library and why, each once however many rescans met it.
 * @typedef {object} FolderProblems
 * @property {{ path?: unknown, problem?: unknown }[]} [items]
 * @property {number} [total]
 */

const PROBLEMS_SHOWN = 50; // listed per folder (the total is said)

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
  /** @type {Set<string>} folders whose list of problems is open (kept across refreshes) */
  const openProblems = new Set();

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
    const li = h(
      'li',
      { class: 'folder', 'data-id': String(folder.id), 'data-state': state },
      h('span', { class: 'folder-path', text: folder.path, title: folder.path }),
      h('span', { class: 'folder-state', text: STATE_TEXT[state] || state }),
      stop,
    );
    showProblems(folder, li);
    return li;
  }

  /**
   * Under a folder, its files that could not be added (shown whatever its latest rescan said:
   * a rescan reports only what is new), each with why; nothing when there are none.
   * @param {Folder} folder
   * @param {HTMLElement} li
   */
  async function showProblems(folder, li) {
    /** @type {FolderProblems} */
    let found;
    try {
      found = await api(`/folders/${encodeURIComponent(String(folder.id))}/problems?limit=${PROBLEMS_SHOWN}`, { ask: false });
    } catch {
      return; // an older server, or the folder just went: the row says what it can
    }
    const items = Array.isArray(found?.items) ? found.items : [];
    const total = Number(found?.total) || items.length;
    if (!total || !li.isConnected) return;
    const more = total - items.length;
    const id = String(folder.id);
    const details = h(
      'details',
      { class: 'folder-problems', open: openProblems.has(id) || null },
      h('summary', { text: `${total.toLocaleString()} file${total === 1 ? '' : 's'} could not be added` }),
      h(
        'ul',
        { class: 'job-errors' },
        items.map((p) => h('li', {}, h('code', { text: String(p?.path ?? '') }), ` ${String(p?.problem ?? '')}`)),
        more > 0 ? h('li', { text: `… and ${more.toLocaleString()} more (clipsearch folders --problems)` }) : null,
      ),
    );
    details.addEventListener('toggle', () => {
      if (/** @type {HTMLDetailsElement} */ (details).open) openProblems.add(id);
      else openProblems.delete(id);
    });
    li.append(details);
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
