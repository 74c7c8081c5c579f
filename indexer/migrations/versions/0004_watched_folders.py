"""Watched folders: the folders the library keeps up to date by itself.

One row per folder (``serve --images``, or added through the API, CLI or gallery), kept across
restarts. A watcher (indexer/watch.py) turns file-system events under them into ingest jobs and
re-scans each one periodically; ``last_job_id`` is the newest job queued for the folder, and
``watched_at`` the watcher's heartbeat (any process can tell whether the folder is watched).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watched_folders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("recursive", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_scan_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_job_id", sa.Integer, nullable=True),
        sa.Column("watched_at", sa.DateTime(timezone=True), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ux_watched_folders_path", "watched_folders", ["path"], unique=True)


def downgrade() -> None:
    op.drop_table("watched_folders")
