"""File problems (indexer.ingest_problems): the entries an ingest's scan could not take in (a
link leading out of the allowed roots, an entry it cannot read), one row per path with what is
wrong and the entry's own size and modification time, so that each problem is reported once and
not again by every rescan. ``folder`` indexed: a folder's current problems are a range read.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_problems",
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("mtime_ns", sa.BigInteger, nullable=True),
        sa.Column("job_id", sa.BigInteger, nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_file_problems_folder", "file_problems", ["folder"])


def downgrade() -> None:
    op.drop_index("ix_file_problems_folder", table_name="file_problems")
    op.drop_table("file_problems")
