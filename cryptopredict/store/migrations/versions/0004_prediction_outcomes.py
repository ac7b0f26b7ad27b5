"""The outcome ledger: each prediction whose target time has passed, joined with the realised close.

A view rather than a table written by a job: the candles are the single source of the realised price,
so the ledger can never disagree with them, and a late-written candle fills its outcome by itself.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The candle that closes at the target time holds the realised price (its window ends there; a gap
# candle carries the last traded price, which is the price at that time).
OUTCOMES = """
CREATE VIEW prediction_outcomes AS
SELECT
    p.pair, p.interval_s, p.horizon_s, p.feature_time, p.target_time, p.model_name, p.model_version,
    p.made_at, p.last_price, p.predicted_price, p.lower_price, p.upper_price,
    c.close AS realised_price,
    abs(p.predicted_price - c.close) AS abs_error,
    abs(p.last_price - c.close) AS persistence_abs_error,
    CASE WHEN p.lower_price IS NULL OR p.upper_price IS NULL THEN NULL
         ELSE (c.close BETWEEN p.lower_price AND p.upper_price) END AS inside_interval
FROM predictions p
JOIN candles c
  ON c.pair = p.pair AND c.interval_s = p.interval_s AND c.window_end = p.target_time
"""


def upgrade() -> None:
    op.execute(OUTCOMES)


def downgrade() -> None:
    op.execute("DROP VIEW prediction_outcomes")
