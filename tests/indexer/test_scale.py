"""A real library's size: the queries that run per poll, per search and per page read what they
need through indexes (checked on the query plans of both databases, not on timings), ids are never
reused, and a refresh reads what changed, not the library.

The 10,000-image catalogs here are filled through the catalog's tables (no image decoding), with
one distinct vector per image: the same rows an ingest writes.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from workerutil import Env, make_images

from clipsearch.indexer import catalog
from clipsearch.indexer.catalog import Embedding, Image, Job
from clipsearch.indexer.library import Library, LibraryConfig

N = 10_000
# Tables whose size follows the library: a plan must never read them whole.
BIG = {"images", "embeddings", "image_tombstones", "jobs", "removed_images"}


# --------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT the engine runs inside the block, with its parameters."""
    out: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not many:
            out.append((statement, params))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        yield out
    finally:
        event.remove(engine, "before_cursor_execute", grab)


def _pg_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _pg_nodes(child)


def plan_problems(
    engine: Engine,
    statements: list[tuple[str, Any]],
    max_rows: int,
    tables: Collection[str] | None = None,
) -> list[str]:
    """What is wrong with the plans of ``statements``. SQLite: a full scan of a library-sized
    table (one of ``tables``) (EXPLAIN QUERY PLAN says SCAN rather than SEARCH). PostgreSQL: more than ``max_rows``
    rows read from one (EXPLAIN ANALYZE counts rows returned and filtered out by every scan, so a
    sequential scan of a 10,000-row table fails while one of an empty table does not)."""
    # BIG read at call time: callers may widen it (test_ocr_keywords adds its tables)
    tables = BIG if tables is None else tables
    problems: list[str] = []
    with engine.connect() as conn:
        for sql, params in statements:
            if engine.dialect.name == "sqlite":
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
                for row in rows:
                    detail = str(row[-1])
                    m = re.match(r"SCAN (\w+)", detail)
                    if m and m.group(1) in tables:
                        problems.append(f"{detail}  <-  {sql}")
            else:
                doc = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).scalar()
                doc = json.loads(doc) if isinstance(doc, str) else doc
                for node in _pg_nodes(doc[0]["Plan"]):
                    rel = node.get("Relation Name")
                    if rel not in tables:
                        continue
                    loops = int(node.get("Actual Loops", 1))
                    read = (
                        int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))
                    ) * loops
                    if read > max_rows:
                        problems.append(f"{node['Node Type']} on {rel} read {read} rows  <-  {sql}")
    return problems


def _vec(rng: np.random.Generator, dim: int) -> bytes:
    v = rng.standard_normal(dim).astype(np.float32)
    return catalog.vector_to_bytes(v / np.linalg.norm(v))


def fill(
    lib: Library, n: int, start: int, rng: np.random.Generator, model_id: int, dim: int
) -> list[int]:
    """Add ``n`` ready images with their own vectors, as a finished ingest leaves them."""
    now = catalog.utcnow()
    rows = [
        {
            "path": f"/library/f{(start + i) % 97}/p{start + i}.jpg",
            "folder": f"/library/f{(start + i) % 97}",
            "size": 1000 + i,
            "mtime_ns": 1,
            "sha256": f"{start + i:064x}",
            "width": 64,
            "height": 48,
            "format": "JPEG",
            "state": "ready",
            "thumbnail": None,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(n)
    ]
    with lib.Session() as s:
        # a commit per chunk of rows: each row's triggers update one counts row, and PostgreSQL
        # walks that row's versions from the transaction's start on every update (one 100k-row
        # transaction took minutes)
        for at in range(0, n, 2_000):
            chunk = rows[at : at + 2_000]
            s.execute(sa.insert(Image), chunk)
            s.execute(
                sa.insert(Embedding),
                [
                    {
                        "sha256": r["sha256"],
                        "model_id": model_id,
                        "vector": _vec(rng, dim),
                        "created_at": now,
                    }
                    for r in chunk
                ],
            )
            s.commit()
        paths = [r["path"] for r in rows]
        return list(s.scalars(sa.select(Image.id).where(Image.path.in_(paths)).order_by(Image.id)))


def analyze(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def big_library(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path
) -> Iterator[tuple[Library, list[int]]]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    lib = Library(
        LibraryConfig(
            data_dir=tmp_path / "data",
            database_url=url,
            model_spec=str(tiny_model_dir),
            device="cpu",
            refresh_interval_s=3600,  # refreshed explicitly
        )
    )
    served = lib._ensure_served()
    ids = fill(lib, N, 0, np.random.default_rng(0), served.model_id, served.index.dim)
    with lib.Session() as s:
        for _ in range(30):
            s.add(Job(kind="ingest", state="done", params={}, done=0, failed=0, errors=[]))
        s.commit()
    analyze(lib.engine)
    try:
        yield lib, ids
    finally:
        lib.close()


# --------------------------------------------------------------------------------------------
# tests


def test_refresh_reads_only_what_changed_with_indexed_plans(
    big_library: tuple[Library, list[int]],
) -> None:
    lib, ids = big_library
    assert lib.refresh_index() == N  # the first refresh takes in the whole (unbuilt) catalog
    served = lib._served
    assert served is not None and len(served.index) == N

    # nothing new: the refresh reads no row, and its queries are index look-ups
    with captured(lib.engine) as stmts:
        assert lib.refresh_index() == 0
    assert stmts and plan_problems(lib.engine, stmts, max_rows=5) == []

    # one new image: one row read, searchable at once
    rng = np.random.default_rng(1)
    (new_id,) = fill(lib, 1, N, rng, served.model_id, served.index.dim)
    assert new_id > max(ids)
    with captured(lib.engine) as stmts:
        assert lib.refresh_index() == 1
    assert plan_problems(lib.engine, stmts, max_rows=5) == []
    assert lib.search(lib.image_vector(new_id), k=1)[0].id == new_id

    # 1,000 new images: the rows read follow the change, not the 10,000 already there
    added = fill(lib, 1000, N + 1, rng, served.model_id, served.index.dim)
    analyze(lib.engine)
    with captured(lib.engine) as stmts:
        assert lib.refresh_index() == 1000
    assert plan_problems(lib.engine, stmts, max_rows=1100) == []
    assert len(served.index) == N + 1001

    # deletions made by another process reach this one's index at its next refresh
    other = Library(lib.config)
    try:
        for image_id in added[:3]:
            other.delete_image(image_id)
    finally:
        other.close()
    with captured(lib.engine) as stmts:
        assert lib.refresh_index() == 3
    assert plan_problems(lib.engine, stmts, max_rows=5) == []
    assert all(i not in served.index for i in added[:3])
    hits = lib.search(
        catalog.bytes_to_vector(_vec(np.random.default_rng(9), served.index.dim)), k=50
    )
    assert not {h.id for h in hits} & set(added[:3])


def test_browse_jobs_stats_and_search_pages_use_indexes(
    big_library: tuple[Library, list[int]],
) -> None:
    lib, ids = big_library
    lib.refresh_index()
    deep = ids[8000]
    with captured(lib.engine) as stmts:
        page, total = lib.list_images(limit=50, after=deep)
        ready, ready_total = lib.list_images(limit=50, state="ready", after=deep)
        first, _ = lib.list_images(limit=50)
        jobs = lib.list_jobs(limit=10)
        older = lib.list_jobs(limit=10, before=jobs[-1].id)
        stats = lib.stats()
        vec = lib.image_vector(ids[1234])
        hits = lib.search(vec, k=20)
        lib.get_image(ids[4321])
    assert [i.id for i in page] == ids[8001:8051]
    assert [i.id for i in ready] == ids[8001:8051]
    assert [i.id for i in first] == ids[:50]
    assert total == ready_total == N and stats.images.total == N
    assert [j.id for j in older] == sorted((j.id for j in older), reverse=True)
    assert older[0].id < jobs[-1].id
    assert hits[0].id == ids[1234]
    assert plan_problems(lib.engine, stmts, max_rows=200) == []


def test_removed_pages_restore_and_the_scans_removal_checks_use_indexes(
    big_library: tuple[Library, list[int]],
) -> None:
    """10,000 removals: the Removed view's pages, a restore's look-up by the old image id, and
    what a scan asks of removals for its new files (by path, by size) are index reads."""
    lib, _ = big_library
    now = catalog.utcnow()
    with lib.Session() as s:
        s.execute(
            sa.insert(catalog.RemovedImage),
            [
                {
                    "image_id": 10**6 + i,
                    "path": f"/gone/p{i}.jpg",
                    "folder": "/gone",
                    "size": 5000 + i,
                    "mtime_ns": 1,
                    "sha256": f"{10**6 + i:064x}",
                    "thumbnail": None,
                    "removed_at": now,
                }
                for i in range(N)
            ],
        )
        s.commit()
    analyze(lib.engine)
    with captured(lib.engine) as stmts:
        first = lib.list_removed(limit=50)
        deeper = lib.list_removed(limit=50, before=first[-1].id - 5000)
        with lib.Session() as s:
            gone = catalog.removed_for_image(s, 10**6 + 1234)
            paths = catalog.removed_paths(s, ["/gone/p17.jpg", "/library/new.jpg"])
            by_size = catalog.removed_content_by_size(s, [5017, 123])
    assert len(first) == 50 and [r.id for r in deeper] == list(
        range(first[-1].id - 5001, first[-1].id - 5051, -1)
    )
    assert gone.path == "/gone/p1234.jpg"
    assert paths == {"/gone/p17.jpg"} and by_size == {5017: {f"{10**6 + 17:064x}"}}
    assert plan_problems(lib.engine, stmts, max_rows=200) == []


def test_watched_folder_listing_and_queueing_use_indexes(
    big_library: tuple[Library, list[int]], tmp_path: Path
) -> None:
    """What the gallery polls (the watched folders with their newest job) and what the watcher
    asks before queueing (is that ingest already waiting?) read indexes, whatever the size."""
    lib, _ = big_library
    (tmp_path / "watched").mkdir()
    folder = lib.add_watched_folder(str(tmp_path / "watched"))
    with lib.Session() as s:
        for _ in range(2000):
            s.add(Job(kind="ingest", state="done", params={}, done=0, failed=0, errors=[]))
        s.commit()
    analyze(lib.engine)
    with captured(lib.engine) as stmts:
        listed = lib.list_watched_folders()
        again = lib.scan_watched_folder(folder.id)  # the first one still waits in the queue
    assert [f.id for f in listed] == [folder.id] and listed[0].last_job is not None
    assert again is None
    assert plan_problems(lib.engine, stmts, max_rows=200) == []


def test_a_scan_of_the_library_is_caught(big_library: tuple[Library, list[int]]) -> None:
    """The plan check itself: a query that reads the whole images table is reported."""
    lib, _ = big_library
    with captured(lib.engine) as stmts, lib.Session() as s:
        s.scalar(sa.select(sa.func.count()).select_from(Image).where(Image.error.is_(None)))
    assert plan_problems(lib.engine, stmts, max_rows=200)


def test_delete_ingest_restart_keeps_every_image_with_its_own_vector(
    env: Env, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from clipsearch import model as clip_model

    folder = tmp_path / "photos"
    paths = make_images(folder, 6, seed=21)
    env.ingest(folder)
    env.reindex()  # an index on disk, as a running library has
    env.lib.refresh_index()
    before = env.ids_by_name()
    victim = paths[-1]  # the highest id: the one SQLite would hand out again without AUTOINCREMENT
    assert before[victim.name] == max(before.values())
    env.lib.delete_image(before[victim.name])
    victim.unlink()
    added = make_images(folder, 2, seed=22)
    env.ingest(folder)
    env.lib.refresh_index()
    after = env.ids_by_name()
    assert set(after) == {p.name for p in paths[:-1] + added}
    assert min(after[p.name] for p in added) > before[victim.name]  # never a deleted image's id

    m = clip_model.load(str(tiny_model_dir), device="cpu")
    files = paths[:-1] + added
    vectors = m.embed_images([str(p) for p in files])

    def check(lib: Library) -> None:
        for path, vec in zip(files, vectors, strict=True):
            hits = lib.search(vec, k=len(files) + 1)
            assert hits[0].id == after[path.name]
            assert before[victim.name] not in {h.id for h in hits}
            stored = lib.image_vector(after[path.name])
            assert float(stored @ vec) == pytest.approx(1.0, abs=1e-3)

    check(env.lib)
    env.lib.close()
    restarted = Library(env.lib.config)
    try:
        check(restarted)
    finally:
        restarted.close()


def test_migrating_an_existing_catalog_numbers_its_rows_and_never_reuses_ids(db_url: str) -> None:
    from alembic import command

    engine = catalog.make_engine(db_url)
    cfg = catalog.alembic_config(db_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    now = catalog.utcnow()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Image.__table__),
            [
                {"path": f"/p/{i}.jpg", "folder": "/p", "size": 1, "mtime_ns": 1, "state": st,
                 "created_at": now, "updated_at": now}
                for i, st in enumerate(["ready", "ready", "pending", "failed", "ready"])
            ],
        )  # fmt: skip
        conn.execute(
            sa.text(
                "INSERT INTO models (name, fingerprint, dim, created_at) VALUES ('m', 'f', 4, :t)"
            ),
            {"t": now},
        )
        # an index built when the library held 9 images, 4 of them deleted since
        conn.execute(
            sa.text(
                "INSERT INTO index_versions (version, model_id, kind, size, path, params, "
                "created_at, active) VALUES (1, 1, 'flat', 9, '/x', :p, :t, :a)"
            ),
            {"p": json.dumps({"max_image_id": 9}), "t": now, "a": True},
        )
    catalog.init_db(db_url, engine=engine)
    versions = Path(catalog.MIGRATIONS_DIR) / "versions"
    newest = max(p.name[:4] for p in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert catalog.schema_revision(engine) == newest > "0001"  # upgraded all the way
    sessions = catalog.session_factory(engine)
    with sessions() as s:
        seqs = s.execute(sa.select(Image.id, Image.change_seq)).all()
        assert sorted(q for _, q in seqs) == sorted(i for i, _ in seqs)  # numbered, distinct
        assert catalog.state_counts(s) == {"ready": 3, "pending": 1, "failed": 1}
        s.add(Image(path="/p/new.jpg", folder="/p", size=1, mtime_ns=1, state="pending"))
        s.commit()
        new_id = s.scalar(sa.select(Image.id).where(Image.path == "/p/new.jpg"))
        assert new_id is not None and new_id > 9  # past every id the old index may hold
        assert catalog.change_watermark(s) > max(q for _, q in seqs)
        assert catalog.state_counts(s)["pending"] == 2
    engine.dispose()


def test_totals_follow_the_rows_through_skipped_inserts_state_changes_and_deletes(
    sessions: Any,
) -> None:
    """The kept per-state totals equal a real count after what ingests do: the same paths
    inserted twice (two jobs over one folder; the second insert skips them), state changes and
    deletions."""
    from clipsearch.indexer.ingest import _insert_ignore

    now = catalog.utcnow()
    rows = [
        {"path": f"/d/{i}.jpg", "folder": "/d", "size": 1, "mtime_ns": 1, "state": "pending",
         "created_at": now, "updated_at": now}
        for i in range(20)
    ]  # fmt: skip

    def real(s: Any) -> dict[str, int]:
        return {
            str(st): int(n)
            for st, n in s.execute(sa.select(Image.state, sa.func.count()).group_by(Image.state))
        }

    with sessions() as s:
        _insert_ignore(s, Image.__table__, rows, ["path"])
        s.commit()
        _insert_ignore(s, Image.__table__, [*rows, {**rows[0], "path": "/d/new.jpg"}], ["path"])
        s.commit()
        assert catalog.state_counts(s) == real(s) == {"pending": 21}
        s.execute(sa.update(Image).where(Image.id <= 5).values(state="ready"))
        s.execute(sa.update(Image).where(Image.id == 6).values(state="failed"))
        s.execute(sa.update(Image).where(Image.id <= 3).values(state="ready"))  # no change
        s.commit()
        catalog.delete_images(s, [1, 6, 7])
        s.commit()
        counts = {k: v for k, v in catalog.state_counts(s).items() if v}
        assert counts == real(s) == {"ready": 4, "pending": 14}
