"""Every row of a market names its venue: column `exchange` (topics.Exchange) on the tables keyed by pair,
first in their primary keys and indexes, so the same pair and window on two venues are two rows. Rows
stored before venues existed are Kraken's, and so is a row written without one (the default).

Adding a NOT NULL column with a constant default rewrites no rows; the primary keys and indexes are built
again, which holds the tables' locks for as long as that takes on a large store.

The downgrade refuses while rows of another venue exist: under the old keys they would collide with
Kraken's rows of the same pair and window. Delete them first
(`DELETE FROM <table> WHERE exchange <> 'kraken'` on each table the error names).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

KRAKEN = "kraken"
# Each table's primary key before this revision (the constraint keeps PostgreSQL's name, <table>_pkey).
KEYED_TABLES = {
    "candles": ["pair", "interval_s", "window_start"],
    "technical_indicators": ["pair", "interval_s", "window_start"],
    "predictions": ["pair", "interval_s", "horizon_s", "feature_time", "model_name", "model_version"],
}
# Indexes that hold pair: name -> (table, columns before this revision).
INDEXES = {
    "predictions_target_time": ("predictions", ["pair", "interval_s", "target_time"]),
    "drift_reports_target_checked_at": ("drift_reports", ["pair", "interval_s", "checked_at"]),
}
TABLES = [*KEYED_TABLES, "drift_reports"]

# 0007's outcome ledger, joined on the venue too: a prediction's outcome is its own venue's close.
OUTCOMES = """
CREATE VIEW prediction_outcomes AS
SELECT
    p.exchange, p.pair, p.interval_s, p.horizon_s, p.feature_time, p.target_time, p.model_name,
    p.model_version, p.made_at, p.last_price, p.predicted_price, p.lower_price, p.upper_price,
    p.interval_level, p.quantiles, p.predicted_volatility, p.volatility_regime,
    c.close AS realised_price,
    abs(p.predicted_price - c.close) AS abs_error,
    abs(p.last_price - c.close) AS persistence_abs_error,
    CASE WHEN p.lower_price IS NULL OR p.upper_price IS NULL THEN NULL
         ELSE (c.close BETWEEN p.lower_price AND p.upper_price) END AS inside_interval
FROM predictions p
JOIN candles c
  ON c.exchange = p.exchange AND c.pair = p.pair AND c.interval_s = p.interval_s
 AND c.window_end = p.target_time
"""

# The view as revision 0007 created it, for the downgrade.
OUTCOMES_0007 = """
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


def upgrade() -> None:
    op.execute("DROP VIEW prediction_outcomes")
    for table in TABLES:
        op.add_column(table, sa.Column("exchange", sa.Text, nullable=False, server_default=KRAKEN))
    for table, key in KEYED_TABLES.items():
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.create_primary_key(f"{table}_pkey", table, ["exchange", *key])
    for name, (table, columns) in INDEXES.items():
        op.drop_index(name, table)
        op.create_index(name, table, ["exchange", *columns])
    op.execute(OUTCOMES)


def downgrade() -> None:
    connection = op.get_bind()
    foreign = {
        table: count
        for table in TABLES
        if (
            count := connection.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE exchange <> :kraken"), {"kraken": KRAKEN}
            ).scalar_one()
        )
    }
    if foreign:
        raise RuntimeError(
            f"cannot downgrade below 0010: rows of venues other than {KRAKEN} would collide with "
            f"Kraken's under the old keys ({foreign}); delete them first "
            f"(DELETE FROM <table> WHERE exchange <> '{KRAKEN}')"
        )
    op.execute("DROP VIEW prediction_outcomes")
    for name, (table, columns) in INDEXES.items():
        op.drop_index(name, table)
        op.create_index(name, table, columns)
    for table, key in KEYED_TABLES.items():
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.create_primary_key(f"{table}_pkey", table, key)
    for table in TABLES:
        op.drop_column(table, "exchange")
    op.execute(OUTCOMES_0007)
