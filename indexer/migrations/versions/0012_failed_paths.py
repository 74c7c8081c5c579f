"""A folder's failed files by path: a partial index for GET /api/folders/{id}/problems.

``ix_images_failed_path``: the paths of the failed images only (``WHERE state = 'failed'``), so
that a page of a folder's problems (indexer.ingest_problems: the failed files under the folder,
by path, after the previous page's last path) and their count are range reads on the folder's
failures, not reads of the folder's pictures or of the library's failures. Small: a library's
failed files are few.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_images_failed_path",
        "images",
        ["path"],
        sqlite_where=sa.text("state = 'failed'"),
        postgresql_where=sa.text("state = 'failed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_images_failed_path", table_name="images")
