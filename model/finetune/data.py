"""Image/caption pairs for fine-tuning: reading them, splitting them, and turning them into tensors.

Three sources are understood (:func:`load_pairs`):

- a folder of images with sidecar captions: ``photo.jpg`` + ``photo.txt`` (searched recursively;
  hidden entries and symlinked folders are not followed);
- a CSV or TSV file of ``path,caption`` rows (a header naming the columns is optional;
  ``path``/``image``/``file``/``filepath``/``filename`` and ``caption``/``text``/``title`` are
  recognised); relative paths are relative to the file's folder;
- a JSONL file with one ``{"path": ..., "caption": ...}`` object per line (same key names).

A bad row (no caption, a path that is not a regular file, an image that does not decode) is
recorded in :attr:`PairSet.problems` with the reason and skipped; it never stops the run.
The train/validation split is a pure function of each pair's key (its path as written, relative
to the source) and a seed, so the same data always splits the same way, whatever its order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps

from clipsearch.model.finetune import FinetuneError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PATH_KEYS = ("path", "image", "file", "filepath", "filename", "image_path")
CAPTION_KEYS = ("caption", "text", "title", "label")
MAX_CAPTION_CHARS = 2000  # longer captions are cut: CLIP reads at most 77 tokens anyway
MAX_IMAGE_BYTES = 256 * 1024 * 1024
MAX_PROBLEMS_LOGGED = 20


class DataError(FinetuneError):
    """The data source itself (not one row of it) cannot be read."""


@dataclass(frozen=True)
class Pair:
    """One image and its caption. ``key`` (the path as the source names it) decides the split."""

    path: Path
    caption: str
    key: str


@dataclass(frozen=True)
class Problem:
    """A row or file that was skipped, and why."""

    where: str
    reason: str


@dataclass
class PairSet:
    """The usable pairs of a source, and the problems met while reading it."""

    source: Path
    pairs: list[Pair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
        return split_pairs(self.pairs, val_fraction, seed)


def clean_caption(text: str) -> str:
    """Whitespace collapsed, control characters dropped, cut at MAX_CAPTION_CHARS."""
    text = "".join(ch if ch.isprintable() else " " for ch in text[: MAX_CAPTION_CHARS * 2])
    return " ".join(text.split())[:MAX_CAPTION_CHARS]


def caption_group(caption: str) -> str:
    """Captions equal up to case and whitespace describe interchangeable images in evaluation."""
    return " ".join(caption.lower().split())


def open_rgb(path: str | os.PathLike[str], draft_size: int | None = None) -> Image.Image:
    """Decode an image file fully into RGB (EXIF orientation applied); raises OSError/ValueError if it cannot."""
    p = Path(path)
    st = p.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file")
    if st.st_size > MAX_IMAGE_BYTES:
        raise ValueError(f"file is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    with Image.open(p) as img:
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        upright = ImageOps.exif_transpose(img)
        return upright.convert("RGB")


def _check_image(path: Path) -> str | None:
    """None if ``path`` is a regular file that decodes as an image, else the reason it is not."""
    try:
        open_rgb(path, draft_size=64)
    except FileNotFoundError:
        return "image file not found"
    except Image.DecompressionBombError:
        return "image has too many pixels (decompression bomb guard)"
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three for bad files
        return f"image cannot be decoded: {exc}"
    return None


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def _walk_images(root: Path) -> Iterator[Path]:
    """Image files under ``root`` in a stable order, not following symlinked folders."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            logger.warning("cannot list %s: %s", folder, exc)
            continue
        subfolders = []
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(entry.path)
        stack.extend(reversed(subfolders))


def _read_sidecar(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > 1024 * 1024:
        return None
    with path.open("rb") as fh:
        return fh.read(MAX_CAPTION_CHARS * 4).decode("utf-8", errors="replace")


def _folder_rows(root: Path) -> Iterator[tuple[str, str | None, str | None]]:
    """(where, relative path, caption) for every image file of a sidecar-caption folder."""
    for img in _walk_images(root):
        rel = img.relative_to(root).as_posix()
        caption = _read_sidecar(img.with_suffix(".txt"))
        if caption is None:
            caption = _read_sidecar(img.with_name(img.name + ".txt"))  # photo.jpg.txt also works
        yield rel, rel, caption


def _pick(keys: Sequence[str], wanted: Sequence[str]) -> int | None:
    lowered = [k.strip().lower() for k in keys]
    for name in wanted:
        if name in lowered:
            return lowered.index(name)
    return None


def _csv_rows(path: Path) -> Iterator[tuple[str, str | None, str | None]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader((line.replace("\0", "") for line in fh), delimiter=delimiter)
        path_col, caption_col = 0, 1
        for n, row in enumerate(reader, start=1):
            where = f"{path.name}:{n}"
            if n == 1:
                p, c = _pick(row, PATH_KEYS), _pick(row, CAPTION_KEYS)
                if p is not None and c is not None:
                    path_col, caption_col = p, c
                    continue
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) <= max(path_col, caption_col):
                yield where, None, None
                continue
            yield where, row[path_col].strip(), row[caption_col]


def _jsonl_rows(path: Path) -> Iterator[tuple[str, str | None, str | None]]:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            where = f"{path.name}:{n}"
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                yield where, None, None
                continue
            if not isinstance(obj, dict):
                yield where, None, None
                continue
            p = next((obj[k] for k in PATH_KEYS if isinstance(obj.get(k), str)), None)
            c = next((obj[k] for k in CAPTION_KEYS if isinstance(obj.get(k), str)), None)
            yield where, p, c


def load_pairs(
    source: str | os.PathLike[str], *, verify: bool = True, limit: int | None = None
) -> PairSet:
    """Read the pairs of a sidecar-caption folder, a CSV/TSV or a JSONL file.

    With ``verify`` every image is decoded once (JPEGs at reduced scale) so that unreadable files
    are reported here and not in the middle of training. ``limit`` stops after that many good pairs.
    Raises :class:`DataError` if ``source`` is not one of the three kinds or holds no usable pair.
    """
    src = Path(source).expanduser()
    if "\0" in str(source):
        raise DataError("the data path contains a NUL character")
    try:
        st = src.stat()
    except OSError as exc:
        raise DataError(
            f"data source {src} cannot be read ({exc.strerror}); give a folder, .csv, .tsv or .jsonl"
        ) from exc
    if stat.S_ISDIR(st.st_mode):
        root, rows = src, _folder_rows(src)
    elif stat.S_ISREG(st.st_mode) and src.suffix.lower() in (".csv", ".tsv"):
        root, rows = src.parent, _csv_rows(src)
    elif stat.S_ISREG(st.st_mode) and src.suffix.lower() in (".jsonl", ".ndjson"):
        root, rows = src.parent, _jsonl_rows(src)
    else:
        raise DataError(
            f"data source {src} is not a folder of images with .txt captions, a .csv/.tsv or a .jsonl file"
        )
    out = PairSet(source=src)
    seen: set[str] = set()
    for where, rel, raw_caption in rows:
        if rel is None:
            out.problems.append(Problem(where, "malformed row: expected a path and a caption"))
            continue
        if "\0" in rel or not rel:
            out.problems.append(Problem(where, "empty path or path with a NUL character"))
            continue
        caption = clean_caption(raw_caption or "")
        if not caption:
            out.problems.append(Problem(where, "no caption (empty, or no sidecar .txt file)"))
            continue
        path = Path(rel).expanduser()
        if not path.is_absolute():
            path = root / path
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            out.problems.append(
                Problem(
                    where, f"{rel}: not an image file name ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            )
            continue
        key = rel.replace(os.sep, "/")
        if key in seen:
            out.problems.append(Problem(where, f"{rel}: listed twice; the first caption is kept"))
            continue
        if verify:
            reason = _check_image(path)
            if reason is not None:
                out.problems.append(Problem(where, f"{rel}: {reason}"))
                continue
        seen.add(key)
        out.pairs.append(Pair(path=path, caption=caption, key=key))
        if limit is not None and len(out.pairs) >= limit:
            break
    for problem in out.problems[:MAX_PROBLEMS_LOGGED]:
        logger.warning("skipped %s: %s", problem.where, problem.reason)
    if len(out.problems) > MAX_PROBLEMS_LOGGED:
        logger.warning("... and %d more skipped rows", len(out.problems) - MAX_PROBLEMS_LOGGED)
    if not out.pairs:
        raise DataError(
            f"no usable image/caption pair in {src} ({len(out.problems)} skipped"
            + (
                f", first: {out.problems[0].where}: {out.problems[0].reason}"
                if out.problems
                else ""
            )
            + ")"
        )
    logger.info("read %d pairs from %s (%d skipped)", len(out.pairs), src, len(out.problems))
    return out


def _unit_hash(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8", errors="surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_pairs(
    pairs: Sequence[Pair], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """Split by a hash of each pair's key: stable across runs, orders and additions of new pairs.

    With ``val_fraction > 0`` and at least two pairs the validation side is never empty.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise FinetuneError(f"val_fraction must be in [0, 1), not {val_fraction}")
    scored = [(_unit_hash(p.key, seed), p) for p in pairs]
    train = [p for h, p in scored if h >= val_fraction]
    val = [p for h, p in scored if h < val_fraction]
    if val_fraction > 0 and not val and len(pairs) >= 2:
        lowest = min(scored, key=lambda hp: hp[0])[1]
        train = [p for p in train if p is not lowest]
        val = [lowest]
    return train, val


def trim_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the all-padding columns at the end (captions are short; the text tower accepts L < 77)."""
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        return tokens
    used = (tokens != 0).any(dim=0).nonzero()
    length = int(used.max().item()) + 1 if used.numel() else 1
    return tokens[:, :length].contiguous()


class PairDataset(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Decodes and preprocesses on access; captions are tokenised once, up front."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenize: Callable[[Sequence[str]], torch.Tensor],
        trim: bool = True,
    ) -> None:
        self.pairs = list(pairs)
        self.preprocess = preprocess
        tokens = tokenize([p.caption for p in self.pairs]) if self.pairs else torch.zeros(0, 1)
        self.tokens = trim_tokens(tokens) if trim and self.pairs else tokens

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[index]
        try:
            image = open_rgb(pair.path)
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(
                f"{pair.path} could not be decoded during training ({exc}); remove it and resume"
            ) from exc
        return self.preprocess(image), self.tokens[index]


def encode_pairs(
    pairs: Sequence[Pair],
    preprocess: Callable[[Image.Image], torch.Tensor],
    tokenize: Callable[[Sequence[str]], torch.Tensor],
    trim: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All pixels [N,3,R,R] and tokens [N,L] (trailing padding trimmed when ``trim``) in memory:
    for small sets (tests, the demo)."""
    ds = PairDataset(pairs, preprocess, tokenize, trim=trim)
    return dataset_pixels(ds), ds.tokens


def dataset_pixels(ds: PairDataset) -> torch.Tensor:
    """Every picture of ``ds`` decoded and preprocessed, [N,3,R,R] (its captions are already
    tokenised: :func:`encode_pairs` without tokenising them a second time)."""
    if not len(ds):
        raise FinetuneError("no pairs to encode")
    return torch.stack([ds[i][0] for i in range(len(ds))])


def write_pairs_csv(pairs: Iterable[Pair], path: str | os.PathLike[str]) -> None:
    """Write ``path,caption`` rows (paths as absolute strings); the inverse of reading a CSV source."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "caption"])
    for p in pairs:
        writer.writerow([str(p.path), p.caption])
    Path(path).write_text(buf.getvalue(), encoding="utf-8")
