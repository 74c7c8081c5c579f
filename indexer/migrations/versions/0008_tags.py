"""Zero-shot tags (indexer.tags): the tags in words, their vectors per model, their assignments.

* ``tags``: a name (unique), its descriptions (JSON), the template set its embedding is built with,
  an optional group of mutually exclusive tags, an optional target precision, and how many
  pictures have it (kept by the tagging job and by people's decisions, so listing the tags never
  counts assignments).
* ``tag_vectors``: per (tag, model) the text embedding and the calibrated decision (threshold,
  location and spread of its scores over the library, estimated precision, library size).
* ``tag_assignments``: per (tag, picture) the score and the state (``auto`` from the tagging
  job, ``confirmed`` or ``rejected`` by a person: never overridden by a run). Keyed by
  ``(tag_id, image_id)``, so a page of a tag's pictures is a range read; ``image_id`` indexed for
  a picture's tags and for deleting a picture (foreign keys cascade).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("descriptions", sa.JSON, nullable=False),
        sa.Column("templates", sa.String(16), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=True),
        sa.Column("target_precision", sa.Float, nullable=True),
        sa.Column("assigned", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "tag_vectors",
        sa.Column(
            "tag_id", sa.Integer, sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "model_id",
            sa.Integer,
            sa.ForeignKey("models.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("location", sa.Float, nullable=True),
        sa.Column("scale", sa.Float, nullable=True),
        sa.Column("precision", sa.Float, nullable=True),
        sa.Column("library_size", sa.Integer, nullable=False, server_default="0"),
        sa.Column("calibrated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "tag_assignments",
        sa.Column(
            "tag_id", sa.Integer, sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "image_id",
            sa.Integer,
            sa.ForeignKey("images.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('auto', 'confirmed', 'rejected')", name="ck_tag_assignments_state"
        ),
    )
    op.create_index("ix_tag_assignments_image", "tag_assignments", ["image_id"])


def downgrade() -> None:
    op.drop_index("ix_tag_assignments_image", table_name="tag_assignments")
    op.drop_table("tag_assignments")
    op.drop_table("tag_vectors")
    op.drop_table("tags")
