"""The model families beside CLIP, each registered once by its own module.

A family module (``model.siglip``, ``model.mobileclip``, ``model.mobileclip_vit``,
``model.hf_text``, ``model.nllb``) ends with one ``register(Family(...))``: what the loader needs
to know about it, in one place. :mod:`model.families` imports the family modules and looks the
entries up; this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

import torch

from clipsearch.model.errors import CheckpointError
from clipsearch.model.json_types import JSONObject

if TYPE_CHECKING:
    from clipsearch.model.base import EmbeddingModel, TwoTowerModel

StateDict = dict[str, torch.Tensor]


class FamilyConfig(Protocol):
    """A family's config dataclass (its model's ``config_class``): JSON in, JSON out."""

    def to_dict(self) -> JSONObject: ...

    @classmethod
    def from_dict(cls, data: object) -> Self: ...


@dataclass(frozen=True)
class Family:
    """One model family: how to recognise, convert, build and finish it."""

    # The model class: ``model(config, tokenizer_dir)`` builds it (randomly initialised); its
    # ``family``, ``config_class`` and ``tokenizer_kind`` are the entry's name, config class and
    # tokenizer kind
    model: type[TwoTowerModel]
    # (timm architecture or None, vision_cfg, text_cfg, source) -> whether an open_clip config
    # describes this family; may raise CheckpointError for a near miss it cannot load
    recognises: Callable[[str | None, Mapping[str, object], Mapping[str, object], str], bool]
    # open_clip's parameter names -> ours (the hub layout to the module's)
    convert_state: Callable[[StateDict], StateDict]
    # (open_clip_config.json content, folder, converted state, source) -> config, from the
    # shapes and what the config adds
    infer_config: Callable[
        [Mapping[str, object], Path, Mapping[str, torch.Tensor], str], FamilyConfig
    ]
    # The timm image towers it reads, for the message that refuses any other ("": none)
    timm_towers: str = ""
    # Reparameterisation for inference (MobileCLIP's branches folded into single
    # convolutions), applied after loading unless asked not to; None: nothing to fold
    fold: Callable[[Any], Any] | None = None
    # transformers towers keep buffers outside the state dict (position ids): built for real,
    # not on the meta device
    build_on_meta: bool = True

    @property
    def name(self) -> str:  # EmbeddingModel.family and our config.json's "family"
        return self.model.family

    @property
    def config_class(self) -> type[FamilyConfig]:
        return self.model.config_class

    @property
    def tokenizer(self) -> str:  # "hub": the folder's tokenizer.json; "clip-bpe": built in
        return self.model.tokenizer_kind

    def build(self, config: FamilyConfig, tokenizer_dir: Path | None) -> EmbeddingModel:
        return self.model(config, tokenizer_dir if self.tokenizer == "hub" else None)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family (once per name)."""
    if family.name in _FAMILIES and _FAMILIES[family.name] is not family:
        raise ValueError(f"model family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def get(name: str) -> Family:
    """The family of this name; CheckpointError naming the known ones otherwise."""
    family = _FAMILIES.get(name)
    if family is None:
        raise CheckpointError(f"unknown model family {name!r}; known: clip, {', '.join(_FAMILIES)}")
    return family


def registered() -> tuple[Family, ...]:
    """Every registered family, in registration order."""
    return tuple(_FAMILIES.values())
