"""Topic names, task queues and workflow ids, in one place."""

TRADES = "trades"
TRADES_DEAD_LETTER = "trades_dead_letter"
CANDLES = "candles"
TECHNICAL_INDICATORS = "technical_indicators"
PREDICTIONS = "predictions"
NEWS = "news"
NEWS_SENTIMENT = "news_sentiment"

ALL_TOPICS = (TRADES, TRADES_DEAD_LETTER, CANDLES, TECHNICAL_INDICATORS, PREDICTIONS, NEWS, NEWS_SENTIMENT)

FAUST_APP_ID = "cryptopredict"

TRAINING_WORKFLOW_ID_PREFIX = "training"


def training_workflow_id(pair: str, interval_s: int) -> str:
    return f"{TRAINING_WORKFLOW_ID_PREFIX}-{pair.replace('/', '')}-{interval_s}s"


def registered_model_name(prefix: str, pair: str, interval_s: int, horizon_candles: int) -> str:
    """One registered model per (pair, interval, horizon); its `champion` alias is what is served."""
    return f"{prefix}-{pair.replace('/', '').lower()}-{interval_s}s-h{horizon_candles}"
