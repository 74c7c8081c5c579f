"""Imports flow one way (docs/ARCHITECTURE.md): model <- indexer <- service, and inside indexer/
the Celery task module and the worker sit on top, so a process that only reads a library (the
API, the CLI) never loads them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the project modules ``path`` imports (anywhere in the file)."""
    package = ".".join(("clipsearch", *path.relative_to(REPO).with_suffix("").parts[:-1]))
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return found


def test_no_layer_imports_a_layer_above_it() -> None:
    above = {"model": ("indexer", "service"), "indexer": ("service",)}
    wrong = []
    for layer, forbidden in above.items():
        for path in sorted((REPO / layer).rglob("*.py")):
            for name in _imported_modules(path):
                if (
                    name.split(".")[:1] == ["clipsearch"]
                    and name.split(".")[1:2]
                    and name.split(".")[1] in forbidden
                ):
                    wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, wrong


def test_tasks_and_worker_do_not_import_each_other_in_a_circle() -> None:
    tasks = _imported_modules(REPO / "indexer" / "tasks.py")
    assert not {n for n in tasks if n.startswith("clipsearch.indexer.worker")}


def test_reading_a_library_loads_neither_the_tasks_nor_the_worker() -> None:
    code = (
        "import sys, clipsearch.indexer.library, clipsearch.service.app\n"
        "print(sorted(m for m in sys.modules if m in ('clipsearch.indexer.tasks', 'clipsearch.indexer.worker')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_nothing_inside_indexer_reaches_back_into_the_library() -> None:
    # library.py sits on top of the indexer's modules and hands them what they need (as
    # hybrid.Sources does); a module importing it back would make a circle of the two
    wrong = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "indexer").rglob("*.py"))
        if path.name != "library.py" and "clipsearch.indexer.library" in _imported_modules(path)
    ]
    assert not wrong, wrong
