// @ts-check
// API access. JSON errors are {"detail": ...}; a 401 asks for the token (a modal) and signs in
// with it. The session is an HttpOnly cookie the server sets on sign-in (POST /api/v1/session); the
// page never holds the token. Changes made with the cookie carry its CSRF value (GET
// /api/v1/session).

import { els } from './dom.js';
import { idPath, safeUrl } from './util.js';

/** @typedef {import('./util.js').Item} Item */

/**
 * The API version the gallery speaks: every request and every image URL it builds starts here
 * (the unversioned /api/... paths are deprecated aliases). The sign-in page, which stands alone,
 * names it once more (signin.js).
 */
export const API_ROOT = '/api/v1';

/**
 * A path of the API: `/images/3/thumbnail` -> `/api/v1/images/3/thumbnail`.
 * @param {string} path starting with `/`
 */
export const apiUrl = (path) => `${API_ROOT}${path}`;

/** @param {Item} item */
export const thumbUrl = (item) => safeUrl(item.thumbnail_url) || apiUrl(`/images/${idPath(item.id)}/thumbnail`);
/** @param {Item} item */
export const fileUrl = (item) => safeUrl(item.file_url) || apiUrl(`/images/${idPath(item.id)}/file`);
/** @param {Item} item */
export const previewUrl = (item) => safeUrl(item.preview_url) || apiUrl(`/images/${idPath(item.id)}/preview`);

export class ApiError extends Error {
  /**
   * @param {number} status the HTTP status; 0 when the server could not be reached
   * @param {string} message a sentence a user can act on
   */
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

/**
 * @typedef {object} ApiOptions
 * @property {string} [method]
 * @property {unknown} [json] a JSON body
 * @property {FormData} [form] a multipart body
 * @property {AbortSignal} [signal]
 * @property {boolean} [ask] whether a 401 asks for the token (false for background polls)
 */

/** @typedef {(path: string, options?: ApiOptions) => Promise<any>} Api */

/** @type {string | null} */
let csrf = null;
/** @type {Promise<boolean> | null} */
let tokenPrompt = null;

/**
 * The session's CSRF value, when signed in; null otherwise.
 * @returns {Promise<unknown>}
 */
export async function loadSession() {
  try {
    const res = await fetch(apiUrl('/session'), { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    if (!res.ok) return null;
    const info = await res.json();
    csrf = info.csrf || null;
    return info;
  } catch {
    return null;
  }
}

/**
 * Exchange a token for the session cookie; resolves to null on success, else the server's reason.
 * @param {string} token
 * @returns {Promise<string | null>}
 */
async function signIn(token) {
  let res;
  try {
    res = await fetch(apiUrl('/session'), {
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

/**
 * What went wrong, from an error response: its `detail` (FastAPI's validation list joined), else
 * the status line.
 * @param {Response} res
 * @returns {Promise<string>}
 */
async function readDetail(res) {
  /** @type {any} */
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  return describeDetail(body && body.detail, res.status, res.statusText);
}

/**
 * @param {unknown} detail an error body's `detail`
 * @param {number} status
 * @param {string} [statusText]
 * @returns {string}
 */
export function describeDetail(detail, status, statusText = '') {
  if (typeof detail === 'string' && detail.trim()) return detail;
  if (Array.isArray(detail) && detail.length) {
    // FastAPI validation errors: [{loc: [...], msg}]
    return detail
      .map((e) => {
        const loc = Array.isArray(e?.loc) ? e.loc.filter((/** @type {unknown} */ p) => p !== 'body' && p !== 'query').join('.') : '';
        return loc ? `${loc}: ${e?.msg ?? 'invalid'}` : String(e?.msg ?? e);
      })
      .join('; ');
  }
  return `The server answered ${status}${statusText ? ` ${statusText}` : ''}.`;
}

/**
 * Ask for the API token in a modal and sign in with it; resolves to true when signed in.
 * @param {string} reason
 * @returns {Promise<boolean>}
 */
function askToken(reason) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const listeners = new AbortController();
    /** @param {boolean} value */
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

/**
 * Call the API at `path` under the version's root (`/search` is GET /api/v1/search): the decoded
 * JSON answer (null for 204), or an ApiError that says why.
 * @type {Api}
 */
export async function api(path, { method = 'GET', json, form, signal, ask = true } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    /** @type {Record<string, string>} */
    const headers = { Accept: 'application/json' };
    /** @type {BodyInit | undefined} */
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
      res = await fetch(apiUrl(path), { method, headers, body, signal, credentials: 'same-origin' });
    } catch (err) {
      if (err instanceof Error && err.name === 'AbortError') throw err;
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

/**
 * An error's message for the page (ApiError's is written for users).
 * @param {unknown} err
 */
export const messageOf = (err) => (err instanceof Error ? err.message : String(err));
