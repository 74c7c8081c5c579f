"""The ``clipsearch`` command line.

Every command reads the same settings as the server (``CLIPSEARCH_*`` environment variables),
with flags taking precedence. User errors print one line ``clipsearch: error: ...`` and exit 2;
no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clipsearch.indexer.errors import IndexerError
from clipsearch.indexer.ingest_problems import PROBLEMS_PAGE_DEFAULT, PROBLEMS_PAGE_MAX
from clipsearch.indexer.logs import configure_from_env

from .cli_common import (
    EXIT_USAGE,
    CLIError,
    folder_line,
)
from .cli_common import (
    cli_settings as _settings,
)
from .cli_common import (
    common_flags as _common,
)
from .cli_common import (
    follow_job as _follow_job,
)
from .cli_common import (
    job_line as _job_line,
)
from .cli_common import (
    open_library as _library,
)
from .cli_common import (
    print_json as _print_json,
)
from .cli_common import (
    user_errors as _user_errors,
)
from .cli_common import (
    wait_flags as _wait_flags,
)

log = logging.getLogger(__name__)


# --- helpers ----------------------------------------------------------------------------------


# --- commands ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run

    settings = _settings(args)
    try:
        run(settings)
    except KeyboardInterrupt:  # Ctrl-C is how serve is stopped: not an error
        print("clipsearch: stopped", file=sys.stderr)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    if not args.folder.strip():  # Path("") is ".": an unset variable must not ingest the cwd
        raise CLIError("no folder given: give the folder that holds the images")
    folder = Path(args.folder).expanduser()
    if "\x00" in args.folder:
        raise CLIError("the folder name contains a NUL byte")
    try:
        exists, is_dir = folder.exists(), folder.is_dir()
    except OSError as exc:  # e.g. ENAMETOOLONG
        shown = args.folder if len(args.folder) <= 80 else args.folder[:80] + "..."
        raise CLIError(f"{shown}: {exc.strerror or exc}") from exc
    if not exists:
        raise CLIError(f"{args.folder}: no such folder")
    if not is_dir:
        raise CLIError(f"{args.folder}: not a folder (give the folder that holds the images)")
    settings = _settings(args)
    lib = _library(settings)
    from clipsearch.model.registry import check_spec

    check_spec(lib.model_spec)  # a model that cannot be loaded fails here, not in the worker
    job = lib.submit_ingest(str(folder.resolve()), recursive=not args.no_recursive)
    return _follow_job(args, settings, lib, job)


def cmd_reindex(args: argparse.Namespace) -> int:
    settings = _settings(args)
    lib = _library(settings)
    job = lib.submit_reindex(args.new_model)
    return _follow_job(args, settings, lib, job)


def cmd_worker(args: argparse.Namespace) -> int:
    from clipsearch.indexer.worker import run_worker

    settings = _settings(args)  # --concurrency: worker_concurrency
    run_worker(settings.worker_config(), loglevel=args.loglevel or settings.logs.level or "INFO")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    lib = _library(settings)
    stats = lib.stats()
    jobs = lib.list_jobs(limit=args.jobs)
    if args.json:
        from dataclasses import asdict

        _print_json({"stats": stats.as_dict(), "jobs": [asdict(j) for j in jobs]})
        return 0
    images, index = stats.images, stats.index
    print(f"data folder: {settings.catalog.data_dir}")
    print(f"model: {stats.model}")
    print(
        f"images: {images.total} total, {images.ready} ready, {images.pending} pending, "
        f"{images.failed} failed"
    )
    if index.version is None:
        print(f"index: none built yet ({index.delta} vectors searchable exactly)")
    else:
        print(
            f"index: version {index.version}, {index.kind}, "
            f"{index.size} vectors + {index.delta} in the delta"
        )
    if not jobs:
        print("jobs: none")
    for job in jobs:
        print(_job_line(job))
        if job.state == "failed" and getattr(job, "message", None):
            print(f"  why: {job.message}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    lib = _library(_settings(args))
    removed = lib.delete_image(args.image_id, from_disk=args.from_disk)
    where = f", file moved to {removed.trash_path}" if removed.trash_path else ""
    print(
        f"image {removed.image_id} removed ({removed.path}{where}); scans will not add it again. "
        f"Undo with `clipsearch restore {removed.id}`"
    )
    return 0


def cmd_removed(args: argparse.Namespace) -> int:
    lib = _library(_settings(args))
    items = lib.list_removed(limit=args.limit)
    if args.json:
        from dataclasses import asdict

        _print_json([asdict(r) for r in items])
        return 0
    if not items:
        print("no removed images")
        return 0
    for r in items:
        trash = "  (in the trash)" if r.trash_path else ""
        when = r.removed_at.strftime("%Y-%m-%d %H:%M") if r.removed_at else "?"
        print(f"{r.id:5d}  image {r.image_id}  {when}  {r.path}{trash}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    if (args.removed_id is None) == (args.image is None):
        raise CLIError("give the removal's id (see `clipsearch removed`) or --image ID")
    settings = _settings(args)
    lib = _library(settings)
    result = lib.restore(args.removed_id) if args.image is None else lib.restore_image(args.image)
    for r in result.restored:
        print(f"restored {r.path} (was image {r.image_id})")
    rc = 0
    for job in result.jobs:
        rc = max(rc, _follow_job(args, settings, lib, job))
    return rc


def cmd_folders(args: argparse.Namespace) -> int:
    lib = _library(_settings(args))
    folders = lib.list_watched_folders()
    if args.problems:  # each folder's current problems (indexer.ingest_problems, issue 24)
        if args.after is not None and args.folder is None:
            raise IndexerError("--after goes with --folder (the folder the 'more:' line names)")
        shown = [f for f in folders if args.folder in (None, f.id)]
        pages = [lib.watched_folder_problems(f.id, args.limit, args.after) for f in shown]
        if args.json:
            _print_json([{**vars(p), "items": [vars(i) for i in p.items]} for p in pages])
            return 0
        for page in pages:
            told = f"{page.total} files could not be added" if page.total else "no problems"
            print(f"{page.folder} (folder {page.folder_id}): {told}")
            for item in page.items:
                print(f"  {item.path}: {item.reason}")
            if page.next_after is not None:
                after = shlex.quote(page.next_after)
                print(
                    f"  more: clipsearch folders --problems --folder {page.folder_id} --after {after}"
                )
        return 0
    if args.json:
        from dataclasses import asdict

        _print_json([asdict(f) for f in folders])
        return 0
    if not folders:
        print("no watched folders (add one with `clipsearch watch DIR`)")
    for f in folders:
        print(folder_line(f))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise CLIError(f"{args.folder}: no such folder")
    settings = _settings(args)
    lib = _library(settings)
    f = lib.add_watched_folder(str(folder.resolve()), recursive=not args.no_recursive)
    print(
        f"watching {f.path} (folder {f.id}): `clipsearch serve` picks up its changes within "
        "seconds and re-scans it periodically"
    )
    if f.last_job is not None:
        return _follow_job(args, settings, lib, f.last_job)
    return 0


def cmd_unwatch(args: argparse.Namespace) -> int:
    lib = _library(_settings(args))
    target = args.folder
    folders = lib.list_watched_folders()
    if target.isdigit():
        match = [f for f in folders if f.id == int(target)]
    else:
        resolved = str(Path(target).expanduser().resolve())
        match = [f for f in folders if f.path in (target, resolved)]
    if not match:
        raise CLIError(f"{target}: not a watched folder (see `clipsearch folders`)")
    f = lib.remove_watched_folder(match[0].id)
    print(f"no longer watching {f.path} (its images stay in the library)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Ask the server that serves this data folder when one runs (service.runfile), else search
    the library here; both with the domain's search and defaults (service/cli_search.py)."""
    if args.lang == "list":  # the model's query languages, not a search
        from .cli_search import print_languages

        return print_languages(_library(_settings(args)).model)
    if args.min_relevance is not None and not 0.0 <= args.min_relevance <= 1.0:
        raise CLIError("--min-relevance is between 0 and 1 (0: show every result)")
    if not (args.text or "").strip() and not (args.like or args.unlike or args.not_):
        raise CLIError("the query is empty: type what you are looking for (or --like ID)")
    from .cli_search import SearchError, ServerGone, ask_server, search_local
    from .runfile import running_server

    page = None
    settings = None
    server = None
    if args.server:
        # --data-dir wins over every setting: its server is found without reading them (the
        # settings' imports are most of what this command costs when a server answers)
        if args.data_dir:
            server = running_server(args.data_dir)
        else:
            settings = _settings(args)
            server = running_server(settings.catalog.data_dir)
    try:
        if server is not None:
            try:
                page = ask_server(server.url, args)
            except ServerGone as exc:
                log.info("the server in the run file did not answer (%s): searching here", exc)
        if page is None:
            settings = settings if settings is not None else _settings(args)
            # only the text tower: the image tower is read if the relevance background must be
            # measured here (no calibration saved in the data folder yet)
            page = search_local(_library(settings, image_tower="on_demand"), settings, args)
    except SearchError as exc:
        raise CLIError(str(exc)) from exc
    hits = page.hits
    if args.json:
        _print_json(hits)
        return 0
    if not hits:
        if page.hidden:
            more = "+" if page.hidden_more else ""
            print(
                f"no results above relevance {page.min_relevance or 0:.2f} ({page.hidden}{more} "
                "weaker hidden by --min-relevance; --min-relevance 0 shows them)"
            )
        else:
            print("no results (is anything ingested? see `clipsearch status`)")
        return 0
    for rank, hit in enumerate(hits, 1 + args.offset):
        why = _why(hit)
        rel = hit.get("relevance")
        shown = f"{rel:.2f}" if rel is not None else "   -"
        print(
            f"{rank:3d}  {hit['score']:.4f}  {shown}  #{hit['id']}  {hit['path']}"
            + (f"  [{why}]" if why else "")
        )
    if page.hidden:
        print(
            f"({page.hidden}{'+' if page.hidden_more else ''} weaker results hidden below "
            f"relevance {page.min_relevance:.2f}; --min-relevance 0 shows them)"
        )
    if page.has_more and page.next_cursor:
        print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
    return 0


def _why(hit: Mapping[str, object]) -> str:
    """Why a hit matched, for the search listing: "text: receipt, filename" (semantic alone
    says nothing new)."""
    matched, found = hit.get("match") or (), hit.get("words") or ()
    match = (
        [str(m) for m in matched if m != "semantic"] if isinstance(matched, list | tuple) else []
    )
    if not match:
        return ""
    words = ", ".join(str(w) for w in found) if isinstance(found, list | tuple) else ""
    return " + ".join(match) + (f": {words}" if words else "")


def cmd_ocr(args: argparse.Namespace) -> int:
    settings = _settings(args)
    lib = _library(settings)
    job = lib.submit_ocr(force=args.force, folder=args.folder)
    return _follow_job(args, settings, lib, job)


def cmd_embed(args: argparse.Namespace) -> int:
    if not args.text and not args.image:
        raise CLIError("nothing to embed: give --text TEXT and/or --image PATH")
    for path in args.image or []:
        if not Path(path).is_file():
            raise CLIError(f"--image {path}: no such file")
    from clipsearch import model as clip_model

    # the parser names no default: reading it would import the settings for every command
    from clipsearch.indexer.settings import DEFAULT_MODEL

    spec = args.model or DEFAULT_MODEL
    m = clip_model.load(spec, device=args.device)
    out: dict[str, Any] = {"model": str(getattr(m, "name", spec)), "dim": int(m.embed_dim)}
    if args.text:
        vecs = m.embed_texts(args.text)
        out["texts"] = [
            {"text": t, "embedding": [float(x) for x in v]}
            for t, v in zip(args.text, vecs, strict=True)
        ]
    if args.image:
        vecs = m.embed_images([Path(p) for p in args.image])
        out["images"] = [
            {"path": p, "embedding": [float(x) for x in v]}
            for p, v in zip(args.image, vecs, strict=True)
        ]
    _print_json(out)
    return 0


# --- parser -----------------------------------------------------------------------------------


OPTIONAL_COMMANDS: dict[str, tuple[str, str]] = {
    # command -> (module whose register(subparsers) adds it, one-line help for the listing)
    "finetune": ("clipsearch.model.finetune.cli", "fine-tune CLIP on your own image/caption pairs"),
    "eval": (
        "clipsearch.model.finetune.cli",
        "evaluate a model: retrieval recall and zero-shot accuracy",
    ),
    "wise": (
        "clipsearch.model.finetune.cli",
        "WiSE-FT: interpolate a starting and a fine-tuned model",
    ),
    "demo": (
        "clipsearch.service.demo",
        "offline demo: train a small CLIP on a synthetic set and serve it",
    ),
    "tags": ("clipsearch.service.cli_tags", "zero-shot tags: list, add, remove, run, show"),
    "albums": ("clipsearch.service.cli_albums", "albums: hand-picked, or smart (a saved search)"),
    "migrate": ("clipsearch.service.cli_migrate", "upgrade the catalog's schema (one step)"),
    "users": ("clipsearch.service.cli_accounts", "accounts: add, list, passwd, disable, role"),
    "keys": ("clipsearch.service.cli_accounts", "API keys: create, list, revoke"),
    "share": ("clipsearch.service.cli_accounts", "share a folder with a viewer or everyone"),
    "audit": ("clipsearch.service.cli_accounts", "the audit trail: who did what and when"),
}


def _register_optional(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], wanted: str | None
) -> str | None:
    """Let other packages add their commands (finetune, eval, demo).

    Their modules import torch (seconds), so they are imported only when one of their commands
    is the one being run; otherwise a placeholder keeps them in the command listing.
    """
    import importlib

    registered: set[str] = set()
    reason: str | None = None
    if wanted in OPTIONAL_COMMANDS:
        module = OPTIONAL_COMMANDS[wanted][0]
        try:
            register: Callable[[Any], None] = importlib.import_module(module).register
        except (ImportError, AttributeError) as exc:
            reason = f"{module} is not available: {exc}"
        else:
            before = set(sub.choices)
            register(sub)
            registered = set(sub.choices) - before
            reason = f"{module} did not register it"
    for name, (_module, help_text) in OPTIONAL_COMMANDS.items():
        if name not in registered and name not in sub.choices:
            sub.add_parser(name, help=help_text, add_help=False)
    if wanted in OPTIONAL_COMMANDS and wanted not in registered:
        return f"`clipsearch {wanted}` is unavailable in this installation ({reason})"
    return None


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first argument that is not an option)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipsearch",
        description="Semantic image search: find photos by describing them, or by example.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "serve",
        help="serve the API and the gallery, run a worker, ingest the folders given",
        description="One process: the REST API (docs at /docs), the gallery at /, an embedded "
        "worker, and ingestion of the --images folders. POST /api/ingest may read only under "
        "those folders (or --allowed-root); only files still inside the allowed or ingested folders are "
        "served. With "
        "CLIPSEARCH_API_TOKEN set, reading photos needs the token too (the gallery has a sign-in "
        "page; CLIPSEARCH_PUBLIC_READ=true opens reads). Requests must name this server in their "
        "Host header: loopback names by default, others via CLIPSEARCH_ALLOWED_HOSTS.",
    )
    p.add_argument(
        "--images", nargs="+", action="extend", metavar="DIR", help="folders to ingest and allow"
    )
    p.add_argument(
        "--allowed-root",
        action="append",
        metavar="DIR",
        help="also allow ingesting under DIR via the API",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without CLIPSEARCH_API_TOKEN (trusted networks only)",
    )
    p.add_argument("--no-worker", action="store_true", help="do not start the embedded worker")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="API processes on the port (default 1, CLIPSEARCH_API_WORKERS; one per core is best)",
    )
    _common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ingest", help="add a folder of images to the library")
    p.add_argument("folder", metavar="DIR", help="folder to scan for images")
    p.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    _wait_flags(p)
    _common(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "reindex", help="re-embed with the current (or a new) model and rebuild the index"
    )
    p.add_argument(
        "--model",
        dest="new_model",
        metavar="SPEC",
        help="switch to this model (registry name or weights path)",
    )
    _wait_flags(p)
    _common(p, model=False)  # its own --model: the model to switch to
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser(
        "ocr",
        help="read the text inside images already in the library (no re-embedding)",
        description="Queue a job that runs Tesseract on the library's images that were never "
        "read (ingested while Tesseract was missing or CLIPSEARCH_OCR=off), or on all of them "
        "with --force; the words become searchable (search --mode text|hybrid).",
    )
    p.add_argument("--force", action="store_true", help="read every image again")
    p.add_argument("--folder", metavar="DIR", help="only images under this folder")
    _wait_flags(p)
    _common(p)
    p.set_defaults(func=cmd_ocr)

    p = sub.add_parser("worker", help="run an embedding worker (Celery) in the foreground")
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="tasks at once, threads sharing one model (default $CLIPSEARCH_WORKER_CONCURRENCY or 1)",
    )
    p.add_argument("--loglevel", help="log level (default $CLIPSEARCH_LOG_LEVEL or INFO)")
    _common(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="image counts, the index, and recent jobs")
    p.add_argument("--jobs", type=int, default=10, help="how many recent jobs to list")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "remove",
        help="remove an image from the library (rescans do not add it back)",
        description="Remove an image from search, browse and counts. The removal is remembered: "
        "rescans, watched folders and restarts do not add the file again, nor a copy of it "
        "elsewhere, until `clipsearch restore`. The file stays where it is unless --from-disk.",
    )
    p.add_argument("image_id", type=int, metavar="ID", help="the image's id (search --json)")
    p.add_argument(
        "--from-disk",
        action="store_true",
        help="also move the file into the data folder's trash/ (never deleted; restore puts it back)",
    )
    _common(p)
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("removed", help="list the images removed from the library")
    p.add_argument("--limit", type=int, default=50, help="how many, newest first (default 50)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)
    p.set_defaults(func=cmd_removed)

    p = sub.add_parser(
        "restore",
        help="bring a removed image back into the library",
        description="Forget a removal (and any removal of the same content), move files back "
        "from the trash, and ingest their folders so they are searchable again (new ids).",
    )
    p.add_argument(
        "removed_id", type=int, nargs="?", metavar="ID", help="the id `clipsearch removed` lists"
    )
    p.add_argument("--image", type=int, metavar="ID", help="restore by the id the image had")
    _wait_flags(p)
    _common(p)
    p.set_defaults(func=cmd_restore)

    from .cli_duplicates import register as _duplicates_command

    _duplicates_command(sub)

    p = sub.add_parser("folders", help="list the watched folders and their state")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--problems",
        action="store_true",
        help="list each folder's files that could not be added, and why (each once)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=PROBLEMS_PAGE_DEFAULT,
        help=f"with --problems: how many per folder (at most {PROBLEMS_PAGE_MAX})",
    )
    p.add_argument("--folder", type=int, help="with --problems: only this folder (its id)")
    p.add_argument("--after", help="with --problems --folder: the path printed after 'more:'")
    _common(p)
    p.set_defaults(func=cmd_folders)

    p = sub.add_parser(
        "watch",
        help="keep a folder up to date: ingest it now, then pick up its changes",
        description="Remember the folder in the catalog (across restarts) and ingest it. A running "
        "`clipsearch serve` watches it: new, changed, moved or deleted files are picked up within "
        "seconds, and it is re-scanned every CLIPSEARCH_RESCAN_INTERVAL_S.",
    )
    p.add_argument("folder", metavar="DIR", help="the folder to watch")
    p.add_argument("--no-recursive", action="store_true", help="do not include sub-folders")
    _wait_flags(p)
    _common(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("unwatch", help="stop watching a folder (its images stay)")
    p.add_argument(
        "folder", metavar="ID|DIR", help="the folder's id (`clipsearch folders`) or path"
    )
    _common(p)
    p.set_defaults(func=cmd_unwatch)

    p = sub.add_parser("search", help='search the library by text ("beach -people")')
    p.add_argument(
        "text", nargs="?", default="", help='what to look for; "-word" steers away from a concept'
    )
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--min-score", type=float, default=None, help="drop results below this cosine")
    p.add_argument(
        "--mode",
        choices=("semantic", "text", "hybrid"),
        default=None,
        help="semantic: the vectors; text: words read in images, file and folder names, "
        "captions; hybrid: both (default when the library has keywords)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    from .cli_search import add_arguments as _search_arguments

    _search_arguments(p)  # --like, --unlike, --not, --min-relevance, --lang, --sort
    _common(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "embed",
        help="print normalised CLIP embeddings of texts and images as JSON",
        description="Print L2-normalised embeddings as JSON: "
        '{"model", "dim", "texts": [{"text", "embedding"}], "images": [{"path", "embedding"}]}.',
    )
    p.add_argument(
        "--model", metavar="SPEC", help="registry name or weights path (default ViT-B-32)"
    )
    p.add_argument("--text", action="append", metavar="T", help="a text to embed (repeatable)")
    p.add_argument(
        "--image", action="append", metavar="PATH", help="an image file to embed (repeatable)"
    )
    p.add_argument("--device", help="torch device (default: automatic)")
    p.set_defaults(func=cmd_embed)

    parser.set_defaults(
        unavailable=_register_optional(sub, _command_of(sys.argv[1:] if argv is None else argv))
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "unavailable", None):
        print(f"clipsearch: error: {args.unavailable}", file=sys.stderr)
        return EXIT_USAGE
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    serving = args.func in (cmd_serve, cmd_worker)  # logs on stdout, INFO
    configure_from_env(serving, args.verbose, getattr(args, "loglevel", None))
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("clipsearch: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if args.debug:
            raise
        message = str(exc) or type(exc).__name__
        print(f"clipsearch: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_USAGE
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
