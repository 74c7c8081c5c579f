"""What every model family offers the rest of clipsearch.

:class:`EmbeddingModel` is the one public surface shared by CLIP (``model.clip``), SigLIP
(``model.siglip``), MobileCLIP (``model.mobileclip``) and CLIP with a Hugging Face text tower
(``model.hf_text``): ``tokenize``, ``preprocess`` (and the picklable ``preprocessor`` for worker
processes), ``encode_image``/``encode_text`` (unnormalised features, as the reference returns
them), the batched ``embed_pixels``/``embed_texts``/``embed_images`` helpers (L2-normalised
float32 numpy arrays), and ``score``: a relevance that means the same across models.

A family subclasses :class:`TwoTowerModel` (CLIP subclasses :class:`EmbeddingModel` directly):
it builds ``visual`` and ``text`` from ``self.config``; the shared properties (``embed_dim``,
``image_size``, ``context_length``), ``encode_image``/``encode_text`` and the tokenizer come from
the base class and the family's class attributes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypedDict, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from clipsearch.model.errors import ModelError
from clipsearch.model.hub_tokenizer import HubTokenizer
from clipsearch.model.preprocess import Preprocess, load_image
from clipsearch.model.quantize import check_precision, compact_text_tower
from clipsearch.model.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# The normalisation OpenAI's models were trained with (RGB, after scaling to [0, 1]).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ModelError(f"batch_size must be a positive integer, got {batch_size!r}")


class TextTokenizer(Protocol):
    """A model's tokenizer: ``(texts, context_length=...) -> LongTensor [N, L]``
    (:class:`~model.tokenizer.Tokenizer`, :class:`~model.hub_tokenizer.HubTokenizer`)."""

    def __call__(self, texts: str | Sequence[str], context_length: int = ...) -> torch.Tensor: ...


class TokenizerOptions(TypedDict, total=False):
    """Keyword arguments of a family's :class:`~model.hub_tokenizer.HubTokenizer`."""

    clean: str
    language: str | None


class EmbeddingModel(nn.Module):
    """An image tower and a text tower embedding into one space; see the module docstring."""

    family = "clip"  # which module built it: clip, siglip, mobileclip, hf-text, nllb-siglip,
    # mobileclip-vit (model.families.FAMILIES)
    # How ``score`` turns a cosine into a relevance: "cosine" (unchanged; CLIP was trained with a
    # softmax over a batch, so its cosines have no absolute meaning) or "sigmoid" (SigLIP: the
    # probability that the pair matches, sigmoid(exp(logit_scale) * cos + logit_bias)).
    score_kind = "cosine"
    # Whether model.quantize can build an int8 / float16 text tower for it (CLIP's text tower).
    has_compact_text_path = False

    def __init__(self) -> None:
        super().__init__()
        self.name = self.family  # registry name or path it was loaded from
        self.preprocess_cfg: dict[str, tuple[float, ...]] = {"mean": OPENAI_MEAN, "std": OPENAI_STD}
        self.resize_mode = "shortest"  # model.preprocess.RESIZE_MODES
        self.interpolation = "bicubic"  # model.preprocess.INTERPOLATIONS
        self._tokenizer: TextTokenizer | None = None
        self._preprocessor: Preprocess | None = None

    # -- what a family defines ----------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    @property
    def context_length(self) -> int:
        raise NotImplementedError

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _make_tokenizer(self) -> TextTokenizer:
        raise NotImplementedError

    # -- common properties --------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- tokenizer and preprocessing (attached lazily) ----------------------------------------

    @property
    def tokenizer(self) -> TextTokenizer:
        """A callable ``(texts, context_length=...) -> LongTensor [N, L]``."""
        if self._tokenizer is None:
            self._tokenizer = self._make_tokenizer()
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: TextTokenizer) -> None:
        self._tokenizer = value

    @property
    def preprocessor(self) -> Preprocess:
        """The image transform (model.preprocess.Preprocess) for this model's size, mean/std,
        resize mode and filter. A plain picklable object: hand this, not the model, to worker
        processes."""
        if self._preprocessor is None:
            self._preprocessor = Preprocess(
                self.image_size,
                mean=tuple(self.preprocess_cfg["mean"]),
                std=tuple(self.preprocess_cfg["std"]),
                resize_mode=self.resize_mode,
                interpolation=self.interpolation,
            )
        return self._preprocessor

    @preprocessor.setter
    def preprocessor(self, value: Preprocess) -> None:
        self._preprocessor = value

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Texts -> LongTensor [N, context_length], as the family's reference tokenizer makes them."""
        return self.tokenizer(texts, context_length=self.context_length)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """A PIL image -> FloatTensor [3, R, R], resized (and cropped) and normalised."""
        return self.preprocessor(image)

    # -- scores ---------------------------------------------------------------------------------

    def score(self, cosine: np.ndarray | torch.Tensor | float) -> np.ndarray:
        """The relevance of pairs with these cosine similarities, as float32 numpy.

        ``score_kind == "sigmoid"``: the model's own match probability in [0, 1], comparable
        across models of that kind. ``"cosine"``: the cosine unchanged.
        """
        values = torch.as_tensor(np.asarray(cosine, dtype=np.float32))
        return values.numpy().astype(np.float32, copy=False)

    # -- batched inference helpers -------------------------------------------------------------

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode + inference mode (+ bf16 autocast on CUDA) for the duration."""
        was_training = self.training
        self.eval()
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.inference_mode())
                if self.device.type == "cuda":
                    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
                    stack.enter_context(torch.autocast("cuda", dtype=dtype))
                yield
        finally:
            self.train(was_training)

    @staticmethod
    def _normalised(features: torch.Tensor) -> np.ndarray:
        return F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        r = self.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, r, r):
            raise ModelError(f"expected pixels of shape [N, 3, {r}, {r}], got {list(pixels.shape)}")

    def embed_pixels(self, pixels: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """[N, 3, R, R] preprocessed pixels -> float32 [N, E], L2-normalised."""
        check_batch_size(batch_size)
        if not isinstance(pixels, torch.Tensor):
            raise ModelError(
                f"embed_pixels expects a FloatTensor [N, 3, R, R], got {type(pixels).__name__}"
            )
        self._check_pixels(pixels)
        if pixels.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = []
        with self._inference():
            for start in range(0, pixels.shape[0], batch_size):
                chunk = pixels[start : start + batch_size].to(self.device, non_blocking=True)
                out.append(self._normalised(self.encode_image(chunk)))
        return np.concatenate(out)

    def _check_texts(self, texts: Sequence[str] | str) -> list[str]:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ModelError(f"embed_texts expects strings; item {i} is {type(text).__name__}")
        return texts

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> float32 [N, E], L2-normalised. A single str is taken as one text."""
        check_batch_size(batch_size)
        texts = self._check_texts(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        tokens = self.tokenize(texts)  # [N, context_length]
        out = []
        with self._inference():
            for start in range(0, len(texts), batch_size):
                out.append(self._normalised(self.encode_text(tokens[start : start + batch_size])))
        return np.concatenate(out)

    def text_embedder(self, precision: str = "exact") -> Callable[[Sequence[str]], np.ndarray]:
        """The function that embeds query texts at ``precision`` (see model.quantize).

        ``"exact"``: :meth:`embed_texts` itself. ``"int8"`` / ``"fp16"``: the text tower with
        int8 / float16 Linear weights on the CPU, for a CLIP on the CPU; other families and GPU
        models have no compact path and get :meth:`embed_texts`, with a log line saying so.
        Same output contract: texts -> float32 [N, E], L2-normalised.
        """
        precision = check_precision(precision)
        if precision == "exact":
            return self.embed_texts
        if not self.has_compact_text_path or self.device.type != "cpu":
            log.warning(
                "no %s text path for %s (%s on %s): queries use the exact float path",
                precision,
                self.name,
                self.family,
                self.device,
            )
            return self.embed_texts
        try:
            return compact_text_tower(cast(Any, self), precision).embed_texts
        except (ModelError, RuntimeError) as exc:  # no quantized engine in this torch build
            log.warning(
                "%s text path unavailable (%s): queries use the exact float path", precision, exc
            )
            return self.embed_texts

    def embed_images(
        self, images: Sequence[Image.Image | str | Path], batch_size: int = 64
    ) -> np.ndarray:
        """PIL images or image file paths -> float32 [N, E], L2-normalised.

        A path that cannot be read as an image raises :class:`ModelError` naming it.
        """
        check_batch_size(batch_size)
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        images = list(images)
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = []
        for start in range(0, len(images), batch_size):
            batch = [self._pixels_of(item) for item in images[start : start + batch_size]]
            out.append(self.embed_pixels(torch.stack(batch), batch_size=batch_size))
        return np.concatenate(out)

    def _pixels_of(self, item: Image.Image | str | Path) -> torch.Tensor:
        if isinstance(item, Image.Image):
            return self.preprocess(item)
        if isinstance(item, (str, Path)):
            try:
                image = load_image(item)
            except ModelError:
                raise
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise ModelError(f"cannot read image {str(item)!r}: {exc}") from exc
            return self.preprocess(image)
        raise ModelError(f"embed_images expects PIL images or paths, got {type(item).__name__}")


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> Tokenizer:
    """The packaged BPE tokenizer (OpenAI's), built once per process and shared by every model."""
    return Tokenizer()


class TwoTowerModel(EmbeddingModel):
    """A family beside CLIP: an image tower ``visual`` and a text tower ``text`` built from
    ``self.config``, a dataclass with ``embed_dim``, ``vision.image_size`` and
    ``context_length``. What differs between families is said by class attributes."""

    config_class: ClassVar[type]  # the config dataclass its __init__ takes
    mean: ClassVar[tuple[float, ...]] = OPENAI_MEAN  # the normalisation it was trained with
    std: ClassVar[tuple[float, ...]] = OPENAI_STD
    default_resize_mode: ClassVar[str] = "shortest"  # model.preprocess.RESIZE_MODES
    default_interpolation: ClassVar[str] = "bicubic"  # model.preprocess.INTERPOLATIONS
    tokenizer_kind: ClassVar[str] = "hub"  # "hub": tokenizer_dir's tokenizer.json; "clip-bpe"
    # Token ids encode_text takes: "any" [N, L]; "at_most" [N, <= context_length]; "exact"
    # [N, context_length] (a tower read at the last position needs the padded length)
    token_length: ClassVar[str] = "any"

    config: Any  # the family's config dataclass (config_class)
    visual: nn.Module
    text: nn.Module

    def __init__(self, config: object, tokenizer_dir: str | Path | None = None) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ModelError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else None
        self.preprocess_cfg = {"mean": self.mean, "std": self.std}
        self.resize_mode = self.default_resize_mode
        self.interpolation = self.default_interpolation

    @property
    def embed_dim(self) -> int:
        return int(self.config.embed_dim)

    @property
    def image_size(self) -> int:
        return int(self.config.vision.image_size)

    @property
    def context_length(self) -> int:
        return int(self.config.context_length)

    def _tokenizer_options(self) -> TokenizerOptions:
        """Keyword arguments of the family's HubTokenizer beyond the folder."""
        return {"clean": self.config.text_clean}

    def _make_tokenizer(self) -> TextTokenizer:
        if self.tokenizer_kind == "clip-bpe":
            return default_tokenizer()
        if self.tokenizer_dir is None:
            raise ModelError(
                f"this {self.family} model has no tokenizer: load it from its hub folder "
                "(tokenizer.json beside the weights), or set model.tokenizer"
            )
        return HubTokenizer(self.tokenizer_dir, **self._tokenizer_options())

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, R, R] normalised pixels -> [N, E] unnormalised image features."""
        self._check_pixels(pixels)
        return self.visual(pixels.to(device=self.device, dtype=self.dtype))  # type: ignore[no-any-return]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, L] token ids -> [N, E] unnormalised text features."""
        n = self.context_length
        if tokens.ndim != 2:
            raise ModelError(f"expected token ids of shape [N, L], got {list(tokens.shape)}")
        if self.token_length == "exact" and tokens.shape[1] != n:
            raise ModelError(
                f"expected token ids of shape [N, {n}] ({self.family} reads the last position "
                f"of the padded text), got {list(tokens.shape)}"
            )
        if self.token_length == "at_most" and tokens.shape[1] > n:
            raise ModelError(f"expected token ids of shape [N, <= {n}], got {list(tokens.shape)}")
        if tokens.shape[0] == 0:
            return torch.zeros(0, self.embed_dim, dtype=self.dtype, device=self.device)
        return self.text(tokens.to(self.device))  # type: ignore[no-any-return]
