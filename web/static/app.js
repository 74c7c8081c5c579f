// clipsearch gallery: plain ES module, no framework, no build step. Talks only to the REST API
// (docs/ARCHITECTURE.md). Everything the API returns is treated as untrusted text: the DOM is
// built with createElement/textContent only, and URLs are accepted only when same-origin.

import { initFolders } from './folders.js';
import { initDuplicatesView } from './duplicates.js';
import { initRemovedView } from './removed.js';
import { matchBadge, matchSummary, showDetailText } from './text.js';

const PAGE = 40; // tiles per request (infinite scroll)
const SIMILAR_STRIP = 12; // thumbnails under "More like this"
const IMAGE_OFFSET_MAX = 2000; // an image search stops paging here (each page re-sends the upload)
const DEBOUNCE_MS = 250;
const TYPING_BURST_MS = 2000; // commits closer than this while typing share one history entry
const JOB_POLL_MS = 1000;
const JOB_IDLE_POLL_MS = 5000;
const JOB_BACKGROUND_POLL_MS = 10000; // panel closed, nothing running: watched folders may change
const SCROLL_MARGIN_PX = 800;
const FORMATS = ['JPEG', 'PNG', 'WEBP', 'GIF', 'BMP', 'TIFF', 'HEIF']; // the catalog's (Pillow's) names
// The detail view shows a preview (GET /api/images/{id}/preview, a JPEG of at most 2048 px) for
// formats browsers cannot display, and for originals too large to load quickly.
const PREVIEW_FORMATS = new Set(['TIFF', 'HEIF']);
const PREVIEW_OVER_SIDE = 4096; // pixels, the longest side
const PREVIEW_OVER_BYTES = 12 * 1024 * 1024;
const DAY = /^\d{4}-\d{2}-\d{2}$/; // a date input's value
const LANG_CODE = /^[a-z]{3}_[A-Z][a-z]{3}$/; // a FLORES-200 code: fra_Latn, jpn_Jpan

const $ = (id) => document.getElementById(id);
const els = {
  form: $('search-form'),
  q: $('q'),
  langPicker: $('lang-picker'),
  lang: $('lang'),
  fileInput: $('file-input'),
  chip: $('query-chip'),
  chipImg: $('query-chip-img'),
  chipLabel: $('query-chip-label'),
  chipClear: $('query-chip-clear'),
  minScore: $('min-score'),
  filtersToggle: $('filters-toggle'),
  filtersBadge: $('filters-badge'),
  filters: $('filters'),
  filterFolder: $('filter-folder'),
  filterFrom: $('filter-from'),
  filterTo: $('filter-to'),
  filterFormats: Array.from(document.querySelectorAll('#filters input[name="format"]')),
  filtersReset: $('filters-reset'),
  filtersNote: $('filters-note'),
  minScoreValue: $('min-score-value'),
  status: $('status'),
  error: $('error'),
  errorText: $('error-text'),
  errorRetry: $('error-retry'),
  errorClose: $('error-close'),
  results: $('results'),
  empty: $('empty'),
  emptyTitle: $('empty-title'),
  emptyText: $('empty-text'),
  emptyAction: $('empty-action'),
  sentinel: $('sentinel'),
  spinner: $('spinner'),
  loadMore: $('load-more'),
  footer: $('footer'),
  ingestToggle: $('ingest-toggle'),
  jobsBadge: $('jobs-badge'),
  panel: $('ingest-panel'),
  panelClose: $('ingest-close'),
  ingestForm: $('ingest-form'),
  ingestPath: $('ingest-path'),
  ingestRecursive: $('ingest-recursive'),
  ingestSubmit: $('ingest-submit'),
  ingestError: $('ingest-error'),
  reindex: $('reindex'),
  jobs: $('jobs'),
  jobsEmpty: $('jobs-empty'),
  detail: $('detail'),
  detailImg: $('detail-img'),
  detailTitle: $('detail-title'),
  detailClose: $('detail-close'),
  detailPrev: $('detail-prev'),
  detailNext: $('detail-next'),
  detailMeta: $('detail-meta'),
  detailError: $('detail-error'),
  detailOpen: $('detail-open'),
  detailSimilar: $('detail-similar'),
  detailDelete: $('detail-delete'),
  similar: $('similar'),
  similarStatus: $('similar-status'),
  sort: $('sort'),
  hiddenNote: $('hidden-note'),
  hiddenText: $('hidden-text'),
  hiddenShow: $('hidden-show'),
  similarRefine: $('similar-refine'),
  similarText: $('similar-text'),
  tokenDialog: $('token-dialog'),
  tokenForm: $('token-form'),
  tokenReason: $('token-reason'),
  tokenInput: $('token-input'),
  tokenCancel: $('token-cancel'),
  dropOverlay: $('drop-overlay'),
};

// ---------------------------------------------------------------------------------------------
// small helpers

/** Build an element. Strings among the children become text nodes (never parsed as HTML). */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

/** A same-origin URL from the API, or null (refuses javascript:, data:, other hosts). */
function safeUrl(value) {
  if (typeof value !== 'string' || value === '') return null;
  try {
    const url = new URL(value, window.location.href);
    if (url.origin !== window.location.origin) return null;
    return url.pathname + url.search;
  } catch {
    return null;
  }
}

const idPath = (id) => encodeURIComponent(String(id));
const thumbUrl = (item) => safeUrl(item.thumbnail_url) || `/api/images/${idPath(item.id)}/thumbnail`;
const fileUrl = (item) => safeUrl(item.file_url) || `/api/images/${idPath(item.id)}/file`;
const previewUrl = (item) => safeUrl(item.preview_url) || `/api/images/${idPath(item.id)}/preview`;

/** Whether the detail view shows the preview rather than the original file. */
function wantsPreview(item) {
  if (PREVIEW_FORMATS.has(String(item.format ?? '').toUpperCase())) return true;
  if (Math.max(Number(item.width) || 0, Number(item.height) || 0) > PREVIEW_OVER_SIDE) return true;
  return (Number(item.size) || 0) > PREVIEW_OVER_BYTES;
}

function baseName(path) {
  const text = String(path ?? '');
  // POSIX paths split on '/'; a Windows server's paths (no '/') on '\\'
  const parts = text.split(text.includes('/') ? '/' : '\\');
  return parts[parts.length - 1] || text || 'image';
}

function formatBytes(bytes) {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes)) return null;
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function formatDate(value) {
  if (!value) return null;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(date);
}

const formatScore = (score) => (typeof score === 'number' ? score.toFixed(2) : null);
const clamp = (value, lo, hi) => Math.min(hi, Math.max(lo, value));

function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

// ---------------------------------------------------------------------------------------------
// API access: JSON errors are {"detail": ...}; 401 asks for the token and signs in with it.

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

// The session is an HttpOnly cookie the server sets on sign-in (POST /api/session); the page never
// holds the token. Changes made with the cookie carry its CSRF value (GET /api/session).
let csrf = null;

async function loadSession() {
  try {
    const res = await fetch('api/session', { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    if (!res.ok) return null;
    const info = await res.json();
    csrf = info.csrf || null;
    return info;
  } catch {
    return null;
  }
}

/** Exchange a token for the session cookie; resolves to null on success, else the server's reason. */
async function signIn(token) {
  let res;
  try {
    res = await fetch('api/session', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ token }),
      credentials: 'same-origin',
    });
  } catch {
    return 'Could not reach the clipsearch server.';
  }
  if (!res.ok) return readDetail(res);
  const info = await res.json();
  csrf = info.csrf || null;
  return null;
}

async function readDetail(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  const detail = body && body.detail;
  if (typeof detail === 'string' && detail.trim()) return detail;
  if (Array.isArray(detail) && detail.length) {
    // FastAPI validation errors: [{loc: [...], msg}]
    return detail
      .map((e) => {
        const loc = Array.isArray(e?.loc) ? e.loc.filter((p) => p !== 'body' && p !== 'query').join('.') : '';
        return loc ? `${loc}: ${e?.msg ?? 'invalid'}` : String(e?.msg ?? e);
      })
      .join('; ');
  }
  return `The server answered ${res.status}${res.statusText ? ` ${res.statusText}` : ''}.`;
}

let tokenPrompt = null;

/** Ask for the API token in a modal and sign in with it; resolves to true when signed in. */
function askToken(reason) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const listeners = new AbortController();
    const finish = (value) => {
      listeners.abort();
      tokenPrompt = null;
      if (els.tokenDialog.open) els.tokenDialog.close();
      resolve(value);
    };
    els.tokenReason.textContent = reason;
    els.tokenInput.value = '';
    els.tokenForm.addEventListener(
      'submit',
      async (event) => {
        event.preventDefault();
        const value = els.tokenInput.value.trim();
        if (!value) return;
        const problem = await signIn(value);
        if (problem) {
          els.tokenReason.textContent = `That token was not accepted (${problem})`;
          els.tokenInput.value = '';
          return;
        }
        finish(true);
      },
      { signal: listeners.signal },
    );
    els.tokenCancel.addEventListener('click', () => finish(false), { signal: listeners.signal });
    els.tokenDialog.addEventListener('cancel', () => finish(false), { signal: listeners.signal });
    els.tokenDialog.showModal();
    els.tokenInput.focus();
  });
  return tokenPrompt;
}

async function api(path, { method = 'GET', json, form, signal, ask = true } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = { Accept: 'application/json' };
    let body;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    } else if (form) {
      body = form;
    }
    if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
    let res;
    try {
      res = await fetch(path, { method, headers, body, signal, credentials: 'same-origin' });
    } catch (err) {
      if (err && err.name === 'AbortError') throw err;
      throw new ApiError(0, 'Could not reach the clipsearch server. Check that it is still running, then try again.');
    }
    if (res.ok) return res.status === 204 ? null : res.json();
    const detail = await readDetail(res);
    if (res.status === 401 && ask && attempt < 3) {
      if (await askToken(detail)) continue;
    }
    if (res.status === 403 && /X-CSRF-Token/.test(detail) && attempt < 1) {
      await loadSession(); // the session was renewed elsewhere: fetch its CSRF value again
      continue;
    }
    throw new ApiError(res.status, detail);
  }
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') search.set(key, String(value));
  }
  return search.toString();
}

// ---------------------------------------------------------------------------------------------
// state: what is shown is a function of (mode, q | like | image, minScore, filters)

const state = {
  mode: 'browse', // browse | text | similar | image
  q: '',
  likeId: null,
  likeName: '',
  likeThumb: null,
  imageFile: null,
  imageKey: null,
  imageUrl: null,
  minScore: 0, // the relevance cut (min_relevance); starts at defaultMin
  defaultMin: 0.5, // the server's gallery_min_relevance (GET /api/health)
  sort: 'relevance', // relevance | date_desc | date_asc (searches and browsing)
  likeText: '', // similar mode: "... but with text"
  lang: null, // the query language (FLORES-200 code); null: the model's own
  // GET /api/search/languages: { default, codes: Set, names: Map, start } for a language-aware
  // model, false for a model that takes no language code, null while not known
  langs: null,
  hidden: null, // what the relevance cut left out (the search's `hidden`), when the results end
  hiddenMore: false,
  browseKey: null, // browse by date: the `next_after_key` cursor
  filters: { folder: '', from: '', to: '', formats: [] }, // narrow searches and browsing
  items: [],
  seen: new Set(),
  offset: 0,
  browseAfter: null, // browse mode: the `next_after` cursor of the last page loaded
  done: false,
  loading: false,
  failed: false,
  total: null,
  tookMs: null,
  gen: 0,
  controller: new AbortController(),
  libraryTotal: null,
  detailIndex: null, // index in items of the tile the detail view belongs to
  detailItem: null,
  detailGen: 0,
};

const imageFiles = new Map(); // history key -> File, so back/forward can return to an image search
let imageSeq = 0;
let lastTypingCommit = 0;

function currentUrl() {
  const params = new URLSearchParams();
  if (state.mode === 'text') params.set('q', state.q);
  if (state.mode === 'similar') params.set('like', String(state.likeId));
  if (state.mode === 'similar' && state.likeText) params.set('with', state.likeText);
  if (langInUrl()) params.set('lang', state.lang);
  if (state.minScore !== state.defaultMin) params.set('min', state.minScore.toFixed(2));
  if (state.sort !== 'relevance') params.set('sort', state.sort);
  const f = state.filters;
  if (f.folder) params.set('folder', f.folder);
  if (f.from) params.set('from', f.from);
  if (f.to) params.set('to', f.to);
  if (f.formats.length) params.set('fmt', f.formats.join(','));
  const text = params.toString();
  return window.location.pathname + (text ? `?${text}` : '');
}

function syncUrl(push) {
  const url = currentUrl();
  const historyState = { imageKey: state.mode === 'image' ? state.imageKey : null };
  const here = window.location.pathname + window.location.search;
  const sameEntry = url === here && (window.history.state?.imageKey ?? null) === historyState.imageKey;
  if (push && !sameEntry) window.history.pushState(historyState, '', url);
  else window.history.replaceState(historyState, '', url);
}

/** Read the mode from the address bar (first load, back/forward). */
function loadFromUrl(historyState) {
  const params = new URLSearchParams(window.location.search);
  const min = Number.parseFloat(params.get('min') ?? '');
  setMinScore(Number.isFinite(min) ? clamp(min, 0, 1) : state.defaultMin);
  const sort = params.get('sort');
  setSort(sort === 'date_desc' || sort === 'date_asc' ? sort : 'relevance');
  setLang(params.get('lang'));
  setFilters(filtersFromParams(params));
  if (filtersActive()) openFilters(false);
  const key = historyState?.imageKey;
  const like = params.get('like');
  const q = (params.get('q') ?? '').trim();
  if (key && imageFiles.has(key)) {
    setImageMode(imageFiles.get(key), key);
  } else if (like) {
    setSimilarMode(like, null, null, (params.get('with') ?? '').trim().slice(0, 500));
  } else if (q) {
    setTextMode(q);
  } else {
    setBrowseMode();
  }
  els.q.value = state.mode === 'text' ? state.q : '';
}

// ---------------------------------------------------------------------------------------------
// query language: a language-aware model (NLLB-SigLIP) reads the query as the chosen FLORES-200
// code (`lang`); the picker is shown only for such a model. Links carry `lang` when it is not
// the model's default (or when this browser's language made the gallery start elsewhere).

/** Put `code` (from the address bar or the picker) into the state and the picker. */
function setLang(code) {
  const langs = state.langs;
  if (langs === false) {
    state.lang = null; // the model takes no language code: a link's `lang` is dropped
    return;
  }
  let next = typeof code === 'string' && LANG_CODE.test(code) ? code : null;
  if (langs && next && !langs.codes.has(next)) next = null; // not a code this model knows
  if (langs && !next) next = langs.start;
  state.lang = next;
  if (langs && els.lang.value !== next) els.lang.value = next;
}

/** The `lang` to send: none for the model's own default (or a model without languages). */
function langParam() {
  if (!state.lang) return null;
  if (state.langs && state.lang === state.langs.default) return null;
  return state.lang;
}

function langInUrl() {
  if (!state.lang || state.langs === false) return false;
  if (!state.langs) return true; // not known (yet): keep what the link said
  return state.lang !== state.langs.default || state.langs.start !== state.langs.default;
}

/** The FLORES-200 code a BCP 47 tag (navigator.language) maps to, when exactly one fits. */
function floresOf(tag, codes) {
  let want;
  try {
    want = new Intl.Locale(tag).maximize();
  } catch {
    return null;
  }
  const fits = [...codes].filter((code) => {
    const [language, script] = code.split('_');
    try {
      return new Intl.Locale(language).language === want.language && script === want.script;
    } catch {
      return false;
    }
  });
  return fits.length === 1 ? fits[0] : null;
}

/** "French", or "Chinese (Traditional)" where a language comes in several scripts. */
function languageNames(codes) {
  let names = null;
  try {
    names = new Intl.DisplayNames([navigator.language, 'en'], { type: 'language' });
  } catch {
    /* no Intl.DisplayNames: the codes themselves */
  }
  const scripts = new Map();
  for (const code of codes) {
    const language = code.split('_')[0];
    scripts.set(language, (scripts.get(language) || 0) + 1);
  }
  const out = new Map();
  for (const code of codes) {
    const [language, script] = code.split('_');
    let name = null;
    try {
      name = names?.of(scripts.get(language) > 1 ? `${language}-${script}` : language) || null;
    } catch {
      name = null;
    }
    out.set(code, name && name !== language ? name : code);
  }
  return out;
}

let languagesAfterSignIn = false;

async function loadLanguages() {
  let info;
  try {
    info = await api('/api/search/languages', { ask: false });
  } catch (err) {
    // not signed in yet: asked again once a page has loaded (the first request asks for the
    // token); otherwise unknown (model unavailable): no picker, a link's `lang` is sent as is
    languagesAfterSignIn = err?.status === 401;
    return;
  }
  const codes = Array.isArray(info?.languages) ? info.languages.filter((c) => LANG_CODE.test(c)) : [];
  if (!info?.language_aware || !codes.length) {
    state.langs = false;
    els.langPicker.hidden = true;
    return;
  }
  const fallback = codes.includes(info.default) ? info.default : codes[0];
  const names = languageNames(codes);
  const start = floresOf(navigator.language, codes) || fallback;
  state.langs = { default: fallback, codes: new Set(codes), names, start };
  const sorted = [...codes].sort((a, b) => names.get(a).localeCompare(names.get(b)));
  els.lang.replaceChildren(...sorted.map((code) => h('option', { value: code, title: code }, names.get(code))));
  els.langPicker.hidden = false;
}

const langName = (code) => state.langs?.names.get(code) || code;

// ---------------------------------------------------------------------------------------------
// filters: folder, capture dates, formats. The API applies them to every search (not to browsing).

function filtersFromParams(params) {
  const day = (value) => (DAY.test(value ?? '') ? value : '');
  const wanted = new Set(
    (params.get('fmt') ?? '')
      .split(',')
      .map((x) => x.trim().toUpperCase())
      .map((x) => ({ JPG: 'JPEG', TIF: 'TIFF', HEIC: 'HEIF' })[x] || x),
  );
  return {
    folder: (params.get('folder') ?? '').trim(),
    from: day(params.get('from')),
    to: day(params.get('to')),
    formats: FORMATS.filter((x) => wanted.has(x)),
  };
}

function filtersFromForm() {
  const from = els.filterFrom.value;
  const to = els.filterTo.value;
  return {
    folder: els.filterFolder.value.trim(),
    from: DAY.test(from) ? from : '',
    to: DAY.test(to) ? to : '',
    formats: els.filterFormats.filter((box) => box.checked).map((box) => box.value),
  };
}

const filterCount = (f = state.filters) => (f.folder ? 1 : 0) + (f.from || f.to ? 1 : 0) + (f.formats.length ? 1 : 0);
const filtersActive = () => filterCount() > 0;
const sameFilters = (a, b) =>
  a.folder === b.folder && a.from === b.from && a.to === b.to && a.formats.join() === b.formats.join();

/** The `filters` object of POST /api/search, or null when none is set. */
function filtersBody() {
  const f = state.filters;
  if (!filtersActive()) return null;
  const body = {};
  if (f.folder) body.folder = f.folder;
  if (f.from) body.date_from = f.from;
  if (f.to) body.date_to = f.to;
  if (f.formats.length) body.formats = [...f.formats];
  return body;
}

/** The filters as query parameters (GET search, search by image, more like this). */
function filtersParams(params) {
  const f = state.filters;
  const search = new URLSearchParams(params);
  if (f.folder) search.set('folder', f.folder);
  if (f.from) search.set('date_from', f.from);
  if (f.to) search.set('date_to', f.to);
  for (const format of f.formats) search.append('format', format);
  return search.toString();
}

function describeFilters() {
  const f = state.filters;
  const parts = [];
  if (f.folder) parts.push(`in ${f.folder}`);
  if (f.from && f.to) parts.push(`taken ${f.from} to ${f.to}`);
  else if (f.from) parts.push(`taken from ${f.from}`);
  else if (f.to) parts.push(`taken until ${f.to}`);
  if (f.formats.length) parts.push(f.formats.map((x) => ({ WEBP: 'WebP', HEIF: 'HEIC' })[x] || x).join(', '));
  return parts.join(' · ');
}

/** Put `filters` into the state and the form (not the other way round). */
function setFilters(filters) {
  state.filters = filters;
  if (els.filterFolder.value.trim() !== filters.folder) els.filterFolder.value = filters.folder;
  els.filterFrom.value = filters.from;
  els.filterTo.value = filters.to;
  for (const box of els.filterFormats) box.checked = filters.formats.includes(box.value);
  renderFilters();
}

function renderFilters() {
  const n = filterCount();
  els.filtersBadge.hidden = n === 0;
  els.filtersBadge.textContent = String(n);
  els.filtersToggle.setAttribute('aria-label', n ? `Filters (${n} active)` : 'Filters');
  els.filtersReset.disabled = n === 0;
  // the pickers refuse a range that ends before it starts
  els.filterFrom.max = state.filters.to || '';
  els.filterTo.min = state.filters.from || '';
  els.filtersNote.hidden = true;
}

function openFilters(focus) {
  els.filters.hidden = false;
  els.filtersToggle.setAttribute('aria-expanded', 'true');
  if (focus) els.filterFolder.focus();
}

function closeFilters() {
  els.filters.hidden = true;
  els.filtersToggle.setAttribute('aria-expanded', 'false');
  els.filtersToggle.focus();
}

function setMinScore(value) {
  state.minScore = value;
  els.minScore.value = String(value);
  renderMinScore(value);
}

function renderMinScore(value) {
  els.minScoreValue.textContent = value > 0 ? value.toFixed(2) : 'any';
  els.minScore.setAttribute('aria-valuetext', value > 0 ? `at least ${value.toFixed(2)}` : 'any relevance');
}

function clearImage() {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = null;
  state.imageFile = null;
  state.imageKey = null;
}

function setBrowseMode() {
  clearImage();
  state.mode = 'browse';
  state.q = '';
  state.likeId = null;
  renderChip();
  renderFilters();
}

function setTextMode(q) {
  clearImage();
  state.mode = 'text';
  state.q = q;
  state.likeId = null;
  renderChip();
  renderFilters();
}

function setSort(value) {
  state.sort = value;
  els.sort.value = value;
}

function setSimilarMode(id, name, thumb, withText = '') {
  clearImage();
  state.mode = 'similar';
  state.q = '';
  state.likeId = String(id);
  state.likeText = withText;
  renderFilters();
  state.likeName = name || '';
  state.likeThumb = thumb || `/api/images/${idPath(id)}/thumbnail`;
  renderChip();
  if (!name) {
    // opened from a shared link: fetch the name for the chip
    const wanted = state.likeId;
    api(`/api/images/${idPath(id)}`)
      .then((info) => {
        if (state.mode !== 'similar' || state.likeId !== wanted) return;
        state.likeName = baseName(info.path);
        state.likeThumb = thumbUrl(info);
        renderChip();
      })
      .catch(() => {
        /* the search itself reports a missing image */
      });
  }
}

function setImageMode(file, key) {
  if (state.imageFile !== file) {
    clearImage();
    state.imageUrl = URL.createObjectURL(file);
  }
  state.mode = 'image';
  state.q = '';
  state.likeId = null;
  state.imageFile = file;
  state.imageKey = key;
  renderChip();
  renderFilters();
}

function renderChip() {
  if (state.mode === 'image') {
    els.chip.hidden = false;
    els.chipImg.src = state.imageUrl;
    els.chipLabel.textContent = `Like ${state.imageFile?.name || 'your image'}`;
    els.chipClear.setAttribute('aria-label', 'Stop searching by this image');
    els.q.placeholder = 'Or describe a photo…';
  } else if (state.mode === 'similar') {
    els.chip.hidden = false;
    els.chipImg.src = safeUrl(state.likeThumb) || '';
    els.chipLabel.textContent =
      (state.likeName ? `Like ${state.likeName}` : 'Similar images') +
      (state.likeText ? `, with “${state.likeText}”` : '');
    els.chipClear.setAttribute('aria-label', 'Stop showing similar images');
    els.q.placeholder = 'Or describe a photo…';
  } else {
    els.chip.hidden = true;
    els.chipImg.removeAttribute('src');
    els.q.placeholder = 'Describe a photo…  ( / )';
  }
}

// ---------------------------------------------------------------------------------------------
// fetching pages

async function fetchPage(signal) {
  const offset = state.offset;
  const min = state.minScore > 0 ? state.minScore : null;
  const sort = state.sort !== 'relevance' ? state.sort : null;
  if (state.mode === 'browse') {
    // keyset paging: each page starts after the last id (or capture date) seen: a range read
    const byDate = sort !== null;
    const cursor = byDate ? { after_key: state.browseKey } : { after: state.browseAfter };
    const params = filtersParams(query({ ...cursor, limit: PAGE, sort }));
    const data = await api(`/api/images?${params}`, { signal });
    const items = Array.isArray(data?.items) ? data.items : [];
    const total = typeof data?.total === 'number' ? data.total : null;
    state.browseAfter = data?.next_after ?? null;
    state.browseKey = data?.next_after_key ?? null;
    const done = items.length === 0 || (byDate ? state.browseKey === null : state.browseAfter === null);
    return { items, consumed: items.length, done, total };
  }
  const hiddenOf = (data) => ({ hidden: data?.hidden, hiddenMore: Boolean(data?.hidden_more) });
  const lang = langParam();
  if (state.mode === 'text') {
    const filters = filtersBody();
    const data = filters
      ? await api('/api/search', {
          method: 'POST',
          json: { text: state.q, k: PAGE, offset, min_relevance: min, sort: sort ?? 'relevance', filters, ...(lang ? { lang } : {}) },
          signal,
        })
      : await api(`/api/search?${query({ q: state.q, k: PAGE, offset, min_relevance: min, sort, lang })}`, { signal });
    const results = Array.isArray(data?.results) ? data.results : [];
    return { items: results, consumed: results.length, done: results.length < PAGE, tookMs: data?.took_ms, ...hiddenOf(data) };
  }
  if (state.mode === 'similar') {
    const data = state.likeText
      ? // "... but with text": the image and the words as two terms of one query
        await api('/api/search', {
          method: 'POST',
          json: {
            terms: [{ image_id: Number(state.likeId) }, { text: state.likeText }],
            k: PAGE,
            offset,
            min_relevance: min,
            sort: sort ?? 'relevance',
            filters: filtersBody(),
            ...(lang ? { lang } : {}),
          },
          signal,
        })
      : await api(`/api/images/${idPath(state.likeId)}/similar?${filtersParams(query({ k: PAGE, offset, min_relevance: min, sort }))}`, { signal });
    const results = Array.isArray(data?.results) ? data.results : [];
    // the API leaves the image itself out; the filters keep older servers honest too
    const kept = results.filter((r) => String(r.id) !== state.likeId && (min === null || relevanceOf(r) >= min));
    return { items: kept, consumed: results.length, done: results.length < PAGE, tookMs: data?.took_ms, ...hiddenOf(data) };
  }
  // image: the upload goes with every page (the API keeps no state between requests)
  const form = new FormData();
  form.append('file', state.imageFile, state.imageFile.name || 'image');
  const params = filtersParams(query({ k: PAGE, offset, min_relevance: min, sort }));
  const data = await api(`/api/search/image?${params}`, { method: 'POST', form, signal });
  const results = Array.isArray(data?.results) ? data.results : [];
  return {
    ...hiddenOf(data),
    items: results,
    consumed: results.length,
    done: results.length < PAGE || offset + results.length >= IMAGE_OFFSET_MAX,
    tookMs: data?.took_ms,
  };
}

/** Start over for the current mode: clears the grid and loads the first page. */
function run({ push = false } = {}) {
  state.controller.abort();
  state.controller = new AbortController();
  state.gen += 1;
  state.items = [];
  state.seen = new Set();
  state.offset = 0;
  state.browseAfter = null;
  state.browseKey = null;
  state.hidden = null;
  state.hiddenMore = false;
  state.done = false;
  state.loading = false;
  state.failed = false;
  state.total = null;
  state.tookMs = null;
  els.results.replaceChildren();
  hideError();
  els.empty.hidden = true;
  els.results.hidden = false;
  syncUrl(push);
  document.title = state.mode === 'text' ? `${state.q} · clipsearch` : 'clipsearch';
  window.scrollTo({ top: 0 });
  loadPage();
}

async function loadPage() {
  if (state.loading || state.done) return;
  const gen = state.gen;
  state.loading = true;
  state.failed = false;
  renderLoading();
  try {
    const page = await fetchPage(state.controller.signal);
    if (gen !== state.gen) return;
    const fresh = page.items.filter((item) => !state.seen.has(String(item.id)));
    for (const item of fresh) state.seen.add(String(item.id));
    const start = state.items.length;
    state.items.push(...fresh);
    els.results.append(...fresh.map((item, i) => tile(item, start + i)));
    state.offset += page.consumed;
    state.done = page.done || page.consumed === 0;
    if (page.total !== undefined) state.total = page.total;
    if (typeof page.hidden === 'number') {
      state.hidden = page.hidden;
      state.hiddenMore = page.hiddenMore;
    }
    if (typeof page.tookMs === 'number') state.tookMs = page.tookMs;
    hideError();
    if (languagesAfterSignIn) {
      languagesAfterSignIn = false;
      loadLanguages().then(() => {
        // what the page searched with: the link's code, else the model's default
        setLang(state.lang ?? (state.langs ? state.langs.default : null));
        syncUrl(false);
      });
    }
  } catch (err) {
    if (gen !== state.gen || err?.name === 'AbortError') return;
    state.failed = true;
    showError(err.message || String(err), () => {
      state.failed = false;
      loadPage();
    });
  } finally {
    if (gen === state.gen) {
      state.loading = false;
      renderLoading();
      renderStatus();
      renderEmpty();
      renderHidden();
      // a short page may leave the sentinel on screen: keep filling
      requestAnimationFrame(maybeLoadMore);
    }
  }
}

function sentinelNear() {
  return els.sentinel.getBoundingClientRect().top < window.innerHeight + SCROLL_MARGIN_PX;
}

function maybeLoadMore() {
  if (!state.loading && !state.done && !state.failed && sentinelNear()) loadPage();
}

// ---------------------------------------------------------------------------------------------
// rendering the grid

/** A result's calibrated relevance (its raw score from an older server). */
const relevanceOf = (item) => (typeof item.relevance === 'number' ? item.relevance : item.score);

/** "12 weaker results hidden · Show": what the relevance cut left out, once the results end. */
function renderHidden() {
  const n = state.mode !== 'browse' && state.done && !state.failed ? state.hidden : null;
  els.hiddenNote.hidden = !(n > 0);
  if (!(n > 0)) return;
  const count = `${n.toLocaleString()}${state.hiddenMore ? '+' : ''}`;
  els.hiddenText.textContent = `${count} weaker result${n === 1 && !state.hiddenMore ? '' : 's'} hidden (relevance below ${state.minScore.toFixed(2)})`;
}

function tile(item, index) {
  const name = baseName(item.path);
  const score = formatScore(relevanceOf(item));
  const label = score ? `${name}, relevance ${score}` : name;
  const why = matchSummary(item); // found by its words (text.js): said by title and description
  const img = h('img', { alt: '', loading: 'lazy', decoding: 'async', width: 240, height: 240 });
  const li = h('li', { class: 'tile' });
  img.addEventListener('error', () => li.classList.add('broken'), { once: true });
  img.src = thumbUrl(item);
  const button = h(
    'button',
    {
      type: 'button',
      class: 'tile-btn',
      'aria-label': label,
      'aria-description': why || null,
      title: String(item.path ?? name) + (why ? `\n${why}` : ''),
    },
    img,
    h('span', { class: 'tile-fallback', 'aria-hidden': 'true', text: name }),
    score ? h('span', { class: 'score', 'aria-hidden': 'true', text: score }) : null,
    item.state && item.state !== 'ready' ? h('span', { class: `state-badge ${item.state}`, text: item.state }) : null,
    matchBadge(item),
    h('span', { class: 'name', 'aria-hidden': 'true', text: name }),
  );
  button.dataset.index = String(index);
  button.dataset.id = String(item.id);
  if (score) button.style.setProperty('--score', String(clamp(relevanceOf(item), 0, 1)));
  li.append(button);
  return li;
}

function rerenderGrid() {
  els.results.replaceChildren(...state.items.map((item, i) => tile(item, i)));
}

function renderLoading() {
  const first = state.loading && state.items.length === 0;
  els.results.setAttribute('aria-busy', state.loading ? 'true' : 'false');
  els.results.classList.toggle('loading', first);
  if (first && !els.results.children.length) {
    els.results.append(...Array.from({ length: 12 }, () => h('li', { class: 'tile skeleton', 'aria-hidden': 'true' })));
  } else if (!first) {
    for (const skeleton of els.results.querySelectorAll('.skeleton')) skeleton.remove();
  }
  els.spinner.hidden = !state.loading;
  els.loadMore.hidden = state.loading || state.done || state.items.length === 0;
  if (state.loading && first) els.status.textContent = 'Searching…';
}

function describeQuery() {
  const lang = langParam();
  const inLang = lang ? ` in ${langName(lang)}` : '';
  if (state.mode === 'text') return `for “${state.q}”${inLang}`;
  if (state.mode === 'similar') {
    const like = state.likeName ? `like ${state.likeName}` : 'like the chosen image';
    return state.likeText ? `${like}, with “${state.likeText}”${inLang}` : like;
  }
  if (state.mode === 'image') return `like ${state.imageFile?.name || 'your image'}`;
  return '';
}

function renderStatus() {
  if (state.failed && state.items.length === 0) {
    els.status.textContent = '';
    return;
  }
  const n = state.items.length;
  const more = state.done ? '' : '+';
  let text;
  if (state.mode === 'browse') {
    const total = state.total ?? n;
    text = `${total.toLocaleString()} image${total === 1 ? '' : 's'} in the library`;
    if (filtersActive()) text += ` · ${describeFilters()}`;
    if (state.sort !== 'relevance') text += state.sort === 'date_desc' ? ' · newest first' : ' · oldest first';
  } else {
    text = `${n.toLocaleString()}${more} result${n === 1 && !more ? '' : 's'} ${describeQuery()}`;
    if (filtersActive()) text += ` · ${describeFilters()}`;
    if (state.minScore > 0) text += ` · relevance ≥ ${state.minScore.toFixed(2)}`;
    if (typeof state.tookMs === 'number') text += ` · ${Math.round(state.tookMs)} ms`;
  }
  els.status.textContent = text;
}

function renderEmpty() {
  const show = state.items.length === 0 && state.done && !state.failed;
  els.empty.hidden = !show;
  els.results.hidden = show;
  if (!show) return;
  let title;
  let text;
  let action = null;
  if (state.mode === 'browse' && jobs.active.size > 0) {
    title = 'Indexing your photos…';
    text = 'Images appear here as soon as they are ready.';
    action = ['Show progress', () => openPanel(false)];
  } else if (state.mode === 'browse') {
    title = 'Your library is empty';
    text = 'Add a folder of photos: they become searchable as soon as they are indexed.';
    action = ['Add a folder', () => openPanel(true)];
  } else if (state.minScore > 0) {
    title = `Nothing above relevance ${state.minScore.toFixed(2)}`;
    text = `No image scores at least ${state.minScore.toFixed(2)} ${describeQuery()}. Lower the threshold to see more.`;
    action = [
      'Reset threshold',
      () => {
        setMinScore(0);
        run();
      },
    ];
  } else if (filtersActive()) {
    title = state.mode === 'text' ? `No matches for “${state.q}” with these filters` : 'Nothing similar with these filters';
    text = `Nothing matches with these filters: ${describeFilters()}. Change or reset them to see more.`;
    action = ['Reset filters', () => resetFilters()];
  } else if (state.mode === 'text') {
    title = `No matches for “${state.q}”`;
    text = state.libraryTotal === 0 ? 'The library is empty: add a folder first.' : 'Try other words, or add more photos.';
  } else {
    title = 'No similar images';
    text = 'Nothing else in the library looks like this yet.';
  }
  els.emptyTitle.textContent = title;
  els.emptyText.textContent = text;
  els.emptyAction.hidden = !action;
  if (action) {
    els.emptyAction.textContent = action[0];
    els.emptyAction.onclick = action[1];
  }
}

let errorRetry = null;

function showError(message, retry) {
  errorRetry = retry || null;
  els.errorText.textContent = message;
  els.errorRetry.hidden = !retry;
  els.error.hidden = false;
}

function hideError() {
  els.error.hidden = true;
  errorRetry = null;
}

// ---------------------------------------------------------------------------------------------
// detail view

function openDetail(index) {
  const item = state.items[index];
  if (!item) return;
  state.detailIndex = index;
  showDetail(item);
}

function showDetail(item) {
  state.detailItem = item;
  state.detailGen += 1;
  const gen = state.detailGen;
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

  api(`/api/images/${idPath(item.id)}`)
    .then((info) => {
      if (gen === state.detailGen) renderMeta(item, info);
    })
    .catch((err) => {
      if (gen !== state.detailGen) return;
      els.detailError.textContent = err.message;
      els.detailError.hidden = false;
    });
  showDetailText(api, item, $('detail-text'), () => gen === state.detailGen);
  loadSimilarStrip(item, gen);
}

/** The detail image keeps its own shape, as large as the view allows (CSS: --ar). */
function fitDetailImage(width, height) {
  const w = Number(width) || 0;
  const h = Number(height) || 0;
  if (w > 0 && h > 0) els.detailImg.style.setProperty('--ar', String(w / h));
  else els.detailImg.style.removeProperty('--ar');
  els.detailImg.classList.toggle('fitted', w > 0 && h > 0);
}

function renderMeta(hit, info) {
  const src = info || hit;
  const rows = [];
  const add = (term, value, cls) => {
    if (value === null || value === undefined || value === '') return;
    rows.push(h('div', { class: cls || null }, h('dt', { text: term }), h('dd', { text: String(value) })));
  };
  add('Path', src.path, 'wide');
  if (typeof hit.score === 'number') add('Relevance', formatScore(relevanceOf(hit)));
  if (typeof hit.relevance === 'number' && typeof hit.score === 'number') add('Score (cosine)', formatScore(hit.score));
  add('Size', info ? formatBytes(info.size) || '—' : '…');
  if (src.width && src.height) add('Dimensions', `${src.width} × ${src.height}`);
  add('Format', src.format ? String(src.format).toUpperCase() : null);
  add('Date', formatDate(src.taken_at) || 'unknown');
  if (info && info.state && info.state !== 'ready') add('State', info.state);
  if (info && info.error) add('Problem', info.error, 'wide');
  els.detailMeta.replaceChildren(...rows);
}

async function loadSimilarStrip(item, gen) {
  els.similar.replaceChildren();
  els.similarStatus.textContent = 'Looking for similar images…';
  try {
    const data = await api(`/api/images/${idPath(item.id)}/similar?${query({ k: SIMILAR_STRIP + 1, offset: 0 })}`);
    if (gen !== state.detailGen) return;
    const results = (Array.isArray(data?.results) ? data.results : [])
      .filter((r) => String(r.id) !== String(item.id))
      .slice(0, SIMILAR_STRIP);
    els.similarStatus.textContent = results.length ? '' : 'Nothing similar in the library yet.';
    els.similar.replaceChildren(
      ...results.map((r) => {
        const name = baseName(r.path);
        const img = h('img', { alt: '', loading: 'lazy', decoding: 'async', width: 96, height: 96 });
        img.src = thumbUrl(r);
        const button = h(
          'button',
          {
            type: 'button',
            class: 'strip-btn',
            'aria-label': `${name}, similarity ${formatScore(r.score) ?? ''}`,
            title: name,
          },
          img,
          h('span', { class: 'score', 'aria-hidden': 'true', text: formatScore(r.score) }),
        );
        button.dataset.id = String(r.id);
        button.addEventListener('click', () => {
          const found = state.items.findIndex((x) => String(x.id) === String(r.id));
          state.detailIndex = found >= 0 ? found : state.detailIndex;
          showDetail(r);
        });
        return h('li', {}, button);
      }),
    );
  } catch (err) {
    if (gen !== state.detailGen) return;
    els.similarStatus.textContent = `Could not load similar images: ${err.message}`;
  }
}

async function stepDetail(delta) {
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

function focusTile(index) {
  const button = els.results.children[index]?.querySelector('.tile-btn');
  if (button) {
    button.focus();
    button.scrollIntoView({ block: 'nearest' });
  }
}

els.detail.addEventListener('close', () => {
  state.detailGen += 1; // drop late answers
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

els.detailSimilar.addEventListener('click', () => {
  const item = state.detailItem;
  if (!item) return;
  state.detailIndex = null;
  els.detail.close();
  els.q.value = '';
  setSimilarMode(item.id, baseName(item.path), thumbUrl(item));
  run({ push: true });
});

els.detailDelete.addEventListener('click', async () => {
  const item = state.detailItem;
  if (!item) return;
  const name = baseName(item.path);
  if (!window.confirm(`Remove “${name}” from the library? It will no longer appear in searches.`)) return;
  try {
    await api(`/api/images/${idPath(item.id)}`, { method: 'DELETE' });
  } catch (err) {
    els.detailError.textContent = err.message;
    els.detailError.hidden = false;
    return;
  }
  const index = state.items.findIndex((x) => String(x.id) === String(item.id));
  if (index >= 0) {
    state.items.splice(index, 1);
    state.seen.delete(String(item.id));
    rerenderGrid();
  }
  state.detailIndex = index >= 0 ? Math.min(index, state.items.length - 1) : null;
  if (state.detailIndex !== null && state.detailIndex < 0) state.detailIndex = null;
  els.detail.close();
  els.status.textContent = `Removed ${name} from the library.`;
  renderEmpty();
  refreshHealth();
});

// The Removed view (removed.js): restoring queues an ingest job, followed like any other.
initRemovedView({
  api,
  h,
  safeUrl,
  baseName,
  formatDate,
  onRestored(names, queued) {
    els.status.textContent = `Restored ${names.join(', ')}: it comes back once its folder is scanned.`;
    const list = queued.filter((job) => job && job.id !== undefined);
    if (list.length) absorbJobs(list);
    pollJobs();
  },
});

// The Duplicates view (duplicates.js): removing members goes through the remove API.
initDuplicatesView({
  api,
  h,
  safeUrl,
  baseName,
  formatBytes,
  onRemoved(ids, names) {
    const gone = new Set(ids.map(String));
    state.items = state.items.filter((x) => !gone.has(String(x.id)));
    for (const id of gone) state.seen.delete(id);
    rerenderGrid();
    els.status.textContent = `Removed ${names.join(', ')} from the library.`;
    renderEmpty();
    refreshHealth();
  },
});

// ---------------------------------------------------------------------------------------------
// ingest panel and jobs

const jobs = { byId: new Map(), active: new Set(), timer: null, polling: false, primed: false };

const folders = initFolders({
  api,
  h,
  onJob(job) {
    if (job && job.id !== undefined) absorbJobs([job]);
  },
});

function openPanel(focus) {
  els.panel.hidden = false;
  els.ingestToggle.setAttribute('aria-expanded', 'true');
  if (focus) els.ingestPath.focus();
  pollJobs();
  folders.refresh();
}

function closePanel() {
  els.panel.hidden = true;
  els.ingestToggle.setAttribute('aria-expanded', 'false');
  els.ingestToggle.focus();
}

els.ingestToggle.addEventListener('click', () => (els.panel.hidden ? openPanel(true) : closePanel()));
els.panelClose.addEventListener('click', closePanel);
els.panel.addEventListener('keydown', (event) => {
  if (event.key === 'Escape') {
    event.preventDefault();
    closePanel();
  }
});

const isActive = (job) => job.state === 'queued' || job.state === 'running';
const jobLabel = (job) => {
  const kind = job.kind === 'ingest' ? 'Add' : job.kind === 'reindex' ? 'Rebuild index' : job.kind === 'duplicates' ? 'Find duplicates' : String(job.kind ?? 'Job');
  const path = job.params && typeof job.params.path === 'string' ? job.params.path : '';
  const model = job.params && typeof job.params.model === 'string' ? job.params.model : '';
  return { kind, target: path || model };
};

function renderJob(job, li) {
  const { kind, target } = jobLabel(job);
  const total = Number(job.total) || 0;
  const done = Number(job.done) || 0;
  const failed = Number(job.failed) || 0;
  const progress = h('progress', { max: Math.max(total, 1), 'aria-label': `Progress: ${kind} ${target}`.trim() });
  if (total > 0) progress.value = Math.min(done + failed, total);
  else if (job.state === 'done') progress.value = 1; // nothing to do, and done
  // else: no value attribute = indeterminate (still scanning)
  let counts;
  if (total > 0) counts = `${done.toLocaleString()} of ${total.toLocaleString()}`;
  else if (isActive(job)) counts = 'Looking for images…';
  else {
    // nothing to embed: either the folder had no images or they were all indexed already
    const found = Number(job.params?.scan?.found) || 0;
    counts = found > 0 ? `Up to date: ${found.toLocaleString()} images, nothing new` : 'No images found';
  }
  if (failed) counts += ` · ${failed.toLocaleString()} failed`;
  const errors = Array.isArray(job.errors) ? job.errors : [];
  const wasOpen = li.querySelector('details')?.open;
  li.dataset.state = String(job.state);
  const parts = [
    h(
      'div',
      { class: 'job-head' },
      h('span', { class: 'job-kind', text: kind }),
      h('span', { class: 'job-target', title: target, text: target ? `\u200e${target}\u200e` : '' }),
      h('span', { class: `job-state ${job.state}`, text: String(job.state) }),
    ),
    progress,
    h('div', { class: 'job-counts', text: counts }),
    job.state === 'failed' && job.message ? h('div', { class: 'job-message form-error', role: 'note', text: `Failed: ${String(job.message)}` }) : null,
    errors.length
      ? h(
          'details',
          { open: wasOpen || null },
          h('summary', { text: `${errors.length} problem${errors.length === 1 ? '' : 's'}` }),
          h(
            'ul',
            { class: 'job-errors' },
            errors.slice(0, 50).map((e) => h('li', {}, h('code', { text: String(e?.path ?? '') }), ` ${String(e?.reason ?? '')}`)),
          ),
        )
      : null,
  ];
  li.replaceChildren(...parts.filter(Boolean));
}

function renderJobs(list) {
  const order = [...list].sort((a, b) => String(b.created_at ?? '').localeCompare(String(a.created_at ?? '')));
  const existing = new Map([...els.jobs.children].map((li) => [li.dataset.jobId, li]));
  const rows = order.slice(0, 20).map((job) => {
    const li = existing.get(String(job.id)) || h('li', { class: 'job' });
    li.dataset.jobId = String(job.id);
    renderJob(job, li);
    return li;
  });
  els.jobs.replaceChildren(...rows);
  els.jobsEmpty.hidden = rows.length > 0;
  const active = list.filter(isActive).length;
  els.jobsBadge.hidden = active === 0;
  els.jobsBadge.textContent = String(active);
  els.jobsBadge.setAttribute('aria-label', `${active} job${active === 1 ? '' : 's'} running`);
}

function absorbJobs(list) {
  let finished = false;
  let progressed = false;
  for (const job of list) {
    const id = String(job.id);
    if (jobs.active.has(id) && !isActive(job)) finished = true;
    // a job queued by someone else (a watched folder's change) that ran between two polls
    if (jobs.primed && !jobs.byId.has(id) && !isActive(job) && Number(job.done) > 0) finished = true;
    if (isActive(job) && Number(job.done) > Number(jobs.byId.get(id)?.done ?? 0)) progressed = true;
    if (isActive(job)) jobs.active.add(id);
    else jobs.active.delete(id);
    jobs.byId.set(id, job);
  }
  jobs.primed = true;
  renderJobs([...jobs.byId.values()]);
  if (finished) onJobsFinished();
  else if (progressed && state.mode === 'browse' && state.items.length === 0 && !state.loading) run();
  else if (state.items.length === 0 && state.done) renderEmpty();
}

function onJobsFinished() {
  refreshHealth();
  // a re-index may have switched the model: its query languages (the picker) may differ
  loadLanguages().then(() => setLang(state.lang));
  if (!els.panel.hidden) folders.refresh();
  // new images: refresh views that cannot lose a scroll position
  if (!els.detail.open && (state.items.length === 0 || window.scrollY < 200)) run();
}

async function pollJobs() {
  clearTimeout(jobs.timer);
  if (jobs.polling) return;
  jobs.polling = true;
  try {
    const data = await api('/api/jobs', { ask: false }); // background poll: never a prompt
    const list = Array.isArray(data) ? data : Array.isArray(data?.items) ? data.items : [];
    absorbJobs(list);
  } catch (err) {
    if (!els.panel.hidden) {
      els.ingestError.textContent = `Could not load jobs: ${err.message}`;
      els.ingestError.hidden = false;
    }
  } finally {
    jobs.polling = false;
  }
  const anyActive = jobs.active.size > 0;
  if (anyActive || !els.panel.hidden) {
    jobs.timer = setTimeout(pollJobs, anyActive ? JOB_POLL_MS : JOB_IDLE_POLL_MS);
  } else if (document.visibilityState === 'visible') {
    // watched folders change by themselves: look now and then, so new photos show up
    jobs.timer = setTimeout(pollJobs, JOB_BACKGROUND_POLL_MS);
  }
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') pollJobs(); // a hidden tab stops polling
});

els.ingestForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const path = els.ingestPath.value.trim();
  if (!path) return;
  els.ingestError.hidden = true;
  els.ingestSubmit.disabled = true;
  try {
    const recursive = els.ingestRecursive.checked;
    if ($('ingest-watch').checked) {
      await folders.add(path, recursive); // remembered and kept up to date; its job is followed
    } else {
      const job = await api('/api/ingest', { method: 'POST', json: { path, recursive } });
      if (job && job.id !== undefined) absorbJobs([job]);
    }
    els.ingestPath.value = '';
    pollJobs();
  } catch (err) {
    els.ingestError.textContent = err.message;
    els.ingestError.hidden = false;
  } finally {
    els.ingestSubmit.disabled = false;
  }
});

els.reindex.addEventListener('click', async () => {
  els.ingestError.hidden = true;
  els.reindex.disabled = true;
  try {
    const job = await api('/api/reindex', { method: 'POST', json: {} });
    if (job && job.id !== undefined) absorbJobs([job]);
    pollJobs();
  } catch (err) {
    els.ingestError.textContent = err.message;
    els.ingestError.hidden = false;
  } finally {
    els.reindex.disabled = false;
  }
});

// ---------------------------------------------------------------------------------------------
// health (footer)

async function refreshHealth() {
  try {
    const health = await api('/api/health');
    const images = health?.images || {};
    const index = health?.index || {};
    state.libraryTotal = typeof images.total === 'number' ? images.total : null;
    const parts = [];
    if (typeof images.total === 'number') {
      let text = `${images.total.toLocaleString()} images`;
      const extra = [];
      if (images.pending) extra.push(`${images.pending.toLocaleString()} pending`);
      if (images.failed) extra.push(`${images.failed.toLocaleString()} failed`);
      if (extra.length) text += ` (${extra.join(', ')})`;
      parts.push(text);
    }
    if (health?.model) parts.push(`model ${health.model}${health.device ? ` on ${health.device}` : ''}`);
    if (index.kind) parts.push(`index ${index.kind}${index.version !== undefined && index.version !== null ? ` v${index.version}` : ''}`);
    els.footer.textContent = parts.join(' · ');
  } catch (err) {
    els.footer.textContent = `Server status unavailable: ${err.message}`;
  }
}

// ---------------------------------------------------------------------------------------------
// search input, threshold, image search

function commitText({ fromTyping }) {
  const q = els.q.value.trim();
  if (q) {
    if (state.mode === 'text' && state.q === q) return;
    setTextMode(q);
  } else {
    if (state.mode !== 'text') return; // clearing the box keeps an image/similar search
    setBrowseMode();
  }
  let push = true;
  if (fromTyping) {
    const now = Date.now();
    push = now - lastTypingCommit > TYPING_BURST_MS;
    lastTypingCommit = now;
  }
  run({ push });
}

const typed = debounce(() => commitText({ fromTyping: true }), DEBOUNCE_MS);
els.q.addEventListener('input', typed);
els.form.addEventListener('submit', (event) => {
  event.preventDefault();
  typed.cancel();
  lastTypingCommit = 0;
  commitText({ fromTyping: false });
});

const thresholdChanged = debounce(() => {
  const value = Number.parseFloat(els.minScore.value) || 0;
  if (value === state.minScore) return;
  state.minScore = value;
  if (state.mode === 'browse') {
    syncUrl(false);
    return; // the library listing has no scores; the threshold applies to the next search
  }
  run();
}, DEBOUNCE_MS);
els.minScore.addEventListener('input', () => {
  renderMinScore(Number.parseFloat(els.minScore.value) || 0);
  thresholdChanged();
});

// filters: a checkbox, a date or Enter in the folder box applies at once; typing a folder
// applies after a pause (a burst of typing is one history entry, like the query)
const EMPTY_FILTERS = Object.freeze({ folder: '', from: '', to: '', formats: [] });
let lastFolderCommit = 0;

function applyFilters({ push }) {
  const next = filtersFromForm();
  if (sameFilters(next, state.filters)) return;
  state.filters = next;
  renderFilters();
  if (state.mode === 'text') {
    run({ push });
  } else {
    syncUrl(push); // kept for the next text search (and in a shared link)
    renderStatus();
  }
}

function resetFilters() {
  folderTyped.cancel();
  const had = filtersActive();
  setFilters({ ...EMPTY_FILTERS, formats: [] });
  if (!had) return;
  if (state.mode === 'text') {
    run({ push: true });
  } else {
    syncUrl(true);
    renderStatus();
  }
}

const folderTyped = debounce(() => {
  const now = Date.now();
  const push = now - lastFolderCommit > TYPING_BURST_MS;
  lastFolderCommit = now;
  applyFilters({ push });
}, DEBOUNCE_MS);

els.filterFolder.addEventListener('input', folderTyped);
els.filters.addEventListener('change', () => {
  folderTyped.cancel();
  applyFilters({ push: true });
});
els.filters.addEventListener('submit', (event) => {
  event.preventDefault();
  folderTyped.cancel();
  lastFolderCommit = 0;
  applyFilters({ push: true });
});
els.filters.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && event.target === els.filterFolder) {
    // three text-like fields and no submit button: Enter does not submit the form by itself
    event.preventDefault();
    folderTyped.cancel();
    lastFolderCommit = 0;
    applyFilters({ push: true });
  } else if (event.key === 'Escape') {
    event.preventDefault();
    closeFilters();
  }
});
els.filtersReset.addEventListener('click', () => {
  resetFilters();
  els.filterFolder.focus();
});
els.filtersToggle.addEventListener('click', () => (els.filters.hidden ? openFilters(true) : closeFilters()));

els.chipClear.addEventListener('click', () => {
  setBrowseMode();
  run({ push: true });
  els.q.focus();
});

function searchByImage(file) {
  if (file.type && !file.type.startsWith('image/')) {
    showError(`“${file.name}” is not an image. Drop or choose a JPEG, PNG, WebP or GIF file.`);
    return;
  }
  imageSeq += 1;
  const key = `img-${Date.now()}-${imageSeq}`;
  imageFiles.set(key, file);
  while (imageFiles.size > 20) imageFiles.delete(imageFiles.keys().next().value);
  els.q.value = '';
  setImageMode(file, key);
  run({ push: true });
}

els.fileInput.addEventListener('change', () => {
  const file = els.fileInput.files && els.fileInput.files[0];
  if (file) searchByImage(file);
  els.fileInput.value = '';
});

const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes('Files');
let dragDepth = 0;
window.addEventListener('dragenter', (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  els.dropOverlay.hidden = false;
});
window.addEventListener('dragover', (event) => {
  if (!hasFiles(event)) return;
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
  const files = Array.from(event.dataTransfer.files || []);
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

// ---------------------------------------------------------------------------------------------
// keyboard

function gridColumns() {
  const tiles = els.results.children;
  if (!tiles.length) return 1;
  const top = Math.round(tiles[0].getBoundingClientRect().top);
  let n = 0;
  for (const t of tiles) {
    if (Math.round(t.getBoundingClientRect().top) !== top) break;
    n += 1;
  }
  return Math.max(1, n);
}

async function moveFocus(from, delta) {
  let target = clamp(from + delta, 0, Number.MAX_SAFE_INTEGER);
  if (target >= state.items.length && !state.done) await loadPage();
  target = Math.min(target, state.items.length - 1);
  if (target >= 0) focusTile(target);
}

document.addEventListener('keydown', (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target instanceof Element ? event.target : null;
  const typing = !!target?.closest('input, textarea, select, [contenteditable]');

  if (els.detail.open) {
    if (typing || els.tokenDialog.open) return;
    if (event.key === 'ArrowLeft') {
      event.preventDefault();
      stepDetail(-1);
    } else if (event.key === 'ArrowRight') {
      event.preventDefault();
      stepDetail(1);
    }
    return;
  }
  if (document.querySelector('dialog[open]')) return;

  if (event.key === '/' && !typing) {
    event.preventDefault();
    els.q.focus();
    els.q.select();
    return;
  }
  if (target === els.q && event.key === 'ArrowDown' && state.items.length) {
    event.preventDefault();
    focusTile(0);
    return;
  }
  const tileButton = target?.closest('.tile-btn');
  if (!tileButton) return;
  const index = Number(tileButton.dataset.index);
  const cols = gridColumns();
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols };
  if (event.key in moves) {
    event.preventDefault();
    if (event.key === 'ArrowUp' && index < cols) {
      els.q.focus();
      return;
    }
    moveFocus(index, moves[event.key]);
  } else if (event.key === 'Home') {
    event.preventDefault();
    focusTile(0);
  } else if (event.key === 'End') {
    event.preventDefault();
    focusTile(state.items.length - 1);
  }
});

els.results.addEventListener('click', (event) => {
  const button = event.target instanceof Element ? event.target.closest('.tile-btn') : null;
  if (button) openDetail(Number(button.dataset.index));
});

els.loadMore.addEventListener('click', () => loadPage());
els.errorRetry.addEventListener('click', () => {
  const retry = errorRetry;
  hideError();
  if (retry) retry();
});
els.errorClose.addEventListener('click', hideError);

// ---------------------------------------------------------------------------------------------
// start

window.addEventListener('popstate', (event) => {
  typed.cancel();
  folderTyped.cancel();
  if (els.detail.open) els.detail.close();
  loadFromUrl(event.state);
  run({ push: false });
});

// relevance cut, sort order, "... but with text"

async function loadDefaults() {
  try {
    const health = await api('/api/health');
    const min = health?.gallery_min_relevance;
    if (typeof min === 'number' && Number.isFinite(min)) state.defaultMin = clamp(min, 0, 1);
  } catch {
    /* keep the built-in default */
  }
}

els.hiddenShow.addEventListener('click', () => {
  setMinScore(0);
  run({ push: true });
});

els.sort.addEventListener('change', () => {
  setSort(els.sort.value);
  run({ push: true });
});

els.lang.addEventListener('change', () => {
  setLang(els.lang.value);
  if (state.mode === 'text' || (state.mode === 'similar' && state.likeText)) {
    run({ push: true });
  } else {
    syncUrl(true); // kept for the next text search (and in a shared link)
  }
});

els.similarRefine.addEventListener('submit', (event) => {
  event.preventDefault();
  const item = state.detailItem;
  const text = els.similarText.value.trim().slice(0, 500);
  if (!item || !text) return;
  state.detailIndex = null;
  els.detail.close();
  els.q.value = '';
  setSimilarMode(item.id, baseName(item.path), thumbUrl(item), text);
  run({ push: true });
});

new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting)) maybeLoadMore();
}, { rootMargin: `${SCROLL_MARGIN_PX}px 0px` }).observe(els.sentinel);

// where the relevance slider starts (the server's gallery_min_relevance); the query languages
await Promise.all([loadDefaults(), loadLanguages()]);
loadFromUrl(window.history.state);
await loadSession(); // the CSRF value for changes, when signed in
run({ push: false });
refreshHealth();
pollJobs(); // shows the badge when jobs are running; polls every 10 s otherwise (watched folders)
document.documentElement.dataset.ready = 'true';
