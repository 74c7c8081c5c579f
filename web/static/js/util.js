// @ts-check
// Small pure helpers of the gallery: no DOM, no state, no network. Tested with node's own test
// runner (tests/web/node/).

/**
 * What the API says about one image (a search hit, a listing row, GET /api/v1/images/{id}). Every
 * field comes from the network: treated as untrusted text.
 * @typedef {object} Item
 * @property {number | string} id
 * @property {string} [path]
 * @property {number} [score] the cosine similarity
 * @property {number} [relevance] the calibrated relevance (0..1)
 * @property {string} [state]
 * @property {string | null} [error]
 * @property {number | null} [size]
 * @property {number | null} [width]
 * @property {number | null} [height]
 * @property {string | null} [format]
 * @property {string | null} [taken_at]
 * @property {string} [thumbnail_url]
 * @property {string} [file_url]
 * @property {string} [preview_url]
 * @property {string[]} [match] why a hit matched: "semantic", "text", "filename", ...
 * @property {string[]} [words] the query's words found in its text
 * @property {string | null} [band] how well its picture matches: strong, fair or weak
 */

// The detail view shows a preview (GET /api/v1/images/{id}/preview, a JPEG of at most 2048 px) for
// formats browsers cannot display, and for originals too large to load quickly.
const PREVIEW_FORMATS = new Set(['TIFF', 'HEIF']);
const PREVIEW_OVER_SIDE = 4096; // pixels, the longest side
const PREVIEW_OVER_BYTES = 12 * 1024 * 1024;

/**
 * A same-origin URL from the API as path and query, or null (refuses javascript:, data:, other
 * hosts).
 * @param {unknown} value
 * @param {string} [base] the page's address (window.location.href in the browser)
 * @returns {string | null}
 */
export function safeUrl(value, base = globalThis.location?.href) {
  if (typeof value !== 'string' || value === '' || !base) return null;
  try {
    const url = new URL(value, base);
    if (url.origin !== new URL(base).origin) return null;
    return url.pathname + url.search;
  } catch {
    return null;
  }
}

/** @param {unknown} id */
export const idPath = (id) => encodeURIComponent(String(id));

/**
 * Whether the detail view shows the preview rather than the original file.
 * @param {Item} item
 */
export function wantsPreview(item) {
  if (PREVIEW_FORMATS.has(String(item.format ?? '').toUpperCase())) return true;
  if (Math.max(Number(item.width) || 0, Number(item.height) || 0) > PREVIEW_OVER_SIDE) return true;
  return (Number(item.size) || 0) > PREVIEW_OVER_BYTES;
}

/**
 * The file name of a path, POSIX or Windows.
 * @param {unknown} path
 */
export function baseName(path) {
  const text = String(path ?? '');
  // POSIX paths split on '/'; a Windows server's paths (no '/') on '\\'
  const parts = text.split(text.includes('/') ? '/' : '\\');
  return parts[parts.length - 1] || text || 'image';
}

/**
 * "1.5 MB", or null when `bytes` is not a number.
 * @param {unknown} bytes
 * @returns {string | null}
 */
export function formatBytes(bytes) {
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

/**
 * A date in the reader's locale, the text itself when it is not a date, null when empty.
 * @param {unknown} value
 * @returns {string | null}
 */
export function formatDate(value) {
  if (!value) return null;
  const date = new Date(/** @type {string | number} */ (value));
  if (Number.isNaN(date.getTime())) return String(value);
  return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(date);
}

/**
 * @param {unknown} score
 * @returns {string | null}
 */
export const formatScore = (score) => (typeof score === 'number' ? score.toFixed(2) : null);

/**
 * @param {number} value
 * @param {number} lo
 * @param {number} hi
 */
export const clamp = (value, lo, hi) => Math.min(hi, Math.max(lo, value));

/**
 * A result's calibrated relevance (its raw score from an older server).
 * @param {Item} item
 * @returns {number | undefined}
 */
export const relevanceOf = (item) => (typeof item.relevance === 'number' ? item.relevance : item.score);

/**
 * A query string of the parameters that have a value (null, undefined and '' are left out).
 * @param {Record<string, unknown>} params
 */
export function queryString(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') search.set(key, String(value));
  }
  return search.toString();
}

/**
 * `fn` called once calls stop for `ms`; `.cancel()` drops a pending call.
 * @template {unknown[]} A
 * @param {(...args: A) => void} fn
 * @param {number} ms
 * @returns {((...args: A) => void) & { cancel: () => void }}
 */
export function debounce(fn, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  /** @param {A} args */
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/**
 * The relevance cut a search response says it applied: `min_relevance` at the top of the answer
 * (or in its `query` echo); null when the answer does not say.
 * @param {unknown} data
 * @returns {number | null}
 */
export function appliedCut(data) {
  if (!data || typeof data !== 'object') return null;
  const top = /** @type {{ min_relevance?: unknown, query?: unknown }} */ (data);
  const echo = top.query && typeof top.query === 'object' ? /** @type {{ min_relevance?: unknown }} */ (top.query) : null;
  for (const value of [top.min_relevance, echo?.min_relevance]) {
    if (typeof value === 'number' && Number.isFinite(value)) return clamp(value, 0, 1);
  }
  return null;
}
