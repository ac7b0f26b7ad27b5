"""Topic names, task queues and workflow ids, in one place."""

from datetime import datetime

TRADES = "trades"
# Rejected input of every stage, as DeadLetter JSON: the raw payload, its source and the reason.
DEAD_LETTERS = "dead_letters"
CANDLES = "candles"
# Trades whose window had already closed (past the grace period), kept for inspection.
LATE_TRADES = "late_trades"
# Idle-timer ticks, keyed by pair like trades, so idle windows close inside the candle agent.
CANDLE_TICKS = "candle_ticks"
TECHNICAL_INDICATORS = "technical_indicators"
PREDICTIONS = "predictions"
# Why no prediction was made for a candle (warm-up, gaps): PredictionRefusal JSON, one per candle.
PREDICTION_REFUSALS = "prediction_refusals"
NEWS = "news"
NEWS_SENTIMENT = "news_sentiment"
# A champion moved (promotion or rollback): the prediction path reloads that model.
MODEL_EVENTS = "model_events"
# Every drift check (DriftRecord JSON): the feature store's table `drift_reports` in the RisingWave mode.
DRIFT_REPORTS = "drift_reports"

ALL_TOPICS = (
    TRADES,
    DEAD_LETTERS,
    LATE_TRADES,
    CANDLE_TICKS,
    CANDLES,
    TECHNICAL_INDICATORS,
    PREDICTIONS,
    PREDICTION_REFUSALS,
    NEWS,
    NEWS_SENTIMENT,
    MODEL_EVENTS,
    DRIFT_REPORTS,
)

FAUST_APP_ID = "cryptopredict"


def topic_name(name: str, prefix: str) -> str:
    """The real topic (or Faust app id) for a base name under `KafkaSettings.topic_prefix`."""
    return f"{prefix}{name}"


TRAINING_WORKFLOW_ID_PREFIX = "training"


def training_workflow_id(pair: str, interval_s: int, horizon_candles: int) -> str:
    """One id per target: a second start while a retrain of the same target runs attaches to it."""
    return f"{TRAINING_WORKFLOW_ID_PREFIX}-{pair.replace('/', '')}-{interval_s}s-h{horizon_candles}"


def training_schedule_id(pair: str, interval_s: int, horizon_candles: int) -> str:
    return f"schedule-{training_workflow_id(pair, interval_s, horizon_candles)}"


def drift_workflow_id(pair: str, interval_s: int, horizon_candles: int) -> str:
    """The drift monitor of a target (its schedule appends the scheduled time to it)."""
    return f"drift-{pair.replace('/', '')}-{interval_s}s-h{horizon_candles}"


def drift_schedule_id(pair: str, interval_s: int, horizon_candles: int) -> str:
    return f"schedule-{drift_workflow_id(pair, interval_s, horizon_candles)}"


def backfill_workflow_id(pair: str, start: datetime, end: datetime) -> str:
    return f"backfill-{pair.replace('/', '')}-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}"


def registered_model_name(pair: str, interval_s: int, horizon_candles: int) -> str:
    """One registered model per (pair, interval, horizon); its `champion` alias is what is served."""
    return f"cryptopredict-{pair.replace('/', '').lower()}-{interval_s}s-h{horizon_candles}"


NEWS_SCHEDULE_ID = "news-ingest"


def sentiment_workflow_id(news_id: str) -> str:
    """Holds the news id, so starting a second scoring of the same item is rejected by Temporal."""
    return f"sentiment-{news_id}"
