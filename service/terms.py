"""Queries that mix text and images, as the REST API reads them.

``POST /api/search {"terms": [{"text": "golden retriever", "weight": 2}, {"image_id": 17},
{"text": "puppy", "weight": -1}]}``, and ``POST /api/search/image`` with a ``terms`` form field
(the uploaded file is term ``{"upload": 0}``). What the terms mean (each embedded, summed with
its weight, L2-normalised; the example images left out of the results; the relevance background
mixed by the share of positive weight image terms carry) is decided once, for the API and the
CLI, in :mod:`indexer.search_terms`; this module only reads the request's form of them.

Image vectors sit closer to other images than any text does (the modality gap), so an image term
of weight 1 pulls harder than a text term of weight 1; "more like this, but with text" therefore
gives the words weight 1 and the image 1 by default, and the gallery lets the words count more.
"""

from __future__ import annotations

from fastapi import HTTPException

from clipsearch.indexer.search_terms import Term

from .schemas import SearchFiltersIn, SearchIn, TermIn


def domain_terms(terms: list[TermIn] | None) -> list[Term]:
    """The request's terms as the domain's."""
    return [
        Term(text=t.text, image_id=t.image_id, upload=t.upload, weight=float(t.weight))
        for t in terms or []
    ]


def parse_form_terms(
    raw: str,
    k: int,
    offset: int,
    min_score: float | None,
    min_relevance: float | None,
    sort: str,
    filters: SearchFiltersIn | None,
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
