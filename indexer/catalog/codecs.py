"""How values are stored as text and bytes: file paths losslessly as text (any bytes a file
name holds), and vectors as little-endian float32 bytes.
"""

from __future__ import annotations

import os

import numpy as np
import sqlalchemy as sa

# --------------------------------------------------------------------------------------------
# Paths as text


def path_to_db(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """The lossless text form of a filesystem path (see the module docstring)."""
    text = os.fsdecode(path)
    if "\\" not in text and not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    out: list[str] = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def path_from_db(text: str) -> str:
    """Inverse of :func:`path_to_db`: the filesystem ``str`` to open."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text.startswith("\\\\", i):
            out.append("\\")
            i += 2
        elif ch == "\\" and text.startswith("\\x", i) and i + 4 <= len(text):
            out.append(chr(0xDC00 + int(text[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def folder_of(db_path: str) -> str:
    """The parent folder of a catalog path, in catalog form."""
    head = db_path.rsplit("/", 1)[0]
    return head or "/"


def under_folder(
    column: sa.SQLColumnExpression[str],
    folder_db: str,
    recursive: bool = True,
    *,
    ranged: bool = False,
) -> sa.ColumnElement[bool]:
    """SQL condition: ``column`` (an Image.folder-like text column) is ``folder_db`` or, when
    ``recursive``, below it. Case-sensitive and free of LIKE wildcards on both databases.

    ``ranged`` (only where text compares byte-wise: :func:`indexer.catalog.bytewise_text`) adds
    :func:`folder_range`, so that an index on ``column`` is read over the folder's range instead
    of the whole table; the rows kept are the same."""
    folder_db = folder_db.rstrip("/") or "/"
    if not recursive:
        return column == folder_db
    prefix = folder_db if folder_db.endswith("/") else folder_db + "/"
    exact = sa.or_(column == folder_db, sa.func.substr(column, 1, len(prefix)) == prefix)
    return sa.and_(folder_range(column, folder_db), exact) if ranged else exact


def folder_range(column: sa.SQLColumnExpression[str], folder_db: str) -> sa.ColumnElement[bool]:
    """``folder_db <= column < folder_db/`` with its last ``/`` raised to ``0`` (the next code
    point): where text sorts by code point, every text that is the folder or starts with its
    path and a ``/`` lies in this range (with a few siblings, such as ``folder-old``, that
    :func:`under_folder` leaves out), so it is one range read on an index of ``column``."""
    folder_db = folder_db.rstrip("/") or "/"
    prefix = folder_db if folder_db.endswith("/") else folder_db + "/"
    return sa.and_(column >= folder_db, column < prefix[:-1] + chr(ord("/") + 1))


def path_range(column: sa.SQLColumnExpression[str], folder_db: str) -> sa.ColumnElement[bool]:
    """``folder_db/ <= column < folder_db0``: where text sorts by code point, exactly the paths
    (a path column) that start with the folder's path and a ``/``, i.e. the files anywhere
    under it: one range read on an index of ``column``, and nothing to filter out."""
    folder_db = folder_db.rstrip("/") or "/"
    prefix = folder_db if folder_db.endswith("/") else folder_db + "/"
    return sa.and_(column >= prefix, column < prefix[:-1] + chr(ord("/") + 1))


# --------------------------------------------------------------------------------------------
# Vectors as bytes


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def bytes_to_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32, copy=True)


def pack_vectors(ids: list[int], vecs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int64[n], vectors float32[n, D])`` from ids and their stored vector bytes."""
    arr = np.frombuffer(b"".join(vecs), dtype="<f4").astype(np.float32)
    return np.asarray(ids, dtype=np.int64), arr.reshape(len(ids), -1)
