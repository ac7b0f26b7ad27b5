"""Volatility-target activities of TrainingWorkflow: thin adapters from Temporal to the feature store,
MLflow and cryptopredict.ml.volatility_target. Registering and promoting reuse the price activities
(`register_challenger`, `promote_or_keep`, `tune_candidate`), which know nothing of the target.

The steps are light next to the price ones (HAR is a least-squares fit, the inputs a handful of
columns), so they heartbeat at their milestones and per Optuna trial rather than from a side thread.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from temporalio import activity

from activities.training import RetrainSteps
from cryptopredict.ml import lifecycle, pyfunc, registry
from cryptopredict.ml import volatility_target as vt
from cryptopredict.ml.tuning import run_trials
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
from cryptopredict.store.candles import read_candles, sync_engine
from cryptopredict.temporal_policies import NotEnoughData
from cryptopredict.topics import registered_model_name

NAIVE_REASON = "first champion: naive trailing-mean volatility"


def volatility_model_name(request: TrainingInput) -> str:
    return registered_model_name(
        request.pair, request.interval_s, request.horizon_candles, target="volatility"
    )


class VolatilityActivities(RetrainSteps):
    @activity.defn(name="build_volatility_dataset")
    def build_volatility_dataset(self, request: TrainingInput, key: str) -> TrainingRun:
        """The volatility dataset (1-minute realized volatility when the store covers the history, else
        the target's own absolute returns) and the retrain's MLflow run holding it, tagged with `key`."""
        engine = sync_engine(self.settings.postgres)
        try:
            candles = read_candles(engine, request.pair, request.interval_s)
            minutes = read_candles(engine, request.pair, 60) if request.interval_s > 60 else None
        finally:
            engine.dispose()
        if candles.empty:
            raise NotEnoughData(f"only 0 usable rows: no candles of {request.pair}")
        activity.heartbeat("candles read")
        dataset = vt.build_volatility_dataset(candles, request.interval_s, request.horizon_candles, minutes)
        if len(dataset.frame) < request.min_rows:
            raise NotEnoughData(
                f"only {len(dataset.frame)} usable rows for the volatility of {request.pair} "
                f"({len(candles)} candles, dropped {dataset.dropped}); need {request.min_rows}",
            )
        return self._start_run(
            request,
            key,
            dataset.frame,
            dataset.content_hash,
            dataset.features,
            dataset.dropped,
            {"indicator_source": "none", "sentiment": False, "volatility_estimator": dataset.estimator},
        )

    @activity.defn(name="ensure_volatility_champion")
    def ensure_volatility_champion(self, step: StepInput) -> ModelRef:
        """The volatility model's champion; the naive trailing mean becomes the first one."""
        request, estimator = step.request, step.dataset.volatility_estimator
        assert estimator is not None  # a volatility dataset always names its estimator
        name = volatility_model_name(request)

        def log_naive() -> tuple[str, str]:
            return pyfunc.log_naive_volatility(
                f"naive-{name}",
                vt.naive_feature(request.horizon_candles),
                request.interval_s,
                request.horizon_candles,
                estimator,
            )

        client = self._mlflow().MlflowClient()
        version = registry.ensure_persistence_champion(
            client, name, log_naive, kind="naive", reason=NAIVE_REASON
        )
        return registry.model_ref(version, registry.CHAMPION)

    @activity.defn(name="screen_volatility")
    def screen_volatility(self, step: StepInput) -> ScreeningResult:
        """The walk-forward log-MAE of the untuned families (naive, HAR). LazyPredict, which ranks dozens of
        price regressors to pick the servable families worth tuning, has nothing to choose here: the three
        volatility families are fixed and all evaluated; XGBoost is tuned next."""
        request, features = step.request, step.dataset.features
        data = self._load(step)
        folds = lifecycle.recent_rows(data.folds, request.tune_max_rows)
        screened = []
        for family in ("naive", "har"):
            started = time.perf_counter()
            loss = vt.cv_log_mae(family, {}, data.fit, features, folds, request.horizon_candles)
            seconds = time.perf_counter() - started
            screened.append(ScreenedCandidate(name=family, family=family, mean_mae=loss, seconds=seconds))
            activity.heartbeat(f"{family}: {loss:.4g}")
        result = ScreeningResult(screened=screened, families=list(vt.TUNED_FAMILIES))
        mlflow = self._mlflow()
        with mlflow.start_run(run_id=step.mlflow_run_id):
            mlflow.log_metrics({f"cv_log_mae_{s.name}": s.mean_mae for s in screened})
            mlflow.log_dict(result.model_dump(), "screening.json")
        return result

    @activity.defn(name="tune_volatility_trials")
    def tune_volatility_trials(self, request_: TrialBatch) -> int:
        """One batch of XGBoost trials on the log inputs and log target: the study's objective, the mean
        validation MAE of the log, is the gate's loss."""
        tune, request = request_.tune, request_.tune.step.request
        data = self._load(tune.step)
        return run_trials(
            tune.family,
            data.fit[tune.step.dataset.features],
            vt.log_target(data.fit),
            lifecycle.recent_rows(data.folds, request.tune_max_rows),
            storage=self.settings.postgres.optuna_storage_url,
            study_name=tune.study_name,
            n_trials=request_.trials,
            timeout_s=request.tuning_timeout_s,
            seed=request.seed,
            batch=request_.batch,
            on_trial=lambda number, value: activity.heartbeat(f"trial {number}: {value:.4g}"),
        )

    @activity.defn(name="evaluate_volatility")
    def evaluate_volatility(self, request_: EvaluateInput) -> Evaluation:
        """Fits HAR and the tuned XGBoost on everything before the test window, scores both there, takes
        the one with the lower walk-forward loss as the challenger (the test window chooses nothing),
        gates it against the naive forecast and the champion and logs it all to the retrain's run."""
        step, request = request_.step, request_.step.request
        features, horizon = step.dataset.features, request.horizon_candles
        data = self._load(step)
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
            activity.heartbeat(f"{tuned.family} fitted")
        best = min(request_.tuned, key=lambda t: t.cv_mae)
        forecast = forecasts[best.family]
        champion, unscored = self._champion_forecast(
            request_.champion, test, step.dataset.volatility_estimator
        )
        decision = vt.volatility_gate(
            challenger=forecast,
            naive=naive,
            champion=champion,
            actual=actual,
            horizon_steps=horizon,
            alpha=request.dm_alpha,
        )
        reasons = decision.reasons + (
            [f"{unscored}: compared with the naive forecast only"] if unscored else []
        )
        metrics = vt.volatility_metrics(forecast, naive, actual, decision.dm_pvalue_vs_persistence)
        if decision.dm_pvalue_vs_champion is not None:
            metrics["vol_dm_pvalue_vs_champion"] = decision.dm_pvalue_vs_champion
        for family, values in forecasts.items():
            metrics[f"vol_{family}_log_mae"] = vt.log_mae(values, actual)
        metrics = {k: v for k, v in metrics.items() if np.isfinite(v)}  # a refused forecast has no loss
        mlflow = self._mlflow()
        with mlflow.start_run(run_id=step.mlflow_run_id):
            mlflow.log_params(
                {"challenger_family": best.family, **{f"best_{k}": v for k, v in best.params.items()}}
            )
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

    def _champion_forecast(
        self, champion: ModelRef, test: pd.DataFrame, estimator: str | None
    ) -> tuple[np.ndarray | None, str | None]:
        """The champion's forecasts over the test window (None when it is the naive model: beating the
        naive forecast is beating it), or why it cannot be compared on this dataset."""
        if champion.flavor == "naive":
            return None, None
        self._mlflow()
        try:
            model = pyfunc.load_forecast_model(champion.uri)
            spec = pyfunc.forecast_spec(model)
            if spec.estimator != estimator:
                return (
                    None,
                    f"champion v{champion.version} forecasts {spec.estimator}, this dataset {estimator}",
                )
            forecast = pyfunc.predict_frame(model, test)["volatility"].to_numpy(dtype=float)
        except (TypeError, ValueError) as exc:
            return None, f"champion v{champion.version} could not be scored on this dataset ({exc})"
        if (reason := vt.invalid_forecast_reason(forecast, "the champion")) is not None:
            return None, reason
        return forecast, None
