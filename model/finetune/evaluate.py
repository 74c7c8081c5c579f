"""Evaluation: retrieval recall@K on image/caption pairs, and zero-shot classification.

Retrieval counts a query as found at K when any of the top K results is *relevant*. The image of
pair i is relevant to caption i, and so is every image whose caption is the same text (up to case
and whitespace): two pictures both captioned "a red circle" are interchangeable answers to it.
``chance_r1`` reports what random ranking would score under that rule, so a number can be read
against it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from clipsearch.model.base import EmbeddingModel
from clipsearch.model.finetune import FinetuneError
from clipsearch.model.finetune.data import (
    IMAGE_SUFFIXES,
    Pair,
    caption_group,
    open_rgb,
    trim_tokens,
)

logger = logging.getLogger(__name__)

KS = (1, 5, 10)
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a {}.",
    "a drawing of a {}.",
    "a close-up photo of a {}.",
)


def _groups(captions: Sequence[str]) -> np.ndarray:
    index: dict[str, int] = {}
    return np.array(
        [index.setdefault(caption_group(c), len(index)) for c in captions], dtype=np.int64
    )


def recall_at_k(
    similarity: np.ndarray,
    query_groups: np.ndarray,
    item_groups: np.ndarray,
    ks: Sequence[int] = KS,
) -> dict[int, float]:
    """Fraction of queries (rows) with an item of their own group among the top K columns."""
    if similarity.shape != (len(query_groups), len(item_groups)):
        raise ValueError("similarity must be [queries, items]")
    if similarity.shape[0] == 0:
        return dict.fromkeys(ks, 0.0)
    order = np.argsort(-similarity, axis=1, kind="stable")
    hits = item_groups[order] == query_groups[:, None]  # [Q, I]: relevant at rank j
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.int64).max)
    return {k: float((first < k).mean()) for k in ks}


def retrieval_metrics(
    image_features: np.ndarray | torch.Tensor,
    text_features: np.ndarray | torch.Tensor,
    captions: Sequence[str],
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """t2i/i2t recall@K for normalised features of N pairs (row i of both is pair i)."""
    img = np.asarray(
        image_features.detach().cpu()
        if isinstance(image_features, torch.Tensor)
        else image_features
    )
    txt = np.asarray(
        text_features.detach().cpu() if isinstance(text_features, torch.Tensor) else text_features
    )
    if img.shape != txt.shape or img.shape[0] != len(captions):
        raise FinetuneError(
            "image features, text features and captions must describe the same N pairs"
        )
    groups = _groups(captions)
    sim = txt.astype(np.float32) @ img.astype(np.float32).T  # [texts, images]
    out: dict[str, float] = {"n": float(len(captions))}
    for k, v in recall_at_k(sim, groups, groups, ks).items():
        out[f"t2i_r{k}"] = v
    for k, v in recall_at_k(sim.T, groups, groups, ks).items():
        out[f"i2t_r{k}"] = v
    sizes = np.bincount(groups)
    out["chance_r1"] = float(np.mean(sizes[groups] / len(groups))) if len(groups) else 0.0
    return out


@torch.no_grad()
def embed_pixels_tokens(
    model: EmbeddingModel, pixels: torch.Tensor, tokens: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image and text features (float32, CPU) of preprocessed pixels and token ids."""
    was_training = model.training
    model.eval()
    imgs, txts = [], []
    try:
        for start in range(0, pixels.shape[0], batch_size):
            p = pixels[start : start + batch_size].to(model.device)
            t = tokens[start : start + batch_size].to(model.device)
            imgs.append(torch.nn.functional.normalize(model.encode_image(p).float(), dim=-1).cpu())
            txts.append(torch.nn.functional.normalize(model.encode_text(t).float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(imgs), torch.cat(txts)


def evaluate_pairs(
    model: EmbeddingModel,
    pairs: Sequence[Pair] | None = None,
    *,
    pixels: torch.Tensor | None = None,
    tokens: torch.Tensor | None = None,
    captions: Sequence[str] | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Recall@1/5/10 both ways on ``pairs`` (decoded here), or on already-encoded pixels/tokens/captions."""
    if pairs is not None:
        if not pairs:
            raise FinetuneError("no validation pairs to evaluate on")
        captions = [p.caption for p in pairs]
        pixels = torch.stack([model.preprocess(open_rgb(p.path)) for p in pairs])
        tokens = model.tokenize(captions)
        if getattr(model, "family", "clip") == "clip":  # SigLIP pools the last position: keep all
            tokens = trim_tokens(tokens)
    if pixels is None or tokens is None or captions is None:
        raise FinetuneError("evaluate_pairs needs pairs, or pixels, tokens and captions")
    img, txt = embed_pixels_tokens(model, pixels, tokens, batch_size)
    return retrieval_metrics(img, txt, captions)


def attribute_accuracy(
    model: EmbeddingModel,
    pixels: torch.Tensor,
    tokens: torch.Tensor,
    attributes: Sequence[Mapping[str, object]],
    names: Sequence[str],
) -> dict[str, float]:
    """For each attribute name: the fraction of caption queries whose top image has the same value.

    Measures one skill (say, counting) on a set where several attributes vary: a model blind to
    counts scores about 1/len(counts) on ``count`` however good it is at colours.
    """
    img, txt = embed_pixels_tokens(model, pixels, tokens)
    top = (txt @ img.T).argmax(dim=1).numpy()
    out = {}
    for name in names:
        values = [a[name] for a in attributes]
        out[name] = float(np.mean([values[top[i]] == values[i] for i in range(len(values))]))
    return out


def _class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    try:
        st = root.stat()
    except OSError as exc:
        raise FinetuneError(
            f"classification folder {root} cannot be read ({exc.strerror})"
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise FinetuneError(
            f"{root} is not a folder; give a folder with one sub-folder of images per class"
        )
    classes = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        files = sorted(
            Path(f.path)
            for f in os.scandir(entry.path)
            if not f.name.startswith(".")
            and f.is_file(follow_symlinks=False)
            and Path(f.name).suffix.lower() in IMAGE_SUFFIXES
        )
        if files:
            classes.append((entry.name, files))
    if len(classes) < 2:
        raise FinetuneError(
            f"{root} needs at least two class sub-folders with images, found {len(classes)}"
        )
    return classes


def class_name(folder_name: str) -> str:
    """Folder name -> prompt word: ``golden_retriever`` -> ``golden retriever``."""
    return " ".join(folder_name.replace("_", " ").replace("-", " ").split())


class ZeroShot(TypedDict):
    """What :func:`zero_shot_accuracy` measured."""

    accuracy: float
    n: int
    classes: int
    skipped: int
    per_class: dict[str, float]


@torch.no_grad()
def zero_shot_accuracy(
    model: EmbeddingModel,
    folder: str | os.PathLike[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 64,
    max_per_class: int | None = None,
) -> ZeroShot:
    """Top-1 accuracy of classifying each image by the nearest class prompt embedding.

    Each class is the mean of its normalised prompt embeddings over ``templates`` (each holding
    one ``{}``). Images that cannot be decoded are counted in ``skipped``, not in the accuracy.
    """
    if not templates or any(t.count("{}") != 1 for t in templates):
        raise FinetuneError("every prompt template must contain exactly one {} for the class name")
    classes = _class_folders(Path(folder))
    weights = []
    for name, _ in classes:
        prompts = [t.format(class_name(name)) for t in templates]
        emb = torch.from_numpy(model.embed_texts(prompts))
        weights.append(torch.nn.functional.normalize(emb.mean(dim=0), dim=0))
    classifier = torch.stack(weights)  # [C, E]
    correct, total, skipped = 0, 0, 0
    per_class: dict[str, float] = {}
    for label, (name, files) in enumerate(classes):
        pixels = []
        for path in files[:max_per_class]:
            try:
                pixels.append(model.preprocess(open_rgb(path)))
            except (OSError, ValueError, SyntaxError) as exc:
                logger.warning("skipped %s: %s", path, exc)
                skipped += 1
        if not pixels:
            continue
        feats = torch.from_numpy(model.embed_pixels(torch.stack(pixels), batch_size=batch_size))
        pred = (feats @ classifier.T).argmax(dim=1)
        hits = int((pred == label).sum())
        per_class[name] = hits / len(pixels)
        correct += hits
        total += len(pixels)
    if total == 0:
        raise FinetuneError(f"no readable image in {folder}")
    return {
        "accuracy": correct / total,
        "n": total,
        "classes": len(classes),
        "skipped": skipped,
        "per_class": per_class,
    }
