"""Predictions keep what the model said about its uncertainty: the level the interval was drawn at, the
quantiles of the price, the volatility forecast and its regime; the outcome ledger shows them beside
each outcome, so coverage can be judged per regime and at the level each interval claimed.

`quantiles` is JSONB, the JSON of `Prediction.quantiles` as it is on the topic
([{"level": 0.1, "price": ...}, ...]): RisingWave ingests the topic into the same column unchanged, and
the levels (settings.model.quantile_levels) can change without a migration.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# 0004's view with the new columns after the interval bounds. Dropped and created again rather than
# replaced: CREATE OR REPLACE VIEW can only append columns.
OUTCOMES = """
CREATE VIEW prediction_outcomes AS
SELECT
    p.pair, p.interval_s, p.horizon_s, p.feature_time, p.target_time, p.model_name, p.model_version,
    p.made_at, p.last_price, p.predicted_price, p.lower_price, p.upper_price,
    p.interval_level, p.quantiles, p.predicted_volatility, p.volatility_regime,
    c.close AS realised_price,
    abs(p.predicted_price - c.close) AS abs_error,
    abs(p.last_price - c.close) AS persistence_abs_error,
    CASE WHEN p.lower_price IS NULL OR p.upper_price IS NULL THEN NULL
         ELSE (c.close BETWEEN p.lower_price AND p.upper_price) END AS inside_interval
FROM predictions p
JOIN candles c
  ON c.pair = p.pair AND c.interval_s = p.interval_s AND c.window_end = p.target_time
"""

# The view as revision 0004 created it, for the downgrade.
OUTCOMES_0004 = """
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

NEW_COLUMNS = ("interval_level", "quantiles", "predicted_volatility", "volatility_regime")


def upgrade() -> None:
    op.add_column("predictions", sa.Column("interval_level", sa.Double))
    op.add_column("predictions", sa.Column("quantiles", JSONB))
    op.add_column("predictions", sa.Column("predicted_volatility", sa.Double))
    op.add_column("predictions", sa.Column("volatility_regime", sa.Text))
    op.execute("DROP VIEW prediction_outcomes")
    op.execute(OUTCOMES)


def downgrade() -> None:
    op.execute("DROP VIEW prediction_outcomes")
    op.execute(OUTCOMES_0004)
    for column in NEW_COLUMNS:
        op.drop_column("predictions", column)
