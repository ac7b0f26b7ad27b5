"""Topic names, task queues and workflow ids, in one place."""

import re
from datetime import datetime
from typing import Final, Literal, cast, get_args

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

# The naming scheme of everything kept per forecast target (registered models, retrain workflow and
# schedule ids), fixed once so that new dimensions extend it without renaming what exists:
#
#     <prefix>[.<namespace>]-[<exchange>-]<pair>-<interval>s-h<horizon>[-vol]
#
# - today's Kraken price targets keep their names exactly: cryptopredict-btcusd-60s-h1,
#   training-BTCUSD-60s-h1 (Kraken is the implicit exchange, so nothing is ever renamed for it);
# - a volatility target appends "-vol": cryptopredict-btcusd-60s-h1-vol;
# - another exchange inserts its name after the prefix: cryptopredict-binance-btcusd-60s-h1 (one dash
#   segment more than a Kraken name, and pairs have no dash, so the two can never be confused);
# - a demo or test namespace joins the prefix with a dot, which no pair or exchange contains:
#   cryptopredict.demo-btcusd-60s-h1.
ForecastTarget = Literal["price", "volatility"]
KRAKEN: Final = "kraken"
TARGET_SUFFIXES: dict[str, str] = {"price": "", "volatility": "-vol"}
_SEGMENT = re.compile(r"[a-z][a-z0-9]*")


# A pair as the project names it: the venue's pair, after a namespace and a dot in a demo or test run.
PAIR_PATTERN = r"^(?:[a-z][a-z0-9]{0,15}\.)?[A-Z0-9]{2,12}/[A-Z0-9]{2,12}$"


# A market key: a pair as above, after `<exchange>:` on every venue but Kraken (see market_key).
MARKET_PATTERN = r"^(?:[a-z][a-z0-9]{0,15}:)?(?:[a-z][a-z0-9]{0,15}\.)?[A-Z0-9]{2,12}/[A-Z0-9]{2,12}$"


def namespaced_pair(pair: str, namespace: str | None) -> str:
    """The project's name of a venue's pair inside a namespace (`demo.BTC/USD`); the pair itself without one.
    Every row, record key and name made for a namespaced pair carries the namespace, so a demo or test run
    never writes where a live target does."""
    return pair if namespace is None else f"{namespace}.{pair}"


Exchange = Literal["kraken", "coinbase", "binance"]
EXCHANGES: tuple[str, ...] = get_args(Exchange)
_EXCHANGE_MARK = ":"


def market_key(exchange: str, pair: str) -> str:
    """The record key, Faust table key and target name of one pair on one venue: the pair itself on
    Kraken (so nothing made before venues existed is renamed or orphaned), `coinbase:BTC/USD` elsewhere."""
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}; expected one of {list(EXCHANGES)}")
    return pair if exchange == KRAKEN else f"{exchange}{_EXCHANGE_MARK}{pair}"


def split_market(market: str) -> tuple[Exchange, str]:
    """(exchange, pair) of a market key: `binance:demo.BTC/USDT` -> ("binance", "demo.BTC/USDT")."""
    exchange, mark, pair = market.partition(_EXCHANGE_MARK)
    if not mark:
        return KRAKEN, market
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r} in {market!r}; expected one of {list(EXCHANGES)}")
    return cast(Exchange, exchange), pair


def split_namespace(pair: str) -> tuple[str | None, str]:
    """(namespace or None, the venue's pair): `demo.BTC/USD` -> ("demo", "BTC/USD")."""
    namespace, dot, venue_pair = pair.rpartition(".")
    return (namespace, venue_pair) if dot else (None, pair)


def _target_id(
    prefix: str,
    pair_token: str,
    interval_s: int,
    horizon_candles: int,
    target: ForecastTarget,
    exchange: str,
    namespace: str | None,
) -> str:
    market_exchange, pair_token = split_market(pair_token)
    if market_exchange != KRAKEN:
        if exchange not in (KRAKEN, market_exchange):
            raise ValueError(f"market {pair_token!r} is on {market_exchange!r}, not {exchange!r}")
        exchange = market_exchange
    pair_namespace, pair_token = split_namespace(pair_token)
    if pair_namespace is not None:
        if namespace not in (None, pair_namespace):
            raise ValueError(f"pair {pair_token!r} is in namespace {pair_namespace!r}, not {namespace!r}")
        namespace = pair_namespace
    if not pair_token.isalnum():
        raise ValueError(f"a pair must be letters and digits besides '/', got {pair_token!r}")
    for label, segment in (("exchange", exchange), ("namespace", namespace)):
        if segment is not None and not _SEGMENT.fullmatch(segment):
            raise ValueError(
                f"{label} must be lowercase letters and digits, starting with a letter: {segment!r}"
            )
    if target not in TARGET_SUFFIXES:
        raise ValueError(f"unknown target {target!r}; expected one of {list(TARGET_SUFFIXES)}")
    head = prefix if namespace is None else f"{prefix}.{namespace}"
    venue = "" if exchange == KRAKEN else f"{exchange}-"
    return f"{head}-{venue}{pair_token}-{interval_s}s-h{horizon_candles}{TARGET_SUFFIXES[target]}"


def training_workflow_id(
    pair: str,
    interval_s: int,
    horizon_candles: int,
    *,
    target: ForecastTarget = "price",
    exchange: str = KRAKEN,
    namespace: str | None = None,
) -> str:
    """One id per target: a second start while a retrain of the same target runs attaches to it. A price
    and a volatility retrain of the same (pair, interval, horizon) have different ids and run side by side."""
    return _target_id(
        TRAINING_WORKFLOW_ID_PREFIX,
        pair.replace("/", ""),
        interval_s,
        horizon_candles,
        target,
        exchange,
        namespace,
    )


def training_schedule_id(
    pair: str,
    interval_s: int,
    horizon_candles: int,
    *,
    target: ForecastTarget = "price",
    exchange: str = KRAKEN,
    namespace: str | None = None,
) -> str:
    workflow_id = training_workflow_id(
        pair, interval_s, horizon_candles, target=target, exchange=exchange, namespace=namespace
    )
    return f"schedule-{workflow_id}"


def drift_workflow_id(pair: str, interval_s: int, horizon_candles: int) -> str:
    """The drift monitor of a target (its schedule appends the scheduled time to it)."""
    return _target_id("drift", pair.replace("/", ""), interval_s, horizon_candles, "price", KRAKEN, None)


def drift_schedule_id(pair: str, interval_s: int, horizon_candles: int) -> str:
    return f"schedule-{drift_workflow_id(pair, interval_s, horizon_candles)}"


def backfill_workflow_id(pair: str, start: datetime, end: datetime) -> str:
    return f"backfill-{pair.replace('/', '').replace(_EXCHANGE_MARK, '-')}-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}"


def registered_model_name(
    pair: str,
    interval_s: int,
    horizon_candles: int,
    *,
    target: ForecastTarget = "price",
    exchange: str = KRAKEN,
    namespace: str | None = None,
) -> str:
    """One registered model per forecast target (the scheme above); its `champion` alias is what is served."""
    return _target_id(
        "cryptopredict",
        pair.replace("/", "").lower(),
        interval_s,
        horizon_candles,
        target,
        exchange,
        namespace,
    )


NEWS_SCHEDULE_ID = "news-ingest"
# One retention schedule (and workflow id) for the whole deployment.
RETENTION_SCHEDULE_ID = "retention"


def news_schedule_id(namespace: str | None) -> str:
    return NEWS_SCHEDULE_ID if namespace is None else f"news.{namespace}-ingest"


def in_namespace(identifier: str, namespace: str) -> bool:
    """Whether a registered model, workflow, schedule or Optuna study id belongs to `namespace`: the scheme
    joins a namespace to the prefix with a dot and to the rest with a dash, which nothing else contains."""
    return f".{namespace}-" in identifier


def namespace_topic_prefix(namespace: str) -> str:
    """Every topic of a namespace starts with this (settings.kafka.topic_prefix is put after it)."""
    return f"{namespace}."


def registered_model_prefix(namespace: str) -> str:
    """Every registered model of a namespace starts with this."""
    return f"cryptopredict.{namespace}-"


def namespace_pair_prefix(namespace: str) -> str:
    """Every store row of a namespace has a pair starting with this."""
    return f"{namespace}."


def sentiment_workflow_id(news_id: str) -> str:
    """Holds the news id, so starting a second scoring of the same item is rejected by Temporal."""
    return f"sentiment-{news_id}"
