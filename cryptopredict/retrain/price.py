"""The steps of a price retrain: dataset, first champion, screening, tuning, evaluation and the gate."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.ml import lifecycle, plots, pyfunc, registry
from cryptopredict.ml.dataset import (
    FEATURE_TIME,
    LAST_CLOSE,
    TARGET,
    TARGET_CLOSE,
    build_dataset,
)
from cryptopredict.ml.intervals import REGIMES
from cryptopredict.ml.screening import families_to_tune, screen_regressors
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
from cryptopredict.store.candles import sync_engine
from cryptopredict.store.inputs import read_stored_inputs
from cryptopredict.store.report import feature_psi
from cryptopredict.temporal_policies import NotEnoughData
from cryptopredict.topics import registered_model_name, split_market

logger = logging.getLogger(__name__)


def build_run(runs: RetrainRuns, request: TrainingInput, key: str, progress: Progress) -> TrainingRun:
    """Builds the dataset and starts the retrain's MLflow run (tagged with `key`) with the dataset,
    its identity and the request logged in it, so any worker can download the dataset."""
    config = IndicatorConfig()
    cross_venue: dict[str, str] = {split_market(market)[0]: market for market in request.cross_venue}
    engine = sync_engine(runs.settings.postgres)
    try:
        inputs = read_stored_inputs(engine, request.pair, request.interval_s, config, cross_venue)
    finally:
        engine.dispose()
    if inputs is None:
        raise NotEnoughData(f"only 0 usable rows: no candles of {request.pair}")
    progress("building")
    candles, sentiment = inputs.candles, inputs.sentiment
    dataset = build_dataset(
        candles,
        request.interval_s,
        request.lags,
        request.horizon_candles,
        inputs.indicators,
        sentiment,
        config,
        inputs.cross_venue,
        request.cross_venue_lags,
    )
    if len(dataset.frame) < request.min_rows:
        # More data arrives with time; a person need not act, so a later run may succeed.
        raise NotEnoughData(
            f"only {len(dataset.frame)} usable rows for {request.pair} ({len(candles)} candles, "
            f"dropped {dataset.dropped}); need {request.min_rows}",
        )
    progress("logging")
    return runs.start(
        request,
        key,
        dataset.frame,
        dataset.content_hash,
        dataset.features,
        dataset.dropped,
        {"indicator_source": inputs.indicator_source, "sentiment": sentiment is not None},
    )


def stale_champion_reason(model: Any) -> str | None:
    """Why a persistence champion must be replaced by a calibrated one (it has no interval, or it was
    logged by an older release in a form this one cannot load); None when it can stay."""
    try:
        spec = pyfunc.forecast_spec(model)
    except (TypeError, AttributeError, ValueError) as exc:
        return f"cannot be loaded as a forecast model ({exc})"
    if spec.family == "persistence" and spec.constant_quantiles is None:
        return "has no calibrated interval"
    return None


def ensure_champion(runs: RetrainRuns, step: StepInput) -> ModelRef:
    """The current champion. When there is none, the persistence model becomes the first one, its
    interval calibrated on the dataset's returns; a persistence champion without the adaptive
    interval (logged by an older release or with no data) is replaced by a calibrated one."""
    mlflow = runs.mlflow()
    request = step.request
    interval_s, horizon = request.interval_s, request.horizon_candles
    registered_model = registered_model_name(request.pair, interval_s, horizon)

    def log_persistence() -> tuple[str, str]:
        calibration = lifecycle.persistence_calibration(runs.load(step), horizon)
        return pyfunc.log_persistence(
            f"persistence-{registered_model}", interval_s, horizon, calibration, request.interval_coverage
        )

    client = mlflow.MlflowClient()
    with runs.target_lock(registered_model):
        return _ensure_calibrated_champion(client, registered_model, log_persistence)


def _ensure_calibrated_champion(
    client: Any, registered_model: str, log_persistence: Callable[[], tuple[str, str]]
) -> ModelRef:
    """ensure_champion's work, under the target's lock."""
    version = registry.ensure_persistence_champion(client, registered_model, log_persistence)
    try:
        stale = stale_champion_reason(
            pyfunc.load_forecast_model(f"models:/{registered_model}/{version.version}")
        )
    except (TypeError, ModuleNotFoundError, AttributeError, ValueError) as exc:  # an older release's
        stale = f"cannot be loaded as a forecast model ({exc})"
    if stale is not None:
        uri, run_id = log_persistence()
        replacement = registry.register_version(
            client, uri, registered_model, run_id, {"kind": "persistence"}
        )
        reason = f"replaces champion v{version.version}, which {stale}"
        registry.promote(client, registered_model, str(replacement.version), reason)
        logger.warning("%s: %s", registered_model, reason)
        version = replacement
    return registry.model_ref(version, registry.CHAMPION)


def screen(runs: RetrainRuns, step: StepInput, progress: Progress) -> ScreeningResult:
    request, features = step.request, step.dataset.features
    data = runs.load(step)
    screened = screen_regressors(
        data.fit[features],
        data.fit[TARGET].to_numpy(),
        data.folds,
        time_limit_s=request.screen_time_limit_s,
        max_rows=request.screen_max_rows,
        seed=request.seed,
        on_model=progress,
    )
    result = ScreeningResult(
        screened=[
            ScreenedCandidate(name=s.name, family=s.family, mean_mae=s.mean_mae, seconds=s.seconds)
            for s in screened
        ],
        families=families_to_tune(screened, request.screen_top_k),
    )
    runs.log_screening(step, result, {})
    return result


def tune_batch(runs: RetrainRuns, batch: TrialBatch, progress: Progress) -> int:
    """Adds one batch of trials to the family's study; returns the batch's complete trials."""
    return runs.tune_batch(batch, lambda fit: fit[TARGET].to_numpy(), progress)


def evaluate(runs: RetrainRuns, request_: EvaluateInput, progress: Progress) -> Evaluation:
    """Fits the best tuned family on everything before the test window, calibrates its interval on
    the walk-forward residuals, scores the test window against persistence and the champion, applies
    the gate and logs it all (model, metrics, plots) to the retrain's MLflow run."""
    step, request, features = request_.step, request_.step.request, request_.step.dataset.features
    best = min(request_.tuned, key=lambda t: t.cv_mae)
    data = runs.load(step)
    challenger = lifecycle.evaluate_challenger(
        best.family,
        best.params,
        data,
        features,
        request.interval_coverage,
        request.tune_max_rows,
        request.horizon_candles,
        runs.settings.model.quantile_levels,
    )
    progress("challenger evaluated")
    champion_predicted, unscored = champion_predictions(runs, request_.champion, data.test)
    decision = lifecycle.gate(
        challenger,
        champion_predicted,
        data.test,
        request.horizon_candles,
        request.dm_alpha,
        request.max_plausible_skill,
        request.min_skill,
    )
    if unscored is not None:  # compared with persistence only, and said so
        decision = replace(
            decision, reasons=[*decision.reasons, f"{unscored}: compared with persistence only"]
        )
    metrics = challenger.metrics.as_dict()
    intervals = {k: v for k, v in challenger.intervals.items() if np.isfinite(v)}
    mlflow = runs.mlflow()
    with mlflow.start_run(run_id=step.mlflow_run_id):
        mlflow.log_params(challenger_params(best))
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_metric("test_dm_pvalue_vs_persistence", decision.dm_pvalue_vs_persistence)
        if decision.dm_pvalue_vs_champion is not None:
            mlflow.log_metric("test_dm_pvalue_vs_champion", decision.dm_pvalue_vs_champion)
        mlflow.log_metrics({f"test_interval_{k}": v for k, v in intervals.items()})
        mlflow.log_dict(
            {
                "promote": decision.promote,
                "reasons": decision.reasons,
                "coverage_by_regime": {r: intervals.get(f"coverage_{r}") for r in REGIMES},
                "interval_score_vs_constant": intervals.get("interval_score_vs_constant"),
            },
            "decision.json",
        )
        log_plots(mlflow, step, data.fit, data.test, challenger, features)
        info = pyfunc.log_forecast_model(
            best.family,
            challenger.model,
            features,
            challenger.interval,
            interval_s=request.interval_s,
            horizon_candles=request.horizon_candles,
            calibration=challenger.calibration,
            coverage=request.interval_coverage,
            input_example=data.test[features].head(3),
        )
    return Evaluation(
        family=best.family,
        model_uri=info.model_uri,
        metrics=metrics,
        promote=decision.promote,
        reasons=decision.reasons,
        dm_pvalue_vs_persistence=decision.dm_pvalue_vs_persistence,
        dm_pvalue_vs_champion=decision.dm_pvalue_vs_champion,
        intervals=intervals,
    )


def champion_predictions(
    runs: RetrainRuns, champion: ModelRef, test: pd.DataFrame
) -> tuple[np.ndarray | None, str | None]:
    """The champion's log returns over the test window (None when the champion is persistence), or
    why it cannot be scored on this dataset (a format from before, features this dataset lacks)."""
    if champion.flavor == "persistence":
        return None, None
    runs.mlflow()
    try:
        model = pyfunc.load_forecast_model(champion.uri)
        return pyfunc.predict_frame(model, test)["log_return"].to_numpy(), None
    except (TypeError, ValueError) as exc:
        return None, f"champion v{champion.version} could not be scored on this dataset ({exc})"


def log_plots(
    mlflow: Any,
    step: StepInput,
    fit: pd.DataFrame,
    test: pd.DataFrame,
    challenger: lifecycle.ChallengerEvaluation,
    features: list[str],
) -> None:
    title = f"{step.dataset.pair} {step.dataset.interval_s}s h{step.dataset.horizon_candles}"
    close, actual = test[LAST_CLOSE].to_numpy(), test[TARGET_CLOSE].to_numpy()
    lower, upper = challenger.interval
    figures = {
        "predicted_vs_actual.png": plots.plot_predictions(
            test[FEATURE_TIME],
            actual,
            close * np.exp(challenger.predicted),
            close * np.exp(challenger.predicted + lower),
            close * np.exp(challenger.predicted + upper),
            f"{title}: test window",
        ),
        "residuals.png": plots.plot_residuals(
            test[FEATURE_TIME], challenger.errors, f"{title}: price errors"
        ),
        # The chart `cryptopredict report` draws from the live ledger, here over the test window
        # (a rolling window of 5% of it, at least 10 rows).
        "rolling_skill.png": plots.plot_rolling_skill(
            test[FEATURE_TIME],
            np.abs(challenger.errors),
            np.abs(challenger.persistence_errors),
            max(10, len(test) // 20),
            f"{title}: test window",
        ),
        "coverage_by_regime.png": plots.plot_coverage_by_regime(
            challenger.intervals, step.request.interval_coverage, f"{title}: test window"
        ),
        "feature_importance.png": plots.plot_feature_importance(
            features, feature_importances(challenger.model), f"{title}: feature importance"
        ),
    }
    # The drift chart `cryptopredict report` draws, here between the rows the model was fitted on and
    # the test window: how far the world had moved by the time it was evaluated.
    shift, skipped = feature_psi(fit[features], test[features])
    if skipped is None:
        figures["drift.png"] = plots.plot_drift(
            fit[features], test[features], shift, f"{title}: PSI, fitted rows vs test window"
        )
    with tempfile.TemporaryDirectory() as directory:
        for name, figure in figures.items():
            mlflow.log_artifact(str(plots.save_png(figure, Path(directory) / name)), "plots")


def feature_importances(model: Any) -> np.ndarray:
    """XGBoost's gain-based importances, or a linear model's absolute coefficients on standardised
    inputs (comparable across features because of the scaler)."""
    weights = model.feature_importances_ if hasattr(model, "feature_importances_") else model[-1].coef_
    importances: np.ndarray = np.abs(np.asarray(weights, dtype=float))  # XGBoost's are non-negative already
    return importances
