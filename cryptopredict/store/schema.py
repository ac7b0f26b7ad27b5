"""Tables of the feature store, as the Alembic migrations in store/migrations create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from cryptopredict.topics import KRAKEN

metadata = MetaData()

# The venue of a market's rows (topics.Exchange), first in each key that holds the pair: the same pair and
# window on two venues are two rows. Rows stored before venues existed are Kraken's (migration 0010, which
# appends the column to the existing tables: every statement names its columns, so the order is moot).
KRAKEN_DEFAULT = text(f"'{KRAKEN}'")


def _exchange() -> Column[str]:
    return Column("exchange", Text, nullable=False, server_default=KRAKEN_DEFAULT)


def _window_key() -> PrimaryKeyConstraint:
    return PrimaryKeyConstraint("exchange", "pair", "interval_s", "window_start")


candles = Table(
    "candles",
    metadata,
    _exchange(),
    Column("pair", Text, nullable=False),
    Column("interval_s", Integer, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("open", Double, nullable=False),
    Column("high", Double, nullable=False),
    Column("low", Double, nullable=False),
    Column("close", Double, nullable=False),
    Column("volume", Double, nullable=False),
    Column("vwap", Double, nullable=False),
    Column("trade_count", Integer, nullable=False),
    Column("first_trade_id", BigInteger),
    Column("last_trade_id", BigInteger),
    Column("gap", Boolean, nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _window_key(),
)

technical_indicators = Table(
    "technical_indicators",
    metadata,
    _exchange(),
    Column("pair", Text, nullable=False),
    Column("interval_s", Integer, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    # One key per feature name (cryptopredict.features.indicators); null inside a warm-up.
    Column("values", JSONB, nullable=False),
    Column("warm_up", Boolean, nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _window_key(),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("source", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    # DeadLetter.store_key(): a letter read again is not stored twice (migration 0006).
    Column("letter_key", Text, nullable=False),
)
Index("dead_letters_at", dead_letters.c.at)
Index("dead_letters_letter_key", dead_letters.c.letter_key, unique=True)

news_items = Table(
    "news_items",
    metadata,
    Column("id", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=False),
    Column("ingested_at", DateTime(timezone=True), nullable=False),
    Column("currencies", ARRAY(Text), nullable=False),
)
Index("news_items_published_at", news_items.c.published_at)

# The scoring outbox: a row per stored news item, written with it and finished once its scores are stored
# or it is dead-lettered. An unfinished row is picked up again by the next ingest run (migration 0009).
news_scoring = Table(
    "news_scoring",
    metadata,
    Column("news_id", Text, primary_key=True),
    Column("ingested_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("outcome", Text),  # "scored" or "dead_lettered" (store.news)
)
Index(
    "news_scoring_pending",
    news_scoring.c.ingested_at,
    postgresql_where=news_scoring.c.finished_at.is_(None),
)

# One row per (news item, coin, model, prompt version): re-scoring with another model or prompt keeps both.
sentiment_scores = Table(
    "sentiment_scores",
    metadata,
    Column("news_id", Text, primary_key=True),
    Column("coin", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    Column("prompt_version", Text, primary_key=True),
    Column("score", SmallInteger, nullable=False),
    Column("confidence", Double, nullable=False),
    Column("reason", Text, nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
)
Index("sentiment_scores_coin_scored_at", sentiment_scores.c.coin, sentiment_scores.c.scored_at)

# One row per prediction: the champion version that made it, for the feature row of one candle.
predictions = Table(
    "predictions",
    metadata,
    _exchange(),
    Column("pair", Text, nullable=False),
    Column("interval_s", Integer, nullable=False),
    Column("horizon_s", Integer, nullable=False),
    Column("feature_time", DateTime(timezone=True), nullable=False),
    Column("model_name", Text, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("made_at", DateTime(timezone=True), nullable=False),
    Column("target_time", DateTime(timezone=True), nullable=False),
    Column("last_price", Double, nullable=False),
    Column("predicted_price", Double, nullable=False),
    Column("lower_price", Double),
    Column("upper_price", Double),
    Column("written_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Migration 0007: the interval's level, the quantiles ([{"level", "price"}, ...], as on the topic),
    # the volatility forecast and its regime; null on rows written before.
    Column("interval_level", Double),
    Column("quantiles", JSONB),
    Column("predicted_volatility", Double),
    Column("volatility_regime", Text),
    PrimaryKeyConstraint(
        "exchange", "pair", "interval_s", "horizon_s", "feature_time", "model_name", "model_version"
    ),
)
Index(
    "predictions_target_time",
    predictions.c.exchange,
    predictions.c.pair,
    predictions.c.interval_s,
    predictions.c.target_time,
)

# Adaptive conformal inference per model version (cryptopredict.store.adaptation); migration 0008.
interval_adaptation = Table(
    "interval_adaptation",
    metadata,
    Column("model_name", Text, primary_key=True),
    Column("model_version", Text, primary_key=True),
    Column("alpha", Double, nullable=False),
    Column("outcomes", BigInteger, nullable=False),
    Column("misses", BigInteger, nullable=False),
    Column("through", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per drift check (DriftRecord, cryptopredict.models.drift); migration 0005.
drift_reports = Table(
    "drift_reports",
    metadata,
    Column("workflow_id", Text, primary_key=True),
    Column("run_id", Text, primary_key=True),
    _exchange(),
    Column("pair", Text, nullable=False),
    Column("interval_s", Integer, nullable=False),
    Column("horizon_candles", Integer, nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("model_name", Text, nullable=False),
    Column("model_version", Text),
    Column("model_kind", Text),
    Column("reference_source", Text, nullable=False),
    Column("reference_start", DateTime(timezone=True)),
    Column("reference_end", DateTime(timezone=True)),
    Column("reference_rows", Integer, nullable=False),
    Column("recent_start", DateTime(timezone=True)),
    Column("recent_end", DateTime(timezone=True)),
    Column("recent_rows", Integer, nullable=False),
    Column("psi_threshold", Double, nullable=False),
    Column("max_psi", Double),
    Column("max_psi_feature", Text),
    # Feature name -> PSI (null: not compared).
    Column("psi", JSONB, nullable=False),
    Column("live_outcomes", Integer),
    Column("live_skill", Double),
    Column("breached", Boolean, nullable=False),
    Column("reasons", ARRAY(Text), nullable=False),
    Column("retrain_action", Text),
    Column("retrain_workflow_id", Text),
    Column("retrain_run_id", Text),
    Column("written_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index(
    "drift_reports_target_checked_at",
    drift_reports.c.exchange,
    drift_reports.c.pair,
    drift_reports.c.interval_s,
    drift_reports.c.checked_at,
)
