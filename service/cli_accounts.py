"""``clipsearch users|keys|share|audit``: people, keys and sharing from the command line, on the
catalog itself (the person at the server's shell is its administrator; the audit trail names the
command as ``cli:<login>``).

The decisions are the domain's (indexer/accounts.py, indexer/sharing.py, indexer/audit.py); this
module parses, calls and prints. A password is read from the terminal without echo (or one line
of stdin with ``--password-stdin``), never from an argument, which other users could see in the
process list; a new key is printed once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
from dataclasses import asdict

from sqlalchemy.engine import Engine

from clipsearch.indexer import audit, sharing
from clipsearch.indexer.accounts import ROLES, SCOPES, Accounts
from clipsearch.indexer.errors import IndexerError


def _engine(args: argparse.Namespace) -> Engine:
    from clipsearch.indexer.catalog import init_db

    from .cli_common import cli_settings

    settings = cli_settings(args)
    config = settings.library_config()
    return init_db(config.resolved_database_url, migrate=config.auto_migrate)


def _actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _password(args: argparse.Namespace, prompt: str) -> str:
    from .cli_common import CLIError

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CLIError("no terminal to ask the password on: pipe it with --password-stdin")
    first = getpass.getpass(prompt)
    if getpass.getpass("again: ") != first:
        raise CLIError("the two passwords differ: nothing changed")
    return first


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def cmd_users(args: argparse.Namespace) -> int:
    from .cli_common import CLIError, print_json

    engine = _engine(args)
    accounts = Accounts(engine)
    try:
        if args.action == "list":
            found = accounts.list_users()
            if args.json:
                print_json([asdict(u) for u in found])
                return 0
            for u in found:
                state = " (disabled)" if u.disabled else ""
                sso = " sso" if u.sso else ""
                print(f"{u.name:24s} {u.role:7s}{sso}{state}  since {_when(u.created_at)}")
            if not found:
                print("no accounts yet: `clipsearch users add NAME --role admin`")
            return 0
        if not args.name:
            raise CLIError(f"`clipsearch users {args.action}` needs the account's name")
        if args.action == "add":
            user = accounts.add_user(args.name, args.role, _password(args, "password: "))
            audit.record(engine, _actor(), "user-added", f"{user.name} ({user.role})")
            print(f"added {user.name} ({user.role})")
        elif args.action == "passwd":
            accounts.set_password(args.name, _password(args, f"new password for {args.name}: "))
            audit.record(engine, _actor(), "password-changed", args.name)
            print(f"{args.name}: password changed; their sessions have ended")
        elif args.action in ("disable", "enable"):
            user = accounts.set_disabled(args.name, args.action == "disable")
            audit.record(engine, _actor(), "user-changed", f"{user.name} disabled={user.disabled}")
            print(f"{user.name}: {'disabled' if user.disabled else 'enabled'}")
        elif args.action == "delete":
            user = accounts.delete_user(args.name)
            audit.record(engine, _actor(), "user-deleted", f"{user.name} ({user.role})")
            print(f"deleted {user.name}; their sessions, keys and shares are gone")
        elif args.action == "role":
            if args.role_value is None:
                raise CLIError("`clipsearch users role NAME --role ROLE`")
            user = accounts.set_role(args.name, args.role_value)
            audit.record(engine, _actor(), "user-changed", f"{user.name} role={user.role}")
            print(f"{user.name}: {user.role}")
        return 0
    except IndexerError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        engine.dispose()


def cmd_keys(args: argparse.Namespace) -> int:
    from .cli_common import CLIError, print_json

    engine = _engine(args)
    accounts = Accounts(engine)
    try:
        if args.action == "list":
            found = accounts.list_keys(args.user)
            if args.json:
                print_json([asdict(k) for k in found])
                return 0
            for k in found:
                state = f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active"
                print(
                    f"{k.id:5d}  {k.user:16s} {k.name:20s} {','.join(k.scopes):16s} {k.prefix}… "
                    f"{state}, expires {_when(k.expires_at)}, last used {_when(k.last_used_at)}"
                )
            return 0
        if args.action == "create":
            if not args.user or not args.name:
                raise CLIError("`clipsearch keys create --user NAME --name WHAT-FOR [--scope ...]`")
            expires = None
            if args.expires_days is not None:
                expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=args.expires_days)
            key, info = accounts.create_key(args.user, args.name, args.scope or ["read"], expires)
            audit.record(
                engine, _actor(), "key-created", f"key {info.id} {info.name!r} of {info.user}"
            )
            if args.json:
                print_json({**asdict(info), "key": key})
            else:
                print(key)
                print(
                    f"key {info.id} for {info.user} ({','.join(info.scopes)}): shown this once; "
                    "send it as 'Authorization: Bearer <key>'",
                    file=sys.stderr,
                )
            return 0
        if args.action == "revoke":
            if args.id is None:
                raise CLIError("`clipsearch keys revoke ID` (the id `clipsearch keys list` shows)")
            info = accounts.revoke_key(args.id)
            audit.record(
                engine, _actor(), "key-revoked", f"key {info.id} {info.name!r} of {info.user}"
            )
            print(f"key {info.id} ({info.name}, {info.user}) revoked")
        return 0
    except IndexerError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        engine.dispose()


def cmd_share(args: argparse.Namespace) -> int:
    from .cli_common import CLIError, print_json

    engine = _engine(args)
    try:
        if args.list:
            found = sharing.list_shares(engine)
            if args.json:
                print_json([asdict(s) for s in found])
                return 0
            for s in found:
                print(f"{s.folder}  ->  {'everyone' if s.user == sharing.EVERYONE else s.user}")
            return 0
        if not args.folder or (args.everyone == bool(args.user)):
            raise CLIError("`clipsearch share FOLDER --with USER` or `--everyone` (one of them)")
        folder = os.path.abspath(os.path.expanduser(args.folder))
        whom = None if args.everyone else args.user
        if args.remove:
            sharing.unshare(engine, folder, whom)
            audit.record(engine, _actor(), "folder-unshared", f"{folder} with {whom or '*'}")
            print(f"{folder} is no longer shared with {whom or 'everyone'}")
        else:
            info = sharing.share(engine, folder, whom)
            audit.record(engine, _actor(), "folder-shared", f"{info.folder} with {info.user}")
            print(f"{info.folder} is shared with {whom or 'everyone'}")
        return 0
    except IndexerError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        engine.dispose()


def cmd_audit(args: argparse.Namespace) -> int:
    from .cli_common import print_json

    engine = _engine(args)
    try:
        found = audit.entries(engine, args.limit, None, args.actor, args.action)
        if args.json:
            print_json([asdict(e) for e in found])
            return 0
        for e in found:
            where = f" from {e.address}" if e.address else ""
            print(
                f"{_when(e.at)}  {e.actor:16s} {e.action:18s} {e.target or ''}{where} [{e.outcome}]"
            )
        return 0
    finally:
        engine.dispose()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``users``, ``keys``, ``share`` and ``audit`` to the ``clipsearch`` sub-commands."""
    from .cli_common import common_flags

    p = subparsers.add_parser(
        "users",
        help="accounts: add, list, passwd, disable, enable, role, delete",
        description="Accounts with a role: viewer (search and browse the folders shared with "
        "them), editor (also add folders, ingest, remove, restore, tag), admin (also users, keys, "
        "sharing, settings, models, re-index). The password is asked on the terminal.",
    )
    p.add_argument(
        "action", choices=("add", "list", "passwd", "disable", "enable", "role", "delete")
    )
    p.add_argument("name", nargs="?", help="the account's name")
    p.add_argument("--role", choices=ROLES, default="viewer", help="add: the role (viewer)")
    p.add_argument("--to", dest="role_value", choices=ROLES, help="role: the new role")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common_flags(p, model=False)
    p.set_defaults(func=cmd_users)

    p = subparsers.add_parser(
        "keys",
        help="API keys: create, list, revoke",
        description="API keys for scripts: per account, scopes no wider than its role, shown "
        "once, stored hashed, revoked alone. Send as 'Authorization: Bearer <key>'.",
    )
    p.add_argument("action", choices=("create", "list", "revoke"))
    p.add_argument("id", nargs="?", type=int, help="revoke: the key's id")
    p.add_argument("--user", help="create: whose key; list: only theirs")
    p.add_argument("--name", help="create: what the key is for")
    p.add_argument("--scope", action="append", choices=SCOPES, help="create: repeatable (read)")
    p.add_argument("--expires-days", type=float, help="create: the key stops working after this")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common_flags(p, model=False)
    p.set_defaults(func=cmd_keys)

    p = subparsers.add_parser(
        "share",
        help="share a folder with a viewer or everyone",
        description="Viewers see only the pictures under the folders shared with them (or with "
        "everyone); editors and admins see every folder.",
    )
    p.add_argument("folder", nargs="?", help="a folder of the library (absolute path)")
    p.add_argument("--with", dest="user", help="the account to share it with")
    p.add_argument("--everyone", action="store_true", help="share it with every account")
    p.add_argument("--remove", action="store_true", help="stop sharing it (with them)")
    p.add_argument("--list", action="store_true", help="list what is shared with whom")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common_flags(p, model=False)
    p.set_defaults(func=cmd_share)

    p = subparsers.add_parser(
        "audit", help="the audit trail", description="Who did what and when, newest first."
    )
    p.add_argument("--limit", type=int, default=50, help="entries (default 50)")
    p.add_argument("--actor", help="only this account (or token, cli:LOGIN)")
    p.add_argument("--action", choices=audit.ACTIONS, help="only this action")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common_flags(p, model=False)
    p.set_defaults(func=cmd_audit)
