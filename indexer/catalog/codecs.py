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
    column: sa.SQLColumnExpression[str], folder_db: str, recursive: bool = True
) -> sa.ColumnElement[bool]:
    """SQL condition: ``column`` (an Image.folder-like text column) is ``folder_db`` or, when
    ``recursive``, below it. Case-sensitive and free of LIKE wildcards on both databases."""
    folder_db = folder_db.rstrip("/") or "/"
    if not recursive:
        return column == folder_db
    prefix = folder_db if folder_db.endswith("/") else folder_db + "/"
    return sa.or_(column == folder_db, sa.func.substr(column, 1, len(prefix)) == prefix)


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
