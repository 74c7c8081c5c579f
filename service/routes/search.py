"""Search: by text (GET and POST, with negative and weighted terms), by upload, by example."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dtime
from typing import Annotated, Any

import numpy as np
from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
)
from starlette.concurrency import run_in_threadpool

from clipsearch.indexer.errors import Conflict

from ..auth import ReadAccess
from ..deps import ServiceState, StateDep
from ..hybrid import ModeQuery, mode_search, prefetch_keywords, resolve_mode
from ..query import (
    DEFAULT_NEGATIVE_WEIGHT,
    LanguageError,
    QueryError,
    ResolvedLanguage,
    check_language_code,
    combine,
    parse_query,
    query_languages,
    resolve_language,
    with_page_options,
)
from ..ranking import SORTS, ranked_page
from ..schemas import LANG_HELP, LanguagesOut, SearchFiltersIn, SearchHit, SearchIn, SearchResponse
from .common import ERRORS, MAX_ID, hit_out

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["search"], responses=ERRORS, dependencies=[ReadAccess])

UPLOAD_CHUNK = 256 * 1024


# The paging and threshold parameters every search endpoint takes.
KQuery = Annotated[int, Query(ge=1, description="How many results.")]
OffsetQuery = Annotated[int, Query(ge=0, description="Skip this many results.")]
MinScoreQuery = Annotated[
    float | None,
    Query(ge=-1.0, le=1.0, allow_inf_nan=False, description="Drop results below this cosine."),
]
MinRelevanceQuery = Annotated[
    float | None,
    Query(
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Drop results below this calibrated relevance (0.5: the gallery's default; "
        "README: Relevance).",
    ),
]
# bounded here (a clear 422 for a long value); service.query says what else it may not be
LangQuery = Annotated[str | None, Query(max_length=64, description=LANG_HELP)]
SortQuery = Annotated[
    str,
    Query(
        pattern="^(relevance|date_desc|date_asc)$",
        description="relevance, or by capture date (newest or oldest first) among the results "
        "above min_relevance (0.5 when not given).",
    ),
]


def as_json(response: SearchResponse) -> Response:
    """The response serialised once, by its own model (returned as is, FastAPI skips validating
    it again against ``response_model``, which still documents it): a page of hits is built and
    checked once, not dumped, validated and dumped again."""
    return Response(response.model_dump_json(), media_type="application/json")


def check_lang(lang: str | None) -> None:
    """422 for a ``lang`` not written as a FLORES-200 code, before any model is loaded."""
    if lang:
        try:
            check_language_code(lang)
        except LanguageError as exc:
            raise HTTPException(422, detail=str(exc)) from exc


async def encoder_for(state: ServiceState, lang: str | None) -> tuple[Any, ResolvedLanguage]:
    """The batching text encoder (service.query.TextEncoder) and ``lang`` resolved for the model
    that encoder runs (service.query.resolve_language; 422 for a code that model does not know).
    The library may switch models at any time (a re-index finishing): the model is read before
    and after the encoder is had, and the pair is kept only when both are the same."""
    for _ in range(3):
        loaded = state.encoder is not None  # else: load on the pool, off the event loop
        model = state.ensure_model() if loaded else await state.run(state.ensure_model)
        try:
            language = resolve_language(model, lang)
        except LanguageError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
        encoder = state.text_encoder() if loaded else await state.run(state.text_encoder)
        if state.ensure_model() is model:
            return encoder, language
    raise Conflict("the library is switching to another model: retry in a moment")


def _bounds(state: ServiceState, k: int, offset: int) -> None:
    s = state.settings
    if k > s.search_k_max:
        raise HTTPException(422, detail=f"k must be at most {s.search_k_max} (got {k})")
    if offset > s.search_offset_max:
        raise HTTPException(
            422,
            detail=f"offset must be at most {s.search_offset_max} (got {offset}); refine the query",
        )


def _day_bound(value: datetime | date | None, end: bool) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.combine(value, dtime.max if end else dtime.min)
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)  # taken_at is camera wall-clock time
    return value


def _filters(f: SearchFiltersIn | None) -> Any:
    if f is None:
        return None
    from clipsearch.indexer.types import SearchFilters

    if f.folder and "\x00" in f.folder:
        # checked here, not only where the catalog is asked: an empty index answers no ids and
        # would otherwise let the bad value pass as a 200
        raise HTTPException(400, detail="the folder filter contains a NUL character")
    formats = tuple(x.strip().upper() for x in f.formats if x.strip()) if f.formats else None
    date_from = _day_bound(f.date_from, end=False)
    date_to = _day_bound(f.date_to, end=True)
    if date_from and date_to and date_from > date_to:
        raise HTTPException(422, detail="filters.date_from is after filters.date_to")
    if not (f.folder or formats or date_from or date_to):
        return None
    return SearchFilters(
        folder=f.folder or None, date_from=date_from, date_to=date_to, formats=formats
    )


async def filter_params(
    folder: Annotated[
        str | None,
        Query(max_length=4096, description="Only images under this folder (absolute path)."),
    ] = None,
    date_from: Annotated[date | None, Query(description="Taken on or after (YYYY-MM-DD).")] = None,
    date_to: Annotated[date | None, Query(description="Taken on or before (YYYY-MM-DD).")] = None,
    format: Annotated[
        list[str] | None,
        Query(description="Only these formats (repeatable: JPEG, PNG, WEBP, GIF, BMP, TIFF)."),
    ] = None,
) -> SearchFiltersIn | None:
    """The search filters as query parameters (GET search, search by image, more like this)."""
    if format is not None and len(format) > 16:
        raise HTTPException(422, detail="at most 16 format parameters")
    if format is not None and any(len(x) > 16 for x in format):
        raise HTTPException(422, detail="a format name is at most 16 characters (e.g. JPEG)")
    if not (folder or date_from or date_to or format):
        return None
    from pydantic import ValidationError

    try:
        return SearchFiltersIn(folder=folder, date_from=date_from, date_to=date_to, formats=format)
    except ValidationError as exc:  # a control character in folder, a format that is no name
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise HTTPException(422, detail=f"{where or 'filters'}: {msg}") from None


FiltersDep = Annotated[SearchFiltersIn | None, Depends(filter_params)]


async def _search_vector(
    request: Request,
    state: ServiceState,
    vector: np.ndarray,
    *,
    k: int,
    offset: int,
    min_score: float | None,
    filters: Any = None,
    exclude: int | list[int] | None = None,
    min_relevance: float | None = None,
    sort: str = "relevance",
    image_share: float = 0.0,
    search: Any = None,
) -> tuple[list[SearchHit], dict[str, Any]]:
    """One page of hits with their relevance (service.ranking), and the response's extra
    fields (``hidden``, ``hidden_more``). ``search(k, offset, min_score)``: how to search
    (default: the vectors, with these filters and exclusions)."""
    base: dict[str, Any] = {"filters": filters}
    if exclude is not None:  # "more like this": never the example itself
        base["exclude"] = [exclude] if isinstance(exclude, int) else list(exclude)

    def by_vector(k: int, offset: int, min_score: float | None) -> list[Any]:
        return state.search(vector, k=k, offset=offset, min_score=min_score, **base)  # type: ignore[no-any-return]

    page = await state.run_search(
        _ranked,
        state,
        search or by_vector,
        k=k,
        offset=offset,
        min_score=min_score,
        min_relevance=min_relevance,
        image_share=image_share,
        sort=sort,
    )
    results = []
    for hit, relevance in zip(page.hits, page.relevance, strict=True):
        out = hit_out(request, hit)
        out.relevance = relevance
        results.append(out)
    extra: dict[str, Any] = {}
    if page.hidden is not None:
        extra = {"hidden": page.hidden, "hidden_more": page.hidden_more}
    return results, extra


def _ranked(state: ServiceState, search: Any, **kwargs: Any) -> Any:
    calibration = None
    get = getattr(state.library, "calibration", None)
    if get is not None:
        try:
            calibration = get()
        except Conflict:
            raise
        except Exception as exc:  # no relevance is better than no results
            log.warning("relevance calibration unavailable: %s", exc)
    if kwargs.get("sort") not in SORTS:
        raise HTTPException(422, detail="sort must be relevance, date_desc or date_asc")
    return ranked_page(search, calibration, **kwargs)


async def _text_search(
    request: Request,
    state: ServiceState,
    text: str,
    negative: list[str],
    weights: list[float] | None,
    k: int,
    offset: int,
    min_score: float | None,
    filters: SearchFiltersIn | None,
    min_relevance: float | None = None,
    sort: str = "relevance",
    mode: str | None = None,
    lang: str | None = None,
) -> SearchResponse:
    start = time.perf_counter()
    s = state.settings
    _bounds(state, k, offset)
    check_lang(lang)
    if len(text) > s.max_query_chars or any(len(n) > s.max_query_chars for n in negative):
        raise HTTPException(422, detail=f"query text is longer than {s.max_query_chars} characters")
    parsed = parse_query(text)
    negs = list(dict.fromkeys([*parsed.negative, *(" ".join(n.split()) for n in negative)]))
    negs = [n for n in negs if n]
    if len(negs) > s.max_negative_terms:
        raise HTTPException(422, detail=f"at most {s.max_negative_terms} negative terms per query")
    terms = ([parsed.text] if parsed.text else []) + negs
    if not terms:
        raise HTTPException(400, detail="the query is empty: type what you are looking for")
    signs = ([1.0] if parsed.text else []) + [-1.0] * len(negs)
    if weights is None:
        mags = ([1.0] if parsed.text else []) + [DEFAULT_NEGATIVE_WEIGHT] * len(negs)
    else:
        if len(weights) != len(terms):
            raise HTTPException(
                422,
                detail=f"weights has {len(weights)} values but the query has {len(terms)} terms "
                f"({', '.join(repr(t) for t in terms)}); give one weight per term",
            )
        if any(not np.isfinite(w) or abs(w) > 100 for w in weights):
            raise HTTPException(422, detail="weights must be finite numbers between -100 and 100")
        mags = list(weights)
    lib_filters = _filters(filters)
    signed = [s_ * m for s_, m in zip(signs, mags, strict=True)]
    mode = await resolve_mode(state, parsed.text, mode)  # service/hybrid.py
    # the keyword side is read while the text is encoded (a date sort reads deeper: not then)
    ahead = (
        prefetch_keywords(state, parsed.text, mode, k, offset, lib_filters)
        if sort == "relevance"
        else None
    )
    query = _TextQuery(
        start=start,
        text=parsed.text,
        negative=negs,
        weights=mags,
        terms=terms,
        signed=signed,
        mode=mode,
        k=k,
        offset=offset,
        min_score=min_score,
        filters=lib_filters,
        min_relevance=min_relevance,
        sort=sort,
        lang=lang,
    )
    try:
        return await _encode_and_search(request, state, query, ahead)
    finally:
        if ahead is not None and not ahead.done():
            ahead.cancel()


@dataclass(frozen=True)
class _TextQuery:
    """A text query checked and parsed (``_text_search``), ready to encode and search."""

    start: float  # perf_counter() when the request's search began (took_ms)
    text: str  # the positive text ("" when the query has only negative terms)
    negative: list[str]
    weights: list[float]  # one magnitude per term
    terms: list[str]  # the texts to encode: the positive one first, then the negative ones
    signed: list[float]  # each term's signed weight (combine)
    mode: str
    k: int
    offset: int
    min_score: float | None
    filters: Any  # the library's SearchFilters, or None
    min_relevance: float | None
    sort: str
    lang: str | None


async def _encode_and_search(
    request: Request, state: ServiceState, q: _TextQuery, ahead: Any
) -> SearchResponse:
    """Encode the query's terms and search; ``ahead``: the keyword side read meanwhile."""
    for attempt in (1, 2):
        encoder, language = await encoder_for(state, q.lang)
        vectors = await encoder.aencode(q.terms, language.language)
        keywords = await ahead if ahead is not None else None
        if len(q.terms) == 1 and q.weights[0] > 0:
            vector = vectors[0]
        else:
            try:
                vector = combine(vectors, q.signed)
            except QueryError as exc:
                raise HTTPException(400, detail=str(exc)) from exc
        try:
            results, extra = await _search_vector(
                request,
                state,
                vector,
                k=q.k,
                offset=q.offset,
                min_score=q.min_score,
                filters=q.filters,
                min_relevance=q.min_relevance,
                sort=q.sort,
                search=mode_search(state, vector, q.text, q.mode, q.filters, keywords),
            )
            break
        except Exception as exc:
            # the library swapped to another model between encoding and searching: encode again
            if attempt == 2 or not isinstance(exc, Conflict):
                raise
    state.metrics.searches.labels("text").inc()
    query: dict[str, Any] = {
        "text": q.text,
        "negative": q.negative,
        "weights": q.weights,
        "k": q.k,
        "offset": q.offset,
        "mode": q.mode,
    }
    with_page_options(query, q.min_score, q.min_relevance, q.sort)
    return SearchResponse(
        query=language.describe(query),
        took_ms=round((time.perf_counter() - q.start) * 1000, 3),
        results=results,
        **extra,
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
) -> Response:
    """Search by text. `q=beach -people` finds beaches and steers away from people; `folder`,
    `date_from`, `date_to` and `format` narrow the results; `mode` picks the vectors, the words
    found in and beside the images, or both (each hit's `match` says which); `lang=fra_Latn`
    reads the query as French on a language-aware model (GET /api/search/languages)."""
    return as_json(
        await _text_search(
            request,
            state,
            q,
            [],
            None,
            k,
            offset,
            min_score,
            filters,
            min_relevance,
            sort,
            mode,
            lang,
        )
    )


@router.post("/search", operation_id="search_post", response_model=SearchResponse)
async def search_post(request: Request, state: StateDep, body: SearchIn) -> Response:
    """Search by text with negative terms, weights, a score threshold and filters; `terms`
    mixes weighted texts and library images."""
    if body.terms:
        from ..terms import terms_search

        return as_json(await terms_search(request, state, body, []))
    if body.text is None:
        raise HTTPException(422, detail="give `text` or `terms`: what to look for")
    found = await _text_search(
        request,
        state,
        body.text,
        body.negative,
        body.weights,
        body.k,
        body.offset,
        body.min_score,
        body.filters,
        body.min_relevance,
        body.sort,
        body.mode,
        body.lang,
    )
    return as_json(found)


UPLOAD_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF")
QUERY_SIDE = 448  # decoded size kept for a query image: the model needs 224 px


def _decode_upload(data: bytes, max_pixels: int) -> Any:
    """Decode a query image at the smallest size that serves the model.

    JPEGs are decoded in draft mode (DCT scaling: 1/2 to 1/8 of each side, for a fraction of the
    time and memory); ``max_pixels`` bounds the pixels actually decoded, so a 7000x7000 PNG (which
    cannot be decoded smaller) is refused from its header, before any pixel is decoded, while a
    48-megapixel phone JPEG is decoded at 1/8. The result is reduced to about QUERY_SIDE px."""
    from PIL import Image, UnidentifiedImageError

    import clipsearch.indexer.decode  # noqa: F401 - registers the HEIC opener when pillow-heif is installed

    Image.init()
    formats = tuple(f for f in UPLOAD_FORMATS if f in Image.OPEN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Any = Image.open(io.BytesIO(data), formats=formats)
            width, height = img.size
            if img.format in ("JPEG", "MPO"):
                img.draft("RGB", (QUERY_SIDE, QUERY_SIDE))  # never below the requested size
            dw, dh = img.size  # what will be decoded
            if dw * dh > max_pixels:
                raise HTTPException(
                    413,
                    detail=f"image is {width}x{height} = {width * height} pixels; a search image "
                    f"may have at most {max_pixels} pixels (JPEGs count at 1/8 of each side): "
                    "send a smaller image (a few hundred pixels is plenty for searching)",
                )
            img.load()
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            if max(img.size) > 2 * QUERY_SIDE:
                factor = max(1, max(img.size) // QUERY_SIDE)
                img = img.reduce(factor) if img.mode in ("RGB", "L", "RGBA", "P") else img
            return img.convert("RGB")
    except HTTPException:
        raise
    except UnidentifiedImageError as exc:
        raise HTTPException(
            415,
            detail="the upload is not an image this server can read (JPEG, PNG, WebP, GIF, BMP, "
            "TIFF, HEIC)",
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise HTTPException(413, detail=f"image has too many pixels (limit {max_pixels})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise HTTPException(
            400, detail=f"the image could not be decoded (truncated or corrupt file?): {exc}"
        ) from exc


class DecodeGate:
    """At most ``slots`` upload decodes at once, at most ``queue`` waiting; beyond, 503 with
    Retry-After (a burst of uploads costs bounded CPU and memory, whatever its size)."""

    def __init__(self, slots: int, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self._sem: asyncio.Semaphore | None = None
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        busy = {"Retry-After": "2"}
        if self._sem.locked() and self.waiting >= self.queue:
            raise HTTPException(
                503,
                detail="too many image searches at once: retry in a few seconds",
                headers=busy,
            )
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), UPLOAD_WAIT_S)
        except TimeoutError:
            raise HTTPException(
                503, detail="the server is busy decoding other images: retry shortly", headers=busy
            ) from None
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._sem.release()


UPLOAD_WAIT_S = 20.0


def _gate(state: ServiceState) -> DecodeGate:
    gate = getattr(state, "upload_gate", None)
    if gate is None:
        gate = DecodeGate(state.settings.upload_decode_slots, state.settings.upload_queue)
        state.upload_gate = gate
    return gate


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await file.read(UPLOAD_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise HTTPException(
                413,
                detail=f"upload is larger than the limit of {limit} bytes: send a smaller image",
            )
        chunks.append(chunk)
    if size == 0:
        raise HTTPException(400, detail="the uploaded file is empty")
    return b"".join(chunks)


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
) -> Response:
    """Search by an example image (multipart upload, field `file`), optionally filtered and
    mixed with text and library-image terms (form field `terms`, whose texts are read as
    `lang`)."""
    start = time.perf_counter()
    _bounds(state, k, offset)
    check_lang(lang)
    s = state.settings
    gate = _gate(state)
    async with gate.slot():
        data = await _read_upload(file, s.max_upload_bytes)
        img = await state.run(_decode_upload, data, s.max_upload_pixels)
        del data
    model = await state.run(state.ensure_model)
    vector = (await state.run(model.embed_images, [img]))[0]
    if terms is not None:
        from ..terms import parse_form_terms, terms_search

        body = parse_form_terms(terms, k, offset, min_score, min_relevance, sort, filters)
        body.lang = lang
        return as_json(
            await terms_search(request, state, body, [vector], [file.filename or "upload"])
        )
    results, extra = await _search_vector(
        request,
        state,
        vector,
        k=k,
        offset=offset,
        min_score=min_score,
        filters=_filters(filters),
        min_relevance=min_relevance,
        sort=sort,
        image_share=1.0,
    )
    state.metrics.searches.labels("image").inc()
    query: dict[str, Any] = {
        "image": file.filename or "upload",
        "bytes": file.size,
        "k": k,
        "offset": offset,
    }
    with_page_options(query, min_relevance=min_relevance, sort=sort)
    return as_json(
        SearchResponse(
            query=query,
            took_ms=round((time.perf_counter() - start) * 1000, 3),
            results=results,
            **extra,
        )
    )


@router.get("/images/{id}/similar", operation_id="similar_images", response_model=SearchResponse)
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
) -> Response:
    """More like this: the images closest to image `id` (itself excluded), optionally filtered."""
    start = time.perf_counter()
    _bounds(state, k, offset)
    vector = await run_in_threadpool(state.library.image_vector, id)
    results, extra = await _search_vector(
        request,
        state,
        vector,
        k=k,
        offset=offset,
        min_score=min_score,
        filters=_filters(filters),
        exclude=id,
        min_relevance=min_relevance,
        sort=sort,
        image_share=1.0,
    )
    state.metrics.searches.labels("similar").inc()
    query: dict[str, Any] = {"similar_to": id, "k": k, "offset": offset}
    with_page_options(query, min_relevance=min_relevance, sort=sort)
    return as_json(
        SearchResponse(
            query=query,
            took_ms=round((time.perf_counter() - start) * 1000, 3),
            results=results,
            **extra,
        )
    )
