// @ts-check
// The filters panel: folder, capture dates, formats and a text search's mode (by picture, by
// words or both; the server's default unless chosen). They narrow searches and browsing; a
// checkbox, a date or Enter in the folder box applies at once, typing a folder applies after a
// pause (a burst of typing is one history entry, like the query). The form shows the store's
// filters (a link's, after back/forward) and the badge counts them.

import { els } from './dom.js';
import { renderStatus, run } from './grid.js';
import { emptyFilters, setFilters, state, subscribe } from './store.js';
import { day, filterCount, sameFilters, searchMode, syncUrl } from './url.js';
import { debounce } from './util.js';

/** @typedef {import('./store.js').Filters} Filters */

const DEBOUNCE_MS = 250;
const TYPING_BURST_MS = 2000;
let lastFolderCommit = 0;

/** @returns {Filters} what the form says */
function filtersFromForm() {
  return {
    folder: els.filterFolder.value.trim(),
    from: day(els.filterFrom.value),
    to: day(els.filterTo.value),
    formats: els.filterFormats.filter((box) => box.checked).map((box) => box.value),
    mode: searchMode(els.filterMode.value),
  };
}

/** Put the store's filters into the form (not the other way round). */
function writeForm() {
  const f = state.filters;
  if (els.filterFolder.value.trim() !== f.folder) els.filterFolder.value = f.folder;
  els.filterFrom.value = f.from;
  els.filterTo.value = f.to;
  for (const box of els.filterFormats) box.checked = f.formats.includes(box.value);
  els.filterMode.value = f.mode;
}

/** Count the filters on the toggle's badge; the date pickers refuse reversed ranges. */
function renderFilters() {
  const f = state.filters;
  const n = filterCount(f);
  els.filtersBadge.hidden = n === 0;
  els.filtersBadge.textContent = String(n);
  els.filtersToggle.setAttribute('aria-label', n ? `Filters (${n} active)` : 'Filters');
  els.filtersReset.disabled = n === 0;
  // the pickers refuse a range that ends before it starts
  els.filterFrom.max = f.to || '';
  els.filterTo.min = f.from || '';
  els.filtersNote.hidden = true;
}

/** @param {boolean} focus */
export function openFilters(focus) {
  els.filters.hidden = false;
  els.filtersToggle.setAttribute('aria-expanded', 'true');
  if (focus) els.filterFolder.focus();
}

function closeFilters() {
  els.filters.hidden = true;
  els.filtersToggle.setAttribute('aria-expanded', 'false');
  els.filtersToggle.focus();
}

/**
 * New filters: a text search runs again; other views keep them for the next search (and in a
 * shared link).
 * @param {boolean} push
 */
function changed(push) {
  if (state.query.mode === 'text') {
    run({ push });
  } else {
    syncUrl(push);
    renderStatus();
  }
}

/** @param {{ push: boolean }} options */
function applyFilters({ push }) {
  const next = filtersFromForm();
  if (sameFilters(next, state.filters)) return;
  setFilters(next);
  changed(push);
}

export const folderTyped = debounce(() => {
  const now = Date.now();
  const push = now - lastFolderCommit > TYPING_BURST_MS;
  lastFolderCommit = now;
  applyFilters({ push });
}, DEBOUNCE_MS);

export function resetFilters() {
  folderTyped.cancel();
  const had = filterCount(state.filters) > 0;
  setFilters(emptyFilters());
  if (had) changed(true);
}

function applyNow() {
  folderTyped.cancel();
  lastFolderCommit = 0;
  applyFilters({ push: true });
}

export function initFilters() {
  subscribe((change) => {
    if (change === 'filters') writeForm();
    if (change === 'filters' || change === 'query') renderFilters();
  });
  els.filterFolder.addEventListener('input', folderTyped);
  els.filters.addEventListener('change', () => {
    folderTyped.cancel();
    applyFilters({ push: true });
  });
  els.filters.addEventListener('submit', (event) => {
    event.preventDefault();
    applyNow();
  });
  els.filters.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && event.target === els.filterFolder) {
      // three text-like fields and no submit button: Enter does not submit the form by itself
      event.preventDefault();
      applyNow();
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
}
