"""Single sign-on with OpenID Connect (the authorization code flow with PKCE, through Authlib's
client; the ID token verified with Authlib's JOSE library, joserfc, against the provider's keys).

``GET /api/session/oidc`` sends the browser to the provider (configured by
``CLIPSEARCH_OIDC_ISSUER``, ``..._CLIENT_ID``, ``..._CLIENT_SECRET``); the provider sends it back
to ``GET /api/session/oidc/callback``, which checks the state (bound to this browser by a short
cookie), exchanges the code, verifies the ID token (signature, issuer, audience, expiry, nonce),
maps the role claim (``CLIPSEARCH_OIDC_ROLE_CLAIM``) and signs the account in with a session, as a
password sign-in does (indexer.accounts.sso_user makes the account on first sign-in when allowed).
The pending sign-ins (state, nonce, PKCE verifier) are kept in this process for 10 minutes.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from clipsearch.indexer import audit
from clipsearch.indexer.accounts import NAME_RULE, ROLES

from ..auth import SESSION_COOKIE, accounts_of, client_address
from ..deps import SettingsDep
from .common import ERRORS

if TYPE_CHECKING:
    from joserfc.jwk import KeySetSerialization

    from ..settings import Settings


class ProviderMetadata(TypedDict, total=False):
    """The provider's discovery document (OpenID Connect Discovery 1.0) and its key set."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    jwks: KeySetSerialization


router = APIRouter(prefix="/api/session", tags=["session"], responses=ERRORS)

STATE_COOKIE = "clipsearch_oidc"
PENDING_S = 600.0
MAX_PENDING = 1000
DISCOVERY_S = 3600.0


@dataclass
class _Pending:
    nonce: str
    verifier: str
    at: float


class _Flow:
    """The provider's metadata and keys (read once an hour) and the sign-ins under way."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, _Pending] = {}
        self.meta: tuple[float, ProviderMetadata] | None = None

    def add(self, state: str, pending: _Pending) -> None:
        now = time.monotonic()
        with self.lock:
            self.pending = {s: p for s, p in self.pending.items() if now - p.at < PENDING_S}
            while len(self.pending) >= MAX_PENDING:
                self.pending.pop(next(iter(self.pending)))
            self.pending[state] = pending

    def take(self, state: str) -> _Pending | None:
        with self.lock:
            found = self.pending.pop(state, None)
        if found is None or time.monotonic() - found.at >= PENDING_S:
            return None
        return found


def _flow(request: Request) -> _Flow:
    found = getattr(request.app.state, "oidc_flow", None)
    if not isinstance(found, _Flow):
        found = _Flow()
        request.app.state.oidc_flow = found
    return found


def _config(settings: Settings) -> tuple[str, str, str]:
    server = settings.server
    if not server.oidc_issuer:
        raise HTTPException(404, detail="single sign-on is not set up on this server")
    if not server.oidc_client_id or server.oidc_client_secret is None:
        raise HTTPException(
            503,
            detail="single sign-on needs CLIPSEARCH_OIDC_CLIENT_ID and "
            "CLIPSEARCH_OIDC_CLIENT_SECRET as well as the issuer: ask the administrator",
        )
    return (
        server.oidc_issuer.rstrip("/"),
        server.oidc_client_id,
        server.oidc_client_secret.get_secret_value(),
    )


def _metadata(flow: _Flow, issuer: str) -> ProviderMetadata:
    import httpx

    cached = flow.meta
    if cached is not None and time.monotonic() - cached[0] < DISCOVERY_S:
        return cached[1]
    try:
        with httpx.Client(timeout=10) as client:
            meta = client.get(issuer + "/.well-known/openid-configuration").raise_for_status()
            found: ProviderMetadata = meta.json()
            found["jwks"] = client.get(found["jwks_uri"]).raise_for_status().json()
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise HTTPException(
            503,
            detail=f"the single sign-on provider does not answer ({exc.__class__.__name__}): "
            "try again in a moment, or sign in with a password",
        ) from exc
    if str(found.get("issuer", "")).rstrip("/") != issuer:
        raise HTTPException(503, detail="the single sign-on provider names another issuer")
    flow.meta = (time.monotonic(), found)
    return found


def _callback_url(request: Request) -> str:
    return str(request.url_for("oidc_callback"))


def _secure(request: Request) -> bool:
    return (
        request.url.scheme == "https"
        or request.headers.get("x-forwarded-proto", "").lower() == "https"
    )


@router.get("/oidc", operation_id="oidc_sign_in", response_class=RedirectResponse, status_code=302)
def oidc_sign_in(request: Request, settings: SettingsDep) -> Response:
    """Start single sign-on: a redirect to the provider's sign-in page."""
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    issuer, client_id, secret = _config(settings)
    flow = _flow(request)
    meta = _metadata(flow, issuer)
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    with OAuth2Client(client_id, secret, scope="openid profile email") as client:
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"],
            state=state,
            nonce=nonce,
            redirect_uri=_callback_url(request),
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
    flow.add(state, _Pending(nonce, verifier, time.monotonic()))
    response = RedirectResponse(url, status_code=302)
    # Lax: the provider sends the browser back with a top-level GET from its own site
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=int(PENDING_S),
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    return response


def _claims(
    meta: ProviderMetadata, id_token: str, issuer: str, client_id: str, nonce: str
) -> dict[str, object]:
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    try:
        token = jwt.decode(id_token, KeySet.import_key_set(meta["jwks"]))
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
            leeway=60,
        ).validate(token.claims)
    except (JoseError, ValueError) as exc:
        raise HTTPException(
            401, detail=f"the provider's ID token was not accepted ({exc}): sign in again"
        ) from exc
    return token.claims


def _name_of(claims: Mapping[str, object]) -> str:
    for key in ("preferred_username", "email", "sub"):
        value = str(claims.get(key) or "")
        if key == "email":
            value = value.partition("@")[0]
        if NAME_RULE.match(value):
            return value
    return "sso-" + secrets.token_hex(4)


# The callback's page is HTML; its refusals are the API's JSON errors (documented as such).
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": info["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }
    for code, info in ERRORS.items()
    if code != 422
}


@router.get(
    "/oidc/callback",
    operation_id="oidc_callback",
    response_class=HTMLResponse,
    responses=_JSON_ERRORS,
)
def oidc_callback(
    request: Request,
    settings: SettingsDep,
    state: Annotated[str, Query(max_length=200)] = "",
    code: Annotated[str, Query(max_length=4096)] = "",
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The provider's answer: check it, sign the account in, open the gallery."""
    from authlib.integrations.base_client.errors import OAuthError
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.oauth2 import OAuth2Error

    issuer, client_id, secret = _config(settings)
    if error is not None:
        raise HTTPException(401, detail=f"the provider refused the sign-in ({error})")
    sent = request.cookies.get(STATE_COOKIE) or ""
    if not state or not secrets.compare_digest(sent.encode(), state.encode()):
        raise HTTPException(400, detail="this sign-in was not started in this browser: start again")
    flow = _flow(request)
    pending = flow.take(state)
    if pending is None or not code:
        raise HTTPException(400, detail="this sign-in has expired or was used: start again")
    meta = _metadata(flow, issuer)
    try:
        with OAuth2Client(client_id, secret, timeout=10) as client:
            tokens = client.fetch_token(
                meta["token_endpoint"],
                code=code,
                redirect_uri=_callback_url(request),
                code_verifier=pending.verifier,
            )
    except (OAuthError, OAuth2Error, OSError, ValueError) as exc:
        raise HTTPException(
            401, detail=f"the provider did not confirm the sign-in ({exc})"
        ) from exc
    claims = _claims(meta, str(tokens.get("id_token") or ""), issuer, client_id, pending.nonce)
    role = str(claims.get(settings.server.oidc_role_claim) or settings.server.oidc_default_role)
    address = client_address(request)
    accounts = accounts_of(request)
    if accounts is None:
        raise HTTPException(409, detail="this server's library keeps no accounts")
    name = _name_of(claims)
    if role not in ROLES:
        audit.record(accounts.engine, name, "sign-in-failed", "single sign-on", address, "refused")
        raise HTTPException(
            403, detail="your account at the provider has no role here: ask an administrator"
        )
    user = accounts.sso_user(
        f"{issuer}|{claims['sub']}", name, role, settings.server.oidc_create_accounts
    )
    if user is None:
        audit.record(accounts.engine, name, "sign-in-failed", "single sign-on", address, "refused")
        raise HTTPException(
            403, detail="no account here is linked to yours at the provider: ask an administrator"
        )
    session, _ = accounts.start_session(user, address, request.headers.get("user-agent"))
    audit.record(accounts.engine, user.name, "sign-in", "single sign-on", address)
    # a page of ours moves on to the gallery: the SameSite=Strict cookie is sent on that
    # same-site navigation (a redirect chain started at the provider's site would not send it)
    home = html.escape(str(request.base_url), quote=True)
    page = HTMLResponse(
        f'<!doctype html><meta http-equiv="refresh" content="0;url={home}">'
        f"<title>Signed in</title><p>Signed in as {html.escape(user.name)}. "
        f'<a href="{home}">Open the gallery</a>.</p>'
    )
    page.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=int(settings.server.session_hours * 3600),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    page.delete_cookie(STATE_COOKIE, path="/")
    return page
