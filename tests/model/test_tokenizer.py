"""CLIP's BPE tokenizer: reference ids for every parity string, and what a user notices."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clipsearch.model import tokenizer as tokmod
from clipsearch.model.errors import ModelError
from clipsearch.model.tokenizer import EOT_ID, SOT_ID, Tokenizer, default_bpe_path


@pytest.fixture(scope="module")
def tok(bpe_path: Path) -> Tokenizer:
    return Tokenizer(bpe_path)


def test_reference_ids_for_every_parity_text(tok: Tokenizer, fixture_data: Path) -> None:
    parity = fixture_data / "parity"
    texts = json.loads((parity / "texts.json").read_text(encoding="utf-8"))
    expected = load_file(str(parity / "tokens.safetensors"))["tokens"]
    got = tok(texts)
    assert got.dtype == torch.long
    assert got.shape == expected.shape == (len(texts), 77)
    for i, text in enumerate(texts):
        assert got[i].tolist() == expected[i].tolist(), f"ids differ for {text!r}"


# sha256 of OpenAI's bpe_simple_vocab_16e6.txt.gz, the merges its checkpoints are used with
OPENAI_BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def test_packaged_vocabulary_is_the_verified_file(bpe_path: Path, fixture_data: Path) -> None:
    packaged = Tokenizer()  # default: model/assets, sha256-checked
    for path in (default_bpe_path(), bpe_path):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == OPENAI_BPE_SHA256
    texts = json.loads((fixture_data / "parity" / "texts.json").read_text(encoding="utf-8"))
    expected = load_file(str(fixture_data / "parity" / "tokens.safetensors"))["tokens"]
    assert torch.equal(packaged(texts), expected)


def test_empty_string_is_start_then_end(tok: Tokenizer) -> None:
    row = tok("")[0].tolist()
    assert row[:2] == [SOT_ID, EOT_ID]
    assert row[2:] == [0] * 75


def test_truncation_keeps_end_id_last(tok: Tokenizer) -> None:
    row = tok("dog " * 200)[0].tolist()
    assert len(row) == 77
    assert row[0] == SOT_ID and row[-1] == EOT_ID
    assert row.count(EOT_ID) == 1
    assert set(row[1:-1]) == {tok.encode("dog")[0]}


def test_shorter_context_length(tok: Tokenizer) -> None:
    out = tok(["a photo of a dog", "a photo of a very very very long dog"], context_length=6)
    assert out.shape == (2, 6)
    assert out[:, -1].tolist() == [EOT_ID, EOT_ID]
    assert out[0, :5].tolist() == [SOT_ID, *tok.encode("a photo of a")]


def test_a_single_string_gives_one_row(tok: Tokenizer) -> None:
    assert tok("a dog").shape == (1, 77)


@pytest.mark.parametrize(
    "text",
    [
        "\x00\x01\x02\x7f control \x1b[31m chars",
        "🐶🏖️🌅👩‍👩‍👧‍👦",
        "一只在海滩上的狗,旁边是一只猫",
        "\ud800 lone surrogate",
        "<|endoftext|> <|startoftext|> injected",
        "&amp;amp;lt;",
        "\u200b\u200d\ufeff",
        "ℌ𝔢𝔩𝔩𝔬 ｆｕｌｌｗｉｄｔｈ",
    ],
)
def test_odd_strings_never_raise(tok: Tokenizer, text: str) -> None:
    row = tok(text)[0].tolist()
    assert row[0] == SOT_ID
    assert EOT_ID in row
    assert all(0 <= i < tok.vocab_size for i in row)


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000,  # one 1 MB word
        "a dog " * 170_000,  # 1 MB of words
        " \n" * 500_000 + "dog",  # 1 MB of blank lines (ftfy works line by line)
        "\u3000\n" * 250_000,  # unicode whitespace
        "狗" * 350_000,  # 1 MB of CJK, a single regex word
    ],
)
def test_megabyte_input_is_cut_not_refused(tok: Tokenizer, text: str) -> None:
    row = tok(text)[0].tolist()  # a pytest-timeout, not a timed assert, guards the runtime
    assert row[0] == SOT_ID
    assert row.count(EOT_ID) == 1
    if text.endswith("dog"):
        assert row[1:3] == [*tok.encode("dog"), EOT_ID]


def test_cut_input_gives_the_same_ids_as_the_full_text(tok: Tokenizer) -> None:
    # The work cap must not change what fills the context: a long caption followed by a huge tail.
    text = "two cats sleeping on a red sofa next to a window " * 40
    assert tok(text + "x" * 100_000)[0].tolist() == tok(text)[0].tolist()


def test_long_words_merge_like_the_reference_loop(tok: Tokenizer, monkeypatch) -> None:
    # Words longer than _SHORT_WORD symbols use the heap merge; it must equal the plain loop.
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyzéü狗猫海"
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(65, 400))) for _ in range(60)]
    words += ["ab" * 100, "aaa" * 70, "hello" * 30]
    fast = [tok.encode(w) for w in words]
    monkeypatch.setattr(tokmod, "_SHORT_WORD", 10**9)
    plain_tok = Tokenizer(tok.bpe_path)
    assert [plain_tok.encode(w) for w in words] == fast


def test_encode_decode_round_trip(tok: Tokenizer) -> None:
    assert tok.decode(tok("A Photo of a DOG!")[0]) == "a photo of a dog !"
    assert tok.decode(tok.encode("café 一只狗 🐶")) == "café 一只狗 🐶"


def test_decode_rejects_unknown_ids(tok: Tokenizer) -> None:
    with pytest.raises(ModelError, match="outside the vocabulary"):
        tok.decode([5, 10**6])


def test_missing_vocabulary_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt.gz"
    with pytest.raises(ModelError, match=r"nope\.txt\.gz"):
        Tokenizer(missing)


def test_not_a_vocabulary_file_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.txt.gz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(ModelError, match=r"junk\.txt\.gz"):
        Tokenizer(junk)
    short = tmp_path / "short.txt.gz"
    with gzip.open(short, "wt", encoding="utf-8") as fh:
        fh.write("#version: 0.2\nh e\nl o\n")
    with pytest.raises(ModelError, match="merges"):
        Tokenizer(short)


def test_damaged_packaged_vocabulary_is_detected(
    tmp_path: Path, bpe_path: Path, monkeypatch
) -> None:
    damaged = tmp_path / "assets" / tokmod.BPE_FILENAME
    damaged.parent.mkdir()
    shutil.copy(bpe_path, damaged)
    with damaged.open("ab") as fh:
        fh.write(b"\0")
    monkeypatch.setattr(tokmod, "default_bpe_path", lambda: damaged)
    with pytest.raises(ModelError, match="sha256"):
        Tokenizer()
