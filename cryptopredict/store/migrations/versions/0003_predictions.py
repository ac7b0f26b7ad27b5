"""Predictions of the champion models, one row per (pair, interval, horizon, feature row, model version).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("pair", sa.Text, primary_key=True),
        sa.Column("interval_s", sa.Integer, primary_key=True),
        sa.Column("horizon_s", sa.Integer, primary_key=True),
        sa.Column("feature_time", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("model_name", sa.Text, primary_key=True),
        sa.Column("model_version", sa.Text, primary_key=True),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_price", sa.Double, nullable=False),
        sa.Column("predicted_price", sa.Double, nullable=False),
        sa.Column("lower_price", sa.Double),
        sa.Column("upper_price", sa.Double),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("predictions_target_time", "predictions", ["pair", "interval_s", "target_time"])


def downgrade() -> None:
    op.drop_table("predictions")
