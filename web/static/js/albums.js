// @ts-check
// The "Albums" view: the library's albums (GET /api/v1/albums), a new one (POST /api/v1/albums: with
// words, a smart album that fills itself from that search; without, a hand-picked one), and an
// opened album's pictures page by page (GET /api/v1/albums/{album}/images, cursor `next_after`),
// each with Pin (always shown) and Exclude (never shown), or Remove in a hand-picked album
// (POST /api/v1/albums/{album}/images), and a link to its zip (GET .../export.zip). A smart album
// is computed by a job on the server: until then it shows "being computed". Everything from
// the API is shown as text. Its dialog is built here; index.html only has its button.

import { api, apiUrl, messageOf, thumbUrl } from './api.js';
import { byId, h } from './dom.js';
import { baseName, idPath } from './util.js';

/**
 * @typedef {object} Album
 * @property {number} id
 * @property {string} name
 * @property {'manual' | 'smart'} kind
 * @property {number} size pictures it shows
 * @property {number} pinned
 * @property {number} excluded
 * @property {string | null} [computed_at]
 */
/**
 * @typedef {object} AlbumPage
 * @property {Album} album
 * @property {{ image: import('./util.js').Item, state: string }[]} items
 * @property {number | null} [next_after]
 */

const PAGE = 60;

/** @param {Album} a */
function describe(a) {
  const n = `${a.size} picture${a.size === 1 ? '' : 's'}`;
  if (a.kind === 'manual') return `${a.name}: ${n}`;
  if (!a.computed_at) return `${a.name}: smart, being computed`;
  const extra = [a.pinned ? `${a.pinned} pinned` : '', a.excluded ? `${a.excluded} excluded` : ''].filter(Boolean);
  return `${a.name}: smart, ${n}${extra.length ? `, ${extra.join(', ')}` : ''}`;
}

/** The albums view's dialog (built once). */
function buildDialog() {
  const dialog = h(
    'dialog',
    { id: 'albums-view', class: 'removed-view albums-view', 'aria-labelledby': 'albums-title' },
    h(
      'div',
      { class: 'detail-head' },
      h('h2', { id: 'albums-title', text: 'Albums' }),
      h('button', { id: 'albums-close', type: 'button', class: 'chip-clear', 'aria-label': 'Close albums', text: '×' }),
    ),
    h('p', { id: 'albums-error', class: 'form-error', role: 'alert', hidden: true }),
    h(
      'form',
      { id: 'album-new', class: 'album-new', autocomplete: 'off' },
      h('label', { for: 'album-name', text: 'New album' }),
      h('input', { id: 'album-name', type: 'text', maxlength: '128', required: true, placeholder: 'Name' }),
      h('input', { id: 'album-query', type: 'search', maxlength: '1000', placeholder: 'Fills itself with… (optional)' }),
      h('button', { type: 'submit', class: 'button small', text: 'Create' }),
    ),
    h('ul', { id: 'albums-list', class: 'tags-list', 'aria-label': 'Albums' }),
    h(
      'section',
      { id: 'album-open', class: 'tags-pictures', hidden: true, 'aria-labelledby': 'album-open-title' },
      h('h3', { id: 'album-open-title' }),
      h('a', { id: 'album-zip', class: 'button ghost small', text: 'Download zip' }),
      h('ul', { id: 'album-pictures', class: 'album-pictures' }),
      h('button', { id: 'album-more', type: 'button', class: 'button ghost small', hidden: true, text: 'More' }),
    ),
  );
  document.body.append(dialog);
  return dialog;
}

/** Wire the Albums view. */
export function initAlbumsView() {
  const dialog = buildDialog();
  const list = byId('albums-list', HTMLUListElement);
  const error = byId('albums-error', HTMLElement);
  const section = byId('album-open', HTMLElement);
  const title = byId('album-open-title', HTMLElement);
  const pictures = byId('album-pictures', HTMLUListElement);
  const more = byId('album-more', HTMLButtonElement);
  const zip = byId('album-zip', HTMLAnchorElement);
  const form = byId('album-new', HTMLFormElement);
  const nameInput = byId('album-name', HTMLInputElement);
  const queryInput = byId('album-query', HTMLInputElement);
  /** @type {{ album: Album, after: number | null } | null} */
  let open = null;

  /** @param {string} message */
  const showError = (message) => {
    error.textContent = message;
    error.hidden = !message;
  };

  /**
   * Pin, exclude or remove one picture of the open album, then show the album again.
   * @param {number | string} imageId
   * @param {string} action
   */
  async function change(imageId, action) {
    if (!open) return;
    showError('');
    try {
      await api(`/albums/${encodeURIComponent(String(open.album.id))}/images`, {
        method: 'POST',
        json: { action, ids: [Number(imageId)] },
      });
      await openAlbum(open.album);
      loadAlbums();
    } catch (err) {
      showError(messageOf(err));
    }
  }

  /**
   * @param {import('./util.js').Item} image
   * @param {string} memberState
   */
  function row(image, memberState) {
    const name = baseName(image.path);
    /** @type {HTMLButtonElement[]} */
    const buttons = [];
    /**
     * @param {string} label
     * @param {string} action
     */
    const button = (label, action) => {
      const b = h('button', { type: 'button', class: 'button ghost small', text: label, 'data-album-action': action });
      b.setAttribute('aria-label', `${label} ${name}`);
      b.addEventListener('click', () => change(image.id, action));
      buttons.push(b);
    };
    if (open?.album.kind === 'smart') {
      if (memberState !== 'pinned') button('Pin', 'pin');
      else button('Unpin', 'auto');
      button('Exclude', 'exclude');
    } else {
      button('Remove', 'remove');
    }
    return h(
      'li',
      { 'data-image-id': String(image.id), 'data-state': memberState },
      h('img', { src: thumbUrl(image), alt: name, loading: 'lazy' }),
      h('span', { class: 'album-picture-name', text: memberState === 'pinned' && open?.album.kind === 'smart' ? `${name} (pinned)` : name }),
      buttons,
    );
  }

  /**
   * @param {Album} album
   * @param {boolean} [next] the next page of the open album
   */
  async function openAlbum(album, next = false) {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (next && open && open.after !== null) params.set('after', String(open.after));
    try {
      /** @type {AlbumPage} */
      const page = await api(`/albums/${encodeURIComponent(String(album.id))}/images?${params}`);
      open = { album: page.album, after: page.next_after ?? null };
      if (!next) pictures.replaceChildren();
      pictures.append(...page.items.map((i) => row(i.image, i.state)));
      more.hidden = open.after === null;
      title.textContent = describe(page.album);
      zip.href = apiUrl(`/albums/${idPath(page.album.id)}/export.zip`);
      zip.setAttribute('download', `${page.album.name}.zip`);
      section.hidden = false;
    } catch (err) {
      showError(messageOf(err));
    }
  }

  async function loadAlbums() {
    try {
      /** @type {Album[]} */
      const albums = await api('/albums');
      list.replaceChildren(
        ...albums.map((a) => {
          const b = h('button', { type: 'button', class: 'button ghost small', 'data-album': a.name, text: describe(a) });
          b.addEventListener('click', () => openAlbum(a));
          return h('li', {}, b);
        }),
      );
      if (!albums.length) list.append(h('li', { class: 'hint', text: 'No albums yet.' }));
    } catch (err) {
      showError(messageOf(err));
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    showError('');
    const text = queryInput.value.trim();
    try {
      /** @type {Album} */
      const made = await api('/albums', {
        method: 'POST',
        json: text ? { name: nameInput.value, query: { text } } : { name: nameInput.value },
      });
      form.reset();
      await loadAlbums();
      openAlbum(made);
    } catch (err) {
      showError(messageOf(err));
    }
  });
  byId('albums-toggle', HTMLButtonElement).addEventListener('click', () => {
    dialog.showModal();
    section.hidden = true;
    open = null;
    showError('');
    loadAlbums();
  });
  byId('albums-close', HTMLButtonElement).addEventListener('click', () => dialog.close());
  more.addEventListener('click', () => {
    if (open) openAlbum(open.album, true);
  });
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close();
  });
}
