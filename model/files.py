"""Weights and config files on disk: reading the formats users bring, writing atomically.

- :func:`load_state_dict_file`: one weights file, whatever it is: OpenAI's TorchScript archive
  (opened only when its SHA256 is one OpenAI published, or with ``allow_jit=True``: loading
  TorchScript runs code from the file), a ``torch.save``'d state dict (``weights_only=True``) or
  a ``.safetensors`` file; floating point tensors come back as float32.
- :func:`read_json`: a small JSON config (an object, at most 1 MiB).
- :func:`atomic_write`: write to a temporary name beside the destination, then rename, so a crash
  never leaves a half-written file that loads.
- :func:`compare_state_dict`: the one check that weights fit an architecture (keys and shapes).

The folder layouts: an OpenCLIP hub folder is ``open_clip_config.json`` + ``open_clip_model.
safetensors`` or ``open_clip_pytorch_model.bin``; ours (``save_pretrained``) is ``config.json`` +
``model.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clipsearch.model import registry
from clipsearch.model.errors import CheckpointError
from clipsearch.model.json_types import JSONObject

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OUR_CONFIG = "config.json"
OUR_WEIGHTS = "model.safetensors"
OUR_FORMAT = "clipsearch-clip"
_MAX_JSON_BYTES = 1 << 20  # a config is a few hundred bytes; refuse anything absurd

# SHA256 of OpenAI's released TorchScript archives (the hash is part of each download URL).
OPENAI_SHA256: dict[str, str] = {
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762": "RN50",
    "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599": "RN101",
    "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd": "RN50x4",
    "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa": "RN50x16",
    "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c": "RN50x64",
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af": "ViT-B/32",
    "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f": "ViT-B/16",
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836": "ViT-L/14",
    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02": "ViT-L/14@336px",
}

# Extra entries a TorchScript CLIP's state_dict carries that are not weights.
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _known_openai_hashes() -> set[str]:
    """OpenAI's published hashes: ours above plus the model registry's TorchScript entries
    (read from the registry module at call time: tests and callers may extend it)."""
    return set(OPENAI_SHA256) | {str(sha).lower() for sha in registry.KNOWN_JIT_SHA256}


def _is_torchscript(names: list[str]) -> bool:
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


def _to_float32(state_dict: Mapping[str, object], source: str) -> StateDict:
    out: StateDict = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: expected a state dict of named tensors; entry {key!r} is a {type(value).__name__}"
            )
        out[key] = value.float() if value.is_floating_point() else value
    return out


def _unwrap(obj: object, source: str) -> Mapping[str, object]:
    """Accept a bare state dict, or a training checkpoint holding one under 'state_dict'/'model'."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and "logit_scale" not in obj:
                obj = inner
                break
        if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
            obj = {
                k[len("module.") :]: v for k, v in obj.items()
            }  # saved from DistributedDataParallel
        return obj
    raise CheckpointError(f"{source}: expected a state dict, found a {type(obj).__name__}")


def _load_jit(path: Path, allow_jit: bool) -> StateDict:
    # Hash and load through one open file, so the bytes that were checked are the bytes loaded
    # (swapping the path in between cannot smuggle another archive in).
    with open(path, "rb") as fh:
        digest = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        sha = digest.hexdigest()
        if sha not in _known_openai_hashes() and not allow_jit:
            raise CheckpointError(
                f"{path}: is a TorchScript archive, and loading one runs code stored in the file. "
                f"It is not one of OpenAI's released checkpoints (sha256 {sha}); if you trust it, "
                "load it with allow_jit=True (CLI, API and workers: set CLIPSEARCH_ALLOW_JIT=1), or convert it to a state dict or "
                "safetensors file"
            )
        log.info(
            "loading TorchScript archive %s (%s)",
            path,
            OPENAI_SHA256.get(sha, "allowed by the caller"),
        )
        fh.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # "switch to torch.export"
                module = torch.jit.load(fh, map_location="cpu")
            state = dict(module.state_dict())
        except Exception as exc:
            raise CheckpointError(
                f"{path}: cannot read the TorchScript archive (truncated or damaged?): {exc}"
            ) from exc
    for key in _JIT_EXTRA_KEYS:
        state.pop(key, None)
    return _to_float32(state, str(path))


def load_safetensors(path: Path) -> StateDict:
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, Exception) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or damaged?): {exc}"
        ) from exc
    return _to_float32(state, str(path))


def _load_torch(path: Path) -> StateDict:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises anything on garbage (IndexError, ...)
        raise CheckpointError(
            f"{path}: not a loadable PyTorch state dict (expected a torch.save'd dict of tensors; "
            f"file truncated, damaged, or holding arbitrary objects?): {exc}"
        ) from exc
    return _to_float32(_unwrap(obj, str(path)), str(path))


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len < path.stat().st_size and head[8:9] == b"{"


def load_state_dict_file(path: str | Path, allow_jit: bool = False) -> StateDict:
    """Tensors of one weights file (TorchScript archive, torch.save'd state dict, safetensors),
    floating point converted to float32."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty; expected CLIP weights")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(f"{path}: damaged zip archive: {exc}") from exc
        if _is_torchscript(names):
            return _load_jit(path, allow_jit)
        return _load_torch(path)
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        return load_safetensors(path)
    return _load_torch(path)


def open_clip_weights(folder: Path) -> Path:
    """The weights file of an OpenCLIP hub folder."""
    for name in OPEN_CLIP_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"{folder}: has {OPEN_CLIP_CONFIG} but no weights; expected "
        f"{' or '.join(OPEN_CLIP_WEIGHTS)}"
    )


def read_json(path: Path) -> JSONObject:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: too large for a model config ({path.stat().st_size} bytes)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def compare_state_dict(
    expected: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    what: str,
) -> None:
    """Raise CheckpointError unless ``state_dict`` has exactly ``expected``'s keys and shapes."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {list(state_dict[k].shape)} (expected {list(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{label}: {', '.join(items[:5])}{more}")
    if problems:
        raise CheckpointError(f"{source}: the weights do not match {what}; " + "; ".join(problems))


def atomic_write(dest: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` a temporary file beside ``dest``, then rename it to ``dest``."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_folder(
    folder: Path, state: Mapping[str, torch.Tensor], config: Mapping[str, object]
) -> Path:
    """Our format: ``model.safetensors`` (a CPU copy of ``state``) + ``config.json``, each
    written atomically (weights first: a folder with the new config has the new weights)."""
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(
        folder / OUR_WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"})
    )
    atomic_write(
        folder / OUR_CONFIG,
        lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"),
    )
    return folder
