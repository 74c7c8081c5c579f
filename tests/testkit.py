"""Helpers every test package shares, defined once: a free port on the loopback and the tiny
CLIP saved in the folder format `--model PATH` takes.

tests/ is on ``sys.path`` for every test (pytest puts the folder of tests/conftest.py there), so
any test or test library imports these as ``from testkit import free_port``. The fixtures built
on them (``tiny_model_dir``) live in tests/conftest.py.
"""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """The deterministic tiny CLIP of ``seed``, saved in our folder format under ``folder``."""
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model

    return save_pretrained(tiny_model(seed=seed), folder)
