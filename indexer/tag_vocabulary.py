"""Zero-shot tags in words: the CLIP paper's prompt templates, the starter vocabulary, and a tag's
text embedding.

A tag's embedding follows the CLIP paper's zero-shot procedure (section 3.1.4, "prompt
engineering and ensembling"): every description of the tag is put into every template of an
ensemble ("a photo of a {}.", "a sketch of the {}.", ...), each prompt is embedded and
L2-normalised, and the tag is the normalised mean of them all, an ensemble built in embedding
space so that scoring a picture costs one dot product whatever the number of prompts.

Template sets (:data:`TEMPLATE_SETS`), stored by name with each tag:

* ``imagenet80``: the 80 context prompts the paper ensembles on ImageNet (openai/CLIP,
  ``notebooks/Prompt_Engineering_for_ImageNet.ipynb``), the default;
* ``clip7``: the paper's smaller set of 7 picked from those 80 by forward selection (same source);
* ``photo``: the paper's single default prompt "a photo of a {}.";
* ``verbatim``: the descriptions as written (for descriptions that are whole sentences).

Nothing here touches the catalog: plain data and one function of a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from clipsearch.model.base import EmbeddingModel

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

CLIP7_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "imagenet80": IMAGENET_TEMPLATES,
    "clip7": CLIP7_TEMPLATES,
    "photo": ("a photo of a {}.",),
    "verbatim": ("{}",),
}
Templates = Literal["imagenet80", "clip7", "photo", "verbatim"]  # the keys of TEMPLATE_SETS
DEFAULT_TEMPLATES: Templates = "imagenet80"

MAX_NAME = 64
MAX_DESCRIPTIONS = 16
MAX_DESCRIPTION = 200


@dataclass(frozen=True)
class TagSpec:
    """A tag as words: what the starter vocabulary ships and what a person types."""

    name: str
    descriptions: tuple[str, ...]
    group: str | None = None  # tags of one group exclude each other (the best one wins)
    templates: str = DEFAULT_TEMPLATES


#: The starter vocabulary (PhotoPrism labels and Google Photos "Things" users look for); a
#: library seeds it once and may then edit or delete any of it.
STARTER_VOCABULARY: tuple[TagSpec, ...] = (
    TagSpec("documents", ("document", "page of printed text", "scanned document", "form")),
    TagSpec("receipts", ("receipt", "shop receipt", "printed bill with prices")),
    TagSpec("screenshots", ("screenshot", "screenshot of a phone", "computer screen capture")),
    TagSpec("food", ("plate of food", "meal", "dish of food", "dessert")),
    TagSpec("beach", ("beach", "sandy beach by the sea", "seaside")),
    TagSpec("snow", ("snow", "snowy landscape", "winter scene with snow")),
    TagSpec("dogs", ("dog", "puppy", "dog playing")),
    TagSpec("cats", ("cat", "kitten", "cat sleeping")),
    TagSpec("people", ("person", "group of people", "portrait of a person")),
    TagSpec("cars", ("car", "automobile", "car on the street")),
    TagSpec("flowers", ("flower", "bouquet of flowers", "flowers in a garden")),
    TagSpec("mountains", ("mountain", "mountain landscape", "mountain peaks")),
    TagSpec("city at night", ("city at night", "city lights at night", "night skyline")),
    TagSpec("sunset", ("sunset", "sunset sky", "sunrise over the horizon")),
    TagSpec("forest", ("forest", "trees in a forest", "woods")),
    TagSpec("indoor", ("indoor scene", "room inside a house", "interior"), group="setting"),
    TagSpec("outdoor", ("outdoor scene", "landscape outside", "street outside"), group="setting"),
)


def check_spec(spec: TagSpec) -> TagSpec:
    """``spec`` cleaned (whitespace collapsed; descriptions default to the name), or ValueError
    saying what to change."""
    name = " ".join(str(spec.name).split())
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"a tag name is 1 to {MAX_NAME} characters, got {spec.name!r}")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in name):
        raise ValueError("a tag name cannot contain control characters")
    if name.isdigit():
        raise ValueError(f"a tag name cannot be only digits ({name!r} reads as a tag id)")
    descriptions = tuple(" ".join(str(d).split()) for d in spec.descriptions) or (name,)
    if len(descriptions) > MAX_DESCRIPTIONS or not all(
        0 < len(d) <= MAX_DESCRIPTION for d in descriptions
    ):
        raise ValueError(
            f"a tag has 1 to {MAX_DESCRIPTIONS} descriptions of 1 to {MAX_DESCRIPTION} characters"
        )
    if any(ord(ch) < 0x20 for d in descriptions for ch in d):
        raise ValueError("a tag description cannot contain control characters")
    group = " ".join(str(spec.group).split()) if spec.group else None
    if group is not None and (
        not group or len(group) > MAX_NAME or any(ord(ch) < 0x20 for ch in group)
    ):
        raise ValueError(f"a tag group is 1 to {MAX_NAME} characters, no control characters")
    if spec.templates not in TEMPLATE_SETS:
        raise ValueError(
            f"unknown template set {spec.templates!r}: use one of {', '.join(TEMPLATE_SETS)}"
        )
    return TagSpec(name, descriptions, group or None, spec.templates)


def prompts(descriptions: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every description in every template."""
    return [t.replace("{}", d) for d in descriptions for t in templates]


def embed_tag(
    model: EmbeddingModel, descriptions: Sequence[str], templates: Sequence[str]
) -> np.ndarray:
    """The tag's text embedding: the normalised mean of its normalised prompt embeddings."""
    vector: np.ndarray = embed_tags(model, [(descriptions, templates)])[0]
    return vector


def embed_tags(
    model: EmbeddingModel, tags: Sequence[tuple[Sequence[str], Sequence[str]]], batch: int = 256
) -> np.ndarray:
    """:func:`embed_tag` of several ``(descriptions, templates)`` at once: float32 [n, D]."""
    texts: list[str] = []
    spans: list[tuple[int, int]] = []
    for descriptions, templates in tags:
        start = len(texts)
        texts.extend(prompts(descriptions, templates))
        spans.append((start, len(texts)))
    parts = [
        np.asarray(model.embed_texts(texts[i : i + batch]), dtype=np.float32)
        for i in range(0, len(texts), batch)
    ]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    emb = np.concatenate(parts)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    out = np.stack([emb[a:b].mean(axis=0) for a, b in spans])
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)
