"""Cross-venue features: point in time (another venue's candle that closed after the target's start never
changes a row), the right lags and spread, NaN where a candle is missing, the venues a target reads, and
the gate on a market where one venue leads the other and on one where none does."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from cryptopredict.features.candles import gap_candle
from cryptopredict.features.cross_venue import (
    cross_venue_features,
    feature_names,
    source_market,
    source_markets,
    venues_of,
)
from cryptopredict.features.indicators import IndicatorConfig, IndicatorState
from cryptopredict.features.model_inputs import complete_grid
from cryptopredict.ml import lifecycle
from cryptopredict.ml.dataset import build_dataset, indicator_values
from cryptopredict.ml.evaluation import GateDecision
from cryptopredict.ml.pyfunc import ForecastPythonModel, ForecastSpec
from cryptopredict.ml.serving import predict_next
from cryptopredict.models import Candle, ModelRef, Prediction, PredictionRefusal
from cryptopredict.models.training import TrainingInput
from cryptopredict.orchestration import training_request
from cryptopredict.settings import Settings
from cryptopredict.simulators.markets import synthetic_candles, two_venue_candles

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)
LEADER, FOLLOWER = "coinbase:BTC/USD", "BTC/USD"


def frame_of(candles: list[Candle]) -> pd.DataFrame:
    return pd.DataFrame([c.model_dump() for c in candles])


def venues(n: int = 60, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(target venue, other venue) candles of a random walk each."""
    ours = synthetic_candles(FOLLOWER, 60, n, T0, seed=seed)
    theirs = synthetic_candles(LEADER, 60, n, T0, seed=seed + 1)
    return frame_of(ours), frame_of(theirs)


def features(ours: pd.DataFrame, theirs: pd.DataFrame, lags: int = 3) -> pd.DataFrame:
    return cross_venue_features(complete_grid(ours, 60), theirs, 60, lags, "coinbase")


def test_a_row_reads_only_candles_that_closed_by_the_target_candles_start():
    ours, theirs = venues()
    full = features(ours, theirs)
    for i in (5, 20, 41, 59):
        t = T0 + STEP * i
        closed = theirs[theirs["window_end"] <= t]
        truncated = features(ours, closed)
        pd.testing.assert_series_equal(truncated.loc[t], full.loc[t])
        # The other venue's candle [t, t + 1m) closes with the target's own: changing it changes nothing.
        moved = theirs.copy()
        moved.loc[moved["window_start"] >= t, "close"] *= 1.5
        pd.testing.assert_series_equal(features(ours, moved).loc[t], full.loc[t])
    # ...while the candle just before does enter the row (so the test above could fail).
    t = T0 + STEP * 20
    moved = theirs.copy()
    moved.loc[moved["window_start"] == t - STEP, "close"] *= 1.5
    assert not np.allclose(features(ours, moved).loc[t], full.loc[t])


def test_lags_and_spread_are_the_other_venues_returns_and_price_gap_before_t():
    ours, theirs = venues()
    full = features(ours, theirs, lags=3)
    assert list(full.columns) == [
        "xv_coinbase_ret_lag_1",
        "xv_coinbase_ret_lag_2",
        "xv_coinbase_ret_lag_3",
        "xv_coinbase_spread",
    ]
    their_close = theirs.set_index("window_start")["close"]
    our_close = ours.set_index("window_start")["close"]
    t = T0 + STEP * 30
    for k in (1, 2, 3):
        expected = math.log(their_close[t - k * STEP] / their_close[t - (k + 1) * STEP])
        assert full.loc[t, f"xv_coinbase_ret_lag_{k}"] == pytest.approx(expected, rel=1e-12)
    expected = math.log(their_close[t - STEP] / our_close[t - STEP])
    assert full.loc[t, "xv_coinbase_spread"] == pytest.approx(expected, rel=1e-12)
    # The first rows have no earlier candle of the other venue.
    assert full.iloc[:4].isna().any(axis=1).all() and full.iloc[4:].notna().all(axis=1).all()


def test_a_missing_or_gap_candle_of_either_venue_leaves_nan_where_it_is_read():
    ours, theirs = venues()
    gap = gap_candle(LEADER, 60, T0 + STEP * 20, 100.0).model_dump()
    theirs = pd.concat([theirs[theirs["window_start"] != T0 + STEP * 20], pd.DataFrame([gap])])
    theirs = theirs[theirs["window_start"] != T0 + STEP * 40]  # a candle never stored
    ours = ours[ours["window_start"] != T0 + STEP * 50]  # the target venue's own hole
    full = features(ours, theirs, lags=2)
    nan = full.isna()
    at = lambda minute: T0 + STEP * minute  # noqa: E731
    assert nan.loc[at(21), "xv_coinbase_ret_lag_1"] and nan.loc[at(22), "xv_coinbase_ret_lag_1"]
    assert nan.loc[at(22), "xv_coinbase_ret_lag_2"] and nan.loc[at(23), "xv_coinbase_ret_lag_2"]
    assert nan.loc[at(21), "xv_coinbase_spread"] and nan.loc[at(41), "xv_coinbase_spread"]
    assert nan.loc[at(51), "xv_coinbase_spread"] and not nan.loc[at(51), "xv_coinbase_ret_lag_1"]
    assert not nan.loc[at(25)].any() and not nan.loc[at(35)].any()


def test_the_venues_a_target_reads_are_the_same_coin_elsewhere_preferring_its_quote():
    pairs = {"kraken": ["BTC/USD", "ETH/USD"], "coinbase": ["BTC/EUR", "BTC/USD"], "binance": ["BTC/USDT"]}
    assert source_markets("BTC/USD", ["kraken", "coinbase", "binance"], pairs.__getitem__) == {
        "coinbase": "coinbase:BTC/USD",
        "binance": "binance:BTC/USDT",
    }
    assert source_markets("binance:BTC/USDT", ["kraken", "coinbase"], pairs.__getitem__) == {
        "kraken": "BTC/USD",
        "coinbase": "coinbase:BTC/EUR",
    }
    assert source_market("coinbase:SOL/USD", "kraken", pairs["kraken"]) is None
    assert source_market("demo.BTC/USD", "coinbase", ["demo.BTC/USD"]) == "coinbase:demo.BTC/USD"
    names = ["ret_lag_1", *feature_names("coinbase", 3), *feature_names("binance", 1), "sma_20_rel"]
    assert venues_of(names) == {"coinbase": 3, "binance": 1}
    assert venues_of(["ret_lag_1", "sentiment_mean_1h"]) == {}


def test_the_setting_is_off_by_default_and_names_only_venues_that_are_read():
    assert Settings().features.cross_venue == []
    assert training_request(Settings(), "BTC/USD", 60, 1).cross_venue == []
    with pytest.raises(ValidationError, match="not read: add them to venues"):
        Settings(venues=["kraken"], features={"cross_venue": ["coinbase"]})
    settings = Settings(
        venues=["kraken", "coinbase"], features={"cross_venue": ["kraken", "coinbase"], "cross_venue_lags": 2}
    )
    request = training_request(settings, "BTC/USD", 60, 1)
    assert (request.cross_venue, request.cross_venue_lags) == (["coinbase:BTC/USD"], 2)
    assert training_request(settings, "coinbase:BTC/USD", 60, 1).cross_venue == ["BTC/USD"]


class Loaded:
    """A loaded forecaster, as far as serving reads it."""

    def __init__(self, spec: ForecastSpec) -> None:
        self.model = ForecastPythonModel()
        self.model.spec = spec

    def unwrap_python_model(self) -> ForecastPythonModel:
        return self.model

    def predict(self, frame):  # type: ignore[no-untyped-def]
        return self.model.predict(None, frame)


def test_the_live_prediction_is_refused_when_another_venues_candle_is_not_at_hand():
    _, theirs = venues()
    candles = synthetic_candles(FOLLOWER, 60, 60, T0, seed=1)
    state = IndicatorState.new(FOLLOWER, 60, IndicatorConfig())
    values = [state.update(c).values for c in candles][-1]
    spec = ForecastSpec(family="persistence", features=feature_names("coinbase", 2), interval=(0.0, 0.0))
    ref = ModelRef(name="cryptopredict-btcusd-60s-h1", version="1", flavor="persistence")

    def predict(cross_venue: dict[str, pd.DataFrame] | None) -> Prediction | PredictionRefusal:
        return predict_next(
            Loaded(spec), ref, candles[-11:], values, 10, 1, IndicatorConfig(), cross_venue=cross_venue
        )

    assert isinstance(predict({"coinbase": theirs}), Prediction)
    for cross_venue in (None, {"coinbase": theirs.iloc[:-3]}):  # none, or the last ones not stored yet
        refused = predict(cross_venue)
        assert isinstance(refused, PredictionRefusal)
        assert (
            refused.reason.startswith("cross-venue inputs missing") and "xv_coinbase_spread" in refused.reason
        )


def gate_on(lead: int | None, with_features: bool, noise: float) -> tuple[float, GateDecision]:
    """A ridge on the follower's inputs (and the leader's when `with_features`), fitted before the test
    window and judged by the promotion gate against persistence, with the retrain's default thresholds."""
    leader, follower = two_venue_candles(LEADER, FOLLOWER, 60, 3000, T0, lead, seed=3, noise=noise)
    ours, config, request = frame_of(follower), IndicatorConfig(), TrainingInput()
    values, _ = indicator_values(ours, FOLLOWER, 60, None, config)
    others = {"coinbase": frame_of(leader)} if with_features else None
    ds = build_dataset(ours, 60, request.lags, 1, values, None, config, others, request.cross_venue_lags)
    data = lifecycle.split(ds.frame, request.test_fraction, STEP, request.folds, 200)
    params = {"estimator": "ridge", "ridge_alpha": 10.0}
    challenger = lifecycle.evaluate_challenger("linear", params, data, ds.features, 0.8, 20_000, 1, [0.5])
    decision = lifecycle.gate(
        challenger, None, data.test, 1, request.dm_alpha, request.max_plausible_skill, request.min_skill
    )
    return challenger.metrics.skill_vs_persistence, decision


def test_the_gate_promotes_a_venue_that_leads_and_nothing_where_none_leads():
    skill, decision = gate_on(lead=2, with_features=True, noise=2.0)
    assert decision.promote and 0.05 < skill < 0.2, decision.reasons
    _, without = gate_on(lead=2, with_features=False, noise=2.0)
    assert not without.promote  # the follower's own past says nothing
    _, no_lead = gate_on(lead=None, with_features=True, noise=0.5)
    assert not no_lead.promote, no_lead.reasons
    # A lead of one candle is out of reach: the leader's candle that would tell closes with the target's.
    _, one = gate_on(lead=1, with_features=True, noise=2.0)
    assert not one.promote, one.reasons
