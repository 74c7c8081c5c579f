"""Issue 22, item 4: a keyword query has a bounded cost, the same budget on SQLite and PostgreSQL.

A 1,000-letter word used to become ~1,000 trigram terms (FTS5 on SQLite, pg_trgm on PostgreSQL):
7 s a query at 100k keyword rows. Here a real catalog of 20,000 images (a third with OCR-like
text) is asked for such a word, for 12 of them, and for a paragraph: every statement sent to the
database carries at most ``keywords.MAX_TERMS`` terms, and ordinary queries still find their
words. The time is printed (bench/ocr_hybrid.py records it at 100k rows in BENCHMARKS.md).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from clipsearch.indexer import catalog, keywords
from clipsearch.indexer.catalog import Image, init_db, session_factory

pytestmark = pytest.mark.slow

ROWS = 20_000


def _vocab(rng: random.Random, n: int = 5000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(4, 10))))
    return sorted(words)


def _fill(session: Session, n: int, vocab: list[str], rng: random.Random) -> None:
    now = catalog.utcnow()
    for start in range(0, n, 5000):
        rows = [
            {
                "path": f"/photos/{i % 97}/IMG_{i:06d}.jpg",
                "folder": f"/photos/{i % 97}",
                "size": 1000 + i,
                "mtime_ns": 1,
                "sha256": f"{i:064x}",
                "width": 10,
                "height": 10,
                "format": "JPEG",
                "state": "ready",
                "created_at": now,
                "updated_at": now,
            }
            for i in range(start, min(n, start + 5000))
        ]
        session.execute(sa.insert(Image), rows)
        ids = session.scalars(
            sa.select(Image.id).where(Image.path.in_([r["path"] for r in rows]))
        ).all()
        texts = [
            {"i": i, "t": " ".join(rng.choices(vocab, k=rng.randint(8, 40)))}
            for i in ids
            if rng.random() < 1 / 3
        ]
        session.execute(
            sa.update(keywords.image_keywords)
            .where(keywords.image_keywords.c.image_id == sa.bindparam("i"))
            .values(ocr=sa.bindparam("t"), ocr_state="done"),
            texts,
        )
    session.commit()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def filled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, list[str]]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    engine = init_db(url)
    rng = random.Random(3)
    vocab = _vocab(rng)
    with session_factory(engine)() as s:
        _fill(s, ROWS, vocab, rng)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    statements: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, params: Any, *a: Any) -> None:
        statements.append(statement + " " + repr(params))

    engine.statements = statements  # type: ignore[attr-defined]
    try:
        yield engine, vocab
    finally:
        engine.dispose()


def _terms(statement: str) -> int:
    """The search terms one statement sends: FTS5 phrases and LIKE patterns counted by the
    trigrams the database looks up for them, tsquery prefixes one each."""
    total = 0
    for phrase in re.findall(r'"((?:[^"]|"")*)"', statement):
        total += max(1, len(phrase) - 2)
    total += len(re.findall(r"\w+:\*", statement))  # a prefix in the tsvector's own index
    for pattern in re.findall(r"'%([^%']*)%'", statement):
        total += max(1, len(pattern) - 2)
    return total


def test_a_thousand_letter_word_costs_a_bounded_number_of_terms(
    filled: tuple[Any, list[str]],
) -> None:
    engine, vocab = filled
    seen: list[str] = engine.statements
    rng = random.Random(9)
    long_word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1000))
    cases = {
        "1000-letter word": long_word,
        "12 long words": " ".join(long_word[i * 80 : i * 80 + 80] for i in range(12)),
        "a paragraph": " ".join(rng.choices(vocab, k=300)),
    }
    with session_factory(engine)() as s:
        for name, query in cases.items():
            seen.clear()
            t = time.perf_counter()
            keywords.keyword_search(s, query, limit=20)
            took = time.perf_counter() - t
            per_statement = [_terms(st) for st in seen]
            print(f"{name}: {took * 1000:.0f} ms, terms per statement {per_statement}")
            assert per_statement and max(per_statement) <= keywords.MAX_TERMS, name
            assert sum(per_statement) <= 4 * keywords.MAX_TERMS, name
        # Ordinary queries are unchanged: a word, a prefix, a one-letter typo find their rows.
        word = vocab[100]
        hits = keywords.keyword_search(s, word, limit=5)
        assert hits and word in hits[0].words
        typo = word[:2] + word[3:] if len(word) > 5 else word + "q"
        assert keywords.keyword_search(s, typo, limit=5)
        # A long word still finds the text it begins (its first MAX_WORD_CHARS letters).
        row_id = hits[0].id
        s.execute(
            sa.update(keywords.image_keywords)
            .where(keywords.image_keywords.c.image_id == row_id)
            .values(ocr="see " + long_word[: keywords.MAX_WORD_CHARS] + "xyz")
        )
        s.commit()
        found = keywords.keyword_search(s, long_word, limit=5)
        assert [h.id for h in found][:1] == [row_id]


def test_query_words_are_capped_in_length_and_number() -> None:
    words = keywords.query_words("x" * 5000 + " " + " ".join(f"w{i}ord" for i in range(100)))
    assert len(words) <= keywords.MAX_WORDS
    assert all(len(w) <= keywords.MAX_WORD_CHARS for w in words)
