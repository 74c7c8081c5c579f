"""Scaling figures for deploy/SCALING.md, measured cheaply on this machine.

    nice .venv/bin/python -m bench.scaling [--index-n 200000] [--pg-rows 20000]
        [--redis-tasks 5000] [--cluster-images 2000] [--skip index,pg,redis,cluster,model]

Sections (each writes its numbers into bench/results/scaling.md):

* index: IVF-Flat, IVF-SQ8 and IVF-PQ built by ``build_index`` over N synthetic CLIP-like 512-d
  vectors, saved by ``IndexStore``: bytes on disk, RSS growth of loading it, bytes per vector.
  Training is cut short (3 k-means iterations) to keep the run cheap: the sizes do not depend on
  it, nprobe and recall do (bench/results/index.md has those with full training).
* pg: N images + N embeddings written through the catalog's tables (``init_db``, the ORM tables,
  ``vector_to_bytes``) into a fresh PostgreSQL database; ``pg_total_relation_size`` per table
  after VACUUM ANALYZE; the time ``load_vectors`` takes to read them back (what a re-index does
  first).
* redis: N ``embed_batch`` messages (32 image ids each, as the default batch) sent by Celery to an
  own redis-server (append-only file on, as in docker-compose.yml): INFO used_memory growth,
  MEMORY USAGE of the queue, and AOF bytes, per task.
* model: ViT-B/32 (random weights, OpenAI's architecture): RSS of building it, FLOPs per image
  counted by torch's FlopCounterMode, CPU images/s of ``embed_pixels``; JPEG decode rate per core
  for a 12-megapixel photo (``decode_file``, draft mode, with sha256 and thumbnail).
* cluster: ``clipsearch worker`` processes (1, then 2) with the tiny test model ingest N 32 px
  images through PostgreSQL and Redis (tests/cluster/clusterlib.py): images/s from the job's
  start to its end in the catalog.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "CLIPSEARCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MIB = 1024 * 1024


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# machine


def machine() -> list[str]:
    import faiss
    import sqlalchemy
    import torch

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"

    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"

    import celery
    import kombu
    import psycopg

    return [
        f"CPU: {cpu}, {os.cpu_count()} logical CPUs; memory {mem}; load average at start "
        f"{os.getloadavg()[0]:.2f}",
        f"Python {platform.python_version()}, torch {torch.__version__}, faiss {faiss.__version__}, "
        f"numpy {np.__version__}, SQLAlchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}, "
        f"celery {celery.__version__}, kombu {kombu.__version__}",
        f"{version(['psql', '--version'])}; {version(['redis-server', '--version'])}",
    ]


# --------------------------------------------------------------------------------------------
# index


def _load_rss(folder: Path) -> int:
    """RSS growth of ``IndexStore(folder).load()`` in a fresh process (this one's heap is not)."""
    code = (
        "import sys, gc, faiss, numpy\n"
        "from clipsearch.indexer.vector_index import IndexStore\n"
        "def rss():\n"
        "    for l in open('/proc/self/status'):\n"
        "        if l.startswith('VmRSS:'): return int(l.split()[1]) * 1024\n"
        "gc.collect(); r0 = rss(); index = IndexStore(sys.argv[1]).load(); print(rss() - r0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(REPO)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(out.stdout.strip().splitlines()[-1])


def bench_index(n: int, work: Path) -> dict[str, Any]:
    import faiss

    from bench.synthetic_vectors import make_space
    from clipsearch.indexer.vector_index import IndexStore, build_index, default_nlist

    faiss.omp_set_num_threads(2)
    space = make_space(dim=512, seed=0)
    t0 = time.perf_counter()
    vectors = space.images(n, seed=1)
    ids = np.arange(1, n + 1, dtype=np.int64)
    text = space.text_queries(100, seed=2)
    log(f"index: {n} vectors generated in {time.perf_counter() - t0:.1f} s")
    rows = []
    for compression in (None, "sq8", "pq"):
        name = {None: "IVF-Flat", "sq8": "IVF-SQ8", "pq": "IVF-PQ"}[compression]
        t0 = time.perf_counter()
        index = build_index(
            ids, vectors, compression=compression, niter=3, n_tune=100, tune_queries={"text": text}
        )
        build_s = time.perf_counter() - t0
        meta = dict(index.metadata)
        store = IndexStore(work / f"index-{compression or 'flat'}")
        store.save(index)
        disk = folder_bytes(store.folder)
        del index
        gc.collect()
        load_rss = _load_rss(store.folder)
        nlist = int(meta.get("nlist") or 0)
        centroid_bytes = nlist * 512 * 4
        per_vector = (disk - centroid_bytes) / n
        nlist_1m = default_nlist(1_000_000)
        row = {
            "name": name,
            "n": n,
            "build_s": build_s,
            "disk": disk,
            "load_rss": load_rss,
            "nlist": nlist,
            "nprobe": meta.get("nprobe"),
            "per_vector": per_vector,
            "per_1m": per_vector * 1_000_000 + nlist_1m * 512 * 4,
            "nlist_1m": nlist_1m,
        }
        rows.append(row)
        log(
            f"index: {name} {disk / MIB:.1f} MiB on disk, build {build_s:.1f} s (train "
            f"{meta.get('train_seconds')} s, add {meta.get('add_seconds')} s, tune "
            f"{meta.get('tune_seconds')} s)"
        )
        shutil.rmtree(store.folder, ignore_errors=True)
    return {"rows": rows}


# --------------------------------------------------------------------------------------------
# PostgreSQL catalog


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    import sqlalchemy as sa

    name = f"cs_scaling_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def bench_pg(rows: int) -> dict[str, Any]:
    import hashlib

    import sqlalchemy as sa

    from clipsearch.indexer import catalog
    from clipsearch.indexer.catalog import Embedding, Image

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"rows": rows}
    with pg_database() as url:
        engine = catalog.init_db(url)
        sessions = catalog.session_factory(engine)
        with sessions() as s:
            model_id = catalog.get_or_create_model(s, "ViT-B-32", "f" * 64, 512).id
        now = catalog.utcnow()
        t0 = time.perf_counter()
        chunk = 1000
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            vecs = rng.standard_normal((n, 512)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            images, embeddings = [], []
            for j in range(n):
                i = start + j
                sha = hashlib.sha256(str(i).encode()).hexdigest()
                # a typical camera-roll path: /photos/<year>/<date and event>/IMG_<date>_<time>.jpg
                path = (
                    f"/photos/{2010 + i % 14}/{2010 + i % 14}-{1 + i % 12:02d}-{1 + i % 28:02d} "
                    f"Holiday at the coast/IMG_{20100101 + i:08d}_{i % 240000:06d}.jpg"
                )
                images.append(
                    {
                        "path": catalog.path_to_db(path),
                        "folder": catalog.folder_of(catalog.path_to_db(path)),
                        "size": 3_500_000 + i,
                        "mtime_ns": 1_600_000_000_000_000_000 + i,
                        "sha256": sha,
                        "width": 4032,
                        "height": 3024,
                        "format": "JPEG",
                        "taken_at": datetime(2015, 1, 1),
                        "state": "ready",
                        "thumbnail": f"{sha[:2]}/{sha}.jpg",
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                embeddings.append(
                    {
                        "sha256": sha,
                        "model_id": model_id,
                        "vector": catalog.vector_to_bytes(vecs[j]),
                        "created_at": now,
                    }
                )
            with sessions.begin() as s:
                s.execute(sa.insert(Image), images)
                s.execute(sa.insert(Embedding), embeddings)
        out["insert_s"] = time.perf_counter() - t0
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
            tables = {}
            for table in ("images", "embeddings", "jobs", "models", "index_versions"):
                total, heap, idx = conn.execute(
                    sa.text(
                        "SELECT pg_total_relation_size(:t), pg_relation_size(:t), "
                        "pg_indexes_size(:t)"
                    ),
                    {"t": table},
                ).one()
                tables[table] = {
                    "total": int(total),
                    "heap": int(heap),
                    "indexes": int(idx),
                    "toast": int(total) - int(heap) - int(idx),
                }
            out["db_size"] = int(
                conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar()
            )
        out["tables"] = tables
        with sessions() as s:
            t0 = time.perf_counter()
            _ids, got = catalog.load_vectors(s, model_id)
            out["load_s"] = time.perf_counter() - t0
        assert got.shape == (rows, 512), got.shape
        engine.dispose()
    log(f"pg: {rows} rows, {out['db_size'] / MIB:.1f} MiB database")
    return out


# --------------------------------------------------------------------------------------------
# Redis


@contextlib.contextmanager
def own_redis(work: Path, appendonly: bool = True) -> Iterator[tuple[int, Path]]:
    """A redis-server of our own on a free port (never the shared one), stopped afterwards."""
    from tests.cluster.clusterlib import free_port

    port = free_port()
    folder = work / f"redis-{port}"
    folder.mkdir(parents=True)
    proc = subprocess.Popen(
        [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if appendonly else "no", "--dir", str(folder),
            "--appendfsync", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("own redis-server did not start") from None
            time.sleep(0.05)
    try:
        yield port, folder
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def bench_redis(tasks: int, work: Path) -> dict[str, Any]:
    import redis

    from clipsearch.indexer.celery_app import TASK_EMBED, make_celery

    out: dict[str, Any] = {"tasks": tasks, "ids_per_task": 32}
    with own_redis(work) as (port, folder):
        client = redis.Redis(host="127.0.0.1", port=port)
        with contextlib.suppress(redis.ResponseError):
            client.execute_command("MEMORY", "PURGE")
        before = int(client.info("memory")["used_memory"])
        app = make_celery(f"redis://127.0.0.1:{port}/0", queue_prefix="bench-")
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for t in range(tasks):
                ids = list(range(1_000_000 + 32 * t, 1_000_000 + 32 * (t + 1)))
                app.send_task(TASK_EMBED, args=[123456, ids], producer=producer)
        out["send_s"] = time.perf_counter() - t0
        after = int(client.info("memory")["used_memory"])
        queue = next(
            k for k in client.keys("*") if client.type(k) == b"list" and client.llen(k) == tasks
        )
        out["used_memory_per_task"] = (after - before) / tasks
        out["memory_usage_per_task"] = int(client.memory_usage(queue, samples=0)) / tasks
        out["message_bytes"] = len(client.lindex(queue, 0))
        out["aof_raw_per_task"] = folder_bytes(folder) / tasks
        client.bgrewriteaof()
        deadline = time.monotonic() + 30
        while client.info("persistence").get("aof_rewrite_in_progress") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        out["aof_per_task"] = folder_bytes(folder) / tasks
        app.close()
        client.close()
    log(f"redis: {out['used_memory_per_task']:.0f} B/task")
    return out


# --------------------------------------------------------------------------------------------
# Model: ViT-B/32 memory, FLOPs, CPU rate; photo decode rate


def _model_rss() -> int:
    """RSS growth of building ViT-B/32 in a fresh process (after torch is imported)."""
    code = (
        "import sys, gc, torch\n"
        "from clipsearch.model.clip import CLIPConfig\n"
        "def rss():\n"
        "    for l in open('/proc/self/status'):\n"
        "        if l.startswith('VmRSS:'): return int(l.split()[1]) * 1024\n"
        "gc.collect(); r0 = rss(); m = model.build(CLIPConfig(), seed=0); print(rss() - r0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(out.stdout.strip().splitlines()[-1])


def bench_model(work: Path) -> dict[str, Any]:
    import torch
    from PIL import Image as PILImage
    from torch.utils.flop_counter import FlopCounterMode

    from clipsearch import model as clip_model
    from clipsearch.indexer.decode import decode_file
    from clipsearch.model.clip import CLIPConfig

    out: dict[str, Any] = {}
    torch.set_num_threads(2)
    out["rss"] = _model_rss()
    m = clip_model.build(CLIPConfig(), seed=0)
    out["params"] = sum(p.numel() for p in m.parameters())
    out["param_bytes"] = sum(p.numel() * p.element_size() for p in m.parameters())
    out["visual_params"] = sum(p.numel() for p in m.visual.parameters())
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        m.encode_image(x)
    out["flops_per_image"] = int(counter.get_total_flops())
    pixels = torch.randn(32, 3, 224, 224)
    m.embed_pixels(pixels[:4], batch_size=4)  # warm up
    t0 = time.perf_counter()
    m.embed_pixels(pixels, batch_size=32)
    out["cpu_images_per_s"] = 32 / (time.perf_counter() - t0)
    out["cpu_threads"] = torch.get_num_threads()
    del m
    gc.collect()

    # A 12-megapixel camera JPEG (4032x3024, quality 90): what photo libraries hold.
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(189, 252, 3), dtype=np.uint8)
    photo = PILImage.fromarray(small).resize((4032, 3024), PILImage.BICUBIC)
    paths = []
    for i in range(4):
        p = work / f"photo{i}.jpg"
        photo.rotate(i * 90 if i % 2 == 0 else 0).save(p, "JPEG", quality=90)
        paths.append(p)
    out["photo_bytes"] = paths[0].stat().st_size
    thumbs = work / "thumbs"
    decode_file(paths[0], 224, thumbs)  # warm up
    t0 = time.perf_counter()
    for p in paths * 2:
        res = decode_file(p, 224, thumbs, draft=True)
        assert res.ok, res.reason
    out["decode_per_s"] = len(paths) * 2 / (time.perf_counter() - t0)
    log(f"model: {out['cpu_images_per_s']:.2f} img/s CPU, decode {out['decode_per_s']:.1f}/s")
    return out


# --------------------------------------------------------------------------------------------
# Cluster throughput (tiny model)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its own threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_cluster(n_images: int, work: Path, redis_port: int) -> dict[str, Any]:
    import httpx

    from clipsearch.indexer.library import Library, LibraryConfig
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model
    from tests.cluster.clusterlib import Cluster, make_images, wait_for

    model_dir = save_pretrained(tiny_model(seed=0), work / "tiny-model")
    photos = work / "cluster-photos"
    make_images(photos, n_images, seed=3)
    results = []
    for n_workers in (1, 2):
        with pg_database() as url:
            data = work / f"cluster-data-{n_workers}"
            prefix = f"s{uuid.uuid4().hex[:6]}-"
            broker = f"redis://127.0.0.1:{redis_port}/0"
            cluster = Cluster(
                data_dir=data,
                model_dir=model_dir,
                database_url=url,
                broker_url=broker,
                allowed_root=photos,
                queue_prefix=prefix,
                extra_env={"CLIPSEARCH_EMBED_BATCH_SIZE": "32", "CLIPSEARCH_DECODE_WORKERS": "1"},
            )
            lib = Library(
                LibraryConfig(
                    data_dir=data,
                    database_url=url,
                    broker_url=broker,
                    queue_prefix=prefix,
                    model_spec=str(model_dir),
                    device="cpu",
                )
            )
            try:
                load_before = os.getloadavg()[0]
                t0 = time.perf_counter()
                workers = [cluster.start_worker(f"w{i}") for i in range(n_workers)]
                for w in workers:
                    cluster.wait_worker_ready(w)
                start_s = time.perf_counter() - t0
                cpu0 = sum(_cpu_seconds(w.pid) for w in workers)
                job = lib.submit_ingest(str(photos))
                t0 = time.perf_counter()
                final = wait_for(
                    lambda lib=lib, job=job: (
                        (j := lib.get_job(job.id)).state in ("done", "failed") and j
                    ),
                    600,
                    "the ingest job",
                    members=workers,
                )
                wall = time.perf_counter() - t0
                cpu = sum(_cpu_seconds(w.pid) for w in workers) - cpu0
                worker_rss = max(_rss_of(w.pid) for w in workers)
                assert final.state == "done" and final.done == n_images, final
                span = (final.finished_at - final.started_at).total_seconds()
                api_rss = None
                if n_workers == 2:  # an API replica serving these images: its resident memory
                    api = cluster.start_api("api")
                    cluster.wait_api_ready(api)
                    wait_for(
                        lambda api=api, auth=cluster.auth: (
                            httpx.get(f"{api.url}/api/health", headers=auth, timeout=10).json()[
                                "index"
                            ]["delta"]
                            == n_images
                        ),
                        60,
                        "the API to serve every image",
                        member=api,
                    )
                    api_rss = _rss_of(api.pid)
                results.append(
                    {
                        "workers": n_workers,
                        "images": n_images,
                        "startup_s": start_s,
                        "job_s": span,
                        "wall_s": wall,
                        "rate": n_images / span,
                        "cpu_ms_per_image": 1000 * cpu / n_images,
                        "worker_rss": worker_rss,
                        "api_rss": api_rss,
                        "load_before": load_before,
                        "load_after": os.getloadavg()[0],
                    }
                )
                log(f"cluster: {n_workers} workers, {n_images / span:.1f} images/s")
            finally:
                cluster.stop_all()
                lib.close()
    return {"rows": results}


# --------------------------------------------------------------------------------------------
# report


def gib(b: float) -> str:
    return f"{b / 1024**3:,.2f} GiB"


def mib(b: float) -> str:
    return f"{b / MIB:,.1f} MiB"


def stamp(section: dict[str, Any]) -> str:
    return (
        f"Measured {section.get('at', '?')}, load average {section.get('load', float('nan')):.1f} "
        f"at the start of the section, in {section.get('seconds', float('nan')):.0f} s."
    )


def report(res: dict[str, Any], args: argparse.Namespace, elapsed: float) -> str:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [
        "# Scaling measurements",
        "",
        f"Written {now} by `nice .venv/bin/python -m bench.scaling` (raw figures in scaling.json; "
        "a section skipped with --skip keeps the figures of the run that measured it) on a "
        "2-core machine shared with other work: rates move with the load, sizes do not.",
        "",
        "## Machine and versions",
        "",
        "```",
        *res["machine"],
        "```",
        "",
    ]
    if "index" in res:
        rows = res["index"]["rows"]
        n = rows[0]["n"]
        lines += [
            f"## Vector index bytes (measured at {n:,} vectors; per 1M extrapolated)",
            "",
            stamp(res["index"]),
            "",
            f"`build_index` over {n:,} synthetic CLIP-like 512-d vectors, saved by `IndexStore` "
            "(faiss file + ids). k-means cut to 3 iterations to keep the run short: sizes do not "
            "depend on it, nprobe and recall do (see index.md for those with full training). "
            "*Per vector* = (bytes on disk - nlist x 512 x 4 centroid bytes) / N; *per 1M* = per "
            "vector x 1,000,000 + the centroids of nlist(1M) = "
            f"{rows[0]['nlist_1m']} lists: an extrapolation, linear in N.",
            "",
            "| index | N | build s | nlist | bytes on disk | RSS growth on load | bytes per vector | per 1M vectors (extrapolated) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['name']} | {r['n']:,} | {r['build_s']:.1f} | {r['nlist']} | "
                f"{mib(r['disk'])} | {mib(r['load_rss'])} | {r['per_vector']:.1f} | "
                f"{mib(r['per_1m'])} |"
            )
        lines.append("")
    if "model" in res:
        m = res["model"]
        lines += [
            "## ViT-B/32 and photo decoding",
            "",
            stamp(m),
            "",
            "| what | value |",
            "|---|---:|",
            f"| parameters (whole CLIP / image tower) | {m['params'] / 1e6:.1f} M / "
            f"{m['visual_params'] / 1e6:.1f} M |",
            f"| weights in memory, fp32 (parameters x 4 bytes) | {mib(m['param_bytes'])} |",
            f"| RSS growth of building the model in a fresh process (CPU) | {mib(m['rss'])} |",
            f"| FLOPs per image, image tower at 224 px (torch FlopCounterMode) | "
            f"{m['flops_per_image'] / 1e9:.2f} GFLOP |",
            f"| CPU `embed_pixels`, batch 32, {m['cpu_threads']} threads | "
            f"{m['cpu_images_per_s']:.2f} images/s |",
            f"| decode 12 MP JPEG (4032x3024, {m['photo_bytes'] / 1e6:.1f} MB) with `decode_file` "
            f"(draft mode, sha256, EXIF, 256 px thumbnail), 1 core | {m['decode_per_s']:.1f} images/s |",
            "",
        ]
    if "pg" in res:
        p = res["pg"]
        n = p["rows"]
        lines += [
            f"## PostgreSQL catalog ({n:,} images + {n:,} 512-d embeddings)",
            "",
            stamp(p),
            "",
            "Rows written with the catalog's tables (created by `init_db`), realistic paths "
            "(~75 characters), then `VACUUM ANALYZE`. Bytes per image = table total / rows.",
            "",
            "| table | total | heap | indexes | TOAST | bytes per image |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, t in p["tables"].items():
            if t["total"] == 0:
                continue
            lines.append(
                f"| {name} | {mib(t['total'])} | {mib(t['heap'])} | {mib(t['indexes'])} | "
                f"{mib(t['toast'])} | {t['total'] / n:,.0f} |"
            )
        lines += [
            "",
            f"- whole database: {mib(p['db_size'])} ({p['db_size'] / n:,.0f} bytes per image, "
            "including the empty database's ~7 MiB)",
            f"- insert rate: {n / p['insert_s']:,.0f} images+embeddings per second (1000-row "
            "transactions)",
            f"- `load_vectors` (read every vector back, as a re-index does): {p['load_s']:.2f} s "
            f"= {n / p['load_s']:,.0f} vectors/s",
            "",
        ]
    if "redis" in res:
        r = res["redis"]
        lines += [
            f"## Redis broker ({r['tasks']:,} queued `embed_batch` tasks of {r['ids_per_task']} ids)",
            "",
            stamp(r),
            "",
            "| what | bytes per queued task |",
            "|---|---:|",
            f"| INFO used_memory growth | {r['used_memory_per_task']:,.0f} |",
            f"| MEMORY USAGE of the queue list | {r['memory_usage_per_task']:,.0f} |",
            f"| one message as stored (JSON envelope, body base64) | {r['message_bytes']:,} |",
            f"| append-only file as written (RPUSH commands) | {r['aof_raw_per_task']:,.0f} |",
            f"| append-only file after BGREWRITEAOF (compressed RDB preamble) | "
            f"{r['aof_per_task']:,.0f} |",
            "",
            f"Sending them took {r['send_s']:.1f} s ({r['tasks'] / r['send_s']:,.0f} tasks/s).",
            "",
        ]
    if "cluster" in res:
        lines += [
            "## Cluster ingest throughput (tiny model, CPU)",
            "",
            stamp(res["cluster"]),
            "",
            "`clipsearch worker` processes (solo pool, 1 decode process each, "
            "OMP_NUM_THREADS=1, batches of 32) on PostgreSQL + Redis, ingesting generated 32 px "
            "PNG/JPEG images with the tiny test CLIP: the cost is the pipeline (scan, decode, "
            "sha256, thumbnail, catalog writes, broker), not the model. Rate = images / (job "
            "finished_at - started_at).",
            "",
            "| workers | images | worker start s | job s | images/s | worker CPU ms per image | worker RSS | load average before / after |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for c in res["cluster"]["rows"]:
            lines.append(
                f"| {c['workers']} | {c['images']:,} | {c['startup_s']:.1f} | {c['job_s']:.1f} | "
                f"{c['rate']:.1f} | {c.get('cpu_ms_per_image', float('nan')):.1f} | "
                f"{mib(c.get('worker_rss', 0))} | {c.get('load_before', float('nan')):.1f} / "
                f"{c.get('load_after', float('nan')):.1f} |"
            )
        lines += [
            "",
            "*Worker CPU ms per image*: user + system CPU time of the worker processes from the "
            "moment the job was submitted to its end, divided by the images (decoding runs inside "
            "the worker with CLIPSEARCH_DECODE_WORKERS=1); PostgreSQL's and Redis' own CPU is not "
            "in it. *Worker RSS*: the largest worker's resident memory at the end, with the tiny "
            "model (add the model's weights for a real one).",
        ]
        for c in res["cluster"]["rows"]:
            if c.get("api_rss"):
                lines += [
                    "",
                    f"An API replica (`clipsearch serve --no-worker`, tiny model) serving these "
                    f"{c['images']:,} images from its exact delta: {mib(c['api_rss'])} resident.",
                ]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index-n", type=int, default=200_000)
    parser.add_argument("--pg-rows", type=int, default=20_000)
    parser.add_argument("--redis-tasks", type=int, default=5_000)
    parser.add_argument("--cluster-images", type=int, default=2000)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "scaling.md"))
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    t_start = time.perf_counter()
    out = Path(args.out)
    saved = out.with_suffix(".json")
    # Sections skipped this time keep the figures (and the stamps) of the run that measured them.
    res: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    res["machine"] = machine()

    def run(name: str, fn: Any, *fn_args: Any) -> None:
        if name in skip:
            return
        at = datetime.now(UTC).isoformat(timespec="seconds")
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        section = fn(*fn_args)
        section.update(at=at, load=load, seconds=time.perf_counter() - t0)
        res[name] = section

    with tempfile.TemporaryDirectory(prefix="cs-scaling-") as tmp:
        work = Path(tmp)
        run("pg", bench_pg, args.pg_rows)
        run("redis", bench_redis, args.redis_tasks, work)
        if "cluster" not in skip:
            with own_redis(work, appendonly=False) as (port, _):
                run("cluster", bench_cluster, args.cluster_images, work, port)
        run("model", bench_model, work)
        run("index", bench_index, args.index_n, work)
    saved.write_text(json.dumps(res, indent=1) + "\n")
    text = report(res, args, time.perf_counter() - t_start)
    out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
