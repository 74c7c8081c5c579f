"""Who is calling and what they may do.

Callers are **principals** (indexer.accounts.Principal) with a role: ``viewer`` < ``editor`` <
``admin``. They are told by, in this order: ``Authorization: Bearer <credential>`` (an API key
``csk_...`` of an account, its scopes narrowing its owner's role, or the server's
``CLIPSEARCH_API_TOKEN``, which acts as an admin key, so a single-token setup keeps working
unchanged); then the session cookie (a server-side account session from POST /api/session with a
name and password, or a cookie signed with the token from the gallery's token sign-in). A server
with neither a token nor any account is open, as before. ``CLIPSEARCH_PUBLIC_READ=true`` lets
callers without credentials search and view.

Every route declares one role dependency (:data:`ViewerAccess`, :data:`EditorAccess`,
:data:`AdminAccess`); no credentials read 401, too small a role 403 naming the role needed. A
change made with a session cookie also needs the session's CSRF value in ``X-CSRF-Token`` (a
header no other site can make a browser send). Per-picture routes also declare
:data:`VisibleImage`: a viewer gets 404 for a picture outside the folders shared with them.

The token's session cookie is ``<expires>.<nonce>.<hmac>``: HMAC-SHA256 under a key derived from
the token, HttpOnly, SameSite=Strict, Secure on HTTPS; signing out revokes it on the server (its
nonce kept in ``revoked-sessions.json`` until it would have expired). An account's session cookie
is a random secret whose SHA-256 the catalog keeps (idle and absolute expiry, ended on sign-out and
on a password change). The schemes are declared with FastAPI's security classes, so /docs shows
an "Authorize" button.

A token must be hard to guess: :func:`weak_token_reason` refuses short ones and obvious ones
(one character repeated, a run like ``0123456789abcdef`` or ``qwertyuiop...``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, params, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from clipsearch.indexer.accounts import KEY_PREFIX, Accounts, Principal, role_at_least
from clipsearch.indexer.sharing import (
    EVERYTHING,
    Visibility,
    image_visible,
    removal_visible,
    visibility,
)

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "clipsearch_session"
CSRF_HEADER = "X-CSRF-Token"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="clipsearch"'}

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="key",
    description="An API key (`clipsearch keys create`, POST /api/keys), or the server's "
    "CLIPSEARCH_API_TOKEN (an admin key), sent as `Authorization: Bearer <key>`.",
)
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="session",
    description="The gallery's session cookie (POST /api/session with a name and password, or "
    "the token, sets it); changes made with it also need its X-CSRF-Token header.",
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

    def __init__(self, path: FsPath | None = None) -> None:
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

ROLE_HOWTO = {
    "viewer": "search and browse",
    "editor": "add folders, ingest, remove and restore pictures, tag and make albums",
    "admin": "manage users, keys, sharing, settings, models and re-indexing",
}
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.service.settings
    return settings


def revocations(request: Request) -> Revocations | None:
    """The app's signed-out sessions (service.app.create_app sets them)."""
    found: Any = getattr(request.app.state, "revoked_sessions", None)
    return found if isinstance(found, Revocations) else None


def accounts_of(request: Request) -> Accounts | None:
    """The app's accounts (None when its library has no catalog engine: a stand-in library)."""
    found: Any = getattr(request.app.state, "accounts", None)
    return found if isinstance(found, Accounts) else None


TOKEN_ADMIN = "token"  # the name the server's own API token acts under (audit, /api/session)


def _token_principal(via: str, csrf: str | None = None) -> Principal:
    return Principal(TOKEN_ADMIN, "admin", via, csrf=csrf)


def _resolve(request: Request) -> Principal | None:
    settings = _settings(request)
    token = settings.token
    accounts = accounts_of(request)
    header = request.headers.get("authorization") or ""
    scheme, _, supplied = header.partition(" ")
    supplied = supplied.strip()
    if scheme.lower() == "bearer" and supplied:
        if token is not None and token_matches(token, supplied):
            return _token_principal("token")
        if accounts is not None and supplied.startswith(KEY_PREFIX):
            return accounts.key_principal(supplied)
        return None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        if "." in cookie:  # a session the server's token signed (gallery sign-in by token)
            if token is not None and session_valid(token, cookie, revoked=revocations(request)):
                return _token_principal("session", csrf_for(token, cookie))
        elif accounts is not None:
            found = accounts.session_principal(cookie)
            if found is not None:
                return found
    if token is None and (accounts is None or not accounts.has_users()):
        return Principal("anonymous", "admin", "open")  # no token, no accounts: open as before
    return None


def principal(request: Request) -> Principal | None:
    """Who is calling (the token, an API key, a session cookie, or an open server), read once
    per request; None for a caller with no valid credentials on a server that asks for them."""
    state = request.scope.setdefault("state", {})
    if "clipsearch_principal" not in state:
        state["clipsearch_principal"] = _resolve(request)
    found: Principal | None = state["clipsearch_principal"]
    return found


async def resolve_principal(request: Request) -> Principal | None:
    """:func:`principal` with its catalog reads (a session's or key's row, whether any account
    exists) in the thread pool, off the event loop; the answer is kept for the request, so the
    route's role dependency reads it again for free. A catalog outage raises CatalogUnavailable
    here as it would there (the connection guard answers it with 503)."""
    state = request.scope.setdefault("state", {})
    if "clipsearch_principal" not in state:
        found = await run_in_threadpool(_resolve, request)
        state.setdefault("clipsearch_principal", found)
    return principal(request)


def is_authorised(request: Request) -> bool:
    """The caller holds valid credentials (token, key, session), or the server is open."""
    return principal(request) is not None


def _refuse_anonymous(request: Request) -> HTTPException:
    header = request.headers.get("authorization")
    if header:
        return HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="invalid credentials: send a valid API key (or the server's "
            "CLIPSEARCH_API_TOKEN) as 'Authorization: Bearer <key>'; a revoked or expired key, "
            "or one of a disabled account, no longer works",
            headers=_CHALLENGE,
        )
    if request.cookies.get(SESSION_COOKIE):
        return HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="your session has ended (signed out, idle too long, or expired): sign in again",
            headers=_CHALLENGE,
        )
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail="sign in first: send 'Authorization: Bearer <API key or CLIPSEARCH_API_TOKEN>', "
        "or sign in to the gallery at /signin.html",
        headers=_CHALLENGE,
    )


#: What this request's caller may see of the library (indexer.sharing): set by the role
#: dependencies, read where the request's search filters are made (search_params.to_filters), so
#: the catalog and vector store queries carry a viewer's folders. Unset: everything (the CLI).
SEEN: ContextVar[Visibility] = ContextVar("clipsearch_seen", default=EVERYTHING)


def visible_folders() -> tuple[str, ...] | None:
    """The folders this request's caller may see (catalog text form); None: everything."""
    seen = SEEN.get()
    return None if seen.everything else seen.folders


async def _see(request: Request, who: Principal) -> None:
    """Set this request's visibility (a catalog read for viewers: off the event loop)."""
    if role_at_least(who.role, "editor") or who.user_id is None:
        SEEN.set(EVERYTHING)
    else:
        SEEN.set(await run_in_threadpool(visibility_of, request, who))


def _check(request: Request, wanted: str) -> Principal:
    found = principal(request)
    if found is None:
        raise _refuse_anonymous(request)
    if not role_at_least(found.role, wanted):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"this needs the {wanted} role (to {ROLE_HOWTO[wanted]}); you are signed in "
            f"as {found.name} with the {found.role} role"
            + (" (the key's scopes narrow it)" if found.via == "key" else "")
            + ": ask an admin",
        )
    if request.method in UNSAFE and found.csrf is not None:
        sent = request.headers.get(CSRF_HEADER) or ""
        if not hmac.compare_digest(sent.encode(), found.csrf.encode()):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"a change made with the session cookie needs its {CSRF_HEADER} header "
                "(GET /api/session gives it); reload the gallery",
            )
    return found


def _public(request: Request) -> Principal | None:
    """A caller without credentials on a server with CLIPSEARCH_PUBLIC_READ: a viewer of all."""
    if principal(request) is None and _settings(request).server.public_read:
        return Principal("public", "viewer", "open")
    return None


async def require_viewer(request: Request, creds: BearerDep, cookie: CookieDep) -> Principal:
    """Search, browse and read: any account (a viewer sees the folders shared with them), a key
    with the read scope, the token; anyone with CLIPSEARCH_PUBLIC_READ."""
    await resolve_principal(request)
    who = _public(request) or _check(request, "viewer")
    await _see(request, who)
    return who


async def require_signed_in(request: Request, creds: BearerDep, cookie: CookieDep) -> Principal:
    """Reads about oneself (account, sessions, keys): any valid credentials, never public."""
    await resolve_principal(request)
    return _check(request, "viewer")


async def require_editor(request: Request, creds: BearerDep, cookie: CookieDep) -> Principal:
    """Changes to the library (folders, ingest, remove and restore, tags, albums) and the reads
    that show server paths (jobs, folders): editors and admins, keys with the write scope."""
    await resolve_principal(request)
    return _check(request, "editor")


async def require_admin(request: Request, creds: BearerDep, cookie: CookieDep) -> Principal:
    """Users, keys of others, sharing, settings, models, re-indexing, the audit trail."""
    await resolve_principal(request)
    return _check(request, "admin")


ViewerAccess = Depends(require_viewer)
SignedInAccess = Depends(require_signed_in)
EditorAccess = Depends(require_editor)
AdminAccess = Depends(require_admin)
# the names the routes used before accounts (same checks)
require_read = require_viewer
require_private_read = require_editor
require_token = require_editor
ReadAccess = ViewerAccess
PrivateReadAccess = EditorAccess
WriteAccess = EditorAccess
ViewerDep = Annotated[Principal, Depends(require_viewer)]
SignedInDep = Annotated[Principal, Depends(require_signed_in)]
EditorDep = Annotated[Principal, Depends(require_editor)]
AdminDep = Annotated[Principal, Depends(require_admin)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def visibility_of(request: Request, who: Principal) -> Visibility:
    """What ``who`` may see of the library (indexer.sharing): everything from an editor up."""
    accounts = accounts_of(request)
    if accounts is None:
        return EVERYTHING
    return visibility(accounts.engine, who)


async def caller_visibility(request: Request) -> Visibility | None:
    """What this request's caller may see of the library, for routes open to all (health):
    None for a caller without credentials (unless CLIPSEARCH_PUBLIC_READ opens the library to
    them), a viewer's folders, or everything (catalog reads in the thread pool)."""
    who = await resolve_principal(request) or _public(request)
    if who is None:
        return None
    if role_at_least(who.role, "editor") or who.user_id is None:
        return EVERYTHING
    return await run_in_threadpool(visibility_of, request, who)


async def require_visible_image(
    request: Request, who: ViewerDep, id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> None:
    """Per-picture routes: a viewer gets 404 for a picture outside the folders shared with them
    (as for an id that does not exist: it does not tell that the picture is there)."""
    await check_visible_ids(request, [id])


async def check_visible_ids(request: Request, ids: list[int]) -> None:
    """404 for the first of ``ids`` (pictures a query names: a similar search's picture, a
    search term's) outside the folders this request's caller may see."""
    seen = SEEN.get()
    accounts = accounts_of(request)
    if seen.everything or accounts is None:
        return
    for image_id in ids:
        if not await run_in_threadpool(image_visible, accounts.engine, image_id, seen):
            # the catalog's own words for a missing picture (indexer.catalog.get_image)
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=f"image {image_id} is not in the catalog (it may have been deleted)",
            )


async def require_visible_removal(
    request: Request, who: ViewerDep, id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> None:
    """A removal's routes: a viewer gets 404 for a picture removed from outside the folders
    shared with them (the words of an unknown removal)."""
    seen = SEEN.get()
    accounts = accounts_of(request)
    if seen.everything or accounts is None:
        return
    if not await run_in_threadpool(removal_visible, accounts.engine, id, seen):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"removed image {id} does not exist (it may have been restored)",
        )


VisibleImage = Depends(require_visible_image)
VisibleRemoval = Depends(require_visible_removal)


def audited(action: str) -> params.Depends:
    """A route dependency that writes ``action`` to the audit trail (indexer.audit) once the
    route has answered: who (the caller), on what (the path's id, the body's ``path`` or
    ``model``), from where, and whether it worked. Declared beside the route's role."""

    async def record_it(request: Request) -> AsyncIterator[None]:
        body: object = None
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = await request.json()  # read once: the route reads the same copy
            except ValueError:
                body = None  # the route answers the malformed body
        outcome = "ok"
        try:
            yield
        except Exception:
            outcome = "failed"
            raise
        finally:
            await run_in_threadpool(_record, request, action, outcome, body)

    record_it.__name__ = f"audit_{action.replace('-', '_')}"
    return params.Depends(record_it)


def _record(request: Request, action: str, outcome: str, body: object) -> None:
    accounts = accounts_of(request)
    who = principal(request)
    if accounts is None or who is None:
        return
    parts = [f"{k} {v}" for k, v in request.path_params.items()]
    if isinstance(body, dict):
        parts += [str(body[k])[:500] for k in ("path", "model") if body.get(k)]
    from clipsearch.indexer import audit

    audit.record(
        accounts.engine, who.name, action, " ".join(parts) or None, client_address(request), outcome
    )
