"""``clipsearch migrate`` as the one migration step (issue 23), run as the real command on a
real PostgreSQL database: it upgrades an empty catalog to this release's head and says so;
``--check`` exits 1 while an upgrade is due and 0 after; with ``CLIPSEARCH_AUTO_MIGRATE=false`` a
library and a real worker process refuse an older schema, naming the command, instead of
upgrading it themselves; the embedded default still upgrades on its own. Alembic's own command
works from the repository's root through alembic.ini.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipsearch.indexer import catalog
from clipsearch.indexer.configs import LibraryConfig
from clipsearch.indexer.library import Library
from clipsearch.indexer.worker import WorkerConfig, start_worker_process

REPO = Path(__file__).resolve().parents[2]


def clipsearch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipsearch.service.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def revision(url: str) -> str | None:
    engine = catalog.make_engine(url)
    try:
        return catalog.schema_revision(engine)
    finally:
        engine.dispose()


def test_migrate_upgrades_once_and_check_tells_what_is_due(pg_url: str, tmp_path: Path) -> None:
    head = catalog.head_revision()
    common = ["--database-url", pg_url, "--data-dir", str(tmp_path / "data")]

    due = clipsearch("migrate", "--check", *common)
    assert due.returncode == 1, due.stderr
    assert f"{head} is due" in due.stdout
    assert revision(pg_url) is None  # --check changed nothing

    done = clipsearch("migrate", *common)
    assert done.returncode == 0, done.stderr
    assert f"upgraded from (empty) to {head}" in done.stdout
    assert "postgres" in done.stdout and "password" not in done.stdout.lower()
    assert revision(pg_url) == head

    again = clipsearch("migrate", *common)
    assert again.returncode == 0 and f"already at {head}" in again.stdout
    assert clipsearch("migrate", "--check", *common).returncode == 0


def test_without_auto_migrate_processes_refuse_an_old_schema(
    pg_url: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = LibraryConfig(
        data_dir=tmp_path / "data", database_url=pg_url, model_spec=str(tiny_model_dir)
    )
    strict = dataclasses.replace(config, auto_migrate=False)
    with pytest.raises(catalog.SchemaNotCurrent, match="run `clipsearch migrate`"):
        Library(strict)
    assert revision(pg_url) is None  # nothing was created behind the operator's back

    # a real worker process with the same setting stops at once, saying why
    log = tmp_path / "worker.log"
    worker = start_worker_process(
        WorkerConfig(
            data_dir=tmp_path / "data",
            model_spec=str(tiny_model_dir),
            database_url=pg_url,
            broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
            device="cpu",
            decode_workers=1,
            auto_migrate=False,
        ),
        log_path=log,
        die_with_parent=True,
    )
    assert worker.popen.wait(120) == 2
    assert "run `clipsearch migrate`" in log.read_text()

    assert clipsearch("migrate", "--database-url", pg_url).returncode == 0
    lib = Library(strict)  # the schema is current: opens without migrating
    lib.close()


def test_the_embedded_default_still_migrates_for_the_user(tmp_path: Path) -> None:
    lib = Library(LibraryConfig(data_dir=tmp_path / "data"))
    try:
        assert catalog.schema_revision(lib.engine) == catalog.head_revision()
    finally:
        lib.close()


def test_alembic_ini_drives_alembics_own_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    alembic = [sys.executable, "-m", "alembic", "-x", f"url={url}"]
    up = subprocess.run(
        [*alembic, "upgrade", "head"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert up.returncode == 0, up.stderr
    current = subprocess.run(
        [*alembic, "current"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert f"{catalog.head_revision()} (head)" in current.stdout, current.stderr
