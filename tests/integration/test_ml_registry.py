"""Registry lifecycle on the real MLflow server of the local stack: persistence bootstrap, promotions,
challenger, rollbacks through the champion history, and a champion served by alias."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models.model import ModelInfo
from topic_prefixes import NAMESPACE
from xgboost import XGBRegressor

from cryptopredict.ml.pyfunc import load_forecast_model, log_forecast_model, predict_frame
from cryptopredict.ml.registry import (
    CHALLENGER,
    CHAMPION,
    PERSISTENCE_REASON,
    champion_history,
    current_champion,
    ensure_persistence_champion,
    mark_challenger,
    model_ref,
    promote,
    register_version,
    rollback,
)
from cryptopredict.models import ModelRef
from cryptopredict.retrain.runs import RetrainRuns
from cryptopredict.settings import Settings
from cryptopredict.topics import registered_model_prefix

pytestmark = pytest.mark.integration

FEATURES = [f"ret_lag_{k}" for k in range(1, 4)]
INTERVAL = (-0.003, 0.004)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[MlflowClient]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment("cryptopredict-registry-tests")
    yield MlflowClient(settings.mlflow.tracking_uri)
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def name(client: MlflowClient) -> Iterator[str]:
    model_name = f"{registered_model_prefix(NAMESPACE)}registry{uuid.uuid4().hex[:12]}"
    yield model_name
    client.delete_registered_model(model_name)


def log_persistence() -> tuple[str, str]:
    with mlflow.start_run(run_name="persistence"):
        info = log_forecast_model(
            "persistence", None, [], INTERVAL, interval_s=60, horizon_candles=1, input_example=None
        )
    return info.model_uri, info.run_id


def log_xgboost(seed: int) -> tuple[ModelInfo, XGBRegressor, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(0, 0.002, size=(200, len(FEATURES))), columns=FEATURES)
    y = 0.2 * x["ret_lag_1"] + rng.normal(0, 0.0005, size=200)
    model = XGBRegressor(n_estimators=20, max_depth=2).fit(x, y)
    with mlflow.start_run(run_name=f"xgboost-{seed}"):
        info = log_forecast_model(
            "xgboost", model, FEATURES, INTERVAL, interval_s=60, horizon_candles=1, input_example=x.head(2)
        )
    return info, model, x


def register(client: MlflowClient, name: str, info: ModelInfo, kind: str) -> str:
    return str(register_version(client, info.model_uri, name, info.run_id, {"kind": kind}).version)


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).aliases)


def test_persistence_bootstrap_happens_once(client: MlflowClient, name: str) -> None:
    calls: list[tuple[str, str]] = []

    def counting() -> tuple[str, str]:
        calls.append(log_persistence())
        return calls[-1]

    assert current_champion(client, name) is None
    first = ensure_persistence_champion(client, name, counting)
    assert first.version == "1" and first.tags["promotion_reason"] == PERSISTENCE_REASON
    assert first.run_id == calls[0][1] and model_ref(first, CHAMPION) == ModelRef(
        name=name, version="1", alias=CHAMPION, run_id=calls[0][1], flavor="persistence"
    )
    again = ensure_persistence_champion(client, name, counting)
    assert again.version == "1" and len(calls) == 1
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert aliases(client, name) == {CHAMPION: "1"} and champion_history(client, name) == ["1"]

    champion = load_forecast_model(f"models:/{name}@{CHAMPION}")
    out = predict_frame(champion, pd.DataFrame({"ret_lag_1": [0.1, -0.2]}))
    assert out["log_return"].tolist() == [0.0, 0.0] and out["upper"].tolist() == [INTERVAL[1]] * 2


def test_promote_challenge_and_roll_back(client: MlflowClient, name: str) -> None:
    v1 = ensure_persistence_champion(client, name, log_persistence).version
    info2, model2, x = log_xgboost(seed=1)
    v2 = register(client, name, info2, "xgboost")
    assert register(client, name, info2, "xgboost") == v2  # a retried registration, not a new version
    promote(client, name, v2, "beats persistence")
    assert aliases(client, name) == {CHAMPION: v2}
    promote(client, name, v2, "retried activity")  # idempotent: no duplicate in the history
    assert champion_history(client, name) == [v1, v2]
    tags = client.get_model_version(name, v2).tags
    assert tags["promotion_reason"] == "beats persistence" and "promoted_at" in tags

    # The champion is served by alias and predicts like the in-memory regressor.
    served = predict_frame(load_forecast_model(f"models:/{name}@{CHAMPION}"), x)
    np.testing.assert_array_equal(served["log_return"].to_numpy(), model2.predict(x).astype(float))

    info3, _, _ = log_xgboost(seed=2)
    v3 = register(client, name, info3, "xgboost")
    mark_challenger(client, name, v3, ["mae above champion", "too few test rows"])
    assert aliases(client, name) == {CHAMPION: v2, CHALLENGER: v3}
    assert client.get_model_version(name, v3).tags["rejection_reasons"] == (
        '["mae above champion", "too few test rows"]'
    )

    promote(client, name, v3, "manual review")  # the challenger loses its alias when promoted
    assert aliases(client, name) == {CHAMPION: v3}
    assert champion_history(client, name) == [v1, v2, v3]

    assert rollback(client, name, expected=v3) == (v3, v2)
    assert aliases(client, name) == {CHAMPION: v2} and champion_history(client, name) == [v1, v2]
    assert "rolled_back_at" in client.get_model_version(name, v3).tags
    # Asked again (a command re-run after a timeout), the rollback of v3 changes nothing.
    assert rollback(client, name, expected=v3) == (v3, v2)
    assert aliases(client, name) == {CHAMPION: v2} and champion_history(client, name) == [v1, v2]
    with pytest.raises(ValueError, match=f"the champion is v{v2}, not v{v1}"):
        rollback(client, name, expected=v1)
    assert rollback(client, name) == (v2, v1)
    assert aliases(client, name) == {CHAMPION: v1} and champion_history(client, name) == [v1]
    with pytest.raises(ValueError, match="no previous"):
        rollback(client, name)
    assert aliases(client, name) == {CHAMPION: v1}

    # Interrupted after the history lost v2 but before the alias moved: the retry finishes the move.
    promote(client, name, v2, "again")
    client.set_registered_model_tag(name, "champion_history", v1)
    assert rollback(client, name, expected=v2) == (v2, v1)
    assert aliases(client, name) == {CHAMPION: v1} and champion_history(client, name) == [v1]


def test_two_bootstraps_at_once_under_the_target_lock_register_one_champion(
    client: MlflowClient, name: str, settings: Settings
) -> None:
    """Two attempts of a champion step at once (a retry beside a worker that was only slow): MLflow's
    aliases have no compare-and-set, the advisory lock of the target makes the second one find the first
    one's champion."""
    runs = RetrainRuns(settings)
    both_started = threading.Barrier(2)

    def slow_log_persistence() -> tuple[str, str]:
        time.sleep(1.0)  # long enough for the other attempt to look for a champion meanwhile
        return log_persistence()

    def bootstrap(_: int) -> str:
        both_started.wait()
        with runs.target_lock(name):
            return str(ensure_persistence_champion(client, name, slow_log_persistence).version)

    with ThreadPoolExecutor(2) as pool:
        versions = list(pool.map(bootstrap, range(2)))
    assert versions == ["1", "1"]
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == ["1"]
