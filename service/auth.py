"""Bearer-token check for mutating endpoints (only when ``CLIPSEARCH_API_TOKEN`` is set)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, status


def check_bearer(expected: str | None, authorization: str | None) -> None:
    """Raise 401 unless ``authorization`` is ``Bearer <expected>``; no-op when ``expected`` is None.

    The comparison is constant-time in the token's content (``hmac.compare_digest`` on bytes).
    """
    if expected is None:
        return
    challenge = {"WWW-Authenticate": 'Bearer realm="clipsearch"'}
    if not authorization:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="this endpoint changes the library: send 'Authorization: Bearer <CLIPSEARCH_API_TOKEN>'",
            headers=challenge,
        )
    scheme, _, supplied = authorization.partition(" ")
    supplied = supplied.strip()
    ok = scheme.lower() == "bearer" and hmac.compare_digest(
        supplied.encode("utf-8", "surrogateescape"), expected.encode("utf-8")
    )
    if not ok:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="invalid API token: send the server's CLIPSEARCH_API_TOKEN as 'Authorization: Bearer <token>'",
            headers=challenge,
        )


def require_token(request: Request) -> None:
    """FastAPI dependency: the mutating endpoints' guard."""
    settings = request.app.state.service.settings
    check_bearer(settings.token, request.headers.get("authorization"))
