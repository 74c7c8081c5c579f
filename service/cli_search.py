"""`clipsearch search`: text with "-word" negatives, mixed with library images (``--like ID``,
``--unlike ID``) and more negative texts (``--not TEXT``), with relevance, a relevance cut and
a date sort: the CLI form of POST /api/search's terms (service.terms) and service.ranking."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from .query import (
    DEFAULT_NEGATIVE_WEIGHT,
    LanguageError,
    combine,
    parse_query,
    query_embedder,
    query_languages,
    resolve_language,
)
from .ranking import RankedPage, ranked_page

LANG_HINT = "`clipsearch search --lang list` prints the codes the library's model takes"


class SearchError(ValueError):
    """A search the CLI refuses; the message says what to change."""


def run_search(lib: Any, settings: Any, args: argparse.Namespace) -> RankedPage:
    """The page ``clipsearch search`` prints."""
    parsed = parse_query(args.text or "")
    negs = list(dict.fromkeys([*parsed.negative, *(" ".join(n.split()) for n in args.not_ or [])]))
    negs = [n for n in negs if n]
    texts = ([parsed.text] if parsed.text else []) + negs
    weights = ([1.0] if parsed.text else []) + [-DEFAULT_NEGATIVE_WEIGHT] * len(negs)
    like = [int(i) for i in args.like or []]
    unlike = [int(i) for i in args.unlike or []]
    if not texts and not like and not unlike:
        raise SearchError("the query is empty: type what you are looking for (or --like ID)")
    if len(texts) + len(like) + len(unlike) > 64:
        raise SearchError("at most 64 terms per query")
    vectors: list[np.ndarray] = []
    if texts:
        language = query_language(lib.model, getattr(args, "lang", None))
        embed = query_embedder(lib.model, settings.query_precision)
        if language is None:
            vectors += list(embed(texts))
        else:
            vectors += list(embed(texts, language=language))  # type: ignore[call-arg]
    for image_id in like + unlike:
        vectors.append(lib.image_vector(image_id))  # NotFound: "image 17 does not exist"
    weights += [1.0] * len(like) + [-1.0] * len(unlike)
    if len(vectors) == 1 and weights[0] > 0:
        vector = np.asarray(vectors[0], dtype=np.float32)
    else:
        vector = combine(np.stack(vectors), weights)  # QueryError when they cancel out
    pos_text = sum(w for w in weights[: len(texts)] if w > 0)
    share = len(like) / (len(like) + pos_text) if like else 0.0

    def search(k: int, offset: int, min_score: float | None) -> list[Any]:
        if like or unlike or not parsed.text:
            return lib.search(vector, k=k, offset=offset, min_score=min_score, exclude=like or None)  # type: ignore[no-any-return]
        return lib.search_text(  # type: ignore[no-any-return]
            vector, parsed.text, args.mode, k=k, offset=offset, min_score=min_score
        )

    return ranked_page(
        search,
        lib.calibration(),
        k=args.k,
        offset=0,
        min_score=args.min_score,
        min_relevance=args.min_relevance,
        image_share=share,
        sort=args.sort,
    )


def query_language(model: Any, lang: str | None) -> str | None:
    """The code to read the query texts as (None: the model's default); a ``--lang`` the model
    cannot take: a SearchError (an unknown code) or a warning (a model without language codes,
    as the API does: the search runs, read as the model reads every text)."""
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


def print_languages(model: Any) -> int:
    """``clipsearch search --lang list``: the model's query languages, default first."""
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
    """The flags ``search`` adds for terms, relevance and sorting."""
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
        help="drop results below this calibrated relevance, 0..1 (0.5: the gallery's default)",
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
        help="by relevance, or by capture date among the results above --min-relevance "
        "(0.5 when not given)",
    )
