"""People and keys (migration 0010): accounts with a role, their server-side sign-in sessions,
their API keys, and the sign-in rate limits. Every door (API, CLI, gallery) goes through
:class:`Accounts`; the sharing of folders is :mod:`indexer.sharing`, the audit trail
:mod:`indexer.audit`.

* **Roles** rank ``viewer`` < ``editor`` < ``admin``: a viewer searches and browses (only the
  folders shared with them), an editor also adds folders, ingests, removes and restores, tags and
  makes albums; an admin also manages settings, users, keys, models and re-indexing.
* **Passwords** are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second choice);
  12 to 256 characters. An unknown name costs the same hash as a wrong password, and both read the
  same message, so sign-in does not tell which names exist.
* **Sessions** are random 256-bit secrets kept by the browser (an HttpOnly cookie); the catalog
  keeps only their SHA-256, the last use and the absolute expiry: a session ends when idle for
  ``idle_s``, at ``max_s`` after sign-in, on sign-out, on a password change and when the account
  is disabled. The CSRF value that goes with a session is derived from its secret.
* **API keys** are random 256-bit secrets prefixed ``csk_``, shown once; the catalog keeps their
  SHA-256 (a random key needs no slow hash), their first characters, scopes no wider than the
  owner's role, an optional expiry, the last use and the revocation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from limits import parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy.engine import Engine

from .catalog import UTCDateTime
from .errors import Conflict, IndexerError, NotFound, QueueUnavailable

ROLES = ("viewer", "editor", "admin")
SCOPES = ("read", "write", "admin")
SCOPE_ROLE = {"read": "viewer", "write": "editor", "admin": "admin"}
ROLE_SCOPES = {"viewer": ("read",), "editor": ("read", "write"), "admin": SCOPES}
MIN_PASSWORD = 12
MAX_PASSWORD = 256
KEY_PREFIX = "csk_"
NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
LAST_USE_EVERY_S = 60.0  # a session's or key's last use is written at most this often

meta = sa.MetaData()
# the tables of migration 0010, declared as it made them (tests/indexer/test_migrations_match_models)
users = sa.Table(
    "users",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(256)),
    sa.Column("oidc_subject", sa.String(255), unique=True),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("password_changed_at", UTCDateTime),
    sa.CheckConstraint("role IN ('admin', 'editor', 'viewer')", name="ck_users_role"),
    sqlite_autoincrement=True,
)
user_sessions = sa.Table(
    "user_sessions",
    meta,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("address", sa.String(64)),
    sa.Column("user_agent", sa.String(200)),
)
api_keys = sa.Table(
    "api_keys",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
    sqlite_autoincrement=True,
)


class AccountError(IndexerError):
    """A request about accounts that cannot be done as asked (a 400 with the reason)."""


def role_at_least(role: str, wanted: str) -> bool:
    return ROLES.index(role) >= ROLES.index(wanted)


def narrower_role(a: str, b: str) -> str:
    return a if ROLES.index(a) <= ROLES.index(b) else b


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def csrf_of(session_secret: str) -> str:
    """The CSRF value of a session: derived from its secret (which only the cookie holds), so a
    page of another site, which cannot read the cookie, cannot make it."""
    return hashlib.sha256(b"clipsearch/csrf/" + session_secret.encode()).hexdigest()[:43]


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    role: str
    disabled: bool
    created_at: dt.datetime
    password_changed_at: dt.datetime | None
    sso: bool


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do: ``role`` is the effective one (a key's scopes narrow
    its owner's role). ``user_id`` None is the server's own API token or an open server."""

    name: str
    role: str
    via: str  # "token", "session", "key", "open", "cli"
    user_id: int | None = None
    session_id: str | None = None
    csrf: str | None = None


@dataclass(frozen=True)
class SessionInfo:
    id: str  # the SHA-256 of the secret: shown to list and end sessions, never a credential
    user: str
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class KeyInfo:
    id: int
    user: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(
            f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters: choose a longer one "
            "(a few unrelated words make a good one)"
        )


def check_name(name: str) -> str:
    if not NAME_RULE.match(name or ""):
        raise AccountError(
            "an account name is 1 to 64 letters, digits and . _ @ - (starting with a letter or "
            "digit)"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"the role is one of {', '.join(ROLES)}, not {role[:20]!r}")
    return role


def check_scopes(scopes: Sequence[str], role: str) -> tuple[str, ...]:
    """Scopes known and no wider than ``role`` (in the order of :data:`SCOPES`)."""
    wanted = set(scopes)
    unknown = wanted - set(SCOPES)
    if unknown or not wanted:
        raise AccountError(f"a key's scopes are one or more of {', '.join(SCOPES)}")
    too_wide = sorted(s for s in wanted if not role_at_least(role, SCOPE_ROLE[s]))
    if too_wide:
        raise AccountError(
            f"an account with the {role} role cannot hold a key with the scope "
            f"{', '.join(too_wide)}: a key is never wider than its owner's role"
        )
    return tuple(s for s in SCOPES if s in wanted)


def key_role(scopes: tuple[str, ...], owner_role: str) -> str:
    widest = max((SCOPE_ROLE[s] for s in scopes), key=ROLES.index, default="viewer")
    return narrower_role(widest, owner_role)


class _UserRow(Protocol):  # the columns of a users row that UserInfo is read from
    id: int
    name: str
    role: str
    disabled: bool
    created_at: dt.datetime
    password_changed_at: dt.datetime | None
    oidc_subject: str | None


def _user(row: _UserRow) -> UserInfo:
    return UserInfo(
        id=row.id,
        name=row.name,
        role=row.role,
        disabled=bool(row.disabled),
        created_at=row.created_at,
        password_changed_at=row.password_changed_at,
        sso=row.oidc_subject is not None,
    )


def _keep_an_admin(conn: sa.Connection, user: UserInfo, change: str) -> None:
    """Conflict when ``user`` is the last active admin: ``change`` (disabling, demoting or
    deleting them) would leave nobody to manage users and sharing. The active admins are read
    locked (FOR UPDATE on PostgreSQL; SQLite has one writer), so two admins demoting each other
    at once cannot both pass."""
    stmt = (
        sa.select(users.c.id)
        .where(users.c.role == "admin", users.c.disabled.is_(False))
        .with_for_update()
    )
    active = {int(i) for i in conn.scalars(stmt)}
    if active == {user.id}:
        raise Conflict(
            f"{user.name} is the last active admin: {change} would leave nobody to manage "
            "users, keys and sharing; make another account admin first (`clipsearch users "
            "role NAME --to admin`, or PATCH /api/users/NAME with role admin)"
        )


class Accounts:
    """The accounts kept in the catalog behind ``engine``.

    ``idle_s`` and ``max_s``: a session's idle and absolute lifetimes; ``clock``: Unix time (tests
    move it)."""

    def __init__(
        self,
        engine: Engine,
        idle_s: float = 7200.0,
        max_s: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from argon2 import PasswordHasher

        self.engine = engine
        self.idle_s = idle_s
        self.max_s = max_s
        self.clock = clock
        self._hasher = PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self._users_seen: tuple[float, bool] = (0.0, False)
        self._lock = threading.Lock()

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ---- users

    def has_users(self) -> bool:
        """Whether any account exists (then the server asks who is calling): a yes is kept, a
        no is asked again at most every 2 seconds (an account added by the CLI is seen soon)."""
        at, seen = self._users_seen
        if seen or time.monotonic() - at < 2.0:
            return seen
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(users.c.id).limit(1)).first() is not None
        self._users_seen = (time.monotonic(), found)
        return found

    def add_user(self, name: str, role: str, password: str | None) -> UserInfo:
        check_name(name)
        check_role(role)
        if password is not None:
            check_password(password)
        now = self._now()
        with self._tx() as conn:
            if conn.execute(sa.select(users.c.id).where(users.c.name == name)).first():
                raise Conflict(f"an account named {name!r} exists already")
            conn.execute(
                users.insert().values(
                    name=name,
                    role=role,
                    password_hash=self._hasher.hash(password) if password is not None else None,
                    disabled=False,
                    created_at=now,
                    password_changed_at=now if password is not None else None,
                )
            )
        self._users_seen = (time.monotonic(), True)
        return self.get_user(name)

    def get_user(self, name: str) -> UserInfo:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).first()
        if row is None:
            raise NotFound(f"no account named {name[:64]!r}: `clipsearch users list` lists them")
        return _user(row)

    def user_by_id(self, user_id: int) -> UserInfo:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.id == user_id)).first()
        if row is None:
            raise NotFound(f"no account with id {user_id}")
        return _user(row)

    def list_users(self) -> list[UserInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.name)).all()
        return [_user(r) for r in rows]

    def set_password(self, name: str, password: str) -> UserInfo:
        """A new password; every session of the account ends (its keys stay)."""
        check_password(password)
        user = self.get_user(name)
        with self._tx() as conn:
            conn.execute(
                users.update()
                .where(users.c.id == user.id)
                .values(password_hash=self._hasher.hash(password), password_changed_at=self._now())
            )
            conn.execute(user_sessions.delete().where(user_sessions.c.user_id == user.id))
        return self.get_user(name)

    def set_role(self, name: str, role: str) -> UserInfo:
        check_role(role)
        user = self.get_user(name)
        with self._tx() as conn:
            if role != "admin":
                _keep_an_admin(conn, user, "making them " + role)
            conn.execute(users.update().where(users.c.id == user.id).values(role=role))
        return self.get_user(name)

    def set_disabled(self, name: str, disabled: bool = True) -> UserInfo:
        """Disable (or enable again) an account: a disabled one cannot sign in, its sessions end
        and its keys stop working (they work again if it is enabled, unless revoked)."""
        user = self.get_user(name)
        with self._tx() as conn:
            if disabled:
                _keep_an_admin(conn, user, "disabling them")
            conn.execute(users.update().where(users.c.id == user.id).values(disabled=disabled))
            if disabled:
                conn.execute(user_sessions.delete().where(user_sessions.c.user_id == user.id))
        return self.get_user(name)

    def delete_user(self, name: str) -> UserInfo:
        """Delete an account: its sessions, keys and shares go with it (the audit trail keeps
        its name). The last active admin cannot be deleted."""
        user = self.get_user(name)
        with self._tx() as conn:
            _keep_an_admin(conn, user, "deleting them")
            conn.execute(user_sessions.delete().where(user_sessions.c.user_id == user.id))
            conn.execute(api_keys.delete().where(api_keys.c.user_id == user.id))
            conn.execute(sa.text("DELETE FROM folder_shares WHERE user_id = :u"), {"u": user.id})
            conn.execute(users.delete().where(users.c.id == user.id))
        return user

    def verify(self, name: str, password: str) -> UserInfo | None:
        """The account if ``password`` is its password and it is enabled; None otherwise, after
        the same work whether the name exists or not."""
        from argon2.exceptions import VerificationError

        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name[:64])).first()
        stored = row.password_hash if row is not None and row.password_hash else self._dummy
        try:
            self._hasher.verify(stored, password[:MAX_PASSWORD])
        except VerificationError:
            return None
        except Exception:  # a malformed stored hash: no sign-in, same answer
            return None
        if row is None or not row.password_hash or row.disabled:
            return None
        if self._hasher.check_needs_rehash(stored):
            with self._tx() as conn:
                conn.execute(
                    users.update()
                    .where(users.c.id == row.id)
                    .values(password_hash=self._hasher.hash(password))
                )
        return _user(row)

    def sso_user(self, subject: str, name: str, role: str, create: bool) -> UserInfo | None:
        """The account signed in by single sign-on with ``subject`` (made on first sign-in when
        ``create``); its role follows the provider's claim each time."""
        check_role(role)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.oidc_subject == subject)).first()
        if row is None:
            if not create:
                return None
            user = self.add_user(check_name(name), role, None)
            with self._tx() as conn:
                conn.execute(
                    users.update().where(users.c.id == user.id).values(oidc_subject=subject)
                )
            return self.get_user(name)
        if row.disabled:
            return None
        if row.role != role:
            with self._tx() as conn:
                conn.execute(users.update().where(users.c.id == row.id).values(role=role))
        return self.user_by_id(row.id)

    # ---- sessions

    def start_session(
        self, user: UserInfo, address: str | None = None, user_agent: str | None = None
    ) -> tuple[str, Principal]:
        """A new session: (its secret, for the cookie; the principal it signs in)."""
        secret = secrets.token_urlsafe(32)
        now = self._now()
        expires = now + dt.timedelta(seconds=self.max_s)
        with self._tx() as conn:
            conn.execute(
                user_sessions.insert().values(
                    id=_digest(secret),
                    user_id=user.id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires,
                    address=(address or "")[:64] or None,
                    user_agent=(user_agent or "")[:200] or None,
                )
            )
            # sessions long over are dropped as new ones come
            conn.execute(user_sessions.delete().where(user_sessions.c.expires_at < now))
        return secret, Principal(
            user.name, user.role, "session", user.id, _digest(secret), csrf_of(secret)
        )

    def session_principal(self, secret: str) -> Principal | None:
        """Who a session cookie signs in, or None (unknown, idle too long, past its absolute
        expiry, or its account disabled)."""
        if not secret or len(secret) > 100:
            return None
        sid = _digest(secret)
        now = self._now()
        stmt = (
            sa.select(user_sessions, users.c.name, users.c.role, users.c.disabled)
            .join(users, users.c.id == user_sessions.c.user_id)
            .where(user_sessions.c.id == sid)
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None or row.disabled:
            return None
        idle_until = row.last_seen_at + dt.timedelta(seconds=self.idle_s)
        if now >= row.expires_at or now >= idle_until:
            self.end_session(secret)
            return None
        if (now - row.last_seen_at).total_seconds() >= min(LAST_USE_EVERY_S, self.idle_s / 4):
            with self._tx() as conn:
                conn.execute(
                    user_sessions.update().where(user_sessions.c.id == sid).values(last_seen_at=now)
                )
        return Principal(row.name, row.role, "session", row.user_id, sid, csrf_of(secret))

    def end_session(self, secret: str) -> None:
        with self._tx() as conn:
            conn.execute(user_sessions.delete().where(user_sessions.c.id == _digest(secret)))

    def end_session_by_id(self, user_id: int, session_id: str) -> None:
        with self._tx() as conn:
            done = conn.execute(
                user_sessions.delete().where(
                    user_sessions.c.id == session_id, user_sessions.c.user_id == user_id
                )
            )
        if not done.rowcount:
            raise NotFound("no such session of this account")

    def list_sessions(self, user_id: int) -> list[SessionInfo]:
        stmt = (
            sa.select(user_sessions, users.c.name)
            .join(users, users.c.id == user_sessions.c.user_id)
            .where(user_sessions.c.user_id == user_id)
            .order_by(user_sessions.c.created_at.desc())
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            SessionInfo(
                r.id, r.name, r.created_at, r.last_seen_at, r.expires_at, r.address, r.user_agent
            )
            for r in rows
        ]

    # ---- API keys

    def create_key(
        self,
        owner: str,
        name: str,
        scopes: Sequence[str],
        expires_at: dt.datetime | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key for ``owner``: (the key, shown once; what is kept of it)."""
        user = self.get_user(owner)
        kept = check_scopes(scopes, user.role)
        if not 0 < len(name) <= 64:
            raise AccountError("a key's name is 1 to 64 characters (what it is for)")
        if expires_at is not None and expires_at <= self._now():
            raise AccountError("the key's expiry is in the past: give a future date")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._tx() as conn:
            new_id = conn.execute(
                api_keys.insert().values(
                    user_id=user.id,
                    name=name,
                    prefix=key[:12],
                    key_hash=_digest(key),
                    scopes=",".join(kept),
                    created_at=self._now(),
                    expires_at=expires_at,
                )
            ).inserted_primary_key
        assert new_id is not None
        return key, self.get_key(int(new_id[0]))

    def _keys(self, where: sa.ColumnElement[bool]) -> list[KeyInfo]:
        stmt = (
            sa.select(api_keys, users.c.name.label("owner"))
            .join(users, users.c.id == api_keys.c.user_id)
            .where(where)
            .order_by(api_keys.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            KeyInfo(
                r.id,
                r.owner,
                r.name,
                r.prefix,
                tuple(r.scopes.split(",")),
                r.created_at,
                r.expires_at,
                r.last_used_at,
                r.revoked_at,
            )
            for r in rows
        ]

    def get_key(self, key_id: int) -> KeyInfo:
        found = self._keys(api_keys.c.id == key_id)
        if not found:
            raise NotFound(f"no API key with id {key_id}")
        return found[0]

    def list_keys(self, owner: str | None = None) -> list[KeyInfo]:
        if owner is None:
            return self._keys(sa.true())
        return self._keys(api_keys.c.user_id == self.get_user(owner).id)

    def revoke_key(self, key_id: int, owner: str | None = None) -> KeyInfo:
        """Revoke a key (``owner``: only if it is theirs). It stops working at once."""
        key = self.get_key(key_id)
        if owner is not None and key.user != owner:
            raise NotFound(f"no API key with id {key_id}")
        with self._tx() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )
        return self.get_key(key_id)

    def key_principal(self, key: str) -> Principal | None:
        """Who an API key signs in (its scopes narrowing its owner's role), or None (unknown,
        revoked, expired, or its owner disabled)."""
        if not key.startswith(KEY_PREFIX) or len(key) > 100:
            return None
        stmt = (
            sa.select(api_keys, users.c.name.label("owner"), users.c.role, users.c.disabled)
            .join(users, users.c.id == api_keys.c.user_id)
            .where(api_keys.c.key_hash == _digest(key))
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        now = self._now()
        if row is None or row.disabled or row.revoked_at is not None:
            return None
        if row.expires_at is not None and now >= row.expires_at:
            return None
        last = row.last_used_at
        if last is None or (now - last).total_seconds() >= LAST_USE_EVERY_S:
            with self._tx() as conn:
                conn.execute(
                    api_keys.update().where(api_keys.c.id == row.id).values(last_used_at=now)
                )
        role = key_role(tuple(row.scopes.split(",")), row.role)
        return Principal(row.owner, role, "key", row.user_id)


class SignInLimitsUnavailable(QueueUnavailable):
    """The Redis that keeps the sign-in limits does not answer: sign-in is refused (503) rather
    than let tries go uncounted."""


def shared_limits_url(broker_url: str | None) -> str | None:
    """Where the sign-in limits are kept so that every API process counts the same tries: the
    broker's Redis when the broker is one (``redis://``, ``rediss://``); None (each process's
    memory) otherwise."""
    if broker_url and broker_url.split("://", 1)[0].lower() in ("redis", "rediss"):
        return broker_url
    return None


class SignInGuard:
    """Failed sign-ins counted per account name and per client address (the ``limits``
    library's moving window); past either limit, sign-in is refused until the window has room
    again, even with the right password. With ``redis_url`` (:func:`shared_limits_url`) the
    counts are kept in Redis under ``<prefix>:signin``, shared by every API process
    (``serve --workers``, replicas); without, in this process's memory."""

    def __init__(
        self,
        per_account: str = "5/minute",
        per_address: str = "20/minute",
        redis_url: str | None = None,
        prefix: str = "clipsearch",
    ) -> None:
        storage: Storage = MemoryStorage()
        if redis_url is not None:
            shared = storage_from_string(
                redis_url, key_prefix=f"{prefix or 'clipsearch'}:signin", wrap_exceptions=True
            )
            assert isinstance(shared, Storage)  # a redis:// URL gives the blocking storage
            storage = shared
        self.shared = redis_url is not None
        self._limiter = MovingWindowRateLimiter(storage)
        self._account = parse(per_account)
        self._address = parse(per_address)

    @contextmanager
    def _store(self) -> Iterator[None]:
        try:
            yield
        except StorageError as exc:
            raise SignInLimitsUnavailable(
                "sign-in is paused: the Redis that keeps the sign-in limits (the broker) does "
                "not answer; retry in a moment (the server log has the cause)"
            ) from exc

    def retry_after(self, name: str, address: str) -> int | None:
        """Seconds to wait when either limit is spent; None when sign-in may be tried."""
        waits = []
        with self._store():
            for item, key in (
                (self._account, "n:" + name.lower()),
                (self._address, "a:" + address),
            ):
                if not self._limiter.test(item, key):
                    reset, _ = self._limiter.get_window_stats(item, key)
                    waits.append(max(1, int(reset - time.time()) + 1))
        return max(waits) if waits else None

    def failed(self, name: str, address: str) -> None:
        with self._store():
            self._limiter.hit(self._account, "n:" + name.lower())
            self._limiter.hit(self._address, "a:" + address)
