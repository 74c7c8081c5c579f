// @ts-check
// The sign-in page: an account's name and password (or the server's API token) for the server's
// session cookie (HttpOnly, SameSite=Strict), then the gallery. The server says whether it keeps
// accounts (GET /api/v1/session); the token form stays one click away. No inline script: the pages'
// CSP forbids it. It stands alone: the gallery's modules are served only after signing in.

/** The API's version root, as the gallery's (js/api.js: API_ROOT); this page cannot import it. */
const API_ROOT = '/api/v1';

/** @param {string} id */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const form = /** @type {HTMLFormElement} */ (byId('signin-form'));
const account = byId('signin-account');
const withToken = byId('signin-with-token');
const nameInput = /** @type {HTMLInputElement} */ (byId('signin-name'));
const passwordInput = /** @type {HTMLInputElement} */ (byId('signin-password'));
const tokenInput = /** @type {HTMLInputElement} */ (byId('signin-token'));
const switcher = /** @type {HTMLButtonElement} */ (byId('signin-switch'));
const error = byId('signin-error');

let useAccount = false;

/** @param {string} message */
function showError(message) {
  error.textContent = message;
  error.hidden = false;
}

/** @param {boolean} accounts */
function showForm(accounts) {
  useAccount = accounts;
  account.hidden = !accounts;
  withToken.hidden = accounts;
  switcher.textContent = accounts ? 'Use the API token' : 'Use an account';
  (accounts ? nameInput : tokenInput).focus();
}

async function start() {
  let accounts = false;
  try {
    const res = await fetch(`${API_ROOT}/session`, { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    if (res.ok) {
      const info = await res.json();
      accounts = Boolean(info.accounts || info.sso);
      byId('signin-sso').hidden = !info.sso;
    }
  } catch {
    /* the server is unreachable: the submit says so */
  }
  switcher.hidden = !accounts;
  showForm(accounts);
}

switcher.addEventListener('click', () => {
  error.hidden = true;
  showForm(!useAccount);
});

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  error.hidden = true;
  /** @type {Record<string, string>} */
  let body;
  if (useAccount) {
    if (!nameInput.value.trim() || !passwordInput.value) return;
    body = { name: nameInput.value.trim(), password: passwordInput.value };
  } else {
    const token = tokenInput.value.trim();
    if (!token) return;
    body = { token };
  }
  let res;
  try {
    res = await fetch(`${API_ROOT}/session`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch {
    showError('Could not reach the clipsearch server. Check that it is still running, then try again.');
    return;
  }
  if (res.ok) {
    window.location.replace('./');
    return;
  }
  let detail = `The server answered ${res.status}.`;
  try {
    const answer = await res.json();
    if (answer && typeof answer.detail === 'string') detail = answer.detail;
  } catch {
    /* not JSON: keep the status line */
  }
  showError(detail);
  passwordInput.value = '';
  (useAccount ? passwordInput : tokenInput).select();
});

start();

export {}; // a module (the page loads it with type="module")
