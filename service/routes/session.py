"""Signing in and out: an account's name and password (or the server's API token) for a session
cookie, and what this browser is signed in as."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field, model_validator

from clipsearch.indexer import audit
from clipsearch.indexer.accounts import MAX_PASSWORD

from ..auth import (
    SESSION_COOKIE,
    accounts_of,
    client_address,
    csrf_for,
    make_session,
    principal,
    revocations,
    session_valid,
    token_matches,
)
from ..deps import SettingsDep
from ..schemas import ErrorOut
from ..settings import Settings
from .common import ERRORS

router = APIRouter(prefix="/api", tags=["session"], responses=ERRORS)

WRONG = "wrong name or password (or the account is disabled)"


class SignInIn(BaseModel):
    name: str | None = Field(default=None, max_length=64, description="An account's name.")
    password: str | None = Field(
        default=None, max_length=MAX_PASSWORD, description="The account's password."
    )
    token: str | None = Field(
        default=None, max_length=1024, description="Or: the server's CLIPSEARCH_API_TOKEN."
    )

    @model_validator(mode="after")
    def _one_way(self) -> SignInIn:
        if self.token is None and (self.name is None or self.password is None):
            raise ValueError("send a name and a password (or the server's token)")
        return self


class SessionOut(BaseModel):
    token_required: bool = Field(description="The server asks who is calling.")
    accounts: bool = Field(
        default=False, description="The server has accounts: sign in with a name and password."
    )
    public_read: bool = Field(description="Reads are open without signing in.")
    sso: bool = Field(
        default=False, description="Single sign-on is offered (GET /api/session/oidc)."
    )
    signed_in: bool = Field(description="This request carries valid credentials.")
    user: str | None = Field(default=None, description="Who is signed in (`token`: the token).")
    role: str | None = Field(default=None, description="viewer, editor or admin.")
    csrf: str | None = Field(
        default=None, description="Send as X-CSRF-Token on changes made with the cookie."
    )
    expires_at: int | None = Field(default=None, description="When the session ends (Unix time).")


def _secure(request: Request) -> bool:
    return (
        request.url.scheme == "https"
        or request.headers.get("x-forwarded-proto", "").lower() == "https"
    )


def _state(request: Request, settings: Settings) -> SessionOut:
    accounts = accounts_of(request)
    has_accounts = accounts is not None and accounts.has_users()
    who = principal(request)
    signed_in = who is not None and who.via in ("session", "token", "key")
    cookie = request.cookies.get(SESSION_COOKIE) or ""
    expires = None
    if signed_in and "." in cookie:
        try:
            expires = int(cookie.partition(".")[0])
        except ValueError:
            expires = None
    return SessionOut(
        token_required=settings.token is not None or has_accounts,
        accounts=has_accounts,
        public_read=settings.server.public_read,
        sso=bool(settings.server.oidc_issuer),
        signed_in=signed_in,
        user=who.name if who is not None else None,
        role=who.role if who is not None else None,
        csrf=who.csrf if signed_in and who is not None else None,
        expires_at=expires,
    )


@router.get("/session", operation_id="get_session", response_model=SessionOut)
def get_session(request: Request, settings: SettingsDep) -> SessionOut:
    """Whether the server asks who is calling, and who this browser is signed in as (with its
    CSRF value)."""
    return _state(request, settings)


def _set_cookie(request: Request, response: Response, value: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


@router.post(
    "/session",
    operation_id="sign_in",
    response_model=SessionOut,
    responses={
        429: {
            "model": ErrorOut,
            "description": "Too many failed sign-ins: wait as Retry-After says",
        }
    },
)
def sign_in(
    request: Request, response: Response, body: SignInIn, settings: SettingsDep
) -> SessionOut:
    """Sign in with an account's name and password (or the server's token) and set an HttpOnly,
    SameSite=Strict session cookie. Failed tries are limited per name and per address (429 with
    Retry-After beyond); a wrong name and a wrong password read the same."""
    address = client_address(request)
    accounts = accounts_of(request)
    guard = request.app.state.signin_guard
    name = body.name if body.token is None and body.name is not None else "token"
    wait = guard.retry_after(name, address)
    if wait is not None:
        if accounts is not None:
            audit.record(accounts.engine, name, "sign-in-throttled", None, address, "refused")
        raise HTTPException(
            429,
            detail=f"too many failed sign-ins for this account or from this address: wait "
            f"{wait} s and try again",
            headers={"Retry-After": str(wait)},
        )
    max_age = int(settings.server.session_hours * 3600)
    if body.token is not None:
        token = settings.token
        if token is None or not token_matches(token, body.token.strip()):
            guard.failed(name, address)
            if accounts is not None:
                audit.record(accounts.engine, "token", "sign-in-failed", None, address, "refused")
            raise HTTPException(
                401,
                detail="that is not the server's token: paste the value of CLIPSEARCH_API_TOKEN"
                if token is not None
                else "this server has no API token: sign in with a name and password",
                headers={"WWW-Authenticate": 'Bearer realm="clipsearch"'},
            )
        value = make_session(token, max_age)
        _set_cookie(request, response, value, max_age)
        if accounts is not None:
            audit.record(accounts.engine, "token", "sign-in", None, address)
        out = SessionOut(
            token_required=True,
            accounts=accounts is not None and accounts.has_users(),
            public_read=settings.server.public_read,
            signed_in=True,
            user="token",
            role="admin",
            csrf=csrf_for(token, value),
            expires_at=int(time.time()) + max_age,
        )
        return out
    if accounts is None:
        raise HTTPException(409, detail="this server keeps no accounts: sign in with its token")
    assert body.name is not None and body.password is not None
    user = accounts.verify(body.name, body.password)
    if user is None:
        guard.failed(body.name, address)
        audit.record(accounts.engine, body.name[:64], "sign-in-failed", None, address, "refused")
        raise HTTPException(401, detail=WRONG)
    secret, who = accounts.start_session(user, address, request.headers.get("user-agent"))
    _set_cookie(request, response, secret, max_age)
    audit.record(accounts.engine, user.name, "sign-in", None, address)
    return SessionOut(
        token_required=True,
        accounts=True,
        public_read=settings.server.public_read,
        signed_in=True,
        user=user.name,
        role=user.role,
        csrf=who.csrf,
        expires_at=int(time.time()) + int(accounts.max_s),
    )


@router.delete("/session", operation_id="sign_out", status_code=204, response_class=Response)
def sign_out(request: Request, settings: SettingsDep) -> Response:
    """End this browser's session: it ends on the server (a copy of the cookie stops working
    too) and the cookie is deleted in the browser."""
    token = settings.token
    cookie = request.cookies.get(SESSION_COOKIE) or ""
    accounts = accounts_of(request)
    who = principal(request)
    if "." in cookie:
        revoked = revocations(request)
        if (
            token is not None
            and revoked is not None
            and session_valid(token, cookie, revoked=revoked)
        ):
            revoked.revoke(cookie)
    elif cookie and accounts is not None:
        accounts.end_session(cookie)
    if accounts is not None and who is not None and who.via == "session":
        audit.record(accounts.engine, who.name, "sign-out", None, client_address(request))
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request)
    )
    return response
