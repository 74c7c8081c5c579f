"""Removals that stick: ``removed_images`` remembers what the user took out of the library.

A row per removed file, with its own id (ids are never reused): the path and the content hash a
later scan must not add again, the metadata and thumbnail key the "Removed" view shows, and where
the file went when it was moved to the data folder's trash. Restoring deletes the row and ingests
the file again. The ``images`` row itself is deleted at removal (a tombstone tells every vector
store), so search, browse and counts never see a removed image.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "removed_images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("image_id", sa.BigInteger, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("format", sa.String(16), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("thumbnail", sa.String(128), nullable=True),
        sa.Column("trash_path", sa.Text, nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ux_removed_images_path", "removed_images", ["path"], unique=True)
    op.create_index("ix_removed_images_image_id", "removed_images", ["image_id"])
    op.create_index("ix_removed_images_sha256", "removed_images", ["sha256"])
    op.create_index("ix_removed_images_size", "removed_images", ["size"])
    op.create_index("ix_removed_images_thumbnail", "removed_images", ["thumbnail"])


def downgrade() -> None:
    op.drop_table("removed_images")
