"""Fast CPU paths for text queries: CLIP's text tower with compact Linear weights.

At batch 1 a short query is bound by reading the text tower's weights (ViT-B/32: 38M
parameters in the transformer's Linear layers, 151 MB as float32), not by arithmetic.
:class:`CompactTextTower` keeps those weights compact and runs them with fbgemm's kernels:

- ``"int8"``: int8 weights with one scale per output channel (38 MB), activations quantized
  per call (PyTorch dynamic quantization: 8 bits on CPUs with VNNI, 7 bits on plain AVX2 where
  the int16 pair sums could saturate), int32 accumulation, float output.
- ``"fp16"``: float16 weights (76 MB), float32 activations and accumulation: nearly exact.

Everything else stays float32 and shared with the float model: token and positional
embeddings, LayerNorms, attention softmax, the final projection.

Precision is a choice made by the caller (``EmbeddingModel.text_embedder(precision)``, the
service's ``CLIPSEARCH_QUERY_PRECISION``); ``"exact"`` is the float model's ``embed_texts``,
bit for bit what ``encode_text`` computes. BENCHMARKS.md records each path's drift (cosine,
retrieval recall) and speed measured on this project's machine.

The int8 path encodes one text per forward pass: dynamic quantization picks one activation
scale per call, so batching texts would make a text's embedding depend on the others in its
batch (and on their padding); one at a time, a text always gets the same vector. At batch 1
there is nothing to gain from batching anyway: the weights are read once per call either way.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipsearch.model.errors import ModelError

if TYPE_CHECKING:
    from clipsearch.model.clip import CLIP, ResidualAttentionBlock

log = logging.getLogger(__name__)

PRECISIONS = ("exact", "int8", "fp16")
TextEmbedder = Callable[[Sequence[str]], np.ndarray]

_build_lock = threading.Lock()


def check_precision(precision: str) -> str:
    """``precision`` normalised (one of PRECISIONS); anything else raises ModelError."""
    value = str(precision).strip().lower()
    if value not in PRECISIONS:
        raise ModelError(
            f"unknown query precision {precision!r}; use one of {', '.join(PRECISIONS)}"
        )
    return value


def int8_engine() -> str | None:
    """The quantized engine compact Linear layers run on here (x86/fbgemm, else qnnpack), or None."""
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in engines:
            return name
    return None


def _has_vnni() -> bool:
    """Whether the CPU multiplies u8 x s8 into int32 without an int16 step (AVX512-VNNI or
    AVX-VNNI): then activations may use all 8 bits. Without it (plain AVX2) fbgemm's
    vpmaddubsw sums pairs into int16, which can saturate, so activations keep 7 bits."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "avx512_vnni" in flags or "avx_vnni" in flags
    except OSError:
        pass
    return False


class _Int8Linear(nn.Module):
    """y = x W^T + b with W int8 (one scale per output row) and x quantized to 8 (or 7) bits
    per call, int32 accumulation (fbgemm), float output."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, full_range: bool) -> None:
        super().__init__()
        w = weight.detach().float().cpu()
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        with warnings.catch_warnings():
            # quantized tensors and torch.ao are marked deprecated (in favour of torchao) but
            # are what ships with torch; the kernels are fbgemm's
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
            b = None if bias is None else bias.detach().float().cpu()
            self._packed = torch.ops.quantized.linear_prepack(qweight, b)
        self.reduce_range = not full_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(
            torch.Tensor,
            torch.ops.quantized.linear_dynamic(x, self._packed, reduce_range=self.reduce_range),
        )


class _Fp16Linear(nn.Module):
    """y = x W^T + b with W stored in float16 (fbgemm), x and y float32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        b = None if bias is None else bias.detach().float().cpu()
        self._packed = torch.ops.quantized.linear_prepack_fp16(weight.detach().float().cpu(), b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, torch.ops.quantized.linear_dynamic_fp16(x, self._packed))


class _CompactBlock(nn.Module):
    """One pre-norm transformer block of the text tower with compact Linear weights."""

    def __init__(self, block: ResidualAttentionBlock, linear: Callable[..., nn.Module]) -> None:
        super().__init__()
        attn = block.attn
        self.heads = attn.heads
        self.ln_1 = block.ln_1  # shared with the float model (float32, a few KB)
        self.ln_2 = block.ln_2
        self.qkv = linear(attn.in_proj_weight, attn.in_proj_bias)
        self.out_proj = linear(attn.out_proj.weight, attn.out_proj.bias)
        mlp = cast(Any, block.mlp)
        self.c_fc = linear(mlp.c_fc.weight, mlp.c_fc.bias)
        self.act = mlp.gelu
        self.c_proj = linear(mlp.c_proj.weight, mlp.c_proj.bias)

    def forward(self, x: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        """Causal block over [N, L, D] -> [N, L, D]; with ``select`` ([N] positions) only those
        outputs, [N, D] (what the last block of the tower needs)."""
        n, length, width = x.shape
        head_dim = width // self.heads
        qkv = self.qkv(self.ln_1(x)).view(n, length, 3, self.heads, head_dim)  # [N, L, 3, H, D/H]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, H, L, D/H]
        if select is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [N, H, L, D/H]
            y = x + self.out_proj(out.transpose(1, 2).reshape(n, length, width))
        else:
            rows = torch.arange(n)
            q = q[rows, :, select].unsqueeze(2)  # [N, H, 1, D/H]
            mask = (torch.arange(length) <= select[:, None]).view(n, 1, 1, length)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [N, H, 1, D/H]
            y = x[rows, select] + self.out_proj(out.reshape(n, width))  # [N, D]
        return y + self.c_proj(self.act(self.c_fc(self.ln_2(y))))


class CompactTextTower(nn.Module):
    """CLIP's text tower with int8 or float16 Linear weights; ``encode_text`` mirrors
    ``CLIP.encode_text``.

    Built from a float :class:`~model.clip.CLIP` on the CPU; the embeddings, LayerNorms and
    projection are the float model's own tensors (shared, not copied), so only the compact
    weights (a quarter or a half of the float ones) are added to memory. Weights are copied
    when the tower is built: a model trained further afterwards needs a new tower.
    """

    def __init__(self, model: CLIP, precision: str = "int8") -> None:
        super().__init__()
        precision = check_precision(precision)
        if precision == "exact":
            raise ModelError("the exact path is the float model itself, not a compact tower")
        if model.device.type != "cpu":
            raise ModelError(
                f"the {precision} text path runs on the CPU; the model is on {model.device}"
            )
        engine = int8_engine()
        if engine is None:
            raise ModelError(
                f"this torch build has no quantized engine for {precision} Linear layers"
            )
        torch.backends.quantized.engine = engine
        self.engine = engine
        self.precision = precision
        self.full_range = precision == "int8" and _has_vnni()
        linear: Callable[..., nn.Module]
        if precision == "int8":
            linear = functools.partial(_Int8Linear, full_range=self.full_range)
        else:
            linear = _Fp16Linear
        # int8 activations are quantized with one scale per call: texts run one at a time so a
        # text's vector does not depend on the other texts (or padding) in its batch
        self.one_at_a_time = precision == "int8"
        self.context_length = model.context_length
        self.embed_dim = model.embed_dim
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.blocks = nn.ModuleList(
            _CompactBlock(cast("ResidualAttentionBlock", block), linear)
            for block in model.transformer.resblocks
        )
        self.ln_final = model.ln_final
        self.text_projection = model.text_projection
        self._tokenize = model.tokenize
        self.eval()

    def _forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, L] token ids -> [N, E]; trimmed to the longest end token (causal: the same)."""
        end = tokens.argmax(dim=-1)  # [N]: each text's end token
        length = int(end.max()) + 1
        ids = tokens[:, :length].to(torch.long)  # [N, L']
        x = self.token_embedding(ids).float() + self.positional_embedding[:length].float()
        blocks = list(self.blocks)
        for block in blocks[:-1]:
            x = block(x)  # [N, L', D]
        x = blocks[-1](x, select=end)  # [N, D]: the end tokens' outputs
        x = self.ln_final(x)
        return x @ self.text_projection.float()  # [N, E]

    def encode_text(self, tokens: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """[N, L] token ids -> [N, E] unnormalised features."""
        if tokens.ndim != 2:
            raise ModelError(f"expected token ids of shape [N, L], got {list(tokens.shape)}")
        n, length = tokens.shape
        if length > self.context_length:
            raise ModelError(
                f"token sequences of length {length} exceed context_length {self.context_length}"
            )
        if n == 0 or length == 0:
            return torch.zeros(n, self.embed_dim)
        tokens = tokens.cpu()
        step = 1 if self.one_at_a_time else batch_size
        with torch.inference_mode():
            if n <= step:
                return self._forward(tokens)
            # batches of similar length (sorted by end position) so each trims to its own
            order = torch.argsort(tokens.argmax(dim=-1), stable=True)
            out = torch.empty(n, self.embed_dim)
            for start in range(0, n, step):
                idx = order[start : start + step]
                out[idx] = self._forward(tokens[idx])
            return out

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> float32 [N, E], L2-normalised (a single str is one text)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ModelError(f"embed_texts expects strings; item {i} is {type(text).__name__}")
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        features = self.encode_text(self._tokenize(texts), batch_size=batch_size)
        return F.normalize(features, dim=-1).numpy().astype(np.float32, copy=False)


def compact_text_tower(model: CLIP, precision: str) -> CompactTextTower:
    """The model's text tower at ``precision`` ("int8" or "fp16"), built on first use and kept
    on the model."""
    precision = check_precision(precision)
    towers = model.__dict__.setdefault("_compact_text_towers", {})
    tower = towers.get(precision)
    if tower is not None:
        return cast(CompactTextTower, tower)
    with _build_lock:
        tower = towers.get(precision)
        if tower is None:
            tower = CompactTextTower(model, precision)
            # kept in the model's __dict__, not as a submodule: state_dict, .to() and parameter
            # counts stay the float model's
            towers[precision] = tower
            log.info(
                "built the %s text tower of %s (%s engine%s)",
                precision,
                model.name,
                tower.engine,
                ", 8-bit activations" if tower.full_range else "",
            )
    return cast(CompactTextTower, tower)
