"""Pydantic domain models: the only hand-written schemas. Kafka topics carry their JSON."""

from cryptopredict.models.drift import DriftMonitorInput, DriftReport
from cryptopredict.models.market import Candle, DeadLetter, IndicatorRow, Trade, TradeBatch, trade_batches
from cryptopredict.models.ml import ModelEvent, ModelRef, Prediction, PredictionRefusal, QuantilePrice
from cryptopredict.models.news import NewsItem, SentimentScore

__all__ = [
    "Candle",
    "DeadLetter",
    "DriftMonitorInput",
    "DriftReport",
    "IndicatorRow",
    "ModelEvent",
    "ModelRef",
    "NewsItem",
    "Prediction",
    "PredictionRefusal",
    "QuantilePrice",
    "SentimentScore",
    "Trade",
    "TradeBatch",
    "trade_batches",
]
