"""deploy/README.md documents every setting the code reads, with the defaults the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "deploy" / "README.md"
# settings for the tests, documented in a sentence, not in the tables
TEST_ONLY = {"CLIPSEARCH_TEST_EMBED_DELAY_S", "CLIPSEARCH_WORKER_READY_FILE"}


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text()


def _row(guide: str, name: str) -> str:
    """The settings-table row that starts with ``name``."""
    for line in guide.splitlines():
        if line.startswith(f"| `{name}`"):
            return line
    raise AssertionError(f"deploy/README.md has no settings row for {name}")


def test_every_variable_the_code_reads_is_documented(guide: str) -> None:
    from clipsearch.service.settings import Settings

    names = {name for name in Settings.env_table() if "__" not in name}  # the flat names
    for package in ("model", "indexer", "service"):
        for path in (REPO / package).rglob("*.py"):
            names |= set(re.findall(r"CLIPSEARCH_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    assert len(names) > 30
    missing = sorted(n for n in names if f"`{n}`" not in guide)
    assert not missing, f"deploy/README.md does not document {missing}"


def test_documented_defaults_match_the_code(guide: str) -> None:
    from clipsearch.service.settings import Settings

    checked = 0
    for name, (group, field) in Settings.env_table().items():
        if "__" in name or name in TEST_ONLY:
            continue  # the nested form of a flat name; the test-only ones have no table row
        info = Settings.model_fields[group].annotation.model_fields[field]  # type: ignore[union-attr]
        default = info.default
        if info.default_factory is not None or default is None:
            continue
        if isinstance(default, bool):
            shown = "true" if default else "false"
        elif default == "":
            shown = "empty"
        elif isinstance(default, float):
            shown = f"{default:g}"  # 20.0 reads 20 (and matches `20.0`)
        else:
            shown = str(default)
        row = _row(guide, name)
        cells = row.split("|")[2]  # the default column
        assert shown in cells, f"{field}: the code's default is {shown!r}, the guide says {cells}"
        checked += 1
    assert checked >= 20

    from clipsearch.indexer.settings import LibrarySettings

    worker = LibrarySettings.from_env({}).worker_config()
    for name, value in (
        ("CLIPSEARCH_WORKER_CONCURRENCY", worker.concurrency),
        ("CLIPSEARCH_EMBED_BATCH_SIZE", worker.batch_size),
        ("CLIPSEARCH_STALE_AFTER_S", worker.stale_after_s),
    ):
        cell = _row(guide, name).split("|")[2]
        assert f"`{value:g}`" in cell, (
            f"{name}: the code's default is {value}, the guide says {cell}"
        )


def test_every_compose_service_and_volume_is_described(guide: str) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name in compose["services"]:
        assert f"`{name}`" in guide, f"service {name} is not in deploy/README.md"
    for name in compose["volumes"]:
        assert f"`{name}`" in guide, f"volume {name} is not in deploy/README.md"


def test_every_variable_the_code_reads_is_in_the_readme_too() -> None:
    """The settings page (docs/settings.md, linked from README) names every CLIPSEARCH_* variable
    the code reads."""
    from clipsearch.service.settings import Settings

    readme = (REPO / "docs" / "settings.md").read_text()
    names = {name for name in Settings.env_table() if "__" not in name}  # the flat names
    for package in ("model", "indexer", "service"):
        for path in (REPO / package).rglob("*.py"):
            names |= set(re.findall(r"CLIPSEARCH_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, f"docs/settings.md does not document {missing}"
