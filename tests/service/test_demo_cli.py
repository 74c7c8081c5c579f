"""`clipsearch demo` says how to reach the library it made from the command line, and the command
it prints works: run as a user runs them (subprocesses), with a quick demo (few images, steps)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from test_cli import _env, run


def test_the_demo_prints_a_cli_command_that_reaches_the_same_library(tmp_path: Path) -> None:
    demo_dir = tmp_path / "my demo"  # a space: the printed command must quote it
    env = _env(tmp_path / "default-data", CLIPSEARCH_OFFLINE="1")
    args = ["--images", "200", "--steps", "5", "--timeout", "300", "--quiet"]
    proc = run(["demo", "--no-serve", "--data-dir", str(demo_dir), *args], env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    found = re.search(r"command line: (clipsearch search .*?) \(", proc.stderr)
    assert found, proc.stderr
    words = shlex.split(found.group(1))
    assert words[words.index("--data-dir") + 1] == str(demo_dir)

    # the printed command, as a user pastes it (no --model: the library remembers its model)
    searched = run([*words[1:], "-k", "3"], env)
    assert searched.returncode == 0, searched.stdout + searched.stderr
    # three results, each a picture of the demo's own set
    shown = re.findall(re.escape(str(demo_dir / "synthetic")) + r"/(\S+\.png)", searched.stdout)
    assert len(shown) == 3, searched.stdout
    assert all((demo_dir / "synthetic" / n).is_file() for n in shown), searched.stdout
