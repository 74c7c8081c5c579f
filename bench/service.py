"""End-to-end search latency of the REST API under load, from a second process on loopback.

What it does, all in one run:

1. Saves a ViT-B/32 CLIP with random weights (OpenAI's architecture; no download) to a folder.
2. Seeds a fresh catalog (SQLite) with N synthetic CLIP-like 512-d image vectors (default 100k,
   from ``bench/synthetic_vectors.py``) directly through the catalog ORM -- no images are decoded
   or embedded -- and builds the index the way a re-index job does
   (``indexer.reindex.build_and_activate``: IVF above the flat threshold, nprobe tuned for recall).
3. Starts ``clipsearch serve --no-worker`` (the real CLI: uvicorn, the app, the Library).
4. From a separate load process (httpx, asyncio), for each phase: C concurrent clients in a
   closed loop, each sending ``GET /api/search?q=...&k=20`` back to back:
   - ``reference``: 1 client, unique queries (the single-user latency, same server, same run);
   - ``unique``: 16 clients, every query a new text (no embedding-cache hits: the text tower runs
     for every request, batched across concurrent requests);
   - ``repeated``: 16 clients drawing from 64 popular queries (what the LRU cache is for).
5. Writes bench/results/service.md: machine, versions, index, and per phase QPS, p50/p90/p99
   latency (client-side, end to end) and errors.

Usage: ``nice .venv/bin/python -m bench.service [--vectors 100000] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "service.md"

WORDS = [
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "old",
    "new",
    "small",
    "large",
    "happy",
    "quiet",
    "busy",
    "empty",
    "bright",
    "dark",
    "dog",
    "cat",
    "horse",
    "bird",
    "car",
    "bicycle",
    "train",
    "boat",
    "house",
    "street",
    "beach",
    "mountain",
    "forest",
    "river",
    "city",
    "child",
    "woman",
    "man",
    "group",
    "table",
    "kitchen",
    "garden",
    "sunset",
    "snow",
    "rain",
    "night",
    "morning",
    "flower",
    "tree",
]


def vit_b32_config() -> Any:
    from clipsearch.model.clip import CLIPConfig, TextConfig, VisionConfig

    return CLIPConfig(
        embed_dim=512,
        vision=VisionConfig(image_size=224, width=768, layers=12, patch_size=32, heads=12),
        text=TextConfig(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
        quick_gelu=True,
    )


def prepare(work: Path, n_vectors: int) -> dict[str, Any]:
    """Model folder + seeded catalog + built index. Returns facts for the report."""
    import importlib.util

    import numpy as np
    import sqlalchemy as sa

    spec = importlib.util.spec_from_file_location(
        "bench_synthetic_vectors", REPO / "bench" / "synthetic_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    synthetic = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = synthetic  # dataclasses look their module up there
    spec.loader.exec_module(synthetic)
    make_space = synthetic.make_space

    from clipsearch.indexer import catalog
    from clipsearch.indexer.catalog import Embedding, Image
    from clipsearch.indexer.reindex import build_and_activate
    from clipsearch.indexer.worker import WorkerConfig, WorkerContext
    from clipsearch.model import build
    from clipsearch.model.checkpoints import save_pretrained

    model_dir = work / "vit-b-32-random"
    data_dir = work / "data"
    t0 = time.perf_counter()
    model = build(vit_b32_config(), seed=0, name="ViT-B-32-random")
    save_pretrained(model, model_dir)
    t_model = time.perf_counter() - t0

    t0 = time.perf_counter()
    data_dir.mkdir(parents=True)
    url = catalog.default_database_url(data_dir)
    engine = catalog.init_db(url)
    sessions = catalog.session_factory(engine)
    from clipsearch.model import load

    served_model = load(str(model_dir))
    model_id = catalog.ensure_model(sessions, served_model)
    space = make_space(dim=512, seed=0)
    now_ns = time.time_ns()
    row = 0
    with engine.begin() as conn:
        for block in space.iter_images(n_vectors, seed=1, chunk=10_000):
            block = np.ascontiguousarray(block, dtype=np.float32)
            images = []
            embeddings = []
            for vec in block:
                row += 1
                sha = f"{row:064x}"
                images.append(
                    {
                        "path": f"/bench/photos/{row // 1000:03d}/img_{row:06d}.jpg",
                        "folder": f"/bench/photos/{row // 1000:03d}",
                        "size": 100_000,
                        "mtime_ns": now_ns,
                        "sha256": sha,
                        "width": 640,
                        "height": 480,
                        "format": "JPEG",
                        "state": "ready",
                    }
                )
                embeddings.append(
                    {"sha256": sha, "model_id": model_id, "vector": catalog.vector_to_bytes(vec)}
                )
            conn.execute(sa.insert(Image), images)
            conn.execute(sa.insert(Embedding), embeddings)
    t_seed = time.perf_counter() - t0

    t0 = time.perf_counter()
    ctx = WorkerContext(WorkerConfig(data_dir=data_dir, model_spec=str(model_dir)))
    try:
        version = build_and_activate(ctx, served_model, model_id)
    finally:
        ctx.dispose()
    t_build = time.perf_counter() - t0
    engine.dispose()
    return {
        "model_dir": model_dir,
        "data_dir": data_dir,
        "vectors": row,
        "index_version": version,
        "seconds": {"save_model": t_model, "seed_catalog": t_seed, "build_index": t_build},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    facts: dict[str, Any], port: int, log_path: Path, precision: str = "exact"
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env["CLIPSEARCH_QUERY_PRECISION"] = precision
    script = REPO / ".venv" / "bin" / "clipsearch"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "clipsearch.service.cli"]
    cmd += [
        "serve",
        "--no-worker",
        "--port",
        str(port),
        "--data-dir",
        str(facts["data_dir"]),
        "--model",
        str(facts["model_dir"]),
    ]
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def wait_up(base: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see its log")
        try:
            r = httpx.get(f"{base}/api/health", timeout=5)
            if r.status_code == 200 and r.json().get("status") == "ok":
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("server did not come up in time")


# --- the load process -------------------------------------------------------------------------


_ASKED: set[str] = set()  # unique queries already sent (every phase of the load process)


async def _warm_up(base: str) -> None:
    """A few queries before measuring: the first request of a fresh server loads the model,
    the keyword index's pages and the search threads."""
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for i in range(8):
            await client.get("/api/search", params={"q": f"warm up {WORDS[i]}", "k": 20})


async def _phase(base: str, clients: int, seconds: float, mode: str, seed: int) -> dict[str, Any]:
    import random

    import httpx

    rng = random.Random(seed)
    popular = [" ".join(rng.sample(WORDS, 3)) for _ in range(64)]
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    def next_query() -> str:
        if mode == "repeated":
            return rng.choice(popular)
        # four words never asked before in this run (45^4 combinations). Until 2026-12-01 a
        # counter made them unique ("red dog tree 123"): its 3+ digit numbers matched hundreds
        # of the synthetic file names (img_012345.jpg) as substrings, so "unique" measured the
        # keyword index's common-word path rather than a new sentence.
        while True:
            q = " ".join(rng.choice(WORDS) for _ in range(4))
            if q not in _ASKED:
                _ASKED.add(q)
                return q

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def one_client() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                q = next_query()
                t0 = time.perf_counter()
                try:
                    r = await client.get("/api/search", params={"q": q, "k": 20})
                    body = r.json() if r.status_code == 200 else {}
                    ok = len(body.get("results", [])) == 20
                    if ok:
                        server_ms.append(float(body["took_ms"]))
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                if ok:
                    latencies.append(dt)
                else:
                    errors += 1

        t_start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - t_start

    latencies.sort()
    server_ms.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "mode": mode,
        "clients": clients,
        "seconds": elapsed,
        "requests": len(latencies) + errors,
        "errors": errors,
        "qps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "server_p50_ms": server_ms[len(server_ms) // 2] if server_ms else float("nan"),
    }


def load_main(base: str, seconds: float, clients: int) -> None:
    async def run_all() -> list[dict[str, Any]]:
        out = []
        await _warm_up(base)
        out.append(await _phase(base, 1, min(seconds, 15), "unique", 1))
        out.append(await _phase(base, clients, seconds, "unique", 2))
        out.append(await _phase(base, clients, seconds, "repeated", 3))
        return out

    print(json.dumps(asyncio.run(run_all())))


# --- report -----------------------------------------------------------------------------------


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> str:
    import importlib.metadata as md

    parts = [f"Python {platform.python_version()}"]
    for pkg in ("torch", "faiss-cpu", "fastapi", "uvicorn", "httpx", "SQLAlchemy", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            parts.append(f"{pkg} {md.version(pkg)}")
    return ", ".join(parts)


def write_report(
    facts: dict[str, Any], health: dict[str, Any], phases: list[dict[str, Any]]
) -> None:
    """``phases``: each with its server's ``precision`` (CLIPSEARCH_QUERY_PRECISION)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    idx = health.get("index", {})
    names = {
        ("unique", 1): "reference: 1 client, unique queries",
        ("unique", 0): "16 clients, unique queries (no cache hits)",
        ("repeated", 0): "16 clients, 64 popular queries (LRU cache)",
    }
    lines = [
        "# Service: text search end to end under load",
        "",
        f"`nice .venv/bin/python -m bench.service {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f" (vectors={facts['vectors']}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"machine load average before the run: {os.getloadavg()[0]:.1f})",
        "",
        f"- Machine: {_cpu()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- Versions: {_versions()}",
        "- Server: `clipsearch serve --no-worker` (uvicorn, 1 process), SQLite catalog, "
        "ViT-B/32 with random weights (OpenAI's architecture) for the text tower, CPU.",
        f"- Index: {idx.get('size', 0) + idx.get('delta', 0)} vectors, kind {idx.get('kind')}, "
        f"version {idx.get('version')}. The catalog and index were seeded with synthetic "
        "CLIP-like 512-d vectors (bench/synthetic_vectors.py) written straight into the catalog, "
        "then indexed by the re-index code path (`build_and_activate`); no images were decoded.",
        "- Load: a second process on loopback (httpx + asyncio), closed loop, "
        "`GET /api/search?q=...&k=20`; latency measured by the client, end to end; an error is "
        "any non-200 or a result list shorter than 20. The load process shares the 2 cores.",
        "- Setup (a `--work-dir` prepared once is reused): "
        f"save model {facts['seconds']['save_model']:.1f} s, seed catalog "
        f"{facts['seconds']['seed_catalog']:.1f} s, build index {facts['seconds']['build_index']:.1f} s.",
        "",
        "- Query precision: one server per `CLIPSEARCH_QUERY_PRECISION` (`exact`: float32 text "
        "tower; `int8`: dynamic int8 Linear weights, one text per pass, model/quantize.py; "
        "`fp16`: float16 Linear weights, batched), run one after the other on the same catalog "
        "and index; every other setting the default (text queries hybrid, as the keyword index "
        "has the file names; 2 search threads; 1 compute thread per search and for the encoder).",
        "- Queries: unique ones are four words of a 45-word list never asked before in the run; "
        "popular ones 64 three-word texts; 8 unmeasured queries first (the first waits for the "
        "relevance calibration).",
        "",
        "| query precision | phase | clients | seconds | requests | QPS | p50 ms | p90 ms "
        "| p99 ms | errors | server p50 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ph in phases:
        key = (ph["mode"], 1 if ph["clients"] == 1 else 0)
        lines.append(
            f"| {ph.get('precision', 'exact')} | {names.get(key, ph['mode'])} | "
            f"{ph['clients']} | {ph['seconds']:.1f} | "
            f"{ph['requests']} | {ph['qps']:.1f} | {ph['p50_ms']:.1f} | {ph['p90_ms']:.1f} | "
            f"{ph['p99_ms']:.1f} | {ph['errors']} | {ph['server_p50_ms']:.1f} |"
        )
    lines += [
        "",
        "`server p50` is the server's own `took_ms` (parse, encode, search, catalog rows); the "
        "rest of the end-to-end time is HTTP, JSON and waiting for a CPU.",
        "",
        "Goals (issue 15, ViT-B/32, 100k images, one API process): p50 <= 30 ms with one "
        "client; with 16 clients and unique queries p50 <= 100 ms and 0 errors.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="per 16-client phase")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--precision",
        default="exact,int8",
        help="query precisions to serve, one server each, comma-separated (exact, int8, fp16)",
    )
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # internal: load process
    args = parser.parse_args(argv)
    if args.load:
        load_main(args.load, args.seconds, args.clients)
        return 0
    if args.seconds * 2 + 15 > 60:
        parser.error("--seconds: the load is bounded to 60 s in all (2 phases + 15 s reference)")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="clipsearch-bench-service-"))
    saved = work / "facts.json"
    if args.work_dir is not None and saved.exists():  # reuse a prepared --work-dir
        facts = json.loads(saved.read_text())
        facts["model_dir"], facts["data_dir"] = Path(facts["model_dir"]), Path(facts["data_dir"])
        if facts["vectors"] != args.vectors:
            parser.error(f"{work} holds {facts['vectors']} vectors, not {args.vectors}")
    else:
        facts = prepare(work, args.vectors)
        saved.write_text(json.dumps(facts, default=str))
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or any(p not in ("exact", "int8", "fp16") for p in precisions):
        parser.error("--precision: a comma-separated list of exact, int8, fp16")
    phases: list[dict[str, Any]] = []
    health: dict[str, Any] = {}
    for precision in precisions:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(facts, port, work / f"server-{precision}.log", precision)
        try:
            health = wait_up(base, server)
            load = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--load",
                    base,
                    "--seconds",
                    str(args.seconds),
                    "--clients",
                    str(args.clients),
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            got = json.loads(load.stdout.strip().splitlines()[-1])
            phases += [{**ph, "precision": precision} for ph in got]
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    write_report(facts, health, phases)
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
