"""Queries that mix text and images: weighted terms summed into one query vector.

``POST /api/search {"terms": [{"text": "golden retriever", "weight": 2}, {"image_id": 17},
{"text": "puppy", "weight": -1}]}``, and ``POST /api/search/image`` with a ``terms`` form field
(the uploaded file is term ``{"upload": 0}``). Each term is embedded (a text by the text tower, a
library image by its stored vector, an upload by the image tower), and the query vector is the
L2-normalised weighted sum, exactly like negative terms (service.query.combine): a negative weight
steers away from a term. ``text`` (with its "-word" negatives and ``weights``) may come too; its
terms join the list.

Image vectors sit closer to other images than any text does (the modality gap), so an image term
of weight 1 pulls harder than a text term of weight 1; "more like this, but with text" therefore
gives the words weight 1 and the image 1 by default, and the gallery lets the words count more.
The example images themselves are left out of the results. The relevance of the hits is measured
against a background mixed by the share of positive weight the image terms carry
(indexer.relevance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from clipsearch.indexer.errors import Conflict

from .deps import ServiceState
from .query import (
    DEFAULT_NEGATIVE_WEIGHT,
    QueryError,
    ResolvedLanguage,
    combine,
    parse_query,
    with_page_options,
)
from .schemas import SearchIn, SearchResponse, TermIn


@dataclass
class Terms:
    """The query's terms by kind, in order, with their weights."""

    texts: list[tuple[str, float]] = field(default_factory=list)
    images: list[tuple[int, float]] = field(default_factory=list)
    uploads: list[tuple[int, float]] = field(default_factory=list)

    def describe(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"text": t, "weight": w} for t, w in self.texts]
        out += [{"image_id": i, "weight": w} for i, w in self.images]
        out += [{"upload": u, "weight": w} for u, w in self.uploads]
        return out

    def image_share(self) -> float:
        pos_text = sum(w for _, w in self.texts if w > 0)
        pos_image = sum(w for _, w in self.images if w > 0) + sum(
            w for _, w in self.uploads if w > 0
        )
        total = pos_text + pos_image
        return pos_image / total if total > 0 else 0.0


def collect_terms(state: ServiceState, body: SearchIn, n_uploads: int) -> Terms:
    """The terms of ``body`` (its ``text`` parsed as GET /api/search parses ``q``, then
    ``terms``), checked: a clear 4xx for anything that cannot be searched."""
    s = state.settings
    out = Terms()
    if body.text:
        if len(body.text) > s.max_query_chars:
            raise HTTPException(
                422, detail=f"query text is longer than {s.max_query_chars} characters"
            )
        parsed = parse_query(body.text)
        negs = [n for n in dict.fromkeys([*parsed.negative, *body.negative]) if n.strip()]
        texts = ([parsed.text] if parsed.text else []) + negs
        signs = ([1.0] if parsed.text else []) + [-1.0] * len(negs)
        if body.weights is None:
            mags = ([1.0] if parsed.text else []) + [DEFAULT_NEGATIVE_WEIGHT] * len(negs)
        elif len(body.weights) != len(texts):
            raise HTTPException(
                422,
                detail=f"weights has {len(body.weights)} values but `text` has {len(texts)} "
                "terms; give one weight per term of `text` (the terms carry their own)",
            )
        else:
            mags = [float(w) for w in body.weights]
            if any(not np.isfinite(w) or abs(w) > 100 for w in mags):
                raise HTTPException(
                    422, detail="weights must be finite numbers between -100 and 100"
                )
        # as in a text search: the "-" terms are subtracted with their weight
        weights = [sg * m for sg, m in zip(signs, mags, strict=True)]
        out.texts += list(zip(texts, weights, strict=True))
    elif body.negative or body.weights is not None:
        raise HTTPException(
            422, detail="`negative` and `weights` go with `text`; give terms their own weights"
        )
    for term in body.terms or []:
        _add(out, term, n_uploads, s.max_query_chars)
    if not (out.texts or out.images or out.uploads):
        raise HTTPException(400, detail="the query is empty: give a text or at least one term")
    if len(out.texts) + len(out.images) + len(out.uploads) > 64:
        raise HTTPException(422, detail="at most 64 terms per query (text terms included)")
    return out


def _add(out: Terms, term: TermIn, n_uploads: int, max_chars: int) -> None:
    weight = float(term.weight)
    if not np.isfinite(weight) or weight == 0 or abs(weight) > 100:
        raise HTTPException(422, detail="a term's weight is a number between -100 and 100, not 0")
    if term.text is not None:
        text = " ".join(term.text.split())
        if not text:
            raise HTTPException(422, detail="a text term is empty: write some words or drop it")
        if len(text) > max_chars:
            raise HTTPException(422, detail=f"a text term is longer than {max_chars} characters")
        out.texts.append((text, weight))
    elif term.image_id is not None:
        out.images.append((int(term.image_id), weight))
    elif term.upload is not None:
        if term.upload >= n_uploads:
            raise HTTPException(
                422,
                detail=f"term refers to upload {term.upload} but the request carries "
                f"{n_uploads} image{'s' if n_uploads != 1 else ''}: send the image as the "
                "multipart field `file` of POST /api/search/image",
            )
        out.uploads.append((int(term.upload), weight))


async def embed_terms(
    state: ServiceState,
    terms: Terms,
    upload_vectors: list[np.ndarray],
    lang: str | None = None,
) -> tuple[np.ndarray, ResolvedLanguage]:
    """The query vector: the weighted sum of the terms' embeddings, L2-normalised; and the
    language the text terms were read as (``lang``: service.query.resolve_language)."""
    from .routes.search import encoder_for

    vectors: list[np.ndarray] = []
    weights: list[float] = []
    language = ResolvedLanguage()
    if terms.texts:
        encoder, language = await encoder_for(state, lang)
        text_vectors = await encoder.aencode([t for t, _ in terms.texts], language.language)
        vectors += list(text_vectors)
        weights += [w for _, w in terms.texts]
    for image_id, weight in terms.images:
        vectors.append(await run_in_threadpool(state.library.image_vector, image_id))
        weights.append(weight)
    for index, weight in terms.uploads:
        vectors.append(upload_vectors[index])
        weights.append(weight)
    dims = {int(np.asarray(v).size) for v in vectors}
    if len(dims) != 1:
        raise Conflict("the terms were embedded by different models (a model switch): retry")
    if len(vectors) == 1 and weights[0] > 0:
        v = np.asarray(vectors[0], dtype=np.float32)
        return v / max(float(np.linalg.norm(v)), 1e-12), language
    try:
        combined = combine(np.stack([np.asarray(v, dtype=np.float32) for v in vectors]), weights)
        return combined, language
    except QueryError as exc:
        raise HTTPException(400, detail=str(exc)) from exc


async def terms_search(
    request: Request,
    state: ServiceState,
    body: SearchIn,
    upload_vectors: list[np.ndarray],
    upload_names: list[str] | None = None,
) -> SearchResponse:
    """POST /api/search with ``terms`` (and /api/search/image with a ``terms`` field)."""
    from .routes.search import _bounds, _filters, _search_vector, check_lang

    start = time.perf_counter()
    _bounds(state, body.k, body.offset)
    check_lang(body.lang)
    terms = collect_terms(state, body, len(upload_vectors))
    filters = _filters(body.filters)
    exclude = [i for i, w in terms.images if w > 0] or None
    for attempt in (1, 2):
        vector, language = await embed_terms(state, terms, upload_vectors, body.lang)
        try:
            results, extra = await _search_vector(
                request,
                state,
                vector,
                k=body.k,
                offset=body.offset,
                min_score=body.min_score,
                filters=filters,
                exclude=exclude,
                min_relevance=body.min_relevance,
                sort=body.sort,
                image_share=terms.image_share(),
            )
            break
        except Conflict:
            if attempt == 2:
                raise
    state.metrics.searches.labels("terms").inc()
    query: dict[str, Any] = {"terms": terms.describe(), "k": body.k, "offset": body.offset}
    if upload_names:
        query["uploads"] = upload_names
    with_page_options(query, body.min_score, body.min_relevance, body.sort)
    return SearchResponse(
        query=language.describe(query),
        took_ms=round((time.perf_counter() - start) * 1000, 3),
        results=results,
        **extra,
    )


def parse_form_terms(
    raw: str,
    k: int,
    offset: int,
    min_score: float | None,
    min_relevance: float | None,
    sort: str,
    filters: Any,
) -> SearchIn:
    """The ``terms`` form field of POST /api/search/image as a SearchIn whose terms include the
    upload (``{"upload": 0}``, weight 1 unless the field names it)."""
    import json

    from pydantic import TypeAdapter, ValidationError

    try:
        data = json.loads(raw)
    except RecursionError:
        raise HTTPException(
            422,
            detail='terms is nested too deeply: give a flat JSON list like [{"text": "at night"}]',
        ) from None
    except ValueError as exc:
        raise HTTPException(
            422, detail=f'terms must be a JSON list like [{{"text": "at night"}}]: {exc}'
        ) from exc
    try:
        terms = TypeAdapter(list[TermIn]).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise HTTPException(
            422, detail=f"terms{'.' + where if where else ''}: {first.get('msg', 'invalid')}"
        ) from exc
    if not any(t.upload is not None for t in terms):
        terms.insert(0, TermIn(upload=0))
    try:
        return SearchIn(
            terms=terms,
            k=k,
            offset=offset,
            min_score=min_score,
            min_relevance=min_relevance,
            sort=sort,  # type: ignore[arg-type]
            filters=filters,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise HTTPException(422, detail=f"{where}: {first.get('msg', 'invalid')}") from exc
