"""The prediction agent's per-candle cost: the incremental live input row against the data-frame row.

On the real Kraken XBT/USD hourly history in ../shared/data (a synthetic random walk when it is absent),
the newest candles are fed one at a time, as the agent gets them, after the older ones warmed the state up:

1. Row: the model input of each new candle (the default 10 return lags and every indicator feature).
   - before: a data frame of the recent candles (169), `feature_frame` over it, its last row: what the
     agent's `input_row` did, rebuilt here from `feature_frame`, which training still uses;
   - after: `model_inputs.latest_inputs`, the same formulas on the candle's floats.
   Both rows are checked equal at every candle (exact, NaN at the same places), and so are the two
   models' predictions from them.
2. Candle: the agent's whole step for one horizon, from the table value before the candle to the table
   value after it (the broker round trips and store reads around it left out):
   - before: parse the stored state (169 `Candle.model_validate` and `IndicatorState.model_validate`),
     update the indicators, the data-frame row, `predict_frame` through the MLflow pyfunc, the state
     dumped and JSON-encoded as the table's changelog gets it;
   - after: `LiveStates.advance` (the parsed state in memory), `latest_inputs`, `predict_row` (the
     model's own predictor on a numpy row), `LiveStates.save` (the state's JSON joined from each
     candle's JSON, encoded once).
   Two models, fitted on the older candles by the project's own code (`lifecycle.evaluate_challenger`),
   logged as the forecaster pyfunc into a throwaway MLflow store and loaded back as the agent loads
   them: XGBoost (the headline) and a ridge.

Every figure is microseconds per candle, the best of 3 passes over the same candles (the machine is
shared: the best pass is the one least disturbed).

Usage: .venv/bin/python bench/prediction_row.py [--quick]   (no services needed)
Ends with one JSON line: {"row_us_before", "row_us_after", "row_speedup", "candle_us_before",
"candle_us_after", "candle_speedup", ...} (the candle figures are the XGBoost model's).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.indicators import synthetic  # noqa: E402
from bench.report import publish  # noqa: E402
from cryptopredict.features.indicators import IndicatorConfig, IndicatorState  # noqa: E402
from cryptopredict.features.model_inputs import feature_frame, latest_inputs  # noqa: E402
from cryptopredict.ml import lifecycle  # noqa: E402
from cryptopredict.ml.dataset import build_dataset, indicator_values  # noqa: E402
from cryptopredict.ml.live_state import LiveStates  # noqa: E402
from cryptopredict.ml.pyfunc import (  # noqa: E402
    load_forecast_model,
    log_forecast_model,
    predict_frame,
    predict_row,
    single_threaded,
)
from cryptopredict.ml.serving import history_length  # noqa: E402
from cryptopredict.models import Candle  # noqa: E402
from cryptopredict.store.ohlcvt import read_ohlcvt  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "kraken" / "XBTUSD_60.csv"
PAIR, INTERVAL_S = "XBT/USD", 3600
LAGS = 10  # model.lags' default
HISTORY = history_length(LAGS)
KEY = PAIR
PASSES = 3
MODELS: dict[str, dict[str, Any]] = {
    "xgboost": {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.05},
    "linear": {"estimator": "ridge", "ridge_alpha": 1.0},
}


def history(quick: bool) -> tuple[list[Candle], str]:
    """The candles to train on and then feed: the newest 20,000 of the real history (8,000 quick)."""
    keep = 8_000 if quick else 20_000
    if REAL.exists():
        candles = list(read_ohlcvt(REAL, PAIR, INTERVAL_S))[-keep:]
        gaps = sum(c.gap for c in candles)
        return candles, f"Kraken XBT/USD 1h, the newest {len(candles):,} candles ({gaps:,} gap candles)"
    candles = synthetic(keep)
    return (
        candles,
        f"a synthetic random walk of {len(candles):,} hourly candles (10% gaps; ../shared/data absent)",
    )


def old_row(history: list[Candle], values: dict[str, float | None], config: IndicatorConfig) -> pd.DataFrame:
    """The live row as the agent built it before: a frame of the history, feature_frame, its last row."""
    last = history[-1]
    candles = pd.DataFrame([c.model_dump() for c in history])
    indicators = pd.DataFrame([values], index=pd.DatetimeIndex([last.window_start]), dtype=float)
    frame, _ = feature_frame(candles, last.interval_s, LAGS, indicators, config)
    return frame.iloc[[-1]]


def fitted_models(
    train: list[Candle], config: IndicatorConfig, directory: Path
) -> dict[str, tuple[Any, Any]]:
    """Each family fitted and calibrated on `train`'s dataset, logged, and loaded back twice: as the agent
    loaded it before, and as it loads it now (single_threaded)."""
    import mlflow

    frame = pd.DataFrame([c.model_dump() for c in train])
    values, _ = indicator_values(frame, PAIR, INTERVAL_S, None, config)
    dataset = build_dataset(frame, INTERVAL_S, LAGS, 1, values, None, config)
    data = lifecycle.split(dataset.frame, 0.2, timedelta(seconds=INTERVAL_S), n_folds=3, min_train_rows=500)
    mlflow.set_tracking_uri(f"sqlite:///{directory}/mlflow.db")
    experiment = mlflow.create_experiment("prediction-row", artifact_location=(directory / "art").as_uri())
    models = {}
    for family, params in MODELS.items():
        challenger = lifecycle.evaluate_challenger(
            family, params, data, dataset.features, 0.8, 20_000, 1, [0.1, 0.5, 0.9]
        )
        with mlflow.start_run(experiment_id=experiment):
            info = log_forecast_model(
                family,
                challenger.model,
                dataset.features,
                challenger.interval,
                interval_s=INTERVAL_S,
                horizon_candles=1,
                calibration=challenger.calibration,
                coverage=0.8,
                input_example=data.fit.head(3),
            )
        uri = info.model_uri
        models[family] = load_forecast_model(uri), single_threaded(load_forecast_model(uri))
    return models


def warm_table(warm_up: list[Candle], config: IndicatorConfig) -> dict[str, Any]:
    """The agent's table value after `warm_up`, as the changelog holds it (a JSON dict)."""
    import json

    states = LiveStates({}, HISTORY, config)
    for candle in warm_up:
        state = states.advance(KEY, candle)
        if state is not None:
            states.save(KEY, state)
    return {KEY: json.loads(states.table[KEY])}


def step_before(
    table: dict[str, Any], candle: Candle, model: Any, config: IndicatorConfig, encode: Any
) -> None:
    stored = table[KEY]
    history = [Candle.model_validate(c) for c in stored["candles"]]
    indicators = IndicatorState.model_validate(stored["indicators"])
    values = indicators.update(candle).values
    history = [*history, candle][-HISTORY:]
    predict_frame(model, old_row(history, values, config))
    value = {
        "candles": [c.model_dump(mode="json") for c in history],
        "indicators": indicators.model_dump(mode="json"),
    }
    table[KEY] = value
    encode(value)  # what Faust's JSON codec does when the changelog record is sent


def step_after(states: LiveStates, candle: Candle, model: Any, config: IndicatorConfig) -> None:
    state = states.advance(KEY, candle)
    assert state is not None
    row = latest_inputs(list(state.candles), state.values, LAGS, config)
    predict_row(model, row)
    states.save(KEY, state)


def best_us(run: Callable[[], None], count: int) -> float:
    best = math.inf
    for _ in range(PASSES):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def positions(
    warm_up: list[Candle], fed: list[Candle], config: IndicatorConfig
) -> list[tuple[list[Candle], dict[str, float | None]]]:
    """(recent candles, indicator values) at each fed candle, as the agent holds them."""
    state = IndicatorState.new(PAIR, INTERVAL_S, config)
    candles = [*warm_up, *fed]
    out = []
    for i, candle in enumerate(candles):
        values = state.update(candle).values
        if i >= len(warm_up):
            out.append((candles[max(0, i + 1 - HISTORY) : i + 1], values))
    return out


def agreement(
    rows: list[tuple[list[Candle], dict[str, float | None]]],
    models: dict[str, tuple[Any, Any]],
    config: IndicatorConfig,
) -> tuple[int, int]:
    """Positions whose two rows are equal (every value, NaN at the same places), and whose predictions
    by both models are equal."""
    same_rows = same_predictions = 0
    for history, values in rows:
        before = old_row(history, values, config)
        after = latest_inputs(history, values, LAGS, config)
        same_rows += list(before.columns) == list(after) and np.array_equal(
            before.iloc[0].to_numpy(dtype=float), np.array(list(after.values())), equal_nan=True
        )
        same_predictions += all(
            predict_frame(old, before).iloc[0].to_dict() == predict_row(new, after)
            for old, new in models.values()
        )
    return same_rows, same_predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="8,000 candles, 200 of them fed and timed")
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    config = IndicatorConfig()
    candles, described = history(args.quick)
    count = 200 if args.quick else 2_000
    warm_up, fed = candles[:-count], candles[-count:]
    with tempfile.TemporaryDirectory(prefix="bench-prediction-row-") as tmp:
        models = fitted_models(warm_up, config, Path(tmp))
        print(f"models fitted on {len(warm_up):,} candles; feeding {count:,}", file=sys.stderr)
        rows = positions(warm_up, fed, config)
        same_rows, same_predictions = agreement(rows, models, config)
        print(
            f"equal rows {same_rows}/{count}, equal predictions {same_predictions}/{count}", file=sys.stderr
        )

        def rows_before() -> None:
            for history, values in rows:
                old_row(history, values, config)

        def rows_after() -> None:
            for history, values in rows:
                latest_inputs(history, values, LAGS, config)

        row_before, row_after = best_us(rows_before, count), best_us(rows_after, count)
        print(f"row: {row_before:,.0f} -> {row_after:,.1f} us/candle", file=sys.stderr)
        from faust.serializers import codecs

        json_codec = codecs.get_codec("json")
        start = warm_table(warm_up, config)
        candle_us: dict[str, tuple[float, float]] = {}
        for family, (old, new) in models.items():

            def candles_before(model: Any = old) -> None:
                table = dict(start)
                for candle in fed:
                    step_before(table, candle, model, config, json_codec.dumps)

            def candles_after(model: Any = new) -> None:
                states = LiveStates(dict(start), HISTORY, config)  # parses the table once, as after a restart
                for candle in fed:
                    step_after(states, candle, model, config)

            candle_us[family] = best_us(candles_before, count), best_us(candles_after, count)
            print(
                f"candle, {family}: {candle_us[family][0]:,.0f} -> {candle_us[family][1]:,.1f} us",
                file=sys.stderr,
            )

    (xgb_before, xgb_after), (lin_before, lin_after) = candle_us["xgboost"], candle_us["linear"]
    body = f"""
The prediction agent's work per candle and horizon, on {described}: the models are fitted on the older
candles, then the newest {count:,} are fed one at a time after the older ones warmed the state up. Row:
the model input of the new candle ({LAGS} return lags and every indicator feature; sentiment and
cross-venue inputs, which come from store reads, are not in these models). Candle: from the table value
before the candle to the table value after it: state, row, the model's prediction, state written (the
broker round trips and store reads around it are not counted). Microseconds per candle, best of
{PASSES} passes.

| per candle | before: data frame, state parsed and serialised whole | after: incremental | speed-up |
|---|---|---|---|
| input row (`feature_frame` last row -> `latest_inputs`) | {row_before:,.0f} us | {row_after:,.1f} us | {row_before / row_after:,.0f}x |
| whole step, XGBoost ({MODELS["xgboost"]["n_estimators"]} trees) | {xgb_before:,.0f} us | {xgb_after:,.0f} us | {xgb_before / xgb_after:,.1f}x |
| whole step, ridge | {lin_before:,.0f} us | {lin_after:,.0f} us | {lin_before / lin_after:,.1f}x |

Rows equal at {same_rows:,} of {count:,} candles (every value, NaN at the same places), predictions
of both models equal at {same_predictions:,} of {count:,}. Before: the stored state parsed (169
`Candle.model_validate` and the indicator state), a data frame of the history through `feature_frame`,
`predict_frame` through MLflow's pyfunc (its schema check and frames), the state dumped and JSON-encoded
whole for the changelog. After: the state parsed in memory (`cryptopredict/ml/live_state.py`, the
table read again only when it no longer holds what memory saved), the row from the candle's floats
(`model_inputs.latest_inputs`), the model's own predictor on a numpy row (`pyfunc.predict_row`, XGBoost on one thread), the
state's JSON joined from each candle's JSON encoded once. One core, pure Python; the machine was shared
with other work while it ran.
"""
    command = "python bench/prediction_row.py" + (" --quick" if args.quick else "")
    publish(
        "Prediction agent: incremental input row",
        command,
        body,
        {
            "row_us_before": round(row_before, 1),
            "row_us_after": round(row_after, 2),
            "row_speedup": round(row_before / row_after, 1),
            "candle_us_before": round(xgb_before, 1),
            "candle_us_after": round(xgb_after, 1),
            "candle_speedup": round(xgb_before / xgb_after, 1),
            "candle_us_before_linear": round(lin_before, 1),
            "candle_us_after_linear": round(lin_after, 1),
            "rows_equal": same_rows,
            "predictions_equal": same_predictions,
            "candles": count,
        },
    )


if __name__ == "__main__":
    main()
