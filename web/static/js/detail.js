// @ts-check
// The detail view: one image as large as the view allows (a preview for formats browsers cannot
// show and for very large originals), its facts, the text read in it, "more like this" (a strip,
// a search, or a search with words), stepping through the grid, and removing the image.

import { api, fileUrl, messageOf, previewUrl, thumbUrl } from './api.js';
import { h, els } from './dom.js';
import { focusTile, loadPage, renderEmpty, rerenderGrid, run } from './grid.js';
import { leaveDetail, removeItems, setDetailIndex, setQuery, showInDetail, state } from './store.js';
import { reasonsInWords, showDetailText } from './text.js';
import { baseName, formatBytes, formatDate, formatScore, idPath, queryString, wantsPreview } from './util.js';

/** @typedef {import('./util.js').Item} Item */

const SIMILAR_STRIP = 12; // thumbnails under "More like this"

/** Hooks: the footer's counts after a removal (app.js wires it). */
export const detailHooks = { refreshHealth: () => {} };

/**
 * Open the detail view on the grid's tile `index`.
 * @param {number} index
 */
export function openDetail(index) {
  const item = state.items[index];
  if (item) showDetail(item, index);
}

/**
 * @param {Item} item
 * @param {number | null} [index] its tile (left out: the view keeps its place in the grid)
 */
function showDetail(item, index) {
  const gen = showInDetail(item, index);
  const name = baseName(item.path);
  els.detailTitle.textContent = name;
  els.detailTitle.title = String(item.path ?? '');
  els.detailError.hidden = true;
  // thumbnail at once (cached), the full file when it has arrived
  els.detailImg.alt = name;
  els.detailImg.src = thumbUrl(item);
  els.detailImg.classList.add('preview');
  fitDetailImage(item.width, item.height);
  const usePreview = wantsPreview(item);
  const full = new Image();
  full.addEventListener('load', () => {
    if (gen !== state.detailGen) return;
    els.detailImg.src = full.src;
    els.detailImg.classList.remove('preview');
    fitDetailImage(full.naturalWidth, full.naturalHeight);
  });
  full.addEventListener('error', () => {
    // a preview the server could not render: the original is still one click away
    if (gen !== state.detailGen || !usePreview) return;
    els.detailError.textContent = 'No preview of this image can be shown here: download the original.';
    els.detailError.hidden = false;
  });
  full.src = usePreview ? previewUrl(item) : fileUrl(item);
  els.detailOpen.href = fileUrl(item);
  els.detailOpen.textContent = usePreview ? 'Download original' : 'Open original';
  if (usePreview) els.detailOpen.setAttribute('download', baseName(item.path));
  else els.detailOpen.removeAttribute('download');
  renderMeta(item, null);
  const idx = state.detailIndex;
  els.detailPrev.disabled = idx === null || idx <= 0;
  els.detailNext.disabled = idx === null || (idx >= state.items.length - 1 && state.done);
  if (!els.detail.open) els.detail.showModal();

  api(`/images/${idPath(item.id)}`)
    .then((info) => {
      if (gen === state.detailGen) renderMeta(item, info);
    })
    .catch((err) => {
      if (gen !== state.detailGen) return;
      els.detailError.textContent = messageOf(err);
      els.detailError.hidden = false;
    });
  showDetailText(api, item, els.detailText, () => gen === state.detailGen);
  loadSimilarStrip(item, gen);
}

/**
 * The detail image keeps its own shape, as large as the view allows (CSS: --ar).
 * @param {unknown} width
 * @param {unknown} height
 */
function fitDetailImage(width, height) {
  const w = Number(width) || 0;
  const ht = Number(height) || 0;
  if (w > 0 && ht > 0) els.detailImg.style.setProperty('--ar', String(w / ht));
  else els.detailImg.style.removeProperty('--ar');
  els.detailImg.classList.toggle('fitted', w > 0 && ht > 0);
}

/**
 * The facts: path, relevance and cosine, size, dimensions, format, date, state, problem.
 * @param {Item} hit what the grid knows
 * @param {Item | null} info GET /api/v1/images/{id}, once it has answered
 */
function renderMeta(hit, info) {
  const src = info || hit;
  /** @type {HTMLElement[]} */
  const rows = [];
  /**
   * @param {string} term
   * @param {unknown} value
   * @param {string} [cls]
   */
  const add = (term, value, cls) => {
    if (value === null || value === undefined || value === '') return;
    rows.push(h('div', { class: cls || null }, h('dt', { text: term }), h('dd', { text: String(value) })));
  };
  add('Path', src.path, 'wide');
  add('Size', info ? formatBytes(info.size) || '—' : '…');
  if (src.width && src.height) add('Dimensions', `${src.width} × ${src.height}`);
  add('Format', src.format ? String(src.format).toUpperCase() : null);
  add('Date', formatDate(src.taken_at) || 'unknown');
  if (info && info.state && info.state !== 'ready') add('State', info.state);
  if (info && info.error) add('Problem', info.error, 'wide');
  els.detailMeta.replaceChildren(...rows);
  renderWhy(hit);
}

/**
 * Why a search result is here, in words ("the words “invoice” read in the picture, and it looks
 * like what you described: strong"), with the numbers one click away; nothing when browsing.
 * @param {Item} hit
 */
function renderWhy(hit) {
  const mode = state.query.mode;
  if (mode === 'browse' || typeof hit.score !== 'number') {
    els.detailWhy.hidden = true;
    els.detailWhy.replaceChildren();
    return;
  }
  const reasons = reasonsInWords(hit, mode);
  if (!reasons.length) reasons.push('it is among the closest pictures');
  const numbers = h(
    'dl',
    { class: 'meta why-numbers' },
    typeof hit.relevance === 'number' ? h('div', {}, h('dt', { text: 'Relevance' }), h('dd', { text: formatScore(hit.relevance) })) : null,
    h('div', {}, h('dt', { text: 'Score (cosine)' }), h('dd', { text: formatScore(hit.score) })),
  );
  els.detailWhy.replaceChildren(
    h('div', { class: 'why-text' }, h('strong', { text: 'Why it is here' }), h('ul', {}, reasons.map((r) => h('li', { text: r })))),
    h('details', { class: 'why-details' }, h('summary', { text: 'The numbers' }), numbers),
  );
  els.detailWhy.hidden = false;
}

/**
 * The strip of similar images under the picture; a click shows one in the view.
 * @param {Item} item
 * @param {number} gen the view's generation it belongs to
 */
async function loadSimilarStrip(item, gen) {
  els.similar.replaceChildren();
  els.similarStatus.textContent = 'Looking for similar images…';
  try {
    const data = await api(`/images/${idPath(item.id)}/similar?${queryString({ k: SIMILAR_STRIP + 1, offset: 0 })}`);
    if (gen !== state.detailGen) return;
    /** @type {Item[]} */
    const found = Array.isArray(data?.results) ? data.results : [];
    const results = found.filter((r) => String(r.id) !== String(item.id)).slice(0, SIMILAR_STRIP);
    els.similarStatus.textContent = results.length ? '' : 'Nothing similar in the library yet.';
    els.similar.replaceChildren(
      ...results.map((r) => {
        const name = baseName(r.path);
        const img = h('img', { alt: '', loading: 'lazy', decoding: 'async', width: 96, height: 96 });
        img.src = thumbUrl(r);
        const button = h(
          'button',
          { type: 'button', class: 'strip-btn', 'aria-label': name, title: name },
          img,
        );
        button.dataset.id = String(r.id);
        button.addEventListener('click', () => {
          const at = state.items.findIndex((x) => String(x.id) === String(r.id));
          showDetail(r, at >= 0 ? at : undefined);
        });
        return h('li', {}, button);
      }),
    );
  } catch (err) {
    if (gen !== state.detailGen) return;
    els.similarStatus.textContent = `Could not load similar images: ${messageOf(err)}`;
  }
}

/**
 * The previous (-1) or next (1) tile, loading the next page at the end of the grid.
 * @param {number} delta
 */
export async function stepDetail(delta) {
  if (state.detailIndex === null) return;
  const next = state.detailIndex + delta;
  if (next < 0) return;
  if (next >= state.items.length) {
    if (state.done) return;
    await loadPage();
    if (next >= state.items.length) return;
  }
  openDetail(next);
}

/**
 * "More like this" from the detail view, with words or without.
 * @param {string} [text]
 */
function searchLike(text = '') {
  const item = state.detailItem;
  if (!item) return;
  setDetailIndex(null);
  els.detail.close();
  els.q.value = '';
  setQuery({ mode: 'similar', likeId: String(item.id), likeName: baseName(item.path), likeThumb: thumbUrl(item), likeText: text });
  run({ push: true });
}

async function removeShown() {
  const item = state.detailItem;
  if (!item) return;
  const name = baseName(item.path);
  if (!window.confirm(`Remove “${name}” from the library? It will no longer appear in searches.`)) return;
  try {
    await api(`/images/${idPath(item.id)}`, { method: 'DELETE' });
  } catch (err) {
    els.detailError.textContent = messageOf(err);
    els.detailError.hidden = false;
    return;
  }
  const index = state.items.findIndex((x) => String(x.id) === String(item.id));
  if (index >= 0) {
    removeItems([item.id]);
    rerenderGrid();
  }
  const back = index >= 0 ? Math.min(index, state.items.length - 1) : -1;
  setDetailIndex(back >= 0 ? back : null);
  els.detail.close();
  els.status.textContent = `Removed ${name} from the library.`;
  renderEmpty();
  detailHooks.refreshHealth();
}

export function initDetail() {
  els.detail.addEventListener('close', () => {
    leaveDetail(); // drop late answers
    els.detailImg.removeAttribute('src');
    if (state.detailIndex !== null) focusTile(state.detailIndex);
  });
  // a click on the backdrop (outside the dialog box) closes it
  els.detail.addEventListener('click', (event) => {
    if (event.target === els.detail) els.detail.close();
  });
  els.detailClose.addEventListener('click', () => els.detail.close());
  els.detailPrev.addEventListener('click', () => stepDetail(-1));
  els.detailNext.addEventListener('click', () => stepDetail(1));
  els.detailSimilar.addEventListener('click', () => searchLike());
  els.detailDelete.addEventListener('click', () => removeShown());
  els.similarRefine.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = els.similarText.value.trim().slice(0, 500);
    if (text) searchLike(text);
  });
}
