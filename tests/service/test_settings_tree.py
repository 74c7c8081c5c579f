"""One settings tree: nested groups, the README's flat variables, read once at each edge.

The API, the CLI and the worker processes read the same model (service.settings.Settings, whose
library groups are indexer.settings.LibrarySettings); a CLI flag wins over the environment; a
worker child reads what its parent read; a ``CLIPSEARCH_*`` typo is reported, not ignored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clipsearch.indexer import settings as indexer_settings
from clipsearch.indexer.settings import SettingsError
from clipsearch.indexer.worker import worker_environment
from clipsearch.service.cli import build_parser
from clipsearch.service.settings import Settings, load_settings, settings_from_args

REPO = Path(__file__).resolve().parents[2]
TOKEN = "Qm7vX2pLr9ZkT4wNc8YhB3sd"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CLIPSEARCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(indexer_settings, "_reported", set())  # each test sees its warnings


def test_the_tree_has_groups_and_every_readme_variable_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each variable the settings page (docs/settings.md) names is read by the tree, into its group."""
    section = (REPO / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"`(CLIPSEARCH_[A-Z0-9_]*[A-Z0-9])`", section))
    table = Settings.env_table()
    assert len(documented) > 50
    # the variables README names as process plumbing, not settings (indexer.settings.NOT_SETTINGS)
    plumbing = set(indexer_settings.NOT_SETTINGS)
    assert not sorted(documented - set(table) - plumbing), "documented but read by no setting"
    groups = {group for group, _ in table.values()}
    assert {"catalog", "models", "store", "ocr", "worker", "server", "limits", "search"} <= groups

    monkeypatch.setenv("CLIPSEARCH_PORT", "9001")
    monkeypatch.setenv("CLIPSEARCH_MODEL", "RN50")
    monkeypatch.setenv("CLIPSEARCH_WORKER_CONCURRENCY", "3")
    monkeypatch.setenv("CLIPSEARCH_OCR", " OFF ")
    monkeypatch.setenv("CLIPSEARCH_OCR_LANG", "eng+deu")
    monkeypatch.setenv("CLIPSEARCH_MILVUS_URI", "http://milvus:19530")
    monkeypatch.setenv("CLIPSEARCH_SEARCH_THREADS", "4")
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "1")
    monkeypatch.setenv("CLIPSEARCH_DECODE_WORKERS", "")  # empty: unset
    s = Settings()
    assert s.server.port == 9001 and s.models.spec == "RN50" and s.models.offline
    assert s.worker.concurrency == 3 and s.worker.decode_workers == 0
    assert (s.ocr.mode, s.ocr.lang) == ("off", "eng+deu")
    assert s.store.config().kind == "milvus"
    assert s.search.search_threads == 4
    # the older flat reads resolve through the same table
    assert (s.port, s.model, s.worker_concurrency) == (9001, "RN50", 3)


def test_nested_names_work_and_win_over_flat_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSEARCH_SERVER__PORT", "9100")
    monkeypatch.setenv("CLIPSEARCH_WORKER__CONCURRENCY", "2")
    monkeypatch.setenv("CLIPSEARCH_WORKER_CONCURRENCY", "5")
    s = Settings()
    assert s.server.port == 9100
    assert s.worker.concurrency == 2  # the nested name wins
    # keyword arguments: flat names or whole groups; they win over the environment
    assert Settings(port=9200).server.port == 9200
    assert Settings(server={"port": 9300}).server.port == 9300


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSEARCH_PORT", "eighty")
    monkeypatch.setenv("CLIPSEARCH_OCR_TIMEOUT_S", "0")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "CLIPSEARCH_PORT:" in message and "CLIPSEARCH_OCR_TIMEOUT_S:" in message


def test_unsafe_production_values_are_refused_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIPSEARCH_HOST", "0.0.0.0")
    with pytest.raises(SettingsError, match="CLIPSEARCH_API_TOKEN"):
        load_settings()
    monkeypatch.setenv("CLIPSEARCH_API_TOKEN", TOKEN)
    assert load_settings().server.token == TOKEN


def test_an_unknown_variable_is_reported_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CLIPSEARCH_MODLE", "RN50")
    monkeypatch.setenv("CLIPSEARCH_WORKER_CONCURENCY", "4")
    monkeypatch.setenv("CLIPSEARCH_TEST_PG", "postgresql://x")  # the test suite's own
    with caplog.at_level(logging.WARNING, logger="clipsearch.indexer.settings"):
        settings = load_settings()
        load_settings()  # once per process
    assert settings.models.spec == "ViT-B-32"  # the typo does not set the model
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert any("CLIPSEARCH_MODLE" in x and "did you mean CLIPSEARCH_MODEL?" in x for x in lines)
    assert any(
        "CLIPSEARCH_WORKER_CONCURENCY" in x and "CLIPSEARCH_WORKER_CONCURRENCY" in x for x in lines
    )
    assert not any("TEST_PG" in x for x in lines)


def test_a_cli_flag_overrides_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLIPSEARCH_DATA_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("CLIPSEARCH_MODEL", "RN50")
    monkeypatch.setenv("CLIPSEARCH_WORKER_CONCURRENCY", "2")
    parser = build_parser()
    args = parser.parse_args(["status", "--data-dir", str(tmp_path / "flag")])
    s = settings_from_args(args)
    assert s.catalog.data_dir == (tmp_path / "flag").resolve()
    assert s.models.spec == "RN50"  # no flag: the environment's

    args = parser.parse_args(["worker", "--concurrency", "6", "--model", "ViT-B-16"])
    s = settings_from_args(args)
    assert (s.worker.concurrency, s.models.spec) == (6, "ViT-B-16")
    assert s.worker_config().concurrency == 6

    args = parser.parse_args(
        ["serve", "--host", "0.0.0.0", "--port", "0", "--insecure", "--no-worker"]
    )
    s = settings_from_args(args)
    assert (s.server.host, s.server.port, s.server.insecure) == ("0.0.0.0", 0, True)
    assert s.serve.embedded_worker is False
    s = settings_from_args(parser.parse_args(["serve"]))
    assert s.serve.embedded_worker is True and s.server.insecure is False


def _child_config(env: dict[str, str]) -> dict[str, object]:
    """What a worker process started with ``env`` reads: python -m clipsearch.indexer.worker's
    own first step, in a fresh interpreter."""
    code = (
        "import dataclasses, json\n"
        "from clipsearch.indexer.settings import LibrarySettings\n"
        "c = LibrarySettings.from_env().worker_config()\n"
        "print(json.dumps(dataclasses.asdict(c), default=str))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_the_worker_process_reads_what_the_api_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """serve's settings (environment and flags) reach its worker child through the environment
    the child inherits, plus only the variables a flag or the parent changed."""
    import dataclasses

    monkeypatch.setenv("CLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLIPSEARCH_MODEL", "RN50")
    monkeypatch.setenv("CLIPSEARCH_EMBED_BATCH_SIZE", "16")
    monkeypatch.setenv("CLIPSEARCH_OCR", "off")
    monkeypatch.setenv("CLIPSEARCH_INDEX_COMPRESSION", "sq8")
    monkeypatch.setenv("CLIPSEARCH_DEVICE_DECODE", "off")
    monkeypatch.setenv("CLIPSEARCH_MILVUS_URI", "http://milvus:19530")
    monkeypatch.setenv("CLIPSEARCH_MILVUS_TOKEN", "user:secret")
    monkeypatch.setenv("CLIPSEARCH_CACHE", str(tmp_path / "models"))
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "yes")

    api = load_settings()
    config = api.worker_config()
    child_env = dict(os.environ)
    added = worker_environment(config, child_env)
    # only what the environment does not say already: the resolved catalog and broker URLs
    assert set(added) == {"CLIPSEARCH_DATABASE_URL", "CLIPSEARCH_BROKER_URL"}
    child_env.update(added)
    expected = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    seen = _child_config(child_env)
    for key in ("database_url", "broker_url"):
        expected[key] = seen[key]  # None here: the same default, resolved for the child
    assert seen == expected
    assert seen["store"]["milvus_token"] == "user:secret"  # type: ignore[index]
    # what the worker's model.load is given: the download folder, offline, no foreign TorchScript
    assert (seen["cache_dir"], seen["offline"], seen["allow_jit"]) == (
        str(tmp_path / "models"),
        True,
        False,
    )

    # a flag (serve --model ViT-B-16 --data-dir ...) is passed as its variable, and wins
    parser = build_parser()
    args = parser.parse_args(["serve", "--model", "ViT-B-16", "--data-dir", str(tmp_path / "d2")])
    api = settings_from_args(args)
    config = api.worker_config(concurrency=2)
    child_env = dict(os.environ)
    added = worker_environment(config, child_env)
    assert added["CLIPSEARCH_MODEL"] == "ViT-B-16"
    assert added["CLIPSEARCH_WORKER_CONCURRENCY"] == "2"
    assert "CLIPSEARCH_OCR" not in added and "CLIPSEARCH_EMBED_BATCH_SIZE" not in added
    child_env.update(added)
    seen = _child_config(child_env)
    assert seen["model_spec"] == "ViT-B-16" and seen["concurrency"] == 2
    assert Path(str(seen["data_dir"])) == (tmp_path / "d2").resolve()
    assert (seen["batch_size"], seen["index_compression"]) == (16, "sq8")


def test_nothing_below_the_edges_reads_the_environment() -> None:
    """Settings are read at the edges (indexer/settings.py's model, the worker's and the CLI's
    start) and passed down; the modules below take typed groups. CLIPSEARCH_DEBUG is gone."""
    allowed = {
        # the edge itself: the data folder's default follows XDG_DATA_HOME
        "indexer/settings.py",
        # a worker child inherits this process's environment, plus what differs
        "indexer/worker.py",
        # Tesseract runs with PATH, LANG, LC_ALL and TESSDATA_PREFIX only
        "indexer/ocr.py",
        # the decode pool's forkserver learns its owner's pid (process plumbing, not a setting)
        "indexer/pool_guard.py",
        # the CLI edge: the token `clipsearch search` shows the running server
        "service/cli_search.py",
    }
    write = re.compile(r"os\.environ(\.setdefault\(|\[[^\]]+\]\s*=[^=])")
    found = []
    for package in ("indexer", "service"):
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            text = path.read_text()
            assert "CLIPSEARCH_DEBUG" not in text, rel
            if rel in allowed:
                continue
            for match in re.finditer(r"os\.environ|os\.getenv|getenv\(", text):
                if not write.match(text, match.start()):
                    found.append(f"{rel}:{text.count(chr(10), 0, match.start()) + 1}")
    assert not found, f"environment read below the edges at {found}"
