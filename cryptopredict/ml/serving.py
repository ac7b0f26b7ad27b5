"""Serving side of the models: the current champion, reloaded when its alias moves, and predictions
made from the same feature code as training: the input row of a new candle is computed from its floats
by the training formulas (model_inputs.latest_inputs) and fed to the model's own predictor as a numpy
row (pyfunc.predict_row), with no data frame on the way."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from cryptopredict.features.cross_venue import PREFIX as CROSS_VENUE
from cryptopredict.features.cross_venue import source_markets, venues_of
from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.features.model_inputs import latest_inputs, sentiment_at
from cryptopredict.ml.adaptive import Scaled, offset_at, scale_of_inputs
from cryptopredict.ml.pyfunc import ForecastSpec, forecast_spec, predict_row, single_threaded
from cryptopredict.ml.volatility import HAR_WINDOWS, latest_volatility_inputs
from cryptopredict.models import Candle, ModelRef, Prediction, PredictionRefusal, QuantilePrice

logger = logging.getLogger(__name__)

CHAMPION = "champion"
# Another venue's candles when none are at hand: its cross-venue features are NaN and the row is refused.
NO_CANDLES = pd.DataFrame(columns=["window_start", "close", "gap"])


def history_length(lags: int) -> int:
    """Candles of history the live path keeps: the return lags and the longest volatility window."""
    return max(lags, max(HAR_WINDOWS)) + 1


class ModelLoadError(RuntimeError):
    """A new champion version could not be loaded; the previous one (if any) keeps serving."""


class Serving(NamedTuple):
    model: Any
    ref: ModelRef


class Champion:
    """The `champion` version of one registered model; `refresh` is blocking I/O (run it off-loop)."""

    def __init__(self, tracking_uri: str, registered_model: str) -> None:
        self.tracking_uri = tracking_uri
        self.registered_model = registered_model
        # Model and reference in one attribute: a refresh in a thread swaps both in one assignment,
        # so a reader never pairs the new model with the old version number.
        self.serving: Serving | None = None
        self.failed_version: str | None = None
        # False until a first refresh has asked the registry: until then "no model" means "not known yet".
        self.checked = False

    def refresh(self) -> bool:
        """Loads the champion if its version changed; returns True when a new model now serves.

        A failed load keeps the old model serving and raises ModelLoadError once per failing version
        (later refreshes retry it quietly, so a broken version is reported, not repeated every tick).
        """
        import mlflow

        from cryptopredict.ml.registry import champion_alias

        client = mlflow.MlflowClient(self.tracking_uri)
        # A registry that is away raises here and the champion stays unchecked: "no champion" is only
        # what the registry answers, never what a failed request looks like.
        alias = champion_alias(client, self.registered_model)
        if self.serving is not None and self.serving.ref.version == alias:
            return False  # the version serving is still the champion: one request per tick, not two
        version = None if alias is None else client.get_model_version(self.registered_model, alias)
        try:
            return self._load(version)
        finally:
            # Only once the answer is in effect: a candle that finds the champion checked and no model
            # serving is forecast by nobody, so it must never see a first load half-way.
            self.checked = True

    def _load(self, version: Any) -> bool:
        import mlflow

        if version is None:
            return False
        if self.serving is not None and self.serving.ref.version == str(version.version):
            return False
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            # By version, not alias: the alias may have moved again since it was read above.
            model = single_threaded(
                mlflow.pyfunc.load_model(f"models:/{self.registered_model}/{version.version}")
            )
        except Exception as exc:
            first_failure = self.failed_version != str(version.version)
            self.failed_version = str(version.version)
            if not first_failure:
                return False
            serving = f"v{self.serving.ref.version}" if self.serving else "nothing"
            raise ModelLoadError(
                f"loading {self.registered_model} v{version.version} failed ({type(exc).__name__}: {exc});"
                f" still serving {serving}"
            ) from exc
        self.failed_version = None
        ref = ModelRef(
            name=self.registered_model,
            version=str(version.version),
            alias=CHAMPION,
            run_id=version.run_id,
            flavor=(version.tags or {}).get("kind", ""),
        )
        self.serving = Serving(model, ref)
        logger.info("serving %s v%s (%s)", self.registered_model, ref.version, ref.flavor)
        return True


def uses_sentiment(model: Any) -> bool:
    return any(name.startswith("sentiment_") for name in forecast_spec(model).features)


def cross_venue_window(
    model: Any, last: Candle, pairs_of: Callable[[str], Sequence[str]]
) -> tuple[dict[str, str], datetime, datetime]:
    """The other venues' candles the model's cross-venue features need at `last`: exchange -> the market
    of the coin there (empty when the model reads none; `pairs_of`: Settings.venue_pairs), and the span
    [start, end) of their window starts: the candles that closed by the start of `last`
    (cryptopredict.features.cross_venue), as many as the return lags need."""
    venues = venues_of(forecast_spec(model).features)
    step = timedelta(seconds=last.interval_s)
    start = last.window_start - step * (max(venues.values(), default=0) + 1)
    return source_markets(last.market, venues, pairs_of), start, last.window_start


def missing_inputs(model: Any, row: Mapping[str, float]) -> str | None:
    """Why `row` (feature name -> value, NaN where unknown) cannot be fed to the model, or None when it can."""
    needed = forecast_spec(model).features
    absent = [name for name in needed if name not in row]
    if absent:
        return f"the model needs inputs this path does not compute: {absent}"
    empty = [name for name in needed if math.isnan(row[name])]
    if not empty:
        return None
    if any(name.startswith("ret_lag_") for name in empty):
        return f"incomplete history: a gap or a missing candle among the last candles ({empty[0]} is empty)"
    other_venues = [name for name in empty if name.startswith(CROSS_VENUE)]
    if other_venues:
        return (
            "cross-venue inputs missing: another venue's candle closed before this one is a gap or not"
            f" in the store ({', '.join(other_venues)})"
        )
    return f"warm-up: {', '.join(empty)} have no value yet"


def volatility_row(history: Sequence[Candle]) -> dict[str, float]:
    """The volatility inputs at the newest candle of `history` (the dataset's, proven equal in tests):
    its closes placed on the complete grid, NaN where a candle is missing."""
    last = history[-1]
    step = last.interval_s
    steps_back = [int((last.window_start - c.window_start).total_seconds()) // step for c in history]
    close = np.full(steps_back[0] + 1, np.nan)
    for back, candle in zip(steps_back, history, strict=True):
        close[-1 - back] = candle.close
    return latest_volatility_inputs(close)


def predict_next(
    model: Any,
    ref: ModelRef,
    history: Sequence[Candle],
    indicator_values: Mapping[str, float | None],
    lags: int,
    horizon_candles: int,
    config: IndicatorConfig,
    sentiment: pd.DataFrame | None = None,
    *,
    cross_venue: Mapping[str, pd.DataFrame] | None = None,
    quantile_levels: list[float] | None = None,
    interval_level: float | None = None,
) -> Prediction | PredictionRefusal:
    """A prediction from the newest candle of `history`, or the reason there is none: a feature the
    model needs is missing (warm-up, a gap or a missing candle among the last `lags + 1`, another venue's
    candle). The input row is model_inputs.latest_inputs (the training row's formulas on this candle's
    floats, no data frame). `sentiment`: the sentiment features at the candle's close as the store reads
    them (store.news.sentiment_at_closes); `cross_venue`: exchange -> that venue's candles in
    cross_venue_window (a venue the model reads and this leaves out counts as having none).
    `interval_level`: the coverage to draw the interval at (adaptive conformal inference moves it);
    None: the model's calibrated level."""
    last = history[-1]
    horizon = timedelta(seconds=last.interval_s) * horizon_candles
    spec = forecast_spec(model)
    row: dict[str, float] = {}
    if spec.features:  # a model that reads no feature (persistence) needs no input row
        venues = venues_of(spec.features)
        others = {exchange: (cross_venue or {}).get(exchange, NO_CANDLES) for exchange in venues}
        at_close = None if sentiment is None else sentiment_at(sentiment, last.window_start)
        row = latest_inputs(
            history, indicator_values, lags, config, at_close, others, max(venues.values(), default=0)
        )
    reason = missing_inputs(model, row)
    if reason is not None:
        return refusal(ref, last, horizon_candles, reason)
    output = predict_row(model, row)
    log_return = output["log_return"]
    if spec.constant_quantiles is not None:
        band = _calibrated_band(spec, history, log_return, quantile_levels or [], interval_level)
    elif output["upper"] > output["lower"]:
        band = {
            "lower_price": last.close * float(np.exp(output["lower"])),
            "upper_price": last.close * float(np.exp(output["upper"])),
            "interval_level": spec.coverage,
        }
    else:
        # A zero-width interval (a persistence champion logged before any return was known) is no
        # interval: reporting it would count every outcome as outside and give coverage 0 in the ledger.
        band = {}
    return Prediction(
        exchange=last.exchange,
        pair=last.pair,
        interval_s=last.interval_s,
        horizon_s=int(horizon.total_seconds()),
        made_at=datetime.now(UTC),
        feature_time=last.window_start,
        target_time=last.window_end + horizon,
        last_price=last.close,
        predicted_price=last.close * float(np.exp(log_return)),
        model_name=ref.name,
        model_version=ref.version,
        **band,
    )


def _calibrated_band(
    spec: ForecastSpec,
    history: Sequence[Candle],
    log_return: float,
    quantile_levels: list[float],
    interval_level: float | None,
) -> dict[str, Any]:
    """The interval and quantiles of a calibrated model: scaled by its volatility forecast in the
    forecast's regime where the history gives the volatility inputs, constant-width where it does not."""
    constant = spec.constant_quantiles or []
    scaled = scale_of_inputs(spec.adaptive, volatility_row(history)) if spec.adaptive else Scaled(None, None)
    level = interval_level or spec.coverage or 0.8
    close = history[-1].close

    def price_at(quantile: float) -> float:
        return close * float(np.exp(log_return + offset_at(constant, spec.adaptive, scaled, quantile)))

    return {
        "interval_level": level,
        "lower_price": price_at((1.0 - level) / 2.0),
        "upper_price": price_at((1.0 + level) / 2.0),
        "quantiles": [QuantilePrice(level=q, price=price_at(q)) for q in quantile_levels],
        "predicted_volatility": scaled.volatility,
        "volatility_regime": scaled.regime,
    }


def refusal(ref: ModelRef, candle: Candle, horizon_candles: int, reason: str) -> PredictionRefusal:
    """What is published instead of a prediction from `candle` when the model's inputs are not fit."""
    return PredictionRefusal(
        exchange=candle.exchange,
        pair=candle.pair,
        interval_s=candle.interval_s,
        horizon_s=candle.interval_s * horizon_candles,
        feature_time=candle.window_start,
        model_name=ref.name,
        model_version=ref.version,
        reason=reason,
        at=datetime.now(UTC),
    )


def stale_sentiment(newest: datetime | None, at: datetime, max_age: timedelta) -> str | None:
    """Why the sentiment features at `at` are too old to predict from, or None when they are fresh."""
    if newest is None:
        return "stale sentiment: the coin has no sentiment score yet"
    age = at - newest
    if age > max_age:
        return (
            f"stale sentiment: the newest score is {age.total_seconds() / 3600:.1f} h old"
            f" (limit {max_age.total_seconds() / 3600:.1f} h, model.max_sentiment_age_s)"
        )
    return None
