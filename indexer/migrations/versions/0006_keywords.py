"""The keyword index: words found in each image (OCR), its file and folder names, its captions.

* ``image_keywords``: one row per image (kept by triggers on ``images``: a row appears with the
  image, its ``name`` and ``folder`` follow a move or rename, it goes with the image). ``name`` is
  the file name without its extension, ``folder`` the name of the folder holding it (not the whole
  path: every image would match the words of a library's root). ``ocr`` is the text Tesseract
  read in the image, ``caption`` a sidecar caption (``.txt``/``.xmp`` next to the file) or the
  EXIF description and keywords; ``ocr_state`` says whether OCR ran (``done``, ``failed`` with
  ``ocr_error``, ``skipped`` (too small to hold text) or NULL: not yet, the ``clipsearch ocr`` job
  picks those up).
* SQLite: ``image_keywords_fts``, an FTS5 table with the trigram tokenizer (rowid = image id),
  kept in step with ``image_keywords`` by triggers: any run of 3+ characters matches, so "recei"
  finds "receipt".
* PostgreSQL: ``doc`` (a weighted ``simple`` tsvector: prefix queries) and ``words`` (lower-case
  text under a pg_trgm GIN index: substrings and small typos), both generated columns. When the
  pg_trgm extension cannot be created (no permission), the trigram index is left out and searches
  use the full-text index alone.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _sqlite_base(expr: str) -> str:
    """SQL (SQLite) for the last component of a '/'-separated path ``expr``."""
    return f"substr({expr}, length(rtrim({expr}, replace({expr}, '/', ''))) + 1)"


def _sqlite_stem(expr: str) -> str:
    """SQL (SQLite) for ``expr`` without its last '.extension' (a leading dot is kept)."""
    return (
        f"(CASE WHEN instr({expr}, '.') > 1 "
        f"THEN substr({expr}, 1, length(rtrim({expr}, replace({expr}, '.', ''))) - 1) "
        f"ELSE {expr} END)"
    )


_NAME = _sqlite_stem(_sqlite_base("NEW.path"))
_FOLDER = _sqlite_base("NEW.folder")

SQLITE_STATEMENTS = [
    """CREATE VIRTUAL TABLE image_keywords_fts USING fts5(
        name, folder, caption, ocr, tokenize = 'trigram')""",
    f"""CREATE TRIGGER trg_keywords_img_ins AFTER INSERT ON images BEGIN
        INSERT INTO image_keywords (image_id, name, folder) VALUES (NEW.id, {_NAME}, {_FOLDER})
            ON CONFLICT (image_id) DO UPDATE SET name = excluded.name, folder = excluded.folder;
    END""",
    f"""CREATE TRIGGER trg_keywords_img_move AFTER UPDATE OF path, folder ON images
        WHEN OLD.path IS NOT NEW.path OR OLD.folder IS NOT NEW.folder BEGIN
        UPDATE image_keywords SET name = {_NAME}, folder = {_FOLDER} WHERE image_id = NEW.id;
    END""",
    """CREATE TRIGGER trg_keywords_img_del AFTER DELETE ON images BEGIN
        DELETE FROM image_keywords WHERE image_id = OLD.id;
    END""",
    """CREATE TRIGGER trg_keywords_fts_ins AFTER INSERT ON image_keywords BEGIN
        INSERT INTO image_keywords_fts (rowid, name, folder, caption, ocr)
            VALUES (NEW.image_id, NEW.name, NEW.folder, NEW.caption, NEW.ocr);
    END""",
    """CREATE TRIGGER trg_keywords_fts_upd AFTER UPDATE OF name, folder, caption, ocr
        ON image_keywords BEGIN
        DELETE FROM image_keywords_fts WHERE rowid = OLD.image_id;
        INSERT INTO image_keywords_fts (rowid, name, folder, caption, ocr)
            VALUES (NEW.image_id, NEW.name, NEW.folder, NEW.caption, NEW.ocr);
    END""",
    """CREATE TRIGGER trg_keywords_fts_del AFTER DELETE ON image_keywords BEGIN
        DELETE FROM image_keywords_fts WHERE rowid = OLD.image_id;
    END""",
]

_PG_NAME = r"regexp_replace(regexp_replace(NEW.path, '^.*/', ''), '(.)\.[^.]*$', '\1')"
_PG_FOLDER = "regexp_replace(NEW.folder, '^.*/', '')"


def _pg_words(col: str) -> str:
    # (\W|_)+ rather than [^[:alnum:]]+: a ":name" in SQL text would be read as a bind parameter
    return rf"regexp_replace(coalesce({col}, ''), '(\W|_)+', ' ', 'g')"


PG_DOC = (
    f"setweight(to_tsvector('simple'::regconfig, {_pg_words('name')}), 'A') || "
    f"setweight(to_tsvector('simple'::regconfig, {_pg_words('ocr')}), 'A') || "
    f"setweight(to_tsvector('simple'::regconfig, {_pg_words('caption')}), 'B') || "
    f"setweight(to_tsvector('simple'::regconfig, {_pg_words('folder')}), 'C')"
)
PG_WORDS = (
    "lower(coalesce(name, '') || ' ' || coalesce(folder, '') || ' ' || coalesce(caption, '') "
    "|| ' ' || coalesce(ocr, ''))"
)

PG_STATEMENTS = [
    f"""CREATE OR REPLACE FUNCTION clipsearch_keywords_img() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO image_keywords (image_id, name, folder)
                VALUES (NEW.id, {_PG_NAME}, {_PG_FOLDER})
                ON CONFLICT (image_id) DO UPDATE
                    SET name = excluded.name, folder = excluded.folder;
        ELSIF NEW.path IS DISTINCT FROM OLD.path OR NEW.folder IS DISTINCT FROM OLD.folder THEN
            UPDATE image_keywords SET name = {_PG_NAME}, folder = {_PG_FOLDER}
                WHERE image_id = NEW.id;
        END IF;
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER trg_keywords_img AFTER INSERT OR UPDATE OF path, folder ON images
        FOR EACH ROW EXECUTE FUNCTION clipsearch_keywords_img()""",
]


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    columns: list[sa.schema.SchemaItem] = [
        sa.Column(
            "image_id",
            sa.Integer,
            sa.ForeignKey("images.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("folder", sa.Text, nullable=True),
        sa.Column("caption", sa.Text, nullable=True),
        sa.Column("ocr", sa.Text, nullable=True),
        sa.Column("ocr_state", sa.String(16), nullable=True),
        sa.Column("ocr_error", sa.Text, nullable=True),
        sa.Column("ocr_at", sa.DateTime(timezone=True), nullable=True),
    ]
    if not sqlite:
        columns += [
            sa.Column("doc", sa.dialects.postgresql.TSVECTOR, sa.Computed(PG_DOC, persisted=True)),
            sa.Column("words", sa.Text, sa.Computed(PG_WORDS, persisted=True)),
        ]
    op.create_table("image_keywords", *columns)
    if sqlite:
        for ddl in SQLITE_STATEMENTS:
            op.execute(ddl)
        name = _sqlite_stem(_sqlite_base("path")).replace("NEW.", "")
        folder = _sqlite_base("folder")
        op.execute(
            f"INSERT INTO image_keywords (image_id, name, folder) "
            f"SELECT id, {name}, {folder} FROM images"
        )
        return
    op.execute(
        """DO $$ BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'pg_trgm is not available: keyword search uses full text only';
        END $$"""
    )
    # fastupdate off: no pending list, so a search right after a big ingest reads the index as
    # the planner expects instead of a list that only a VACUUM would merge
    op.execute(
        "CREATE INDEX ix_image_keywords_doc ON image_keywords USING gin (doc) "
        "WITH (fastupdate = off)"
    )
    op.execute(
        """DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
                CREATE INDEX ix_image_keywords_words ON image_keywords
                    USING gin (words gin_trgm_ops) WITH (fastupdate = off);
            END IF;
        END $$"""
    )
    for ddl in PG_STATEMENTS:
        op.execute(ddl)
    op.execute(
        "INSERT INTO image_keywords (image_id, name, folder) SELECT id, "
        + _PG_NAME.replace("NEW.", "")
        + ", "
        + _PG_FOLDER.replace("NEW.", "")
        + " FROM images"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trg in (
            "trg_keywords_img_ins",
            "trg_keywords_img_move",
            "trg_keywords_img_del",
            "trg_keywords_fts_ins",
            "trg_keywords_fts_upd",
            "trg_keywords_fts_del",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {trg}")
        op.execute("DROP TABLE IF EXISTS image_keywords_fts")
    else:
        op.execute("DROP TRIGGER IF EXISTS trg_keywords_img ON images")
        op.execute("DROP FUNCTION IF EXISTS clipsearch_keywords_img()")
    op.drop_table("image_keywords")
