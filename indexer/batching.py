"""Cutting a sequence into bounded parts (rows per ``IN (...)`` list or bulk insert)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

_T = TypeVar("_T")

CHUNK = 500  # rows per IN (...) / bulk insert


def chunks(seq: Sequence[_T], n: int = CHUNK) -> Iterator[Sequence[_T]]:
    """``seq`` in consecutive parts of at most ``n`` items (the last may be shorter)."""
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
