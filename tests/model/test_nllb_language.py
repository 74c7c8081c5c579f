"""NLLB-SigLIP's query language chosen per call (``tokenizer(texts, language=...)``,
``model.embed_texts(texts, language=...)``), as a server reading each query in its own language
needs: the same ids as ``set_language`` (and open_clip's reference ids), nothing shared changed,
and threads asking for different languages at once each get their own."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from clipsearch.model import ModelError, load
from clipsearch.model.hub_tokenizer import HubTokenizer
from clipsearch.model.nllb import NLLBSigLIP

CASE = Path(__file__).parent / "fixtures" / "nllb_siglip"
LANGUAGES = ("fra_Latn", "deu_Latn", "jpn_Jpan", "zho_Hans", "rus_Cyrl")
_MODEL: list[NLLBSigLIP] = []


def _model() -> NLLBSigLIP:
    if not _MODEL:
        model = load(CASE, device="cpu")
        assert isinstance(model, NLLBSigLIP)
        _MODEL.append(model)
    return _MODEL[0]


def _texts() -> list[str]:
    return list(json.loads((CASE / "texts.json").read_text(encoding="utf-8")))


def _set_language_tokens(language: str, texts: list[str]) -> torch.Tensor:
    """The ids of the established way: a tokenizer of its own, its default set to ``language``."""
    tokenizer = HubTokenizer(CASE, clean="whitespace")
    tokenizer.set_language(language)
    return tokenizer(texts, context_length=77)


def _reference_vectors(language: str, texts: list[str]) -> np.ndarray:
    """Texts read as ``language`` the long way: set_language's ids through the text tower."""
    with torch.inference_mode():
        features = _model().encode_text(_set_language_tokens(language, texts))
    return F.normalize(features.float(), dim=-1).numpy()


def test_the_model_lists_its_languages_and_default() -> None:
    model = _model()
    assert model.default_language == "eng_Latn"
    assert len(model.languages) == 202
    assert {"eng_Latn", "fra_Latn", "deu_Latn", "jpn_Jpan"} <= set(model.languages)


@pytest.mark.parametrize("language", ["fra_Latn", "zho_Hans", "rus_Cyrl"])
def test_a_per_call_language_gives_open_clips_ids_and_changes_no_default(language: str) -> None:
    model = _model()
    expected = load_file(CASE / "expected.safetensors")
    tokens = model.tokenize(_texts(), language=language)
    assert torch.equal(tokens, expected[f"tokens_{language}"])  # open_clip's set_language ids
    assert torch.equal(tokens, _set_language_tokens(language, _texts()))
    # and the shared tokenizer is as it was: the next call without a language is English
    assert model.tokenizer.language == "eng_Latn"
    assert torch.equal(model.tokenize(_texts()), expected["tokens"])
    assert not torch.equal(tokens[:, 0], expected["tokens"][:, 0])  # another first (code) token


def test_embed_texts_in_a_language_is_what_set_language_gives() -> None:
    model = _model()
    texts = ["un chien sur la plage", "une voiture rouge"]
    french = model.embed_texts(texts, language="fra_Latn")
    np.testing.assert_allclose(french, _reference_vectors("fra_Latn", texts), atol=1e-6)
    english = model.embed_texts(texts)
    assert np.abs(french - english).max() > 1e-3  # the language is what the tower pools
    np.testing.assert_array_equal(model.embed_texts(texts, language="eng_Latn"), english)


def test_an_unknown_or_refused_language_is_a_clear_error(tmp_path: Path) -> None:
    model = _model()
    for bad in ("french", "xyz_Abcd", "fra_Latn\n", "fra_Lätn", "x" * 5000):
        with pytest.raises(ModelError, match=r"unknown language code .*fra_Latn"):
            model.embed_texts(["a dog"], language=bad)
    assert model.tokenizer.language == "eng_Latn"
    # a hub tokenizer without language codes (not NLLB's) refuses one per call too
    plain = tmp_path / "plain"
    shutil.copytree(CASE, plain)
    cfg = json.loads((plain / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg.pop("tokenizer_class", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    tokenizer = HubTokenizer(plain)
    assert tokenizer.languages == []
    with pytest.raises(ModelError, match="takes no language code"):
        tokenizer(["a dog"], language="fra_Latn")


def test_threads_asking_for_different_languages_at_once_each_get_their_own() -> None:
    model = _model()
    texts = ["a dog on the beach", "ein Hund am Strand", "浜辺の犬"]
    want_tokens = {lang: _set_language_tokens(lang, texts) for lang in LANGUAGES}
    want_vectors = {lang: _reference_vectors(lang, texts) for lang in LANGUAGES}
    # a thread that keeps moving the shared tokenizer's default meanwhile: per-call languages
    # must not see it
    shared = HubTokenizer(CASE)
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for lang in ("eng_Latn", "spa_Latn"):
                shared.set_language(lang)

    def tokens(lang: str) -> bool:
        return all(
            torch.equal(shared(texts, context_length=77, language=lang), want_tokens[lang])
            for _ in range(25)
        )

    def vectors(lang: str) -> bool:
        got = model.embed_texts(texts, language=lang)
        return bool(np.allclose(got, want_vectors[lang], atol=1e-6))

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            work = [lang for lang in LANGUAGES for _ in range(4)]
            token_ok = list(pool.map(tokens, work))
            vector_ok = list(pool.map(vectors, work))
    finally:
        stop.set()
        flipper.join()
    assert all(token_ok), dict(zip(work, token_ok, strict=True))
    assert all(vector_ok), dict(zip(work, vector_ok, strict=True))
    assert model.tokenizer.language == "eng_Latn"
