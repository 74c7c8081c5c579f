"""The model layer's three process settings, and the one place model/ reads them from the
environment.

======================== ===================================================================
``CLIPSEARCH_CACHE``     where registry downloads go (default ``~/.cache/clipsearch``)
``CLIPSEARCH_OFFLINE``   ``1``/``true``/``yes``/``on``: never download; a missing file is an
                         error that says where to put it
``CLIPSEARCH_ALLOW_JIT`` ``1``/``true``/``yes``: open TorchScript archives that are not OpenAI's
                         released files (they run code when opened)
======================== ===================================================================

Below the public entry points everything takes these as plain arguments (``cache_dir``,
``offline``, ``allow_jit``). The entry points (``model.load``, ``registry.resolve``,
``registry.check_spec``, ``registry.cache_dir``) fall back to :meth:`ModelEnvironment.read` only
where their caller passed ``None``: the Python API is a door of its own, and these names are
documented for it. An edge with its own settings (the service, the CLI) passes the values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_CACHE = "CLIPSEARCH_CACHE"
ENV_OFFLINE = "CLIPSEARCH_OFFLINE"
ENV_ALLOW_JIT = "CLIPSEARCH_ALLOW_JIT"
DEFAULT_CACHE = Path("~/.cache/clipsearch")


def _flag(value: str | None, yes: tuple[str, ...]) -> bool:
    return (value or "").strip().lower() in yes


@dataclass(frozen=True)
class ModelEnvironment:
    """Where downloads go, whether to download, whether to open foreign TorchScript."""

    cache_dir: Path  # the download cache (absolute, ``~`` expanded)
    offline: bool = False  # never touch the network
    allow_jit: bool = False  # open TorchScript archives other than OpenAI's

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> ModelEnvironment:
        """The settings ``environ`` (default: this process's environment) gives."""
        env = os.environ if environ is None else environ
        cache = (env.get(ENV_CACHE) or "").strip()
        return cls(
            cache_dir=(Path(cache) if cache else DEFAULT_CACHE).expanduser(),
            offline=_flag(env.get(ENV_OFFLINE), ("1", "true", "yes", "on")),
            allow_jit=_flag(env.get(ENV_ALLOW_JIT), ("1", "true", "yes")),
        )
