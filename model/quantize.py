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

Texts are encoded together (the service's TextEncoder hands over every query waiting), and a
text's vector does not depend on what else is in its pass:

- The texts' tokens are packed one text after another, without padding; the row-wise steps
  (LayerNorms, Linears, GELU) run over all rows at once, and attention runs per group of texts
  of one length, each text over its own tokens exactly as when it is alone (a fused attention
  kernel sums in an order that depends on the padded length, and that noise can flip an int8
  rounding: cosine 0.9996 to the text alone, measured, before the packing).
- int8 quantizes each token row on its own grid, not one grid per call: fbgemm's dynamic kernel
  picks one scale for its whole input (from its min and max), so each row is divided by its
  largest magnitude first (a GELU's output, mostly of one sign: its own [min, max] mapped onto
  [0, 1]), the int8 kernel quantizes that on one fixed grid ([-1, 1] or [0, 1]; fbgemm's
  fixed-grid Linear, or the dynamic one with an anchor row that fixes its input range where
  the engine lacks it), and the rows' scales are put back on the output. The int8 products and
  their int32 sums are exact, so the per-row grid makes the products independent of the other
  rows; per-token grids are also closer to the exact path than one grid per text was (no
  token's outlier coarsens the others' grid).

bench/query_batch.py measures it: vectors alone vs in passes of 16 and 32 (cosine >= 0.9999998
on 500 queries), the drift against the exact path, and the time per text alone and together.
"""

from __future__ import annotations

import dataclasses
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
    """y = x W^T + b with W int8 (one scale per output row) and each row of x quantized to 8
    (or 7) bits on its own grid (module docstring), int32 accumulation (fbgemm), float output.

    ``one_signed``: the rows are mostly of one sign (a GELU's output, bounded below near -0.17):
    each row's own [min, max] is mapped onto [0, 1] instead of its largest magnitude onto
    [-1, 1], so the grid is not half spent on values that do not occur."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        full_range: bool,
        one_signed: bool = False,
    ) -> None:
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
            # the bias is added after the rows' scales are put back (forward)
            self._packed = torch.ops.quantized.linear_prepack(qweight, None)
        bias_f = torch.zeros(w.shape[0]) if bias is None else bias.detach().float().cpu()
        self._bias = bias_f
        self.one_signed = one_signed
        # the weight's row sums as the kernel sees them: y = span * W u + lo * sum(W) for
        # u = (x - lo) / span
        self._weight_sums = qweight.dequantize().float().sum(dim=1) if one_signed else None
        self.reduce_range = not full_range
        # the kernel's input grid, fixed: [-1, 1] (or [0, 1] one-signed) on 8 bits (7 reduced)
        levels = 127 if self.reduce_range else 255
        low = 0.0 if one_signed else -1.0
        self._x_scale = (1.0 - low) / levels
        # 0 maps to level 127.5, rounded half to even as the dynamic kernel does: 128 (64)
        self._x_zero = 0 if one_signed else (levels + 1) // 2
        self._fused = _has_fixed_grid_kernel(torch.backends.quantized.engine)
        # without the fixed-grid kernel: an anchor row fixes the dynamic kernel's input range
        self._anchor = torch.zeros(0, w.shape[1]) if self._fused else torch.zeros(1, w.shape[1])
        if not self._fused:
            self._anchor[0, 0] = 1.0
            if not one_signed and w.shape[1] > 1:
                self._anchor[0, 1] = -1.0

    def _linear(self, unit: torch.Tensor) -> torch.Tensor:
        if self._fused:
            return cast(
                torch.Tensor,
                torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
                    unit, self._x_scale, self._x_zero, self._packed
                ),
            )
        y = torch.ops.quantized.linear_dynamic(
            torch.cat((unit, self._anchor)), self._packed, reduce_range=self.reduce_range
        )
        return cast(torch.Tensor, y[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        if self.one_signed:
            lo = rows.amin(dim=1, keepdim=True)  # (torch.aminmax: ten times slower here)
            span = (rows.amax(dim=1, keepdim=True) - lo).clamp_min_(1e-30)  # [R, 1]
            unit = torch.sub(rows, lo).div_(span)  # within [0, 1]
        else:
            span = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-30)  # [R, 1]
            unit = torch.div(rows, span)  # within [-1, 1]
        y = torch.addcmul(self._bias, self._linear(unit), span)
        if self._weight_sums is not None:
            y.addcmul_(lo, self._weight_sums)
        return y.view(*shape[:-1], y.shape[-1])


@functools.cache
def _has_fixed_grid_kernel(engine: str) -> bool:
    """Whether the quantized ``engine`` has the int8 Linear that takes its input grid from the
    caller (fbgemm/x86: one call, no anchor row to concatenate and slice off; the same integer
    products as the dynamic kernel on the anchored input, bit for bit). Probed once per engine
    on a 1x1 weight."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            weight = torch.quantize_per_channel(
                torch.ones(1, 1),
                torch.ones(1, dtype=torch.double),
                torch.zeros(1, dtype=torch.long),
                0,
                torch.qint8,
            )
            packed = torch.ops.quantized.linear_prepack(weight, None)
        torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            torch.zeros(1, 1), 1.0 / 255, 0, packed
        )
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


class _Fp16Linear(nn.Module):
    """y = x W^T + b with W stored in float16 (fbgemm), x and y float32 (no activation grid:
    ``one_signed`` is accepted and means nothing here)."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, one_signed: bool = False
    ) -> None:
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
        # the MLP's hidden rows are a GELU's output: mostly of one sign
        self.c_proj = linear(mlp.c_proj.weight, mlp.c_proj.bias, one_signed=True)

    def forward(self, x: torch.Tensor, runs: Sequence[_Run], last: bool = False) -> torch.Tensor:
        """Causal block over packed rows: ``x`` [T, D] holds the texts' tokens one text after
        another (no padding), ``runs`` the texts grouped by length. Row-wise steps (LayerNorms,
        Linears, GELU) run over all rows at once; attention runs per run of equal-length texts,
        each text on its own tokens exactly as if it were alone. ``last``: only the end tokens'
        outputs, [N, D] in the runs' order (what the last block of the tower needs)."""
        width = x.shape[-1]
        head_dim = width // self.heads
        qkv = self.qkv(self.ln_1(x))  # [T, 3D]
        outs = []
        for run in runs:
            part = qkv[run.start : run.stop].view(run.count, run.length, 3, self.heads, head_dim)
            q, k, v = part.permute(2, 0, 3, 1, 4).unbind(0)  # each [n, H, l, D/H]
            if last:  # the end token sees every token of its text
                att = F.scaled_dot_product_attention(q[:, :, -1:], k, v)  # [n, H, 1, D/H]
                outs.append(att.reshape(run.count, width))
            else:
                att = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [n, H, l, D/H]
                outs.append(att.transpose(1, 2).reshape(run.count * run.length, width))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        if last:
            ends = torch.cat([torch.arange(r.start, r.stop, r.length) + r.length - 1 for r in runs])
            y = x[ends] + self.out_proj(out)  # [N, D]
        else:
            y = x + self.out_proj(out)  # [T, D]
        return y + self.c_proj(self.act(self.c_fc(self.ln_2(y))))


@dataclasses.dataclass(frozen=True)
class _Run:
    """``count`` texts of ``length`` tokens each, packed at rows ``start`` to ``stop``."""

    start: int
    count: int
    length: int

    @property
    def stop(self) -> int:
        return self.start + self.count * self.length


def _runs(lengths: Sequence[int]) -> list[_Run]:
    """Runs of equal lengths in ``lengths`` (sorted), packed one after another."""
    runs: list[_Run] = []
    start = 0
    for length in lengths:
        if runs and runs[-1].length == length:
            last = runs[-1]
            runs[-1] = _Run(last.start, last.count + 1, length)
        else:
            runs.append(_Run(start, 1, length))
        start += length
    return runs


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
        """[N, L] token ids -> [N, E]. Each text's tokens up to its end token are packed one
        text after another (shortest first), so no padding is computed and every text's
        computation is the one it gets alone (module docstring)."""
        end = tokens.argmax(dim=-1)  # [N]: each text's end token
        order = torch.argsort(end, stable=True)
        lengths = [int(e) + 1 for e in end[order]]
        ids = torch.cat([tokens[i, :n] for i, n in zip(order.tolist(), lengths, strict=True)])
        positions = torch.cat([torch.arange(n) for n in lengths])
        x = self.token_embedding(ids.to(torch.long)).float()
        x = x + self.positional_embedding.float()[positions]  # [T, D]
        runs = _runs(lengths)
        blocks = list(self.blocks)
        for block in blocks[:-1]:
            x = block(x, runs)  # [T, D]
        x = blocks[-1](x, runs, last=True)  # [N, D]: the end tokens' outputs, shortest first
        x = self.ln_final(x) @ self.text_projection.float()  # [N, E]
        out = torch.empty_like(x)
        out[order] = x
        return out

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
        with torch.inference_mode():
            if n <= batch_size:
                return self._forward(tokens)
            out = torch.empty(n, self.embed_dim)
            for start in range(0, n, batch_size):
                out[start : start + batch_size] = self._forward(tokens[start : start + batch_size])
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
