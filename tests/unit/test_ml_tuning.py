"""Tuning builds servable estimators from its search space, finds the regularisation a synthetic target
calls for, and adds batches of trials to one study, each resuming from its own trials instead of
starting over; the workflow splits a family's budget into those batches."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from sklearn.linear_model import ElasticNet, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBRegressor

from cryptopredict.ml.tuning import BATCH, best_of, fit_final, make_regressor, run_trials, search_space
from workflows.training import split_trials

pytestmark = pytest.mark.unit


def data(n: int, k: int, signal: float, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, k)), columns=[f"f{i}" for i in range(k)])
    y = signal * X.to_numpy() @ rng.normal(size=k) * 1e-3 + rng.normal(scale=1e-3, size=n)
    return X, y


def walk_forward(n: int, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    blocks = np.array_split(np.arange(n), n_folds + 1)
    return [(np.arange(block[0]), block) for block in blocks[1:]]


def test_make_regressor_builds_the_servable_shapes():
    booster = make_regressor("xgboost", {"max_depth": 3})
    assert isinstance(booster, XGBRegressor)
    assert booster.get_params()["n_jobs"] == 2 and booster.get_params()["tree_method"] == "hist"
    assert booster.get_params()["max_depth"] == 3 and booster.get_params()["random_state"] == 0
    ridge = make_regressor("linear", {"estimator": "ridge", "ridge_alpha": 10.0})
    assert isinstance(ridge, Pipeline) and isinstance(ridge.steps[0][1], StandardScaler)
    assert isinstance(ridge.steps[-1][1], Ridge) and ridge.steps[-1][1].alpha == 10.0
    net = make_regressor("linear", {"estimator": "elasticnet", "alpha": 1e-4, "l1_ratio": 0.5}).steps[-1][1]
    assert isinstance(net, ElasticNet) and (net.alpha, net.l1_ratio) == (1e-4, 0.5)
    for family, params in [("lightgbm", {}), ("linear", {"estimator": "lasso"})]:
        with pytest.raises(ValueError):
            make_regressor(family, params)


@pytest.mark.parametrize("family", ["xgboost", "linear"])
def test_every_point_of_the_search_space_is_a_valid_estimator(family):
    X, y = data(80, 3, signal=1.0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: float(fit_final(family, search_space(family, trial), X, y).predict(X)[0]), 8)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 8
    if family == "linear":
        assert {trial.params["estimator"] for trial in study.trials} == {"ridge", "elasticnet"}


def shrinkage(params: dict, X: pd.DataFrame, y: np.ndarray) -> float:
    """How far the tuned linear model pulls its coefficients towards zero: |coef| / |least squares coef|
    (0: the constant forecast, 1: no regularisation), whatever the alpha's scale."""
    tuned = fit_final("linear", params, X, y).steps[-1][1].coef_
    plain = fit_final("linear", {"estimator": "ridge", "ridge_alpha": 1e-9}, X, y).steps[-1][1].coef_
    return float(np.linalg.norm(tuned) / np.linalg.norm(plain))


def grid_best(X: pd.DataFrame, y: np.ndarray, folds: list) -> float:
    """The best mean validation MAE over a dense grid of Ridge alphas."""
    maes = []
    for alpha in np.logspace(-2, 8, 41):
        model = make_regressor("linear", {"estimator": "ridge", "ridge_alpha": alpha})
        maes.append(
            np.mean([np.mean(np.abs(model.fit(X.iloc[t], y[t]).predict(X.iloc[v]) - y[v])) for t, v in folds])
        )
    return float(min(maes))


@pytest.mark.parametrize(
    ("k", "signal", "regularised"),
    [
        (40, 0.0, lambda shrink: shrink < 0.1),  # 40 noise features, 60-180 training rows: the constant wins
        (5, 5.0, lambda shrink: shrink > 0.9),  # a clean linear signal: (nearly) least squares wins
    ],
)
def test_tuning_recovers_the_regularisation_the_data_calls_for(k, signal, regularised):
    X, y = data(240, k, signal=signal)
    folds = walk_forward(len(X), 3)
    storage = optuna.storages.InMemoryStorage()
    kwargs = dict(storage=storage, study_name="s", timeout_s=None, seed=0)
    assert run_trials("linear", X, y, folds, n_trials=25, **kwargs) == 25
    result = best_of("linear", storage=storage, study_name="s")
    assert regularised(shrinkage(result.best_params, X, y)), result.best_params
    assert result.best_value <= 1.02 * grid_best(X, y, folds)
    assert result.n_trials_completed == 25 and result.family == "linear" and result.study_name == "s"


def test_batches_share_one_study_and_a_retried_batch_runs_only_its_missing_trials(tmp_path):
    X, y = data(150, 4, signal=1.0)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    folds = walk_forward(len(X), 2)
    # A worker died in batch 1's first attempt: its trial stays RUNNING (no heartbeats in SQLite here).
    dead = optuna.create_study(storage=storage, study_name="shared").ask()
    dead.set_user_attr(BATCH, 1)
    calls = [(0, 4), (1, 3), (0, 4), (1, 3), (0, 6)]  # (batch, budget): retries, then a larger budget
    ran: list[list[int]] = [[] for _ in calls]
    for (batch, n_trials), numbers in zip(calls, ran, strict=True):
        held = run_trials(
            "linear",
            X,
            y,
            folds,
            storage=storage,
            study_name="shared",
            n_trials=n_trials,
            timeout_s=None,
            seed=7,
            batch=batch,
            on_trial=lambda number, mae, numbers=numbers: numbers.append(number),
        )
        assert held == n_trials
    assert [len(numbers) for numbers in ran] == [4, 3, 0, 0, 2]
    study = optuna.load_study(study_name="shared", storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(trial.number for trial in complete) == sorted(n for numbers in ran for n in numbers)
    assert sorted(trial.user_attrs[BATCH] for trial in complete) == [0] * 6 + [1] * 3
    # Each call's sampler drew fresh points instead of replaying another batch's or its own earlier ones.
    assert len({tuple(sorted(trial.params.items())) for trial in complete}) == 9
    result = best_of("linear", storage=storage, study_name="shared")
    assert result.best_value == study.best_value and result.best_params == study.best_params
    assert result.n_trials_completed == 9


def test_a_trial_budget_splits_into_near_equal_batches_none_empty():
    assert split_trials(10, 4) == [3, 3, 2, 2] and split_trials(3, 4) == [1, 1, 1]
    for trials in range(1, 30):
        for batches in range(1, 8):
            shares = split_trials(trials, batches)
            assert sum(shares) == trials and len(shares) == min(trials, batches)
            assert min(shares) >= 1 and max(shares) - min(shares) <= 1


@pytest.mark.parametrize(
    ("family", "n_folds", "n_trials"), [("svr", 1, 1), ("linear", 0, 1), ("linear", 1, 0)]
)
def test_unknown_family_no_folds_or_no_trials_are_refused(family, n_folds, n_trials):
    X, y = data(40, 2, signal=1.0)
    folds = walk_forward(40, n_folds) if n_folds else []
    storage = optuna.storages.InMemoryStorage()
    with pytest.raises(ValueError):
        run_trials(
            family, X, y, folds, storage=storage, study_name="x", n_trials=n_trials, timeout_s=None, seed=0
        )
