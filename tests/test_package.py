"""The product installs as one namespace, ``clipsearch.*`` (model, indexer, service, web), and
nothing else: no generic top-level ``model`` or ``service`` module that another distribution's
package of the same name would clash with. A wheel built from the repository works on its own
(outside the checkout), and the installed package has no import cycle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("model", "indexer", "service", "web")
BARE = set(LAYERS)


def _package_dirs() -> Iterator[tuple[str, Path]]:
    """(dotted name, folder) of every regular package under the four product folders."""
    for layer in LAYERS:
        for init in sorted((REPO / layer).rglob("__init__.py")):
            rel = init.parent.relative_to(REPO)
            yield ".".join(("clipsearch", *rel.parts)), init.parent


def test_every_package_folder_is_in_the_distribution() -> None:
    # a sub-package missing from pyproject's list is absent from the wheel: the editable install
    # finds it, an installed clipsearch fails with ModuleNotFoundError
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    missing = sorted(name for name, _ in _package_dirs() if name not in listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_importing_clipsearch_loads_no_bare_layer_module(tmp_path: Path) -> None:
    names = [name for name, _ in _package_dirs()]
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "import clipsearch.service.app, clipsearch.service.cli, clipsearch.indexer.tasks\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    # from a folder outside the checkout, so only the installed package can be found
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    top = set(__import__("json").loads(out.stdout))
    assert "clipsearch" in top
    assert not top & BARE, f"bare layer modules were imported: {sorted(top & BARE)}"


# --------------------------------------------------------------------------------------------
# a wheel, installed in a fresh environment


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_serves_a_search(tmp_path: Path) -> None:
    """Build the wheel the way a user's `pip install .` does, install it (without dependencies)
    into a new virtual environment that sees this environment's third-party packages but not the
    editable checkout, then run the console script from outside the repository: --help, an
    ingest of a small folder with a tiny model, and a search that finds the right picture."""
    from PIL import Image

    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model

    # from a copy: setuptools writes its build/ folder into the tree it builds
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "node_modules", "build", "dist", "data", "__pycache__", "*.egg-info"
        ),
        symlinks=True,
    )
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("clipsearch-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    # third-party packages from this environment, by a plain path line: the editable finder's
    # own .pth in that folder is not processed, so clipsearch itself comes only from the wheel
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--no-deps", "-q", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIPSEARCH_", "PYTHONPATH"))}
    env.update(OMP_NUM_THREADS="1", CLIPSEARCH_DATA_DIR=str(work / "data"))
    script = venv / "bin" / "clipsearch"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    assert "search" in helped.stdout and "serve" in helped.stdout

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import clipsearch.service as s; print(s.__file__)"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(purelib), where.stdout

    model_dir = save_pretrained(tiny_model(seed=0), work / "tiny-model")
    photos = work / "photos"
    photos.mkdir()
    colours = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (20, 40, 220)}
    for name, rgb in colours.items():
        Image.new("RGB", (48, 48), rgb).save(photos / f"{name}.png")

    ingested = run("ingest", str(photos), "--model", str(model_dir), "--wait")
    assert ingested.returncode == 0, ingested.stdout[-2000:] + ingested.stderr[-3000:]
    found = run(
        "search", "a red picture", "--model", str(model_dir), "--json", "-k", "3",
        "--min-relevance", "0",
    )  # fmt: skip
    assert found.returncode == 0, found.stdout[-2000:] + found.stderr[-3000:]
    assert "red.png" in found.stdout and "green.png" in found.stdout, found.stdout
