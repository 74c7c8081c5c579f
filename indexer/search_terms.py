"""What a search asks for, before anything is encoded: the query's terms and their weights.

One plan for every door (the REST API's text, terms and upload searches, the CLI's
``clipsearch search``): :func:`plan_query` reads a query string (``beach -people``), extra negative
texts, optional weights and weighted terms (texts, library images, uploads) into a
:class:`QueryPlan`: the texts to encode, the images whose stored vectors to use, the weight of
each, the text the keyword index looks for, the images to leave out of the results, and the share
of the positive weight image terms carry (the relevance background, indexer.relevance). The
door encodes the texts its own way (a batching encoder, or the text tower alone) and
:meth:`QueryPlan.vector` sums the embeddings into the query vector.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import IndexerError

DEFAULT_NEGATIVE_WEIGHT = 0.5
MAX_TERMS = 64
MAX_WEIGHT = 100.0

# a term: -"quoted phrase", "quoted phrase", -word, word
_TERM_RE = re.compile(r'(-?)"([^"]*)"|(\S+)')


class QueryError(IndexerError, ValueError):
    """A query that cannot be searched (empty, or its terms cancel out); the message says what
    to change."""


class InvalidQuery(QueryError):
    """A query whose parameters are out of bounds or inconsistent (k, offset, weights, a
    cursor of another query); the message names the parameter."""


@dataclass(frozen=True)
class ParsedQuery:
    """``text``: the positive part (may be empty); ``negative``: texts to steer away from."""

    text: str
    negative: tuple[str, ...] = field(default_factory=tuple)


def parse_query(q: str) -> ParsedQuery:
    """Split ``q`` into positive text and negative terms.

    ``beach -people`` -> text "beach", negative ("people",). ``-"red car"`` negates a phrase;
    a lone ``-`` or a word with inner dashes (``t-shirt``) is kept as text.
    """
    positive: list[str] = []
    negative: list[str] = []
    for match in _TERM_RE.finditer(q):
        dash, phrase, word = match.group(1), match.group(2), match.group(3)
        if phrase is not None:
            phrase = " ".join(phrase.split())
            if phrase:
                (negative if dash else positive).append(phrase)
        elif word is not None:
            if word.startswith("-") and len(word) > 1 and word[1:].strip("-"):
                negative.append(word[1:])
            else:
                positive.append(word)
    return ParsedQuery(" ".join(positive), tuple(dict.fromkeys(negative)))


def combine(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Weighted sum of rows of ``vectors`` (weights may be negative), L2-normalised.

    Raises :class:`QueryError` when the weights cancel out to a zero vector.
    """
    w = np.asarray(weights, dtype=np.float32).reshape(-1, 1)
    if w.shape[0] != vectors.shape[0]:
        raise QueryError(f"got {w.shape[0]} weights for {vectors.shape[0]} query terms")
    out = (w * vectors.astype(np.float32)).sum(axis=0)
    norm = float(np.linalg.norm(out))
    if not np.isfinite(norm) or norm < 1e-6:
        raise QueryError("the query terms cancel out: change the weights or drop a negative term")
    return np.asarray(out / norm, dtype=np.float32)


@dataclass(frozen=True)
class Term:
    """One weighted term: exactly one of ``text``, ``image_id`` (a library image) or ``upload``
    (the index of an image sent with the request)."""

    text: str | None = None
    image_id: int | None = None
    upload: int | None = None
    weight: float = 1.0


@dataclass
class QueryPlan:
    """The query's terms by kind, in order, with their signed weights (see the module
    docstring). ``text``: the positive text of the query string, what the keyword index looks
    for; ``negative`` and ``magnitudes``: that string's terms as the response echoes them."""

    text: str = ""
    negative: list[str] = field(default_factory=list)
    magnitudes: list[float] = field(default_factory=list)
    texts: list[tuple[str, float]] = field(default_factory=list)
    images: list[tuple[int, float]] = field(default_factory=list)
    uploads: list[tuple[int, float]] = field(default_factory=list)

    @property
    def text_only(self) -> bool:
        """No image terms: the keyword index and the text background apply."""
        return not (self.images or self.uploads)

    @property
    def exclude(self) -> tuple[int, ...]:
        """The library images the query looks like: never results of their own query."""
        return tuple(dict.fromkeys(i for i, w in self.images if w > 0))

    def image_share(self) -> float:
        """The share of the positive weight carried by image terms (0 text, 1 an image)."""
        pos_text = sum(w for _, w in self.texts if w > 0)
        pos_image = sum(w for _, w in self.images if w > 0) + sum(
            w for _, w in self.uploads if w > 0
        )
        total = pos_text + pos_image
        return pos_image / total if total > 0 else 0.0

    def describe(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = [{"text": t, "weight": w} for t, w in self.texts]
        out += [{"image_id": i, "weight": w} for i, w in self.images]
        out += [{"upload": u, "weight": w} for u, w in self.uploads]
        return out

    def vector(
        self,
        text_vectors: Sequence[np.ndarray] | np.ndarray,
        image_vectors: Sequence[np.ndarray] = (),
        upload_vectors: Sequence[np.ndarray] = (),
    ) -> np.ndarray:
        """The query vector: the terms' embeddings (texts in order, then the library images'
        stored vectors, then the uploads by index) summed with their weights, L2-normalised."""
        vectors = [np.asarray(v, dtype=np.float32).reshape(-1) for v in text_vectors]
        weights = [w for _, w in self.texts]
        vectors += [np.asarray(v, dtype=np.float32).reshape(-1) for v in image_vectors]
        weights += [w for _, w in self.images]
        for index, weight in self.uploads:
            vectors.append(np.asarray(upload_vectors[index], dtype=np.float32).reshape(-1))
            weights.append(weight)
        if len({v.size for v in vectors}) != 1:
            from .errors import Conflict

            raise Conflict("the terms were embedded by different models (a model switch): retry")
        if len(vectors) == 1 and weights[0] > 0:
            v = vectors[0]
            return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
        return combine(np.stack(vectors), weights)


def _check_weight(w: float) -> float:
    w = float(w)
    if not math.isfinite(w) or abs(w) > MAX_WEIGHT:
        raise InvalidQuery("weights must be finite numbers between -100 and 100")
    return w


def plan_query(
    text: str | None = None,
    negative: Sequence[str] = (),
    weights: Sequence[float] | None = None,
    terms: Sequence[Term] = (),
    n_uploads: int = 0,
    *,
    max_chars: int = 1000,
    max_negative: int = 16,
) -> QueryPlan:
    """The plan of a query (module docstring): ``text`` parsed ("-word" negatives), then the
    ``negative`` texts, weighted by ``weights`` (one per term of the text: the positive text,
    then each negative; default 1 and :data:`DEFAULT_NEGATIVE_WEIGHT`, negatives subtracted),
    then ``terms``. Raises :class:`QueryError` / :class:`InvalidQuery` saying what to change."""
    plan = QueryPlan()
    if text:
        if len(text) > max_chars or any(len(n) > max_chars for n in negative):
            raise InvalidQuery(f"query text is longer than {max_chars} characters")
        parsed = parse_query(text)
        negs = list(dict.fromkeys([*parsed.negative, *(" ".join(n.split()) for n in negative)]))
        negs = [n for n in negs if n]
        if len(negs) > max_negative:
            raise InvalidQuery(f"at most {max_negative} negative terms per query")
        texts = ([parsed.text] if parsed.text else []) + negs
        if not texts and not terms:
            raise QueryError("the query is empty: type what you are looking for")
        signs = ([1.0] if parsed.text else []) + [-1.0] * len(negs)
        if weights is None:
            mags = ([1.0] if parsed.text else []) + [DEFAULT_NEGATIVE_WEIGHT] * len(negs)
        elif len(weights) != len(texts):
            raise InvalidQuery(
                f"weights has {len(weights)} values but the query has {len(texts)} terms "
                f"({', '.join(repr(t) for t in texts)}); give one weight per term"
            )
        else:
            mags = [_check_weight(w) for w in weights]
        plan.text = parsed.text
        plan.negative = negs
        plan.magnitudes = mags
        plan.texts += [(t, s * m) for t, s, m in zip(texts, signs, mags, strict=True)]
    elif list(negative) or weights is not None:
        raise InvalidQuery("`negative` and `weights` go with `text`; give terms their own weights")
    for term in terms:
        _add(plan, term, n_uploads, max_chars)
    if not (plan.texts or plan.images or plan.uploads):
        raise QueryError("the query is empty: give a text or at least one term")
    if len(plan.texts) + len(plan.images) + len(plan.uploads) > MAX_TERMS:
        raise InvalidQuery(f"at most {MAX_TERMS} terms per query (text terms included)")
    return plan


def _add(plan: QueryPlan, term: Term, n_uploads: int, max_chars: int) -> None:
    weight = float(term.weight)
    if not math.isfinite(weight) or weight == 0 or abs(weight) > MAX_WEIGHT:
        raise InvalidQuery("a term's weight is a number between -100 and 100, not 0")
    if term.text is not None:
        text = " ".join(term.text.split())
        if not text:
            raise InvalidQuery("a text term is empty: write some words or drop it")
        if len(text) > max_chars:
            raise InvalidQuery(f"a text term is longer than {max_chars} characters")
        plan.texts.append((text, weight))
    elif term.image_id is not None:
        plan.images.append((int(term.image_id), weight))
    elif term.upload is not None:
        if term.upload >= n_uploads:
            raise InvalidQuery(
                f"term refers to upload {term.upload} but the request carries "
                f"{n_uploads} image{'s' if n_uploads != 1 else ''}: send the image as the "
                "multipart field `file` of POST /api/search/image"
            )
        plan.uploads.append((int(term.upload), weight))
