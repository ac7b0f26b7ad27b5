"""Training activities: dataset from the feature store, candidates logged to MLflow, champion alias.

CPU-heavy work runs in sync activities on the worker's thread pool, heartbeating as it goes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from temporalio import activity
from temporalio.exceptions import ApplicationError

from cryptopredict.ml.dataset import TARGET, Dataset, build_dataset, split_train_test
from cryptopredict.ml.models import choose_champion, fit_model, price_metrics
from cryptopredict.models import ModelRef
from cryptopredict.models.training import (
    Candidate,
    DatasetSummary,
    FitInput,
    PromoteInput,
    TrainingInput,
)
from cryptopredict.settings import Settings
from cryptopredict.store.candles import read_candles, sync_engine

logger = logging.getLogger(__name__)

CHAMPION = "champion"


class TrainingActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _mlflow(self):
        import mlflow

        mlflow.set_tracking_uri(self.settings.mlflow.tracking_uri)
        mlflow.set_experiment(self.settings.mlflow.experiment)
        return mlflow

    @activity.defn(name="build_training_dataset")
    def build_training_dataset(self, request: TrainingInput) -> DatasetSummary:
        candles = read_candles(sync_engine(self.settings.postgres), request.pair, request.interval_s)
        activity.heartbeat("candles read")
        dataset = build_dataset(candles, request.interval_s, request.lags, request.horizon_candles)
        if len(dataset.frame) < request.min_rows:
            # More data arrives with time; a person need not act, so Temporal may retry later.
            raise ApplicationError(
                f"only {len(dataset.frame)} usable rows for {request.pair} ({len(candles)} candles, "
                f"{dataset.dropped} dropped); need {request.min_rows}",
                type="NotEnoughData",
            )
        directory = self.settings.local_dir.resolve() / "datasets"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{dataset.content_hash}.parquet"
        dataset.frame.to_parquet(path, index=False)
        return DatasetSummary(
            path=str(path),
            pair=request.pair,
            interval_s=request.interval_s,
            horizon_candles=request.horizon_candles,
            rows=len(dataset.frame),
            dropped=dataset.dropped,
            features=dataset.features,
            start=dataset.frame["window_start"].iloc[0].to_pydatetime(),
            end=dataset.frame["window_start"].iloc[-1].to_pydatetime(),
            content_hash=dataset.content_hash,
        )

    @activity.defn(name="fit_candidate")
    def fit_candidate(self, request: FitInput) -> Candidate:
        summary = request.dataset
        frame = pd.read_parquet(Path(summary.path))
        train, test = split_train_test(
            Dataset(frame, summary.features, summary.dropped), request.test_fraction
        )
        model = fit_model(request.kind, train, summary.features, TARGET)
        activity.heartbeat("fitted")
        metrics = price_metrics(test, model.predict(None, test[summary.features]))
        mlflow = self._mlflow()
        with mlflow.start_run(run_name=f"{request.kind}-{summary.pair}-{summary.interval_s}s") as run:
            mlflow.log_params(
                {
                    "kind": request.kind,
                    "pair": summary.pair,
                    "interval_s": summary.interval_s,
                    "horizon_candles": summary.horizon_candles,
                    "features": ",".join(summary.features),
                    "dataset_rows": summary.rows,
                    "dataset_dropped": summary.dropped,
                    "dataset_start": summary.start.isoformat(),
                    "dataset_end": summary.end.isoformat(),
                    "dataset_hash": summary.content_hash,
                    "train_rows": len(train),
                    "test_start": test["window_start"].iloc[0].isoformat(),
                }
            )
            mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                input_example=test[summary.features].head(3),
                # Explicit requirements: inferring them imports every package and takes minutes.
                pip_requirements=["cryptopredict", "xgboost", "pandas", "numpy"],
            )
        logger.info(
            "%s candidate: MAE %.4f (persistence %.4f)",
            request.kind,
            metrics["mae"],
            metrics["persistence_mae"],
        )
        return Candidate(kind=request.kind, run_id=run.info.run_id, model_uri=info.model_uri, metrics=metrics)

    @activity.defn(name="register_and_promote")
    def register_and_promote(self, request: PromoteInput) -> list[ModelRef]:
        """Registers every candidate and points `champion` at the best; returns the champion first."""
        mlflow = self._mlflow()
        client = mlflow.MlflowClient()
        registered: dict[str, ModelRef] = {}
        for candidate in request.candidates:
            version = mlflow.register_model(candidate.model_uri, request.registered_model)
            for key, value in candidate.metrics.items():
                client.set_model_version_tag(
                    request.registered_model, version.version, f"test_{key}", str(value)
                )
            client.set_model_version_tag(request.registered_model, version.version, "kind", candidate.kind)
            registered[candidate.kind] = ModelRef(
                name=request.registered_model,
                version=str(version.version),
                run_id=candidate.run_id,
                flavor=candidate.kind,
            )
        best = choose_champion({c.kind: c.metrics["mae"] for c in request.candidates})
        champion = registered[best]
        client.set_registered_model_alias(request.registered_model, CHAMPION, champion.version)
        champion = champion.model_copy(update={"alias": CHAMPION})
        return [champion, *(ref for kind, ref in registered.items() if kind != best)]
