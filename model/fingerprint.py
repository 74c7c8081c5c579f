"""A model's identity: sha256 over its parameter names, shapes, dtypes and bytes.

Two models with the same weights share embeddings in a catalog; a fine-tuned one gets its own.
Computed once per model object and kept on it (``FINGERPRINT_ATTR``). A model loaded with its
image tower on demand (model.lazy_tower) gets the digest of the whole checkpoint at load time,
so it is the same model as when loaded whole.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping

import torch
from torch import nn

FINGERPRINT_ATTR = "_clipsearch_fingerprint"


def state_fingerprint(state: Mapping[str, torch.Tensor], embed_dim: object) -> str:
    """The digest of a state dict (as ``model.state_dict()`` gives it) of a model of ``embed_dim``."""
    h = hashlib.sha256()
    h.update(str(embed_dim if embed_dim is not None else "").encode())
    for name, tensor in sorted(state.items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        if t.dtype == torch.bfloat16:
            t = t.to(torch.float32)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def remember_fingerprint(model: object, digest: str) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        object.__setattr__(model, FINGERPRINT_ATTR, digest)


def model_fingerprint(model: nn.Module) -> str:
    """The model's digest (cached on the model object)."""
    cached = getattr(model, FINGERPRINT_ATTR, None)
    if isinstance(cached, str):
        return cached
    digest = state_fingerprint(model.state_dict(), getattr(model, "embed_dim", ""))
    remember_fingerprint(model, digest)
    return digest
