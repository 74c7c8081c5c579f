// @ts-check
// The address bar and the requests' parameters. What a link says (q, like, with, lang, min, sort,
// folder, from, to, fmt, mode) is read into the store and written back from it; the filters are
// written as the API takes them. Pure functions, except `syncUrl` (the history).

import { clamp } from './util.js';
import { langInUrl } from './lang.js';
import { state } from './store.js';

/** @typedef {import('./store.js').Filters} Filters */
/** @typedef {import('./store.js').SearchMode} SearchMode */
/** @typedef {import('./store.js').Sort} Sort */
/** @typedef {import('./store.js').State} State */

export const FORMATS = ['JPEG', 'PNG', 'WEBP', 'GIF', 'BMP', 'TIFF', 'HEIF']; // the catalog's (Pillow's) names
const DAY = /^\d{4}-\d{2}-\d{2}$/; // a date input's value
const FORMAT_ALIASES = /** @type {Record<string, string>} */ ({ JPG: 'JPEG', TIF: 'TIFF', HEIC: 'HEIF' });
const FORMAT_NAMES = /** @type {Record<string, string>} */ ({ WEBP: 'WebP', HEIF: 'HEIC' });
/** @type {SearchMode[]} the API's search modes (`mode`): what a link may ask for */
export const SEARCH_MODES = ['semantic', 'text', 'hybrid'];
const MODE_NAMES = { semantic: 'by picture only', text: 'by words only', hybrid: 'by picture and words' };

/**
 * A link's `mode` when it is one of the API's, else '' (the server's default).
 * @param {string | null | undefined} value
 * @returns {SearchMode}
 */
export const searchMode = (value) => SEARCH_MODES.find((m) => m === value) ?? '';

/**
 * A date input's value when it is one, else ''.
 * @param {string | null | undefined} value
 */
export const day = (value) => (DAY.test(value ?? '') ? /** @type {string} */ (value) : '');

/**
 * What a link asks for.
 * @typedef {object} Wanted
 * @property {string} q
 * @property {string | null} like
 * @property {string} likeText
 * @property {string | null} lang
 * @property {number | null} cut `min`: the user's relevance cut; null: the server's default
 * @property {Sort} sort
 * @property {Filters} filters
 */

/**
 * Read a link's query string.
 * @param {string} search `?q=...`
 * @returns {Wanted}
 */
export function readUrl(search) {
  const params = new URLSearchParams(search);
  const min = Number.parseFloat(params.get('min') ?? '');
  const sort = params.get('sort');
  return {
    q: (params.get('q') ?? '').trim(),
    like: params.get('like') || null,
    likeText: (params.get('with') ?? '').trim().slice(0, 500),
    lang: params.get('lang'),
    cut: Number.isFinite(min) ? clamp(min, 0, 1) : null,
    sort: sort === 'date_desc' || sort === 'date_asc' ? sort : 'relevance',
    filters: filtersFromParams(params),
  };
}

/**
 * A link's filters (`folder`, `from`, `to`, `fmt=JPEG,PNG`, `mode`), what is not valid left out.
 * @param {URLSearchParams} params
 * @returns {Filters}
 */
export function filtersFromParams(params) {
  const wanted = new Set(
    (params.get('fmt') ?? '')
      .split(',')
      .map((x) => x.trim().toUpperCase())
      .map((x) => FORMAT_ALIASES[x] || x),
  );
  return {
    folder: (params.get('folder') ?? '').trim(),
    from: day(params.get('from')),
    to: day(params.get('to')),
    formats: FORMATS.filter((x) => wanted.has(x)),
    mode: searchMode(params.get('mode')),
  };
}

/**
 * The query string of the state: what a shared link needs to show the same page.
 * @param {Pick<State, 'query' | 'cutOverride' | 'sort' | 'filters' | 'lang' | 'langs'>} s
 */
export function urlQuery(s) {
  const params = new URLSearchParams();
  const { mode, q, likeId, likeText } = s.query;
  if (mode === 'text') params.set('q', q);
  if (mode === 'similar') params.set('like', String(likeId));
  if (mode === 'similar' && likeText) params.set('with', likeText);
  if (s.lang && langInUrl(s.lang, s.langs)) params.set('lang', s.lang);
  if (s.cutOverride !== null) params.set('min', s.cutOverride.toFixed(2));
  if (s.sort !== 'relevance') params.set('sort', s.sort);
  const f = s.filters;
  if (f.folder) params.set('folder', f.folder);
  if (f.from) params.set('from', f.from);
  if (f.to) params.set('to', f.to);
  if (f.formats.length) params.set('fmt', f.formats.join(','));
  if (f.mode) params.set('mode', f.mode);
  return params.toString();
}

/**
 * Write the state into the address bar: a new history entry (`push`) or the current one.
 * @param {boolean} push
 */
export function syncUrl(push) {
  const text = urlQuery(state);
  const url = window.location.pathname + (text ? `?${text}` : '');
  const historyState = { imageKey: state.query.mode === 'image' ? state.query.imageKey : null };
  const here = window.location.pathname + window.location.search;
  const sameEntry = url === here && (window.history.state?.imageKey ?? null) === historyState.imageKey;
  if (push && !sameEntry) window.history.pushState(historyState, '', url);
  else window.history.replaceState(historyState, '', url);
}

// --- filters ------------------------------------------------------------------------------------

/** @param {Filters} f how many of folder, dates, formats and search mode are set */
export const filterCount = (f) => narrowing(f) + (f.mode ? 1 : 0);

/** @param {Filters} f how many of folder, dates and formats (what leaves images out) are set */
const narrowing = (f) => (f.folder ? 1 : 0) + (f.from || f.to ? 1 : 0) + (f.formats.length ? 1 : 0);

/**
 * @param {Filters} a
 * @param {Filters} b
 */
export const sameFilters = (a, b) =>
  a.folder === b.folder && a.from === b.from && a.to === b.to && a.formats.join() === b.formats.join() && a.mode === b.mode;

/**
 * The `filters` object of POST /api/v1/search, or null when none is set (the mode is not one: it
 * goes beside them, as `mode`).
 * @param {Filters} f
 * @returns {Record<string, string | string[]> | null}
 */
export function filtersBody(f) {
  if (!narrowing(f)) return null;
  /** @type {Record<string, string | string[]>} */
  const body = {};
  if (f.folder) body.folder = f.folder;
  if (f.from) body.date_from = f.from;
  if (f.to) body.date_to = f.to;
  if (f.formats.length) body.formats = [...f.formats];
  return body;
}

/**
 * `query` (a query string) with the filters as the GET routes take them.
 * @param {Filters} f
 * @param {string} query
 */
export function filtersParams(f, query) {
  const search = new URLSearchParams(query);
  if (f.folder) search.set('folder', f.folder);
  if (f.from) search.set('date_from', f.from);
  if (f.to) search.set('date_to', f.to);
  for (const format of f.formats) search.append('format', format);
  return search.toString();
}

/**
 * "in /photos · taken 2024-01-01 to 2024-02-01 · JPEG, WebP"
 * @param {Filters} f
 */
export function describeFilters(f) {
  const parts = [];
  if (f.folder) parts.push(`in ${f.folder}`);
  if (f.from && f.to) parts.push(`taken ${f.from} to ${f.to}`);
  else if (f.from) parts.push(`taken from ${f.from}`);
  else if (f.to) parts.push(`taken until ${f.to}`);
  if (f.formats.length) parts.push(f.formats.map((x) => FORMAT_NAMES[x] || x).join(', '));
  if (f.mode) parts.push(`matched ${MODE_NAMES[f.mode]}`);
  return parts.join(' · ');
}
