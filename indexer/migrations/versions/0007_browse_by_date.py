"""Browse by capture date: indexes for GET /api/images?sort=date_desc|date_asc.

``(taken_at, id)`` and ``(state, taken_at, id)``: a page of the library in capture-date order
(keyset on ``(taken_at, id)``, undated images after the dated ones in id order) and a capture
date range are range reads on these, whatever the library's size.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_images_taken_at_id", "images", ["taken_at", "id"])
    op.create_index("ix_images_state_taken_at_id", "images", ["state", "taken_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_images_state_taken_at_id", table_name="images")
    op.drop_index("ix_images_taken_at_id", table_name="images")
