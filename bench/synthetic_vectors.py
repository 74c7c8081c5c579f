"""Synthetic vectors shaped like CLIP embeddings, for index tests and benchmarks.

Real CLIP image embeddings (L2-normalised) do not fill the sphere: they sit in a narrow cone around a
common mean direction (two random photos have a cosine of about 0.4-0.5), grouped in concepts of very
uneven size and tightness, with most of their variance in a few dozen directions. Text embeddings sit
in a second cone offset from the first (the "modality gap"): a caption's best matching photo has a
cosine of only about 0.3, and the part of a text vector that ranks images lacks most of the image
mean direction. An index tuned only on image-to-image queries can therefore under-serve text queries.

`ClipLikeSpace` reproduces those properties with a fixed seed:

* image vector = normalise(a * mean + b * concept + noise), where concepts are grouped in
  super-concepts (so neighbouring concepts overlap), concept sizes follow a Zipf-like law, and each
  concept has its own spread; the noise has a decaying spectrum (low effective dimension);
* text query = normalise(gap * text_mean + b_t * concept + small image-mean part + noise).

Everything is numpy; vectors are float32 [N, D] and unit-norm. Generation is chunked so 1M x 512
vectors can be produced without holding intermediate float64 arrays for the whole set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["ClipLikeSpace", "make_space"]


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return (x / norms).astype(np.float32, copy=False)


def _orthonormal_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((dim, n)))
    return q.T  # [n, dim], orthonormal rows


@dataclass(frozen=True)
class ClipLikeSpace:
    """A fixed random "embedding space" from which image vectors and text queries are drawn."""

    dim: int
    image_mean: np.ndarray  # [D] unit
    text_mean: np.ndarray  # [D] unit, orthogonal to image_mean
    concepts: np.ndarray  # [K, D] unit, orthogonal to both means
    concept_weights: np.ndarray  # [K] probabilities (uneven)
    concept_spread: np.ndarray  # [K] noise scale per concept
    noise_basis: np.ndarray  # [D, D] orthonormal rows
    noise_scale: np.ndarray  # [D] sqrt of a decaying spectrum, sum of squares == 1
    seed: int

    @property
    def n_concepts(self) -> int:
        return int(self.concepts.shape[0])

    def _noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        z = rng.standard_normal((n, self.dim)).astype(np.float32)
        z *= self.noise_scale.astype(np.float32)
        return z @ self.noise_basis.astype(np.float32)

    def images(self, n: int, seed: int, chunk: int = 65536) -> np.ndarray:
        """n image-like unit vectors, float32 [n, D]."""
        out = np.empty((n, self.dim), dtype=np.float32)
        start = 0
        for block in self.iter_images(n, seed, chunk):
            out[start : start + len(block)] = block
            start += len(block)
        return out

    def iter_images(self, n: int, seed: int, chunk: int = 65536) -> Iterator[np.ndarray]:
        """The same vectors as `images(n, seed)`, yielded in blocks of at most `chunk` rows."""
        rng = np.random.default_rng([self.seed, seed, 1])
        done = 0
        while done < n:
            m = min(chunk, n - done)
            labels = rng.choice(self.n_concepts, size=m, p=self.concept_weights)
            # Per-image strengths: how "typical" the photo is of the common look and of its concept.
            a = rng.normal(0.70, 0.08, size=(m, 1)).astype(np.float32)
            b = rng.normal(0.55, 0.12, size=(m, 1)).clip(0.15, None).astype(np.float32)
            x = a * self.image_mean.astype(np.float32) + b * self.concepts[labels].astype(
                np.float32
            )
            x += self._noise(rng, m) * self.concept_spread[labels, None].astype(np.float32)
            yield _normalise(x)
            done += m

    def text_queries(self, n: int, seed: int) -> np.ndarray:
        """n text-like query vectors: offset from the image cone (the modality gap)."""
        rng = np.random.default_rng([self.seed, seed, 2])
        labels = rng.choice(self.n_concepts, size=n, p=self.concept_weights)
        # Three kinds of prompt: a concept ("a dog"), a concept with an attribute ("a dog at night"),
        # and mostly an attribute ("something red"); attributes cut across concepts, which is what
        # makes text queries hard for a partitioned index.
        kind = rng.choice(3, size=n, p=[0.5, 0.35, 0.15])
        w_concept = np.array([1.0, 1.0, 0.35], dtype=np.float32)[kind][:, None]
        w_attr = np.array([0.2, 0.6, 1.0], dtype=np.float32)[kind][:, None]
        top = min(64, self.dim)
        coef = rng.standard_normal((n, top)).astype(np.float32) * self.noise_scale[:top]
        attr = coef @ self.noise_basis[:top].astype(np.float32)
        attr /= np.linalg.norm(attr, axis=1, keepdims=True)
        sem = w_concept * self.concepts[labels] + w_attr * attr
        sem /= np.linalg.norm(sem, axis=1, keepdims=True)
        t = (
            0.80 * self.text_mean[None, :]
            + 0.42 * sem
            + 0.12 * self.image_mean[None, :]
            + 0.30 * self._noise(rng, n)
        )
        return _normalise(t)

    def image_queries(self, n: int, seed: int) -> np.ndarray:
        """n held-out image vectors (fresh draws, not part of any `images(...)` call with another seed)."""
        return self.images(n, seed=10_000_000 + seed)


def make_space(
    dim: int = 512,
    n_concepts: int = 1000,
    n_super: int = 60,
    seed: int = 0,
) -> ClipLikeSpace:
    """A CLIP-like space: `n_concepts` concepts of uneven size and spread in `n_super` groups."""
    if dim < 16:
        raise ValueError(f"dim must be at least 16, got {dim}")
    rng = np.random.default_rng([seed, 0])
    frame = _orthonormal_rows(rng, 2, dim)
    image_mean, text_mean = frame[0], frame[1]
    # Concepts live in the space orthogonal to both means; super-concepts make neighbours overlap.
    basis = _orthonormal_rows(rng, dim, dim)
    proj = np.eye(dim) - np.outer(image_mean, image_mean) - np.outer(text_mean, text_mean)
    supers = rng.standard_normal((n_super, dim)) @ proj
    supers /= np.linalg.norm(supers, axis=1, keepdims=True)
    parent = rng.integers(0, n_super, size=n_concepts)
    own = rng.standard_normal((n_concepts, dim)) @ proj
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    concepts = 0.75 * supers[parent] + 0.66 * own
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    # Zipf-like concept sizes (a few huge concepts, a long tail), shuffled.
    ranks = np.arange(1, n_concepts + 1, dtype=np.float64)
    weights = ranks**-0.9
    rng.shuffle(weights)
    weights /= weights.sum()
    # Tight and loose concepts.
    spread = rng.lognormal(mean=np.log(0.55), sigma=0.3, size=n_concepts)
    # Decaying noise spectrum: most variance in the first few dozen directions.
    spectrum = np.arange(1, dim + 1, dtype=np.float64) ** -0.8
    spectrum /= spectrum.sum()
    return ClipLikeSpace(
        dim=dim,
        image_mean=image_mean.astype(np.float32),
        text_mean=text_mean.astype(np.float32),
        concepts=concepts.astype(np.float32),
        concept_weights=weights,
        concept_spread=spread.astype(np.float32),
        noise_basis=basis.astype(np.float32),
        noise_scale=np.sqrt(spectrum).astype(np.float32),
        seed=seed,
    )
