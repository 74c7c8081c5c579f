"""Duplicates: what ``indexer.duplicates`` found, kept so listing a page never compares images.

* ``duplicate_pairs``: two images (``a_id < b_id``) whose vectors are at least the similar-shot
  threshold apart, with the kind of the pair (``exact``: the same content hash; ``near``: the same
  picture re-encoded, resized, lightly cropped or re-coloured; ``similar``: a shot of the same
  scene), the cosine similarity and the perceptual-hash distance when it was measured. Updated
  incrementally from the catalog's change sequence (mark ``dups_seq``).
* ``duplicate_groups``: connected groups of pairs, one row per group, keyed by the smallest image
  id in it (``anchor_id``), so a page is a range read on ``(family, anchor_id)`` whose keys stay
  stable while the library changes. ``family`` is ``dup`` (exact and near groups) or ``similar``.
* ``duplicate_members``: the images of each group with why each is in it.
* ``content_phash``: a 64-bit difference hash per content (from its thumbnail), measured once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "duplicate_pairs",
        sa.Column("a_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("b_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("similarity", sa.Float, nullable=False),
        sa.Column("phash_distance", sa.Integer, nullable=True),
    )
    op.create_index("ix_duplicate_pairs_b_id", "duplicate_pairs", ["b_id"])
    op.create_table(
        "duplicate_groups",
        sa.Column("family", sa.String(16), primary_key=True),
        sa.Column("anchor_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("min_similarity", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "duplicate_members",
        sa.Column("family", sa.String(16), primary_key=True),
        sa.Column("image_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("anchor_id", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("similarity", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_duplicate_members_group", "duplicate_members", ["family", "anchor_id", "image_id"]
    )
    op.create_table(
        "content_phash",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("dhash", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("content_phash")
    op.drop_table("duplicate_members")
    op.drop_table("duplicate_groups")
    op.drop_table("duplicate_pairs")
