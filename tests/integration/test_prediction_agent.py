"""The prediction agent in a real Faust worker, on the real broker and MLflow: one prediction per closed
candle and horizon after warm-up, refusals with reasons, a promotion swapping the model mid-stream with
no gap, and a model that fails to load reported while the old one keeps serving."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sqlalchemy import text
from topic_prefixes import NAMESPACE, run_prefix
from xgboost import XGBRegressor

from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.kafka_admin import read_topic
from cryptopredict.ml import lifecycle, registry
from cryptopredict.ml.dataset import build_dataset, indicator_values
from cryptopredict.ml.pyfunc import log_forecast_model
from cryptopredict.ml.pyfunc import log_persistence as log_persistence_model
from cryptopredict.model_events import publish_model_event
from cryptopredict.models import DeadLetter, ModelEvent, Prediction, PredictionRefusal
from cryptopredict.publisher import ReliablePublisher
from cryptopredict.settings import Settings
from cryptopredict.simulators.markets import synthetic_candles
from cryptopredict.store.candles import sync_engine
from cryptopredict.store.migrate import migrate
from cryptopredict.topics import (
    CANDLES,
    DEAD_LETTERS,
    PREDICTION_REFUSALS,
    PREDICTIONS,
    namespaced_pair,
    registered_model_name,
    topic_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TAG = uuid.uuid4().hex[:5].upper()
# An xgboost champion at horizon 1 (promoted mid-stream), persistence at horizon 2.
PAIR = namespaced_pair(f"PA{TAG}/USD", NAMESPACE)
# A champion that reads sentiment, for a coin never scored.
SENTIMENT_PAIR = namespaced_pair(f"PS{TAG}/USD", NAMESPACE)
# A calibrated persistence champion at a second interval, 5 minutes.
CALIBRATED_PAIR = namespaced_pair(f"PC{TAG}/USD", NAMESPACE)
CALIBRATED_CANDLES = 200
T0 = datetime(2026, 4, 1, tzinfo=UTC)
LAGS = [f"ret_lag_{k}" for k in (1, 2, 3)]
CANDLE_EVERY_S = 0.2


class UnloadableModel(mlflow.pyfunc.PythonModel):
    """Pickled by reference to this test module, which the worker cannot import: loading it fails."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input


def log_xgboost(features: list[str], seed: int) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(0, 0.002, size=(200, len(features))), columns=features)
    y = 0.3 * x[features[0]] + rng.normal(0, 0.0005, size=200)
    model = XGBRegressor(n_estimators=10, max_depth=2).fit(x, y)
    with mlflow.start_run(run_name=f"xgboost-{seed}"):
        info = log_forecast_model(
            "xgboost", model, features, (-0.003, 0.003), interval_s=60, horizon_candles=1, input_example=x
        )
    return info.model_uri, info.run_id


def log_persistence() -> tuple[str, str]:
    with mlflow.start_run(run_name="persistence"):
        info = log_forecast_model(
            "persistence", None, [], (-0.003, 0.003), interval_s=60, horizon_candles=2, input_example=None
        )
    return info.model_uri, info.run_id


def log_calibrated_persistence() -> tuple[str, str]:
    """Persistence with its interval calibrated on synthetic 5-minute returns, as ensure_champion does."""
    candles = synthetic_candles(CALIBRATED_PAIR, 300, 6_000, datetime(2025, 1, 1, tzinfo=UTC), seed=11)
    frame = pd.DataFrame([c.model_dump() for c in candles])
    config = IndicatorConfig()
    values, _ = indicator_values(frame, CALIBRATED_PAIR, 300, None, config)
    dataset = build_dataset(frame, 300, 3, 1, values, None, config)
    data = lifecycle.split(dataset.frame, 0.2, timedelta(minutes=5), n_folds=3, min_train_rows=300)
    return log_persistence_model("persistence", 300, 1, lifecycle.persistence_calibration(data, 1), 0.8)


def log_unloadable() -> tuple[str, str]:
    with mlflow.start_run(run_name="unloadable") as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=UnloadableModel())
    return info.model_uri, run.info.run_id


def register(client: MlflowClient, name: str, logged: tuple[str, str], kind: str) -> str:
    uri, run_id = logged
    return str(registry.register_version(client, uri, name, run_id, {registry.KIND_TAG: kind}).version)


async def promote(
    settings: Settings, client: MlflowClient, name: str, version: str, pair: str = PAIR
) -> None:
    """Promotes in the registry and tells the prediction agent, as the training workflow does."""
    registry.promote(client, name, version, "test promotion")
    champion = client.get_model_version(name, version)
    event = ModelEvent(
        registered_model=name,
        pair=pair,
        interval_s=60,
        horizon_candles=1,
        champion=registry.model_ref(champion, registry.CHAMPION),
        kind="promoted",
        reason="test promotion",
        at=datetime.now(UTC),
    )
    await publish_model_event(settings, event)


@pytest.fixture(scope="module")
def names(settings: Settings) -> Iterator[dict[str, str]]:
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment("cryptopredict-prediction-agent-tests")
    client = MlflowClient(settings.mlflow.tracking_uri)
    models = {
        "h1": registered_model_name(PAIR, 60, 1),
        "h2": registered_model_name(PAIR, 60, 2),
        "sentiment": registered_model_name(SENTIMENT_PAIR, 60, 1),
        "calibrated": registered_model_name(CALIBRATED_PAIR, 300, 1),
    }
    for key, logged, kind in (
        ("h1", log_xgboost(LAGS, seed=1), "xgboost"),
        ("h2", log_persistence(), "persistence"),
        ("sentiment", log_xgboost(["ret_lag_1", "sentiment_mean_1h"], seed=3), "xgboost"),
        ("calibrated", log_calibrated_persistence(), "persistence"),
    ):
        registry.promote(client, models[key], register(client, models[key], logged, kind), "test champion")
    # The calibrated champion's interval level as adaptive conformal inference left it before a restart:
    # the worker must go on from it, not from the nominal 0.8.
    migrate(settings.postgres)
    engine = sync_engine(settings.postgres)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO interval_adaptation (model_name, model_version, alpha, outcomes, misses, through)"
                " VALUES (:name, '1', 0.1, 500, 50, :through)"
            ),
            {"name": models["calibrated"], "through": T0},
        )
    engine.dispose()
    yield models
    for name in models.values():
        client.delete_registered_model(name)


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    prefix = run_prefix("pa")
    pairs = [PAIR, SENTIMENT_PAIR, CALIBRATED_PAIR]
    run_settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix}),
            "kraken": settings.kraken.model_copy(update={"pairs": pairs}),
        }
    )
    env = os.environ | {
        "CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": prefix,
        "CRYPTOPREDICT_KRAKEN__PAIRS": f'["{PAIR}", "{SENTIMENT_PAIR}", "{CALIBRATED_PAIR}"]',
        "CRYPTOPREDICT_MODEL__HORIZONS_CANDLES": "[1, 2]",
        "CRYPTOPREDICT_MODEL__HORIZONS_BY_INTERVAL": '{"300": [1]}',
        # The stored level only: no outcome of this run moves it while the test reads it.
        "CRYPTOPREDICT_MODEL__ACI_EVERY_S": "3600",
        "CRYPTOPREDICT_FEATURES__INTERVAL_S": "60",
        "CRYPTOPREDICT_MODEL__LAGS": "3",
    }
    log_path = tmp_path / "faust.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "-l", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield run_settings, log_path
    finally:
        process.terminate()
        process.wait(30)


async def wait_for_log(log: Path, text: str, timeout: float = 120.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        # Polling: the worker is another process; its log is what it tells.
        while text not in await asyncio.to_thread(log.read_text, errors="replace"):  # noqa: ASYNC110
            await asyncio.sleep(0.2)


async def topic_models(settings: Settings, name: str, model: type, count: int) -> list:  # type: ignore[type-arg]
    """The records of a topic as `model`, once at least `count` are there (at most two minutes)."""
    topic = topic_name(name, settings.kafka.topic_prefix)
    async with asyncio.timeout(120):
        while True:
            records = [
                model.model_validate_json(v) for v in await read_topic(settings.kafka, topic, idle_s=1.0)
            ]
            if len(records) >= count:
                return records
            await asyncio.sleep(0.5)


async def test_predictions_follow_every_candle_and_a_promotion_swaps_the_model_without_a_gap(
    names: dict[str, str], worker: tuple[Settings, Path]
) -> None:
    settings, log = worker
    client = MlflowClient(settings.mlflow.tracking_uri)
    for name in names.values():
        await wait_for_log(log, f"serving {name} v1")

    candles = {
        pair: synthetic_candles(pair, 60, 400, T0, seed=seed)
        for pair, seed in ((PAIR, 7), (SENTIMENT_PAIR, 8))
    }
    publisher = ReliablePublisher(settings.kafka)
    await publisher.start()
    sent = 0
    progress = asyncio.Condition()
    stop = asyncio.Event()

    async def feed() -> None:
        # Candles keep closing, one every CANDLE_EVERY_S, while the champion moves underneath.
        nonlocal sent
        topic = topic_name(CANDLES, settings.kafka.topic_prefix)
        while not stop.is_set():
            for pair, series in candles.items():
                await publisher.publish(topic, series[sent].to_json_bytes(), key=pair.encode())
            await publisher.flush()
            async with progress:
                sent += 1
                progress.notify_all()
            await asyncio.sleep(CANDLE_EVERY_S)

    async def until_sent(count: int) -> None:
        async with progress:
            await progress.wait_for(lambda: sent >= count)

    feeding = asyncio.create_task(feed())
    try:
        await until_sent(10)
        version_2 = register(client, names["h1"], log_xgboost(LAGS, seed=2), "xgboost")
        await promote(settings, client, names["h1"], version_2)
        await wait_for_log(log, f"serving {names['h1']} v{version_2}")
        await until_sent(sent + 10)
        # A champion that cannot be loaded: reported, and version 2 keeps serving.
        broken = register(client, names["h1"], log_unloadable(), "broken")
        await promote(settings, client, names["h1"], broken)
        letters = await topic_models(settings, DEAD_LETTERS, DeadLetter, 1)
        await until_sent(sent + 10)
    finally:
        stop.set()
        await feeding
        # After the swap, whose timing they would upset: a second interval's candles, all at once.
        calibrated = synthetic_candles(CALIBRATED_PAIR, 300, CALIBRATED_CANDLES, T0, seed=12)
        for candle in calibrated:
            topic = topic_name(CANDLES, settings.kafka.topic_prefix)
            await publisher.publish(topic, candle.to_json_bytes(), key=CALIBRATED_PAIR.encode())
        await publisher.flush()
        await publisher.stop()

    # Predictions at h1 and h2 for PAIR: every candle past warm-up, once; refusals for the rest.
    window_starts = [c.window_start for c in candles[PAIR][:sent]]
    predictions = await topic_models(settings, PREDICTIONS, Prediction, 2 * sent - 3 + CALIBRATED_CANDLES)
    refusals = await topic_models(settings, PREDICTION_REFUSALS, PredictionRefusal, 3 + sent)
    h1 = [p for p in predictions if p.pair == PAIR and p.horizon_s == 60]
    h2 = [p for p in predictions if p.pair == PAIR and p.horizon_s == 120]
    h1_refused = [r for r in refusals if r.pair == PAIR and r.horizon_s == 60]
    # ret_lag_3 needs 4 candles: the first 3 are refused, every later one is predicted, none twice.
    assert [r.feature_time for r in h1_refused] == window_starts[:3]
    assert all("incomplete history" in r.reason or "warm-up" in r.reason for r in h1_refused)
    assert [p.feature_time for p in h1] == window_starts[3:]
    assert [p.feature_time for p in h2] == window_starts  # persistence needs no history
    assert {p.model_version for p in h2} == {"1"}

    # The swap: version 1 up to some candle, version 2 from the next one on; no gap, no duplicate.
    versions = [p.model_version for p in h1]
    switch = versions.index(version_2)
    assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {version_2}
    assert 0 < switch and len(versions) - switch >= 10

    # The broken version was reported once, with the reason; it never served a prediction.
    (letter,) = [d for d in letters if d.source == "prediction_agent"]
    assert f"v{broken} failed" in letter.reason and f"still serving v{version_2}" in letter.reason
    assert broken not in versions

    # A champion reading sentiment refuses while its coin has no fresh score, for every candle.
    sentiment_refused = [r for r in refusals if r.pair == SENTIMENT_PAIR]
    assert [r.feature_time for r in sentiment_refused] == [
        c.window_start for c in candles[SENTIMENT_PAIR][:sent]
    ]
    assert all(r.reason.startswith("stale sentiment") for r in sentiment_refused)
    assert not [p for p in predictions if p.pair == SENTIMENT_PAIR]

    # The second interval: every 5-minute candle forecast by its own champion, each with the calibrated
    # interval and quantiles; with a week of candles (168) behind it, scaled by the volatility forecast.
    five = [p for p in predictions if p.pair == CALIBRATED_PAIR]
    assert [p.feature_time for p in five] == [c.window_start for c in calibrated]
    assert {(p.interval_s, p.horizon_s) for p in five} == {(300, 300)}
    for p in five:
        assert p.interval_level == pytest.approx(0.9)  # the stored level, not the nominal one
        assert [q.level for q in p.quantiles] == [0.1, 0.5, 0.9]
        low, _, high = (q.price for q in p.quantiles)
        assert p.lower_price < low < p.predicted_price < high < p.upper_price  # 90% is wider than 10-90
    scaled = [p for p in five if p.predicted_volatility is not None]
    assert [p.feature_time for p in scaled] == [c.window_start for c in calibrated[168:]]
    assert all(p.volatility_regime in ("calm", "mid", "wild") for p in scaled)
    assert len({round(p.upper_price / p.predicted_price, 9) for p in scaled}) > 1  # widths follow volatility
