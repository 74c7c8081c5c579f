"""The query language (`lang`) through the API, with the tiny NLLB-SigLIP of
tests/model/fixtures/nllb_siglip serving: what the gallery reads (GET /api/search/languages),
`lang` on GET and POST /api/search (text and terms) changing the query vector as the model's
own ``set_language`` would, the cache keeping languages apart, concurrent queries in different
languages batched together, clear 4xx for bad codes, and a model without language codes
ignoring `lang` and saying so."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from svc_testlib import FakeLibrary

from clipsearch.service.query import EmbeddingCache, TextEncoder

NLLB_DIR = Path(__file__).resolve().parents[1] / "model" / "fixtures" / "nllb_siglip"
_MODELS: dict[str, Any] = {}


def _nllb() -> Any:
    if "nllb" not in _MODELS:
        from clipsearch.model import load

        _MODELS["nllb"] = load(NLLB_DIR, device="cpu")
    return _MODELS["nllb"]


def reference(text: str, language: str) -> np.ndarray:
    """``text`` read as ``language`` the long way: a tokenizer of its own set to it
    (``set_language``, parity-tested with open_clip), through the text tower, normalised."""
    from clipsearch.model.hub_tokenizer import HubTokenizer

    tokenizer = HubTokenizer(NLLB_DIR, clean="whitespace")
    tokenizer.set_language(language)
    with torch.inference_mode():
        features = _nllb().encode_text(tokenizer([text], context_length=77))
    return F.normalize(features.float(), dim=-1).numpy()[0]


class RecordingLibrary(FakeLibrary):
    """FakeLibrary with a chosen model, keeping every query vector it is asked to search."""

    def __init__(self, model: Any = None) -> None:
        super().__init__()
        if model is not None:
            self.model = model
        self.vectors: list[np.ndarray] = []

    def search(self, vector: np.ndarray, k: int = 20, offset: int = 0, min_score=None, **kw: Any):
        self.vectors.append(np.asarray(vector, dtype=np.float32).copy())
        return super().search(vector, k=k, offset=offset, min_score=min_score)


@pytest.fixture()
def nllb(make_client: Any) -> tuple[Any, RecordingLibrary]:
    library = RecordingLibrary(_nllb())
    return make_client(library), library


@pytest.fixture()
def clip(make_client: Any) -> tuple[Any, RecordingLibrary]:
    library = RecordingLibrary()  # the tiny CLIP: no language codes
    return make_client(library), library


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, atol=1e-5))


def test_the_languages_endpoint_says_what_the_gallery_offers(nllb: Any, clip: Any) -> None:
    body = nllb[0].get("/api/search/languages").json()
    assert body["language_aware"] is True and body["default"] == "eng_Latn"
    assert len(body["languages"]) == 202 and body["languages"] == sorted(body["languages"])
    assert {"fra_Latn", "deu_Latn", "jpn_Jpan"} <= set(body["languages"])
    plain = clip[0].get("/api/search/languages").json()
    assert plain == {"language_aware": False, "default": None, "languages": []}


def test_lang_reads_the_query_in_that_language(nllb: Any) -> None:
    client, library = nllb
    text = "un chien sur la plage"
    r = client.get("/api/search", params={"q": text, "lang": "fra_Latn", "k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["query"]["lang"] == "fra_Latn"
    assert _close(library.vectors[-1], reference(text, "fra_Latn"))
    assert not _close(library.vectors[-1], reference(text, "eng_Latn"))
    # the same text without lang (asked after: a cached French vector must not answer it) is
    # English, the model's default, and so is lang=eng_Latn
    r = client.get("/api/search", params={"q": text, "k": 3})
    assert r.status_code == 200 and r.json()["query"]["lang"] == "eng_Latn"
    assert _close(library.vectors[-1], reference(text, "eng_Latn"))
    client.get("/api/search", params={"q": text, "lang": "eng_Latn", "k": 3})
    assert _close(library.vectors[-1], reference(text, "eng_Latn"))
    # and French again, now from the cache: still French
    client.get("/api/search", params={"q": text, "lang": "fra_Latn", "k": 3})
    assert _close(library.vectors[-1], reference(text, "fra_Latn"))


def test_lang_in_post_bodies_text_and_terms(nllb: Any) -> None:
    client, library = nllb
    r = client.post("/api/search", json={"text": "ein Hund", "lang": "deu_Latn", "k": 2})
    assert r.status_code == 200, r.text
    assert r.json()["query"]["lang"] == "deu_Latn"
    assert _close(library.vectors[-1], reference("ein Hund", "deu_Latn"))
    # filtered, as the gallery sends a text search with filters
    r = client.post(
        "/api/search",
        json={"text": "犬", "lang": "jpn_Jpan", "k": 2, "filters": {"formats": ["JPEG"]}},
    )
    assert r.status_code == 200, r.text
    assert _close(library.vectors[-1], reference("犬", "jpn_Jpan"))
    # weighted terms (the gallery's "more like this, but with text" is one)
    r = client.post(
        "/api/search", json={"terms": [{"text": "un chat", "weight": 2}], "lang": "fra_Latn"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["query"]["lang"] == "fra_Latn"
    assert _close(library.vectors[-1], reference("un chat", "fra_Latn"))


@pytest.mark.parametrize(
    ("lang", "needle"),
    [
        ("french", "not a FLORES-200 language code"),
        ("fra-Latn", "not a FLORES-200 language code"),
        ("FRA_LATN", "not a FLORES-200 language code"),
        ("fra_Latn\n", "not a FLORES-200 language code"),
        ("fra_Latn\x00", "not a FLORES-200 language code"),
        ("fra_Lätn", "not a FLORES-200 language code"),
        ("日本語_Jpan", "not a FLORES-200 language code"),
        ("xyz_Abcd", "unknown language code 'xyz_Abcd'"),
        ("x" * 65, "at most 64 characters"),
        ("x" * 20_000, "at most 64 characters"),
    ],
)
def test_a_bad_code_is_a_clear_422(nllb: Any, lang: str, needle: str) -> None:
    client, library = nllb
    for r in (
        client.get("/api/search", params={"q": "a dog", "lang": lang}),
        client.post("/api/search", json={"text": "a dog", "lang": lang}),
        client.post("/api/search", json={"terms": [{"text": "a dog"}], "lang": lang}),
    ):
        assert r.status_code == 422, (r.status_code, r.text)
        detail = r.json()["detail"]
        assert detail.startswith("lang") and needle in detail, detail
        if "FLORES" in needle or "unknown" in needle:
            assert "/api/search/languages" in detail  # where the valid codes are
    assert library.vectors == []  # nothing was searched


def test_an_image_search_with_text_terms_reads_them_in_lang(nllb: Any) -> None:
    from svc_testlib import png_bytes

    client, library = nllb
    files = {"file": ("q.png", png_bytes(), "image/png")}
    terms = '[{"text": "un chien"}]'
    r = client.post(
        "/api/search/image", params={"lang": "fra_Latn"}, files=files, data={"terms": terms}
    )
    assert r.status_code == 200, r.text
    assert r.json()["query"]["lang"] == "fra_Latn"
    french = library.vectors[-1]
    r = client.post("/api/search/image", files=files, data={"terms": terms})
    assert r.status_code == 200 and r.json()["query"]["lang"] == "eng_Latn"
    assert not _close(french, library.vectors[-1])  # the text term was read otherwise
    r = client.post(
        "/api/search/image", params={"lang": "fra\x00"}, files=files, data={"terms": terms}
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("lang")


def test_a_model_without_language_codes_ignores_lang_and_says_so(clip: Any) -> None:
    client, library = clip
    r = client.get("/api/search", params={"q": "a red square", "k": 2})
    assert r.status_code == 200 and "lang" not in r.json()["query"]
    plain = library.vectors[-1]
    r = client.get("/api/search", params={"q": "a red square", "k": 2, "lang": "fra_Latn"})
    assert r.status_code == 200, r.text
    query = r.json()["query"]
    assert query["lang_ignored"] == "fra_Latn" and "lang" not in query
    np.testing.assert_array_equal(library.vectors[-1], plain)
    r = client.post("/api/search", json={"terms": [{"text": "a red square"}], "lang": "deu_Latn"})
    assert r.status_code == 200 and r.json()["query"]["lang_ignored"] == "deu_Latn"
    # a code that is not written like one is refused whatever the model
    r = client.get("/api/search", params={"q": "a red square", "lang": "french"})
    assert r.status_code == 422 and "not a FLORES-200 language code" in r.json()["detail"]


def test_the_api_docs_describe_lang(nllb: Any) -> None:
    spec = nllb[0].get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/api/search"]["get"]["parameters"]}
    assert "FLORES-200" in params["lang"]["description"]
    assert "/api/search/languages" in params["lang"]["description"]
    body = spec["components"]["schemas"]["SearchIn"]["properties"]["lang"]
    assert "FLORES-200" in body["description"]
    assert "/api/search/languages" in spec["paths"]


def test_concurrent_queries_in_different_languages_are_batched_yet_each_read_in_its_own() -> None:
    """The batching encoder: requests waiting together in several languages are taken in one
    batch, encoded with one model call per language, and each gets its language's vector."""
    import threading

    model = _nllb()
    calls: list[tuple[tuple[str, ...], str | None]] = []
    all_asked = threading.Event()
    held = threading.Event()

    def embed(texts: Any, language: str | None = None) -> np.ndarray:
        calls.append((tuple(texts), language))
        if language == "spa_Latn":
            held.set()
            all_asked.wait(60)  # holds the worker until every request below is queued
        return model.embed_texts(texts, language=language)  # type: ignore[no-any-return]

    encoder = TextEncoder(embed, model_name="nllb", cache=EmbeddingCache(), window_ms=0)
    text = "a dog on the beach"
    asked = ["fra_Latn", None, "deu_Latn", "fra_Latn", "jpn_Jpan", None]
    try:
        first = encoder.submit(["un perro"], "spa_Latn")
        assert held.wait(60)  # the worker has taken the first request and is held in it
        futures: list[Future[np.ndarray]] = [encoder.submit([text], lang) for lang in asked]
        all_asked.set()
        got = [f.result(timeout=60)[0] for f in futures]
        first.result(timeout=60)
    finally:
        all_asked.set()
        encoder.close()
    for lang, vector in zip(asked, got, strict=True):
        assert _close(vector, reference(text, lang or "eng_Latn")), lang
    assert not _close(got[0], got[1])
    # the six waited together: one batch, one call per language (the two French requests share
    # theirs), each call in one language only
    assert calls[0] == (("un perro",), "spa_Latn")
    assert sorted(lang or "" for _, lang in calls[1:]) == ["", "deu_Latn", "fra_Latn", "jpn_Jpan"]
    assert all(texts == (text,) for texts, _ in calls[1:])


class SwitchingLibrary(RecordingLibrary):
    """A library that switches from one model to another at a chosen read of ``model`` (a
    re-index finishing while a query is being read)."""

    def __init__(self, before: Any, after: Any) -> None:
        self.reads = 0
        self.switch_at: int | None = None
        self._after = after
        super().__init__(before)

    @property  # type: ignore[override]
    def model(self) -> Any:
        self.reads += 1
        switched = self.switch_at is not None and self.reads > self.switch_at
        return self._after if switched else self._before

    @model.setter
    def model(self, value: Any) -> None:
        self._before = value


def test_a_model_switch_while_a_query_is_read_resolves_lang_for_the_model_that_encodes(
    make_client: Any,
) -> None:
    from svc_testlib import shared_tiny_model

    library = SwitchingLibrary(shared_tiny_model(), _nllb())  # CLIP, then NLLB-SigLIP
    client = make_client(library)
    assert client.get("/api/search/languages").json()["language_aware"] is False
    library.switch_at = library.reads + 1  # the request's first look still sees CLIP
    r = client.get("/api/search", params={"q": "un chien", "lang": "fra_Latn", "k": 2})
    assert r.status_code == 200, r.text
    query = r.json()["query"]
    assert query["lang"] == "fra_Latn" and "lang_ignored" not in query
    assert _close(library.vectors[-1], reference("un chien", "fra_Latn"))
