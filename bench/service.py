"""End-to-end search latency of the REST API under load, from a second process on loopback,
against the commit before issue 25 measured in the same run on the same machine.

What it does, all in one run:

1. Saves a ViT-B/32 CLIP with random weights (OpenAI's architecture; no download) to a folder.
2. Seeds a fresh catalog (SQLite) with N synthetic CLIP-like 512-d image vectors (default 100k,
   from ``bench/synthetic_vectors.py``) directly through the catalog ORM -- no images are decoded
   or embedded -- and builds the index the way a re-index job does
   (``indexer.reindex.build_and_activate``: IVF above the flat threshold, nprobe tuned for recall).
   With ``--baseline-python``/``--baseline-src`` (a venv with the older commit installed and
   that commit's tree), the older commit seeds its own catalog the same way with its own code
   (the same vectors, paths and ids; the schemas differ), and serves it with its own CLI.
3. Starts ``clipsearch serve --no-worker`` (the real CLI: uvicorn, the app, the Library), one
   server at a time: the baseline, then this tree. With ``--workers 1,2`` this tree is served
   once per count (``serve --workers N``, every API process answering before the load starts),
   the PSS of its API processes is read after the load (/proc/PID/smaps_rollup), and the report
   goes to bench/results/service-workers.md.
4. From a separate load process (httpx, asyncio), for each phase: C concurrent clients in a
   closed loop, each sending ``GET /api/search?q=...&k=20`` back to back, for C in
   ``--clients`` (1, 16, 32, 64) and two kinds of queries: ``unique`` (every text new: the text
   tower runs for each) and ``popular`` (64 three-word texts: the query cache answers).
   A 503 is counted apart (the server's deliberate refusal past its queue), every other failure
   as an error. Per-stage times (encode, vector search, keyword search, catalog) are the
   server's own (``clipsearch_search_stage_duration_seconds`` on /metrics, a mean per search over
   the phase), where the server has them; the rest of ``took_ms`` is ranking, rows to JSON
   and waiting for a CPU.
5. The same 20 queries asked of each server alone: their ids and order compared.
6. Writes bench/results/service.md: machine, versions, index, and per phase QPS, p50/p99
   latency (client-side, end to end), refusals and errors.

Usage: ``nice .venv/bin/python -m bench.service [--vectors 100000] [--seconds 8]
[--baseline-python /tmp/base25/venv/bin/python --baseline-src /tmp/base25/src]
[--workers 1,2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
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
RESULTS_WORKERS = REPO / "bench" / "results" / "service-workers.md"  # a run with --workers 1,2

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
    facts: dict[str, Any],
    port: int,
    log_path: Path,
    precision: str = "exact",
    python: str | None = None,
    workers: int = 1,
) -> subprocess.Popen[bytes]:
    """``python``: another interpreter whose installed clipsearch serves (the baseline);
    ``workers``: its API processes (``serve --workers``, this tree only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSEARCH_")}
    env.pop("PYTHONPATH", None)
    env["CLIPSEARCH_QUERY_PRECISION"] = precision
    script = REPO / ".venv" / "bin" / "clipsearch"
    if python is not None:
        cmd = [python, "-m", "clipsearch.service.cli"]
    else:
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
    if workers > 1:
        cmd += ["--workers", str(workers)]
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    try:
        cwd = "/" if python is not None else REPO  # the baseline must not import this tree
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
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


def wait_all_up(
    base: str, proc: subprocess.Popen[bytes], workers: int, timeout: float = 400
) -> None:
    """Until each of the ``workers`` API processes has answered a search (its
    ``X-Clipsearch-Worker`` header)."""
    import httpx

    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"only API processes {sorted(seen)} of {workers} answered")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{base}/api/search", params={"q": "warm up"}, timeout=30)
            seen.add(r.headers.get("x-clipsearch-worker", "0"))
        time.sleep(0.2)


def _rollup_mb(pid: int, *fields: str) -> float:
    """The sum of these fields of ``pid``'s /proc/PID/smaps_rollup, MB."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            total += int(rest.split()[0])
    return total / 1024


def _pss_mb(pid: int) -> float:
    """The proportional set size of ``pid`` (shared pages split between their users), MB."""
    return _rollup_mb(pid, "Pss")


def _uss_mb(pid: int) -> float:
    """The memory ``pid`` alone holds (its private pages: freed if it exits), MB."""
    return _rollup_mb(pid, "Private_Clean", "Private_Dirty")


def api_pids(server: subprocess.Popen[bytes]) -> list[int]:
    """The server's API processes: the first, then the spawned ones."""
    pids = [server.pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (entry / "cmdline").read_bytes()
                if int(stat[1]) == server.pid and b"spawn_main" in cmd:
                    pids.append(int(entry.name))
    return pids


def api_memory(server: subprocess.Popen[bytes]) -> dict[str, list[float]]:
    """PSS and USS of the server's API processes (api_pids' order), MB."""
    pids = api_pids(server)
    return {
        "pss_mb": [round(_pss_mb(pid), 1) for pid in pids],
        "uss_mb": [round(_uss_mb(pid), 1) for pid in pids],
    }


def text_tower_mb(model_dir: Path) -> float:
    """The text tower's weights in the saved model (float32 as saved), MB."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="np") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            if not key.startswith("visual"):
                total += 4 * math.prod(f.get_slice(key).get_shape())
    return round(total / 2**20, 1)


# --- the load process -------------------------------------------------------------------------


_ASKED: set[str] = set()  # unique queries already sent (every phase of the load process)


async def _warm_up(base: str) -> None:
    """A few queries before measuring: the first request of a fresh server loads the model,
    the keyword index's pages and the search threads."""
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for i in range(8):
            await client.get("/api/search", params={"q": f"warm up {WORDS[i]}", "k": 20})


STAGES = ("encode", "vector_search", "keyword_search", "catalog")


async def _stage_totals(client: Any) -> dict[str, tuple[float, float]]:
    """(sum seconds, count) per search stage from the server's /metrics (empty without it)."""
    try:
        r = await client.get("/metrics")
    except Exception:  # an older server without the metric
        return {}
    if r.status_code != 200:
        return {}
    out: dict[str, list[float]] = {}
    for line in r.text.splitlines():
        if not line.startswith("clipsearch_search_stage_duration_seconds_"):
            continue
        name, _, value = line.rpartition(" ")
        for stage in STAGES:
            if f'stage="{stage}"' in name:
                got = out.setdefault(stage, [0.0, 0.0])
                if name.startswith("clipsearch_search_stage_duration_seconds_sum"):
                    got[0] = float(value)
                elif name.startswith("clipsearch_search_stage_duration_seconds_count"):
                    got[1] = float(value)
    return {k: (v[0], v[1]) for k, v in out.items()}


async def _phase(base: str, clients: int, seconds: float, mode: str, seed: int) -> dict[str, Any]:
    import random

    import httpx

    rng = random.Random(seed)
    popular = [" ".join(rng.sample(WORDS, 3)) for _ in range(64)]
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    refused = 0
    searches = 0
    short = 0  # answered with fewer than 20 results (the relevance cut left fewer)

    def next_query() -> str:
        if mode == "popular":
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

    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        before = await _stage_totals(client)
        stop_at = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal errors, refused, searches, short
            while time.perf_counter() < stop_at:
                q = next_query()
                t0 = time.perf_counter()
                status = 0
                try:
                    r = await client.get("/api/search", params={"q": q, "k": 20})
                    status = r.status_code
                    body = r.json() if r.status_code == 200 else {}
                    ok = r.status_code == 200 and "results" in body
                    if ok:
                        server_ms.append(float(body["took_ms"]))
                        short += len(body["results"]) < 20
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                if ok:
                    latencies.append(dt)
                    searches += 1
                elif status == 503:
                    refused += 1
                    await asyncio.sleep(0.05)  # a client told to retry does not hammer
                else:
                    errors += 1

        t_start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - t_start
        after = await _stage_totals(client)

    latencies.sort()
    server_ms.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    stages: dict[str, float] = {}
    for stage, (total, _) in after.items():
        if searches:  # ms per answered search
            stages[stage] = (total - before.get(stage, (0.0, 0.0))[0]) / searches * 1000
    return {
        "mode": mode,
        "clients": clients,
        "seconds": elapsed,
        "requests": len(latencies) + errors + refused,
        "errors": errors,
        "refused": refused,
        "short": short,
        "qps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "server_p50_ms": server_ms[len(server_ms) // 2] if server_ms else float("nan"),
        "stages_ms": stages,
    }


SAME = [f"{a} {b}" for a, b in zip(WORDS[:20], WORDS[20:40], strict=True)]


async def _answers(base: str) -> list[list[int]]:
    """The ids, in order, of the same 20 queries asked one at a time."""
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        out = []
        for q in SAME:
            r = await client.get("/api/search", params={"q": q, "k": 20})
            out.append([int(h["id"]) for h in r.json().get("results", [])])
        return out


def load_main(base: str, seconds: float, clients: list[int]) -> None:
    async def run_all() -> dict[str, Any]:
        out = []
        await _warm_up(base)
        answers = await _answers(base)
        for i, c in enumerate(clients):
            for j, mode in enumerate(("unique", "popular")):
                if c == 1 and mode == "popular":
                    continue
                out.append(await _phase(base, c, seconds, mode, 1 + 2 * i + j))
        return {"phases": out, "answers": answers}

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
    facts: dict[str, Any],
    health: dict[str, Any],
    runs: list[dict[str, Any]],
    command: str,
) -> None:
    """``runs``: one per server (``label``, ``phases``, ``answers``)."""
    results = RESULTS_WORKERS if any(len(r.get("pss_mb", ())) > 1 for r in runs) else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    idx = health.get("index", {})
    lines = [
        "# Service: API processes (`serve --workers`), load and memory"
        if results is RESULTS_WORKERS
        else "# Service: text search end to end under load",
        "",
        f"`{command}` (vectors={facts['vectors']}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"machine load average before the run: {facts.get('load_before', 0.0):.1f})",
        "",
        f"- Machine: {_cpu()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- Versions: {_versions()}",
        "- Servers: `clipsearch serve --no-worker` (uvicorn; 1 API process unless the label "
        "says more: `--workers N`), SQLite catalog, "
        "ViT-B/32 with random weights (OpenAI's architecture) for the text tower, CPU, int8 "
        "query precision (the default), every other setting the default. `baseline` is the "
        "commit before issue 25 (a3f72af) installed in its own venv and serving a catalog it "
        "seeded itself with its own code (same vectors, paths and ids); `this tree` is the "
        "working tree. One server at a time, the same load process, the same machine, "
        "the same run.",
        f"- Index: {idx.get('size', 0) + idx.get('delta', 0)} vectors, kind {idx.get('kind')}. "
        "The catalog and index were seeded with synthetic CLIP-like 512-d vectors "
        "(bench/synthetic_vectors.py) written straight into the catalog, then indexed by the "
        "re-index code path (`build_and_activate`); no images were decoded.",
        "- Load: a second process on loopback (httpx + asyncio), closed loop, "
        "`GET /api/search?q=...&k=20`; latency measured by the client, end to end, of the "
        "answered searches; `503` counts the server's deliberate refusals past its queue (the "
        "client waits 50 ms before its next query), `errors` everything else (any other status, "
        "a timeout); `short`: answers with fewer than 20 results (the default relevance cut "
        "left fewer). The load process shares the 2 cores.",
        "- Queries: unique ones are four words of a 45-word list never asked before in the run "
        "(the text tower runs for each); popular ones 64 three-word texts (the query cache); "
        "text queries are hybrid (the keyword index has the file names, img_NNNNNN: no query word "
        "matches them, so the keyword side finds nothing and the page is the vector ranking cut).",
        "- Stages: the server's own mean ms per answered search (encode: waiting for and "
        "running the text encoder; vector_search: FAISS; keyword_search: the keyword index; "
        "catalog: the catalog reads), from /metrics; the baseline has no such metric (-).",
        "",
        "| server | queries | clients | QPS | p50 ms | p90 ms | p99 ms | 503 | errors | short "
        "| server p50 ms | encode | vector | keyword | catalog |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for ph in run["phases"]:
            # several API processes: each /metrics scrape answers from one of them, so the
            # difference of two scrapes mixes processes (no stage times then)
            st = ph.get("stages_ms", {}) if len(run.get("pss_mb", ())) <= 1 else {}

            def cell(name: str, st: dict[str, float] = st) -> str:
                return f"{st[name]:.1f}" if name in st else "-"

            lines.append(
                f"| {run['label']} | {ph['mode']} | {ph['clients']} | {ph['qps']:.1f} | "
                f"{ph['p50_ms']:.1f} | {ph['p90_ms']:.1f} | {ph['p99_ms']:.1f} | "
                f"{ph['refused']} | {ph['errors']} | {ph.get('short', 0)} | "
                f"{ph['server_p50_ms']:.1f} | "
                f"{cell('encode')} | {cell('vector_search')} | {cell('keyword_search')} | "
                f"{cell('catalog')} |"
            )
    mem = [r for r in runs if r.get("pss_mb")]
    if mem:
        lines += [
            "",
            "Memory after the load, PSS from /proc/PID/smaps_rollup (pages shared by several "
            "processes split between them: the memory-mapped index file, the libraries), MB: "
            + "; ".join(
                f"{r['label']}: {' + '.join(f'{x:.0f}' for x in r['pss_mb'])} = "
                f"{sum(r['pss_mb']):.0f}"
                for r in mem
            )
            + f". The model's text tower is {facts.get('text_tower_mb', 0):.0f} MB of float32 "
            "weights (each process also builds its int8 copy).",
        ]
        # this tree's runs only (the baseline's memory is another program's)
        one = [r for r in mem if len(r["pss_mb"]) == 1 and r["label"] != "baseline"]
        more = [r for r in mem if len(r["pss_mb"]) > 1]
        if one and more:
            extra = (sum(more[0]["pss_mb"]) - sum(one[0]["pss_mb"])) / (len(more[0]["pss_mb"]) - 1)
            own = more[0].get("uss_mb", [])[1:]
            lines.append(
                f"An extra API process adds {max(own, default=0):.0f} MB of its own (the spawned "
                f"processes' private pages, USS: {', '.join(f'{x:.0f}' for x in own)} MB); the "
                f"PSS sum grew by {extra:.0f} MB a process from '{one[0]['label']}' to "
                f"'{more[0]['label']}' (that difference moves with the pages of the index file "
                "and the libraries each process happened to touch). Goal: less than the text "
                f"tower + 100 MB = {facts.get('text_tower_mb', 0) + 100:.0f} MB."
            )
    base = [r for r in runs if r["label"] == "baseline"]
    for other in (r for r in runs if r["label"] != "baseline") if base else ():
        a, b = base[0]["answers"], other["answers"]
        same = sum(1 for x, y in zip(a, b, strict=True) if x == y)
        lines += [
            "",
            f"Same answers: {same} of {len(SAME)} queries asked alone gave the same ids in the "
            f"same order from the baseline and '{other['label']}'.",
        ]
    lines += [
        "",
        "Goals (issue 25, 2 cores, 100k images, ViT-B/32, hybrid, unique queries): 16 clients "
        "p50 <= 100 ms and >= 160 QPS, 0 errors, >= 2.5x the baseline's QPS; 64 clients 0 errors "
        "other than deliberate 503s and p99 <= 1 s for the answered ones; 1 client p50 <= 20 ms.",
        "",
    ]
    results.write_text("\n".join(lines))
    print("\n".join(lines))


def prepare_baseline(python: str, src: Path, work: Path, n_vectors: int) -> dict[str, Any]:
    """The baseline's own ``prepare`` (its catalog schema and index code), run by its venv."""
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from bench.service import prepare; "
        "print(json.dumps(prepare(Path(sys.argv[2]), int(sys.argv[3])), default=str))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [python, "-c", code, str(src), str(work), str(n_vectors)],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    facts["model_dir"], facts["data_dir"] = Path(facts["model_dir"]), Path(facts["data_dir"])
    return dict(facts)


def _prepared(work: Path, n_vectors: int, make: Any) -> dict[str, Any]:
    saved = work / "facts.json"
    if saved.exists():  # reuse a prepared work folder
        facts = json.loads(saved.read_text())
        facts["model_dir"], facts["data_dir"] = Path(facts["model_dir"]), Path(facts["data_dir"])
        if facts["vectors"] != n_vectors:
            raise SystemExit(f"{work} holds {facts['vectors']} vectors, not {n_vectors}")
        return dict(facts)
    work.mkdir(parents=True, exist_ok=True)
    facts = make(work)
    saved.write_text(json.dumps(facts, default=str))
    return dict(facts)


def _serve_and_load(
    facts: dict[str, Any],
    work: Path,
    label: str,
    python: str | None,
    args: Any,
    workers: int = 1,
) -> tuple[dict[str, Any], dict[str, Any]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = work / f"server-{label}.log".replace(" ", "-")
    server = start_server(facts, port, log_path, "int8", python, workers)
    try:
        health = wait_up(base, server)
        if workers > 1:
            wait_all_up(base, server, workers)
        load = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.service",
                "--load",
                base,
                "--seconds",
                str(args.seconds),
                "--clients",
                args.clients,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        )
        got = json.loads(load.stdout.strip().splitlines()[-1])
        return {"label": label, **api_memory(server), **got}, health
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="per phase")
    parser.add_argument("--clients", default="1,16,32,64", help="comma-separated client counts")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--baseline-python", help="the interpreter of a venv with the baseline")
    parser.add_argument("--baseline-src", type=Path, help="the baseline commit's tree")
    parser.add_argument(
        "--workers", default="1", help="comma-separated API process counts for this tree (1,2)"
    )
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # internal: load process
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if not workers or any(not 1 <= w <= 64 for w in workers):
        parser.error("--workers: comma-separated counts from 1 to 64")
    if not clients or any(not 1 <= c <= 256 for c in clients):
        parser.error("--clients: comma-separated counts from 1 to 256")
    if args.load:
        load_main(args.load, args.seconds, clients)
        return 0
    phases = sum(1 if c == 1 else 2 for c in clients)
    if args.seconds * phases > 180:
        parser.error("--seconds: the load is bounded to 180 s a server in all")
    if (args.baseline_python is None) != (args.baseline_src is None):
        parser.error("--baseline-python and --baseline-src go together")
    load_before = os.getloadavg()[0]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="clipsearch-bench-service-"))
    runs: list[dict[str, Any]] = []
    health: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    if args.baseline_python:
        base_facts = _prepared(
            work / "baseline",
            args.vectors,
            lambda w: prepare_baseline(args.baseline_python, args.baseline_src, w, args.vectors),
        )
        run, _ = _serve_and_load(base_facts, work, "baseline", args.baseline_python, args)
        runs.append(run)
    facts = _prepared(work / "current", args.vectors, lambda w: prepare(w, args.vectors))
    for n in workers:
        label = "this tree" if workers == [1] else f"this tree, {n} process{'es' if n > 1 else ''}"
        run, health = _serve_and_load(facts, work, label, None, args, n)
        runs.append(run)
    facts["text_tower_mb"] = text_tower_mb(facts["model_dir"])
    facts["load_before"] = load_before
    nice = " (niced)" if os.nice(0) > 0 else ""
    command = ".venv/bin/python -m bench.service " + " ".join(argv or sys.argv[1:]) + nice
    write_report(facts, health, runs, command.strip())
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
