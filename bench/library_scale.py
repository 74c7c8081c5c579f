"""A real library's size, end to end: a 100,000-image tree ingested by a real worker with the tiny
model, on SQLite (embedded default) and on PostgreSQL + Redis (deployed), and what a user then
feels at that size.

Per database, in one run:

* ingestion: a generated tree (small JPEGs of varied content and size in nested folders, ~2 %
  byte-identical duplicates, ~0.5 % broken files) ingested by ``clipsearch worker``'s code in a
  child process; the job's progress sampled every 2 s gives the rate over time (it must not fall
  as the catalog grows);
* index refresh (what every API process runs every 2 s): time and SQL statements of one refresh
  with 0, 1 and 1,000 new images, on a catalog filled to 10k, 50k and 100k images through the
  catalog's tables (the same rows an ingest writes, without decoding);
* a rescan of the unchanged tree, a delete, search p50 by text and by image, browse p50 on a deep
  page (keyset, and the old offset for comparison) at 1k and at the full size;
* RSS of the API-side process (this one, index loaded) and of the worker (peak), database size.

Writes bench/results/library_scale.md. Run:
``nice .venv/bin/python -m bench.library_scale --n 100000`` (PostgreSQL on 127.0.0.1:5432 and
Redis on 127.0.0.1:6379 for the deployed half; ``--db sqlite`` skips them).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from PIL import Image as PILImage
from sqlalchemy import event

ROOT = Path(__file__).resolve().parent.parent

from clipsearch.indexer import catalog  # noqa: E402
from clipsearch.indexer.catalog import Embedding, Image  # noqa: E402
from clipsearch.indexer.library import Library, LibraryConfig  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "CLIPSEARCH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLIPSEARCH_BENCH_REDIS", "redis://127.0.0.1:6379/14")
QUERIES = [
    "a red circle on a white background",
    "two blue squares",
    "a photo of a dog on the beach",
    "stripes",
    "a dark night sky",
    "green triangle",
    "a sunset over the sea",
    "noise",
]


# --------------------------------------------------------------------------------------------
# the tree


def make_tree(root: Path, n: int, seed: int = 0) -> dict[str, int]:
    """``n`` files under ``root``: 500 per folder, 20 folders per parent; ~2 % duplicates of
    earlier files, ~0.5 % broken (truncated JPEGs, text named .jpg)."""
    rng = np.random.default_rng(seed)
    counts = {"images": 0, "duplicates": 0, "broken": 0}
    made: list[Path] = []
    for i in range(n):
        folder = root / f"year{i // 10_000:02d}" / f"event{(i // 500) % 20:02d}"
        if i % 500 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"IMG_{i:06d}.jpg"
        roll = rng.random()
        if roll < 0.02 and made:
            shutil.copyfile(made[int(rng.integers(len(made)))], path)
            counts["duplicates"] += 1
            continue
        if roll < 0.025:
            if rng.random() < 0.5:
                path.write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(200))  # a JPEG cut short
            else:
                path.write_text("not a photo\n")
            counts["broken"] += 1
            continue
        w, h = int(rng.integers(48, 160)), int(rng.integers(48, 160))
        base = rng.integers(0, 256, size=(1, 1, 3))
        cells = rng.integers(0, 256, size=(max(2, h // 16), max(2, w // 16), 3))
        pixels = np.clip(0.4 * base + 0.6 * cells, 0, 255).astype(np.uint8)
        img = PILImage.fromarray(pixels, "RGB").resize((w, h), PILImage.BILINEAR)
        img.save(path, "JPEG", quality=85)
        made.append(path)
        counts["images"] += 1
    return counts


# --------------------------------------------------------------------------------------------
# helpers


def rss_mb(pid: int | str = "self", key: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@contextlib.contextmanager
def counting(engine: sa.Engine) -> Iterator[list[str]]:
    stmts: list[str] = []

    def grab(*args: Any) -> None:
        stmts.append(args[2])

    event.listen(engine, "before_cursor_execute", grab)
    try:
        yield stmts
    finally:
        event.remove(engine, "before_cursor_execute", grab)


def p50_ms(fn: Callable[[], Any], repeat: int = 30) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    name = f"cs_libscale_{uuid.uuid4().hex[:10]}"
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


def db_size_mb(lib: Library) -> float:
    if lib.engine.dialect.name == "sqlite":
        db = Path(str(lib.engine.url.database))
        return sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 2**20
    with lib.engine.connect() as conn:
        return (
            int(conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar())
            / 2**20
        )


def fill(lib: Library, n: int, start: int, rng: np.random.Generator) -> None:
    """Add ``n`` ready images with their own vectors through the catalog's tables, in chunks."""
    served = lib._ensure_served()
    dim = served.index.dim
    for lo in range(0, n, 5000):
        m = min(5000, n - lo)
        now = catalog.utcnow()
        rows = [
            {
                "path": f"/filled/f{(start + lo + i) // 500}/p{start + lo + i}.jpg",
                "folder": f"/filled/f{(start + lo + i) // 500}",
                "size": 1000,
                "mtime_ns": 1,
                "sha256": f"f{start + lo + i:063x}",
                "width": 64,
                "height": 64,
                "format": "JPEG",
                "state": "ready",
                "created_at": now,
                "updated_at": now,
            }
            for i in range(m)
        ]
        vecs = rng.standard_normal((m, dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        with lib.Session() as s:
            s.execute(sa.insert(Image), rows)
            s.execute(
                sa.insert(Embedding),
                [
                    {"sha256": r["sha256"], "model_id": served.model_id,
                     "vector": catalog.vector_to_bytes(v), "created_at": now}
                    for r, v in zip(rows, vecs, strict=True)
                ],
            )  # fmt: skip
            s.commit()
    with lib.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def timed_refresh(lib: Library) -> tuple[float, int, int]:
    """(ms, statements, rows read) of one refresh."""
    with counting(lib.engine) as stmts:
        t = time.perf_counter()
        rows = lib.refresh_index()
        ms = (time.perf_counter() - t) * 1000
    return ms, len(stmts), rows


# --------------------------------------------------------------------------------------------
# phases


def refresh_phase(config: LibraryConfig, sizes: list[int]) -> list[dict[str, Any]]:
    """Refresh cost at each catalog size, with 0, 1 and 1,000 new images."""
    out = []
    rng = np.random.default_rng(1)
    lib = Library(config)
    try:
        lib._ensure_served()
        have = 0
        for size in sizes:
            fill(lib, size - have, have, rng)
            have = size
            lib.refresh_index()  # take the fill in
            zero = [timed_refresh(lib) for _ in range(20)]
            fill(lib, 1, have, rng)
            have += 1
            one = timed_refresh(lib)
            fill(lib, 1000, have, rng)
            have += 1000
            thousand = timed_refresh(lib)
            out.append(
                {
                    "images": size,
                    "zero_ms": statistics.median(z[0] for z in zero),
                    "zero_stmts": zero[0][1],
                    "zero_rows": zero[0][2],
                    "one_ms": one[0],
                    "one_stmts": one[1],
                    "one_rows": one[2],
                    "k_ms": thousand[0],
                    "k_stmts": thousand[1],
                    "k_rows": thousand[2],
                }
            )
            print(f"  refresh at {size}: {out[-1]}", flush=True)
    finally:
        lib.close()
    return out


def _probes(lib: Library) -> dict[str, Callable[[], Any]]:
    """What a user does, as calls on one library: search by text and by image, browse deep."""
    model = lib.model
    counter = iter(range(10**9))
    total = lib.stats().images.total
    with lib.Session() as s:
        ids = list(s.scalars(sa.select(Image.id).where(Image.state == "ready").limit(50)))
        deep = int(
            s.scalar(sa.select(Image.id).order_by(Image.id).offset(max(0, total - 100)).limit(1))
            or 0
        )

    def by_text() -> None:
        q = QUERIES[next(counter) % len(QUERIES)]
        lib.search(model.embed_texts([q])[0], k=50)

    def by_image() -> None:
        image_id = ids[next(counter) % len(ids)]
        lib.search(lib.image_vector(image_id), k=50, exclude=[image_id])

    return {
        "search_text_ms": by_text,
        "search_image_ms": by_image,
        "browse_after_ms": lambda: lib.list_images(limit=50, after=deep),
        "browse_offset_ms": lambda: lib.list_images(
            limit=50, offset=max(0, min(total - 50, 100_000))
        ),
    }


def compare_views(
    small: Library, big: Library, rounds: int = 60
) -> tuple[dict[str, float], dict[str, float]]:
    """p50 of each probe on both libraries, the calls interleaved (small, big, small, ...) so
    that whatever else the machine does weighs on both alike."""
    ps, pb = _probes(small), _probes(big)
    out_s: dict[str, float] = {}
    out_b: dict[str, float] = {}
    for key in ps:
        ps[key]()
        pb[key]()  # warm
        ts: list[float] = []
        tb: list[float] = []
        for _ in range(rounds):
            for fn, acc in ((ps[key], ts), (pb[key], tb)):
                t = time.perf_counter()
                fn()
                acc.append((time.perf_counter() - t) * 1000)
        out_s[key], out_b[key] = statistics.median(ts), statistics.median(tb)
    return out_s, out_b


def wait_job(lib: Library, job_id: int, samples: list[tuple[float, int]] | None = None) -> Any:
    t0 = time.monotonic()
    last = None
    while True:
        job = lib.get_job(job_id)
        if samples is not None:
            samples.append((time.monotonic() - t0, job.done + job.failed))
        if job.state in ("done", "failed", "cancelled"):
            return job
        if job != last:
            last = job
        time.sleep(2.0)


def wait_index(lib: Library, timeout: float = 3600) -> None:
    """Wait for any queued or running job (the automatic rebuild after a big ingest)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [j for j in lib.list_jobs(limit=20) if j.state in ("queued", "running")]
        if not busy:
            return
        time.sleep(2.0)


def run_one(
    kind: str, tree: Path, n: int, model_dir: Path, work: Path, sizes: list[int]
) -> dict[str, Any]:
    res: dict[str, Any] = {"db": kind}
    with contextlib.ExitStack() as stack:
        url = None
        broker = None
        if kind == "postgres":
            url = stack.enter_context(pg_database())
            broker = REDIS_URL
        data = work / f"data-{kind}"
        for old in work.glob(f"data-{kind}*"):
            shutil.rmtree(old)  # a fresh library each run (the tree itself is kept with --work)
        config = LibraryConfig(
            data_dir=data,
            database_url=url,
            broker_url=broker,
            queue_prefix=f"bench{uuid.uuid4().hex[:6]}-" if broker else "",
            model_spec=str(model_dir),
            device="cpu",
            refresh_interval_s=3600,
            batch_size=64,
        )
        # a 1k library beside it, measured interleaved with the full one (compare_views)
        small = Library(
            LibraryConfig(
                data_dir=work / f"data-{kind}-1k",
                database_url=None if kind == "sqlite" else stack.enter_context(pg_database()),
                model_spec=str(model_dir),
                device="cpu",
                refresh_interval_s=3600,
            )
        )
        stack.callback(small.close)
        fill(small, 1000, 0, np.random.default_rng(5))
        small.refresh_index()
        lib = Library(config)
        stack.callback(lib.close)
        worker = lib.start_embedded_worker(ready_file=data / f"worker-{uuid.uuid4().hex[:6]}.ready")
        worker.wait_ready(120)  # a job queued before the worker starts would be resumed twice
        print(f"[{kind}] ingesting {n} files", flush=True)
        samples: list[tuple[float, int]] = []
        t = time.monotonic()
        job = lib.submit_ingest(str(tree))
        done = wait_job(lib, job.id, samples)
        res["ingest_s"] = time.monotonic() - t
        res["ingest_job"] = {"state": done.state, "done": done.done, "failed": done.failed,
                             "scan": done.params.get("scan")}  # fmt: skip
        # rate per tenth of the files: when the progress crossed each tenth (interpolated)
        rates = []
        tenth = max(1, n // 10)
        crossing = [0.0]
        for k in range(1, 11):
            target = k * tenth
            when = None
            for (t0, c0), (t1, c1) in itertools.pairwise(samples):
                if c0 < target <= c1:
                    when = t0 + (t1 - t0) * (target - c0) / max(1, c1 - c0)
                    break
            crossing.append(when if when is not None else float("nan"))
        for k in range(10):
            span = crossing[k + 1] - crossing[k]
            rates.append(tenth / span if span and span > 0 else float("nan"))
        res["rates"] = rates
        print(f"[{kind}] ingest {res['ingest_s']:.0f} s, rates {[round(r, 1) for r in rates]}")
        wait_index(lib)  # the automatic rebuild a big ingest queues
        res["worker_peak_rss_mb"] = rss_mb(worker.pid, "VmHWM")
        lib.refresh_index()
        res["index"] = lib.stats().as_dict()["index"]
        some_id = lib.list_images(limit=1, state="ready")[0][0].id
        res["at_1k"], res["at_full"] = compare_views(small, lib)
        print(f"[{kind}] 1k: {res['at_1k']}\n[{kind}] full: {res['at_full']}", flush=True)
        # a rescan of the unchanged tree
        t = time.monotonic()
        job = lib.submit_ingest(str(tree))
        done = wait_job(lib, job.id)
        res["rescan_s"] = time.monotonic() - t
        res["rescan_scan"] = done.params.get("scan")
        # deletes
        victims = [i.id for i in lib.list_images(limit=20, state="ready", after=some_id)[0]]
        times = []
        for v in victims:
            t = time.perf_counter()
            lib.delete_image(v)
            times.append((time.perf_counter() - t) * 1000)
        res["delete_ms"] = statistics.median(times)
        res["refresh_after_delete"] = timed_refresh(lib)
        res["api_rss_mb"] = rss_mb()
        res["db_mb"] = db_size_mb(lib)

        # refresh cost at 10k / 50k / 100k (filled through the catalog)
        fill_cfg = LibraryConfig(
            data_dir=work / f"data-{kind}-fill",
            database_url=None if kind == "sqlite" else stack.enter_context(pg_database()),
            model_spec=str(model_dir),
            device="cpu",
            refresh_interval_s=3600,
        )
        res["refresh"] = refresh_phase(fill_cfg, sizes)
    return res


# --------------------------------------------------------------------------------------------
# report


def report(results: list[dict[str, Any]], n: int, tree_counts: dict[str, int], gen_s: float) -> str:
    import torch

    lines = [
        "# Library at scale (bench/library_scale.py)",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
        f"SQLAlchemy {sa.__version__}, SQLite {__import__('sqlite3').sqlite_version}.",
        f"Tree: {n} files ({tree_counts['images']} images, {tree_counts['duplicates']} duplicates, "
        f"{tree_counts['broken']} broken), generated in {tree_counts.get('generated_s', gen_s):.0f} s. "
        "Model: the tiny test CLIP "
        "(the catalog and index are what is measured, not the network).",
        "",
    ]
    for r in results:
        j = r["ingest_job"]
        lines += [
            f"## {r['db']}"
            + (" + Redis broker" if r["db"] == "postgres" else " + embedded broker"),
            "",
            f"- Ingest: {r['ingest_s']:.0f} s for {n} files ({n / r['ingest_s']:.1f} files/s), job "
            f"{j['state']}, {j['done']} done, {j['failed']} failed; scan {j['scan']}.",
            "- Rate by tenth of the run (files/s): "
            + ", ".join("-" if np.isnan(x) else f"{x:.1f}" for x in r["rates"]),
            f"- Index after the automatic rebuild: {r['index'].get('kind')}, "
            f"{r['index'].get('size')} vectors + delta {r['index'].get('delta')}.",
            f"- Rescan of the unchanged tree: {r['rescan_s']:.1f} s ({r['rescan_scan']}).",
            f"- Delete p50 {r['delete_ms']:.1f} ms; the next refresh: "
            f"{r['refresh_after_delete'][0]:.1f} ms, {r['refresh_after_delete'][1]} statements, "
            f"{r['refresh_after_delete'][2]} rows.",
            f"- RSS: API-side process {r['api_rss_mb']:.0f} MB, worker peak {r['worker_peak_rss_mb']:.0f} MB. "
            f"Database {r['db_mb']:.0f} MB.",
            "",
            "p50 over 60 calls each, the two libraries' calls interleaved:",
            "",
            "| p50 (ms) | 1k images | full library | ratio |",
            "|---|---|---|---|",
        ]
        for key, label in (
            ("search_text_ms", "search by text (encode + search, k=50)"),
            ("search_image_ms", "search by image (stored vector, k=50)"),
            ("browse_after_ms", "browse a deep page (after=, keyset)"),
            ("browse_offset_ms", "browse a deep page (offset=, old way, for comparison)"),
        ):
            a, b = r["at_1k"][key], r["at_full"][key]
            lines.append(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
        lines += [
            "",
            "Index refresh (one API process's poll) on a catalog filled through its tables:",
            "",
            "| images | nothing new | 1 new | 1,000 new |",
            "|---|---|---|---|",
        ]
        for f in r["refresh"]:
            lines.append(
                f"| {f['images']:,} | {f['zero_ms']:.2f} ms, {f['zero_stmts']} stmts, {f['zero_rows']} rows "
                f"| {f['one_ms']:.2f} ms, {f['one_stmts']} stmts, {f['one_rows']} rows "
                f"| {f['k_ms']:.1f} ms, {f['k_stmts']} stmts, {f['k_rows']} rows |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def serving_rss(data_dir: Path, model_dir: Path) -> float:
    """Peak RSS (MB) of a fresh process that opens the library in ``data_dir`` as an API process
    does (index loaded, refreshed) and serves a search, a browse page and the health counts."""
    import subprocess

    code = (
        "import sys; from pathlib import Path;"
        "from clipsearch.indexer.library import Library, LibraryConfig;"
        "lib = Library(LibraryConfig(data_dir=Path(sys.argv[1]), model_spec=sys.argv[2],"
        " device='cpu'));"
        "v = lib.model.embed_texts(['a red circle'])[0]; lib.search(v, k=50);"
        "lib.list_images(limit=50); lib.stats(); lib.refresh_index();"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(data_dir), str(model_dir), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="files in the generated tree")
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--sizes", default="10000,50000,100000", help="catalog sizes for the refresh")
    ap.add_argument("--work", type=Path, default=None, help="keep the tree and data here")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "library_scale.md")
    ap.add_argument(
        "--rss",
        nargs="+",
        type=Path,
        metavar="DATA_DIR",
        help="only measure the peak RSS of an API-like process on these SQLite libraries",
    )
    args = ap.parse_args()
    if args.rss:
        from clipsearch.model.checkpoints import save_pretrained
        from clipsearch.model.testing import tiny_model

        with tempfile.TemporaryDirectory() as tmp:
            model_dir = save_pretrained(tiny_model(seed=0), Path(tmp) / "tiny-model")
            for d in args.rss:
                with Library(LibraryConfig(data_dir=d, model_spec=str(model_dir))) as lib:
                    n = lib.stats().images.total
                print(f"{d}: {n} images, peak RSS {serving_rss(d, model_dir):.0f} MB", flush=True)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model

    work = args.work or Path(tempfile.mkdtemp(prefix="cs-libscale-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = save_pretrained(tiny_model(seed=0), work / "tiny-model")
    tree = work / "photos"
    t = time.monotonic()
    counts_file = work / "tree.json"
    if not counts_file.exists():
        shutil.rmtree(tree, ignore_errors=True)
        counts = make_tree(tree, args.n)
        counts_file.write_text(
            json.dumps({**counts, "n": args.n, "generated_s": round(time.monotonic() - t)})
        )
    counts = json.loads(counts_file.read_text())
    if counts.get("n") != args.n:
        raise SystemExit(f"{tree} holds a tree of {counts.get('n')} files: use another --work")
    gen_s = time.monotonic() - t
    print(f"tree ready in {gen_s:.0f} s: {counts}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results = []
    for kind in kinds:
        results.append(run_one(kind, tree, args.n, model_dir, work, sizes))
        text = report(results, args.n, counts, gen_s)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
