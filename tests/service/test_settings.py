"""Settings refuse unsafe values; environment variables and lists parse as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from clipsearch.service.settings import Settings, is_loopback

TOKEN = "Qm7vX2pLr9ZkT4wNc8YhB3sd"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CLIPSEARCH_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_non_loopback_without_token_is_refused(host: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="without an API token"):
        Settings(host=host, data_dir=tmp_path)
    assert Settings(host=host, api_token=TOKEN, data_dir=tmp_path).token == TOKEN
    assert Settings(host=host, insecure=True, data_dir=tmp_path).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.3.2.1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "token",
    [
        "short",
        "has a space in it ok",
        " leadingspace-longtoken",
        "a" * 16,
        "0123456789abcdef",
        "password12345678",
        "qwertyuiopasdfghjkl",
        "abcabcabcabcabcabc",
    ],
)
def test_weak_tokens_are_refused(token: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least 16 characters") as refused:
        Settings(api_token=token, data_dir=tmp_path)
    # the message says how to make a good one
    assert "secrets.token_urlsafe(32)" in str(refused.value)


def test_generated_and_test_tokens_are_accepted(tmp_path: Path) -> None:
    import secrets

    for _ in range(200):
        token = secrets.token_urlsafe(32)
        assert Settings(api_token=token, data_dir=tmp_path).token == token
    for token in ("s3cret-token-for-tests-0123456789", "attack-test-token-0123456789abcdef"):
        assert Settings(api_token=token, data_dir=tmp_path).token == token


def test_environment_and_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("CLIPSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLIPSEARCH_IMAGES", f"{a}:{b}")
    monkeypatch.setenv("CLIPSEARCH_PORT", "9001")
    monkeypatch.setenv("CLIPSEARCH_MODEL", "RN50")
    monkeypatch.setenv("CLIPSEARCH_CORS_ORIGINS", "http://a.example,https://b.example")
    s = Settings()
    assert s.images == [a.resolve(), b.resolve()]
    assert s.effective_allowed_roots == [a.resolve(), b.resolve()]  # default: the images folders
    assert s.port == 9001 and s.model == "RN50"
    assert s.cors_origins == ["http://a.example", "https://b.example"]
    assert s.data_dir == (tmp_path / "data").resolve()
    monkeypatch.setenv("CLIPSEARCH_ALLOWED_ROOTS", f'["{b}"]')
    assert Settings().effective_allowed_roots == [b.resolve(), a.resolve()]  # the images too


def test_defaults_are_safe(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.host == "127.0.0.1"
    assert s.cors_origins == []
    assert s.api_token is None
    assert s.max_upload_bytes == 20 * 1024 * 1024
    assert s.effective_allowed_roots == []
    assert TOKEN not in repr(Settings(api_token=TOKEN, data_dir=tmp_path))  # never logged


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_upload_bytes", 0), ("search_k_max", -1), ("port", 70000), ("cors_origins", "ftp://x")],
)
def test_nonsense_limits_are_refused(field: str, value: object, tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value, "data_dir": tmp_path})


def test_wildcard_cors_with_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="origins explicitly"):
        Settings(cors_origins="*", api_token=TOKEN, data_dir=tmp_path)


def test_the_worker_reads_the_library_settings_as_the_api_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One settings model for both: same data folder default, same model, same store."""
    from clipsearch.indexer.errors import IndexerError
    from clipsearch.indexer.settings import LibrarySettings

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    api = Settings()
    worker = LibrarySettings.from_env({}).worker_config()
    assert worker.data_dir == api.catalog.data_dir == (tmp_path / "xdg" / "clipsearch").resolve()
    assert worker.model_spec == api.models.spec
    monkeypatch.setenv("CLIPSEARCH_MODEL", "ViT-L-14")
    monkeypatch.setenv("CLIPSEARCH_MILVUS_URI", "http://milvus:19530")
    monkeypatch.setenv("CLIPSEARCH_EMBED_BATCH_SIZE", " 8 ")
    monkeypatch.setenv("CLIPSEARCH_DECODE_WORKERS", "")  # empty: unset
    api, worker = Settings(), LibrarySettings.from_env().worker_config()
    assert worker.model_spec == api.models.spec == "ViT-L-14"
    assert worker.store == api.store.config() and worker.store.kind == "milvus"
    assert (worker.batch_size, worker.decode_workers) == (8, None)
    with pytest.raises(IndexerError, match="CLIPSEARCH_EMBED_BATCH_SIZE"):
        LibrarySettings.from_env({"CLIPSEARCH_EMBED_BATCH_SIZE": "0"})
