"""Benchmark: int8 query texts encoded together (issue 25) -> bench/results/query_batch.md.

The int8 text tower (model/quantize.py) quantizes each token row on its own grid, so the texts
waiting at the service's TextEncoder are encoded in one pass and a text's vector does not depend
on its batch. The reference is the int8 tower of ``--baseline-rev`` (the commit before the
change: one scale per call, one text per pass), its model/quantize.py read from git and run in
this process on the same weights.

1. A lone query ("a red bicycle against a brick wall"): p50 wall and CPU per encode, the
   baseline's and this tree's calls interleaved so the machine's other load hits both alike.
2. Throughput: 64 unique four-word queries, ms per text, the baseline one per pass, this tree
   in passes of 1, 4, 8, 16 and 32 texts.
3. Batch independence: 500 varied queries, each vector alone against the same text inside
   shuffled passes of 16 and of 32: minimum cosine, largest difference, how many identical.
4. Drift against the exact float path, both int8 towers, on the same 500 queries.

Weights: ViT-B/32 (OpenAI's architecture) with random weights (bench.service.vit_b32_config;
no trained ViT-B/32 can be downloaded on this machine), one torch thread.

    .venv/bin/python -m bench.query_batch [--baseline-rev 69e6278] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "query_batch.md"
QUERY = "a red bicycle against a brick wall"
WORDS = [
    "red",
    "blue",
    "green",
    "yellow",
    "dog",
    "cat",
    "beach",
    "mountain",
    "city",
    "night",
    "snow",
    "car",
    "flower",
    "person",
    "boat",
    "tree",
    "house",
    "street",
    "sunset",
    "river",
    "bridge",
    "lamp",
    "chair",
    "table",
    "cup",
    "old",
    "young",
    "small",
    "large",
    "wooden",
    "glass",
    "stone",
    "rainy",
    "sunny",
    "foggy",
    "kitchen",
    "garden",
    "window",
    "door",
    "bicycle",
    "train",
    "bird",
    "horse",
    "market",
    "bread",
]


def baseline_module(rev: str) -> ModuleType:
    """model/quantize.py as it was at ``rev``, imported under another name."""
    src = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:model/quantize.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "quantize_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("quantize_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def queries(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        text = " ".join(rng.sample(WORDS, rng.randint(1, 7)))
        if rng.random() < 0.3:
            text = f"a photo of {text}"
        if text not in out:
            out.append(text)
    return out


def p50_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default="69e6278")
    parser.add_argument("--quick", action="store_true", help="few runs (a smoke test)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    sys.path.insert(0, str(REPO))
    from bench.service import vit_b32_config
    from clipsearch.model import build
    from clipsearch.model.quantize import CompactTextTower, int8_engine

    if int8_engine() is None:
        print("no quantized engine in this torch build", file=sys.stderr)
        return 2
    old_q = baseline_module(args.baseline_rev)
    model: Any = build(vit_b32_config(), seed=0, name="ViT-B-32-random")
    new = CompactTextTower(model, "int8")
    old = old_q.CompactTextTower(model, "int8")
    reps = 20 if args.quick else 200
    n_drift = 64 if args.quick else 500

    # 1. a lone query
    tokens = model.tokenize([QUERY])
    wall: dict[str, list[float]] = {"baseline": [], "this tree": []}
    cpu: dict[str, list[float]] = {"baseline": [], "this tree": []}
    with torch.inference_mode():
        for tower in (old, new):
            tower.encode_text(tokens)
        for _ in range(reps):
            for name, tower in (("baseline", old), ("this tree", new)):
                w0, c0 = time.perf_counter(), time.process_time()
                tower.encode_text(tokens)
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)

    # 2. throughput, 64 unique queries
    texts = queries(64, seed=1)
    rows: list[tuple[str, int, float]] = []

    def per_text(embed: Any, size: int) -> float:
        best = []
        for _ in range(1 if args.quick else 3):
            t0 = time.perf_counter()
            for i in range(0, len(texts), size):
                embed(texts[i : i + size])
            best.append((time.perf_counter() - t0) / len(texts))
        return min(best) * 1e3

    rows.append(("baseline (one text per pass)", 1, per_text(old.embed_texts, 1)))
    for size in (1, 4, 8, 16, 32):
        rows.append(("this tree", size, per_text(new.embed_texts, size)))

    # 3. batch independence, 4. drift
    many = queries(n_drift, seed=2)
    alone = np.concatenate([new.embed_texts([t]) for t in many])
    independence = []
    for size in (16, 32):
        order = list(range(len(many)))
        random.Random(size).shuffle(order)
        batched = np.empty_like(alone)
        for i in range(0, len(order), size):
            idx = order[i : i + size]
            batched[idx] = new.embed_texts([many[j] for j in idx])
        cos = (alone * batched).sum(axis=1)
        same = int(np.all(alone == batched, axis=1).sum())
        independence.append((size, float(cos.min()), float(np.abs(alone - batched).max()), same))
    exact = model.embed_texts(many)
    old_vecs = np.concatenate([old.embed_texts([t]) for t in many])
    drift = {
        "baseline": (exact * old_vecs).sum(axis=1),
        "this tree": (exact * alone).sum(axis=1),
    }
    between = (old_vecs * alone).sum(axis=1)
    load_after = os.getloadavg()[0]

    lines = [
        "# Query texts encoded together: int8 with a grid per token (bench/query_batch.py)",
        "",
        f"`.venv/bin/python -m bench.query_batch --baseline-rev {args.baseline_rev}"
        f"{' --quick' if args.quick else ''}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"load average {load_before:.1f} before, {load_after:.1f} after, on 2 logical CPUs)",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
        f"CPUs; Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}, quantized engine {new.engine}"
        f"{' (8-bit activations)' if new.full_range else ' (7-bit activations: no VNNI)'}",
        "- Weights: ViT-B/32 (OpenAI's architecture), random, one torch thread. `baseline`: the "
        f"int8 tower of {args.baseline_rev} (one activation scale per call, so one text per "
        "pass), its model/quantize.py from git, same weights, same process.",
        "",
        f"## A lone query, {reps} calls each, interleaved",
        "",
        "| tower | p50 wall ms | p50 CPU ms |",
        "|---|---:|---:|",
    ]
    for name in ("baseline", "this tree"):
        lines.append(f"| {name} | {p50_ms(wall[name]):.2f} | {p50_ms(cpu[name]):.2f} |")
    lines += [
        "",
        "## 64 unique queries (1 to 7 words), ms per text (best of 3)",
        "",
        "| tower | texts per pass | ms per text |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {size} | {ms:.2f} |" for name, size, ms in rows]
    lines += [
        "",
        f"## Batch independence, {len(many)} queries: alone vs in shuffled passes",
        "",
        "| texts per pass | min cosine to alone | largest difference | identical vectors |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {size} | {c:.7f} | {d:.2e} | {same} of {len(many)} |"
        for size, c, d, same in independence
    ]
    lines += [
        "",
        f"## Drift against the exact float path, {len(many)} queries",
        "",
        "| tower | min cosine | mean cosine |",
        "|---|---:|---:|",
    ]
    for name, cos in drift.items():
        lines.append(f"| {name} | {cos.min():.5f} | {cos.mean():.5f} |")
    lines += [
        "",
        f"The two int8 towers' vectors of the same text: min cosine {between.min():.5f}, mean "
        f"{between.mean():.5f} (a change of grid, not of batch).",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
