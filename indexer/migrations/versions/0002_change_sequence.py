"""A monotonic change sequence, tombstones, per-state counts and ids that are never reused.

* ``images.change_seq``: set from one catalog-wide sequence whenever an image is inserted, its
  state, content (sha256) or folder changes, or its content gains a vector. "What changed since I
  last looked" is then a range read on ``ix_images_change_seq``, whatever the library's size.
* ``image_tombstones``: one row per deleted image, numbered from the same sequence, so every API
  process drops a deleted id from its index at its next refresh.
* ``image_counts``: rows per state, kept by the same triggers, so health and listing totals do not
  count the library.
* Ids are never reused: ``images`` and ``jobs`` become AUTOINCREMENT on SQLite (PostgreSQL
  sequences never go back), seeded past every id an index file may still hold.

The sequence is assigned in commit order. SQLite serialises writers itself. On PostgreSQL every
statement that writes ``images`` or ``embeddings`` first takes a transaction-level advisory lock,
so sequence values are drawn by one writing transaction at a time and a reader that has seen
value N has seen every value below N. Taking the lock before any row lock keeps writers free of
deadlocks between them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ADVISORY_KEY = 7342190552  # the change-sequence writer lock (init_db uses ...551)

# SQLite: the counter is a row of catalog_marks (writers are serialised by SQLite itself).
_SQLITE_NEXT = "UPDATE catalog_marks SET value = value + 1 WHERE name = 'change';"
_SQLITE_CUR = "(SELECT value FROM catalog_marks WHERE name = 'change')"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER trg_images_ins AFTER INSERT ON images BEGIN
        {_SQLITE_NEXT}
        UPDATE images SET change_seq = {_SQLITE_CUR} WHERE id = NEW.id;
        INSERT INTO image_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END""",
    f"""CREATE TRIGGER trg_images_upd AFTER UPDATE OF state, sha256, folder ON images
        WHEN OLD.state IS NOT NEW.state OR OLD.sha256 IS NOT NEW.sha256
            OR OLD.folder IS NOT NEW.folder BEGIN
        {_SQLITE_NEXT}
        UPDATE images SET change_seq = {_SQLITE_CUR} WHERE id = NEW.id;
        UPDATE image_counts SET n = n - 1 WHERE state = OLD.state AND OLD.state IS NOT NEW.state;
        INSERT INTO image_counts (state, n) SELECT NEW.state, 1 WHERE OLD.state IS NOT NEW.state
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END""",
    f"""CREATE TRIGGER trg_images_del AFTER DELETE ON images BEGIN
        {_SQLITE_NEXT}
        INSERT INTO image_tombstones (change_seq, image_id, deleted_at)
            VALUES ({_SQLITE_CUR}, OLD.id, CURRENT_TIMESTAMP);
        UPDATE image_counts SET n = n - 1 WHERE state = OLD.state;
    END""",
    f"""CREATE TRIGGER trg_embeddings_ins AFTER INSERT ON embeddings BEGIN
        {_SQLITE_NEXT}
        UPDATE images SET change_seq = {_SQLITE_CUR} WHERE sha256 = NEW.sha256;
    END""",
    f"""CREATE TRIGGER trg_embeddings_upd AFTER UPDATE OF vector ON embeddings BEGIN
        {_SQLITE_NEXT}
        UPDATE images SET change_seq = {_SQLITE_CUR} WHERE sha256 = NEW.sha256;
    END""",
]

PG_STATEMENTS = [
    "CREATE SEQUENCE IF NOT EXISTS catalog_change_seq",
    f"""CREATE OR REPLACE FUNCTION clipsearch_change_lock() RETURNS trigger AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({ADVISORY_KEY});
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    # BEFORE: number the row. Counting waits for AFTER, which fires only for rows really written
    # (an INSERT ... ON CONFLICT DO NOTHING that skips a row runs its BEFORE trigger all the same).
    """CREATE OR REPLACE FUNCTION clipsearch_images_change() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state
                OR NEW.sha256 IS DISTINCT FROM OLD.sha256
                OR NEW.folder IS DISTINCT FROM OLD.folder THEN
            NEW.change_seq := nextval('catalog_change_seq');
        END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION clipsearch_images_counted() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            IF NEW.state IS NOT DISTINCT FROM OLD.state THEN
                RETURN NULL;
            END IF;
            UPDATE image_counts SET n = n - 1 WHERE state = OLD.state;
        END IF;
        INSERT INTO image_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = image_counts.n + 1;
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION clipsearch_images_deleted() RETURNS trigger AS $$
    BEGIN
        INSERT INTO image_tombstones (change_seq, image_id, deleted_at)
            VALUES (nextval('catalog_change_seq'), OLD.id, now());
        UPDATE image_counts SET n = n - 1 WHERE state = OLD.state;
        RETURN OLD;
    END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION clipsearch_embeddings_change() RETURNS trigger AS $$
    BEGIN
        UPDATE images SET change_seq = nextval('catalog_change_seq') WHERE sha256 = NEW.sha256;
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER trg_images_lock BEFORE INSERT OR UPDATE OR DELETE ON images
        FOR EACH STATEMENT EXECUTE FUNCTION clipsearch_change_lock()""",
    """CREATE TRIGGER trg_embeddings_lock BEFORE INSERT OR UPDATE OR DELETE ON embeddings
        FOR EACH STATEMENT EXECUTE FUNCTION clipsearch_change_lock()""",
    """CREATE TRIGGER trg_images_change BEFORE INSERT OR UPDATE ON images
        FOR EACH ROW EXECUTE FUNCTION clipsearch_images_change()""",
    """CREATE TRIGGER trg_images_counted AFTER INSERT OR UPDATE OF state ON images
        FOR EACH ROW EXECUTE FUNCTION clipsearch_images_counted()""",
    """CREATE TRIGGER trg_images_del AFTER DELETE ON images
        FOR EACH ROW EXECUTE FUNCTION clipsearch_images_deleted()""",
    """CREATE TRIGGER trg_embeddings_change AFTER INSERT OR UPDATE OF vector ON embeddings
        FOR EACH ROW EXECUTE FUNCTION clipsearch_embeddings_change()""",
]


def _highest_indexed_id(bind: sa.Connection) -> int:
    """The highest image id any saved index version may hold (ids must stay above it)."""
    top = 0
    for (params,) in bind.execute(sa.text("SELECT params FROM index_versions")):
        if isinstance(params, str):
            import json

            params = json.loads(params)
        if isinstance(params, dict):
            try:
                top = max(top, int(params.get("max_image_id") or 0))
            except (TypeError, ValueError):
                continue
    return top


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.create_table(
        "image_tombstones",
        sa.Column("change_seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("image_id", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", TS, nullable=False),
    )
    op.create_table(
        "image_counts",
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "catalog_marks",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    if sqlite:
        # Rebuild images and jobs as AUTOINCREMENT tables (SQLite cannot alter that in place).
        with op.batch_alter_table(
            "images", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch:
            batch.add_column(
                sa.Column("change_seq", sa.BigInteger, nullable=False, server_default="0")
            )
        with op.batch_alter_table(
            "jobs", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch:
            pass
        floor = max(
            _highest_indexed_id(bind),
            int(bind.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM images")).scalar() or 0),
        )
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'images'"))
        bind.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('images', :s)"), {"s": floor}
        )
    else:
        op.add_column(
            "images", sa.Column("change_seq", sa.BigInteger, nullable=False, server_default="0")
        )
        floor = _highest_indexed_id(bind)
        if floor:
            bind.execute(
                sa.text(
                    "SELECT setval(pg_get_serial_sequence('images', 'id'), "
                    "GREATEST(:f, (SELECT COALESCE(MAX(id), 1) FROM images)))"
                ),
                {"f": floor},
            )
    # Existing rows: numbered in id order, the sequence continues after them.
    bind.execute(sa.text("UPDATE images SET change_seq = id"))
    top = int(bind.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM images")).scalar() or 0)
    bind.execute(
        sa.text("INSERT INTO image_counts (state, n) SELECT state, COUNT(*) FROM images GROUP BY state")
    )
    op.create_index("ix_images_change_seq", "images", ["change_seq"])
    # Listing by state pages by id: (state, id) serves both the filter and the keyset order.
    op.drop_index("ix_images_state", table_name="images")
    op.create_index("ix_images_state_id", "images", ["state", "id"])
    if sqlite:
        bind.execute(
            sa.text("INSERT INTO catalog_marks (name, value) VALUES ('change', :v)"), {"v": top}
        )
        for ddl in SQLITE_TRIGGERS:
            bind.execute(sa.text(ddl))
    else:
        for ddl in PG_STATEMENTS:
            bind.execute(sa.text(ddl))
        bind.execute(sa.text("SELECT setval('catalog_change_seq', :v, true)"), {"v": max(top, 1)})


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in (
            "trg_images_ins",
            "trg_images_upd",
            "trg_images_del",
            "trg_embeddings_ins",
            "trg_embeddings_upd",
        ):
            bind.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}"))
    else:
        for trigger, table in (
            ("trg_images_lock", "images"),
            ("trg_embeddings_lock", "embeddings"),
            ("trg_images_change", "images"),
            ("trg_images_counted", "images"),
            ("trg_images_del", "images"),
            ("trg_embeddings_change", "embeddings"),
        ):
            bind.execute(sa.text(f"DROP TRIGGER IF EXISTS {trigger} ON {table}"))
        for fn in (
            "clipsearch_change_lock",
            "clipsearch_images_change",
            "clipsearch_images_counted",
            "clipsearch_images_deleted",
            "clipsearch_embeddings_change",
        ):
            bind.execute(sa.text(f"DROP FUNCTION IF EXISTS {fn}()"))
        bind.execute(sa.text("DROP SEQUENCE IF EXISTS catalog_change_seq"))
    op.drop_index("ix_images_state_id", table_name="images")
    op.create_index("ix_images_state", "images", ["state"])
    op.drop_index("ix_images_change_seq", table_name="images")
    op.drop_column("images", "change_seq")
    op.drop_table("catalog_marks")
    op.drop_table("image_counts")
    op.drop_table("image_tombstones")
