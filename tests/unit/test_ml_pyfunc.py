"""The forecaster pyfunc: logged as code plus JSON/UBJ artifacts (no pickle), and reloaded models predict
exactly like the in-memory estimators they were built from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import ElasticNet, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBRegressor

from cryptopredict.ml.pyfunc import (
    ForecastPythonModel,
    ForecastSpec,
    forecast_spec,
    load_forecast_model,
    log_forecast_model,
    predict_frame,
    predict_log_returns,
    predict_row,
    single_threaded,
    spec_from_estimator,
    write_artifacts,
)

pytestmark = pytest.mark.unit

FEATURES = [f"ret_lag_{k}" for k in range(1, 6)]
INTERVAL = (-0.004, 0.005)


def frame(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(0, 0.002, size=(n, len(FEATURES))), columns=FEATURES)
    y = 0.3 * x["ret_lag_1"] - 0.1 * x["ret_lag_3"] + rng.normal(0, 0.0005, size=n)
    return x, y


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway sqlite tracking store with artifacts under tmp (creating its tables takes seconds,
    hence one per module); the previous tracking URI is restored afterwards."""
    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root}/m.db")
    experiment = mlflow.create_experiment("pyfunc", artifact_location=(root / "artifacts").as_uri())
    yield experiment
    mlflow.set_tracking_uri(previous)


def log(experiment: str, family, estimator, example: pd.DataFrame | None, features=FEATURES):
    with mlflow.start_run(experiment_id=experiment):
        return log_forecast_model(
            family,
            estimator,
            features,
            INTERVAL,
            interval_s=60,
            horizon_candles=5,
            input_example=example,
        )


def assert_no_pickle(model_uri: str) -> Path:
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    names = {p.name for p in local.rglob("*") if p.is_file()}
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".cloudpickle", ".joblib"))], names
    assert {"MLmodel", "forecast_model.py", "spec.json"} <= names
    mlmodel = (local / "MLmodel").read_text()
    assert "python_model.pkl" not in mlmodel and "mlflow.pyfunc.loaders.code_model" in mlmodel
    return local


def test_xgboost_round_trip_is_exact_and_pickle_free(tracking: str) -> None:
    x, y = frame(400)
    # Early stopping: the reloaded model must keep using best_iteration, not every tree.
    model = XGBRegressor(n_estimators=300, max_depth=3, learning_rate=0.1, early_stopping_rounds=5)
    model.fit(x[:300], y[:300], eval_set=[(x[300:], y[300:])], verbose=False)
    assert model.best_iteration < 299
    info = log(tracking, "xgboost", model, x.head(3).assign(close=100.0))

    local = assert_no_pickle(info.model_uri)
    assert (local / "artifacts" / "booster.ubj").stat().st_size > 0
    loaded = load_forecast_model(info.model_uri)
    assert loaded.metadata.get_input_schema().input_names() == FEATURES
    spec = forecast_spec(loaded)
    assert (spec.family, spec.features, spec.interval, spec.horizon_s) == ("xgboost", FEATURES, INTERVAL, 300)

    # Extra columns and a shuffled column order change nothing.
    shuffled = x[list(reversed(FEATURES))].assign(close=100.0)
    out = predict_frame(loaded, shuffled)
    expected = model.predict(x).astype(float)
    assert list(out.columns) == ["log_return", "lower", "upper"]
    np.testing.assert_array_equal(out["log_return"].to_numpy(), expected)
    np.testing.assert_allclose(out["lower"].to_numpy(), expected + INTERVAL[0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["upper"].to_numpy(), expected + INTERVAL[1], rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "estimator",
    [make_pipeline(StandardScaler(), ElasticNet(alpha=1e-6)), make_pipeline(StandardScaler(), Ridge(1.0))],
    ids=["elasticnet", "ridge"],
)
def test_linear_round_trip_matches_sklearn(tracking: str, estimator: Pipeline) -> None:
    x, y = frame(300, seed=1)
    estimator.fit(x, y)
    info = log(tracking, "linear", estimator, x.head(2))

    local = assert_no_pickle(info.model_uri)
    assert not (local / "artifacts" / "booster.ubj").exists()
    spec_json = json.loads((local / "artifacts" / "spec.json").read_text())
    assert all(isinstance(v, float) for v in spec_json["linear"]["coef"])
    out = predict_frame(load_forecast_model(info.model_uri), x)
    np.testing.assert_allclose(out["log_return"].to_numpy(), estimator.predict(x), rtol=0, atol=1e-12)


def test_persistence_needs_no_features_and_predicts_zero(tracking: str) -> None:
    info = log(tracking, "persistence", None, None, features=[])
    assert_no_pickle(info.model_uri)
    loaded = load_forecast_model(info.model_uri)
    out = predict_frame(loaded, pd.DataFrame({"anything": [1.0, 2.0, 3.0]}, index=[7, 8, 9]))
    assert list(out.index) == [7, 8, 9]
    assert out.to_dict("list") == {
        "log_return": [0.0] * 3,
        "lower": [INTERVAL[0]] * 3,
        "upper": [INTERVAL[1]] * 3,
    }


def test_missing_feature_is_a_value_error_naming_it(tracking: str) -> None:
    x, y = frame(200, seed=2)
    estimator = make_pipeline(StandardScaler(), Ridge()).fit(x, y)
    spec = spec_from_estimator("linear", estimator, FEATURES, INTERVAL, interval_s=60, horizon_candles=1)
    with pytest.raises(ValueError, match="ret_lag_3"):
        predict_log_returns(spec, None, x.drop(columns=["ret_lag_3"]))
    info = log(tracking, "linear", estimator, x.head(2))
    with pytest.raises(ValueError, match=r"\['ret_lag_2'\]"):
        predict_frame(load_forecast_model(info.model_uri), x.drop(columns=["ret_lag_2"]))


def test_one_row_predicts_exactly_what_a_frame_predicts_for_it(tracking: str) -> None:
    """The live path feeds the model one row as a numpy array (predict_row), its XGBoost on one thread:
    the same numbers, bit for bit, as that row's frame through MLflow's pyfunc with the default threads
    (what the live path fed it before). A batch of rows may differ from it in the last bit for a linear
    model, whose matrix product sums in another order for another shape."""
    x, y = frame(400, seed=6)
    boosted = XGBRegressor(n_estimators=300, max_depth=3, learning_rate=0.1, early_stopping_rounds=5)
    boosted.fit(x[:300], y[:300], eval_set=[(x[300:], y[300:])], verbose=False)
    ridge = make_pipeline(StandardScaler(), Ridge(1.0)).fit(x, y)
    for family, estimator, features in (
        ("xgboost", boosted, FEATURES),
        ("linear", ridge, FEATURES),
        ("persistence", None, []),
    ):
        uri = log(tracking, family, estimator, x.head(2) if features else None, features=features).model_uri
        framed = load_forecast_model(uri)
        live = single_threaded(load_forecast_model(uri))
        for i in range(0, len(x), 3):
            one = x.iloc[[i]].assign(close=100.0)
            expected = predict_frame(framed, one).iloc[0].to_dict()
            assert predict_row(live, one.iloc[0].to_dict()) == expected, (family, i)
        if features:
            with pytest.raises(ValueError, match=r"\['ret_lag_2'\]"):
                predict_row(live, {name: 0.0 for name in FEATURES if name != "ret_lag_2"})


def test_load_context_rebuilds_from_the_artifact_files_alone(tmp_path: Path) -> None:
    x, y = frame(200, seed=3)
    model = XGBRegressor(n_estimators=20, max_depth=2).fit(x, y)
    spec = spec_from_estimator("xgboost", model, FEATURES, INTERVAL, interval_s=60, horizon_candles=1)
    artifacts = write_artifacts(spec, model, tmp_path)
    assert sorted(Path(p).name for p in artifacts.values()) == ["booster.ubj", "spec.json"]
    pyfunc = ForecastPythonModel()
    pyfunc.load_context(mlflow.pyfunc.PythonModelContext(artifacts=artifacts, model_config={}))
    out = pyfunc.predict(None, x)
    np.testing.assert_array_equal(out["log_return"].to_numpy(), model.predict(x).astype(float))


def test_spec_rejects_inconsistent_models() -> None:
    x, y = frame(100, seed=4)
    fitted = make_pipeline(StandardScaler(), Ridge()).fit(x, y)
    with pytest.raises(ValueError, match="fitted on"):
        spec_from_estimator(
            "linear", fitted, list(reversed(FEATURES)), INTERVAL, interval_s=60, horizon_candles=1
        )
    with pytest.raises(ValueError, match="lower <= upper"):
        spec_from_estimator("persistence", None, [], (0.01, -0.01), interval_s=60, horizon_candles=1)
    with pytest.raises(ValueError, match="no estimator"):
        spec_from_estimator("persistence", fitted, FEATURES, INTERVAL, interval_s=60, horizon_candles=1)
    two_scalers = make_pipeline(StandardScaler(), StandardScaler(), Ridge()).fit(x, y)
    with pytest.raises(TypeError, match="StandardScaler"):
        spec_from_estimator("linear", two_scalers, FEATURES, INTERVAL, interval_s=60, horizon_candles=1)
    with pytest.raises(ValueError, match="linear parameters"):
        ForecastSpec(family="linear", features=FEATURES, interval=INTERVAL, interval_s=60, horizon_candles=1)
