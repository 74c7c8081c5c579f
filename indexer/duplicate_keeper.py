"""Which copy of a duplicates group to keep: the one rule every door shows (the API's duplicates
page lists the suggested keeper first and names it; the gallery's compare view and "Keep this
one" follow it).

The largest original first: the most pixels, then the most bytes (a copy re-encoded, resized or
cropped has fewer); between equals, the earliest date (when it was taken, else the file's
modification time); then the smallest image id, so that the choice is stable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["KeeperFacts", "keeper_key", "keeper_order", "member_date"]

_LATEST = dt.datetime.max  # no date at all: after every dated copy


class KeeperFacts(Protocol):
    """What the rule reads of an image (indexer.types.ImageInfo has it)."""

    @property
    def id(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime(self) -> float: ...
    @property
    def width(self) -> int | None: ...
    @property
    def height(self) -> int | None: ...
    @property
    def taken_at(self) -> dt.datetime | None: ...


_T = TypeVar("_T", bound=KeeperFacts)


def member_date(image: KeeperFacts) -> dt.datetime | None:
    """The date the rule compares: when the picture was taken (its camera's wall clock), else
    when the file was last modified (UTC); None when neither is known."""
    if image.taken_at is not None:
        return image.taken_at.replace(tzinfo=None)
    try:
        return dt.datetime.fromtimestamp(float(image.mtime), dt.UTC).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def keeper_key(image: KeeperFacts) -> tuple[int, int, dt.datetime, int]:
    """Sort key: the suggested keeper sorts first (module docstring)."""
    pixels = (image.width or 0) * (image.height or 0)
    return (-pixels, -int(image.size or 0), member_date(image) or _LATEST, int(image.id))


def keeper_order(images: Sequence[_T]) -> list[_T]:
    """``images`` with the suggested keeper first, the others in the rule's order after it."""
    return sorted(images, key=keeper_key)
