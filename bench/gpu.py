"""Benchmark on a CUDA GPU (an H100/H200 when one is lent): the model, the vector index, and ingest.

1. Model: ViT-B/32 with random weights (OpenAI's architecture; cost does not depend on the
   weights' values): image throughput at batch 64/256/1024 and text throughput at batch 1024 of
   typical queries, float32 (TF32 off, then TF32 matmuls allowed) and bfloat16 autocast (what
   ``EmbeddingModel.embed_*`` uses on CUDA), with the cosine between the fp32 and bf16 features
   so a speed-up is never bought with wrong vectors; batch-1 query latency.
2. FAISS on the GPU, if the installed faiss has GPU support (``faiss.get_num_gpus() > 0``): exact
   inner-product search over 1M random 512-d vectors (and IVF4096,Flat), GPU against the same
   index on the CPU, queries per second at k=20 and recall@20 of IVF against exact. Skipped, with
   the reason, on faiss-cpu.
3. Ingest end to end: a folder of generated JPEGs (1024x768) through the real pipeline (catalog,
   parallel decode and thumbnails, embedding on the GPU, one transaction per batch) with an
   in-process worker, as tests/indexer do; images/s from submit to the job's end, and the
   same on the CPU for a small slice as the reference measured in the same run.

Writes bench/results/gpu.md and prints the figures as JSON. Without CUDA it stops at once:

    PYTHONPATH=. .venv/bin/python bench/gpu.py            # about 4-6 minutes on an H100
    PYTHONPATH=. .venv/bin/python bench/gpu.py --quick    # a smoke run, figures not meaningful
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

log = logging.getLogger("bench.gpu")

QUERIES = [
    "a red bicycle",
    "dog on a beach",
    "sunset over the mountains with pink clouds",
    "two children playing football in a park",
    "a plate of spaghetti",
    "snow",
    "a black cat sleeping on a sofa next to a window",
    "city skyline at night",
]


class NoCuda(SystemExit):
    pass


def require_cuda() -> torch.device:
    """The CUDA device, or exit 2 saying why there is none."""
    if not torch.cuda.is_available():
        why = (
            "this torch has no CUDA support (a CPU build: install a CUDA build of torch)"
            if torch.version.cuda is None
            else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r}; check "
            "nvidia-smi and the driver)"
        )
        print(f"bench/gpu.py needs a CUDA GPU: {why}. Nothing was measured.", file=sys.stderr)
        raise NoCuda(2)
    return torch.device("cuda", torch.cuda.current_device())


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _sync_time(fn: Callable[[], Any], runs: int, warmup: int = 2) -> list[float]:
    """Wall seconds of ``fn`` per run, synchronised (CUDA events would hide host overhead)."""
    for _ in range(warmup):
        fn()
    _sync()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        _sync()
        out.append(time.perf_counter() - start)
    return out


def _vit_b32(device: torch.device) -> Any:
    from model.api import build
    from model.clip import CLIPConfig, TextConfig, VisionConfig

    cfg = CLIPConfig(
        embed_dim=512,
        vision=VisionConfig(image_size=224, width=768, layers=12, patch_size=32, heads=12),
        text=TextConfig(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
        quick_gelu=True,
    )
    return build(cfg, seed=0, name="ViT-B-32 (random)").to(device).eval()


# --------------------------------------------------------------------------------------------
# 1. the model


def bench_model(device: torch.device, quick: bool) -> dict[str, Any]:
    model = _vit_b32(device)
    runs = 3 if quick else 10
    gen = torch.Generator(device=device).manual_seed(0)
    tokens = model.tokenize([QUERIES[i % len(QUERIES)] for i in range(1024)]).to(device)
    one = model.tokenize([QUERIES[0]]).to(device)
    out: dict[str, Any] = {"images": [], "texts": [], "query_ms": {}}
    modes: list[tuple[str, Callable[[], Any]]] = []

    def fp32() -> Any:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return torch.autocast(device.type, enabled=False)

    def tf32() -> Any:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.autocast(device.type, enabled=False)

    def bf16() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16)

    modes = [("fp32", fp32), ("tf32", tf32), ("bf16 autocast", bf16)]
    batches = (4,) if device.type == "cpu" else (64, 256) if quick else (64, 256, 1024)
    if device.type == "cpu":  # --dry-run-on-cpu: the script's paths, not a measurement
        tokens = tokens[:16]
    ref_img = ref_txt = None
    for name, ctx in modes:
        for batch in batches:
            pixels = torch.randn(batch, 3, 224, 224, device=device, generator=gen)
            with torch.inference_mode(), ctx():
                secs = _sync_time(lambda p=pixels: model.encode_image(p), runs)
            out["images"].append(
                {"mode": name, "batch": batch, "per_s": batch / statistics.median(secs)}
            )
            log.info("image %-14s batch %5d: %9.0f img/s", name, batch, out["images"][-1]["per_s"])
        with torch.inference_mode(), ctx():
            secs = _sync_time(lambda: model.encode_text(tokens), runs)
            out["texts"].append(
                {"mode": name, "batch": len(tokens), "per_s": len(tokens) / statistics.median(secs)}
            )
            q = _sync_time(lambda: model.encode_text(one), runs * 5)
            out["query_ms"][name] = 1000 * statistics.median(q)
            probe = torch.randn(32, 3, 224, 224, device=device, generator=gen.manual_seed(1))
            img = torch.nn.functional.normalize(model.encode_image(probe).float(), dim=-1)
            txt = torch.nn.functional.normalize(model.encode_text(tokens[:64]).float(), dim=-1)
        log.info("text  %-14s batch  1024: %9.0f texts/s, query %.2f ms", name,
                 out["texts"][-1]["per_s"], out["query_ms"][name])  # fmt: skip
        if ref_img is None:
            ref_img, ref_txt = img, txt
        else:
            out.setdefault("cosine_vs_fp32", {})[name] = {
                "image_min": float((img * ref_img).sum(-1).min()),
                "text_min": float((txt * ref_txt).sum(-1).min()),
            }
    torch.backends.cuda.matmul.allow_tf32 = False
    out["memory_peak_gib"] = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    )
    return out


# --------------------------------------------------------------------------------------------
# 2. FAISS


def bench_faiss(quick: bool) -> dict[str, Any]:
    try:
        import faiss
    except ImportError as exc:
        return {"skipped": f"faiss is not installed ({exc})"}
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus < 1:
        return {
            "skipped": f"faiss {faiss.__version__} has no GPU support here (faiss-cpu); install "
            "faiss-gpu (or faiss-gpu-cu12) to measure it"
        }
    n = 100_000 if quick else 1_000_000
    d, k = 512, 20
    rng = np.random.default_rng(0)
    base = rng.standard_normal((n, d), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[rng.choice(n, 1024, replace=False)] + 0.05 * rng.standard_normal(
        (1024, d), dtype=np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    res = faiss.StandardGpuResources()
    out: dict[str, Any] = {"vectors": n, "dim": d, "k": k, "queries": len(queries)}

    def qps(index: Any, runs: int) -> tuple[float, np.ndarray]:
        index.search(queries[:64], k)
        times, ids = [], None
        for _ in range(runs):
            start = time.perf_counter()
            _, ids = index.search(queries, k)
            times.append(time.perf_counter() - start)
        return len(queries) / statistics.median(times), ids  # type: ignore[return-value]

    flat = faiss.IndexFlatIP(d)
    flat.add(base)
    cpu_qps, exact = qps(flat, 1 if quick else 3)
    gpu_flat = faiss.index_cpu_to_gpu(res, 0, flat)
    gpu_qps, gpu_ids = qps(gpu_flat, 3 if quick else 10)
    out["flat"] = {
        "cpu_qps": cpu_qps,
        "gpu_qps": gpu_qps,
        "gpu_vs_cpu": gpu_qps / cpu_qps,
        "gpu_agrees_with_cpu": float(np.mean([len(set(a) & set(b)) / k for a, b in zip(gpu_ids, exact, strict=True)])),
    }  # fmt: skip
    nlist = 1024 if quick else 4096
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    start = time.perf_counter()
    gpu_ivf = faiss.index_cpu_to_gpu(res, 0, ivf)
    gpu_ivf.train(base[: min(n, 50 * nlist)])
    gpu_ivf.add(base)
    out["ivf"] = {"nlist": nlist, "gpu_build_s": time.perf_counter() - start}
    for nprobe in (16, 64):
        gpu_ivf.nprobe = nprobe
        q, ids = qps(gpu_ivf, 3 if quick else 10)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact, strict=True)]))
        out["ivf"][f"nprobe{nprobe}"] = {"gpu_qps": q, "recall_at_20": recall}
    log.info("faiss: %s", json.dumps(out))
    return out


# --------------------------------------------------------------------------------------------
# 3. ingest end to end


def _make_images(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:768, 0:1024] / 768
    for i in range(count):
        a, b, c = rng.uniform(-3, 3, 3)
        base = 0.5 + 0.4 * np.sin(a * x + b * y + c)
        arr = np.stack([base, np.roll(base, 37 * (i % 7), 1), 1 - base], -1) * 255
        arr += rng.integers(0, 12, arr.shape)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(
            folder / f"img_{i:05d}.jpg", quality=90
        )


def _ingest_once(
    folder: Path, work: Path, model_dir: Path, device: str, batch: int
) -> dict[str, Any]:
    from indexer.library import Library, LibraryConfig
    from indexer.tasks import run_embed_batch, run_ingest
    from indexer.worker import WorkerConfig, WorkerContext

    data = work / f"data-{device}"
    lib = Library(LibraryConfig(data_dir=data, model_spec=str(model_dir), device=device))
    ctx = WorkerContext(
        WorkerConfig(
            data_dir=data,
            model_spec=str(model_dir),
            database_url=lib.database_url,
            device=device,
            batch_size=batch,
            decode_workers=max(1, (os.cpu_count() or 2) - 1),
        )
    )
    try:
        ctx.model()  # loaded (and moved to the device) before the clock starts
        start = time.perf_counter()
        job = lib.submit_ingest(str(folder))
        for part in run_ingest(ctx, None, job.id):
            run_embed_batch(ctx, job.id, part)
        _sync()
        secs = time.perf_counter() - start
        info = lib.get_job(job.id)
        return {
            "device": device,
            "images": info.done,
            "failed": info.failed,
            "seconds": secs,
            "images_per_s": info.done / secs,
            "batch_size": batch,
            "decode_workers": ctx.config.decode_workers,
        }
    finally:
        ctx.dispose()
        lib.close()


def bench_ingest(quick: bool, device: str = "cuda") -> dict[str, Any]:
    from model.checkpoints import save_pretrained

    n_gpu, n_cpu = (16, 8) if device == "cpu" else (256, 32) if quick else (4096, 128)
    with tempfile.TemporaryDirectory(prefix="clipsearch-gpu-bench-") as tmp:
        work = Path(tmp)
        model_dir = save_pretrained(_vit_b32(torch.device("cpu")).cpu(), work / "vit-b32-random")
        log.info("writing %d test images", n_gpu)
        _make_images(work / "photos", n_gpu)
        (work / "photos-cpu").mkdir()
        for p in sorted((work / "photos").iterdir())[:n_cpu]:
            os.link(p, work / "photos-cpu" / p.name)
        gpu = _ingest_once(work / "photos", work, model_dir, device, 256)
        log.info("ingest on the GPU: %s", json.dumps(gpu))
        cpu = _ingest_once(work / "photos-cpu", work, model_dir, "cpu", 32)
        log.info("ingest on the CPU (reference): %s", json.dumps(cpu))
    return {
        "gpu": gpu,
        "cpu_reference": cpu,
        "gpu_vs_cpu": gpu["images_per_s"] / cpu["images_per_s"],
    }


# --------------------------------------------------------------------------------------------
# report


def write_report(path: Path, results: dict[str, Any]) -> None:
    m, f, g = results["model"], results["faiss"], results["ingest"]
    env = results["environment"]
    lines = [
        "# gpu: the model, FAISS and ingest on a CUDA GPU",
        "",
        f"- Run: {env['when']}, `bench/gpu.py`{' --quick (smoke run)' if env['quick'] else ''}, "
        f"{env['seconds']:.0f} s",
        f"- Machine: {env['gpu']} ({env['gpu_memory_gib']:.0f} GiB), {env['cpus']} CPU cores, "
        f"{env['platform']}",
        f"- Versions: Python {env['python']}, torch {env['torch']} (CUDA {env['cuda']}), "
        f"faiss {env['faiss']}",
        "- Model: ViT-B/32, random weights (cost does not depend on them), inference mode",
        "",
        "| images | batch | img/s |",
        "|---|---:|---:|",
        *[f"| {r['mode']} | {r['batch']} | {r['per_s']:.0f} |" for r in m["images"]],
        "",
        "| texts | batch 1024 texts/s | one query ms |",
        "|---|---:|---:|",
        *[
            f"| {r['mode']} | {r['per_s']:.0f} | {m['query_ms'][r['mode']]:.2f} |"
            for r in m["texts"]
        ],
        "",
        f"Features against fp32 (min cosine): {json.dumps(m.get('cosine_vs_fp32', {}))}; peak "
        f"GPU memory {m['memory_peak_gib']:.1f} GiB.",
        "",
        "## FAISS",
        "",
        f.get("skipped", "") or f"```json\n{json.dumps(f, indent=2)}\n```",
        "",
        "## Ingest end to end",
        "",
        f"GPU: {g['gpu']['images']} JPEGs (1024x768) in {g['gpu']['seconds']:.1f} s = "
        f"{g['gpu']['images_per_s']:.0f} images/s (batch {g['gpu']['batch_size']}, "
        f"{g['gpu']['decode_workers']} decode processes); CPU reference in the same run: "
        f"{g['cpu_reference']['images_per_s']:.1f} images/s on {g['cpu_reference']['images']} "
        f"images; ratio {g['gpu_vs_cpu']:.1f}x.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--skip", action="append", default=[], choices=("model", "faiss", "ingest"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu.md")
    parser.add_argument(
        "--dry-run-on-cpu",
        action="store_true",
        help="run every step on the CPU at tiny sizes to check the script itself (no report)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.dry_run_on_cpu:
        device = torch.device("cpu")
        print(json.dumps({
            "model": bench_model(device, True),
            "faiss": bench_faiss(True),
            "ingest": bench_ingest(True, "cpu"),
        }, indent=2, default=str))  # fmt: skip
        return 0
    try:
        device = require_cuda()
    except NoCuda as exc:
        return int(exc.code or 2)
    began = time.perf_counter()
    props = torch.cuda.get_device_properties(device)
    try:
        import faiss

        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = "not installed"
    results: dict[str, Any] = {
        "model": bench_model(device, args.quick) if "model" not in args.skip else None,
        "_free": torch.cuda.empty_cache(),
        "faiss": bench_faiss(args.quick) if "faiss" not in args.skip else {"skipped": "--skip"},
        "ingest": bench_ingest(args.quick) if "ingest" not in args.skip else None,
    }
    results.pop("_free")
    results["environment"] = {
        "when": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        "quick": args.quick,
        "seconds": time.perf_counter() - began,
        "gpu": props.name,
        "gpu_memory_gib": props.total_memory / 2**30,
        "cpus": os.cpu_count(),
        "platform": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "faiss": faiss_version,
    }
    print(json.dumps(results, indent=2, default=str))
    if results["model"] is not None and results["ingest"] is not None:
        write_report(args.out, results)
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
