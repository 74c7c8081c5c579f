// @ts-check
// The sign-in page: exchanges the API token for the server's session cookie (HttpOnly,
// SameSite=Strict), then opens the gallery. No inline script: the pages' CSP forbids it. It
// stands alone: the gallery's modules are served only after signing in.

const form = /** @type {HTMLFormElement} */ (document.getElementById('signin-form'));
const input = /** @type {HTMLInputElement} */ (document.getElementById('signin-token'));
const error = /** @type {HTMLElement} */ (document.getElementById('signin-error'));

/** @param {string} message */
function showError(message) {
  error.textContent = message;
  error.hidden = false;
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  error.hidden = true;
  const token = input.value.trim();
  if (!token) return;
  let res;
  try {
    res = await fetch('api/session', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ token }),
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
    const body = await res.json();
    if (body && typeof body.detail === 'string') detail = body.detail;
  } catch {
    /* not JSON: keep the status line */
  }
  showError(detail);
  input.select();
});

input.focus();

export {}; // a module (the page loads it with type="module")
