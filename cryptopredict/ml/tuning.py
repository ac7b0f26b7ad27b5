"""Hyper-parameter tuning of the servable families with Optuna, on walk-forward folds.

A study lives in a storage shared by all workers (PostgreSQL in the stack) and is found again by name.
A family's trials run in batches (activities any worker may take) that add trials to the one study, each
until it holds its budget of complete trials of that batch, so a batch that is killed and retried
resumes instead of starting over and the study ends with exactly the requested number; `best_of` then
reads the best of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet, Ridge
from sklearn.metrics import mean_absolute_error
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from cryptopredict.ml.screening import SERVABLE_FAMILIES

Folds = Sequence[tuple[np.ndarray, np.ndarray]]

XGBOOST_SEED = 0  # fixed: the same params must give the same booster in tuning and in the final fit

# A trial whose worker has not written a heartbeat for GRACE_PERIOD_S is dead: the next trial started
# on the study (by any worker) marks it FAIL. Heartbeats are written by a thread, so they keep coming
# during a long fit; two minutes leaves room for a slow database.
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120

BATCH = "batch"  # the user attribute of a trial that names the batch (activity) that ran it


@dataclass(frozen=True)
class TuningResult:
    family: str
    best_params: dict[str, Any]  # the search_space() output of the best trial: make_regressor's input
    best_value: float  # its mean validation MAE of the log return over the folds
    n_trials_completed: int  # complete trials in the study, by every worker and earlier run
    study_name: str


def make_regressor(family: str, params: dict[str, Any]) -> BaseEstimator:
    """An unfitted estimator of `family` in the shape its serving format stores.

    "xgboost": an XGBRegressor (saved as UBJ) on two threads with a fixed seed and the hist method.
    "linear": StandardScaler -> Ridge or ElasticNet (`params["estimator"]`), stored as scaler statistics
    and coefficients in JSON. Ridge has its own alpha ("ridge_alpha"): it penalises the summed squared
    error, ElasticNet the mean one, so the same alpha would mean a penalty ~n_rows times weaker."""
    if family == "xgboost":
        from xgboost import XGBRegressor

        return XGBRegressor(n_jobs=2, random_state=XGBOOST_SEED, tree_method="hist", **params)
    if family == "linear":
        regressor: BaseEstimator
        if params["estimator"] == "ridge":
            regressor = Ridge(alpha=params["ridge_alpha"])
        elif params["estimator"] == "elasticnet":
            regressor = ElasticNet(alpha=params["alpha"], l1_ratio=params["l1_ratio"])
        else:
            raise ValueError(f"unknown linear estimator {params['estimator']!r}")
        return Pipeline([("scaler", StandardScaler()), ("regressor", regressor)])
    raise ValueError(f"unknown family {family!r}; expected one of {SERVABLE_FAMILIES}")


def search_space(family: str, trial: optuna.Trial) -> dict[str, Any]:
    """The parameters of one trial, suggested by `trial`; the returned dict is make_regressor's input.

    The linear family chooses between plain Ridge and ElasticNet: a continuous l1_ratio never lands on
    exactly 0, and ElasticNet's coordinate descent is a poor ridge solver anyway. The penalties act on
    coefficients of the target's size (a standardised feature moves a ~1e-3 log return by less than
    that), so only the low end of ElasticNet's 1e-6..1e2 keeps any coefficient and the rest is the
    constant forecast, itself a fair contender for returns. Ridge penalises the summed loss, so its range
    sits ~n_rows higher: 1e-2..1e8 reaches from least squares to the constant for up to ~1e6 rows
    of standardised features. XGBoost's reg_alpha is compared with sums of
    residuals (rows x ~1e-3), hence its low range."""
    if family == "xgboost":
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 600, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "learning_rate": trial.suggest_float("learning_rate", 1e-3, 0.3, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 100.0, log=True),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 100.0, log=True),
            "reg_alpha": trial.suggest_float("reg_alpha", 1e-8, 1.0, log=True),
        }
    if family == "linear":
        estimator = trial.suggest_categorical("estimator", ["ridge", "elasticnet"])
        if estimator == "ridge":
            return {
                "estimator": estimator,
                "ridge_alpha": trial.suggest_float("ridge_alpha", 1e-2, 1e8, log=True),
            }
        return {
            "estimator": estimator,
            "alpha": trial.suggest_float("alpha", 1e-6, 1e2, log=True),
            "l1_ratio": trial.suggest_float("l1_ratio", 0.0, 1.0),
        }
    raise ValueError(f"unknown family {family!r}; expected one of {SERVABLE_FAMILIES}")


def optuna_storage(
    url: str, *, heartbeat_interval_s: int = HEARTBEAT_INTERVAL_S, grace_period_s: int = GRACE_PERIOD_S
) -> optuna.storages.RDBStorage:
    """An RDB storage (e.g. postgresql+psycopg://user:pw@127.0.0.1:5433/dbname) with heartbeats, so the
    RUNNING trial of a killed worker is failed once it has been silent for `grace_period_s`.

    Stale trials are failed, not retried (no RetryHeartbeatStaleTrialCallback): a failed trial neither
    counts towards the budget of complete trials nor informs the sampler, so the study simply runs one
    more trial, while re-queueing the same parameters would rerun them forever if they were what
    killed the worker (say, by memory)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval is "experimental"
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=heartbeat_interval_s,
            grace_period=grace_period_s,
        )


def run_trials(
    family: str,
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    folds: Folds,
    *,
    storage: str | optuna.storages.BaseStorage,
    study_name: str,
    n_trials: int,
    timeout_s: float | None,
    seed: int,
    batch: int = 0,
    on_trial: Callable[[int, float], None] | None = None,
) -> int:
    """Add trials of `family` to the study `study_name` until it holds `n_trials` complete trials of
    `batch`, or `timeout_s` passes; returns how many complete trials of `batch` it holds.

    The objective is the mean validation MAE of y over `folds` ((train, validation) positional indices),
    each fold fitted on its training rows. After each fold the running mean is reported and a
    MedianPruner may stop a trial that is already worse than the median of the complete ones.

    Batches: several calls (activities on any worker) share one study, each with its own `batch` number
    and budget. Every trial records its batch (user attribute "batch") and a call counts only the
    complete trials of its own batch, so the study ends with exactly the sum of the budgets however the
    calls interleave, and a batch retried after its worker died runs only the trials it is missing
    (pruned, failed and RUNNING trials left by a dead worker do not count). `storage` is a URL (opened
    with `optuna_storage`, i.e. with heartbeats, so a trial left RUNNING by a dead worker is failed and
    never blocks) or a storage object. The sampler sees the trials of every batch.

    The TPE sampler is seeded from `seed`, `batch` and the number of trials the batch has already
    started: its random start-up draws are reproducible whatever the other batches do, batches started at
    the same instant draw different points, and a resumed batch does not replay the draws it tried.

    `on_trial(number, mae)` is called after each complete trial of this call (a Temporal heartbeat).
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if family not in SERVABLE_FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {SERVABLE_FAMILIES}")
    if not folds:
        raise ValueError("tuning needs at least one fold")
    targets = np.asarray(y, dtype=float)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(BATCH, batch)
        params = search_space(family, trial)
        maes: list[float] = []
        for step, (train, validation) in enumerate(folds):
            with warnings.catch_warnings():
                # An ElasticNet that stops short of convergence is still judged by its validation MAE;
                # the warning, whose text carries the duality gap, would print anew on every fold.
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = make_regressor(family, params).fit(X.iloc[train], targets[train])
            maes.append(float(mean_absolute_error(targets[validation], model.predict(X.iloc[validation]))))
            trial.report(float(np.mean(maes)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(maes))

    # Optuna logs a line per trial at INFO. Its verbosity is process-wide, so it is not restored: that
    # would race with the batches other threads of the worker run at the same time.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _opened(storage) as opened:
        study = optuna.create_study(
            storage=opened,
            study_name=study_name,
            direction="minimize",
            pruner=optuna.pruners.MedianPruner(),
            load_if_exists=True,
        )
        missing = n_trials - _complete(study, batch)

        def after(study: optuna.Study, trial: FrozenTrial) -> None:
            nonlocal missing
            if trial.state == TrialState.COMPLETE and trial.value is not None:
                missing -= 1
                if on_trial is not None:
                    on_trial(trial.number, trial.value)
                if missing <= 0:
                    study.stop()

        if missing > 0:
            started = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get(BATCH) == batch)
            study.sampler = optuna.samplers.TPESampler(seed=hash((seed, batch, started)) % 2**32)
            study.optimize(objective, timeout=timeout_s, callbacks=[after])
        return _complete(study, batch)


def best_of(family: str, *, storage: str | optuna.storages.BaseStorage, study_name: str) -> TuningResult:
    """The best complete trial of the study `study_name` (every batch's), once its trials have run."""
    with _opened(storage) as opened:
        study = optuna.load_study(study_name=study_name, storage=opened)
        completed = _complete(study)
        if completed == 0:
            raise RuntimeError(f"study {study_name!r} has no complete trial")
        best = study.best_trial
    assert best.value is not None  # a complete single-objective trial has a value
    return TuningResult(
        family=family,
        best_params=dict(best.params),
        best_value=best.value,
        n_trials_completed=completed,
        study_name=study_name,
    )


@contextmanager
def _opened(storage: str | optuna.storages.BaseStorage) -> Iterator[optuna.storages.BaseStorage]:
    """`storage`, opened with `optuna_storage` and closed afterwards when it is a URL."""
    if not isinstance(storage, str):
        yield storage
        return
    owned = optuna_storage(storage)
    try:
        yield owned
    finally:
        owned.engine.dispose()


def _complete(study: optuna.Study, batch: int | None = None) -> int:
    """Complete trials of the study, or of one batch of it."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sum(1 for t in trials if batch is None or t.user_attrs.get(BATCH) == batch)


def fit_final(
    family: str, params: dict[str, Any], X: pd.DataFrame, y: pd.Series | np.ndarray
) -> BaseEstimator:
    """`make_regressor(family, params)` fitted on all of X, y: the model to evaluate on the test window
    and to serve."""
    return make_regressor(family, params).fit(X, np.asarray(y, dtype=float))
