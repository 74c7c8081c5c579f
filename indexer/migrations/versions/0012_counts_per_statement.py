"""PostgreSQL: the per-state image counts of an INSERT or a DELETE kept once per statement.

Migration 0002 kept ``image_counts`` with a row trigger: every inserted or deleted image updated
its state's counts row. PostgreSQL keeps each of those updates as a new version of the same row,
and within one transaction every update walks the versions made before it, so a statement that
inserts many images cost more than linearly: measured on the 2-core machine, 10,000 pending
images in one transaction 4.7 s, 30,000 in one 21.6 s (11.4 s in transactions of 2,000). The
first scan of a folder of 100,000 photos inserts its pending rows in one transaction, and held the
change-sequence lock (migration 0002) for all of it.

Now an INSERT and a DELETE adjust the counts once per statement, from the rows the statement
really wrote (its transition table: an ``INSERT ... ON CONFLICT DO NOTHING`` lists only the rows it
inserted). A change of state stays a row trigger: those come a batch of an ingest at a time, and a
statement trigger there would run for every other update of ``images`` as well. The tombstones of
deleted images are still written per row, numbered from the change sequence as before. SQLite:
unchanged (its writers do not keep row versions).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_UPGRADE = [
    "DROP TRIGGER IF EXISTS trg_images_counted ON images",
    # the row trigger now counts changes of state only (its function already handles UPDATE)
    """CREATE TRIGGER trg_images_counted AFTER UPDATE OF state ON images
        FOR EACH ROW EXECUTE FUNCTION clipsearch_images_counted()""",
    # the delete row trigger keeps the tombstone; the count moves to the statement trigger
    """CREATE OR REPLACE FUNCTION clipsearch_images_deleted() RETURNS trigger AS $$
    BEGIN
        INSERT INTO image_tombstones (change_seq, image_id, deleted_at)
            VALUES (nextval('catalog_change_seq'), OLD.id, now());
        RETURN OLD;
    END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION clipsearch_images_inserted_counts() RETURNS trigger AS $$
    BEGIN
        INSERT INTO image_counts (state, n)
            SELECT state, count(*) FROM inserted_rows GROUP BY state
            ON CONFLICT (state) DO UPDATE SET n = image_counts.n + excluded.n;
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION clipsearch_images_deleted_counts() RETURNS trigger AS $$
    BEGIN
        UPDATE image_counts AS c SET n = c.n - d.k
            FROM (SELECT state, count(*) AS k FROM deleted_rows GROUP BY state) AS d
            WHERE c.state = d.state;
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER trg_images_inserted_counts AFTER INSERT ON images
        REFERENCING NEW TABLE AS inserted_rows
        FOR EACH STATEMENT EXECUTE FUNCTION clipsearch_images_inserted_counts()""",
    """CREATE TRIGGER trg_images_deleted_counts AFTER DELETE ON images
        REFERENCING OLD TABLE AS deleted_rows
        FOR EACH STATEMENT EXECUTE FUNCTION clipsearch_images_deleted_counts()""",
]

_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS trg_images_inserted_counts ON images",
    "DROP TRIGGER IF EXISTS trg_images_deleted_counts ON images",
    "DROP FUNCTION IF EXISTS clipsearch_images_inserted_counts()",
    "DROP FUNCTION IF EXISTS clipsearch_images_deleted_counts()",
    "DROP TRIGGER IF EXISTS trg_images_counted ON images",
    """CREATE TRIGGER trg_images_counted AFTER INSERT OR UPDATE OF state ON images
        FOR EACH ROW EXECUTE FUNCTION clipsearch_images_counted()""",
    """CREATE OR REPLACE FUNCTION clipsearch_images_deleted() RETURNS trigger AS $$
    BEGIN
        INSERT INTO image_tombstones (change_seq, image_id, deleted_at)
            VALUES (nextval('catalog_change_seq'), OLD.id, now());
        UPDATE image_counts SET n = n - 1 WHERE state = OLD.state;
        RETURN OLD;
    END $$ LANGUAGE plpgsql""",
]


def _run(statements: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    _run(_UPGRADE)


def downgrade() -> None:
    _run(_DOWNGRADE)
