// @ts-check
// clipsearch gallery: plain ES modules, no framework, no build step. Talks only to the REST API
// (docs/ARCHITECTURE.md). Everything the API returns is treated as untrusted text: the DOM is
// built with createElement/textContent only, and URLs are accepted only when same-origin.
//
// This entry point wires the views (js/*.js) together and starts the page: the state lives in
// js/store.js and changes only through its actions; the address bar in js/url.js.

import { initAccount } from './js/account.js';
import { api, loadSession, thumbUrl } from './js/api.js';

/** @typedef {import('./js/util.js').Item} Item */
import { els } from './js/dom.js';
import { detailHooks, initDetail, openDetail, stepDetail } from './js/detail.js';
import { initDuplicatesView } from './js/duplicates.js';
import { initAlbumsView } from './js/albums.js';
import { initTagsView } from './js/tags.js';
import { folderTyped, initFilters, openFilters, resetFilters } from './js/filters.js';
import { focusTile, gridColumns, hooks, initGrid, moveFocus, renderEmpty, rerenderGrid, run } from './js/grid.js';
import { absorbJobs, initJobs, jobHooks, jobsRunning, openPanel, pollJobs, refreshHealth } from './js/jobs.js';
import { initRemovedView } from './js/removed.js';
import { afterPage, applyLang, initSearch, likeQuery, loadLanguages, restoreImageQuery, typed } from './js/search.js';
import { clearSelection, removeItems, setCut, setCutDefault, setFilters, setQuery, setSort, state, subscribe } from './js/store.js';
import { initFolderPicker } from './js/folderpicker.js';
import { loadScrubber, timelineHooks } from './js/timeline.js';
import { filterCount, readUrl } from './js/url.js';
import { baseName, idPath } from './js/util.js';

/**
 * Read the view from the address bar (first load, back/forward).
 * @param {unknown} historyState
 */
function loadFromUrl(historyState) {
  const wanted = readUrl(window.location.search);
  setCut(wanted.cut); // null: the server's default cut
  setSort(wanted.sort);
  applyLang(wanted.lang);
  setFilters(wanted.filters);
  if (filterCount(wanted.filters) > 0) openFilters(false);
  const key = /** @type {{ imageKey?: unknown } | null} */ (historyState)?.imageKey;
  if (restoreImageQuery(key)) {
    /* the image search this entry was */
  } else if (wanted.like) {
    likeQuery(wanted.like, undefined, undefined, wanted.likeText);
  } else if (wanted.q) {
    setQuery({ mode: 'text', q: wanted.q });
  } else {
    setQuery({ mode: 'browse' });
  }
  els.q.value = state.query.mode === 'text' ? state.query.q : '';
}

/** Where the relevance slider starts: the server's default cut (GET /api/v1/health). */
async function loadDefaults() {
  try {
    const health = await api('/health');
    setCutDefault(health?.gallery_min_relevance ?? null);
  } catch {
    /* unknown until the first search says which cut it applied */
  }
}

/** Removed images leave the grid; the footer counts again. */
function dropFromGrid(/** @type {(string | number)[]} */ ids, /** @type {string[]} */ names) {
  removeItems(ids);
  rerenderGrid();
  els.status.textContent = `Removed ${names.join(', ')} from the library.`;
  renderEmpty();
  refreshHealth();
}

/** @param {KeyboardEvent} event */
function onKey(event) {
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
  if (event.key === 'Escape' && els.actions.classList.contains('open')) {
    setMenu(false);
    els.menuToggle.focus();
    return;
  }

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
  if (!(tileButton instanceof HTMLElement)) return;
  const index = Number(tileButton.dataset.index);
  const cols = gridColumns();
  /** @type {Record<string, number>} */
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
}

/** The selection bar: how many tiles are selected, and what can be done with them. */
function renderSelection() {
  const n = state.selected.size;
  els.selectionBar.hidden = n === 0;
  els.selectionCount.textContent = `${n} selected`;
}

async function removeSelected() {
  const chosen = state.items.filter((item) => state.selected.has(String(item.id)));
  if (!chosen.length) return;
  const what = chosen.length === 1 ? `“${baseName(chosen[0].path)}”` : `these ${chosen.length} pictures`;
  if (!window.confirm(`Remove ${what} from the library? The files stay on disk; Removed brings them back.`)) return;
  /** @type {Item[]} */
  const gone = [];
  for (const item of chosen) {
    try {
      await api(`/images/${idPath(item.id)}`, { method: 'DELETE' });
      gone.push(item);
    } catch (err) {
      els.status.textContent = `Could not remove ${baseName(item.path)}: ${err instanceof Error ? err.message : String(err)}`;
      break;
    }
  }
  if (gone.length) dropFromGrid(gone.map((x) => x.id), gone.map((x) => baseName(x.path)));
  renderSelection();
}

/** The phone's Menu: the top bar's actions, labelled, in a list under it. */
function setMenu(/** @type {boolean} */ open) {
  els.actions.classList.toggle('open', open);
  els.menuToggle.setAttribute('aria-expanded', open ? 'true' : 'false');
}

// the views ask each other through hooks, so that no module imports in a ring
Object.assign(hooks, {
  jobsRunning,
  openPanel,
  resetFilters,
  afterPage,
  like: (/** @type {Item} */ item) => {
    els.q.value = '';
    likeQuery(String(item.id), baseName(item.path), thumbUrl(item));
    run({ push: true });
  },
  selectionChanged: renderSelection,
});
timelineHooks.jump = () => run({ push: false });
subscribe((change) => {
  if (change === 'query' || change === 'filters' || change === 'sort') loadScrubber();
  if (change === 'results' && els.selectionBar.hidden !== (state.selected.size === 0)) renderSelection();
});
els.selectionClear.addEventListener('click', () => {
  clearSelection();
  for (const tile of els.results.querySelectorAll('.tile.selected')) tile.classList.remove('selected');
  for (const b of els.results.querySelectorAll('.tile-select[aria-pressed="true"]')) b.setAttribute('aria-pressed', 'false');
  renderSelection();
});
els.selectionRemove.addEventListener('click', () => removeSelected());
els.menuToggle.addEventListener('click', () => setMenu(!els.actions.classList.contains('open')));
els.actions.addEventListener('click', (event) => {
  if (event.target instanceof Element && event.target.closest('button')) setMenu(false);
});
document.addEventListener('click', (event) => {
  if (event.target instanceof Node && !els.actions.contains(event.target) && !els.menuToggle.contains(event.target)) setMenu(false);
});
// the jobs badge shows on the Menu too (on a phone the button that carries it is in the menu)
new MutationObserver(() => {
  els.menuBadge.hidden = els.jobsBadge.hidden;
  els.menuBadge.textContent = els.jobsBadge.textContent;
}).observe(els.jobsBadge, { attributes: true, childList: true, characterData: true, subtree: true });
detailHooks.refreshHealth = refreshHealth;
jobHooks.modelMayHaveChanged = () => {
  loadLanguages().then(() => applyLang(state.lang));
};

initGrid(openDetail);
initDetail();
initFilters();
initSearch();
// the timeline has no "best match": its Sort menu offers the two date orders (newest first unless
// the user chose otherwise); registered after the search's own listener, so it has the last word
const bestMatch = els.sort.querySelector('option[value="relevance"]');
subscribe((change) => {
  if (change !== 'query' && change !== 'sort') return;
  const browse = state.query.mode === 'browse';
  if (bestMatch instanceof HTMLOptionElement) bestMatch.hidden = bestMatch.disabled = browse;
  els.sort.value = browse && state.sort === 'relevance' ? 'date_desc' : state.sort;
});
initJobs();
initFolderPicker(els.ingestPath);
// The Removed view: restoring queues an ingest job, followed like any other.
initRemovedView((names, queued) => {
  els.status.textContent = `Restored ${names.join(', ')}: it comes back once its folder is scanned.`;
  const list = queued.filter((job) => job && job.id !== undefined);
  if (list.length) absorbJobs(list);
  pollJobs();
});
// The Duplicates view: removing members goes through the remove API.
initDuplicatesView(dropFromGrid);
initTagsView(); // Tags, and the detail view's tags with Confirm / Reject (js/tags.js)
initAlbumsView(); // Albums: hand-picked and smart (js/albums.js)

document.addEventListener('keydown', onKey);
window.addEventListener('popstate', (event) => {
  typed.cancel();
  folderTyped.cancel();
  if (els.detail.open) els.detail.close();
  loadFromUrl(event.state);
  run({ push: false });
});

// where the relevance slider starts (the server's default cut); the query languages
await Promise.all([loadDefaults(), loadLanguages()]);
loadFromUrl(window.history.state);
await loadSession(); // the CSRF value for changes, when signed in
initAccount(); // the signed-in account in the top bar (js/account.js)
run({ push: false });
refreshHealth();
pollJobs(); // shows the badge when jobs are running; polls every 10 s otherwise (watched folders)
document.documentElement.dataset.ready = 'true';
