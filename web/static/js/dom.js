// @ts-check
// The page's elements, looked up once and typed, and `h`, the one way views build markup:
// everything the API returns is set as text (never parsed as HTML).

/**
 * The element with this id, checked to be of `type` (a missing or different element is a bug in
 * index.html, said at once rather than as a null later).
 * @template {Element} T
 * @param {string} id
 * @param {{ new (): T, prototype: T }} type
 * @returns {T}
 */
export function byId(id, type) {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`#${id} is missing from the page or is not a ${type.name}`);
  return el;
}

/** @typedef {string | Node | null | undefined | false} Child */
/** @typedef {Record<string, unknown>} Props */

/**
 * Build an element. `class` sets the class name, `text` the text, `on<event>` a listener; other
 * props are attributes (true: present, null/undefined/false: left out). Strings among the
 * children become text nodes.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Props} [props]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = String(value);
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), /** @type {EventListener} */ (value));
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

const B = HTMLButtonElement;
const I = HTMLInputElement;
const E = HTMLElement;

export const els = {
  form: byId('search-form', HTMLFormElement),
  q: byId('q', I),
  langPicker: byId('lang-picker', E),
  lang: byId('lang', HTMLSelectElement),
  fileInput: byId('file-input', I),
  chip: byId('query-chip', E),
  chipImg: byId('query-chip-img', HTMLImageElement),
  chipLabel: byId('query-chip-label', E),
  chipClear: byId('query-chip-clear', B),
  minScore: byId('min-score', I),
  minScoreValue: byId('min-score-value', E),
  sort: byId('sort', HTMLSelectElement),
  status: byId('status', E),
  filtersToggle: byId('filters-toggle', B),
  filtersBadge: byId('filters-badge', E),
  filters: byId('filters', HTMLFormElement),
  filterFolder: byId('filter-folder', I),
  filterFrom: byId('filter-from', I),
  filterTo: byId('filter-to', I),
  filterFormats: /** @type {HTMLInputElement[]} */ (Array.from(document.querySelectorAll('#filters input[name="format"]'))),
  filterMode: byId('filter-mode', HTMLSelectElement),
  filtersReset: byId('filters-reset', B),
  filtersNote: byId('filters-note', E),
  error: byId('error', E),
  errorText: byId('error-text', E),
  errorRetry: byId('error-retry', B),
  errorClose: byId('error-close', B),
  results: byId('results', E),
  empty: byId('empty', E),
  emptyTitle: byId('empty-title', E),
  emptyText: byId('empty-text', E),
  emptyAction: byId('empty-action', B),
  sentinel: byId('sentinel', E),
  spinner: byId('spinner', E),
  loadMore: byId('load-more', B),
  footer: byId('footer', E),
  hiddenNote: byId('hidden-note', E),
  hiddenText: byId('hidden-text', E),
  hiddenShow: byId('hidden-show', B),
  ingestToggle: byId('ingest-toggle', B),
  jobsBadge: byId('jobs-badge', E),
  panel: byId('ingest-panel', E),
  panelClose: byId('ingest-close', B),
  ingestForm: byId('ingest-form', HTMLFormElement),
  ingestPath: byId('ingest-path', I),
  ingestRecursive: byId('ingest-recursive', I),
  ingestWatch: byId('ingest-watch', I),
  ingestSubmit: byId('ingest-submit', B),
  ingestError: byId('ingest-error', E),
  reindex: byId('reindex', B),
  jobs: byId('jobs', E),
  jobsEmpty: byId('jobs-empty', E),
  detail: byId('detail', HTMLDialogElement),
  detailImg: byId('detail-img', HTMLImageElement),
  detailTitle: byId('detail-title', E),
  detailClose: byId('detail-close', B),
  detailPrev: byId('detail-prev', B),
  detailNext: byId('detail-next', B),
  detailMeta: byId('detail-meta', E),
  detailWhy: byId('detail-why', E),
  detailError: byId('detail-error', E),
  detailOpen: byId('detail-open', HTMLAnchorElement),
  detailSimilar: byId('detail-similar', B),
  detailDelete: byId('detail-delete', B),
  detailText: byId('detail-text', E),
  similar: byId('similar', E),
  similarStatus: byId('similar-status', E),
  similarRefine: byId('similar-refine', HTMLFormElement),
  similarText: byId('similar-text', I),
  tokenDialog: byId('token-dialog', HTMLDialogElement),
  tokenForm: byId('token-form', HTMLFormElement),
  tokenReason: byId('token-reason', E),
  tokenInput: byId('token-input', I),
  tokenCancel: byId('token-cancel', B),
  dropOverlay: byId('drop-overlay', E),
  scrubber: byId('scrubber', E),
  scrubberList: byId('scrubber-list', E),
  selectionBar: byId('selection-bar', E),
  selectionCount: byId('selection-count', E),
  selectionRemove: byId('selection-remove', B),
  selectionClear: byId('selection-clear', B),
  menuToggle: byId('menu-toggle', B),
  menuBadge: byId('menu-badge', E),
  actions: byId('actions', E),
};
