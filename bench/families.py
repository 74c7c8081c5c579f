"""Benchmark: what each model family costs on the CPU, at its real size (``bench/model.py
--families`` runs this).

No real weights can be downloaded here, and cost does not depend on the weights' values: each
family's released architecture is built at full size with random weights (SigLIP ViT-B/16-224,
SigLIP 2 ViT-B/16-256 with its 256k vocabulary, MobileCLIP2-S2 with its FastViT MCi2 tower folded
for inference, XLM-RoBERTa base CLIP), beside OpenAI's ViT-B/32 as the reference, and measured in
the same process, interleaved round by round so other load on the machine hits all alike:

- parameters of each tower; GMACs per image and per short query (torch's FlopCounterMode / 2:
  multiply-accumulates, the unit open_clip's model profile calls "GFLOPs");
- image throughput (batch 16, float32) and one short query's latency (batch 1), each with the
  ratio to ViT-B/32 in the same round.

Queries are 5 tokens (start, 3 words, end) in each family's own layout: CLIP stops at the end
token; SigLIP's text tower (no causal mask, pooled at the last position) always runs its 64
positions; XLM-R runs 77 positions with the padding masked.

    .venv/bin/python -m bench.families     # writes bench/results/families.md
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

import torch  # noqa: E402

log = logging.getLogger("bench.families")


@dataclass
class Family:
    label: str
    registry: str  # the registry name of the released checkpoint this mirrors
    build: Callable[[], Any]
    query: Callable[[Any], torch.Tensor]  # a batch-1 short query in the family's token layout
    model: Any = None
    image_s: list[float] = field(default_factory=list)
    text_s: list[float] = field(default_factory=list)


def _clip_b32() -> Any:
    from clipsearch.model.api import build
    from clipsearch.model.clip import CLIPConfig, TextConfig, VisionConfig

    cfg = CLIPConfig(
        embed_dim=512,
        vision=VisionConfig(image_size=224, width=768, layers=12, patch_size=32, heads=12),
        text=TextConfig(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
        quick_gelu=True,
    )
    return build(cfg, seed=0, name="ViT-B-32 (random)")


def _siglip(size: int, vocab: int, act: str) -> Callable[[], Any]:
    def make() -> Any:
        from clipsearch.model.siglip import SigLIP, SigLIPConfig, SigLIPVisionConfig
        from clipsearch.model.towers import TextTowerConfig

        cfg = SigLIPConfig(
            embed_dim=768,
            vision=SigLIPVisionConfig(size, 16, 768, 12, 12, 3072, act=act),
            text=TextTowerConfig(64, vocab, 768, 12, 12, 3072, False, "last", True, 1e-6, act),
        )
        return SigLIP(cfg)

    return make


def _mobileclip2_s2() -> Any:
    from clipsearch.model.mobileclip import FastViTConfig, MobileCLIP, MobileCLIPConfig
    from clipsearch.model.towers import TextTowerConfig

    cfg = MobileCLIPConfig(
        embed_dim=512,
        vision=FastViTConfig(
            image_size=256,
            layers=(4, 12, 24, 4),
            embed_dims=(80, 160, 320, 640),
            mlp_ratio=3.0,
        ),
        text=TextTowerConfig(77, 49408, 512, 8, 12, 2048, False, "argmax", False, 1e-5, "gelu"),
    )
    model = MobileCLIP(cfg)
    model.eval()
    return model.fold()


def _xlmr_clip() -> Any:
    from clipsearch.model.clip import VisionConfig
    from clipsearch.model.hf_text import HFTextCLIP, HFTextCLIPConfig

    hf = {
        "model_type": "xlm-roberta", "vocab_size": 250002, "hidden_size": 768,
        "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
        "max_position_embeddings": 514, "type_vocab_size": 1, "hidden_act": "gelu",
        "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
    }  # fmt: skip
    cfg = HFTextCLIPConfig(
        embed_dim=512,
        vision=VisionConfig(image_size=224, width=768, layers=12, patch_size=32, heads=12),
        hf_config=hf,
    )
    return HFTextCLIP(cfg)


def _clip_query(_model: Any) -> torch.Tensor:
    tokens = torch.zeros(1, 77, dtype=torch.long)
    tokens[0, :5] = torch.tensor([49406, 320, 736, 11868, 49407])  # <sot> a red bicycle <eot>
    return tokens


def _siglip_query(model: Any) -> torch.Tensor:
    tokens = torch.ones(1, 64, dtype=torch.long)  # padded with </s> (T5) as open_clip does
    tokens[0, :4] = torch.tensor([3, 17, 2143, 1])
    return tokens.clamp(max=model.config.text.vocab_size - 1)


def _xlmr_query(_model: Any) -> torch.Tensor:
    tokens = torch.ones(1, 77, dtype=torch.long)  # <pad> = 1
    tokens[0, :5] = torch.tensor([0, 10, 4842, 193034, 2])  # <s> ... </s>
    return tokens


FAMILIES = [
    Family("CLIP ViT-B/32 (reference)", "ViT-B-32", _clip_b32, _clip_query),
    Family("SigLIP ViT-B/16-224", "ViT-B-16-SigLIP", _siglip(224, 32000, "gelu"), _siglip_query),
    Family(
        "SigLIP 2 ViT-B/16-256",
        "ViT-B-16-SigLIP2-256",
        _siglip(256, 256000, "gelu_tanh"),
        _siglip_query,
    ),
    Family("MobileCLIP2-S2 (folded)", "MobileCLIP2-S2", _mobileclip2_s2, _clip_query),
    Family("XLM-R base CLIP ViT-B/32", "xlm-roberta-base-ViT-B-32", _xlmr_clip, _xlmr_query),
]


def _params(module: Any) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _gmacs(fn: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:  # (its module hooks do not work under inference_mode)
        fn()
    return counter.get_total_flops() / 2 / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - start


def run(rounds: int, batch: int, threads: int, out: Path) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    began = time.perf_counter()
    for fam in FAMILIES:
        log.info("building %s", fam.label)
        fam.model = fam.build().eval()
    rows: dict[str, dict[str, float]] = {}
    pixels: dict[int, torch.Tensor] = {}
    for fam in FAMILIES:
        m = fam.model
        r = m.image_size
        pixels.setdefault(
            r, torch.randn(batch, 3, r, r, generator=torch.Generator().manual_seed(0))
        )
        q = fam.query(m)
        one = pixels[r][:1]
        rows[fam.label] = {
            "image_params": _params(m.visual),
            "text_params": _params(m) - _params(m.visual),
            "image_gmacs": _gmacs(lambda m=m, one=one: m.encode_image(one)),
            "text_gmacs": _gmacs(lambda m=m, q=q: m.encode_text(q)),
        }
        _timed(lambda m=m, r=r: m.encode_image(pixels[r][:4]))  # warm up kernels and threads
        _timed(lambda m=m, q=q: m.encode_text(q))
    for round_ in range(rounds):
        for fam in FAMILIES:  # interleaved: every family sees the same load in a round
            m, q, r = fam.model, fam.query(fam.model), fam.model.image_size
            fam.image_s.append(_timed(lambda m=m, r=r: m.encode_image(pixels[r])))
            fam.text_s.append(
                statistics.median(_timed(lambda m=m, q=q: m.encode_text(q)) for _ in range(5))
            )
        log.info("round %d of %d done", round_ + 1, rounds)
    ref = FAMILIES[0]
    for fam in FAMILIES:
        img_ratio = [a / b for a, b in zip(ref.image_s, fam.image_s, strict=True)]
        txt_ratio = [a / b for a, b in zip(ref.text_s, fam.text_s, strict=True)]
        rows[fam.label].update(
            image_per_s=batch / statistics.median(fam.image_s),
            text_ms=1000 * statistics.median(fam.text_s),
            image_vs_ref=statistics.median(img_ratio),
            text_vs_ref=statistics.median(txt_ratio),
        )
    _write(out, rows, rounds, batch, threads, time.perf_counter() - began)


def _write(
    out: Path, rows: dict[str, dict[str, float]], rounds: int, batch: int, threads: int, secs: float
) -> None:
    import numpy

    from bench.model import _cpu_name

    try:
        import transformers

        tf = f", transformers {transformers.__version__}"
    except ImportError:  # pragma: no cover
        tf = ""
    lines = [
        "# families: CPU cost of each model family at its real size",
        "",
        f"- Run: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}, `bench/families.py` "
        f"(`bench/model.py --families`), {secs:.0f} s",
        f"- Machine: {_cpu_name()}, {threads} threads (torch.set_num_threads), {platform.system()} "
        f"{platform.release()}; shared with other agents' work, so absolute numbers are noisy: "
        "the ratios to ViT-B/32 come from the same rounds (families interleaved) and are the "
        "figures to compare",
        f"- Versions: Python {platform.python_version()}, torch {torch.__version__}, numpy "
        f"{numpy.__version__}{tf}",
        "- Weights: random (no real weights can be downloaded here); each family's released "
        "architecture at full size, float32, `torch.inference_mode()`, no GPU. Cost does not "
        "depend on the weights' values. Quality figures are the published ones (README)",
        f"- Image: batch {batch}, median of {rounds} rounds; query: one 5-token query, batch 1, "
        f"median of 5 per round, median over rounds. GMACs = torch FlopCounterMode flops / 2 "
        "(open_clip's profile table calls these GFLOPs)",
        "",
        "| family (mirrors) | image tower M params | text tower M params | image GMACs | "
        "query GMACs | image/s | vs ViT-B/32 | query ms | vs ViT-B/32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fam in FAMILIES:
        r = rows[fam.label]
        lines.append(
            f"| {fam.label} (`{fam.registry}`) | {r['image_params']:.1f} | {r['text_params']:.1f} "
            f"| {r['image_gmacs']:.2f} | {r['text_gmacs']:.3f} | {r['image_per_s']:.2f} "
            f"| {r['image_vs_ref']:.2f}x | {r['text_ms']:.1f} | {r['text_vs_ref']:.2f}x |"
        )
    lines += [
        "",
        "A ratio below 1 is slower than ViT-B/32 (throughput ratio for images, latency ratio "
        "ViT-B/32 / family for queries). SigLIP's and XLM-R's queries cost their whole context "
        "(64 / 77 positions) where CLIP stops at the end token; SigLIP 2's and XLM-R's text "
        "towers are mostly their 256k / 250k-row embedding tables (parameters, not compute).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    log.info("wrote %s", out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round: a smoke test")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "families.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(1 if args.quick else args.rounds, 2 if args.quick else args.batch, args.threads, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
