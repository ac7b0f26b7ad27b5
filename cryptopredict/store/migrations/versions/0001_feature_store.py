"""Feature store: candles, technical indicators and dead letters.

Revision ID: 0001
Revises:
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _window_key() -> list[sa.Column[Any]]:
    return [
        sa.Column("pair", sa.Text, primary_key=True),
        sa.Column("interval_s", sa.Integer, primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    ]


def upgrade() -> None:
    op.create_table(
        "candles",
        *_window_key(),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("open", sa.Double, nullable=False),
        sa.Column("high", sa.Double, nullable=False),
        sa.Column("low", sa.Double, nullable=False),
        sa.Column("close", sa.Double, nullable=False),
        sa.Column("volume", sa.Double, nullable=False),
        sa.Column("vwap", sa.Double, nullable=False),
        sa.Column("trade_count", sa.Integer, nullable=False),
        sa.Column("first_trade_id", sa.BigInteger),
        sa.Column("last_trade_id", sa.BigInteger),
        sa.Column("gap", sa.Boolean, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        if_not_exists=True,
    )
    op.create_table(
        "technical_indicators",
        *_window_key(),
        sa.Column("values", postgresql.JSONB, nullable=False),
        sa.Column("warm_up", sa.Boolean, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("dead_letters_at", "dead_letters", ["at"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("technical_indicators")
    op.drop_table("candles")
