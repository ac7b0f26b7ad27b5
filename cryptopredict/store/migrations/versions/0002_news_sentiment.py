"""News items and the per-coin sentiment scores extracted from them.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "news_items",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currencies", sa.ARRAY(sa.Text), nullable=False),
    )
    op.create_index("news_items_published_at", "news_items", ["published_at"])
    op.create_table(
        "sentiment_scores",
        sa.Column("news_id", sa.Text, primary_key=True),
        sa.Column("coin", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("prompt_version", sa.Text, primary_key=True),
        sa.Column("score", sa.SmallInteger, nullable=False),
        sa.Column("confidence", sa.Double, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("sentiment_scores_coin_scored_at", "sentiment_scores", ["coin", "scored_at"])


def downgrade() -> None:
    op.drop_table("sentiment_scores")
    op.drop_table("news_items")
