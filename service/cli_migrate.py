"""``clipsearch migrate``: bring the catalog's schema to the one this release needs, as one
step an operator runs (compose runs it before the API and the workers start; with
``CLIPSEARCH_AUTO_MIGRATE=false`` nothing else upgrades the schema). ``--check`` only says
whether an upgrade is due (exit 1), for a deploy script or a readiness gate. ``clipsearch
serve`` on its own (the embedded mode) keeps upgrading at start, as before.

The same migrations run with Alembic's own command from a source checkout (alembic.ini at the
repository's root): ``alembic -x url=postgresql+psycopg://... upgrade head``.
"""

from __future__ import annotations

import argparse

from .cli_common import cli_settings, common_flags, print_json


def cmd_migrate(args: argparse.Namespace) -> int:
    from clipsearch.indexer import catalog

    settings = cli_settings(args)
    url = settings.catalog.database_url or catalog.default_database_url(
        settings.catalog.data_dir.expanduser()
    )
    if not settings.catalog.database_url:
        settings.catalog.data_dir.mkdir(parents=True, exist_ok=True)
    engine = catalog.make_engine(url)
    try:
        before, head = catalog.schema_revision(engine), catalog.head_revision()
        due = before != head
        if due and not args.check:
            catalog.init_db(url, engine=engine, migrate=True)
        after = catalog.schema_revision(engine)
    finally:
        engine.dispose()
    shown = engine.url.render_as_string(hide_password=True)
    if args.json:
        print_json({"catalog": shown, "before": before, "after": after, "head": head})
    elif args.check:
        state = f"at {before or '(none)'}; {head} is due" if due else f"at {head}, current"
        print(f"catalog {shown}: {state}")
    elif due:
        print(f"catalog {shown}: upgraded from {before or '(empty)'} to {after}")
    else:
        print(f"catalog {shown}: already at {head}")
    return 1 if args.check and due else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate",
        help="upgrade the catalog's schema to this release's (the one migration step)",
        description="Upgrade the catalog database to the newest schema of this release. "
        "Run it once before starting a new release's API and workers (compose does); "
        "`clipsearch serve` alone still upgrades at start unless CLIPSEARCH_AUTO_MIGRATE=false.",
    )
    p.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when an upgrade is due"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common_flags(p, model=False)
    p.set_defaults(func=cmd_migrate)
