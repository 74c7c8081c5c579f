// @ts-check
// The "Tags" view and the tags of the picture in the detail view. Tags are defined in words and
// assigned by the server (GET /api/v1/tags: each with how many pictures have it); opening a tag
// pages its pictures (GET /api/v1/tags/{tag}/images, cursor `next_after`). In the detail view the
// picture's tags (GET /api/v1/images/{id}/tags) show with Confirm / Reject (PUT
// /api/v1/tags/{tag}/images/{id}): a rejection is never undone by a later tagging run. Everything
// from the API is shown as text. Its dialog is built here; index.html only has its button.

import { api, messageOf, thumbUrl } from './api.js';
import { byId, h } from './dom.js';
import { state, subscribe } from './store.js';
import { baseName, idPath } from './util.js';

/**
 * @typedef {object} Tag
 * @property {number} id
 * @property {string} name
 * @property {string[]} [descriptions]
 * @property {string | null} [group]
 * @property {number} assigned pictures with the tag
 */
/**
 * @typedef {object} ImageTag
 * @property {number} tag_id
 * @property {string} name
 * @property {number | null} [score]
 * @property {string} state auto | confirmed | rejected
 */
/**
 * @typedef {object} TagPage
 * @property {Tag} tag
 * @property {{ image: import('./util.js').Item, state: string }[]} items
 * @property {number | null} [next_after]
 */

const PAGE = 60;

/** The tags view's dialog (built once). */
function buildDialog() {
  const dialog = h(
    'dialog',
    { id: 'tags-view', class: 'removed-view tags-view', 'aria-labelledby': 'tags-title' },
    h(
      'div',
      { class: 'detail-head' },
      h('h2', { id: 'tags-title', text: 'Tags' }),
      h('button', { id: 'tags-close', type: 'button', class: 'chip-clear', 'aria-label': 'Close tags', text: '×' }),
    ),
    h('p', { id: 'tags-error', class: 'form-error', role: 'alert', hidden: true }),
    h('ul', { id: 'tags-list', class: 'tags-list', 'aria-label': 'Tags' }),
    h(
      'section',
      { id: 'tags-pictures', class: 'tags-pictures', hidden: true, 'aria-labelledby': 'tags-pictures-title' },
      h('h3', { id: 'tags-pictures-title' }),
      h('ul', { id: 'tags-strip', class: 'strip' }),
      h('button', { id: 'tags-more', type: 'button', class: 'button ghost small', hidden: true, text: 'More' }),
    ),
  );
  document.body.append(dialog);
  return dialog;
}

/**
 * A picture's tags in the detail view, with Confirm / Reject.
 * @param {HTMLElement} box
 * @param {import('./util.js').Item} item
 * @param {() => boolean} current whether the detail view still shows this picture
 */
async function showImageTags(box, item, current) {
  box.replaceChildren();
  box.hidden = true;
  /** @type {ImageTag[]} */
  let found;
  try {
    found = await api(`/images/${idPath(item.id)}/tags`);
  } catch {
    return; // no tags to show (the picture left, or tags are not reachable)
  }
  if (!current()) return;
  const rows = found.map((t) => {
    const label = t.state === 'confirmed' ? `${t.name} ✓` : t.state === 'rejected' ? `${t.name} (rejected)` : t.name;
    /** @param {string} wanted */
    const decide = async (wanted) => {
      try {
        await api(`/tags/${encodeURIComponent(String(t.tag_id))}/images/${idPath(item.id)}`, {
          method: 'PUT',
          json: { state: wanted },
        });
        if (current()) showImageTags(box, item, current);
      } catch (err) {
        box.append(h('p', { class: 'form-error', role: 'alert', text: messageOf(err) }));
      }
    };
    const confirm = h('button', { type: 'button', class: 'button ghost small', text: 'Confirm', 'data-tag-action': 'confirmed' });
    confirm.setAttribute('aria-label', `Confirm the tag ${t.name}`);
    confirm.addEventListener('click', () => decide('confirmed'));
    const reject = h('button', { type: 'button', class: 'button ghost small', text: 'Reject', 'data-tag-action': 'rejected' });
    reject.setAttribute('aria-label', `Reject the tag ${t.name}`);
    reject.addEventListener('click', () => decide('rejected'));
    return h(
      'li',
      { class: `image-tag ${t.state}`, 'data-tag': t.name, 'data-state': t.state },
      h('span', { class: 'tag-name', text: label }),
      t.state === 'confirmed' ? null : confirm,
      t.state === 'rejected' ? null : reject,
    );
  });
  box.append(h('h3', { text: 'Tags' }), rows.length ? h('ul', { class: 'image-tags' }, rows) : h('p', { class: 'hint', text: 'No tags yet.' }));
  box.hidden = false;
}

/** Wire the Tags view and the detail view's tags. */
export function initTagsView() {
  const dialog = buildDialog();
  const list = byId('tags-list', HTMLUListElement);
  const error = byId('tags-error', HTMLElement);
  const section = byId('tags-pictures', HTMLElement);
  const title = byId('tags-pictures-title', HTMLElement);
  const strip = byId('tags-strip', HTMLUListElement);
  const more = byId('tags-more', HTMLButtonElement);
  /** @type {{ tag: Tag, after: number | null } | null} */
  let open = null;

  /** @param {string} message */
  const showError = (message) => {
    error.textContent = message;
    error.hidden = !message;
  };

  /** @param {boolean} reset */
  async function loadPictures(reset) {
    if (!open) return;
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (!reset && open.after !== null) params.set('after', String(open.after));
    try {
      /** @type {TagPage} */
      const page = await api(`/tags/${encodeURIComponent(String(open.tag.id))}/images?${params}`);
      if (reset) strip.replaceChildren();
      strip.append(
        ...page.items.map(({ image }) =>
          h('li', { 'data-image-id': String(image.id) }, h('img', { src: thumbUrl(image), alt: baseName(image.path), loading: 'lazy' })),
        ),
      );
      open.after = page.next_after ?? null;
      more.hidden = open.after === null;
      title.textContent = `${page.tag.name}: ${page.tag.assigned} picture${page.tag.assigned === 1 ? '' : 's'}`;
      section.hidden = false;
    } catch (err) {
      showError(messageOf(err));
    }
  }

  async function loadTags() {
    showError('');
    try {
      /** @type {Tag[]} */
      const tags = await api('/tags');
      list.replaceChildren(
        ...tags.map((t) => {
          const button = h('button', { type: 'button', class: 'button ghost small', 'data-tag': t.name }, `${t.name} (${t.assigned})`);
          button.title = (t.descriptions || []).join('; ');
          button.addEventListener('click', () => {
            open = { tag: t, after: null };
            loadPictures(true);
          });
          return h('li', {}, button);
        }),
      );
    } catch (err) {
      showError(messageOf(err));
    }
  }

  byId('tags-toggle', HTMLButtonElement).addEventListener('click', () => {
    dialog.showModal();
    section.hidden = true;
    loadTags();
  });
  byId('tags-close', HTMLButtonElement).addEventListener('click', () => dialog.close());
  more.addEventListener('click', () => loadPictures(false));
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close();
  });

  // the detail view: the shown picture's tags, under its facts
  const side = document.querySelector('#detail .detail-side');
  const box = h('section', { id: 'detail-tags', class: 'detail-tags', 'aria-label': 'Tags of this picture', hidden: true });
  side?.querySelector('.detail-actions')?.before(box);
  subscribe((change) => {
    if (change !== 'detail' || !state.detailItem) return;
    const gen = state.detailGen;
    showImageTags(box, state.detailItem, () => gen === state.detailGen);
  });
}
