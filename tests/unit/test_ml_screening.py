"""Screening ranks regressors by walk-forward MAE, never tries the measured-slow ones, trains on the most
recent rows, drops a model after its first over-long or failed fold, and always hands both servable
families to the tuner."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression

from cryptopredict.ml.screening import (
    SLOW_KERNEL_MODELS,
    ScreenedModel,
    families_to_tune,
    model_family,
    screen_regressors,
)

pytestmark = pytest.mark.unit


def linear_data(n: int = 300, k: int = 4, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Log-return-sized target: a linear combination of the features plus a little noise."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, k)), columns=[f"f{i}" for i in range(k)])
    y = X.to_numpy() @ rng.normal(scale=1e-3, size=k) + rng.normal(scale=1e-4, size=n)
    return X, y


def walk_forward(n: int, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    blocks = np.array_split(np.arange(n), n_folds + 1)
    return [(np.arange(block[0]), block) for block in blocks[1:]]


class RecordingRegressor(RegressorMixin, BaseEstimator):
    """Remembers the targets it was fitted on (the preprocessing scales X, but y arrives untouched)."""

    fitted: ClassVar[list[np.ndarray]] = []

    def fit(self, X: np.ndarray, y: np.ndarray) -> RecordingRegressor:
        RecordingRegressor.fitted.append(np.asarray(y))
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.mean_)


class SlowRegressor(RecordingRegressor):
    fits: ClassVar[int] = 0

    def fit(self, X: np.ndarray, y: np.ndarray) -> SlowRegressor:
        SlowRegressor.fits += 1
        time.sleep(0.3)
        super().fit(X, y)
        return self


class FailingRegressor(RecordingRegressor):
    fits: ClassVar[int] = 0

    def fit(self, X: np.ndarray, y: np.ndarray) -> FailingRegressor:
        FailingRegressor.fits += 1
        raise RuntimeError("diverged")


def test_linear_target_puts_linear_models_first_and_slow_models_are_never_tried():
    X, y = linear_data()
    finished: list[str] = []
    screened = screen_regressors(
        X, y, walk_forward(len(X), 2), time_limit_s=30, max_rows=10_000, seed=0, on_model=finished.append
    )
    names = [model.name for model in screened]
    assert not set(names) & SLOW_KERNEL_MODELS
    assert {"XGBRegressor", "LinearRegression", "Ridge", "DummyRegressor"} <= set(names)
    assert [model.family for model in screened[:3]] == ["linear"] * 3
    assert screened == sorted(screened, key=lambda model: model.mean_mae)
    assert all(model.folds == 2 and model.seconds >= 0 for model in screened)
    by_name = {model.name: model for model in screened}
    assert by_name["LinearRegression"].mean_mae < 0.2 * by_name["DummyRegressor"].mean_mae
    assert by_name["XGBRegressor"].family == "xgboost" and by_name["DummyRegressor"].family is None
    assert set(names) <= set(finished)  # heartbeats for every model


def test_training_rows_are_the_most_recent_ones():
    RecordingRegressor.fitted.clear()
    n = 200
    X, _ = linear_data(n)
    y = np.arange(n) * 1e-6  # a row's target identifies it
    shuffled_train = np.random.default_rng(1).permutation(150)
    screened = screen_regressors(
        X,
        y,
        [(shuffled_train, np.arange(150, 200))],
        time_limit_s=30,
        max_rows=40,
        seed=0,
        candidates=[RecordingRegressor],
    )
    assert [model.name for model in screened] == ["RecordingRegressor"]
    (fitted,) = RecordingRegressor.fitted
    np.testing.assert_array_equal(fitted, y[110:150])


def test_too_slow_or_failing_models_cost_one_fit_and_are_not_reported():
    SlowRegressor.fits = FailingRegressor.fits = 0
    X, y = linear_data(120)
    screened = screen_regressors(
        X,
        y,
        walk_forward(len(X), 3),
        time_limit_s=0.1,
        max_rows=1_000,
        seed=0,
        candidates=[SlowRegressor, FailingRegressor, LinearRegression],
    )
    assert [(model.name, model.folds) for model in screened] == [("LinearRegression", 3)]
    assert SlowRegressor.fits == 1 and FailingRegressor.fits == 1


def test_a_fold_where_every_model_fails_leaves_nothing_to_rank():
    X, y = linear_data(60)
    assert (
        screen_regressors(
            X, y, walk_forward(60, 2), time_limit_s=30, max_rows=100, seed=0, candidates=[FailingRegressor]
        )
        == []
    )


def test_screening_writes_nothing_to_mlflow_even_when_a_tracking_uri_is_set(tmp_path, monkeypatch):
    from mlflow.tracking._tracking_service import utils as tracking_utils
    from mlflow.utils.autologging_utils import autologging_is_disabled

    # LazyRegressor also sets the process's tracking URI to the variable's value: undone after the test.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    X, y = linear_data(60)
    screen_regressors(
        X, y, walk_forward(60, 1), time_limit_s=30, max_rows=100, seed=0, candidates=[LinearRegression]
    )
    assert autologging_is_disabled("sklearn")
    assert list(tmp_path.glob("mlruns/*/*/meta.yaml")) == []  # no run was created


@pytest.mark.parametrize(("folds", "max_rows"), [([], 100), ([(np.arange(30), np.arange(30, 40))], 0)])
def test_screening_refuses_no_folds_or_no_rows(folds, max_rows):
    X, y = linear_data(40)
    with pytest.raises(ValueError):
        screen_regressors(
            X, y, folds, time_limit_s=30, max_rows=max_rows, seed=0, candidates=[LinearRegression]
        )


def screened(*families: str | None) -> list[ScreenedModel]:
    names = {"xgboost": "XGBRegressor", "linear": "Ridge", None: "KNeighborsRegressor"}
    return [ScreenedModel(names[f], 0.001 * (i + 1), 3, 1.0, f) for i, f in enumerate(families)]


@pytest.mark.parametrize(
    ("ranking", "top_k", "expected"),
    [
        ((None, "linear", "xgboost"), 2, ["linear", "xgboost"]),
        ((None, "xgboost", "linear"), 1, ["xgboost", "linear"]),  # the required ones by their best rank
        (("linear", "xgboost", "linear"), 3, ["linear", "xgboost"]),  # unique, best first
        ((None, None), 2, ["xgboost", "linear"]),  # neither screened (e.g. both failed): still tuned
        ((), 5, ["xgboost", "linear"]),
    ],
)
def test_families_to_tune_always_include_xgboost_and_linear(ranking, top_k, expected):
    assert families_to_tune(screened(*ranking), top_k) == expected


def test_families_to_tune_refuses_a_negative_top_k():
    with pytest.raises(ValueError):
        families_to_tune([], -1)


@pytest.mark.parametrize(
    ("name", "family"),
    [("XGBRegressor", "xgboost"), ("ElasticNet", "linear"), ("Ridge", "linear"), ("DummyRegressor", None)],
)
def test_model_family(name, family):
    assert model_family(name) == family
