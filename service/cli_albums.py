"""``clipsearch albums list|create|show|add|remove|pin|exclude|export|delete|refresh``.

The decisions are the domain's (indexer/albums.py, indexer/album_jobs.py); this module parses,
calls and prints. ``create NAME`` makes a hand-picked album; with a query (``--query``,
``--image``, ``--folder``, ``--from``/``--to``, ``--tag``, ``--format``, ``--min-relevance``) a
smart one, computed by the albums job (``--wait`` follows it) and kept up to date as pictures
arrive or leave. ``export NAME --zip FILE`` writes a zip of the files; ``--links FOLDER`` a new
folder of symbolic links inside the folders the library may serve.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from clipsearch.indexer import albums as domain
from clipsearch.indexer.errors import IndexerError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from clipsearch.indexer.library import Library

ACTIONS = (
    "list", "create", "show", "add", "remove", "pin", "exclude", "export", "delete", "refresh",
)  # fmt: skip
_NEEDS_IDS = ("add", "remove", "pin", "exclude")


def _query(args: argparse.Namespace) -> domain.SavedQuery | None:
    """The smart album's query from the flags, or None (a hand-picked album)."""
    given = (args.query, args.negative, args.image, args.folder, args.date_from, args.date_to,
             args.tag, args.format, args.min_relevance)  # fmt: skip
    if all(v in (None, []) for v in given):
        return None
    return domain.SavedQuery.from_json(
        {
            "text": args.query,
            "negative": list(args.negative or []),
            "terms": [{"image_id": i, "weight": 1.0} for i in args.image or []],
            "filters": {
                "folder": None if args.folder is None else os.path.abspath(args.folder),
                "date_from": args.date_from,
                "date_to": args.date_to,
                "formats": args.format or None,
                "tag": args.tag,
            },
            "min_relevance": args.min_relevance,
        }
    )


def _line(a: domain.AlbumInfo) -> str:
    kind = "smart" if a.kind == "smart" else "hand-picked"
    state = "" if a.kind == "manual" or a.computed_at else ", not computed yet"
    parts = [f"{n} {what}" for n, what in ((a.pinned, "pinned"), (a.excluded, "excluded")) if n]
    extra = "".join(f", {p}" for p in parts) if a.kind == "smart" else ""
    return f"{a.id:4d}  {a.name} ({kind}{state}): {a.size} pictures{extra}"


def cmd_albums(args: argparse.Namespace) -> int:
    from .cli_common import (
        CLIError,
        catalog_path,
        cli_settings,
        follow_job,
        open_library,
        print_json,
    )

    settings = cli_settings(args)
    lib = open_library(settings)
    try:
        if args.action == "refresh":
            return follow_job(args, settings, lib, domain.submit(lib))
        if args.action == "create":
            query = _query(args)
            info = domain.create(lib, args.name, query)
            print(_line(info))
            if query is not None and args.wait:
                with lib.Session() as session:
                    job_id = domain.record_job(session)[0].id
                return follow_job(args, settings, lib, lib.get_job(job_id))
            return 0
        with lib.Session() as session:
            if args.action == "list":
                found = domain.list_albums(session)
                if args.json:
                    print_json([asdict(a) for a in found])
                    return 0
                for a in found:
                    print(_line(a))
                if not found:
                    print("no albums: `clipsearch albums create NAME [--query TEXT]` makes one")
                return 0
            if args.action == "delete":
                info = domain.delete_album(session, args.name)
                print(f"deleted album {info.id} {info.name!r} (its {info.size} pictures stay)")
                return 0
            if args.action in _NEEDS_IDS:
                info = domain.change_members(session, args.name, args.ids, args.action)
                print(_line(info))
                return 0
            if args.action == "export":
                return _export(lib, session, args, catalog_path)
            info = domain.get_album(session, args.name)  # show
            items, next_after = domain.members_page(
                session, info.id, args.after, args.limit, args.excluded
            )
            if args.json:
                print_json(
                    {"album": asdict(info), "items": [asdict(i) for i in items],
                     "next_after": next_after}
                )  # fmt: skip
                return 0
            print(_line(info))
            for i in items:
                score = "" if i.score is None else f"{i.score:.3f} "
                mark = f" ({i.state})" if i.state != "auto" else ""
                print(f"  {i.image.id:7d}  {score}{catalog_path(i.image.path)}{mark}")
            if next_after is not None:
                print(f"more: clipsearch albums show {args.name!r} --after {next_after}")
            return 0
    except IndexerError as exc:
        raise CLIError(str(exc)) from exc


def _export(
    lib: Library, session: Session, args: argparse.Namespace, show: Callable[[str], str]
) -> int:
    from .cli_common import CLIError

    if (args.zip is None) == (args.links is None):
        raise CLIError("`clipsearch albums export NAME` needs --zip FILE or --links FOLDER")
    info, images = domain.export_rows(session, args.name)
    if args.links is not None:
        folder, linked, missing = domain.link_folder(lib, images, args.links)
        gone = f" ({missing} no longer on disk)" if missing else ""
        print(f"{info.name}: {linked} links in {show(folder)}{gone}")
        return 0
    target = os.path.abspath(args.zip)
    if os.path.lexists(target):
        raise CLIError(f"{target} exists: pick a new file name")
    written = 0
    with open(target, "xb") as out:
        for chunk in domain.zip_chunks(lib, images):
            out.write(chunk)
            written += len(chunk)
    print(f"{info.name}: {len(images)} pictures, {written} bytes in {show(target)}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``albums`` to the ``clipsearch`` sub-commands."""
    from .cli_common import common_flags, wait_flags

    p = subparsers.add_parser(
        "albums",
        help="albums: hand-picked, or smart ones that fill themselves from a saved search",
        description="A hand-picked album holds the pictures you add. A smart album is a saved "
        "search (--query text with -negatives, --image ID terms, --folder, --from/--to, --tag, "
        "--format, --min-relevance): the albums job computes it over the library's vectors, and "
        "every picture embedded later joins it when it matches; a picture that leaves the "
        "library leaves its albums. `pin` keeps a picture in whatever the query says; `exclude` "
        "keeps one out; `remove` takes one out of a hand-picked album (excludes it from a smart "
        "one). `export NAME --zip FILE | --links FOLDER` writes the album's files.",
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("name", nargs="?", help="the album (name or id); create: its name")
    p.add_argument("ids", nargs="*", type=int, help="add/remove/pin/exclude: picture ids")
    q = p.add_argument_group("create: a smart album's query (none: a hand-picked album)")
    q.add_argument("--query", help="what to look for, e.g. 'beach -people'")
    q.add_argument("--negative", action="append", help="steer away from this text (repeatable)")
    q.add_argument("--image", action="append", type=int, metavar="ID", help="like this picture")
    q.add_argument("--folder", help="only pictures in this folder (and below)")
    q.add_argument("--from", dest="date_from", metavar="DATE", help="taken on or after DATE")
    q.add_argument("--to", dest="date_to", metavar="DATE", help="taken on or before DATE")
    q.add_argument("--tag", help="only pictures with this tag")
    q.add_argument("--format", action="append", help="only this format (JPEG, PNG, ...)")
    q.add_argument(
        "--min-relevance", type=float, help="the relevance cut, 0 to 1 (default: the search's)"
    )
    p.add_argument("--after", type=int, help="show: the picture id printed after 'more:'")
    p.add_argument("--limit", type=int, default=50, help="show: pictures per page (default 50)")
    p.add_argument("--excluded", action="store_true", help="show: the excluded pictures")
    p.add_argument("--zip", metavar="FILE", help="export: write a zip of the files")
    p.add_argument("--links", metavar="FOLDER", help="export: a new folder of symbolic links")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    wait_flags(p)
    common_flags(p)
    p.set_defaults(func=_checked)


def _checked(args: argparse.Namespace) -> int:
    from .cli_common import CLIError

    if args.action not in ("list", "refresh") and not args.name:
        raise CLIError(f"`clipsearch albums {args.action}` needs an album name")
    if args.action in _NEEDS_IDS and not args.ids:
        raise CLIError(f"`clipsearch albums {args.action}` needs picture ids")
    if args.ids and args.action not in _NEEDS_IDS:
        raise CLIError(f"`clipsearch albums {args.action}` takes no picture ids")
    return cmd_albums(args)
