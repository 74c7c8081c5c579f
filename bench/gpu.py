"""GPU benchmark: one command, one table, under 8 minutes on one H100/H200.

    .venv/bin/pip install torch==<cuda build> torchvision faiss-gpu-cu12   # on the GPU host
    .venv/bin/python -m bench.gpu                      # writes bench/results/gpu.md

Sections (each prints rows as it finishes, so a failure later still leaves the earlier figures):

1. image embedding, model only: ViT-B/32 and ViT-L/14 (OpenAI's architectures, random weights:
   speed does not depend on the values), bf16 autocast, img/s at the best of a batch sweep;
2. image embedding end to end from JPEG files on disk, 640x480 and 12 MP: the GPU decode path
   (file read on host threads, nvJPEG decode, resize/crop/normalise on the device:
   model/device_preprocess.py) against the CPU decode pool ingestion uses today
   (indexer/decode_pool.py, every core), both feeding the same bf16 model; plus the cosine between
   the two paths' embeddings of the same files; then the 12-MP folder through the real ingestion
   pipeline (catalog, decode pool with thumbnails, embedding, commits) with
   ``CLIPSEARCH_DEVICE_DECODE`` off and on;
3. text queries: one query at a time (what the API does per search) and batches of 256;
4. FAISS on the GPU at 1M CLIP-like 512-d vectors (bench/synthetic_vectors.py): k-means training
   of the IVF coarse quantizer and IVF search throughput (needs faiss built with GPU support);
5. fine-tuning ViT-B/32: contrastive pairs/s with AdamW under bf16 autocast, and the peak memory.

The model-only rows also give the minimum cosine of bf16 features against fp32 on the GPU.

Goals (issue 15, H100/H200): ViT-B/32 >= 20,000 img/s model only, >= 5,000 img/s end to end from
640x480 JPEGs, >= 1,000 img/s from 12-MP JPEGs.

``--quick --device cpu`` runs every section at toy size on the CPU (a tiny model, a few small
files, 20k vectors) so the script is exercised by the test suite and does not rot; its numbers
mean nothing.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

GOALS = {
    ("image, model only", "ViT-B/32"): 20_000.0,
    ("image end to end, 640x480 JPEG, GPU decode", "ViT-B/32"): 5_000.0,
    ("image end to end, 12 MP JPEG, GPU decode", "ViT-B/32"): 1_000.0,
}


@dataclass
class Row:
    section: str
    model: str
    value: float
    unit: str
    note: str = ""


def vit_b_32() -> Any:
    from clipsearch.model.clip import CLIPConfig

    return CLIPConfig()  # the defaults are OpenAI's ViT-B/32


def vit_l_14() -> Any:
    from clipsearch.model.clip import CLIPConfig, TextConfig, VisionConfig

    return CLIPConfig(
        embed_dim=768,
        vision=VisionConfig(image_size=224, width=1024, layers=24, patch_size=14, heads=16),
        text=TextConfig(width=768, heads=12, layers=12),
    )


def tiny() -> Any:
    from clipsearch.model.testing import tiny_config

    return tiny_config(image_size=64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_model(config: Any, device: torch.device) -> Any:
    from clipsearch.model.api import build

    return build(config, seed=0).to(device)


# -- 1. model only ------------------------------------------------------------------------------


def model_only(
    name: str, config: Any, device: torch.device, batches: list[int], bf16: bool, repeat: int
) -> Row:
    model = build_model(config, device)
    size = int(config.vision.image_size)
    best, best_b = 0.0, 0
    for b in batches:
        try:
            x = torch.randn(b, 3, size, size, device=device)

            def run(x: torch.Tensor = x) -> None:
                with torch.inference_mode(), _autocast(device, bf16):
                    model.encode_image(x)

            rate = b / timed(run, device, repeat)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        if rate > best:
            best, best_b = rate, b
    note = f"batch {best_b}, {'bf16' if bf16 else 'fp32'}"
    if bf16:  # a speed-up is never bought with wrong vectors: bf16 features against fp32
        x = torch.randn(64, 3, size, size, device=device)
        with torch.inference_mode():
            exact = F.normalize(model.encode_image(x).float(), dim=-1)
            with _autocast(device, True):
                fast = F.normalize(model.encode_image(x).float(), dim=-1)
        note += f", min cosine bf16 vs fp32 {float((exact * fast).sum(-1).min()):.5f}"
    return Row("image, model only", name, best, "img/s", note)


# -- 2. end to end from files --------------------------------------------------------------------


def make_jpegs(folder: Path, n: int, w: int, h: int) -> list[Path]:
    """``n`` photo-like JPEGs of w x h (smooth gradients and noise, quality 90), written once."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(w * 7 + h)
    base_n = min(n, 16)  # a few distinct images, copied: generation is not what is measured
    bases = []
    for i in range(base_n):
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        rgb = np.stack(
            [
                127 + 100 * np.sin(x / (w / (3 + i))),
                127 + 100 * np.cos(y / (h / 5)),
                (x + y + 17 * i) % 256,
            ],
            -1,
        ) + rng.normal(0, 12, (h, w, 3))
        path = folder / f"base{i}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
        bases.append(path.read_bytes())
    paths = []
    for i in range(n):
        p = folder / f"img{i:05d}.jpg"
        p.write_bytes(bases[i % base_n])
        paths.append(p)
    return paths


def _chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def end_to_end_gpu_decode(
    model: Any, paths: list[Path], device: torch.device, batch: int, bf16: bool
) -> tuple[float, np.ndarray, str]:
    """Files -> embeddings through nvJPEG (or Pillow when unavailable), reads prefetched on threads."""
    from clipsearch.model.device_preprocess import (
        DevicePreprocess,
        decode_on_device,
        nvjpeg_available,
    )

    prep = DevicePreprocess.like(model.preprocessor)
    use_nvjpeg = nvjpeg_available(device)
    out = []
    with cf.ThreadPoolExecutor(max_workers=8) as pool:
        t0 = time.perf_counter()
        reads = [
            pool.submit(lambda c=c: [p.read_bytes() for p in c]) for c in _chunks(paths, batch)
        ]
        for fut in reads:
            datas = fut.result()
            imgs = decode_on_device(datas, device, use_nvjpeg=use_nvjpeg)
            with torch.inference_mode(), _autocast(device, bf16):
                x = prep(imgs)
                feats = F.normalize(model.encode_image(x).float(), dim=-1)
            out.append(feats.cpu().numpy())
        _sync(device)
        elapsed = time.perf_counter() - t0
    return (
        len(paths) / elapsed,
        np.concatenate(out),
        "nvJPEG" if use_nvjpeg else "Pillow on host (no nvJPEG)",
    )


def end_to_end_cpu_decode(
    model: Any, paths: list[Path], device: torch.device, batch: int, bf16: bool, workers: int
) -> tuple[float, np.ndarray]:
    """Files -> embeddings through the CPU decode pool ingestion uses (no thumbnails written)."""
    from clipsearch.indexer.decode_pool import DecodePool, decode_many

    size = int(model.image_size)
    out = []
    with DecodePool(workers) as pool:
        decode_many([paths[0]], size, None, pool=pool, preprocess=model.preprocessor)  # warm start
        t0 = time.perf_counter()
        for chunk in _chunks(paths, batch):
            res = decode_many(chunk, size, None, pool=pool, preprocess=model.preprocessor)
            x = torch.from_numpy(np.stack([np.asarray(r.pixels) for r in res])).to(device)
            with torch.inference_mode(), _autocast(device, bf16):
                feats = F.normalize(model.encode_image(x).float(), dim=-1)
            out.append(feats.cpu().numpy())
        _sync(device)
        elapsed = time.perf_counter() - t0
    return len(paths) / elapsed, np.concatenate(out)


def ingest_pipeline(
    name: str,
    folder: Path,
    work: Path,
    model_dir: Path,
    device: torch.device,
    batch: int,
    device_decode: str,
) -> Row:
    """The real ingestion path (catalog, scan, decode pool, embedding, one transaction per batch)
    in this process, with CLIPSEARCH_DEVICE_DECODE set as given; images/s from submit to done."""
    from clipsearch.indexer.library import Library, LibraryConfig
    from clipsearch.indexer.runs import run_embed_batch, run_ingest
    from clipsearch.indexer.worker import WorkerConfig, WorkerContext

    os.environ["CLIPSEARCH_DEVICE_DECODE"] = device_decode
    data = work / f"data-{device_decode}"
    lib = Library(LibraryConfig(data_dir=data, model_spec=str(model_dir), device=str(device)))
    ctx = WorkerContext(
        WorkerConfig(
            data_dir=data,
            model_spec=str(model_dir),
            database_url=lib.database_url,
            device=str(device),
            batch_size=batch,
        )
    )
    try:
        ctx.model()  # loaded and on the device before the clock starts
        t0 = time.perf_counter()
        job = lib.submit_ingest(str(folder))
        for part in run_ingest(ctx, None, job.id):
            run_embed_batch(ctx, job.id, part)
        _sync(device)
        secs = time.perf_counter() - t0
        info = lib.get_job(job.id)
    finally:
        ctx.dispose()
        lib.close()
        os.environ.pop("CLIPSEARCH_DEVICE_DECODE", None)
    return Row(
        f"ingest pipeline, device decode {device_decode}",
        name,
        info.done / secs,
        "img/s",
        f"{info.done} done, {info.failed} failed of {len(list(folder.iterdir()))} files, "
        f"batch {batch}, {os.cpu_count()} decode processes, thumbnails written",
    )


# -- 3. text -------------------------------------------------------------------------------------

QUERIES = [
    "a red bicycle against a brick wall",
    "dog on a beach",
    "sunset over the mountains with pink clouds",
    "two children playing football in a park",
    "a plate of spaghetti",
    "city skyline at night",
]


def text_rows(name: str, model: Any, device: torch.device, n_single: int, repeat: int) -> list[Row]:
    singles = []
    for i in range(n_single):
        q = [QUERIES[i % len(QUERIES)]]
        t0 = time.perf_counter()
        model.embed_texts(q)
        _sync(device)
        singles.append(time.perf_counter() - t0)
    many = [QUERIES[i % len(QUERIES)] + f" {i}" for i in range(256)]
    per_batch = timed(lambda: model.embed_texts(many, batch_size=256), device, repeat)
    return [
        Row(
            "text, one query at a time",
            name,
            1.0 / statistics.median(singles[1:] or singles),
            "queries/s",
            f"p50 {1000 * statistics.median(singles[1:] or singles):.2f} ms",
        ),
        Row("text, batch 256", name, 256 / per_batch, "queries/s"),
    ]


# -- 4. FAISS ------------------------------------------------------------------------------------


def faiss_rows(n: int, nlist: int, device: torch.device) -> list[Row]:
    import faiss

    from bench.synthetic_vectors import make_space

    space = make_space(dim=512, seed=0)
    xb = space.images(n, seed=1)
    xq = space.text_queries(10_000 if n >= 100_000 else 500, seed=2)
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    on_gpu = device.type == "cuda" and gpus > 0
    where = "GPU" if on_gpu else "CPU (faiss has no GPU support here)"
    km = faiss.Kmeans(
        512, nlist, niter=10, gpu=on_gpu, seed=1, spherical=True, max_points_per_centroid=256
    )
    t0 = time.perf_counter()
    km.train(xb)
    train_s = time.perf_counter() - t0
    quant = faiss.IndexFlatIP(512)
    index = faiss.IndexIVFFlat(quant, 512, nlist, faiss.METRIC_INNER_PRODUCT)
    index.quantizer.add(km.centroids)
    index.is_trained = True
    index.add(xb)
    if on_gpu:
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, 0, index)
    index.nprobe = 32
    index.search(xq[:10], 10)
    t0 = time.perf_counter()
    index.search(xq, 10)
    search_s = time.perf_counter() - t0
    label = f"{n:,} x 512"
    return [
        Row(
            "FAISS k-means (IVF coarse quantizer)",
            label,
            train_s,
            "s",
            f"{nlist} lists, 10 iterations, on {where}",
        ),
        Row(
            "FAISS IVF search, k=10, nprobe 32",
            label,
            len(xq) / search_s,
            "queries/s",
            f"{len(xq):,} text-like queries in one call, on {where}",
        ),
    ]


# -- 5. fine-tuning ------------------------------------------------------------------------------


def finetune_row(
    name: str, config: Any, device: torch.device, batch: int, steps: int, bf16: bool
) -> Row:
    from clipsearch.model.finetune.loss import ClipLoss

    model = build_model(config, device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = ClipLoss(gather=False)
    size = int(config.vision.image_size)
    pixels = torch.randn(batch, 3, size, size, device=device)
    tokens = torch.randint(1, 49405, (batch, 20), device=device)
    tokens[:, -1] = 49407

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, bf16):
            img = F.normalize(model.encode_image(pixels), dim=-1)
            txt = F.normalize(model.encode_text(tokens), dim=-1)
            loss = loss_fn(img, txt, model.logit_scale)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per_step = timed(step, device, steps)
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    )

    note = f"batch {batch}, {'bf16' if bf16 else 'fp32'}"
    if device.type == "cuda":
        note += f", peak {peak:.1f} GiB"
    return Row("fine-tune (contrastive, AdamW)", name, batch / per_step, "pairs/s", note)


# -- report --------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def render(rows: list[Row], device: torch.device, quick: bool, wall_s: float) -> str:
    lines = [
        "# GPU benchmark (bench/gpu.py)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {device_name(device)} ({device}); "
        f"torch {torch.__version__}, Python {platform.python_version()}, {os.cpu_count()} host cores; "
        f"{wall_s:.0f} s wall.",
        "",
    ]
    if quick:
        lines += ["**--quick run: toy sizes, the numbers mean nothing.**", ""]
    lines += [
        "| section | model / size | value | unit | goal | notes |",
        "|---|---|---:|---|---:|---|",
    ]
    for r in rows:
        goal = GOALS.get((r.section, r.model))
        lines.append(
            f"| {r.section} | {r.model} | {r.value:,.1f} | {r.unit} | "
            f"{'' if goal is None else f'>= {goal:,.0f}'} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --quick)")
    ap.add_argument("--quick", action="store_true", help="toy sizes, to check the script runs")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the table (default: bench/results/gpu.md, not with --quick)",
    )
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench/gpu.py: CUDA is not available on this machine. Run it on a GPU host with a CUDA "
            "build of torch, or use `--quick --device cpu` to check the script.",
            file=sys.stderr,
        )
        return 2
    if device.type != "cuda" and not args.quick:
        print(
            "bench/gpu.py: without a GPU only `--quick --device cpu` makes sense", file=sys.stderr
        )
        return 2
    bf16 = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    t_start = time.perf_counter()
    rows: list[Row] = []

    def emit(new: list[Row]) -> None:
        for r in new:
            print(
                f"{r.section:45s} {r.model:12s} {r.value:12,.1f} {r.unit:10s} {r.note}", flush=True
            )
        rows.extend(new)

    if args.quick:
        models = [("tiny", tiny())]
        batches, repeat = [4, 8], 2
        n_small, n_big, big = 16, 4, (1200, 900)
        e2e_batch, n_vec, nlist, ft_batch, ft_steps = 8, 20_000, 64, 8, 2
    else:
        models = [("ViT-B/32", vit_b_32()), ("ViT-L/14", vit_l_14())]
        batches, repeat = [128, 256, 512, 1024, 2048], 5
        n_small, n_big, big = 20_000, 2_000, (4000, 3000)
        e2e_batch, n_vec, nlist, ft_batch, ft_steps = 256, 1_000_000, 4096, 256, 10

    for name, cfg in models:  # 1
        emit([model_only(name, cfg, device, batches, bf16, repeat)])

    name, cfg = models[0]  # 2, 3 and 5 on ViT-B/32 (the default model)
    model = build_model(cfg, device)
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="clipsearch-gpu-bench-") as tmp:
        for label, n, (w, h) in (("640x480", n_small, (640, 480)), ("12 MP", n_big, big)):
            if args.quick and label == "12 MP":
                label = f"{big[0]}x{big[1]}"
            paths = make_jpegs(Path(tmp) / label.replace(" ", ""), n, w, h)
            rate_gpu, emb_gpu, how = end_to_end_gpu_decode(model, paths, device, e2e_batch, bf16)
            rate_cpu, emb_cpu = end_to_end_cpu_decode(
                model, paths, device, e2e_batch, bf16, workers
            )
            cos = float(np.min(np.sum(emb_gpu * emb_cpu, axis=1)))
            emit(
                [
                    Row(
                        f"image end to end, {label} JPEG, GPU decode",
                        name,
                        rate_gpu,
                        "img/s",
                        f"{how}, {n} files, min cosine vs CPU path {cos:.4f}",
                    ),
                    Row(
                        f"image end to end, {label} JPEG, CPU decode",
                        name,
                        rate_cpu,
                        "img/s",
                        f"{workers} decode processes, {n} files",
                    ),
                ]
            )
        from clipsearch.model.checkpoints import save_pretrained

        model_dir = save_pretrained(build_model(cfg, torch.device("cpu")), Path(tmp) / "model")
        folder = Path(tmp) / label.replace(" ", "")  # the 12-MP folder, through the real pipeline
        for mode in ("off", "on"):
            emit([ingest_pipeline(name, folder, Path(tmp), model_dir, device, e2e_batch, mode)])
    emit(text_rows(name, model, device, 50 if not args.quick else 5, repeat))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        emit(faiss_rows(n_vec, nlist, device))
    except ImportError as exc:
        print(f"FAISS section skipped: {exc}", file=sys.stderr)
    emit([finetune_row(name, cfg, device, ft_batch, ft_steps, bf16)])

    text = render(rows, device, args.quick, time.perf_counter() - t_start)
    out = args.out or (None if args.quick else REPO / "bench" / "results" / "gpu.md")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
