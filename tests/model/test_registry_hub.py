"""Hub entries of the registry (SigLIP, SigLIP 2, MobileCLIP2, XLM-R CLIP): a folder of files
fetched from a Hugging Face-style server on 127.0.0.1, each checked against the hash recorded
here or the one the server publishes (X-Linked-Etag for LFS files behind a redirect, the git blob
id as ETag for small ones), then loaded by name."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from clipsearch.model import registry
from clipsearch.model.errors import DownloadError
from clipsearch.model.registry import MODELS, ModelSpec, resolve

ZOO = Path(__file__).resolve().parents[1] / "fixtures" / "parity-zoo"
# fixture_data fails with the regenerating script named if tests/fixtures lacks a file
pytestmark = pytest.mark.usefixtures("fixture_data")
LFS = (".safetensors", ".bin")


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Hub:
    base: str
    files: dict[str, bytes] = field(default_factory=dict)  # path under /repo/resolve/rev/
    published: dict[str, str] = field(default_factory=dict)  # path -> hash header override
    hide_hash: set[str] = field(default_factory=set)
    tamper: set[str] = field(default_factory=set)
    gets: list[str] = field(default_factory=list)


@pytest.fixture()
def hub() -> Iterator[Hub]:
    state = Hub(base="")
    prefix = "/org/repo/resolve/rev1/"

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _file(self) -> str | None:
            if self.path.startswith(prefix):
                name = self.path[len(prefix) :]
                return name if name in state.files else None
            return None

        def _head_or_redirect(self, body: bool) -> None:
            name = self._file()
            if name is None:
                if self.path.startswith("/cdn/") and self.path[5:] in state.files:
                    data = state.files[self.path[5:]]
                    if self.path[5:] in state.tamper:
                        data = data[:-1] + bytes([data[-1] ^ 1])
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if body:
                        state.gets.append(self.path[5:])
                        self.wfile.write(data)
                    return
                self.send_error(404, "no such file")
                return
            data = state.files[name]
            lfs = name.endswith(LFS)
            if lfs:  # large files: a redirect to the storage host, the LFS sha256 beside it
                self.send_response(302)
                self.send_header("Location", f"{state.base}/cdn/{name}")
                if name not in state.hide_hash:
                    value = state.published.get(name, hashlib.sha256(data).hexdigest())
                    self.send_header("X-Linked-Etag", f'"{value}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if name in state.tamper:
                data = data + b" "
            self.send_response(200)
            if name not in state.hide_hash:
                self.send_header(
                    "ETag", f'"{state.published.get(name, _blob_id(state.files[name]))}"'
                )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                state.gets.append(name)
                self.wfile.write(data)

        def do_HEAD(self) -> None:
            self._head_or_redirect(False)

        def do_GET(self) -> None:
            self._head_or_redirect(True)

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


def _serve_case(hub: Hub, case: str) -> list[str]:
    folder = ZOO / case
    names = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in ("case.json", "expected.safetensors"):
            hub.files[rel] = path.read_bytes()
            names.append(rel)
    return names


def _spec(
    hub: Hub, names: list[str], weights_sha: str = "", name: str = "test-siglip"
) -> ModelSpec:
    weights = next(n for n in names if n.endswith(LFS))
    return ModelSpec(
        name=name,
        url=f"{hub.base}/org/repo/resolve/rev1/{weights}",
        sha256=weights_sha,
        format="hub",
        aliases=("org/repo",),
        files=tuple((n, "") for n in names if n != weights),
    )


def test_a_hub_entry_downloads_verified_once_and_loads_by_name(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsearch import model

    names = _serve_case(hub, "siglip")
    weights = next(n for n in names if n.endswith(LFS))
    sha = hashlib.sha256(hub.files[weights]).hexdigest()
    monkeypatch.setitem(MODELS, "test-siglip", _spec(hub, names, weights_sha=sha))
    monkeypatch.setenv("CLIPSEARCH_CACHE", str(tmp_path / "cache"))
    folder = resolve("test-siglip")
    assert folder == tmp_path / "cache" / "test-siglip"
    for n in names:
        assert (folder / n).read_bytes() == hub.files[n]
    got = model.load("test-siglip", device="cpu")
    ref = model.load(str(ZOO / "siglip"), device="cpu")
    texts = ["a photo of a dog", "two cats"]
    assert torch.equal(got.tokenize(texts), ref.tokenize(texts))
    assert (got.embed_texts(texts) == ref.embed_texts(texts)).all()
    assert got.score_kind == "sigmoid"
    before = len(hub.gets)
    resolve("test-siglip")  # cached and verified: nothing fetched again
    assert len(hub.gets) == before == len(names)
    # offline, with a file gone: the message says what to fetch, from where, how to check it
    (folder / "tokenizer.json").unlink()
    with pytest.raises(DownloadError) as err:
        resolve("test-siglip", offline=True)
    msg = str(err.value)
    assert "tokenizer.json" in msg and "/org/repo/resolve/rev1/tokenizer.json" in msg
    assert "huggingface-cli download org/repo" in msg


@pytest.mark.parametrize(
    ("what", "file", "needle"),
    [
        ("tampered small file", "tokenizer.json", "git blob id"),
        ("tampered weights", "open_clip_model.safetensors", "does not match its published sha256"),
        ("no published hash", "tokenizer.json", "published no hash"),
        ("wrong recorded weights hash", None, "does not match its published sha256"),
    ],
)
def test_anything_that_does_not_match_is_refused_and_not_kept(
    hub: Hub, tmp_path: Path, what: str, file: str | None, needle: str
) -> None:
    names = _serve_case(hub, "siglip")
    sha = ""
    if what == "wrong recorded weights hash":
        sha = hashlib.sha256(b"other weights").hexdigest()
    elif what == "no published hash":
        hub.hide_hash.add(str(file))
    else:
        hub.tamper.add(str(file))
    spec = _spec(hub, names, weights_sha=sha)
    with pytest.raises(DownloadError) as err:
        resolve(spec, cache_dir=tmp_path / "cache")
    assert needle in str(err.value), str(err.value)
    bad = file or "open_clip_model.safetensors"
    assert not (tmp_path / "cache" / "test-siglip" / bad).exists()
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_written_files_complete_a_folder_that_lacks_them(hub: Hub, tmp_path: Path) -> None:
    names = _serve_case(hub, "multilingual")
    keep = [n for n in names if n not in ("open_clip_config.json", "special_tokens_map.json")]
    config = json.loads(hub.files["open_clip_config.json"])
    special = json.loads(hub.files["special_tokens_map.json"])
    spec = ModelSpec(
        name="test-xlmr",
        url=f"{hub.base}/org/repo/resolve/rev1/open_clip_model.safetensors",
        sha256="",
        format="hub",
        files=tuple((n, "") for n in keep if n != "open_clip_model.safetensors"),
        write_files={"open_clip_config.json": config, "special_tokens_map.json": special},
    )
    folder = resolve(spec, cache_dir=tmp_path / "cache")
    from clipsearch import model

    got = model.load(str(folder), device="cpu")
    ref = model.load(str(ZOO / "multilingual"), device="cpu")
    texts = ["ein Hund am Strand", "un chat noir"]
    assert (got.embed_texts(texts) == ref.embed_texts(texts)).all()


def test_the_registry_names_the_new_families() -> None:
    hub_specs = {s.name: s for s in MODELS.values() if s.format == "hub"}
    assert {
        "ViT-B-16-SigLIP",
        "ViT-B-16-SigLIP2",
        "ViT-B-16-SigLIP2-256",
        "ViT-SO400M-14-SigLIP2-384",
        "MobileCLIP2-S2",
        "xlm-roberta-base-ViT-B-32",
        "nllb-clip-base-siglip",
        "MobileCLIP2-B",
    } <= set(hub_specs)
    for spec in hub_specs.values():
        assert spec.url.startswith("https://huggingface.co/")
        repo = spec.aliases[0]
        assert spec.url.startswith(f"https://huggingface.co/{repo}/resolve/")
        assert MODELS[f"hf-hub:{repo}"] is spec
    # the config written for the XLM-R folder is recognised as a Hugging Face text tower CLIP
    from clipsearch.model.families import open_clip_family

    spec = hub_specs["xlm-roberta-base-ViT-B-32"]
    data = json.loads(json.dumps(registry._plain(spec.write_files["open_clip_config.json"])))
    assert open_clip_family(data, Path("."), "registry") == "hf-text"
    assert spec.write_files["special_tokens_map.json"]["pad_token"] == "<pad>"
