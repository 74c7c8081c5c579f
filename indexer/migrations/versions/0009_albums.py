"""Albums (indexer.albums): hand-picked albums and smart albums that fill themselves.

* ``albums``: a name (unique), its kind (``manual``: hand-picked; ``smart``: a saved search
  query, stored as JSON, whose matches are recomputed as pictures arrive or leave), and for a
  smart album what the last computation used: the model, the query's vector and the cosine a
  picture needs (the query's relevance cut, calibrated on the library), so a newly embedded
  picture is judged at once without encoding the query again.
* ``album_members``: per (album, picture) the state: ``auto`` (a match of the smart album's
  query, kept by the job), ``pinned`` (put there by a person: always shown, whatever the query
  says; every picture of a hand-picked album is pinned) or ``excluded`` (taken out by a person:
  never shown, even when it matches), with the score of the match. Keyed by
  ``(album_id, image_id)``, so a page of an album is a range read; ``image_id`` indexed for
  deleting a picture (foreign keys cascade).
* ``tag_vectors.softmax_scale``: where the library vouches for a tag's group classifier
  (indexer.tag_decisions, step 4), the softmax scale it decides with; null: it does not decide.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "albums",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("query", sa.JSON, nullable=True),
        sa.Column(
            "model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("vector", sa.LargeBinary, nullable=True),
        sa.Column("min_score", sa.Float, nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('manual', 'smart')", name="ck_albums_kind"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "album_members",
        sa.Column(
            "album_id",
            sa.Integer,
            sa.ForeignKey("albums.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "image_id",
            sa.Integer,
            sa.ForeignKey("images.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('auto', 'pinned', 'excluded')", name="ck_album_members_state"
        ),
    )
    op.create_index("ix_album_members_image", "album_members", ["image_id"])
    op.add_column("tag_vectors", sa.Column("softmax_scale", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tag_vectors") as batch:
        batch.drop_column("softmax_scale")
    op.drop_index("ix_album_members_image", table_name="album_members")
    op.drop_table("album_members")
    op.drop_table("albums")
