// @ts-check
// What to search for: the query box (a burst of typing is one history entry), the chip of an
// image search or "more like this", a search by an image (chosen, dropped or pasted), the
// relevance slider, the sort menu and the query language picker.

import { api, apiUrl, thumbUrl } from './api.js';
import { els, h } from './dom.js';
import { langsOf, pickLang } from './lang.js';
import { run, showError } from './grid.js';
import { cutShown, describeLike, setCut, setLang, setLangs, setQuery, setSort, state, subscribe } from './store.js';
import { syncUrl } from './url.js';
import { baseName, debounce, idPath, safeUrl } from './util.js';

/** @typedef {import('./store.js').Sort} Sort */

const DEBOUNCE_MS = 250;
const TYPING_BURST_MS = 2000; // commits closer than this while typing share one history entry
const IMAGES_KEPT = 20; // image searches back/forward can return to

/** @type {Map<string, File>} history key -> File, so back/forward can return to an image search */
const imageFiles = new Map();
let imageSeq = 0;
let lastTypingCommit = 0;
let sliding = false; // the slider moved and its search has not started yet
let languagesAfterSignIn = false;

// --- the query ----------------------------------------------------------------------------------

/**
 * "More like this" of an image; a shared link's gives only the id: its name is fetched.
 * @param {string} id
 * @param {string} [name]
 * @param {string} [thumb]
 * @param {string} [text] "... but with text"
 */
export function likeQuery(id, name, thumb, text = '') {
  const likeId = String(id);
  setQuery({ mode: 'similar', likeId, likeName: name || '', likeThumb: thumb || apiUrl(`/images/${idPath(id)}/thumbnail`), likeText: text });
  if (name) return;
  api(`/images/${idPath(id)}`)
    .then((info) => describeLike(likeId, baseName(info.path), thumbUrl(info)))
    .catch(() => {
      /* the search itself reports a missing image */
    });
}

/**
 * Search by an image file (its history key: back/forward return to it).
 * @param {File} file
 * @param {string} key
 */
function imageQuery(file, key) {
  const same = state.query.imageFile === file && state.query.imageUrl;
  const imageUrl = same ? /** @type {string} */ (state.query.imageUrl) : URL.createObjectURL(file);
  setQuery({ mode: 'image', imageFile: file, imageKey: key, imageUrl });
}

/**
 * The image search of a history entry, when this page still holds its file.
 * @param {unknown} key
 */
export function restoreImageQuery(key) {
  const file = typeof key === 'string' ? imageFiles.get(key) : undefined;
  if (!file || typeof key !== 'string') return false;
  imageQuery(file, key);
  return true;
}

/** @param {File} file */
function searchByImage(file) {
  if (file.type && !file.type.startsWith('image/')) {
    showError(`“${file.name}” is not an image. Drop or choose a JPEG, PNG, WebP or GIF file.`);
    return;
  }
  imageSeq += 1;
  const key = `img-${Date.now()}-${imageSeq}`;
  imageFiles.set(key, file);
  while (imageFiles.size > IMAGES_KEPT) imageFiles.delete(/** @type {string} */ (imageFiles.keys().next().value));
  els.q.value = '';
  imageQuery(file, key);
  run({ push: true });
}

/** @param {{ fromTyping: boolean }} options */
function commitText({ fromTyping }) {
  const q = els.q.value.trim();
  if (q) {
    if (state.query.mode === 'text' && state.query.q === q) return;
    setQuery({ mode: 'text', q });
  } else {
    if (state.query.mode !== 'text') return; // clearing the box keeps an image/similar search
    setQuery({ mode: 'browse' });
  }
  let push = true;
  if (fromTyping) {
    const now = Date.now();
    push = now - lastTypingCommit > TYPING_BURST_MS;
    lastTypingCommit = now;
  }
  run({ push });
}

export const typed = debounce(() => commitText({ fromTyping: true }), DEBOUNCE_MS);

function renderChip() {
  const { mode, imageUrl, imageFile, likeThumb, likeName, likeText } = state.query;
  if (mode === 'image') {
    els.chip.hidden = false;
    els.chipImg.src = imageUrl || '';
    els.chipLabel.textContent = `Like ${imageFile?.name || 'your image'}`;
    els.chipClear.setAttribute('aria-label', 'Stop searching by this image');
    els.q.placeholder = 'Or describe a photo…';
  } else if (mode === 'similar') {
    els.chip.hidden = false;
    els.chipImg.src = safeUrl(likeThumb) || '';
    els.chipLabel.textContent = (likeName ? `Like ${likeName}` : 'Similar images') + (likeText ? `, with “${likeText}”` : '');
    els.chipClear.setAttribute('aria-label', 'Stop showing similar images');
    els.q.placeholder = 'Or describe a photo…';
  } else {
    els.chip.hidden = true;
    els.chipImg.removeAttribute('src');
    els.q.placeholder = 'Describe a photo…  ( / )';
  }
}

// --- the relevance cut --------------------------------------------------------------------------

/** @param {number} value */
function renderCutValue(value) {
  els.minScoreValue.textContent = value > 0 ? value.toFixed(2) : 'any';
  els.minScore.setAttribute('aria-valuetext', value > 0 ? `at least ${value.toFixed(2)}` : 'any relevance');
}

/** The slider shows the cut in force: the user's, else the one the server applied. */
function renderCut() {
  if (sliding) return; // the user's hand is on it
  const value = cutShown();
  els.minScore.value = String(value);
  renderCutValue(value);
}

const thresholdChanged = debounce(() => {
  sliding = false;
  const value = Number.parseFloat(els.minScore.value) || 0;
  if (value === cutShown()) return;
  setCut(value);
  if (state.query.mode === 'browse') {
    syncUrl(false);
    return; // the library listing has no scores; the threshold applies to the next search
  }
  run();
}, DEBOUNCE_MS);

// --- the query language -------------------------------------------------------------------------

/**
 * Use `code` (from a link or the picker) as the query language, where the model knows it.
 * @param {unknown} code
 */
export function applyLang(code) {
  setLang(pickLang(code, state.langs));
}

/** Ask the server which query languages its model reads; the picker is shown for several. */
export async function loadLanguages() {
  let info;
  try {
    info = await api('/search/languages', { ask: false });
  } catch (err) {
    // not signed in yet: asked again once a page has loaded (the first request asks for the
    // token); otherwise unknown (model unavailable): no picker, a link's `lang` is sent as is
    languagesAfterSignIn = /** @type {{ status?: unknown }} */ (err)?.status === 401;
    return;
  }
  const langs = langsOf(info);
  setLangs(langs);
  if (!langs) {
    els.langPicker.hidden = true;
    return;
  }
  const sorted = [...langs.codes].sort((a, b) => (langs.names.get(a) ?? a).localeCompare(langs.names.get(b) ?? b));
  els.lang.replaceChildren(...sorted.map((code) => h('option', { value: code, title: code }, langs.names.get(code))));
  els.langPicker.hidden = false;
}

/** After a page loaded: the languages, when they were refused before signing in. */
export function afterPage() {
  if (!languagesAfterSignIn) return;
  languagesAfterSignIn = false;
  loadLanguages().then(() => {
    // what the page searched with: the link's code, else the model's default
    applyLang(state.lang ?? (state.langs ? state.langs.default : null));
    syncUrl(false);
  });
}

// --- wiring -------------------------------------------------------------------------------------

export function initSearch() {
  subscribe((change) => {
    if (change === 'query') renderChip();
    else if (change === 'cut') renderCut();
    else if (change === 'sort') els.sort.value = state.sort;
    else if (change === 'lang' && state.langs && state.lang && els.lang.value !== state.lang) els.lang.value = state.lang;
  });

  els.q.addEventListener('input', typed);
  els.form.addEventListener('submit', (event) => {
    event.preventDefault();
    typed.cancel();
    lastTypingCommit = 0;
    commitText({ fromTyping: false });
  });
  els.chipClear.addEventListener('click', () => {
    setQuery({ mode: 'browse' });
    run({ push: true });
    els.q.focus();
  });

  els.minScore.addEventListener('input', () => {
    sliding = true;
    renderCutValue(Number.parseFloat(els.minScore.value) || 0);
    thresholdChanged();
  });
  els.hiddenShow.addEventListener('click', () => {
    setCut(0);
    run({ push: true });
  });
  els.sort.addEventListener('change', () => {
    const value = els.sort.value;
    setSort(value === 'date_desc' || value === 'date_asc' ? value : 'relevance');
    run({ push: true });
  });
  els.lang.addEventListener('change', () => {
    applyLang(els.lang.value);
    if (state.query.mode === 'text' || (state.query.mode === 'similar' && state.query.likeText)) {
      run({ push: true });
    } else {
      syncUrl(true); // kept for the next text search (and in a shared link)
    }
  });

  els.fileInput.addEventListener('change', () => {
    const file = els.fileInput.files && els.fileInput.files[0];
    if (file) searchByImage(file);
    els.fileInput.value = '';
  });
  /** @param {DragEvent} event */
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes('Files');
  let dragDepth = 0;
  window.addEventListener('dragenter', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    els.dropOverlay.hidden = false;
  });
  window.addEventListener('dragover', (event) => {
    if (!hasFiles(event) || !event.dataTransfer) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  window.addEventListener('dragleave', (event) => {
    if (!hasFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) els.dropOverlay.hidden = true;
  });
  window.addEventListener('drop', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    els.dropOverlay.hidden = true;
    const files = Array.from(event.dataTransfer?.files || []);
    const file = files.find((f) => f.type.startsWith('image/')) || files[0];
    if (file) searchByImage(file);
  });
  document.addEventListener('paste', (event) => {
    const files = Array.from(event.clipboardData?.files || []);
    const file = files.find((f) => f.type.startsWith('image/'));
    if (file) {
      event.preventDefault();
      searchByImage(file);
    }
  });
}
