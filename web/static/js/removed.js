// @ts-check
// The "Removed" view: images the user removed from the library (GET /api/v1/removed), each with
// the thumbnail it had and a Restore button (POST /api/v1/removed/{id}/restore). Scans skip a
// removed file (by path, and by content wherever a copy appears) until it is restored.
// Everything from the API is shown as text; thumbnails only from same-origin URLs.

import { api, messageOf } from './api.js';
import { byId, h } from './dom.js';
import { baseName, formatDate, safeUrl } from './util.js';

/**
 * A removed image (GET /api/v1/removed).
 * @typedef {object} Removed
 * @property {number | string} id
 * @property {string} path
 * @property {string} [thumbnail_url]
 * @property {boolean} [in_trash]
 * @property {string} [removed_at]
 */

const PAGE = 50;

/**
 * Wire the view. `onRestored(names, jobs)` is called after a restore was queued (the gallery
 * shows a status and follows the ingest jobs).
 * @param {(names: string[], jobs: import('./jobs.js').Job[]) => void} onRestored
 */
export function initRemovedView(onRestored) {
  const dialog = byId('removed-view', HTMLDialogElement);
  const list = byId('removed-list', HTMLElement);
  const empty = byId('removed-empty', HTMLElement);
  const error = byId('removed-error', HTMLElement);
  const more = byId('removed-more', HTMLButtonElement);
  const count = byId('removed-count', HTMLElement);
  /** @type {unknown} */
  let nextBefore = null;

  function showCount() {
    const n = list.children.length;
    count.textContent = nextBefore === null ? String(n) : `${n}+`;
  }

  /** @param {string} message */
  function showError(message) {
    error.textContent = message;
    error.hidden = !message;
  }

  /** @param {Removed} item */
  function row(item) {
    const name = baseName(item.path);
    const thumb = safeUrl(item.thumbnail_url);
    const restore = h('button', { type: 'button', class: 'button small', text: 'Restore' });
    restore.setAttribute('aria-label', `Restore ${name}`);
    restore.addEventListener('click', async () => {
      restore.disabled = true;
      showError('');
      try {
        /** @type {{ restored?: Removed[], jobs?: import('./jobs.js').Job[] }} */
        const result = await api(`/removed/${encodeURIComponent(String(item.id))}/restore`, {
          method: 'POST',
        });
        const names = (result.restored || []).map((r) => baseName(r.path));
        for (const r of result.restored || []) {
          list.querySelector(`li[data-id="${CSS.escape(String(r.id))}"]`)?.remove();
        }
        showCount();
        empty.hidden = list.children.length > 0;
        onRestored(names, result.jobs || []);
      } catch (err) {
        restore.disabled = false;
        showError(messageOf(err));
      }
    });
    const details = [
      item.in_trash ? 'moved to the trash' : 'file left on disk',
      formatDate(item.removed_at) ? `removed ${formatDate(item.removed_at)}` : null,
    ].filter(Boolean);
    return h(
      'li',
      { class: 'removed-item', 'data-id': String(item.id) },
      thumb
        ? h('img', { src: thumb, alt: '', width: 64, height: 64, loading: 'lazy' })
        : h('span', { class: 'removed-nothumb', 'aria-hidden': 'true' }),
      h(
        'div',
        { class: 'removed-text' },
        h('span', { class: 'removed-name', text: name, title: String(item.path) }),
        h('span', { class: 'hint', text: details.join(' · ') }),
      ),
      restore,
    );
  }

  /** @param {boolean} reset */
  async function load(reset) {
    if (reset) {
      list.replaceChildren();
      nextBefore = null;
    }
    showError('');
    more.hidden = true;
    try {
      const params = new URLSearchParams({ limit: String(PAGE) });
      if (nextBefore !== null) params.set('before', String(nextBefore));
      /** @type {{ items: Removed[], next_before?: unknown }} */
      const page = await api(`/removed?${params}`);
      list.append(...page.items.map(row));
      nextBefore = page.next_before ?? null;
      showCount();
      more.hidden = nextBefore === null;
      empty.hidden = list.children.length > 0;
    } catch (err) {
      showError(messageOf(err));
    }
  }

  byId('removed-toggle', HTMLButtonElement).addEventListener('click', () => {
    dialog.showModal();
    load(true);
  });
  byId('removed-close', HTMLButtonElement).addEventListener('click', () => dialog.close());
  more.addEventListener('click', () => load(false));
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
}
