"""The real gRPC server on 127.0.0.1, over real channels: streaming, lookups, health, reflection, Kafka.

Most tests feed the hub directly (consume=False); one goes through the real broker and topic.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from factories import with_uncertainty
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from topic_prefixes import session_pair
from typer.testing import CliRunner

from cryptopredict.cli import app
from cryptopredict.kafka_client import client_kwargs
from cryptopredict.models.ml import Prediction
from cryptopredict.settings import GrpcSettings, Settings, get_settings
from cryptopredict.topics import PREDICTIONS
from grpc_server.client import get_latest_prediction, stream_predictions
from grpc_server.convert import prediction_from_proto
from grpc_server.hub import PredictionHub
from grpc_server.pb import predictions_pb2 as pb
from grpc_server.pb import predictions_pb2_grpc as pb_grpc
from grpc_server.server import SERVICE_NAME, RunningServer, start_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
GRPCURL = REPO / ".local" / "bin" / "grpcurl"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_prediction(
    pair: str = "BTC/USD", minute: int = 0, interval_s: int = 60, horizon_s: int = 60
) -> Prediction:
    feature_time = T0 + timedelta(minutes=minute)
    return Prediction(
        pair=pair,
        interval_s=interval_s,
        horizon_s=horizon_s,
        made_at=feature_time + timedelta(seconds=1),
        feature_time=feature_time,
        target_time=feature_time + timedelta(seconds=horizon_s),
        last_price=100.0 + minute,
        predicted_price=101.0 + minute,
        model_name="cryptopredict-test",
        model_version="1",
    )


# Pairs of their own for the tests that meet data of earlier runs (the topic, the store, the registry).
KAFKA_PAIR, LEDGER_PAIR, MODEL_PAIR, REGIME_PAIR, EDGE_PAIR = (session_pair(c) for c in "TGMQE")
PAIRS = ["BTC/USD", "ETH/USD", KAFKA_PAIR, LEDGER_PAIR, MODEL_PAIR, REGIME_PAIR, EDGE_PAIR]


def local_settings(**grpc: object) -> Settings:
    """The served targets: PAIRS at 1m, horizons 1 and 5 candles. Port 0: the OS picks a free port."""
    base = get_settings()
    return base.model_copy(
        update={
            "grpc": GrpcSettings.model_validate({"host": "127.0.0.1", "port": 0, **grpc}),
            "kraken": base.kraken.model_copy(update={"pairs": PAIRS}),
            "features": base.features.model_copy(update={"interval_s": 60}),
            "model": base.model.model_copy(update={"horizons_candles": [1, 5]}),
        }
    )


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    # Polling: the conditions are state of the server under test, which has no events to wait on.
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.fixture
async def running() -> AsyncIterator[RunningServer]:
    async with start_server(local_settings(), PredictionHub(), consume=False, grace=0.5) as server:
        yield server


@pytest.fixture
def target(running: RunningServer) -> str:
    return f"127.0.0.1:{running.port}"


async def test_stream_sends_latest_then_live(running: RunningServer, target: str) -> None:
    hub = running.hub
    hub.publish(make_prediction("BTC/USD", minute=0))
    hub.publish(make_prediction("BTC/USD", minute=1))  # replaces minute 0 as the latest
    hub.publish(make_prediction("ETH/USD", minute=1))  # another pair: not requested
    hub.publish(make_prediction("BTC/USD", minute=1, interval_s=300))  # another interval

    stream = asyncio.create_task(stream_predictions(target, ["BTC/USD"], interval_s=60, limit=3, timeout=10))
    await wait_until(lambda: hub.subscriber_count == 1)
    hub.publish(make_prediction("BTC/USD", minute=2))
    hub.publish(make_prediction("ETH/USD", minute=2))
    hub.publish(make_prediction("BTC/USD", minute=3))

    received = await stream
    assert received == [make_prediction("BTC/USD", minute=m) for m in (1, 2, 3)]
    await wait_until(lambda: hub.subscriber_count == 0)


async def test_empty_pair_list_streams_all_pairs(running: RunningServer, target: str) -> None:
    running.hub.publish(make_prediction("BTC/USD", minute=1))
    running.hub.publish(make_prediction("ETH/USD", minute=2))
    received = await stream_predictions(target, [], interval_s=0, limit=2, timeout=10)
    assert {p.pair for p in received} == {"BTC/USD", "ETH/USD"}


async def test_cancelling_a_stream_unsubscribes(running: RunningServer, target: str) -> None:
    hub = running.hub
    hub.publish(make_prediction())
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(
            pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60)
        )
        first = await call.read()
        assert first.prediction.pair == "BTC/USD"
        assert hub.subscriber_count == 1
        call.cancel()
        await wait_until(lambda: hub.subscriber_count == 0)
        assert call.cancelled()


async def test_closing_the_channel_unsubscribes(running: RunningServer, target: str) -> None:
    hub = running.hub
    channel = grpc.aio.insecure_channel(target)
    call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(pb.StreamPredictionsRequest())
    await wait_until(lambda: hub.subscriber_count == 1)
    await channel.close()  # a client that vanishes without cancelling
    await wait_until(lambda: hub.subscriber_count == 0)
    assert call.done()


async def test_slow_subscriber_drops_oldest_and_stays_bounded() -> None:
    hub = PredictionHub(queue_size=4)
    async with (
        start_server(local_settings(), hub, consume=False, grace=0.5) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(pb.StreamPredictionsRequest())
        await wait_until(lambda: hub.subscriber_count == 1)
        # Published in one synchronous burst: the stream cannot drain in between, like a stalled client.
        for minute in range(100):
            hub.publish(make_prediction(minute=minute))
        assert hub.dropped == 100 - 4
        received = [await call.read() for _ in range(4)]
        call.cancel()
        await wait_until(lambda: hub.subscriber_count == 0)
    # Drop-oldest: what survives is the newest queue_size predictions, in order.
    minutes = [
        (r.prediction.feature_time.ToDatetime(tzinfo=UTC) - T0) // timedelta(minutes=1) for r in received
    ]
    assert minutes == [96, 97, 98, 99]


async def test_stream_rejects_malformed_pair(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(
            pb.StreamPredictionsRequest(pairs=["BTCUSD"])
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call.read()
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_latest_prediction(running: RunningServer, target: str) -> None:
    assert await get_latest_prediction(target, "BTC/USD", 60, 60) is None  # NOT_FOUND

    running.hub.publish(make_prediction(minute=1, horizon_s=60))
    running.hub.publish(make_prediction(minute=2, horizon_s=300))
    running.hub.publish(make_prediction(minute=0, horizon_s=60))  # older: does not replace minute 1
    assert await get_latest_prediction(target, "BTC/USD", 60, 60) == make_prediction(minute=1, horizon_s=60)
    # horizon 0: the newest of any horizon.
    assert await get_latest_prediction(target, "BTC/USD", 60) == make_prediction(minute=2, horizon_s=300)


async def test_get_latest_prediction_not_found_status(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await pb_grpc.PredictionServiceStub(channel).GetLatestPrediction(
                pb.GetLatestPredictionRequest(pair="BTC/USD", interval_s=60, horizon_s=60)
            )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("pair", "interval_s", "horizon_s"),
    [
        ("", 60, 60),
        ("BTCUSD", 60, 60),
        ("btc/usd", 60, 60),
        ("DOGE/USD", 60, 60),  # well-formed, not configured
        ("BTC/USD", 0, 60),
        ("BTC/USD", -60, 60),
        ("BTC/USD", 300, 300),  # a candle interval, but predictions are made at 60 s
        ("BTC/USD", 60, -1),
        ("BTC/USD", 60, 120),  # horizons are 60 and 300 s
    ],
)
async def test_get_latest_prediction_invalid_argument(
    target: str, pair: str, interval_s: int, horizon_s: int
) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await pb_grpc.PredictionServiceStub(channel).GetLatestPrediction(
                pb.GetLatestPredictionRequest(pair=pair, interval_s=interval_s, horizon_s=horizon_s)
            )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_is_serving(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = [
            service.name
            async for response in responses
            for service in response.list_services_response.service
        ]
    assert SERVICE_NAME in names


async def run_grpcurl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_grpcurl_lists_and_calls_the_service(running: RunningServer, target: str) -> None:
    assert SERVICE_NAME in (await run_grpcurl("-plaintext", target, "list")).split()
    # A call described only by reflection: also proves the timestamp.proto dependency is served.
    running.hub.publish(make_prediction(minute=5))
    output = await run_grpcurl(
        "-plaintext",
        "-d",
        '{"pair": "BTC/USD", "interval_s": 60, "horizon_s": 60}',
        target,
        f"{SERVICE_NAME}/GetLatestPrediction",
    )
    prediction = json.loads(output)["prediction"]
    assert prediction["predicted_price"] == 106
    assert prediction["feature_time"] == "2024-05-01T12:05:00Z"


async def test_predictions_flow_from_kafka_to_the_stream() -> None:
    settings = local_settings()
    # A pair of its own, so earlier runs' messages on the topic do not match.
    pair = KAFKA_PAIR
    before, live = make_prediction(pair, minute=1), make_prediction(pair, minute=2)

    producer = AIOKafkaProducer(**client_kwargs(settings.kafka))
    await producer.start()
    try:
        # Made before the server starts: known after the start because it reads from the earliest offset.
        await producer.send_and_wait(PREDICTIONS, before.to_json_bytes(), key=pair.encode())
        await producer.send_and_wait(PREDICTIONS, b"{not a prediction", key=pair.encode())
        async with start_server(settings, PredictionHub(), consume=True, grace=0.5) as running:
            target = f"127.0.0.1:{running.port}"
            assert running.consumer is not None
            await wait_until(lambda: running.hub.latest(pair, 60) is not None, timeout=60)
            assert running.consumer.invalid >= 1  # logged and counted, the consumer kept going

            stream = asyncio.create_task(
                stream_predictions(target, [pair], interval_s=60, limit=2, timeout=30)
            )
            await wait_until(lambda: running.hub.subscriber_count == 1)
            await producer.send_and_wait(PREDICTIONS, live.to_json_bytes(), key=pair.encode())
            assert await stream == [before, live]
    finally:
        await producer.stop()


async def test_watch_prints_the_stream_as_a_table(running: RunningServer, target: str) -> None:
    with_band = make_prediction("BTC/USD", minute=1).model_copy(
        update={"lower_price": 99.5, "upper_price": 103.25}
    )
    running.hub.publish(with_band)
    command = [sys.executable, "-m", "cryptopredict.cli", "watch", "--pair", "BTC/USD", "--target", target]
    watcher = await asyncio.create_subprocess_exec(
        *command, "--limit", "2", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    await wait_until(lambda: running.hub.subscriber_count == 1, timeout=30)
    # Of another exchange: not what a watch that names none (Kraken) shows.
    running.hub.publish(on_coinbase(make_prediction("BTC/USD", minute=2)))
    running.hub.publish(make_prediction("BTC/USD", minute=2))
    stdout, stderr = await asyncio.wait_for(watcher.communicate(), 30)
    assert watcher.returncode == 0, stderr.decode()
    header, first, second = stdout.decode().strip().splitlines()
    assert header.split()[:3] == ["feature", "time", "pair"]
    assert "2024-05-01 12:01" in first and "99.50..103.25" in first and "cryptopredict-test v1" in first
    assert "2024-05-01 12:02" in second and " - " in second  # no interval given
    assert "coinbase" not in second


async def test_get_ledger_reports_the_live_figures_of_each_version(target: str) -> None:
    from cryptopredict.simulators.markets import synthetic_candles
    from cryptopredict.store.candles import async_engine, upsert_candles, upsert_predictions
    from cryptopredict.store.migrate import migrate

    settings = local_settings()
    migrate(settings.postgres)
    pair = LEDGER_PAIR
    candles = synthetic_candles(pair, 60, 5, T0, seed=3)
    made = [
        make_prediction(pair, minute=i).model_copy(
            update={
                "last_price": c.close,
                "predicted_price": c.close + 2.0,
                "lower_price": c.close - 100.0,
                "upper_price": c.close + 100.0,
                "model_version": "4",
            }
        )
        for i, c in enumerate(candles[:3])
    ]
    engine = async_engine(settings.postgres)
    await upsert_predictions(engine, made)
    await upsert_candles(engine, candles)
    await engine.dispose()

    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        response = await stub.GetLedger(pb.GetLedgerRequest(pair=pair, interval_s=60))
        (entry,) = response.entries
        assert (entry.model_name, entry.model_version, entry.outcomes) == ("cryptopredict-test", "4", 3)
        realised = {c.window_end: c.close for c in candles}
        expected = sum(abs(p.predicted_price - realised[p.target_time]) for p in made) / 3
        assert entry.live_mae == pytest.approx(expected) and entry.interval_coverage == 1.0
        other = await stub.GetLedger(pb.GetLedgerRequest(pair=pair, interval_s=60, model_version="5"))
        assert list(other.entries) == []
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.GetLedger(pb.GetLedgerRequest(pair=pair, interval_s=0))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stream_filters_by_horizon_and_rejects_unknown_targets(
    running: RunningServer, target: str
) -> None:
    running.hub.publish(make_prediction("BTC/USD", minute=1, horizon_s=60))
    running.hub.publish(make_prediction("BTC/USD", minute=1, horizon_s=300))
    received = await stream_predictions(target, ["BTC/USD"], 60, limit=5, timeout=2, horizon_s=300)
    assert [p.horizon_s for p in received] == [300]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        for request in (
            pb.StreamPredictionsRequest(pairs=["DOGE/USD"]),
            pb.StreamPredictionsRequest(interval_s=61),
            pb.StreamPredictionsRequest(horizon_s=120),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.StreamPredictions(request).read()
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
            assert "not served" in error.value.details() or "unknown pair" in error.value.details()


def log_persistence() -> tuple[str, str]:
    """A persistence model logged in a run of the tests' experiment: (model URI, run id)."""
    import mlflow

    from cryptopredict.ml.pyfunc import log_forecast_model

    mlflow.set_tracking_uri(get_settings().mlflow.tracking_uri)
    mlflow.set_experiment("cryptopredict-grpc-tests")
    with mlflow.start_run(run_name="persistence"):
        info = log_forecast_model(
            "persistence", None, [], (-0.01, 0.01), interval_s=60, horizon_candles=1, input_example=None
        )
    return info.model_uri, info.run_id


async def test_list_and_get_models_report_registry_and_live_figures(target: str) -> None:
    from mlflow import MlflowClient

    from cryptopredict.ml.registry import ensure_persistence_champion, mark_challenger, register_version
    from cryptopredict.simulators.markets import synthetic_candles
    from cryptopredict.store.candles import async_engine, upsert_candles, upsert_predictions
    from cryptopredict.store.migrate import migrate
    from cryptopredict.topics import registered_model_name

    settings = local_settings()
    name = registered_model_name(MODEL_PAIR, 60, 1)
    client = MlflowClient(settings.mlflow.tracking_uri)
    champion = ensure_persistence_champion(client, name, log_persistence)
    uri, run_id = log_persistence()
    tags = {"kind": "linear", "test_mae": "12.5", "test_skill_vs_persistence": "-0.02"}
    challenger = register_version(client, uri, name, run_id, tags)
    mark_challenger(client, name, str(challenger.version), ["skill -0.0200 <= 0"])
    # The volatility model of the same target: its own registered model and champion.
    vol_name = registered_model_name(MODEL_PAIR, 60, 1, target="volatility")
    vol_champion = ensure_persistence_champion(client, vol_name, log_persistence)

    # Three predictions of the champion whose outcomes are known: the live figures come from the ledger.
    migrate(settings.postgres)
    candles = synthetic_candles(MODEL_PAIR, 60, 4, T0, seed=5)
    made = [
        make_prediction(MODEL_PAIR, minute=i).model_copy(
            update={
                "last_price": c.close,
                "predicted_price": c.close + 1.0,
                "model_name": name,
                "model_version": str(champion.version),
            }
        )
        for i, c in enumerate(candles[:3])
    ]
    engine = async_engine(settings.postgres)
    await upsert_predictions(engine, made)
    await upsert_candles(engine, candles)
    await engine.dispose()

    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)
            listed = await stub.ListModels(pb.ListModelsRequest(pairs=[MODEL_PAIR]))
            model, vol_model = listed.models  # horizon 5 has no registered model: not listed
            got = await stub.GetModel(pb.GetModelRequest(pair=MODEL_PAIR, interval_s=60, horizon_s=60))
            assert got.model == model
            assert (model.name, model.pair, model.interval_s, model.horizon_s) == (name, MODEL_PAIR, 60, 60)
            assert (model.target, vol_model.target, vol_model.name) == ("price", "volatility", vol_name)
            assert vol_model.champion.version == str(vol_champion.version)
            vol = pb.GetModelRequest(pair=MODEL_PAIR, interval_s=60, horizon_s=60, target="volatility")
            assert (await stub.GetModel(vol)).model == vol_model
            assert (model.champion.version, model.champion.kind) == (str(champion.version), "persistence")
            assert model.champion.reason == "first champion: persistence baseline"
            assert model.champion.live.outcomes == 3 and model.champion.live.live_mae == pytest.approx(1.0)
            assert (model.challenger.version, model.challenger.kind) == (str(challenger.version), "linear")
            assert dict(model.challenger.test_metrics) == {"mae": 12.5, "skill_vs_persistence": -0.02}
            assert model.challenger.reason == "skill -0.0200 <= 0"
            assert not model.challenger.HasField("live")

            everything = await stub.ListModels(pb.ListModelsRequest())
            assert name in [m.name for m in everything.models]
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetModel(pb.GetModelRequest(pair=MODEL_PAIR, interval_s=60, horizon_s=300))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            for bad in (
                pb.GetModelRequest(pair=MODEL_PAIR, interval_s=60, horizon_s=0),
                pb.GetModelRequest(pair="DOGE/USD", interval_s=60, horizon_s=60),
                pb.GetModelRequest(pair=MODEL_PAIR, interval_s=60, horizon_s=60, target="variance"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as invalid:
                    await stub.GetModel(bad)
                assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as invalid_list:
                await stub.ListModels(pb.ListModelsRequest(pairs=["DOGE/USD"]))
            assert invalid_list.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # The server keeps the live figures as gauges too (refreshed from the ledger every 15 s).
        labels = {"model": name, "version": str(champion.version)}
        await wait_until(lambda: REGISTRY.get_sample_value("cryptopredict_live_outcomes", labels) == 3, 40)
        assert REGISTRY.get_sample_value("cryptopredict_live_mae", labels) == pytest.approx(1.0)
    finally:
        client.delete_registered_model(name)
        client.delete_registered_model(vol_name)


async def invalid_argument(call: Awaitable[object]) -> str:
    """The details of the INVALID_ARGUMENT `call` must end with."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    details = error.value.details()
    # Short whatever the client sent: its part is cut; the rest names what this server serves.
    assert details is not None and len(details) < 400, details
    return details


async def test_unserved_horizons_name_the_served_ones(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        latest = await invalid_argument(
            stub.GetLatestPrediction(
                pb.GetLatestPredictionRequest(pair="BTC/USD", interval_s=60, horizon_s=120)
            )
        )
        streamed = await invalid_argument(
            stub.StreamPredictions(pb.StreamPredictionsRequest(pairs=["BTC/USD"], horizon_s=120)).read()
        )
    for details in (latest, streamed):
        assert "horizon_s=120 is not served" in details and "[60, 300]" in details, details


async def test_latest_prediction_carries_the_requested_quantiles_only(
    running: RunningServer, target: str
) -> None:
    prediction = with_uncertainty(make_prediction(minute=3))
    running.hub.publish(prediction)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        key = {"pair": "BTC/USD", "interval_s": 60, "horizon_s": 60}
        everything = await stub.GetLatestPrediction(pb.GetLatestPredictionRequest(**key))
        assert prediction_from_proto(everything.prediction) == prediction
        for levels, kept in (([0.9, 0.1], [0.1, 0.9]), ([0.5], [0.5]), ([1 - 0.9], [0.1])):
            response = await stub.GetLatestPrediction(
                pb.GetLatestPredictionRequest(**key, quantile_levels=levels)
            )
            selected = prediction_from_proto(response.prediction)
            assert [q.level for q in selected.quantiles] == kept
            # Everything else is the prediction as it was published.
            assert selected.model_copy(update={"quantiles": prediction.quantiles}) == prediction
        details = await invalid_argument(
            stub.GetLatestPrediction(pb.GetLatestPredictionRequest(**key, quantile_levels=[0.1, 0.25]))
        )
        assert "0.25" in details and "levels are [0.1, 0.5, 0.9]" in details, details
        many = await invalid_argument(
            stub.GetLatestPrediction(pb.GetLatestPredictionRequest(**key, quantile_levels=[0.01] * 5_000))
        )
        assert many == "at most 100 quantile levels per request, got 5000", many
    assert running.hub.latest("BTC/USD", 60, 60) is not None
    assert running.hub.latest("BTC/USD", 60, 60).prediction == prediction  # the hub's copy is untouched


async def test_price_is_the_one_target_served(running: RunningServer, target: str) -> None:
    prediction = with_uncertainty(make_prediction(minute=4))
    running.hub.publish(prediction)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        key = {"pair": "BTC/USD", "interval_s": 60, "horizon_s": 60}
        for served in ("", "price"):
            response = await stub.GetLatestPrediction(pb.GetLatestPredictionRequest(**key, target=served))
            assert prediction_from_proto(response.prediction) == prediction
            call = stub.StreamPredictions(pb.StreamPredictionsRequest(pairs=["BTC/USD"], target=served))
            assert prediction_from_proto((await call.read()).prediction) == prediction
            call.cancel()
        for unserved in ("volatility", "Price", "x" * 50_000):
            latest = await invalid_argument(
                stub.GetLatestPrediction(pb.GetLatestPredictionRequest(**key, target=unserved))
            )
            streamed = await invalid_argument(
                stub.StreamPredictions(pb.StreamPredictionsRequest(target=unserved)).read()
            )
            for details in (latest, streamed):
                assert "is not served: targets are ['price']" in details, details


async def test_long_client_input_is_not_echoed(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        malformed = await invalid_argument(
            stub.StreamPredictions(pb.StreamPredictionsRequest(pairs=["B" * 50_000, "C", "D", "E"])).read()
        )
        unknown = await invalid_argument(
            stub.StreamPredictions(
                pb.StreamPredictionsRequest(pairs=[f"X{i:02}/USD" for i in range(50)])
            ).read()
        )
        too_many = await invalid_argument(
            stub.StreamPredictions(
                pb.StreamPredictionsRequest(pairs=[f"X{i:03}/USD" for i in range(101)])
            ).read()
        )
        # Larger than grpc.max_request_bytes (64 kB): refused by gRPC before the handler reads it.
        with pytest.raises(grpc.aio.AioRpcError) as oversized:
            await stub.GetLatestPrediction(pb.GetLatestPredictionRequest(pair="B" * 70_000, interval_s=60))
    assert "malformed pair(s)" in malformed and "and 1 more" in malformed, malformed
    assert "unknown pair(s) ['X00/USD', 'X01/USD', 'X02/USD', and 47 more]" in unknown, unknown
    assert too_many == "at most 100 pairs per request, got 101", too_many
    assert oversized.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "B" * 30 not in (oversized.value.details() or "")


async def test_get_ledger_reports_the_interval_figures(target: str) -> None:
    from cryptopredict.ml.intervals import christoffersen_pvalue, kupiec_pvalue
    from cryptopredict.simulators.markets import synthetic_candles
    from cryptopredict.store.candles import async_engine, upsert_candles, upsert_predictions
    from cryptopredict.store.migrate import migrate

    settings = local_settings()
    migrate(settings.postgres)
    pair = REGIME_PAIR
    candles = synthetic_candles(pair, 60, 6, T0, seed=4)
    # Outcome i is inside its +-50 band unless it is one of the misses, whose band is 100 above.
    misses, regimes = {2, 3}, ["calm", "calm", "wild", "wild", "mid", "mid"]
    made = []
    for i, c in enumerate(candles):
        centre = c.close + (100.0 if i in misses else 0.0)  # candle i closes at prediction i's target time
        made.append(
            make_prediction(pair, minute=i).model_copy(
                update={
                    "last_price": c.open,
                    "predicted_price": c.open,
                    "lower_price": centre - 50.0,
                    "upper_price": centre + 50.0,
                    "interval_level": 0.8,
                    "volatility_regime": regimes[i],
                    "model_version": "7",
                }
            )
        )
    engine = async_engine(settings.postgres)
    await upsert_predictions(engine, made)
    await upsert_candles(engine, candles)
    await engine.dispose()
    inside = [i not in misses for i in range(6)]
    async with grpc.aio.insecure_channel(target) as channel:
        response = await pb_grpc.PredictionServiceStub(channel).GetLedger(
            pb.GetLedgerRequest(pair=pair, interval_s=60)
        )
    (entry,) = response.entries
    assert entry.outcomes == 6 and entry.interval_coverage == pytest.approx(4 / 6)
    assert dict(entry.coverage_by_regime) == {"calm": 1.0, "mid": 1.0, "wild": 0.0}
    # Width 100 each; a miss adds 2 / (1 - 0.8) times the 50 it missed by.
    assert entry.interval_score == pytest.approx(100.0 + 2 * (2 / 0.2 * 50.0) / 6)
    nominal = settings.model.interval_coverage
    assert entry.kupiec_pvalue == pytest.approx(kupiec_pvalue(inside, nominal))
    assert entry.christoffersen_pvalue == pytest.approx(christoffersen_pvalue(inside))


VENUE_PAIR = session_pair("V")  # on Kraken and Coinbase, for the ledger of each


def two_venue_settings() -> Settings:
    """local_settings() and Coinbase beside Kraken, with BTC/USD and VENUE_PAIR there too."""
    base = local_settings()
    return base.model_copy(
        update={
            "venues": ["kraken", "coinbase"],
            "kraken": base.kraken.model_copy(update={"pairs": [*PAIRS, VENUE_PAIR]}),
            "coinbase": base.coinbase.model_copy(update={"pairs": ["BTC/USD", VENUE_PAIR]}),
        }
    )


def on_coinbase(prediction: Prediction) -> Prediction:
    return prediction.model_copy(update={"exchange": "coinbase"})


async def test_each_exchange_is_its_own_market_and_none_means_kraken() -> None:
    async with start_server(two_venue_settings(), PredictionHub(), consume=False, grace=0.5) as running:
        target, hub = f"127.0.0.1:{running.port}", running.hub
        kraken = [make_prediction(minute=m) for m in (1, 4)]
        coinbase = [on_coinbase(make_prediction(minute=m)) for m in (2, 3, 5)]
        hub.publish(kraken[0])
        hub.publish(coinbase[0])
        # Each stream asks for exactly what it should get: had another exchange's prediction reached
        # it, that one would be among them, in publication order.
        streams = [
            asyncio.create_task(stream_predictions(target, ["BTC/USD"], 60, limit=2, timeout=10)),
            asyncio.create_task(
                stream_predictions(target, ["BTC/USD"], 60, limit=2, timeout=10, exchange="kraken")
            ),
            asyncio.create_task(
                stream_predictions(target, ["BTC/USD"], 60, limit=3, timeout=10, exchange="coinbase")
            ),
            asyncio.create_task(
                stream_predictions(target, ["BTC/USD"], 60, limit=5, timeout=10, exchange="*")
            ),
        ]
        await wait_until(lambda: hub.subscriber_count == len(streams))
        for prediction in (coinbase[1], kraken[1], coinbase[2]):
            hub.publish(prediction)
        unnamed, named, coinbase_only, every = await asyncio.gather(*streams)
        assert unnamed == named == kraken
        assert coinbase_only == coinbase
        assert every == [kraken[0], coinbase[0], coinbase[1], kraken[1], coinbase[2]]
        assert await get_latest_prediction(target, "BTC/USD", 60, 60) == kraken[1]
        assert await get_latest_prediction(target, "BTC/USD", 60, 60, exchange="coinbase") == coinbase[2]
        # ETH/USD is served on Kraken only.
        assert await get_latest_prediction(target, "ETH/USD", 60, 60) is None  # NOT_FOUND: nothing yet
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)
            details = await invalid_argument(
                stub.GetLatestPrediction(
                    pb.GetLatestPredictionRequest(
                        pair="ETH/USD", interval_s=60, horizon_s=60, exchange="coinbase"
                    )
                )
            )
            assert "unknown pair(s) ['ETH/USD'] on coinbase" in details, details
            listed = await invalid_argument(
                stub.ListModels(pb.ListModelsRequest(pairs=["ETH/USD"], exchange="coinbase"))
            )
            assert "on coinbase" in listed, listed


async def test_watch_shows_the_exchange_it_is_given() -> None:
    async with start_server(two_venue_settings(), PredictionHub(), consume=False, grace=0.5) as running:
        running.hub.publish(make_prediction("BTC/USD", minute=1))
        running.hub.publish(on_coinbase(make_prediction("BTC/USD", minute=2)))
        target = f"127.0.0.1:{running.port}"
        arguments = ["watch", "--target", target, "--limit", "1", "--exchange", "coinbase"]
        # In a thread of this process (the command runs its own event loop): no second interpreter to start.
        result = await asyncio.wait_for(asyncio.to_thread(CliRunner().invoke, app, arguments), 30)
    assert result.exit_code == 0, result.output
    _, row = result.stdout.strip().splitlines()
    assert "2024-05-01 12:02" in row and "coinbase:BTC/USD" in row, row


async def test_an_exchange_not_served_is_invalid_argument_naming_it(target: str) -> None:
    counted = {"method": f"/{SERVICE_NAME}/GetLatestPrediction", "code": "INVALID_ARGUMENT"}
    before = REGISTRY.get_sample_value("cryptopredict_grpc_request_duration_seconds_count", counted) or 0
    key = {"pair": "BTC/USD", "interval_s": 60, "horizon_s": 60}
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        for exchange, reason in (
            ("ftx", "unknown exchange 'ftx'"),
            ("coinbase", "exchange 'coinbase' is not served: exchanges are ['kraken']"),  # not configured
            ("*", "exchange '*' (every exchange) is not one exchange"),
        ):
            latest = await invalid_argument(
                stub.GetLatestPrediction(pb.GetLatestPredictionRequest(**key, exchange=exchange))
            )
            assert latest.startswith(reason), latest
            ledger = await invalid_argument(
                stub.GetLedger(pb.GetLedgerRequest(pair="BTC/USD", interval_s=60, exchange=exchange))
            )
            assert ledger.startswith(reason), ledger
            if exchange != "*":  # every exchange: what a stream may ask for
                streamed = await invalid_argument(
                    stub.StreamPredictions(
                        pb.StreamPredictionsRequest(pairs=["BTC/USD"], exchange=exchange)
                    ).read()
                )
                assert streamed.startswith(reason), streamed
    after = REGISTRY.get_sample_value("cryptopredict_grpc_request_duration_seconds_count", counted)
    assert after == before + 3  # counted like any other bad request


async def test_the_ledger_is_per_exchange() -> None:
    from cryptopredict.simulators.markets import synthetic_candles
    from cryptopredict.store.candles import async_engine, upsert_candles, upsert_predictions
    from cryptopredict.store.migrate import migrate

    settings = two_venue_settings()
    migrate(settings.postgres)
    made, candles = [], []
    for exchange, version, seed in (("kraken", "4", 6), ("coinbase", "5", 7)):
        venue_candles = [
            c.model_copy(update={"exchange": exchange})
            for c in synthetic_candles(VENUE_PAIR, 60, 4, T0, seed=seed)
        ]
        candles += venue_candles
        made += [
            make_prediction(VENUE_PAIR, minute=i).model_copy(
                update={
                    "exchange": exchange,
                    "last_price": c.close,
                    "predicted_price": c.close,
                    "model_version": version,
                }
            )
            for i, c in enumerate(venue_candles[:2])
        ]
    engine = async_engine(settings.postgres)
    await upsert_predictions(engine, made)
    await upsert_candles(engine, candles)
    await engine.dispose()
    async with (
        start_server(settings, PredictionHub(), consume=False, grace=0.5) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.PredictionServiceStub(channel)
        versions = {}
        for exchange in ("", "kraken", "coinbase"):
            response = await stub.GetLedger(
                pb.GetLedgerRequest(pair=VENUE_PAIR, interval_s=60, exchange=exchange)
            )
            versions[exchange] = [(e.model_version, e.outcomes) for e in response.entries]
    assert versions == {"": [("4", 2)], "kraken": [("4", 2)], "coinbase": [("5", 2)]}
