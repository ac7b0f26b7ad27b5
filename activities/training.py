"""Training activities: thin adapters from Temporal to the feature store, MLflow and cryptopredict.ml.

CPU-heavy steps are sync activities on the worker's thread pool. They heartbeat from a side thread
while they compute (one XGBoost fit can outlast the heartbeat timeout), so a killed worker is noticed
within the timeout and the step is retried elsewhere; a tuning batch resumes its Optuna study from
PostgreSQL. Nothing passes between steps through a local disk: the dataset is an artifact of the
retrain's MLflow run, downloaded by each worker once into its own `local_dir`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from temporalio import activity
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.heartbeat import heartbeating
from cryptopredict import metrics, workflow_types
from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.ml import lifecycle, plots, pyfunc, registry
from cryptopredict.ml.dataset import (
    FEATURE_TIME,
    LAST_CLOSE,
    TARGET,
    TARGET_CLOSE,
    build_dataset,
    indicator_values,
)
from cryptopredict.ml.intervals import REGIMES
from cryptopredict.ml.screening import families_to_tune, screen_regressors
from cryptopredict.ml.tuning import best_of, run_trials
from cryptopredict.model_events import publish_model_event
from cryptopredict.models import ModelEvent, ModelRef
from cryptopredict.models.training import (
    DatasetSummary,
    EvaluateInput,
    Evaluation,
    PromoteInput,
    RegisterInput,
    ScreenedCandidate,
    ScreeningResult,
    StepInput,
    TrainingInput,
    TrainingRun,
    TrialBatch,
    TunedCandidate,
    TuneInput,
)
from cryptopredict.settings import Settings
from cryptopredict.store.candles import read_candles, read_indicator_values, sync_engine
from cryptopredict.store.news import scored_sentiment_at_closes
from cryptopredict.store.report import feature_psi
from cryptopredict.temporal_policies import NotEnoughData
from cryptopredict.topics import registered_model_name, training_workflow_id

logger = logging.getLogger(__name__)


def horizon_of(request: TrainingInput) -> timedelta:
    return timedelta(seconds=request.interval_s * request.horizon_candles)


def min_train_rows(request: TrainingInput) -> int:
    return max(50, request.min_rows // (request.folds + 2))


class RetrainSteps:
    """What every retrain's activities share: MLflow, and the dataset of the retrain's run, split."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _mlflow(self) -> Any:
        import mlflow

        mlflow.set_tracking_uri(self.settings.mlflow.tracking_uri)
        mlflow.set_experiment(self.settings.mlflow.experiment)
        return mlflow

    def _load(self, step: StepInput) -> lifecycle.Split:
        frame = pd.read_parquet(self._dataset_file(step.dataset))
        request = step.request
        return lifecycle.split(
            frame, request.test_fraction, horizon_of(request), request.folds, min_train_rows(request)
        )

    def _dataset_file(self, dataset: DatasetSummary) -> Path:
        """The dataset's parquet in this worker's `local_dir`, downloaded from MLflow the first time."""
        path = self.settings.local_dir.resolve() / "datasets" / f"{dataset.content_hash}.parquet"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            mlflow = self._mlflow()
            with tempfile.TemporaryDirectory(dir=path.parent) as directory:
                downloaded = mlflow.artifacts.download_artifacts(artifact_uri=dataset.uri, dst_path=directory)
                os.replace(downloaded, path)  # atomic: concurrent steps on this worker never see half a file
        return path

    def _start_run(
        self,
        request: TrainingInput,
        key: str,
        frame: pd.DataFrame,
        content_hash: str,
        features: list[str],
        dropped: dict[str, int],
        described: dict[str, Any],
    ) -> TrainingRun:
        """The retrain's MLflow run, tagged with `key`, holding the request, the dataset's identity and
        the dataset itself (a parquet artifact, so every worker reads it through the tracking server).
        `described`: the target's own DatasetSummary fields, also logged as `dataset_<name>` params."""
        mlflow = self._mlflow()
        for stale in mlflow.search_runs(filter_string=f"tags.temporal_run = '{key}'", output_format="list"):
            # An earlier attempt died before returning it; its dataset may differ from this one.
            mlflow.delete_run(stale.info.run_id)
        name = f"{content_hash}.parquet"
        kind = "" if request.target == "price" else f"{request.target}-"
        with (
            # Tagged as it is made: an attempt that dies at once still leaves a run the retry finds.
            mlflow.start_run(
                run_name=f"retrain-{kind}{request.pair}-{request.interval_s}s-h{request.horizon_candles}",
                tags={
                    "temporal_run": key,
                    "reason": request.reason,
                    "pair": request.pair,
                    "target": request.target,
                },
            ) as run,
            tempfile.TemporaryDirectory() as directory,
        ):
            summary = DatasetSummary(
                uri=mlflow.get_artifact_uri(f"dataset/{name}"),
                pair=request.pair,
                interval_s=request.interval_s,
                horizon_candles=request.horizon_candles,
                rows=len(frame),
                dropped=dropped,
                features=features,
                start=frame[FEATURE_TIME].iloc[0].to_pydatetime(),
                end=frame[FEATURE_TIME].iloc[-1].to_pydatetime(),
                content_hash=content_hash,
                **described,
            )
            mlflow.log_params(
                {
                    **{k: v for k, v in request.model_dump().items() if k != "reason"},
                    "dataset_hash": content_hash,
                    "dataset_rows": summary.rows,
                    "dataset_start": summary.start.isoformat(),
                    "dataset_end": summary.end.isoformat(),
                    **{f"dataset_{field}": value for field, value in described.items()},
                    **{f"dataset_dropped_{reason}": n for reason, n in summary.dropped.items()},
                }
            )
            mlflow.log_text("\n".join(summary.features), "dataset/features.txt")
            frame.to_parquet(Path(directory) / name, index=False)
            mlflow.log_artifact(str(Path(directory) / name), "dataset")
        return TrainingRun(mlflow_run_id=run.info.run_id, dataset=summary)


class TrainingActivities(RetrainSteps):
    @activity.defn(name="start_scheduled_retrain")
    async def start_scheduled_retrain(self, request: TrainingInput) -> str:
        """Starts the target's TrainingWorkflow under its well-known id on this worker's queue, unless a
        retrain of the target runs already (then this scheduled one is skipped). Safe to retry: a run this
        activity started shows as the running one."""
        workflow_id = training_workflow_id(
            request.pair, request.interval_s, request.horizon_candles, target=request.target
        )
        try:
            handle = await activity.client().start_workflow(
                workflow_types.TRAINING, request, id=workflow_id, task_queue=activity.info().task_queue
            )
        except WorkflowAlreadyStartedError:
            return f"skipped: {workflow_id} is running already"
        return f"started {workflow_id} (run {handle.result_run_id})"

    @activity.defn(name="build_training_dataset")
    def build_training_dataset(self, request: TrainingInput, key: str) -> TrainingRun:
        """Builds the dataset and starts the retrain's MLflow run (tagged with `key`) with the dataset,
        its identity and the request logged in it, so any worker can download the dataset."""
        with heartbeating() as progress:
            engine = sync_engine(self.settings.postgres)
            candles = read_candles(engine, request.pair, request.interval_s)
            if candles.empty:
                raise NotEnoughData(f"only 0 usable rows: no candles of {request.pair}")
            progress("candles read")
            config = IndicatorConfig()
            stored = read_indicator_values(engine, request.pair, request.interval_s)
            values, source = indicator_values(candles, request.pair, request.interval_s, stored, config)
            sentiment = scored_sentiment_at_closes(engine, request.pair, candles, request.interval_s)
            progress("building")
            dataset = build_dataset(
                candles, request.interval_s, request.lags, request.horizon_candles, values, sentiment, config
            )
            engine.dispose()
            if len(dataset.frame) < request.min_rows:
                # More data arrives with time; a person need not act, so a later run may succeed.
                raise NotEnoughData(
                    f"only {len(dataset.frame)} usable rows for {request.pair} ({len(candles)} candles, "
                    f"dropped {dataset.dropped}); need {request.min_rows}",
                )
            progress("logging")
            return self._start_run(
                request,
                key,
                dataset.frame,
                dataset.content_hash,
                dataset.features,
                dataset.dropped,
                {"indicator_source": source, "sentiment": sentiment is not None},
            )

    @activity.defn(name="ensure_champion")
    def ensure_champion(self, step: StepInput) -> ModelRef:
        """The current champion. When there is none, the persistence model becomes the first one, its
        interval calibrated on the dataset's returns; a persistence champion without the adaptive
        interval (logged by an older release or with no data) is replaced by a calibrated one."""
        mlflow = self._mlflow()
        request = step.request
        interval_s, horizon = request.interval_s, request.horizon_candles
        registered_model = registered_model_name(request.pair, interval_s, horizon)

        def log_persistence() -> tuple[str, str]:
            calibration = lifecycle.persistence_calibration(self._load(step), horizon)
            return pyfunc.log_persistence(
                f"persistence-{registered_model}", interval_s, horizon, calibration, request.interval_coverage
            )

        client = mlflow.MlflowClient()
        version = registry.ensure_persistence_champion(client, registered_model, log_persistence)
        try:
            spec = pyfunc.forecast_spec(
                pyfunc.load_forecast_model(f"models:/{registered_model}/{version.version}")
            )
            stale = None
            if spec.family == "persistence" and spec.constant_quantiles is None:
                stale = "has no calibrated interval"
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

    @activity.defn(name="screen_candidates")
    def screen_candidates(self, step: StepInput) -> ScreeningResult:
        request, features = step.request, step.dataset.features
        with heartbeating() as progress:
            data = self._load(step)
            screened = screen_regressors(
                data.fit[features],
                data.fit[TARGET].to_numpy(),
                data.folds,
                time_limit_s=request.screen_time_limit_s,
                max_rows=request.screen_max_rows,
                seed=request.seed,
                on_model=progress,
            )
        families = families_to_tune(screened, request.screen_top_k)
        result = ScreeningResult(
            screened=[
                ScreenedCandidate(name=s.name, family=s.family, mean_mae=s.mean_mae, seconds=s.seconds)
                for s in screened
            ],
            families=families,
        )
        mlflow = self._mlflow()
        with mlflow.start_run(run_id=step.mlflow_run_id):
            mlflow.log_dict(result.model_dump(), "screening.json")
        return result

    @activity.defn(name="tune_trials")
    def tune_trials(self, request_: TrialBatch) -> int:
        """Adds one batch of trials to the family's study; returns the batch's complete trials."""
        tune, request = request_.tune, request_.tune.step.request
        features = tune.step.dataset.features
        with heartbeating() as progress:
            data = self._load(tune.step)
            return run_trials(
                tune.family,
                data.fit[features],
                data.fit[TARGET].to_numpy(),
                lifecycle.recent_rows(data.folds, request.tune_max_rows),
                storage=self.settings.postgres.optuna_storage_url,
                study_name=tune.study_name,
                n_trials=request_.trials,
                timeout_s=request.tuning_timeout_s,
                seed=request.seed,
                batch=request_.batch,
                on_trial=lambda number, value: progress(f"trial {number}: {value:.4g}"),
            )

    @activity.defn(name="tune_candidate")
    def tune_candidate(self, request_: TuneInput) -> TunedCandidate:
        """The best trial of the family's study, once its batches have run, logged to the MLflow run."""
        result = best_of(
            request_.family, storage=self.settings.postgres.optuna_storage_url, study_name=request_.study_name
        )
        mlflow = self._mlflow()
        with mlflow.start_run(run_id=request_.step.mlflow_run_id):
            mlflow.log_metric(f"cv_mae_{request_.family}", result.best_value)
            mlflow.log_dict(result.best_params, f"tuning/{request_.family}.json")
        return TunedCandidate(
            family=result.family,
            params=result.best_params,
            cv_mae=result.best_value,
            trials=result.n_trials_completed,
            study_name=result.study_name,
        )

    @activity.defn(name="evaluate_challenger")
    def evaluate_challenger(self, request_: EvaluateInput) -> Evaluation:
        """Fits the best tuned family on everything before the test window, calibrates its interval on
        the walk-forward residuals, scores the test window against persistence and the champion, applies
        the gate and logs it all (model, metrics, plots) to the retrain's MLflow run."""
        step, request, features = request_.step, request_.step.request, request_.step.dataset.features
        best = min(request_.tuned, key=lambda t: t.cv_mae)
        with heartbeating() as progress:
            data = self._load(step)
            challenger = lifecycle.evaluate_challenger(
                best.family,
                best.params,
                data,
                features,
                request.interval_coverage,
                request.tune_max_rows,
                request.horizon_candles,
                self.settings.model.quantile_levels,
            )
            progress("challenger evaluated")
            champion_predicted, unscored = self._champion_predictions(request_.champion, data.test)
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
            mlflow = self._mlflow()
            with mlflow.start_run(run_id=step.mlflow_run_id):
                metrics = challenger.metrics.as_dict()
                mlflow.log_params(
                    {"challenger_family": best.family, **{f"best_{k}": v for k, v in best.params.items()}}
                )
                mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if np.isfinite(v)})
                mlflow.log_metric("test_dm_pvalue_vs_persistence", decision.dm_pvalue_vs_persistence)
                if decision.dm_pvalue_vs_champion is not None:
                    mlflow.log_metric("test_dm_pvalue_vs_champion", decision.dm_pvalue_vs_champion)
                intervals = {k: v for k, v in challenger.intervals.items() if np.isfinite(v)}
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
                self._log_plots(mlflow, step, data.fit, data.test, challenger, features)
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

    def _champion_predictions(
        self, champion: ModelRef, test: pd.DataFrame
    ) -> tuple[np.ndarray | None, str | None]:
        """The champion's log returns over the test window (None when the champion is persistence), or
        why it cannot be scored on this dataset (a format from before, features this dataset lacks)."""
        if champion.flavor == "persistence":
            return None, None
        self._mlflow()
        try:
            model = pyfunc.load_forecast_model(champion.uri)
            return pyfunc.predict_frame(model, test)["log_return"].to_numpy(), None
        except (TypeError, ValueError) as exc:
            return None, f"champion v{champion.version} could not be scored on this dataset ({exc})"

    def _log_plots(
        self,
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
                features, feature_importances(challenger.model, features), f"{title}: feature importance"
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

    @activity.defn(name="register_challenger")
    def register_challenger(self, request: RegisterInput) -> ModelRef:
        mlflow = self._mlflow()
        evaluation = request.evaluation
        tags = {
            "kind": evaluation.family,
            "dataset_hash": request.step.dataset.content_hash,
            "workflow_id": request.step.workflow_id,
            **{f"test_{k}": str(v) for k, v in evaluation.metrics.items()},
            "dm_pvalue_vs_persistence": str(evaluation.dm_pvalue_vs_persistence),
        }
        version = registry.register_version(
            mlflow.MlflowClient(),
            evaluation.model_uri,
            request.registered_model,
            request.step.mlflow_run_id,
            tags,
        )
        return registry.model_ref(version, None)

    @activity.defn(name="promote_or_keep")
    async def promote_or_keep(self, request: PromoteInput) -> ModelRef:
        """Applies the gate's decision: `champion` moves to the challenger (and a model event goes out),
        or the challenger keeps the `challenger` alias with the reasons and the champion stays."""
        ref = await asyncio.to_thread(self._apply_decision, request)
        decision = "promoted" if request.evaluation.promote else "kept"
        activity.metric_meter().create_counter(metrics.MODEL_DECISIONS, "Promotion gate decisions").add(
            1, {"decision": decision, "model": ref.name}
        )
        if request.evaluation.promote:
            dataset = request.step.dataset
            event = ModelEvent(
                registered_model=ref.name,
                pair=dataset.pair,
                interval_s=dataset.interval_s,
                horizon_candles=dataset.horizon_candles,
                champion=ref,
                kind="promoted",
                reason="; ".join(request.evaluation.reasons),
                at=datetime.now(UTC),
            )
            await publish_model_event(self.settings, event)
        return ref

    def _apply_decision(self, request: PromoteInput) -> ModelRef:
        mlflow = self._mlflow()
        client = mlflow.MlflowClient()
        challenger = request.challenger
        if request.evaluation.promote:
            registry.promote(
                client, challenger.name, challenger.version, "; ".join(request.evaluation.reasons)
            )
        else:
            registry.mark_challenger(client, challenger.name, challenger.version, request.evaluation.reasons)
        champion = registry.current_champion(client, challenger.name)
        assert champion is not None  # ensure_champion ran first
        return registry.model_ref(champion, registry.CHAMPION)


def feature_importances(model: Any, features: list[str]) -> np.ndarray:
    """XGBoost's gain-based importances, or a linear model's absolute coefficients on standardised
    inputs (comparable across features because of the scaler)."""
    if hasattr(model, "feature_importances_"):
        return np.asarray(model.feature_importances_, dtype=float)
    return np.abs(np.asarray(model[-1].coef_, dtype=float))
