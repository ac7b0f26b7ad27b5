"""Volatility models through MLflow's models-from-code: naive, HAR and XGBoost logged without pickle,
reloaded, predicting exactly what the fitted models do, in one `volatility` column; specs that mix a
price family with the volatility target (or forget the estimator) are refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from cryptopredict.ml import volatility_target as vt
from cryptopredict.ml.pyfunc import (
    ForecastSpec,
    HarParams,
    forecast_spec,
    load_forecast_model,
    log_naive_volatility,
    log_volatility_model,
    predict_frame,
)

pytestmark = pytest.mark.unit

HORIZON = 6


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-vol")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root}/m.db")
    experiment = mlflow.create_experiment("volatility", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    yield experiment
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def dataset() -> vt.VolatilityDataset:
    rng = np.random.default_rng(0)
    sigma = 0.002 * np.exp(np.cumsum(rng.normal(0, 0.05, 1200)) * 0.2)
    closes = 30_000.0 * np.exp(np.cumsum(sigma * rng.standard_normal(1200)))
    starts = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(1200)]
    rows = pd.DataFrame({"window_start": starts, "close": closes, "gap": False})
    return vt.build_volatility_dataset(rows, 60, HORIZON)


def assert_no_pickle(model_uri: str) -> None:
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    names = {p.name for p in local.rglob("*") if p.is_file()}
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".cloudpickle", ".joblib"))], names
    assert {"MLmodel", "forecast_model.py", "spec.json"} <= names


@pytest.mark.parametrize("family", ["har", "xgboost"])
def test_fitted_volatility_models_round_trip_exactly(
    tracking: str, dataset: vt.VolatilityDataset, family: str
) -> None:
    frame, features = dataset.frame, dataset.features
    params = {"n_estimators": 30, "max_depth": 3} if family == "xgboost" else {}
    model = vt.fit_family(family, params, frame, features)
    with mlflow.start_run(experiment_id=tracking):
        info = log_volatility_model(
            family,
            model,
            features,
            interval_s=60,
            horizon_candles=HORIZON,
            estimator=dataset.estimator,
            input_example=frame.head(3),
        )
    assert_no_pickle(info.model_uri)
    loaded = load_forecast_model(info.model_uri)
    spec = forecast_spec(loaded)
    assert (spec.target, spec.family, spec.estimator) == ("volatility", family, vt.MEAN_ABS_LOG_RETURN)
    out = predict_frame(loaded, frame[list(reversed(features))].assign(close=1.0))
    assert list(out.columns) == ["volatility"]
    expected = vt.predict_family(family, model, frame, features, HORIZON)
    np.testing.assert_allclose(out["volatility"].to_numpy(), expected, rtol=1e-6)
    assert (out["volatility"] > 0).all()


def test_the_naive_model_is_the_trailing_mean_over_the_horizon(
    tracking: str, dataset: vt.VolatilityDataset
) -> None:
    uri, run_id = log_naive_volatility("naive", vt.naive_feature(HORIZON), 60, HORIZON, dataset.estimator)
    assert_no_pickle(uri)
    assert mlflow.get_run(run_id).data.tags["kind"] == "naive"
    out = predict_frame(load_forecast_model(uri), dataset.frame)
    np.testing.assert_allclose(out["volatility"].to_numpy(), dataset.frame[vt.NAIVE_VOL].to_numpy())


def test_specs_never_mix_targets_and_families() -> None:
    base = {"features": ["log_vol_1"], "interval": (0.0, 0.0)}
    with pytest.raises(ValueError, match="does not forecast"):
        ForecastSpec(target="volatility", family="linear", estimator="mean_abs_log_return", **base)
    with pytest.raises(ValueError, match="does not forecast"):
        ForecastSpec(target="price", family="naive", **base)
    with pytest.raises(ValueError, match="estimator"):
        ForecastSpec(target="volatility", family="naive", **base)
    with pytest.raises(ValueError, match="HAR"):
        ForecastSpec(target="volatility", family="har", estimator="realized_vol_1m", **base)
    spec = ForecastSpec(
        target="volatility",
        family="har",
        estimator="realized_vol_1m",
        har=HarParams(intercept=0.1, coefficients=[0.9]),
        **base,
    )
    assert spec.output_columns == ["volatility"]
