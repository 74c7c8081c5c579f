"""What relevance, the relevance cut and the date sort cost per search (issue 13).

A library of N images (catalog rows and random unit vectors written straight into the catalog,
as tests/indexer/test_scale.py does; FAISS exact delta) with the tiny test model; measured in one
process, interleaved per query:

* ``plain``: ``Library.search(v, k=40)`` (the reference);
* ``relevance``: the same through ``indexer.search_service.SearchService`` (relevance on each hit);
* ``cut``: with ``min_relevance=0.5`` (random queries are meaningless: the cut hides everything,
  and the page counts what it hid with a second, wider search);
* ``date``: ``sort=date_desc`` over the results above ``min_relevance=0`` (the 1,000-result set).

Also the first calibration (background embedded and searched). Writes bench/results/relevance.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import torch  # noqa: E402

from clipsearch.indexer import catalog  # noqa: E402
from clipsearch.indexer.catalog import Embedding, Image  # noqa: E402
from clipsearch.indexer.library import Library, LibraryConfig  # noqa: E402
from clipsearch.indexer.relevance import BackgroundCache, Calibration  # noqa: E402
from clipsearch.indexer.search_service import SearchQuery, SearchService  # noqa: E402
from clipsearch.model.checkpoints import save_pretrained  # noqa: E402
from clipsearch.model.testing import tiny_model  # noqa: E402


def fill(lib: Library, n: int, model_id: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    now = catalog.utcnow()
    for start in range(0, n, 20_000):
        rows = [
            {
                "path": f"/library/f{i % 97}/p{i}.jpg",
                "folder": f"/library/f{i % 97}",
                "size": 1000 + i,
                "mtime_ns": 1,
                "sha256": f"{i:064x}",
                "width": 64,
                "height": 48,
                "format": "JPEG",
                "state": "ready",
                "thumbnail": None,
                "taken_at": None if i % 10 == 0 else now.replace(tzinfo=None),
                "created_at": now,
                "updated_at": now,
            }
            for i in range(start, min(n, start + 20_000))
        ]
        vecs = rng.normal(size=(len(rows), dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        with lib.Session() as s:
            s.execute(sa.insert(Image), rows)
            s.execute(
                sa.insert(Embedding),
                [
                    {
                        "sha256": r["sha256"],
                        "model_id": model_id,
                        "vector": v.tobytes(),
                        "created_at": now,
                    }
                    for r, v in zip(rows, vecs, strict=True)
                ],
            )
            s.commit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--out", default="bench/results/relevance.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "tiny"
        save_pretrained(tiny_model(seed=0), model_dir)
        lib = Library(
            LibraryConfig(data_dir=Path(tmp) / "data", model_spec=str(model_dir), device="cpu")
        )
        served = lib._ensure_served()
        dim = int(served.model.embed_dim)
        t0 = time.perf_counter()
        fill(lib, args.images, served.model_id, dim)
        lib.refresh_index()
        fill_s = time.perf_counter() - t0
        cache = BackgroundCache()

        def best(vectors: np.ndarray) -> list[float]:
            out = []
            for vector in vectors:
                hits = lib.search(vector, k=1)
                out.append(hits[0].score if hits else float("nan"))
            return out

        def calibration() -> Calibration:  # what Library.calibration() does
            return cache.get(1, served.model, best, args.images)

        class _Searched:  # the library as the search service reads it, with this calibration
            search = staticmethod(lib.search)
            calibration = staticmethod(calibration)

            @staticmethod
            def has_keywords() -> bool:
                return False

        service = SearchService(_Searched())
        t0 = time.perf_counter()
        cal = calibration()
        cal_s = time.perf_counter() - t0
        rng = np.random.default_rng(1)
        times: dict[str, list[float]] = {"plain": [], "relevance": [], "cut": [], "date": []}
        for _ in range(args.queries):
            v = rng.normal(size=dim).astype(np.float32)
            v /= np.linalg.norm(v)

            def page(v: np.ndarray = v, **kw: object) -> object:
                return service.search(SearchQuery(vector=v, k=40, **kw))  # type: ignore[arg-type]

            for name, call in (
                ("plain", lambda v=v: lib.search(v, k=40)),
                ("relevance", lambda: page(min_relevance=0.0)),
                ("cut", lambda: page(min_relevance=0.5)),
                ("date", lambda: page(min_relevance=0.0, sort="date_desc")),
            ):
                t = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - t) * 1000)
        lib.close()
    p50 = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        "## Relevance, the relevance cut and the date sort (bench/relevance.py)",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()},"
        f" torch {torch.__version__}; shared with other jobs and loaded while measured (ratios are"
        " against the plain search measured interleaved in the same run). Library: "
        f"{args.images:,} images (SQLite catalog, random {dim}-d vectors, FAISS exact), the tiny "
        f"test model, {args.queries} random queries.",
        "",
        f"First calibration (64 texts and 24 noise pictures embedded, 88 best-match searches): "
        f"{cal_s:.2f} s (filling the catalog took {fill_s:.0f} s). Background: texts' best match "
        f"up to {cal.text.top:.3f} (sd {cal.text.spread:.3f}).",
        "",
        "| search (k=40) | p50 ms | x plain |",
        "|---|---|---|",
    ]
    for name in ("plain", "relevance", "cut", "date"):
        lines.append(f"| {name} | {p50[name]:.1f} | {p50[name] / p50['plain']:.2f} |")
    lines += [
        "",
        "`cut` includes the second search that counts the hidden results (the page where the "
        "results above the cut end); `date` fetches the up-to-1,000 results above the cut and "
        "sorts them, every page.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
