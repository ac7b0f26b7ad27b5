"""Which kinds of regressor are worth tuning: every scikit-learn regressor (and XGBoost) fitted by
lazypredict's LazyRegressor on each walk-forward fold, ranked by the mean validation MAE of the log
return.

Screening only picks families. A model is served only if it can be stored without pickle, so each
screened model carries the family it belongs to in serving ("xgboost": a booster saved as UBJ,
"linear": coefficients in JSON) or None; `families_to_tune` turns the ranking into the families the
tuner works on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error

logger = logging.getLogger(__name__)

Folds = Sequence[tuple[np.ndarray, np.ndarray]]

# Families that have a pickle-free serving format; the issue demands that both are tuned.
SERVABLE_FAMILIES: tuple[str, ...] = ("xgboost", "linear")

# Fit + predict of one model as LazyRegressor runs it (mean imputer + StandardScaler in front, default
# parameters, random log-return-sized target ~1e-3), 20,000 training rows x 30 float features, 5,000 rows
# predicted, on this 2-core machine (shared with other jobs, so +-2x):
#   NuSVR > 240 s (stopped); KernelRidge 2.8 s at 2,000 rows and 8.8 s at 4,000 (cubic in rows: tens of
#   minutes and a 3.2 GB kernel matrix at 20,000); GaussianProcessRegressor 13 s at 2,000 and 137 s at
#   4,000 (cubic, same matrix: hours at 20,000); QuantileRegressor 10 s (a linear program that grows
#   faster than the rows); SVR 0.1 s, but only because its epsilon of 0.1 exceeds every residual of a
#   1e-3 target, so it fits nothing and predicts a constant; on a scaled target it is quadratic-to-cubic
#   like NuSVR.
# The others, for comparison: RandomForestRegressor 36-38 s (one thread by default),
# GradientBoostingRegressor 17 s, ExtraTreesRegressor 12 s, XGBRegressor 0.6 s alone and 5-9 s next to
# other jobs, AdaBoostRegressor 5 s, BaggingRegressor 4-5 s, ElasticNetCV 2.3 s, LinearSVR 2.1 s,
# LassoCV 0.7-4 s, MLPRegressor 1 s (the tiny target meets its tolerance at once), every other one under
# 2 s; GammaRegressor and PoissonRegressor fail at once (negative targets) and are dropped after the first
# fold. A per-model time limit cannot interrupt a fit (see screen_regressors), so the models that would
# take minutes to hours on the very first fold are never tried; RandomForestRegressor stays: its worst
# case is one fit of well under a minute.
SLOW_KERNEL_MODELS: frozenset[str] = frozenset(
    {"SVR", "NuSVR", "KernelRidge", "GaussianProcessRegressor", "QuantileRegressor"}
)

# Regressors whose fitted form is `scaled features @ coef + intercept` (lazypredict's imputer and scaler
# are affine too), i.e. what the JSON linear format stores.
_LINEAR_MODELS: frozenset[str] = frozenset(
    {
        "BayesianRidge",
        "ElasticNet",
        "ElasticNetCV",
        "HuberRegressor",
        "Lars",
        "LarsCV",
        "Lasso",
        "LassoCV",
        "LassoLars",
        "LassoLarsCV",
        "LassoLarsIC",
        "LinearRegression",
        "LinearSVR",
        "OrthogonalMatchingPursuit",
        "OrthogonalMatchingPursuitCV",
        "PassiveAggressiveRegressor",
        "RANSACRegressor",
        "Ridge",
        "RidgeCV",
        "SGDRegressor",
        "TransformedTargetRegressor",
        "TweedieRegressor",
    }
)


@dataclass(frozen=True)
class ScreenedModel:
    name: str  # the regressor's class name, as lazypredict reports it
    mean_mae: float  # MAE of the log return, averaged over the folds
    folds: int  # how many folds the mean is over: every fold, or the model is not reported
    seconds: float  # fit + predict time summed over the folds
    family: str | None  # serving family ("xgboost", "linear"), None when it has no pickle-free format


def model_family(name: str) -> str | None:
    """The pickle-free serving family a screened regressor belongs to, if any."""
    if name == "XGBRegressor":
        return "xgboost"
    return "linear" if name in _LINEAR_MODELS else None


def default_candidates() -> list[type[Any]]:
    """lazypredict's regressors (its own exclusions applied) minus the slow ones measured above.

    lazypredict is imported here, not at module level: the import takes several seconds (it imports
    mlflow and scans every scikit-learn estimator), which nothing else in this module needs."""
    from lazypredict.Supervised import REGRESSORS

    return [cls for name, cls in REGRESSORS if name not in SLOW_KERNEL_MODELS]


def screen_regressors(
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    folds: Folds,
    *,
    time_limit_s: float,
    max_rows: int,
    seed: int,
    on_model: Callable[[str], None] | None = None,
    candidates: Sequence[type[Any]] | None = None,
) -> list[ScreenedModel]:
    """Rank regressors by mean validation MAE of y over `folds`, best first.

    `folds` are (train, validation) positional row indices into the time-ordered X and y. Each fold's
    training rows are cut to the `max_rows` most recent ones (the largest positions), not a random
    sample: for a time series the newest regime is the one the model will be used in, and a random
    subset would mix in old rows while throwing away new ones. Validation rows are kept whole.

    `time_limit_s` bounds each model's fit on a fold. LazyRegressor's own `timeout` cannot interrupt a
    fit: it measures the fit afterwards and drops the model from that fold's scores (its `time_limit`
    helper relies on SIGALRM, which only works in the main thread, and Temporal runs synchronous
    activities in worker threads). So each fold gets its own LazyRegressor restricted to the models
    that passed every earlier fold: a model that is too slow or fails costs at most one fit and is not
    reported, since a mean over fewer folds is not comparable with the others. SLOW_KERNEL_MODELS keeps
    the models whose single fit would already be far too long out of the first fold.

    `candidates` (regressor classes, named by their class name) defaults to `default_candidates()`.
    `on_model` is called with a model's name each time it finishes or fails on a fold: frequent enough
    to serve as a Temporal heartbeat, except during a single over-long fit.
    """
    if not folds:
        raise ValueError("screening needs at least one fold")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    from lazypredict.Supervised import LazyRegressor

    targets = np.asarray(y, dtype=float)
    alive = list(default_candidates() if candidates is None else candidates)
    maes: dict[str, list[float]] = {cls.__name__: [] for cls in alive}
    seconds: dict[str, float] = dict.fromkeys(maes, 0.0)

    def progress(name: str, current: int, total: int, metrics: dict[str, Any] | None) -> None:
        if on_model is not None:
            on_model(name)

    for fold, (train, validation) in enumerate(folds):
        if not alive:
            break
        recent = np.sort(np.asarray(train))[-max_rows:]
        valid = np.asarray(validation)
        started = time.monotonic()
        lazy = LazyRegressor(
            verbose=0,  # no tqdm bar, no per-model log lines
            ignore_warnings=True,
            custom_metric=mean_absolute_error,
            random_state=seed,
            regressors=alive,
            timeout=time_limit_s,
            progress_callback=progress,
        )
        _without_mlflow(lazy)
        # fit returns (scores, predictions) whatever its annotation says; scores are indexed by model name
        scores = cast(
            "tuple[pd.DataFrame, pd.DataFrame]",
            lazy.fit(X.iloc[recent], X.iloc[valid], targets[recent], targets[valid]),
        )[0]
        finished = {  # (MAE, seconds) by model; no frame at all when every model failed or ran too long
            str(name): (float(row[mean_absolute_error.__name__]), float(row["Time Taken"]))
            for name, row in scores.iterrows()
        }
        for cls in alive:
            name = cls.__name__
            if name in finished:
                maes[name].append(finished[name][0])
                seconds[name] += finished[name][1]
            elif name in lazy.errors:
                logger.info("screening: %s failed on fold %d: %s", name, fold, lazy.errors[name])
            else:
                logger.info("screening: %s exceeded %.1f s on fold %d", name, time_limit_s, fold)
        alive = [cls for cls in alive if cls.__name__ in finished]
        logger.info(
            "screening: fold %d (%d train rows) took %.1f s, %d models left",
            fold,
            len(recent),
            time.monotonic() - started,
            len(alive),
        )

    screened = [
        ScreenedModel(
            name=cls.__name__,
            mean_mae=float(np.mean(maes[cls.__name__])),
            folds=len(maes[cls.__name__]),
            seconds=seconds[cls.__name__],
            family=model_family(cls.__name__),
        )
        for cls in alive
    ]
    return sorted(screened, key=lambda model: (model.mean_mae, model.name))


def _without_mlflow(lazy: Any) -> None:
    """LazyRegressor's constructor turns on `mlflow.autolog()` for the whole process when
    MLFLOW_TRACKING_URI is set, and `fit` would then log and register every screened model. Screening
    writes nothing to MLflow and must not leave autologging on for the worker's real training runs."""
    if lazy.mlflow_enabled:
        import mlflow

        mlflow.autolog(disable=True)
        lazy.mlflow_enabled = False


def families_to_tune(screened: Sequence[ScreenedModel], top_k: int) -> list[str]:
    """The serving families to tune, in order: those of the `top_k` best screened models (best first),
    then every family in SERVABLE_FAMILIES not among them, by its best rank in the whole screening
    (unscreened ones last). The issue demands that XGBoost and a linear model are always tuned, so both
    are in the list whatever the screening says; `top_k` decides their order, and would admit another
    family should one gain a pickle-free format."""
    if top_k < 0:
        raise ValueError(f"top_k must not be negative, got {top_k}")
    top = [model.family for model in screened[:top_k] if model.family is not None]
    required_by_rank = [model.family for model in screened if model.family in SERVABLE_FAMILIES]
    return list(dict.fromkeys([*top, *required_by_rank, *SERVABLE_FAMILIES]))
