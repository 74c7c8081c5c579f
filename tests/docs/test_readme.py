"""The docs tell the truth: every setting the code reads is in docs/settings.md, every CLI command
in docs/cli.md, README is a short front page whose install and test commands are exactly what CI
runs, and it links every reference page in docs/."""

from __future__ import annotations

import re
from pathlib import Path

from clipsearch.service.cli import build_parser
from clipsearch.service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
REFERENCE = ("api", "cli", "settings", "models", "operations", "security", "search", "tags")


def _env_vars_read_by_the_code() -> set[str]:
    found: set[str] = set()
    for package in ("model", "indexer", "service"):
        for path in (ROOT / package).rglob("*.py"):
            found |= set(re.findall(r"CLIPSEARCH_[A-Z][A-Z_]*[A-Z]", path.read_text()))
    return found


def test_every_setting_is_documented_in_the_settings_page() -> None:
    # the flat names of the settings tree (each also has a nested CLIPSEARCH_<GROUP>__<FIELD>
    # form, which README explains once)
    from_settings = {name for name in Settings.env_table() if "__" not in name}
    groups = {f"CLIPSEARCH_{group.upper()}" for group in Settings.model_fields}
    # Internal hooks for the test-suite and the worker launcher, not user settings.
    internal = {"CLIPSEARCH_TEST_EMBED_DELAY_S", "CLIPSEARCH_WORKER_READY_FILE"}
    wanted = (from_settings | _env_vars_read_by_the_code()) - internal - groups
    assert len(wanted) > 30
    page = (DOCS / "settings.md").read_text()
    missing = sorted(v for v in wanted if f"`{v}`" not in page)
    assert not missing, f"settings read by the code but not in docs/settings.md: {missing}"


def test_every_cli_command_is_in_the_cli_page() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = set(sub.choices)
    assert {"serve", "ingest", "reindex", "worker", "demo", "finetune"} <= commands
    page = (DOCS / "cli.md").read_text()
    missing = sorted(c for c in commands if f"clipsearch {c}" not in page)
    assert not missing, f"CLI commands not in docs/cli.md: {missing}"


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    install = re.search(r"## Install \(one command\)\n\n    (.+)\n", README)
    test = re.search(r"## Test \(one command\)\n\n    (.+)\n", README)
    assert install and test
    ci_lines = [line.strip() for line in ci.splitlines()]
    assert install.group(1).strip() in ci_lines
    assert test.group(1).strip() in ci_lines


def test_readme_is_a_short_front_page_linking_the_reference() -> None:
    assert len(README.splitlines()) < 150
    for page in REFERENCE:
        assert f"](docs/{page}.md)" in README, f"README does not link docs/{page}.md"
        assert (DOCS / f"{page}.md").read_text().startswith("# "), page
    # the first steps are there, each one command
    for heading in ("## Install (one command)", "## Run (one command)", "## Test (one command)"):
        assert heading in README
    assert "clipsearch serve --images" in README


def test_links_between_the_docs_lead_to_files_and_headings_that_exist() -> None:
    def anchors(text: str) -> set[str]:
        found = set()
        for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
            slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
            found.add(slug)
        return found

    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (
                anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text())
            ):
                broken.append(f"{page.name}: {target}")
    assert not broken, f"links to nothing: {broken}"


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
