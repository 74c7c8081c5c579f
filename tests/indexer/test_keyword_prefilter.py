"""The keyword scorer's cheap pre-check never drops a row the full rule would match."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from clipsearch.indexer import keywords

VOCAB = [
    "receipt", "invoice", "bicycle", "brick", "wall", "harbour", "street", "sunset",
    "café", "Straße", "naïve", "img", "dsc", "2024", "holiday", "birthday", "kitchen",
]  # fmt: skip


def _mutate(word: str, rng: random.Random) -> str:
    """A prefix, an inner part, one or two edits, a transposition, or the word itself."""
    kind = rng.randrange(6)
    if kind == 0 and len(word) > 3:
        return word[: rng.randrange(2, len(word))]
    if kind == 1 and len(word) > 4:
        i = rng.randrange(1, len(word) - 3)
        return word[i : i + 3]
    if kind in (2, 3):
        chars = list(word)
        for _ in range(kind - 1):
            i = rng.randrange(len(chars))
            op = rng.randrange(3)
            if op == 0:
                chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
            elif op == 1 and len(chars) > 2:
                del chars[i]
            else:
                chars.insert(i, rng.choice("aeiou"))
        return "".join(chars)
    if kind == 4 and len(word) > 3:
        i = rng.randrange(len(word) - 1)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word


def _row(rng: random.Random, image_id: int) -> SimpleNamespace:
    def text(n: int) -> str | None:
        if rng.random() < 0.3:
            return None
        return rng.choice(["_", " ", "-", "."]).join(rng.choice(VOCAB) for _ in range(n))

    return SimpleNamespace(
        image_id=image_id, name=text(2), folder=text(3), caption=text(4), ocr=text(6)
    )


def test_the_pre_check_keeps_every_row_the_full_rule_scores(monkeypatch: pytest.MonkeyPatch):
    rng = random.Random(7)
    cases = []
    for i in range(3000):
        row = _row(rng, i)
        words = keywords.query_words(" ".join(_mutate(rng.choice(VOCAB), rng) for _ in range(3)))
        if words:
            cases.append((words, row))
    fast = [keywords.score_row(w, r) for w, r in cases]
    monkeypatch.setattr(keywords, "_may_match", lambda words, row: True)
    full = [keywords.score_row(w, r) for w, r in cases]
    assert fast == full
    matched = sum(h is not None for h in full)
    # the cases exercise both outcomes, typos among the matches
    assert 300 < matched < len(cases) - 300
    assert any(h is not None and 0.0 < h.score < 0.7 for h in full)


def test_a_row_sharing_no_word_is_dropped_before_splitting_its_fields():
    row = SimpleNamespace(
        image_id=1, name="img_012345.jpg", folder="photos/085", caption=None, ocr=None
    )
    assert keywords._may_match(["red", "bicycle", "brick"], row) is False
    assert keywords.score_row(["red", "bicycle"], row) is None
    typo = SimpleNamespace(image_id=2, name="bicylce.jpg", folder=None, caption=None, ocr=None)
    assert keywords._may_match(["bicycle"], typo) is True
    hit = keywords.score_row(["bicycle"], typo)
    assert hit is not None and hit.words == ["bicylce"]
