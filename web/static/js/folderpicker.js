// @ts-check
// The folder browser of the ingest panel: the folders the server may read (GET
// /api/v1/folders/browse: the allowed roots, then the sub-folders of one, each with its count of
// pictures), walked by clicking, so that nobody has to type a server path. Nothing above an
// allowed root is listed: at a root there is no "Up".

import { api, messageOf } from './api.js';
import { byId, h } from './dom.js';

/**
 * @typedef {object} Listing
 * @property {string | null} path
 * @property {string | null} parent
 * @property {number | null} [images]
 * @property {{ name: string, path: string, images: number | null }[]} folders
 * @property {boolean} [truncated]
 */

/** @param {number | null | undefined} n */
const pictures = (n) => (typeof n === 'number' ? `${n.toLocaleString()} picture${n === 1 ? '' : 's'}` : 'many pictures');

/**
 * Wire the browser: "Browse folders" opens it, a folder's button goes into it, "Up" goes back
 * (never above a root), "Choose this folder" puts the folder into `input`.
 * @param {HTMLInputElement} input
 */
export function initFolderPicker(input) {
  const open = byId('folder-browse', HTMLButtonElement);
  const box = byId('folder-browser', HTMLElement);
  const where = byId('folder-browser-path', HTMLElement);
  const list = byId('folder-browser-list', HTMLElement);
  const up = byId('folder-browser-up', HTMLButtonElement);
  const choose = byId('folder-browser-choose', HTMLButtonElement);
  const error = byId('folder-browser-error', HTMLElement);
  /** @type {Listing | null} */
  let shown = null;
  let asked = 0;

  /** @param {string | null} path null: the allowed roots */
  async function show(path) {
    asked += 1;
    const mine = asked;
    error.hidden = true;
    list.setAttribute('aria-busy', 'true');
    /** @type {Listing} */
    let listing;
    try {
      listing = await api(path === null ? '/folders/browse' : `/folders/browse?path=${encodeURIComponent(path)}`);
    } catch (err) {
      if (mine !== asked) return;
      list.setAttribute('aria-busy', 'false');
      error.textContent = messageOf(err);
      error.hidden = false;
      return;
    }
    if (mine !== asked) return;
    shown = listing;
    list.setAttribute('aria-busy', 'false');
    const folders = Array.isArray(listing.folders) ? listing.folders : [];
    where.replaceChildren(
      ...(listing.path
        ? [h('span', { class: 'folder-browser-where', title: listing.path, text: `\u200e${listing.path}\u200e` }), h('span', { class: 'folder-count', text: pictures(listing.images) })]
        : ['Folders the server may read']),
    );
    up.hidden = !listing.path; // at the roots: nothing above
    up.disabled = !listing.path;
    choose.disabled = !listing.path;
    list.replaceChildren(
      ...folders.map((f) =>
        h(
          'li',
          {},
          h('button', { type: 'button', class: 'folder-entry', 'data-path': String(f.path), title: String(f.path), onclick: () => show(String(f.path)) }, h('span', { class: 'folder-name', text: String(f.name) }), h('span', { class: 'folder-count', text: pictures(f.images) })),
        ),
      ),
    );
    if (!folders.length) list.append(h('li', { class: 'hint', text: listing.path ? 'No folders inside.' : 'No folder may be added from here.' }));
    if (listing.truncated) list.append(h('li', { class: 'hint', text: 'Not every folder is listed: type the path of one that is not.' }));
  }

  open.addEventListener('click', () => {
    const opening = box.hidden;
    box.hidden = !opening;
    open.setAttribute('aria-expanded', opening ? 'true' : 'false');
    if (opening) show(null);
  });
  // up from a root's own folder goes back to the list of roots
  up.addEventListener('click', () => {
    if (shown?.path) show(shown.parent);
  });
  choose.addEventListener('click', () => {
    if (!shown?.path) return;
    input.value = shown.path;
    box.hidden = true;
    open.setAttribute('aria-expanded', 'false');
    input.focus();
  });
}
