// @ts-check
// The gallery's state and the only code that changes it. What the page shows is a function of
// (query, cut, sort, language, filters) and of the pages loaded so far; views read `state` and
// change it through the named actions below, each of which tells the subscribers what changed.

import { clamp } from './util.js';

/** @typedef {import('./util.js').Item} Item */
/** @typedef {'browse' | 'text' | 'similar' | 'image'} Mode */
/** @typedef {'relevance' | 'date_desc' | 'date_asc'} Sort */

/**
 * What narrows searches and browsing: a folder, capture dates (YYYY-MM-DD), formats; and how a
 * text search matches (its `mode`).
 * @typedef {object} Filters
 * @property {string} folder
 * @property {string} from
 * @property {string} to
 * @property {string[]} formats the catalog's (Pillow's) format names
 * @property {SearchMode} mode a text search's mode; '' leaves it to the server (its default)
 */

/** @typedef {'' | 'semantic' | 'text' | 'hybrid'} SearchMode */

/**
 * The query languages of a language-aware model (GET /api/v1/search/languages).
 * @typedef {object} Langs
 * @property {string} default the model's own
 * @property {Set<string>} codes FLORES-200 codes: fra_Latn, jpn_Jpan
 * @property {Map<string, string>} names a readable name for each code
 * @property {string} start where this browser's language makes the gallery start
 */

/**
 * What is searched for: the library itself, words, an image of the library (and words), a file.
 * @typedef {object} Query
 * @property {Mode} mode
 * @property {string} q the words (text mode)
 * @property {string | null} likeId similar mode: the image
 * @property {string} likeName its file name for the chip
 * @property {string | null} likeThumb its thumbnail
 * @property {string} likeText similar mode: "... but with text"
 * @property {File | null} imageFile image mode: the upload (sent with every page)
 * @property {string | null} imageKey its history key (back/forward return to it)
 * @property {string | null} imageUrl its object URL for the chip
 */

/**
 * One page as fetched (grid.js).
 * @typedef {object} Page
 * @property {Item[]} items
 * @property {number} consumed how far the offset moves (hits the gallery left out included)
 * @property {boolean} done
 * @property {number | null} [total] browsing: the library's size
 * @property {number} [tookMs]
 * @property {unknown} [hidden] how many results the cut left out, where the results end
 * @property {boolean} [hiddenMore]
 * @property {number | null} [cut] a search: the relevance cut its answer says it applied
 * @property {unknown} [after] browsing: the next page's cursor (`next_after`)
 * @property {unknown} [afterKey] browsing by date: the next page's cursor (`next_after_key`)
 * @property {string | null} [cursor] a search: the next page's cursor (`next_cursor`)
 */

/** @typedef {'query' | 'cut' | 'sort' | 'lang' | 'langs' | 'filters' | 'results' | 'detail' | 'library'} Change */

const NO_FILTERS = Object.freeze({ folder: '', from: '', to: '', formats: /** @type {string[]} */ ([]), mode: /** @type {SearchMode} */ ('') });

const mutable = {
  /** @type {Query} */
  query: { mode: 'browse', q: '', likeId: null, likeName: '', likeThumb: null, likeText: '', imageFile: null, imageKey: null, imageUrl: null },
  /** The user's relevance cut (the slider, `min` in the address); null: the server's default. */
  cutOverride: /** @type {number | null} */ (null),
  /** The server's default cut (GET /api/v1/health `gallery_min_relevance`); null while unknown. */
  cutDefault: /** @type {number | null} */ (null),
  /** The cut the last search answer says it applied (its `min_relevance`). */
  cutApplied: /** @type {number | null} */ (null),
  /** @type {Sort} */
  sort: 'relevance',
  /** The query language (FLORES-200 code); null: the model's own. */
  lang: /** @type {string | null} */ (null),
  /** A language-aware model's languages; false: a model that takes no code; null: not known. */
  langs: /** @type {Langs | false | null} */ (null),
  /** @type {Filters} */
  filters: { ...NO_FILTERS, formats: [] },
  /** @type {Item[]} */
  items: [],
  /** @type {Set<string>} */
  seen: new Set(),
  offset: 0,
  browseAfter: /** @type {unknown} */ (null), // browse mode: the `next_after` cursor
  browseKey: /** @type {unknown} */ (null), // browse by date: the `next_after_key` cursor
  /** The timeline's jump: the next run starts at this month's cursor (null: at the start). */
  jump: /** @type {{ key: string | null, label: string } | null} */ (null),
  /** Where the run now shown started (a month the scrubber jumped to), for its heading. */
  jumpedTo: /** @type {string | null} */ (null),
  /** Selected tiles (ids), for acting on several at once. */
  selected: /** @type {Set<string>} */ (new Set()),
  cursor: /** @type {string | null} */ (null), // a search: the `next_cursor` of the last page
  done: false,
  loading: false,
  failed: false,
  total: /** @type {number | null} */ (null),
  tookMs: /** @type {number | null} */ (null),
  hidden: /** @type {number | null} */ (null), // what the cut left out, when the results end
  hiddenMore: false,
  gen: 0, // a new run drops the late answers of the one before
  controller: new AbortController(),
  libraryTotal: /** @type {number | null} */ (null),
  detailIndex: /** @type {number | null} */ (null), // index in items of the detail view's tile
  detailItem: /** @type {Item | null} */ (null),
  detailGen: 0,
};

/** @typedef {typeof mutable} State */

/**
 * The state as the views see it: nothing in it can be assigned or pushed to from outside.
 * @typedef {Readonly<Omit<State, 'items' | 'seen' | 'query' | 'filters' | 'selected'>> & {
 *   readonly items: readonly Item[],
 *   readonly seen: ReadonlySet<string>,
 *   readonly selected: ReadonlySet<string>,
 *   readonly query: Readonly<Query>,
 *   readonly filters: Readonly<Filters>,
 * }} ReadState
 */

/** Read it anywhere; change it only through the actions of this module. */
export const state = /** @type {ReadState} */ (mutable);

/** @type {Set<(change: Change) => void>} */
const listeners = new Set();

/**
 * Call `listener` after each change (with what changed).
 * @param {(change: Change) => void} listener
 */
export function subscribe(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** @param {Change} change */
function emit(change) {
  for (const listener of listeners) listener(change);
}

// --- what is searched for -------------------------------------------------------------------

/**
 * Search for `next` (fields left out keep their defaults: browsing).
 * @param {Partial<Query> & { mode: Mode }} next
 */
export function setQuery(next) {
  const query = mutable.query;
  if (query.imageUrl && next.imageUrl !== query.imageUrl) URL.revokeObjectURL(query.imageUrl);
  mutable.query = {
    q: '',
    likeId: null,
    likeName: '',
    likeThumb: null,
    imageFile: null,
    imageKey: null,
    imageUrl: null,
    ...next,
    likeText: next.likeText ?? '', // read in similar mode only
  };
  emit('query');
}

/**
 * The chip's name and thumbnail of the image "more like this" started from (a shared link's).
 * @param {string} likeId
 * @param {string} name
 * @param {string} thumb
 */
export function describeLike(likeId, name, thumb) {
  if (mutable.query.mode !== 'similar' || mutable.query.likeId !== likeId) return;
  mutable.query = { ...mutable.query, likeName: name, likeThumb: thumb };
  emit('query');
}

// --- the relevance cut, the order, the language, the filters -----------------------------------

/**
 * The user's cut; null (or the server's default itself) returns to the server's default.
 * @param {number | null} value
 */
export function setCut(value) {
  const next = value === null || !Number.isFinite(value) ? null : clamp(value, 0, 1);
  mutable.cutOverride = next !== null && next === mutable.cutDefault ? null : next;
  mutable.cutApplied = null; // until the next answer says which cut it applied
  emit('cut');
}

/** @param {number | null} value the server's default cut (GET /api/v1/health) */
export function setCutDefault(value) {
  mutable.cutDefault = typeof value === 'number' && Number.isFinite(value) ? clamp(value, 0, 1) : null;
  if (mutable.cutOverride !== null && mutable.cutOverride === mutable.cutDefault) mutable.cutOverride = null;
  emit('cut');
}

/** The cut in force: the user's, else what the server applied, else its default (0: none). */
export function cutShown() {
  return mutable.cutOverride ?? mutable.cutApplied ?? mutable.cutDefault ?? 0;
}

/** @param {Sort} value */
export function setSort(value) {
  mutable.sort = value;
  emit('sort');
}

/** @param {string | null} code */
export function setLang(code) {
  mutable.lang = code;
  emit('lang');
}

/** @param {Langs | false | null} langs */
export function setLangs(langs) {
  mutable.langs = langs;
  emit('langs');
}

/** @param {Filters} filters */
export function setFilters(filters) {
  mutable.filters = { ...filters, formats: [...filters.formats] };
  emit('filters');
}

export const emptyFilters = () => ({ ...NO_FILTERS, formats: [] });

// --- the pages of results ---------------------------------------------------------------------

/**
 * Start over: drop the pages loaded and abort what is still loading.
 * @returns {{ gen: number, signal: AbortSignal }}
 */
export function startRun() {
  mutable.controller.abort();
  const jump = mutable.jump;
  Object.assign(mutable, {
    controller: new AbortController(),
    gen: mutable.gen + 1,
    items: [],
    seen: new Set(),
    offset: 0,
    browseAfter: null,
    browseKey: jump ? jump.key : null,
    jump: null,
    jumpedTo: jump ? jump.label : null,
    selected: new Set(),
    cursor: null,
    hidden: null,
    hiddenMore: false,
    done: false,
    loading: false,
    failed: false,
    total: null,
    tookMs: null,
  });
  emit('results');
  return { gen: mutable.gen, signal: mutable.controller.signal };
}

/** A page is being fetched (or stopped being: `loading` false). @param {boolean} loading */
export function setLoading(loading) {
  mutable.loading = loading;
  if (loading) mutable.failed = false;
  emit('results');
}

/** @param {boolean} failed */
export function setFailed(failed) {
  mutable.failed = failed;
  emit('results');
}

/**
 * Add a fetched page; returns the items new to the grid and the index of the first.
 * @param {Page} page
 * @returns {{ fresh: Item[], start: number }}
 */
export function addPage(page) {
  const fresh = page.items.filter((item) => !mutable.seen.has(String(item.id)));
  for (const item of fresh) mutable.seen.add(String(item.id));
  const start = mutable.items.length;
  mutable.items.push(...fresh);
  mutable.offset += page.consumed;
  mutable.done = page.done || page.consumed === 0;
  if (page.total !== undefined) mutable.total = page.total;
  if ('after' in page) mutable.browseAfter = page.after ?? null;
  if ('afterKey' in page) mutable.browseKey = page.afterKey ?? null;
  if ('cursor' in page) mutable.cursor = page.cursor ?? null;
  if (typeof page.hidden === 'number') {
    mutable.hidden = page.hidden;
    mutable.hiddenMore = Boolean(page.hiddenMore);
  }
  if (typeof page.tookMs === 'number') mutable.tookMs = page.tookMs;
  if ('cut' in page) {
    mutable.cutApplied = page.cut ?? null; // a search's answer: the cut it says it applied
    emit('cut');
  }
  emit('results');
  return { fresh, start };
}

/**
 * Drop removed images from the grid (and from the detail view's place in it).
 * @param {Iterable<string | number>} ids
 */
export function removeItems(ids) {
  const gone = new Set(Array.from(ids, String));
  mutable.items = mutable.items.filter((x) => !gone.has(String(x.id)));
  for (const id of gone) {
    mutable.seen.delete(id);
    mutable.selected.delete(id);
  }
  emit('results');
}

/**
 * The next run starts at a month of the timeline (`key`: its `after_key`; null: the newest).
 * @param {string | null} key
 * @param {string} label the month, as the scrubber names it
 */
export function setJump(key, label) {
  mutable.jump = { key, label };
}

/**
 * Select a tile or take it out of the selection.
 * @param {string | number} id
 * @param {boolean} on
 */
export function setSelected(id, on) {
  if (on) mutable.selected.add(String(id));
  else mutable.selected.delete(String(id));
  emit('results');
}

export function clearSelection() {
  mutable.selected.clear();
  emit('results');
}

/** @param {number | null} total the library's size (GET /api/v1/health) */
export function setLibraryTotal(total) {
  mutable.libraryTotal = total;
  emit('library');
}

// --- the detail view --------------------------------------------------------------------------

/**
 * Show `item` in the detail view; `index` is its tile (null: not in the grid, or unchanged when
 * left out). Returns the view's generation (answers for an older one are dropped).
 * @param {Item} item
 * @param {number | null} [index]
 */
export function showInDetail(item, index) {
  if (index !== undefined) mutable.detailIndex = index;
  mutable.detailItem = item;
  mutable.detailGen += 1;
  emit('detail');
  return mutable.detailGen;
}

/**
 * The tile the detail view goes back to (and steps from); null: none.
 * @param {number | null} index
 */
export function setDetailIndex(index) {
  mutable.detailIndex = index;
  emit('detail');
}

/** The detail view closed (late answers are dropped); `forget` also drops its tile. */
export function leaveDetail(forget = false) {
  mutable.detailGen += 1;
  if (forget) mutable.detailIndex = null;
  emit('detail');
}
