"""Request and response models of the REST API (one family per resource)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong and what to do about it.")


class FieldErrorOut(BaseModel):
    loc: list[str | int] = Field(
        description="Where the value is: its part of the request (query, path, body, header) "
        'then the field, e.g. ["query", "k"] or ["body", "filters", "folder"].'
    )
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="Pydantic's error type, e.g. int_parsing, less_than_equal.")


class ValidationErrorOut(ErrorOut):
    """A 422: ``detail`` as one line, and each field's error with its location."""

    errors: list[FieldErrorOut] = Field(
        default_factory=list, description="Each invalid field (at most 20), where it is and why."
    )


# --- search -----------------------------------------------------------------------------------

LANG_HELP = (
    "The language the query text is written in, as a FLORES-200 code (fra_Latn, deu_Latn, "
    "jpn_Jpan, zho_Hans, ...), for a language-aware model (NLLB-SigLIP); default: the model's "
    "own (eng_Latn). GET /api/search/languages lists the codes the model takes. An unknown code "
    "is a 422; a model that takes no language code ignores `lang` and says so in the response "
    "(`query.lang_ignored`)."
)


class SearchFiltersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(
        default=None,
        max_length=4096,
        description="Only images under this folder (absolute path as stored in the catalog).",
    )
    date_from: datetime | date | None = Field(default=None, description="Taken on or after.")
    date_to: datetime | date | None = Field(default=None, description="Taken on or before.")
    formats: list[str] | None = Field(
        default=None,
        max_length=16,
        description="Only these formats (JPEG, PNG, WEBP, GIF, BMP, TIFF, ...).",
    )
    tag: str | None = Field(
        default=None, min_length=1, max_length=64, description="Only pictures with this tag."
    )

    @field_validator("folder")
    @classmethod
    def _folder_text(cls, value: str | None) -> str | None:
        from clipsearch.indexer.types import control_character

        bad = control_character(value) if value is not None else None
        if bad is not None:
            raise ValueError(f"the folder filter contains a control character ({bad})")
        return value

    @field_validator("formats")
    @classmethod
    def _format_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            name = name.strip()
            if name and not (len(name) <= 16 and name.replace("-", "").replace("_", "").isalnum()):
                raise ValueError(
                    f"{name[:20]!r} is not a format name: give JPEG, PNG, WEBP, GIF, BMP, TIFF, ..."
                )
        return value


class TermIn(BaseModel):
    """One query term: a text, or an image of the library by id, with a weight."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, min_length=1, max_length=10_000)
    image_id: int | None = Field(default=None, ge=1, le=2**63 - 1)
    upload: int | None = Field(
        default=None,
        ge=0,
        le=7,
        description="Index of an image sent with the query (multipart POST /api/search/image: "
        "field `file` is upload 0, `file1`... follow).",
    )
    weight: float = Field(
        default=1.0,
        ge=-100.0,
        le=100.0,
        allow_inf_nan=False,
        description="How much this term counts; negative steers away from it.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> TermIn:
        given = [x for x in (self.text, self.image_id, self.upload) if x is not None]
        if len(given) != 1:
            raise ValueError("each term is exactly one of text, image_id or upload")
        if self.weight == 0:
            raise ValueError("a term's weight must not be 0 (leave the term out instead)")
        return self


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=10_000,
        description='What to look for. Words prefixed with "-" (or -"a phrase") are negative terms. '
        "Optional when `terms` are given.",
        examples=["beach -people"],
    )
    terms: list[TermIn] | None = Field(
        default=None,
        max_length=64,
        description="Weighted query terms, each a text or a library image (`image_id`), summed "
        "with their weights like negative terms (a negative weight steers away); added to `text`.",
        examples=[[{"text": "golden retriever", "weight": 2}, {"image_id": 17}]],
    )
    negative: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Texts to steer away from (added to the '-' terms of `text`).",
    )
    weights: list[float] | None = Field(
        default=None,
        max_length=65,
        description=(
            "Weights of the query terms, in order: the positive text, then each negative term "
            "(the '-' terms of `text` first, then `negative`). Negative terms are subtracted "
            "with their weight. Default: 1 for the text, 0.5 for each negative term."
        ),
    )
    k: int = Field(default=20, ge=1, description="How many results.")
    offset: int = Field(default=0, ge=0, description="Skip this many results (paging).")
    cursor: str | None = Field(
        default=None,
        max_length=512,
        description="Continue after a previous page: its `next_cursor` (instead of `offset`).",
    )
    min_score: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        allow_inf_nan=False,
        description="Drop results below this cosine similarity.",
    )
    min_relevance: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Drop results whose relevance (the key they are ordered by) is below this; "
        "default: the server's cut (0.5); 0 shows all.",
    )
    sort: Literal["relevance", "date_desc", "date_asc"] = Field(
        default="relevance",
        description="relevance (best first), or by capture date among the results above "
        "`min_relevance`.",
    )
    mode: Literal["semantic", "text", "hybrid"] | None = Field(
        default=None,
        description="semantic (the vectors), text (words read in images, file and folder names, "
        "captions) or hybrid (both, merged); default: hybrid when the library has keywords.",
    )
    lang: str | None = Field(
        default=None,
        max_length=64,
        description=LANG_HELP,
        examples=["fra_Latn"],
    )
    filters: SearchFiltersIn | None = None


class LanguagesOut(BaseModel):
    """The query languages of the model searches use (GET /api/search/languages)."""

    language_aware: bool = Field(
        description="Whether the model reads a query in a chosen language (`lang`); false for "
        "models that take no language code (CLIP, SigLIP, ...), which ignore `lang`."
    )
    default: str | None = Field(
        default=None,
        description="The language a query is read as without `lang` (null: not language-aware).",
    )
    languages: list[str] = Field(
        default_factory=list,
        description="Every code `lang` may be (FLORES-200, sorted); empty when not language-aware.",
    )


class SearchHit(BaseModel):
    id: int
    score: float
    relevance: float | None = Field(
        default=None,
        description="Calibrated relevance in [0, 1], the same meaning for every query (README: "
        "Relevance); `score` is the raw cosine.",
    )
    path: str
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: datetime | None = None
    thumbnail_url: str
    file_url: str
    preview_url: str = Field(
        description="A JPEG rendition browsers can show (longest side at most 2048 px): what the "
        "gallery shows for TIFF, HEIC and very large originals."
    )
    match: list[str] = Field(
        default_factory=lambda: ["semantic"],
        description="Why it matched: semantic (its picture is close to the query), text (words "
        "read in the image), filename, caption, folder.",
    )
    words: list[str] = Field(
        default_factory=list, description="The image's words that matched the query's words."
    )

    def _band(self) -> str | None:
        from clipsearch.indexer.relevance import relevance_band

        return relevance_band(self.relevance)

    band = computed_field(
        description="How well its picture matches, in words: strong, fair or weak (from "
        "`relevance`; indexer.relevance.BANDS); null without a relevance.",
    )(property(_band))


class SearchResponse(BaseModel):
    query: dict[str, Any] = Field(
        description="The query as understood (text, negative terms, ...)."
    )
    took_ms: float = Field(description="Server time spent, in milliseconds.")
    results: list[SearchHit]
    hidden: int | None = Field(
        default=None,
        description="With `min_relevance`, on the page where the results above it end: how many "
        "weaker results it left out (at most 100).",
    )
    hidden_more: bool = Field(default=False, description="More than `hidden` were left out.")
    min_relevance: float = Field(
        default=0.5,
        description="The relevance cut applied: the request's, else the server's default (what "
        "GET /api/health calls gallery_min_relevance); the results are ordered by `relevance` "
        "and none is below this.",
    )
    mode: str | None = Field(
        default=None, description="The mode that ran: semantic, text or hybrid."
    )
    offset: int = Field(default=0, description="Where this page starts in the results.")
    has_more: bool = Field(default=False, description="Whether another page follows.")
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next page (null on the last page).",
    )


# --- images -----------------------------------------------------------------------------------


class ImageOut(BaseModel):
    id: int
    path: str
    size: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: datetime | None = None
    state: str
    error: str | None = None
    sha256: str | None = None
    thumbnail_url: str
    file_url: str
    preview_url: str = Field(
        description="A JPEG rendition browsers can show (longest side at most 2048 px): what the "
        "gallery shows for TIFF, HEIC and very large originals."
    )


class ImagePage(BaseModel):
    items: list[ImageOut]
    total: int
    offset: int
    limit: int
    next_after: int | None = Field(
        default=None, description="Pass as `after` for the next page; null on the last page."
    )
    next_after_key: str | None = Field(
        default=None,
        description="Date orders: pass as `after_key` for the next page; null on the last page.",
    )


class FolderEntryOut(BaseModel):
    name: str
    path: str
    images: int | None = Field(
        description="Pictures directly inside it (by name); null when not counted (very large)."
    )


class FolderBrowseOut(BaseModel):
    path: str | None = Field(description="The folder listed; null: the allowed roots.")
    parent: str | None = Field(
        description="The folder above it; null at an allowed root (nothing above is listed)."
    )
    images: int | None = Field(default=None, description="Pictures directly inside it.")
    folders: list[FolderEntryOut]
    truncated: bool = Field(default=False, description="Not every sub-folder was listed.")


class MonthOut(BaseModel):
    month: str = Field(description="The month, `YYYY-MM`.")
    after_key: str | None = Field(
        description="Pass as `after_key` to `GET /api/images` (same `sort` and filters) for the "
        "page that starts at this month; null: the first page."
    )


class TimelineOut(BaseModel):
    months: list[MonthOut]
    undated: bool = Field(description="Pictures without a capture date follow the months.")
    undated_after_key: str | None = Field(
        default=None, description="The `after_key` of the page where the undated pictures start."
    )
    more: bool = Field(default=False, description="More months than were listed.")


# --- jobs -------------------------------------------------------------------------------------


class IngestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Absolute path of a folder under one of the server's allowed roots.",
    )
    recursive: bool = Field(default=True, description="Also ingest sub-folders.")


class ReindexIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        max_length=4096,
        description="Switch to this model (registry name or path) and re-embed; default: current.",
    )


class JobError(BaseModel):
    path: str | None = None
    reason: str


class JobOut(BaseModel):
    id: int
    kind: str
    state: Literal["queued", "running", "done", "failed"] | str
    params: dict[str, Any] = Field(default_factory=dict)
    total: int | None = None
    done: int = 0
    failed: int = 0
    errors: list[JobError] = Field(default_factory=list)
    message: str | None = Field(
        None, description="Why the job failed as a whole (model, folder, database), when it did."
    )
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None


# --- watched folders --------------------------------------------------------------------------


class FolderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Absolute path of a folder under one of the server's allowed roots.",
    )
    recursive: bool = Field(default=True, description="Also watch and ingest sub-folders.")


class AllowedFoldersOut(BaseModel):
    roots: list[str] = Field(
        description="The folders (and everything below them) that may be ingested or watched "
        "through the API; empty: none may be."
    )
    hint: str = Field(description="What to do to allow (more) folders, in words.")


class FolderOut(BaseModel):
    id: int
    path: str
    recursive: bool
    state: Literal["watching", "scanning", "missing", "idle"] | str = Field(
        description="watching: changes are picked up within seconds; scanning: an ingest of it "
        "is queued or running; missing: the folder is not there (an unmounted drive); idle: no "
        "watcher runs (CLIPSEARCH_WATCH=false), only re-scans and explicit ingests."
    )
    created_at: datetime | None = None
    last_scan_at: datetime | None = None
    last_job: JobOut | None = None


class FolderProblemOut(BaseModel):
    path: str = Field(
        description="The file (shown as other paths are: by the folder's name "
        "and what follows on a public-read server)."
    )
    problem: str = Field(description="Why it is not in the library, in words.")
    kind: Literal["scan", "decode"] | str = Field(
        description="scan: the scan could not take the entry (a link out of the folder, an "
        "entry it cannot read); decode: the file is not a picture that can be read."
    )
    since: datetime | None = Field(
        None, description="When it was reported (scan) or last tried (decode)."
    )


class FolderProblemsOut(BaseModel):
    folder_id: int
    items: list[FolderProblemOut]
    total: int = Field(description="How many files of the folder are not in the library now.")
    next_after: str | None = Field(
        None,
        description="Pass as `after` for the next page (the last file's path within the "
        "folder); null on the last page.",
    )


# --- removed images ---------------------------------------------------------------------------


class RemovedOut(BaseModel):
    id: int = Field(description="Id of the removal (restore with POST /api/removed/{id}/restore).")
    image_id: int = Field(description="The id the image had before it was removed.")
    path: str
    size: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: datetime | None = None
    sha256: str | None = None
    in_trash: bool = Field(description="The file was moved to the data folder's trash.")
    removed_at: datetime | None = None
    thumbnail_url: str | None = Field(
        default=None, description="The thumbnail it had, kept while it is removed."
    )


class RemovedPage(BaseModel):
    items: list[RemovedOut]
    next_before: int | None = Field(
        default=None, description="Pass as `before` for the next page; null on the last page."
    )


class RestoreOut(BaseModel):
    restored: list[RemovedOut] = Field(
        description="The removals forgotten: this one and every other of the same content."
    )
    jobs: list[JobOut] = Field(description="The ingest jobs that add the files again.")


# --- health -----------------------------------------------------------------------------------


class ImageCounts(BaseModel):
    total: int = 0
    ready: int = 0
    failed: int = 0
    pending: int = 0


class IndexOut(BaseModel):
    version: int | None = None
    kind: str | None = None
    size: int | None = Field(default=0, description="vectors in the index files (null: not shown)")
    delta: int | None = Field(default=0, description="vectors served beside them (null: not shown)")
    store: str | None = Field(default=None, description="faiss (embedded) or milvus")
    entities: int | None = Field(default=None, description="vectors the store holds")
    catalog_vectors: int | None = Field(
        default=None, description="ready images in the catalog (what the store should hold)"
    )
    missing: int | None = Field(
        default=None, description="catalog vectors the store lacks; `clipsearch reindex` repairs"
    )
    error: str | None = Field(default=None, description="why the store cannot answer, if so")
    damaged: str | None = Field(
        default=None,
        description="why the index files are not served, if so (searches are exact from the "
        "catalog meanwhile; `clipsearch reindex` rebuilds them)",
    )


class OcrOut(BaseModel):
    mode: str = Field(description="CLIPSEARCH_OCR: auto, on or off")
    available: bool = Field(description="Tesseract runs with the languages asked for")
    engine: str | None = None
    languages: list[str] = Field(default_factory=list)
    error: str | None = Field(default=None, description="why text is not recognised, if so")


class HealthProblem(BaseModel):
    """One part of the service that is not well, and what repairs it."""

    part: str = Field(description="model, index, store, disk, ingestion or jobs")
    message: str = Field(description="What is wrong and what to do about it.")
    since: datetime | None = Field(default=None, description="Since when (stalled jobs).")


class HealthOut(BaseModel):
    status: Literal["ok", "starting", "degraded"] | str = Field(
        description="ok; starting (model loading); degraded (a part is not well: `problems` "
        "names each)"
    )
    problems: list[HealthProblem] = Field(
        default_factory=list, description="Each part that is not well (empty when status is ok)."
    )
    model: str | None
    device: str | None
    images: ImageCounts | None = Field(
        description="The pictures by state: the library's, a viewer's folders' only, none "
        "(null) without credentials. The index's counts are shown to those who see everything."
    )
    index: IndexOut
    gallery_min_relevance: float | None = Field(
        default=None,
        description="The gallery's default relevance cut (CLIPSEARCH_GALLERY_MIN_RELEVANCE).",
    )
    ocr: OcrOut | None = Field(
        default=None, description="Text recognition in images: whether it runs, or why not."
    )
