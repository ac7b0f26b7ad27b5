"""Drift checks: one row per DriftMonitorWorkflow run (workflows/drift.py), with the PSI of each model
input, the champion's live skill, the breaches and the retrain a breach started.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_reports",
        sa.Column("workflow_id", sa.Text, primary_key=True),
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("pair", sa.Text, nullable=False),
        sa.Column("interval_s", sa.Integer, nullable=False),
        sa.Column("horizon_candles", sa.Integer, nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text),
        sa.Column("model_kind", sa.Text),
        sa.Column("reference_source", sa.Text, nullable=False),
        sa.Column("reference_start", sa.DateTime(timezone=True)),
        sa.Column("reference_end", sa.DateTime(timezone=True)),
        sa.Column("reference_rows", sa.Integer, nullable=False),
        sa.Column("recent_start", sa.DateTime(timezone=True)),
        sa.Column("recent_end", sa.DateTime(timezone=True)),
        sa.Column("recent_rows", sa.Integer, nullable=False),
        sa.Column("psi_threshold", sa.Double, nullable=False),
        sa.Column("max_psi", sa.Double),
        sa.Column("max_psi_feature", sa.Text),
        sa.Column("psi", JSONB, nullable=False),
        sa.Column("live_outcomes", sa.Integer),
        sa.Column("live_skill", sa.Double),
        sa.Column("breached", sa.Boolean, nullable=False),
        sa.Column("reasons", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("retrain_action", sa.Text),
        sa.Column("retrain_workflow_id", sa.Text),
        sa.Column("retrain_run_id", sa.Text),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("drift_reports_target_checked_at", "drift_reports", ["pair", "interval_s", "checked_at"])


def downgrade() -> None:
    op.drop_table("drift_reports")
