"""Text inside images and keywords: generated pictures with rendered made-up words are ingested
with the real Tesseract, on SQLite and PostgreSQL, and found by their words through the keyword
index and hybrid ranking, even with a tiny random CLIP (whose vectors know nothing of text).

Also: partial words, typos, file-name and caption words; the index follows renames and deletes;
a missing or stuck Tesseract is reported and ingestion goes on; `run_ocr` reads an existing
library later without embedding again; the keyword queries read the index, not the library.
"""

from __future__ import annotations

import os
import shutil
import stat
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image, ImageDraw, ImageFont
from workerutil import Env

from clipsearch.indexer import catalog
from clipsearch.indexer.catalog import Embedding
from clipsearch.indexer.keywords import image_keywords, keyword_search
from clipsearch.indexer.library import Library, LibraryConfig
from clipsearch.indexer.ocr import OcrConfig, probe
from clipsearch.indexer.ocr_job import run_ocr
from clipsearch.indexer.worker import WorkerConfig, WorkerContext

TESSERACT = shutil.which("tesseract")
pytestmark = pytest.mark.skipif(
    TESSERACT is None, reason="needs Tesseract: apt-get install tesseract-ocr tesseract-ocr-eng"
)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"

# Made-up words no tokenizer or random model has a meaning for; each on its own picture.
SIGNS = {
    "sign_a.jpg": ["ZORBLAX CAFE"],
    "sign_b.png": ["KWIMPLE STATION"],
    "sign_c.jpg": ["FLORBENT", "OPEN DAILY"],
    "sign_d.png": ["GRUNDAVIK MARKET"],
    "sign_e.jpg": ["VELTRONIC PARKING"],
}
RECEIPT = [
    "RECEIPT",
    "Blorptastic Deli",
    "Mungberry tea   4.20",
    "Zastrel bagel  3.10",
    "TOTAL 7.30",
]


def render(
    path: Path, lines: list[str], size: tuple[int, int] = (720, 420), mono: bool = False
) -> None:
    """A picture with ``lines`` of text on a coloured background (a sign, or a receipt)."""
    img = Image.new("RGB", size, (236, 230, 214) if mono else (120, 170, 210))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(MONO if mono else FONT, 30 if mono else 46)
    # a few shapes, so pictures differ for the vectors as well
    # seeded by the name, the same in every process (str hash() is salted per process: the
    # shapes moved from run to run, and sometimes beside a word enough to change its reading)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    for _ in range(4):
        x, y = rng.integers(0, size[0] - 60), rng.integers(0, size[1] - 60)
        draw.ellipse((x, y, x + 50, y + 50), fill=tuple(int(c) for c in rng.integers(0, 120, 3)))
    y = 40
    for line in lines:  # dark words on a light panel, with a margin, as on a sign or a slip
        draw.rectangle((20, y - 14, size[0] - 20, y + (46 if mono else 66)), fill=(250, 250, 245))
        draw.text((50, y), line, fill=(15, 15, 15), font=font)
        y += 60 if mono else 90
    img.save(path, quality=95) if path.suffix == ".jpg" else img.save(path)


def make_library_folder(root: Path, plain: int = 12) -> Path:
    photos = root / "photos"
    (photos / "holiday snaps").mkdir(parents=True)
    for name, lines in SIGNS.items():
        render(photos / name, lines)
    render(photos / "scan_0001.png", RECEIPT, size=(620, 420), mono=True)
    # words only in the file name, or only in a caption beside the file
    render(photos / "holiday snaps" / "quokka_selfie.jpg", [])
    render(photos / "IMG_2041.jpg", [])
    (photos / "IMG_2041.txt").write_text("Wedding of Tamsin and Orrick, lakeside\n")
    rng = np.random.default_rng(3)
    for i in range(plain):  # pictures without any text
        pixels = rng.integers(0, 255, size=(12, 16, 3)).astype(np.uint8)
        Image.fromarray(pixels).resize((320, 240), Image.NEAREST).save(photos / f"DSC{i:04d}.jpg")
    return photos


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path) -> Any:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    e = Env(tmp_path / "data", tiny_model_dir, url)
    yield e
    e.close()


def _ask(lib: Library, query: str, mode: str | None = None, k: int = 5) -> list[Any]:
    vector = lib.model.embed_texts([query])[0]
    return lib.search_text(vector, query, mode, k=k)


def _id(env: Env, name: str) -> int:
    return env.ids_by_name()[name]


def test_words_in_pictures_names_and_captions_are_found_first(env: Env, tmp_path: Path) -> None:
    photos = make_library_folder(tmp_path)
    env.ingest(photos)
    ids = env.ids_by_name()

    # the text read in the receipt is kept and shown per image
    receipt = env.lib.image_text(ids["scan_0001.png"])
    assert receipt["ocr_state"] == "done"
    assert "blorptastic" in receipt["text"].lower() and "mungberry" in receipt["text"].lower()
    assert env.lib.image_text(ids["IMG_2041.jpg"])["caption"].startswith("Wedding of Tamsin")
    assert env.lib.image_text(ids["DSC0000.jpg"])["ocr_state"] == "done"

    cases = {
        "zorblax": "sign_a.jpg",  # a word on a sign
        "kwimple": "sign_b.png",
        "florbent": "sign_c.jpg",
        "grundavik market": "sign_d.png",
        "veltronic": "sign_e.jpg",
        "mungberry": "scan_0001.png",  # a line of a receipt
        "blorptastic deli": "scan_0001.png",
        "zastrel": "scan_0001.png",
    }
    for query, name in cases.items():
        hits = _ask(env.lib, query)  # the default mode: hybrid, since the index has content
        assert hits and hits[0].id == ids[name], (query, [(h.id, h.match) for h in hits])
        assert "text" in hits[0].match
        assert set(query.split()) <= set(hits[0].words)

    # a partial word, a small typo, a file-name word, a folder word, a caption word
    hit = _ask(env.lib, "recei")[0]
    assert hit.id == ids["scan_0001.png"] and hit.words == ("receipt",)
    assert _ask(env.lib, "grundavk")[0].id == ids["sign_d.png"]  # one letter missing
    hit = _ask(env.lib, "quokka")[0]
    assert hit.id == ids["quokka_selfie.jpg"] and "filename" in hit.match
    assert "folder" in _ask(env.lib, "snaps")[0].match
    hit = _ask(env.lib, "tamsin")[0]
    assert hit.id == ids["IMG_2041.jpg"] and hit.match[-1] == "caption"

    # each mode on its own: the keyword index alone finds the sign; the vectors alone rank it
    # wherever a random model puts it; nonsense finds nothing by keyword
    assert [h.id for h in _ask(env.lib, "zorblax", "text")] == [ids["sign_a.jpg"]]
    sem = _ask(env.lib, "zorblax", "semantic", k=30)
    assert all(h.match == ("semantic",) for h in sem) and len(sem) == len(ids)
    assert _ask(env.lib, "qqqqzzzz", "text") == []

    # hybrid beats the vectors alone on these queries: recall@5, both measured here
    def recall(mode: str) -> float:
        found = [
            ids[name] in {h.id for h in _ask(env.lib, q, mode, k=5)} for q, name in cases.items()
        ]
        return sum(found) / len(found)

    semantic_recall, hybrid_recall = recall("semantic"), recall("hybrid")
    assert hybrid_recall == 1.0
    assert hybrid_recall > semantic_recall, (hybrid_recall, semantic_recall)

    # the score of a hit is its cosine, also for an image only the keyword index found
    vector = env.lib.model.embed_texts(["zorblax"])[0]
    top = env.lib.search_text(vector, "zorblax", "hybrid", k=1)[0]
    own = env.lib.image_vector(top.id)
    assert top.score == pytest.approx(float(own @ vector), abs=1e-4)


def test_the_index_follows_renames_and_deletes(env: Env, tmp_path: Path) -> None:
    photos = make_library_folder(tmp_path, plain=2)
    env.ingest(photos)
    old_id = _id(env, "quokka_selfie.jpg")
    os.rename(photos / "holiday snaps" / "quokka_selfie.jpg", photos / "wombat_party.jpg")
    env.ingest(photos)  # a move: same id, new name
    assert _id(env, "wombat_party.jpg") == old_id
    assert [h.id for h in _ask(env.lib, "wombat", "text")] == [old_id]
    assert _ask(env.lib, "quokka", "text") == []
    # the text inside the picture stays with it
    sign = _id(env, "sign_b.png")
    env.lib.delete_image(sign)
    assert _ask(env.lib, "kwimple", "text") == []
    with env.lib.Session() as s:
        assert (
            s.scalar(sa.select(image_keywords.c.image_id).where(image_keywords.c.image_id == sign))
            is None
        )


def _fake_tesseract(path: Path, sleep_s: float) -> Path:
    """A 'tesseract' that answers --version and --list-langs but hangs on images."""
    path.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  --version) echo 'tesseract 5.3.0 (stuck test double)';;\n"
        "  --list-langs) echo 'List of available languages (1):'; echo eng;;\n"
        f"  *) sleep {sleep_s};;\n"
        "esac\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _ctx_with(env: Env, ocr: OcrConfig) -> WorkerContext:
    return WorkerContext(
        WorkerConfig(
            data_dir=env.lib.data_dir,
            model_spec=env.ctx.config.model_spec,
            database_url=env.lib.database_url,
            device="cpu",
            batch_size=8,
            decode_workers=1,
            ocr=ocr,
        )
    )


def test_missing_tesseract_is_reported_and_a_later_ocr_job_reads_without_embedding(
    env: Env, tmp_path: Path
) -> None:
    missing = OcrConfig(tesseract=str(tmp_path / "no" / "tesseract"))
    status = probe(missing)
    assert not status.available and "Tesseract was not found" in (status.error or "")
    assert "clipsearch ocr" in (status.error or "")

    env.ctx.dispose()
    env.ctx = _ctx_with(env, missing)
    photos = make_library_folder(tmp_path, plain=2)
    env.ingest(photos)  # no Tesseract: ingestion finishes, every image is searchable
    ids = env.ids_by_name()
    assert env.lib.stats().images.ready == len(ids)
    assert env.lib.image_text(ids["sign_a.jpg"])["ocr_state"] is None  # left for a later job
    assert env.lib.image_text(ids["IMG_2041.jpg"])["caption"]  # captions need no Tesseract
    assert _ask(env.lib, "zorblax", "text") == []
    embedded = env.count_embeddings()
    with env.lib.Session() as s:
        first_vectors = s.execute(sa.select(Embedding.id, Embedding.created_at)).all()

    # an OCR job with Tesseract installed reads the library, embedding nothing again
    job = env.lib.submit_ocr()
    ocr_ctx = _ctx_with(env, OcrConfig())
    try:
        assert run_ocr(ocr_ctx, job.id) == len(ids)
    finally:
        ocr_ctx.dispose()
    info = env.lib.get_job(job.id)
    assert info.state == "done" and info.kind == "ocr" and info.done == len(ids)
    assert env.count_embeddings() == embedded
    with env.lib.Session() as s:
        assert s.execute(sa.select(Embedding.id, Embedding.created_at)).all() == first_vectors
    assert _ask(env.lib, "zorblax")[0].id == ids["sign_a.jpg"]
    # run again: nothing left to read
    again = env.lib.submit_ocr()
    ocr_ctx = _ctx_with(env, OcrConfig())
    try:
        assert run_ocr(ocr_ctx, again.id) == 0
    finally:
        ocr_ctx.dispose()


def test_a_stuck_tesseract_fails_that_image_only(env: Env, tmp_path: Path) -> None:
    fake = _fake_tesseract(tmp_path / "tesseract", sleep_s=30)
    stuck = OcrConfig(tesseract=str(fake), timeout_s=0.5)
    env.ctx.dispose()
    env.ctx = _ctx_with(env, stuck)
    photos = tmp_path / "few"
    photos.mkdir()
    render(photos / "sign.png", ["ZORBLAX"])
    env.ingest(photos)
    (image_id,) = env.ids_by_name().values()
    assert env.lib.get_image(image_id).state == "ready"  # the image is in, searchable
    text = env.lib.image_text(image_id)
    assert text["ocr_state"] == "failed"
    assert "longer than 0.5 s" in text["ocr_error"]


# --------------------------------------------------------------------------------------------
# query plans at library size


N = 10_000
BIG = {"images", "embeddings", "image_keywords"}


def test_the_keyword_side_read_ahead_gives_the_same_page(env: Env, tmp_path: Path) -> None:
    """The API reads the keyword side while the query is encoded and hands it over: the page is
    the one the search reads itself; a read-ahead made for another depth is not used."""
    env.ingest(make_library_folder(tmp_path))
    ids = env.ids_by_name()
    for query in ("zorblax", "grundavk market", "recei", "quokka snaps", "tamsin"):
        vector = env.lib.model.embed_texts([query])[0]
        for mode in ("hybrid", "text"):
            plain = env.lib.search_text(vector, query, mode, k=5)
            ahead = env.lib.keyword_hits(query, k=5)
            assert ahead[0] == 100 and ahead[1], (query, ahead)
            assert env.lib.search_text(vector, query, mode, k=5, keywords=ahead) == plain
    # a read-ahead of another depth (here: made up, pointing at the wrong image) is ignored
    vector = env.lib.model.embed_texts(["zorblax"])[0]
    _, hits = env.lib.keyword_hits("quokka", k=5)
    wrong = (200, hits)
    top = env.lib.search_text(vector, "zorblax", "hybrid", k=5, keywords=wrong)[0]
    assert top.id == ids["sign_a.jpg"]
    # and one of the right depth is what the page is ranked from
    used = env.lib.search_text(vector, "zorblax", "text", k=5, keywords=(100, hits))
    assert [h.id for h in used] == [ids["quokka_selfie.jpg"]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def word_library(request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path) -> Any:
    from test_scale import analyze, fill

    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    lib = Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            database_url=url,
            model_spec=str(tiny_model_dir),
            device="cpu",
            refresh_interval_s=3600,
        )
    )
    served = lib._ensure_served()
    ids = fill(lib, N, 0, np.random.default_rng(0), served.model_id, served.store.dim)
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    rows = []
    for i in ids:  # eight made-up words of 4 to 9 letters per image, as OCR of a sign gives
        words = ["".join(rng.choice(letters, rng.integers(4, 10))) for _ in range(8)]
        rows.append({"i": i, "t": " ".join(words)})
    rows[4321]["t"] += " quibbleworth"
    with lib.Session() as s:
        s.execute(
            sa.update(image_keywords)
            .where(image_keywords.c.image_id == sa.bindparam("i"))
            .values(ocr=sa.bindparam("t"), ocr_state="done"),
            rows,
        )
        s.commit()
    analyze(lib.engine)
    lib.refresh_index()
    yield lib, ids
    lib.close()


def _plan_problems(engine: Any, statements: list[tuple[str, Any]], max_rows: int) -> list[str]:
    """test_scale.plan_problems, knowing the FTS5 table: a SQLite virtual-table scan is an index
    read when its plan says MATCH (":M"), a scan of everything otherwise."""
    import test_scale

    problems = []
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            for sql, params in statements:
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all():
                    detail = str(row[-1])
                    if detail.startswith("SCAN image_keywords_fts") and ":M" not in detail:
                        problems.append(f"{detail}  <-  {sql}")
    old = test_scale.BIG
    test_scale.BIG = old | BIG
    try:
        return problems + test_scale.plan_problems(engine, statements, max_rows)
    finally:
        test_scale.BIG = old


def test_keyword_and_hybrid_queries_read_the_index_not_the_library(word_library: Any) -> None:
    from test_scale import captured

    lib, ids = word_library
    target = ids[4321]
    vector = lib.image_vector(ids[5])
    with captured(lib.engine) as stmts:
        assert [h.id for h in lib.search_text(vector, "quibbleworth", "text", k=5)] == [target]
        assert lib.search_text(vector, "quibblew", "text", k=5)[0].id == target
        assert lib.search_text(vector, "quibbleworht", "text", k=5)[0].id == target  # a typo
        hybrid = lib.search_text(vector, "quibbleworth", "hybrid", k=10)
    # hybrid: the word's picture and the query vector's own picture (cosine 1) both found, in the
    # order of the relevance each shows (README: the fused rule)
    found = {h.id: h for h in hybrid}
    assert target in found and found[target].match == ("text",)
    assert found[target].relevance >= 0.9  # every query word matched: 0.9 x 1 at least
    assert any(h.match == ("semantic",) for h in hybrid)
    assert [h.relevance for h in hybrid] == sorted((h.relevance for h in hybrid), reverse=True)
    assert stmts and _plan_problems(lib.engine, stmts, max_rows=500) == []

    # the detector itself works: a LIKE over all OCR text (no index) is caught
    if lib.engine.dialect.name == "sqlite":
        scan = [("SELECT image_id FROM image_keywords WHERE ocr LIKE '%quibble%'", ())]
    else:
        scan = [("SELECT image_id FROM image_keywords WHERE ocr LIKE '%%quibble%%'", {})]
    assert _plan_problems(lib.engine, scan, max_rows=500) != []
    # the matched rows are read from the index on both databases
    with lib.Session() as s:
        assert [h.id for h in keyword_search(s, "quibbleworth", limit=3)] == [target]
    assert catalog.path_from_db(lib.get_image(target).path).endswith(".jpg")


def test_the_default_mode_does_not_probe_the_catalog_on_every_query(
    env: Env, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    lib = env.lib
    assert lib.has_keywords() is False  # empty: asked again next time, not remembered
    photos = tmp_path / "few"
    photos.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photos / "harbour.png")
    env.ingest(photos)
    assert lib.has_keywords() is True  # the first images count at once
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = lib.engine
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(5):
            assert lib.has_keywords() is True
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert not [s for s in statements if "image_keywords" in s], statements
