"""The gallery's sign-in: exchange the API token for a session cookie, and sign out."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from ..auth import (
    SESSION_COOKIE,
    csrf_for,
    make_session,
    revocations,
    session_valid,
    token_matches,
)
from ..deps import SettingsDep
from .common import ERRORS

router = APIRouter(prefix="/api", tags=["session"], responses=ERRORS)


class SignInIn(BaseModel):
    token: str = Field(max_length=1024, description="The server's CLIPSEARCH_API_TOKEN.")


class SessionOut(BaseModel):
    token_required: bool = Field(description="The server has an API token.")
    public_read: bool = Field(description="Reads are open without signing in.")
    signed_in: bool = Field(description="This request carries a valid session cookie.")
    csrf: str | None = Field(
        default=None, description="Send as X-CSRF-Token on changes made with the cookie."
    )
    expires_at: int | None = Field(default=None, description="When the session ends (Unix time).")


def _expires(value: str) -> int | None:
    try:
        return int(value.partition(".")[0])
    except ValueError:
        return None


@router.get("/session", operation_id="get_session", response_model=SessionOut)
def get_session(request: Request, settings: SettingsDep) -> SessionOut:
    """Whether a token is needed and whether this browser is signed in (with its CSRF value)."""
    token = settings.token
    cookie = request.cookies.get(SESSION_COOKIE)
    signed_in = token is not None and session_valid(token, cookie, revoked=revocations(request))
    return SessionOut(
        token_required=token is not None,
        public_read=settings.server.public_read,
        signed_in=signed_in,
        csrf=csrf_for(token, cookie) if signed_in and token and cookie else None,
        expires_at=_expires(cookie) if signed_in and cookie else None,
    )


@router.post("/session", operation_id="sign_in", response_model=SessionOut)
def sign_in(
    request: Request, response: Response, body: SignInIn, settings: SettingsDep
) -> SessionOut:
    """Check the token and set an HttpOnly, SameSite=Strict session cookie for the gallery."""
    token = settings.token
    if token is None:
        raise HTTPException(
            409, detail="this server has no API token: nothing to sign in to, the gallery is open"
        )
    if not token_matches(token, body.token.strip()):
        raise HTTPException(
            401,
            detail="that is not the server's token: paste the value of CLIPSEARCH_API_TOKEN",
            headers={"WWW-Authenticate": 'Bearer realm="clipsearch"'},
        )
    max_age = int(settings.server.session_hours * 3600)
    value = make_session(token, max_age)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https"
        or request.headers.get("x-forwarded-proto", "").lower() == "https",
    )
    return SessionOut(
        token_required=True,
        public_read=settings.server.public_read,
        signed_in=True,
        csrf=csrf_for(token, value),
        expires_at=int(time.time()) + max_age,
    )


@router.delete("/session", operation_id="sign_out", status_code=204, response_class=Response)
def sign_out(request: Request, settings: SettingsDep) -> Response:
    """End this browser's session: the cookie is revoked on the server (a copy of it stops
    working too) and deleted in the browser."""
    token = settings.token
    cookie = request.cookies.get(SESSION_COOKIE)
    revoked = revocations(request)
    if token is not None and revoked is not None and session_valid(token, cookie, revoked=revoked):
        revoked.revoke(cookie or "")
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
