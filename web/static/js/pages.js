// @ts-check
// One page of the current view, as the API gives it: browsing (keyset cursors), a text search,
// "more like this" (with or without words) and a search by an uploaded image; a search's next
// page starts at the last one's `next_cursor` (an offset where none is given). The relevance cut
// is the server's: `min_relevance` is sent only when the user chose one, and the cut the answer
// says it applied is passed on (the header and the slider show it).

import { api } from './api.js';
import { langParam } from './lang.js';
import { state } from './store.js';
import { appliedCut, idPath, queryString } from './util.js';
import { filtersBody, filtersParams } from './url.js';

/** @typedef {import('./store.js').Page} Page */
/** @typedef {import('./util.js').Item} Item */

export const PAGE = 40; // tiles per request (infinite scroll)
const IMAGE_OFFSET_MAX = 2000; // an image search stops paging here (each page re-sends the upload)

/**
 * A search answer as a page: its results (`keep` leaves some out of the grid), whether more
 * follow and where they start, how many the cut left out, the cut it applied, the time.
 * @param {any} data
 * @param {(item: Item) => boolean} [keep]
 * @returns {Page}
 */
function searchPage(data, keep = () => true) {
  /** @type {Item[]} */
  const results = Array.isArray(data?.results) ? data.results : [];
  // `has_more` where the server says it (an older one did not: a short page was the last)
  const more = typeof data?.has_more === 'boolean' ? data.has_more : results.length >= PAGE;
  return {
    items: results.filter(keep),
    consumed: results.length,
    done: !more,
    cursor: typeof data?.next_cursor === 'string' && data.next_cursor ? data.next_cursor : null,
    hidden: data?.hidden,
    hiddenMore: Boolean(data?.hidden_more),
    cut: appliedCut(data),
    tookMs: typeof data?.took_ms === 'number' ? data.took_ms : undefined,
  };
}

/**
 * The order the timeline walks: newest first, unless "Oldest first" was chosen.
 * @returns {'date_desc' | 'date_asc'}
 */
export const browseSort = () => (state.sort === 'date_asc' ? 'date_asc' : 'date_desc');

/**
 * Whether the grid shows day and month headings: the timeline always, a search when it is in
 * date order.
 */
export const grouped = () => state.query.mode === 'browse' || state.sort !== 'relevance';

/**
 * The next page of the current view.
 * @param {AbortSignal} signal
 * @returns {Promise<Page>}
 */
export async function fetchPage(signal) {
  const { query, filters, offset, cursor } = state;
  const min = state.cutOverride; // null: the server's default cut
  const sort = state.sort !== 'relevance' ? state.sort : null;
  if (query.mode === 'browse') {
    // the timeline: the library by capture date, newest first unless asked otherwise, paged by
    // keyset cursors (each page a range read, at any depth)
    const params = filtersParams(filters, queryString({ after_key: state.browseKey, limit: PAGE, sort: browseSort() }));
    const data = await api(`/images?${params}`, { signal });
    /** @type {Item[]} */
    const items = Array.isArray(data?.items) ? data.items : [];
    const afterKey = data?.next_after_key ?? null;
    return {
      items,
      consumed: items.length,
      done: items.length === 0 || afterKey === null,
      total: typeof data?.total === 'number' ? data.total : null,
      afterKey,
    };
  }
  const lang = langParam(state.lang, state.langs);
  const langBody = lang ? { lang } : {};
  const cutBody = min !== null ? { min_relevance: min } : {};
  // the next page starts after the last one's cursor (as deep as the first); else at an offset
  const at = cursor ? { cursor } : { offset };
  if (query.mode === 'text') {
    const body = filtersBody(filters);
    const mode = filters.mode || null; // null: the server's default
    const data = body
      ? await api('/search', {
          method: 'POST',
          json: { text: query.q, k: PAGE, ...at, ...cutBody, sort: sort ?? 'relevance', filters: body, ...langBody, ...(mode ? { mode } : {}) },
          signal,
        })
      : await api(`/search?${queryString({ q: query.q, k: PAGE, ...at, min_relevance: min, sort, lang, mode })}`, { signal });
    return searchPage(data);
  }
  if (query.mode === 'similar') {
    const data = query.likeText
      ? // "... but with text": the image and the words as two terms of one query
        await api('/search', {
          method: 'POST',
          json: {
            terms: [{ image_id: Number(query.likeId) }, { text: query.likeText }],
            k: PAGE,
            ...at,
            ...cutBody,
            sort: sort ?? 'relevance',
            filters: filtersBody(filters),
            ...langBody,
          },
          signal,
        })
      : await api(`/images/${idPath(query.likeId)}/similar?${filtersParams(filters, queryString({ k: PAGE, ...at, min_relevance: min, sort }))}`, {
          signal,
        });
    // the API leaves the image itself out (an older server did not)
    return searchPage(data, (r) => String(r.id) !== query.likeId);
  }
  // image: the upload goes with every page (the API keeps no state between requests)
  const file = query.imageFile;
  if (!file) return { items: [], consumed: 0, done: true };
  const form = new FormData();
  form.append('file', file, file.name || 'image');
  const params = filtersParams(filters, queryString({ k: PAGE, ...at, min_relevance: min, sort }));
  const data = await api(`/search/image?${params}`, { method: 'POST', form, signal });
  const page = searchPage(data);
  return { ...page, done: page.done || offset + page.consumed >= IMAGE_OFFSET_MAX };
}
