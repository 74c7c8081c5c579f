"""Who may read and who may change the library.

With ``CLIPSEARCH_API_TOKEN`` set, every read (API, originals, thumbnails, the gallery) needs
either the token (``Authorization: Bearer <token>``) or a session cookie the gallery's sign-in
page got for it; ``CLIPSEARCH_PUBLIC_READ=true`` opens reads. Writes (ingest, reindex, delete)
always need the token or the cookie, and a cookie only counts on a write that also carries the
session's CSRF value in ``X-CSRF-Token`` (a header no other site can make a browser send).

The session cookie is ``<expires>.<nonce>.<hmac>``: HMAC-SHA256 under a key derived from the token
(changing the token signs everybody out; API replicas with one token accept each other's cookies),
HttpOnly, SameSite=Strict, Secure on HTTPS. The schemes are declared with FastAPI's security
classes, so /docs shows an "Authorize" button.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

SESSION_COOKIE = "clipsearch_session"
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


def session_valid(token: str, value: str | None, now: float | None = None) -> bool:
    """The cookie was signed with this token's key and has not expired."""
    if not value or len(value) > 200:
        return False
    body, _, sig = value.rpartition(".")
    expires, _, _nonce = body.partition(".")
    want = _b64(hmac.new(_key(token, b"session"), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(sig.encode(), want.encode()):
        return False
    try:
        return int(expires) > (now if now is not None else time.time())
    except ValueError:
        return False


def csrf_for(token: str, session: str) -> str:
    """The CSRF value that goes with a session (the gallery reads it from /api/session)."""
    return _b64(hmac.new(_key(token, b"csrf"), session.encode(), hashlib.sha256).digest())


# --- who is calling ---------------------------------------------------------------------------


def _settings(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.service.settings


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
    return session_valid(token, request.cookies.get(SESSION_COOKIE))


async def require_read(request: Request, creds: BearerDep, cookie: CookieDep) -> None:
    """Reads: open without a token or with CLIPSEARCH_PUBLIC_READ; else the token or a session."""
    settings = _settings(request)
    token = settings.token
    if token is None or settings.public_read:
        return
    if _bearer_ok(token, creds) or session_valid(token, cookie):
        return
    check_bearer(token, request.headers.get("authorization"))  # raises with the right message
    raise HTTPException(  # pragma: no cover - check_bearer always raises here
        status.HTTP_401_UNAUTHORIZED, detail="sign in first", headers=_CHALLENGE
    )


async def require_private_read(request: Request, creds: BearerDep, cookie: CookieDep) -> None:
    """Reads that show server paths and settings (jobs): need the token even with public reads."""
    token = _settings(request).token
    if token is None or _bearer_ok(token, creds) or session_valid(token, cookie):
        return
    check_bearer(token, request.headers.get("authorization"))


async def require_token(request: Request, creds: BearerDep, cookie: CookieDep) -> None:
    """Writes: the token in the header, or a session cookie with its CSRF header."""
    token = _settings(request).token
    if token is None:
        return
    if _bearer_ok(token, creds):
        return
    if session_valid(token, cookie) and cookie is not None:
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
