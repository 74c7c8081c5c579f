// @ts-check
// The grid: runs the current view (first page, then more as the end comes near), draws its tiles
// and says what it shows: the status line, the empty state, what the relevance cut left out, and
// errors with a way to try again.

import { messageOf, thumbUrl } from './api.js';
import { h, els } from './dom.js';
import { langParam } from './lang.js';
import { fetchPage, grouped } from './pages.js';
import { addPage, cutShown, setCut, setFailed, setLoading, setSelected, startRun, state } from './store.js';
import { matchSummary } from './text.js';
import { dayKey, dayLabel, monthLabel } from './timeline.js';
import { describeFilters, filterCount, syncUrl } from './url.js';
import { baseName, clamp } from './util.js';

/** @typedef {import('./util.js').Item} Item */

const SCROLL_MARGIN_PX = 800;

/** What the grid asks of the other views (wired by app.js, so that no module imports in a ring). */
export const hooks = {
  /** Whether ingest jobs are running (the empty library says "Indexing…"). */
  jobsRunning: () => false,
  /** @type {(focus: boolean) => void} open the ingest panel */
  openPanel: () => {},
  resetFilters: () => {},
  /** After each page that loaded. */
  afterPage: () => {},
  /** @type {(item: Item) => void} "more like this" from a tile */
  like: () => {},
  /** After the selection changed. */
  selectionChanged: () => {},
};

/** The day and month the last tile drawn belongs to (the next tile's heading follows them). */
let lastGroup = { month: '', day: '' };

/**
 * Start over for the current view: clear the grid and load the first page.
 * @param {{ push?: boolean }} [options] a new history entry (else the current one is replaced)
 */
export function run({ push = false } = {}) {
  startRun();
  lastGroup = { month: '', day: '' };
  els.results.replaceChildren();
  hideError();
  els.empty.hidden = true;
  els.results.hidden = false;
  syncUrl(push);
  document.title = state.query.mode === 'text' ? `${state.query.q} · clipsearch` : 'clipsearch';
  window.scrollTo({ top: 0 });
  loadPage();
}

/** Load the next page (nothing while one loads or when the results have ended). */
export async function loadPage() {
  if (state.loading || state.done) return;
  const gen = state.gen;
  setLoading(true);
  renderLoading();
  try {
    const page = await fetchPage(state.controller.signal);
    if (gen !== state.gen) return;
    const { fresh, start } = addPage(page);
    els.results.append(...fresh.flatMap((item, i) => [...headings(item), tile(item, start + i)]));
    hideError();
    hooks.afterPage();
  } catch (err) {
    if (gen !== state.gen || (err instanceof Error && err.name === 'AbortError')) return;
    setFailed(true);
    showError(messageOf(err), () => {
      setFailed(false);
      loadPage();
    });
  } finally {
    if (gen === state.gen) {
      setLoading(false);
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

export function maybeLoadMore() {
  if (!state.loading && !state.done && !state.failed && sentinelNear()) loadPage();
}

/** "12 weaker results hidden · Show": what the relevance cut left out, once the results end. */
function renderHidden() {
  const n = state.query.mode !== 'browse' && state.done && !state.failed ? state.hidden : null;
  const show = n !== null && n > 0;
  els.hiddenNote.hidden = !show;
  if (!show) return;
  const count = `${n.toLocaleString()}${state.hiddenMore ? '+' : ''}`;
  els.hiddenText.textContent = `${count} weaker result${n === 1 && !state.hiddenMore ? '' : 's'} hidden (relevance below ${cutShown().toFixed(2)})`;
}

/**
 * The headings that come before `item` in a date-grouped grid: its month when it starts one, and
 * its day when it starts one ("Undated" once, after the dated pictures).
 * @param {Item} item
 * @returns {HTMLElement[]}
 */
function headings(item) {
  if (!grouped()) return [];
  const day = dayKey(item.taken_at);
  const month = day === 'undated' ? 'undated' : day.slice(0, 7);
  /** @type {HTMLElement[]} */
  const out = [];
  if (month !== lastGroup.month) {
    const text = month === 'undated' ? 'Undated' : monthLabel(month);
    out.push(h('li', { class: 'group-head month-head', 'data-month': month }, h('h2', { text })));
  }
  if (day !== lastGroup.day && day !== 'undated') {
    out.push(h('li', { class: 'group-head day-head', 'data-day': day }, h('h3', { text: dayLabel(day) })));
  }
  lastGroup = { month, day };
  return out;
}

const LONG_PRESS_MS = 500;

/**
 * One tile: the picture only. Selecting it and "more like this" are two buttons that show on
 * hover, on keyboard focus and after a long press (touch); its name and why it matched are in
 * its accessible name and description, never drawn over the picture.
 * @param {Item} item
 * @param {number} index its place in the grid
 */
function tile(item, index) {
  const name = baseName(item.path);
  const why = matchSummary(item); // found by its words (text.js): said to screen readers
  const img = h('img', { alt: '', loading: 'lazy', decoding: 'async', width: 240, height: 240 });
  const selected = state.selected.has(String(item.id));
  const li = h('li', { class: selected ? 'tile selected' : 'tile' });
  img.addEventListener('error', () => li.classList.add('broken'), { once: true });
  img.src = thumbUrl(item);
  const button = h(
    'button',
    { type: 'button', class: 'tile-btn', 'aria-label': name, 'aria-description': why || null, title: String(item.path ?? name) },
    img,
    h('span', { class: 'tile-fallback', 'aria-hidden': 'true', text: name }),
  );
  button.dataset.index = String(index);
  button.dataset.id = String(item.id);
  const select = h('button', {
    type: 'button',
    class: 'tile-action tile-select',
    'aria-pressed': selected ? 'true' : 'false',
    'aria-label': `Select ${name}`,
    title: 'Select',
  });
  select.addEventListener('click', () => {
    const on = !state.selected.has(String(item.id));
    setSelected(item.id, on);
    select.setAttribute('aria-pressed', on ? 'true' : 'false');
    li.classList.toggle('selected', on);
    hooks.selectionChanged();
  });
  const like = h('button', { type: 'button', class: 'tile-action tile-like', 'aria-label': `More like ${name}`, title: 'More like this' }, '≈');
  like.addEventListener('click', () => hooks.like(item));
  // a long press (touch) shows the tile's actions instead of opening it
  /** @type {number | undefined} */
  let pressTimer;
  button.addEventListener('pointerdown', (event) => {
    if (event.pointerType !== 'touch') return;
    pressTimer = window.setTimeout(() => {
      li.classList.add('pressed');
      button.dataset.longPress = 'true';
    }, LONG_PRESS_MS);
  });
  for (const type of ['pointerup', 'pointercancel', 'pointerleave']) button.addEventListener(type, () => window.clearTimeout(pressTimer));
  li.append(button, h('div', { class: 'tile-actions' }, select, like));
  return li;
}

/** Draw every tile again (after some were removed). */
export function rerenderGrid() {
  lastGroup = { month: '', day: '' };
  els.results.replaceChildren(...state.items.flatMap((item, i) => [...headings(item), tile(item, i)]));
}

function renderLoading() {
  const first = state.loading && state.items.length === 0;
  els.results.setAttribute('aria-busy', state.loading ? 'true' : 'false');
  els.results.classList.toggle('loading', first);
  if (first && !els.results.children.length) {
    els.results.append(...Array.from({ length: 12 }, () => h('li', { class: 'skeleton', 'aria-hidden': 'true' })));
  } else if (!first) {
    for (const skeleton of els.results.querySelectorAll('.skeleton')) skeleton.remove();
  }
  els.spinner.hidden = !state.loading;
  els.loadMore.hidden = state.loading || state.done || state.items.length === 0;
  if (state.loading && first) els.status.textContent = 'Searching…';
}

/** "for “a red car” in French", "like IMG_1234.jpg, with “at night”" */
export function describeQuery() {
  const { mode, q, likeName, likeText, imageFile } = state.query;
  const lang = langParam(state.lang, state.langs);
  const inLang = lang ? ` in ${(state.langs && state.langs.names.get(lang)) || lang}` : '';
  if (mode === 'text') return `for “${q}”${inLang}`;
  if (mode === 'similar') {
    const like = likeName ? `like ${likeName}` : 'like the chosen image';
    return likeText ? `${like}, with “${likeText}”${inLang}` : like;
  }
  if (mode === 'image') return `like ${imageFile?.name || 'your image'}`;
  return '';
}

/** The status line: how many, of what, narrowed how, under which cut, how fast. */
export function renderStatus() {
  if (state.failed && state.items.length === 0) {
    els.status.textContent = '';
    return;
  }
  const n = state.items.length;
  const more = state.done ? '' : '+';
  const filtered = filterCount(state.filters) > 0 ? ` · ${describeFilters(state.filters)}` : '';
  let text;
  if (state.query.mode === 'browse') {
    const total = state.total ?? n;
    text = `${total.toLocaleString()} image${total === 1 ? '' : 's'} in the library${filtered}`;
    if (state.sort !== 'relevance') text += state.sort === 'date_desc' ? ' · newest first' : ' · oldest first';
    if (state.jumpedTo) text += ` · from ${state.jumpedTo}`;
  } else {
    text = `${n.toLocaleString()}${more} result${n === 1 && !more ? '' : 's'} ${describeQuery()}${filtered}`;
    const cut = cutShown(); // the cut the server applied (or the one asked for)
    if (cut > 0) text += ` · relevance ≥ ${cut.toFixed(2)}`;
    if (typeof state.tookMs === 'number') text += ` · ${Math.round(state.tookMs)} ms`;
  }
  els.status.textContent = text;
}

/** The empty state: why nothing is shown, and the one action that helps. */
export function renderEmpty() {
  const show = state.items.length === 0 && state.done && !state.failed;
  els.empty.hidden = !show;
  els.results.hidden = show;
  if (!show) return;
  const { mode, q } = state.query;
  const cut = cutShown();
  const filtered = filterCount(state.filters) > 0;
  let title;
  let text;
  /** @type {[string, () => void] | null} */
  let action = null;
  if (mode === 'browse' && hooks.jobsRunning()) {
    title = 'Indexing your photos…';
    text = 'Images appear here as soon as they are ready.';
    action = ['Show progress', () => hooks.openPanel(false)];
  } else if (mode === 'browse') {
    title = 'Your library is empty';
    text = 'Add a folder of photos: they become searchable as soon as they are indexed.';
    action = ['Add a folder', () => hooks.openPanel(true)];
  } else if (cut > 0) {
    title = `Nothing above relevance ${cut.toFixed(2)}`;
    text = `No image scores at least ${cut.toFixed(2)} ${describeQuery()}. Lower the threshold to see more.`;
    const raised = state.cutOverride !== null && state.cutOverride > (state.cutDefault ?? 0);
    // above the server's default: back to it; at (or below) it: everything
    action = raised
      ? ['Reset threshold', () => (setCut(null), run())]
      : ['Show weaker results', () => (setCut(0), run({ push: true }))];
  } else if (filtered) {
    title = mode === 'text' ? `No matches for “${q}” with these filters` : 'Nothing similar with these filters';
    text = `Nothing matches with these filters: ${describeFilters(state.filters)}. Change or reset them to see more.`;
    action = ['Reset filters', () => hooks.resetFilters()];
  } else if (mode === 'text') {
    title = `No matches for “${q}”`;
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

/** @type {(() => void) | null} */
let errorRetry = null;

/**
 * The error banner, with "Try again" when `retry` is given.
 * @param {string} message
 * @param {() => void} [retry]
 */
export function showError(message, retry) {
  errorRetry = retry || null;
  els.errorText.textContent = message;
  els.errorRetry.hidden = !retry;
  els.error.hidden = false;
}

export function hideError() {
  els.error.hidden = true;
  errorRetry = null;
}

/** @param {number} index */
export function focusTile(index) {
  const button = els.results.querySelector(`.tile-btn[data-index="${Number(index)}"]`);
  if (button instanceof HTMLElement) {
    button.focus();
    button.scrollIntoView({ block: 'nearest' });
  }
}

/** How many tiles a row holds (the first row's). */
export function gridColumns() {
  const tiles = els.results.querySelectorAll('.tile');
  if (!tiles.length) return 1;
  const top = Math.round(tiles[0].getBoundingClientRect().top);
  let n = 0;
  for (const t of tiles) {
    if (Math.round(t.getBoundingClientRect().top) !== top) break;
    n += 1;
  }
  return Math.max(1, n);
}

/**
 * Move the focus `delta` tiles from `from`, loading the next page when it goes past the end.
 * @param {number} from
 * @param {number} delta
 */
export async function moveFocus(from, delta) {
  let target = clamp(from + delta, 0, Number.MAX_SAFE_INTEGER);
  if (target >= state.items.length && !state.done) await loadPage();
  target = Math.min(target, state.items.length - 1);
  if (target >= 0) focusTile(target);
}

/**
 * Wire the grid's own controls: a tile opens the detail view through `onOpen`.
 * @param {(index: number) => void} onOpen
 */
export function initGrid(onOpen) {
  els.results.addEventListener('click', (event) => {
    const button = event.target instanceof Element ? event.target.closest('.tile-btn') : null;
    if (!(button instanceof HTMLElement)) return;
    if (button.dataset.longPress) {
      delete button.dataset.longPress; // the long press showed the actions: no opening
      return;
    }
    onOpen(Number(button.dataset.index));
  });
  els.loadMore.addEventListener('click', () => loadPage());
  els.errorRetry.addEventListener('click', () => {
    const retry = errorRetry;
    hideError();
    if (retry) retry();
  });
  els.errorClose.addEventListener('click', hideError);
  new IntersectionObserver(
    (entries) => {
      if (entries.some((e) => e.isIntersecting)) maybeLoadMore();
    },
    { rootMargin: `${SCROLL_MARGIN_PX}px 0px` },
  ).observe(els.sentinel);
}
