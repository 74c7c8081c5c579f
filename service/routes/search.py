"""Search: by text (GET and POST, with negative and weighted terms), by upload, by example.

Each route parses its request, builds the domain's query (indexer.search_terms plans the terms,
indexer.search_service ranks, cuts and pages) and presents the page; the refusals of the domain
become HTTP statuses in one place (:func:`refusals`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Annotated, NotRequired, TypedDict, Unpack

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from clipsearch.indexer.errors import Conflict
from clipsearch.indexer.search_service import SearchPage, SearchQuery, SearchService
from clipsearch.indexer.search_terms import InvalidQuery, QueryPlan, Term, plan_query
from clipsearch.indexer.timing import timed

from ..auth import ReadAccess, VisibleImage, check_visible_ids
from ..deps import ServiceState, StateDep, limit_compute_threads
from ..query import (
    LanguageError,
    ResolvedLanguage,
    TextEncoder,
    check_language_code,
    query_languages,
)
from ..query import resolve_language as resolve_lang
from ..schemas import LanguagesOut, SearchFiltersIn, SearchHit, SearchIn, SearchResponse
from ..search_params import (
    CursorQuery,
    FiltersDep,
    KQuery,
    LangQuery,
    MinRelevanceQuery,
    MinScoreQuery,
    ModeQuery,
    OffsetQuery,
    SortQuery,
    to_filters,
)
from ..terms import domain_terms, parse_form_terms
from ..uploads import decode_upload, read_upload
from .common import ERRORS, MAX_ID, hit_out

router = APIRouter(prefix="/api", tags=["search"], responses=ERRORS, dependencies=[ReadAccess])


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """The domain's refusals as HTTP: a parameter out of bounds or inconsistent, or a language
    the model does not read, 422; an unsearchable query (empty, terms that cancel out) 400 (by
    the app's handler of indexer errors, as a conflict is 409)."""
    try:
        yield
    except (InvalidQuery, LanguageError) as exc:
        raise HTTPException(422, detail=str(exc)) from exc


def as_json(response: SearchResponse) -> Response:
    """The response serialised once, by its own model (returned as is, FastAPI skips validating
    it again against ``response_model``, which still documents it)."""
    return Response(response.model_dump_json(), media_type="application/json")


def service_of(state: ServiceState) -> SearchService:
    """The domain's search over the served library, with this server's limits and default cut
    (``gallery_min_relevance``, the domain's DEFAULT_MIN_RELEVANCE unless configured)."""
    s = state.settings
    return SearchService(
        state.library,
        default_min_relevance=s.limits.gallery_min_relevance,
        max_k=s.limits.search_k_max,
        max_offset=s.limits.search_offset_max,
    )


async def encoder_for(
    state: ServiceState, lang: str | None
) -> tuple[TextEncoder, ResolvedLanguage]:
    """The batching text encoder (service.query.TextEncoder) and ``lang`` resolved for the model
    that encoder runs. The library may switch models at any time (a re-index finishing): the
    model is read before and after the encoder is had, and the pair is kept only when both are
    the same."""
    for _ in range(3):
        loaded = state.encoder is not None  # else: load on the pool, off the event loop
        model = state.ensure_model() if loaded else await state.run(state.ensure_model)
        language = resolve_lang(model, lang)
        encoder = state.text_encoder() if loaded else await state.run(state.text_encoder)
        if state.ensure_model() is model:
            return encoder, language
    raise Conflict("the library is switching to another model: retry in a moment")


def _run(state: ServiceState, service: SearchService, query: SearchQuery) -> SearchPage:
    limit_compute_threads(state.settings.search.compute_threads)
    return service.search(query)


class SearchOptions(TypedDict):
    """The keyword arguments of :func:`_search_now` past the plan."""

    kind: str
    echo: dict[str, object]
    k: int
    offset: int
    cursor: str | None
    min_score: float | None
    min_relevance: float | None
    sort: str
    filters: SearchFiltersIn | None
    mode: NotRequired[str | None]
    lang: NotRequired[str | None]
    uploads: NotRequired[list[np.ndarray] | None]
    exclude: NotRequired[tuple[int, ...]]


async def _search(
    request: Request, state: ServiceState, plan: QueryPlan, **kw: Unpack[SearchOptions]
) -> Response:
    """:func:`_search_now` once the server's search gate admits it (a bounded queue: 503 with
    Retry-After beyond, service.admission)."""
    async with state.search_gate.slot():
        return await _search_now(request, state, plan, **kw)


async def _search_now(
    request: Request,
    state: ServiceState,
    plan: QueryPlan,
    *,
    kind: str,
    echo: dict[str, object],
    k: int,
    offset: int,
    cursor: str | None,
    min_score: float | None,
    min_relevance: float | None,
    sort: str,
    filters: SearchFiltersIn | None,
    mode: str | None = None,
    lang: str | None = None,
    uploads: list[np.ndarray] | None = None,
    exclude: tuple[int, ...] = (),
) -> Response:
    """Encode the plan's terms, search, present: every search route ends here."""
    start = time.perf_counter()
    service = service_of(state)
    service.check_page(k, offset)
    if lang:
        check_language_code(lang)
    lib_filters = to_filters(filters)
    await check_visible_ids(request, [i for i, _ in plan.images])  # a viewer's: shared only
    text = plan.text if plan.text_only else ""
    known = service.known_mode(text, mode)
    mode = known or await state.run_search(service.mode_of, text, mode)
    # the keyword side is read while the text is encoded (a date order reads deeper: not then)
    ahead = None
    if mode != "semantic" and sort == "relevance" and cursor is None:
        ahead = asyncio.ensure_future(
            state.run_search(service.keyword_side, text, k, offset, lib_filters)
        )
    try:
        for attempt in (1, 2):
            language = ResolvedLanguage()
            text_vectors: Sequence[np.ndarray] | np.ndarray = []
            if plan.texts:
                encoder, language = await encoder_for(state, lang)
                with timed("encode"):
                    texts = [t for t, _ in plan.texts]
                    text_vectors = await encoder.aencode(texts, language.language)
            image_vectors = [
                await run_in_threadpool(state.library.image_vector, i) for i, _ in plan.images
            ]
            vector = plan.vector(text_vectors, image_vectors, uploads or [])
            query = SearchQuery(
                vector=vector,
                text=text,
                mode=mode,
                filters=lib_filters,
                exclude=tuple(dict.fromkeys([*plan.exclude, *exclude])),
                image_share=plan.image_share(),
                k=k,
                offset=offset,
                cursor=cursor,
                min_score=min_score,
                min_relevance=min_relevance,
                sort=sort,
                keywords=await ahead if ahead is not None else None,
            )
            try:
                page = await state.run_search(_run, state, service, query)
                break
            except Conflict:  # the library swapped models between encoding and searching
                if attempt == 2:
                    raise
    finally:
        if ahead is not None and not ahead.done():
            ahead.cancel()
    state.metrics.searches.labels(kind).inc()
    echo.update({"k": k, "offset": page.offset})
    if kind == "text":
        echo["mode"] = page.mode
    if min_score is not None:
        echo["min_score"] = min_score
    echo["min_relevance"] = page.min_relevance
    if sort != "relevance":
        echo["sort"] = sort
    return as_json(present(request, page, language.describe(echo), start))


def present(
    request: Request, page: SearchPage, query: dict[str, object], start: float
) -> SearchResponse:
    """The response of a page: each hit with its relevance and cosine, and the paging."""
    results: list[SearchHit] = []
    for hit in page.hits:
        out = hit_out(request, hit)
        out.relevance = hit.relevance
        results.append(out)
    return SearchResponse(
        query=query,
        took_ms=round((time.perf_counter() - start) * 1000, 3),
        results=results,
        hidden=page.hidden,
        hidden_more=page.hidden_more,
        min_relevance=page.min_relevance,
        mode=page.mode,
        offset=page.offset,
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


def _plan(
    state: ServiceState,
    text: str | None = None,
    negative: Sequence[str] = (),
    weights: Sequence[float] | None = None,
    terms: Sequence[Term] = (),
    n_uploads: int = 0,
) -> QueryPlan:
    s = state.settings
    return plan_query(
        text,
        negative,
        weights,
        terms,
        n_uploads,
        max_chars=s.limits.max_query_chars,
        max_negative=s.limits.max_negative_terms,
    )


@router.get("/search/languages", operation_id="search_languages", response_model=LanguagesOut)
async def search_languages(state: StateDep) -> LanguagesOut:
    """The query languages of the model searches use: whether it takes `lang` (NLLB-SigLIP
    does; CLIP and SigLIP do not), its default, and every code it knows. What the gallery's
    language picker shows."""
    model = await state.run(state.ensure_model)
    info = query_languages(model)
    return LanguagesOut(
        language_aware=info.language_aware, default=info.default, languages=list(info.languages)
    )


@router.get("/search", operation_id="search_get", response_model=SearchResponse)
async def search_get(
    request: Request,
    state: StateDep,
    q: Annotated[
        str,
        Query(
            min_length=1, max_length=10_000, description='Text query; "-word" excludes a concept.'
        ),
    ],
    k: KQuery = 20,
    offset: OffsetQuery = 0,
    min_score: MinScoreQuery = None,
    filters: FiltersDep = None,
    min_relevance: MinRelevanceQuery = None,
    sort: SortQuery = "relevance",
    mode: ModeQuery = None,
    lang: LangQuery = None,
    cursor: CursorQuery = None,
) -> Response:
    """Search by text. `q=beach -people` finds beaches and steers away from people; `folder`,
    `date_from`, `date_to` and `format` narrow the results; `mode` picks the vectors, the words
    found in and beside the images, or both (each hit's `match` says which); `lang=fra_Latn`
    reads the query as French on a language-aware model (GET /api/search/languages). Results
    come ordered by the `relevance` each shows, none below `min_relevance`; page with
    `next_cursor` (or `offset`)."""
    body = SearchIn.model_construct(text=q, negative=[], weights=None)
    return await _text_search(
        request, state, body, k, offset, cursor, min_score, filters, min_relevance, sort, mode, lang
    )


async def _text_search(
    request: Request,
    state: ServiceState,
    body: SearchIn,
    k: int,
    offset: int,
    cursor: str | None,
    min_score: float | None,
    filters: SearchFiltersIn | None,
    min_relevance: float | None,
    sort: str,
    mode: str | None,
    lang: str | None,
) -> Response:
    with refusals():
        service_of(state).check_page(k, offset)
        if lang:
            check_language_code(lang)
        plan = _plan(state, text=body.text, negative=body.negative, weights=body.weights)
        echo: dict[str, object] = {
            "text": plan.text,
            "negative": plan.negative,
            "weights": plan.magnitudes,
        }
        return await _search(
            request,
            state,
            plan,
            kind="text",
            echo=echo,
            k=k,
            offset=offset,
            cursor=cursor,
            min_score=min_score,
            min_relevance=min_relevance,
            sort=sort,
            filters=filters,
            mode=mode,
            lang=lang,
        )


@router.post("/search", operation_id="search_post", response_model=SearchResponse)
async def search_post(request: Request, state: StateDep, body: SearchIn) -> Response:
    """Search by text with negative terms, weights, a score threshold and filters; `terms`
    mixes weighted texts and library images."""
    if not body.terms:
        if body.text is None:
            raise HTTPException(422, detail="give `text` or `terms`: what to look for")
        return await _text_search(
            request,
            state,
            body,
            body.k,
            body.offset,
            body.cursor,
            body.min_score,
            body.filters,
            body.min_relevance,
            body.sort,
            body.mode,
            body.lang,
        )
    return await _terms_search(request, state, body, [], None)


async def _terms_search(
    request: Request,
    state: ServiceState,
    body: SearchIn,
    uploads: list[np.ndarray],
    upload_names: list[str] | None,
) -> Response:
    """POST /api/search with ``terms`` (and /api/search/image with a ``terms`` field)."""
    with refusals():
        service_of(state).check_page(body.k, body.offset)
        if body.lang:
            check_language_code(body.lang)
        plan = _plan(
            state,
            text=body.text,
            negative=body.negative,
            weights=body.weights,
            terms=domain_terms(body.terms),
            n_uploads=len(uploads),
        )
        echo: dict[str, object] = {"terms": plan.describe()}
        if upload_names:
            echo["uploads"] = upload_names
        return await _search(
            request,
            state,
            plan,
            kind="terms",
            echo=echo,
            k=body.k,
            offset=body.offset,
            cursor=body.cursor,
            min_score=body.min_score,
            min_relevance=body.min_relevance,
            sort=body.sort,
            filters=body.filters,
            mode=body.mode,
            lang=body.lang,
            uploads=uploads,
        )


@router.post("/search/image", operation_id="search_image", response_model=SearchResponse)
async def search_image(
    request: Request,
    state: StateDep,
    file: Annotated[
        UploadFile, File(description="An image (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC).")
    ],
    k: KQuery = 20,
    offset: OffsetQuery = 0,
    min_score: MinScoreQuery = None,
    filters: FiltersDep = None,
    min_relevance: MinRelevanceQuery = None,
    sort: SortQuery = "relevance",
    terms: Annotated[
        str | None,
        Form(
            max_length=100_000,
            description='Optional JSON list of more query terms (`[{"text": "at night"}, '
            '{"image_id": 17, "weight": -1}]`); the upload is term `{"upload": 0}` (weight 1 '
            "unless a term gives it another).",
        ),
    ] = None,
    lang: LangQuery = None,
    cursor: CursorQuery = None,
) -> Response:
    """Search by an example image (multipart upload, field `file`), optionally filtered and
    mixed with text and library-image terms (form field `terms`, whose texts are read as
    `lang`)."""
    s = state.settings
    with refusals():
        service_of(state).check_page(k, offset)
        if lang:
            check_language_code(lang)
    async with state.upload_gate.slot():
        data = await read_upload(file, s.limits.max_upload_bytes)
        img = await decode_upload(state, data)
        del data
    model = await state.run(state.ensure_model)
    with timed("encode"):
        vector = (await state.run(model.embed_images, [img]))[0]
    name = file.filename or "upload"
    if terms is not None:
        body = parse_form_terms(terms, k, offset, min_score, min_relevance, sort, filters)
        body.lang = lang
        body.cursor = cursor
        return await _terms_search(request, state, body, [vector], [name])
    with refusals():
        plan = _plan(state, terms=[Term(upload=0)], n_uploads=1)
        return await _search(
            request,
            state,
            plan,
            kind="image",
            echo={"image": name, "bytes": file.size},
            k=k,
            offset=offset,
            cursor=cursor,
            min_score=min_score,
            min_relevance=min_relevance,
            sort=sort,
            filters=filters,
            uploads=[vector],
        )


@router.get(
    "/images/{id}/similar",
    operation_id="similar_images",
    response_model=SearchResponse,
    dependencies=[VisibleImage],
)
async def similar_images(
    request: Request,
    state: StateDep,
    id: Annotated[int, Path(ge=1, le=MAX_ID, description="Catalog id of the example image.")],
    k: KQuery = 20,
    offset: OffsetQuery = 0,
    min_score: MinScoreQuery = None,
    filters: FiltersDep = None,
    min_relevance: MinRelevanceQuery = None,
    sort: SortQuery = "relevance",
    cursor: CursorQuery = None,
) -> Response:
    """More like this: the images closest to image `id` (itself excluded), optionally filtered."""
    with refusals():
        service_of(state).check_page(k, offset)
        plan = _plan(state, terms=[Term(image_id=id)])
        return await _search(
            request,
            state,
            plan,
            kind="similar",
            echo={"similar_to": id},
            k=k,
            offset=offset,
            cursor=cursor,
            min_score=min_score,
            min_relevance=min_relevance,
            sort=sort,
            filters=filters,
        )
