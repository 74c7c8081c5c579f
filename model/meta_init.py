"""Build a module's skeleton on the meta device without running its initialisers.

A checkpoint's tensors are assigned to the skeleton next (``load_state_dict(assign=True)``), so
the random initialisation PyTorch's layers run in their constructors is wasted; on the meta
device it is worse than wasted: each initialiser runs a Python meta kernel whose first call
imports TorchDynamo (1-2 s, most of a `clipsearch search` process's start). Inside
:func:`on_meta` the ``torch.nn.init`` functions leave meta tensors as they are; any other tensor
(another thread building a real model meanwhile) is initialised as usual.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec

import torch
from torch.nn import init

_INITIALISERS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
)
_lock = threading.Lock()
_depth = 0
_originals: dict[str, Callable[..., Any]] = {}


_P = ParamSpec("_P")


def _skipping_meta(
    original: Callable[Concatenate[torch.Tensor, _P], torch.Tensor],
) -> Callable[Concatenate[torch.Tensor, _P], torch.Tensor]:
    @functools.wraps(original)
    def initialise(tensor: torch.Tensor, *args: _P.args, **kwargs: _P.kwargs) -> torch.Tensor:
        if isinstance(tensor, torch.Tensor) and tensor.is_meta:
            return tensor
        return original(tensor, *args, **kwargs)

    return initialise


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """``with torch.device("meta")``, with initialisers skipped for meta tensors (re-entrant)."""
    global _depth
    with _lock:
        if _depth == 0:
            for name in _INITIALISERS:
                original = getattr(init, name, None)
                if original is not None:
                    _originals[name] = original
                    setattr(init, name, _skipping_meta(original))
        _depth += 1
    try:
        with torch.device("meta"):
            yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for name, original in _originals.items():
                    setattr(init, name, original)
                _originals.clear()
