"""People and keys: accounts (admin), one's own account, sessions and API keys, folder sharing
(admin) and the audit trail (admin). Thin: indexer.accounts, indexer.sharing and indexer.audit
decide; every change is written to the audit trail."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from clipsearch.indexer import audit, sharing
from clipsearch.indexer.accounts import (
    MAX_PASSWORD,
    Accounts,
    KeyInfo,
    Principal,
    SessionInfo,
    UserInfo,
)

from ..auth import AdminDep, SignedInDep, accounts_of, client_address
from .common import ERRORS

router = APIRouter(prefix="/api", tags=["accounts"], responses=ERRORS)

Role = Literal["viewer", "editor", "admin"]
Scope = Literal["read", "write", "admin"]


class UserOut(BaseModel):
    name: str
    role: str
    disabled: bool
    sso: bool = Field(description="Signs in through single sign-on.")
    created_at: dt.datetime
    password_changed_at: dt.datetime | None


class UserIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role = "viewer"
    password: str = Field(max_length=MAX_PASSWORD, description="12 to 256 characters.")


class UserChange(BaseModel):
    role: Role | None = None
    disabled: bool | None = None


class PasswordIn(BaseModel):
    password: str = Field(max_length=MAX_PASSWORD, description="The new password.")
    current: str | None = Field(
        default=None, max_length=MAX_PASSWORD, description="Your current password (your own)."
    )


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="What the key is for.")
    scopes: list[Scope] = Field(default=["read"], min_length=1, max_length=3)
    expires_at: dt.datetime | None = None
    user: str | None = Field(default=None, max_length=64, description="Another's (admin only).")


class KeyOut(BaseModel):
    id: int
    user: str
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    scopes: list[str]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, never again.")


class SessionListOut(BaseModel):
    id: str
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    address: str | None
    user_agent: str | None
    current: bool


class ShareIn(BaseModel):
    folder: str = Field(min_length=1, max_length=4096)
    user: str | None = Field(default=None, max_length=64, description="None: everyone.")


class ShareOut(BaseModel):
    id: int
    folder: str
    user: str = Field(description="An account's name, or * for everyone.")
    created_at: dt.datetime


class AuditOut(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str | None
    address: str | None
    outcome: str


def _accounts(request: Request) -> Accounts:
    found = accounts_of(request)
    if found is None:
        raise HTTPException(409, detail="this server's library keeps no accounts")
    return found


def _user_out(u: UserInfo) -> UserOut:
    return UserOut(
        name=u.name,
        role=u.role,
        disabled=u.disabled,
        sso=u.sso,
        created_at=u.created_at,
        password_changed_at=u.password_changed_at,
    )


def _key_out(k: KeyInfo) -> KeyOut:
    return KeyOut(
        id=k.id,
        user=k.user,
        name=k.name,
        prefix=k.prefix,
        scopes=list(k.scopes),
        created_at=k.created_at,
        expires_at=k.expires_at,
        last_used_at=k.last_used_at,
        revoked_at=k.revoked_at,
    )


def _note(request: Request, who: Principal, action: str, target: str | None) -> None:
    audit.record(_accounts(request).engine, who.name, action, target, client_address(request))


def _account_of(who: Principal) -> str:
    if who.user_id is None:
        raise HTTPException(
            409,
            detail="you are signed in with the server's token, not an account: name the account "
            "(admin routes under /api/users) or sign in as one",
        )
    return who.name


# ---- users (admin)


@router.get("/users", operation_id="list_users", response_model=list[UserOut])
def list_users(request: Request, who: AdminDep) -> list[UserOut]:
    """Every account, by name."""
    return [_user_out(u) for u in _accounts(request).list_users()]


@router.post("/users", operation_id="add_user", response_model=UserOut, status_code=201)
def add_user(request: Request, who: AdminDep, body: UserIn) -> UserOut:
    """A new account with a role and a password."""
    user = _accounts(request).add_user(body.name, body.role, body.password)
    _note(request, who, "user-added", f"{user.name} ({user.role})")
    return _user_out(user)


@router.patch("/users/{name}", operation_id="change_user", response_model=UserOut)
def change_user(
    request: Request, who: AdminDep, name: Annotated[str, Path(max_length=64)], body: UserChange
) -> UserOut:
    """Change an account's role, or disable it (its sessions end, its keys stop working); 409
    for the last active admin (nobody would be left to manage accounts)."""
    accounts = _accounts(request)
    user = accounts.get_user(name)
    if body.role is not None:
        user = accounts.set_role(name, body.role)
    if body.disabled is not None:
        user = accounts.set_disabled(name, body.disabled)
    _note(request, who, "user-changed", f"{name} role={user.role} disabled={user.disabled}")
    return _user_out(user)


@router.delete("/users/{name}", operation_id="delete_user", response_model=UserOut)
def delete_user(
    request: Request, who: AdminDep, name: Annotated[str, Path(max_length=64)]
) -> UserOut:
    """Delete an account with its sessions, keys and shares; returns what it was. The last
    active admin cannot be deleted, disabled or demoted (409)."""
    user = _accounts(request).delete_user(name)
    _note(request, who, "user-deleted", f"{user.name} ({user.role})")
    return _user_out(user)


@router.put(
    "/users/{name}/password",
    operation_id="set_user_password",
    status_code=204,
    response_class=Response,
)
def set_user_password(
    request: Request, who: AdminDep, name: Annotated[str, Path(max_length=64)], body: PasswordIn
) -> Response:
    """Set another account's password (their sessions end)."""
    _accounts(request).set_password(name, body.password)
    _note(request, who, "password-changed", name)
    return Response(status_code=204)


# ---- oneself


@router.put(
    "/me/password", operation_id="change_password", status_code=204, response_class=Response
)
def change_password(request: Request, who: SignedInDep, body: PasswordIn) -> Response:
    """Change your own password (give the current one); all your sessions end, this one too."""
    accounts = _accounts(request)
    name = _account_of(who)
    if body.current is None or accounts.verify(name, body.current) is None:
        raise HTTPException(403, detail="your current password is not right: give it as 'current'")
    accounts.set_password(name, body.password)
    _note(request, who, "password-changed", name)
    return Response(status_code=204)


@router.get("/me/sessions", operation_id="list_sessions", response_model=list[SessionListOut])
def list_sessions(request: Request, who: SignedInDep) -> list[SessionListOut]:
    """Your signed-in sessions (browsers), newest first."""
    accounts = _accounts(request)
    _account_of(who)
    assert who.user_id is not None
    found: list[SessionInfo] = accounts.list_sessions(who.user_id)
    return [
        SessionListOut(
            id=s.id,
            created_at=s.created_at,
            last_seen_at=s.last_seen_at,
            expires_at=s.expires_at,
            address=s.address,
            user_agent=s.user_agent,
            current=s.id == who.session_id,
        )
        for s in found
    ]


@router.delete(
    "/me/sessions/{session_id}",
    operation_id="end_session",
    status_code=204,
    response_class=Response,
)
def end_session(
    request: Request, who: SignedInDep, session_id: Annotated[str, Path(max_length=64)]
) -> Response:
    """Sign out one of your sessions (another browser)."""
    _account_of(who)
    assert who.user_id is not None
    _accounts(request).end_session_by_id(who.user_id, session_id)
    _note(request, who, "sign-out", f"session {session_id[:12]}")
    return Response(status_code=204)


# ---- API keys


@router.get("/keys", operation_id="list_keys", response_model=list[KeyOut])
def list_keys(
    request: Request, who: SignedInDep, all: Annotated[bool, Query()] = False
) -> list[KeyOut]:
    """Your API keys (an admin: ``all=true`` for everyone's), with their last use."""
    accounts = _accounts(request)
    if all:
        if who.role != "admin":
            raise HTTPException(403, detail="listing everyone's keys needs the admin role")
        return [_key_out(k) for k in accounts.list_keys()]
    return [_key_out(k) for k in accounts.list_keys(_account_of(who))]


@router.post("/keys", operation_id="create_key", response_model=NewKeyOut, status_code=201)
def create_key(request: Request, who: SignedInDep, body: KeyIn) -> NewKeyOut:
    """A new API key, with scopes no wider than its owner's role; the key is in this answer
    only. Send it as ``Authorization: Bearer <key>``."""
    accounts = _accounts(request)
    owner = body.user or _account_of(who)
    if owner != who.name and who.role != "admin":
        raise HTTPException(403, detail="making a key for another account needs the admin role")
    if who.via == "key" and who.role != "admin":
        raise HTTPException(403, detail="a key cannot make keys: sign in to make one")
    key, info = accounts.create_key(owner, body.name, body.scopes, body.expires_at)
    _note(request, who, "key-created", f"key {info.id} {info.name!r} of {owner}")
    return NewKeyOut(**_key_out(info).model_dump(), key=key)


@router.delete("/keys/{key_id}", operation_id="revoke_key", response_model=KeyOut)
def revoke_key(
    request: Request, who: SignedInDep, key_id: Annotated[int, Path(ge=1, le=2**31)]
) -> KeyOut:
    """Revoke a key (yours; an admin: anyone's). It stops working at once."""
    accounts = _accounts(request)
    owner = None if who.role == "admin" else _account_of(who)
    info = accounts.revoke_key(key_id, owner)
    _note(request, who, "key-revoked", f"key {info.id} {info.name!r} of {info.user}")
    return _key_out(info)


# ---- sharing (admin)


@router.get("/shares", operation_id="list_shares", response_model=list[ShareOut])
def list_shares(request: Request, who: AdminDep) -> list[ShareOut]:
    """Which folders are shared with whom (viewers see only these)."""
    return [ShareOut(**vars(s)) for s in sharing.list_shares(_accounts(request).engine)]


@router.post("/shares", operation_id="share_folder", response_model=ShareOut, status_code=201)
def share_folder(request: Request, who: AdminDep, body: ShareIn) -> ShareOut:
    """Share a folder (and everything under it) with an account, or with everyone."""
    info = sharing.share(_accounts(request).engine, body.folder, body.user)
    _note(request, who, "folder-shared", f"{info.folder} with {info.user}")
    return ShareOut(**vars(info))


@router.delete("/shares", operation_id="unshare_folder", status_code=204, response_class=Response)
def unshare_folder(request: Request, who: AdminDep, body: ShareIn) -> Response:
    """Stop sharing a folder with an account (or with everyone)."""
    sharing.unshare(_accounts(request).engine, body.folder, body.user)
    _note(request, who, "folder-unshared", f"{body.folder} with {body.user or '*'}")
    return Response(status_code=204)


# ---- audit (admin)


@router.get("/audit", operation_id="list_audit", response_model=list[AuditOut])
def list_audit(
    request: Request,
    who: AdminDep,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
) -> list[AuditOut]:
    """Who did what and when, newest first; page with ``before`` (the last id seen)."""
    found = audit.entries(_accounts(request).engine, limit, before, actor, action)
    return [AuditOut(**vars(e)) for e in found]
