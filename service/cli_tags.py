"""``clipsearch tags list|add|remove|run|show``: zero-shot tags from the command line.

The decisions are the domain's (indexer/tags.py, indexer/tag_jobs.py); this module parses,
calls and prints. ``run`` queues the tagging job (``--wait`` follows it, starting a worker for the
wait on the embedded broker); ``show TAG`` pages a tag's pictures; ``show TAG --confirm ID`` /
``--reject ID`` record a person's decision (a rejection is never overridden by a later run).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from clipsearch.indexer import tags as domain
from clipsearch.indexer.errors import IndexerError
from clipsearch.indexer.tag_vocabulary import DEFAULT_TEMPLATES, TEMPLATE_SETS


def _threshold(t: domain.TagInfo) -> str:
    if t.threshold is None:
        return "not run yet" if t.precision is None else "assigns nothing"
    return f"cosine >= {t.threshold:.3f}, precision ~{t.precision:.2f}"


def cmd_tags(args: argparse.Namespace) -> int:
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
        with lib.Session() as session:
            if args.action == "list":
                found = domain.list_tags(session)
                if args.json:
                    print_json([asdict(t) for t in found])
                    return 0
                for t in found:
                    group = f" [{t.group}]" if t.group else ""
                    print(f"{t.id:4d}  {t.name}{group}: {t.assigned} pictures ({_threshold(t)})")
                    print(f"      {'; '.join(t.descriptions)}")
                return 0
            if args.action == "add":
                info = domain.create_tag(
                    session,
                    args.name,
                    list(args.description or []),
                    args.group,
                    args.templates,
                    args.precision,
                )
                print(f"added tag {info.id} {info.name!r}: `clipsearch tags run` assigns it")
                return 0
            if args.action == "remove":
                info = domain.delete_tag(session, args.name)
                print(f"removed tag {info.id} {info.name!r} ({info.assigned} pictures had it)")
                return 0
            if args.action == "show":
                tag = domain.get_tag(session, args.name)
                for image_id, state in ((args.confirm, "confirmed"), (args.reject, "rejected")):
                    if image_id is not None:
                        domain.set_assignment(session, tag.id, image_id, state)
                        print(f"picture {image_id}: {tag.name!r} {state}")
                tag = domain.get_tag(session, tag.id)
                items, next_after = domain.images_page(session, tag.id, args.after, args.limit)
                if args.json:
                    print_json(
                        {
                            "tag": asdict(tag),
                            "items": [asdict(i) for i in items],
                            "next_after": next_after,
                        }
                    )
                    return 0
                print(f"{tag.name}: {tag.assigned} pictures ({_threshold(tag)})")
                for i in items:
                    score = "" if i.score is None else f"{i.score:.3f} "
                    mark = " (confirmed)" if i.state == "confirmed" else ""
                    print(f"  {i.image.id:7d}  {score}{catalog_path(i.image.path)}{mark}")
                if next_after is not None:
                    print(f"more: clipsearch tags show {args.name!r} --after {next_after}")
                return 0
    except IndexerError as exc:
        raise CLIError(str(exc)) from exc
    job = domain.submit(lib, full=True)  # run
    return follow_job(args, settings, lib, job)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tags`` to the ``clipsearch`` sub-commands."""
    from .cli_common import common_flags, wait_flags

    p = subparsers.add_parser(
        "tags",
        help="zero-shot tags: list, add, remove, run, show",
        description="Tags defined in words (a name and descriptions, put through the CLIP "
        "paper's prompt ensemble) and assigned to every picture by its vector: no picture is "
        "decoded again. Each tag's threshold is calibrated on the library for a target "
        "precision; tags of one --group exclude each other. New pictures are tagged as they are "
        "embedded; `run` re-tags the library.",
    )
    p.add_argument("action", choices=("list", "add", "remove", "run", "show"))
    p.add_argument("name", nargs="?", help="the tag (name or id) for add, remove and show")
    p.add_argument("-d", "--description", action="append", help="add: what it shows (repeatable)")
    p.add_argument("--group", help="add: a group of mutually exclusive tags")
    p.add_argument(
        "--templates",
        choices=tuple(TEMPLATE_SETS),
        default=DEFAULT_TEMPLATES,
        help="add: the prompt ensemble (default: the paper's 80 ImageNet prompts)",
    )
    p.add_argument("--precision", type=float, help="add: target precision (default 0.9)")
    p.add_argument("--confirm", type=int, metavar="ID", help="show: the picture has the tag")
    p.add_argument("--reject", type=int, metavar="ID", help="show: the picture never gets it")
    p.add_argument("--after", type=int, help="show: the picture id printed after 'more:'")
    p.add_argument("--limit", type=int, default=50, help="show: pictures per page (default 50)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    wait_flags(p)
    common_flags(p)
    p.set_defaults(func=_checked)


def _checked(args: argparse.Namespace) -> int:
    from .cli_common import CLIError

    if args.action in ("add", "remove", "show") and not args.name:
        raise CLIError(f"`clipsearch tags {args.action}` needs a tag name")
    return cmd_tags(args)
