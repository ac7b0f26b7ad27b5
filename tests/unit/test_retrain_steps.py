"""The retrain's decisions outside MLflow calls: what is logged and tagged, what is promoted and
announced, which champion is replaced."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cryptopredict.ml.pyfunc import ForecastPythonModel, ForecastSpec
from cryptopredict.models import ModelRef
from cryptopredict.models.training import (
    DatasetSummary,
    Evaluation,
    PromoteInput,
    RegisterInput,
    StepInput,
    TrainingInput,
    TunedCandidate,
)
from cryptopredict.retrain import decision, price
from cryptopredict.retrain.runs import challenger_params, min_train_rows, run_name, run_params

pytestmark = pytest.mark.unit

REQUEST = TrainingInput(pair="ETH/USD", interval_s=300, horizon_candles=3, reason="drift: psi")
DATASET = DatasetSummary(
    uri="mlflow-artifacts:/1/r/artifacts/dataset/abc.parquet",
    pair="ETH/USD",
    interval_s=300,
    horizon_candles=3,
    rows=1200,
    dropped={"warmup": 30},
    features=["ret_1", "rsi_14"],
    start=datetime(2026, 1, 1, tzinfo=UTC),
    end=datetime(2026, 1, 5, tzinfo=UTC),
    content_hash="abc",
    indicator_source="store",
    sentiment=False,
)
STEP = StepInput(
    request=REQUEST, dataset=DATASET, mlflow_run_id="run-1", workflow_id="training-ETHUSD-300s-h3"
)


def evaluation(promote: bool) -> Evaluation:
    return Evaluation(
        family="xgboost",
        model_uri="runs:/run-1/model",
        metrics={"mae": 0.002, "skill_vs_persistence": 0.03},
        promote=promote,
        reasons=["beats persistence (DM p 0.01)"] if promote else ["DM p-value 0.4 >= 0.05"],
        dm_pvalue_vs_persistence=0.01,
        dm_pvalue_vs_champion=None,
    )


def test_the_run_is_named_by_target_and_logs_the_request_without_its_reason_and_the_window():
    assert run_name(REQUEST) == "retrain-ETH/USD-300s-h3"
    assert (
        run_name(REQUEST.model_copy(update={"target": "volatility"})) == "retrain-volatility-ETH/USD-300s-h3"
    )
    params = run_params(REQUEST, DATASET, {"indicator_source": "store"})
    assert "reason" not in params and params["pair"] == "ETH/USD" and params["dataset_hash"] == "abc"
    # Drift reads the training window back from these two.
    assert params["dataset_start"] == "2026-01-01T00:00:00+00:00" and params["dataset_end"].startswith(
        "2026-01-05"
    )
    assert params["dataset_dropped_warmup"] == 30 and params["dataset_indicator_source"] == "store"


def test_training_rows_per_fold_have_a_floor():
    assert min_train_rows(REQUEST) == 50  # 300 rows over 4 folds + 2 is below the floor
    assert min_train_rows(REQUEST.model_copy(update={"min_rows": 6000})) == 1000


def test_the_challengers_params_name_its_family_and_tuned_values():
    best = TunedCandidate(family="xgboost", params={"max_depth": 4}, cv_mae=0.001, trials=20, study_name="s")
    assert challenger_params(best) == {"challenger_family": "xgboost", "best_max_depth": 4}


def test_a_registered_version_is_tagged_with_its_dataset_workflow_and_test_figures():
    tags = decision.registration_tags(
        RegisterInput(step=STEP, evaluation=evaluation(True), registered_model="m")
    )
    assert tags == {
        "kind": "xgboost",
        "dataset_hash": "abc",
        "workflow_id": "training-ETHUSD-300s-h3",
        "test_mae": "0.002",
        "test_skill_vs_persistence": "0.03",
        "dm_pvalue_vs_persistence": "0.01",
    }


def test_only_a_promotion_is_announced_to_serving():
    champion = ModelRef(name="cryptopredict-ethusd-300s-h3", version="7", alias="champion", flavor="xgboost")
    challenger = champion.model_copy(update={"alias": "challenger"})
    kept = PromoteInput(step=STEP, evaluation=evaluation(False), challenger=challenger)
    assert decision.promotion_event(kept, champion) is None
    event = decision.promotion_event(kept.model_copy(update={"evaluation": evaluation(True)}), champion)
    assert event is not None and event.kind == "promoted" and event.champion == champion
    assert (event.pair, event.interval_s, event.horizon_candles) == ("ETH/USD", 300, 3)
    assert event.reason == "beats persistence (DM p 0.01)"


def loaded(spec: ForecastSpec | None) -> object:
    """What mlflow.pyfunc.load_model gives back, around a forecaster with `spec`."""
    model = ForecastPythonModel()
    model.spec = spec

    class Loaded:
        def unwrap_python_model(self) -> ForecastPythonModel:
            return model

    return Loaded()


def test_a_persistence_champion_without_a_calibrated_interval_is_replaced():
    persistence = ForecastSpec(family="persistence", features=["close"], interval=(-0.01, 0.01))
    assert price.stale_champion_reason(loaded(persistence)) == "has no calibrated interval"
    calibrated = persistence.model_copy(update={"constant_quantiles": [-0.01, 0.0, 0.01]})
    assert price.stale_champion_reason(loaded(calibrated)) is None
    # A tuned champion keeps its own interval; only persistence is recalibrated on the dataset.
    assert price.stale_champion_reason(loaded(persistence.model_copy(update={"family": "xgboost"}))) is None
    assert "cannot be loaded as a forecast model" in str(price.stale_champion_reason(loaded(None)))


def test_feature_importances_are_gains_or_absolute_standardised_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    linear = make_pipeline(StandardScaler(), Ridge()).fit(x, -3 * x[:, 0] + 0.1 * x[:, 1])
    importances = price.feature_importances(linear)
    assert importances.shape == (2,) and (importances >= 0).all() and importances[0] > 10 * importances[1]
