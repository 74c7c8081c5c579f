"""`clipsearch serve --workers 2`, run as a user runs it, on real processes and sockets: both API
processes answer searches, an image added after the start becomes searchable through each of
them (they follow the catalog's change sequence), both map the same saved index file read-only
and shared (no copy each), and a first process killed with SIGKILL takes its API process along."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
from PIL import Image
from svc_testlib import write_images
from test_cli import CLI, REPO, _env, _poll
from testkit import free_port

HEADER = "x-clipsearch-worker"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _search(base: str, q: str) -> tuple[str, list[str]]:
    """Which API process answered, and the file names it found (a new connection each time)."""
    r = httpx.get(f"{base}/api/v1/search", params={"q": q, "k": 50, "min_relevance": 0}, timeout=30)
    r.raise_for_status()
    names = [Path(str(item.get("path", ""))).name for item in r.json()["results"]]
    return r.headers[HEADER], names


def _shared_faiss_maps(pid: int) -> set[str]:
    """The saved index files ``pid`` maps shared and read-only (``r--s``)."""
    maps = (Path("/proc") / str(pid) / "maps").read_text().splitlines()
    return {
        line.split()[-1]
        for line in maps
        if line.split()[-1].endswith(".faiss") and line.split()[1] == "r--s"
    }


def test_two_api_processes_serve_follow_the_catalog_share_the_index_and_die_together(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    photos = tmp_path / "photos"
    names = {p.name for p in write_images(photos)}
    env = _env(tmp_path / "data", tiny_model_dir, CLIPSEARCH_WATCH_DEBOUNCE_S="0.5")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--workers", "2", "--images", str(photos)],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def answered_by(q: str, *want: str) -> set[str]:
            """The API processes seen answering ``q`` with every name in ``want`` found."""
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "serve.log").read_text()[-3000:])
            seen = set()
            for _ in range(12):
                worker, found = _search(base, q)
                if set(want) <= set(found):
                    seen.add(worker)
            return seen

        # both processes answer, each with the whole ingested library
        _poll(lambda: answered_by("red", *names) == {"0", "1"}, 400, "both processes answer")

        # an image added after the start: the first process's watcher ingests it, and every
        # process finds it through the catalog's change feed
        Image.new("RGB", (60, 40), (250, 120, 10)).save(photos / "added-later.jpg", quality=90)
        _poll(
            lambda: answered_by("added later", "added-later.jpg") == {"0", "1"},
            300,
            "the added image searchable through both processes",
        )

        # a rebuilt index is saved by the worker and mapped, shared, by both API processes
        reindex = subprocess.run(
            [*CLI, "reindex"], env=env, cwd=REPO, capture_output=True, text=True, timeout=400
        )
        assert reindex.returncode == 0, reindex.stderr
        readers = [p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)]
        assert len(readers) == 1, [_cmdline(p) for p in _children(proc.pid)]
        api_pids = [proc.pid, readers[0]]

        def mapped() -> bool:
            answered_by("red")  # a search makes a process pick up the new version soon
            files = [_shared_faiss_maps(pid) for pid in api_pids]
            return bool(files[0]) and files[0] == files[1]

        _poll(mapped, 120, "the saved index mapped shared by both processes")
        index_file = next(iter(_shared_faiss_maps(proc.pid)))
        assert Path(index_file).parent == tmp_path / "data" / "index"

        # SIGKILL of the first process: its API process goes too, and the port closes
        family = [p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)]
        family += [c for p in family for c in _children(p)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        _poll(lambda: not any(_alive(p) for p in family), 120, "every API process gone")
        try:
            httpx.get(f"{base}/api/health", timeout=5)
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("something still answers on the port after the SIGKILL")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_a_saved_index_is_mapped_from_its_file_not_copied(tmp_path: Path) -> None:
    """Each kind the index builds (flat, IVF, ivf-fastscan) loads as a read-only shared mapping
    of its file, and answers as the index it was saved from."""
    import numpy as np

    from clipsearch.indexer.vector_index import IndexStore, build_index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2_000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(2_000, dtype=np.int64) * 7
    for kind, options in (
        ("flat", {}),
        ("ivf", {"flat_threshold": 500, "nlist": 16, "n_tune": 50}),
        ("ivf-fastscan", {"flat_threshold": 500, "fastscan_threshold": 1_000, "n_tune": 50}),
    ):
        built = build_index(ids, vectors, **options)  # type: ignore[arg-type]
        assert built.kind == kind
        store = IndexStore(tmp_path / kind)
        version = store.save(built)
        loaded = store.load()
        path = str(tmp_path / kind / f"v{version:06d}.faiss")
        assert path in _shared_faiss_maps(os.getpid()), kind
        assert (
            loaded.search(vectors[:5], 10)[1].tolist() == built.search(vectors[:5], 10)[1].tolist()
        )


def test_the_postgresql_pool_follows_the_api_threads() -> None:
    from clipsearch.indexer.catalog import engine as catalog_engine
    from clipsearch.service.serve import catalog_connections, size_catalog_pool
    from clipsearch.service.settings import load_settings

    settings = load_settings(search_slots=12, inference_threads=3)
    before = catalog_engine.PG_POOL_SIZE[0]
    try:
        size_catalog_pool(settings)
        engine = catalog_engine.make_engine("postgresql://postgres@127.0.0.1:5432/postgres")
        assert catalog_connections(settings) == 19
        assert engine.pool.size() == 19  # type: ignore[attr-defined]
        engine.dispose()
    finally:
        catalog_engine.PG_POOL_SIZE[0] = before
