"""Text inside images (Tesseract OCR) and captions beside them, for the keyword index.

OCR is optional at run time. :class:`OcrConfig` says whether to run it (``auto``: when the
``tesseract`` program is found; ``on``: the same, but health reports a missing program as a
problem; ``off``), which program, languages and time limit. :func:`probe` checks the program once
per process and per configuration (what ``/api/health`` reports); when it is missing, ingestion
goes on without text and each image is left for a later ``clipsearch ocr`` job.

:func:`recognise` runs one ``tesseract`` process on an image held in memory (PNG on stdin, TSV
on stdout; automatic page layout with Sauvola's local binarisation; one thread,
``OMP_THREAD_LIMIT=1``, since the decode workers already use every core),
killed after ``timeout_s``. Words Tesseract is not confident about (below ``MIN_CONFIDENCE``) or
that hold no letter or digit are dropped: photos without text otherwise yield noise like "=~ |".
It never raises for a bad image: the outcome is an :class:`OcrResult` with a state and a reason.

:func:`read_caption` reads what a person wrote about a picture: a ``.txt`` sidecar (``photo.txt``
or ``photo.jpg.txt``), an ``.xmp`` sidecar's description, title and keywords; :func:`exif_caption`
the EXIF ImageDescription and Windows XPKeywords/XPSubject/XPComment of the file itself.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from .configs import OcrConfig

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

OCR_MODES = ("auto", "on", "off")
MIN_CONFIDENCE = 40.0  # Tesseract's per-word confidence (0..100) below which a word is dropped
MIN_SIDE = 100  # images smaller than this on their long side hold no readable text
MAX_SIDE = 2400  # OCR reads the image reduced to this long side (text stays legible, time bounded)
MAX_TEXT = 20_000  # characters of recognised text kept per image
MAX_CAPTION = 4_000
MAX_SIDECAR_BYTES = 256 * 1024
_WORD = re.compile(r"[^\W_]", re.UNICODE)


class OcrError(Exception):
    """Tesseract could not be run or failed on an image (the message says why)."""


class OcrStatusDict(TypedDict):
    """:meth:`OcrStatus.as_dict`: the API's OCR status (service.schemas.OcrOut)."""

    mode: str
    available: bool
    engine: str | None
    languages: list[str]
    error: str | None


@dataclass(frozen=True)
class OcrStatus:
    """What :func:`probe` found: whether OCR runs, the engine's version, or why not."""

    mode: str
    available: bool
    engine: str | None = None  # "tesseract 5.3.0"
    languages: tuple[str, ...] = ()
    error: str | None = None  # a message a user can act on

    def as_dict(self) -> OcrStatusDict:
        return {
            "mode": self.mode,
            "available": self.available,
            "engine": self.engine,
            "languages": list(self.languages),
            "error": self.error,
        }


def _program(config: OcrConfig) -> str | None:
    cmd = config.tesseract
    if os.sep in cmd:
        return cmd if os.path.isfile(cmd) and os.access(cmd, os.X_OK) else None
    return shutil.which(cmd)


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TESSDATA_PREFIX")
    }
    env["OMP_THREAD_LIMIT"] = "1"  # one core per image: the decode pool already uses them all
    return env


@functools.lru_cache(maxsize=8)
def probe(config: OcrConfig) -> OcrStatus:
    """Check once per configuration that Tesseract runs and has the languages asked for."""
    if not config.enabled:
        return OcrStatus(config.mode, False, error="OCR is off (CLIPSEARCH_OCR=off)")
    program = _program(config)
    if program is None:
        return OcrStatus(
            config.mode,
            False,
            error=(
                f"Tesseract was not found ({config.tesseract!r}): text inside images is not "
                "recognised. Install it (Debian/Ubuntu: apt-get install tesseract-ocr "
                "tesseract-ocr-eng) or set CLIPSEARCH_TESSERACT to the program, then run "
                "`clipsearch ocr`"
            ),
        )
    try:
        out = subprocess.run(
            [program, "--version"], capture_output=True, timeout=20, env=_env(), check=False
        )
        first = (out.stdout or out.stderr).decode("utf-8", "replace").splitlines()
        engine = first[0].strip() if first else "tesseract"
        langs_out = subprocess.run(
            [program, "--list-langs"], capture_output=True, timeout=20, env=_env(), check=False
        )
        listed = langs_out.stdout.decode("utf-8", "replace").splitlines()[1:]
        langs = tuple(sorted(x.strip() for x in listed if x.strip()))
    except (OSError, subprocess.SubprocessError) as exc:
        return OcrStatus(config.mode, False, error=f"Tesseract ({program}) does not run: {exc}")
    missing = [code for code in config.lang.split("+") if code not in langs]
    if missing:
        return OcrStatus(
            config.mode,
            False,
            engine=engine,
            languages=langs,
            error=(
                f"Tesseract has no data for {', '.join(missing)} (it has {', '.join(langs) or 'none'}): "
                f"install tesseract-ocr-{missing[0]} or change CLIPSEARCH_OCR_LANG"
            ),
        )
    return OcrStatus(config.mode, True, engine=engine, languages=langs)


@dataclass
class OcrResult:
    state: str  # done | failed | skipped | unavailable
    text: str | None = None
    error: str | None = None


def for_ocr(rgb: PILImage) -> PILImage:
    """The image OCR reads: grey, at most MAX_SIDE px on its long side (a copy)."""
    from PIL import Image

    img = rgb.convert("L")
    w, h = img.size
    if max(w, h) > MAX_SIDE:
        scale = MAX_SIDE / max(w, h)
        img = img.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR
        )
    return img


def recognise(rgb: PILImage, config: OcrConfig) -> OcrResult:
    """The words Tesseract reads in a PIL image (see the module docstring)."""
    status = probe(config)
    if not status.available:
        return OcrResult("unavailable", error=status.error)
    w, h = rgb.size
    if max(w, h) < MIN_SIDE:
        return OcrResult("skipped", error=f"too small to hold readable text ({w}x{h})")
    img = for_ocr(rgb)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    program = _program(config) or config.tesseract
    # automatic page layout, and Sauvola's local threshold rather than one Otsu threshold for
    # the whole picture: a light sign on a darker scene is otherwise binarised away
    cmd = [program, "stdin", "stdout", "-l", config.lang, "--psm", "3"]
    cmd += ["-c", "thresholding_method=2", "tsv"]
    try:
        out = subprocess.run(
            cmd,
            input=buf.getvalue(),
            capture_output=True,
            timeout=config.timeout_s,
            env=_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return OcrResult(
            "failed",
            error=f"text recognition took longer than {config.timeout_s:g} s and was stopped "
            "(CLIPSEARCH_OCR_TIMEOUT_S)",
        )
    except OSError as exc:
        return OcrResult("failed", error=f"Tesseract could not be run: {exc}")
    if out.returncode != 0:
        msg = out.stderr.decode("utf-8", "replace").strip().splitlines()
        return OcrResult(
            "failed", error=f"Tesseract failed (exit {out.returncode}): {' '.join(msg)[-300:]}"
        )
    return OcrResult("done", text=parse_tsv(out.stdout.decode("utf-8", "replace")))


def parse_tsv(tsv: str) -> str:
    """The confident words of Tesseract's TSV output, one line of text per line it found."""
    lines: dict[tuple[str, str, str], list[str]] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5":
            continue
        word = cols[11].strip()
        try:
            conf = float(cols[10])
        except ValueError:
            continue
        if conf < MIN_CONFIDENCE or len(_WORD.findall(word)) < max(1, (len(word) + 1) // 2):
            continue
        lines.setdefault((cols[2], cols[3], cols[4]), []).append(word)
    text = "\n".join(" ".join(words) for words in lines.values())
    return text[:MAX_TEXT]


# --------------------------------------------------------------------------------------------
# Captions


def _read_small(path: str) -> bytes | None:
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIDECAR_BYTES:
            return None
        return os.read(fd, MAX_SIDECAR_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)


_XMP_TAGS = re.compile(
    r"<(dc:description|dc:title|dc:subject|photoshop:Headline|Iptc4xmpCore:Location)\b[^>]*>"
    r"(.*?)</\1>",
    re.S,
)
_XML_TAG = re.compile(r"<[^>]+>")


def _xmp_text(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    parts = []
    for _tag, body in _XMP_TAGS.findall(text):
        inner = _XML_TAG.sub(" ", body)
        parts.append(" ".join(inner.split()))
    import html

    return html.unescape(" ".join(p for p in parts if p))


def read_caption(path: str) -> str | None:
    """A sidecar caption of the image at ``path``: ``<stem>.txt``, ``<name>.txt``, ``<stem>.xmp``
    or ``<name>.xmp`` (small regular files only; links are not followed)."""
    stem, _ext = os.path.splitext(path)
    parts: list[str] = []
    for candidate in (stem + ".txt", path + ".txt"):
        data = _read_small(candidate)
        if data:
            parts.append(" ".join(data.decode("utf-8", "replace").split()))
            break
    for candidate in (stem + ".xmp", path + ".xmp"):
        data = _read_small(candidate)
        if data:
            parts.append(_xmp_text(data))
            break
    text = " ".join(p for p in parts if p).strip()
    return text[:MAX_CAPTION] or None


_IMAGE_DESCRIPTION = 0x010E
_XP_TAGS = (0x9C9B, 0x9C9C, 0x9C9E, 0x9C9F)  # XPTitle, XPComment, XPKeywords, XPSubject


def exif_caption(img: PILImage) -> str | None:
    """EXIF ImageDescription and the Windows XP title/comment/keywords/subject of an open image,
    plus an embedded XMP packet's description and keywords, when present."""
    parts: list[str] = []
    with contextlib.suppress(Exception):
        exif = img.getexif()
        desc = exif.get(_IMAGE_DESCRIPTION)
        if isinstance(desc, bytes):
            desc = desc.decode("utf-8", "replace")
        if isinstance(desc, str) and desc.strip(" \x00"):
            parts.append(desc.strip(" \x00"))
        for tag in _XP_TAGS:
            raw = exif.get(tag)
            if isinstance(raw, (bytes, tuple)):
                raw = bytes(raw).decode("utf-16-le", "replace")
            if isinstance(raw, str) and raw.strip(" \x00"):
                parts.append(raw.strip(" \x00"))
    with contextlib.suppress(Exception):
        packet = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
        if isinstance(packet, str):
            packet = packet.encode("utf-8", "replace")
        if isinstance(packet, bytes) and packet:
            parts.append(_xmp_text(packet[:MAX_SIDECAR_BYTES]))
    text = " ".join(" ".join(p.split()) for p in parts if p).strip()
    return text[:MAX_CAPTION] or None
