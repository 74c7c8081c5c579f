"""`clipsearch search`: the same search as the REST API, from the shell.

The query is planned by the domain (indexer.search_terms: text with "-word" negatives, ``--not``
texts, ``--like``/``--unlike`` library images) and searched by the domain
(indexer.search_service: relevance, the default cut, the order, paging). When a server serves
the same data folder (its run file, service.runfile) the CLI asks it, as quick as the API is
(``CLIPSEARCH_API_TOKEN`` when it needs the token); otherwise it searches the library itself,
with the query texts embedded at the server's query precision (``query_precision``).
Both give one :class:`Page` to print.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.parse
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from clipsearch.indexer.library import Library
    from clipsearch.model.base import EmbeddingModel

    from .settings import Settings

LANG_HINT = "`clipsearch search --lang list` prints the codes the library's model takes"
HIT_FIELDS: tuple[str, ...] = ("id", "score", "relevance", "path", "width", "height", "format")
HIT_FIELDS += ("taken_at", "match", "words")


class TermBody(TypedDict, total=False):
    """One term as POST /api/search takes it (indexer.search_terms.Term's fields)."""

    text: str
    image_id: int
    weight: float


class SearchError(ValueError):
    """A search the CLI refuses; the message says what to change."""


class ServerGone(Exception):
    """The server named by the run file did not answer: search locally instead."""


@dataclass
class Page:
    """What ``clipsearch search`` prints: hits as plain dicts (HIT_FIELDS) and the paging."""

    hits: list[dict[str, Any]]
    min_relevance: float | None = None
    mode: str | None = None
    hidden: int | None = None
    hidden_more: bool = False
    has_more: bool = False
    next_cursor: str | None = None
    via: str = "local"
    extra: dict[str, Any] = field(default_factory=dict)


def _terms(args: argparse.Namespace) -> tuple[str | None, list[str], list[TermBody]]:
    """(text, negative texts, terms) of the flags, as POST /api/search takes them."""
    text = (args.text or "").strip() or None
    negative = [" ".join(n.split()) for n in args.not_ or [] if n.strip()]
    terms: list[TermBody] = [{"image_id": int(i), "weight": 1.0} for i in args.like or []]
    terms += [{"image_id": int(i), "weight": -1.0} for i in args.unlike or []]
    if text is None and negative:
        from clipsearch.indexer.search_terms import DEFAULT_NEGATIVE_WEIGHT

        terms += [{"text": n, "weight": -DEFAULT_NEGATIVE_WEIGHT} for n in negative]
        negative = []
    return text, negative, terms


# --- through the running server --------------------------------------------------------------


def ask_server(url: str, args: argparse.Namespace, timeout: float = 30.0) -> Page:
    """The page from the server at ``url`` (POST /api/search); :class:`ServerGone` when it does
    not answer, :class:`SearchError` with its message when it refuses the query."""
    text, negative, terms = _terms(args)
    body: dict[str, Any] = {"k": args.k, "offset": args.offset, "sort": args.sort}
    if text is not None:
        body["text"] = text
    if negative:
        body["negative"] = negative
    if terms:
        body["terms"] = terms
    for name in ("min_score", "min_relevance", "mode", "lang", "cursor"):
        value = getattr(args, name, None)
        if value is not None:
            body[name] = value
    if getattr(args, "tag", None):
        body["filters"] = {"tag": args.tag}  # the API's filter: the domain's tag condition
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("CLIPSEARCH_API_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    parsed = urllib.parse.urlsplit(url)
    try:
        conn = http.client.HTTPConnection(
            parsed.hostname or "127.0.0.1", parsed.port, timeout=timeout
        )
        try:
            conn.request("POST", "/api/v1/search", body=json.dumps(body), headers=headers)
            response = conn.getresponse()
            status, raw = response.status, response.read()
        finally:
            conn.close()
        data = json.loads(raw) if raw else {}
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, reset, not JSON
        raise ServerGone(f"{url}: {exc}") from None
    detail = data.get("detail") if isinstance(data, dict) else None
    if status == 401:
        raise SearchError(
            f"the server at {url} needs the API token: set CLIPSEARCH_API_TOKEN (or search "
            "without it: --no-server)"
        )
    if 400 <= status < 500:
        raise SearchError(str(detail or f"the server refused the search ({status})"))
    if status != 200:
        raise ServerGone(f"{url} answered {status}: {detail}")
    hits = [{k: h.get(k) for k in HIT_FIELDS} for h in data.get("results", [])]
    return Page(
        hits,
        min_relevance=data.get("min_relevance"),
        mode=data.get("mode") or data.get("query", {}).get("mode"),
        hidden=data.get("hidden"),
        hidden_more=bool(data.get("hidden_more")),
        has_more=bool(data.get("has_more")),
        next_cursor=data.get("next_cursor"),
        via=url,
    )


# --- on its own ------------------------------------------------------------------------------


def search_local(lib: Library, settings: Settings, args: argparse.Namespace) -> Page:
    """The page, searched in this process with the domain's search and the server's defaults."""
    from clipsearch.indexer.search_service import SearchQuery, SearchService
    from clipsearch.indexer.search_terms import Term, plan_query
    from clipsearch.indexer.types import SearchFilters

    from .query import query_embedder

    text, negative, raw_terms = _terms(args)
    plan = plan_query(
        text,
        negative,
        None,
        [Term(**t) for t in raw_terms],
        max_chars=settings.limits.max_query_chars,
        max_negative=settings.limits.max_negative_terms,
    )
    service = SearchService(
        lib,
        default_min_relevance=settings.limits.gallery_min_relevance,
        max_k=settings.limits.search_k_max,
        max_offset=settings.limits.search_offset_max,
    )
    service.check_page(args.k, args.offset)
    vectors: Any = []
    if plan.texts:
        language = query_language(lib.model, getattr(args, "lang", None))
        embed = query_embedder(lib.model, settings.search.query_precision)
        texts = [t for t, _ in plan.texts]
        vectors = embed(texts) if language is None else embed(texts, language=language)  # type: ignore[call-arg]
    images = [lib.image_vector(i) for i, _ in plan.images]  # NotFound: "image 17 does not exist"
    keyword_text = plan.text if plan.text_only else ""
    page = service.search(
        SearchQuery(
            vector=plan.vector(vectors, images),
            text=keyword_text,
            mode=args.mode,
            filters=SearchFilters(tag=args.tag) if getattr(args, "tag", None) else None,
            exclude=plan.exclude,
            image_share=plan.image_share(),
            k=args.k,
            offset=args.offset,
            cursor=getattr(args, "cursor", None),
            min_score=args.min_score,
            min_relevance=args.min_relevance,
            sort=args.sort,
        )
    )
    hits = []
    for hit in page.hits:
        d = asdict(hit)
        hits.append({k: d.get(k) for k in HIT_FIELDS})
    return Page(
        hits,
        min_relevance=page.min_relevance,
        mode=page.mode,
        hidden=page.hidden,
        hidden_more=page.hidden_more,
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


def query_language(model: EmbeddingModel, lang: str | None) -> str | None:
    """The code to read the query texts as (None: the model's default); a ``--lang`` the model
    cannot take: a SearchError (an unknown code) or a warning (a model without language codes,
    as the API does: the search runs, read as the model reads every text)."""
    from .query import LanguageError, resolve_language

    try:
        resolved = resolve_language(model, lang, where="--lang", hint=LANG_HINT)
    except LanguageError as exc:
        raise SearchError(str(exc)) from exc
    if resolved.ignored:
        print(
            f"clipsearch: warning: --lang {resolved.ignored} ignored: the library's model "
            f"({getattr(model, 'name', '') or 'this model'}) takes no language code "
            "(NLLB-SigLIP models do)",
            file=sys.stderr,
        )
    return resolved.language


def print_languages(model: EmbeddingModel) -> int:
    """``clipsearch search --lang list``: the model's query languages, default first."""
    from .query import query_languages

    info = query_languages(model)
    if not info.language_aware:
        print(
            f"the library's model ({getattr(model, 'name', '') or 'this model'}) takes no "
            "language code: --lang is ignored (NLLB-SigLIP models take one)"
        )
        return 0
    print(f"default: {info.default}")
    for code in info.languages:
        print(code)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags ``search`` adds for terms, relevance, paging and sorting."""
    p.add_argument(
        "--like",
        type=int,
        action="append",
        metavar="ID",
        help="also look like this library image (repeatable; `beach --like 17`)",
    )
    p.add_argument(
        "--unlike", type=int, action="append", metavar="ID", help="steer away from this image"
    )
    p.add_argument(
        "--not",
        dest="not_",
        action="append",
        metavar="TEXT",
        help='steer away from this text (repeatable; like "-word" in the query)',
    )
    p.add_argument(
        "--min-relevance",
        type=float,
        default=None,
        metavar="R",
        help="drop results whose relevance (the key they are ordered by) is below R, 0..1 "
        "(default: the server's cut, 0.5, as in the API and the gallery; 0 shows all)",
    )
    p.add_argument(
        "--tag",
        metavar="NAME",
        help="only pictures with this tag (its name or id; `clipsearch tags list` shows them)",
    )
    p.add_argument("--offset", type=int, default=0, help="skip this many results (paging)")
    p.add_argument(
        "--cursor", default=None, help="continue after a page: the `next` cursor it printed"
    )
    p.add_argument(
        "--no-server",
        dest="server",
        action="store_false",
        help="search the library in this process even when `clipsearch serve` serves it",
    )
    p.add_argument(
        "--lang",
        default=None,
        metavar="CODE",
        help="the language the query is written in, as a FLORES-200 code (fra_Latn, deu_Latn, "
        "jpn_Jpan, ...), for a language-aware model (NLLB-SigLIP; default: its own, eng_Latn); "
        "`--lang list` prints the codes. Other models ignore it, with a warning",
    )
    p.add_argument(
        "--sort",
        choices=("relevance", "date_desc", "date_asc"),
        default="relevance",
        help="by relevance, or by capture date among the results above the cut",
    )
