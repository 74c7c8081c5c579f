"""README tells the truth: every setting the code reads and every CLI command is documented, and
CI runs exactly the test command README gives."""

from __future__ import annotations

import re
from pathlib import Path

from clipsearch.service.cli import build_parser
from clipsearch.service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _env_vars_read_by_the_code() -> set[str]:
    found: set[str] = set()
    for package in ("model", "indexer", "service"):
        for path in (ROOT / package).rglob("*.py"):
            found |= set(re.findall(r"CLIPSEARCH_[A-Z][A-Z_]*[A-Z]", path.read_text()))
    return found


def test_every_setting_is_documented_in_readme() -> None:
    # the flat names of the settings tree (each also has a nested CLIPSEARCH_<GROUP>__<FIELD>
    # form, which README explains once)
    from_settings = {name for name in Settings.env_table() if "__" not in name}
    groups = {f"CLIPSEARCH_{group.upper()}" for group in Settings.model_fields}
    # Internal hooks for the test-suite and the worker launcher, not user settings.
    internal = {"CLIPSEARCH_TEST_EMBED_DELAY_S", "CLIPSEARCH_WORKER_READY_FILE"}
    wanted = (from_settings | _env_vars_read_by_the_code()) - internal - groups
    assert len(wanted) > 30
    missing = sorted(v for v in wanted if f"`{v}`" not in README)
    assert not missing, f"settings read by the code but not in README: {missing}"


def test_every_cli_command_is_in_readme() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = set(sub.choices)
    assert {"serve", "ingest", "reindex", "worker", "demo", "finetune"} <= commands
    missing = sorted(c for c in commands if f"clipsearch {c}" not in README)
    assert not missing, f"CLI commands not in README: {missing}"


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    install = re.search(r"## Install \(one command\)\n\n    (.+)\n", README)
    test = re.search(r"## Test \(one command\)\n\n    (.+)\n", README)
    assert install and test
    ci_lines = [line.strip() for line in ci.splitlines()]
    assert install.group(1).strip() in ci_lines
    assert test.group(1).strip() in ci_lines


def test_readme_screenshots_exist() -> None:
    images = re.findall(r"\]\((docs/screenshots/[^)]+)\)", README)
    assert len(images) >= 3
    for image in images:
        assert (ROOT / image).stat().st_size > 10_000, image


def test_benchmarks_md_is_gathered_from_the_current_results() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "collect.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    for result in sorted((ROOT / "bench" / "results").glob("*.md")):
        assert f"<!-- bench/results/{result.name} -->" in benchmarks
