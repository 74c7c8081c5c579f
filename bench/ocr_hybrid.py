"""Words in pictures: what OCR costs at ingestion, and what keyword and hybrid queries cost at
100,000 images.

Two parts, one run:

* **OCR cost per image per core.** Photo-sized JPEGs (1600x1200 and a phone's 4032x3024), half
  with rendered words (signs, receipts), half without, decoded on one core the way a decode
  worker does, without OCR (today's path: JPEG draft decode, thumbnail, model pixels) and with it
  (decoded large enough to read, Tesseract on one thread), interleaved per image; the image tower
  of a ViT-B/32 (random weights, same cost as OpenAI's) on the same core gives the embedding
  cost, so the OCR share of an image's ingestion time is ``ocr / (decode + ocr + embed)``. Also
  how many of the rendered made-up words the keyword index then finds (OCR quality).
* **Query latency at 100k images**, SQLite and PostgreSQL: a catalog filled through its tables
  (the rows ingestion writes, triggers included), a third of the images with OCR-like text drawn
  from a 20,000-word vocabulary with Zipf frequencies, the rest with camera file names only.
  p50/p95 of a keyword-only (``mode=text``) and a hybrid search for a rare word, a common word, a
  prefix, a one-letter typo, two words and a word that is nowhere, interleaved with a
  semantic-only search on the same library as the reference (query vectors precomputed: the
  text encoder's cost is the same in every mode and is in BENCHMARKS' service section).

Writes bench/results/ocr_hybrid.md. Run from a clean worktree:
``nice .venv/bin/python -m bench.ocr_hybrid [--n 100000] [--db sqlite,postgres]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent

from clipsearch.indexer import catalog  # noqa: E402
from clipsearch.indexer.catalog import Embedding, Image  # noqa: E402
from clipsearch.indexer.keywords import image_keywords  # noqa: E402
from clipsearch.indexer.library import Library, LibraryConfig  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "CLIPSEARCH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
SYLLABLES = (
    "ka",
    "lo",
    "mir",
    "ten",
    "bu",
    "sa",
    "ve",
    "dor",
    "pi",
    "nu",
    "gro",
    "fe",
    "zan",
    "tel",
)
SYLLABLES += ("quo", "rix", "ba", "mun", "sto", "pel")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def made_up_word(rng: np.random.Generator) -> str:
    return "".join(rng.choice(SYLLABLES, int(rng.integers(3, 5))))


# --------------------------------------------------------------------------------------------
# Part 1: OCR cost


def photo(
    size: tuple[int, int], words: list[str], rng: np.random.Generator, receipt: bool
) -> bytes:
    """A photo-like JPEG: a blurred colour field with shapes and, when given, lines of words."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFilter, ImageFont

    w, h = size
    small = rng.integers(0, 255, size=(9, 12, 3)).astype(np.uint8)
    img = PILImage.fromarray(small).resize((w, h), PILImage.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(w // 40, w // 8))
        fill = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(2))
    draw = ImageDraw.Draw(img)
    if words:
        scale = w / 1600
        font = ImageFont.truetype(MONO if receipt else FONT, int((34 if receipt else 64) * scale))
        line_h = int((54 if receipt else 100) * scale)
        x0, y0 = int(w * 0.12), int(h * 0.15)
        lines = [" ".join(words[i : i + 2]) for i in range(0, len(words), 2)]
        box_w = int(w * (0.5 if receipt else 0.7))
        draw.rectangle(
            (x0 - 30 * scale, y0 - 20 * scale, x0 + box_w, y0 + line_h * len(lines) + 20 * scale),
            fill=(245, 243, 236),
        )
        for i, line in enumerate(lines):
            draw.text(
                (x0, y0 + i * line_h),
                line.upper() if not receipt else line,
                font=font,
                fill=(20, 20, 20),
            )
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def ocr_part(folder: Path, per_size: int, seed: int = 0) -> dict[str, Any]:
    import torch

    from clipsearch import model as clip_model
    from clipsearch.indexer.decode import decode_file
    from clipsearch.indexer.keywords import words_of
    from clipsearch.indexer.ocr import OcrConfig, probe
    from clipsearch.model.clip import CLIPConfig

    torch.set_num_threads(1)
    config = OcrConfig().checked()
    status = probe(config)
    if not status.available:
        raise SystemExit(f"Tesseract is needed: {status.error}")
    rng = np.random.default_rng(seed)
    sizes = [(1600, 1200), (4032, 3024)]
    files: list[tuple[Path, tuple[int, int], list[str]]] = []
    for size in sizes:
        for i in range(per_size):
            words = [made_up_word(rng) for _ in range(4 if i % 4 == 0 else 2)] if i % 2 == 0 else []
            path = folder / f"p{size[0]}_{i:03d}.jpg"
            path.write_bytes(photo(size, words, rng, receipt=(i % 4 == 0)))
            files.append((path, size, words))
    vit = clip_model.build(CLIPConfig(), seed=0)  # ViT-B/32 shapes, random weights
    thumbs = folder / "thumbs"
    rows: dict[tuple[int, int], dict[str, list[float]]] = {
        s: {"plain": [], "ocr": [], "embed": []} for s in sizes
    }
    found = total = 0
    for n, (path, size, words) in enumerate(files):
        order = ("plain", "ocr") if n % 2 == 0 else ("ocr", "plain")  # interleaved
        result = None
        for kind in order:
            for old in thumbs.rglob("*.jpg"):  # each decode writes its thumbnail, as on ingest
                old.unlink()
            t = time.perf_counter()
            res = decode_file(path, 224, thumbs, text=config if kind == "ocr" else None)
            rows[size][kind].append((time.perf_counter() - t) * 1000)
            if kind == "ocr":
                result = res
        assert result is not None and result.ok, result
        pixels = torch.from_numpy(np.stack([result.pixels] * 8))
        t = time.perf_counter()
        vit.embed_pixels(pixels, batch_size=8)
        rows[size]["embed"].append((time.perf_counter() - t) * 1000 / 8)
        read = set(words_of(result.ocr_text))
        for word in words:
            total += 1
            found += word in read
    out: dict[str, Any] = {"sizes": {}, "found": found, "total": total, "engine": status.engine}
    for size, r in rows.items():
        plain, ocr, embed = (statistics.median(r[k]) for k in ("plain", "ocr", "embed"))
        extra = ocr - plain
        out["sizes"][size] = {
            "plain": plain,
            "ocr": ocr,
            "extra": extra,
            "embed": embed,
            "share": extra / (ocr + embed),
            "n": len(r["plain"]),
        }
    return out


# --------------------------------------------------------------------------------------------
# Part 2: query latency at 100k


def vocabulary(rng: np.random.Generator, n: int = 20_000) -> list[str]:
    words: set[str] = set()
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    while len(words) < n:
        words.add("".join(rng.choice(letters, int(rng.integers(4, 11)))))
    return sorted(words)


def fill(lib: Library, n: int, vocab: list[str], rng: np.random.Generator) -> dict[str, Any]:
    """``n`` ready images with vectors; a third with OCR text (Zipf over ``vocab``)."""
    served = lib._ensure_served()
    dim = served.store.dim
    folders = [f"/photos/{y}/{made_up_word(rng)}" for y in range(2000, 2025) for _ in range(8)]
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    zipf /= zipf.sum()
    now = catalog.utcnow()
    chunk = 5000
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(n, start + chunk)):
            folder = folders[i % len(folders)]
            rows.append(
                {
                    "path": f"{folder}/IMG_{i:06d}.jpg",
                    "folder": folder,
                    "size": 1000 + i,
                    "mtime_ns": 1,
                    "sha256": f"{i:064x}",
                    "width": 4032,
                    "height": 3024,
                    "format": "JPEG",
                    "state": "ready",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        vecs = rng.standard_normal((len(rows), dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        with lib.Session() as s:
            s.execute(sa.insert(Image), rows)
            s.execute(
                sa.insert(Embedding),
                [
                    {
                        "sha256": r["sha256"],
                        "model_id": served.model_id,
                        "vector": catalog.vector_to_bytes(v),
                        "created_at": now,
                    }
                    for r, v in zip(rows, vecs, strict=True)
                ],
            )
            ids = list(
                s.scalars(
                    sa.select(Image.id)
                    .where(Image.path.in_([r["path"] for r in rows]))
                    .order_by(Image.id)
                )
            )
            texts = []
            for image_id in ids:
                if rng.random() < 1 / 3:
                    k = int(rng.integers(8, 40))
                    picked = rng.choice(len(vocab), size=k, p=zipf)
                    texts.append({"i": image_id, "t": " ".join(vocab[j] for j in picked)})
            s.execute(
                sa.update(image_keywords)
                .where(image_keywords.c.image_id == sa.bindparam("i"))
                .values(ocr=sa.bindparam("t"), ocr_state="done"),
                texts,
            )
            s.commit()
    fill_s = time.perf_counter() - t0
    with lib.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    lib.refresh_index()
    return {"fill_s": fill_s, "dim": dim}


def queries(vocab: list[str], rng: np.random.Generator) -> dict[str, str]:
    rare = vocab[15_000]
    common = vocab[3]
    typo = rare[:2] + rare[3:] if len(rare) > 5 else rare + "x"
    return {
        "rare word": rare,
        "common word": common,
        "prefix (5 letters)": vocab[12_000][:5],
        "one-letter typo": typo,
        "two words": f"{vocab[9_000]} {vocab[40]}",
        "nowhere": "qqqzzzxx",
        # issue 22: a pathological word (~1,000 trigram terms before the per-query budget)
        "1,000-letter word": "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 1000)),
    }


def time_queries(lib: Library, qs: dict[str, str], reps: int) -> dict[str, dict[str, list[float]]]:
    rng = np.random.default_rng(7)
    dim = lib._ensure_served().store.dim
    vec = rng.standard_normal(dim).astype(np.float32)
    vec /= np.linalg.norm(vec)
    out: dict[str, dict[str, list[float]]] = {name: {} for name in qs}
    for _ in range(reps):
        for name, q in qs.items():
            for mode in ("semantic", "text", "hybrid"):  # interleaved
                t = time.perf_counter()
                lib.search_text(vec, q, mode, k=20)
                out[name].setdefault(mode, []).append((time.perf_counter() - t) * 1000)
    return out


def query_part(db: str, n: int, tiny: Path, tmp: Path, reps: int) -> dict[str, Any]:
    url = None
    dbname = None
    if db == "postgres":
        dbname = f"bench_ocr_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(
            PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as c:
            c.exec_driver_sql(f"CREATE DATABASE {dbname}")
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname
    lib = Library(
        LibraryConfig(
            data_dir=tmp / f"data-{db}",
            database_url=url,
            model_spec=str(tiny),
            device="cpu",
            refresh_interval_s=3600,
        )
    )
    try:
        rng = np.random.default_rng(1)
        vocab = vocabulary(rng)
        info = fill(lib, n, vocab, rng)
        qs = queries(vocab, rng)
        time_queries(lib, qs, 3)  # warm caches
        timings = time_queries(lib, qs, reps)
        from clipsearch.indexer.hybrid import search_text

        hits = {name: len(search_text(lib, None, q, "text", k=20)) for name, q in qs.items()}
        size = None
        if db == "sqlite":
            size = (tmp / f"data-{db}" / "catalog.db").stat().st_size
        else:
            with lib.engine.connect() as c:
                size = c.exec_driver_sql("SELECT pg_total_relation_size('image_keywords')").scalar()
        return {"info": info, "queries": qs, "timings": timings, "hits": hits, "size": size}
    finally:
        lib.close()
        if dbname:
            admin = sa.create_engine(
                PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
                isolation_level="AUTOCOMMIT",
            )
            with admin.connect() as c:
                c.exec_driver_sql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--per-size", type=int, default=12, help="photos per size (OCR part)")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ocr_hybrid.md"))
    args = parser.parse_args()

    import torch

    from clipsearch.model.checkpoints import save_pretrained
    from clipsearch.model.testing import tiny_model

    started = dt.datetime.now(dt.UTC)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ocr-"))
    (tmp / "photos").mkdir()
    print("OCR part...", file=sys.stderr)
    ocr = ocr_part(tmp / "photos", args.per_size)
    tiny = save_pretrained(tiny_model(seed=0), tmp / "tiny")
    parts = {}
    for db in args.db.split(","):
        print(f"query part on {db}...", file=sys.stderr)
        parts[db] = query_part(db, args.n, tiny, tmp, args.reps)

    tess = subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout
    lines = [
        "# Words in pictures: OCR cost and keyword/hybrid query latency (bench/ocr_hybrid.py)",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} CPUs shared "
        "with other agents' builds and tests (absolute times are noisy; the ratios are measured "
        f"interleaved in the same run). Python {platform.python_version()}, torch "
        f"{torch.__version__}, SQLAlchemy {sa.__version__}, SQLite "
        f"{__import__('sqlite3').sqlite_version}, {tess.splitlines()[0] if tess else 'tesseract'}.",
        "",
        "## OCR at ingestion, per image on one core",
        "",
        f"{args.per_size} JPEGs per size, half with rendered made-up words (signs and receipts), "
        "half without; each decoded without and with OCR, interleaved (median ms). Embedding: "
        "the image tower of a ViT-B/32 (random weights) on the same core, batch of 8.",
        "",
        "| photo | decode (no OCR) | decode + OCR | OCR adds | embed (ViT-B/32) | OCR share of ingestion |",
        "|---|---|---|---|---|---|",
    ]
    for size, r in ocr["sizes"].items():
        lines.append(
            f"| {size[0]}x{size[1]} | {r['plain']:.0f} ms | {r['ocr']:.0f} ms | "
            f"{r['extra']:.0f} ms | {r['embed']:.0f} ms | {100 * r['share']:.0f} % |"
        )
    lines += [
        "",
        f"OCR quality: {ocr['found']} of {ocr['total']} rendered made-up words read exactly "
        f"({100 * ocr['found'] / max(1, ocr['total']):.0f} %); partial and one-edit matches "
        "recover more at query time. Almost all of the added time is Tesseract's own (its page "
        "layout analysis of the whole picture costs about a second whether or not it holds text); "
        "decoding a JPEG at 1600 px instead of the model's 224 is a small part. "
        "`CLIPSEARCH_OCR=off` removes it all. On a GPU worker the embedding gets faster and "
        "OCR's share grows: add decode workers (CPU cores), not GPUs, for OCR-heavy libraries.",
        "",
    ]
    for db, part in parts.items():
        info = part["info"]
        lines += [
            f"## Queries at {args.n:,} images, {db}",
            "",
            f"Catalog filled through its tables in {info['fill_s']:.0f} s (triggers keep the "
            f"keyword index), a third of the images with 8-40 OCR words; vectors {info['dim']}-d, "
            f"exact (flat) index. Keyword index + catalog size: {part['size'] / 2**20:.0f} MB"
            + (" (whole SQLite file)" if db == "sqlite" else " (image_keywords with its indexes)")
            + f". p50 / p95 over {args.reps} runs, k=20, modes interleaved.",
            "",
            "| query | keyword hits | semantic (reference) | text | hybrid | hybrid / semantic |",
            "|---|---|---|---|---|---|",
        ]
        for name, q in part["queries"].items():
            t = part["timings"][name]
            sem, txt, hyb = t["semantic"], t["text"], t["hybrid"]
            lines.append(
                f"| {name} (`{q}`) | {part['hits'][name]} | "
                f"{statistics.median(sem):.1f} / {_pct(sem, 0.95):.1f} ms | "
                f"{statistics.median(txt):.1f} / {_pct(txt, 0.95):.1f} ms | "
                f"{statistics.median(hyb):.1f} / {_pct(hyb, 0.95):.1f} ms | "
                f"{statistics.median(hyb) / statistics.median(sem):.2f} |"
            )
        lines.append("")
    lines += [
        "Hybrid runs the vector search 100 deep (instead of k) and the keyword search, then "
        "reads the vectors of keyword-only hits by key; its recall gain over the vectors alone is "
        "asserted in tests/indexer/test_ocr_keywords.py (recall@5 1.0 vs the semantic-only "
        "baseline of the same run, with a random model).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
