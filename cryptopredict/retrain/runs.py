"""The retrain's MLflow run and the dataset logged in it: every step reads the dataset through the
tracking server (downloaded once per worker into its `local_dir`), so no step needs another's disk."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from cryptopredict.ml import lifecycle
from cryptopredict.ml.dataset import FEATURE_TIME
from cryptopredict.ml.tuning import best_of, run_trials
from cryptopredict.models.training import (
    DatasetSummary,
    ScreeningResult,
    StepInput,
    TrainingInput,
    TrainingRun,
    TrialBatch,
    TunedCandidate,
    TuneInput,
)
from cryptopredict.settings import Settings

# What a long step reports as it goes (an activity's heartbeat details).
Progress = Callable[[str], None]


def horizon_of(request: TrainingInput) -> timedelta:
    return timedelta(seconds=request.interval_s * request.horizon_candles)


def min_train_rows(request: TrainingInput) -> int:
    return max(50, request.min_rows // (request.folds + 2))


def run_name(request: TrainingInput) -> str:
    kind = "" if request.target == "price" else f"{request.target}-"
    return f"retrain-{kind}{request.pair}-{request.interval_s}s-h{request.horizon_candles}"


def challenger_params(best: TunedCandidate) -> dict[str, Any]:
    """The challenger's family and tuned parameters, as the run's params."""
    return {"challenger_family": best.family, **{f"best_{k}": v for k, v in best.params.items()}}


def run_params(request: TrainingInput, summary: DatasetSummary, described: dict[str, Any]) -> dict[str, Any]:
    """The request and the dataset's identity as MLflow params; `dataset_start` and `dataset_end` are
    the window drift compares the live inputs with."""
    return {
        **{k: v for k, v in request.model_dump().items() if k != "reason"},
        "dataset_hash": summary.content_hash,
        "dataset_rows": summary.rows,
        "dataset_start": summary.start.isoformat(),
        "dataset_end": summary.end.isoformat(),
        **{f"dataset_{field}": value for field, value in described.items()},
        **{f"dataset_dropped_{reason}": n for reason, n in summary.dropped.items()},
    }


class RetrainRuns:
    """MLflow as the retrain's steps use it, on one worker."""

    def __init__(self, settings: Settings) -> None:
        if settings.store.dialect == "risingwave" and settings.postgres.metadata_url is None:
            # Checked where the studies are used, so processes that never train hold no such password.
            raise ValueError(
                "store.dialect risingwave needs postgres.metadata_url: the Optuna studies need a"
                " PostgreSQL server, and postgres.url is RisingWave"
            )
        self.settings = settings

    def mlflow(self) -> Any:
        import mlflow

        mlflow.set_tracking_uri(self.settings.mlflow.tracking_uri)
        mlflow.set_experiment(self.settings.mlflow.experiment)
        return mlflow

    def load(self, step: StepInput) -> lifecycle.Split:
        frame = pd.read_parquet(self.dataset_file(step.dataset))
        request = step.request
        return lifecycle.split(
            frame, request.test_fraction, horizon_of(request), request.folds, min_train_rows(request)
        )

    def dataset_file(self, dataset: DatasetSummary) -> Path:
        """The dataset's parquet in this worker's `local_dir`, downloaded from MLflow the first time."""
        path = self.settings.local_dir.resolve() / "datasets" / f"{dataset.content_hash}.parquet"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            mlflow = self.mlflow()
            with tempfile.TemporaryDirectory(dir=path.parent) as directory:
                downloaded = mlflow.artifacts.download_artifacts(artifact_uri=dataset.uri, dst_path=directory)
                os.replace(downloaded, path)  # atomic: concurrent steps on this worker never see half a file
        return path

    def start(
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
        mlflow = self.mlflow()
        for stale in mlflow.search_runs(filter_string=f"tags.temporal_run = '{key}'", output_format="list"):
            # An earlier attempt died before returning it; its dataset may differ from this one.
            mlflow.delete_run(stale.info.run_id)
        name = f"{content_hash}.parquet"
        tags = {"temporal_run": key, "reason": request.reason, "pair": request.pair, "target": request.target}
        with (
            # Tagged as it is made: an attempt that dies at once still leaves a run the retry finds.
            mlflow.start_run(run_name=run_name(request), tags=tags) as run,
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
            mlflow.log_params(run_params(request, summary, described))
            mlflow.log_text("\n".join(summary.features), "dataset/features.txt")
            frame.to_parquet(Path(directory) / name, index=False)
            mlflow.log_artifact(str(Path(directory) / name), "dataset")
        return TrainingRun(mlflow_run_id=run.info.run_id, dataset=summary)

    @contextmanager
    def target_lock(self, registered_model: str) -> Iterator[None]:
        """Holds a PostgreSQL advisory lock of `registered_model` on the metadata server. MLflow's aliases
        have no compare-and-set, so two attempts of a champion step at once (a retry beside a worker that
        was only slow) would each bootstrap a first champion without it."""
        engine = create_engine(self.settings.postgres.optuna_storage_url, poolclass=NullPool)
        try:
            with engine.connect() as connection:  # closing the session releases the lock, whatever happens
                connection.execute(
                    text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": f"champion:{registered_model}"}
                )
                yield
        finally:
            engine.dispose()

    def log_screening(self, step: StepInput, result: ScreeningResult, metrics: dict[str, float]) -> None:
        mlflow = self.mlflow()
        with mlflow.start_run(run_id=step.mlflow_run_id):
            if metrics:
                mlflow.log_metrics(metrics)
            mlflow.log_dict(result.model_dump(), "screening.json")

    def tune_batch(
        self, batch: TrialBatch, target: Callable[[pd.DataFrame], np.ndarray], progress: Progress
    ) -> int:
        """Adds one batch of trials to the family's study, fitting `target` of the rows; returns the
        batch's complete trials."""
        tune, request = batch.tune, batch.tune.step.request
        data = self.load(tune.step)
        return run_trials(
            tune.family,
            data.fit[tune.step.dataset.features],
            target(data.fit),
            lifecycle.recent_rows(data.folds, request.tune_max_rows),
            storage=self.settings.postgres.optuna_storage_url,
            study_name=tune.study_name,
            n_trials=batch.trials,
            timeout_s=request.tuning_timeout_s,
            seed=request.seed,
            batch=batch.batch,
            on_trial=lambda number, value: progress(f"trial {number}: {value:.4g}"),
        )

    def best_tuned(self, tune: TuneInput) -> TunedCandidate:
        """The best trial of the family's study, once its batches have run, logged to the MLflow run."""
        result = best_of(
            tune.family, storage=self.settings.postgres.optuna_storage_url, study_name=tune.study_name
        )
        mlflow = self.mlflow()
        with mlflow.start_run(run_id=tune.step.mlflow_run_id):
            mlflow.log_metric(f"cv_mae_{tune.family}", result.best_value)
            mlflow.log_dict(result.best_params, f"tuning/{tune.family}.json")
        return TunedCandidate(
            family=result.family,
            params=result.best_params,
            cv_mae=result.best_value,
            trials=result.n_trials_completed,
            study_name=result.study_name,
        )
