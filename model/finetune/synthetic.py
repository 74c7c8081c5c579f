"""A synthetic captioned image set: coloured shapes with sizes, positions, counts, textures and words.

Every item is a pure function of ``(seed, index)``, so a set is reproducible item by item and
independent of how many items are asked for. The attributes that vary are chosen per set; the
others stay at a fixed default and are not mentioned in the caption, so a set "without counts"
never shows two objects and never says "two".

Used by the fine-tuning tests, the benchmarks and ``clipsearch demo``::

    cfg = SyntheticConfig(attributes=("colour", "shape", "position"), image_size=32)
    for item in generate(cfg, 100): ...             # SyntheticItem(image, caption, attributes)
    write_folder(cfg, 500, Path("data/synthetic"))   # 000000.png + 000000.txt sidecars
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from clipsearch.model.finetune import FinetuneError

logger = logging.getLogger(__name__)

ATTRIBUTES = ("colour", "shape", "size", "position", "count", "texture", "word")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (40, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (150, 40, 190),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "cyan": (40, 220, 230),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom")
COUNTS = (1, 2, 3)
TEXTURES = ("solid", "striped", "dotted")
WORDS = ("cat", "sun", "car", "tree", "fish", "boat")

_COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the middle",
}
_WRAPPERS = (
    "{}",
    "a picture of {}",
    "an image of {}",
    "a drawing of {}",
    "a photo showing {}",
    "{}, on a dark background",
    "this is {}",
)
_MANIFEST = "synthetic.json"
# zlib level of the PNGs written here and by .background. PNG is lossless at every level (the
# same pixels decode); level 1 writes the demo's 96 px pictures in less than half the time of
# PIL's default 6, and as small (they are mostly noise and flat colour).
PNG_LEVEL = 1


class SyntheticError(FinetuneError):
    """The synthetic set was asked for something it cannot make."""


@dataclass(frozen=True)
class SyntheticConfig:
    """What a synthetic set varies, and how its images look."""

    attributes: tuple[str, ...] = ("colour", "shape", "position")  # the attributes that vary
    image_size: int = 64  # side of the square images, in pixels
    seed: int = 0  # item i is a pure function of (seed, i)
    templates: str = "varied"  # "plain": one canonical caption; "varied": wrappers and word orders
    colours: tuple[str, ...] = tuple(COLOURS)  # the colour names drawn from (keys of COLOURS)
    shapes: tuple[str, ...] = SHAPES
    positions: tuple[str, ...] = POSITIONS
    counts: tuple[int, ...] = COUNTS
    textures: tuple[str, ...] = TEXTURES
    words: tuple[str, ...] = WORDS
    noise: int = 12  # background speckle, in percent of a uniform noise image blended in (0: flat)

    def __post_init__(self) -> None:
        unknown = [a for a in self.attributes if a not in ATTRIBUTES]
        if unknown or not self.attributes:
            raise SyntheticError(
                f"unknown synthetic attributes {unknown or '(none given)'}; choose from {', '.join(ATTRIBUTES)}"
            )
        if not 16 <= self.image_size <= 1024:
            raise SyntheticError(f"image_size {self.image_size} is out of range; use 16..1024")
        if self.templates not in ("plain", "varied"):
            raise SyntheticError(f"templates must be 'plain' or 'varied', not {self.templates!r}")
        bad = [c for c in self.colours if c not in COLOURS]
        if bad or not self.colours:
            raise SyntheticError(f"unknown colours {bad}; choose from {', '.join(COLOURS)}")
        if any(s not in SHAPES for s in self.shapes) or not self.shapes:
            raise SyntheticError(f"shapes must be a non-empty subset of {SHAPES}")
        if any(p not in _POSITION_PHRASES for p in self.positions) or not self.positions:
            raise SyntheticError(
                f"positions must be a non-empty subset of {tuple(_POSITION_PHRASES)}"
            )
        if any(c not in _COUNT_WORDS for c in self.counts) or not self.counts:
            raise SyntheticError(f"counts must be a non-empty subset of {tuple(_COUNT_WORDS)}")
        if any(t not in TEXTURES for t in self.textures) or not self.textures:
            raise SyntheticError(f"textures must be a non-empty subset of {TEXTURES}")
        if not self.words or any(
            not w.isascii() or not w.isalpha() or len(w) > 12 for w in self.words
        ):
            raise SyntheticError("words must be short ASCII letters-only strings")

    def to_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SyntheticConfig:
        known = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in data.items()
            if k in cls.__dataclass_fields__
        }
        return cls(**known)  # type: ignore[arg-type]


@dataclass
class SyntheticItem:
    """One generated image, its caption, and the attribute values it was drawn from."""

    image: Image.Image
    caption: str
    attributes: dict[str, object] = field(default_factory=dict)


def sample_attributes(cfg: SyntheticConfig, rng: random.Random) -> dict[str, object]:
    """Draw the varying attributes; the others keep their defaults (one large solid object, centred)."""
    varied = set(cfg.attributes)
    return {
        "colour": rng.choice(cfg.colours) if "colour" in varied else cfg.colours[0],
        "shape": rng.choice(cfg.shapes) if "shape" in varied else cfg.shapes[0],
        "size": rng.choice(SIZES) if "size" in varied else "large",
        "position": rng.choice(cfg.positions) if "position" in varied else "center",
        "count": rng.choice(cfg.counts) if "count" in varied else 1,
        "texture": rng.choice(cfg.textures) if "texture" in varied else "solid",
        "word": rng.choice(cfg.words) if "word" in varied else None,
    }


def caption_for(
    attrs: dict[str, object], cfg: SyntheticConfig, rng: random.Random | None = None
) -> str:
    """The caption of an attribute set: canonical for ``templates="plain"``, else a random phrasing."""
    varied = set(cfg.attributes)
    count = int(attrs["count"])  # type: ignore[call-overload]
    noun = str(attrs["shape"]) + ("es" if str(attrs["shape"]) == "cross" and count > 1 else "")
    if count > 1 and attrs["shape"] != "cross":
        noun += "s"
    adjectives = []
    if "size" in varied:
        adjectives.append(str(attrs["size"]))
    if "texture" in varied:
        adjectives.append(str(attrs["texture"]))
    if "colour" in varied:
        adjectives.append(str(attrs["colour"]))
    if "count" in varied:
        head = _COUNT_WORDS[count]
    else:
        head = "an" if (adjectives[0] if adjectives else noun)[0] in "aeiou" else "a"
    phrase = " ".join([head, *adjectives, noun])
    tail = []
    if "position" in varied:
        tail.append(_POSITION_PHRASES[str(attrs["position"])])
    if "word" in varied:
        tail.append(f"with the word {attrs['word']}")
    if cfg.templates == "plain" or rng is None:
        return " ".join([phrase, *tail])
    if tail and rng.random() < 0.3:
        text = f"{tail[0]}, {' '.join([phrase, *tail[1:]])}"
    else:
        text = " ".join([phrase, *tail])
    return rng.choice(_WRAPPERS).format(text)


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [
            (cx + r * math.cos(a), cy - r * math.sin(a))
            for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)
        ]
    if shape == "cross":
        t = r / 2.6
        pts = [
            (-t, -r),
            (t, -r),
            (t, -t),
            (r, -t),
            (r, t),
            (t, t),
            (t, r),
            (-t, r),
            (-t, t),
            (-r, t),
            (-r, -t),
            (-t, -t),
        ]
        return [(cx + x, cy + y) for x, y in pts]
    raise SyntheticError(f"no polygon for shape {shape!r}")


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    fill: tuple[int, int, int],
) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_shape_polygon(shape, cx, cy, r), fill=fill)


def _texture_mask(size: int, texture: str, rng: random.Random) -> Image.Image:
    """An L-mode mask: 255 where the shape colour shows, 0 where the background shows through."""
    mask = Image.new("L", (size, size), 255)
    if texture == "solid":
        return mask
    draw = ImageDraw.Draw(mask)
    step = max(3, size // 12)
    if texture == "striped":
        offset = rng.randrange(step)
        for x in range(-size + offset, size, step):
            draw.line((x, 0, x + size, size), fill=0, width=max(1, step // 3))
    else:  # dotted
        dot = max(1, step // 3)
        for y in range(0, size, step):
            for x in range(0, size, step):
                draw.ellipse((x, y, x + dot, y + dot), fill=0)
    return mask


def render(attrs: dict[str, object], cfg: SyntheticConfig, rng: random.Random) -> Image.Image:
    """Draw one image of ``attrs`` (jittered positions and sizes, speckled background)."""
    s = cfg.image_size
    base = rng.randrange(15, 70)
    bg = Image.new("RGB", (s, s), (base, base, base + rng.randrange(0, 20)))
    if cfg.noise > 0:
        speckle = Image.frombytes("L", (s, s), rng.randbytes(s * s)).convert("RGB")
        bg = Image.blend(bg, speckle, min(cfg.noise, 100) / 100)
    # The region the objects live in: the whole image, or the named half.
    region = {
        "center": (0.0, 0.0, 1.0, 1.0),
        "left": (0.0, 0.0, 0.5, 1.0),
        "right": (0.5, 0.0, 1.0, 1.0),
        "top": (0.0, 0.0, 1.0, 0.5),
        "bottom": (0.0, 0.5, 1.0, 1.0),
    }[str(attrs["position"])]
    x0, y0, x1, y1 = (v * s for v in region)
    count = int(attrs["count"])  # type: ignore[call-overload]
    short = min(x1 - x0, y1 - y0)
    if count == 1:
        radius = short * (0.40 if attrs["size"] == "large" else 0.22)
    else:
        radius = (
            short * (0.26 if attrs["size"] == "large" else 0.17) * (0.85 if count >= 3 else 1.0)
        )
    radius *= rng.uniform(0.9, 1.1)
    radius = max(radius, 2.5)
    # Place the objects on a jittered slot layout so they never overlap.
    slots = _slots(count, x0, y0, x1, y1, radius, rng)
    colour = COLOURS[str(attrs["colour"])]
    layer = Image.new("RGB", (s, s), colour)
    shape_mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(shape_mask)
    for cx, cy in slots:
        _draw_shape(draw, str(attrs["shape"]), cx, cy, radius, 255)  # type: ignore[arg-type]
    tex = _texture_mask(s, str(attrs["texture"]), rng)
    mask = Image.composite(shape_mask, Image.new("L", (s, s), 0), tex)
    img = Image.composite(layer, bg, mask)
    if attrs.get("word"):
        _draw_word(img, str(attrs["word"]), rng)
    return img


def _slots(
    count: int, x0: float, y0: float, x1: float, y1: float, r: float, rng: random.Random
) -> list[tuple[float, float]]:
    w, h = x1 - x0, y1 - y0
    horizontal = w >= h
    slots = []
    for i in range(count):
        t = (i + 0.5) / count
        if horizontal:
            cx, cy = x0 + t * w, y0 + h / 2
        else:
            cx, cy = x0 + w / 2, y0 + t * h
        slots.append((cx, cy))
    span_along = (w if horizontal else h) / count / 2 - r
    span_across = (h if horizontal else w) / 2 - r
    out = []
    for cx, cy in slots:
        da = rng.uniform(-1, 1) * max(span_along, 0) * 0.6
        dc = rng.uniform(-1, 1) * max(span_across, 0) * 0.6
        out.append((cx + da, cy + dc) if horizontal else (cx + dc, cy + da))
    return out


def _draw_word(img: Image.Image, word: str, rng: random.Random) -> None:
    s = img.size[0]
    font = ImageFont.load_default(size=max(8, s // 4))
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    tw, th = right - left, bottom - top
    x = max(0, (s - tw) // 2 + rng.randint(-2, 2))
    y = max(0, s - th - 2 - rng.randint(0, 2))
    draw.rectangle((x - 1, y + top - 1, x + tw + 1, y + bottom + 1), fill=(0, 0, 0))
    draw.text((x, y), word, fill=(255, 255, 255), font=font)


def generate(cfg: SyntheticConfig, n: int, start: int = 0) -> Iterator[SyntheticItem]:
    """Yield items ``start .. start+n-1`` of the set ``cfg`` (each a pure function of seed and index)."""
    if n < 0 or start < 0:
        raise SyntheticError("n and start must be non-negative")
    for i in range(start, start + n):
        rng = random.Random(f"clipsearch-synthetic:{cfg.seed}:{i}")
        attrs = sample_attributes(cfg, rng)
        image = render(attrs, cfg, rng)
        caption = caption_for(attrs, cfg, rng)
        yield SyntheticItem(image=image, caption=caption, attributes=attrs)


def write_folder(cfg: SyntheticConfig, n: int, folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``n`` items as ``000000.png`` + ``000000.txt`` sidecars and a ``synthetic.json`` manifest.

    Writing is idempotent: a folder whose manifest matches ``cfg`` and ``n`` is left as it is.
    Returns the image paths.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise SyntheticError(f"{out} exists and is not a folder; choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / _MANIFEST
    paths = [out / f"{i:06d}.png" for i in range(n)]
    wanted = {"config": cfg.to_dict(), "n": n}
    if manifest.is_file():
        try:
            existing = json.loads(manifest.read_text())
        except (OSError, ValueError):
            existing = None
        if (
            existing is not None
            and existing.get("config") == wanted["config"]
            and existing.get("n") == n
        ) and all(p.is_file() and p.with_suffix(".txt").is_file() for p in paths):
            logger.info("synthetic set in %s is already complete (%d items)", out, n)
            return paths
    attributes = []
    for path, item in zip(paths, generate(cfg, n), strict=True):
        tmp = path.with_name(path.name + ".tmp")
        item.image.save(tmp, format="PNG", compress_level=PNG_LEVEL)
        os.replace(tmp, path)
        path.with_suffix(".txt").write_text(item.caption + "\n", encoding="utf-8")
        attributes.append({"file": path.name, **item.attributes})
    wanted["items"] = attributes
    tmp_manifest = manifest.with_name(manifest.name + ".tmp")
    tmp_manifest.write_text(json.dumps(wanted, indent=1))
    os.replace(tmp_manifest, manifest)
    logger.info("wrote %d synthetic images with captions to %s", n, out)
    return paths


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, dict[str, object]]:
    """Attribute values by file name, from a folder written by :func:`write_folder`."""
    path = Path(folder) / _MANIFEST
    try:
        data = json.loads(path.read_text())
        return {str(row["file"]): dict(row) for row in data["items"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SyntheticError(
            f"cannot read the synthetic manifest {path}: {exc}; regenerate the folder"
        ) from exc


def attribute_values(cfg: SyntheticConfig, attribute: str) -> Sequence[object]:
    """The values ``attribute`` takes in the set ``cfg``."""
    return {
        "colour": cfg.colours,
        "shape": cfg.shapes,
        "size": SIZES,
        "position": cfg.positions,
        "count": cfg.counts,
        "texture": cfg.textures,
        "word": cfg.words,
    }[attribute]
