"""The keyword index: search the words of each image (OCR text, file and folder names, captions).

The rows live in ``image_keywords`` (migration 0006: one per image, created, renamed and deleted
with it by triggers). Writers only set the text they found (:func:`store_text`); readers ask
:func:`keyword_search`, which works the same on both databases:

1. **Candidates from the database's own index**, never a scan of the library. SQLite: the FTS5
   trigram table; each query word of 3+ characters is a substring query (``"recei"`` matches
   "receipt"), and when a word finds nothing, its trigrams are asked for one by one (small typos
   share most of them). PostgreSQL: the ``simple`` tsvector with prefix queries (``recei:*``),
   plus pg_trgm on the lower-cased text: ``LIKE '%ceipt%'`` and word similarity (typos).
2. **Scored in Python** on those few hundred rows, the same rule on both databases: for each query
   word its best match in each field (the whole word 1.0, a word starting with it 0.85, inside a
   word 0.7, a word one or two edits away 0.6), weighted by field (OCR text, file name and
   caption 1.0, folder name 0.7), averaged over the query words. A row that no query word
   really matches (a trigram candidate that is not a typo) is dropped. Each hit says which fields
   matched and the words it matched.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clipsearch.indexer.catalog import UTCDateTime

if TYPE_CHECKING:
    from .decode import DecodeResult

metadata = sa.MetaData()

image_keywords = sa.Table(
    "image_keywords",
    metadata,
    sa.Column("image_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("folder", sa.Text),
    sa.Column("caption", sa.Text),
    sa.Column("ocr", sa.Text),
    sa.Column("ocr_state", sa.String(16)),
    sa.Column("ocr_error", sa.Text),
    sa.Column("ocr_at", UTCDateTime),
)

#: fields of a keyword row, as hits name them, and how much a match in each counts
FIELDS = ("text", "filename", "caption", "folder")
FIELD_WEIGHT = {"text": 1.0, "filename": 1.0, "caption": 1.0, "folder": 0.7}
_COLUMN = {"text": "ocr", "filename": "name", "caption": "caption", "folder": "folder"}
MAX_CANDIDATES = 400  # rows read from the index per query word (scored in Python)
TYPO_CANDIDATES = 100  # rows sharing the most trigrams with a word nothing contains
UNRANKED_CAP = 1000  # matches read without ranking; beyond, the database ranks them
MAX_WORDS = 12  # query words used (a pasted paragraph is cut here)
#: The cost budget of one keyword query, the same on SQLite and PostgreSQL: a query word is cut
#: to its first MAX_WORD_CHARS letters (it then matches the words it begins); the index is asked
#: for at most TERMS_PER_WORD trigrams of each word (its first ones for a substring, spread over
#: it for a typo; the scoring then checks the whole word), so no statement carries more than
#: MAX_TERMS trigram terms. A 1,000-letter word was ~1,000 terms: 7 s a query at 100k rows.
MAX_WORD_CHARS = 32
TERMS_PER_WORD = 8
MAX_TERMS = MAX_WORDS * TERMS_PER_WORD
STOPWORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it"}
    | {"its", "of", "on", "or", "the", "this", "to", "with", "photo", "picture", "image"}
)
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def words_of(text: str | None) -> list[str]:
    """Lower-case words (runs of letters and digits) of a text, in order."""
    return _TOKEN.findall(text.lower()) if text else []


def query_words(query: str) -> list[str]:
    """The words of a query the keyword index looks for: no stop words, no one-letter words,
    no "-excluded" terms, at most MAX_WORDS, each once and cut to MAX_WORD_CHARS letters."""
    kept: list[str] = []
    for raw in query.split():
        if raw.startswith("-"):
            continue
        for w in words_of(raw):
            w = w[:MAX_WORD_CHARS]
            if len(w) >= 2 and w not in STOPWORDS and w not in kept:
                kept.append(w)
                if len(kept) == MAX_WORDS:
                    return kept
    return kept


@dataclass
class KeywordHit:
    id: int
    score: float  # 0..1: how well the query words matched (see the module docstring)
    fields: list[str] = field(default_factory=list)  # text, filename, caption, folder
    words: list[str] = field(default_factory=list)  # the words of the image that matched


# --------------------------------------------------------------------------------------------
# Writing


def store_text(
    session: Session,
    image_id: int,
    *,
    ocr_state: str | None,
    ocr_text: str | None = None,
    ocr_error: str | None = None,
    caption: str | None = None,
    set_caption: bool = True,
) -> None:
    """Record what was read in and beside one image (its row exists: the images trigger made
    it; a row deleted meanwhile is simply not updated). ``ocr_state='unavailable'`` keeps the
    row's OCR as it was (NULL: a later OCR job does it) and only sets the caption."""
    values: dict[str, Any] = {}
    if set_caption:
        values["caption"] = caption or None
    if ocr_state is not None and ocr_state != "unavailable":
        values.update(
            ocr=ocr_text or None,
            ocr_state=ocr_state,
            ocr_error=ocr_error,
            ocr_at=dt.datetime.now(dt.UTC),
        )
    if values:
        session.execute(
            sa.update(image_keywords)
            .where(image_keywords.c.image_id == int(image_id))
            .values(**values)
        )


def store_decoded(session: Session, pairs: Iterable[tuple[int, DecodeResult]]) -> dict[str, int]:
    """:func:`store_text` for each (image id, DecodeResult with text); returns counts by OCR
    state (for the job's summary)."""
    counts: dict[str, int] = {}
    for image_id, d in pairs:
        if getattr(d, "ocr_state", None) is None and getattr(d, "caption", None) is None:
            continue
        store_text(
            session,
            image_id,
            ocr_state=d.ocr_state,
            ocr_text=d.ocr_text,
            ocr_error=d.ocr_error,
            caption=d.caption,
        )
        if d.ocr_state:
            counts[d.ocr_state] = counts.get(d.ocr_state, 0) + 1
    return counts


class ImageText(TypedDict, total=False):
    """The words kept for one image (its keyword row), as the detail view shows them."""

    text: str | None  # read by OCR
    caption: str | None
    name: str | None
    folder: str | None
    ocr_state: str | None
    ocr_error: str | None
    ocr_at: dt.datetime | None


def image_text(session: Session, image_id: int) -> ImageText | None:
    """The keyword row of one image (what the detail view shows), or None."""
    row = session.execute(
        sa.select(image_keywords).where(image_keywords.c.image_id == int(image_id))
    ).first()
    if row is None:
        return None
    return {
        "text": row.ocr,
        "caption": row.caption,
        "name": row.name,
        "folder": row.folder,
        "ocr_state": row.ocr_state,
        "ocr_error": row.ocr_error,
        "ocr_at": row.ocr_at,
    }


def has_content(session: Session) -> bool:
    """Whether any image has a keyword row (one index probe)."""
    return session.scalar(sa.select(image_keywords.c.image_id).limit(1)) is not None


# --------------------------------------------------------------------------------------------
# Searching


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _trigrams(word: str) -> list[str]:
    return list(dict.fromkeys(word[i : i + 3] for i in range(len(word) - 2)))


def _substring_key(word: str) -> str:
    """What the index is asked for a word found inside a longer one: its first
    TERMS_PER_WORD trigrams (a superset of the rows holding the word; the scoring checks it)."""
    return word[: TERMS_PER_WORD + 2]


def _typo_grams(word: str) -> list[str]:
    """At most TERMS_PER_WORD of a word's trigrams, spread over it (a typo keeps most)."""
    grams = _trigrams(word)
    if len(grams) <= TERMS_PER_WORD:
        return grams
    step = len(grams) / TERMS_PER_WORD
    return list(dict.fromkeys(grams[int(i * step)] for i in range(TERMS_PER_WORD)))


_ROW = (
    image_keywords.c.image_id,
    image_keywords.c.name,
    image_keywords.c.folder,
    image_keywords.c.caption,
    image_keywords.c.ocr,
)


class KeywordRow(Protocol):
    """A candidate's keyword fields as :func:`score_row` reads them (a row of ``_ROW``)."""

    @property
    def image_id(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def folder(self) -> str | None: ...
    @property
    def caption(self) -> str | None: ...
    @property
    def ocr(self) -> str | None: ...


_ROWS_BY_ID = sa.select(*_ROW).where(
    image_keywords.c.image_id.in_(sa.bindparam("ids", expanding=True))
)


def _sqlite_candidates(session: Session, words: Sequence[str], limit: int) -> dict[int, KeywordRow]:
    fts = sa.table("image_keywords_fts")
    rows: dict[int, KeywordRow] = {}

    def ask(match: str, cap: int = UNRANKED_CAP, ranked: bool = False, n: int = limit) -> None:
        # Unranked first: a word in at most ``cap`` images is read whole (no bm25 over its
        # matches) and scored here; only a more common one is ranked by FTS5 for its best.
        stmt = (
            sa.select(*_ROW)
            .select_from(fts)
            .join(
                image_keywords,
                image_keywords.c.image_id == sa.literal_column("image_keywords_fts.rowid"),
            )
            .where(sa.text("image_keywords_fts MATCH :m").bindparams(m=match))
        )
        found = [] if ranked else session.execute(stmt.limit(cap + 1)).all()
        if ranked or len(found) > cap:
            found = session.execute(
                stmt.order_by(sa.text("image_keywords_fts.rank")).limit(n)
            ).all()
        for r in found:
            rows.setdefault(int(r.image_id), r)

    exact = [w for w in words if len(w) >= 3]
    if exact:
        ask(" OR ".join(dict.fromkeys(_fts_phrase(_substring_key(w)) for w in exact)))
    for w in words:
        if len(w) >= 4 and not any(_in_row(w, r) for r in rows.values()):
            grams = _typo_grams(w)
            if grams:  # a typo keeps some trigrams: the rows with most of them, scored here
                ask(" OR ".join(_fts_phrase(g) for g in grams), ranked=True, n=TYPO_CANDIDATES)
    return rows


def _postgres_candidates(
    session: Session, words: Sequence[str], limit: int, trigram: bool
) -> dict[int, KeywordRow]:
    """One statement per kind of match, each answered by its own GIN index (an OR of them
    makes the planner misjudge the trigram operators' cost and read the whole table)."""
    k = image_keywords
    doc: Any = sa.literal_column("image_keywords.doc")
    text: Any = sa.literal_column("image_keywords.words")
    rows: dict[int, KeywordRow] = {}

    def ask(cond: sa.ColumnElement[bool], order: sa.ColumnElement[float] | None = None) -> None:
        # unranked first, as on SQLite: ts_rank over every match only for a common word
        stmt = sa.select(*_ROW).where(cond)
        found = session.execute(stmt.limit(UNRANKED_CAP + 1)).all()
        if len(found) > UNRANKED_CAP:
            ordered = stmt.order_by(order.desc(), k.c.image_id) if order is not None else stmt
            found = session.execute(ordered.limit(limit)).all()
        for r in found:
            rows.setdefault(int(r.image_id), r)

    ts_terms = [t + ":*" for t in (re.sub(r"[^\w]", "", w) for w in words) if t]
    if ts_terms:  # whole words and prefixes: "recei" finds "receipt"
        tsq = sa.func.to_tsquery(sa.literal_column("'simple'"), sa.literal(" | ".join(ts_terms)))
        ask(doc.op("@@")(tsq), sa.func.ts_rank(doc, tsq))
    if not trigram:
        return rows
    for w in words:
        if len(w) >= 3 and not any(_in_row(w, r) for r in rows.values()):
            # inside a word: "ceipt" finds "receipt"
            key = _substring_key(w)
            like = "%" + key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            ask(text.like(sa.literal(like)))
        if len(w) >= 4 and not any(_in_row(w, r) for r in rows.values()):
            # a small typo: pg_trgm word similarity, at a threshold low enough for one edit in
            # a short word; the scoring keeps only words one or two edits away
            session.execute(sa.text("SET LOCAL pg_trgm.word_similarity_threshold = 0.3"))
            ask(text.op("%>")(sa.literal(_substring_key(w))))  # words %> w: indexable
    return rows


def _ready(
    session: Session, ids: Sequence[int], where: Sequence[sa.ColumnElement[bool]]
) -> set[int]:
    """Which of these images are ready and pass the search filters (by primary key)."""
    from clipsearch.indexer.catalog import Image

    if not ids:
        return set()
    from clipsearch.indexer.catalog import ID_IN

    stmt = sa.select(Image.id).where(ID_IN, Image.state == "ready", *where)
    return {int(i) for i in session.scalars(stmt, {"ids": [int(i) for i in ids]})}


def _has_trigram(session: Session) -> bool:
    return bool(
        session.scalar(
            sa.text("SELECT 1 FROM pg_indexes WHERE indexname = 'ix_image_keywords_words'")
        )
    )


def _edits_at_most(a: str, b: str, limit: int) -> bool:
    """Damerau-Levenshtein (adjacent transpositions) distance of a and b is <= limit."""
    if abs(len(a) - len(b)) > limit:
        return False
    prev2: list[int] | None = None
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if (
                prev2 is not None
                and i > 1
                and j > 1
                and a[i - 1] == b[j - 2]
                and a[i - 2] == b[j - 1]
            ):
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return False
        prev2, prev = prev, cur
    return prev[-1] <= limit


def _match(word: str, doc_words: Sequence[str]) -> tuple[float, str | None]:
    """The best match of a query word among a field's words: (quality, the word matched).
    Cheap tests first; the edit distance only when nothing contains the word."""
    if word in doc_words:
        return 1.0, word
    best, found = 0.0, None
    for w in doc_words:
        if w.startswith(word):
            return 0.85, w
        if best < 0.7 and len(word) >= 3 and word in w:
            best, found = 0.7, w
    if found is not None or len(word) < 4:
        return best, found
    limit = 1 if len(word) < 7 else 2
    grams = _bigrams(word)
    # q-gram lemma: k edits destroy at most 2k of a word's bigrams, so a word sharing fewer
    # cannot be k edits away (checked before the costly distance)
    need = max(1, len(grams) - 2 * limit)
    for w in doc_words:
        if (
            abs(len(w) - len(word)) <= limit
            and len(w) >= 3
            and len(grams & _bigrams(w)) >= need
            and _edits_at_most(word, w, limit)
        ):
            return 0.6, w
    return 0.0, None


@functools.lru_cache(maxsize=65_536)
def _bigrams(word: str) -> frozenset[str]:
    """A word's letter pairs (kept: the same query and file-name words recur on every query)."""
    return frozenset(word[i : i + 2] for i in range(len(word) - 1))


def _in_row(word: str, row: KeywordRow) -> bool:
    return any(
        word in (getattr(row, c) or "").lower() for c in ("name", "folder", "caption", "ocr")
    )


def _may_match(words: Sequence[str], row: KeywordRow) -> bool:
    """False only when no query word can match the row (then :func:`score_row` would find
    nothing): every kind of match but a typo has the word inside the row's lower-cased text,
    and a typo keeps at least ``need`` of the word's letter pairs (the q-gram lemma in
    :func:`_match`). Substring tests on one string, cheap next to splitting every field into
    words: most rows a vector search finds share no word with the query."""
    text = "\n".join(getattr(row, _COLUMN[f]) or "" for f in FIELDS).lower()
    for word in words:
        if word in text:
            return True
        if len(word) >= 4:
            grams = _bigrams(word)
            need = max(1, len(grams) - 2 * (1 if len(word) < 7 else 2))
            if sum(g in text for g in grams) >= need:
                return True
    return False


def score_row(words: Sequence[str], row: KeywordRow) -> KeywordHit | None:
    """Score one candidate row (the module docstring's rule); None when nothing matches."""
    if not _may_match(words, row):
        return None
    fields: list[str] = []
    matched: list[str] = []
    total = 0.0
    doc = {f: words_of(getattr(row, _COLUMN[f])) for f in FIELDS}
    for word in words:
        best = 0.0
        for f in FIELDS:
            q, w = _match(word, doc[f])
            if w is None:
                continue
            if f not in fields:
                fields.append(f)
            if w not in matched:
                matched.append(w)
            best = max(best, q * FIELD_WEIGHT[f])
        total += best
    if not matched:
        return None
    return KeywordHit(id=int(row.image_id), score=total / len(words), fields=fields, words=matched)


def score_ids(session: Session, query: str, ids: Sequence[int]) -> list[KeywordHit]:
    """Score these images' keyword rows (by primary key) for ``query``: the images the vector
    search found that the query's words also match, however common the words."""
    words = query_words(query)
    if not words or not ids:
        return []
    rows = session.execute(_ROWS_BY_ID, {"ids": [int(i) for i in ids]})
    return [h for h in (score_row(words, r) for r in rows) if h is not None]


def keyword_search(
    session: Session,
    query: str,
    limit: int = 100,
    where: Sequence[sa.ColumnElement[bool]] = (),
) -> list[KeywordHit]:
    """The ready images whose words match ``query`` best, best first (module docstring).
    ``where``: extra conditions on ``Image`` (the search filters), applied to the candidates
    the index gives (at most MAX_CANDIDATES per kind of match), by primary key."""
    hits = keyword_candidates(session, query, limit)
    keep = _ready(session, [h.id for h in hits], where)
    return [h for h in hits if h.id in keep][:limit]


def same_candidates(limit: int, other: int) -> bool:
    """Whether :func:`keyword_candidates` gives the same list for these two limits (it reads
    at least MAX_CANDIDATES per kind of match whatever the limit)."""
    return max(limit, MAX_CANDIDATES) == max(other, MAX_CANDIDATES)


def keyword_candidates(session: Session, query: str, limit: int = 100) -> list[KeywordHit]:
    """What :func:`keyword_search` ranks before the catalog's check: every image the keyword
    index gives for ``query`` (at most MAX_CANDIDATES, or ``limit``, per kind of match) that
    its words match, best first (then by id), whatever its state and the search filters. The
    first ``limit`` of them that are ready and pass the filters are keyword_search's answer;
    a ranking that reads the catalog anyway checks them in that read (indexer.hybrid). Reads
    the keyword index only."""
    words = query_words(query)
    if not words:
        return []
    cap = max(limit, MAX_CANDIDATES)
    if session.get_bind().dialect.name == "postgresql":
        rows = _postgres_candidates(session, words, cap, _has_trigram(session))
    else:
        rows = _sqlite_candidates(session, words, cap)
    hits = [h for h in (score_row(words, r) for r in rows.values()) if h is not None]
    hits.sort(key=lambda h: (-h.score, h.id))
    return hits
