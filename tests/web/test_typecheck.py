"""The gallery's JavaScript (web/static) type-checks: TypeScript's checker reads the ES modules and
their JSDoc types under tsconfig.json (strict) and finds nothing; no build step is involved.

`make install` installs TypeScript (`npm ci`, from package-lock.json); where it is not installed
the test says so and is skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TSC = REPO / "node_modules" / "typescript" / "bin" / "tsc"
STATIC = REPO / "web" / "static"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node 20 or later: apt-get install nodejs npm)")
    if not TSC.exists():
        pytest.skip("TypeScript is not installed: run `npm ci` (make install does)")
    return node


def test_the_gallery_type_checks() -> None:
    node = _node()
    done = subprocess.run(
        [node, str(TSC), "--noEmit", "-p", str(REPO / "tsconfig.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_gallery_module_is_checked() -> None:
    """Each script opts in with `// @ts-check` and is in the checked set (tsc --listFilesOnly)."""
    node = _node()
    scripts = sorted(STATIC.rglob("*.js"))
    assert len(scripts) >= 10
    unchecked = [
        p.relative_to(REPO) for p in scripts if not p.read_text().startswith("// @ts-check")
    ]
    assert unchecked == []
    listed = subprocess.run(
        [node, str(TSC), "--listFilesOnly", "-p", str(REPO / "tsconfig.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.splitlines()
    checked = {Path(line).resolve() for line in listed if line.strip()}
    assert [p.relative_to(REPO) for p in scripts if p.resolve() not in checked] == []


def test_a_type_error_is_caught(tmp_path: Path) -> None:
    """The check can fail: a module that passes a string where a number is declared is refused."""
    node = _node()
    bad = tmp_path / "bad.js"
    bad.write_text(
        "// @ts-check\n"
        f"import {{ clamp }} from {str(STATIC / 'js' / 'util.js')!r};\n"
        "clamp('0.5', 0, 1);\n"
    )
    config = tmp_path / "tsconfig.json"
    config.write_text(
        '{"extends": %r, "include": [%r]}' % (str(REPO / "tsconfig.json"), str(bad))  # noqa: UP031
    )
    done = subprocess.run(
        [node, str(TSC), "--noEmit", "-p", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "TS2345" in done.stdout, done.stdout + done.stderr


def test_the_gallery_is_under_500_lines_a_module() -> None:
    sizes = {p.relative_to(REPO): len(p.read_text().splitlines()) for p in STATIC.rglob("*.js")}
    assert {path: n for path, n in sizes.items() if n >= 500} == {}
