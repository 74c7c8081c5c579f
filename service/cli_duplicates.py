"""`clipsearch duplicates`: the duplicate groups the duplicates job keeps (indexer.duplicates),
how "the same picture" was decided for this library (indexer.duplicate_thresholds), and a scan."""

from __future__ import annotations

import argparse

from .cli_common import (
    catalog_path,
    cli_settings,
    common_flags,
    follow_job,
    job_line,
    open_library,
    print_json,
    wait_flags,
)


def cmd_duplicates(args: argparse.Namespace) -> int:
    """List duplicate groups; --scan brings them up to date first (a duplicates job)."""
    from dataclasses import asdict

    from clipsearch.indexer import duplicate_jobs, duplicates

    settings = cli_settings(args)
    lib = open_library(settings)
    if args.scan or args.full:
        job = duplicate_jobs.submit(lib, full=args.full)
        if not args.wait:
            print(f"{job_line(job)}; list the groups when it is done")
            return 0
        rc = follow_job(args, settings, lib, job)
        if rc:
            return rc
    page = duplicates.page(lib, args.kind, args.after, args.limit)
    if args.json:
        print_json(
            {
                "items": [asdict(g) for g in page.items],
                "next_after": page.next_after,
                "stale": page.stale,
                "thresholds": page.thresholds,
            }
        )
        return 0
    if page.job is None:
        print("duplicates were never looked for: run `clipsearch duplicates --scan --wait`")
        return 0
    if page.thresholds.get("reason"):  # how "the same picture" was decided for this library
        print(f"near duplicates: {page.thresholds['reason']}")
    if not page.items:
        print(f"no {args.kind} groups" + (" after that group" if args.after else ""))
    for g in page.items:
        print(f"group {g.id} ({g.kind}, {g.size} images):")
        for m in g.members:
            print(f"  {m.image.id:7d}  {catalog_path(m.image.path)}  ({m.reason})")
    if page.next_after is not None:
        print(f"more: clipsearch duplicates --kind {args.kind} --after {page.next_after}")
    if page.stale:
        print("images changed since these groups were computed: `clipsearch duplicates --scan`")
    print("keep one: remove the others with `clipsearch remove ID` (undo: `clipsearch restore`)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `clipsearch duplicates` to the command line's subcommands."""
    p = sub.add_parser(
        "duplicates",
        help="list groups of duplicate images (exact copies, near duplicates, similar shots)",
        description="Groups of the same picture in several places: exact copies (same bytes) "
        "and near duplicates (re-encoded, resized, lightly cropped or re-coloured). What counts "
        "as near is measured on this library: copies of a sample of its pictures and pairs of "
        "different ones, embedded by its model, give the vector threshold and either a "
        "thumbnail pixel-match cut or a picture-hash threshold, whichever "
        "finds the most copies while keeping look-alikes apart (printed with the groups); "
        "a model that cannot tell them apart groups exact copies only. --kind similar "
        "lists similar shots (bursts) apart. Groups are computed by a job after each ingest; "
        "--scan runs it now. Keep one and remove the others with `clipsearch remove`.",
    )
    p.add_argument(
        "--kind",
        choices=("duplicates", "exact", "near", "similar"),
        default="duplicates",
        help="which groups (default: exact and near duplicates)",
    )
    p.add_argument("--limit", type=int, default=20, help="groups per page (default 20)")
    p.add_argument("--after", type=int, help="the group id printed after 'more:'")
    p.add_argument("--scan", action="store_true", help="look for duplicates first (a job)")
    p.add_argument("--full", action="store_true", help="with --scan: compare every image again")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    wait_flags(p)
    common_flags(p)
    p.set_defaults(func=cmd_duplicates)
