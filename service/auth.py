"""Who may read and who may change the library.

With ``CLIPSEARCH_API_TOKEN`` set, every read (API, originals, thumbnails, the gallery) needs
either the token (``Authorization: Bearer <token>``) or a session cookie the gallery's sign-in
page got for it; ``CLIPSEARCH_PUBLIC_READ=true`` opens reads. Writes (ingest, reindex, delete)
always need the token or the cookie, and a cookie only counts on a write that also carries the
session's CSRF value in ``X-CSRF-Token`` (a header no other site can make a browser send).

The session cookie is ``<expires>.<nonce>.<hmac>``: HMAC-SHA256 under a key derived from the token
(changing the token signs everybody out; API replicas with one token accept each other's cookies),
HttpOnly, SameSite=Strict, Secure on HTTPS. Signing out revokes the cookie on the server: its
nonce is kept (in memory and in ``revoked-sessions.json`` in the data folder, until the cookie
would have expired), so a copy of the cookie stops working too. The schemes are declared with
FastAPI's security classes, so /docs shows an "Authorize" button.

A token must be hard to guess: :func:`weak_token_reason` refuses short ones and obvious ones
(one character repeated, a run like ``0123456789abcdef`` or ``qwertyuiop...``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

log = logging.getLogger(__name__)

SESSION_COOKIE = "clipsearch_session"
MIN_TOKEN_LENGTH = 16
TOKEN_HOWTO = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
_KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm", "abcdefghijklmnopqrstuvwxyz")
CSRF_HEADER = "X-CSRF-Token"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="clipsearch"'}

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="The server's CLIPSEARCH_API_TOKEN, sent as `Authorization: Bearer <token>`.",
)
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="session",
    description="The gallery's session cookie (POST /api/session with the token sets it).",
)

BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
CookieDep = Annotated[str | None, Depends(cookie_scheme)]


def _predictable(a: str, b: str) -> bool:
    """``b`` after ``a`` is what a person typing an easy token would press next: the same key,
    the next or previous character, or a neighbour on a keyboard row."""
    a, b = a.lower(), b.lower()
    if a == b or abs(ord(a) - ord(b)) == 1:
        return True
    for row in _KEYBOARD_ROWS:
        i, j = row.find(a), row.find(b)
        if i >= 0 and j >= 0 and abs(i - j) == 1:
            return True
    return False


def weak_token_reason(token: str) -> str | None:
    """Why ``token`` is too easy to guess (None when it is not): shorter than 16 characters,
    spaces, fewer than 8 different characters, or mostly a run of neighbouring keys
    (``aaaaaaaaaaaaaaaa``, ``0123456789abcdef``, ``password12345678``, ``qwertyuiop...``)."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"it is shorter than {MIN_TOKEN_LENGTH} characters"
    if token.strip() != token or any(c.isspace() for c in token):
        return "it contains spaces"
    if len(set(token)) < 8:
        return f"it uses only {len(set(token))} different characters"
    surprises = sum(not _predictable(a, b) for a, b in itertools.pairwise(token))
    if surprises < 10:
        return "it is mostly a run of repeated or neighbouring characters"
    return None


def token_matches(expected: str, supplied: str) -> bool:
    """Constant-time comparison in the token's content."""
    return hmac.compare_digest(
        supplied.encode("utf-8", "surrogateescape"), expected.encode("utf-8")
    )


def check_bearer(expected: str | None, authorization: str | None) -> None:
    """Raise 401 unless ``authorization`` is ``Bearer <expected>``; no-op when ``expected`` is None."""
    if expected is None:
        return
    if not authorization:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="this endpoint needs the API token: send 'Authorization: Bearer "
            "<CLIPSEARCH_API_TOKEN>' (or sign in to the gallery at /signin.html)",
            headers=_CHALLENGE,
        )
    scheme, _, supplied = authorization.partition(" ")
    if not (scheme.lower() == "bearer" and token_matches(expected, supplied.strip())):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="invalid API token: send the server's CLIPSEARCH_API_TOKEN as "
            "'Authorization: Bearer <token>'",
            headers=_CHALLENGE,
        )


# --- session cookies --------------------------------------------------------------------------


def _key(token: str, purpose: bytes) -> bytes:
    return hmac.new(token.encode("utf-8"), b"clipsearch/" + purpose, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def make_session(token: str, max_age_s: float, now: float | None = None) -> str:
    """A signed session value valid for ``max_age_s`` seconds."""
    expires = int((now if now is not None else time.time()) + max_age_s)
    body = f"{expires}.{_b64(secrets.token_bytes(18))}"
    sig = _b64(hmac.new(_key(token, b"session"), body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}"


def session_valid(
    token: str, value: str | None, now: float | None = None, revoked: Revocations | None = None
) -> bool:
    """The cookie was signed with this token's key, has not expired and was not signed out."""
    if not value or len(value) > 200:
        return False
    body, _, sig = value.rpartition(".")
    expires, _, nonce = body.partition(".")
    want = _b64(hmac.new(_key(token, b"session"), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(sig.encode(), want.encode()):
        return False
    try:
        alive = int(expires) > (now if now is not None else time.time())
    except ValueError:
        return False
    return alive and not (revoked is not None and revoked.is_revoked(nonce))


class Revocations:
    """Sessions signed out before they expired: their nonces, until their expiry.

    Kept in memory and, when ``path`` is given, in a small JSON file written atomically, so a
    restart does not bring a signed-out cookie back. API replicas sharing one data folder read
    each other's sign-outs when the file changes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._nonces: dict[str, int] = {}
        self._mtime: float | None = None
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            stat = self.path.stat()
            if self._mtime == stat.st_mtime:
                return
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._mtime = stat.st_mtime
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("signed-out sessions not read from %s: %s", self.path, exc)
            return
        if isinstance(data, dict):
            for nonce, expires in data.items():
                if isinstance(nonce, str) and isinstance(expires, int):
                    self._nonces[nonce] = max(expires, self._nonces.get(nonce, 0))

    def is_revoked(self, nonce: str) -> bool:
        with self._lock:
            self._load()
            return nonce in self._nonces

    def revoke(self, value: str) -> None:
        """Sign out the session cookie ``value`` (already checked by the caller)."""
        expires_text, _, rest = value.partition(".")
        nonce = rest.partition(".")[0]
        try:
            expires = int(expires_text)
        except ValueError:
            return
        now = int(time.time())
        with self._lock:
            self._load()
            self._nonces[nonce] = expires
            self._nonces = {n: e for n, e in self._nonces.items() if e > now}
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._nonces), encoding="utf-8")
            os.replace(tmp, self.path)
            self._mtime = self.path.stat().st_mtime
        except OSError as exc:  # still revoked in this process
            log.warning("signed-out sessions not saved to %s: %s", self.path, exc)


def csrf_for(token: str, session: str) -> str:
    """The CSRF value that goes with a session (the gallery reads it from /api/session)."""
    return _b64(hmac.new(_key(token, b"csrf"), session.encode(), hashlib.sha256).digest())


# --- who is calling ---------------------------------------------------------------------------


def _settings(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.service.settings


def revocations(request: Request) -> Revocations | None:
    """The app's signed-out sessions (service.app.create_app sets them)."""
    found: Any = getattr(request.app.state, "revoked_sessions", None)
    return found if isinstance(found, Revocations) else None


def _session_ok(request: Request, token: str, cookie: str | None) -> bool:
    return session_valid(token, cookie, revoked=revocations(request))


def _bearer_ok(token: str, creds: HTTPAuthorizationCredentials | None) -> bool:
    return (
        creds is not None
        and creds.scheme.lower() == "bearer"
        and token_matches(token, creds.credentials)
    )


def is_authorised(request: Request) -> bool:
    """The caller holds the token (header or valid session cookie), or no token is set."""
    token = _settings(request).token
    if token is None:
        return True
    header = request.headers.get("authorization") or ""
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() == "bearer" and token_matches(token, supplied.strip()):
        return True
    return _session_ok(request, token, request.cookies.get(SESSION_COOKIE))


async def require_read(request: Request, creds: BearerDep, cookie: CookieDep) -> None:
    """Reads: open without a token or with CLIPSEARCH_PUBLIC_READ; else the token or a session."""
    settings = _settings(request)
    token = settings.token
    if token is None or settings.server.public_read:
        return
    if _bearer_ok(token, creds) or _session_ok(request, token, cookie):
        return
    check_bearer(token, request.headers.get("authorization"))  # raises with the right message
    raise HTTPException(  # pragma: no cover - check_bearer always raises here
        status.HTTP_401_UNAUTHORIZED, detail="sign in first", headers=_CHALLENGE
    )


async def require_private_read(request: Request, creds: BearerDep, cookie: CookieDep) -> None:
    """Reads that show server paths and settings (jobs): need the token even with public reads."""
    token = _settings(request).token
    if token is None or _bearer_ok(token, creds) or _session_ok(request, token, cookie):
        return
    check_bearer(token, request.headers.get("authorization"))


async def require_token(request: Request, creds: BearerDep, cookie: CookieDep) -> None:
    """Writes: the token in the header, or a session cookie with its CSRF header."""
    token = _settings(request).token
    if token is None:
        return
    if _bearer_ok(token, creds):
        return
    if _session_ok(request, token, cookie) and cookie is not None:
        sent = request.headers.get(CSRF_HEADER) or ""
        if hmac.compare_digest(sent.encode(), csrf_for(token, cookie).encode()):
            return
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"a change made with the session cookie needs its {CSRF_HEADER} header "
            "(GET /api/session gives it); reload the gallery",
        )
    check_bearer(token, request.headers.get("authorization"))


ReadAccess = Depends(require_read)
PrivateReadAccess = Depends(require_private_read)
WriteAccess = Depends(require_token)
