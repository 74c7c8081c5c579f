"""IVF candidates at 1M vectors: which faiss index answers in <= 2 ms at recall@10 >= 0.95?

Issue 15's goal, on this 2-core machine: at 1M CLIP-like 512-d vectors (bench/synthetic_vectors.py),
recall@10 >= 0.95 for image-like AND text-like queries at p50 <= 2 ms single-thread, with a build
(train + add) <= 120 s on 2 cores. This script measures, with faiss directly and in one run on the
same vectors:

* ``today``: what indexer/vector_index.py's build_index builds now (flat inner-product quantizer,
  nlist = 4 x sqrt(N) above 250k vectors (8 x sqrt(N) below), spherical k-means, 10 iterations, on
  131,072 // nlist (30-256) vectors per list, IVF-Flat codes);
* an HNSW coarse quantizer (``IVF{nlist}_HNSW32``) with many more lists, its k-means trained
  two-level (sqrt(nlist) clusters, then each split) on a capped sample;
* 4-bit fast-scan PQ codes (``PQ{m}x4fs``) and RaBitQ codes (``RaBitQfs``) with exact re-ranking
  of a short list from the float vectors (faiss IndexRefineFlat, ``k_factor`` x k candidates);
* the same with inner product and spherical k-means, as today (``ip*``), and fewer lists;

adds are one call per 65,536-vector chunk (faiss parallelises the assignment and the list
appends over the build threads). For each candidate: build time with 2 threads (train / add), the
search parameter tuned to the smallest value whose recall@10 reaches 0.95 on both query kinds
(mean minus 2 standard errors, on tuning queries), then recall@10 on *fresh* queries and single-
query latency (one thread, k=10) p50/p99 at that setting, index bytes and process RSS growth.
Vectors are unit-norm, so L2 and inner-product rankings are the same; the HNSW candidates use L2.

    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python -m bench.ivf_candidates [--n 1000000]
        [--only today,ip2-pq256] [--cache /tmp/ivfc] [--keep]

Writes bench/results/ivf_candidates.md (and .json); --keep keeps the rows of candidates not
measured again (same N; use --cache so every invocation sees the same vectors and answers).
The default set is the one measured at 1M; the others (PQ64, RaBitQ 4-bit, 65,536 lists) were
only tried at 100k during development.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.synthetic_vectors import make_space

K = 10
TARGET = 0.95
BUILD_THREADS = 2
OUT = Path(__file__).resolve().parent / "results" / "ivf_candidates.md"
GOAL_P50_MS = 2.0
GOAL_BUILD_S = 120.0


@dataclass(frozen=True)
class Candidate:
    name: str
    lists_per_sqrt_n: float  # nlist = round(this x sqrt(N)), rounded to a power of two if hnsw
    codec: str  # "Flat" or "PQ{m}x4fs"
    hnsw: bool  # HNSW32 coarse quantizer (two-level k-means) instead of a flat one
    refine: bool  # IndexRefineFlat: exact re-ranking of k_factor * k candidates
    per_list: int = 32  # k-means training vectors per list
    max_train: int = 262_144  # cap on the k-means sample
    ip: bool = False  # inner product and spherical k-means (as today) instead of L2

    def nlist(self, n: int) -> int:
        if not self.hnsw:  # build_index's default_nlist
            mult = 8.0 if n <= 250_000 else 4.0
            return max(1, min(round(mult * math.sqrt(n)), n // 30))
        raw = self.lists_per_sqrt_n * math.sqrt(n)
        return int(2 ** round(math.log2(raw)))

    def factory(self, n: int) -> str:
        if not self.hnsw:
            return f"IVF{self.nlist(n)},{self.codec} (inner product, spherical k-means)"
        s = f"IVF{self.nlist(n)}_HNSW32,{self.codec}"
        s = s + ",RFlat" if self.refine else s
        return s + " (inner product, spherical k-means)" if self.ip else s


CANDIDATES = [
    Candidate("today", 4, "Flat", hnsw=False, refine=False, per_list=0),
    Candidate("hnsw16-flat", 16, "Flat", hnsw=True, refine=False),
    Candidate("hnsw4-pq64", 4, "PQ64x4fs", hnsw=True, refine=True),
    Candidate("hnsw16-pq64", 16, "PQ64x4fs", hnsw=True, refine=True),
    Candidate("hnsw16-pq128", 16, "PQ128x4fs", hnsw=True, refine=True),
    Candidate("hnsw16-pq256", 16, "PQ256x4fs", hnsw=True, refine=True),
    Candidate("hnsw4-pq256", 4, "PQ256x4fs", hnsw=True, refine=True),
    Candidate("hnsw64-pq128", 64, "PQ128x4fs", hnsw=True, refine=True, per_list=16),
    Candidate("ip4-pq256", 4, "PQ256x4fs", hnsw=True, refine=True, ip=True),
    Candidate("ip2-pq256", 2, "PQ256x4fs", hnsw=True, refine=True, ip=True),
    Candidate("ip4-pq128", 4, "PQ128x4fs", hnsw=True, refine=True, ip=True),
    Candidate("hnsw16-rabitq", 16, "RaBitQfs", hnsw=True, refine=True),
    Candidate("hnsw16-rabitq4", 16, "RaBitQfs4", hnsw=True, refine=True),
    Candidate("hnsw4-rabitq4", 4, "RaBitQfs4", hnsw=True, refine=True),
]
DEFAULT = (
    "today", "ip2-pq256", "ip4-pq256", "ip4-pq128", "hnsw4-pq256", "hnsw16-pq256",
    "hnsw16-flat", "hnsw16-rabitq",
)  # fmt: skip
K_FACTORS = (4, 16, 64)
MAX_NPROBE = 2048


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        flags = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
        l3 = next((ln.split(":", 1)[1].strip() for ln in flags.splitlines() if "L3" in ln), "?")
    except (OSError, subprocess.SubprocessError):
        l3 = "?"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "l3": l3,
        "memory_gib": f"{mem:.1f}",
        "versions": f"Python {platform.python_version()}, faiss {faiss.__version__} "
        f"({faiss.get_compile_options().strip()}), numpy {np.__version__}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}",
    }


def recall_rows(got: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array(
        [
            len(set(g[g >= 0].tolist()) & set(t.tolist())) / K
            for g, t in zip(got, truth, strict=True)
        ]
    )


class Built:
    """A built candidate: the faiss index and how to make search parameters for it."""

    def __init__(self, cand: Candidate, index: Any, ivf: Any, nlist: int) -> None:
        self.cand, self.index, self.ivf, self.nlist = cand, index, ivf, nlist
        self._keep: list[Any] = []

    def params(self, nprobe: int, k_factor: int) -> Any:
        p = faiss.SearchParametersIVF()
        p.nprobe = nprobe
        if self.cand.hnsw:
            qp = faiss.SearchParametersHNSW()
            qp.efSearch = max(32, 2 * nprobe)  # the quantizer's beam: twice the lists wanted
            p.quantizer_params = qp
            self._keep.append(qp)
        if not self.cand.refine:
            self._keep.append(p)
            return p
        r = faiss.IndexRefineSearchParameters()
        r.k_factor = float(k_factor)
        r.base_index_params = p
        self._keep += [p, r]
        return r

    def search(self, q: np.ndarray, params: Any) -> np.ndarray:
        return self.index.search(q, K, params=params)[1]


def two_level_kmeans(x: np.ndarray, nlist: int, seed: int, spherical: bool) -> np.ndarray:
    """nlist L2 k-means centroids: sqrt(nlist) clusters, each split in proportion to its size.

    Each level is 10 iterations; a first-level cluster gets at least one and at most as many
    centroids as it has points, so the total is exactly nlist (given len(x) >= nlist).
    """
    d = x.shape[1]
    nc1 = max(1, round(math.sqrt(nlist)))
    top = faiss.Kmeans(
        d, nc1, niter=10, seed=seed, verbose=False, max_points_per_centroid=2000,
        spherical=spherical,
    )  # fmt: skip
    top.train(x)
    assign = top.index.search(x, 1)[1].ravel()
    counts = np.bincount(assign, minlength=nc1)
    alloc = np.floor(counts * nlist / counts.sum()).astype(np.int64)
    alloc = np.minimum(np.maximum(alloc, (counts > 0).astype(np.int64)), counts)
    while alloc.sum() < nlist:  # give the rest to the clusters with most points per centroid
        room = np.where(alloc < counts, counts / (alloc + 1), -1.0)
        alloc[int(np.argmax(room))] += 1
    while alloc.sum() > nlist:  # take back from the clusters with most centroids
        alloc[int(np.argmax(np.where(alloc > 1, alloc, -1)))] -= 1
    parts = []
    for c in np.flatnonzero(alloc):
        pts = np.ascontiguousarray(x[assign == c])
        if alloc[c] == 1:
            mean = pts.mean(axis=0, keepdims=True)
            parts.append(mean / np.linalg.norm(mean) if spherical else mean)
            continue
        km = faiss.Kmeans(
            d, int(alloc[c]), niter=10, seed=seed, verbose=False,
            min_points_per_centroid=1, max_points_per_centroid=256, spherical=spherical,
        )  # fmt: skip
        km.train(pts)
        parts.append(km.centroids)
    return np.vstack(parts).astype(np.float32)


def build(cand: Candidate, xb: np.ndarray, seed: int = 0) -> tuple[Built, dict[str, Any]]:
    n, d = xb.shape
    nl = cand.nlist(n)
    rng = np.random.default_rng(seed)
    faiss.omp_set_num_threads(BUILD_THREADS)
    c0 = time.process_time()
    t0 = time.perf_counter()
    if not cand.hnsw:  # build_index today: spherical k-means, inner-product flat quantizer
        per_list = int(min(256, max(30, 131_072 // nl)))
        n_train = min(n, nl * per_list)
        sample = xb[np.sort(rng.permutation(n)[:n_train])]
        km = faiss.Kmeans(
            d, nl, niter=10, seed=seed, spherical=True, verbose=False,
            min_points_per_centroid=min(30, per_list), max_points_per_centroid=256,
        )  # fmt: skip
        km.train(sample)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nl, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        quantizer.add(np.ascontiguousarray(km.centroids, dtype=np.float32))
        index.train(sample)
        ivf = index
    else:
        n_train = min(n, nl * cand.per_list, cand.max_train)
        per_list = n_train // nl
        sample = xb[np.sort(rng.permutation(n)[:n_train])]
        centroids = two_level_kmeans(sample, nl, seed, spherical=cand.ip)
        metric = faiss.METRIC_INNER_PRODUCT if cand.ip else faiss.METRIC_L2
        index = faiss.index_factory(d, cand.factory(n).split(" ")[0], metric)
        ivf = faiss.extract_index_ivf(index)
        ivf.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))  # builds the HNSW
        index.train(sample[: min(n_train, 65_536)])  # lists are set: this trains only the PQ
    del sample
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for a in range(0, n, 65_536):
        index.add(xb[a : a + 65_536])
    add_s = time.perf_counter() - t1
    build_cpu_s = time.process_time() - c0
    sizes = np.array([ivf.invlists.list_size(i) for i in range(nl)])
    code_bytes = int(sizes.sum()) * (ivf.code_size + 8)
    quant_bytes = int(faiss.serialize_index(ivf.quantizer).size)
    refine_bytes = n * d * 4 if cand.refine else 0
    info = {
        "nlist": nl,
        "train_vectors": int(n_train),
        "train_per_list": int(per_list),
        "train_s": round(train_s, 1),
        "add_s": round(add_s, 1),
        "build_s": round(train_s + add_s, 1),
        "build_cpu_s": round(build_cpu_s, 1),
        "index_mib": round((code_bytes + quant_bytes + refine_bytes) / 2**20),
        "codes_mib": round(code_bytes / 2**20),
        "list_size_max": int(sizes.max()),
        "list_size_mean": round(float(sizes.mean()), 1),
    }
    return Built(cand, index, ivf, nl), info


def tune(
    b: Built, qs: dict[str, np.ndarray], truth: dict[str, np.ndarray], k_factor: int
) -> tuple[int, dict[int, dict[str, float]]]:
    """Smallest nprobe whose recall@10, mean - 2 SE, reaches TARGET on every kind (2 threads).

    At most MAX_NPROBE lists (far past 2 ms at 1M); when no nprobe up to that reaches the
    target, that one is returned and curve[it]['low'] says by how much it fell short.
    """
    faiss.omp_set_num_threads(BUILD_THREADS)
    curve: dict[int, dict[str, float]] = {}

    def ok(p: int) -> bool:
        if p not in curve:
            row, low = {}, 1.0
            for kind, q in qs.items():
                r = recall_rows(b.search(q, b.params(p, k_factor)), truth[kind])
                row[kind] = round(float(r.mean()), 4)
                low = min(low, float(r.mean() - 2 * r.std(ddof=1) / math.sqrt(r.size)))
            row["low"] = round(low, 4)
            curve[p] = row
        return curve[p]["low"] >= TARGET

    top = min(b.nlist, MAX_NPROBE)
    lo, p = 0, 4
    while not ok(p):  # doubling, then bisection between the last failure and the first pass
        lo = p
        if p >= top:
            return top, curve
        p = min(top, p * 2)
    hi = p
    while hi - lo > max(1, hi // 16):  # within ~6% of the smallest passing nprobe
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, curve


def latency(b: Built, queries: np.ndarray, params: Any) -> tuple[list[float], list[float]]:
    """Wall and thread-CPU milliseconds per single query (one thread).

    On a shared machine a query's wall time includes the time the scheduler gave the core to
    another process; its thread CPU time does not, so both are kept.
    """
    faiss.omp_set_num_threads(1)
    for q in queries[:20]:  # warm-up
        b.index.search(q[None, :], K, params=params)
    wall, cpu = [], []
    for q in queries:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        b.index.search(q[None, :], K, params=params)
        wall.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.thread_time() - c0) * 1000.0)
    return wall, cpu


def interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty((a.shape[0] + b.shape[0], a.shape[1]), dtype=a.dtype)
    out[0::2], out[1::2] = a, b
    return out


def vectors(n: int, cache: Path | None) -> np.ndarray:
    space = make_space(512)
    if cache is not None:
        path = cache / f"ivf_candidates_{n}.npy"
        if path.exists():
            return np.load(path, mmap_mode=None)
        xb = space.images(n, seed=1)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, xb)
        return xb
    return space.images(n, seed=1)


def exact(
    xb: np.ndarray, qs: dict[str, np.ndarray], cache: Path | None, key: str
) -> dict[str, np.ndarray]:
    """Exact top-k ids per query kind (kept in the cache folder, if any, next to the vectors)."""
    path = cache / f"ivf_candidates_truth_{key}.npz" if cache is not None else None
    if path is not None and path.exists():
        with np.load(path) as f:
            return {k: f[k] for k in qs}
    out = {k: faiss.knn(q, xb, K, metric=faiss.METRIC_INNER_PRODUCT)[1] for k, q in qs.items()}
    if path is not None:
        np.savez(path, **out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=500, help="fresh queries per kind (recall)")
    ap.add_argument("--tune-queries", type=int, default=500, help="tuning queries per kind")
    ap.add_argument("--latency-queries", type=int, default=400, help="single queries timed")
    names = [c.name for c in CANDIDATES]
    ap.add_argument("--only", default=",".join(DEFAULT), help="candidates: " + ", ".join(names))
    ap.add_argument("--cache", type=Path, default=None, help="folder to keep the vectors in")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--keep", action="store_true",
        help="keep the other candidates' rows of the --out JSON (same N, same vectors and queries)",
    )  # fmt: skip
    args = ap.parse_args()
    chosen = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in names]
    if unknown or not chosen:
        ap.error(f"--only: unknown {unknown or 'empty list'}; choose from {', '.join(names)}")
    if args.keep and not args.out.with_suffix(".json").exists():
        ap.error(f"--keep: {args.out.with_suffix('.json')} does not exist; run without --keep")
    t_start = time.perf_counter()
    load_start = load()
    faiss.omp_set_num_threads(BUILD_THREADS)
    space = make_space(512)
    xb = vectors(args.n, args.cache)
    qs = {
        "image": space.image_queries(args.queries, 2),
        "text": space.text_queries(args.queries, 3),
    }
    tq = {
        "image": space.image_queries(args.tune_queries, 4),
        "text": space.text_queries(args.tune_queries, 5),
    }
    t0 = time.perf_counter()
    truth = exact(xb, qs, args.cache, f"{args.n}_{args.queries}_eval")
    ttruth = exact(xb, tq, args.cache, f"{args.n}_{args.tune_queries}_tune")
    print(f"{args.n} vectors; exact ground truth in {time.perf_counter() - t0:.1f}s", flush=True)
    half = args.latency_queries // 2
    lat_q = interleave(qs["image"][:half], qs["text"][:half])
    # the exact reference, single-thread, on the same machine in the same run
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    faiss.omp_set_num_threads(1)
    exact_t = []
    for q in lat_q[:40]:
        t0 = time.perf_counter()
        flat.search(q[None, :], K)
        exact_t.append((time.perf_counter() - t0) * 1000.0)
    del flat
    gc.collect()
    rows: list[dict[str, Any]] = []
    if args.keep:  # rows of an earlier run on the same vectors, unless measured again now
        old = json.loads(args.out.with_suffix(".json").read_text())
        if old["n"] != args.n:
            ap.error(f"--keep: {args.out.with_suffix('.json')} holds N={old['n']}, not {args.n}")
        rows = [dict(c, run=c.get("run", old["date"])) for c in old["candidates"]
                if c["name"] not in chosen]  # fmt: skip
        load_start = old["load_start"]
    by_name = {c.name: c for c in CANDIDATES}
    for cand in (by_name[name] for name in chosen):  # in the order asked
        row: dict[str, Any] = {"name": cand.name, "factory": cand.factory(args.n), "run": now(),
                               "load_start": load()}  # fmt: skip
        gc.collect()
        rss0 = rss()
        b, info = build(cand, xb)
        row.update(info)
        row["rss_growth_mib"] = round((rss() - rss0) / 2**20)
        print(cand.name, info, flush=True)
        t0 = time.perf_counter()
        options = []  # (p50 on a short timing, nprobe, k_factor, curve)
        for kf in K_FACTORS if cand.refine else (1,):
            nprobe, curve = tune(b, tq, ttruth, kf)
            quick = latency(b, lat_q[:100], b.params(nprobe, kf))[1]  # CPU time: less noisy
            met = curve[nprobe]["low"] >= TARGET
            options.append((float(np.percentile(quick, 50)), nprobe, kf, curve, met))
            print(f"  k_factor {kf}: nprobe {nprobe} {'met' if met else 'NOT met'}, quick p50 "
                  f"{options[-1][0]:.2f} ms", flush=True)  # fmt: skip
        passing = [o for o in options if o[4]]
        best = (
            min(passing, key=lambda o: o[0])
            if passing  # the fastest setting that reaches the target, else the best recall
            else max(options, key=lambda o: o[3][o[1]]["low"])
        )
        row["tune_s"] = round(time.perf_counter() - t0, 1)
        _, nprobe, kf, curve, _ = best
        row["nprobe"] = nprobe
        row["k_factor"] = kf if cand.refine else None
        row["quantizer_ef"] = max(32, 2 * nprobe) if cand.hnsw else None
        row["tune_curve"] = {str(p): c for p, c in sorted(curve.items())}
        row["tune_options"] = [
            {"k_factor": o[2], "nprobe": o[1], "quick_p50_ms": round(o[0], 3), "met": o[4]}
            for o in options
        ]
        params = b.params(nprobe, kf)
        faiss.omp_set_num_threads(BUILD_THREADS)
        row["recall"] = {
            k: round(float(recall_rows(b.search(q, params), truth[k]).mean()), 4)
            for k, q in qs.items()
        }
        times, cpu = latency(b, lat_q, params)
        row["p50_ms"] = round(float(np.percentile(times, 50)), 3)
        row["p99_ms"] = round(float(np.percentile(times, 99)), 3)
        row["cpu_p50_ms"] = round(float(np.percentile(cpu, 50)), 3)
        row["cpu_p99_ms"] = round(float(np.percentile(cpu, 99)), 3)
        row["load_end"] = load()
        row["goal_met"] = bool(
            min(row["recall"].values()) >= TARGET
            and row["p50_ms"] <= GOAL_P50_MS
            and row["build_s"] <= GOAL_BUILD_S
        )
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "tune_curve"}), flush=True)
        del b, params
        gc.collect()
        write(args, rows, load_start, exact_t, lat_q, t_start)  # after each: a partial run counts
    return 0


def write(
    args: argparse.Namespace, rows: list[dict[str, Any]], load_start: list[float],
    exact_t: list[float], lat_q: np.ndarray, t_start: float,
) -> None:  # fmt: skip
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "n": args.n,
        "queries": args.queries,
        "tune_queries": args.tune_queries,
        "latency_queries": int(lat_q.shape[0]),
        "exact_p50_ms": round(float(np.percentile(exact_t, 50)), 2),
        "exact_p99_ms": round(float(np.percentile(exact_t, 99)), 2),
        "load_start": load_start,
        "load_end": load(),
        "seconds": round(time.perf_counter() - t_start),
        "candidates": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.write_text(render(result))
    print(f"wrote {args.out}", file=sys.stderr)


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# IVF candidates at 1M vectors (bench/ivf_candidates.py)",
        "",
        "Rows measured by one or more invocations of this script (`--keep`: the same cached "
        f"vectors, queries and exact answers; see 'measured'), the last written {r['date']}, on {m['cpu']} ({m['cores']} cores, L3 "
        f"{m['l3']}, {m['memory_gib']} GiB), shared with other work: load average (1/5/15 min) "
        f"{' / '.join(map(str, r['load_start']))} at the start of the first, "
        f"{' / '.join(map(str, r['load_end']))} at the end of the last, and per candidate below; "
        f"{m['versions']}. {r['n']:,} CLIP-like 512-d unit vectors (bench/synthetic_vectors.py). "
        f"Recall@10 against exact search on {r['queries']} fresh image-like and {r['queries']} "
        f"fresh text-like queries (not the {r['tune_queries']} + {r['tune_queries']} tuning "
        f"ones). Latency: {r['latency_queries']} single queries (k=10, image and text "
        "alternating) on one thread, straight through faiss (no clipsearch wrapper): wall time "
        "(p50 / p99 ms) and the query thread's CPU time (which leaves out time the scheduler "
        "gave the core to other processes on this shared machine). Build: "
        f'train + add with {BUILD_THREADS} threads; tuning is timed apart ("tune s": every '
        "k_factor tried); 'build CPU s' is the process CPU time of the build over both threads "
        "(on 2 idle cores the build would take about half of it). Exact reference in the first "
        "invocation (faiss IndexFlatIP, one thread): "
        f"p50 {r['exact_p50_ms']} ms, p99 {r['exact_p99_ms']} ms.",
        "",
        "Goal (issue 15): recall@10 >= 0.95 for both kinds, p50 <= 2 ms, build <= 120 s.",
        "",
        "| candidate | faiss index | nlist | k-means sample (per list) | build s (train / add) | "
        "build CPU s | tune s | nprobe | quantizer efSearch | k_factor | recall@10 image | recall@10 text | "
        "p50 ms | p99 ms | CPU p50 / p99 ms | index MiB (codes) | RSS growth MiB | load avg at start / end | goal | measured (UTC) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(r["candidates"], key=lambda c: c["name"] != "today")  # the reference first
    for c in rows:
        lines.append(
            f"| {c['name']} | `{c['factory']}` | {c['nlist']:,} | {c['train_vectors']:,} "
            f"({c['train_per_list']}) | {c['build_s']} ({c['train_s']} / {c['add_s']}) | "
            f"{c['build_cpu_s']} | {c['tune_s']} | {c['nprobe']} | {c['quantizer_ef'] or '-'} | "
            f"{c['k_factor'] or '-'} | {c['recall']['image']} | {c['recall']['text']} | "
            f"{c['p50_ms']} | {c['p99_ms']} | {c['cpu_p50_ms']} / {c['cpu_p99_ms']} | "
            f"{c['index_mib']:,} ({c['codes_mib']:,}) | "
            f"{c['rss_growth_mib']:,} | {c['load_start'][0]} / {c['load_end'][0]} | "
            f"{'met' if c['goal_met'] else 'not met'} | {c.get('run', r['date'])} |"
        )
    lines += ["", "Tuning: recall@10 image / text by nprobe at the chosen k_factor, and the "
              "quick CPU-time p50 (100 single queries) of each k_factor's smallest passing nprobe:", ""]  # fmt: skip
    for c in r["candidates"]:
        curve = "; ".join(f"{p}: {v['image']} / {v['text']}" for p, v in c["tune_curve"].items())
        opts = ", ".join(
            f"k_factor {o['k_factor']}: nprobe {o['nprobe']}, {o['quick_p50_ms']} ms"
            + ("" if o["met"] else " (target not reached)")
            for o in c["tune_options"]
        )
        lines.append(f"- {c['name']}: {curve}" + (f" ({opts})" if c["k_factor"] else ""))
    lines += ["", "## Verdict", ""]
    met = [c for c in r["candidates"] if c["goal_met"]]
    if met:
        win = min(met, key=lambda c: c["p50_ms"])
        lines.append(
            f"Winner on this machine: **{win['name']}**, `{win['factory']}` (nlist {win['nlist']:,}"
            f"), nprobe {win['nprobe']}"
            + (f", quantizer efSearch {win['quantizer_ef']}" if win["quantizer_ef"] else "")
            + (f", k_factor {win['k_factor']}" if win["k_factor"] else "")
            + f": recall@10 {win['recall']['image']} image / {win['recall']['text']} text, p50 "
            f"{win['p50_ms']} ms (CPU {win['cpu_p50_ms']} ms), build {win['build_s']} s. Other "
            f"candidates meeting the goal: {', '.join(c['name'] for c in met if c is not win) or 'none'}."
        )
    else:
        lines.append("No candidate met all three goals in this run; see the table for each one.")
    lines += ["", *READING, "", f"Last invocation: {r['seconds']} s.", ""]
    return "\n".join(lines) + "\n"


READING = [
    "## Reading",
    "",
    "- Text queries set the cost. They sit outside the image cone (the modality gap), so their "
    "true neighbours are spread over many lists: every candidate reaches 0.95 on image queries "
    "with far fewer lists probed than on text ones (the tuning curves above).",
    "- Inner product with spherical k-means (what build_index does today) matters more than "
    "the number of lists: with L2 k-means and an L2 quantizer, 4,096 lists needed nprobe 416 "
    "for text queries; with spherical k-means and an inner-product quantizer, 4,096 lists need "
    "about 90 (see hnsw4-pq256 vs ip4-pq256). 16,384 L2 lists needed nprobe 576 (about "
    "35,000 vectors scanned per query, against about 22,000 for today's 4,000 lists at nprobe "
    "88).",
    "- 4-bit fast-scan PQ needs fine codes and a long re-ranked list on these vectors: "
    "PQ128x4fs never reached the target, even probing 2,048 lists with k_factor 64; "
    "PQ256x4fs (2 dimensions per 4-bit code, 128 bytes a vector) reaches it only with "
    "k_factor 64 (640 candidates re-ranked exactly from the float vectors); k_factor 4 and 16 "
    "do not at any nprobe up to 2,048. In development at 100k, PQ64x4fs missed the target "
    "even scanning every list with k_factor 64 (recall 0.94 image / 0.89 text). Scanning 128-"
    "byte codes with SIMD and re-ranking 640 floats costs about a fifth of scanning the "
    "floats themselves at the same nprobe (ip4-pq256 vs today, both at nprobe 88).",
    "- today's nprobe here (88) is above bench/results/index.md's 57 for the same build: this "
    "script tunes on 500 + 500 queries to mean - 2 standard errors >= 0.95, build_index on "
    "its own (augmented) tuning sets; the ratios between rows are what this table is for.",
    "- Build: a two-level k-means (sqrt(nlist) clusters, each split) on 32 vectors per list "
    "replaces one flat k-means over all lists, and an HNSW quantizer makes the assignment of "
    "each added vector cheap; both run on the 2 build threads (faiss's OpenMP), adding 65,536 "
    "vectors per call. The HNSW quantizer's efSearch is 2 x nprobe here; it was not tuned.",
    "- Memory: the refine step keeps the float vectors (as IVF-Flat does), so the fast-scan "
    "candidates hold the float vectors plus 128 bytes of codes per vector (+130 MiB at 1M).",
    "- How build_index would change for the winner (the lead integrates it): nlist from "
    "2 x sqrt(N) (or 4 x sqrt(N) for more recall margin), rounded to a power of two; centroids "
    "from the two-level spherical k-means above on min(N, 32 x nlist, 262,144) sampled "
    "vectors; quantizer `faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)` holding them; "
    "`faiss.index_factory(d, 'IVF{nlist}_HNSW32,PQ256x4fs,RFlat', faiss.METRIC_INNER_PRODUCT)` "
    "with that quantizer filled before `train` (which then trains only the PQ, on up to 65,536 "
    "vectors); search through `IndexRefineSearchParameters(k_factor=64, base_index_params="
    "SearchParametersIVF(nprobe, quantizer_params=SearchParametersHNSW(efSearch=2 x nprobe)))`; "
    "nprobe tuned by measured recall at k_factor 64 (the IVF-Flat prediction in tune_nprobe "
    "does not model PQ). IndexRefineFlat has no add_with_ids: the catalog ids go through an "
    "IndexIDMap2 around it (or the position -> id array VectorIndex keeps), and id selectors "
    "for filtered searches go in base_index_params. Scores stay inner products.",
]


if __name__ == "__main__":
    sys.exit(main())
