"""What makes an API token acceptable (a leaf module: the settings check it at start, the
authentication code by the same rule)."""

from __future__ import annotations

import itertools

__all__ = ["MIN_TOKEN_LENGTH", "TOKEN_HOWTO", "weak_token_reason"]

MIN_TOKEN_LENGTH = 16
TOKEN_HOWTO = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
_KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm", "abcdefghijklmnopqrstuvwxyz")


def _predictable(a: str, b: str) -> bool:
    """``b`` after ``a`` is what a person typing an easy token would press next: the same key,
    the next or previous character, or a neighbour on a keyboard row."""
    a, b = a.lower(), b.lower()
    if a == b or abs(ord(a) - ord(b)) == 1:
        return True
    for row in _KEYBOARD_ROWS:
        i, j = row.find(a), row.find(b)
        if i >= 0 and j >= 0 and abs(i - j) == 1:
            return True
    return False


def weak_token_reason(token: str) -> str | None:
    """Why ``token`` is too easy to guess (None when it is not): shorter than 16 characters,
    spaces, fewer than 8 different characters, or mostly a run of neighbouring keys
    (``aaaaaaaaaaaaaaaa``, ``0123456789abcdef``, ``password12345678``, ``qwertyuiop...``)."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"it is shorter than {MIN_TOKEN_LENGTH} characters"
    if token.strip() != token or any(c.isspace() for c in token):
        return "it contains spaces"
    if len(set(token)) < 8:
        return f"it uses only {len(set(token))} different characters"
    surprises = sum(not _predictable(a, b) for a, b in itertools.pairwise(token))
    if surprises < 10:
        return "it is mostly a run of repeated or neighbouring characters"
    return None
