"""The steps of a volatility retrain. Registering and promoting are the price target's
(cryptopredict.retrain.decision), as is reading a study's best trial (RetrainRuns.best_tuned).

The steps are light next to the price ones (HAR is a least-squares fit, the inputs a handful of
columns), so they report progress at their milestones and per Optuna trial."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from cryptopredict.ml import lifecycle, pyfunc, registry
from cryptopredict.ml import volatility_target as vt
from cryptopredict.ml.volatility import FUTURE_VOL
from cryptopredict.models import ModelRef
from cryptopredict.models.training import (
    EvaluateInput,
    Evaluation,
    ScreenedCandidate,
    ScreeningResult,
    StepInput,
    TrainingInput,
    TrainingRun,
    TrialBatch,
)
from cryptopredict.retrain.runs import Progress, RetrainRuns, challenger_params
from cryptopredict.store.candles import read_candles, sync_engine
from cryptopredict.temporal_policies import NotEnoughData
from cryptopredict.topics import registered_model_name

NAIVE_REASON = "first champion: naive trailing-mean volatility"


def volatility_model_name(request: TrainingInput) -> str:
    return registered_model_name(
        request.pair, request.interval_s, request.horizon_candles, target="volatility"
    )


def build_run(runs: RetrainRuns, request: TrainingInput, key: str, progress: Progress) -> TrainingRun:
    """The volatility dataset (1-minute realized volatility when the store covers the history, else
    the target's own absolute returns) and the retrain's MLflow run holding it, tagged with `key`."""
    engine = sync_engine(runs.settings.postgres)
    try:
        candles = read_candles(engine, request.pair, request.interval_s)
        minutes = read_candles(engine, request.pair, 60) if request.interval_s > 60 else None
    finally:
        engine.dispose()
    if candles.empty:
        raise NotEnoughData(f"only 0 usable rows: no candles of {request.pair}")
    progress("candles read")
    dataset = vt.build_volatility_dataset(candles, request.interval_s, request.horizon_candles, minutes)
    if len(dataset.frame) < request.min_rows:
        raise NotEnoughData(
            f"only {len(dataset.frame)} usable rows for the volatility of {request.pair} "
            f"({len(candles)} candles, dropped {dataset.dropped}); need {request.min_rows}",
        )
    return runs.start(
        request,
        key,
        dataset.frame,
        dataset.content_hash,
        dataset.features,
        dataset.dropped,
        {"indicator_source": "none", "sentiment": False, "volatility_estimator": dataset.estimator},
    )


def ensure_champion(runs: RetrainRuns, step: StepInput) -> ModelRef:
    """The volatility model's champion; the naive trailing mean becomes the first one."""
    request, estimator = step.request, step.dataset.volatility_estimator
    if estimator is None:
        raise ValueError("a volatility dataset names its estimator; this one is a price dataset")
    name = volatility_model_name(request)

    def log_naive() -> tuple[str, str]:
        return pyfunc.log_naive_volatility(
            f"naive-{name}",
            vt.naive_feature(request.horizon_candles),
            request.interval_s,
            request.horizon_candles,
            estimator,
        )

    client = runs.mlflow().MlflowClient()
    with runs.target_lock(name):
        version = registry.ensure_persistence_champion(
            client, name, log_naive, kind="naive", reason=NAIVE_REASON
        )
    return registry.model_ref(version, registry.CHAMPION)


def screen(runs: RetrainRuns, step: StepInput, progress: Progress) -> ScreeningResult:
    """The walk-forward log-MAE of the untuned families (naive, HAR). LazyPredict, which ranks dozens of
    price regressors to pick the servable families worth tuning, has nothing to choose here: the three
    volatility families are fixed and all evaluated; XGBoost is tuned next."""
    request, features = step.request, step.dataset.features
    data = runs.load(step)
    folds = lifecycle.recent_rows(data.folds, request.tune_max_rows)
    screened = []
    for family in ("naive", "har"):
        started = time.perf_counter()
        loss = vt.cv_log_mae(family, {}, data.fit, features, folds, request.horizon_candles)
        seconds = time.perf_counter() - started
        screened.append(ScreenedCandidate(name=family, family=family, mean_mae=loss, seconds=seconds))
        progress(f"{family}: {loss:.4g}")
    result = ScreeningResult(screened=screened, families=list(vt.TUNED_FAMILIES))
    runs.log_screening(step, result, {f"cv_log_mae_{s.name}": s.mean_mae for s in screened})
    return result


def tune_batch(runs: RetrainRuns, batch: TrialBatch, progress: Progress) -> int:
    """One batch of XGBoost trials on the log inputs and log target: the study's objective, the mean
    validation MAE of the log, is the gate's loss."""
    return runs.tune_batch(batch, vt.log_target, progress)


def evaluate(runs: RetrainRuns, request_: EvaluateInput, progress: Progress) -> Evaluation:
    """Fits HAR and the tuned XGBoost on everything before the test window, scores both there, takes
    the one with the lower walk-forward loss as the challenger (the test window chooses nothing),
    gates it against the naive forecast and the champion and logs it all to the retrain's run."""
    step, request = request_.step, request_.step.request
    features, horizon = step.dataset.features, request.horizon_candles
    data = runs.load(step)
    test = data.test
    actual = test[FUTURE_VOL].to_numpy(dtype=float)
    naive = test[vt.NAIVE_VOL].to_numpy(dtype=float)
    fitted: dict[str, Any] = {}
    forecasts: dict[str, np.ndarray] = {}
    for tuned in request_.tuned:
        fitted[tuned.family] = vt.fit_family(tuned.family, tuned.params, data.fit, features)
        forecasts[tuned.family] = vt.predict_family(
            tuned.family, fitted[tuned.family], test, features, horizon
        )
        progress(f"{tuned.family} fitted")
    best = min(request_.tuned, key=lambda t: t.cv_mae)
    forecast = forecasts[best.family]
    champion, unscored = champion_forecast(runs, request_.champion, test, step.dataset.volatility_estimator)
    decision = vt.volatility_gate(
        challenger=forecast,
        naive=naive,
        champion=champion,
        actual=actual,
        horizon_steps=horizon,
        alpha=request.dm_alpha,
    )
    reasons = decision.reasons + ([f"{unscored}: compared with the naive forecast only"] if unscored else [])
    metrics = vt.volatility_metrics(forecast, naive, actual, decision.dm_pvalue_vs_persistence)
    if decision.dm_pvalue_vs_champion is not None:
        metrics["vol_dm_pvalue_vs_champion"] = decision.dm_pvalue_vs_champion
    for family, values in forecasts.items():
        metrics[f"vol_{family}_log_mae"] = vt.log_mae(values, actual)
    metrics = {k: v for k, v in metrics.items() if np.isfinite(v)}  # a refused forecast has no loss
    mlflow = runs.mlflow()
    with mlflow.start_run(run_id=step.mlflow_run_id):
        mlflow.log_params(challenger_params(best))
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_dict(
            {"promote": decision.promote, "reasons": reasons, "metrics": metrics}, "decision.json"
        )
        info = pyfunc.log_volatility_model(
            best.family,
            fitted[best.family],
            features,
            interval_s=request.interval_s,
            horizon_candles=horizon,
            estimator=str(step.dataset.volatility_estimator),
            input_example=test[features].head(3),
        )
    return Evaluation(
        family=best.family,
        model_uri=info.model_uri,
        metrics=metrics,
        promote=decision.promote,
        reasons=reasons,
        dm_pvalue_vs_persistence=decision.dm_pvalue_vs_persistence,
        dm_pvalue_vs_champion=decision.dm_pvalue_vs_champion,
    )


def champion_forecast(
    runs: RetrainRuns, champion: ModelRef, test: pd.DataFrame, estimator: str | None
) -> tuple[np.ndarray | None, str | None]:
    """The champion's forecasts over the test window (None when it is the naive model: beating the
    naive forecast is beating it), or why it cannot be compared on this dataset."""
    if champion.flavor == "naive":
        return None, None
    runs.mlflow()
    try:
        model = pyfunc.load_forecast_model(champion.uri)
        spec = pyfunc.forecast_spec(model)
        if spec.estimator != estimator:
            return None, f"champion v{champion.version} forecasts {spec.estimator}, this dataset {estimator}"
        forecast = pyfunc.predict_frame(model, test)["volatility"].to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        return None, f"champion v{champion.version} could not be scored on this dataset ({exc})"
    if (reason := vt.invalid_forecast_reason(forecast, "the champion")) is not None:
        return None, reason
    return forecast, None
