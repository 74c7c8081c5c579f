"""NLLB-SigLIP: a SigLIP image tower with the text encoder of Meta's NLLB translation model, so a
query in any of NLLB's 202 languages finds the images (open_clip's ``nllb-clip-base-siglip`` and
``nllb-clip-large-siglip``, ``CustomTextCLIP``).

As open_clip builds it:

- image tower: timm's SigLIP ViT with the attention-pool ("MAP") head and no projection
  (:class:`~model.siglip.SigLIPVisionTransformer`): ``vit_base_patch16_siglip_384`` for the base
  model, ``vit_so400m_patch14_siglip_384`` for the large one; the feature is the tower's width;
- text tower: the encoder of NLLB's M2M100 (transformers builds it from its config: the folder
  ``text_cfg.hf_model_name`` points to, or, for ``facebook/nllb-200-*``, a config inferred from
  the weights' shapes), read at its first position (the language code: open_clip's
  ``cls_pooler``), projected by a linear layer without bias (``hf_proj_type: linear``);
- ``logit_scale`` and ``logit_bias``: a pair's probability is ``sigmoid(exp(scale) * cos + bias)``;
- preprocessing: SigLIP's (squash to R x R, bicubic, mean = std = 0.5), 384 px;
- tokenizer: the folder's NLLB ``tokenizer.json``, ``[lang] text </s>`` with ``eng_Latn`` unless
  another FLORES-200 code is chosen, padded with ``<pad>`` to 77 tokens, open_clip's "whitespace"
  cleaning (cased). The code is chosen per call (``model.embed_texts(texts, language="fra_Latn")``,
  ``model.tokenize(texts, language=...)``: thread-safe, what the API does for each query's
  ``lang``), or as the default of every later call (config ``language=``,
  ``model.tokenizer.set_language("fra_Latn")``); ``model.languages`` lists the codes.

``transformers`` is an optional dependency: ``pip install 'clipsearch[multilingual]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipsearch.model import hub_config as hub
from clipsearch.model import siglip
from clipsearch.model.base import TokenizerOptions, check_batch_size
from clipsearch.model.clip import check_positive_int, dataclass_from
from clipsearch.model.errors import CheckpointError, ModelError
from clipsearch.model.family_registry import Family, register
from clipsearch.model.hf_text import POOLERS, PROJECTIONS, HFTextEncoder, hf_width
from clipsearch.model.json_types import JSONObject
from clipsearch.model.siglip import SigLIPVisionConfig, SigLIPVisionTransformer, SigmoidScoring

# Hub names of text towers whose transformers config is rebuilt from the weights' shapes.
_SHAPE_NAMES = ("facebook/nllb-200", "nllb-200", "facebook/m2m100", "m2m100")


@dataclass
class NLLBSigLIPConfig:
    """A SigLIP ViT with a transformers (NLLB) text tower."""

    embed_dim: int = 768  # the joint space: the image tower's width, the text projection's output
    vision: SigLIPVisionConfig = field(
        default_factory=lambda: SigLIPVisionConfig(image_size=384, patch_size=16)
    )
    hf_config: dict[str, Any] = field(default_factory=dict)  # the transformers config.json
    pooler: str = "cls_pooler"  # open_clip's hf_pooler_type: the first (language code) position
    proj: str = "linear"  # open_clip's hf_proj_type
    text_clean: str = "whitespace"  # open_clip's tokenizer_kwargs.clean
    context_length: int = 77  # tokens per text
    language: str | None = None  # FLORES-200 code put first; None: the folder's (eng_Latn)

    def __post_init__(self) -> None:
        check_positive_int("config", "embed_dim", self.embed_dim)
        check_positive_int("config", "context_length", self.context_length)
        if self.embed_dim != self.vision.width:
            raise ModelError(
                f"an NLLB-SigLIP image feature is its tower's width ({self.vision.width}); "
                f"embed_dim={self.embed_dim} differs"
            )
        if self.pooler not in POOLERS:
            raise ModelError(f"hf pooler must be one of {POOLERS}, got {self.pooler!r}")
        if self.proj not in PROJECTIONS:
            raise ModelError(f"hf projection must be one of {PROJECTIONS}, got {self.proj!r}")
        if not isinstance(self.hf_config, dict) or "model_type" not in self.hf_config:
            raise ModelError("hf_config must be a transformers config with a model_type")

    @property
    def text_width(self) -> int:
        return hf_width(self.hf_config)

    @property
    def pad_id(self) -> int:
        return int(self.hf_config.get("pad_token_id", 1))

    def to_dict(self) -> JSONObject:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> NLLBSigLIPConfig:
        if not isinstance(data, dict):
            raise ModelError(
                f"an NLLB-SigLIP config must be a JSON object, got {type(data).__name__}"
            )
        vision = dataclass_from(SigLIPVisionConfig, data.get("vision", {}), "vision")
        rest = {k: v for k, v in data.items() if k != "vision"}
        known = {"embed_dim", "hf_config", "pooler", "proj", "text_clean", "context_length"}
        unknown = set(rest) - known - {"language"}
        if unknown:
            raise ModelError(f"unknown NLLB-SigLIP config keys: {sorted(unknown)}")
        return cls(vision=vision, **rest)


class NLLBSigLIP(SigmoidScoring):
    """SigLIP ViT + NLLB text encoder; the surface is :class:`~model.base.EmbeddingModel`'s."""

    family = "nllb-siglip"
    config_class = NLLBSigLIPConfig

    def __init__(self, config: NLLBSigLIPConfig, tokenizer_dir: str | Path | None = None) -> None:
        super().__init__(config, tokenizer_dir)
        self.visual = SigLIPVisionTransformer(config.vision)
        self.text = HFTextEncoder(config)
        self._init_logits()

    def _tokenizer_options(self) -> TokenizerOptions:
        return {"clean": self.config.text_clean, "language": self.config.language}

    # -- the query language --------------------------------------------------------------------

    @property
    def languages(self) -> list[str]:
        """The FLORES-200 codes a text may be read as (``language=``), sorted; what makes this
        model language-aware (a model without such codes has no ``languages``)."""
        return list(getattr(self.tokenizer, "languages", []) or [])

    @property
    def default_language(self) -> str | None:
        """The code texts are read as when no ``language`` is given (``eng_Latn`` unless the
        config or ``tokenizer.set_language`` chose another)."""
        return getattr(self.tokenizer, "language", None)

    def tokenize(self, texts: str | Sequence[str], language: str | None = None) -> torch.Tensor:
        """Texts -> LongTensor [N, context_length]: ``[lang] text </s> <pad>...``, ``lang`` the
        given FLORES-200 code (this call only; :class:`ModelError` for an unknown one) or the
        tokenizer's default."""
        if language is None:
            return self.tokenizer(texts, context_length=self.context_length)
        # A language-aware tokenizer (HubTokenizer) takes ``language``; the Protocol does not say so.
        tokenize: Callable[..., torch.Tensor] = self.tokenizer
        return tokenize(texts, context_length=self.context_length, language=language)

    def embed_texts(
        self, texts: Sequence[str], batch_size: int = 256, language: str | None = None
    ) -> np.ndarray:
        """Texts -> float32 [N, E], L2-normalised, each read as ``language`` (a FLORES-200 code
        such as ``"fra_Latn"``; default: :attr:`default_language`). Safe to call from several
        threads with different languages: nothing shared is changed."""
        check_batch_size(batch_size)
        texts = self._check_texts(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        tokens = self.tokenize(texts, language=language)  # [N, context_length]
        out = []
        with self._inference():
            for start in range(0, len(texts), batch_size):
                out.append(self._normalised(self.encode_text(tokens[start : start + batch_size])))
        return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# From an OpenCLIP hub folder
# --------------------------------------------------------------------------------------------


def nllb_shape_config(state: Mapping[str, torch.Tensor], source: str) -> JSONObject:
    """NLLB-200's M2M100 transformers config from the encoder's shapes (the distilled 600M and
    1.3B models, the dense 3.3B): width, layers and FFN from the tensors, heads width // 64, and
    what NLLB-200 fixes (sinusoidal positions for 1024 tokens, scaled embeddings, ReLU)."""
    prefix = "text.transformer."
    vocab, width = hub.shape(state, prefix + "embed_tokens.weight", source)
    layers = hub.count_indices(state, prefix + "layers.")
    if layers == 0:
        raise CheckpointError(f"{source}: no NLLB encoder layers ({prefix}layers.N)")
    ffn = hub.shape(state, prefix + "layers.0.fc1.weight", source)[0]
    heads = max(1, width // 64)
    return {
        "model_type": "m2m_100",
        "vocab_size": vocab,
        "d_model": width,
        "encoder_layers": layers,
        "encoder_attention_heads": heads,
        "encoder_ffn_dim": ffn,
        "decoder_layers": 0,
        "decoder_attention_heads": heads,
        "decoder_ffn_dim": ffn,
        "max_position_embeddings": 1024,
        "scale_embedding": True,
        "activation_function": "relu",
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "is_encoder_decoder": True,
    }


def infer_config(
    data: Mapping[str, object], folder: Path, state: Mapping[str, torch.Tensor], source: str
) -> NLLBSigLIPConfig:
    """The architecture of an open_clip NLLB-SigLIP: the SigLIP tower from shapes (timm's keys
    renamed by :func:`model.siglip.from_open_clip_state`), the text tower from its transformers
    config (or shapes), the projection from the keys."""
    model_cfg, vision_cfg, text_cfg = hub.model_cfg(data, source)
    vision = siglip.vision_config(vision_cfg, folder, state, source)
    name = text_cfg.get("hf_model_name")

    def from_shapes() -> JSONObject | None:
        known = isinstance(name, str) and name.lower().startswith(_SHAPE_NAMES)
        return nllb_shape_config(state, source) if known else None

    hf_config = hub.hf_text_config(folder, name, source, from_shapes, "facebook/nllb-200-* models")
    if "text.proj.weight" in state:
        proj = "linear"
        embed_dim = hub.shape(state, "text.proj.weight", source)[0]
    elif "text.proj.0.weight" in state:
        proj = "mlp"
        embed_dim = hub.shape(state, "text.proj.2.weight", source)[0]
    else:
        raise CheckpointError(f"{source}: no text projection (text.proj.*) in the weights")
    clean = hub.tokenizer_clean(text_cfg, source)
    try:
        return NLLBSigLIPConfig(
            embed_dim=hub.config_int(model_cfg.get("embed_dim", embed_dim)),
            vision=vision,
            hf_config=hf_config,
            pooler=str(text_cfg.get("hf_pooler_type", "cls_pooler")),
            proj=str(text_cfg.get("hf_proj_type", proj)),
            text_clean=clean,
            context_length=hub.config_int(text_cfg.get("context_length", 77)),
        )
    except (ModelError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: unsupported NLLB-SigLIP: {exc}") from exc


def _recognises(
    arch: str | None, vision_cfg: Mapping[str, object], text_cfg: Mapping[str, object], source: str
) -> bool:
    if arch is None or "siglip" not in arch or not text_cfg.get("hf_model_name"):
        return False
    siglip.check_map_pool(arch, vision_cfg, source)
    return True


FAMILY = register(
    Family(
        model=NLLBSigLIP,
        recognises=_recognises,
        convert_state=siglip.from_open_clip_state,
        infer_config=infer_config,
        build_on_meta=False,
    )
)
