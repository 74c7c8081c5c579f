"""The model registry and its downloads, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from clipsearch.model import registry
from clipsearch.model.errors import DownloadError, ModelError
from clipsearch.model.registry import (
    KNOWN_JIT_SHA256,
    MODELS,
    ModelSpec,
    download,
    resolve,
    sha256_file,
)

PAYLOAD = bytes(range(256)) * 4096 + b"end"  # ~1 MB, several read blocks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA = hashlib.sha256(b"something else").hexdigest()


@dataclass
class Server:
    base: str
    files: dict[str, bytes]
    hits: list[str] = field(default_factory=list)

    def count(self, path: str) -> int:
        return self.hits.count(path)


@pytest.fixture()
def server() -> Iterator[Server]:
    state = Server(base="", files={"/weights.pt": PAYLOAD})

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            state.hits.append(self.path)
            if self.path == "/cut.pt":  # promises the whole file, sends half, hangs up
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404, "no such file")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _spec(url: str, sha256: str = PAYLOAD_SHA, name: str = "test-model") -> ModelSpec:
    return ModelSpec(name=name, url=url, sha256=sha256, format="openai-jit")


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _leftovers(folder: Path) -> list[str]:
    """Files under ``folder``, except the downloaders' lock files (empty, never a model)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and p.suffix != ".lock")


def test_good_hash_is_cached_and_not_fetched_twice(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(server.base + "/weights.pt")
    monkeypatch.setitem(MODELS, spec.name, spec)
    path = resolve("test-model", cache_dir=cache)
    assert path == cache / "test-model" / "weights.pt"
    assert path.read_bytes() == PAYLOAD
    assert server.count("/weights.pt") == 1
    assert resolve("test-model", cache_dir=cache) == path
    assert server.count("/weights.pt") == 1  # served from the cache
    assert not [n for n in _leftovers(cache) if n.endswith(".part")]


def test_cache_dir_comes_from_the_environment(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPSEARCH_CACHE", str(tmp_path / "envcache"))
    assert registry.cache_dir() == tmp_path / "envcache"
    spec = _spec(server.base + "/weights.pt")
    monkeypatch.setitem(MODELS, spec.name, spec)
    assert resolve("test-model") == tmp_path / "envcache" / "test-model" / "weights.pt"
    monkeypatch.delenv("CLIPSEARCH_CACHE")
    assert registry.cache_dir() == Path.home() / ".cache" / "clipsearch"


def test_wrong_hash_is_rejected_and_nothing_cached(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(server.base + "/weights.pt", sha256=WRONG_SHA)
    monkeypatch.setitem(MODELS, spec.name, spec)
    with pytest.raises(DownloadError, match="sha256"):
        resolve("test-model", cache_dir=cache)
    assert _leftovers(cache) == []


def test_interrupted_transfer_leaves_no_file(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(server.base + "/cut.pt")
    monkeypatch.setitem(MODELS, spec.name, spec)
    with pytest.raises(DownloadError, match="cut short"):
        resolve("test-model", cache_dir=cache)
    assert _leftovers(cache) == []


def test_corrupt_cached_file_is_fetched_again(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(server.base + "/weights.pt")
    monkeypatch.setitem(MODELS, spec.name, spec)
    path = resolve("test-model", cache_dir=cache)
    path.write_bytes(PAYLOAD[:-3] + b"bad")  # same size, different bytes
    assert resolve("test-model", cache_dir=cache) == path
    assert server.count("/weights.pt") == 2
    assert path.read_bytes() == PAYLOAD


def test_no_network_message_says_what_to_fetch_and_where(cache: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/clip/RN-test.pt"
    with pytest.raises(DownloadError) as info:
        resolve(_spec(url), cache_dir=cache)
    message = str(info.value)
    assert "RN-test.pt" in message
    assert url in message
    assert str(cache / "test-model" / "RN-test.pt") in message
    assert _leftovers(cache) == []


def test_offline_mode_never_touches_the_network(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(server.base + "/weights.pt")
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"offline.*put it at"):
        resolve(spec, cache_dir=cache)
    assert server.hits == []
    # A file the user put there by hand is used, offline.
    target = cache / "test-model" / "weights.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    assert resolve(spec, cache_dir=cache) == target
    assert server.hits == []


def test_real_names_and_aliases_offline(cache: Path) -> None:
    for name in ("ViT-B/32", "ViT-B-32"):
        with pytest.raises(DownloadError) as info:
            resolve(name, cache_dir=cache, offline=True)
        assert "https://openaipublic.azureedge.net/clip/models/40d365715913" in str(info.value)
        assert str(cache / "ViT-B-32" / "ViT-B-32.pt") in str(info.value)


def test_http_error_is_a_download_error(server: Server, cache: Path) -> None:
    with pytest.raises(DownloadError, match="404"):
        resolve(_spec(server.base + "/missing.pt"), cache_dir=cache)
    assert _leftovers(cache) == []


def test_failed_download_keeps_the_existing_file(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "keep.pt"
    dest.write_bytes(b"previous")
    with pytest.raises(DownloadError):
        download(server.base + "/weights.pt", WRONG_SHA, dest)
    assert dest.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == ["keep.pt"]
    assert download(server.base + "/weights.pt", PAYLOAD_SHA, dest) == dest
    assert sha256_file(dest) == PAYLOAD_SHA


def test_download_refuses_other_schemes(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="http"):
        download("file:///etc/passwd", PAYLOAD_SHA, tmp_path / "x")


def test_open_clip_entry_resolves_to_a_loadable_hub_folder(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsearch.model.checkpoints import load_checkpoint
    from clipsearch.model.testing import tiny_config, tiny_model

    buf = io.BytesIO()
    torch.save(tiny_model(seed=3).state_dict(), buf)
    server.files["/oc/open_clip_pytorch_model.bin"] = buf.getvalue()
    cfg = tiny_config()
    spec = ModelSpec(
        name="tiny-openclip",
        url=server.base + "/oc/open_clip_pytorch_model.bin",
        sha256=hashlib.sha256(buf.getvalue()).hexdigest(),
        format="open_clip",
        open_clip_config={
            "model_cfg": {
                "embed_dim": cfg.embed_dim,
                "quick_gelu": cfg.quick_gelu,
                "vision_cfg": {
                    "image_size": cfg.vision.image_size,
                    "layers": cfg.vision.layers,
                    "width": cfg.vision.width,
                    "patch_size": cfg.vision.patch_size,
                    "head_width": cfg.vision.width // cfg.vision.heads,
                },
                "text_cfg": {
                    "context_length": 77,
                    "vocab_size": 49408,
                    "width": cfg.text.width,
                    "heads": cfg.text.heads,
                    "layers": cfg.text.layers,
                },
            },
            "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        },
    )
    monkeypatch.setitem(MODELS, spec.name, spec)
    folder = resolve("tiny-openclip", cache_dir=cache)
    assert folder == cache / "tiny-openclip"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "open_clip_config.json",
        "open_clip_pytorch_model.bin",
    ]
    state, config, preprocess = load_checkpoint(folder)
    assert config == cfg
    assert tuple(preprocess["mean"]) == (0.5, 0.5, 0.5)
    assert torch.equal(state["text_projection"], tiny_model(seed=3).state_dict()["text_projection"])


def test_registry_configs_are_accepted_by_the_checkpoint_reader() -> None:
    # The configs this module writes for the OpenCLIP entries must parse as OpenCLIP configs.
    from clipsearch.model.checkpoints import _open_clip_config

    expected = {
        "ViT-B-32-laion2b_s34b_b79k": (512, 32, 768, 12),
        "ViT-B-16-laion2b_s34b_b88k": (512, 16, 768, 12),
        "ViT-L-14-laion2b_s32b_b82k": (768, 14, 1024, 24),
    }
    for name, (embed, patch, width, layers) in expected.items():
        spec = MODELS[name]
        assert spec.format == "open_clip"
        data = json.loads(json.dumps(registry._plain(spec.open_clip_config)))
        config, _ = _open_clip_config(data, name)
        assert (config.embed_dim, config.vision.patch_size) == (embed, patch)
        assert (config.vision.width, config.vision.layers) == (width, layers)
        assert config.vision.heads == width // 64
        assert config.quick_gelu is False


def test_openai_entries_carry_their_hash_in_the_url() -> None:
    openai = {s.name: s for s in MODELS.values() if s.format == "openai-jit"}
    assert set(openai) == {
        "RN50",
        "RN101",
        "RN50x4",
        "RN50x16",
        "RN50x64",
        "ViT-B-32",
        "ViT-B-16",
        "ViT-L-14",
        "ViT-L-14-336",
    }
    for spec in openai.values():
        assert spec.url.split("/")[-2] == spec.sha256
        assert spec.sha256 in KNOWN_JIT_SHA256
    assert MODELS["ViT-L/14@336px"] is MODELS["ViT-L-14-336"]
    assert len(KNOWN_JIT_SHA256) == 9


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "", ".hidden", "x" * 300])
def test_hostile_spec_names_are_refused(name: str) -> None:
    with pytest.raises(ModelError):
        ModelSpec(
            name=name, url="https://example.org/w.pt", sha256=PAYLOAD_SHA, format="openai-jit"
        )


def test_hostile_file_names_are_refused() -> None:
    with pytest.raises(ModelError):
        ModelSpec(name="ok", url="https://example.org/..", sha256=PAYLOAD_SHA, format="openai-jit")
    with pytest.raises(ModelError):
        ModelSpec(
            name="ok", url="https://example.org/%2e%2e%2fx", sha256=PAYLOAD_SHA, format="openai-jit"
        )


def test_paths_and_unknown_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"x")
    assert resolve(str(weights)) == weights.resolve()
    assert resolve(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/mine.pt") == weights.resolve()
    with pytest.raises(ModelError, match=r"not found.*nothing\.pt"):
        resolve(str(tmp_path / "nothing.pt"))
    with pytest.raises(ModelError, match=r"unknown model 'ViT-Z-99'.*ViT-B-32"):
        resolve("ViT-Z-99")
    with pytest.raises(ModelError):
        resolve("bad\x00name")


def test_parts_left_by_a_killed_download_are_cleaned_up(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(server.base + "/weights.pt")
    stale = cache / "test-model" / ".weights.pt.abc123.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PAYLOAD[:1000])
    path = resolve(spec, cache_dir=cache)
    assert not stale.exists()
    assert [n for n in _leftovers(cache) if not n.startswith(".")] == ["weights.pt"]
    assert path.read_bytes() == PAYLOAD


def test_concurrent_resolves_download_once(server: Server, cache: Path) -> None:
    spec = _spec(server.base + "/weights.pt")
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(resolve(spec, cache_dir=cache))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert results == [cache / "test-model" / "weights.pt"] * 4
    assert server.count("/weights.pt") == 1
