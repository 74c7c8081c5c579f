"""Known CLIP weights by name, and resolving a name or a path to local files.

``resolve("ViT-B-32")`` returns the local path of OpenAI's ViT-B/32 TorchScript archive, fetching
it into the cache folder (``cache_dir``: ``$CLIPSEARCH_CACHE``, else ``~/.cache/clipsearch``) the
first time. Every file is checked against its published SHA256 as it downloads
(:mod:`model.downloads`: verified and atomic), and a cached file that no longer matches its hash
is fetched again. With no network, :class:`DownloadError` says which file to fetch, from where,
and where to put it.

OpenAI's URLs carry the file's SHA256 as a path component; those hashes (``KNOWN_JIT_SHA256``)
are also how the checkpoint loader recognises OpenAI's own TorchScript archives, the only ones it
opens as TorchScript without an explicit opt-in. OpenCLIP hub entries are plain state dicts
(``open_clip_pytorch_model.bin``, loaded with ``weights_only=True``) plus an
``open_clip_config.json`` that this module writes from the entry itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from clipsearch.model.downloads import (
    SHA_RE,
    Progress,
    atomic_text,
    download,
    exclusive,
    fmt_size,
    git_blob_id,
    is_verified,
    published_hash,
    remove_stale_parts,
    sha256_file,
)
from clipsearch.model.environment import ENV_CACHE, ENV_OFFLINE, ModelEnvironment
from clipsearch.model.errors import DownloadError, ModelError

# Downloads and verification live in model.downloads; their names stay importable from here.
__all__ = [
    "KNOWN_JIT_SHA256",
    "MODELS",
    "ModelSpec",
    "Progress",
    "cache_dir",
    "check_spec",
    "download",
    "get_spec",
    "git_blob_id",
    "list_models",
    "published_hash",
    "resolve",
    "sha256_file",
]

log = logging.getLogger(__name__)

OPEN_CLIP_CONFIG = "open_clip_config.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
_SHA_RE = SHA_RE
_OPENAI_BASE = "https://openaipublic.azureedge.net/clip/models"
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model.

    ``format`` is ``"openai-jit"`` (a single TorchScript archive; :func:`resolve` returns the
    file) or ``"open_clip"`` (a hub folder: the weights file plus ``open_clip_config.json``
    written from ``open_clip_config``; :func:`resolve` returns the folder).
    """

    name: str
    url: str
    sha256: str
    format: str
    filename: str = ""  # defaults to the URL's last path component
    size: int | None = None  # approximate bytes, for messages
    aliases: tuple[str, ...] = ()
    description: str = ""
    open_clip_config: Mapping[str, object] | None = field(default=None, compare=False)
    # "hub" entries: more files from the weights' folder URL (tokenizer, config), each with the
    # SHA256 its hub page publishes, or "" to check it against the hash the hub sends with it
    files: tuple[tuple[str, str], ...] = ()
    # "hub" entries: small JSON files written into the folder (what the hub folder lacks)
    write_files: Mapping[str, object] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ModelError(
                f"invalid model name {self.name!r}: letters, digits and . _ @ + - only"
            )
        sha = self.sha256.lower()
        if not _SHA_RE.match(sha) and not (self.format == "hub" and sha == ""):
            raise ModelError(
                f"model {self.name}: sha256 must be 64 hex digits, got {self.sha256!r}"
            )
        object.__setattr__(self, "sha256", sha)
        for extra, extra_sha in self.files:  # a file may sit in a sub-folder: a/b.json
            parts = extra.split("/")
            if not all(_NAME_RE.match(p) for p in parts) or (
                extra_sha and not _SHA_RE.match(extra_sha)
            ):
                raise ModelError(f"model {self.name}: bad extra file {extra!r} / {extra_sha!r}")
        parsed = urllib.parse.urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ModelError(f"model {self.name}: URL must be http(s), got {self.url!r}")
        filename = self.filename or urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1])
        if not _NAME_RE.match(filename) or filename == OPEN_CLIP_CONFIG:
            raise ModelError(f"model {self.name}: unusable file name {filename!r}")
        object.__setattr__(self, "filename", filename)
        if self.format not in ("openai-jit", "open_clip", "hub"):
            raise ModelError(f"model {self.name}: unknown format {self.format!r}")
        if self.format == "open_clip" and not self.open_clip_config:
            raise ModelError(f"model {self.name}: an open_clip entry needs its open_clip_config")


def _openai(name: str, sha256: str, filename: str, aliases: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        name=name,
        url=f"{_OPENAI_BASE}/{sha256}/{filename}",
        sha256=sha256,
        format="openai-jit",
        aliases=aliases,
        description=f"OpenAI CLIP {aliases[0] if aliases else name} (TorchScript archive)",
    )


def _laion_vit(
    name: str,
    repo: str,
    sha256: str,
    size_mb: int,
    vision: dict[str, int],
    text: dict[str, int],
    embed_dim: int,
) -> ModelSpec:
    config = {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": {"image_size": 224, **vision},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, **text},
        },
        "preprocess_cfg": {"mean": list(_OPENAI_MEAN), "std": list(_OPENAI_STD)},
    }
    return ModelSpec(
        name=name,
        url=f"https://huggingface.co/{repo}/resolve/main/open_clip_pytorch_model.bin",
        sha256=sha256,
        format="open_clip",
        size=size_mb * 1_000_000,
        aliases=(repo, f"hf-hub:{repo}"),
        description=f"OpenCLIP {repo} (state dict, {size_mb} MB)",
        open_clip_config=MappingProxyType(config),
    )


_HF = "https://huggingface.co"
# What a SigLIP / SigLIP 2 hub folder holds beside its weights (timm/ViT-*-SigLIP*).
_SIGLIP_FILES = (
    "open_clip_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def _hub(
    name: str,
    repo: str,
    revision: str,
    weights: str,
    sha256: str,
    size_mb: int,
    description: str,
    files: tuple[str, ...] = _SIGLIP_FILES,
    write_files: Mapping[str, object] | None = None,
    file_sha256: Mapping[str, str] | None = None,
) -> ModelSpec:
    """A Hugging Face hub folder: the weights (``sha256`` as the file's hub page publishes it;
    "" where it was not recorded here: then the LFS SHA256 the hub sends with the file is
    checked) and the folder's other files, checked against the hash the hub publishes for
    each (its LFS SHA256, or the git blob id of a small file). ``revision`` pins a commit where
    one is recorded."""
    return ModelSpec(
        name=name,
        url=f"{_HF}/{repo}/resolve/{revision}/{weights}",
        sha256=sha256,
        format="hub",
        size=size_mb * 1_000_000,
        aliases=(repo, f"hf-hub:{repo}"),
        description=f"{description} ({repo}, {size_mb} MB)",
        files=tuple((f, (file_sha256 or {}).get(f, "")) for f in files),
        write_files=None if write_files is None else MappingProxyType(dict(write_files)),
    )


# open_clip's xlm-roberta-base-ViT-B-32 configuration: the LAION folder has weights and
# tokenizer.json only (open_clip brings the config and takes the tokenizer from
# FacebookAI/xlm-roberta-base, whose tokenizer.json the LAION folder carries too).
_XLMR_CONFIG = {
    "model_cfg": {
        "embed_dim": 512,
        "quick_gelu": False,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
        "text_cfg": {
            "hf_model_name": "xlm-roberta-base",
            "hf_tokenizer_name": "xlm-roberta-base",
            "hf_proj_type": "mlp",
            "hf_pooler_type": "mean_pooler",
        },
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                       "std": [0.26862954, 0.26130258, 0.27577711]},
}  # fmt: skip
_XLMR_SPECIAL = {
    "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
    "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>",
}  # fmt: skip

_B_TEXT = {"width": 512, "heads": 8, "layers": 12}
_SPECS: tuple[ModelSpec, ...] = (
    # OpenAI's releases; the URL's path carries the file's SHA256 (as in openai/CLIP's clip.py).
    _openai(
        "RN50",
        "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
        "RN50.pt",
        (),
    ),
    _openai(
        "RN101",
        "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
        "RN101.pt",
        (),
    ),
    _openai(
        "RN50x4",
        "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
        "RN50x4.pt",
        (),
    ),
    _openai(
        "RN50x16",
        "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
        "RN50x16.pt",
        (),
    ),
    _openai(
        "RN50x64",
        "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c",
        "RN50x64.pt",
        (),
    ),
    _openai(
        "ViT-B-32",
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        "ViT-B-32.pt",
        ("ViT-B/32",),
    ),
    _openai(
        "ViT-B-16",
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
        "ViT-B-16.pt",
        ("ViT-B/16",),
    ),
    _openai(
        "ViT-L-14",
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        "ViT-L-14.pt",
        ("ViT-L/14",),
    ),
    _openai(
        "ViT-L-14-336",
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
        "ViT-L-14-336px.pt",
        ("ViT-L/14@336px", "ViT-L-14-336px"),
    ),
    # OpenCLIP / LAION-2B on the Hugging Face hub (LFS object hashes of the released files).
    _laion_vit(
        "ViT-B-32-laion2b_s34b_b79k",
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "1bd3c7172de5b207ceac554f5ab5266166f3b9baccc9af5989bc801016d080ad",
        605,
        {"layers": 12, "width": 768, "patch_size": 32},
        _B_TEXT,
        512,
    ),
    _laion_vit(
        "ViT-B-16-laion2b_s34b_b88k",
        "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
        "1f16b1274ca25493b1f36225efe81d05f66a3f33c487acd1a07c5ba87920de6f",
        599,
        {"layers": 12, "width": 768, "patch_size": 16},
        _B_TEXT,
        512,
    ),
    _laion_vit(
        "ViT-L-14-laion2b_s32b_b82k",
        "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
        "5ddb47339f44e4fd9cace3d3960d38af1b51a25857440cfae90afc44706d7e2b",
        1710,
        {"layers": 24, "width": 1024, "patch_size": 14},
        {"width": 768, "heads": 12, "layers": 12},
        768,
    ),
)

# SigLIP, SigLIP 2, MobileCLIP2 and multilingual CLIP (XLM-R, NLLB), as hub folders. Weight
# hashes are the "Git LFS Details: SHA256" their huggingface.co file pages publish; revisions
# pinned where the commit was recorded with them.
_SPECS += (
    _hub(
        "ViT-B-16-SigLIP", "timm/ViT-B-16-SigLIP", "41f575766f40e752fdd1383e9565b7f02388c1c4",
        "open_clip_model.safetensors",
        "81942ea8c09b9e41963357cca5d2682118bf7eb7491c2ae51a28bc4f4f95b194", 813,
        "SigLIP ViT-B/16 224 px, WebLI",
    ),
    _hub(
        "ViT-SO400M-14-SigLIP", "timm/ViT-SO400M-14-SigLIP",
        "c85ba2402be4b49b5d178f2e2384fdf50f8c7961", "open_clip_model.safetensors",
        "0a04a48b797e187a568335ab67e57a8958c32cee5a707a3feb6d4c97149dcd9c", 3510,
        "SigLIP shape-optimised 400M/14 224 px, WebLI",
    ),
    _hub(
        "ViT-B-16-SigLIP-i18n-256", "timm/ViT-B-16-SigLIP-i18n-256", "main",
        "open_clip_model.safetensors",
        "0dca7e40ddcc0c89c39275226bd8609d96c60b1605bc1ae612a68f02170f14ce", 1480,
        "SigLIP ViT-B/16 256 px, multilingual WebLI",
    ),
    _hub(
        "ViT-B-16-SigLIP2", "timm/ViT-B-16-SigLIP2", "abbf7d17828c6d31ffe2ec95fb58c0135361d31a",
        "open_clip_pytorch_model.bin",
        "e0d52c1d8856abf5d8d31b4587e701171a8b4cbb00f55ca4db9326da8ce7d985", 1500,
        "SigLIP 2 ViT-B/16 224 px",
    ),
    _hub(
        "ViT-B-16-SigLIP2-256", "timm/ViT-B-16-SigLIP2-256", "main",
        "open_clip_pytorch_model.bin", "", 1500, "SigLIP 2 ViT-B/16 256 px",
    ),
    _hub(
        "ViT-SO400M-14-SigLIP2-384", "timm/ViT-SO400M-14-SigLIP2-384", "main",
        "open_clip_pytorch_model.bin", "", 4540, "SigLIP 2 shape-optimised 400M/14 384 px",
    ),
    _hub(
        "MobileCLIP2-S2", "timm/MobileCLIP2-S2-OpenCLIP", "main", "open_clip_pytorch_model.bin",
        "15179d4f3b2f348f6b7373eb50789cdaf226b9e54fde753e39bef789616884b6", 398,
        "MobileCLIP2-S2 (FastViT MCi2 image tower; OpenAI's BPE, built in)",
        files=("open_clip_config.json",),
    ),
    _hub(
        "MobileCLIP2-S0", "timm/MobileCLIP2-S0-OpenCLIP", "main", "open_clip_pytorch_model.bin",
        "", 230, "MobileCLIP2-S0 (FastViT MCi0 image tower; OpenAI's BPE, built in)",
        files=("open_clip_config.json",),
    ),
    _hub(
        "MobileCLIP2-B", "timm/MobileCLIP2-B-OpenCLIP", "main", "open_clip_pytorch_model.bin",
        "", 599, "MobileCLIP2-B (ViT-B/16 image tower behind a conv stem; OpenAI's BPE, built in)",
        files=("open_clip_config.json",),
    ),
    _hub(
        "xlm-roberta-base-ViT-B-32", "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
        "f047c6a31e35813eadaa81bab1b68ec115ca606d", "open_clip_pytorch_model.bin", "", 1460,
        "multilingual CLIP: ViT-B/32 with an XLM-RoBERTa base text tower, LAION-5B",
        files=("tokenizer.json",),
        write_files={"open_clip_config.json": _XLMR_CONFIG,
                     "special_tokens_map.json": _XLMR_SPECIAL},
    ),
    # NLLB-SigLIP (Visheratin 2023): the hub folders carry config and NLLB tokenizer; their pages
    # publish no weight hash recorded here, so the hub's own LFS SHA256 is checked. Revisions:
    # the last commits that changed a file other than the README.
    _hub(
        "nllb-clip-base-siglip", "visheratin/nllb-clip-base-siglip",
        "52376b09dc02c5ecd0a3ab657dab178ba8bb32fe", "open_clip_pytorch_model.bin", "", 2030,
        "multilingual NLLB-SigLIP: SigLIP ViT-B/16 384 px with the NLLB-200 600M text encoder",
    ),
    _hub(
        "nllb-clip-large-siglip", "visheratin/nllb-clip-large-siglip",
        "28298d7c43393dd70f6f2ea572539b589db1cb96", "open_clip_pytorch_model.bin", "", 4780,
        "multilingual NLLB-SigLIP: SigLIP SO400M/14 384 px with the NLLB-200 1.3B text encoder",
    ),
)  # fmt: skip

# Every name a user may type -> its spec (canonical names and aliases).
MODELS: dict[str, ModelSpec] = {}
for _spec in _SPECS:
    for _key in (_spec.name, *_spec.aliases):
        MODELS[_key] = _spec

# OpenAI's published archives: the only TorchScript files opened without an explicit opt-in.
KNOWN_JIT_SHA256: frozenset[str] = frozenset(s.sha256 for s in _SPECS if s.format == "openai-jit")


def list_models() -> list[str]:
    """Canonical registry names (without aliases), in registry order."""
    return [s.name for s in _SPECS]


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where downloads go: ``$CLIPSEARCH_CACHE``, else ``~/.cache/clipsearch`` (read from
    ``environ``, default this process's environment)."""
    return ModelEnvironment.read(environ).cache_dir


# -- resolving names and paths ---------------------------------------------------------------


def get_spec(name: str) -> ModelSpec:
    """The registry entry for a name or alias; ModelError listing the known names otherwise."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(
            f"unknown model name {name!r}; known names: {', '.join(list_models())}; "
            "or give the path to a checkpoint file or folder"
        )
    return spec


def _fetch_spec(spec: ModelSpec, root: Path, offline: str, progress: Progress | None) -> Path:
    """The entry's file (openai-jit) or folder in ``root``, fetched and verified as needed.
    ``offline``: "" to allow downloads, else the reason there are none (for the message)."""
    folder = root / spec.name
    weights = folder / spec.filename
    _fetch_file(spec, folder, spec.filename, spec.sha256, spec.url, offline, progress)
    if spec.format == "hub":
        base = spec.url.rsplit("/", 1)[0]
        for name, sha in spec.files:
            _fetch_file(spec, folder, name, sha, f"{base}/{name}", offline, None)
        for name, content in (spec.write_files or {}).items():
            _write_json(spec, folder / name, content)
        return folder
    if spec.format == "open_clip":
        assert spec.open_clip_config is not None
        _write_json(spec, folder / OPEN_CLIP_CONFIG, spec.open_clip_config)
        return folder
    return weights


def _fetch_file(
    spec: ModelSpec,
    folder: Path,
    filename: str,
    sha256: str,
    url: str,
    offline: str,
    progress: Progress | None,
) -> Path:
    """One file of an entry in the cache, verified; downloaded if missing or damaged."""
    target = folder / filename
    if is_verified(target, sha256):
        return target
    folder = target.parent  # a file in a sub-folder (timm_vision/config.json)
    if offline:
        raise DownloadError(_manual_instructions(spec, target, offline, url, sha256))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(_manual_instructions(spec, target, str(exc), url, sha256)) from exc
    # One downloader per file: an API process and a worker starting together must not
    # both fetch a gigabyte. Whoever waited re-checks: the other one may have finished.
    with exclusive(folder / f".{target.name}.lock"):
        if not is_verified(target, sha256):
            remove_stale_parts(target)
            try:
                download(url, sha256, target, progress=progress)
            except DownloadError as exc:
                raise DownloadError(
                    _manual_instructions(spec, target, str(exc), url, sha256)
                ) from exc
    return target


def _manual_instructions(
    spec: ModelSpec,
    weights: Path,
    reason: str,
    url: str | None = None,
    sha256: str | None = None,
) -> str:
    url = url or spec.url
    sha256 = spec.sha256 if sha256 is None else sha256
    main = weights.name == spec.filename
    what = f"{fmt_size(spec.size)}, " if main else ""
    sha = f"sha256 {sha256}" if sha256 else "check it against the hash huggingface.co lists for it"
    if spec.format == "hub":
        repo = spec.aliases[0] if spec.aliases else spec.name
        where = (
            f"put it at {weights} (or download the whole folder: huggingface-cli download {repo} "
            f"--local-dir DIR, and pass DIR instead of the name)"
        )
    else:
        where = (
            f"put it at {weights} (or set ${ENV_CACHE} to a folder holding "
            f"{spec.name}/{spec.filename}, or pass the file's path instead of the name)"
        )
    return (
        f"model {spec.name}: {weights.name} is not in the cache and could not be downloaded "
        f"({reason}). Fetch it from {url} ({what}{sha}) and {where}."
    )


def _write_json(spec: ModelSpec, path: Path, content: object) -> None:
    wanted = json.dumps(_plain(content), indent=2, sort_keys=True)
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == wanted:
            return
        atomic_text(path, wanted)
    except OSError as exc:
        raise DownloadError(f"model {spec.name}: cannot write {path}: {exc}") from exc


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _offline_reason(offline: bool | None) -> str:
    """Why there are no downloads ("" when there are); ``None``: the environment decides."""
    if offline is None:
        return f"offline mode (${ENV_OFFLINE} is set)" if ModelEnvironment.read().offline else ""
    return "offline mode" if offline else ""


def check_spec(
    spec: str | os.PathLike[str],
    offline: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Raise ModelError (or DownloadError, offline) if ``spec`` cannot name a model: neither an
    existing file or folder nor a registry name, or a registry name that is not in the cache while
    offline (``offline``; default ``$CLIPSEARCH_OFFLINE``). Cheap: loads nothing, downloads
    nothing. For commands that queue work for a worker, so that they fail before queueing instead
    of the job failing later."""
    text = os.fspath(spec).strip()
    if not text or "\x00" in text:
        raise ModelError(f"invalid model name or path {spec!r}")
    if text in MODELS:
        if _offline_reason(offline):
            resolve(text, cache_dir=cache_dir, offline=offline)  # raises: where to get the files
        return
    resolve(text, cache_dir=cache_dir, offline=True)  # a path: ModelError naming it if missing


def resolve(
    spec: str | os.PathLike[str] | ModelSpec,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
) -> Path:
    """A local path for a registry name (downloaded and verified if needed) or a file/folder.

    - a :class:`ModelSpec` or a registry name/alias (``"ViT-B-32"``, ``"ViT-B/32"``): the file
      (``openai-jit``) or folder (``open_clip``) in the cache, fetched if missing or damaged;
    - otherwise a path (``~`` expanded) to an existing checkpoint file or folder.

    ``cache_dir`` (default: ``$CLIPSEARCH_CACHE`` or ``~/.cache/clipsearch``) is where registry
    entries go. ``offline`` (default: ``$CLIPSEARCH_OFFLINE``) never touches the network: a
    missing file raises :class:`DownloadError` saying where to get it and where to put it.
    ``progress(done, total)`` is called while a download streams (for a CLI progress bar).
    """
    why_offline = _offline_reason(offline)
    root = (
        Path(cache_dir).expanduser() if cache_dir is not None else ModelEnvironment.read().cache_dir
    )
    if isinstance(spec, ModelSpec):
        return _fetch_spec(spec, root, why_offline, progress)
    if isinstance(spec, str):
        text = spec.strip()
        if not text or "\x00" in text:
            raise ModelError(f"invalid model name or path {spec!r}")
        if text in MODELS:
            return _fetch_spec(MODELS[text], root, why_offline, progress)
        spec = text
    elif not isinstance(spec, os.PathLike):
        raise ModelError(f"a model is named by a string or a path, got {type(spec).__name__}")
    path = Path(os.fspath(spec)).expanduser()
    if path.exists():
        return path.resolve()
    raw = os.fspath(spec)
    looks_like_path = any(sep in raw for sep in ("/", "\\", os.sep)) or raw.startswith(("~", "."))
    if looks_like_path:
        raise ModelError(
            f"checkpoint not found: {path} is neither an existing file or folder nor a known "
            f"model name (known: {', '.join(list_models())})"
        )
    raise ModelError(
        f"unknown model {raw!r}: not a registry name ({', '.join(list_models())}) and no file "
        f"or folder of that name exists in {Path.cwd()}"
    )
